// Policies attached, upgraded and detached in a running daemon while apps call: every call ends
// exactly once, apps that connect later get the policies attached then, an upgrade carries the
// policy's state, and named placements that would put an operator where no call reaches it are
// refused.
#include <doctest/doctest.h>

#include <fmt/ranges.h>
#include <atomic>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "../../daemon/control_server.h"
#include "embedded_daemon.h"
#include "mrpc/dataflow/operator.h"
#include "test_app.h"

using namespace std::chrono_literals;
using namespace mrpc;
using namespace mrpc::testing;

namespace {

// Counts the requests and the replies it sees and tags requests ("counted" metadata) so the
// server can count them too; its request count is its state, carried by upgrades.
class CountingPolicy final : public Operator {
 public:
  std::string_view name() const override { return "counting"; }
  void on_requests(RpcBatch& batch, Output&) override {
    for (auto& rpc : batch) {
      rpc->metadata.push_back({"counted", "1"});
      ++count;
    }
  }
  void on_replies(RpcBatch& batch, Output&) override {
    replies += batch.size();
    if (replaced) replies_after_replaced += batch.size();
  }
  void detach(Output&, Output&) override { ++detached; }
  OperatorState export_state() const override {
    exported = count.load();
    return {{"count", exported.load()}};
  }
  void import_state(const OperatorState& state) override {
    if (auto it = state.find("count"); it != state.end())
      if (auto* value = std::get_if<int64_t>(&it->second)) imported = count = *value;
  }
  std::atomic<int64_t> count{0};    // requests: what it imported plus what it saw
  std::atomic<int64_t> replies{0};  // replies it saw
  std::atomic<int> detached{0};
  std::atomic<bool> replaced{false};  // a newer version took over new calls
  std::atomic<int64_t> replies_after_replaced{0};
  int64_t imported = 0;                      // what it started from
  mutable std::atomic<int64_t> exported{0};  // its count when an upgrade took its state
};

// Makes CountingPolicy instances, one per app graph, and remembers them all.
struct CountingFactory {
  std::mutex mutex;
  std::vector<std::shared_ptr<CountingPolicy>> made;
  OperatorFactory factory() {
    return [this](const CallerIdentity&) {
      auto policy = std::make_shared<CountingPolicy>();
      std::lock_guard lock(mutex);
      made.push_back(policy);
      return policy;
    };
  }
  // Makes the versions of one upgrade; the versions made before it are marked replaced (an
  // upgrade makes them with every shard parked: before any run of either version).
  OperatorFactory upgrade_factory() {
    std::lock_guard guard(mutex);
    return [this, before = made.size()](const CallerIdentity&) {
      auto policy = std::make_shared<CountingPolicy>();
      std::lock_guard lock(mutex);
      for (size_t i = 0; i < before; ++i) made[i]->replaced = true;
      made.push_back(policy);
      return policy;
    };
  }
  // Requests counted by the instances themselves (not carried in from an older version).
  int64_t seen() {
    std::lock_guard lock(mutex);
    int64_t total = 0;
    for (const auto& policy : made) total += policy->count - policy->imported;
    return total;
  }
};

std::vector<std::string> egress_of(EmbeddedDaemon& daemon, const std::string& app) {
  auto listing = ControlServer::request(daemon.control_socket(), "connections");
  REQUIRE(listing.ok());
  const nlohmann::json parsed = nlohmann::json::parse(*listing);
  for (const auto& connection : parsed["connections"])
    if (connection["app"] == app) return connection["egress"].get<std::vector<std::string>>();
  return {};
}

}  // namespace

TEST_CASE("attach, upgrade and detach 1000 times under load: no call lost or doubled, state kept") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  CountingFactory counting;
  constexpr uint64_t kCallsPerClient = 60000;
  std::vector<std::unique_ptr<TestApp>> clients;
  for (int i = 0; i < 2; ++i)
    clients.push_back(TestApp::connect(daemon.app_socket(), "client-" + std::to_string(i)));
  std::atomic<uint64_t> ok{0};
  std::vector<std::thread> load;
  for (auto& client : clients)
    load.emplace_back([&, app = client.get()] {
      uint64_t first_id = 0;
      ok += echo_load(*app, server.service_id(), first_id, kCallsPerClient, 10s).ok;
    });

  uint64_t generation = daemon.daemon.policy_generation();
  uint64_t carried_checks = 0;
  for (int cycle = 0; cycle < 1000; ++cycle) {
    size_t first_attached;
    {
      std::lock_guard lock(counting.mutex);
      first_attached = counting.made.size();
    }
    PolicyEntry policy{"counting", Placement{}, counting.factory()};
    policy.placement.anchor = cycle % 2 ? Placement::Anchor::kFirst : Placement::Anchor::kLast;
    auto attached = daemon.daemon.attach_policy(std::move(policy));
    REQUIRE_MESSAGE(attached.ok(), attached.status().to_string());
    CHECK(*attached == ++generation);
    if (cycle % 100 == 0) {  // an app that connects now gets the policy too
      auto late = TestApp::connect(daemon.app_socket(), "late-" + std::to_string(cycle));
      CHECK(egress_of(daemon, "late-" + std::to_string(cycle)) ==
            std::vector<std::string>{"counting"});
    }
    std::vector<std::shared_ptr<CountingPolicy>> before;
    {
      std::lock_guard lock(counting.mutex);
      before = counting.made;
    }
    auto upgraded = daemon.daemon.upgrade_policy("counting", counting.factory());
    REQUIRE(upgraded.ok());
    CHECK(*upgraded == ++generation);
    {  // the new versions started from their predecessors' counts at the switch
      std::lock_guard lock(counting.mutex);
      int64_t predecessors = 0, imported = 0;
      for (size_t i = first_attached; i < before.size(); ++i) predecessors += before[i]->exported;
      for (size_t i = before.size(); i < counting.made.size(); ++i)
        imported += counting.made[i]->imported;
      CHECK(imported == predecessors);
      carried_checks += predecessors > 0;
    }
    auto detached = daemon.daemon.detach_policy("counting");
    REQUIRE(detached.ok());
    CHECK(*detached == ++generation);
  }
  for (auto& thread : load) thread.join();
  const uint64_t total = 2 * kCallsPerClient;
  const uint64_t lost = total - ok;
  MESSAGE("calls: ", total, ", ok: ", ok.load(), ", lost: ", lost,
          ", duplicated: 0 (a second kCallDone fails the test); requests counted by the policy: ",
          counting.seen(), ", tagged at the server: ", server.tagged_calls());
  CHECK(lost == 0);
  CHECK(counting.seen() == static_cast<int64_t>(server.tagged_calls()));
  CHECK(carried_checks > 0);
  CHECK(daemon.daemon.stats().calls_in_flight == 0);
}

TEST_CASE("an upgrade carries a policy's state to its new version") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  auto client = TestApp::connect(daemon.app_socket(), "client");
  CountingFactory counting;
  REQUIRE(daemon.daemon.attach_policy({"counting", Placement{}, counting.factory()}).ok());
  for (uint64_t id = 1; id <= 25; ++id) check_echo_works(*client, server.service_id(), id);
  REQUIRE(daemon.daemon.upgrade_policy("counting", counting.factory()).ok());
  for (uint64_t id = 26; id <= 40; ++id) check_echo_works(*client, server.service_id(), id);
  std::lock_guard lock(counting.mutex);
  // One instance per app graph: the client's, the server's; the client's new version has 40.
  int64_t highest = 0;
  for (const auto& policy : counting.made) highest = std::max<int64_t>(highest, policy->count);
  CHECK(highest == 40);
}

TEST_CASE("placements are named, and one where no call would reach the operator is refused") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  auto client = TestApp::connect(daemon.app_socket(), "client");
  CountingFactory counting;
  auto make = counting.factory();
  Placement last;
  REQUIRE(daemon.daemon.attach_policy({"b", last, make}).ok());
  Placement first{GraphSide::kEgress, Placement::Anchor::kFirst, "", ""};
  REQUIRE(daemon.daemon.attach_policy({"a", first, make}).ok());
  Placement after_a{GraphSide::kEgress, Placement::Anchor::kAfter, "a", ""};
  REQUIRE(daemon.daemon.attach_policy({"a2", after_a, make}).ok());
  const auto order = egress_of(daemon, "client");
  const std::vector<std::string> expected{"a", "a2", "b"};
  CHECK_MESSAGE(order == expected, fmt::format("{}", fmt::join(order, ",")));

  Placement before_missing{GraphSide::kEgress, Placement::Anchor::kBefore, "nope", ""};
  auto refused = daemon.daemon.attach_policy({"c", before_missing, make});
  CHECK(refused.status().code() == StatusCode::kNotFound);
  Placement other_side{GraphSide::kIngress, Placement::Anchor::kAfter, "a", ""};
  CHECK(daemon.daemon.attach_policy({"d", other_side, make}).status().code() ==
        StatusCode::kNotFound);
  Placement only_client{GraphSide::kEgress, Placement::Anchor::kLast, "", "client"};
  REQUIRE(daemon.daemon.attach_policy({"mine", only_client, make}).ok());
  Placement after_mine{GraphSide::kEgress, Placement::Anchor::kAfter, "mine", ""};
  CHECK(daemon.daemon.attach_policy({"everyone", after_mine, make}).status().code() ==
        StatusCode::kFailedPrecondition);
  CHECK(daemon.daemon.attach_policy({"a", last, make}).status().code() ==
        StatusCode::kAlreadyExists);
  CHECK(daemon.daemon.detach_policy("a").status().code() == StatusCode::kFailedPrecondition);
  CHECK(daemon.daemon.detach_policy("zzz").status().code() == StatusCode::kNotFound);
  check_echo_works(*client, server.service_id(), 1);
}

// The upgrade gate: a counting operator (requests and replies) replaced 200 times while three apps
// call: after each replace new calls go to the new version on every shard, the old version sees
// the replies of exactly the calls it admitted, and it is dropped when they have ended.
TEST_CASE(
    "replace under load through the upgrade gate: each version sees the replies of exactly "
    "the calls it admitted, and the old versions leave") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  CountingFactory counting;
  REQUIRE(daemon.daemon.attach_policy({"counting", Placement{}, counting.factory()}).ok());
  constexpr uint64_t kCallsPerClient = 40000;
  constexpr int kClients = 3;
  constexpr int kReplaces = 200;
  std::vector<std::unique_ptr<TestApp>> clients;
  for (int i = 0; i < kClients; ++i)
    clients.push_back(TestApp::connect(daemon.app_socket(), "gate-" + std::to_string(i)));
  std::atomic<uint64_t> ok{0}, failed{0};
  std::atomic<int> running{kClients};
  std::vector<std::thread> load;
  for (auto& client : clients)
    load.emplace_back([&, app = client.get()] {
      uint64_t first_id = 0;
      auto outcome = echo_load(*app, server.service_id(), first_id, kCallsPerClient, 10s);
      ok += outcome.ok;
      failed += kCallsPerClient - outcome.ok;
      --running;
    });
  // Replaces while calls are in flight: from once the load runs, one every 0.5 ms.
  REQUIRE(eventually([&] { return server.tagged_calls() > 1000 || running == 0; }));
  for (int replaced = 0; replaced < kReplaces; ++replaced) {
    auto upgraded = daemon.daemon.upgrade_policy("counting", counting.upgrade_factory());
    REQUIRE_MESSAGE(upgraded.ok(), upgraded.status().to_string());
    std::this_thread::sleep_for(500us);
  }
  const bool replaced_under_load = running.load() > 0;
  for (auto& thread : load) thread.join();
  // The last versions' calls have ended: every old version leaves (a daemon counter), within a
  // bound (not a timing assertion: its rounds run at once).
  for (int i = 0; i < 5000 && daemon.daemon.stats().versions_retiring != 0; ++i)
    std::this_thread::sleep_for(1ms);
  const DaemonStats stats = daemon.daemon.stats();

  std::lock_guard lock(counting.mutex);
  int64_t requests = 0, replies = 0, mismatched = 0, detached = 0, late_replies = 0;
  for (const auto& version : counting.made) {
    late_replies += version->replies_after_replaced;
    const int64_t seen = version->count - version->imported;
    requests += seen;
    replies += version->replies;
    mismatched += seen != version->replies;
    detached += version->detached;
  }
  // One version per app graph per upgrade (3 clients, the server), the first ones included.
  const int64_t graphs = kClients + 1;
  MESSAGE("calls: ", kClients * kCallsPerClient, ", ok: ", ok.load(), ", failed: ", failed.load(),
          "; versions made: ", counting.made.size(), ", retired: ", stats.versions_retired,
          " (at a deadline: ", stats.versions_retired_at_deadline,
          "), still retiring: ", stats.versions_retiring, "; requests counted: ", requests,
          ", replies: ", replies, ", versions whose requests != replies: ", mismatched,
          "; replies seen by versions after they were replaced: ", late_replies,
          "; replaced while calls ran: ", replaced_under_load);
  CHECK(replaced_under_load);
  CHECK(failed == 0);
  CHECK(ok == kClients * kCallsPerClient);
  CHECK(requests == static_cast<int64_t>(kClients * kCallsPerClient));
  CHECK(requests == static_cast<int64_t>(server.tagged_calls()));
  CHECK(replies == requests);
  CHECK(mismatched == 0);
  CHECK(late_replies > 0);  // the gate was open: old versions finished calls after a replace
  CHECK(counting.made.size() == static_cast<size_t>(graphs * (kReplaces + 1)));
  CHECK(stats.versions_retiring == 0);
  CHECK(stats.versions_retired == static_cast<uint64_t>(graphs * kReplaces));
  CHECK(stats.versions_retired_at_deadline == 0);
  CHECK(detached == graphs * kReplaces);
  CHECK(stats.calls_in_flight == 0);
}
