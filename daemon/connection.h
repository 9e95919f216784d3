// Connection: one app connection of the daemon: its socket, the regions and rings the daemon
// created for it, its two dataflow graphs, and the calls it has in flight on either side:
//   outgoing  calls this app started (caller side), indexed by the app's call-id slot;
//   incoming  calls delivered to this app (callee side) that it has not replied to yet, a slot
//             table whose handles are the call ids the app sees in kIncomingCall.
// Both are bounded by max_calls_in_flight, so a connection's memory is bounded whatever its app
// or its callers do.
// Owned (shared) by DaemonCore's connection table and by its ConnectionTask; runtime thread only.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "mrpc/base/slot_table.h"
#include "mrpc/dataflow/graph.h"
#include "mrpc/message/copy.h"
#include "mrpc/message/region_allocator.h"
#include "mrpc/transports/shm/doorbell.h"
#include "mrpc/transports/shm/region.h"
#include "mrpc/transports/shm/ring.h"
#include "mrpc/transports/shm/unique_fd.h"
#include "uid_budgets.h"

namespace mrpc {

// A call delivered to this connection's app, until its kReplyDone is posted (or the app leaves):
// the request and metadata blocks the daemon placed in its receive region (freed at the reply)
// and the RPC, parked here while the app works on it. After the reply (`replied`) the entry only
// keeps its slot taken while the daemon still reads the response, so that libmrpc, which indexes
// its served calls by slot, never sees a slot's next call before the previous one's kReplyDone.
struct IncomingCall {
  RpcPtr rpc;
  uint64_t request = shm::kNoOffset;
  uint64_t metadata = shm::kNoOffset;
  bool cancelled = false;  // kIncomingCancelled posted
  bool replied = false;    // kReply taken; the slot waits for post_reply_done()
};

// A call this app started: the app's full call id and the daemon's call handle.
struct OutgoingSlot {
  uint64_t app_call_id = 0;
  SlotHandle call = kNoSlotHandle;  // kNoSlotHandle: free
};

struct Connection {
  enum class State { kHandshake, kReady, kClosed };

  ConnectionId id = kNoConnection;
  State state = State::kHandshake;
  MonoTime handshake_deadline = kNoDeadline;  // Hello must arrive by then
  // Fair rounds in bytes (limits::kDefaultRoundCopyBytes): bytes of this connection's messages
  // (its requests, its replies) the daemon may still copy; below zero it sits out its turns.
  // Earned by its own shard each turn (earn_copy_credit); spent by whichever shard copies one of
  // its messages (the callee's for a request, the caller's for a reply): atomic, relaxed.
  mutable std::atomic<int64_t> copy_credit{0};
  void charge_copy(uint64_t bytes) const {
    copy_credit.fetch_sub(static_cast<int64_t>(bytes), std::memory_order_relaxed);
  }
  // A turn's credit, capped at one turn's worth; returns the credit after it.
  int64_t earn_copy_credit(int64_t turn) {
    int64_t credit = copy_credit.load(std::memory_order_relaxed);
    int64_t earned;
    do {
      earned = std::min(credit + turn, turn);
    } while (!copy_credit.compare_exchange_weak(credit, earned, std::memory_order_relaxed));
    return earned;
  }
  shm::UniqueFd socket;
  // Set by the runtime when the socket is readable; the connection reads it only then.
  std::atomic<bool> socket_readable{true};
  std::shared_ptr<const CallerIdentity> identity;
  // It registered a service as a caller with another, compatible schema (SchemaVariant): its
  // calls' messages are converted at its door (schema_convert.h). Runtime thread only.
  bool schema_variants = false;

  shm::UniqueFd heap_fd;  // the app's send heap, a sealed memfd
  shm::Mapping heap;      // the daemon's mapping of it: read-only (the app writes it; untrusted)
  shm::SharedRegion receive;  // the daemon writes; the app maps read-only
  shm::SharedRegion rings;
  shm::Doorbell app_to_daemon;
  shm::Doorbell daemon_to_app;
  shm::RingConsumer submissions;
  shm::RingProducer completions;
  std::unique_ptr<RegionAllocator> receive_allocator;
  // Receive blocks set aside for error text when the region is full (kReservedStatusDetailBlocks,
  // allocated at Hello): free ones here, handed out ones back here on kRelease.
  std::vector<uint64_t> spare_detail_blocks;
  std::vector<uint64_t> lent_detail_blocks;
  uint64_t detail_block_bytes = 0;  // what one spare takes of the region (rounding included)
  // Completions that did not fit in the ring; flushed first every round. Bounded by the calls in
  // flight, since each call posts a fixed number of completions.
  std::deque<shm::RingEntry> overflow;
  // The app corrupted its ring indices: the connection is closed at the end of the round.
  bool broken = false;

  std::vector<OutgoingSlot> outgoing;  // max_calls_in_flight slots
  uint32_t outgoing_in_flight = 0;     // also counted in uid_budget->calls_in_flight
  // Its uid's shared limits (uid_budgets.h); set at accept, valid for the connection's life.
  UidBudget* uid_budget = nullptr;
  SlotTable<IncomingCall> incoming;
  std::unique_ptr<Graph> egress;   // this app's calls: frontend -> policies -> router
  std::unique_ptr<Graph> ingress;  // calls to this app: delivery -> policies -> the app

  ConstRegion heap_view() const { return {heap.data(), heap.size()}; }
  MutableRegion receive_view() const { return {receive.data(), receive.size()}; }
  bool ready() const { return state == State::kReady; }
  Graph& graph(GraphSide side) { return side == GraphSide::kEgress ? *egress : *ingress; }

  // The outgoing slot an app call id maps to: (low 32 bits of the id) mod max_calls_in_flight.
  OutgoingSlot& outgoing_slot(uint64_t app_call_id) {
    return outgoing[static_cast<uint32_t>(app_call_id) % outgoing.size()];
  }

  // One of its calls ended for it (the outgoing slot was cleared): uncounts it here and in its uid.
  void end_outgoing(uint32_t count = 1) {
    outgoing_in_flight -= count;
    if (uid_budget != nullptr) uid_budget->end_calls(count);
  }

  // Posts a completion to the app (ring, or overflow when full). False if the ring is corrupt.
  bool post(const shm::RingEntry& entry);
  // As post(), without ringing a sleeping app: for entries it need not act on at once
  // (kReplyDone: libmrpc bounds its sleep while responses await one, kHeldBlockRecheckMax).
  bool post_quiet(const shm::RingEntry& entry);
  bool post_to_app(const shm::RingEntry& entry, bool quiet);  // post() and post_quiet()
  // Posts kReplyDone for incoming call `delivery` (the daemon no longer reads its response) and
  // frees its slot; quiet (libmrpc bounds its sleep while responses await one).
  void post_reply_done(SlotHandle delivery);
  // Posts kCallDone for the app's call `call_id`: `status`, and `response` (a block in the receive
  // region, or kNoOffset). A non-OK status's text goes into the receive region too (capped at
  // limits::kMaxStatusDetailBytes; left out if there is no room), for the app to release.
  void post_call_done(uint64_t call_id, const Status& status, uint64_t response);
  // Moves overflowed completions into the ring; returns whether any moved.
  bool flush_overflow();
  // Frees a block the daemon placed in the receive region; a bad offset is counted, not fatal.
  Status free_received(uint64_t offset);
  // Brings `receive_bytes_total` up to date with this connection's receive allocator; call after
  // anything allocates or frees there (on close, with `closing`, it withdraws all of it).
  void report_receive_usage(bool closing = false);
  std::atomic<uint64_t>* receive_bytes_total = nullptr;  // DaemonCounters::receive_bytes_in_use
  uint64_t receive_bytes_reported = 0;
};

}  // namespace mrpc
