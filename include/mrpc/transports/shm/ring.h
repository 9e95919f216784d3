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

#include <atomic>
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

// The producer end of a ring for many threads of one process (libmrpc's app threads posting
// calls, cancels and releases to mrpcd), without a mutex: a thread claims the next slot with one
// CAS on a private index, copies its entry in, then publishes in slot order (it waits, spinning,
// for the threads that claimed the slots before its own to publish theirs: a copy of one entry,
// unless such a thread is descheduled meanwhile, as in DPDK's multi-producer rings). The shared
// header and the checks of the consumer's head are those of RingProducer; the peer still sees a
// single producer.
class SharedRingProducer {
 public:
  SharedRingProducer() = default;
  SharedRingProducer(RingView ring, const Doorbell* doorbell);
  SharedRingProducer(const SharedRingProducer&) = delete;
  SharedRingProducer& operator=(const SharedRingProducer&) = delete;
  // Only before any thread uses either object.
  SharedRingProducer(SharedRingProducer&& other) noexcept;
  SharedRingProducer& operator=(SharedRingProducer&& other) noexcept;

  // Any thread: as RingProducer::push and push_quiet (RESOURCE_EXHAUSTED when full, DATA_LOSS
  // once the consumer's head was found corrupt).
  Status push(const RingEntry& entry);
  Status push_quiet(const RingEntry& entry);
  // Any thread: rings the doorbell if the consumer announced that it sleeps (once per sleep).
  void notify_if_sleeping();
  // The same, but only when entries wait in the ring: a consumer that went to sleep on an empty
  // ring was right to (whoever posts next decides whether to ring).
  void notify_if_sleeping_on_entries();

 private:
  Status publish(const RingEntry& entry, bool notify);

  RingView ring_;
  const Doorbell* doorbell_ = nullptr;
  alignas(64) std::atomic<uint64_t> claimed_{0};    // the next slot a thread may claim
  alignas(64) std::atomic<uint64_t> published_{0};  // slots below it are in the shared tail
  std::atomic<uint64_t> corrupt_head_{UINT64_MAX};  // the bad head once found (then stays)
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
  // For another thread of the consumer's process that must wake it (an entry the producer will
  // post without a doorbell is now due): withdraws the sleep announcement; true if one was set,
  // and then that thread rings the consumer's doorbell itself. Pairs with prepare_to_sleep()
  // (seq_cst): a thread that stored what the consumer re-checks after announcing either is seen
  // by that re-check or sees the announcement here.
  bool take_sleep_announcement();

  uint64_t head() const { return head_; }
  uint32_t entries() const { return ring_.entries; }

 private:
  Expected<uint64_t> read_tail();

  RingView ring_;
  uint64_t head_ = 0;  // ours: the next slot to read
  bool broken_ = false;
};

}  // namespace mrpc::shm
