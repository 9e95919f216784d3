// Ids of calls' callers that are not apps of this host: a call that arrived from a peer daemon
// over TCP carries, as its Rpc::connection (the caller's connection), the id of the TCP link it
// came on: the link's slot handle in its shard's TcpTransport, with the shard in bits 24-31 like
// every per-shard handle (shard_link.h) and bit 63 set. Code that meets a caller id asks
// is_remote() before treating it as an app connection (core.connection() finds nothing for one).
#pragma once

#include <cstdint>

#include "mrpc/dataflow/rpc.h"
#include "shard_link.h"

namespace mrpc::remote_ids {

inline constexpr uint64_t kRemoteBit = uint64_t{1} << 63;

inline bool is_remote(ConnectionId id) {
  return (id & kRemoteBit) != 0;
}
// The caller id of link `link_local` (its handle in the shard's link table) of shard `shard`.
inline ConnectionId of_link(uint64_t link_local, uint32_t shard) {
  return shards::global(link_local, shard) | kRemoteBit;
}
// The link's handle in its shard's link table.
inline uint64_t link_of(ConnectionId id) {
  return shards::local(id & ~kRemoteBit);
}

}  // namespace mrpc::remote_ids
