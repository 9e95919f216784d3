// LatencyRecorder: collects round-trip samples of one benchmark run and reports percentiles.
// Single-threaded; one per run.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mrpc::bench {

class LatencyRecorder {
 public:
  void reserve(size_t n) { samples_.reserve(n); }
  void add(int64_t nanos) { samples_.push_back(nanos); }
  size_t count() const { return samples_.size(); }
  // p in [0, 100]; 0 with no samples.
  double percentile_micros(double p) {
    if (samples_.empty()) return 0;
    std::sort(samples_.begin(), samples_.end());
    auto index = static_cast<size_t>(p / 100.0 * static_cast<double>(samples_.size() - 1) + 0.5);
    return static_cast<double>(samples_[std::min(index, samples_.size() - 1)]) / 1000.0;
  }

 private:
  std::vector<int64_t> samples_;
};

// One row of the report: a transport measured at one setting.
struct BenchRow {
  std::string name;
  double p50_us = 0;
  double p99_us = 0;
  double calls_per_second = 0;  // with `window` calls in flight
  uint32_t window = 1;
  uint32_t payload = 0;         // bytes per message
  double bytes_per_second = 0;  // payload bytes carried each way per second (goodput)
  // CPU seconds per call, per process taking part ("client", "server", "daemon").
  std::vector<std::pair<std::string, double>> cpu_per_call;
  double total_cpu_per_call() const {
    double total = 0;
    for (const auto& entry : cpu_per_call) total += entry.second;
    return total;
  }
};

}  // namespace mrpc::bench
