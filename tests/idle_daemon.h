// What an idle daemon's runtime may do in 2 s, judged by its own counters (the control socket's
// "stats": runtime_rounds, runtime_sleeps), never by CPU time, which depends on the machine and
// on what else runs on it (under ASan on a loaded CI machine an idle daemon's CPU reached 0.11 s
// in 2 s). Its wake-ups: the stats request that ends the interval and periodic work (none is
// armed while idle; room is left for a few). Its rounds: each wake-up spins up to the spin budget
// (50 us by default: well under 20,000 rounds even at 5 ns a round). A runtime that polled would
// make millions of rounds and never sleep.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <nlohmann/json.hpp>

namespace mrpc::testing {

constexpr uint64_t kIdleSleepsBound = 50;
constexpr uint64_t kIdleRoundsBound = 20'000;

// Checks the runtime counters of two "stats" answers taken 2 s apart while nothing happened.
inline void check_daemon_slept(const nlohmann::json& before, const nlohmann::json& after) {
  const auto delta = [&](const char* name) {
    return after.at(name).get<uint64_t>() - before.at(name).get<uint64_t>();
  };
  MESSAGE("idle daemon in 2 s: ", delta("runtime_rounds"), " rounds, ", delta("runtime_sleeps"),
          " sleeps");
  CHECK(delta("runtime_sleeps") >= 1);  // after the first stats request, at least
  CHECK(delta("runtime_sleeps") <= kIdleSleepsBound);
  CHECK(delta("runtime_rounds") <= kIdleRoundsBound);
}

}  // namespace mrpc::testing
