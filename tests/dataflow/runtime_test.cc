// Runtime: timers through the replaceable clock, waking on eventfds, and sleeping when idle.
#include <doctest/doctest.h>

#include <sys/eventfd.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "mrpc/dataflow/graph.h"
#include "mrpc/dataflow/runtime.h"
#include "test_operators.h"

using namespace std::chrono_literals;
using namespace mrpc;
using namespace mrpc::testing;

namespace {
// Exits that another thread can wait on.
struct WaitableExits {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<uint64_t> requests;
  GraphExits bind() {
    return {[this](RpcPtr rpc) {
              std::lock_guard lock(mutex);
              requests.push_back(rpc->call_id);
              changed.notify_all();
            },
            [](RpcPtr) {}};
  }
  void wait_for(size_t count) {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return requests.size() >= count; });
  }
};

template <class Predicate>
void wait_until(Predicate predicate) {
  while (!predicate()) std::this_thread::sleep_for(1ms);
}

// A task that counts its rounds and has work while `pending` > 0.
class CountingTask final : public Task {
 public:
  bool run() override {
    ++runs;
    if (pending == 0) return false;
    --pending;
    return true;
  }
  std::atomic<int> runs{0};
  std::atomic<int> pending{0};
};
}  // namespace

TEST_CASE("a manually driven runtime fires a delay when the manual clock reaches it") {
  ManualClock clock(0);
  Runtime runtime(clock, RuntimeOptions{.spin_budget = 0ns});
  Exits exits;
  auto graph = std::make_shared<Graph>(clock, exits.bind());
  graph->append(std::make_shared<Delayer>(10ms));
  runtime.add(graph);
  graph->push_request(make_rpc(1));
  while (runtime.run_once()) {
  }
  CHECK(exits.requests.empty());
  clock.advance(10ms);
  while (runtime.run_once()) {
  }
  CHECK(exits.request_ids() == std::vector<uint64_t>{1});
}

TEST_CASE("a sleeping runtime wakes on a watched eventfd") {
  Runtime runtime(MonotonicClock::instance(), RuntimeOptions{.spin_budget = 0ns});
  auto task = std::make_shared<CountingTask>();
  runtime.add(task);
  int doorbell = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  REQUIRE(doorbell >= 0);
  REQUIRE(runtime.watch_eventfd(doorbell).ok());
  runtime.run_once();
  CHECK(runtime.sleep_once());  // returns at once: add() woke the runtime
  std::thread ringer([&] {
    std::this_thread::sleep_for(20ms);
    uint64_t one = 1;
    CHECK(::write(doorbell, &one, sizeof one) == 8);
  });
  CHECK(runtime.sleep_once());  // returns only because the doorbell rang
  ringer.join();
  uint64_t left = 0;
  CHECK(::read(doorbell, &left, sizeof left) < 0);  // the runtime drained it
  runtime.unwatch(doorbell);
  ::close(doorbell);
}

TEST_CASE("a running runtime sleeps when idle and a posted request wakes it") {
  Runtime runtime(MonotonicClock::instance(), RuntimeOptions{.spin_budget = 0ns});
  WaitableExits exits;
  auto graph = std::make_shared<Graph>(MonotonicClock::instance(), exits.bind());
  graph->append(std::make_shared<Tagger>("t"));
  runtime.add(graph);
  runtime.start();
  wait_until([&] { return runtime.stats().sleeps >= 1; });
  graph->post_request(make_rpc(5));
  exits.wait_for(1);
  CHECK(exits.requests == std::vector<uint64_t>{5});
  runtime.stop();
}

TEST_CASE("an idle runtime stays asleep: no rounds while nothing happens") {
  Runtime runtime(MonotonicClock::instance(), RuntimeOptions{.spin_budget = 50us});
  auto task = std::make_shared<CountingTask>();
  runtime.add(task);
  runtime.start();
  wait_until([&] { return runtime.stats().sleeps >= 1; });
  // The first sleep may end at once (add() woke the runtime); the spin after it lasts 50 us.
  std::this_thread::sleep_for(50ms);
  auto rounds_before = runtime.stats().rounds;
  std::this_thread::sleep_for(100ms);
  // Spinning for 100 ms would be many thousands of rounds; asleep it is none.
  CHECK(runtime.stats().rounds == rounds_before);
  task->pending = 3;
  runtime.wake();
  wait_until([&] { return task->pending == 0; });
  runtime.stop();
}

TEST_CASE("a running runtime with a real clock sleeps until a delay is due") {
  Runtime runtime(MonotonicClock::instance(), RuntimeOptions{.spin_budget = 0ns});
  WaitableExits exits;
  auto graph = std::make_shared<Graph>(MonotonicClock::instance(), exits.bind());
  graph->append(std::make_shared<Delayer>(20ms));
  runtime.add(graph);
  runtime.start();
  MonoTime posted = MonotonicClock::instance().now();
  graph->post_request(make_rpc(1));
  exits.wait_for(1);
  CHECK(MonotonicClock::instance().now() - posted >= 20'000'000);
  CHECK(runtime.stats().sleeps >= 1);
  runtime.stop();
}

TEST_CASE("a task removed from another thread runs no more") {
  Runtime runtime(MonotonicClock::instance(), RuntimeOptions{.spin_budget = 0ns});
  auto task = std::make_shared<CountingTask>();
  runtime.add(task);
  runtime.start();
  wait_until([&] { return task->runs > 0; });
  runtime.remove(task.get());
  int runs = task->runs;
  task->pending = 100;
  runtime.wake();
  runtime.stop();
  CHECK(task->runs == runs);
  CHECK(runtime.task_count() == 0);
}

TEST_CASE("the scheduler places tasks on its least loaded runtime") {
  Scheduler scheduler(MonotonicClock::instance(), 2, RuntimeOptions{});
  auto a = std::make_shared<CountingTask>();
  auto b = std::make_shared<CountingTask>();
  scheduler.least_loaded().add(a);
  scheduler.least_loaded().add(b);
  CHECK(scheduler.runtime(0).task_count() == 1);
  CHECK(scheduler.runtime(1).task_count() == 1);
}

namespace {
// A task whose earliest timer the test sets.
class TimerTask final : public Task {
 public:
  bool run() override { return false; }
  MonoTime next_timer() const override { return timer; }
  MonoTime timer = kNoDeadline;
};
}  // namespace

TEST_CASE("a sleeping runtime arms its timerfd only when a task needs an earlier timer") {
  const Clock& clock = MonotonicClock::instance();
  Runtime runtime(clock, RuntimeOptions{.spin_budget = 0ns});
  auto task = std::make_shared<TimerTask>();
  runtime.add(task);
  // Timers that keep moving out (a new call's deadline each time): armed once, for the first.
  task->timer = clock.now() + std::chrono::nanoseconds(10s).count();
  for (int i = 0; i < 100; ++i) {
    runtime.wake();  // each sleep ends at once
    REQUIRE(runtime.sleep_once());
    task->timer += std::chrono::nanoseconds(1ms).count();
  }
  CHECK(runtime.stats().sleeps == 100);
  CHECK(runtime.stats().timer_arms == 1);
  // No timer needed any more: the armed one stays (one idle wake-up when it fires), no syscall.
  task->timer = kNoDeadline;
  runtime.wake();
  REQUIRE(runtime.sleep_once());
  CHECK(runtime.stats().timer_arms == 1);
  // An earlier timer is armed, and the sleep ends when it fires (no wake() this time).
  task->timer = clock.now() + std::chrono::nanoseconds(5ms).count();
  const MonoTime before = clock.now();
  REQUIRE(runtime.sleep_once());
  CHECK(clock.now() - before >= std::chrono::nanoseconds(4ms).count());
  CHECK(runtime.stats().timer_arms == 2);
  // It fired, so the timerfd is disarmed: the same kind of timer is armed again.
  task->timer = clock.now() + std::chrono::nanoseconds(5ms).count();
  REQUIRE(runtime.sleep_once());
  CHECK(runtime.stats().timer_arms == 3);
}

TEST_CASE("a round right after an event check knows its readiness flags are fresh") {
  Runtime runtime(MonotonicClock::instance(), RuntimeOptions{.spin_budget = 0ns});
  struct FreshProbe final : public Task {
    bool run() override {
      seen.push_back(runtime->events_fresh());
      return false;
    }
    Runtime* runtime = nullptr;
    std::vector<bool> seen;
  };
  auto probe = std::make_shared<FreshProbe>();
  probe->runtime = &runtime;
  runtime.add(probe);
  runtime.run_once();  // no event check yet
  runtime.wake();
  REQUIRE(runtime.sleep_once());
  runtime.run_once();  // after a sleep: fresh
  runtime.run_once();  // the round after: stale (data may have come since)
  CHECK(probe->seen == std::vector<bool>{false, true, false});
}

TEST_CASE("a task placed last runs after every task added later, in each round") {
  Runtime runtime(MonotonicClock::instance(), RuntimeOptions{.spin_budget = 0ns});
  std::vector<int> order;
  struct Recorder final : public Task {
    Recorder(std::vector<int>& into, int which) : order(into), id(which) {}
    bool run() override {
      order.push_back(id);
      return false;
    }
    std::vector<int>& order;
    int id;
  };
  auto last = std::make_shared<Recorder>(order, 9);
  runtime.add(std::make_shared<Recorder>(order, 1));
  runtime.add(last, TaskPlace::kLast);
  runtime.add(std::make_shared<Recorder>(order, 2));
  runtime.run_once();
  CHECK(order == std::vector<int>{1, 2, 9});
  runtime.remove(last.get());
  runtime.add(std::make_shared<Recorder>(order, 3));
  order.clear();
  runtime.run_once();
  CHECK(order == std::vector<int>{1, 2, 3});
}

namespace {
// Work posted with a wake() just after the task looked in a round, as a codec job finishing on
// another thread does; nothing in prepare_to_sleep looks for it, so only the wake-up tells.
class LateWorkTask final : public Task {
 public:
  bool run() override {
    if (has_work.exchange(false)) {
      done = true;
      return true;
    }
    if (arm.exchange(false)) {
      has_work = true;
      wake_runtime();
    }
    return false;
  }
  std::atomic<bool> arm{false};
  std::atomic<bool> has_work{false};
  std::atomic<bool> done{false};
};
}  // namespace

TEST_CASE("a wake-up that arrives during an idle round is not drained away before the next round") {
  // An event check after every round (interval 0) and no spin: the old loop drained the wake-up
  // eventfd in that check, then slept with the work undone.
  Runtime runtime(MonotonicClock::instance(),
                  RuntimeOptions{.spin_budget = 0ns, .event_check_interval = 0ns});
  auto task = std::make_shared<LateWorkTask>();
  runtime.add(task);
  runtime.start();
  wait_until([&] { return runtime.stats().sleeps >= 1; });
  task->arm = true;
  runtime.wake();
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  while (!task->done && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(1ms);
  CHECK(task->done);
  runtime.stop();
}
