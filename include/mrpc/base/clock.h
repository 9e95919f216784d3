// Clock: where every piece of mrpc reads the time, so tests can replace it.
// Times are nanoseconds of CLOCK_MONOTONIC, which every process on a host shares: a deadline
// written by an app is read unchanged by the daemon.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace mrpc {

using Nanos = std::chrono::nanoseconds;
// A point in CLOCK_MONOTONIC time, in nanoseconds.
using MonoTime = int64_t;
inline constexpr MonoTime kNoDeadline = INT64_MAX;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual MonoTime now() const = 0;
};

// The real CLOCK_MONOTONIC.
class MonotonicClock final : public Clock {
 public:
  MonoTime now() const override;
  // A shared instance: it has no state, so sharing it hides nothing.
  static const MonotonicClock& instance();
};

// A clock that moves only when told to; thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(MonoTime start = 0) : now_(start) {}
  MonoTime now() const override { return now_.load(std::memory_order_acquire); }
  void advance(Nanos by) { now_.fetch_add(by.count(), std::memory_order_acq_rel); }
  void set(MonoTime to) { now_.store(to, std::memory_order_release); }

 private:
  std::atomic<MonoTime> now_;
};

}  // namespace mrpc
