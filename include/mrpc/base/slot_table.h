// SlotTable<T>: a table of live entries addressed by 64-bit handles, (generation << 32) | slot.
// Lookup is an index and a generation compare: no hashing. Erasing an entry bumps its slot's
// generation, so a handle kept past the entry's end (a late reply, a cancel that raced the end)
// finds nothing instead of someone else's entry. Slots are reused through a free list; storage
// only grows to the high-water mark of live entries, so a table in steady state never allocates.
// References to entries stay valid until the entry is erased (slots live in a deque).
// Not thread-safe: one owner thread.
#pragma once

#include <cstdint>
#include <deque>
#include <limits>
#include <utility>
#include <vector>

#include "mrpc/base/check.h"

namespace mrpc {

using SlotHandle = uint64_t;
inline constexpr SlotHandle kNoSlotHandle = 0;  // generations start at 1: never a live handle

inline constexpr uint32_t slot_of(SlotHandle handle) {
  return static_cast<uint32_t>(handle & 0xffffffffu);
}

template <typename T>
class SlotTable {
 public:
  // At most `max_entries` live at once (insert fails past it).
  explicit SlotTable(size_t max_entries = std::numeric_limits<uint32_t>::max())
      : max_entries_(max_entries) {}

  // A new entry holding `value`; kNoSlotHandle when max_entries are live.
  SlotHandle insert(T value) {
    if (live_ >= max_entries_) return kNoSlotHandle;
    uint32_t slot;
    if (!free_.empty()) {
      slot = free_.back();
      free_.pop_back();
    } else {
      MRPC_ASSERT(slots_.size() < std::numeric_limits<uint32_t>::max());
      slot = static_cast<uint32_t>(slots_.size());
      slots_.emplace_back();
      free_.reserve(slots_.size());  // erase never allocates
    }
    Slot& entry = slots_[slot];
    entry.live = true;
    entry.value = std::move(value);
    ++live_;
    return (static_cast<uint64_t>(entry.generation) << 32) | slot;
  }

  // The live entry `handle` names, or null (never issued, erased, or its slot reused since).
  T* find(SlotHandle handle) {
    const uint32_t slot = slot_of(handle);
    if (slot >= slots_.size()) return nullptr;
    Slot& entry = slots_[slot];
    return entry.live && entry.generation == (handle >> 32) ? &entry.value : nullptr;
  }
  const T* find(SlotHandle handle) const { return const_cast<SlotTable*>(this)->find(handle); }

  // Ends the entry (its value is reset to T{}); false if `handle` names no live entry.
  bool erase(SlotHandle handle) {
    T* value = find(handle);
    if (value == nullptr) return false;
    const uint32_t slot = slot_of(handle);
    Slot& entry = slots_[slot];
    entry.value = T{};
    entry.live = false;
    entry.generation =
        entry.generation == std::numeric_limits<uint32_t>::max() ? 1 : entry.generation + 1;
    free_.push_back(slot);
    --live_;
    return true;
  }

  // Calls fn(handle, T&) for every live entry, in slot order. fn may erase the entry it is given.
  template <typename Fn>
  void for_each(Fn&& fn) {
    for (uint32_t slot = 0; slot < slots_.size(); ++slot) {
      Slot& entry = slots_[slot];
      if (entry.live) fn((static_cast<uint64_t>(entry.generation) << 32) | slot, entry.value);
    }
  }

  size_t size() const { return live_; }
  // Slots ever allocated: the table's memory, which does not shrink.
  size_t capacity() const { return slots_.size(); }
  size_t max_entries() const { return max_entries_; }

 private:
  struct Slot {
    uint32_t generation = 1;
    bool live = false;
    T value{};
  };
  size_t max_entries_;
  size_t live_ = 0;
  std::deque<Slot> slots_;
  std::vector<uint32_t> free_;
};

}  // namespace mrpc
