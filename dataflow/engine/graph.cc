// Graph: see mrpc/dataflow/graph.h.
#include "mrpc/dataflow/graph.h"

#include <algorithm>
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
    attempt->delivery_id = 0;
    attempt->endpoint = endpoint;
    const uint16_t number = attempt->attempt;
    graph_.enqueue_request_after(position_, std::move(attempt));
    return number;
  }
  void end(RpcPtr attempt) override {
    MRPC_ASSERT(attempt != nullptr);
    if (graph_.exits_.ended) graph_.exits_.ended(std::move(attempt));
  }
  MonoTime now() const override { return graph_.clock_.now(); }

 private:
  Graph& graph_;
  size_t position_;
  Direction direction_;
};

Graph::Graph(const Clock& clock, GraphExits exits, GraphOptions options)
    : clock_(clock), exits_(std::move(exits)), options_(options) {
  MRPC_ASSERT(exits_.requests && exits_.replies, "a graph needs both exits");
  MRPC_ASSERT(options_.max_batch > 0);
}

Graph::~Graph() = default;

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
  StageOutput requests(*this, position, StageOutput::Direction::kRequests);
  StageOutput replies(*this, position, StageOutput::Direction::kReplies);
  stage.op->detach(requests, replies);
  MRPC_ASSERT(stage.op->held() == 0, "operator {} still holds {} RPCs after detach",
              stage.op->name(), stage.op->held());
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
  std::deque<RpcPtr> waiting_requests = std::move(stage.requests);
  std::deque<RpcPtr> waiting_replies = std::move(stage.replies);
  stages_.erase(stages_.begin() + static_cast<std::ptrdiff_t>(position));
  for (auto& rpc : waiting_requests) {
    if (position < stages_.size())
      stages_[position]->requests.push_back(std::move(rpc));
    else
      exits_.requests(std::move(rpc));
  }
  for (auto& rpc : waiting_replies) enqueue_reply_before(position, std::move(rpc));
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
    for (auto& rpc : stage->requests) sink(std::move(rpc));
    for (auto& rpc : stage->replies) sink(std::move(rpc));
    stage->requests.clear();
    stage->replies.clear();
  }
  take_posted_rpcs_into(sink);
  exits_ = std::move(saved);
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
  if (position > 0 && position - 1 < stages_.size())
    stages_[position - 1]->replies.push_back(std::move(rpc));
  else
    exits_.replies(std::move(rpc));
}

void Graph::push_request(RpcPtr rpc) {
  MRPC_ASSERT(rpc != nullptr);
  if (stages_.empty())
    exits_.requests(std::move(rpc));
  else
    stages_.front()->requests.push_back(std::move(rpc));
}

void Graph::push_reply(RpcPtr rpc) {
  MRPC_ASSERT(rpc != nullptr);
  if (stages_.empty())
    exits_.replies(std::move(rpc));
  else
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
void fill_batch(std::deque<RpcPtr>& queue, RpcBatch& batch, size_t limit) {
  batch.clear();
  size_t count = std::min(limit, queue.size());
  for (size_t i = 0; i < count; ++i) {
    batch.push_back(std::move(queue.front()));
    queue.pop_front();
  }
}
}  // namespace

bool Graph::run() {
  take_posted();
  bool did_work = false;
  const MonoTime now = clock_.now();
  // Polls and due timers first, so what they release is processed in this same round.
  for (size_t i = 0; i < stages_.size(); ++i) {
    did_work |= release_due(i, now);
    StageOutput requests(*this, i, StageOutput::Direction::kRequests);
    StageOutput replies(*this, i, StageOutput::Direction::kReplies);
    did_work |= stages_[i]->op->poll(requests, replies);
  }
  for (size_t i = 0; i < stages_.size(); ++i) {
    Stage& stage = *stages_[i];
    if (stage.requests.empty()) continue;
    fill_batch(stage.requests, batch_, options_.max_batch);
    stats_.requests_processed += batch_.size();
    StageOutput out(*this, i, StageOutput::Direction::kRequests);
    stage.op->on_requests(batch_, out);
    for (auto& rpc : batch_)
      if (rpc) out.pass(std::move(rpc));
    did_work = true;
  }
  for (size_t i = stages_.size(); i-- > 0;) {
    Stage& stage = *stages_[i];
    if (stage.replies.empty()) continue;
    fill_batch(stage.replies, batch_, options_.max_batch);
    stats_.replies_processed += batch_.size();
    StageOutput out(*this, i, StageOutput::Direction::kReplies);
    stage.op->on_replies(batch_, out);
    for (auto& rpc : batch_)
      if (rpc) out.pass(std::move(rpc));
    did_work = true;
  }
  batch_.clear();
  return did_work;
}

MonoTime Graph::next_timer() const {
  MonoTime earliest = kNoDeadline;
  for (const auto& stage : stages_) {
    if (!stage->delayed_requests.empty())
      earliest = std::min(earliest, stage->delayed_requests.top().until);
    if (!stage->delayed_replies.empty())
      earliest = std::min(earliest, stage->delayed_replies.top().until);
    earliest = std::min(earliest, stage->op->next_timer());
  }
  return earliest;
}

bool Graph::prepare_to_sleep() {
  if (has_posted_.load(std::memory_order_acquire)) return false;
  for (const auto& stage : stages_)
    if (!stage->requests.empty() || !stage->replies.empty()) return false;
  for (size_t i = 0; i < stages_.size(); ++i) {
    if (!stages_[i]->op->prepare_to_sleep()) {
      for (size_t j = 0; j < i; ++j) stages_[j]->op->woke();
      return false;
    }
  }
  return true;
}

void Graph::woke() {
  for (auto& stage : stages_) stage->op->woke();
}

size_t Graph::in_graph() const {
  size_t count = 0;
  for (const auto& stage : stages_)
    count += stage->requests.size() + stage->replies.size() + stage->delayed_requests.size() +
             stage->delayed_replies.size() + stage->op->held();
  return count;
}

}  // namespace mrpc
