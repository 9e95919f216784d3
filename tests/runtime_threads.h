// The runtime threads (shards) the daemon under test runs with: 1, or what the test binary was
// started with (`--runtime-threads=N`, which the suites registered a second time for the
// multi-shard configuration pass; doctest_main.cc puts it into MRPC_TEST_RUNTIME_THREADS so the
// mrpcd processes a test starts see it too).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <string>

namespace mrpc::testing {

inline uint32_t test_runtime_threads() {
  const char* value = std::getenv("MRPC_TEST_RUNTIME_THREADS");
  if (value == nullptr) return 1;
  const long threads = std::strtol(value, nullptr, 10);
  return threads > 0 ? static_cast<uint32_t>(threads) : 1;
}

}  // namespace mrpc::testing
