// Time of check is time of use: a policy that reads a request's fields (or its metadata) decides
// on a daemon-private copy, and that copy is what the callee gets. A hostile raw app keeps
// rewriting a field of requests it has already submitted, flipping it between an allowed and a
// denied value from another thread; no denied value may reach the server, in 100,000 tries.
// Calls of requests the flipper leaves alone show the policy's effect exactly (all denied, or all
// echoed), so the test also proves the policy ran.
#include <doctest/doctest.h>

#include <fmt/format.h>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "../../daemon/control_server.h"
#include "embedded_daemon.h"
#include "mrpc/message/layout.h"
#include "test_app.h"

using namespace std::chrono_literals;
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

void attach(EmbeddedDaemon& daemon, const std::string& name, const std::string& source) {
  const std::string dir = MRPC_SOURCE_DIR "/examples/echo";
  control(daemon, "load",
          {{"source", source}, {"path", dir + "/" + name + ".mpol"}, {"proto_paths", {dir}}});
  control(daemon, "attach", {{"policy", name}});
}

// Tries: MRPC_TOCTOU_TRIES overrides (a quick local run), 100,000 by default.
uint64_t tries() {
  const char* set = std::getenv("MRPC_TOCTOU_TRIES");
  return set != nullptr ? std::strtoull(set, nullptr, 10) : 100'000;
}

// Flips `bytes` places of the app's heap between `allowed` and `denied` (same length) until
// stopped, one byte store at a time (torn mixes included), as fast as it can.
class Flipper {
 public:
  Flipper(std::vector<std::byte*> places, std::string allowed, std::string denied)
      : places_(std::move(places)), allowed_(std::move(allowed)), denied_(std::move(denied)) {
    REQUIRE(allowed_.size() == denied_.size());
    thread_ = std::thread([this] {
      bool deny = false;
      while (!stop_.load(std::memory_order_relaxed)) {
        const std::string& text = deny ? denied_ : allowed_;
        for (std::byte* place : places_)
          for (size_t i = 0; i < text.size(); ++i)
            std::atomic_ref<std::byte>(place[i]).store(static_cast<std::byte>(text[i]),
                                                       std::memory_order_relaxed);
        deny = !deny;
        ++flips_;
      }
    });
  }
  ~Flipper() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint64_t flips() const { return flips_.load(); }

 private:
  std::vector<std::byte*> places_;
  std::string allowed_, denied_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> flips_{0};
  std::thread thread_;
};

// What the calls of one kind of slot ended with.
struct Tally {
  uint64_t ok = 0, denied = 0, other = 0;
  uint64_t denied_delivered = 0;  // OK calls whose echo (what the server got) is denied
};

// Slots 0..63, as the daemon's call table counts them (call id mod 64): the first `flipped` hold
// requests the flipper rewrites, then `fixed_denied` whose text is always the denied value, the
// rest always allowed. Each slot's request (and metadata block) is built once and submitted again
// for every call of the slot. `echo_denied(call)`: whether an OK call's echo shows the denied
// value reached the server.
struct HostileRun {
  static constexpr uint64_t kSlots = 64;
  uint64_t flipped = 48;
  uint64_t fixed_denied = 8;
  Tally flipped_calls, denied_calls, allowed_calls;

  // Keeps kSlots calls in flight until `total` have started and every one has ended:
  // `submit(id)` posts call `id` (with its slot's request); each ended call counts in its slot's
  // Tally, and `on_ok(tally, done)` looks at an OK call's reply before it is released.
  template <typename Submit, typename OnOk>
  void run_calls(TestApp& mallory, uint64_t total, Submit submit, OnOk on_ok) {
    uint64_t started = 0, ended = 0;
    auto start = [&](uint64_t id) {
      submit(id);
      ++started;
    };
    for (uint64_t id = 1; id <= kSlots && started < total; ++id) start(id);
    while (ended < started) {
      auto done = mallory.next_completion(30s);
      REQUIRE_MESSAGE(done.has_value(), "a call never ended (", started - ended, " waiting)");
      if (done->kind != shm::EntryKind::kCallDone) continue;
      ++ended;
      const uint64_t slot = (done->call_id - 1) % kSlots;
      Tally& tally = slot < flipped                  ? flipped_calls
                     : slot < flipped + fixed_denied ? denied_calls
                                                     : allowed_calls;
      const StatusCode code = call_status(*done);
      if (code == StatusCode::kOk) {
        ++tally.ok;
        on_ok(tally, *done);
        mallory.release(done->message_offset);
      } else {
        ++(code == StatusCode::kPermissionDenied ? tally.denied : tally.other);
        if (done->detail_offset != shm::kNoOffset) mallory.release(done->detail_offset);
      }
      if (started < total) start(done->call_id + kSlots);
    }
  }
};

// 100,000 calls of a client flipping its requests' text under an ACL at `placement`.
void request_flips(const std::string& placement) {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  auto mallory = TestApp::connect(daemon.app_socket(), "mallory");
  attach(daemon, "deny_secret",
         "import proto \"echo.proto\";\n"
         "policy deny_secret {\n  applies to echo.EchoService.Echo at " +
             placement +
             ";\n"
             "  on request {\n    if req.text == \"secret\" { reject(PERMISSION_DENIED, "
             "\"denied\"); }\n  }\n}\n");

  HostileRun run;
  std::vector<uint64_t> requests(HostileRun::kSlots);
  std::vector<std::byte*> flipped_texts;
  for (uint64_t slot = 0; slot < HostileRun::kSlots; ++slot) {
    const bool denied = slot >= run.flipped && slot < run.flipped + run.fixed_denied;
    requests[slot] = mallory->build_echo(denied ? "secret" : "public");
    if (slot < run.flipped) {
      RegionRef text{};
      std::memcpy(&text, mallory->heap_region().data() + requests[slot] + mallory->text_offset(),
                  sizeof text);
      flipped_texts.push_back(mallory->heap_region().data() + text.offset);
    }
  }
  Flipper flipper(flipped_texts, "public", "secret");

  const uint64_t total = tries();
  run.run_calls(
      *mallory, total,
      [&](uint64_t id) {
        mallory->submit(mallory->call_entry(server.service_id(), id,
                                            requests[(id - 1) % HostileRun::kSlots], 30s));
      },
      [&](Tally& tally, const shm::RingEntry& done) {
        if (mallory->received_text(done.message_offset) == "secret") ++tally.denied_delivered;
      });
  flipper.stop();
  MESSAGE(
      fmt::format("at {}: {} calls, {} flips; rewritten requests: {} passed, {} denied, {} "
                  "other; denied values delivered: {}",
                  placement, total, flipper.flips(), run.flipped_calls.ok, run.flipped_calls.denied,
                  run.flipped_calls.other, run.flipped_calls.denied_delivered));
  CHECK(run.flipped_calls.denied_delivered == 0);
  CHECK(run.flipped_calls.other == 0);
  // The policy ran on every call: fixed denied texts were all refused, fixed allowed ones echoed.
  CHECK(run.denied_calls.ok == 0);
  CHECK(run.denied_calls.other == 0);
  CHECK(run.denied_calls.denied > 0);
  CHECK(run.allowed_calls.denied == 0);
  CHECK(run.allowed_calls.other == 0);
  CHECK(run.allowed_calls.ok > 0);
  CHECK(run.allowed_calls.denied_delivered == 0);
  CHECK(daemon.daemon.stats().calls_in_flight == 0);
}

}  // namespace

TEST_CASE(
    "an app that rewrites a denied request field after submitting never gets it past a "
    "field-reading acl at the caller in 100000 tries") {
  request_flips("caller");
}

TEST_CASE(
    "an app that rewrites a denied request field after submitting never gets it past a "
    "field-reading acl at the callee in 100000 tries") {
  request_flips("callee");
}

TEST_CASE(
    "a server that rewrites a denied response field after replying never gets it past a "
    "response-reading policy at the callee in 100000 tries") {
  EmbeddedDaemon daemon;
  auto client = TestApp::connect(daemon.app_socket(), "client");
  // The hostile server: a raw app whose 16 responses are built once and flipped between an
  // allowed and a denied text the whole time; each call is answered with the next of them (the
  // daemon reads a response before saying kReplyDone; this server does not wait for that).
  auto mallory = TestApp::connect(daemon.app_socket(), "mallory");
  auto registration = mallory->register_service(kEchoService, true);
  REQUIRE(registration.status == StatusCode::kOk);
  attach(daemon, "deny_secret_reply",
         "import proto \"echo.proto\";\n"
         "policy deny_secret_reply {\n  applies to echo.EchoService.Echo at callee;\n"
         "  on response {\n    if resp.text == \"secret\" { reject(PERMISSION_DENIED, "
         "\"denied\"); }\n  }\n}\n");
  constexpr size_t kResponses = 16;
  std::vector<uint64_t> responses;
  std::vector<std::byte*> texts;
  for (size_t i = 0; i < kResponses; ++i) {
    responses.push_back(mallory->build_echo("public"));
    RegionRef text{};
    std::memcpy(&text, mallory->heap_region().data() + responses.back() + mallory->text_offset(),
                sizeof text);
    texts.push_back(mallory->heap_region().data() + text.offset);
  }
  Flipper flipper(texts, "public", "secret");
  std::atomic<bool> stop{false};
  std::thread serving([&] {
    size_t next = 0;
    while (!stop) {
      auto entry = mallory->next_completion(5ms);
      if (!entry || entry->kind != shm::EntryKind::kIncomingCall) continue;
      shm::RingEntry reply{};
      reply.kind = shm::EntryKind::kReply;
      reply.call_id = entry->call_id;
      reply.message_offset = responses[next++ % kResponses];
      reply.metadata_offset = shm::kNoOffset;
      reply.detail_offset = shm::kNoOffset;
      mallory->submit(reply);
    }
  });

  const uint64_t total = tries();
  uint64_t next_id = 1;
  Tally tally;
  std::unordered_map<uint64_t, uint64_t> requests;
  uint64_t started = 0;
  auto start = [&](uint64_t id) {
    const uint64_t request = client->build_echo("question");
    requests[id] = request;
    client->submit(client->call_entry(registration.service_id, id, request, 30s));
    ++started;
  };
  for (; next_id <= HostileRun::kSlots && started < total; ++next_id) start(next_id);
  while (!requests.empty()) {
    auto done = client->next_completion(30s);
    REQUIRE_MESSAGE(done.has_value(), "a call never ended (", requests.size(), " waiting)");
    if (done->kind != shm::EntryKind::kCallDone) continue;
    auto request = requests.find(done->call_id);
    REQUIRE(request != requests.end());
    (void)client->heap().free_message(request->second);
    requests.erase(request);
    const StatusCode code = call_status(*done);
    if (code == StatusCode::kOk) {
      ++tally.ok;
      if (client->received_text(done->message_offset) == "secret") ++tally.denied_delivered;
      client->release(done->message_offset);
    } else {
      ++(code == StatusCode::kPermissionDenied ? tally.denied : tally.other);
      if (done->detail_offset != shm::kNoOffset) client->release(done->detail_offset);
    }
    if (started < total) start(done->call_id + HostileRun::kSlots);
  }
  stop = true;
  serving.join();
  flipper.stop();
  MESSAGE(fmt::format(
      "{} calls, {} flips: {} passed, {} denied, {} other; denied values "
      "delivered: {}",
      total, flipper.flips(), tally.ok, tally.denied, tally.other, tally.denied_delivered));
  CHECK(tally.denied_delivered == 0);
  CHECK(tally.other == 0);
  CHECK(tally.ok + tally.denied == total);
  CHECK(daemon.daemon.stats().calls_in_flight == 0);
}

TEST_CASE(
    "an app that rewrites a denied metadata value after submitting never gets it past a "
    "metadata-reading acl in 100000 tries") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  server.watch_metadata("role", "admin");
  auto mallory = TestApp::connect(daemon.app_socket(), "mallory");
  attach(daemon, "deny_admin",
         "policy deny_admin {\n  applies to * at caller;\n"
         "  on request {\n    if rpc.metadata[\"role\"] == \"admin\" { "
         "reject(PERMISSION_DENIED, \"denied\"); }\n  }\n}\n");

  HostileRun run;
  struct Request {
    uint64_t message;
    std::pair<uint64_t, uint32_t> metadata;
  };
  std::vector<Request> requests(HostileRun::kSlots);
  std::vector<std::byte*> flipped_values;
  for (uint64_t slot = 0; slot < HostileRun::kSlots; ++slot) {
    const bool denied = slot >= run.flipped && slot < run.flipped + run.fixed_denied;
    const std::string role = denied ? "admin" : "guest";
    requests[slot].message = mallory->build_echo("text");
    requests[slot].metadata = mallory->build_metadata({{"role", role}});
    if (slot < run.flipped) {
      // The block is u32 count, then u32 key size, u32 value size, key bytes, value bytes.
      std::byte* block = mallory->heap_region().data() + requests[slot].metadata.first;
      REQUIRE(std::memcmp(block + 12 + 4, role.data(), role.size()) == 0);
      flipped_values.push_back(block + 12 + 4);
    }
  }
  Flipper flipper(flipped_values, "guest", "admin");

  const uint64_t total = tries();
  run.run_calls(
      *mallory, total,
      [&](uint64_t id) {
        const Request& request = requests[(id - 1) % HostileRun::kSlots];
        shm::RingEntry entry = mallory->call_entry(server.service_id(), id, request.message, 30s);
        entry.metadata_offset = request.metadata.first;
        entry.metadata_length = request.metadata.second;
        mallory->submit(entry);
      },
      [](Tally&, const shm::RingEntry&) {});
  flipper.stop();
  MESSAGE(
      fmt::format("{} calls, {} flips; rewritten metadata: {} passed, {} denied, {} other; "
                  "calls the server saw with role=admin: {}",
                  total, flipper.flips(), run.flipped_calls.ok, run.flipped_calls.denied,
                  run.flipped_calls.other, server.watched_calls()));
  CHECK(server.watched_calls() == 0);
  CHECK(run.flipped_calls.other == 0);
  CHECK(run.denied_calls.ok == 0);
  CHECK(run.denied_calls.denied > 0);
  CHECK(run.allowed_calls.ok > 0);
  CHECK(run.allowed_calls.denied + run.allowed_calls.other == 0);
  CHECK(daemon.daemon.stats().calls_in_flight == 0);
}
