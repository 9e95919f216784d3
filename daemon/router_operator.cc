#include "router_operator.h"

#include <spdlog/spdlog.h>

#include "mrpc/base/check.h"
#include "mrpc/transports/shm/metadata_block.h"

namespace mrpc {

namespace {
CopyLimits copy_limits(const DaemonConfig& config) {
  return CopyLimits{config.max_message_bytes, limits::kMaxMessageNesting};
}
}  // namespace

Status RouterOperator::deliver(Rpc& rpc, const RegisteredService& service, Connection& caller,
                               Connection& server, CallRecord& record) {
  const MethodInfo& method = service.info->methods[rpc.method_index];
  auto request =
      copy_message(*method.input, caller.heap_view(), rpc.request.offset, server.receive_view(),
                   *server.receive_allocator, copy_limits(core_.config));
  if (!request.ok()) return request.status();

  uint64_t metadata_offset = shm::kNoOffset;
  uint64_t metadata_length = 0;
  if (!rpc.metadata.empty()) {
    shm::MetadataPairs pairs;
    pairs.reserve(rpc.metadata.size());
    for (const auto& entry : rpc.metadata) pairs.emplace_back(entry.key, entry.value);
    metadata_length = shm::metadata_block_bytes(pairs);
    auto block = server.receive_allocator->allocate(metadata_length);
    if (!block.ok()) {
      (void)server.free_received(*request);
      return block.status();
    }
    auto written =
        shm::encode_metadata(pairs, std::span(server.receive.data() + *block, metadata_length));
    if (!written.ok()) {
      (void)server.free_received(*request);
      (void)server.free_received(*block);
      return written.status();
    }
    metadata_offset = *block;
  }

  shm::RingEntry incoming = shm::make_ring_entry(shm::EntryKind::kIncomingCall, rpc.call_id);
  incoming.method_index = rpc.method_index;
  incoming.service_id = rpc.service_id;
  incoming.message_offset = *request;
  incoming.metadata_offset = metadata_offset;
  incoming.metadata_length = static_cast<uint32_t>(metadata_length);
  incoming.deadline = rpc.deadline;
  server.report_receive_usage();
  if (!server.post(incoming)) {
    return Status(StatusCode::kUnavailable, "the serving app's completion ring is corrupt");
  }
  record.stage = CallRecord::Stage::kDelivered;
  record.callee = server.id;
  record.awaiting_callee = true;
  record.callee_request = *request;
  record.callee_metadata = metadata_offset;
  rpc.endpoint.connection = server.id;
  return {};
}

void RouterOperator::on_requests(RpcBatch& batch, Output& out) {
  const MonoTime now = out.now();
  for (auto& rpc : batch) {
    CallRecord* record = core_.call(rpc->call_id);
    if (record == nullptr || record->caller_done) {  // ended while in the graph
      core_.retire_if_done(rpc->call_id);
      rpc.reset();
      continue;
    }
    if (rpc->deadline <= now) {
      out.drop(std::move(rpc),
               Status(StatusCode::kDeadlineExceeded, "the call passed its deadline"));
      continue;
    }
    const RegisteredService* service = core_.registry.find(rpc->service_id);
    Connection* server = service == nullptr ? nullptr : core_.connection(service->server);
    if (server == nullptr) {
      std::string name =
          service == nullptr ? fmt::format("id {}", rpc->service_id) : service->full_name;
      out.drop(std::move(rpc),
               Status(StatusCode::kUnavailable, fmt::format("no app serves {}", name)));
      continue;
    }
    Connection* caller = core_.connection(rpc->connection);
    if (caller == nullptr) {
      rpc.reset();
      continue;
    }
    Status delivered = deliver(*rpc, *service, *caller, *server, *record);
    if (!delivered.ok()) {
      spdlog::debug("call {} from connection {} not delivered: {}", rpc->call_id, rpc->connection,
                    delivered.to_string());
      out.drop(std::move(rpc), delivered);
      continue;
    }
    record->parked = std::move(rpc);  // waits in the call table for the server's reply
  }
}

void RouterOperator::copy_response(Rpc& rpc) {
  Connection* server = core_.connection(rpc.response.owner);
  Connection* caller = core_.connection(rpc.connection);
  if (server == nullptr || caller == nullptr) {
    rpc.status = Status(StatusCode::kUnavailable, "the serving app left before its reply was read");
    rpc.response = MessageLocation{};
    return;
  }
  const RegisteredService* service = core_.registry.find(rpc.service_id);
  MRPC_ASSERT(service != nullptr && rpc.method_index < service->info->methods.size(),
              "a routed call has service {} method {}", rpc.service_id, rpc.method_index);
  const MethodInfo& method = service->info->methods[rpc.method_index];
  auto response =
      copy_message(*method.output, server->heap_view(), rpc.response.offset, caller->receive_view(),
                   *caller->receive_allocator, copy_limits(core_.config));
  caller->report_receive_usage();
  if (response.ok()) {
    rpc.response = MessageLocation{caller->id, RegionKind::kReceive, *response};
  } else {
    rpc.status = Status(response.status().code(),
                        "bad response from the server: " + response.status().message());
    rpc.response = MessageLocation{};
  }
  server->post(shm::make_ring_entry(shm::EntryKind::kReplyDone, rpc.call_id));
}

void RouterOperator::on_replies(RpcBatch& batch, Output&) {
  for (auto& rpc : batch) {
    if (rpc->response.present() && rpc->response.region == RegionKind::kHeap) copy_response(*rpc);
  }
}

}  // namespace mrpc
