// The daemon's state, owned by its runtime thread: connections, the call table, the service
// registry, counters. Operators (frontend, router) and the connection tasks reach each other only
// through DaemonCore, by connection id, so a connection that goes away leaves no dangling
// pointer behind: a lookup simply finds nothing.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <queue>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mrpc/base/clock.h"
#include "mrpc/daemon/daemon.h"
#include "mrpc/dataflow/graph.h"
#include "mrpc/dataflow/runtime.h"
#include "mrpc/message/copy.h"
#include "mrpc/message/region_allocator.h"
#include "mrpc/transports/shm/doorbell.h"
#include "mrpc/transports/shm/region.h"
#include "mrpc/transports/shm/ring.h"
#include "mrpc/transports/shm/unique_fd.h"
#include "service_registry.h"

namespace mrpc {

struct DaemonCore;

// One app connection: its socket, the regions and rings the daemon created for it, and what it
// has in flight. Owned (shared) by DaemonCore::connections and by its ConnectionTask.
struct Connection {
  enum class State { kHandshake, kReady, kClosed };

  ConnectionId id = kNoConnection;
  State state = State::kHandshake;
  MonoTime handshake_deadline = kNoDeadline;  // Hello must arrive by then
  shm::UniqueFd socket;
  std::shared_ptr<const CallerIdentity> identity;

  shm::UniqueFd heap_fd;  // the app's send heap, a sealed memfd
  shm::Mapping heap;      // the daemon's mapping of it: read-only (the app writes it; untrusted)
  shm::SharedRegion receive;  // the daemon writes; the app maps read-only
  shm::SharedRegion rings;
  shm::Doorbell app_to_daemon;
  shm::Doorbell daemon_to_app;
  shm::RingConsumer submissions;
  shm::RingProducer completions;
  std::unique_ptr<RegionAllocator> receive_allocator;
  // Completions that did not fit in the ring; flushed first every round. Bounded by the calls in
  // flight, since each call posts a fixed number of completions.
  std::deque<shm::RingEntry> overflow;
  // The app corrupted its ring indices: the connection is closed at the end of the round.
  bool broken = false;

  // Calls this app started and has not seen end: the app's call id -> the daemon's call id.
  std::unordered_map<uint64_t, uint64_t> outgoing;

  std::unique_ptr<Graph> graph;

  ConstRegion heap_view() const { return {heap.data(), heap.size()}; }
  MutableRegion receive_view() const { return {receive.data(), receive.size()}; }
  bool ready() const { return state == State::kReady; }

  // Posts a completion to the app (ring, or overflow when full). False if the ring is corrupt.
  bool post(const shm::RingEntry& entry);
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

// One call the daemon has admitted, from the caller's kCall until both sides are done with it:
// the caller has seen kCallDone (or left) and the callee has replied (or left).
struct CallRecord {
  enum class Stage { kInGraph, kDelivered };
  uint64_t id = 0;
  ConnectionId caller = kNoConnection;
  uint64_t caller_call_id = 0;
  MonoTime deadline = kNoDeadline;
  Stage stage = Stage::kInGraph;
  bool caller_done = false;  // kCallDone posted, or the caller left
  // Delivered: where the request and metadata lie in the callee's receive region, freed when the
  // callee replies (or leaves).
  ConnectionId callee = kNoConnection;
  bool awaiting_callee = false;
  bool callee_cancelled = false;  // kIncomingCancelled posted
  uint64_t callee_request = shm::kNoOffset;
  uint64_t callee_metadata = shm::kNoOffset;
  // Delivered and the caller not yet answered: the RPC waits here for the reply.
  RpcPtr parked;
};

struct DaemonCounters {
  std::atomic<uint64_t> connections_accepted{0};
  std::atomic<uint64_t> connections_open{0};
  std::atomic<uint64_t> services{0};
  std::atomic<uint64_t> calls_started{0};
  std::atomic<uint64_t> calls_completed{0};
  std::atomic<uint64_t> calls_failed{0};
  std::atomic<uint64_t> calls_in_flight{0};
  std::atomic<uint64_t> protocol_errors{0};
  std::atomic<uint64_t> receive_bytes_in_use{0};
};

struct DaemonCore {
  DaemonCore(DaemonConfig config_in, const Clock& clock_in)
      : config(std::move(config_in)), clock(clock_in) {}

  DaemonConfig config;
  const Clock& clock;
  Runtime* runtime = nullptr;
  ServiceRegistry registry;
  std::unordered_map<ConnectionId, std::shared_ptr<Connection>> connections;
  std::unordered_map<uint64_t, CallRecord> calls;
  // (deadline, call id) of admitted calls; entries of calls already ended are skipped lazily.
  std::priority_queue<std::pair<MonoTime, uint64_t>, std::vector<std::pair<MonoTime, uint64_t>>,
                      std::greater<>>
      deadlines;
  ConnectionId next_connection_id = 1;
  uint64_t next_call_id = 1;
  bool draining = false;
  DaemonCounters counters;

  Connection* connection(ConnectionId id) {
    auto it = connections.find(id);
    return it == connections.end() || !it->second->ready() ? nullptr : it->second.get();
  }
  CallRecord* call(uint64_t id) {
    auto it = calls.find(id);
    return it == calls.end() ? nullptr : &it->second;
  }

  // Posts kCallDone for a call to its caller (if still there) and forgets the caller's id for it.
  // `response` is a block in the caller's receive region (kNoOffset unless OK).
  void complete_for_caller(CallRecord& record, const Status& status, uint64_t response);
  // Ends a call before its reply (deadline, cancel, server gone): the caller gets `status` now, on
  // its graph's reply path if the call was delivered, directly if it is still in the graph; the
  // callee, if it has the request, gets kIncomingCancelled and still owes a kReply.
  void end_early(CallRecord& record, const Status& status);
  // Forgets the record once both sides are done with it.
  void retire_if_done(uint64_t call_id);
  // The earliest deadline among calls whose caller still waits.
  MonoTime next_deadline();
  // Ends every call past its deadline; returns whether any ended.
  bool expire_deadlines();
  // A connection is gone: fail what it served, drop what it called, free what it held.
  void connection_lost(ConnectionId id);
};

}  // namespace mrpc
