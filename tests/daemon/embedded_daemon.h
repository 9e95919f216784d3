// A daemon engine embedded in the test process on real sockets (in a temporary directory), and
// the helpers daemon tests share: one echo call as a well-behaved client makes it, the status of
// a kCallDone, and waiting for a condition with a generous bound.
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <thread>

#include "../runtime_threads.h"
#include "mrpc/daemon/daemon.h"
#include "test_app.h"

namespace mrpc::testing {

struct EmbeddedDaemon {
  explicit EmbeddedDaemon(DaemonConfig config = small_config())
      : daemon(with_paths(std::move(config)), MonotonicClock::instance()) {
    Status started = daemon.start();
    REQUIRE_MESSAGE(started.ok(), started.to_string());
  }
  static DaemonConfig small_config() {
    DaemonConfig config;
    config.heap_bytes = 4 << 20;
    config.receive_bytes = 4 << 20;
    config.ring_entries = 256;
    config.max_calls_in_flight = 64;
    config.runtime_threads = test_runtime_threads();
    return config;
  }
  DaemonConfig with_paths(DaemonConfig config) {
    config.app_socket_path = dir.path("app.sock");
    config.control_socket_path = dir.path("control.sock");
    return config;
  }
  std::string app_socket() const { return dir.path("app.sock"); }
  std::string control_socket() const { return dir.path("control.sock"); }

  TempDir dir;
  Daemon daemon;
};

// One echo call, start to end, as a well-behaved client does it.
inline void check_echo_works(TestApp& client, uint32_t service_id, uint64_t call_id) {
  std::string text = "hello " + std::to_string(call_id);
  client.call_echo(service_id, call_id, text);
  auto done = client.wait_call_done(call_id);
  REQUIRE(done.has_value());
  CHECK(done->status == static_cast<uint32_t>(StatusCode::kOk));
  REQUIRE(done->message_offset != shm::kNoOffset);
  CHECK(client.received_text(done->message_offset) == text);
  client.release(done->message_offset);
}

inline StatusCode call_status(const shm::RingEntry& done) {
  return status_code_from_wire(done.status);
}

// Whether `condition` holds within 10 s (it should hold almost at once; the bound only turns a
// bug into a failure instead of a hang).
template <class Condition>
bool eventually(Condition condition) {
  const MonoTime give_up = MonotonicClock::instance().now() + 10'000'000'000;
  while (!condition()) {
    if (MonotonicClock::instance().now() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// Whether `condition` holds before `progress()` (a count that grows while work is done) stays
// the same for 10 s: for waits whose length depends on the machine's speed (a sanitizer build
// under a parallel load), which fail only when the work stops, not when it is slow.
template <class Progress, class Condition>
bool eventually_while_progressing(Progress progress, Condition condition) {
  auto last = progress();
  MonoTime give_up = MonotonicClock::instance().now() + 10'000'000'000;
  while (!condition()) {
    const MonoTime now = MonotonicClock::instance().now();
    if (auto current = progress(); current != last) {
      last = current;
      give_up = now + 10'000'000'000;
    }
    if (now > give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace mrpc::testing
