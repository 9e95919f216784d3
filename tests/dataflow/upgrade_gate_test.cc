// The upgrade gate (Graph::replace_gated): after a replace, calls admitted from then on see only
// the new version; the requests and replies of calls admitted before see only the old one, which is
// dropped when the last of them has left (or when their deadline has passed).
#include <doctest/doctest.h>

#include <algorithm>
#include <set>

#include "mrpc/base/random.h"
#include "mrpc/dataflow/graph.h"
#include "test_operators.h"

using namespace std::chrono_literals;
using namespace mrpc;
using namespace mrpc::testing;

namespace {

// Remembers which calls' requests and replies it saw, and whether it was detached.
class Witness final : public Operator {
 public:
  std::string_view name() const override { return "witness"; }
  void on_requests(RpcBatch& batch, Output&) override {
    for (auto& rpc : batch) requests.insert(rpc->call_id);
  }
  void on_replies(RpcBatch& batch, Output&) override {
    for (auto& rpc : batch) replies.insert(rpc->call_id);
  }
  void detach(Output&, Output&) override { ++detached; }
  std::set<uint64_t> requests;
  std::set<uint64_t> replies;
  int detached = 0;
};

void run_until_quiet(Graph& graph) {
  for (int round = 0; round < 10'000 && graph.run(); ++round) {
  }
}

// Turns every request that left the graph around as its reply.
void turn_around(Graph& graph, Exits& exits) {
  for (auto& rpc : exits.requests) graph.push_reply(std::move(rpc));
  exits.requests.clear();
}

// A gated graph of one stage, the witness v1, with its own clock, exits and gate counters.
struct OneWitnessGraph {
  ManualClock clock;
  Exits exits;
  GateCounters counters;
  Graph graph{clock, exits.bind(), GraphOptions{.gate_counters = &counters}};
  std::shared_ptr<Witness> v1 = std::make_shared<Witness>();
  const Graph::StageId stage = graph.append(v1);
};

}  // namespace

TEST_CASE(
    "after a gated replace, old calls finish through the old version and new calls use the "
    "new one") {
  ManualClock clock;
  Exits exits;
  GateCounters counters;
  Graph graph(clock, exits.bind(), GraphOptions{.gate_counters = &counters});
  graph.append(std::make_shared<Tagger>("frontend"));
  auto v1 = std::make_shared<Witness>();
  const auto stage = graph.append(v1);
  graph.append(std::make_shared<Tagger>("router"));

  for (uint64_t id = 1; id <= 3; ++id) graph.push_request(make_rpc(id));
  run_until_quiet(graph);
  REQUIRE(exits.requests.size() == 3);
  // Call 4 is admitted before the replace but still waits in front of the frontend.
  graph.push_request(make_rpc(4));
  auto v2 = std::make_shared<Witness>();
  REQUIRE(graph.replace_gated(stage, v2).ok());
  CHECK(graph.versions_at(1) == 2);
  CHECK(counters.versions_retiring == 1);
  for (uint64_t id = 5; id <= 7; ++id) graph.push_request(make_rpc(id));
  run_until_quiet(graph);
  turn_around(graph, exits);
  run_until_quiet(graph);

  CHECK(v1->requests == std::set<uint64_t>{1, 2, 3, 4});
  CHECK(v1->replies == std::set<uint64_t>{1, 2, 3, 4});
  CHECK(v2->requests == std::set<uint64_t>{5, 6, 7});
  CHECK(v2->replies == std::set<uint64_t>{5, 6, 7});
  CHECK(exits.replies.size() == 7);
  // Its last call went out: the old version was detached and dropped.
  CHECK(v1->detached == 1);
  CHECK(v2->detached == 0);
  CHECK(graph.versions_at(1) == 1);
  CHECK(counters.versions_retiring == 0);
  CHECK(counters.versions_retired == 1);
  CHECK(counters.versions_retired_at_deadline == 0);
}

TEST_CASE("a version installed for a later epoch waits until that epoch is made current") {
  ManualClock clock;
  Exits exits;
  std::atomic<uint64_t> epoch{10};
  Graph graph(clock, exits.bind(), GraphOptions{.admission_epoch = &epoch});
  auto v1 = std::make_shared<Witness>();
  const auto stage = graph.append(v1);
  auto v2 = std::make_shared<Witness>();
  REQUIRE(graph.replace_gated(stage, v2, 11).ok());
  // A version for a past or the current epoch is refused.
  CHECK(graph.replace_gated(stage, std::make_shared<Witness>(), 10).code() ==
        StatusCode::kInvalidArgument);
  graph.push_request(make_rpc(1));
  run_until_quiet(graph);
  CHECK(graph.retire_versions() == 0);  // still the version new calls see
  epoch.store(11);
  graph.push_request(make_rpc(2));
  run_until_quiet(graph);
  turn_around(graph, exits);
  run_until_quiet(graph);
  CHECK(v1->requests == std::set<uint64_t>{1});
  CHECK(v1->replies == std::set<uint64_t>{1});
  CHECK(v2->requests == std::set<uint64_t>{2});
  CHECK(v2->replies == std::set<uint64_t>{2});
  CHECK(graph.versions_at(0) == 1);
  CHECK(v1->detached == 1);
}

TEST_CASE_FIXTURE(OneWitnessGraph,
                  "a replaced version whose calls never come back leaves at their deadline") {
  auto lost = make_rpc(1);
  lost->deadline = clock.now() + Nanos(50ms).count();
  graph.push_request(std::move(lost));
  run_until_quiet(graph);
  exits.requests.clear();  // its reply never comes back (the caller gave up, say)
  REQUIRE(graph.replace_gated(stage, std::make_shared<Witness>()).ok());
  run_until_quiet(graph);
  CHECK(graph.versions_retiring() == 1);
  CHECK(graph.next_timer() == clock.now() + Nanos(50ms).count());
  clock.advance(50ms);
  graph.run();
  CHECK(graph.versions_retiring() == 0);
  CHECK(v1->detached == 1);
  CHECK(counters.versions_retired_at_deadline == 1);
}

TEST_CASE_FIXTURE(
    OneWitnessGraph,
    "a call dropped without leaving holds back only the version it was admitted under: the next "
    "replaced version leaves when its own calls end") {
  // No deadline, and dropped after it left (as the router drops a request whose call has ended):
  // it never goes out of the reply exit nor ends here.
  graph.push_request(make_rpc(1));
  run_until_quiet(graph);
  exits.requests.clear();
  auto v2 = std::make_shared<Witness>();
  REQUIRE(graph.replace_gated(stage, v2).ok());
  run_until_quiet(graph);
  CHECK(graph.versions_retiring() == 1);
  clock.advance(limits::kMaxUpgradeGateWait);
  graph.run();
  CHECK(v1->detached == 1);  // at the gate's cap
  CHECK(counters.versions_retired_at_deadline == 1);

  graph.push_request(make_rpc(2));
  run_until_quiet(graph);
  REQUIRE(graph.replace_gated(stage, std::make_shared<Witness>()).ok());
  turn_around(graph, exits);
  run_until_quiet(graph);
  CHECK(v2->replies == std::set<uint64_t>{2});
  CHECK(v2->detached == 1);  // at once: call 1's count went with v1
  CHECK(graph.versions_retiring() == 0);
  CHECK(counters.versions_retired == 2);
  CHECK(counters.versions_retired_at_deadline == 1);
}

TEST_CASE(
    "replaced many times under random traffic, each version sees exactly the requests and "
    "replies of the calls admitted while it was newest") {
  ManualClock clock;
  Exits exits;
  GateCounters counters;
  Graph graph(clock, exits.bind(), GraphOptions{.max_batch = 3, .gate_counters = &counters});
  graph.append(std::make_shared<Tagger>("frontend"));
  std::vector<std::shared_ptr<Witness>> versions{std::make_shared<Witness>()};
  const auto stage = graph.append(versions.back());
  graph.append(std::make_shared<Tagger>("router"));
  const uint64_t seed = 7;
  INFO("seed ", seed);
  SeededRandom random(seed);
  std::vector<std::set<uint64_t>> admitted_to(1);  // calls pushed while each version was newest
  std::vector<RpcPtr> at_callee;                   // requests that left, replied to later
  constexpr uint64_t kCalls = 3'000;
  uint64_t next_id = 1;
  for (int round = 0; round < 100'000 && exits.replies.size() < kCalls; ++round) {
    for (int i = 0; i < 2 && next_id <= kCalls; ++i) {
      admitted_to.back().insert(next_id);
      graph.push_request(make_rpc(next_id++));
    }
    if (random.next_u64() % 8 == 0 && next_id <= kCalls) {
      versions.push_back(std::make_shared<Witness>());
      admitted_to.emplace_back();
      REQUIRE(graph.replace_gated(stage, versions.back()).ok());
    }
    graph.run();
    for (auto& rpc : exits.requests) at_callee.push_back(std::move(rpc));
    exits.requests.clear();
    // The callee answers a random subset, out of order.
    for (size_t i = 0; i < at_callee.size();) {
      if (random.next_u64() % 3 == 0) {
        graph.push_reply(std::move(at_callee[i]));
        at_callee[i] = std::move(at_callee.back());
        at_callee.pop_back();
      } else {
        ++i;
      }
    }
  }
  for (auto& rpc : at_callee) graph.push_reply(std::move(rpc));
  run_until_quiet(graph);
  REQUIRE(exits.replies.size() == kCalls);
  REQUIRE(versions.size() > 20);
  for (size_t v = 0; v < versions.size(); ++v) {
    INFO("version ", v);
    CHECK(versions[v]->requests == admitted_to[v]);
    CHECK(versions[v]->replies == admitted_to[v]);
    CHECK(versions[v]->detached == (v + 1 < versions.size() ? 1 : 0));
  }
  CHECK(graph.versions_retiring() == 0);
  CHECK(counters.versions_retired == versions.size() - 1);
  CHECK(graph.in_graph() == 0);
}
