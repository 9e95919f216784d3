#include "mrpc/transports/shm/doorbell.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include <fmt/format.h>

namespace mrpc::shm {

namespace {
std::atomic<uint64_t> rings_made{0};
std::atomic<uint64_t> rung_drains{0};
}  // namespace

uint64_t Doorbell::rung_drains_in_process() {
  return rung_drains.load(std::memory_order_relaxed);
}

uint64_t Doorbell::rings_in_process() {
  return rings_made.load(std::memory_order_relaxed);
}

Doorbell::Doorbell(UniqueFd fd) : fd_(std::move(fd)) {
  if (fd_) {
    const int flags = ::fcntl(fd_.get(), F_GETFL);
    if (flags >= 0) ::fcntl(fd_.get(), F_SETFL, flags | O_NONBLOCK);
  }
}

Expected<Doorbell> Doorbell::create() {
  UniqueFd fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!fd) {
    return Status(StatusCode::kResourceExhausted, fmt::format("eventfd: {}", std::strerror(errno)));
  }
  return Doorbell(std::move(fd));
}

Status Doorbell::ring() const {
  const uint64_t one = 1;
  rings_made.fetch_add(1, std::memory_order_relaxed);
  // EAGAIN means the counter is already near its maximum: the waiter will wake anyway.
  if (::write(fd_.get(), &one, sizeof one) < 0 && errno != EAGAIN) {
    return Status(StatusCode::kUnavailable,
                  fmt::format("ringing doorbell: {}", std::strerror(errno)));
  }
  return Status();
}

Expected<bool> Doorbell::wait(std::optional<std::chrono::nanoseconds> timeout) const {
  pollfd entry{fd_.get(), POLLIN, 0};
  int timeout_ms = -1;
  if (timeout) {
    // Round up so a short timeout still sleeps rather than spinning.
    timeout_ms = static_cast<int>((timeout->count() + 999'999) / 1'000'000);
  }
  int ready = 0;
  do {
    ready = ::poll(&entry, 1, timeout_ms);
  } while (ready < 0 && errno == EINTR);
  if (ready < 0) {
    return Status(StatusCode::kInternal,
                  fmt::format("waiting on doorbell: {}", std::strerror(errno)));
  }
  if (ready == 0) return false;
  drain();
  return true;
}

void Doorbell::drain() const {
  uint64_t count = 0;
  if (::read(fd_.get(), &count, sizeof count) > 0 && count != 0)
    rung_drains.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace mrpc::shm
