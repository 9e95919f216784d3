// Runtime and Scheduler: see mrpc/dataflow/runtime.h.
#include "mrpc/dataflow/runtime.h"

#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>

#include "mrpc/base/check.h"

namespace mrpc {
namespace {

int checked(int result, const char* what) {
  if (result < 0) throw std::system_error(errno, std::generic_category(), what);
  return result;
}

void drain_fd(int fd) {
  uint64_t value = 0;
  // eventfd (not a semaphore) and timerfd both read as one u64 that a read resets to 0: one read
  // drains it (EAGAIN: already drained). A second read would be a syscall for nothing.
  [[maybe_unused]] const ssize_t got = ::read(fd, &value, sizeof value);
}

}  // namespace

void Task::wake_runtime() const {
  if (Runtime* runtime = runtime_.load(std::memory_order_acquire)) runtime->wake();
}

Runtime::Runtime(const Clock& clock, RuntimeOptions options)
    : clock_(clock), options_(std::move(options)) {
  epoll_fd_ = checked(::epoll_create1(EPOLL_CLOEXEC), "epoll_create1");
  wake_fd_ = checked(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), "eventfd");
  timer_fd_ = checked(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC), "timerfd");
  for (int fd : {wake_fd_, timer_fd_}) {
    Status watched = watch_eventfd(fd);
    if (!watched.ok()) throw std::runtime_error(watched.to_string());
  }
}

Runtime::~Runtime() {
  stop();
  for (auto& task : tasks_) task->runtime_.store(nullptr, std::memory_order_release);
  ::close(timer_fd_);
  ::close(wake_fd_);
  ::close(epoll_fd_);
}

bool Runtime::in_round() const {
  return round_thread_.load(std::memory_order_acquire) == std::this_thread::get_id();
}

void Runtime::add(std::shared_ptr<Task> task, TaskPlace place) {
  MRPC_ASSERT(task != nullptr);
  task->runs_last_ = place == TaskPlace::kLast;
  task->runtime_.store(this, std::memory_order_release);
  if (in_round()) {
    pending_add_.push_back(std::move(task));
  } else {
    std::lock_guard lock(round_mutex_);
    insert_task(std::move(task));
    task_count_.store(tasks_.size(), std::memory_order_relaxed);
  }
  wake();
}

void Runtime::insert_task(std::shared_ptr<Task> task) {
  if (task->runs_last_) {
    ++last_tasks_;
    tasks_.push_back(std::move(task));
  } else {
    tasks_.insert(tasks_.end() - static_cast<ptrdiff_t>(last_tasks_), std::move(task));
  }
}

void Runtime::remove(const Task* task) {
  if (in_round()) {
    pending_remove_.push_back(task);
    return;
  }
  std::lock_guard lock(round_mutex_);
  auto it = std::find_if(tasks_.begin(), tasks_.end(),
                         [task](const auto& candidate) { return candidate.get() == task; });
  if (it == tasks_.end()) return;
  (*it)->runtime_.store(nullptr, std::memory_order_release);
  if ((*it)->runs_last_) --last_tasks_;
  tasks_.erase(it);
  task_count_.store(tasks_.size(), std::memory_order_relaxed);
}

void Runtime::apply_pending() {
  for (auto& task : pending_add_) insert_task(std::move(task));
  pending_add_.clear();
  for (const Task* task : pending_remove_) {
    auto it = std::find_if(tasks_.begin(), tasks_.end(),
                           [task](const auto& candidate) { return candidate.get() == task; });
    if (it == tasks_.end()) continue;
    (*it)->runtime_.store(nullptr, std::memory_order_release);
    if ((*it)->runs_last_) --last_tasks_;
    tasks_.erase(it);
  }
  pending_remove_.clear();
  task_count_.store(tasks_.size(), std::memory_order_relaxed);
}

Status Runtime::watch_eventfd(int fd) {
  return watch(fd, true, nullptr);
}
Status Runtime::watch_readable(int fd, std::atomic<bool>* readable) {
  return watch(fd, false, readable);
}

Status Runtime::watch(int fd, bool drain, std::atomic<bool>* readable) {
  auto entry = std::make_unique<Watch>(Watch{fd, drain, readable});
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.ptr = entry.get();
  std::lock_guard lock(watches_mutex_);
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event) < 0)
    return Status(StatusCode::kUnavailable,
                  fmt::format("epoll cannot watch fd {}: {}", fd, std::strerror(errno)));
  watches_[fd] = std::move(entry);
  return {};
}

void Runtime::unwatch(int fd) {
  std::lock_guard lock(watches_mutex_);
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  // An epoll_wait in progress on another thread may still return this watch: it is kept until
  // the runtime is destroyed if so; here it is the runtime thread (or no thread runs), so freeing
  // is safe.
  watches_.erase(fd);
}

int Runtime::check_events(int timeout_ms) {
  epoll_event events[64];
  int ready = ::epoll_wait(epoll_fd_, events, 64, timeout_ms);
  event_checks_.fetch_add(1, std::memory_order_relaxed);
  // With every slot used, more fds may be ready than were reported: not fresh then.
  events_fresh_ = ready < 64;
  for (int i = 0; i < ready; ++i) {
    const Watch* watch = static_cast<const Watch*>(events[i].data.ptr);
    if (watch->drain) {
      drain_fd(watch->fd);
      if (watch->fd == timer_fd_) timer_armed_ = kNoDeadline;  // fired: one-shot, disarmed now
    } else {
      woke_by_readable_ = true;
      if (watch->readable != nullptr) watch->readable->store(true, std::memory_order_relaxed);
    }
  }
  return ready < 0 ? 0 : ready;
}

void Runtime::wake() {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t written = ::write(wake_fd_, &one, sizeof one);
}

size_t Runtime::task_count() const {
  return task_count_.load(std::memory_order_relaxed);
}

bool Runtime::run_once() {
  std::lock_guard lock(round_mutex_);
  round_thread_.store(std::this_thread::get_id(), std::memory_order_release);
  bool did_work = false;
  for (size_t i = 0; i < tasks_.size(); ++i) did_work |= tasks_[i]->run();
  events_fresh_ = false;
  apply_pending();
  round_thread_.store(std::thread::id(), std::memory_order_release);
  rounds_.fetch_add(1, std::memory_order_relaxed);
  if (did_work) busy_rounds_.fetch_add(1, std::memory_order_relaxed);
  return did_work;
}

MonoTime Runtime::next_timer() const {
  MonoTime earliest = kNoDeadline;
  for (const auto& task : tasks_) earliest = std::min(earliest, task->next_timer());
  return earliest;
}

bool Runtime::sleep_once() {
  MonoTime timer;
  {
    std::lock_guard lock(round_mutex_);
    round_thread_.store(std::this_thread::get_id(), std::memory_order_release);
    bool may_sleep = true;
    size_t prepared = 0;
    for (; prepared < tasks_.size() && may_sleep; ++prepared)
      may_sleep = tasks_[prepared]->prepare_to_sleep();
    if (!may_sleep) {
      for (size_t i = 0; i < prepared; ++i) tasks_[i]->woke();
      apply_pending();
      round_thread_.store(std::thread::id(), std::memory_order_release);
      return false;
    }
    timer = next_timer();
    round_thread_.store(std::thread::id(), std::memory_order_release);
  }
  // The timerfd is armed only when the earliest timer comes before the one it is armed for: an
  // armed timer that is later than needed, or one no task needs any more, is left as it is (it
  // costs one wake-up with nothing to do when it fires, then the runtime re-arms). So sleeps
  // between calls whose deadlines keep moving out cost no timerfd_settime.
  if (timer < timer_armed_) {
    itimerspec spec{};
    int64_t wait = std::max<int64_t>(timer - clock_.now(), 1);
    spec.it_value.tv_sec = wait / 1'000'000'000;
    spec.it_value.tv_nsec = wait % 1'000'000'000;
    ::timerfd_settime(timer_fd_, 0, &spec, nullptr);
    timer_armed_ = timer;
    timer_arms_.fetch_add(1, std::memory_order_relaxed);
  }
  sleeps_.fetch_add(1, std::memory_order_relaxed);
  woke_by_readable_ = false;
  check_events(-1);
  std::lock_guard lock(round_mutex_);
  round_thread_.store(std::this_thread::get_id(), std::memory_order_release);
  for (auto& task : tasks_) task->woke();
  apply_pending();
  round_thread_.store(std::thread::id(), std::memory_order_release);
  return true;
}

void Runtime::start() {
  MRPC_ASSERT(!thread_.joinable(), "runtime {} started twice", options_.name);
  stop_.store(false, std::memory_order_release);
  thread_ = std::thread([this] { loop(); });
}

void Runtime::stop() {
  if (!thread_.joinable()) return;
  stop_.store(true, std::memory_order_release);
  wake();
  thread_.join();
}

void Runtime::loop() {
  const auto& real_clock = MonotonicClock::instance();
  MonoTime last_work = real_clock.now();
  MonoTime last_event_check = last_work;
  while (!stop_.load(std::memory_order_acquire)) {
    // Every event check without waiting is followed by a round before the thread may sleep: the
    // check drains the wake-up eventfd, so a wake() for work that no task's prepare_to_sleep
    // looks at (a codec job done, say) would otherwise be consumed with its work left undone
    // until some later wake-up.
    const bool worked = run_once();
    const MonoTime now = real_clock.now();
    if (worked) {
      last_work = now;
      if (now - last_event_check >= options_.event_check_interval.count()) {
        // Not sleeping: still notice sockets that became readable.
        woke_by_readable_ = false;
        check_events(0);
        last_event_check = now;
      }
      continue;
    }
    if (now - last_work < options_.spin_budget.count()) {
      // Spinning, but never at the expense of a runnable thread on this core (on a small box it
      // is usually the app this runtime waits for). Each idle round asks epoll which sockets are
      // readable, so a task that reads its socket only when flagged (a TCP link waiting for a
      // reply) sees its data while the runtime spins, not only at the next sleep.
      sched_yield();
      woke_by_readable_ = false;
      check_events(0);
      last_event_check = now;
      continue;
    }
    if (stop_.load(std::memory_order_acquire)) break;
    sleep_once();
    last_work = last_event_check = real_clock.now();
  }
}

RuntimeStats Runtime::stats() const {
  return {rounds_.load(std::memory_order_relaxed), busy_rounds_.load(std::memory_order_relaxed),
          sleeps_.load(std::memory_order_relaxed), event_checks_.load(std::memory_order_relaxed),
          timer_arms_.load(std::memory_order_relaxed)};
}

Scheduler::Scheduler(const Clock& clock, size_t threads, RuntimeOptions options) {
  if (threads == 0) throw std::invalid_argument("a scheduler needs at least one runtime thread");
  for (size_t i = 0; i < threads; ++i) {
    RuntimeOptions per_thread = options;
    per_thread.name = options.name + "-" + std::to_string(i);
    runtimes_.push_back(std::make_unique<Runtime>(clock, per_thread));
  }
}

Scheduler::~Scheduler() {
  stop();
}

void Scheduler::start() {
  for (auto& runtime : runtimes_) runtime->start();
}

void Scheduler::stop() {
  for (auto& runtime : runtimes_) runtime->stop();
}

Runtime& Scheduler::least_loaded() {
  return **std::min_element(runtimes_.begin(), runtimes_.end(), [](const auto& a, const auto& b) {
    return a->task_count() < b->task_count();
  });
}

}  // namespace mrpc
