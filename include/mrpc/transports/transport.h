// Transport: how a routed request reaches its endpoint and how its reply comes back. The router
// at the end of a caller's egress graph picks an endpoint and hands the RPC to the transport
// that serves it; the transport delivers it into the callee's ingress graph (on this host, or on
// a peer daemon) and, once the callee's ingress graph has returned the reply, brings the reply
// back into the caller's egress graph, with its response placed in the caller's receive region.
//
// Local delivery (transports/local) is the first transport; TCP and RDMA come behind the same
// interface. A transport never ends a call by itself: whatever it cannot deliver it returns with
// an error status, so every call still ends exactly once at its caller's frontend.
//
// Threads: every method runs on the runtime thread that owns the RPC's current connection.
// Ownership: the transport owns an RPC from send_request until it hands it to a graph.
#pragma once

#include "mrpc/dataflow/rpc.h"

namespace mrpc {

class Transport {
 public:
  virtual ~Transport() = default;
  // Carries `rpc` (rpc->endpoint set by the router) to the endpoint's ingress graph.
  virtual void send_request(RpcPtr rpc) = 0;
  // Carries a reply (or an error) that left the callee's ingress graph back to the caller's
  // egress graph.
  virtual void send_reply(RpcPtr rpc) = 0;
  // The call behind `rpc` ended for its caller (deadline, cancel, caller gone) while the callee
  // may still hold the request: tell the callee side, if it is still there.
  virtual void cancel(ConnectionId callee, uint64_t delivery) = 0;
};

}  // namespace mrpc
