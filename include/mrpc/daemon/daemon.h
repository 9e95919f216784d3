// Daemon: the engine of mrpcd, embeddable (tests run it in-process on a real socket).
// It listens on the app socket and on a separate control socket, runs two dataflow graphs per app
// connection on its runtime (egress: the app's calls, frontend -> policies -> router; ingress:
// calls to the app, transport -> policies -> frontend), routes calls to the apps serving each
// service (round robin over the service's endpoint set),
// enforces per-app limits and deadlines, and survives whatever an app writes into shared memory.
//
// Threads: start/stop/stats from any one controlling thread; everything else runs on the
// daemon's runtime threads (DaemonConfig::runtime_threads shards; each owns the state of the
// connections placed on it: their rings, regions, graphs and calls; see daemon/shard_link.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mrpc/base/clock.h"
#include "mrpc/base/limits.h"
#include "mrpc/base/status.h"
#include "mrpc/dataflow/graph.h"
#include "mrpc/dataflow/policy_set.h"
#include "mrpc/transports/shm/protocol.h"

namespace mrpc {

class LoopbackTransport;
struct ServiceCodecs;  // mrpc/transports/codec.h

// A service served by apps behind other hosts' daemons: a row of the configuration file's static
// table (docs/tcp-transport.md, "Configuration").
struct RemoteServiceConfig {
  enum class Encoding : uint8_t {
    kAuto,      // the default: protobuf wire today (native needs the schema handshake, not built)
    kNative,    // parsed and accepted; calls still use protobuf wire (native over TCP: not built)
    kProtobuf,  // the compiled protobuf wire codec
  };
  std::string service;                 // full name, "echo.EchoService"
  std::vector<std::string> endpoints;  // peer daemons, "address:port"
  Encoding encoding = Encoding::kAuto;
};

struct DaemonConfig {
  std::string app_socket_path = shm::kDefaultAppSocketPath;
  std::string control_socket_path = shm::kDefaultControlSocketPath;
  // Per-app limits, announced to each app in Welcome.
  uint64_t heap_bytes = limits::kDefaultAppHeapBytes;
  uint64_t receive_bytes = limits::kDefaultAppReceiveBytes;
  uint32_t ring_entries = limits::kDefaultRingEntries;
  uint32_t max_calls_in_flight = limits::kDefaultMaxCallsInFlight;
  uint32_t max_calls_served = limits::kDefaultMaxCallsServed;
  uint64_t max_message_bytes = limits::kDefaultMaxMessageBytes;
  uint32_t max_connections = limits::kDefaultMaxAppConnections;
  uint32_t max_connections_per_uid = limits::kDefaultMaxAppConnectionsPerUid;
  // Per uid, over all its connections and runtime threads (docs/security.md): calls in flight,
  // and bytes placed in its connections' receive regions that its apps have not released.
  uint32_t max_calls_in_flight_per_uid = limits::kDefaultMaxCallsInFlightPerUid;
  uint64_t max_receive_bytes_per_uid = limits::kDefaultMaxReceiveBytesPerUid;
  // An app that has not said Hello by then is disconnected.
  std::chrono::nanoseconds handshake_timeout = limits::kAppHandshakeTimeout;
  // Runtime polling: how long an idle runtime spins before it sleeps (0: sleep at once).
  std::chrono::nanoseconds spin_budget = limits::kDefaultSpinBudget;
  // Shards: runtime threads, each owning the connections placed on it (round robin at accept).
  uint32_t runtime_threads = 1;
  // Ring entries (and RPCs per operator) one connection gets handled per round.
  size_t max_batch = limits::kDefaultOperatorBatch;
  // Bytes copied for one connection's messages per turn, on average (fair rounds in bytes).
  uint64_t round_copy_bytes = limits::kDefaultRoundCopyBytes;
  // The compiled codecs (docs/marshalling.md): the JIT's on-disk object cache, a directory the
  // daemon owns (created 0700; refused at start if another user owns it or others may write it).
  // Empty: "jit-cache" next to the app socket (the daemon's runtime directory).
  std::string codec_cache_dir;
  // The compile budget of one registered schema (CodecCompileLimits::max_instructions).
  uint64_t codec_max_instructions = limits::kMaxCodecInstructions;
  // Runs on the codec compile thread before each registration it handles. Tests hold compiles
  // with it (to show calls go on meanwhile); empty otherwise.
  std::function<void()> codec_compile_hook;
  // Service ownership (docs/security.md): the first uid to serve a name owns it while one of its
  // apps serves it and for service_grace_period after; other uids get PERMISSION_DENIED when they
  // try to serve it. A name listed in service_owners may be served only by the uids listed.
  std::chrono::nanoseconds service_grace_period = limits::kDefaultServiceOwnerGracePeriod;
  std::map<std::string, std::vector<uint32_t>> service_owners;
  // Registrations one uid's apps may have created.
  uint32_t max_services_per_uid = limits::kDefaultMaxServicesPerUid;
  // ---- between hosts (docs/tcp-transport.md; mrpcd -c FILE) ----
  // Where peer daemons connect, "address:port" (port 0: any free port, logged); empty: no TCP
  // listener (this daemon can still call out).
  std::string tcp_listen;
  // This host's name in the frames it sends (caller identity); empty: gethostname().
  std::string host_name;
  // The static table of services served behind other daemons; a call goes there when no local
  // app serves its service.
  std::vector<RemoteServiceConfig> remote_services;
};

// One compiled schema of the codec cache.
struct CodecSchemaStats {
  uint64_t key = 0;                   // CompiledSchema::key
  std::string first_service;          // the service whose registration compiled it
  uint64_t functions = 0;             // in its JIT module
  uint64_t instructions = 0;          // IR, before optimization (the compile budget counts these)
  uint64_t generate_nanoseconds = 0;  // IR generation
  uint64_t compile_nanoseconds = 0;   // optimization + machine code (or loading from disk)
  uint64_t registration_nanoseconds = 0;  // the whole registration on the compile thread
  uint64_t registrations = 0;  // registrations served with it (the first one compiled it)
};

// The codec compile thread's counters; a snapshot.
struct CodecStats {
  uint64_t compiles = 0;               // schemas compiled (or loaded from the on-disk cache)
  uint64_t cache_hits = 0;             // registrations that found their schema compiled already
  uint64_t failures = 0;               // compiles refused (budget, unsupported schema)
  uint64_t compile_nanoseconds = 0;    // all compiles together
  uint64_t registrations_pending = 0;  // queued or under way on the compile thread
  uint64_t object_cache_hits = 0;      // modules loaded from the on-disk cache
  uint64_t object_cache_rejected = 0;  // cache entries refused (hash, owner, mode)
  uint64_t cached_schemas = 0;
  // The background O2 recompiles of schemas registered with fast code (docs/marshalling.md).
  uint64_t tier_ups = 0;
  uint64_t tier_up_failures = 0;  // (those keep their fast code)
  uint64_t tier_up_nanoseconds = 0;
  uint64_t tier_ups_pending = 0;
  std::vector<CodecSchemaStats> schemas;  // cached now, in compile order
};

// What one uid's connections hold of the daemon now (its per-uid limits: DaemonConfig).
struct UidUsage {
  uint32_t uid = 0;
  uint32_t connections = 0;
  uint32_t calls_in_flight = 0;
  uint64_t receive_bytes = 0;  // in its connections' receive regions, not yet released
};

// Counters since start; a snapshot.
struct DaemonStats {
  uint64_t connections_accepted = 0;
  uint64_t connections_open = 0;
  uint64_t services = 0;
  uint64_t calls_started = 0;    // kCall entries admitted into a graph
  uint64_t calls_completed = 0;  // kCallDone posted, any status
  uint64_t calls_failed = 0;     // of those, not OK
  uint64_t calls_in_flight = 0;
  uint64_t protocol_errors = 0;  // bad entries, bad releases, bad control messages
  uint64_t runtime_sleeps = 0;
  uint64_t receive_bytes_in_use = 0;  // all apps' receive regions: messages not yet released
  uint64_t late_replies = 0;    // replies or requests that surfaced after their call had ended
  uint64_t attempts_ended = 0;  // attempts ended by operators (mirror replies, retried failures)
  int64_t rpcs_alive = 0;       // RPC descriptors in use (all threads of this process)
  uint64_t turns_skipped_for_bytes = 0;  // turns a connection sat out, in debt for bytes copied
  uint64_t socket_reads = 0;  // app-socket reads (control messages), ever: idle apps add none
  uint64_t runtime_rounds = 0;
  uint64_t runtime_event_checks = 0;  // epoll_wait calls (each sleep has one)
  uint64_t runtime_timer_arms = 0;    // timerfd_settime calls
  uint64_t listener_checks = 0;       // looks at the app and control listeners (accept4 each)
  // The call table and its deadlines: live entries, and the room they hold (high-water mark).
  uint64_t call_table_size = 0;
  uint64_t call_table_capacity = 0;
  uint64_t deadline_heap_size = 0;
  uint64_t deadline_heap_capacity = 0;
  std::vector<UidUsage> uids;  // every uid that ever connected, by uid
  // The upgrade gate (graph.h): replaced operator versions still finishing the calls they
  // admitted, over every graph; those dropped since start; of them, dropped at their calls'
  // deadline with calls left (replies that never came back through them).
  int64_t versions_retiring = 0;
  uint64_t versions_retired = 0;
  uint64_t versions_retired_at_deadline = 0;
  // The policy JIT (one per process, so counted over every daemon of the process): modules LLVM
  // compiled, modules loaded from the on-disk object cache instead, cache entries refused.
  uint64_t policy_modules_built = 0;
  uint64_t policy_object_cache_hits = 0;
  uint64_t policy_object_cache_rejected = 0;
};

// The two graphs of one app connection: egress (its calls, caller side) and ingress (calls to it,
// callee side). Operators inserted at position 0 run first on requests.
struct ConnectionGraphs {
  Graph& egress;
  Graph& ingress;
};

class Daemon {
 public:
  Daemon(DaemonConfig config, const Clock& clock);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Binds both sockets (control socket mode 0600) and starts the runtime thread.
  // UNAVAILABLE if a socket cannot be bound, INVALID_ARGUMENT for a bad configuration.
  Status start();
  // Stops accepting; new calls get UNAVAILABLE; waits up to `drain` for calls in flight to end,
  // then fails what is left with UNAVAILABLE, closes every connection and removes the sockets.
  void stop(std::chrono::nanoseconds drain = std::chrono::seconds(5));

  // Runs `change` on each runtime thread, between rounds, once for the graphs of every app
  // connection of that shard that has completed its handshake (so `change` must be safe to run
  // on several threads, one after another); the future is ready when it has run. Where live
  // policy splicing plugs in: insert/remove/replace operators there (the egress graph's ends are
  // the app's frontend and the router, the ingress graph's the delivery from a transport and the
  // app's frontend; neither end is an operator of the graph).
  using GraphChange = std::function<void(ConnectionId, const CallerIdentity&, ConnectionGraphs)>;
  std::future<void> change_graphs(GraphChange change);

  // ---- the policy set (control plane; any one thread) ----
  // Each returns once every affected graph has switched (each shard's between two of its rounds,
  // shard after shard), with the policy set's new generation; apps that connect later get the
  // set as it is then. A factory is called on the thread of the shard whose graph it serves; an
  // operator it hands to apps of several shards runs on several threads at once.
  // attach: see PolicySet::attach for the errors.
  Expected<uint64_t> attach_policy(PolicyEntry policy);
  Expected<uint64_t> detach_policy(std::string name);
  // A new version in the same place, behind an upgrade gate (graph.h): with every shard parked
  // between rounds, each graph's new operator imports the old one's exported state and becomes
  // the version of the calls admitted from the next epoch on; that epoch is made current at once
  // for all shards. The old versions finish the requests and replies of calls admitted before
  // and leave when the last has ended or its deadline passed (DaemonStats::versions_retiring).
  // Control thread only (not a runtime thread); one upgrade at a time.
  Expected<uint64_t> upgrade_policy(std::string name, OperatorFactory make);
  uint64_t policy_generation() const;

  // Routes every call between this host's apps through a LoopbackTransport, whose API injects a
  // link's faults (drop, delay, reorder, duplicate, corrupt, refuse, die). Before start(), with
  // one runtime thread.
  LoopbackTransport& enable_loopback_faults(uint64_t seed);

  DaemonStats stats() const;
  const DaemonConfig& config() const;

  // ---- the compiled codecs (docs/marshalling.md) ----
  CodecStats codec_stats() const;
  // The codecs of a registered service, as transports get them (TransportCodecs); null if no
  // service has that id. From the runtime thread, between rounds.
  std::shared_ptr<const ServiceCodecs> service_codecs(uint32_t service_id);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mrpc
