// Daemon: the engine of mrpcd, embeddable (tests run it in-process on a real socket).
// It listens on the app socket and on a separate control socket, runs one dataflow graph per app
// connection (frontend -> router) on its runtime, routes calls to the app serving each service,
// enforces per-app limits and deadlines, and survives whatever an app writes into shared memory.
//
// Threads: start/stop/stats from any one controlling thread; everything else runs on the
// daemon's runtime thread, which owns all connection and call state.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>

#include "mrpc/base/clock.h"
#include "mrpc/base/limits.h"
#include "mrpc/base/status.h"
#include "mrpc/dataflow/graph.h"
#include "mrpc/transports/shm/protocol.h"

namespace mrpc {

struct DaemonConfig {
  std::string app_socket_path = shm::kDefaultAppSocketPath;
  std::string control_socket_path = shm::kDefaultControlSocketPath;
  // Per-app limits, announced to each app in Welcome.
  uint64_t heap_bytes = limits::kDefaultAppHeapBytes;
  uint64_t receive_bytes = limits::kDefaultAppReceiveBytes;
  uint32_t ring_entries = limits::kDefaultRingEntries;
  uint32_t max_calls_in_flight = limits::kDefaultMaxCallsInFlight;
  uint64_t max_message_bytes = limits::kDefaultMaxMessageBytes;
  uint32_t max_connections = limits::kDefaultMaxAppConnections;
  // An app that has not said Hello by then is disconnected.
  std::chrono::nanoseconds handshake_timeout = limits::kAppHandshakeTimeout;
  // Runtime polling: how long an idle runtime spins before it sleeps (0: sleep at once).
  std::chrono::nanoseconds spin_budget = limits::kDefaultSpinBudget;
  // Ring entries (and RPCs per operator) one connection gets handled per round.
  size_t max_batch = limits::kDefaultOperatorBatch;
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

  // Runs `change` on the runtime thread, between rounds, once for the graph of every app
  // connection that has completed its handshake (frontend at 0, router last); the future is ready
  // when it has run. Where live policy splicing plugs in: insert/remove/replace operators there.
  using GraphChange = std::function<void(ConnectionId, const CallerIdentity&, Graph&)>;
  std::future<void> change_graphs(GraphChange change);

  DaemonStats stats() const;
  const DaemonConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mrpc
