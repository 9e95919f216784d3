// Doorbell: an eventfd one side writes to wake the other when it sleeps (see protocol.h and
// ring.h for when to ring it). Ring from any thread; wait on it from the one consumer thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

#include "mrpc/base/expected.h"
#include "mrpc/base/status.h"
#include "mrpc/transports/shm/unique_fd.h"

namespace mrpc::shm {

class Doorbell {
 public:
  Doorbell() = default;
  // Wraps an eventfd received from the peer (or created here). The fd is made non-blocking.
  explicit Doorbell(UniqueFd fd);
  // A fresh non-blocking, close-on-exec eventfd.
  static Expected<Doorbell> create();

  // Adds 1 to the counter; wakes a waiter. Never blocks.
  Status ring() const;
  // Blocks until rung or `timeout` passes (none: forever), then resets the counter.
  // Returns true if it was rung, false on timeout.
  Expected<bool> wait(std::optional<std::chrono::nanoseconds> timeout) const;
  // Resets the counter without blocking (for callers that poll the fd themselves, e.g. epoll).
  void drain() const;

  int fd() const { return fd_.get(); }
  // Doorbell writes (ring() calls) made by this process so far, all doorbells together; for
  // tests and benchmarks that count wake-ups per call. Relaxed: a count, not a synchronisation.
  static uint64_t rings_in_process();
  // drain() calls in this process that found the doorbell rung (wake-ups by a peer or another
  // thread), all doorbells together; for tests that count wake-ups per call. Relaxed, as above.
  static uint64_t rung_drains_in_process();
  bool valid() const { return fd_.valid(); }
  UniqueFd& owned_fd() { return fd_; }

 private:
  UniqueFd fd_;
};

}  // namespace mrpc::shm
