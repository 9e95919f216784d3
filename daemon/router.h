// Router: the request exit of every app's egress graph. It picks the call's endpoint from the
// service's endpoint set (the endpoint a policy chose, if that one serves the service, failing
// the attempt with RESOURCE_EXHAUSTED if it is full; else round robin over the serving apps that
// have room for another call) and hands the RPC to the
// transport that reaches it. What it cannot route goes back up the caller's egress graph with an
// error status, so the caller's policies see the failure too. A wait_for_ready call with no
// server at all waits in the service's registration until one registers or its deadline passes.
// Runtime thread only; holds nothing.
#pragma once

#include "core.h"

namespace mrpc {

class Router {
 public:
  explicit Router(DaemonCore& core) : core_(core) {}
  // `caller`: the connection whose egress graph the RPC left.
  void route(Connection& caller, RpcPtr rpc);
  // A server joined `service`'s endpoint set: the wait_for_ready calls parked there are routed.
  void server_registered(RegisteredService& service);

 private:
  // Parks a wait_for_ready call until a server registers (its deadline still runs).
  void park(RegisteredService& service, RpcPtr rpc);

  DaemonCore& core_;
};

}  // namespace mrpc
