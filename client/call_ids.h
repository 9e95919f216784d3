// CallIds: the ids libmrpc gives its calls, in the form mrpcd's per-connection call table is
// indexed by (protocol.h: the low 32 bits of a call id, modulo max_calls_in_flight, name the
// daemon's slot for the call): (generation << 32) | slot, with slot < max_calls_in_flight. A
// slot is reused only after its call ended, with the next generation, so ids stay unique for
// cancels and late completions. Ids of calls that fail before reaching the daemon carry
// kLocalOnly and never name a slot.
// Not thread-safe: used under ShmChannel::calls_mutex_.
#pragma once

#include <cstdint>
#include <vector>

namespace mrpc::client {

class CallIds {
 public:
  static constexpr uint64_t kLocalOnly = 1ull << 63;

  // A free id with a slot below `max_slots`; 0 if every such slot is taken.
  uint64_t allocate(uint32_t max_slots) {
    while (!free_.empty()) {
      uint32_t slot = free_.back();
      free_.pop_back();
      if (slot < max_slots) return id(slot);
      // The daemon now allows fewer calls in flight than when this slot was made: retire it.
    }
    if (generation_.size() >= max_slots) return 0;
    generation_.push_back(1);
    return id(static_cast<uint32_t>(generation_.size() - 1));
  }
  // The call with this id ended: its slot is free for the next generation.
  void release(uint64_t call_id) {
    if (call_id & kLocalOnly) return;
    const uint32_t slot = static_cast<uint32_t>(call_id);
    if (slot >= generation_.size() || (call_id >> 32) != generation_[slot]) return;
    generation_[slot] = generation_[slot] == 0x7fffffffu ? 1 : generation_[slot] + 1;
    free_.push_back(slot);
  }
  // Every call ended at once (the connection was lost).
  void release_all() {
    free_.clear();
    for (uint32_t slot = static_cast<uint32_t>(generation_.size()); slot-- > 0;) {
      generation_[slot] = generation_[slot] == 0x7fffffffu ? 1 : generation_[slot] + 1;
      free_.push_back(slot);
    }
  }

 private:
  uint64_t id(uint32_t slot) const {
    return (static_cast<uint64_t>(generation_[slot]) << 32) | slot;
  }

  std::vector<uint32_t> generation_;  // per slot; never 0, below 2^31 (bit 63 stays clear)
  std::vector<uint32_t> free_;
};

}  // namespace mrpc::client
