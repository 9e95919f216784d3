// Graph: see mrpc/dataflow/graph.h.
#include "mrpc/dataflow/graph.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "mrpc/base/check.h"

namespace mrpc {

// What an operator at `position` uses to hand RPCs on, for one direction.
class Graph::StageOutput final : public Output {
 public:
  enum class Direction { kRequests, kReplies };
  StageOutput(Graph& graph, size_t position, Direction direction)
      : graph_(graph), position_(position), direction_(direction) {}

  void pass(RpcPtr rpc) override {
    MRPC_ASSERT(rpc != nullptr);
    if (direction_ == Direction::kRequests)
      graph_.enqueue_request_after(position_, std::move(rpc));
    else
      graph_.enqueue_reply_before(position_, std::move(rpc));
  }
  void delay(RpcPtr rpc, MonoTime until) override {
    MRPC_ASSERT(rpc != nullptr);
    Stage& stage = *graph_.stages_[position_];
    auto& queue =
        direction_ == Direction::kRequests ? stage.delayed_requests : stage.delayed_replies;
    queue.push(Delayed{until, graph_.next_delay_order_++, std::move(rpc)});
  }
  void drop(RpcPtr rpc, Status status) override {
    MRPC_ASSERT(rpc != nullptr);
    MRPC_ASSERT(!status.ok(), "drop needs an error status (operator {})",
                graph_.stages_[position_]->op->name());
    rpc->status = std::move(status);
    graph_.enqueue_reply_before(position_, std::move(rpc));
  }
  void answer(RpcPtr rpc) override {
    MRPC_ASSERT(rpc != nullptr);
    graph_.enqueue_reply_before(position_, std::move(rpc));
  }
  uint16_t fork(Rpc& original, AttemptKind kind, Endpoint endpoint) override {
    RpcPtr attempt = make_rpc(original);
    attempt->attempt = original.attempts_made++;
    attempt->attempts_made = original.attempts_made;
    attempt->attempt_kind = kind;
    attempt->status = Status();
    attempt->response = MessageLocation{};
    attempt->received_request = MessageLocation{};  // the original's to deliver or free
    attempt->received_request_bytes = 0;
    attempt->delivery_id = 0;
    attempt->endpoint = endpoint;
    graph_.admit(*attempt);  // the fork keeps the call's stamp: same versions as its call
    const uint16_t number = attempt->attempt;
    graph_.enqueue_request_after(position_, std::move(attempt));
    return number;
  }
  void end(RpcPtr attempt) override {
    MRPC_ASSERT(attempt != nullptr);
    graph_.leave(*attempt);
    if (graph_.exits_.ended) graph_.exits_.ended(std::move(attempt));
  }
  MonoTime now() const override { return graph_.clock_.now(); }

 private:
  Graph& graph_;
  size_t position_;
  Direction direction_;
};

Graph::Graph(const Clock& clock, GraphExits exits, GraphOptions options)
    : clock_(clock),
      exits_(std::move(exits)),
      options_(options),
      epoch_(options.admission_epoch != nullptr ? options.admission_epoch : &own_epoch_),
      gate_counters_(options.gate_counters != nullptr ? options.gate_counters
                                                      : &own_gate_counters_) {
  MRPC_ASSERT(exits_.requests && exits_.replies, "a graph needs both exits");
  MRPC_ASSERT(options_.max_batch > 0);
  admitted_.reserve(8);
}

Graph::~Graph() {
  if (retiring_ > 0)
    gate_counters_->versions_retiring.fetch_sub(static_cast<int64_t>(retiring_),
                                                std::memory_order_relaxed);
}

// ---- the upgrade gate ----

namespace {
// RPCs can leave without passing an exit of the graph (a late reply discarded before it re-enters,
// a request the router finds ended): their epoch's count never comes down. Past epochs whose
// calls' deadlines have all passed hold no call the gate must wait for: forgotten.
template <typename Buckets>
void forget_expired_epochs(Buckets& admitted, uint64_t current, MonoTime now) {
  std::erase_if(admitted, [&](const auto& bucket) {
    return bucket.epoch < current && bucket.latest_deadline < now;
  });
}
}  // namespace

void Graph::admit(Rpc& rpc) {
  if (rpc.admission_epoch == 0) rpc.admission_epoch = epoch_->load(std::memory_order_acquire);
  const uint64_t epoch = rpc.admission_epoch;
  // Buckets are few (one per epoch with calls inside); the newest is nearly always the one.
  size_t at = admitted_.size();
  while (at > 0 && admitted_[at - 1].epoch > epoch) --at;
  if (at > 0 && admitted_[at - 1].epoch == epoch) {
    EpochCount& bucket = admitted_[at - 1];
    ++bucket.inside;
    bucket.latest_deadline = std::max(bucket.latest_deadline, rpc.deadline);
    return;
  }
  admitted_.insert(admitted_.begin() + static_cast<std::ptrdiff_t>(at),
                   EpochCount{epoch, 1, rpc.deadline});
}

void Graph::leave(const Rpc& rpc) {
  if (rpc.admission_epoch == 0) return;  // never entered on the request path here
  for (size_t i = admitted_.size(); i-- > 0;) {
    EpochCount& bucket = admitted_[i];
    if (bucket.epoch != rpc.admission_epoch) continue;
    // A reply whose request entered before a drain (drain_into forgets the counts) finds none.
    if (bucket.inside > 0) --bucket.inside;
    // An empty bucket of a past epoch goes; the current epoch's stays (it is refilled at once).
    if (bucket.inside == 0 && bucket.epoch < epoch_->load(std::memory_order_relaxed))
      admitted_.erase(admitted_.begin() + static_cast<std::ptrdiff_t>(i));
    return;
  }
}

int64_t Graph::admitted_in(uint64_t epoch) const {
  for (const auto& bucket : admitted_)
    if (bucket.epoch == epoch) return bucket.inside;
  return 0;
}

Operator& Graph::version_for(Stage& stage, uint64_t epoch) const {
  if (stage.older.empty() || epoch == 0 || epoch >= stage.op_from_epoch) return *stage.op;
  for (size_t k = stage.older.size(); k-- > 1;)
    if (stage.older[k].from_epoch <= epoch) return *stage.older[k].op;
  return *stage.older.front().op;
}

template <typename Fn>
void Graph::for_each_version(Stage& stage, Fn&& fn) const {
  for (auto& old : stage.older) fn(*old.op);
  fn(*stage.op);
}

size_t Graph::versions_at(size_t position) const {
  return stages_.at(position)->older.size() + 1;
}

Status Graph::replace_gated(StageId id, std::shared_ptr<Operator> op, uint64_t from_epoch) {
  if (op == nullptr) return Status(StatusCode::kInvalidArgument, "no operator to replace with");
  size_t position = find(id);
  if (position == kNone)
    return Status(StatusCode::kNotFound, fmt::format("no stage {} in the graph", id));
  Stage& stage = *stages_[position];
  if (op == stage.op) return {};  // the same operator: no version to gate
  const uint64_t current = epoch_->load(std::memory_order_acquire);
  forget_expired_epochs(admitted_, current, clock_.now());
  const bool now = from_epoch == kAdmitNow;
  if (now) from_epoch = current + 1;
  if (from_epoch <= current || (!stage.older.empty() && from_epoch <= stage.op_from_epoch))
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("a new version must serve a later epoch than {} (the current one) "
                              "and {} (the stage's newest version's), not {}",
                              current, stage.op_from_epoch, from_epoch));
  stage.older.push_back(
      OldVersion{std::move(stage.op), stage.older.empty() ? 0 : stage.op_from_epoch, clock_.now()});
  stage.op = std::move(op);
  stage.op_from_epoch = from_epoch;
  ++retiring_;
  gate_counters_->versions_retiring.fetch_add(1, std::memory_order_relaxed);
  if (now) {
    // A graph of its own epoch: this is the switch. With a shared epoch the owner makes it
    // current (an epoch made current that no other graph waits for changes nothing there).
    uint64_t expected = current;
    epoch_->compare_exchange_strong(expected, from_epoch, std::memory_order_acq_rel);
  }
  ++stats_.changes;
  return {};
}

void Graph::detach_version(size_t position, Operator& op) {
  StageOutput requests(*this, position, StageOutput::Direction::kRequests);
  StageOutput replies(*this, position, StageOutput::Direction::kReplies);
  op.detach(requests, replies);
  MRPC_ASSERT(op.held() == 0, "operator {} still holds {} RPCs after detach", op.name(), op.held());
}

size_t Graph::retire_versions() {
  const uint64_t current = epoch_->load(std::memory_order_acquire);
  const MonoTime now = clock_.now();
  if (retiring_ == 0) {
    forget_expired_epochs(admitted_, current, now);
    return 0;
  }
  size_t retired = 0;
  for (size_t position = 0; position < stages_.size(); ++position) {
    Stage& stage = *stages_[position];
    for (size_t k = 0; k < stage.older.size();) {
      const uint64_t next_from =
          k + 1 < stage.older.size() ? stage.older[k + 1].from_epoch : stage.op_from_epoch;
      if (next_from > current) break;  // not switched yet: it is still the version new calls see
      // Its calls: stamped in [its from_epoch, next_from), and for the oldest anything older.
      const uint64_t low = k == 0 ? 0 : stage.older[k].from_epoch;
      int64_t inside = 0;
      MonoTime latest = INT64_MIN;
      for (const auto& bucket : admitted_) {
        if (bucket.epoch < low || bucket.epoch >= next_from || bucket.inside == 0) continue;
        inside += bucket.inside;
        latest = std::max(latest, bucket.latest_deadline);
      }
      const MonoTime cap = stage.older[k].replaced_at + limits::kMaxUpgradeGateWait.count();
      const bool at_deadline = inside > 0 && now >= std::min(latest, cap);
      if (inside > 0 && !at_deadline) {
        ++k;
        continue;
      }
      // Left at its deadline: what still counts in its epochs is not coming back through it. An
      // RPC dropped without leaving (a late reply discarded, a request whose call had ended)
      // would otherwise count for ever and hold back every later version too.
      if (at_deadline)
        std::erase_if(admitted_, [&](const EpochCount& bucket) {
          return bucket.epoch >= low && bucket.epoch < next_from;
        });
      std::shared_ptr<Operator> old = std::move(stage.older[k].op);
      stage.older.erase(stage.older.begin() + static_cast<std::ptrdiff_t>(k));
      detach_version(position, *old);
      --retiring_;
      ++retired;
      gate_counters_->versions_retiring.fetch_sub(1, std::memory_order_relaxed);
      gate_counters_->versions_retired.fetch_add(1, std::memory_order_relaxed);
      if (at_deadline)
        gate_counters_->versions_retired_at_deadline.fetch_add(1, std::memory_order_relaxed);
    }
  }
  return retired;
}

size_t Graph::find(StageId stage) const {
  for (size_t i = 0; i < stages_.size(); ++i)
    if (stages_[i]->id == stage) return i;
  return kNone;
}

size_t Graph::position_of(StageId stage) const {
  return find(stage);
}

Graph::StageId Graph::stage_at(size_t position) const {
  return stages_.at(position)->id;
}

const std::string& Graph::label_at(size_t position) const {
  return stages_.at(position)->label;
}

Operator& Graph::operator_at(size_t position) const {
  return *stages_.at(position)->op;
}

Graph::StageId Graph::append(std::shared_ptr<Operator> op) {
  return insert(stages_.size(), std::move(op)).value();
}

size_t Graph::position_of_label(std::string_view label) const {
  for (size_t i = 0; i < stages_.size(); ++i)
    if (stages_[i]->label == label) return i;
  return kNone;
}

Expected<Graph::StageId> Graph::insert(size_t position, std::shared_ptr<Operator> op,
                                       std::string label) {
  if (op == nullptr) return Status(StatusCode::kInvalidArgument, "no operator to insert");
  if (position > stages_.size())
    return Status(
        StatusCode::kOutOfRange,
        fmt::format("insert position {} past the graph's {} operators", position, stages_.size()));
  auto stage = std::make_unique<Stage>();
  stage->id = next_stage_id_++;
  stage->label = label.empty() ? std::string(op->name()) : std::move(label);
  stage->op = std::move(op);
  StageId id = stage->id;
  stages_.insert(stages_.begin() + static_cast<std::ptrdiff_t>(position), std::move(stage));
  ++stats_.changes;
  return id;
}

// The operator at `position` hands on everything it holds, and its delayed RPCs continue now.
// Everything lands in the neighbours' queues (or the exits), never in this stage.
void Graph::detach_stage(size_t position) {
  Stage& stage = *stages_[position];
  for (auto& old : stage.older) detach_version(position, *old.op);
  if (!stage.older.empty()) {
    retiring_ -= stage.older.size();
    gate_counters_->versions_retiring.fetch_sub(static_cast<int64_t>(stage.older.size()),
                                                std::memory_order_relaxed);
    stage.older.clear();
  }
  detach_version(position, *stage.op);
  while (!stage.delayed_requests.empty()) {
    enqueue_request_after(position, std::move(stage.delayed_requests.top().rpc));
    stage.delayed_requests.pop();
  }
  while (!stage.delayed_replies.empty()) {
    enqueue_reply_before(position, std::move(stage.delayed_replies.top().rpc));
    stage.delayed_replies.pop();
  }
}

Status Graph::remove(StageId id) {
  size_t position = find(id);
  if (position == kNone)
    return Status(StatusCode::kNotFound, fmt::format("no stage {} in the graph", id));
  detach_stage(position);
  Stage& stage = *stages_[position];
  // Requests that waited for the removed operator came after everything that already passed
  // it, so they queue behind what waits at the next operator; replies likewise.
  RpcQueue waiting_requests = std::move(stage.requests);
  RpcQueue waiting_replies = std::move(stage.replies);
  stages_.erase(stages_.begin() + static_cast<std::ptrdiff_t>(position));
  waiting_requests.drain([&](RpcPtr rpc) {
    if (position < stages_.size())
      stages_[position]->requests.push_back(std::move(rpc));
    else
      exits_.requests(std::move(rpc));
  });
  waiting_replies.drain([&](RpcPtr rpc) { enqueue_reply_before(position, std::move(rpc)); });
  ++stats_.changes;
  return {};
}

Status Graph::replace(StageId id, std::shared_ptr<Operator> op) {
  if (op == nullptr) return Status(StatusCode::kInvalidArgument, "no operator to replace with");
  size_t position = find(id);
  if (position == kNone)
    return Status(StatusCode::kNotFound, fmt::format("no stage {} in the graph", id));
  detach_stage(position);
  stages_[position]->op = std::move(op);
  ++stats_.changes;
  return {};
}

void Graph::drain_into(const std::function<void(RpcPtr)>& sink) {
  GraphExits saved = std::move(exits_);
  exits_ = GraphExits{sink, sink, sink};
  for (size_t i = 0; i < stages_.size(); ++i) detach_stage(i);
  for (auto& stage : stages_) {
    stage->requests.drain(sink);
    stage->replies.drain(sink);
  }
  take_posted_rpcs_into(sink);
  exits_ = std::move(saved);
  admitted_.clear();  // nothing is inside any more
}

void Graph::post_change(std::function<void(Graph&)> change) {
  {
    std::lock_guard lock(posted_mutex_);
    posted_changes_.push_back(std::move(change));
    has_posted_.store(true, std::memory_order_release);
  }
  wake_runtime();
}

void Graph::enqueue_request_after(size_t position, RpcPtr rpc) {
  if (position + 1 < stages_.size())
    stages_[position + 1]->requests.push_back(std::move(rpc));
  else
    exits_.requests(std::move(rpc));
}

void Graph::enqueue_reply_before(size_t position, RpcPtr rpc) {
  if (position > 0 && position - 1 < stages_.size()) {
    stages_[position - 1]->replies.push_back(std::move(rpc));
  } else {
    leave(*rpc);
    exits_.replies(std::move(rpc));
  }
}

void Graph::push_request(RpcPtr rpc) {
  MRPC_ASSERT(rpc != nullptr);
  admit(*rpc);
  if (stages_.empty())
    exits_.requests(std::move(rpc));
  else
    stages_.front()->requests.push_back(std::move(rpc));
}

void Graph::push_reply(RpcPtr rpc) {
  MRPC_ASSERT(rpc != nullptr);
  if (stages_.empty()) {
    leave(*rpc);
    exits_.replies(std::move(rpc));
  } else
    stages_.back()->replies.push_back(std::move(rpc));
}

void Graph::post_reply(RpcPtr rpc) {
  {
    std::lock_guard lock(posted_mutex_);
    posted_replies_.push_back(std::move(rpc));
    has_posted_.store(true, std::memory_order_release);
  }
  wake_runtime();
}

void Graph::post_request(RpcPtr rpc) {
  {
    std::lock_guard lock(posted_mutex_);
    posted_requests_.push_back(std::move(rpc));
    has_posted_.store(true, std::memory_order_release);
  }
  wake_runtime();
}

void Graph::take_posted_rpcs_into(const std::function<void(RpcPtr)>& sink) {
  std::vector<RpcPtr> requests, replies;
  {
    std::lock_guard lock(posted_mutex_);
    requests.swap(posted_requests_);
    replies.swap(posted_replies_);
  }
  for (auto& rpc : requests) sink(std::move(rpc));
  for (auto& rpc : replies) sink(std::move(rpc));
}

void Graph::take_posted() {
  if (!has_posted_.load(std::memory_order_acquire)) return;
  std::vector<RpcPtr> requests, replies;
  std::vector<std::function<void(Graph&)>> changes;
  {
    std::lock_guard lock(posted_mutex_);
    requests.swap(posted_requests_);
    replies.swap(posted_replies_);
    changes.swap(posted_changes_);
    has_posted_.store(false, std::memory_order_release);
  }
  for (auto& change : changes) change(*this);
  for (auto& rpc : requests) push_request(std::move(rpc));
  for (auto& rpc : replies) push_reply(std::move(rpc));
}

bool Graph::release_due(size_t position, MonoTime now) {
  bool released = false;
  Stage& stage = *stages_[position];
  while (!stage.delayed_requests.empty() && stage.delayed_requests.top().until <= now) {
    RpcPtr rpc = std::move(stage.delayed_requests.top().rpc);
    stage.delayed_requests.pop();
    enqueue_request_after(position, std::move(rpc));
    released = true;
  }
  while (!stage.delayed_replies.empty() && stage.delayed_replies.top().until <= now) {
    RpcPtr rpc = std::move(stage.delayed_replies.top().rpc);
    stage.delayed_replies.pop();
    enqueue_reply_before(position, std::move(rpc));
    released = true;
  }
  return released;
}

namespace {
// Moves up to `limit` RPCs from the front of `queue` into `batch`.
void fill_batch(RpcQueue& queue, RpcBatch& batch, size_t limit) {
  batch.clear();
  size_t count = std::min(limit, queue.size());
  for (size_t i = 0; i < count; ++i) batch.push_back(queue.pop_front());
}
}  // namespace

bool Graph::run() {
  take_posted();
  // Every graph runs every round: an empty one (the lean path: no operator) costs nothing more.
  if (stages_.empty() && retiring_ == 0) return false;
  bool did_work = false;
  // The clock is read only when some stage holds delayed RPCs (a clock read is most of an idle
  // round's cost).
  std::optional<MonoTime> now;
  // Polls and due timers first, so what they release is processed in this same round.
  for (size_t i = 0; i < stages_.size(); ++i) {
    const Stage& stage = *stages_[i];
    if (!stage.delayed_requests.empty() || !stage.delayed_replies.empty()) {
      if (!now) now = clock_.now();
      did_work |= release_due(i, *now);
    }
    StageOutput requests(*this, i, StageOutput::Direction::kRequests);
    StageOutput replies(*this, i, StageOutput::Direction::kReplies);
    for (auto& old : stages_[i]->older) did_work |= old.op->poll(requests, replies);
    did_work |= stages_[i]->op->poll(requests, replies);
  }
  for (size_t i = 0; i < stages_.size(); ++i) {
    Stage& stage = *stages_[i];
    if (stage.requests.empty()) continue;
    fill_batch(stage.requests, batch_, options_.max_batch);
    stats_.requests_processed += batch_.size();
    deliver(i, true, batch_);
    did_work = true;
  }
  for (size_t i = stages_.size(); i-- > 0;) {
    Stage& stage = *stages_[i];
    if (stage.replies.empty()) continue;
    fill_batch(stage.replies, batch_, options_.max_batch);
    stats_.replies_processed += batch_.size();
    deliver(i, false, batch_);
    did_work = true;
  }
  batch_.clear();
  if (retiring_ > 0) did_work |= retire_versions() > 0;
  return did_work;
}

// One batch to the stage's operator; while a gate is open there, each version gets the share of
// the batch whose calls it serves (oldest version first; order kept within each share).
void Graph::deliver(size_t position, bool requests, RpcBatch& batch) {
  Stage& stage = *stages_[position];
  StageOutput out(*this, position,
                  requests ? StageOutput::Direction::kRequests : StageOutput::Direction::kReplies);
  auto call = [&](Operator& op, RpcBatch& share) {
    if (requests)
      op.on_requests(share, out);
    else
      op.on_replies(share, out);
    for (auto& rpc : share)
      if (rpc) out.pass(std::move(rpc));
  };
  if (stage.older.empty()) return call(*stage.op, batch);
  for_each_version(stage, [&](Operator& op) {
    split_.clear();
    for (auto& rpc : batch)
      if (rpc && &version_for(stage, rpc->admission_epoch) == &op) split_.push_back(std::move(rpc));
    if (!split_.empty()) call(op, split_);
  });
  split_.clear();
}

MonoTime Graph::next_timer() const {
  MonoTime earliest = kNoDeadline;
  for (const auto& stage : stages_) {
    if (!stage->delayed_requests.empty())
      earliest = std::min(earliest, stage->delayed_requests.top().until);
    if (!stage->delayed_replies.empty())
      earliest = std::min(earliest, stage->delayed_replies.top().until);
    earliest = std::min(earliest, stage->op->next_timer());
    for (const auto& old : stage->older) {
      earliest = std::min(earliest, old.op->next_timer());
      // The latest a replaced version waits (its calls' deadlines are checked at each round).
      earliest = std::min(earliest, old.replaced_at + limits::kMaxUpgradeGateWait.count());
    }
  }
  if (retiring_ > 0) {
    const MonoTime now = clock_.now();
    for (const auto& bucket : admitted_)
      if (bucket.inside > 0 && bucket.epoch < epoch_->load(std::memory_order_relaxed) &&
          bucket.latest_deadline > now)
        earliest = std::min(earliest, bucket.latest_deadline);
  }
  return earliest;
}

bool Graph::prepare_to_sleep() {
  if (has_posted_.load(std::memory_order_acquire)) return false;
  for (const auto& stage : stages_)
    if (!stage->requests.empty() || !stage->replies.empty()) return false;
  // Every version of every stage, in order; on a refusal those asked before wake again.
  auto wake_before = [&](size_t stage_index, size_t version_index) {
    for (size_t j = 0; j <= stage_index && j < stages_.size(); ++j) {
      Stage& stage = *stages_[j];
      const size_t versions = stage.older.size() + 1;
      const size_t until = j < stage_index ? versions : version_index;
      for (size_t v = 0; v < until; ++v)
        (v < stage.older.size() ? *stage.older[v].op : *stage.op).woke();
    }
  };
  for (size_t i = 0; i < stages_.size(); ++i) {
    Stage& stage = *stages_[i];
    for (size_t v = 0; v <= stage.older.size(); ++v) {
      Operator& op = v < stage.older.size() ? *stage.older[v].op : *stage.op;
      if (!op.prepare_to_sleep()) {
        wake_before(i, v);
        return false;
      }
    }
  }
  return true;
}

void Graph::woke() {
  for (auto& stage : stages_) for_each_version(*stage, [](Operator& op) { op.woke(); });
}

size_t Graph::in_graph() const {
  size_t count = 0;
  for (const auto& stage : stages_)
    count += stage->requests.size() + stage->replies.size() + stage->delayed_requests.size() +
             stage->delayed_replies.size() + stage->op->held();
  for (const auto& stage : stages_)
    for (const auto& old : stage->older) count += old.op->held();
  return count;
}

}  // namespace mrpc
