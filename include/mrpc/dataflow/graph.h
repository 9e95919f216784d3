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
//
// The upgrade gate (replace_gated): every RPC that enters on the request path (push_request, or a
// fork) is stamped with the admission epoch current then (Rpc::admission_epoch; a daemon shares
// one epoch between all its graphs, so a call is stamped once, at the caller's egress graph, and
// keeps that stamp in the callee's ingress graph). A stage holds one or more versions of its
// operator, each serving the calls admitted from its `from_epoch` on: a request or reply goes to
// the newest version whose from_epoch <= its stamp (older stamps: the oldest version; no stamp:
// the newest). So after a replace, calls admitted from then on see only the new version, and the
// requests and replies of calls admitted before see only the old one. The graph counts the RPCs
// of each epoch that are inside it (entered on the request path, not yet gone out of the reply
// exit or ended); an old version is detached and dropped when none of its epochs is left, or when
// the latest deadline of its calls (at most limits::kMaxUpgradeGateWait after the replace) has
// passed: a reply of its calls that surfaces later goes to the next version.
#pragma once

#include <atomic>
#include <cstdint>
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
#include "mrpc/dataflow/rpc_queue.h"
#include "mrpc/dataflow/runtime.h"

namespace mrpc {

struct GraphExits {
  std::function<void(RpcPtr)> requests;  // passed the last operator
  std::function<void(RpcPtr)> replies;   // passed the first operator
  // Attempts an operator ended (Output::end): the owner frees what they hold. Unset: destroyed.
  std::function<void(RpcPtr)> ended = {};
};

// Versions kept by upgrade gates (replace_gated), counted over every graph that shares this:
// thread-safe (graphs of several runtime threads add to it).
struct GateCounters {
  std::atomic<int64_t> versions_retiring{0};  // replaced versions still finishing their calls
  std::atomic<uint64_t> versions_retired{0};  // dropped once their calls ended (or their deadline)
  std::atomic<uint64_t> versions_retired_at_deadline{0};  // of those: with calls left
};

struct GraphOptions {
  size_t max_batch = limits::kDefaultOperatorBatch;
  // The admission epoch to stamp entering RPCs with, shared by the graphs of one daemon (null: the
  // graph's own). Read on the runtime thread; whoever owns it bumps it (replace_gated).
  std::atomic<uint64_t>* admission_epoch = nullptr;
  GateCounters* gate_counters = nullptr;  // null: the graph's own
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
  // The new operator takes the old one's place and queues at once; the old one detaches first
  // (hands on what it holds) and sees nothing more, not even the replies of calls it passed.
  Status replace(StageId stage, std::shared_ptr<Operator> op);
  // The upgrade gate (see above): `op` becomes the stage's newest version for calls admitted from
  // `from_epoch` on; the versions before it keep the calls admitted earlier and leave when those
  // have ended. kAdmitNow: from the next epoch, which this call makes current (this graph's
  // switch is then immediate); an explicit epoch is for a daemon that installs the version in all
  // its graphs first and then makes that epoch current once (the switch is then the same instant
  // for every graph). The new version starts with empty state: carrying it is the caller's (see
  // Operator::export_state), since only the caller knows whether an operator is shared.
  static constexpr uint64_t kAdmitNow = 0;
  Status replace_gated(StageId stage, std::shared_ptr<Operator> op,
                       uint64_t from_epoch = kAdmitNow);
  // Drops replaced versions whose calls have ended or whose deadline passed (also done after every
  // round while a gate is open). Runtime thread. Returns how many it dropped.
  size_t retire_versions();
  // Versions of the stage at `position` (1: no gate open there).
  size_t versions_at(size_t position) const;
  // Replaced versions still waiting in this graph.
  size_t versions_retiring() const { return retiring_; }
  // RPCs inside the graph stamped with `epoch` (entered, not yet gone out or ended).
  int64_t admitted_in(uint64_t epoch) const;
  uint64_t admission_epoch() const { return epoch_->load(std::memory_order_acquire); }
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
  // run() would do nothing now: nothing posted, queued or delayed at any stage, no operator that
  // polls, no replaced version retiring. The runtime asks every graph every round, so this is
  // checked inline before the call.
  bool idle() const {
    if (has_posted_.load(std::memory_order_acquire) || retiring_ != 0) return false;
    for (const auto& stage : stages_) {
      if (!stage->requests.empty() || !stage->replies.empty() || !stage->delayed_requests.empty() ||
          !stage->delayed_replies.empty() || stage->op->polls())
        return false;
    }
    return true;
  }
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
  // A replaced version that still serves the calls admitted before `next_from` (its successor's
  // from_epoch).
  struct OldVersion {
    std::shared_ptr<Operator> op;
    uint64_t from_epoch;
    MonoTime replaced_at;
  };
  // Calls stamped with one epoch that are inside the graph (a few buckets: one per epoch with
  // calls left).
  struct EpochCount {
    uint64_t epoch;
    int64_t inside;
    MonoTime latest_deadline;  // of every RPC that entered with this stamp
  };
  struct Stage {
    StageId id;
    std::shared_ptr<Operator> op;  // the newest version
    uint64_t op_from_epoch = 0;  // it serves calls admitted from then on (if `older` is not empty)
    std::vector<OldVersion> older;  // replaced versions still finishing, oldest first
    std::string label;
    RpcQueue requests;            // waiting for op->on_requests
    RpcQueue replies;             // waiting for op->on_replies
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
  // Gate: which version of `stage` takes an RPC stamped `epoch`.
  Operator& version_for(Stage& stage, uint64_t epoch) const;
  template <typename Fn>
  void for_each_version(Stage& stage, Fn&& fn) const;
  void deliver(size_t position, bool requests, RpcBatch& batch);
  void admit(Rpc& rpc);        // entering on the request path
  void leave(const Rpc& rpc);  // going out of the reply exit, or ended
  void detach_version(size_t position, Operator& op);

  const Clock& clock_;
  GraphExits exits_;
  GraphOptions options_;
  std::vector<std::unique_ptr<Stage>> stages_;
  StageId next_stage_id_ = 1;
  uint64_t next_delay_order_ = 0;
  GraphStats stats_;
  RpcBatch batch_;  // reused between rounds
  RpcBatch split_;  // one version's share of batch_ while a gate is open
  std::atomic<uint64_t> own_epoch_{1};
  std::atomic<uint64_t>* epoch_;
  GateCounters own_gate_counters_;
  GateCounters* gate_counters_;
  std::vector<EpochCount> admitted_;  // by epoch, ascending
  size_t retiring_ = 0;               // OldVersions over all stages

  std::mutex posted_mutex_;
  std::atomic<bool> has_posted_{false};
  std::vector<RpcPtr> posted_requests_;
  std::vector<RpcPtr> posted_replies_;
  std::vector<std::function<void(Graph&)>> posted_changes_;
};

}  // namespace mrpc
