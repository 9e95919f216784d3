// The daemon's per-call path allocates nothing in steady state: every heap allocation made on the
// daemon's runtime thread is counted (this binary replaces the global operator new), and 10,000
// echo calls after a warm-up must add none; the same with a policy at the callee that reads a
// request field (so every request is copied into a private message and decided on there).
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <new>
#include <nlohmann/json.hpp>
#include <sstream>

#include "../../daemon/control_server.h"
#include "embedded_daemon.h"
#include "test_app.h"

#include "../counting_new.h"

using namespace mrpc;
using namespace mrpc::testing;

namespace {
void echo_calls(TestApp& client, uint32_t service_id, uint64_t first_id, uint64_t count) {
  for (uint64_t id = first_id; id < first_id + count; ++id) {
    const uint64_t request = client.build_echo("no allocation, please");
    client.submit(client.call_entry(service_id, id, request));
    auto done = client.wait_call_done(id);
    REQUIRE(done.has_value());
    REQUIRE(call_status(*done) == StatusCode::kOk);
    client.release(done->message_offset);
    (void)client.heap().free_message(request);
  }
}

// Counts allocations on the daemon's runtime thread over 10,000 echo calls after 1,000 of
// warm-up.
uint64_t allocations_per_10000_calls(EmbeddedDaemon& daemon, TestApp& client, uint32_t service_id) {
  // The change runs on the daemon's runtime thread: it switches counting on there.
  daemon.daemon
      .change_graphs([](ConnectionId, const CallerIdentity&, ConnectionGraphs) {
        count_allocations_here = true;
      })
      .wait();
  echo_calls(client, service_id, 1, 1000);  // warm-up: pools and tables grow
  const uint64_t before = counted_allocations.load();
  const uint64_t rounds_before = daemon.daemon.stats().runtime_rounds;
  echo_calls(client, service_id, 1001, 10000);
  const uint64_t allocations = counted_allocations.load() - before;
  MESSAGE("allocations on the daemon's runtime thread over 10000 calls: ", allocations, " (",
          daemon.daemon.stats().runtime_rounds - rounds_before, " rounds)");
  return allocations;
}

// One control command, which must succeed.
void control(EmbeddedDaemon& daemon, const std::string& verb, const nlohmann::json& args) {
  auto reply = ControlServer::request(daemon.control_socket(), verb + " " + args.dump());
  REQUIRE_MESSAGE(reply.ok(), reply.status().to_string());
  const auto parsed = nlohmann::json::parse(*reply, nullptr, false);
  REQUIRE_MESSAGE((!parsed.is_discarded() && parsed["ok"] == true), *reply);
}
}  // namespace

TEST_CASE("echo calls through the daemon allocate nothing on its runtime thread after a warm-up") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  auto client = TestApp::connect(daemon.app_socket(), "client");
  CHECK(allocations_per_10000_calls(daemon, *client, server.service_id()) == 0);
}

TEST_CASE(
    "echo calls through a policy that reads a request field at the callee allocate nothing on the "
    "daemon's runtime thread after a warm-up: the private copies it decides on are pooled") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  auto client = TestApp::connect(daemon.app_socket(), "client");
  const std::string path = MRPC_SOURCE_DIR "/bench/policies/field_acl.mpol";
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), "cannot read ", path);
  std::stringstream source;
  source << in.rdbuf();
  control(daemon, "load",
          {{"source", source.str()},
           {"path", path},
           {"proto_paths", {MRPC_SOURCE_DIR "/examples/echo"}}});
  control(daemon, "attach", {{"policy", "field_acl"}});
  CHECK(allocations_per_10000_calls(daemon, *client, server.service_id()) == 0);
  // The policy ran on every call: its request handler passed each one.
  auto metrics = ControlServer::request(daemon.control_socket(), "metrics {}");
  REQUIRE(metrics.ok());
  CHECK(metrics->find("mrpc_policy_calls_total{policy=\"field_acl\",caller=\"client\","
                      "method=\"echo.EchoService.Echo\",event=\"request\",outcome=\"pass\"} "
                      "11000") != std::string::npos);
}
