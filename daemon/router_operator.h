// RouterOperator: the last operator of an app connection's graph, on its runtime thread.
// Request path: finds the app serving the call's service (UNAVAILABLE at once if none), copies
// the request out of the caller's heap into the server's receive region with copy_message (every
// reference checked; a bad one ends the call with INVALID_ARGUMENT), places the metadata block
// there too, and posts kIncomingCall. The RPC then waits in the daemon's call table.
// Reply path: copies the server's response into the caller's receive region and tells the server
// it may free it (kReplyDone).
#pragma once

#include "core.h"
#include "mrpc/dataflow/operator.h"

namespace mrpc {

class RouterOperator final : public Operator {
 public:
  RouterOperator(DaemonCore& core, ConnectionId connection)
      : core_(core), connection_(connection) {}
  std::string_view name() const override { return "router"; }
  void on_requests(RpcBatch& batch, Output& out) override;
  void on_replies(RpcBatch& batch, Output& out) override;

 private:
  // Places the request and metadata in the server's receive region and tells the server.
  Status deliver(Rpc& rpc, const RegisteredService& service, Connection& caller, Connection& server,
                 CallRecord& record);
  void copy_response(Rpc& rpc);

  DaemonCore& core_;
  ConnectionId connection_;
};

}  // namespace mrpc
