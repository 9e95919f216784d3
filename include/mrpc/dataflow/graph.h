// Graph: one connection's chain of operators, frontend -> ... -> router, with a queue of requests
// in front of each operator and a queue of replies behind it. A Task: its runtime thread runs it in
// rounds; each round every operator polls, then gets at most `max_batch` requests (in graph order)
// and at most `max_batch` replies (in reverse order). Work per round is bounded, so a flooding
// connection cannot hold its runtime.
//
// Changes (insert, remove, replace) happen between rounds, on the runtime thread (directly, or
// posted from another thread with post_change). Nothing queued is lost: a new operator starts
// with empty queues; a removed operator first detaches (hands on what it holds), then what waited
// in its queues moves to its neighbours' queues, in order, and its delayed RPCs continue as if due.
//
// Ends of the chain: requests that pass the last operator and replies that pass the first go to
// the exits given at construction (a daemon's router and frontend consume theirs instead).
// Ownership: the graph owns its queues and shares its operators (an operator can be handed over).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <queue>
#include <string>
#include <string_view>
#include <vector>

#include "mrpc/base/clock.h"
#include "mrpc/base/expected.h"
#include "mrpc/base/limits.h"
#include "mrpc/dataflow/operator.h"
#include "mrpc/dataflow/runtime.h"

namespace mrpc {

struct GraphExits {
  std::function<void(RpcPtr)> requests;  // passed the last operator
  std::function<void(RpcPtr)> replies;   // passed the first operator
  // Attempts an operator ended (Output::end): the owner frees what they hold. Unset: destroyed.
  std::function<void(RpcPtr)> ended = {};
};

struct GraphOptions {
  size_t max_batch = limits::kDefaultOperatorBatch;
};

struct GraphStats {
  uint64_t requests_processed = 0;  // request-path visits of operators
  uint64_t replies_processed = 0;
  uint64_t changes = 0;  // the graph's generation: one per insert/remove/replace
};

class Graph final : public Task {
 public:
  using StageId = uint64_t;

  Graph(const Clock& clock, GraphExits exits, GraphOptions options = {});
  ~Graph() override;

  // ---- changes: runtime thread, between rounds ----
  StageId append(std::shared_ptr<Operator> op);
  // `position` in [0, size()]: the new operator comes before the one now at `position`. `label`
  // names the stage for position_of_label (a policy's name; default: the operator's name()).
  Expected<StageId> insert(size_t position, std::shared_ptr<Operator> op, std::string label = {});
  Status remove(StageId stage);
  // The new operator takes the old one's place and queues; the old one detaches first.
  Status replace(StageId stage, std::shared_ptr<Operator> op);
  // Runs `change` on the runtime thread before the next round. Thread-safe.
  void post_change(std::function<void(Graph&)> change);

  size_t size() const { return stages_.size(); }
  // kNone if the stage is not in the graph.
  static constexpr size_t kNone = SIZE_MAX;
  size_t position_of(StageId stage) const;
  // The position of the first stage labelled `label`, or kNone.
  size_t position_of_label(std::string_view label) const;
  StageId stage_at(size_t position) const;
  Operator& operator_at(size_t position) const;
  const std::string& label_at(size_t position) const;

  // Tears the graph down: every operator detaches, then every RPC still in the graph (queued,
  // delayed, or handed on by a detaching operator) goes to `sink`, so its owner can account for
  // it. The operators are not called again; the graph is left empty of RPCs.
  void drain_into(const std::function<void(RpcPtr)>& sink);

  // ---- entering the graph ----
  // Into the request queue of the first operator (runtime thread).
  void push_request(RpcPtr rpc);
  // Into the reply queue of the last operator: a reply coming back from where the call went
  // (runtime thread).
  void push_reply(RpcPtr rpc);
  // Same as push_reply, from any thread; wakes the runtime.
  void post_reply(RpcPtr rpc);
  // Same as push_request, from any thread; wakes the runtime.
  void post_request(RpcPtr rpc);

  // ---- Task ----
  bool run() override;
  MonoTime next_timer() const override;
  bool prepare_to_sleep() override;
  void woke() override;

  // RPCs waiting in queues, delayed, or held by operators.
  size_t in_graph() const;
  GraphStats stats() const { return stats_; }
  const Clock& clock() const { return clock_; }

 private:
  struct Delayed {
    MonoTime until;
    uint64_t order;  // keeps equal times first-in first-out
    mutable RpcPtr rpc;
    bool operator>(const Delayed& other) const {
      return until != other.until ? until > other.until : order > other.order;
    }
  };
  using DelayQueue = std::priority_queue<Delayed, std::vector<Delayed>, std::greater<>>;
  struct Stage {
    StageId id;
    std::shared_ptr<Operator> op;
    std::string label;
    std::deque<RpcPtr> requests;  // waiting for op->on_requests
    std::deque<RpcPtr> replies;   // waiting for op->on_replies
    DelayQueue delayed_requests;  // continue after op, downstream
    DelayQueue delayed_replies;   // continue after op, upstream
  };
  class StageOutput;

  void enqueue_request_after(size_t position, RpcPtr rpc);  // to position+1, or the exit
  void enqueue_reply_before(size_t position, RpcPtr rpc);   // to position-1, or the exit
  void take_posted();
  void take_posted_rpcs_into(const std::function<void(RpcPtr)>& sink);
  bool release_due(size_t position, MonoTime now);
  void detach_stage(size_t position);
  size_t find(StageId stage) const;

  const Clock& clock_;
  GraphExits exits_;
  GraphOptions options_;
  std::vector<std::unique_ptr<Stage>> stages_;
  StageId next_stage_id_ = 1;
  uint64_t next_delay_order_ = 0;
  GraphStats stats_;
  RpcBatch batch_;  // reused between rounds

  std::mutex posted_mutex_;
  std::atomic<bool> has_posted_{false};
  std::vector<RpcPtr> posted_requests_;
  std::vector<RpcPtr> posted_replies_;
  std::vector<std::function<void(Graph&)>> posted_changes_;
};

}  // namespace mrpc
