// DaemonCore: the call table's life cycle. See core.h.
#include "core.h"

#include <spdlog/spdlog.h>

#include "remote_ids.h"
#include "router.h"
#include "tcp_transport.h"

namespace mrpc {

thread_local DaemonCore* DaemonCore::this_thread_ = nullptr;

void JobQueue::post(std::function<void()> job) {
  {
    std::lock_guard lock(mutex_);
    jobs_.push_back(std::move(job));
    has_jobs_.store(true, std::memory_order_release);
  }
  if (runtime != nullptr) runtime->wake();
}

bool JobQueue::run() {
  if (!has_jobs_.load(std::memory_order_acquire)) return false;
  std::vector<std::function<void()>> jobs;
  {
    std::lock_guard lock(mutex_);
    jobs.swap(jobs_);
    has_jobs_.store(false, std::memory_order_release);
  }
  for (auto& job : jobs) job();
  return true;
}

const Connection* DaemonCore::memory_of(const Rpc& rpc, ConnectionId owner) {
  // A peer daemon's link (tcp_transport.h) is no app: its calls carry their request in
  // Rpc::peer_request, and nothing of them lies in a Connection's memory.
  if (remote_ids::is_remote(owner)) return nullptr;
  if (is_local(owner)) return connection(owner);
  const auto* pinned = static_cast<const Connection*>(rpc.pinned_memory.get());
  return pinned != nullptr && pinned->id == owner ? pinned : nullptr;
}

void DaemonCore::send_to(uint32_t to, ShardMessage message) {
  MRPC_ASSERT(to != shard && to < shared.shards.size(), "shard {} sends to shard {}", shard, to);
  ShardInbox& target = *shared.shards[to]->inbox;
  target.from(shard).push(std::move(message));
  target.ring();
}

void DaemonCore::reply_done(ConnectionId server, uint64_t delivery,
                            std::shared_ptr<const void> pinned) {
  if (is_local(server)) {
    if (Connection* owner = connection(server)) owner->post_reply_done(delivery);
    return;
  }
  ShardMessage message;
  message.kind = ShardMessage::Kind::kReplyDone;
  message.connection = server;
  message.value = delivery;
  message.pinned_memory = std::move(pinned);
  send_to(shards::shard_of(server), std::move(message));
}

void DaemonCore::publish(const ServiceUpdate& update,
                         const std::shared_ptr<std::atomic<size_t>>& shards_left) {
  if (shards_left != nullptr)
    shards_left->store(shared.shards.size() - 1, std::memory_order_relaxed);
  for (DaemonCore* other : shared.shards) {
    if (other == this) continue;
    // `origin` outlives the job: Daemon::stop joins every runtime thread before any shard is
    // destroyed, and jobs left in a stopped shard's queue are destroyed without running.
    other->jobs.post([other, update, shards_left, origin = runtime] {
      other->apply(update);
      if (shards_left != nullptr && shards_left->fetch_sub(1, std::memory_order_acq_rel) == 1)
        origin->wake();
    });
  }
  apply(update);
  counters.services.store(shared.directory.size(), std::memory_order_relaxed);
}

void DaemonCore::apply(ServiceUpdate update) {
  std::vector<RpcPtr> orphaned;
  RegisteredService* serving = registry.apply(std::move(update), orphaned);
  for (RpcPtr& rpc : orphaned) discard(std::move(rpc));
  if (serving != nullptr) Router(*this).server_registered(*serving);
}

SlotHandle DaemonCore::start_call(const CallRecord& record) {
  SlotHandle local = calls.insert(record);
  if (local == kNoSlotHandle) return local;
  deadlines.push(local, record.deadline);
  counters.calls_in_flight.fetch_add(1, std::memory_order_relaxed);
  report_tables();
  return shards::global(local, shard);
}

void DaemonCore::finish_call(SlotHandle handle, const Status& status, uint64_t response) {
  CallRecord* found = call(handle);
  if (found == nullptr) return;
  const CallRecord record = *found;
  const SlotHandle local = shards::local(handle);
  deadlines.remove(local);
  calls.erase(local);
  counters.calls_in_flight.fetch_sub(1, std::memory_order_relaxed);
  report_tables();  // before kCallDone, so a caller that saw it sees the tables without it
  if (Connection* caller = connection(record.caller)) {
    OutgoingSlot& slot = caller->outgoing_slot(record.app_call_id);
    if (slot.call == handle) {
      slot = OutgoingSlot{};
      caller->end_outgoing();
    }
    counters.calls_completed.fetch_add(1, std::memory_order_relaxed);
    if (!status.ok()) counters.calls_failed.fetch_add(1, std::memory_order_relaxed);
    caller->post_call_done(record.app_call_id, status, response);
  }
  if (tcp != nullptr && remote_ids::is_remote(record.caller))
    tcp->served_call_ended(record.caller, record.app_call_id);
  // Attempts already replied to are no longer in their callee's table: this finds nothing there.
  for (uint32_t i = 0; i < record.delivered; ++i)
    transport->cancel(record.deliveries[i].callee, record.deliveries[i].handle);
}

void DaemonCore::end_attempt(RpcPtr rpc) {
  counters.attempts_ended.fetch_add(1, std::memory_order_relaxed);
  free_held(*rpc);
}

void DaemonCore::discard(RpcPtr rpc) {
  counters.late_replies.fetch_add(1, std::memory_order_relaxed);
  free_held(*rpc);
}

void DaemonCore::free_held(Rpc& rpc) {
  free_received_request(rpc);
  const MessageLocation& response = rpc.response;
  // A private copy frees itself with the Rpc (its server was told at the copy).
  if (!response.present() || response.region == RegionKind::kPrivate) return;
  if (response.region == RegionKind::kHeap) {  // still in the server's heap: it may free it
    reply_done(response.owner, rpc.delivery_id, rpc.pinned_memory);
  } else {
    free_received(response.owner, response.offset);
  }
}

void DaemonCore::free_received_request(Rpc& rpc) {
  if (!rpc.received_request.present()) return;
  free_received(rpc.received_request.owner, rpc.received_request.offset);
  rpc.received_request = MessageLocation{};
  rpc.received_request_bytes = 0;
}

void DaemonCore::free_received(ConnectionId owner_id, uint64_t offset) {
  if (Connection* owner = connection(owner_id)) {
    (void)owner->free_received(offset);
  } else if (!is_local(owner_id)) {
    ShardMessage message;
    message.kind = ShardMessage::Kind::kFreeReceived;
    message.connection = owner_id;
    message.value = offset;
    send_to(shards::shard_of(owner_id), std::move(message));
  }
}

bool DaemonCore::expire_deadlines() {
  const MonoTime now = clock.now();
  bool expired = false;
  while (!deadlines.empty() && deadlines.top().deadline <= now) {
    const SlotHandle handle = shards::global(deadlines.top().handle, shard);
    const CallRecord* record = call(handle);
    finish_call(handle,
                Status(StatusCode::kDeadlineExceeded,
                       record != nullptr && record->waiting_for_server
                           ? "the call passed its deadline while waiting for a server "
                             "(wait_for_ready): no app served the service in time"
                           : "the call passed its deadline"),
                shm::kNoOffset);
    expired = true;
  }
  return expired;
}

void DaemonCore::connection_lost(Connection& app) {
  // The app's own calls end without anyone to tell; what is still travelling for them is
  // discarded when it surfaces.
  for (OutgoingSlot& slot : app.outgoing) {
    if (slot.call == kNoSlotHandle) continue;
    SlotHandle call = slot.call;
    slot = OutgoingSlot{};
    finish_call(call, Status(StatusCode::kCancelled, "the caller left"), shm::kNoOffset);
  }
  app.end_outgoing(app.outgoing_in_flight);
  if (app.egress) app.egress->drain_into([this](RpcPtr rpc) { discard(std::move(rpc)); });

  // Calls delivered to it, or on their way to it, fail with UNAVAILABLE; its ingress policies are
  // going away with it, so they are skipped. Its regions go with it: nothing to free there.
  auto fail_back = [this](RpcPtr rpc) {
    if (rpc->status.ok() || rpc->response.present())
      rpc->status = Status(StatusCode::kUnavailable, "the serving app disconnected");
    rpc->response = MessageLocation{};
    rpc->received_request = MessageLocation{};  // in its receive region, which goes with it
    transport->send_reply(std::move(rpc));
  };
  app.incoming.for_each([&](SlotHandle handle, IncomingCall& incoming) {
    RpcPtr rpc = std::move(incoming.rpc);
    app.incoming.erase(handle);
    if (rpc) fail_back(std::move(rpc));
  });
  if (app.ingress) app.ingress->drain_into(fail_back);
  for (const ServiceUpdate& update : shared.directory.connection_closed(app.id, clock.now()))
    publish(update);
}

void DaemonCore::report_tables() {
  counters.call_table_size.store(calls.size(), std::memory_order_relaxed);
  counters.call_table_capacity.store(calls.capacity(), std::memory_order_relaxed);
  counters.deadline_heap_size.store(deadlines.size(), std::memory_order_relaxed);
  counters.deadline_heap_capacity.store(deadlines.capacity(), std::memory_order_relaxed);
}

}  // namespace mrpc
