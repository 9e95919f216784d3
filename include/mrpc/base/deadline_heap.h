// DeadlineHeap: the earliest deadline among live entries of a SlotTable, as an indexed binary
// min-heap keyed by slot. An entry leaves the heap when its call ends (remove), so the heap holds
// exactly the calls still waiting: no tombstones of finished calls piling up until they reach the
// top. Push, remove and pop are O(log n); storage grows to the high-water mark and is reused.
// Not thread-safe: one owner thread.
#pragma once

#include <cstdint>
#include <vector>

#include "mrpc/base/check.h"
#include "mrpc/base/clock.h"
#include "mrpc/base/slot_table.h"

namespace mrpc {

class DeadlineHeap {
 public:
  struct Entry {
    MonoTime deadline;
    SlotHandle handle;
  };

  // `handle`'s slot must not be in the heap already.
  void push(SlotHandle handle, MonoTime deadline) {
    const uint32_t slot = slot_of(handle);
    if (slot >= position_.size()) position_.resize(slot + 1, kAbsent);
    MRPC_ASSERT(position_[slot] == kAbsent, "slot {} is already in the deadline heap", slot);
    heap_.push_back({deadline, handle});
    position_[slot] = static_cast<uint32_t>(heap_.size() - 1);
    sift_up(heap_.size() - 1);
  }
  // Takes `handle`'s slot out, if it is there (and is `handle`).
  void remove(SlotHandle handle) {
    const uint32_t slot = slot_of(handle);
    if (slot >= position_.size() || position_[slot] == kAbsent) return;
    const size_t at = position_[slot];
    if (heap_[at].handle != handle) return;
    position_[slot] = kAbsent;
    const size_t last = heap_.size() - 1;
    if (at != last) {
      heap_[at] = heap_[last];
      position_[slot_of(heap_[at].handle)] = static_cast<uint32_t>(at);
      heap_.pop_back();
      sift_down(at);
      sift_up(at);
    } else {
      heap_.pop_back();
    }
  }
  bool empty() const { return heap_.empty(); }
  size_t size() const { return heap_.size(); }
  // Memory held: entries the heap has room for.
  size_t capacity() const { return heap_.capacity(); }
  const Entry& top() const { return heap_.front(); }
  MonoTime earliest() const { return heap_.empty() ? kNoDeadline : heap_.front().deadline; }

 private:
  static constexpr uint32_t kAbsent = UINT32_MAX;

  void place(size_t at, const Entry& entry) {
    heap_[at] = entry;
    position_[slot_of(entry.handle)] = static_cast<uint32_t>(at);
  }
  void sift_up(size_t at) {
    Entry moving = heap_[at];
    while (at > 0) {
      size_t parent = (at - 1) / 2;
      if (heap_[parent].deadline <= moving.deadline) break;
      place(at, heap_[parent]);
      at = parent;
    }
    place(at, moving);
  }
  void sift_down(size_t at) {
    Entry moving = heap_[at];
    const size_t size = heap_.size();
    while (true) {
      size_t child = 2 * at + 1;
      if (child >= size) break;
      if (child + 1 < size && heap_[child + 1].deadline < heap_[child].deadline) ++child;
      if (moving.deadline <= heap_[child].deadline) break;
      place(at, heap_[child]);
      at = child;
    }
    place(at, moving);
  }

  std::vector<Entry> heap_;
  std::vector<uint32_t> position_;  // slot -> index in heap_, kAbsent if not there
};

}  // namespace mrpc
