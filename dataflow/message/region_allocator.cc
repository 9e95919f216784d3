// RegionAllocator: best-fit allocation over offsets of one region, with coalescing on free. All
// metadata (free extents by size and by offset, live blocks) is in this process's private memory.
// The common path (a block of a recurring size allocated and freed again) touches only flat
// arrays: the live blocks' open-addressing table and the per-size lists of freed blocks.
#include "mrpc/message/region_allocator.h"

#include <map>
#include <memory_resource>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "mrpc/base/check.h"

namespace mrpc {
namespace {

constexpr uint64_t kGranule = 8;  // every block's size and start are multiples of this
constexpr uint64_t kMaxAlign = 4096;
// Freed blocks up to this size are kept on a per-size list and handed out again as they are,
// which spares the coalescing structures on the common path (messages of recurring sizes).
// They merge back into the free extents when an allocation would otherwise fail.
constexpr uint64_t kMaxCachedBlock = 4096;

uint64_t round_up(uint64_t value, uint64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

// The live blocks: start -> length, open addressing with linear probing and backward-shift
// deletion (no tombstones), at most half full. Grows (doubling) only when it fills up, so once
// the allocator has seen its working set, allocate and free make no heap allocation.
class LiveTable {
 public:
  LiveTable() : slots_(kInitialSlots) {}

  size_t size() const { return count_; }

  void insert(uint64_t start, uint64_t length) {
    if (2 * (count_ + 1) > slots_.size()) grow();
    place(start, length);
    ++count_;
  }

  // The length of the live block at `start`, or 0 if none starts there.
  uint64_t find(uint64_t start) const {
    for (size_t i = index(start);; i = next(i)) {
      if (slots_[i].length == 0) return 0;
      if (slots_[i].start == start) return slots_[i].length;
    }
  }

  void set_length(uint64_t start, uint64_t length) {
    for (size_t i = index(start);; i = next(i)) {
      MRPC_ASSERT(slots_[i].length != 0, "no live block at {}", start);
      if (slots_[i].start == start) {
        slots_[i].length = length;
        return;
      }
    }
  }

  void erase(uint64_t start) {
    size_t hole = index(start);
    while (slots_[hole].start != start || slots_[hole].length == 0) {
      MRPC_ASSERT(slots_[hole].length != 0, "no live block at {}", start);
      hole = next(hole);
    }
    // Backward shift: move later entries of the probe run into the hole when their home allows.
    for (size_t i = next(hole);; i = next(i)) {
      if (slots_[i].length == 0) break;
      const size_t home = index(slots_[i].start);
      // Whether `home` lies cyclically in (hole, i]: then the entry must stay.
      const bool stays = hole <= i ? (hole < home && home <= i) : (hole < home || home <= i);
      if (stays) continue;
      slots_[hole] = slots_[i];
      hole = i;
    }
    slots_[hole] = Slot{};
    --count_;
  }

 private:
  struct Slot {
    uint64_t start = 0;
    uint64_t length = 0;  // 0: empty (a live block is at least one granule)
  };
  static constexpr size_t kInitialSlots = 64;

  size_t index(uint64_t start) const {
    return static_cast<size_t>((start / kGranule) * 0x9e3779b97f4a7c15ull >> 32) &
           (slots_.size() - 1);
  }
  size_t next(size_t i) const { return (i + 1) & (slots_.size() - 1); }
  void place(uint64_t start, uint64_t length) {
    size_t i = index(start);
    while (slots_[i].length != 0) i = next(i);
    slots_[i] = Slot{start, length};
  }
  void grow() {
    std::vector<Slot> old(slots_.size() * 2);
    old.swap(slots_);
    for (const Slot& slot : old) {
      if (slot.length != 0) place(slot.start, slot.length);
    }
  }

  std::vector<Slot> slots_;
  size_t count_ = 0;
};

}  // namespace

struct RegionAllocator::State {
  uint64_t region_bytes = 0;
  uint64_t used_bytes = 0;
  // The containers' nodes come from this pool, which keeps freed nodes for reuse: once the
  // allocator has seen its working set, allocate and free make no heap allocation (the daemon's
  // per-call path relies on it). Declared first: the containers below use it.
  std::pmr::unsynchronized_pool_resource nodes;
  std::pmr::map<uint64_t, uint64_t> free_by_offset{&nodes};           // start -> length
  std::pmr::set<std::pair<uint64_t, uint64_t>> free_by_size{&nodes};  // (length, start)
  LiveTable live;
  // cached[length / kGranule]: starts of freed blocks of that length (up to kMaxCachedBlock).
  std::vector<std::vector<uint64_t>> cached =
      std::vector<std::vector<uint64_t>>(kMaxCachedBlock / kGranule + 1);
  uint64_t cached_count = 0;
  ByteBudget* budget = nullptr;  // charge_to
  const char* budget_name = "";

  void add_free(uint64_t start, uint64_t length) {
    if (length == 0) return;
    free_by_offset.emplace(start, length);
    free_by_size.emplace(length, start);
  }
  void remove_free(std::pmr::map<uint64_t, uint64_t>::iterator it) {
    free_by_size.erase({it->second, it->first});
    free_by_offset.erase(it);
  }

  // Returns a freed block to the extents, merged with its free neighbours.
  void release(uint64_t start, uint64_t length) {
    auto next = free_by_offset.lower_bound(start);
    if (next != free_by_offset.end() && next->first == start + length) {
      length += next->second;
      remove_free(next);
    }
    auto after = free_by_offset.lower_bound(start);
    if (after != free_by_offset.begin()) {
      auto previous = std::prev(after);
      if (previous->first + previous->second == start) {
        start = previous->first;
        length += previous->second;
        remove_free(previous);
      }
    }
    add_free(start, length);
  }

  void flush_cache() {
    for (size_t granules = 0; granules < cached.size(); ++granules) {
      for (uint64_t start : cached[granules]) release(start, granules * kGranule);
      cached[granules].clear();
    }
    cached_count = 0;
  }

  std::optional<uint64_t> allocate_from_extents(uint64_t length, uint64_t align) {
    for (auto it = free_by_size.lower_bound({length, 0}); it != free_by_size.end(); ++it) {
      const auto [extent_length, extent_start] = *it;
      const uint64_t start = round_up(extent_start, align);
      const uint64_t padding = start - extent_start;
      if (padding + length > extent_length) continue;
      remove_free(free_by_offset.find(extent_start));
      add_free(extent_start, padding);
      add_free(start + length, extent_length - padding - length);
      return start;
    }
    return std::nullopt;
  }
};

RegionAllocator::RegionAllocator(uint64_t region_bytes) : state_(std::make_unique<State>()) {
  state_->region_bytes = region_bytes;
  // Only whole granules are handed out; a ragged tail stays unused.
  state_->add_free(0, region_bytes / kGranule * kGranule);
}

RegionAllocator::~RegionAllocator() {
  if (state_ && state_->budget != nullptr) state_->budget->uncharge(state_->used_bytes);
}
RegionAllocator::RegionAllocator(RegionAllocator&&) noexcept = default;
RegionAllocator& RegionAllocator::operator=(RegionAllocator&& other) noexcept {
  if (this == &other) return *this;
  if (state_ && state_->budget != nullptr) state_->budget->uncharge(state_->used_bytes);
  state_ = std::move(other.state_);
  return *this;
}

Expected<uint64_t> RegionAllocator::allocate(uint64_t bytes, uint64_t align) {
  MRPC_ASSERT(align != 0 && (align & (align - 1)) == 0 && align <= kMaxAlign,
              "align = {} must be a power of two at most {}", align, kMaxAlign);
  State& s = *state_;
  if (bytes > s.region_bytes) {
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("allocation of {} bytes is larger than the region ({} bytes)", bytes,
                              s.region_bytes));
  }
  const uint64_t length = round_up(bytes == 0 ? 1 : bytes, kGranule);
  align = std::max(align, kGranule);
  if (s.budget != nullptr && !s.budget->try_charge(length)) {
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("allocation of {} bytes would pass {}={} ({} bytes in use)", length,
                              s.budget_name, s.budget->limit(), s.budget->used()));
  }
  std::optional<uint64_t> start;
  if (length <= kMaxCachedBlock) {
    std::vector<uint64_t>& hit = s.cached[length / kGranule];
    if (!hit.empty() && hit.back() % align == 0) {
      start = hit.back();
      hit.pop_back();
      --s.cached_count;
    }
  }
  if (!start) start = s.allocate_from_extents(length, align);  // best fit
  if (!start && s.cached_count > 0) {
    s.flush_cache();
    start = s.allocate_from_extents(length, align);
  }
  if (start) {
    s.live.insert(*start, length);
    s.used_bytes += length;
    return *start;
  }
  if (s.budget != nullptr) s.budget->uncharge(length);
  return Status(StatusCode::kResourceExhausted,
                fmt::format("no free block of {} bytes in the region ({} of {} bytes in use)",
                            length, s.used_bytes, s.region_bytes));
}

Status RegionAllocator::free(uint64_t offset) {
  State& s = *state_;
  const uint64_t length = s.live.find(offset);
  if (length == 0) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("offset {} is not the start of a live block", offset));
  }
  const uint64_t start = offset;
  s.used_bytes -= length;
  if (s.budget != nullptr) s.budget->uncharge(length);
  s.live.erase(offset);
  if (length <= kMaxCachedBlock) {
    s.cached[length / kGranule].push_back(start);
    ++s.cached_count;
  } else {
    s.release(start, length);
  }
  return Status();
}

Status RegionAllocator::shrink(uint64_t offset, uint64_t bytes) {
  State& s = *state_;
  const uint64_t live_length = s.live.find(offset);
  if (live_length == 0) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("offset {} is not the start of a live block", offset));
  }
  const uint64_t length = round_up(bytes == 0 ? 1 : bytes, kGranule);
  if (length > live_length) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("cannot shrink the block at {} of {} bytes to {} bytes", offset,
                              live_length, bytes));
  }
  const uint64_t tail = live_length - length;
  if (tail == 0) return Status();
  s.live.set_length(offset, length);
  s.used_bytes -= tail;
  if (s.budget != nullptr) s.budget->uncharge(tail);
  s.release(offset + length, tail);
  return Status();
}

Status RegionAllocator::charge_to(ByteBudget& budget, const char* budget_name) {
  State& s = *state_;
  MRPC_ASSERT(s.budget == nullptr, "the allocator already charges a budget");
  if (!budget.try_charge(s.used_bytes)) {
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("{} bytes in use would pass {}={} ({} bytes in use)", s.used_bytes,
                              budget_name, budget.limit(), budget.used()));
  }
  s.budget = &budget;
  s.budget_name = budget_name;
  return Status();
}

uint64_t RegionAllocator::region_bytes() const {
  return state_->region_bytes;
}
uint64_t RegionAllocator::used_bytes() const {
  return state_->used_bytes;
}
uint64_t RegionAllocator::live_blocks() const {
  return state_->live.size();
}

}  // namespace mrpc
