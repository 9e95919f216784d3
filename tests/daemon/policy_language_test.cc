// Language additions in a running daemon. Request metadata written by a policy:
// `rpc.metadata[k] = v;` adds or replaces a header and `remove rpc.metadata[k];` takes one away,
// and the serving app receives exactly the result, at the caller's side and at the callee's; a
// key the metadata format does not allow is refused (a defined fault: the call goes on without
// it). State that starts from a param: the value given at attach time, else the default.
// Labelled metrics exported as Prometheus text through the control socket equal the calls the
// apps made, by label (with a per-call variable carrying the caller from request to response).
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../../daemon/control_server.h"
#include "embedded_daemon.h"
#include "mrpc/base/random.h"
#include "test_app.h"

using namespace mrpc;
using namespace mrpc::testing;
using nlohmann::json;

namespace {

json control(EmbeddedDaemon& daemon, const std::string& verb, const json& args) {
  auto reply = ControlServer::request(daemon.control_socket(), verb + " " + args.dump());
  REQUIRE_MESSAGE(reply.ok(), reply.status().to_string());
  json parsed = json::parse(*reply, nullptr, false);
  REQUIRE_MESSAGE(!parsed.is_discarded(), "not JSON: ", *reply);
  REQUIRE_MESSAGE(parsed["ok"] == true, parsed.dump());
  return parsed;
}

// One call with `metadata`; returns what the server received.
std::map<std::string, std::string> call_with(TestApp& client, EchoServer& server, uint64_t id,
                                             const shm::MetadataPairs& metadata) {
  const uint64_t request = client.build_echo("hello");
  auto [offset, length] = client.build_metadata(metadata);
  shm::RingEntry entry = client.call_entry(server.service_id(), id, request);
  entry.metadata_offset = offset;
  entry.metadata_length = length;
  client.submit(entry);
  auto done = client.wait_call_done(id);
  REQUIRE(done.has_value());
  CHECK(call_status(*done) == StatusCode::kOk);
  if (done->message_offset != shm::kNoOffset) client.release(done->message_offset);
  (void)client.heap().free_message(request);
  std::map<std::string, std::string> received;
  for (const auto& [key, value] : server.last_metadata()) {
    CHECK_MESSAGE(received.count(key) == 0, "key ", key, " delivered twice");
    received[key] = value;
  }
  return received;
}

}  // namespace

TEST_CASE("a policy sets and removes request metadata and the callee receives exactly that") {
  for (const std::string placement : {"caller", "callee"}) {
    CAPTURE(placement);
    EmbeddedDaemon daemon;
    EchoServer server(daemon.app_socket());
    auto client = TestApp::connect(daemon.app_socket(), "frontend");
    const std::string source = "policy headers {\n  applies to * at " + placement +
                               ";\n"
                               "  on request {\n"
                               "    rpc.metadata[\"x-tenant\"] = rpc.caller.app;\n"
                               "    rpc.metadata[\"x-user\"] = \"policy\";\n"
                               "    remove rpc.metadata[\"authorization\"];\n"
                               "    rpc.metadata[\"Bad Key\"] = \"refused\";\n"
                               "  }\n}\n";
    control(daemon, "load", {{"source", source}, {"path", daemon.dir.path("headers.mpol")}});
    control(daemon, "attach", {{"policy", "headers"}});
    auto received = call_with(*client, server, 1,
                              {{"authorization", "secret"}, {"x-user", "app"}, {"x-keep", "1"}});
    CHECK(received == std::map<std::string, std::string>{
                          {"x-keep", "1"}, {"x-tenant", "frontend"}, {"x-user", "policy"}});
    // Without metadata from the app at all.
    received = call_with(*client, server, 2, {});
    CHECK(received ==
          std::map<std::string, std::string>{{"x-tenant", "frontend"}, {"x-user", "policy"}});
    control(daemon, "detach", {{"name", "headers"}});
    received = call_with(*client, server, 3, {{"authorization", "secret"}});
    CHECK(received == std::map<std::string, std::string>{{"authorization", "secret"}});
  }
}

TEST_CASE("a state that starts from a param starts from the value given at attach time") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  auto client = TestApp::connect(daemon.app_socket(), "frontend");
  const std::string source =
      "policy budget {\n  applies to * at callee;\n  param budget: int = 5;\n"
      "  state left: int = budget;\n"
      "  on request {\n    if left <= 0 {\n      reject(RESOURCE_EXHAUSTED, \"budget spent\");\n"
      "    }\n    left -= 1;\n  }\n}\n";
  control(daemon, "load", {{"source", source}, {"path", daemon.dir.path("budget.mpol")}});
  control(daemon, "attach", {{"policy", "budget"}});
  CHECK(control(daemon, "show", {{"name", "budget"}})["state"]["left"] == "5");
  control(daemon, "detach", {{"name", "budget"}});
  control(daemon, "attach", {{"policy", "budget"}, {"params", {{"budget", 2}}}});
  CHECK(control(daemon, "show", {{"name", "budget"}})["state"]["left"] == "2");
  uint64_t id = 1;
  for (StatusCode want : {StatusCode::kOk, StatusCode::kOk, StatusCode::kResourceExhausted}) {
    client->call_echo(server.service_id(), id, "hello");
    auto done = client->wait_call_done(id);
    REQUIRE(done.has_value());
    CHECK(call_status(*done) == want);
    if (done->message_offset != shm::kNoOffset) client->release(done->message_offset);
    if (done->detail_offset != shm::kNoOffset) client->release(done->detail_offset);
    ++id;
  }
  CHECK(control(daemon, "show", {{"name", "budget"}})["state"]["left"] == "0");
}

namespace {

// The sample lines of a Prometheus text exposition whose metric name and first labels start with
// `prefix` (comments skipped), as "name{labels} value" strings, sorted.
std::vector<std::string> samples(const std::string& text, const std::string& prefix) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(at, end - at);
    at = end + 1;
    if (line.rfind(prefix, 0) == 0) out.push_back(line);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("prometheus text from the control socket equals the calls made by label") {
  // Two client apps call through a callee policy that counts every call by caller and status
  // (from a per-call variable the request handler set), by method on request, and observes a
  // labelled histogram; some of beta's calls are denied by the policy itself. The counts the
  // apps saw, by (app, status), must be exactly the exported series.
  uint64_t seed = 20261202;
  if (const char* env = std::getenv("MRPC_TEST_SEED")) seed = std::strtoull(env, nullptr, 10);
  INFO("seed " << seed << " (rerun with MRPC_TEST_SEED=" << seed << ")");
  SeededRandom rng(seed);
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  std::map<std::string, std::unique_ptr<TestApp>> clients;
  for (const char* app : {"alpha", "beta"})
    clients[app] = TestApp::connect(daemon.app_socket(), app);
  const std::string source = R"(
policy counted {
  applies to * at callee;
  state calls: counter[label caller, label code];
  state requests: counter[label method];
  state latency: histogram[1h, label caller];
  state unlabelled: counter;
  call who: string;
  on request {
    who = rpc.caller.app;
    requests.add(1, method = rpc.method);
    unlabelled += 1;
    if rpc.metadata["deny"] == "yes" {
      calls.add(1, caller = who, code = PERMISSION_DENIED);
      reject(PERMISSION_DENIED, "denied by the policy");
    }
  }
  on response {
    calls.add(1, caller = who, code = rpc.status);
    observe(latency, rpc.latency, caller = who);
  }
}
)";
  control(daemon, "load", {{"source", source}, {"path", daemon.dir.path("counted.mpol")}});
  control(daemon, "attach", {{"policy", "counted"}});

  std::map<std::pair<std::string, std::string>, int> seen;  // (app, status name) -> calls
  std::map<std::string, int> ok_by_app;
  const int calls = 150 + static_cast<int>(rng.next_u64() % 100);
  uint64_t id = 1;
  for (int i = 0; i < calls; ++i, ++id) {
    const std::string app = rng.next_u64() % 3 == 0 ? "alpha" : "beta";
    const bool deny = app == "beta" && rng.next_u64() % 4 == 0;
    TestApp& client = *clients[app];
    const uint64_t request = client.build_echo("hello");
    shm::RingEntry entry = client.call_entry(server.service_id(), id, request);
    if (deny) {
      auto [offset, length] = client.build_metadata({{"deny", "yes"}});
      entry.metadata_offset = offset;
      entry.metadata_length = length;
    }
    client.submit(entry);
    auto done = client.wait_call_done(id);
    REQUIRE(done.has_value());
    const StatusCode code = call_status(*done);
    CHECK(code == (deny ? StatusCode::kPermissionDenied : StatusCode::kOk));
    ++seen[{app, std::string(status_code_name(code))}];
    if (code == StatusCode::kOk) ++ok_by_app[app];
    if (done->message_offset != shm::kNoOffset) client.release(done->message_offset);
    if (done->detail_offset != shm::kNoOffset) client.release(done->detail_offset);
    (void)client.heap().free_message(request);
  }

  auto reply = ControlServer::request(daemon.control_socket(), "metrics {}");
  REQUIRE_MESSAGE(reply.ok(), reply.status().to_string());
  const std::string& text = *reply;
  INFO(text);
  std::vector<std::string> want_calls;
  for (const auto& [key, n] : seen)
    want_calls.push_back(fmt::format(
        "mrpc_policy_counter{{policy=\"counted\",state=\"calls\",caller=\"{}\",code=\"{}\"}} {}",
        key.first, key.second, n));
  std::sort(want_calls.begin(), want_calls.end());
  CHECK(samples(text, "mrpc_policy_counter{policy=\"counted\",state=\"calls\",") == want_calls);
  CHECK(samples(text, "mrpc_policy_counter{policy=\"counted\",state=\"requests\",") ==
        std::vector<std::string>{fmt::format(
            "mrpc_policy_counter{{policy=\"counted\",state=\"requests\",method=\"Echo\"}} {}",
            calls)});
  CHECK(samples(text, "mrpc_policy_counter{policy=\"counted\",state=\"unlabelled\"}") ==
        std::vector<std::string>{fmt::format(
            "mrpc_policy_counter{{policy=\"counted\",state=\"unlabelled\"}} {}", calls)});
  std::vector<std::string> want_counts;
  for (const auto& [app, n] : ok_by_app)
    want_counts.push_back(fmt::format(
        "mrpc_policy_histogram_count{{policy=\"counted\",state=\"latency\",caller=\"{}\"}} {}", app,
        n));
  CHECK(samples(text, "mrpc_policy_histogram_count{policy=\"counted\",state=\"latency\",") ==
        want_counts);
  // Every OK call took less than the first bound (1h).
  for (const auto& [app, n] : ok_by_app) {
    CHECK(
        text.find(fmt::format("mrpc_policy_histogram_bucket{{policy=\"counted\",state=\"latency\","
                              "caller=\"{}\",le=\"3600\"}} {}\n",
                              app, n)) != std::string::npos);
  }
  // The TYPE line is there once per metric family.
  CHECK(text.find("# TYPE mrpc_policy_counter counter\n") != std::string::npos);
}
