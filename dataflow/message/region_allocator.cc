// RegionAllocator: best-fit allocation over offsets of one region, with coalescing on free. All
// metadata (free extents by size and by offset, live blocks) is in this process's private memory.
#include "mrpc/message/region_allocator.h"

#include <map>
#include <set>
#include <unordered_map>
#include <utility>

#include "mrpc/base/check.h"

namespace mrpc {
namespace {

constexpr uint64_t kGranule = 8;  // every block's size and start are multiples of this
constexpr uint64_t kMaxAlign = 4096;

uint64_t round_up(uint64_t value, uint64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

}  // namespace

struct RegionAllocator::State {
  uint64_t region_bytes = 0;
  uint64_t used_bytes = 0;
  std::map<uint64_t, uint64_t> free_by_offset;           // start -> length
  std::set<std::pair<uint64_t, uint64_t>> free_by_size;  // (length, start)
  std::unordered_map<uint64_t, uint64_t> live;           // start -> length

  void add_free(uint64_t start, uint64_t length) {
    if (length == 0) return;
    free_by_offset.emplace(start, length);
    free_by_size.emplace(length, start);
  }
  void remove_free(std::map<uint64_t, uint64_t>::iterator it) {
    free_by_size.erase({it->second, it->first});
    free_by_offset.erase(it);
  }
};

RegionAllocator::RegionAllocator(uint64_t region_bytes) : state_(std::make_unique<State>()) {
  state_->region_bytes = region_bytes;
  // Only whole granules are handed out; a ragged tail stays unused.
  state_->add_free(0, region_bytes / kGranule * kGranule);
}

RegionAllocator::~RegionAllocator() = default;
RegionAllocator::RegionAllocator(RegionAllocator&&) noexcept = default;
RegionAllocator& RegionAllocator::operator=(RegionAllocator&&) noexcept = default;

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
  // Best fit among extents that can hold `length` after aligning their start.
  for (auto it = s.free_by_size.lower_bound({length, 0}); it != s.free_by_size.end(); ++it) {
    const auto [extent_length, extent_start] = *it;
    const uint64_t start = round_up(extent_start, align);
    const uint64_t padding = start - extent_start;
    if (padding + length > extent_length) continue;
    s.remove_free(s.free_by_offset.find(extent_start));
    s.add_free(extent_start, padding);
    s.add_free(start + length, extent_length - padding - length);
    s.live.emplace(start, length);
    s.used_bytes += length;
    return start;
  }
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
  uint64_t start = live->first;
  uint64_t length = live->second;
  s.used_bytes -= length;
  s.live.erase(live);
  // Merge with the free neighbours on both sides.
  auto next = s.free_by_offset.lower_bound(start);
  if (next != s.free_by_offset.end() && next->first == start + length) {
    length += next->second;
    s.remove_free(next);
  }
  auto after = s.free_by_offset.lower_bound(start);
  if (after != s.free_by_offset.begin()) {
    auto previous = std::prev(after);
    if (previous->first + previous->second == start) {
      start = previous->first;
      length += previous->second;
      s.remove_free(previous);
    }
  }
  s.add_free(start, length);
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
