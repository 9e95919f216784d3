// echo_bench: 64 B echo round trips through mrpc beside the raw TCP floor, in one run, with
// ratios. Each transport runs client and server as separate processes; the report gives p50/p99
// latency (one call in flight), calls/s (a window of calls in flight) and CPU seconds per call of
// every process taking part.
//
//   build/bench/echo_bench [--calls N] [--payload B] [--window W]
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "latency_recorder.h"
#include "mrpc/base/subprocess.h"
#include "tcp_pingpong.h"

namespace mrpc::bench {
namespace {

double self_cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

struct Settings {
  uint32_t calls = 20000;
  uint32_t payload = 64;
  uint32_t window = 64;
  std::string self;
};

// Runs the TCP floor at window 1 (latency) and `window` (throughput).
Expected<BenchRow> measure_tcp(const Settings& settings, uint32_t window) {
  const auto port = static_cast<uint16_t>(20000 + (::getpid() % 20000));
  auto server = Subprocess::start({settings.self, "--role", "tcp-server", "--port",
                                   std::to_string(port), "--payload",
                                   std::to_string(settings.payload)});
  if (!server.ok()) return server.status();
  LatencyRecorder latencies;
  double seconds = 0;
  double client_cpu_before = self_cpu_seconds();
  TcpRunOptions options{port, settings.payload, settings.calls, window};
  Status status = run_tcp_client(options, latencies, seconds);
  double client_cpu = self_cpu_seconds() - client_cpu_before;
  auto server_cpu = server->cpu();
  (void)server->wait(std::chrono::seconds(10));
  if (!status.ok()) return status;
  BenchRow row;
  row.name = fmt::format("raw TCP ping-pong (window {})", window);
  row.window = window;
  row.p50_us = latencies.percentile_micros(50);
  row.p99_us = latencies.percentile_micros(99);
  row.calls_per_second = settings.calls / seconds;
  row.cpu_per_call = {{"client", client_cpu / settings.calls},
                      {"server", server_cpu.ok() ? server_cpu->total() / settings.calls : -1}};
  return row;
}

void print_rows(std::vector<BenchRow>& rows) {
  fmt::print("{:<44} {:>9} {:>9} {:>12}  {}\n", "transport", "p50 us", "p99 us", "calls/s",
             "CPU us per call (by process)");
  for (const auto& row : rows) {
    std::string cpu;
    for (const auto& [who, seconds] : row.cpu_per_call)
      cpu += fmt::format("{}={:.2f} ", who, seconds * 1e6);
    fmt::print("{:<44} {:>9.2f} {:>9.2f} {:>12.0f}  {}\n", row.name, row.p50_us, row.p99_us,
               row.calls_per_second, cpu);
  }
  if (rows.empty()) return;
  const BenchRow& floor = rows.front();
  fmt::print("\nratios against '{}' (p50, p99, calls/s):\n", floor.name);
  for (const auto& row : rows) {
    fmt::print("  {:<42} {:>6.2f}x {:>6.2f}x {:>6.2f}x\n", row.name, row.p50_us / floor.p50_us,
               row.p99_us / floor.p99_us, row.calls_per_second / floor.calls_per_second);
  }
}

}  // namespace
}  // namespace mrpc::bench

int main(int argc, char** argv) {
  using namespace mrpc::bench;
  CLI::App app{"mrpc echo benchmark: mrpc beside the raw TCP floor"};
  Settings settings;
  std::string role = "driver";
  uint16_t port = 0;
  app.add_option("--calls", settings.calls, "round trips per measurement");
  app.add_option("--payload", settings.payload, "bytes per message");
  app.add_option("--window", settings.window, "calls in flight for the calls/s measurement");
  app.add_option("--role", role, "internal: driver | tcp-server");
  app.add_option("--port", port, "internal: port of the tcp-server role");
  CLI11_PARSE(app, argc, argv);
  if (role == "tcp-server") return run_tcp_echo_server(port, settings.payload);

  settings.self = "/proc/self/exe";
  char path[4096];
  ssize_t n = ::readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n > 0) settings.self.assign(path, static_cast<size_t>(n));

  std::vector<BenchRow> rows;
  for (uint32_t window : {1u, settings.window}) {
    auto row = measure_tcp(settings, window);
    if (!row.ok()) {
      fmt::print(stderr, "tcp: {}\n", row.status().to_string());
      return 1;
    }
    rows.push_back(std::move(*row));
  }
  print_rows(rows);
  return 0;
}
