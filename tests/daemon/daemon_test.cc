// mrpcd's engine embedded on real sockets, driven by raw test apps: routing, errors, deadlines,
// cancellation, apps that leave, and hostile apps that must not hurt a well-behaved one.
#include <doctest/doctest.h>

#include <google/protobuf/descriptor.pb.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <cstring>
#include <nlohmann/json.hpp>

#include "../../daemon/control_server.h"
#include "embedded_daemon.h"
#include "mrpc/base/limits.h"
#include "mrpc/base/random.h"
#include "mrpc/base/slot_table.h"
#include "mrpc/daemon/daemon.h"
#include "mrpc/message/layout.h"
#include "mrpc/transports/shm/app_socket.h"
#include "test_app.h"
#include "transports/shm/app_protocol.pb.h"

using namespace std::chrono_literals;
using namespace mrpc;
using namespace mrpc::testing;

TEST_CASE("an echo call goes from one app to the serving app and back") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  auto client = TestApp::connect(daemon.app_socket(), "client");
  auto registration = client->register_service(kEchoService, false);
  REQUIRE(registration.status == StatusCode::kOk);
  CHECK(registration.service_id == server.service_id());
  for (uint64_t id = 1; id <= 200; ++id) check_echo_works(*client, server.service_id(), id);
  auto stats = daemon.daemon.stats();
  CHECK(stats.calls_completed == 200);
  CHECK(stats.calls_failed == 0);
  CHECK(stats.calls_in_flight == 0);
  CHECK(stats.connections_open == 2);
}

TEST_CASE("many calls in flight at once are all answered correctly") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  auto client = TestApp::connect(daemon.app_socket(), "client");
  constexpr uint64_t kCalls = 2000, kWindow = 48;
  uint64_t next = 1, answered = 0;
  std::vector<uint64_t> requests(kCalls + 1);
  while (answered < kCalls) {
    while (next <= kCalls && next - answered <= kWindow) {
      requests[next] = client->build_echo("call " + std::to_string(next));
      client->submit(client->call_entry(server.service_id(), next, requests[next]));
      ++next;
    }
    auto entry = client->next_completion();
    REQUIRE(entry.has_value());
    if (entry->kind != shm::EntryKind::kCallDone) continue;
    REQUIRE(call_status(*entry) == StatusCode::kOk);
    CHECK(client->received_text(entry->message_offset) == "call " + std::to_string(entry->call_id));
    client->release(entry->message_offset);
    CHECK(client->heap().free_message(requests[entry->call_id]).ok());
    ++answered;
  }
  CHECK(client->heap().used_bytes() == 0);
  CHECK(daemon.daemon.stats().calls_in_flight == 0);
  // Every request was released by its reply, every response by the client's kRelease; the
  // server frees each reply at its kReplyDone (with shards, it may come after the caller's
  // kCallDone: it travels back from the caller's shard).
  REQUIRE(eventually([&] { return daemon.daemon.stats().receive_bytes_in_use == 0; }));
  CHECK(eventually([&] { return server.live_replies() == 0; }));
}

TEST_CASE(
    "incoming call ids are (generation << 32) | slot below max_calls_served, and a slot goes to a "
    "new call only after the kReplyDone of its previous one") {
  constexpr uint32_t kServed = 4;
  DaemonConfig config = EmbeddedDaemon::small_config();
  config.max_calls_served = kServed;
  EmbeddedDaemon daemon(config);
  auto server = TestApp::connect(daemon.app_socket(), "slot-server");
  auto registration = server->register_service(kEchoService, true);
  REQUIRE(registration.status == StatusCode::kOk);
  auto client = TestApp::connect(daemon.app_socket(), "client");
  REQUIRE(client->register_service(kEchoService, false).status == StatusCode::kOk);

  // The server, checking every id it is given against what it has seen of that slot.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> served{0}, reused{0};
  std::vector<std::string> violations;
  std::thread serving([&] {
    struct SlotState {
      uint64_t call_id = 0;                // the slot's last call (0: none yet)
      uint64_t response = shm::kNoOffset;  // awaiting kReplyDone when set
    };
    std::vector<SlotState> slots(kServed);
    while (!stop) {
      auto entry = server->next_completion(5ms);
      if (!entry) continue;
      const uint32_t slot = slot_of(entry->call_id);
      if (entry->kind == shm::EntryKind::kIncomingCall) {
        if (slot >= kServed) {
          violations.push_back(fmt::format("id {:#x} is past {} slots", entry->call_id, kServed));
          continue;
        }
        SlotState& state = slots[slot];
        if (state.response != shm::kNoOffset)
          violations.push_back(fmt::format("id {:#x} came before the kReplyDone of {:#x}",
                                           entry->call_id, state.call_id));
        if (state.call_id != 0) {
          ++reused;
          if (entry->call_id >> 32 <= state.call_id >> 32)
            violations.push_back(fmt::format("id {:#x} does not follow {:#x}'s generation",
                                             entry->call_id, state.call_id));
        }
        state.call_id = entry->call_id;
        shm::RingEntry reply = shm::make_ring_entry(shm::EntryKind::kReply, entry->call_id);
        reply.message_offset = server->build_echo(server->received_text(entry->message_offset));
        state.response = reply.message_offset;
        server->submit(reply);
        ++served;
      } else if (entry->kind == shm::EntryKind::kReplyDone) {
        if (slot >= kServed || slots[slot].call_id != entry->call_id ||
            slots[slot].response == shm::kNoOffset) {
          violations.push_back(fmt::format("kReplyDone {:#x} names no reply", entry->call_id));
          continue;
        }
        if (!server->heap().free_message(slots[slot].response).ok())
          violations.push_back(fmt::format("the response of {:#x} was not ours", entry->call_id));
        slots[slot].response = shm::kNoOffset;
      }
    }
  });

  // More callers' calls in flight than the server has slots: the rest are refused, none is lost.
  constexpr uint64_t kCalls = 3000;
  uint64_t next_id = 1;
  const EchoOutcomes outcomes =
      echo_load(*client, registration.service_id, next_id, kCalls, 10s, /*window=*/16);
  stop = true;
  serving.join();
  CHECK(violations.empty());
  for (const std::string& violation : violations) MESSAGE(violation);
  CHECK(outcomes.ok + outcomes.of(StatusCode::kResourceExhausted) == kCalls);
  CHECK(outcomes.ok == served.load());
  CHECK(outcomes.ok >= kServed);
  CHECK(reused > 0);
}

TEST_CASE("a daemon configured with call-table bounds past what libmrpc accepts refuses to start") {
  TempDir dir;
  for (const bool served : {true, false}) {
    CAPTURE(served);
    DaemonConfig config = EmbeddedDaemon::small_config();
    const uint32_t bound =
        served ? limits::kMaxCallsServedAccepted : limits::kMaxCallsInFlightAccepted;
    (served ? config.max_calls_served : config.max_calls_in_flight) = bound + 1;
    config.app_socket_path = dir.path("app.sock");
    config.control_socket_path = dir.path("control.sock");
    Daemon refused(config, MonotonicClock::instance());
    const Status started = refused.start();
    CHECK(started.code() == StatusCode::kInvalidArgument);
    const std::string expected =
        fmt::format("{}={} is outside [1, {}]", served ? "max_calls_served" : "max_calls_in_flight",
                    bound + 1, bound);
    CHECK_MESSAGE(started.message().find(expected) != std::string::npos, started.to_string());
  }
}

TEST_CASE("a call to a service nobody serves fails UNAVAILABLE") {
  EmbeddedDaemon daemon;
  auto client = TestApp::connect(daemon.app_socket(), "client");
  auto registration = client->register_service(kEchoService, false);
  REQUIRE(registration.status == StatusCode::kOk);
  client->call_echo(registration.service_id, 1, "anyone?");
  auto done = client->wait_call_done(1);
  REQUIRE(done.has_value());
  CHECK(call_status(*done) == StatusCode::kUnavailable);
}

TEST_CASE("registering a service the schema does not have, or a broken schema, fails") {
  EmbeddedDaemon daemon;
  auto app = TestApp::connect(daemon.app_socket(), "app");
  CHECK(app->register_service("echo.Nope", true).status == StatusCode::kNotFound);
  CHECK(app->register_service(kEchoService, true, "not a descriptor set").status ==
        StatusCode::kInvalidArgument);
  EchoServer first(daemon.app_socket());
  // A second app serving the same service joins its endpoint set.
  CHECK(app->register_service(kEchoService, true).status == StatusCode::kOk);
  // The same service name with a different request layout would make the daemon copy with the
  // wrong offsets: refused.
  google::protobuf::FileDescriptorSet changed;
  REQUIRE(changed.ParseFromString(echo_file_descriptor_set()));
  changed.mutable_file(0)->mutable_message_type(0)->mutable_field(0)->set_type(
      google::protobuf::FieldDescriptorProto::TYPE_INT64);
  CHECK(app->register_service(kEchoService, false, changed.SerializeAsString()).status ==
        StatusCode::kFailedPrecondition);
}

TEST_CASE("a hello with another protocol version is refused") {
  EmbeddedDaemon daemon;
  auto socket = shm::connect_app_socket(daemon.app_socket());
  REQUIRE(socket.ok());
  wire::AppMessage hello;
  hello.mutable_hello()->set_protocol_version(shm::kProtocolVersion + 1);
  REQUIRE(shm::send_message(socket->get(), hello).ok());
  wire::DaemonMessage reply;
  auto fds = shm::receive_message(socket->get(), reply, shm::kMaxFdsPerPacket);
  REQUIRE(fds.ok());
  REQUIRE(reply.has_refused());
  CHECK(reply.refused().reason().find("version") != std::string::npos);
}

TEST_CASE("a call past its deadline ends DEADLINE_EXCEEDED and the late reply is ignored") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket(), EchoServer::Mode::kHold);
  auto client = TestApp::connect(daemon.app_socket(), "client");
  // Long enough that the call surely reaches the server first, even on a loaded machine.
  client->call_echo(server.service_id(), 1, "slow", 500ms);
  REQUIRE(eventually([&] { return server.calls_seen() >= 1; }));
  auto done = client->wait_call_done(1);
  REQUIRE(done.has_value());
  CHECK(call_status(*done) == StatusCode::kDeadlineExceeded);
  CHECK(done->message_offset == shm::kNoOffset);
  REQUIRE(eventually([&] { return server.cancellations() >= 1; }));
  server.reply_to_held();
  // The late reply still gets its kReplyDone, so the server frees it.
  REQUIRE(eventually([&] { return server.replies_sent() >= 1 && server.live_replies() == 0; }));
  server.set_mode(EchoServer::Mode::kEcho);
  check_echo_works(*client, server.service_id(), 2);  // nothing else is disturbed
  CHECK(daemon.daemon.stats().calls_in_flight == 0);
}

TEST_CASE("an already expired deadline fails at once") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  auto client = TestApp::connect(daemon.app_socket(), "client");
  auto entry = client->call_entry(server.service_id(), 1, client->build_echo("late"));
  entry.deadline = 1;
  client->submit(entry);
  auto done = client->wait_call_done(1);
  REQUIRE(done.has_value());
  CHECK(call_status(*done) == StatusCode::kDeadlineExceeded);
}

TEST_CASE("a cancelled call ends CANCELLED and the server is told") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket(), EchoServer::Mode::kHold);
  auto client = TestApp::connect(daemon.app_socket(), "client");
  client->call_echo(server.service_id(), 7, "never mind");
  REQUIRE(eventually([&] { return server.calls_seen() >= 1; }));
  shm::RingEntry cancel{};
  cancel.kind = shm::EntryKind::kCancel;
  cancel.call_id = 7;
  cancel.message_offset = shm::kNoOffset;
  cancel.metadata_offset = shm::kNoOffset;
  cancel.detail_offset = shm::kNoOffset;
  client->submit(cancel);
  auto done = client->wait_call_done(7);
  REQUIRE(done.has_value());
  CHECK(call_status(*done) == StatusCode::kCancelled);
  REQUIRE(eventually([&] { return server.cancellations() >= 1; }));
}

TEST_CASE("a server that dies fails its pending calls UNAVAILABLE and the daemon serves on") {
  EmbeddedDaemon daemon;
  auto client = TestApp::connect(daemon.app_socket(), "client");
  // The client registers as a caller (libmrpc does so before its first call): the service's
  // registration, and so its id, outlives its only server.
  REQUIRE(client->register_service(kEchoService, false).status == StatusCode::kOk);
  uint32_t service_id = 0;
  {
    EchoServer doomed(daemon.app_socket(), EchoServer::Mode::kHold);
    service_id = doomed.service_id();
    for (uint64_t id = 1; id <= 5; ++id) client->call_echo(service_id, id, "pending");
    REQUIRE(eventually([&] { return doomed.calls_seen() >= 5; }));
    doomed.kill();
  }
  for (uint64_t id = 1; id <= 5; ++id) {
    auto done = client->wait_call_done(id);
    REQUIRE(done.has_value());
    CHECK(call_status(*done) == StatusCode::kUnavailable);
  }
  EchoServer replacement(daemon.app_socket());
  CHECK(replacement.service_id() == service_id);
  check_echo_works(*client, service_id, 6);
}

TEST_CASE("a client that leaves with calls in flight is cleaned up and the server told") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket(), EchoServer::Mode::kHold);
  {
    auto leaving = TestApp::connect(daemon.app_socket(), "leaving");
    for (uint64_t id = 1; id <= 3; ++id) leaving->call_echo(server.service_id(), id, "bye");
    REQUIRE(eventually([&] { return server.calls_seen() >= 3; }));
    leaving->disconnect();
  }
  REQUIRE(eventually([&] { return server.cancellations() >= 3; }));
  server.reply_to_held();  // replies for a caller that is gone are released, not delivered
  REQUIRE(eventually([&] { return server.live_replies() == 0; }));
  REQUIRE(eventually([&] { return daemon.daemon.stats().connections_open == 1; }));
  CHECK(daemon.daemon.stats().calls_in_flight == 0);
}

TEST_CASE("hostile calls get errors while a well-behaved app keeps getting answers") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  auto good = TestApp::connect(daemon.app_socket(), "good");
  auto evil = TestApp::connect(daemon.app_socket(), "evil");
  const uint32_t service = server.service_id();
  const uint64_t heap_bytes = evil->heap_region().size();
  uint64_t good_id = 1;

  auto expect = [&](uint64_t call_id, StatusCode code) {
    auto done = evil->wait_call_done(call_id);
    REQUIRE(done.has_value());
    CHECK(call_status(*done) == code);
    check_echo_works(*good, service, good_id++);
  };

  SUBCASE("request offset past the heap") {
    evil->submit(evil->call_entry(service, 1, heap_bytes + 64));
    expect(1, StatusCode::kInvalidArgument);
    evil->submit(evil->call_entry(service, 2, uint64_t{1} << 40));
    expect(2, StatusCode::kInvalidArgument);
    evil->submit(evil->call_entry(service, 3, heap_bytes - 8));  // body runs off the end
    expect(3, StatusCode::kInvalidArgument);
  }
  SUBCASE("an app that takes its own heap mapping away hurts only itself") {
    uint64_t request = evil->build_echo("still here");
    // Replace the app's view of its heap with inaccessible memory (an munmap that keeps the
    // address range reserved, so the region's own cleanup stays safe).
    void* gone = ::mmap(evil->heap_region().data(), heap_bytes, PROT_NONE,
                        MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(gone != MAP_FAILED);
    evil->submit(evil->call_entry(service, 1, request));
    expect(1, StatusCode::kOk);  // the daemon reads the heap through its own mapping
  }
  SUBCASE("a string reference far outside the heap") {
    uint64_t request = evil->build_echo("x");
    RegionRef bad{uint64_t{1} << 40, 1u << 31, 1u << 31};
    std::memcpy(evil->heap_region().data() + request + evil->text_offset(), &bad, sizeof bad);
    evil->submit(evil->call_entry(service, 1, request));
    auto done = evil->wait_call_done(1);
    REQUIRE(done.has_value());
    CHECK(call_status(*done) != StatusCode::kOk);
    check_echo_works(*good, service, good_id++);
  }
  SUBCASE("metadata block of 2^40 bytes or at 2^40") {
    auto entry = evil->call_entry(service, 1, evil->build_echo("m"));
    entry.metadata_offset = 0;
    entry.metadata_length = UINT32_MAX;
    evil->submit(entry);
    expect(1, StatusCode::kInvalidArgument);
    entry.call_id = 2;
    entry.metadata_offset = uint64_t{1} << 40;
    entry.metadata_length = 16;
    evil->submit(entry);
    expect(2, StatusCode::kInvalidArgument);
  }
  SUBCASE("wrong service id and method index") {
    evil->submit(evil->call_entry(service + 100, 1, evil->build_echo("s")));
    expect(1, StatusCode::kInvalidArgument);
    auto entry = evil->call_entry(service, 2, evil->build_echo("m"));
    entry.method_index = 9;
    evil->submit(entry);
    expect(2, StatusCode::kInvalidArgument);
  }
  SUBCASE("bad releases and unknown entry kinds are ignored") {
    evil->release(12345);
    evil->release(uint64_t{1} << 40);
    shm::RingEntry junk{};
    junk.kind = static_cast<shm::EntryKind>(99);
    evil->submit(junk);
    shm::RingEntry bogus_reply{};
    bogus_reply.kind = shm::EntryKind::kReply;
    bogus_reply.call_id = 424242;
    bogus_reply.message_offset = uint64_t{1} << 40;
    bogus_reply.metadata_offset = shm::kNoOffset;
    bogus_reply.detail_offset = shm::kNoOffset;
    evil->submit(bogus_reply);
    check_echo_works(*good, service, good_id++);
    REQUIRE(eventually([&] { return daemon.daemon.stats().protocol_errors >= 4; }));
  }
  SUBCASE("shrinking the heap is refused by its seals") {
    CHECK(::ftruncate(evil->heap_region().fd(), 4096) != 0);
    CHECK(::ftruncate(evil->rings_region().fd(), 0) != 0);
    check_echo_works(*good, service, good_id++);
  }
  SUBCASE("corrupt ring indices close the hostile connection only") {
    auto* header = reinterpret_cast<shm::RingHeader*>(evil->rings_region().data());
    header->tail.store(uint64_t{1} << 40);
    evil->wake_daemon();
    REQUIRE(eventually([&] { return daemon.daemon.stats().connections_open == 2; }));
    check_echo_works(*good, service, good_id++);
  }
}

TEST_CASE(
    "a flood past the in-flight limit gets RESOURCE_EXHAUSTED while other apps are not limited") {
  EmbeddedDaemon daemon;  // max_calls_in_flight = 64
  EchoServer server(daemon.app_socket(), EchoServer::Mode::kHold);
  auto good = TestApp::connect(daemon.app_socket(), "good");
  auto flood = TestApp::connect(daemon.app_socket(), "flood");
  const uint32_t limit = daemon.daemon.config().max_calls_in_flight;
  for (uint64_t id = 1; id <= limit + 20; ++id) flood->call_echo(server.service_id(), id, "f");
  for (uint64_t id = limit + 1; id <= limit + 20; ++id) {
    auto done = flood->wait_call_done(id);
    REQUIRE(done.has_value());
    CHECK(call_status(*done) == StatusCode::kResourceExhausted);
  }
  REQUIRE(eventually([&] { return server.calls_seen() >= limit; }));
  good->call_echo(server.service_id(), 1, "still welcome");
  REQUIRE(eventually([&] { return server.calls_seen() >= limit + 1; }));
  server.reply_to_held();
  auto done = good->wait_call_done(1);
  REQUIRE(done.has_value());
  CHECK(call_status(*done) == StatusCode::kOk);
  CHECK(good->received_text(done->message_offset) == "still welcome");
  for (uint64_t id = 1; id <= limit; ++id) {
    auto flooded = flood->wait_call_done(id);
    REQUIRE(flooded.has_value());
    CHECK(call_status(*flooded) == StatusCode::kOk);
  }
}

TEST_CASE("the control socket is private and answers stats as JSON") {
  EmbeddedDaemon daemon;
  struct stat info {};
  REQUIRE(::stat(daemon.control_socket().c_str(), &info) == 0);
  CHECK((info.st_mode & 0777) == 0600);
  EchoServer server(daemon.app_socket());
  auto reply = ControlServer::request(daemon.control_socket(), "stats");
  REQUIRE(reply.ok());
  auto stats = nlohmann::json::parse(*reply);
  CHECK(stats["connections_open"] == 1);
  CHECK(stats["services"] == 1);
  auto listing = ControlServer::request(daemon.control_socket(), "connections");
  REQUIRE(listing.ok());
  auto connections = nlohmann::json::parse(*listing)["connections"];
  REQUIRE(connections.size() == 1);
  CHECK(connections[0]["app"] == "echo-server");
  CHECK(connections[0]["pid"] == ::getpid());
  CHECK(connections[0]["egress"] == nlohmann::json::array());  // no policies: frontend -> router
  CHECK(connections[0]["ingress"] == nlohmann::json::array());
  auto unknown = ControlServer::request(daemon.control_socket(), "reboot");
  REQUIRE(unknown.ok());
  CHECK(nlohmann::json::parse(*unknown).contains("error"));
}

TEST_CASE("stopping the daemon fails calls in flight UNAVAILABLE after the drain time") {
  auto daemon = std::make_unique<EmbeddedDaemon>();
  EchoServer server(daemon->app_socket(), EchoServer::Mode::kHold);
  auto client = TestApp::connect(daemon->app_socket(), "client");
  client->call_echo(server.service_id(), 1, "stuck");
  REQUIRE(eventually([&] { return server.calls_seen() >= 1; }));
  daemon->daemon.stop(10ms);
  auto done = client->wait_call_done(1);
  REQUIRE(done.has_value());
  CHECK(call_status(*done) == StatusCode::kUnavailable);
  CHECK(::access(daemon->app_socket().c_str(), F_OK) != 0);
}

TEST_CASE("an app flooding its ring without pause does not stall a well-behaved one") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  auto good = TestApp::connect(daemon.app_socket(), "good");
  auto flood = TestApp::connect(daemon.app_socket(), "flood");
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> posted{0};
  std::thread flooder([&] {
    shm::RingEntry junk{};
    junk.kind = shm::EntryKind::kRelease;  // each one a bad release: work for the daemon
    junk.metadata_offset = shm::kNoOffset;
    junk.detail_offset = shm::kNoOffset;
    uint64_t offset = 1;
    while (!stop) {
      junk.message_offset = offset++;
      // A full ring just means the daemon is behind; keep pushing.
      if (flood->try_submit(junk)) ++posted;
    }
  });
  while (posted < 10'000) std::this_thread::yield();
  for (uint64_t id = 1; id <= 300; ++id) check_echo_works(*good, server.service_id(), id);
  stop = true;
  flooder.join();
  CHECK(daemon.daemon.stats().protocol_errors > 0);
}

TEST_CASE("call metadata reaches the serving app unchanged") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  auto client = TestApp::connect(daemon.app_socket(), "client");
  shm::MetadataPairs sent = {{"tenant", "blue"}, {"trace-id", "0123456789abcdef"}};
  auto [offset, length] = client->build_metadata(sent);
  auto entry = client->call_entry(server.service_id(), 1, client->build_echo("with metadata"));
  entry.metadata_offset = offset;
  entry.metadata_length = length;
  client->submit(entry);
  auto done = client->wait_call_done(1);
  REQUIRE(done.has_value());
  CHECK(call_status(*done) == StatusCode::kOk);
  CHECK(server.last_metadata() == sent);
}

TEST_CASE("an app that never reads its completions is throttled, not buffered without end") {
  EmbeddedDaemon daemon;  // 256 ring entries
  EchoServer server(daemon.app_socket());
  auto good = TestApp::connect(daemon.app_socket(), "good");
  auto deaf = TestApp::connect(daemon.app_socket(), "deaf");
  // Calls to an unknown service end at once; the deaf app never pops their kCallDone.
  uint64_t submitted = 0;
  for (int refused_in_a_row = 0; refused_in_a_row < 50 && submitted < 20'000;) {
    if (deaf->try_submit(deaf->call_entry(9999, submitted + 1, 0))) {
      ++submitted;
      refused_in_a_row = 0;
    } else {
      ++refused_in_a_row;
      std::this_thread::sleep_for(1ms);
    }
  }
  // The daemon stopped reading the deaf app once a ring's worth was waiting for it, well before
  // it could have answered everything submitted.
  CHECK(daemon.daemon.stats().calls_completed < submitted);
  for (uint64_t id = 1; id <= 50; ++id) check_echo_works(*good, server.service_id(), id);
  // Read until everything came or nothing more comes for 10 s (the daemon refills the ring from
  // its overflow on a timer: a short gap would end the count early on a loaded machine).
  uint64_t answered = 0;
  while (answered < submitted) {
    auto entry = deaf->next_completion(std::chrono::seconds(10));
    if (!entry) break;
    if (entry->kind == shm::EntryKind::kCallDone) ++answered;
  }
  CHECK(answered == submitted);  // once it reads, everything comes, nothing was lost
}

TEST_CASE("a message over the per-app size limit ends RESOURCE_EXHAUSTED") {
  DaemonConfig config = EmbeddedDaemon::small_config();
  config.max_message_bytes = 16 << 10;
  EmbeddedDaemon daemon(config);
  EchoServer server(daemon.app_socket());
  auto client = TestApp::connect(daemon.app_socket(), "client");
  client->call_echo(server.service_id(), 1, std::string(64 << 10, 'x'));
  auto done = client->wait_call_done(1);
  REQUIRE(done.has_value());
  CHECK(call_status(*done) == StatusCode::kResourceExhausted);
  check_echo_works(*client, server.service_id(), 2);
}

namespace {
// Holds every request until it leaves the graph; counts what it holds for the test thread.
class HoldEverything final : public Operator {
 public:
  std::string_view name() const override { return "hold-everything"; }
  void on_requests(RpcBatch& batch, Output&) override {
    for (auto& rpc : batch) held_.push_back(std::move(rpc));
    holding = held_.size();
  }
  void on_replies(RpcBatch&, Output&) override {}
  void detach(Output& requests, Output&) override {
    for (auto& rpc : held_) requests.pass(std::move(rpc));
    held_.clear();
    holding = 0;
  }
  size_t held() const override { return held_.size(); }
  std::atomic<size_t> holding{0};

 private:
  std::vector<RpcPtr> held_;
};

class DenyEverything final : public Operator {
 public:
  std::string_view name() const override { return "deny-everything"; }
  void on_requests(RpcBatch& batch, Output& out) override {
    for (auto& rpc : batch)
      out.drop(std::move(rpc), Status(StatusCode::kPermissionDenied, "denied by policy"));
  }
  void on_replies(RpcBatch&, Output&) override {}
};
}  // namespace

TEST_CASE("policies spliced into a running daemon's graphs take effect and lose no call") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  auto client = TestApp::connect(daemon.app_socket(), "client");
  check_echo_works(*client, server.service_id(), 1);

  auto only_client = [](const CallerIdentity& identity) { return identity.app_name == "client"; };
  auto holder = std::make_shared<HoldEverything>();
  daemon.daemon
      .change_graphs([&](ConnectionId, const CallerIdentity& identity, ConnectionGraphs graphs) {
        if (only_client(identity)) CHECK(graphs.egress.insert(0, holder).ok());
      })
      .wait();
  for (uint64_t id = 10; id < 15; ++id) client->call_echo(server.service_id(), id, "held");
  REQUIRE(eventually([&] { return holder->holding >= 5; }));
  CHECK(server.calls_seen() == 1);  // none of them got past the policy

  daemon.daemon
      .change_graphs([&](ConnectionId, const CallerIdentity& identity, ConnectionGraphs graphs) {
        if (only_client(identity)) CHECK(graphs.egress.remove(graphs.egress.stage_at(0)).ok());
      })
      .wait();
  for (uint64_t id = 10; id < 15; ++id) {
    auto done = client->wait_call_done(id);
    REQUIRE(done.has_value());
    CHECK(call_status(*done) == StatusCode::kOk);
    CHECK(client->received_text(done->message_offset) == "held");
  }

  daemon.daemon
      .change_graphs([&](ConnectionId, const CallerIdentity& identity, ConnectionGraphs graphs) {
        if (only_client(identity))
          CHECK(graphs.egress.insert(0, std::make_shared<DenyEverything>()).ok());
      })
      .wait();
  client->call_echo(server.service_id(), 20, "denied");
  auto denied = client->wait_call_done(20);
  REQUIRE(denied.has_value());
  CHECK(call_status(*denied) == StatusCode::kPermissionDenied);

  daemon.daemon
      .change_graphs([&](ConnectionId, const CallerIdentity& identity, ConnectionGraphs graphs) {
        if (only_client(identity)) CHECK(graphs.egress.remove(graphs.egress.stage_at(0)).ok());
      })
      .wait();
  check_echo_works(*client, server.service_id(), 21);
  CHECK(daemon.daemon.stats().calls_in_flight == 0);
}

TEST_CASE("connections past max_connections are refused, closing one makes room") {
  DaemonConfig config = EmbeddedDaemon::small_config();
  config.max_connections = 2;
  EmbeddedDaemon daemon(config);
  auto first = TestApp::connect(daemon.app_socket(), "first");
  auto second = TestApp::connect(daemon.app_socket(), "second");
  auto third = shm::connect_app_socket(daemon.app_socket());
  REQUIRE(third.ok());
  wire::AppMessage hello;
  hello.mutable_hello()->set_protocol_version(shm::kProtocolVersion);
  (void)shm::send_message(third->get(), hello);
  wire::DaemonMessage reply;
  CHECK(shm::receive_message(third->get(), reply, shm::kMaxFdsPerPacket).status().code() ==
        StatusCode::kUnavailable);  // closed without a Welcome
  first->disconnect();
  REQUIRE(eventually([&] { return daemon.daemon.stats().connections_open == 1; }));
  auto fourth = TestApp::connect(daemon.app_socket(), "fourth");
  CHECK(daemon.daemon.stats().connections_open == 2);
}

TEST_CASE("a connection that never says Hello is closed after the handshake timeout") {
  DaemonConfig config = EmbeddedDaemon::small_config();
  config.handshake_timeout = 50ms;
  EmbeddedDaemon daemon(config);
  auto silent = shm::connect_app_socket(daemon.app_socket());
  REQUIRE(silent.ok());
  REQUIRE(eventually([&] { return daemon.daemon.stats().connections_accepted == 1; }));
  wire::DaemonMessage reply;
  // Blocks until the daemon closes the socket: no message ever comes.
  CHECK(shm::receive_message(silent->get(), reply, shm::kMaxFdsPerPacket).status().code() ==
        StatusCode::kUnavailable);
  REQUIRE(eventually([&] { return daemon.daemon.stats().connections_open == 0; }));
}

TEST_CASE("random ring entries from a hostile app never hurt the daemon or a well-behaved app") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  auto good = TestApp::connect(daemon.app_socket(), "good");
  auto evil = TestApp::connect(daemon.app_socket(), "evil");
  SeededRandom random(20261124);
  const uint64_t heap_bytes = evil->heap_region().size();
  std::vector<uint64_t> real_messages;
  for (int i = 0; i < 32; ++i) real_messages.push_back(evil->build_echo("r" + std::to_string(i)));
  auto pick_offset = [&]() -> uint64_t {
    switch (random.next_u64() % 5) {
      case 0:
        return real_messages[random.next_u64() % real_messages.size()];
      case 1:
        return random.next_u64() % heap_bytes;
      case 2:
        return heap_bytes - random.next_u64() % 64;
      case 3:
        return shm::kNoOffset;
      default:
        return random.next_u64();
    }
  };
  uint64_t good_id = 1;
  for (int batch = 0; batch < 40; ++batch) {
    for (int i = 0; i < 250; ++i) {
      shm::RingEntry entry{};
      const uint64_t kind_choice = random.next_u64() % 6;
      entry.kind = kind_choice < 4 ? static_cast<shm::EntryKind>(kind_choice + 1)
                                   : static_cast<shm::EntryKind>(random.next_u64() & 0xff);
      entry.flags = static_cast<uint8_t>(random.next_u64());
      entry.method_index = static_cast<uint16_t>(random.next_u64() % 3);
      entry.service_id = static_cast<uint32_t>(random.next_u64() % 4);
      entry.call_id = random.next_u64() % 64;
      entry.message_offset = pick_offset();
      entry.metadata_offset = pick_offset();
      entry.metadata_length = static_cast<uint32_t>(
          random.next_u64() % 4 == 0 ? random.next_u64() : random.next_u64() % 64);
      entry.status = static_cast<uint32_t>(random.next_u64() % 40);
      entry.deadline = static_cast<int64_t>(random.next_u64() >> 1);
      entry.detail_offset = pick_offset();
      entry.detail_length = static_cast<uint32_t>(random.next_u64());
      if (!evil->try_submit(entry)) break;
    }
    while (evil->next_completion(std::chrono::milliseconds(1))) {
    }
    check_echo_works(*good, server.service_id(), good_id++);
  }
  CHECK(daemon.daemon.stats().protocol_errors > 0);
  CHECK(daemon.daemon.stats().connections_open >= 2);  // the good app and the server are still on
}

namespace {
// Fails every reply on its way back (after the router copied the response).
class FailReplies final : public Operator {
 public:
  std::string_view name() const override { return "fail-replies"; }
  void on_requests(RpcBatch&, Output&) override {}
  void on_replies(RpcBatch& batch, Output& out) override {
    for (auto& rpc : batch)
      out.drop(std::move(rpc), Status(StatusCode::kDataLoss, "reply rejected by policy"));
  }
};
}  // namespace

TEST_CASE("a reply dropped by a policy fails the call and its copied response is reclaimed") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  auto client = TestApp::connect(daemon.app_socket(), "client");
  daemon.daemon
      .change_graphs([](ConnectionId, const CallerIdentity& identity, ConnectionGraphs graphs) {
        if (identity.app_name == "client")
          CHECK(graphs.egress.insert(0, std::make_shared<FailReplies>()).ok());
      })
      .wait();
  for (uint64_t id = 1; id <= 20; ++id) {
    client->call_echo(server.service_id(), id, "copied, then rejected");
    auto done = client->wait_call_done(id);
    REQUIRE(done.has_value());
    CHECK(call_status(*done) == StatusCode::kDataLoss);
    CHECK(done->message_offset == shm::kNoOffset);
    CHECK_FALSE(client->call_detail(id).empty());  // the policy's reason, released after reading
  }
  REQUIRE(eventually([&] { return daemon.daemon.stats().receive_bytes_in_use == 0; }));
  REQUIRE(eventually([&] { return server.live_replies() == 0; }));
}
