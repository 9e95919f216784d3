// Each fault of the loopback transport, injected through its API between two apps of a real
// (embedded) daemon: the affected calls end with the right status within their deadlines, every
// call ends exactly once, and the daemon goes on serving.
#include <doctest/doctest.h>

#include "embedded_daemon.h"
#include "mrpc/transports/loopback.h"
#include "test_app.h"

using namespace std::chrono_literals;
using namespace mrpc;
using namespace mrpc::testing;

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
    EchoOutcomes after = echo_load(*client, service, id, 200, 10s);
    CHECK(after.ok == 200);
  };

  SUBCASE("drop: lost requests end at their deadline") {
    link.set_faults({.drop = 0.5});
    // A deadline that a delivered call meets even on a loaded machine under a sanitizer, so that
    // exactly the dropped calls miss it.
    EchoOutcomes outcomes = echo_load(*client, service, id, 400, 500ms);
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
    EchoOutcomes outcomes = echo_load(*client, service, id, 300, 10s);
    CHECK(outcomes.ok == 300);
    link.set_faults({.delay = 200ms});
    EchoOutcomes late = echo_load(*client, service, id, 20, 20ms);  // later than their deadline
    CHECK(late.of(StatusCode::kDeadlineExceeded) == 20);
    healthy();
  }
  SUBCASE("duplicate: the callee sees two attempts, the caller one outcome") {
    const uint64_t seen_before = server.calls_seen();
    link.set_faults({.duplicate = 1.0});
    EchoOutcomes outcomes = echo_load(*client, service, id, 500, 10s);
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
    EchoOutcomes outcomes = echo_load(*client, service, id, 50, 10s);
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
