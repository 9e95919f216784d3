// Language additions in a running daemon. Request metadata written by a policy:
// `rpc.metadata[k] = v;` adds or replaces a header and `remove rpc.metadata[k];` takes one away,
// and the serving app receives exactly the result, at the caller's side and at the callee's; a
// key the metadata format does not allow is refused (a defined fault: the call goes on without
// it). State that starts from a param: the value given at attach time, else the default.
#include <doctest/doctest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "../../daemon/control_server.h"
#include "embedded_daemon.h"
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
