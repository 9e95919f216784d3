#include "test_app.h"

#include <poll.h>

#include <doctest/doctest.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/text_format.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "mrpc/base/check.h"
#include "mrpc/base/clock.h"
#include "mrpc/message/layout.h"
#include "mrpc/transports/shm/app_socket.h"
#include "transports/shm/app_protocol.pb.h"

namespace mrpc::testing {

namespace {
constexpr const char* kEchoProto = R"pb(
  name: "echo.proto"
  package: "echo"
  syntax: "proto3"
  message_type {
    name: "EchoRequest"
    field { name: "text" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING json_name: "text" }
    field { name: "payload" number: 2 label: LABEL_OPTIONAL type: TYPE_BYTES json_name: "payload" }
  }
  message_type {
    name: "EchoReply"
    field { name: "text" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING json_name: "text" }
    field { name: "payload" number: 2 label: LABEL_OPTIONAL type: TYPE_BYTES json_name: "payload" }
  }
  service {
    name: "EchoService"
    method { name: "Echo" input_type: ".echo.EchoRequest" output_type: ".echo.EchoReply" }
  }
)pb";

const FieldLayout& text_field(const Schema& schema) {
  const MessageLayout* layout = schema.message("echo.EchoRequest");
  MRPC_ASSERT(layout != nullptr);
  const FieldLayout* field = layout->field_by_name("text");
  MRPC_ASSERT(field != nullptr);
  return *field;
}
}  // namespace

const std::string& echo_file_descriptor_set() {
  static const std::string bytes = [] {
    google::protobuf::FileDescriptorSet set;
    bool parsed = google::protobuf::TextFormat::ParseFromString(kEchoProto, set.add_file());
    MRPC_ASSERT(parsed);
    return set.SerializeAsString();
  }();
  return bytes;
}

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "mrpcd-test-XXXXXX").string();
  MRPC_ASSERT(::mkdtemp(pattern.data()) != nullptr);
  dir_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::unique_ptr<TestApp> TestApp::connect(const std::string& socket_path, std::string name) {
  std::unique_ptr<TestApp> app(new TestApp());
  auto socket = shm::connect_app_socket(socket_path);
  REQUIRE_MESSAGE(socket.ok(), socket.status().to_string());
  app->socket_ = std::move(*socket);
  wire::AppMessage hello;
  hello.mutable_hello()->set_protocol_version(shm::kProtocolVersion);
  hello.mutable_hello()->set_app_name(std::move(name));
  REQUIRE(shm::send_message(app->socket_.get(), hello).ok());
  wire::DaemonMessage reply;
  auto fds = shm::receive_message(app->socket_.get(), reply, shm::kMaxFdsPerPacket);
  REQUIRE_MESSAGE(fds.ok(), fds.status().to_string());
  REQUIRE(reply.has_welcome());
  REQUIRE(fds->size() == 5);
  const wire::Welcome& welcome = reply.welcome();
  CHECK(welcome.protocol_version() == shm::kProtocolVersion);
  app->connection_id_ = welcome.connection_id();
  app->ring_entries_ = welcome.ring_entries();
  auto heap = shm::SharedRegion::attach(std::move((*fds)[0]), welcome.heap_bytes(),
                                        shm::kFixedSizeSeals, shm::RegionAccess::kReadWrite);
  auto receive = shm::SharedRegion::attach(std::move((*fds)[1]), welcome.receive_bytes(),
                                           shm::kReceiveRegionSeals, shm::RegionAccess::kReadOnly);
  auto rings = shm::SharedRegion::attach(std::move((*fds)[2]),
                                         shm::rings_region_bytes(welcome.ring_entries()),
                                         shm::kFixedSizeSeals, shm::RegionAccess::kReadWrite);
  REQUIRE_MESSAGE(heap.ok(), heap.status().to_string());
  REQUIRE_MESSAGE(receive.ok(), receive.status().to_string());
  REQUIRE_MESSAGE(rings.ok(), rings.status().to_string());
  app->heap_region_ = std::move(*heap);
  app->receive_ = std::move(*receive);
  app->rings_ = std::move(*rings);
  app->app_to_daemon_ = shm::Doorbell(std::move((*fds)[3]));
  app->daemon_to_app_ = shm::Doorbell(std::move((*fds)[4]));
  app->submissions_ = shm::RingProducer(
      shm::submission_ring(app->rings_.data(), app->ring_entries_), &app->app_to_daemon_);
  app->completions_ =
      shm::RingConsumer(shm::completion_ring(app->rings_.data(), app->ring_entries_));
  app->heap_ = std::make_unique<ShmHeap>(app->heap_region_.data(), app->heap_region_.size());
  auto schema = Schema::from_file_descriptor_set(echo_file_descriptor_set());
  REQUIRE(schema.ok());
  app->echo_schema_ = *schema;
  return app;
}

TestApp::Registration TestApp::register_service(std::string_view service, bool serve,
                                                const std::string& file_descriptor_set) {
  return receive_registration(send_register_service(service, serve, file_descriptor_set));
}

uint64_t TestApp::send_register_service(std::string_view service, bool serve,
                                        const std::string& file_descriptor_set) {
  wire::AppMessage request;
  auto* body = request.mutable_register_service();
  body->set_request_id(next_request_id_++);
  body->set_file_descriptor_set(file_descriptor_set);
  body->set_service(std::string(service));
  body->set_serve(serve);
  REQUIRE(shm::send_message(socket_.get(), request).ok());
  return body->request_id();
}

TestApp::Registration TestApp::receive_registration(uint64_t request_id) {
  wire::DaemonMessage reply;
  auto fds = shm::receive_message(socket_.get(), reply, 0);
  REQUIRE_MESSAGE(fds.ok(), fds.status().to_string());
  REQUIRE(reply.has_service_registered());
  CHECK(reply.service_registered().request_id() == request_id);
  registration_detail_ = reply.service_registered().detail();
  return {status_code_from_wire(reply.service_registered().status()),
          reply.service_registered().service_id()};
}

bool TestApp::control_message_waiting() const {
  pollfd entry{socket_.get(), POLLIN, 0};
  return ::poll(&entry, 1, 0) == 1 && (entry.revents & POLLIN) != 0;
}

uint64_t TestApp::build_echo(std::string_view text) {
  const FieldLayout& field = text_field(*echo_schema_);
  auto message = heap_->new_message(echo_schema_->message("echo.EchoRequest")->body_size());
  REQUIRE(message.ok());
  uint64_t root = message->offset;
  uint64_t bytes = heap_->allocate(root, text.size(), 1, false);
  REQUIRE(bytes != kNoOffset);
  std::memcpy(heap_region_.data() + bytes, text.data(), text.size());
  RegionRef ref{bytes, static_cast<uint32_t>(text.size()), static_cast<uint32_t>(text.size())};
  std::memcpy(heap_region_.data() + root + field.offset, &ref, sizeof ref);
  return root;
}

std::pair<uint64_t, uint32_t> TestApp::build_metadata(const shm::MetadataPairs& pairs) {
  uint64_t bytes = shm::metadata_block_bytes(pairs);
  auto message = heap_->new_message(static_cast<uint32_t>((bytes + 7) / 8 * 8));
  REQUIRE(message.ok());
  auto written =
      shm::encode_metadata(pairs, std::span(heap_region_.data() + message->offset, bytes));
  REQUIRE(written.ok());
  return {message->offset, static_cast<uint32_t>(bytes)};
}

shm::MetadataPairs TestApp::received_metadata(uint64_t offset, uint32_t length) const {
  auto pairs = shm::decode_metadata(receive_.data(), receive_.size(), offset, length);
  REQUIRE(pairs.ok());
  return *pairs;
}

uint32_t TestApp::text_offset() const {
  return text_field(*echo_schema_).offset;
}

std::string TestApp::received_text(uint64_t offset) const {
  const FieldLayout& field = text_field(*echo_schema_);
  RegionRef ref{};
  REQUIRE(offset + field.offset + sizeof ref <= receive_.size());
  std::memcpy(&ref, receive_.data() + offset + field.offset, sizeof ref);
  if (ref.size == 0) return {};
  REQUIRE(ref.offset + ref.size <= receive_.size());
  return std::string(reinterpret_cast<const char*>(receive_.data() + ref.offset), ref.size);
}

void TestApp::submit(const shm::RingEntry& entry) {
  // A full ring waits for the daemon to drain it, as libmrpc does (bounded, so a daemon that
  // stopped reading fails the test instead of hanging it).
  const auto& clock = MonotonicClock::instance();
  const MonoTime give_up = clock.now() + 10'000'000'000;
  Status pushed = submissions_.push(entry);
  while (pushed.code() == StatusCode::kResourceExhausted && clock.now() < give_up) {
    wake_daemon();
    std::this_thread::sleep_for(std::chrono::microseconds(50));
    pushed = submissions_.push(entry);
  }
  REQUIRE_MESSAGE(pushed.ok(), pushed.to_string());
}

void TestApp::release(uint64_t offset) {
  shm::RingEntry entry{};
  entry.kind = shm::EntryKind::kRelease;
  entry.message_offset = offset;
  entry.metadata_offset = shm::kNoOffset;
  entry.detail_offset = shm::kNoOffset;
  submit(entry);
}

shm::RingEntry TestApp::call_entry(uint32_t service_id, uint64_t call_id, uint64_t request,
                                   std::chrono::nanoseconds timeout) const {
  shm::RingEntry entry{};
  entry.kind = shm::EntryKind::kCall;
  entry.service_id = service_id;
  entry.method_index = 0;
  entry.call_id = call_id;
  entry.message_offset = request;
  entry.metadata_offset = shm::kNoOffset;
  entry.detail_offset = shm::kNoOffset;
  entry.deadline = MonotonicClock::instance().now() + timeout.count();
  return entry;
}

void TestApp::call_echo(uint32_t service_id, uint64_t call_id, std::string_view text,
                        std::chrono::nanoseconds timeout) {
  submit(call_entry(service_id, call_id, build_echo(text), timeout));
}

std::optional<shm::RingEntry> TestApp::next_completion(std::chrono::nanoseconds timeout) {
  const auto& clock = MonotonicClock::instance();
  const MonoTime give_up = clock.now() + timeout.count();
  for (;;) {
    auto popped = completions_.pop();
    if (!popped.ok()) return std::nullopt;
    if (popped->has_value()) return **popped;
    MonoTime now = clock.now();
    if (now >= give_up) return std::nullopt;
    if (completions_.prepare_to_sleep()) {
      (void)daemon_to_app_.wait(std::chrono::nanoseconds(give_up - now));
      completions_.finish_sleep();
    }
  }
}

std::optional<shm::RingEntry> TestApp::wait_call_done(uint64_t call_id) {
  if (auto it = other_calls_done_.find(call_id); it != other_calls_done_.end()) {
    shm::RingEntry entry = it->second;
    other_calls_done_.erase(it);
    return entry;
  }
  for (;;) {
    auto entry = next_completion();
    if (!entry) return std::nullopt;
    if (entry->kind != shm::EntryKind::kCallDone) continue;
    // Error text comes in a receive block of its own: read, then hand it back, as libmrpc does.
    if (entry->detail_offset != shm::kNoOffset) {
      const uint64_t end = entry->detail_offset + entry->detail_length;
      if (end <= receive_.size())
        details_[entry->call_id].assign(
            reinterpret_cast<const char*>(receive_.data() + entry->detail_offset),
            entry->detail_length);
      release(entry->detail_offset);
    }
    if (entry->call_id == call_id) return entry;
    other_calls_done_.emplace(entry->call_id, *entry);
  }
}

std::string TestApp::call_detail(uint64_t call_id) const {
  auto it = details_.find(call_id);
  return it == details_.end() ? std::string() : it->second;
}

void TestApp::disconnect() {
  socket_.reset();
  heap_.reset();
  heap_region_ = shm::SharedRegion();
  receive_ = shm::SharedRegion();
  rings_ = shm::SharedRegion();
}

EchoServer::EchoServer(const std::string& socket_path, Mode mode) : mode_(mode) {
  app_ = TestApp::connect(socket_path, "echo-server");
  auto registration = app_->register_service(kEchoService, true);
  REQUIRE(registration.status == StatusCode::kOk);
  service_id_ = registration.service_id;
  thread_ = std::thread([this] { serve(); });
}

EchoServer::~EchoServer() {
  kill();
}

void EchoServer::kill() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (app_) app_->disconnect();
}

void EchoServer::reply_to_held() {
  reply_held_ = true;
}

void EchoServer::serve() {
  std::unordered_map<uint64_t, uint64_t> replies;  // daemon call id -> reply root in our heap
  std::vector<shm::RingEntry> held;
  std::unordered_map<uint64_t, shm::RingEntry> waiting_for_cancel;  // by daemon call id
  std::unordered_set<std::string> texts_seen;
  auto fail = [&](const shm::RingEntry& call) {
    shm::RingEntry entry = shm::make_ring_entry(shm::EntryKind::kReply, call.call_id);
    entry.status = static_cast<uint32_t>(StatusCode::kUnavailable);
    app_->submit(entry);
    ++replies_sent_;
  };
  auto reply = [&](const shm::RingEntry& call) {
    uint64_t response = app_->build_echo(app_->received_text(call.message_offset));
    shm::RingEntry entry{};
    entry.kind = shm::EntryKind::kReply;
    entry.call_id = call.call_id;
    entry.message_offset = response;
    entry.metadata_offset = shm::kNoOffset;
    entry.detail_offset = shm::kNoOffset;
    entry.status = 0;
    replies[call.call_id] = response;
    ++live_replies_;
    app_->submit(entry);
    ++replies_sent_;
  };
  while (!stop_) {
    if (reply_held_.exchange(false)) {
      for (const auto& call : held) reply(call);
      held.clear();
    }
    auto entry = app_->next_completion(std::chrono::milliseconds(5));
    if (!entry) continue;
    switch (entry->kind) {
      case shm::EntryKind::kIncomingCall: {
        std::lock_guard lock(mutex_);
        last_metadata_ = app_->received_metadata(entry->metadata_offset, entry->metadata_length);
        for (const auto& [key, value] : last_metadata_) {
          if (key == "counted") ++tagged_calls_;
          if (watched_ && key == watched_->first && value == watched_->second) ++watched_calls_;
        }
      }
        ++calls_seen_;
        if (mode_ == Mode::kEcho)
          reply(*entry);
        else if (mode_ == Mode::kHold)
          held.push_back(*entry);
        else if (mode_ == Mode::kUnavailableFirstTime &&
                 texts_seen.insert(app_->received_text(entry->message_offset)).second)
          fail(*entry);
        else if (mode_ == Mode::kUnavailableFirstTime)
          reply(*entry);
        else
          waiting_for_cancel.emplace(entry->call_id, *entry);
        break;
      case shm::EntryKind::kReplyDone:
        if (auto it = replies.find(entry->call_id); it != replies.end()) {
          (void)app_->heap().free_message(it->second);
          replies.erase(it);
          --live_replies_;
        }
        break;
      case shm::EntryKind::kIncomingCancelled:
        ++cancellations_;
        if (auto it = waiting_for_cancel.find(entry->call_id); it != waiting_for_cancel.end()) {
          reply(it->second);
          waiting_for_cancel.erase(it);
        }
        break;
      default:
        break;
    }
  }
}

EchoOutcomes echo_load(TestApp& app, uint32_t service, uint64_t& next_id, uint64_t count,
                       std::chrono::nanoseconds timeout, uint32_t window, uint8_t flags) {
  constexpr uint64_t kSlots = 64;
  REQUIRE(window <= kSlots);
  EchoOutcomes outcomes;
  std::unordered_map<uint64_t, uint64_t> requests;  // call id -> request root in the heap
  std::unordered_map<uint64_t, MonoTime> started_at;
  uint64_t started = 0, highest = next_id;
  auto start = [&](uint64_t id) {
    const uint64_t request = app.build_echo("payload " + std::to_string(id));
    requests[id] = request;
    started_at[id] = MonotonicClock::instance().now();
    shm::RingEntry entry = app.call_entry(service, id, request, timeout);
    entry.flags = flags;
    app.submit(entry);
    highest = std::max(highest, id);
    ++started;
  };
  for (uint64_t i = 0; i < window && started < count; ++i) start(next_id + i);
  while (!requests.empty()) {
    auto entry = app.next_completion();
    REQUIRE_MESSAGE(entry.has_value(), "a call never ended (", requests.size(), " waiting)");
    if (entry->kind != shm::EntryKind::kCallDone) continue;
    auto request = requests.find(entry->call_id);
    REQUIRE_MESSAGE(request != requests.end(), "a second kCallDone for call ", entry->call_id);
    (void)app.heap().free_message(request->second);
    requests.erase(request);
    outcomes.latencies_ns.push_back(MonotonicClock::instance().now() - started_at[entry->call_id]);
    started_at.erase(entry->call_id);
    if (status_code_from_wire(entry->status) == StatusCode::kOk) {
      ++outcomes.ok;
      CHECK(app.received_text(entry->message_offset) ==
            "payload " + std::to_string(entry->call_id));
      app.release(entry->message_offset);
    } else {
      ++outcomes.failed[status_code_from_wire(entry->status)];
      if (entry->detail_offset != shm::kNoOffset) app.release(entry->detail_offset);
    }
    if (started < count) start(entry->call_id + kSlots);
  }
  next_id = highest + 1;
  return outcomes;
}

}  // namespace mrpc::testing
