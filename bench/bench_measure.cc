#include "bench_measure.h"

#include <sys/resource.h>

#include "mrpc/base/subprocess.h"

namespace mrpc::bench {

double self_cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

Expected<BenchRow> measure(std::string name, uint32_t calls, uint32_t payload, uint32_t window,
                           const std::vector<Participant>& participants, const ClientRun& client) {
  std::vector<double> before;
  for (const auto& p : participants) {
    auto cpu = process_cpu(p.pid);
    before.push_back(cpu.ok() ? cpu->total() : 0);
  }
  LatencyRecorder latencies;
  double seconds = 0;
  const double client_before = self_cpu_seconds();
  Status status = client(latencies, seconds);
  const double client_cpu = self_cpu_seconds() - client_before;
  if (!status.ok()) return status;
  if (seconds <= 0 || calls == 0)
    return Status(StatusCode::kInternal, name + ": the run measured no time or no calls");
  BenchRow row;
  row.name = std::move(name);
  row.window = window;
  row.payload = payload;
  row.p50_us = latencies.percentile_micros(50);
  row.p99_us = latencies.percentile_micros(99);
  row.calls_per_second = calls / seconds;
  row.bytes_per_second = static_cast<double>(calls) * payload / seconds;
  row.cpu_per_call.emplace_back("client", client_cpu / calls);
  for (size_t i = 0; i < participants.size(); ++i) {
    auto cpu = process_cpu(participants[i].pid);
    const double used = cpu.ok() ? cpu->total() - before[i] : 0;
    row.cpu_per_call.emplace_back(participants[i].role, used / calls);
  }
  return row;
}

}  // namespace mrpc::bench
