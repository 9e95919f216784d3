// CallTable: the calls one Connection has in flight to mrpcd, indexed by slot (no hash map, no
// lock on the completion path), and their deadlines.
//
// Call ids are (generation << 32) | slot with slot < max_calls_in_flight: the form mrpcd's
// per-connection call table is indexed by (protocol.h). A slot is reused only after mrpcd said
// kCallDone for its call (or the connection was lost), with the next generation, so ids stay
// unique for cancels and late completions.
//
// A slot's life: kFree -> reserve() (one app thread owns it) -> publish() kInFlight -> claim()
// kClaimed (whoever wins takes the completion: kCallDone, cancel, deadline or loss) -> kEnded
// -> retire() by the completion thread on kCallDone -> kFree, next generation. The state word
// holds the generation too, so a claim by a stale id fails.
//
// Threads: reserve/publish/claim from any thread (lock-free: a tagged free list, CAS on each
// slot's state); retire and the deadline scan from the completion thread. Deadlines: publish()
// pushes its slot on a lock-free stack of new deadlines (one CAS) and lowers earliest_deadline()
// (a CAS loop); the completion thread moves them into its own min-heap, which no other thread
// touches. No mutex on the per-call path.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "mrpc/base/clock.h"
#include "mrpc/client/channel.h"

namespace mrpc::client {

class CallTable {
 public:
  // Ids of calls that fail before reaching mrpcd carry this bit and never name a slot.
  static constexpr uint64_t kLocalOnly = 1ull << 63;

  // `first_generation` (1 to 2^31 - 1): the generation of every slot's first call; a channel's
  // next connection starts past the last one's (max_generation() + 1) so ids stay unique.
  CallTable(uint32_t slots, uint32_t first_generation);
  CallTable(const CallTable&) = delete;
  CallTable& operator=(const CallTable&) = delete;

  uint32_t slots() const { return static_cast<uint32_t>(slots_.size()); }

  // A free slot's call id, owned by the caller until publish() (or give_back()); 0 if every slot
  // holds a call.
  uint64_t reserve();
  // Returns a reserved, never published slot (the call failed before being sent).
  void give_back(uint64_t call_id);
  // Fills the reserved slot and makes it claimable; records its deadline. Returns true if the
  // completion thread may be sleeping past `deadline` (the caller rings its doorbell then).
  bool publish(uint64_t call_id, UntypedCompletion done, MonoTime deadline, ShmHeap* heap,
               uint64_t request_root);

  // Takes the call's completion if the call is still in flight; an empty function if it ended
  // already (or the id is stale or foreign). Any thread.
  UntypedCompletion claim(uint64_t call_id);

  // What kCallDone needs of a slot; completion thread.
  struct Retired {
    UntypedCompletion done;  // empty if the call had ended for the app already
    ShmHeap* heap = nullptr;
    uint64_t request_root = 0;
  };
  // kCallDone for `call_id`: claims the completion if still there, frees the slot for the next
  // generation. nullopt if the id names no published call (stale, foreign, malformed).
  std::optional<Retired> retire(uint64_t call_id);

  // Deadlines. The heap keeps entries of calls that ended meanwhile until they reach the top or
  // until it holds twice the slots (then it drops them all): the earliest entry is an early, never
  // a late, wake-up time, and new calls with the usual timeout need no re-arming.
  // The time the completion thread should be awake by (kNoDeadline if none), counting deadlines
  // published and not yet moved into the heap. No lock.
  MonoTime earliest_deadline() const { return earliest_.load(std::memory_order_acquire); }
  // start_call found the connection lost after publish(): ends the call as fail_all would. The
  // completion comes back in `done` (empty if another thread ended it) and `free_request` is
  // true if this caller must free the request.
  void abandon(uint64_t call_id, UntypedCompletion& done, bool& free_request);
  // Claims the calls whose deadline passed at `now`: (id, completion) pairs appended to `out`.
  // Completion thread.
  void take_expired(MonoTime now, std::vector<std::pair<uint64_t, UntypedCompletion>>& out);
  // The completion thread sleeps until `until` (kNoDeadline, INT64_MIN: awake). publish() of a
  // call due earlier returns true.
  void set_sleeping_until(MonoTime until) {
    sleeping_until_.store(until, std::memory_order_seq_cst);
  }

  // The connection was lost (the caller marked it lost first): claims every call still in flight
  // into `out` and hands each published request to `free_request` (mrpcd will not read them any
  // more). Slots are not reused afterwards. Completion thread.
  template <class FreeRequest>
  void fail_all(std::vector<UntypedCompletion>& out, FreeRequest&& free_request);

  // The highest generation any slot reached. Completion thread, after fail_all.
  uint32_t max_generation() const;

  uint32_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }

 private:
  enum Phase : uint64_t {
    kFree = 0,
    kReserved = 1,
    kInFlight = 2,
    kClaimed = 3,
    kEnded = 4,
    kLost = 5
  };
  static uint64_t word(uint32_t generation, Phase phase) {
    return (static_cast<uint64_t>(generation) << 8) | phase;
  }
  static Phase phase_of(uint64_t state) { return static_cast<Phase>(state & 0xff); }
  static uint32_t generation_of(uint64_t state) { return static_cast<uint32_t>(state >> 8); }
  static uint64_t id(uint32_t generation, uint32_t slot) {
    return (static_cast<uint64_t>(generation) << 32) | slot;
  }

  struct Slot {
    std::atomic<uint64_t> state{0};              // word(generation, phase)
    std::atomic<uint32_t> next_free{0};          // free list link: slot index + 1, 0 = end
    std::atomic<uint32_t> next_new_deadline{0};  // new-deadline stack link, the same way
    uint32_t generation = 1;                     // never 0, below 2^31; written by the slot's owner
    UntypedCompletion done;                      // owned by the table while kInFlight
    MonoTime deadline = kNoDeadline;
    ShmHeap* heap = nullptr;
    uint64_t request_root = 0;
  };
  // The slot of a well-formed id, or null.
  Slot* slot_of(uint64_t call_id);
  // kInFlight(generation) -> kClaimed -> kEnded, moving the completion out. False if lost.
  bool claim_slot(Slot& slot, uint32_t generation, UntypedCompletion& out);
  // The connection is lost: moves a published slot (kInFlight or kEnded) to kLost, taking the
  // completion if it was still in flight. True for the one caller that did (it frees the
  // request); false if the slot is not published or already lost.
  bool lose(Slot& slot, UntypedCompletion& out);
  void push_free(uint32_t index);
  // Completion thread: moves the deadlines publish() stacked into `deadlines_` (a slot is pushed
  // at most once between two drains: retire() drains before freeing a slot).
  void drain_new_deadlines();
  // Completion thread: earliest_ from the heap, re-draining while publishers pushed meanwhile.
  void store_earliest();

  std::vector<Slot> slots_;
  std::atomic<uint64_t> free_head_{0};  // (tag << 32) | (slot index + 1); 0 in the low half: empty
  std::atomic<uint32_t> in_flight_{0};

  std::atomic<uint32_t> new_deadlines_{0};  // stack of published slots: index + 1, 0 = empty
  // Completion thread only: a min-heap; capacity fixed up front.
  std::vector<std::pair<MonoTime, uint64_t>> deadlines_;
  std::atomic<MonoTime> earliest_{kNoDeadline};
  std::atomic<MonoTime> sleeping_until_{INT64_MIN};
};

template <class FreeRequest>
void CallTable::fail_all(std::vector<UntypedCompletion>& out, FreeRequest&& free_request) {
  for (Slot& slot : slots_) {
    UntypedCompletion done;
    // A slot still kReserved is published later by its app thread, which then finds the
    // connection lost and ends the call itself.
    if (!lose(slot, done)) continue;
    if (done) out.push_back(std::move(done));
    free_request(slot.heap, slot.request_root);
  }
  new_deadlines_.store(0, std::memory_order_relaxed);  // those slots are not reused
  deadlines_.clear();
  earliest_.store(kNoDeadline, std::memory_order_release);
}

}  // namespace mrpc::client
