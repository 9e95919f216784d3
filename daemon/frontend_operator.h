// FrontendOperator: the first operator of an app connection's graph. On the runtime thread that
// runs the graph, each round it drains at most `max_batch` entries of the app's submission ring
// and checks every one before anything else reads it: calls become RPCs on the request path (or
// end at once with an error status), replies resume the caller's graph, cancels and releases act
// on the daemon's own bookkeeping. On the reply path it is the last stop: it posts kCallDone.
// Holds nothing: what it does not pass on, it answers.
#pragma once

#include <vector>

#include "core.h"
#include "mrpc/dataflow/operator.h"

namespace mrpc {

class FrontendOperator final : public Operator {
 public:
  FrontendOperator(DaemonCore& core, ConnectionId connection)
      : core_(core), connection_(connection) {}
  std::string_view name() const override { return "frontend"; }
  void on_requests(RpcBatch& batch, Output& out) override;
  void on_replies(RpcBatch& batch, Output& out) override;
  bool poll(Output& requests, Output& replies) override;
  MonoTime next_timer() const override;
  bool prepare_to_sleep() override;
  void woke() override;

 private:
  void handle_call(Connection& app, const shm::RingEntry& entry, Output& requests);
  void handle_reply(Connection& app, const shm::RingEntry& entry);
  void handle_cancel(Connection& app, const shm::RingEntry& entry);
  void handle_release(Connection& app, const shm::RingEntry& entry);
  void refuse_call(Connection& app, uint64_t call_id, const Status& status);

  DaemonCore& core_;
  ConnectionId connection_;
  bool sleeping_ = false;
  std::vector<shm::RingEntry> entries_;  // reused for each batch popped from the ring
};

}  // namespace mrpc
