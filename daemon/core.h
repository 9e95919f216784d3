// DaemonCore: the daemon's state, owned by its runtime thread: the connection table, the call
// table with its deadlines, the service registry, the transports, counters.
//
// The life of a call on one host (see also transport.h):
//   caller's frontend (AppFrontend::poll: kCall)  -> caller's egress graph (policies)
//   -> Router (endpoint from the service's endpoint set) -> a Transport (local: LocalTransport)
//   -> callee's ingress graph (policies) -> AppFrontend::deliver (kIncomingCall, parked in the
//   callee's incoming table) ... the callee's kReply -> callee's ingress graph, reply path
//   -> Transport (response copied into the caller's receive region)
//   -> caller's egress graph, reply path -> AppFrontend::complete (kCallDone).
// The call table holds the caller's side of each call until it ends for the caller (reply,
// error, deadline, cancel, caller gone); then its record is reclaimed at once. Anything still
// travelling for that call (an RPC in a graph, a request parked at the callee) finds its call
// handle stale when it surfaces and is discarded, freeing what it holds: a late reply.
//
// Everything is addressed by slot handles (connections, calls, incoming calls, services): a
// connection that went away leaves no dangling pointer, a lookup simply finds nothing, and no
// lookup on the per-call path hashes.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "connection.h"
#include "mrpc/base/clock.h"
#include "mrpc/base/deadline_heap.h"
#include "mrpc/base/slot_table.h"
#include "mrpc/daemon/daemon.h"
#include "mrpc/dataflow/policy_set.h"
#include "mrpc/dataflow/runtime.h"
#include "mrpc/transports/transport.h"
#include "service_registry.h"

namespace mrpc {

class CodecWorker;  // codec_compiler.h

// Where one attempt of a call was delivered: the callee and its incoming-table handle.
struct Delivery {
  ConnectionId callee = kNoConnection;
  SlotHandle handle = kNoSlotHandle;
};

// The caller's side of one call, from its kCall until it ends for the caller.
struct CallRecord {
  ConnectionId caller = kNoConnection;
  uint64_t app_call_id = 0;  // the id the calling app chose
  MonoTime deadline = kNoDeadline;
  // Where its attempts were delivered (to cancel those still running when the call ends).
  std::array<Delivery, limits::kMaxAttemptsPerCall> deliveries{};
  uint32_t delivered = 0;
  bool waiting_for_server = false;  // a wait_for_ready call parked until a server registers
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
  std::atomic<uint64_t> late_replies{0};    // replies (or requests) of calls already ended
  std::atomic<uint64_t> attempts_ended{0};  // attempts ended by operators (mirrors, retried)
  std::atomic<uint64_t> socket_reads{0};    // app sockets read (control messages), ever
  // Copies of the table sizes, for stats from other threads.
  std::atomic<uint64_t> call_table_size{0};
  std::atomic<uint64_t> call_table_capacity{0};
  std::atomic<uint64_t> deadline_heap_size{0};
  std::atomic<uint64_t> deadline_heap_capacity{0};
  std::atomic<uint64_t> policy_generation{0};
};

struct DaemonCore {
  DaemonCore(DaemonConfig config_in, const Clock& clock_in)
      : config(std::move(config_in)), clock(clock_in) {}

  DaemonConfig config;
  const Clock& clock;
  Runtime* runtime = nullptr;
  // Where calls to this host's apps go: the LocalTransport, or a LoopbackTransport wrapping it
  // (fault injection).
  Transport* transport = nullptr;
  ServiceRegistry registry;
  PolicySet policies;  // every graph is built from it
  SlotTable<std::shared_ptr<Connection>> connections;
  SlotTable<CallRecord> calls;
  DeadlineHeap deadlines;  // of every call in `calls`
  bool draining = false;
  DaemonCounters counters;
  // Registrations: schemas parsed and codecs compiled off the runtime thread
  // (codec_compiler.h). Set by Daemon::start; owned by the Daemon.
  CodecWorker* codec_worker = nullptr;
  // The registered services' codecs, for transports (over `registry`).
  const TransportCodecs* codecs = nullptr;

  // A connection that has completed its handshake, or null.
  Connection* connection(ConnectionId id) {
    auto* entry = connections.find(id);
    return entry == nullptr || !(*entry)->ready() ? nullptr : entry->get();
  }
  CallRecord* call(SlotHandle id) { return calls.find(id); }

  // Admits a new call into the call table; kNoSlotHandle if the table is full.
  SlotHandle start_call(const CallRecord& record);
  // The call ends for its caller with `status` and `response` (a block in the caller's receive
  // region, or kNoOffset): kCallDone is posted (if the caller is still there), the callee is told
  // if it still holds the request, and the record is reclaimed.
  void finish_call(SlotHandle call, const Status& status, uint64_t response);
  // An RPC whose call has ended surfaced somewhere: free what it still holds (a response block in
  // a receive region, a response in a server's heap) and forget it.
  void discard(RpcPtr rpc);
  // An operator ended an attempt (Output::end): free what it holds, as discard does.
  void end_attempt(RpcPtr rpc);
  // What both of those free: a response block in a receive region, or a response in a heap.
  void free_held(const Rpc& rpc);
  // The earliest deadline among calls in flight.
  MonoTime next_deadline() const { return deadlines.earliest(); }
  // Ends every call past its deadline; returns whether any ended.
  bool expire_deadlines();
  // A connection is gone: its calls end without a caller, calls delivered to it fail with
  // UNAVAILABLE, its graphs are drained, its services left.
  void connection_lost(Connection& connection);
  // Updates the table-size counters (after calls start or end).
  void report_tables();
};

}  // namespace mrpc
