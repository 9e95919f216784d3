// DaemonCore and Connection: call bookkeeping shared by the frontend and router operators.
#include <algorithm>
#include <cstring>

#include "core.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <vector>

namespace mrpc {

bool Connection::post(const shm::RingEntry& entry) {
  if (broken) return false;
  if (!overflow.empty()) {
    overflow.push_back(entry);
    return true;
  }
  Status pushed = completions.push(entry);
  if (pushed.ok()) return true;
  if (pushed.code() == StatusCode::kResourceExhausted) {
    overflow.push_back(entry);
    return true;
  }
  spdlog::warn("connection {}: completion ring corrupt ({}); closing it", id, pushed.to_string());
  broken = true;
  return false;
}

bool Connection::flush_overflow() {
  if (overflow.empty() || broken) return false;
  bool moved = false;
  while (!overflow.empty()) {
    Status pushed = completions.push(overflow.front());
    if (!pushed.ok()) {
      if (pushed.code() != StatusCode::kResourceExhausted) broken = true;
      break;
    }
    overflow.pop_front();
    moved = true;
  }
  return moved;
}

void Connection::post_call_done(uint64_t call_id, const Status& status, uint64_t response) {
  shm::RingEntry done = shm::make_ring_entry(shm::EntryKind::kCallDone, call_id);
  done.status = static_cast<uint32_t>(status.code());
  done.message_offset = response;
  const std::string& text = status.message();
  if (!status.ok() && !text.empty()) {
    const uint64_t length = std::min<uint64_t>(text.size(), limits::kMaxStatusDetailBytes);
    if (auto block = receive_allocator->allocate(length, 1); block.ok()) {
      std::memcpy(receive.data() + *block, text.data(), length);
      done.detail_offset = *block;
      done.detail_length = static_cast<uint32_t>(length);
      report_receive_usage();
    }
  }
  if (!post(done)) {
    (void)free_received(response);
    (void)free_received(done.detail_offset);
  }
}

Status Connection::free_received(uint64_t offset) {
  if (offset == shm::kNoOffset) return {};
  Status freed = receive_allocator->free(offset);
  report_receive_usage();
  return freed;
}

void Connection::report_receive_usage(bool closing) {
  if (receive_bytes_total == nullptr || receive_allocator == nullptr) return;
  uint64_t used = closing ? 0 : receive_allocator->used_bytes();
  if (used >= receive_bytes_reported)
    receive_bytes_total->fetch_add(used - receive_bytes_reported, std::memory_order_relaxed);
  else
    receive_bytes_total->fetch_sub(receive_bytes_reported - used, std::memory_order_relaxed);
  receive_bytes_reported = used;
}

void DaemonCore::complete_for_caller(CallRecord& record, const Status& status, uint64_t response) {
  if (record.caller_done) return;
  record.caller_done = true;
  counters.calls_in_flight.fetch_sub(1, std::memory_order_relaxed);
  counters.calls_completed.fetch_add(1, std::memory_order_relaxed);
  if (!status.ok()) counters.calls_failed.fetch_add(1, std::memory_order_relaxed);
  Connection* caller = connection(record.caller);
  if (caller == nullptr) return;
  caller->outgoing.erase(record.caller_call_id);
  caller->post_call_done(record.caller_call_id, status, response);
}

void DaemonCore::end_early(CallRecord& record, const Status& status) {
  if (record.caller_done) return;
  if (record.stage == CallRecord::Stage::kInGraph) {
    // The RPC is somewhere in the caller's graph; it is discarded when it surfaces.
    complete_for_caller(record, status, shm::kNoOffset);
  } else if (record.parked) {
    // Delivered and waiting for its reply: the error travels the caller's reply path instead.
    RpcPtr rpc = std::move(record.parked);
    rpc->status = status;
    rpc->response = MessageLocation{};
    if (Connection* caller = connection(record.caller))
      caller->graph->push_reply(std::move(rpc));
    else
      complete_for_caller(record, status, shm::kNoOffset);
  }
  // else: the reply is already on its way up the caller's reply path; it wins.
  if (record.awaiting_callee && !record.callee_cancelled) {
    record.callee_cancelled = true;
    if (Connection* callee = connection(record.callee))
      callee->post(shm::make_ring_entry(shm::EntryKind::kIncomingCancelled, record.id));
  }
}

void DaemonCore::retire_if_done(uint64_t call_id) {
  auto it = calls.find(call_id);
  if (it == calls.end()) return;
  const CallRecord& record = it->second;
  if (record.caller_done && !record.awaiting_callee && !record.parked) calls.erase(it);
}

MonoTime DaemonCore::next_deadline() {
  while (!deadlines.empty()) {
    CallRecord* record = call(deadlines.top().second);
    if (record != nullptr && !record->caller_done) return deadlines.top().first;
    deadlines.pop();
  }
  return kNoDeadline;
}

bool DaemonCore::expire_deadlines() {
  const MonoTime now = clock.now();
  bool expired = false;
  while (!deadlines.empty() && deadlines.top().first <= now) {
    uint64_t call_id = deadlines.top().second;
    deadlines.pop();
    CallRecord* record = call(call_id);
    if (record == nullptr || record->caller_done) continue;
    end_early(*record, Status(StatusCode::kDeadlineExceeded, "the call passed its deadline"));
    retire_if_done(call_id);
    expired = true;
  }
  return expired;
}

void DaemonCore::connection_lost(ConnectionId id) {
  std::vector<uint64_t> affected;
  for (auto& [call_id, record] : calls)
    if (record.caller == id || record.callee == id) affected.push_back(call_id);
  std::sort(affected.begin(), affected.end());  // calls end in the order they started
  for (uint64_t call_id : affected) {
    CallRecord* record = call(call_id);
    if (record == nullptr) continue;
    if (record->callee == id && record->awaiting_callee) {
      // Its receive region goes with it: nothing to free, no reply to wait for.
      record->awaiting_callee = false;
      record->callee_cancelled = true;
      end_early(*record, Status(StatusCode::kUnavailable, "the serving app disconnected"));
    }
    if (record->caller == id && !record->caller_done) {
      record->caller_done = true;
      record->parked.reset();
      counters.calls_in_flight.fetch_sub(1, std::memory_order_relaxed);
      if (record->awaiting_callee && !record->callee_cancelled) {
        record->callee_cancelled = true;
        if (Connection* callee = connection(record->callee))
          callee->post(shm::make_ring_entry(shm::EntryKind::kIncomingCancelled, record->id));
      }
    }
    if (record->caller == id) record->parked.reset();
    retire_if_done(call_id);
  }
  registry.connection_closed(id);
}

}  // namespace mrpc
