// DaemonCore: one shard of the daemon (shard_link.h), owned by its runtime thread: its connection
// table, the call table of calls its connections started with their deadlines, its view of the
// service registry, its policy set, its transport, counters, and the jobs other threads post to
// it. With one runtime thread there is one shard and every hand-off below is a plain call.
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
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "connection.h"
#include "mrpc/base/clock.h"
#include "mrpc/base/deadline_heap.h"
#include "mrpc/base/slot_table.h"
#include "mrpc/daemon/daemon.h"
#include "mrpc/dataflow/policy_set.h"
#include "mrpc/dataflow/runtime.h"
#include "mrpc/transports/transport.h"
#include "service_registry.h"
#include "shard_link.h"
#include "uid_budgets.h"

namespace mrpc {

class CodecWorker;   // codec_compiler.h
class TcpTransport;  // tcp_transport.h

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
  std::atomic<uint64_t> turns_skipped_for_bytes{0};  // fair rounds in bytes
  std::atomic<uint64_t> socket_reads{0};             // app sockets read (control messages), ever
  // Times shard 0 looked at the app and control listeners (accept4 each): only when flagged.
  std::atomic<uint64_t> listener_checks{0};
  // Copies of the table sizes, for stats from other threads.
  std::atomic<uint64_t> call_table_size{0};
  std::atomic<uint64_t> call_table_capacity{0};
  std::atomic<uint64_t> deadline_heap_size{0};
  std::atomic<uint64_t> deadline_heap_capacity{0};
  std::atomic<uint64_t> policy_generation{0};
  GateCounters gate;  // the upgrade gate's versions in this shard's graphs (graph.h)
};

// Functions run on a shard's runtime thread at the start of its next round (control plane:
// connections handed over, registry snapshots, policy changes, stats). Thread-safe.
class JobQueue {
 public:
  void post(std::function<void()> job);
  // Runtime thread: runs what was posted; returns whether there was anything.
  bool run();
  // Whether anything waits to run: the runtime must not sleep then (defence in depth: the loop
  // runs a round after every event check that may have drained the wake-up that came with it).
  bool pending() const { return has_jobs_.load(std::memory_order_acquire); }
  Runtime* runtime = nullptr;  // woken by post

 private:
  std::mutex mutex_;
  std::atomic<bool> has_jobs_{false};
  std::vector<std::function<void()>> jobs_;
};

struct DaemonCore;

// What the shards share: the service directory and the way to each other. Set up before the
// runtimes start, read-only after (the directory locks itself).
// App connections (handshaking or ready) per uid, for DaemonConfig::max_connections_per_uid:
// counted by shard 0 at accept, uncounted by the owning shard at close. Thread-safe (one lock;
// connection set-up and tear-down only).
struct DaemonShared {
  // The upgrade gate (graph.h): every call is stamped with it when it enters the caller's egress
  // graph; Daemon::upgrade_policy makes a new epoch current once every graph has the new version.
  std::atomic<uint64_t> admission_epoch{1};
  ServiceDirectory directory;
  UidBudgets uid_budgets;  // connections, calls in flight, receive bytes per uid
  std::vector<DaemonCore*> shards;
};

struct DaemonCore {
  DaemonCore(DaemonConfig config_in, const Clock& clock_in, uint32_t shard_in,
             DaemonShared& shared_in)
      : config(std::move(config_in)), clock(clock_in), shard(shard_in), shared(shared_in) {}

  DaemonConfig config;
  const Clock& clock;
  const uint32_t shard;
  DaemonShared& shared;
  Runtime* runtime = nullptr;
  std::unique_ptr<ShardInbox> inbox;  // links from every shard into this one
  JobQueue jobs;
  // Where this shard's calls go once routed: the LocalTransport, or a LoopbackTransport wrapping
  // it (fault injection).
  Transport* transport = nullptr;
  ServiceTable registry;  // this shard's view of shared.directory
  PolicySet policies;     // every graph of this shard is built from it (the same on every shard)
  SlotTable<std::shared_ptr<Connection>> connections;  // local handles
  SlotTable<CallRecord> calls{shards::kMaxSlot};       // local handles
  DeadlineHeap deadlines;                              // of every call in `calls` (local handles)
  bool draining = false;
  DaemonCounters counters;
  // Registrations: schemas parsed and codecs compiled off the runtime thread
  // (codec_compiler.h). Set by Daemon::start; owned by the Daemon.
  CodecWorker* codec_worker = nullptr;
  // The registered services' codecs, for transports (over `registry`).
  const TransportCodecs* codecs = nullptr;
  // Calls to and from peer daemons (tcp_transport.h); null when the daemon has no TCP link
  // configured (no listen address and no remote services). Set by Daemon::start.
  TcpTransport* tcp = nullptr;

  // The shard whose runtime thread this is (null on other threads): for code shared by every
  // shard's graphs, such as one policy operator attached to apps of several shards.
  static DaemonCore* of_this_thread() { return this_thread_; }
  void bind_to_this_thread() { this_thread_ = this; }

  bool is_local(uint64_t handle) const { return shards::shard_of(handle) == shard; }
  // A connection of this shard that has completed its handshake, or null (also for another
  // shard's connection).
  Connection* connection(ConnectionId id) {
    if (!is_local(id)) return nullptr;
    auto* entry = connections.find(shards::local(id));
    return entry == nullptr || !(*entry)->ready() ? nullptr : entry->get();
  }
  // A reference that keeps a connection of this shard (its memory) alive; null if none.
  std::shared_ptr<const void> pin(ConnectionId id) {
    if (!is_local(id)) return nullptr;
    auto* entry = connections.find(shards::local(id));
    return entry == nullptr ? nullptr : *entry;
  }
  // The connection whose memory `owner` names for `rpc`: this shard's, or the one the RPC
  // pinned when it crossed from another shard; null if neither.
  const Connection* memory_of(const Rpc& rpc, ConnectionId owner);
  // A call of this shard, or null.
  CallRecord* call(SlotHandle id) { return is_local(id) ? calls.find(shards::local(id)) : nullptr; }

  // Sends `message` to shard `to` (never this one).
  void send_to(uint32_t to, ShardMessage message);
  // The server `server` may free its response `delivery`: told now, or through its shard.
  void reply_done(ConnectionId server, uint64_t delivery, std::shared_ptr<const void> pinned);
  // The registry changed: this shard's view takes `update` now, the other shards' through jobs.
  // With `shards_left` (set here to the number of other shards), each of them counts it down
  // once its view has the update and wakes this shard's runtime when it reaches 0: a
  // registration is answered only then, so the app's next call from any shard sees it.
  void publish(const ServiceUpdate& update,
               const std::shared_ptr<std::atomic<size_t>>& shards_left = nullptr);
  // Applies a snapshot to this shard's view (routing the calls it let go).
  void apply(ServiceUpdate update);
  // Brings this shard's view of `service_id` up to the directory's (a miss on the slow path).
  void refresh_service(uint32_t service_id) { apply(shared.directory.snapshot(service_id)); }

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
  // What both of those free: a response block in a receive region, or a response in a heap, and
  // a request copied into its callee's receive region but not delivered.
  void free_held(Rpc& rpc);
  // Frees rpc.received_request (a callee-side policy's copy that is not going to be delivered:
  // the RPC turns back or ends in the callee's ingress graph); nothing if it has none.
  void free_received_request(Rpc& rpc);
  // Frees a block of connection `owner`'s receive region: now, or through its shard.
  void free_received(ConnectionId owner, uint64_t offset);
  // The earliest deadline among calls in flight.
  MonoTime next_deadline() const { return deadlines.earliest(); }
  // Ends every call past its deadline; returns whether any ended.
  bool expire_deadlines();
  // A connection is gone: its calls end without a caller, calls delivered to it fail with
  // UNAVAILABLE, its graphs are drained, its services left.
  void connection_lost(Connection& connection);
  // Updates the table-size counters (after calls start or end).
  void report_tables();

 private:
  static thread_local DaemonCore* this_thread_;
};

}  // namespace mrpc
