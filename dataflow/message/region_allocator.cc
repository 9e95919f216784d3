// RegionAllocator: best-fit allocation over offsets of one region, with coalescing on free. All
// metadata (free extents by size and by offset, live blocks) is in this process's private memory.
#include "mrpc/message/region_allocator.h"

#include <map>
#include <memory_resource>
#include <optional>
#include <set>
#include <unordered_map>
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
  std::pmr::unordered_map<uint64_t, uint64_t> live{&nodes};           // start -> length
  // length -> starts of free blocks
  std::pmr::unordered_map<uint64_t, std::pmr::vector<uint64_t>> cached{&nodes};
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
    for (auto& [length, starts] : cached)
      for (uint64_t start : starts) release(start, length);
    cached.clear();
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
  if (auto hit = s.cached.find(length);
      hit != s.cached.end() && !hit->second.empty() && hit->second.back() % align == 0) {
    start = hit->second.back();
    hit->second.pop_back();
    --s.cached_count;
  }
  if (!start) start = s.allocate_from_extents(length, align);  // best fit
  if (!start && s.cached_count > 0) {
    s.flush_cache();
    start = s.allocate_from_extents(length, align);
  }
  if (start) {
    s.live.emplace(*start, length);
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
  auto live = s.live.find(offset);
  if (live == s.live.end()) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("offset {} is not the start of a live block", offset));
  }
  const uint64_t start = live->first;
  const uint64_t length = live->second;
  s.used_bytes -= length;
  if (s.budget != nullptr) s.budget->uncharge(length);
  s.live.erase(live);
  if (length <= kMaxCachedBlock) {
    s.cached[length].push_back(start);
    ++s.cached_count;
  } else {
    s.release(start, length);
  }
  return Status();
}

Status RegionAllocator::shrink(uint64_t offset, uint64_t bytes) {
  State& s = *state_;
  auto live = s.live.find(offset);
  if (live == s.live.end()) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("offset {} is not the start of a live block", offset));
  }
  const uint64_t length = round_up(bytes == 0 ? 1 : bytes, kGranule);
  if (length > live->second) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("cannot shrink the block at {} of {} bytes to {} bytes", offset,
                              live->second, bytes));
  }
  const uint64_t tail = live->second - length;
  if (tail == 0) return Status();
  live->second = length;
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
