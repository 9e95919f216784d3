// Policies on calls that cross hosts (tests/integration/two_hosts.h: two mrpcd processes in two
// network namespaces joined by a veth pair where the machine allows, else 127.0.0.1/127.0.0.2):
// compiled .mpol policies attached live through each daemon's control socket act on calls from
// an app on host A to the echo server behind host B. At B (the callee) a policy reads the
// request a peer daemon sent (decoded into the server's receive region, where the delivery
// would decode it), its metadata, and rewrites its strings; at A (the caller) a policy rewrites
// the request and sets a header, and both cross. Registered twice: 1 and 3 runtime threads per
// daemon (SHARDED).
#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "echo.mrpc.h"
#include "echo_host.h"
#include "two_hosts.h"

using namespace std::chrono_literals;
using mrpc::StatusCode;
using nlohmann::json;

namespace {

const std::string kEchoProtos = MRPC_SOURCE_DIR "/examples/echo";

// One control command to `host`'s daemon; the reply parsed, required to say ok.
json must(mrpc::testing::LocalHost& host, const std::string& verb, const json& args) {
  auto reply = host.control(verb + " " + args.dump());
  REQUIRE_MESSAGE(reply.ok(), reply.status().to_string());
  json parsed = json::parse(*reply, nullptr, false);
  REQUIRE_MESSAGE(!parsed.is_discarded(), "not JSON: ", *reply);
  REQUIRE_MESSAGE(parsed["ok"] == true, verb, ": ", parsed.dump());
  return parsed;
}

void load(mrpc::testing::LocalHost& host, const std::string& name, const std::string& source) {
  must(host, "load",
       {{"source", "import proto \"echo.proto\";\n" + source},
        {"path", kEchoProtos + "/" + name + ".mpol"},
        {"proto_paths", {kEchoProtos}}});
}

json stats(mrpc::testing::LocalHost& host) {
  auto text = host.control("stats");
  REQUIRE_MESSAGE(text.ok(), text.status().to_string());
  return json::parse(*text);
}

// One echo call of `text` (with the header `stamp` unless empty): its status and reply text.
std::pair<StatusCode, std::string> echo_call(const std::shared_ptr<mrpc::Channel>& channel,
                                             const std::string& text,
                                             const std::string& stamp = {}) {
  echo::EchoService::Client client(channel);
  auto request = echo::EchoRequest::create(channel->heap());
  request.set_text(text);
  mrpc::CallOptions options;
  options.timeout = 10s;
  if (!stamp.empty()) options.metadata.add("x-stamp", stamp);
  auto reply = client.Echo(std::move(request), options);
  if (!reply.ok()) return {reply.status().code(), reply.status().message()};
  return {StatusCode::kOk, std::string(reply->text())};
}

// The policies below, attached at both daemons while host A's daemon sends echo requests to B in
// `encoding` ("protobuf" or "native"): each phase checks the calls' outcomes and replies.
void policies_across_hosts(const std::string& encoding) {
  mrpc::testing::EchoAcrossHosts setup("cross_host_client", {}, encoding);
  auto& a = setup.hosts.a();
  auto& b = setup.hosts.b();
  REQUIRE(echo_call(setup.channel, "warm-up").first == StatusCode::kOk);
  json before;
  for (int attempt = 0; attempt < 500; ++attempt) {  // the warm-up's releases reach B's daemon
    if (attempt > 0) std::this_thread::sleep_for(10ms);
    before = stats(b);
    if (before.at("receive_bytes_in_use").get<uint64_t>() == 0) break;
  }
  load(a, "stamp",
       "policy stamp {\n  applies to echo.EchoService.Echo at caller;\n"
       "  on request {\n    rpc.metadata[\"x-stamp\"] = \"from-a\";\n"
       "    req.text = \"[\" + req.text + \"]\";\n  }\n}\n");
  load(
      b, "callee",
      "policy gate {\n  applies to echo.EchoService.Echo at callee;\n"
      "  on request {\n"
      "    if rpc.caller.host != \"host-a\" { reject(UNAUTHENTICATED, \"who?\"); }\n"
      "    if rpc.metadata[\"x-stamp\"] != \"from-a\" { reject(UNAUTHENTICATED, \"unstamped\"); }\n"
      "    if req.text == \"[secret]\" { reject(PERMISSION_DENIED, \"no secrets\"); }\n  }\n}\n"
      "policy mark {\n  applies to echo.EchoService.Echo at callee;\n"
      "  on request {\n    req.text = req.text + \"!\";\n  }\n"
      "  on response {\n    resp.text = \"re: \" + resp.text;\n  }\n}\n"
      "policy tally {\n  applies to echo.EchoService.Echo at callee;\n"
      "  state counted: int;\n"
      "  on response {\n"
      "    if req.text == \"count\" && rpc.metadata[\"x-stamp\"] == \"from-a\" { counted += 1; }\n"
      "  }\n}\n");

  // Alone at B, a response handler that reads the request and its metadata: the peer's request
  // and metadata block are kept for it (the delivery consumes them), though the policy has no
  // request handler.
  must(b, "attach", {{"policy", "tally"}});
  for (int i = 0; i < 7; ++i) {
    CHECK(echo_call(setup.channel, "count", "from-a").first == StatusCode::kOk);
    CHECK(echo_call(setup.channel, "count").first == StatusCode::kOk);
    CHECK(echo_call(setup.channel, "other", "from-a").first == StatusCode::kOk);
  }
  CHECK(must(b, "show", {{"name", "tally"}})["state"]["counted"] == "7");
  must(b, "detach", {{"name", "tally"}});

  // The metadata check reads the header the app sent, which came in the peer's frame; the
  // caller's host is the peer daemon's name.
  must(b, "attach", {{"policy", "gate"}});
  CHECK(echo_call(setup.channel, "hello", "from-a") ==
        std::make_pair(StatusCode::kOk, std::string("hello")));
  CHECK(echo_call(setup.channel, "hello").first == StatusCode::kUnauthenticated);
  CHECK(echo_call(setup.channel, "hello", "forged").first == StatusCode::kUnauthenticated);

  // A's policy rewrites the request and sets the header (replacing the app's): both reach B.
  must(a, "attach", {{"policy", "stamp"}});
  for (int i = 0; i < 20; ++i) {
    CHECK(echo_call(setup.channel, "hello " + std::to_string(i)) ==
          std::make_pair(StatusCode::kOk, "[hello " + std::to_string(i) + "]"));
    CHECK(echo_call(setup.channel, "secret", "forged").first == StatusCode::kPermissionDenied);
  }

  // String writes at the callee on the peer's request (some past the first 1 KiB try) and on the
  // server's response, which goes back over TCP from its rewritten copy: alone (the writer
  // decodes the peer's request itself), then behind the field ACL (which decoded it first).
  must(b, "detach", {{"name", "gate"}});
  must(b, "attach", {{"policy", "mark"}});
  for (int i = 0; i < 30; ++i) {
    const std::string text(static_cast<size_t>(i) * 70, 'x');
    CHECK(echo_call(setup.channel, text) == std::make_pair(StatusCode::kOk, "re: [" + text + "]!"));
  }
  must(b, "attach", {{"policy", "gate"}, {"anchor", "first"}});
  for (int i = 0; i < 10; ++i) {
    const std::string text(static_cast<size_t>(i) * 150, 'y');
    CHECK(echo_call(setup.channel, text) == std::make_pair(StatusCode::kOk, "re: [" + text + "]!"));
  }
  CHECK(echo_call(setup.channel, "secret").first == StatusCode::kPermissionDenied);
  for (const char* name : {"gate", "mark"}) {
    const json shown = must(b, "show", {{"name", name}});
    for (const auto& series : shown["calls"])
      CHECK_MESSAGE(series["outcome"] != "unapplied", series.dump());
  }
  must(b, "detach", {{"name", "mark"}});
  must(b, "detach", {{"name", "gate"}});
  must(a, "detach", {{"name", "stamp"}});
  CHECK(echo_call(setup.channel, "plain") == std::make_pair(StatusCode::kOk, std::string("plain")));
  // Nothing of the calls is left at B: no call, no block of the server's receive region.
  json after;
  for (int attempt = 0; attempt < 500; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(10ms);
    after = stats(b);
    if (after.at("receive_bytes_in_use") == before.at("receive_bytes_in_use") &&
        after.at("calls_in_flight").get<uint64_t>() == 0)
      break;
  }
  CHECK(after.at("calls_in_flight").get<uint64_t>() == 0);
  CHECK(after.at("receive_bytes_in_use") == before.at("receive_bytes_in_use"));
  CHECK(after.at("tcp").at("bad_frames").get<uint64_t>() == 0);
  CHECK(after.at("tcp").at("native_refused").get<uint64_t>() == 0);
  // The requests went in the encoding asked for (each one, as no call was refused for it).
  CHECK((stats(a).at("tcp").at("requests_sent_native").get<uint64_t>() > 0) ==
        (encoding == "native"));
}

}  // namespace

TEST_CASE(
    "policies act on calls that cross hosts in the protobuf encoding: at the callee a field ACL, "
    "a metadata check, string rewrites and a response handler read the peer's request; at the "
    "caller a rewrite and a header cross") {
  policies_across_hosts("protobuf");
}

TEST_CASE("the same policies act the same on calls that cross hosts in the native encoding") {
  policies_across_hosts("native");
}
