// RegionAllocator: hands out blocks of one shared-memory region by offset. Its metadata lives in
// the owner's private memory, never in the region, so the other side of the region cannot
// corrupt it. The app's send heap (ShmHeap) and the daemon's receive regions both use it.
// Not thread-safe: each region has one owner thread, or the owner locks.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "mrpc/base/expected.h"

namespace mrpc {

// Bytes that several allocators hold together, under one limit: the daemon gives the receive
// regions of all of one uid's connections one budget (max_receive_bytes_per_uid), so a uid cannot
// make the daemon write more than that into its regions whatever its connection count. Allocators
// on different threads charge it at once: atomic, relaxed; a charge that would pass the limit is
// refused (two racing charges near the limit may both be refused: conservative, never over).
class ByteBudget {
 public:
  explicit ByteBudget(uint64_t limit) : limit_(limit) {}
  ByteBudget(const ByteBudget&) = delete;
  ByteBudget& operator=(const ByteBudget&) = delete;

  bool try_charge(uint64_t bytes) {
    const uint64_t before = used_.fetch_add(bytes, std::memory_order_relaxed);
    if (before + bytes <= limit_) return true;
    used_.fetch_sub(bytes, std::memory_order_relaxed);
    return false;
  }
  void uncharge(uint64_t bytes) { used_.fetch_sub(bytes, std::memory_order_relaxed); }
  uint64_t used() const { return used_.load(std::memory_order_relaxed); }
  uint64_t limit() const { return limit_; }

 private:
  std::atomic<uint64_t> used_{0};
  const uint64_t limit_;
};

class RegionAllocator {
 public:
  explicit RegionAllocator(uint64_t region_bytes);
  ~RegionAllocator();
  RegionAllocator(RegionAllocator&&) noexcept;
  RegionAllocator& operator=(RegionAllocator&&) noexcept;

  // RESOURCE_EXHAUSTED when no block of `bytes` fits. `align` is a power of two, at most 4096.
  Expected<uint64_t> allocate(uint64_t bytes, uint64_t align = 8);
  // Returns a block. INVALID_ARGUMENT (and no change) if `offset` is not a live block's start,
  // so a bad "release" from an app cannot corrupt the allocator.
  Status free(uint64_t offset);
  // Gives the tail of a live block back: the block keeps its first `bytes` (rounded up to 8).
  // For writers that reserve an upper bound and learn the real size later (the codecs' decoders).
  // INVALID_ARGUMENT (and no change) if `offset` is not a live block's start or the block is
  // smaller than `bytes`.
  Status shrink(uint64_t offset, uint64_t bytes);

  // From now on, every byte this allocator hands out (rounding included) is also charged to
  // `budget`, which must outlive the allocator (what is live now is charged at once, if it fits);
  // an allocation past the budget fails with RESOURCE_EXHAUSTED naming `budget_name`. Returned on
  // free, shrink and destruction.
  Status charge_to(ByteBudget& budget, const char* budget_name);

  uint64_t region_bytes() const;
  uint64_t used_bytes() const;  // bytes in live blocks, rounding included
  uint64_t live_blocks() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace mrpc
