#include "mrpc/base/clock.h"

#include <ctime>

namespace mrpc {

MonoTime MonotonicClock::now() const {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<MonoTime>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

const MonotonicClock& MonotonicClock::instance() {
  static const MonotonicClock clock;
  return clock;
}

}  // namespace mrpc
