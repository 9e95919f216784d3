#include <doctest/doctest.h>

#include "mrpc/base/clock.h"
#include "mrpc/base/random.h"

using namespace std::chrono_literals;

TEST_CASE("manual clock moves only when told") {
  mrpc::ManualClock clock(1000);
  CHECK(clock.now() == 1000);
  clock.advance(5us);
  CHECK(clock.now() == 6000);
  clock.set(42);
  CHECK(clock.now() == 42);
}

TEST_CASE("monotonic clock never goes back") {
  const auto& clock = mrpc::MonotonicClock::instance();
  auto a = clock.now();
  auto b = clock.now();
  CHECK(b >= a);
  CHECK(a > 0);
}

TEST_CASE("seeded random replays the same sequence for the same seed") {
  mrpc::SeededRandom a(7), b(7), c(8);
  bool all_same_as_c = true;
  for (int i = 0; i < 100; ++i) {
    auto x = a.next_u64();
    CHECK(x == b.next_u64());
    all_same_as_c = all_same_as_c && (x == c.next_u64());
    double u = a.next_unit();
    b.next_unit();
    c.next_unit();
    CHECK(u >= 0.0);
    CHECK(u < 1.0);
  }
  CHECK_FALSE(all_same_as_c);
}
