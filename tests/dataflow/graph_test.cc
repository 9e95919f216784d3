// Graph: every operator outcome, batching bounds, and live changes that lose nothing.
#include <doctest/doctest.h>

#include <algorithm>
#include <numeric>

#include "mrpc/base/random.h"
#include "mrpc/dataflow/graph.h"
#include "test_operators.h"

using namespace std::chrono_literals;
using namespace mrpc;
using namespace mrpc::testing;

namespace {
std::vector<uint64_t> iota_ids(uint64_t first, size_t count) {
  std::vector<uint64_t> ids(count);
  std::iota(ids.begin(), ids.end(), first);
  return ids;
}
void run_until_quiet(Graph& graph) {
  for (int round = 0; round < 10'000 && graph.run(); ++round) {
  }
}
}  // namespace

TEST_CASE("requests pass every operator in order and replies come back in reverse") {
  ManualClock clock;
  Exits exits;
  Graph graph(clock, exits.bind());
  auto a = std::make_shared<Tagger>("a");
  auto b = std::make_shared<Tagger>("b");
  graph.append(a);
  graph.append(b);
  graph.push_request(make_rpc(1));
  run_until_quiet(graph);
  REQUIRE(exits.requests.size() == 1);
  auto rpc = std::move(exits.requests.front());
  CHECK(rpc->metadata == std::vector<MetadataEntry>{{"req", "a"}, {"req", "b"}});
  graph.push_reply(std::move(rpc));
  run_until_quiet(graph);
  REQUIRE(exits.replies.size() == 1);
  CHECK(exits.replies[0]->metadata ==
        std::vector<MetadataEntry>{{"req", "a"}, {"req", "b"}, {"rep", "b"}, {"rep", "a"}});
}

TEST_CASE("a dropped request turns around with its error and skips the operators after") {
  ManualClock clock;
  Exits exits;
  Graph graph(clock, exits.bind());
  auto before = std::make_shared<Tagger>("before");
  auto after = std::make_shared<Tagger>("after");
  graph.append(before);
  graph.append(std::make_shared<Dropper>(13));
  graph.append(after);
  graph.push_request(make_rpc(1, 1, 13));
  graph.push_request(make_rpc(2, 1, 0));
  run_until_quiet(graph);
  CHECK(exits.request_ids() == std::vector<uint64_t>{2});
  REQUIRE(exits.replies.size() == 1);
  CHECK(exits.replies[0]->call_id == 1);
  CHECK(exits.replies[0]->status.code() == StatusCode::kPermissionDenied);
  CHECK(after->requests_seen == 1);
  CHECK(before->replies_seen == 1);  // the drop travelled back through "before"
}

TEST_CASE("an answering operator replies by itself and the call goes no further") {
  ManualClock clock;
  Exits exits;
  Graph graph(clock, exits.bind());
  auto after = std::make_shared<Tagger>("after");
  graph.append(std::make_shared<Answerer>(7, 4242));
  graph.append(after);
  graph.push_request(make_rpc(1, 7));
  graph.push_request(make_rpc(2, 8));
  run_until_quiet(graph);
  CHECK(exits.request_ids() == std::vector<uint64_t>{2});
  REQUIRE(exits.replies.size() == 1);
  CHECK(exits.replies[0]->call_id == 1);
  CHECK(exits.replies[0]->status.ok());
  CHECK(exits.replies[0]->response.offset == 4242);
  CHECK(after->requests_seen == 1);
}

TEST_CASE("a held request waits in its operator until released, in order") {
  ManualClock clock;
  Exits exits;
  Graph graph(clock, exits.bind());
  auto holder = std::make_shared<Holder>();
  graph.append(holder);
  for (uint64_t id = 1; id <= 5; ++id) graph.push_request(make_rpc(id));
  run_until_quiet(graph);
  CHECK(exits.requests.empty());
  CHECK(holder->held() == 5);
  CHECK(graph.in_graph() == 5);
  holder->allow(2);
  run_until_quiet(graph);
  CHECK(exits.request_ids() == std::vector<uint64_t>{1, 2});
  holder->allow(10);
  run_until_quiet(graph);
  CHECK(exits.request_ids() == iota_ids(1, 5));
  CHECK(graph.in_graph() == 0);
}

TEST_CASE("a delayed request continues exactly when the clock reaches its time") {
  ManualClock clock(1'000);
  Exits exits;
  Graph graph(clock, exits.bind());
  auto after = std::make_shared<Tagger>("after");
  graph.append(std::make_shared<Delayer>(5ms));
  graph.append(after);
  graph.push_request(make_rpc(1));
  run_until_quiet(graph);
  CHECK(exits.requests.empty());
  CHECK(graph.next_timer() == 1'000 + 5'000'000);
  clock.advance(5ms - 1ns);
  run_until_quiet(graph);
  CHECK(exits.requests.empty());
  clock.advance(1ns);
  run_until_quiet(graph);
  CHECK(exits.request_ids() == std::vector<uint64_t>{1});
  CHECK(after->requests_seen == 1);
  CHECK(graph.next_timer() == kNoDeadline);
}

TEST_CASE("a forked mirror attempt travels beside the original and its reply is absorbed") {
  ManualClock clock;
  Exits exits;
  Graph graph(clock, exits.bind());
  auto mirror = std::make_shared<Mirror>();
  graph.append(mirror);
  graph.append(std::make_shared<Tagger>("after"));
  graph.push_request(make_rpc(1));
  run_until_quiet(graph);
  REQUIRE(exits.requests.size() == 2);  // the same call, two attempts
  CHECK(exits.request_ids() == std::vector<uint64_t>{1, 1});
  const Rpc& mirrored = exits.requests[0]->attempt_kind == AttemptKind::kMirror
                            ? *exits.requests[0]
                            : *exits.requests[1];
  const Rpc& primary =
      &mirrored == exits.requests[0].get() ? *exits.requests[1] : *exits.requests[0];
  CHECK(mirrored.attempt_kind == AttemptKind::kMirror);
  CHECK(mirrored.attempt == 1);
  CHECK(primary.attempt_kind == AttemptKind::kPrimary);
  CHECK(primary.attempt == 0);
  for (auto& rpc : exits.requests) graph.push_reply(std::move(rpc));
  exits.requests.clear();
  run_until_quiet(graph);
  CHECK(exits.reply_ids() == std::vector<uint64_t>{1});
  CHECK(exits.replies[0]->attempt_kind == AttemptKind::kPrimary);
  CHECK(mirror->absorbed_replies == std::vector<uint64_t>{1});
}

TEST_CASE("one round gives each operator at most max_batch requests") {
  ManualClock clock;
  Exits exits;
  Graph graph(clock, exits.bind(), GraphOptions{.max_batch = 4});
  auto tagger = std::make_shared<Tagger>("t");
  graph.append(tagger);
  for (uint64_t id = 1; id <= 10; ++id) graph.push_request(make_rpc(id));
  CHECK(graph.run());
  CHECK(tagger->requests_seen == 4);
  CHECK(exits.requests.size() == 4);
  run_until_quiet(graph);
  CHECK(exits.request_ids() == iota_ids(1, 10));
}

TEST_CASE("removing an operator that holds requests hands them on, in order") {
  ManualClock clock;
  Exits exits;
  Graph graph(clock, exits.bind());
  auto holder = std::make_shared<Holder>();
  auto holder_stage = graph.append(holder);
  graph.append(std::make_shared<Tagger>("after"));
  for (uint64_t id = 1; id <= 3; ++id) graph.push_request(make_rpc(id));
  run_until_quiet(graph);
  CHECK(holder->held() == 3);
  REQUIRE(graph.remove(holder_stage).ok());
  CHECK(graph.size() == 1);
  run_until_quiet(graph);
  CHECK(exits.request_ids() == iota_ids(1, 3));
  CHECK(graph.remove(holder_stage).code() == StatusCode::kNotFound);
}

TEST_CASE("removing a delaying operator lets its delayed requests continue at once") {
  ManualClock clock;
  Exits exits;
  Graph graph(clock, exits.bind());
  auto delayer_stage = graph.append(std::make_shared<Delayer>(1s));
  graph.push_request(make_rpc(1));
  run_until_quiet(graph);
  CHECK(exits.requests.empty());
  REQUIRE(graph.remove(delayer_stage).ok());
  CHECK(exits.request_ids() == std::vector<uint64_t>{1});
}

TEST_CASE("inserting at a bad position is refused") {
  ManualClock clock;
  Exits exits;
  Graph graph(clock, exits.bind());
  CHECK(graph.insert(1, std::make_shared<Tagger>("x")).status().code() == StatusCode::kOutOfRange);
  CHECK(graph.insert(0, nullptr).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("changing the graph between every round loses, duplicates and reorders nothing") {
  ManualClock clock;
  Exits exits;
  Graph graph(clock, exits.bind(), GraphOptions{.max_batch = 3});
  graph.append(std::make_shared<Tagger>("frontend"));
  graph.append(std::make_shared<Tagger>("router"));
  SeededRandom random(42);
  constexpr uint64_t kCalls = 2'000;
  uint64_t next_id = 1;
  std::vector<uint64_t> routed;  // request ids in the order they passed the router
  std::vector<std::shared_ptr<Holder>> holders;
  // Like a router: every request that leaves turns around as a reply.
  auto turn_around = [&] {
    for (auto& rpc : exits.requests) {
      routed.push_back(rpc->call_id);
      graph.push_reply(std::move(rpc));
    }
    exits.requests.clear();
  };
  for (int round = 0; round < 20'000 && exits.replies.size() < kCalls; ++round) {
    for (int i = 0; i < 2 && next_id <= kCalls; ++i) graph.push_request(make_rpc(next_id++));
    // Between rounds: insert a policy, remove one, replace one, or let holders release.
    uint64_t choice = random.next_u64() % 4;
    size_t policies = graph.size() - 2;
    if (choice == 0 && policies < 4) {
      size_t position = 1 + random.next_u64() % (policies + 1);
      auto holder = std::make_shared<Holder>();
      holder->allow(random.next_u64() % 3);
      REQUIRE(graph.insert(position, holder).ok());
      holders.push_back(holder);
    } else if (choice == 1 && policies > 0) {
      size_t position = 1 + random.next_u64() % policies;
      REQUIRE(graph.remove(graph.stage_at(position)).ok());
    } else if (choice == 2 && policies > 0) {
      size_t position = 1 + random.next_u64() % policies;
      REQUIRE(graph.replace(graph.stage_at(position), std::make_shared<Tagger>("policy")).ok());
    } else {
      for (auto& holder : holders) holder->allow(1);
    }
    graph.run();
    turn_around();
  }
  while (graph.size() > 2) REQUIRE(graph.remove(graph.stage_at(1)).ok());
  for (int round = 0; round < 10'000 && graph.run(); ++round) turn_around();
  CHECK(graph.in_graph() == 0);
  CHECK(routed == iota_ids(1, kCalls));
  CHECK(exits.reply_ids() == iota_ids(1, kCalls));
  CHECK(graph.stats().changes > 100);
}

TEST_CASE("changes and replies posted from another thread apply before the next round") {
  ManualClock clock;
  Exits exits;
  Graph graph(clock, exits.bind());
  graph.append(std::make_shared<Tagger>("only"));
  graph.post_change([](Graph& g) { g.append(std::make_shared<Tagger>("second")); });
  graph.post_reply(make_rpc(9));
  CHECK(graph.size() == 1);
  graph.run();
  CHECK(graph.size() == 2);
  run_until_quiet(graph);
  REQUIRE(exits.replies.size() == 1);
  CHECK(exits.replies[0]->metadata ==
        std::vector<MetadataEntry>{{"rep", "second"}, {"rep", "only"}});
}

TEST_CASE("draining a graph hands over every RPC it carries: queued, delayed and held") {
  ManualClock clock;
  Exits exits;
  Graph graph(clock, exits.bind(), GraphOptions{.max_batch = 1});
  auto holder = std::make_shared<Holder>();
  graph.append(holder);
  graph.append(std::make_shared<Delayer>(1s));
  graph.append(std::make_shared<Tagger>("last"));
  for (uint64_t id = 1; id <= 6; ++id) graph.push_request(make_rpc(id));
  graph.push_reply(make_rpc(100));
  holder->allow(2);
  graph.run();
  graph.run();
  graph.post_request(make_rpc(200));
  CHECK(holder->held() > 0);
  std::vector<uint64_t> drained;
  graph.drain_into([&](RpcPtr rpc) { drained.push_back(rpc->call_id); });
  for (auto& rpc : exits.requests) drained.push_back(rpc->call_id);
  for (auto& rpc : exits.replies) drained.push_back(rpc->call_id);
  std::sort(drained.begin(), drained.end());
  CHECK(drained == std::vector<uint64_t>{1, 2, 3, 4, 5, 6, 100, 200});
  CHECK(graph.in_graph() == 0);
}

namespace {
// On the reply path: delays replies of even calls, fails replies of odd ones.
class ReplyShaper final : public Operator {
 public:
  std::string_view name() const override { return "reply-shaper"; }
  void on_requests(RpcBatch&, Output&) override {}
  void on_replies(RpcBatch& batch, Output& out) override {
    for (auto& rpc : batch) {
      if (rpc->call_id % 2 == 0)
        out.delay(std::move(rpc), out.now() + 1'000);
      else
        out.drop(std::move(rpc), Status(StatusCode::kAborted, "odd"));
    }
  }
};
}  // namespace

TEST_CASE("on the reply path, delay holds a reply until its time and drop replaces its status") {
  ManualClock clock;
  Exits exits;
  Graph graph(clock, exits.bind());
  auto upstream = std::make_shared<Tagger>("upstream");
  graph.append(upstream);
  graph.append(std::make_shared<ReplyShaper>());
  graph.push_reply(make_rpc(1));
  graph.push_reply(make_rpc(2));
  run_until_quiet(graph);
  REQUIRE(exits.reply_ids() == std::vector<uint64_t>{1});
  CHECK(exits.replies[0]->status.code() == StatusCode::kAborted);
  CHECK(graph.next_timer() == 1'000);
  clock.advance(1us);
  run_until_quiet(graph);
  CHECK(exits.reply_ids() == std::vector<uint64_t>{1, 2});
  CHECK(exits.replies[1]->status.ok());
  CHECK(upstream->replies_seen == 2);
}
