// One benchmark measurement: a client loop run in this process against server-side processes
// already started, with every process's CPU time charged to the calls (from /proc/PID/stat, user +
// system, before/after the run: start-up excluded). Shared by echo_bench and two_hosts_bench.
// Single-threaded: the driver's thread calls measure().
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "latency_recorder.h"
#include "mrpc/base/expected.h"
#include "mrpc/base/subprocess.h"

namespace mrpc::bench {

// A process taking part in a measurement (daemon, server, proxy), whose CPU time is charged to
// the calls; its owner keeps it running for the measurement.
struct Participant {
  std::string role;
  pid_t pid = -1;
};

// Processes a measurement charges its calls to, owned here (each stopped, SIGKILL, when this goes).
struct Processes {
  std::vector<std::pair<std::string, Subprocess>> owned;
  void add(std::string role, Subprocess process) {
    owned.emplace_back(std::move(role), std::move(process));
  }
  std::vector<Participant> participants() const {
    std::vector<Participant> list;
    for (const auto& [role, process] : owned) list.push_back({role, process.pid()});
    return list;
  }
};

// Runs the calls, fills the latencies and the seconds the whole run took.
using ClientRun = std::function<Status(LatencyRecorder&, double&)>;

// Runs `client` (charged as "client": this process's CPU during the run), then the row: p50/p99,
// calls/s, payload bytes per second (calls * payload / seconds), CPU per call of each process.
Expected<BenchRow> measure(std::string name, uint32_t calls, uint32_t payload, uint32_t window,
                           const std::vector<Participant>& participants, const ClientRun& client);

// This process's CPU seconds (all threads, user + system).
double self_cpu_seconds();

}  // namespace mrpc::bench
