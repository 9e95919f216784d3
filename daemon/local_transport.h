// LocalTransport: the transport between two app connections of this daemon (same host). A
// request goes straight into the callee connection's ingress graph; the callee's reply goes back
// into the caller's egress graph after its response is copied from the callee's heap into the
// caller's receive region (the daemon's bounds-checked copy), and the callee is told it may free
// its response (kReplyDone). Cancelling tells the callee with kIncomingCancelled.
//
// Shards: each shard has one. When the callee's connection belongs to another shard, the request
// travels there as a ShardMessage (pinning the caller's heap, which the callee's shard copies
// the request from), and the reply travels back the same way (pinning the server's heap, which
// the caller's shard copies the response from); the *_here methods are the receiving ends. A
// request that finds its callee gone on arrival goes back to the caller's shard to be routed
// again (the endpoint left after the caller's shard chose it).
// It needs the daemon's connections, so it lives with them in daemon/; transports between
// daemons (transports/tcp, later) implement the same interface without them.
// Runtime thread of its shard only.
#pragma once

#include "core.h"
#include "mrpc/transports/transport.h"

namespace mrpc {

class LocalTransport final : public Transport {
 public:
  explicit LocalTransport(DaemonCore& core) : core_(core) {}
  void send_request(RpcPtr rpc) override;
  void send_reply(RpcPtr rpc) override;
  void cancel(ConnectionId callee, uint64_t delivery) override;

  // The callee is on this shard.
  void deliver_here(RpcPtr rpc);
  // The caller is on this shard.
  void reply_here(RpcPtr rpc);
  void cancel_here(ConnectionId callee, uint64_t delivery);

 private:
  // Moves the response from the server's heap into the caller's receive region (or fails the
  // RPC), then lets the server free it.
  void copy_response(Rpc& rpc, Connection& caller);

  DaemonCore& core_;
};

}  // namespace mrpc
