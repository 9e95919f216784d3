// Each fault of the loopback transport, injected through its API between two apps of a real
// (embedded) daemon: the affected calls end with the right status within their deadlines, every
// call ends exactly once, and the daemon goes on serving.
#include <doctest/doctest.h>

#include <unordered_map>

#include "embedded_daemon.h"
#include "mrpc/transports/loopback.h"
#include "test_app.h"

using namespace std::chrono_literals;
using namespace mrpc;
using namespace mrpc::testing;

namespace {

struct Outcomes {
  uint64_t ok = 0;
  std::unordered_map<StatusCode, uint64_t> failed;
  uint64_t of(StatusCode code) const {
    auto it = failed.find(code);
    return it == failed.end() ? 0 : it->second;
  }
};

// `count` echo calls with up to 32 in flight and `timeout` deadlines, ids from `next_id` on (a
// finished call's slot is reused with id + 64, the daemon's slot rule); a second kCallDone for a
// call fails the test. Leaves `next_id` past every id used.
Outcomes calls(TestApp& client, uint32_t service, uint64_t& next_id, uint64_t count,
               std::chrono::nanoseconds timeout) {
  Outcomes outcomes;
  std::unordered_map<uint64_t, uint64_t> requests;
  uint64_t started = 0, highest = next_id;
  auto start = [&](uint64_t id) {
    const uint64_t request = client.build_echo("payload " + std::to_string(id));
    requests[id] = request;
    client.submit(client.call_entry(service, id, request, timeout));
    highest = std::max(highest, id);
    ++started;
  };
  for (uint64_t i = 0; i < 32 && started < count; ++i) start(next_id + i);
  while (!requests.empty()) {
    auto entry = client.next_completion();
    REQUIRE_MESSAGE(entry.has_value(), "a call never ended (", requests.size(), " waiting)");
    if (entry->kind != shm::EntryKind::kCallDone) continue;
    auto request = requests.find(entry->call_id);
    REQUIRE_MESSAGE(request != requests.end(), "a second kCallDone for call ", entry->call_id);
    (void)client.heap().free_message(request->second);
    requests.erase(request);
    if (call_status(*entry) == StatusCode::kOk) {
      ++outcomes.ok;
      CHECK(client.received_text(entry->message_offset) ==
            "payload " + std::to_string(entry->call_id));
      client.release(entry->message_offset);
    } else {
      ++outcomes.failed[call_status(*entry)];
      if (entry->detail_offset != shm::kNoOffset) client.release(entry->detail_offset);
    }
    if (started < count) start(entry->call_id + 64);
  }
  next_id = highest + 1;
  return outcomes;
}

}  // namespace

TEST_CASE(
    "loopback faults: every fault ends its calls with the right status and the daemon serves on") {
  DaemonConfig config = EmbeddedDaemon::small_config();
  TempDir dir;
  config.app_socket_path = dir.path("app.sock");
  config.control_socket_path = dir.path("control.sock");
  Daemon daemon(config, MonotonicClock::instance());
  LoopbackTransport& link = daemon.enable_loopback_faults(20261201);
  REQUIRE(daemon.start().ok());
  EchoServer server(config.app_socket_path);
  auto client = TestApp::connect(config.app_socket_path, "client");
  const uint32_t service = server.service_id();
  uint64_t id = 1;
  auto healthy = [&] {
    link.set_faults({});
    Outcomes after = calls(*client, service, id, 200, 10s);
    CHECK(after.ok == 200);
  };

  SUBCASE("drop: lost requests end at their deadline") {
    link.set_faults({.drop = 0.5});
    Outcomes outcomes = calls(*client, service, id, 400, 100ms);
    MESSAGE("drop 0.5: ", outcomes.ok, " ok, ", outcomes.of(StatusCode::kDeadlineExceeded),
            " deadline exceeded");
    for (const auto& [code, n] : outcomes.failed)
      MESSAGE("  ", n, " ended ", status_code_name(code));
    CHECK(outcomes.ok + outcomes.of(StatusCode::kDeadlineExceeded) == 400);
    CHECK(outcomes.of(StatusCode::kDeadlineExceeded) == link.stats().dropped);
    CHECK(outcomes.ok > 100);
    CHECK(link.stats().dropped > 100);
    healthy();
  }
  SUBCASE("delay and jitter: requests arrive late and out of order, all answered") {
    link.set_faults({.delay = 2ms, .jitter = 5ms});
    Outcomes outcomes = calls(*client, service, id, 300, 10s);
    CHECK(outcomes.ok == 300);
    link.set_faults({.delay = 200ms});
    Outcomes late = calls(*client, service, id, 20, 20ms);  // later than their deadline
    CHECK(late.of(StatusCode::kDeadlineExceeded) == 20);
    healthy();
  }
  SUBCASE("duplicate: the callee sees two attempts, the caller one outcome") {
    const uint64_t seen_before = server.calls_seen();
    link.set_faults({.duplicate = 1.0});
    Outcomes outcomes = calls(*client, service, id, 500, 10s);
    CHECK(outcomes.ok == 500);
    REQUIRE(eventually([&] { return server.calls_seen() - seen_before == 1000; }));
    healthy();
  }
  SUBCASE("corrupt: a bad frame resets the link, the calls on it end UNAVAILABLE") {
    server.set_mode(EchoServer::Mode::kHold);
    for (uint64_t i = 0; i < 10; ++i) client->call_echo(service, id + i, "held");
    REQUIRE(eventually([&] { return server.calls_seen() >= 10; }));
    link.set_faults({.corrupt = 1.0});
    client->call_echo(service, id + 10, "corrupt");
    for (uint64_t i = 0; i <= 10; ++i) {
      auto done = client->wait_call_done(id + i);
      REQUIRE(done.has_value());
      CHECK(call_status(*done) == StatusCode::kUnavailable);
    }
    CHECK(client->call_detail(id + 10).find("corrupt frame") != std::string::npos);
    id += 11;
    server.set_mode(EchoServer::Mode::kEcho);
    server.reply_to_held();  // late replies: discarded
    healthy();
  }
  SUBCASE("refuse: connecting fails at once with UNAVAILABLE") {
    link.set_faults({.refuse = true});
    Outcomes outcomes = calls(*client, service, id, 50, 10s);
    CHECK(outcomes.of(StatusCode::kUnavailable) == 50);
    healthy();
  }
  SUBCASE("die mid-call: the calls in flight end UNAVAILABLE now, not at their deadline") {
    server.set_mode(EchoServer::Mode::kHold);
    for (uint64_t i = 0; i < 20; ++i) client->call_echo(service, id + i, "in flight", 60s);
    REQUIRE(eventually([&] { return server.calls_seen() >= 20; }));
    link.die();
    for (uint64_t i = 0; i < 20; ++i) {
      auto done = client->wait_call_done(id + i);
      REQUIRE(done.has_value());
      CHECK(call_status(*done) == StatusCode::kUnavailable);
    }
    CHECK(link.stats().failed_by_death == 20);
    client->call_echo(service, id + 20, "while down");
    auto down = client->wait_call_done(id + 20);
    REQUIRE(down.has_value());
    CHECK(call_status(*down) == StatusCode::kUnavailable);
    id += 21;
    server.set_mode(EchoServer::Mode::kEcho);
    server.reply_to_held();
    link.revive();
    healthy();
  }
  REQUIRE(eventually([&] { return daemon.stats().calls_in_flight == 0; }));
  CHECK(daemon.stats().call_table_size == 0);
}
