// DaemonCore: the call table's life cycle. See core.h.
#include "core.h"

#include <spdlog/spdlog.h>

namespace mrpc {

SlotHandle DaemonCore::start_call(const CallRecord& record) {
  SlotHandle handle = calls.insert(record);
  if (handle == kNoSlotHandle) return handle;
  deadlines.push(handle, record.deadline);
  counters.calls_in_flight.fetch_add(1, std::memory_order_relaxed);
  report_tables();
  return handle;
}

void DaemonCore::finish_call(SlotHandle handle, const Status& status, uint64_t response) {
  CallRecord* found = calls.find(handle);
  if (found == nullptr) return;
  const CallRecord record = *found;
  deadlines.remove(handle);
  calls.erase(handle);
  counters.calls_in_flight.fetch_sub(1, std::memory_order_relaxed);
  report_tables();  // before kCallDone, so a caller that saw it sees the tables without it
  if (Connection* caller = connection(record.caller)) {
    OutgoingSlot& slot = caller->outgoing_slot(record.app_call_id);
    if (slot.call == handle) {
      slot = OutgoingSlot{};
      --caller->outgoing_in_flight;
    }
    counters.calls_completed.fetch_add(1, std::memory_order_relaxed);
    if (!status.ok()) counters.calls_failed.fetch_add(1, std::memory_order_relaxed);
    caller->post_call_done(record.app_call_id, status, response);
  }
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

void DaemonCore::free_held(const Rpc& rpc) {
  const MessageLocation& response = rpc.response;
  if (!response.present()) return;
  if (Connection* owner = connection(response.owner)) {
    if (response.region == RegionKind::kReceive)
      (void)owner->free_received(response.offset);
    else  // still in the server's heap: the server may free it
      owner->post(shm::make_ring_entry(shm::EntryKind::kReplyDone, rpc.delivery_id));
  }
}

bool DaemonCore::expire_deadlines() {
  const MonoTime now = clock.now();
  bool expired = false;
  while (!deadlines.empty() && deadlines.top().deadline <= now) {
    const SlotHandle handle = deadlines.top().handle;
    const CallRecord* record = calls.find(handle);
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
  app.outgoing_in_flight = 0;
  if (app.egress) app.egress->drain_into([this](RpcPtr rpc) { discard(std::move(rpc)); });

  // Calls delivered to it, or on their way to it, fail with UNAVAILABLE; its ingress policies are
  // going away with it, so they are skipped. Its regions go with it: nothing to free there.
  auto fail_back = [this](RpcPtr rpc) {
    if (rpc->status.ok() || rpc->response.present())
      rpc->status = Status(StatusCode::kUnavailable, "the serving app disconnected");
    rpc->response = MessageLocation{};
    transport->send_reply(std::move(rpc));
  };
  app.incoming.for_each([&](SlotHandle handle, IncomingCall& incoming) {
    RpcPtr rpc = std::move(incoming.rpc);
    app.incoming.erase(handle);
    if (rpc) fail_back(std::move(rpc));
  });
  if (app.ingress) app.ingress->drain_into(fail_back);
  registry.connection_closed(app.id);
  counters.services.store(registry.size(), std::memory_order_relaxed);
}

void DaemonCore::report_tables() {
  counters.call_table_size.store(calls.size(), std::memory_order_relaxed);
  counters.call_table_capacity.store(calls.capacity(), std::memory_order_relaxed);
  counters.deadline_heap_size.store(deadlines.size(), std::memory_order_relaxed);
  counters.deadline_heap_capacity.store(deadlines.capacity(), std::memory_order_relaxed);
}

}  // namespace mrpc
