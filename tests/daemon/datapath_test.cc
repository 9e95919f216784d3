// The daemon's datapath seams, shown on an embedded daemon with raw test apps over real sockets
// and shared memory: egress and ingress graphs, endpoint sets, registrations that end with their
// apps, and memory and per-round work that stay bounded whatever the apps do.
#include <doctest/doctest.h>

#include <google/protobuf/descriptor.pb.h>

#include <atomic>
#include <cstdlib>
#include <future>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "embedded_daemon.h"
#include "mrpc/dataflow/operator.h"
#include "test_app.h"

using namespace std::chrono_literals;
using namespace mrpc;
using namespace mrpc::testing;

namespace {

// Counts the requests and replies it sees; passes everything.
class CountingOperator final : public Operator {
 public:
  std::string_view name() const override { return "counting"; }
  void on_requests(RpcBatch& batch, Output&) override { requests += batch.size(); }
  void on_replies(RpcBatch& batch, Output&) override { replies += batch.size(); }
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> replies{0};
};

// Makes `count` echo calls one after another; returns how many ended OK.
uint64_t echo_calls(TestApp& client, uint32_t service_id, uint64_t first_id, uint64_t count) {
  uint64_t ok = 0;
  for (uint64_t id = first_id; id < first_id + count; ++id) {
    const uint64_t request = client.build_echo("x");
    client.submit(client.call_entry(service_id, id, request));
    auto done = client.wait_call_done(id);
    REQUIRE(done.has_value());
    (void)client.heap().free_message(request);
    if (call_status(*done) == StatusCode::kOk) {
      ++ok;
      client.release(done->message_offset);
    } else if (done->detail_offset != shm::kNoOffset) {
      client.release(done->detail_offset);
    }
  }
  return ok;
}

}  // namespace

TEST_CASE("an operator at the callee sees every caller's calls, one at a caller only its own") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  auto first = TestApp::connect(daemon.app_socket(), "first");
  auto second = TestApp::connect(daemon.app_socket(), "second");
  auto at_callee = std::make_shared<CountingOperator>();
  auto at_first_caller = std::make_shared<CountingOperator>();
  daemon.daemon
      .change_graphs([&](ConnectionId, const CallerIdentity& identity, ConnectionGraphs graphs) {
        if (identity.app_name == "echo-server") CHECK(graphs.ingress.insert(0, at_callee).ok());
        if (identity.app_name == "first") CHECK(graphs.egress.insert(0, at_first_caller).ok());
      })
      .wait();
  CHECK(echo_calls(*first, server.service_id(), 1, 10) == 10);
  CHECK(echo_calls(*second, server.service_id(), 1, 7) == 7);
  CHECK(at_callee->requests == 17);
  CHECK(at_callee->replies == 17);
  CHECK(at_first_caller->requests == 10);
  CHECK(at_first_caller->replies == 10);
}

TEST_CASE("two servers of one service share 10000 calls round robin") {
  EmbeddedDaemon daemon;
  EchoServer one(daemon.app_socket());
  EchoServer two(daemon.app_socket());
  REQUIRE(one.service_id() == two.service_id());
  auto client = TestApp::connect(daemon.app_socket(), "client");
  CHECK(echo_calls(*client, one.service_id(), 1, 10000) == 10000);
  CHECK(one.calls_seen() == 5000);
  CHECK(two.calls_seen() == 5000);
}

TEST_CASE("killing one of two servers fails only its calls in flight, the other serves the rest") {
  EmbeddedDaemon daemon;
  auto client = TestApp::connect(daemon.app_socket(), "client");
  REQUIRE(client->register_service(kEchoService, false).status == StatusCode::kOk);
  EchoServer steady(daemon.app_socket());
  auto doomed = std::make_unique<EchoServer>(daemon.app_socket(), EchoServer::Mode::kHold);
  const uint32_t service = steady.service_id();
  // 40 calls in flight: round robin gives 20 to each; the doomed server holds its 20.
  for (uint64_t id = 1; id <= 40; ++id) client->call_echo(service, id, "load");
  REQUIRE(eventually([&] { return doomed->calls_seen() == 20 && steady.calls_seen() == 20; }));
  doomed->kill();
  uint64_t ok = 0, unavailable = 0;
  for (uint64_t id = 1; id <= 40; ++id) {
    auto done = client->wait_call_done(id);
    REQUIRE(done.has_value());
    if (call_status(*done) == StatusCode::kOk) ++ok;
    if (call_status(*done) == StatusCode::kUnavailable) ++unavailable;
  }
  CHECK(ok == 20);
  CHECK(unavailable == 20);
  // New calls all go to the survivor.
  CHECK(echo_calls(*client, service, 41, 200) == 200);
  CHECK(steady.calls_seen() == 220);
  CHECK(daemon.daemon.stats().calls_in_flight == 0);
}

TEST_CASE(
    "a server's registration is answered only once the caller's shard has it: the next two calls "
    "go one to each server") {
  // With 3 runtime threads, connections go to shards 0, 1, 2 in turn (shard_placement_test.cc):
  // the first server on shard 0 (which accepts apps), the client on 1, the second server on 2.
  EmbeddedDaemon daemon;
  EchoServer first(daemon.app_socket());
  auto client = TestApp::connect(daemon.app_socket(), "client");
  REQUIRE(client->register_service(kEchoService, false).status == StatusCode::kOk);
  // The client's shard is held between two rounds (with one runtime thread: every app's).
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<bool> holding{false};
  auto changed = daemon.daemon.change_graphs(
      [&holding, released](ConnectionId, const CallerIdentity& identity, ConnectionGraphs) {
        if (identity.app_name != "client") return;
        holding = true;
        released.wait();
      });
  REQUIRE(eventually([&] { return holding.load(); }));
  std::atomic<bool> registered{false};
  std::unique_ptr<EchoServer> second;
  std::thread registering([&] {
    second = std::make_unique<EchoServer>(daemon.app_socket());
    registered = true;
  });
  // Its own shard registers it at once, but may not answer before the client's shard has it (a
  // reply that came anyway would show within this wait; none must).
  std::this_thread::sleep_for(300ms);
  CHECK_FALSE(registered.load());
  release.set_value();
  registering.join();
  changed.wait();
  CHECK(echo_calls(*client, first.service_id(), 1, 2) == 2);
  CHECK(first.calls_seen() == 1);
  CHECK(second->calls_seen() == 1);
}

TEST_CASE("a service whose apps all left can be registered again with another schema") {
  // Without a grace period its registration goes with its last app (with one, the owner's uid
  // could still re-register it with another schema: attack_test.cc).
  DaemonConfig config = EmbeddedDaemon::small_config();
  config.service_grace_period = std::chrono::nanoseconds(0);
  EmbeddedDaemon daemon(config);
  google::protobuf::FileDescriptorSet changed;
  REQUIRE(changed.ParseFromString(echo_file_descriptor_set()));
  changed.mutable_file(0)->mutable_message_type(0)->mutable_field(0)->set_type(
      google::protobuf::FieldDescriptorProto::TYPE_INT64);
  const std::string changed_schema = changed.SerializeAsString();
  uint32_t first_id = 0;
  {
    EchoServer original(daemon.app_socket());
    first_id = original.service_id();
    auto other = TestApp::connect(daemon.app_socket(), "other");
    // While an app still uses the service, its layouts stand.
    CHECK(other->register_service(kEchoService, true, changed_schema).status ==
          StatusCode::kFailedPrecondition);
  }
  REQUIRE(eventually([&] { return daemon.daemon.stats().services == 0; }));
  auto newcomer = TestApp::connect(daemon.app_socket(), "newcomer");
  auto registered = newcomer->register_service(kEchoService, true, changed_schema);
  CHECK(registered.status == StatusCode::kOk);
  CHECK(registered.service_id != first_id);  // the old id names nothing any more
  auto client = TestApp::connect(daemon.app_socket(), "client");
  client->call_echo(first_id, 1, "to the old registration");
  auto done = client->wait_call_done(1);
  REQUIRE(done.has_value());
  CHECK(call_status(*done) == StatusCode::kInvalidArgument);
}

namespace {
// `clients` apps share `total` calls, each keeping 64 in flight (the small config's max) with
// `timeout` deadlines; returns how many ended with `expected`.
uint64_t run_calls(std::vector<std::unique_ptr<TestApp>>& apps, uint32_t service, uint64_t total,
                   std::chrono::nanoseconds timeout, StatusCode expected) {
  std::atomic<uint64_t> as_expected{0};
  std::vector<std::thread> threads;
  for (size_t c = 0; c < apps.size(); ++c) {
    const uint64_t share = total / apps.size() + (c == 0 ? total % apps.size() : 0);
    threads.emplace_back([&, c, share] {
      uint64_t first_id = 0;
      as_expected += echo_load(*apps[c], service, first_id, share, timeout).of(expected);
    });
  }
  for (auto& thread : threads) thread.join();
  return as_expected;
}

uint64_t run_calls(EmbeddedDaemon& daemon, uint32_t service, int clients, uint64_t total,
                   std::chrono::nanoseconds timeout, StatusCode expected) {
  std::vector<std::unique_ptr<TestApp>> apps;
  for (int c = 0; c < clients; ++c)
    apps.push_back(TestApp::connect(daemon.app_socket(), "client-" + std::to_string(c)));
  return run_calls(apps, service, total, timeout, expected);
}

uint64_t count_from_env(const char* name, uint64_t fallback) {
  const char* value = std::getenv(name);
  return value == nullptr ? fallback : std::strtoull(value, nullptr, 10);
}
}  // namespace

TEST_CASE("abandoned calls leave the call table and deadline heap at their starting size") {
  // Default 40000 here; the soak runs MRPC_ABANDONED_CALLS=1000000.
  const uint64_t total = count_from_env("MRPC_ABANDONED_CALLS", 40000);
  EmbeddedDaemon daemon;
  EchoServer slow(daemon.app_socket(), EchoServer::Mode::kReplyWhenCancelled);
  // Settled: no RPC is left anywhere in the daemon (calls, deliveries, shard hand-offs) and the
  // server answered every call it saw, after its cancellation (a late reply, dropped). A call
  // whose 50 ms passed before the daemon read it (a loaded sanitizer run) is refused at the door
  // and never reaches the server, so the count of late replies depends on the machine: the wait
  // fails only if progress stops for 10 s.
  auto settled = [&](const char* phase) {
    const bool done = eventually_while_progressing(
        [&] { return daemon.daemon.stats().late_replies + slow.replies_sent(); },
        [&] {
          return daemon.daemon.stats().rpcs_alive == 0 && slow.replies_sent() == slow.calls_seen();
        });
    const DaemonStats now = daemon.daemon.stats();
    INFO(phase, ": late replies ", now.late_replies, "; the server saw ", slow.calls_seen(),
         " calls and ", slow.cancellations(), " cancellations and sent ", slow.replies_sent(),
         " replies (", slow.live_replies(), " not yet freed); calls in flight ",
         now.calls_in_flight, ", rpcs alive ", now.rpcs_alive);
    REQUIRE(done);
    CHECK(slow.cancellations() == slow.calls_seen());
    CHECK(now.late_replies >= slow.replies_sent());
  };
  // Warm-up: the tables grow to what 4 apps x 64 calls in flight need.
  CHECK(run_calls(daemon, slow.service_id(), 4, 2000, 50ms, StatusCode::kDeadlineExceeded) == 2000);
  settled("warm-up");
  const DaemonStats warm = daemon.daemon.stats();
  CHECK(warm.call_table_size == 0);
  CHECK(warm.deadline_heap_size == 0);
  CHECK(run_calls(daemon, slow.service_id(), 4, total, 50ms, StatusCode::kDeadlineExceeded) ==
        total);
  settled("abandoned calls");
  const DaemonStats after = daemon.daemon.stats();
  MESSAGE("abandoned calls: ", total, ", call table capacity ", after.call_table_capacity,
          " (after warm-up ", warm.call_table_capacity, "), deadline heap capacity ",
          after.deadline_heap_capacity, " (", warm.deadline_heap_capacity, ")");
  CHECK(after.call_table_size == 0);
  CHECK(after.deadline_heap_size == 0);
  CHECK(after.call_table_capacity <=
        std::max<uint64_t>(warm.call_table_capacity, test_runtime_threads() * 4 * 64));
  CHECK(after.deadline_heap_capacity <=
        std::max<uint64_t>(warm.deadline_heap_capacity, test_runtime_threads() * 4 * 64));
  CHECK(after.calls_in_flight == 0);
  // Every late reply's memory goes back to the server (its kReplyDone may still be on its way).
  CHECK(eventually([&] { return slow.live_replies() == 0; }));
}

TEST_CASE("finished calls leave the call table and deadline heap at their starting size") {
  // Default 200000 here; the soak runs MRPC_FINISHED_CALLS=10000000.
  const uint64_t total = count_from_env("MRPC_FINISHED_CALLS", 200000);
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  CHECK(run_calls(daemon, server.service_id(), 2, 5000, 10s, StatusCode::kOk) == 5000);
  const DaemonStats warm = daemon.daemon.stats();
  CHECK(run_calls(daemon, server.service_id(), 2, total, 10s, StatusCode::kOk) == total);
  const DaemonStats after = daemon.daemon.stats();
  MESSAGE("finished calls: ", total, ", call table capacity ", after.call_table_capacity,
          ", deadline heap capacity ", after.deadline_heap_capacity);
  CHECK(after.call_table_size == 0);
  CHECK(after.deadline_heap_size == 0);
  CHECK(after.call_table_capacity <=
        std::max<uint64_t>(warm.call_table_capacity, test_runtime_threads() * 2 * 64));
  CHECK(after.deadline_heap_capacity <=
        std::max<uint64_t>(warm.deadline_heap_capacity, test_runtime_threads() * 2 * 64));
}

namespace {
// Mirrors every call to a shadow server and ends the shadow's replies here; pins the primary
// attempt to the main server.
class MirrorToShadow final : public Operator {
 public:
  MirrorToShadow(ConnectionId main, ConnectionId shadow) : main_(main), shadow_(shadow) {}
  std::string_view name() const override { return "mirror-to-shadow"; }
  void on_requests(RpcBatch& batch, Output& out) override {
    for (auto& rpc : batch) {
      if (rpc->attempt_kind != AttemptKind::kPrimary) continue;
      rpc->endpoint.connection = main_;
      out.fork(*rpc, AttemptKind::kMirror, Endpoint{shadow_});
      ++mirrored;
    }
  }
  void on_replies(RpcBatch& batch, Output& out) override {
    for (auto& rpc : batch) {
      if (rpc->attempt_kind != AttemptKind::kMirror) continue;
      if (rpc->status.ok()) ++shadow_ok;
      // A shadow that falls max_calls_served calls behind refuses the rest (the router does not
      // send a mirror elsewhere).
      if (rpc->status.code() == StatusCode::kResourceExhausted) ++shadow_full;
      out.end(std::move(rpc));
    }
  }
  std::atomic<uint64_t> mirrored{0};
  std::atomic<uint64_t> shadow_ok{0};
  std::atomic<uint64_t> shadow_full{0};

 private:
  ConnectionId main_, shadow_;
};

// Retries a call once when an attempt fails UNAVAILABLE.
class RetryOnceOnUnavailable final : public Operator {
 public:
  std::string_view name() const override { return "retry-once"; }
  void on_requests(RpcBatch&, Output&) override {}
  void on_replies(RpcBatch& batch, Output& out) override {
    for (auto& rpc : batch) {
      if (rpc->status.code() != StatusCode::kUnavailable || rpc->attempts_made >= 2) continue;
      out.fork(*rpc, AttemptKind::kRetry);
      out.end(std::move(rpc));
      ++retries;
    }
  }
  std::atomic<uint64_t> retries{0};
};
}  // namespace

TEST_CASE("mirrored calls end once for the caller, shadow replies are absorbed, nothing is left") {
  // The mirror does not wait for the shadow, which may fall thousands of calls behind (up to
  // max_calls_served): room for that many replies in its heap.
  DaemonConfig config = EmbeddedDaemon::small_config();
  config.heap_bytes = 64 << 20;
  EmbeddedDaemon daemon(config);
  EchoServer main_server(daemon.app_socket());
  EchoServer shadow(daemon.app_socket());
  auto mirror =
      std::make_shared<MirrorToShadow>(main_server.connection_id(), shadow.connection_id());
  std::vector<std::unique_ptr<TestApp>> clients;
  clients.push_back(TestApp::connect(daemon.app_socket(), "client"));
  daemon.daemon
      .change_graphs([&](ConnectionId, const CallerIdentity& identity, ConnectionGraphs graphs) {
        if (identity.app_name == "client") CHECK(graphs.egress.insert(0, mirror).ok());
      })
      .wait();
  const uint64_t total = 100000;
  CHECK(run_calls(clients, main_server.service_id(), total, 10s, StatusCode::kOk) == total);
  CHECK(mirror->mirrored == total);
  CHECK(main_server.calls_seen() == total);
  // Each shadow reply is absorbed: by the operator when it comes back before the main reply ended
  // the call, else by the daemon as a late reply of a call already ended.
  REQUIRE(eventually([&] {
    const DaemonStats stats = daemon.daemon.stats();
    return stats.attempts_ended + stats.late_replies == total;
  }));
  const DaemonStats stats = daemon.daemon.stats();
  MESSAGE("shadow replies ended by the operator: ", stats.attempts_ended,
          ", discarded as late: ", stats.late_replies, "; the shadow saw ", shadow.calls_seen(),
          " and refused ", mirror->shadow_full.load(), " of ", mirror->mirrored.load());
  // A mirror whose call ended (the primary's reply came back) before it reached the shadow is
  // discarded as late, not delivered: the caller may already have freed the request. With one
  // runtime thread that is rare; with several the primary's reply can overtake its mirror.
  CHECK(shadow.calls_seen() + mirror->shadow_full <= mirror->mirrored);
  CHECK(shadow.calls_seen() > 0);
  CHECK(stats.attempts_ended == mirror->shadow_ok + mirror->shadow_full);
  CHECK(stats.call_table_size == 0);
  CHECK(stats.calls_in_flight == 0);
  REQUIRE(eventually([&] { return daemon.daemon.stats().rpcs_alive == 0; }));
  REQUIRE(
      eventually([&] { return shadow.live_replies() == 0 && main_server.live_replies() == 0; }));
}

TEST_CASE("a retried call ends once with the retry's reply, and nothing is left") {
  EmbeddedDaemon daemon;
  EchoServer flaky(daemon.app_socket(), EchoServer::Mode::kUnavailableFirstTime);
  auto retry = std::make_shared<RetryOnceOnUnavailable>();
  std::vector<std::unique_ptr<TestApp>> clients;
  clients.push_back(TestApp::connect(daemon.app_socket(), "client"));
  daemon.daemon
      .change_graphs([&](ConnectionId, const CallerIdentity& identity, ConnectionGraphs graphs) {
        if (identity.app_name == "client") CHECK(graphs.egress.insert(0, retry).ok());
      })
      .wait();
  const uint64_t total = 100000;
  // Every call's first attempt fails UNAVAILABLE; its retry succeeds.
  CHECK(run_calls(clients, flaky.service_id(), total, 10s, StatusCode::kOk) == total);
  CHECK(retry->retries == total);
  CHECK(flaky.calls_seen() == 2 * total);
  const DaemonStats stats = daemon.daemon.stats();
  CHECK(stats.call_table_size == 0);
  CHECK(stats.calls_in_flight == 0);
  CHECK(stats.attempts_ended == total);
  REQUIRE(eventually([&] { return daemon.daemon.stats().rpcs_alive == 0; }));
  REQUIRE(eventually([&] { return flaky.live_replies() == 0; }));
}

TEST_CASE("1000 idle connected apps add no socket reads to another app's calls") {
  DaemonConfig config = EmbeddedDaemon::small_config();
  config.heap_bytes = 1 << 20;
  config.receive_bytes = 1 << 20;
  config.ring_entries = 16;
  config.max_connections_per_uid = config.max_connections;  // every app here is of one uid
  EmbeddedDaemon daemon(config);
  EchoServer server(daemon.app_socket());
  auto client = TestApp::connect(daemon.app_socket(), "client");
  CHECK(echo_calls(*client, server.service_id(), 1, 100) == 100);  // warm-up
  const uint64_t alone = daemon.daemon.stats().socket_reads;
  CHECK(echo_calls(*client, server.service_id(), 101, 1000) == 1000);
  const uint64_t reads_alone = daemon.daemon.stats().socket_reads - alone;

  std::vector<std::unique_ptr<TestApp>> idle;
  for (int i = 0; i < 1000; ++i)
    idle.push_back(TestApp::connect(daemon.app_socket(), "idle-" + std::to_string(i)));
  REQUIRE(eventually([&] { return daemon.daemon.stats().connections_open == 1002; }));
  // Let the last handshakes' reads settle before counting.
  uint64_t settled = daemon.daemon.stats().socket_reads;
  REQUIRE(eventually([&] {
    std::this_thread::sleep_for(20ms);
    const uint64_t now = daemon.daemon.stats().socket_reads;
    return std::exchange(settled, now) == now;
  }));
  const uint64_t crowded = daemon.daemon.stats().socket_reads;
  const uint64_t rounds_before = daemon.daemon.stats().runtime_rounds;
  CHECK(echo_calls(*client, server.service_id(), 1101, 1000) == 1000);
  const uint64_t reads_crowded = daemon.daemon.stats().socket_reads - crowded;
  MESSAGE("socket reads over 1000 calls: ", reads_alone, " alone, ", reads_crowded,
          " beside 1000 idle apps (", daemon.daemon.stats().runtime_rounds - rounds_before,
          " runtime rounds)");
  // Reading every socket per wake-up would be ~1000 reads per call; a few reads that finish the
  // idle apps' handshakes may still land in the window.
  CHECK(reads_alone <= 4);
  CHECK(reads_crowded <= 4);
}

TEST_CASE(
    "a caller whose receive region is full of unreleased replies is told so, not the server") {
  DaemonConfig config = EmbeddedDaemon::small_config();
  config.receive_bytes = 64 << 10;
  EmbeddedDaemon daemon(config);
  EchoServer server(daemon.app_socket());
  auto client = TestApp::connect(daemon.app_socket(), "hoarder");
  const std::string text(4000, 'h');
  uint64_t id = 1;
  std::vector<uint64_t> kept;
  for (;; ++id) {  // keeps every reply: the region fills up
    REQUIRE(id < 100);
    client->call_echo(server.service_id(), id, text);
    auto done = client->wait_call_done(id);
    REQUIRE(done.has_value());
    if (call_status(*done) != StatusCode::kOk) {
      CHECK(call_status(*done) == StatusCode::kResourceExhausted);
      const std::string detail = client->call_detail(id);
      CHECK(detail.find("the caller's receive region has no room") != std::string::npos);
      CHECK(detail.find("release received replies") != std::string::npos);
      break;
    }
    kept.push_back(done->message_offset);
  }
  CHECK(kept.size() > 5);
  for (uint64_t offset : kept) client->release(offset);
  check_echo_works(*client, server.service_id(), id + 1);
}

TEST_CASE("error text reaches a caller whose receive region is completely full") {
  DaemonConfig config = EmbeddedDaemon::small_config();
  config.receive_bytes = 64 << 10;
  EmbeddedDaemon daemon(config);
  EchoServer server(daemon.app_socket());
  auto client = TestApp::connect(daemon.app_socket(), "hoarder");
  uint64_t id = 1;
  std::vector<uint64_t> kept;
  // Replies of shrinking size fill every gap of the region; none is released.
  for (size_t size = 4000; size >= 8; size /= 2) {
    for (;; ++id) {
      REQUIRE(id < 1000);
      client->call_echo(server.service_id(), id, std::string(size, 'f'));
      auto done = client->wait_call_done(id);
      REQUIRE(done.has_value());
      if (call_status(*done) != StatusCode::kOk) break;
      kept.push_back(done->message_offset);
    }
    ++id;
  }
  // The region has no room for even a short text now; the call still says why it failed.
  client->call_echo(server.service_id(), id, "x");
  auto done = client->wait_call_done(id);
  REQUIRE(done.has_value());
  CHECK(call_status(*done) == StatusCode::kResourceExhausted);
  CHECK(client->call_detail(id).find("release received replies") != std::string::npos);
  for (uint64_t offset : kept) client->release(offset);
  REQUIRE(eventually([&] { return daemon.daemon.stats().receive_bytes_in_use == 0; }));
  check_echo_works(*client, server.service_id(), id + 1);
}

TEST_CASE(
    "at spin 0 and one call in flight the daemon sleeps between calls, and its wake-ups arm no "
    "timer and look at no listener") {
  DaemonConfig config = EmbeddedDaemon::small_config();
  config.spin_budget = 0ns;
  EmbeddedDaemon daemon(config);
  EchoServer server(daemon.app_socket());
  auto client = TestApp::connect(daemon.app_socket(), "client");
  CHECK(echo_calls(*client, server.service_id(), 1, 200) == 200);  // warm-up
  const DaemonStats before = daemon.daemon.stats();
  constexpr uint64_t kCalls = 2000;
  CHECK(echo_calls(*client, server.service_id(), 201, kCalls) == kCalls);
  const DaemonStats after = daemon.daemon.stats();
  const double calls = kCalls;
  const double sleeps = (after.runtime_sleeps - before.runtime_sleeps) / calls;
  const double rounds = (after.runtime_rounds - before.runtime_rounds) / calls;
  const double checks = (after.runtime_event_checks - before.runtime_event_checks) / calls;
  const uint64_t arms = after.runtime_timer_arms - before.runtime_timer_arms;
  const uint64_t listener = after.listener_checks - before.listener_checks;
  MESSAGE("per call: ", sleeps, " sleeps, ", rounds, " rounds, ", checks, " epoll_waits; over ",
          kCalls, " calls: ", arms, " timerfd arms, ", listener, " listener checks (",
          config.runtime_threads, " runtime threads)");
  // Sleeps between calls (a request and its reply each wake it, at most, per shard they cross),
  // and no spinning: a spinning runtime makes thousands of rounds per call.
  const double threads = static_cast<double>(config.runtime_threads);
  CHECK(sleeps >= 0.5);
  CHECK(sleeps <= 2.5 * threads);
  CHECK(rounds <= 6 * threads);
  // One epoll_wait per sleep, and the busy rounds' periodic check (every millisecond) on top.
  CHECK(checks <= sleeps + 0.5);
  // Deadlines that keep moving out do not re-arm the timerfd at each sleep, and app doorbells
  // do not make the daemon accept4 on its listeners (before: once per sleep and once per ms).
  CHECK(arms <= kCalls / 100);
  CHECK(listener <= 2);
}
