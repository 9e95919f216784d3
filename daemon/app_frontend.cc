#include "app_frontend.h"

#include <spdlog/spdlog.h>

#include <cstring>

#include "mrpc/base/check.h"
#include "mrpc/message/copy.h"
#include "mrpc/transports/shm/metadata_block.h"
#include "peer_request.h"
#include "schema_convert.h"

namespace mrpc {

namespace {
// Bytes [offset, offset + length) of a region, or nothing if they do not lie inside it.
bool inside(uint64_t region_bytes, uint64_t offset, uint64_t length) {
  return offset <= region_bytes && length <= region_bytes - offset;
}
}  // namespace

bool AppFrontend::poll() {
  bool did_work = app_.flush_overflow();
  // Fair rounds in bytes: each turn earns round_copy_bytes of credit, up to one turn's worth;
  // copies of this connection's messages spend it. In debt, the connection sits this turn out
  // (its ring waits; the turn counts as work so the runtime comes back).
  const auto turn = static_cast<int64_t>(core_.config.round_copy_bytes);
  if (app_.earn_copy_credit(turn) <= 0) {
    core_.counters.turns_skipped_for_bytes.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  // An app that does not read its completions gets no new calls admitted: they wait, unread in
  // effect, while its replies, releases and cancels go on being handled (it may be blocked
  // submitting one of those, and every completion they cause is bounded by the call tables).
  // Once max_calls_in_flight calls wait, its ring is not read at all: only it waits.
  const bool backed_up = app_.overflow.size() >= app_.completions.entries();
  while (!backed_up && !waiting_calls_.empty()) {
    on_call(waiting_calls_.front());
    waiting_calls_.pop_front();
    did_work = true;
  }
  if (waiting_calls_.size() >= app_.outgoing.size()) return did_work;
  entries_.resize(core_.config.max_batch);
  auto popped = app_.submissions.pop_batch(std::span(entries_));
  if (!popped.ok()) {
    spdlog::warn("connection {}: submission ring corrupt ({}); closing it", app_.id,
                 popped.status().to_string());
    app_.broken = true;
    return true;
  }
  for (uint32_t i = 0; i < *popped && !app_.broken; ++i) {
    const shm::RingEntry& entry = entries_[i];
    switch (entry.kind) {
      case shm::EntryKind::kCall:
        if (backed_up || !waiting_calls_.empty())
          waiting_calls_.push_back(entry);
        else
          on_call(entry);
        break;
      case shm::EntryKind::kReply:
        on_reply(entry);
        break;
      case shm::EntryKind::kCancel:
        on_cancel(entry);
        break;
      case shm::EntryKind::kRelease:
        on_release(entry);
        break;
      default:
        core_.counters.protocol_errors.fetch_add(1, std::memory_order_relaxed);
        spdlog::debug("connection {}: unknown submission kind {}", app_.id,
                      static_cast<int>(entry.kind));
        break;
    }
  }
  return did_work || *popped > 0;
}

Status AppFrontend::admit(const shm::RingEntry& entry, MonoTime now, MonoTime& deadline) const {
  MRPC_REQUIRE(!core_.draining, StatusCode::kUnavailable, "mrpcd is shutting down");
  const RegisteredService* service = core_.registry.find(entry.service_id);
  MRPC_REQUIRE(service != nullptr, StatusCode::kInvalidArgument, "unknown service id {}",
               entry.service_id);
  MRPC_REQUIRE(entry.method_index < service->info->methods.size(), StatusCode::kInvalidArgument,
               "service {} has no method {}", service->full_name, entry.method_index);
  const OutgoingSlot& slot =
      app_.outgoing[static_cast<uint32_t>(entry.call_id) % app_.outgoing.size()];
  MRPC_REQUIRE(slot.call == kNoSlotHandle || slot.app_call_id != entry.call_id,
               StatusCode::kInvalidArgument, "call id {} is already in flight", entry.call_id);
  MRPC_REQUIRE(slot.call == kNoSlotHandle, StatusCode::kResourceExhausted,
               "call id {} maps to call slot {} (its low 32 bits mod max_calls_in_flight={}), "
               "which call {} still holds: at most max_calls_in_flight calls in flight, with ids "
               "distinct in that slot",
               entry.call_id, static_cast<uint32_t>(entry.call_id) % app_.outgoing.size(),
               app_.outgoing.size(), slot.app_call_id);
  deadline = entry.deadline <= 0 ? now + limits::kDefaultCallTimeout.count() : entry.deadline;
  MRPC_REQUIRE(deadline > now, StatusCode::kDeadlineExceeded,
               "the call's deadline had already passed");
  MRPC_REQUIRE(entry.message_offset != shm::kNoOffset && entry.message_offset < app_.heap.size(),
               StatusCode::kInvalidArgument, "request offset {} is outside the {}-byte heap",
               entry.message_offset, app_.heap.size());
  if (entry.metadata_offset != shm::kNoOffset || entry.metadata_length != 0) {
    MRPC_REQUIRE(entry.metadata_length <= limits::kMaxMetadataBytes, StatusCode::kInvalidArgument,
                 "metadata block of {} bytes exceeds kMaxMetadataBytes={}", entry.metadata_length,
                 limits::kMaxMetadataBytes);
    MRPC_REQUIRE(inside(app_.heap.size(), entry.metadata_offset, entry.metadata_length),
                 StatusCode::kInvalidArgument,
                 "metadata block [{}, +{}) is outside the {}-byte heap", entry.metadata_offset,
                 entry.metadata_length, app_.heap.size());
  }
  return {};
}

void AppFrontend::refuse_call(uint64_t call_id, const Status& status) {
  core_.counters.calls_started.fetch_add(1, std::memory_order_relaxed);
  core_.counters.calls_completed.fetch_add(1, std::memory_order_relaxed);
  core_.counters.calls_failed.fetch_add(1, std::memory_order_relaxed);
  app_.post_call_done(call_id, status, shm::kNoOffset);
  spdlog::debug("connection {}: call {} refused: {}", app_.id, call_id, status.to_string());
}

void AppFrontend::on_call(const shm::RingEntry& entry) {
  const MonoTime now = core_.clock.now();
  MonoTime deadline = kNoDeadline;
  if (Status admitted = admit(entry, now, deadline); !admitted.ok()) {
    if (admitted.code() == StatusCode::kInvalidArgument)
      core_.counters.protocol_errors.fetch_add(1, std::memory_order_relaxed);
    refuse_call(entry.call_id, admitted);
    return;
  }
  if (app_.uid_budget != nullptr &&
      !app_.uid_budget->try_start_call(core_.config.max_calls_in_flight_per_uid)) {
    refuse_call(
        entry.call_id,
        Status(StatusCode::kResourceExhausted,
               fmt::format("uid {} has max_calls_in_flight_per_uid={} calls in flight",
                           app_.uid_budget->uid, core_.config.max_calls_in_flight_per_uid)));
    return;
  }
  const SlotHandle call = core_.start_call(CallRecord{app_.id, entry.call_id, deadline});
  if (call == kNoSlotHandle) {
    if (app_.uid_budget != nullptr) app_.uid_budget->end_calls(1);
    refuse_call(entry.call_id, Status(StatusCode::kResourceExhausted,
                                      fmt::format("mrpcd's call table is full ({} calls)",
                                                  core_.calls.max_entries())));
    return;
  }
  app_.outgoing_slot(entry.call_id) = OutgoingSlot{entry.call_id, call};
  ++app_.outgoing_in_flight;
  core_.counters.calls_started.fetch_add(1, std::memory_order_relaxed);

  RpcPtr rpc = make_rpc();
  rpc->call_id = call;
  rpc->caller_call_id = entry.call_id;
  rpc->connection = app_.id;
  rpc->caller = app_.identity;
  rpc->service_id = entry.service_id;
  rpc->method_index = entry.method_index;
  rpc->request = MessageLocation{app_.id, RegionKind::kHeap, entry.message_offset};
  rpc->deadline = deadline;
  rpc->wait_for_ready = (entry.flags & shm::kCallWaitForReady) != 0;
  if (entry.metadata_length != 0) {
    rpc->metadata_block = MessageLocation{app_.id, RegionKind::kHeap, entry.metadata_offset};
    rpc->metadata_length = entry.metadata_length;
  }
  if (app_.schema_variants) {  // its schema of the service may differ (compatibly)
    if (const SchemaVariant* variant = variant_of(core_, app_, rpc->service_id)) {
      Status converted = convert_request(core_, app_, *variant, *rpc);
      if (!converted.ok()) {
        core_.finish_call(call, converted, shm::kNoOffset);
        core_.discard(std::move(rpc));
        return;
      }
    }
  }
  app_.egress->push_request(std::move(rpc));
}

void AppFrontend::on_reply(const shm::RingEntry& entry) {
  // The app gets its response memory back once the daemon is done reading it (kReplyDone,
  // quietly: libmrpc frees it at its next pass, its sleep bounded while responses await one); the
  // call's slot stays taken until then (IncomingCall::replied).
  const SlotHandle delivery = entry.call_id;
  IncomingCall* incoming = app_.incoming.find(delivery);
  if (incoming == nullptr) {  // an id it was never given, or a call that ended with its leaving
    core_.counters.protocol_errors.fetch_add(1, std::memory_order_relaxed);
    app_.post_quiet(shm::make_ring_entry(shm::EntryKind::kReplyDone, delivery));
    return;
  }
  if (incoming->replied) {  // a second reply: its first response is still being read
    core_.counters.protocol_errors.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (!app_.free_received(incoming->request).ok() || !app_.free_received(incoming->metadata).ok())
    spdlog::error("connection {}: could not free the request of incoming call {}", app_.id,
                  delivery);
  RpcPtr rpc = std::move(incoming->rpc);
  MRPC_ASSERT(rpc != nullptr, "incoming call {:#x} of connection {} has no RPC", delivery, app_.id);
  const bool cancelled = incoming->cancelled;
  *incoming = IncomingCall{.replied = true};
  if (cancelled) {  // the call already ended for its caller: nobody waits for this reply
    core_.counters.late_replies.fetch_add(1, std::memory_order_relaxed);
    app_.post_reply_done(delivery);
    return;
  }
  StatusCode code = status_code_from_wire(entry.status);
  std::string detail;
  if (entry.detail_offset != shm::kNoOffset) {
    uint64_t length = std::min<uint64_t>(entry.detail_length, limits::kMaxStatusDetailBytes);
    if (inside(app_.heap.size(), entry.detail_offset, length))
      detail.assign(reinterpret_cast<const char*>(app_.heap.data() + entry.detail_offset), length);
  }
  rpc->response = MessageLocation{};
  if (code == StatusCode::kOk && entry.message_offset == shm::kNoOffset) {
    rpc->status = Status(StatusCode::kInternal, "the server replied OK without a response");
  } else {
    rpc->status = Status(code, std::move(detail));
    if (code == StatusCode::kOk)
      rpc->response = MessageLocation{app_.id, RegionKind::kHeap, entry.message_offset};
  }
  // The transport copies the response and then posts kReplyDone; without one, it is due now.
  if (!rpc->response.present()) app_.post_reply_done(delivery);
  app_.ingress->push_reply(std::move(rpc));
}

void AppFrontend::on_cancel(const shm::RingEntry& entry) {
  const OutgoingSlot& slot = app_.outgoing_slot(entry.call_id);
  if (slot.call == kNoSlotHandle || slot.app_call_id != entry.call_id)
    return;  // already ended: the cancel raced the completion
  core_.finish_call(slot.call, Status(StatusCode::kCancelled, "the caller cancelled the call"),
                    shm::kNoOffset);
}

void AppFrontend::on_release(const shm::RingEntry& entry) {
  Status freed = app_.free_received(entry.message_offset);
  if (!freed.ok()) {
    core_.counters.protocol_errors.fetch_add(1, std::memory_order_relaxed);
    spdlog::debug("connection {}: bad release: {}", app_.id, freed.to_string());
  }
}

void AppFrontend::complete(RpcPtr rpc) {
  uint64_t response = rpc->response.present() && rpc->response.owner == app_.id &&
                              rpc->response.region == RegionKind::kReceive
                          ? rpc->response.offset
                          : shm::kNoOffset;
  if (core_.call(rpc->call_id) == nullptr) {  // ended meanwhile (deadline, cancel)
    core_.discard(std::move(rpc));
    return;
  }
  if (!rpc->status.ok() && response != shm::kNoOffset) {
    (void)app_.free_received(response);
    response = shm::kNoOffset;
  }
  if (app_.schema_variants && response != shm::kNoOffset) {
    if (const SchemaVariant* variant = variant_of(core_, app_, rpc->service_id)) {
      Status converted = convert_response(core_, app_, *variant, *rpc, &response);
      if (!converted.ok()) rpc->status = converted;
    }
  }
  core_.finish_call(rpc->call_id, rpc->status, response);
}

Status AppFrontend::copy_request(Rpc& rpc, uint64_t& request, uint64_t& metadata,
                                 uint32_t& metadata_length) {
  // A policy here copied the request into this app's receive region already (and decided on
  // that copy): it is handed over as it is.
  if (rpc.received_request.present()) {
    MRPC_ASSERT(rpc.received_request.owner == app_.id,
                "call {}: a request received for connection {} is delivered to {}", rpc.call_id,
                rpc.received_request.owner, app_.id);
    request = rpc.received_request.offset;
    rpc.received_request = MessageLocation{};
    rpc.received_request_bytes = 0;
  }
  // Else the caller's heap, unless a policy checked the request and its metadata in private
  // copies (then those are delivered, and the caller may have left meanwhile), or the request a
  // peer daemon sent (decoded here; its metadata block came with it).
  const bool private_request = rpc.request.region == RegionKind::kPrivate;
  const PeerRequest* peer = rpc.peer_request.get();
  const Connection* caller = core_.memory_of(rpc, rpc.request.owner);  // null for a peer's call
  if (caller == nullptr && rpc.metadata_block.present()) {
    (void)app_.free_received(request);  // kNoOffset unless received above
    request = shm::kNoOffset;
    return Status(StatusCode::kUnavailable, "the caller left");
  }
  if (request == shm::kNoOffset && peer != nullptr && !private_request) {
    auto decoded = decode_peer_request(core_, rpc, app_);
    if (!decoded.ok()) return decoded.status();
    request = *decoded;
  }
  if (request == shm::kNoOffset) {
    MRPC_REQUIRE(caller != nullptr || private_request, StatusCode::kUnavailable, "the caller left");
    const RegisteredService* service = core_.registry.find(rpc.service_id);
    MRPC_REQUIRE(service != nullptr, StatusCode::kUnavailable,
                 "the service was unregistered during the call");
    const MethodInfo& method = service->info->methods[rpc.method_index];
    const uint64_t used_before = app_.receive_allocator->used_bytes();
    const ConstRegion source = private_request ? ConstRegion{rpc.request.private_copy->bytes.get(),
                                                             rpc.request.private_copy->size}
                                               : caller->heap_view();
    auto copied = copy_message(
        *method.input, source, rpc.request.offset, app_.receive_view(), *app_.receive_allocator,
        CopyLimits{core_.config.max_message_bytes, limits::kMaxMessageNesting});
    if (!copied.ok()) return copied.status();
    if (caller != nullptr)  // fair rounds (a private copy may outlive its caller)
      caller->charge_copy(app_.receive_allocator->used_bytes() - used_before);
    request = *copied;
  }
  if (rpc.metadata_length == 0 && rpc.metadata.empty()) {
    rpc.peer_request.reset();  // decoded: the payload is in this app's region now
    return {};
  }

  // The encoded block is copied as it is, then checked in its copy, which the app cannot change
  // any more; metadata added by operators (rare) means re-encoding.
  Status status;
  auto block = app_.receive_allocator->allocate(std::max<uint64_t>(rpc.metadata_length, 1));
  if (!block.ok()) {
    status = block.status();
  } else {
    metadata = *block;
    metadata_length = rpc.metadata_length;
    if (rpc.metadata_length != 0) {
      MRPC_ASSERT(peer == nullptr || peer->metadata.size() == rpc.metadata_length,
                  "call {}: a peer's metadata block of {} bytes, {} to deliver", rpc.call_id,
                  peer == nullptr ? 0 : peer->metadata.size(), rpc.metadata_length);
      std::memcpy(
          app_.receive.data() + metadata,
          peer != nullptr ? peer->metadata.data() : caller->heap.data() + rpc.metadata_block.offset,
          rpc.metadata_length);
    }
    auto pairs = shm::decode_metadata(app_.receive.data(), app_.receive.size(), metadata,
                                      rpc.metadata_length);
    if (!pairs.ok()) {
      status = pairs.status();
    } else if (!rpc.metadata.empty()) {
      // An operator's entry replaces the app's entries of its key (a policy that sets a header
      // the app sent too: the callee sees one value, the policy's).
      std::erase_if(*pairs,
                    [&](const auto& pair) { return rpc.find_metadata(pair.first) != nullptr; });
      for (const auto& added : rpc.metadata) pairs->emplace_back(added.key, added.value);
      const uint64_t bytes = shm::metadata_block_bytes(*pairs);
      (void)app_.free_received(metadata);
      metadata = shm::kNoOffset;
      auto merged = app_.receive_allocator->allocate(bytes);
      if (!merged.ok()) {
        status = merged.status();
      } else {
        metadata = *merged;
        metadata_length = static_cast<uint32_t>(bytes);
        auto written =
            shm::encode_metadata(*pairs, std::span(app_.receive.data() + metadata, bytes));
        if (!written.ok()) status = written.status();
      }
    }
  }
  if (!status.ok()) {
    (void)app_.free_received(request);
    (void)app_.free_received(metadata);
    request = metadata = shm::kNoOffset;
  } else if (peer != nullptr) {
    rpc.peer_request.reset();  // decoded: the payload and its block are in this app's region now
    rpc.metadata_length = 0;
  }
  return status;
}

void AppFrontend::bounce(RpcPtr rpc, Status status) {
  rpc->status = std::move(status);
  app_.ingress->push_reply(std::move(rpc));
}

void AppFrontend::deliver(RpcPtr rpc) {
  // A call of another shard: its record is there, told of the delivery below (and it cancels the
  // delivery if the call has ended meanwhile).
  const bool call_of_this_shard = core_.is_local(rpc->call_id);
  CallRecord* record = call_of_this_shard ? core_.call(rpc->call_id) : nullptr;
  if (call_of_this_shard && record == nullptr) {  // ended for its caller while on its way here
    core_.discard(std::move(rpc));
    return;
  }
  if (record != nullptr && record->delivered >= record->deliveries.size()) {
    bounce(std::move(rpc),
           Status(StatusCode::kResourceExhausted,
                  fmt::format("the call has kMaxAttemptsPerCall={} attempts delivered already",
                              limits::kMaxAttemptsPerCall)));
    return;
  }
  if (app_.incoming.size() >= app_.incoming.max_entries()) {
    bounce(std::move(rpc),
           Status(StatusCode::kResourceExhausted,
                  fmt::format("the serving app '{}' has {} calls it has not answered yet or "
                              "whose responses are still being read (max_calls_served)",
                              app_.identity->app_name, app_.incoming.size())));
    return;
  }
  uint64_t request = shm::kNoOffset;
  uint64_t metadata = shm::kNoOffset;
  uint32_t metadata_length = 0;
  Status copied = copy_request(*rpc, request, metadata, metadata_length);
  app_.report_receive_usage();
  if (!copied.ok()) {
    spdlog::debug("call {} not delivered to connection {}: {}", rpc->call_id, app_.id,
                  copied.to_string());
    bounce(std::move(rpc), std::move(copied));
    return;
  }
  const SlotHandle delivery = app_.incoming.insert(IncomingCall{nullptr, request, metadata});
  MRPC_ASSERT(delivery != kNoSlotHandle, "incoming table full after the check");
  shm::RingEntry incoming = shm::make_ring_entry(shm::EntryKind::kIncomingCall, delivery);
  incoming.method_index = rpc->method_index;
  incoming.service_id = rpc->service_id;
  incoming.message_offset = request;
  incoming.metadata_offset = metadata;
  incoming.metadata_length = metadata_length;
  incoming.deadline = rpc->deadline;
  if (record != nullptr) {
    record->deliveries[record->delivered++] = Delivery{app_.id, delivery};
  } else {
    ShardMessage delivered;
    delivered.kind = ShardMessage::Kind::kDelivered;
    delivered.connection = app_.id;
    delivered.value = delivery;
    delivered.call = rpc->call_id;
    core_.send_to(shards::shard_of(rpc->call_id), std::move(delivered));
  }
  rpc->delivery_id = delivery;
  rpc->endpoint.connection = app_.id;
  app_.incoming.find(delivery)->rpc = std::move(rpc);
  if (!app_.post(incoming)) {
    // Its ring is corrupt: the connection closes at the end of the round and fails the call.
    spdlog::debug("connection {}: completion ring corrupt while delivering", app_.id);
  }
}

MonoTime AppFrontend::next_timer() const {
  if (app_.overflow.empty()) return kNoDeadline;
  // The app does not ring the daemon when it frees completion slots: retry the overflow soon.
  return core_.clock.now() + std::chrono::nanoseconds(std::chrono::milliseconds(1)).count();
}

bool AppFrontend::prepare_to_sleep() {
  sleeping_ = app_.submissions.prepare_to_sleep();
  return sleeping_;
}

void AppFrontend::woke() {
  if (!sleeping_) return;
  sleeping_ = false;
  app_.submissions.finish_sleep();
}

}  // namespace mrpc
