#include "mrpc/transports/shm/ring.h"

#include <sched.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "mrpc/base/check.h"
#include "mrpc/transports/shm/doorbell.h"

namespace mrpc::shm {

namespace {

constexpr uint32_t kLargestRingEntries = 1u << 24;

RingView ring_at(std::byte* ring_base, uint32_t entries) {
  MRPC_ASSERT(valid_ring_entries(entries), "entries = {}", entries);
  MRPC_ASSERT(reinterpret_cast<uintptr_t>(ring_base) % alignof(RingHeader) == 0);
  return RingView{
      .header = reinterpret_cast<RingHeader*>(ring_base),
      .slots = reinterpret_cast<RingEntry*>(ring_base + sizeof(RingHeader)),
      .entries = entries,
  };
}

Status corrupt_index(const char* which, uint64_t theirs, uint64_t ours, uint32_t entries) {
  return Status(StatusCode::kDataLoss,
                fmt::format("ring {} index {} is out of range: our index is {}, the ring has {} "
                            "entries",
                            which, theirs, ours, entries));
}

}  // namespace

bool valid_ring_entries(uint32_t entries) {
  return entries != 0 && entries <= kLargestRingEntries && (entries & (entries - 1)) == 0;
}

RingView submission_ring(std::byte* base, uint32_t entries) {
  return ring_at(base + submission_ring_offset(), entries);
}

RingView completion_ring(std::byte* base, uint32_t entries) {
  return ring_at(base + completion_ring_offset(entries), entries);
}

// ---- RingProducer ----

RingProducer::RingProducer(RingView ring, const Doorbell* doorbell)
    : ring_(ring), doorbell_(doorbell) {
  MRPC_ASSERT(ring_.header != nullptr && valid_ring_entries(ring_.entries));
}

Status RingProducer::refresh_head() {
  if (broken_) return corrupt_index("consumer head", cached_head_, tail_, ring_.entries);
  const uint64_t head = ring_.header->head.load(std::memory_order_acquire);
  // Unsigned: a head ahead of our tail wraps to a huge distance and is caught too.
  if (tail_ - head > ring_.entries) {
    broken_ = true;
    cached_head_ = head;
    return corrupt_index("consumer head", head, tail_, ring_.entries);
  }
  cached_head_ = head;
  return Status();
}

Expected<uint32_t> RingProducer::free_slots() {
  MRPC_TRY_STATUS(refresh_head());
  return static_cast<uint32_t>(ring_.entries - (tail_ - cached_head_));
}

Expected<uint32_t> RingProducer::push_batch(std::span<const RingEntry> entries) {
  return publish(entries, /*notify=*/true);
}

Expected<uint32_t> RingProducer::publish(std::span<const RingEntry> entries, bool notify) {
  if (broken_) return corrupt_index("consumer head", cached_head_, tail_, ring_.entries);
  uint64_t free = ring_.entries - (tail_ - cached_head_);
  if (free < entries.size()) {
    MRPC_TRY_STATUS(refresh_head());
    free = ring_.entries - (tail_ - cached_head_);
  }
  const auto count = static_cast<uint32_t>(std::min<uint64_t>(free, entries.size()));
  if (count == 0) return 0u;
  const uint64_t mask = ring_.entries - 1;
  for (uint32_t i = 0; i < count; ++i) {
    std::memcpy(&ring_.slots[(tail_ + i) & mask], &entries[i], sizeof(RingEntry));
  }
  tail_ += count;
  // seq_cst pairs with the consumer's seq_cst store of consumer_sleeping then load of tail: one
  // of the two sides always sees the other, so no wake-up is lost.
  ring_.header->tail.store(tail_, std::memory_order_seq_cst);
  if (notify) notify_if_sleeping();
  return count;
}

Status RingProducer::push_quiet(const RingEntry& entry) {
  auto pushed = publish(std::span<const RingEntry>(&entry, 1), /*notify=*/false);
  if (!pushed) return pushed.status();
  if (*pushed == 0) {
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("ring full ({} entries in flight)", ring_.entries));
  }
  return Status();
}

Status RingProducer::push(const RingEntry& entry) {
  auto pushed = push_batch(std::span<const RingEntry>(&entry, 1));
  if (!pushed) return pushed.status();
  if (*pushed == 0) {
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("ring full ({} entries in flight)", ring_.entries));
  }
  return Status();
}

void RingProducer::notify_if_sleeping() {
  if (ring_.header->consumer_sleeping.load(std::memory_order_seq_cst) == 0) return;
  // Clearing it makes the first producer after the consumer fell asleep the only one to ring.
  if (ring_.header->consumer_sleeping.exchange(0, std::memory_order_seq_cst) != 0 &&
      doorbell_ != nullptr) {
    (void)doorbell_->ring();
  }
}

// ---- SharedRingProducer ----

SharedRingProducer::SharedRingProducer(RingView ring, const Doorbell* doorbell)
    : ring_(ring), doorbell_(doorbell) {
  MRPC_ASSERT(ring_.header != nullptr && valid_ring_entries(ring_.entries));
}

SharedRingProducer::SharedRingProducer(SharedRingProducer&& other) noexcept {
  *this = std::move(other);
}

SharedRingProducer& SharedRingProducer::operator=(SharedRingProducer&& other) noexcept {
  ring_ = other.ring_;
  doorbell_ = other.doorbell_;
  claimed_.store(other.claimed_.load(std::memory_order_relaxed), std::memory_order_relaxed);
  published_.store(other.published_.load(std::memory_order_relaxed), std::memory_order_relaxed);
  corrupt_head_.store(other.corrupt_head_.load(std::memory_order_relaxed),
                      std::memory_order_relaxed);
  return *this;
}

Status SharedRingProducer::publish(const RingEntry& entry, bool notify) {
  uint64_t slot = 0;
  for (;;) {
    const uint64_t bad = corrupt_head_.load(std::memory_order_acquire);
    if (bad != UINT64_MAX) return corrupt_index("consumer head", bad, slot, ring_.entries);
    // The head first: it never passes a slot published before it was read, so `slot` (read
    // after) is at least the head unless the consumer scribbled on it.
    const uint64_t head = ring_.header->head.load(std::memory_order_acquire);
    slot = claimed_.load(std::memory_order_acquire);
    if (slot - head > ring_.entries) {  // unsigned: a head ahead of `slot` is caught too
      // A stale head looks the same: while this thread was between the two loads, the consumer
      // may have moved on and other threads claimed up to their newer head + entries. Only a head
      // that did not move across the load of `slot` bounds it (every claim made meanwhile was
      // checked against a head at most this one), so only that one is judged corrupt.
      if (ring_.header->head.load(std::memory_order_acquire) != head) continue;
      uint64_t none = UINT64_MAX;
      corrupt_head_.compare_exchange_strong(none, head, std::memory_order_acq_rel);
      return corrupt_index("consumer head", head, slot, ring_.entries);
    }
    if (slot - head == ring_.entries) {
      return Status(StatusCode::kResourceExhausted,
                    fmt::format("ring full ({} entries in flight)", ring_.entries));
    }
    if (claimed_.compare_exchange_weak(slot, slot + 1, std::memory_order_acq_rel,
                                       std::memory_order_relaxed)) {
      break;
    }
  }
  std::memcpy(&ring_.slots[slot & (ring_.entries - 1)], &entry, sizeof(RingEntry));
  // In slot order: the shared tail must never cover a slot still being written.
  for (uint32_t spins = 0; published_.load(std::memory_order_acquire) != slot; ++spins) {
    if (spins >= 64) sched_yield();  // the thread before us was descheduled mid-copy
  }
  // seq_cst as in RingProducer::publish (pairs with the consumer's sleep announcement).
  ring_.header->tail.store(slot + 1, std::memory_order_seq_cst);
  published_.store(slot + 1, std::memory_order_release);
  if (notify) notify_if_sleeping();
  return Status();
}

Status SharedRingProducer::push(const RingEntry& entry) {
  return publish(entry, /*notify=*/true);
}

Status SharedRingProducer::push_quiet(const RingEntry& entry) {
  return publish(entry, /*notify=*/false);
}

void SharedRingProducer::notify_if_sleeping_on_entries() {
  if (ring_.header->consumer_sleeping.load(std::memory_order_seq_cst) == 0) return;
  if (ring_.header->tail.load(std::memory_order_seq_cst) ==
      ring_.header->head.load(std::memory_order_seq_cst))
    return;
  notify_if_sleeping();
}

void SharedRingProducer::notify_if_sleeping() {
  if (ring_.header->consumer_sleeping.load(std::memory_order_seq_cst) == 0) return;
  if (ring_.header->consumer_sleeping.exchange(0, std::memory_order_seq_cst) != 0 &&
      doorbell_ != nullptr) {
    (void)doorbell_->ring();
  }
}

// ---- RingConsumer ----

RingConsumer::RingConsumer(RingView ring) : ring_(ring) {
  MRPC_ASSERT(ring_.header != nullptr && valid_ring_entries(ring_.entries));
}

Expected<uint64_t> RingConsumer::read_tail() {
  if (broken_) return corrupt_index("producer tail", head_, head_, ring_.entries);
  const uint64_t tail = ring_.header->tail.load(std::memory_order_acquire);
  // Unsigned: a tail behind our head wraps to a huge distance and is caught too.
  if (tail - head_ > ring_.entries) {
    broken_ = true;
    return corrupt_index("producer tail", tail, head_, ring_.entries);
  }
  return tail;
}

Expected<uint32_t> RingConsumer::pending() {
  auto tail = read_tail();
  if (!tail) return tail.status();
  return static_cast<uint32_t>(*tail - head_);
}

Expected<uint32_t> RingConsumer::pop_batch(std::span<RingEntry> out) {
  auto tail = read_tail();
  if (!tail) return tail.status();
  const auto count = static_cast<uint32_t>(std::min<uint64_t>(*tail - head_, out.size()));
  if (count == 0) return 0u;
  const uint64_t mask = ring_.entries - 1;
  for (uint32_t i = 0; i < count; ++i) {
    std::memcpy(&out[i], &ring_.slots[(head_ + i) & mask], sizeof(RingEntry));
  }
  head_ += count;
  // Release: the copies above are done before the producer may reuse the slots.
  ring_.header->head.store(head_, std::memory_order_release);
  return count;
}

Expected<std::optional<RingEntry>> RingConsumer::pop() {
  RingEntry entry{};
  auto popped = pop_batch(std::span<RingEntry>(&entry, 1));
  if (!popped) return popped.status();
  if (*popped == 0) return std::optional<RingEntry>();
  return std::optional<RingEntry>(entry);
}

bool RingConsumer::prepare_to_sleep() {
  ring_.header->consumer_sleeping.store(1, std::memory_order_seq_cst);
  const uint64_t tail = ring_.header->tail.load(std::memory_order_seq_cst);
  if (tail != head_) {
    ring_.header->consumer_sleeping.store(0, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void RingConsumer::finish_sleep() {
  ring_.header->consumer_sleeping.store(0, std::memory_order_relaxed);
}

bool RingConsumer::take_sleep_announcement() {
  if (ring_.header->consumer_sleeping.load(std::memory_order_seq_cst) == 0) return false;
  return ring_.header->consumer_sleeping.exchange(0, std::memory_order_seq_cst) != 0;
}

}  // namespace mrpc::shm
