// Soak (label soak, not in the default run): 1,000,000 echo calls, 64 in flight, through real
// processes; every call answered and the heap back where it started.
#include <doctest/doctest.h>

#include "echo.mrpc.h"
#include "echo_host.h"
#include "echo_load.h"
#include "mrpc/message/shm_heap.h"

using namespace std::chrono_literals;

TEST_CASE("soak: 1,000,000 echo calls with 64 in flight, memory reclaimed") {
  mrpc::testing::EchoHost echo;
  std::shared_ptr<mrpc::Channel>& channel = echo.channel;
  echo::EchoLoadOptions warmup;
  warmup.calls = 10;
  REQUIRE(echo::run_echo_load(channel, warmup).answered == 10);
  const uint64_t heap_before = channel->heap().used_bytes();

  echo::EchoLoadOptions load;
  load.calls = 1'000'000;
  load.in_flight = 64;
  load.timeout = 120s;
  echo::EchoLoadResult result = echo::run_echo_load(channel, load);
  INFO(result.summary());
  CHECK(result.answered == 1'000'000);
  CHECK(result.failed() == 0);
  CHECK(channel->heap().used_bytes() == heap_before);
}
