// RegionAllocator: hands out blocks of one shared-memory region by offset. Its metadata lives in
// the owner's private memory, never in the region, so the other side of the region cannot
// corrupt it. The app's send heap (ShmHeap) and the daemon's receive regions both use it.
// Not thread-safe: each region has one owner thread, or the owner locks.
#pragma once

#include <cstdint>
#include <memory>

#include "mrpc/base/expected.h"

namespace mrpc {

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

  uint64_t region_bytes() const;
  uint64_t used_bytes() const;  // bytes in live blocks, rounding included
  uint64_t live_blocks() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace mrpc
