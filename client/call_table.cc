#include "call_table.h"

#include <sched.h>

#include <algorithm>

#include "mrpc/base/check.h"

namespace mrpc::client {

namespace {
constexpr uint32_t kMaxGeneration = 0x7fffffffu;

uint32_t next_generation(uint32_t generation) {
  return generation >= kMaxGeneration ? 1 : generation + 1;
}

// Min-heap order on deadlines.
bool later(const std::pair<MonoTime, uint64_t>& a, const std::pair<MonoTime, uint64_t>& b) {
  return a.first > b.first;
}
}  // namespace

CallTable::CallTable(uint32_t slots, uint32_t first_generation) : slots_(slots) {
  MRPC_ASSERT(slots > 0, "a call table needs a slot");
  if (first_generation == 0 || first_generation > kMaxGeneration) first_generation = 1;
  for (Slot& slot : slots_) {
    slot.generation = first_generation;
    slot.state.store(word(first_generation, kFree), std::memory_order_relaxed);
  }
  for (uint32_t index = slots; index-- > 0;) push_free(index);  // slot 0 on top
  // Up front: the heap never grows past twice the slots (see publish), so never reallocates.
  deadlines_.reserve(2 * static_cast<size_t>(slots) + 1);
}

void CallTable::push_free(uint32_t index) {
  uint64_t head = free_head_.load(std::memory_order_relaxed);
  uint64_t desired = 0;
  do {
    slots_[index].next_free.store(static_cast<uint32_t>(head), std::memory_order_relaxed);
    // The tag in the high half changes on every push and pop, so a pop that read a head which
    // was popped and pushed back meanwhile fails its CAS (no ABA).
    desired = (((head >> 32) + 1) << 32) | (index + 1);
  } while (!free_head_.compare_exchange_weak(head, desired, std::memory_order_release,
                                             std::memory_order_relaxed));
}

uint64_t CallTable::reserve() {
  uint64_t head = free_head_.load(std::memory_order_acquire);
  for (;;) {
    const auto top = static_cast<uint32_t>(head);
    if (top == 0) return 0;
    const uint32_t next = slots_[top - 1].next_free.load(std::memory_order_relaxed);
    const uint64_t desired = (((head >> 32) + 1) << 32) | next;
    if (free_head_.compare_exchange_weak(head, desired, std::memory_order_acquire,
                                         std::memory_order_acquire)) {
      break;
    }
  }
  const uint32_t index = static_cast<uint32_t>(head) - 1;
  Slot& slot = slots_[index];
  slot.state.store(word(slot.generation, kReserved), std::memory_order_relaxed);
  in_flight_.fetch_add(1, std::memory_order_relaxed);
  return id(slot.generation, index);
}

CallTable::Slot* CallTable::slot_of(uint64_t call_id) {
  if ((call_id & kLocalOnly) != 0) return nullptr;
  const auto index = static_cast<uint32_t>(call_id);
  const auto generation = static_cast<uint32_t>(call_id >> 32);
  if (index >= slots_.size() || generation == 0 || generation > kMaxGeneration) return nullptr;
  return &slots_[index];
}

void CallTable::give_back(uint64_t call_id) {
  Slot* slot = slot_of(call_id);
  MRPC_ASSERT(slot != nullptr && phase_of(slot->state.load()) == kReserved,
              "give_back of call {:#x}, which is not reserved", call_id);
  slot->state.store(word(slot->generation, kFree), std::memory_order_relaxed);
  in_flight_.fetch_sub(1, std::memory_order_relaxed);
  push_free(static_cast<uint32_t>(call_id));
}

bool CallTable::publish(uint64_t call_id, UntypedCompletion done, MonoTime deadline, ShmHeap* heap,
                        uint64_t request_root) {
  Slot* slot = slot_of(call_id);
  MRPC_ASSERT(slot != nullptr && phase_of(slot->state.load()) == kReserved,
              "publish of call {:#x}, which is not reserved", call_id);
  slot->done = std::move(done);
  slot->deadline = deadline;
  slot->heap = heap;
  slot->request_root = request_root;
  slot->state.store(word(slot->generation, kInFlight), std::memory_order_release);
  // Onto the new-deadline stack (the completion thread moves it into its heap), then lower the
  // earliest deadline: a completion thread that recomputes earliest_ from its heap re-checks the
  // stack afterwards (store_earliest), so the lowering is never lost.
  const auto index = static_cast<uint32_t>(call_id);
  uint32_t head = new_deadlines_.load(std::memory_order_relaxed);
  do {
    slot->next_new_deadline.store(head, std::memory_order_relaxed);
  } while (!new_deadlines_.compare_exchange_weak(head, index + 1, std::memory_order_seq_cst,
                                                 std::memory_order_relaxed));
  MonoTime earliest = earliest_.load(std::memory_order_seq_cst);
  while (deadline < earliest &&
         !earliest_.compare_exchange_weak(earliest, deadline, std::memory_order_seq_cst,
                                          std::memory_order_relaxed)) {
  }
  // Pairs with the completion thread's store of sleeping_until_ then load of earliest_.
  return deadline < sleeping_until_.load(std::memory_order_seq_cst);
}

void CallTable::drain_new_deadlines() {
  uint32_t link = new_deadlines_.exchange(0, std::memory_order_seq_cst);
  while (link != 0) {
    const uint32_t index = link - 1;
    Slot& slot = slots_[index];
    link = slot.next_new_deadline.load(std::memory_order_relaxed);
    if (deadlines_.size() + 1 >= 2 * slots_.size()) {
      // Full of calls that ended: keep the calls still in flight (at most `slots`).
      std::erase_if(deadlines_, [this](const std::pair<MonoTime, uint64_t>& entry) {
        const Slot* owner = slot_of(entry.second);
        return owner == nullptr || owner->state.load(std::memory_order_acquire) !=
                                       word(static_cast<uint32_t>(entry.second >> 32), kInFlight);
      });
      std::make_heap(deadlines_.begin(), deadlines_.end(), later);
    }
    // The slot's generation changes only in retire(), on this thread, after a drain.
    deadlines_.emplace_back(slot.deadline, id(slot.generation, index));
    std::push_heap(deadlines_.begin(), deadlines_.end(), later);
  }
}

void CallTable::store_earliest() {
  do {
    drain_new_deadlines();
    earliest_.store(deadlines_.empty() ? kNoDeadline : deadlines_.front().first,
                    std::memory_order_seq_cst);
  } while (new_deadlines_.load(std::memory_order_seq_cst) != 0);
}

bool CallTable::claim_slot(Slot& slot, uint32_t generation, UntypedCompletion& out) {
  uint64_t expected = word(generation, kInFlight);
  if (!slot.state.compare_exchange_strong(expected, word(generation, kClaimed),
                                          std::memory_order_acquire)) {
    return false;
  }
  out = std::move(slot.done);
  slot.done = nullptr;
  slot.state.store(word(generation, kEnded), std::memory_order_release);
  return true;
}

UntypedCompletion CallTable::claim(uint64_t call_id) {
  UntypedCompletion done;
  if (Slot* slot = slot_of(call_id))
    (void)claim_slot(*slot, static_cast<uint32_t>(call_id >> 32), done);
  return done;
}

std::optional<CallTable::Retired> CallTable::retire(uint64_t call_id) {
  Slot* slot = slot_of(call_id);
  if (slot == nullptr) return std::nullopt;
  // The slot may be published again once free: it must not still be on the new-deadline stack.
  if (new_deadlines_.load(std::memory_order_acquire) != 0) drain_new_deadlines();
  const auto generation = static_cast<uint32_t>(call_id >> 32);
  Retired retired;
  for (;;) {
    const uint64_t state = slot->state.load(std::memory_order_acquire);
    if (generation_of(state) != generation) return std::nullopt;
    const Phase phase = phase_of(state);
    if (phase == kInFlight) {
      if (claim_slot(*slot, generation, retired.done)) break;
      continue;
    }
    if (phase == kClaimed) {  // a cancel or deadline is moving the completion out: a few loads
      sched_yield();
      continue;
    }
    if (phase == kEnded) break;
    return std::nullopt;  // free, reserved (not sent yet) or lost: not a call mrpcd knows
  }
  retired.heap = slot->heap;
  retired.request_root = slot->request_root;
  slot->generation = next_generation(generation);
  slot->state.store(word(slot->generation, kFree), std::memory_order_release);
  in_flight_.fetch_sub(1, std::memory_order_relaxed);
  push_free(static_cast<uint32_t>(call_id));
  return retired;
}

bool CallTable::lose(Slot& slot, UntypedCompletion& out) {
  for (;;) {
    uint64_t state = slot.state.load(std::memory_order_acquire);
    const uint32_t generation = generation_of(state);
    switch (phase_of(state)) {
      case kInFlight:
        if (!claim_slot(slot, generation, out)) continue;
        state = word(generation, kEnded);
        [[fallthrough]];
      case kEnded:
        if (slot.state.compare_exchange_strong(state, word(generation, kLost),
                                               std::memory_order_acq_rel)) {
          return true;
        }
        continue;
      case kClaimed:
        sched_yield();
        continue;
      default:
        return false;
    }
  }
}

void CallTable::abandon(uint64_t call_id, UntypedCompletion& done, bool& free_request) {
  Slot* slot = slot_of(call_id);
  MRPC_ASSERT(slot != nullptr, "abandon of call {:#x}", call_id);
  free_request = lose(*slot, done);
}

uint32_t CallTable::max_generation() const {
  uint32_t highest = 1;
  for (const Slot& slot : slots_) highest = std::max(highest, slot.generation);
  return highest;
}

void CallTable::take_expired(MonoTime now,
                             std::vector<std::pair<uint64_t, UntypedCompletion>>& out) {
  if (now < earliest_.load(std::memory_order_acquire)) return;
  drain_new_deadlines();
  while (!deadlines_.empty() && deadlines_.front().first <= now) {
    const uint64_t call_id = deadlines_.front().second;
    std::pop_heap(deadlines_.begin(), deadlines_.end(), later);
    deadlines_.pop_back();
    if (UntypedCompletion done = claim(call_id)) out.emplace_back(call_id, std::move(done));
  }
  store_earliest();
}

}  // namespace mrpc::client
