#include "fake_daemon.h"

#include <poll.h>
#include <unistd.h>

#include <chrono>

#include "echo.mrpc.h"
#include "mrpc/transports/shm/app_socket.h"
#include "mrpc/transports/shm/protocol.h"
#include "transports/shm/app_protocol.pb.h"

namespace mrpc::testing {

namespace {
std::string unique_socket_path() {
  static std::atomic<int> counter{0};
  return "/tmp/mrpc-client-test-" + std::to_string(::getpid()) + "-" +
         std::to_string(counter.fetch_add(1)) + ".sock";
}

}  // namespace

FakeDaemon::FakeDaemon(FakeDaemonOptions options)
    : options_(std::move(options)), path_(unique_socket_path()), echo_(options_.echo) {
  listener_ = std::move(shm::listen_app_socket(path_).value());
  thread_ = std::thread([this] { run(); });
}

FakeDaemon::~FakeDaemon() {
  stopping_.store(true);
  thread_.join();
  ::unlink(path_.c_str());
}

void FakeDaemon::wait_for(const std::function<bool()>& condition) {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, condition);
}

void FakeDaemon::drop_connection() {
  drop_requested_.store(true);
  wait_for([this] { return !drop_requested_.load(); });
}

void FakeDaemon::run() {
  while (!stopping_.load()) {
    accept_and_handshake();
    if (socket_) serve_connection();
  }
}

void FakeDaemon::accept_and_handshake() {
  pollfd ready{listener_.get(), POLLIN, 0};
  if (::poll(&ready, 1, 10) <= 0) return;
  auto socket = shm::accept_app_socket(listener_.get());
  if (!socket) return;
  wire::AppMessage hello;
  if (!shm::receive_message(socket->get(), hello, 0).ok() || !hello.has_hello()) return;
  wire::DaemonMessage answer;
  if (options_.refuse) {
    answer.mutable_refused()->set_protocol_version(options_.protocol_version);
    answer.mutable_refused()->set_reason(*options_.refuse);
    (void)shm::send_message(socket->get(), answer);
    return;
  }
  std::lock_guard lock(mutex_);
  hellos.push_back(hello.hello().app_name());
  heap_ = std::move(shm::SharedRegion::create("fake-heap", options_.heap_bytes).value());
  receive_ =
      std::move(shm::SharedRegion::create_receive("fake-receive", options_.receive_bytes).value());
  rings_ = std::move(
      shm::SharedRegion::create("fake-rings", shm::rings_region_bytes(options_.ring_entries))
          .value());
  app_to_daemon_ = std::move(shm::Doorbell::create().value());
  daemon_to_app_ = std::move(shm::Doorbell::create().value());
  receive_heap_ = std::make_unique<ShmHeap>(receive_.data(), receive_.size());
  submissions_ = shm::RingConsumer(shm::submission_ring(rings_.data(), options_.ring_entries));
  completions_ = shm::RingProducer(shm::completion_ring(rings_.data(), options_.ring_entries),
                                   &daemon_to_app_);
  service_ids_.clear();
  auto* welcome = answer.mutable_welcome();
  welcome->set_protocol_version(options_.protocol_version);
  welcome->set_connection_id(static_cast<uint64_t>(connections_accepted + 1));
  welcome->set_heap_bytes(options_.heap_bytes);
  welcome->set_receive_bytes(options_.receive_bytes);
  welcome->set_ring_entries(options_.ring_entries);
  welcome->set_max_calls_in_flight(options_.max_calls_in_flight);
  welcome->set_max_calls_served(options_.max_calls_served);
  welcome->set_max_message_bytes(options_.heap_bytes);
  const int fds[] = {heap_.fd(), receive_.fd(), rings_.fd(), app_to_daemon_.fd(),
                     daemon_to_app_.fd()};
  if (!shm::send_message(socket->get(), answer, fds).ok()) return;
  socket_ = std::move(*socket);
  ++connections_accepted;
  changed_.notify_all();
}

void FakeDaemon::serve_connection() {
  while (!stopping_.load()) {
    if (drop_requested_.load()) {
      std::lock_guard lock(mutex_);
      socket_.reset();
      drop_requested_.store(false);
      changed_.notify_all();
      return;
    }
    pollfd ready{socket_.get(), POLLIN, 0};
    if (::poll(&ready, 1, 0) > 0) {
      wire::AppMessage message;
      if (!shm::receive_message(socket_.get(), message, 0).ok()) {
        std::lock_guard lock(mutex_);
        socket_.reset();
        changed_.notify_all();
        return;
      }
      if (message.has_register_service()) {
        const auto& request = message.register_service();
        wire::DaemonMessage answer;
        auto* registered_message = answer.mutable_service_registered();
        registered_message->set_request_id(request.request_id());
        std::lock_guard lock(mutex_);
        auto [it, inserted] =
            service_ids_.emplace(request.service(), static_cast<uint32_t>(service_ids_.size() + 1));
        registered_message->set_status(0);
        registered_message->set_service_id(it->second);
        // The fake daemon only knows echo.EchoService's methods.
        registered_message->add_methods("Echo");
        registered[request.service()] = registered[request.service()] || request.serve();
        ++registrations;
        (void)shm::send_message(socket_.get(), answer);
        changed_.notify_all();
      }
    }
    shm::RingEntry batch[16];
    uint32_t popped = 0;
    {
      std::lock_guard lock(mutex_);
      popped = submissions_.pop_batch(batch).value();
      for (uint32_t i = 0; i < popped; ++i) handle_submission(batch[i]);
      if (popped > 0) changed_.notify_all();
    }
    if (popped == 0) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void FakeDaemon::post(const shm::RingEntry& entry) {
  while (completions_.push(entry).code() == StatusCode::kResourceExhausted) {
    std::this_thread::yield();
  }
}

void FakeDaemon::handle_submission(const shm::RingEntry& entry) {
  switch (entry.kind) {
    case shm::EntryKind::kCall: {
      calls.push_back(entry);
      call_metadata.push_back(shm::decode_metadata(heap_.data(), heap_.size(),
                                                   entry.metadata_offset, entry.metadata_length)
                                  .value());
      if (!echo_.load()) return;
      echo::EchoRequest request(
          MessageRef{heap_.data(), heap_.size(), entry.message_offset, nullptr});
      auto reply = echo::EchoReply::create(*receive_heap_);
      reply.set_text(request.text());
      reply.set_payload(request.payload());
      shm::RingEntry done = shm::make_ring_entry(shm::EntryKind::kCallDone, entry.call_id);
      done.message_offset = reply.release().offset;  // the app releases it
      post(done);
      receive_live_messages = receive_heap_->live_messages();
      return;
    }
    case shm::EntryKind::kCancel: {
      cancels.push_back(entry.call_id);
      shm::RingEntry done = shm::make_ring_entry(shm::EntryKind::kCallDone, entry.call_id);
      done.status = static_cast<uint32_t>(StatusCode::kCancelled);
      post(done);
      return;
    }
    case shm::EntryKind::kRelease:
      releases.push_back(entry.message_offset);
      (void)receive_heap_->free_message(entry.message_offset);
      receive_live_messages = receive_heap_->live_messages();
      return;
    case shm::EntryKind::kReply: {
      Reply reply{entry.status, {}, {}};
      if (entry.message_offset != shm::kNoOffset) {
        reply.text = std::string(
            echo::EchoReply(MessageRef{heap_.data(), heap_.size(), entry.message_offset, nullptr})
                .text());
      }
      if (entry.detail_offset != shm::kNoOffset) {
        reply.detail.assign(reinterpret_cast<const char*>(heap_.data() + entry.detail_offset),
                            entry.detail_length);
      }
      replies[entry.call_id] = reply;
      // The reply releases the request this daemon placed in the receive region.
      if (auto it = incoming_requests_.find(entry.call_id); it != incoming_requests_.end()) {
        (void)receive_heap_->free_message(it->second);
        incoming_requests_.erase(it);
      }
      receive_live_messages = receive_heap_->live_messages();
      return;
    }
    default:
      return;
  }
}

uint64_t FakeDaemon::send_incoming_echo(const std::string& service_name, const std::string& text,
                                        const shm::MetadataPairs& metadata) {
  std::lock_guard lock(mutex_);
  const uint64_t call_id = next_incoming_call_id();
  post_incoming_echo(call_id, service_name, text, metadata);
  return call_id;
}

uint64_t FakeDaemon::send_incoming_echo_to_method(const std::string& service_name,
                                                  uint16_t method_index, const std::string& text) {
  std::lock_guard lock(mutex_);
  const uint64_t call_id = next_incoming_call_id();
  post_incoming_echo(call_id, service_name, text, {}, method_index);
  return call_id;
}

uint64_t FakeDaemon::next_incoming_call_id() {
  // (generation << 32) | slot, as mrpcd gives them (protocol.h); the tests keep fewer than
  // max_calls_served calls unanswered, so a slot comes round again only after its kReplyDone.
  const uint64_t sent = incoming_calls_sent_++;
  return ((sent / options_.max_calls_served + 1) << 32) | (sent % options_.max_calls_served);
}

void FakeDaemon::send_incoming_echo_as(uint64_t call_id, const std::string& service_name,
                                       const std::string& text) {
  std::lock_guard lock(mutex_);
  post_incoming_echo(call_id, service_name, text, {});
}

void FakeDaemon::post_incoming_echo(uint64_t call_id, const std::string& service_name,
                                    const std::string& text, const shm::MetadataPairs& metadata,
                                    uint16_t method_index) {
  auto request = echo::EchoRequest::create(*receive_heap_);
  request.set_text(text);
  shm::RingEntry incoming = shm::make_ring_entry(shm::EntryKind::kIncomingCall, call_id);
  incoming.service_id = service_ids_.at(service_name);
  incoming.method_index = method_index;
  incoming.message_offset = request.ref().offset;
  incoming.deadline = INT64_MAX;
  if (!metadata.empty()) {
    const uint64_t bytes = shm::metadata_block_bytes(metadata);
    const uint64_t at = receive_heap_->allocate(request.ref().offset, bytes, 8, false);
    (void)shm::encode_metadata(metadata, std::span(receive_.data() + at, bytes)).value();
    incoming.metadata_offset = at;
    incoming.metadata_length = static_cast<uint32_t>(bytes);
  }
  incoming_requests_[incoming.call_id] = request.release().offset;  // freed on the app's kReply
  receive_live_messages = receive_heap_->live_messages();
  post(incoming);
}

void FakeDaemon::corrupt_completion_tail() {
  std::lock_guard lock(mutex_);
  auto ring = shm::completion_ring(rings_.data(), options_.ring_entries);
  ring.header->tail.store(ring.header->tail.load() + options_.ring_entries * 3);
  (void)daemon_to_app_.ring();
}

void FakeDaemon::send_reply_done(uint64_t call_id) {
  std::lock_guard lock(mutex_);
  post(shm::make_ring_entry(shm::EntryKind::kReplyDone, call_id));
}

}  // namespace mrpc::testing
