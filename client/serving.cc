// ShmChannel, the serving side: registering served services, running handlers for incoming calls
// (inline or on the WorkerPool) and posting their replies.
#include "shm_channel.h"

#include <poll.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cstring>
#include <exception>

#include <fmt/format.h>

#include "mrpc/base/check.h"
#include "mrpc/base/limits.h"
#include "mrpc/client/receive_lease.h"
#include "mrpc/message/shm_heap.h"
#include "mrpc/transports/shm/app_socket.h"
#include "mrpc/transports/shm/metadata_block.h"
#include "mrpc/transports/shm/protocol.h"

namespace mrpc::client {

namespace {

// A handler's view of the call it answers.
class IncomingContext final : public ServerContext {
 public:
  IncomingContext(const Metadata& metadata, MonoTime deadline, const std::atomic<bool>& cancelled,
                  ShmHeap& heap)
      : metadata_(metadata), deadline_(deadline), cancelled_(cancelled), heap_(heap) {}
  const Metadata& metadata() const override { return metadata_; }
  int64_t deadline() const override { return deadline_; }
  bool is_cancelled() const override { return cancelled_.load(std::memory_order_relaxed); }
  ShmHeap& heap() override { return heap_; }

 private:
  const Metadata& metadata_;
  MonoTime deadline_;
  const std::atomic<bool>& cancelled_;
  ShmHeap& heap_;
};

// One incoming call while its handler runs and until its request lease dies.
// Created on the completion thread from the channel's BlockPool (as is its request's lease):
// no allocation per call once the pool has grown.
struct IncomingCall {
  std::shared_ptr<Connection> connection;
  uint64_t call_id = 0;  // the daemon's
  MonoTime deadline = kNoDeadline;
  Metadata metadata;
  std::atomic<bool> cancelled{false};  // shared with the Connection (aliasing shared_ptr)
  shm::RingEntry reply{};              // written before the lease can die
  uint64_t response_root = shm::kNoOffset;
};

// Puts `status`'s text (up to limits::kMaxStatusDetailBytes) in the heap for `call`'s kReply:
// inside the response's arena, or, with no response, in an arena of its own that stands in for
// one (kept until kReplyDone all the same). No room: the status goes without its text.
void attach_status_text(ShmHeap& heap, IncomingCall& call, const Status& status) {
  if (status.message().empty()) return;
  const uint64_t length =
      std::min<uint64_t>(status.message().size(), limits::kMaxStatusDetailBytes);
  uint64_t at = kNoOffset;
  if (call.response_root != shm::kNoOffset) {
    at = heap.allocate(call.response_root, length, 1, false);
  } else if (auto block = heap.new_message(static_cast<uint32_t>(length))) {
    call.response_root = block->offset;
    at = block->offset;
  }
  if (at == kNoOffset) return;
  std::memcpy(heap.base() + at, status.message().data(), length);
  call.reply.detail_offset = at;
  call.reply.detail_length = static_cast<uint32_t>(length);
}

}  // namespace

// ---- WorkerPool ----

void WorkerPool::start(int threads) {
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back([this] {
      for (;;) {
        Work work;
        {
          std::unique_lock lock(mutex_);
          ready_.wait(lock, [this] { return stopping_ || queued_ > 0; });
          if (queued_ == 0) return;
          work = std::move(ring_[head_]);
          head_ = (head_ + 1) % ring_.size();
          --queued_;
        }
        work();
      }
    });
    pthread_setname_np(threads_.back().native_handle(), "mrpc-handler");
  }
}

void WorkerPool::post(Work work) {
  MRPC_ASSERT(!threads_.empty(), "work posted to a pool without threads");
  {
    std::lock_guard lock(mutex_);
    if (queued_ == ring_.size()) {
      // Full: a ring twice the size, the queued work moved to its front in order.
      std::vector<Work> grown(std::max<size_t>(16, ring_.size() * 2));
      for (size_t i = 0; i < queued_; ++i) grown[i] = std::move(ring_[(head_ + i) % ring_.size()]);
      ring_ = std::move(grown);
      head_ = 0;
    }
    ring_[(head_ + queued_) % ring_.size()] = std::move(work);
    ++queued_;
  }
  ready_.notify_one();
}

void WorkerPool::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  ready_.notify_all();
  for (auto& thread : threads_) {
    if (thread.get_id() == std::this_thread::get_id()) {
      thread.detach();
    } else {
      thread.join();
    }
  }
  threads_.clear();
}

Status ShmChannel::register_served(const std::shared_ptr<Connection>& connection,
                                   const std::shared_ptr<ServedService>& served) {
  {
    std::lock_guard lock(registry_mutex_);
    ++serve_registrations_pending_;
  }
  auto id = register_service(connection, served->schema, /*serve=*/true);
  std::vector<std::pair<std::shared_ptr<Connection>, shm::RingEntry>> early;
  {
    std::lock_guard lock(registry_mutex_);
    if (id && ids_connection_ == connection.get()) {
      service_ids_.emplace(served->schema.full_name, *id);
      served_by_id_[*id] = served;
    }
    if (--serve_registrations_pending_ == 0) early.swap(early_incoming_);
  }
  // Calls that arrived before the registration was recorded: now their service is known (or,
  // if it failed, they are answered UNIMPLEMENTED as before). On the completion thread, which
  // alone takes from the pools on_incoming_call uses.
  if (!early.empty()) {
    auto waiting = std::make_shared<decltype(early)>(std::move(early));
    defer([this, waiting] {
      for (auto& [early_connection, entry] : *waiting) on_incoming_call(early_connection, entry);
    });
  }
  if (!id) return id.status();
  return Status();
}

Status ShmChannel::serve(const ServiceSchema& service, std::vector<UntypedMethod> methods) {
  if (methods.size() != service.methods.size()) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("{} has {} methods, {} handlers given", service.full_name,
                              service.methods.size(), methods.size()));
  }
  auto served = std::make_shared<ServedService>(
      ServedService{OwnedSchema::copy_of(service), std::move(methods)});
  {
    std::lock_guard lock(registry_mutex_);
    served_[served->schema.full_name] = served;
  }
  auto connection = current_connection();
  if (!connection) {
    return Status(StatusCode::kUnavailable,
                  fmt::format("mrpcd is not connected; {} will be served after reconnection",
                              service.full_name));
  }
  return register_served(connection, served);
}

void ShmChannel::on_incoming_call(const std::shared_ptr<Connection>& connection,
                                  const shm::RingEntry& entry) {
  auto call = std::allocate_shared<IncomingCall>(BlockAllocator<IncomingCall>(lease_pool_));
  call->connection = connection;
  call->call_id = entry.call_id;
  call->deadline = entry.deadline;
  call->reply = shm::make_ring_entry(shm::EntryKind::kReply, entry.call_id);
  // A refusal before any handler runs. Its text goes with it when the call has a slot to keep the
  // text's block in until kReplyDone.
  bool tracked = false;
  auto reply_now = [&](const Status& status) {
    call->reply.status = static_cast<uint32_t>(status.code());
    if (tracked) attach_status_text(connection->heap(), *call, status);
    connection->post_reply(call->reply, call->response_root);
  };

  std::shared_ptr<ServedService> served;
  {
    std::lock_guard lock(registry_mutex_);
    auto it = served_by_id_.find(entry.service_id);
    if (it != served_by_id_.end()) {
      served = it->second;
    } else if (serve_registrations_pending_ > 0) {
      early_incoming_.emplace_back(connection, entry);  // handled once the registration is in
      return;
    }
  }
  tracked = connection->track_incoming(call->call_id,
                                       std::shared_ptr<std::atomic<bool>>(call, &call->cancelled));
  if (!tracked) {
    // An id mrpcd does not give (protocol.h): no handler runs, and the refusal goes without its
    // text, which could not be matched to a kReplyDone.
    reply_now(Status(StatusCode::kInternal, "incoming call id outside max_calls_served"));
    return;
  }
  if (!served || entry.method_index >= served->methods.size()) {
    reply_now(Status(StatusCode::kUnimplemented, "this app does not serve that method"));
    return;
  }
  if (entry.message_offset >= connection->receive_bytes()) {
    reply_now(Status(StatusCode::kInvalidArgument, "request outside the receive region"));
    return;
  }
  auto metadata = shm::decode_metadata(connection->receive_base(), connection->receive_bytes(),
                                       entry.metadata_offset, entry.metadata_length);
  if (!metadata) {
    reply_now(metadata.status());
    return;
  }
  for (auto& [key, value] : *metadata) call->metadata.add(std::move(key), std::move(value));

  const uint64_t request_offset = entry.message_offset;
  const uint16_t method_index = entry.method_index;
  // The kReply goes out when the last copy of the request dies (it releases the request).
  auto lease = std::allocate_shared<ReceiveLease>(
      BlockAllocator<ReceiveLease>(lease_pool_),
      [call] { call->connection->post_reply(call->reply, call->response_root); });
  auto run_handler = [call, served, lease = std::move(lease), request_offset,
                      method_index]() mutable {
    Connection& owner = *call->connection;
    ReceivedMessage request(MessageRef{const_cast<std::byte*>(owner.receive_base()),
                                       owner.receive_bytes(), request_offset, nullptr},
                            std::move(lease));
    const UntypedMethod& method = served->methods[method_index];
    ShmHeap& heap = owner.heap();
    Status status;
    if (call->cancelled.load()) {
      status = Status(StatusCode::kCancelled, "the call was cancelled before its handler ran");
    } else if (auto response = method.new_response(heap); !response) {
      status = response.status();
    } else {
      call->response_root = response->offset;
      IncomingContext context(call->metadata, call->deadline, call->cancelled, heap);
      MessageRef response_ref = *response;
      try {
        status = method.handler(context, request, response_ref);
      } catch (const std::exception& error) {
        status = Status(StatusCode::kUnknown, fmt::format("the handler threw: {}", error.what()));
      } catch (...) {
        status = Status(StatusCode::kUnknown, "the handler threw");
      }
      if (status.ok()) status = sendable(*response);
      if (status.ok()) call->reply.message_offset = response->offset;
    }
    if (!status.ok()) attach_status_text(heap, *call, status);
    call->reply.status = static_cast<uint32_t>(status.code());
  };
  if (options_.handler_threads == 0) {
    run_handler();  // inline: no hand-off; this completion thread waits for the handler
  } else {
    // The capture fits WorkerPool's inline bytes: posting allocates nothing.
    static_assert(WorkerPool::Work::kStoredInline<decltype(run_handler)>);
    handlers_.post(std::move(run_handler));
  }
}

}  // namespace mrpc::client
