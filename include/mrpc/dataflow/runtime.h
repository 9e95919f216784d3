// Runtime: one thread that runs Tasks (graphs, the daemon's listener) in rounds. It polls
// adaptively: while rounds find work it keeps going; after `spin_budget` of rounds without work it
// sleeps in epoll on its wake eventfd, the eventfds it was told to watch (app doorbells) and a
// timerfd armed for the earliest task timer. Spin budget 0 sleeps as soon as a round is idle. An
// idle runtime therefore costs no CPU.
// Syscalls: a sleep is one epoll_wait and one read per ready eventfd; the timerfd is re-armed only
// when a task needs an earlier timer than the armed one (RuntimeStats::timer_arms). While busy,
// epoll is asked (without waiting) every event_check_interval; while spinning idle, every round.
//
// Scheduler: a fixed set of runtimes; places tasks on them.
//
// Threads: add/remove/watch/unwatch/wake are thread-safe. Task methods run on the runtime thread
// only. run_once/sleep_once are for a caller that drives a runtime without starting its thread
// (tests).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "mrpc/base/clock.h"
#include "mrpc/base/limits.h"
#include "mrpc/base/status.h"

namespace mrpc {

class Runtime;

class Task {
 public:
  virtual ~Task() = default;
  // One round of work. Returns whether anything happened.
  virtual bool run() = 0;
  // The earliest clock time the task has work by time alone.
  virtual MonoTime next_timer() const { return kNoDeadline; }
  // About to sleep: false if work appeared (see Operator::prepare_to_sleep).
  virtual bool prepare_to_sleep() { return true; }
  virtual void woke() {}

  // Wakes the runtime this task runs on (thread-safe; nothing if it runs on none).
  void wake_runtime() const;

 private:
  friend class Runtime;
  std::atomic<Runtime*> runtime_{nullptr};
  bool runs_last_ = false;  // Runtime::add's `place`
};

// Where a task runs in each round: in the order added, or after every such task (a transport
// that sends what the other tasks queued in the same round, in one syscall).
enum class TaskPlace { kInOrder, kLast };

struct RuntimeOptions {
  std::string name = "mrpc-rt";
  // Rounds without work keep polling this long (real time) before the thread sleeps.
  Nanos spin_budget = limits::kDefaultSpinBudget;
  // While rounds keep finding work (no sleep), how often the runtime still asks epoll which
  // watched fds are ready, without waiting.
  Nanos event_check_interval = limits::kDaemonListenerCheckInterval;
};

struct RuntimeStats {
  uint64_t rounds = 0;
  uint64_t busy_rounds = 0;
  uint64_t sleeps = 0;
  uint64_t event_checks = 0;  // epoll_wait calls, sleeping or not
  uint64_t timer_arms = 0;    // timerfd_settime calls (only when a sleep needs an earlier timer)
};

class Runtime {
 public:
  Runtime(const Clock& clock, RuntimeOptions options);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // The task runs from the next round on. Thread-safe.
  void add(std::shared_ptr<Task> task, TaskPlace place = TaskPlace::kInOrder);
  // From another thread: the task runs no more once this returns (it waits for the end of the
  // current round). From a task during a round: takes effect when that round ends.
  void remove(const Task* task);
  // An eventfd (or timerfd) whose readiness wakes this runtime; the runtime drains it (reads its
  // counter) when it wakes. Thread-safe. The fd stays owned by the caller, who unwatches it
  // before closing it. UNAVAILABLE if epoll refuses it (out of watches).
  Status watch_eventfd(int fd);
  // Any other fd (a socket): readable wakes the runtime, which leaves the data to the task that
  // reads it. Level-triggered: a task must read it or unwatch it, or the runtime cannot sleep.
  // With `readable`, the runtime sets that flag when it sees the fd readable (after a sleep, and
  // while busy every RuntimeOptions::event_check_interval), so a task reads its socket only then:
  // idle sockets cost no syscall per round, however many there are. The flag must outlive the
  // watch.
  Status watch_readable(int fd, std::atomic<bool>* readable = nullptr);
  // Whether the last sleep ended because a watch_readable fd (not an eventfd or a timer) became
  // readable. Runtime thread only; meant for Task::woke().
  bool woke_by_readable() const { return woke_by_readable_; }
  // Whether epoll was asked which fds are readable since the previous round ended (after a sleep,
  // a spinning round, or a busy round's periodic check): then a watch_readable flag that is not
  // set means the fd had nothing when this round began, and a task need not try it. Runtime
  // thread only.
  bool events_fresh() const { return events_fresh_; }
  // From the runtime thread (a task), or while the runtime's thread is not running: a watch
  // removed from elsewhere could still be returned by the epoll_wait in progress.
  void unwatch(int fd);
  // Ends a sleep now, or prevents the next one. Thread-safe, async-signal-safe.
  void wake();

  void start();
  // Stops the thread after its current round; tasks stay added.
  void stop();
  bool running() const { return thread_.joinable(); }

  // Test driving, when the thread is not started: one round over all tasks.
  bool run_once();
  // Sleep once as the thread would (prepare, epoll until woken or the earliest timer, woke).
  // Returns false if a task refused to sleep.
  bool sleep_once();

  RuntimeStats stats() const;
  const Clock& clock() const { return clock_; }
  size_t task_count() const;

 private:
  void loop();
  struct Watch {
    int fd;
    bool drain;                   // an eventfd or timerfd: read its counter
    std::atomic<bool>* readable;  // set when ready (may be null)
  };
  Status watch(int fd, bool drain, std::atomic<bool>* readable);
  // epoll_wait with `timeout_ms`; drains eventfds and flags readable fds. Returns events seen.
  int check_events(int timeout_ms);
  void apply_pending();
  void insert_task(std::shared_ptr<Task> task);  // round_mutex_ held or in the round
  bool in_round() const;
  MonoTime next_timer() const;

  const Clock& clock_;
  RuntimeOptions options_;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  int timer_fd_ = -1;
  // What the timerfd is armed for (kNoDeadline: disarmed or fired). Runtime thread only.
  MonoTime timer_armed_ = kNoDeadline;
  bool woke_by_readable_ = false;
  bool events_fresh_ = false;
  std::mutex watches_mutex_;
  std::unordered_map<int, std::unique_ptr<Watch>> watches_;  // by fd; for unwatch
  std::atomic<uint64_t> event_checks_{0};
  std::thread thread_;
  std::atomic<bool> stop_{false};

  // Held for a whole round by whichever thread runs it; add/remove from other threads take it.
  std::mutex round_mutex_;
  std::atomic<std::thread::id> round_thread_{};
  std::vector<std::shared_ptr<Task>> tasks_;  // TaskPlace::kLast ones at the end
  size_t last_tasks_ = 0;
  // Changes asked for by a task during a round, applied after it.
  std::vector<std::shared_ptr<Task>> pending_add_;
  std::vector<const Task*> pending_remove_;
  std::atomic<size_t> task_count_{0};

  std::atomic<uint64_t> rounds_{0};
  std::atomic<uint64_t> busy_rounds_{0};
  std::atomic<uint64_t> sleeps_{0};
  std::atomic<uint64_t> timer_arms_{0};
};

class Scheduler {
 public:
  Scheduler(const Clock& clock, size_t threads, RuntimeOptions options);
  ~Scheduler();
  void start();
  void stop();
  // The runtime that has the fewest tasks.
  Runtime& least_loaded();
  Runtime& runtime(size_t index) { return *runtimes_.at(index); }
  size_t size() const { return runtimes_.size(); }

 private:
  std::vector<std::unique_ptr<Runtime>> runtimes_;
};

}  // namespace mrpc
