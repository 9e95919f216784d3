#include "mrpc/base/clock.h"

#include <ctime>

namespace mrpc {

MonoTime MonotonicClock::now() const {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<MonoTime>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

const MonotonicClock& MonotonicClock::instance() {
  // Never destroyed: threads that outlive main's statics (a test's or fuzzer's daemon kept for the
  // process's life, its echo server still polling) may read the clock during static destruction.
  static const MonotonicClock* const clock = new MonotonicClock();
  return *clock;
}

}  // namespace mrpc
