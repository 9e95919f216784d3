// The single-producer single-consumer rings of protocol.h: RingProducer and RingConsumer over a
// RingHeader and its slots in the shared rings region.
//
// Each object is used by one thread (the ring's one producer or one consumer); the peer process
// uses the other end. Both keep their own index in private memory and only ever store it to the
// shared header, never read it back, so a peer scribbling on the header cannot move them. The
// peer's index is read once per operation and checked: a producer tail or consumer head that is
// more than `entries` away from ours is corruption, reported as DATA_LOSS (never a crash, never
// an out-of-bounds slot), and the end stays broken afterwards.
// Each entry is copied out of (or into) the shared slot exactly once.
//
// Sleeping: a consumer that found the ring empty for long enough calls prepare_to_sleep(); if it
// returns true it blocks on its doorbell (or epoll on doorbell fds) then calls finish_sleep().
// A producer that publishes while the consumer's `consumer_sleeping` is set rings the doorbell it
// was given, so a busy ring costs no syscalls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "mrpc/base/expected.h"
#include "mrpc/base/status.h"
#include "mrpc/transports/shm/protocol.h"

namespace mrpc::shm {

class Doorbell;

// Where one ring lives in this process's mapping of the rings region.
struct RingView {
  RingHeader* header = nullptr;
  RingEntry* slots = nullptr;
  uint32_t entries = 0;  // a power of two
};

// True if `entries` is a power of two no larger than 2^24 (the largest ring mrpc builds).
bool valid_ring_entries(uint32_t entries);
// The two rings of a rings region of rings_region_bytes(entries) bytes mapped at `base`
// (64-byte aligned, as mmap gives).
RingView submission_ring(std::byte* base, uint32_t entries);
RingView completion_ring(std::byte* base, uint32_t entries);

class RingProducer {
 public:
  RingProducer() = default;
  // Starts at index 0: rings are fresh (zero-filled) per connection. `doorbell` (not owned, may
  // be null) is rung when the consumer sleeps; it must outlive the producer.
  RingProducer(RingView ring, const Doorbell* doorbell);

  // Copies `entry` into the next slot and publishes it. RESOURCE_EXHAUSTED if the ring is full,
  // DATA_LOSS if the consumer's head is corrupt.
  Status push(const RingEntry& entry);
  // As push(), without ringing the doorbell: for entries the consumer need not act on soon. The
  // caller rings later with notify_if_sleeping() if the consumer may otherwise sleep on them.
  Status push_quiet(const RingEntry& entry);
  // Publishes as many of `entries` as fit, in order, with one tail store and at most one doorbell
  // write. Returns how many were published (0 when full); DATA_LOSS as push().
  Expected<uint32_t> push_batch(std::span<const RingEntry> entries);
  // Free slots as of now; DATA_LOSS if the consumer's head is corrupt.
  Expected<uint32_t> free_slots();

  // Rings the doorbell if the consumer announced that it sleeps (once per sleep).
  void notify_if_sleeping();

  uint64_t tail() const { return tail_; }
  uint32_t entries() const { return ring_.entries; }

 private:
  Status refresh_head();
  Expected<uint32_t> publish(std::span<const RingEntry> entries, bool notify);

  RingView ring_;
  const Doorbell* doorbell_ = nullptr;
  uint64_t tail_ = 0;         // ours: the next slot to fill
  uint64_t cached_head_ = 0;  // the consumer's head as last read
  bool broken_ = false;
};

class RingConsumer {
 public:
  RingConsumer() = default;
  // Starts at index 0: rings are fresh (zero-filled) per connection.
  explicit RingConsumer(RingView ring);

  // Copies up to out.size() entries out, in order, and frees their slots. Returns how many
  // (0 when empty); DATA_LOSS if the producer's tail is corrupt.
  Expected<uint32_t> pop_batch(std::span<RingEntry> out);
  // One entry, or nullopt when empty.
  Expected<std::optional<RingEntry>> pop();
  // Entries waiting now; DATA_LOSS if the producer's tail is corrupt.
  Expected<uint32_t> pending();

  // Announces sleep, then re-checks: true means the ring is still empty and the caller may block
  // on its doorbell (then call finish_sleep()); false means entries arrived (the announcement is
  // withdrawn, do not block). A corrupt tail also returns false, for pop to report it.
  bool prepare_to_sleep();
  void finish_sleep();

  uint64_t head() const { return head_; }
  uint32_t entries() const { return ring_.entries; }

 private:
  Expected<uint64_t> read_tail();

  RingView ring_;
  uint64_t head_ = 0;  // ours: the next slot to read
  bool broken_ = false;
};

}  // namespace mrpc::shm
