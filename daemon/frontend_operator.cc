#include "frontend_operator.h"

#include <spdlog/spdlog.h>

#include <string>

#include "mrpc/transports/shm/metadata_block.h"

namespace mrpc {

namespace {
// Bytes [offset, offset + length) of a region, or nothing if they do not lie inside it.
bool inside(uint64_t region_bytes, uint64_t offset, uint64_t length) {
  return offset <= region_bytes && length <= region_bytes - offset;
}
}  // namespace

bool FrontendOperator::poll(Output& requests, Output&) {
  Connection* app = core_.connection(connection_);
  if (app == nullptr) return false;
  bool did_work = app->flush_overflow();
  // An app that does not read its completions stops being read: its own ring fills up and only it
  // waits, while the daemon's memory for it stays bounded.
  if (app->overflow.size() >= app->completions.entries()) return did_work;
  entries_.resize(core_.config.max_batch);
  auto popped = app->submissions.pop_batch(std::span(entries_));
  if (!popped.ok()) {
    spdlog::warn("connection {}: submission ring corrupt ({}); closing it", connection_,
                 popped.status().to_string());
    app->broken = true;
    return true;
  }
  for (uint32_t i = 0; i < *popped; ++i) {
    const shm::RingEntry& entry = entries_[i];
    switch (entry.kind) {
      case shm::EntryKind::kCall:
        handle_call(*app, entry, requests);
        break;
      case shm::EntryKind::kReply:
        handle_reply(*app, entry);
        break;
      case shm::EntryKind::kCancel:
        handle_cancel(*app, entry);
        break;
      case shm::EntryKind::kRelease:
        handle_release(*app, entry);
        break;
      default:
        core_.counters.protocol_errors.fetch_add(1, std::memory_order_relaxed);
        spdlog::debug("connection {}: unknown submission kind {}", connection_,
                      static_cast<int>(entry.kind));
        break;
    }
  }
  return did_work || *popped > 0;
}

void FrontendOperator::refuse_call(Connection& app, uint64_t call_id, const Status& status) {
  core_.counters.calls_completed.fetch_add(1, std::memory_order_relaxed);
  core_.counters.calls_failed.fetch_add(1, std::memory_order_relaxed);
  app.post_call_done(call_id, status, shm::kNoOffset);
  spdlog::debug("connection {}: call {} refused: {}", connection_, call_id, status.to_string());
}

void FrontendOperator::handle_call(Connection& app, const shm::RingEntry& entry, Output& requests) {
  if (core_.draining) {
    refuse_call(app, entry.call_id, Status(StatusCode::kUnavailable, "mrpcd is shutting down"));
    return;
  }
  const RegisteredService* service = core_.registry.find(entry.service_id);
  if (service == nullptr) {
    refuse_call(app, entry.call_id,
                Status(StatusCode::kInvalidArgument,
                       fmt::format("unknown service id {}", entry.service_id)));
    return;
  }
  if (entry.method_index >= service->info->methods.size()) {
    refuse_call(
        app, entry.call_id,
        Status(StatusCode::kInvalidArgument,
               fmt::format("service {} has no method {}", service->full_name, entry.method_index)));
    return;
  }
  if (app.outgoing.contains(entry.call_id)) {
    core_.counters.protocol_errors.fetch_add(1, std::memory_order_relaxed);
    refuse_call(app, entry.call_id,
                Status(StatusCode::kInvalidArgument,
                       fmt::format("call id {} is already in flight", entry.call_id)));
    return;
  }
  if (app.outgoing.size() >= core_.config.max_calls_in_flight) {
    refuse_call(app, entry.call_id,
                Status(StatusCode::kResourceExhausted,
                       fmt::format("more than max_calls_in_flight={} calls in flight",
                                   core_.config.max_calls_in_flight)));
    return;
  }
  const MonoTime now = core_.clock.now();
  MonoTime deadline =
      entry.deadline <= 0 ? now + limits::kDefaultCallTimeout.count() : entry.deadline;
  if (deadline <= now) {
    refuse_call(app, entry.call_id,
                Status(StatusCode::kDeadlineExceeded, "the call's deadline had already passed"));
    return;
  }
  if (entry.message_offset == shm::kNoOffset || entry.message_offset >= app.heap.size()) {
    refuse_call(app, entry.call_id,
                Status(StatusCode::kInvalidArgument,
                       fmt::format("request offset {} is outside the {}-byte heap",
                                   entry.message_offset, app.heap.size())));
    return;
  }
  auto metadata = shm::decode_metadata(app.heap.data(), app.heap.size(), entry.metadata_offset,
                                       entry.metadata_length);
  if (!metadata.ok()) {
    refuse_call(app, entry.call_id, metadata.status());
    return;
  }

  auto rpc = std::make_unique<Rpc>();
  rpc->call_id = core_.next_call_id++;
  rpc->caller_call_id = entry.call_id;
  rpc->connection = app.id;
  rpc->caller = app.identity;
  rpc->service_id = entry.service_id;
  rpc->method_index = entry.method_index;
  rpc->request = MessageLocation{app.id, RegionKind::kHeap, entry.message_offset};
  rpc->deadline = deadline;
  rpc->metadata.reserve(metadata->size());
  for (auto& [key, value] : *metadata) rpc->metadata.push_back({std::move(key), std::move(value)});

  CallRecord& record = core_.calls[rpc->call_id];
  record.id = rpc->call_id;
  record.caller = app.id;
  record.caller_call_id = entry.call_id;
  record.deadline = deadline;
  core_.deadlines.emplace(deadline, rpc->call_id);
  app.outgoing.emplace(entry.call_id, rpc->call_id);
  core_.counters.calls_started.fetch_add(1, std::memory_order_relaxed);
  core_.counters.calls_in_flight.fetch_add(1, std::memory_order_relaxed);
  requests.pass(std::move(rpc));
}

void FrontendOperator::handle_reply(Connection& app, const shm::RingEntry& entry) {
  // Whatever the id, the app gets its response memory back once the daemon is done reading it.
  const shm::RingEntry reply_done = shm::make_ring_entry(shm::EntryKind::kReplyDone, entry.call_id);

  CallRecord* record = core_.call(entry.call_id);
  if (record == nullptr || record->callee != app.id || !record->awaiting_callee) {
    core_.counters.protocol_errors.fetch_add(1, std::memory_order_relaxed);
    app.post(reply_done);
    return;
  }
  record->awaiting_callee = false;
  if (!app.free_received(record->callee_request).ok() ||
      !app.free_received(record->callee_metadata).ok())
    spdlog::error("connection {}: could not free the request of call {}", app.id, record->id);

  if (!record->parked) {  // ended early (deadline, cancel) or the caller left: a late reply
    app.post(reply_done);
    core_.retire_if_done(record->id);
    return;
  }
  StatusCode code = status_code_from_wire(entry.status);
  std::string detail;
  if (entry.detail_offset != shm::kNoOffset) {
    uint64_t length = std::min<uint64_t>(entry.detail_length, limits::kMaxStatusDetailBytes);
    if (inside(app.heap.size(), entry.detail_offset, length))
      detail.assign(reinterpret_cast<const char*>(app.heap.data() + entry.detail_offset), length);
  }
  RpcPtr rpc = std::move(record->parked);
  rpc->endpoint.connection = app.id;
  rpc->response = MessageLocation{};
  if (code == StatusCode::kOk && entry.message_offset == shm::kNoOffset) {
    rpc->status = Status(StatusCode::kInternal, "the server replied OK without a response");
  } else {
    rpc->status = Status(code, std::move(detail));
    if (code == StatusCode::kOk)
      rpc->response = MessageLocation{app.id, RegionKind::kHeap, entry.message_offset};
  }
  // The router copies the response and then posts kReplyDone; without one, it is due now.
  if (!rpc->response.present()) app.post(reply_done);
  if (Connection* caller = core_.connection(rpc->connection)) {
    caller->graph->push_reply(std::move(rpc));
  } else {
    core_.retire_if_done(record->id);
  }
}

void FrontendOperator::handle_cancel(Connection& app, const shm::RingEntry& entry) {
  auto it = app.outgoing.find(entry.call_id);
  if (it == app.outgoing.end()) return;  // already ended: the cancel raced the completion
  uint64_t call_id = it->second;
  if (CallRecord* record = core_.call(call_id)) {
    core_.end_early(*record, Status(StatusCode::kCancelled, "the caller cancelled the call"));
    core_.retire_if_done(call_id);
  }
}

void FrontendOperator::handle_release(Connection& app, const shm::RingEntry& entry) {
  Status freed = app.free_received(entry.message_offset);
  if (!freed.ok()) {
    core_.counters.protocol_errors.fetch_add(1, std::memory_order_relaxed);
    spdlog::debug("connection {}: bad release: {}", app.id, freed.to_string());
  }
}

void FrontendOperator::on_requests(RpcBatch&, Output&) {
  // Nothing enters before the frontend; anything here passes on.
}

void FrontendOperator::on_replies(RpcBatch& batch, Output&) {
  for (auto& rpc : batch) {
    uint64_t response = rpc->response.present() && rpc->response.owner == connection_ &&
                                rpc->response.region == RegionKind::kReceive
                            ? rpc->response.offset
                            : shm::kNoOffset;
    CallRecord* record = core_.call(rpc->call_id);
    if (record != nullptr && !record->caller_done) {
      if (!rpc->status.ok() && response != shm::kNoOffset) {
        if (Connection* app = core_.connection(connection_)) (void)app->free_received(response);
        response = shm::kNoOffset;
      }
      core_.complete_for_caller(*record, rpc->status, response);
    } else if (response != shm::kNoOffset) {
      // Nobody waits for it any more: its block goes back at once.
      if (Connection* app = core_.connection(connection_)) (void)app->free_received(response);
    }
    core_.retire_if_done(rpc->call_id);
    rpc.reset();
  }
}

MonoTime FrontendOperator::next_timer() const {
  auto it = core_.connections.find(connection_);
  if (it == core_.connections.end() || it->second->overflow.empty()) return kNoDeadline;
  // The app does not ring the daemon when it frees completion slots: retry the overflow soon.
  return core_.clock.now() + std::chrono::nanoseconds(std::chrono::milliseconds(1)).count();
}

bool FrontendOperator::prepare_to_sleep() {
  Connection* app = core_.connection(connection_);
  if (app == nullptr) return true;
  sleeping_ = app->submissions.prepare_to_sleep();
  return sleeping_;
}

void FrontendOperator::woke() {
  if (!sleeping_) return;
  sleeping_ = false;
  if (Connection* app = core_.connection(connection_)) app->submissions.finish_sleep();
}

}  // namespace mrpc
