// The daemon's per-call path allocates nothing in steady state: every heap allocation made on the
// daemon's runtime thread is counted (this binary replaces the global operator new), and 10,000
// echo calls after a warm-up must add none.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "embedded_daemon.h"
#include "test_app.h"

#include "../counting_new.h"

using namespace mrpc;
using namespace mrpc::testing;

namespace {
void echo_calls(TestApp& client, uint32_t service_id, uint64_t first_id, uint64_t count) {
  for (uint64_t id = first_id; id < first_id + count; ++id) {
    const uint64_t request = client.build_echo("no allocation, please");
    client.submit(client.call_entry(service_id, id, request));
    auto done = client.wait_call_done(id);
    REQUIRE(done.has_value());
    REQUIRE(call_status(*done) == StatusCode::kOk);
    client.release(done->message_offset);
    (void)client.heap().free_message(request);
  }
}
}  // namespace

TEST_CASE("echo calls through the daemon allocate nothing on its runtime thread after a warm-up") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  auto client = TestApp::connect(daemon.app_socket(), "client");
  // The change runs on the daemon's runtime thread: it switches counting on there.
  daemon.daemon
      .change_graphs([](ConnectionId, const CallerIdentity&, ConnectionGraphs) {
        count_allocations_here = true;
      })
      .wait();
  echo_calls(*client, server.service_id(), 1, 1000);  // warm-up: pools and tables grow
  const uint64_t before = counted_allocations.load();
  const uint64_t rounds_before = daemon.daemon.stats().runtime_rounds;
  echo_calls(*client, server.service_id(), 1001, 10000);
  const uint64_t allocations = counted_allocations.load() - before;
  MESSAGE("allocations on the daemon's runtime thread over 10000 calls: ", allocations, " (",
          daemon.daemon.stats().runtime_rounds - rounds_before, " rounds)");
  CHECK(allocations == 0);
}
