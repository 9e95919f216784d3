#include "local_transport.h"

#include <spdlog/spdlog.h>

#include "mrpc/base/check.h"
#include "mrpc/message/copy.h"
#include "remote_ids.h"
#include "tcp_transport.h"

namespace mrpc {

void LocalTransport::send_request(RpcPtr rpc) {
  const ConnectionId callee = rpc->endpoint.connection;
  if (core_.is_local(callee)) return deliver_here(std::move(rpc));
  rpc->pinned_memory = core_.pin(rpc->connection);  // the caller's heap holds the request
  ShardMessage message;
  message.kind = ShardMessage::Kind::kRequest;
  message.rpc = std::move(rpc);
  core_.send_to(shards::shard_of(callee), std::move(message));
}

void LocalTransport::deliver_here(RpcPtr rpc) {
  Connection* callee = core_.connection(rpc->endpoint.connection);
  if (callee != nullptr) {
    callee->ingress->push_request(std::move(rpc));
  } else if (remote_ids::is_remote(rpc->connection)) {
    // A peer daemon's call: its link's shard answers the peer.
    rpc->status = Status(StatusCode::kUnavailable, "the serving app left");
    rpc->pinned_memory.reset();
    send_reply(std::move(rpc));
  } else if (!core_.is_local(rpc->connection)) {
    // It left after the caller's shard chose it: that shard routes the call again.
    const uint32_t caller_shard = shards::shard_of(rpc->connection);
    rpc->endpoint = Endpoint{};
    rpc->pinned_memory.reset();
    ShardMessage message;
    message.kind = ShardMessage::Kind::kBounced;
    message.rpc = std::move(rpc);
    core_.send_to(caller_shard, std::move(message));
  } else {
    rpc->status = Status(StatusCode::kUnavailable, "the serving app left");
    send_reply(std::move(rpc));
  }
}

void LocalTransport::send_reply(RpcPtr rpc) {
  if (core_.is_local(rpc->connection)) return reply_here(std::move(rpc));
  // The response (if any) is still in the server's heap, on this shard: pin it for the copy.
  const MessageLocation& response = rpc->response;
  rpc->pinned_memory = response.present() && response.region == RegionKind::kHeap
                           ? core_.pin(response.owner)
                           : nullptr;
  const uint32_t caller_shard = shards::shard_of(rpc->connection);
  ShardMessage message;
  message.kind = ShardMessage::Kind::kReply;
  message.rpc = std::move(rpc);
  core_.send_to(caller_shard, std::move(message));
}

void LocalTransport::reply_here(RpcPtr rpc) {
  if (remote_ids::is_remote(rpc->connection)) {  // the caller is behind a peer daemon
    MRPC_ASSERT(core_.tcp != nullptr, "a remote caller's reply on a daemon without TCP");
    core_.tcp->reply_here(std::move(rpc));
    return;
  }
  CallRecord* record = core_.call(rpc->call_id);
  Connection* caller = record == nullptr ? nullptr : core_.connection(record->caller);
  if (caller == nullptr) {  // the call ended for its caller meanwhile: a late reply
    core_.discard(std::move(rpc));
    return;
  }
  if (rpc->response.present() && rpc->response.region != RegionKind::kReceive)
    copy_response(*rpc, *caller);
  caller->egress->push_reply(std::move(rpc));
}

void LocalTransport::copy_response(Rpc& rpc, Connection& caller) {
  const ConnectionId server_id = rpc.response.owner;
  // A policy on the server's side that read the response took it out of the server's heap (and
  // told the server it may free it): that private copy is what the caller gets.
  const bool private_response = rpc.response.region == RegionKind::kPrivate;
  const Connection* server = private_response ? nullptr : core_.memory_of(rpc, server_id);
  if (server == nullptr && !private_response) {
    rpc.status = Status(StatusCode::kUnavailable, "the serving app left before its reply was read");
    rpc.response = MessageLocation{};
    return;
  }
  if (rpc.status.ok()) {
    const RegisteredService* service = core_.registry.find(rpc.service_id);
    if (service == nullptr) {
      rpc.status = Status(StatusCode::kUnavailable, "the service was unregistered during the call");
      rpc.response = MessageLocation{};
    } else {
      MRPC_ASSERT(rpc.method_index < service->info->methods.size(),
                  "a routed call has service {} method {}", rpc.service_id, rpc.method_index);
      const MethodInfo& method = service->info->methods[rpc.method_index];
      const uint64_t used_before = caller.receive_allocator->used_bytes();
      const ConstRegion source =
          private_response
              ? ConstRegion{rpc.response.private_copy->bytes.get(), rpc.response.private_copy->size}
              : server->heap_view();
      auto copied =
          copy_message(*method.output, source, rpc.response.offset, caller.receive_view(),
                       *caller.receive_allocator,
                       CopyLimits{core_.config.max_message_bytes, limits::kMaxMessageNesting});
      // Fair rounds in bytes: the reply's copy is charged to its server (when the response came
      // from a policy's private copy, only if the server is this shard's: it may have left).
      const Connection* charged =
          server != nullptr ? server
                            : (core_.is_local(server_id) ? core_.connection(server_id) : nullptr);
      if (copied.ok() && charged != nullptr)
        charged->charge_copy(caller.receive_allocator->used_bytes() - used_before);
      caller.report_receive_usage();
      if (copied.ok()) {
        rpc.response = MessageLocation{caller.id, RegionKind::kReceive, *copied};
      } else if (copied.status().code() == StatusCode::kResourceExhausted &&
                 caller.receive_allocator->used_bytes() > 0) {
        rpc.status = Status(
            StatusCode::kResourceExhausted,
            fmt::format("the caller's receive region has no room for the response ({} of {} bytes "
                        "hold replies not yet released): {}; release received replies sooner",
                        caller.receive_allocator->used_bytes(), caller.receive.size(),
                        copied.status().message()));
        rpc.response = MessageLocation{};
      } else {
        rpc.status = Status(copied.status().code(),
                            "bad response from the server: " + copied.status().message());
        rpc.response = MessageLocation{};
      }
    }
  } else {
    rpc.response = MessageLocation{};  // an error carries no response
  }
  if (!private_response) core_.reply_done(server_id, rpc.delivery_id, std::move(rpc.pinned_memory));
}

void LocalTransport::cancel(ConnectionId callee, uint64_t delivery) {
  if (core_.is_local(callee)) return cancel_here(callee, delivery);
  ShardMessage message;
  message.kind = ShardMessage::Kind::kCancel;
  message.connection = callee;
  message.value = delivery;
  core_.send_to(shards::shard_of(callee), std::move(message));
}

void LocalTransport::cancel_here(ConnectionId callee_id, uint64_t delivery) {
  Connection* callee = core_.connection(callee_id);
  if (callee == nullptr) return;
  IncomingCall* incoming = callee->incoming.find(delivery);
  if (incoming == nullptr || incoming->cancelled || incoming->replied) return;
  incoming->cancelled = true;
  callee->post(shm::make_ring_entry(shm::EntryKind::kIncomingCancelled, delivery));
}

}  // namespace mrpc
