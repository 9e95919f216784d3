// PeerRequest: a request that came from a peer daemon over TCP, as it waits in this (the
// callee's) daemon until it is decoded into the callee's receive region: the payload and the
// caller's metadata block exactly as the frame carried them. Made by TcpTransport on the link's
// shard when the frame arrives; the RPC carries it (Rpc::peer_request) to the callee's shard,
// where the delivery (AppFrontend) or a policy at the callee that reads the request decodes it.
// Daemon-private memory no app can write: a policy reads it without a time-of-check copy.
// Immutable once made (attempts forked from the call share it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "mrpc/base/status.h"
#include "mrpc/dataflow/rpc.h"
#include "tcp/frame.h"

namespace mrpc {

class Connection;
class DaemonCore;

struct PeerRequest {
  std::vector<std::byte> payload;  // the message: protobuf wire bytes, or native (no fingerprint)
  tcp::PayloadEncoding encoding = tcp::PayloadEncoding::kProtobuf;
  std::vector<std::byte> metadata;  // the caller's shm metadata block (may be empty)
};

// Decodes the request `rpc` carries from a peer (rpc.peer_request, which must be set) into
// `callee`'s receive region with the service's compiled codec: the root offset (one free of it
// releases the message); `*bytes` (if given) the block's bytes. The caller reports the region's
// use (Connection::report_receive_usage).
// Errors say that the peer's request does not decode, and why.
Expected<uint64_t> decode_peer_request(DaemonCore& core, const Rpc& rpc, Connection& callee,
                                       uint64_t* bytes = nullptr);

}  // namespace mrpc
