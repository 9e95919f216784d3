// echo_bench: 64 B echo round trips through mrpc (daemon spin budget at its default and at zero;
// daemon and both apps at spin zero; the server's handlers inline on its completion thread) beside
// the raw TCP floor, gRPC, and gRPC through an nginx sidecar (when nginx is installed), in one run,
// with ratios. Each transport runs client and server as separate processes; the report gives
// p50/p99 latency (one call in flight), calls/s (a window of calls in flight) and CPU seconds per
// call of every process taking part.
//
//   build/bench/echo_bench [--calls N] [--payload B] [--window W]
#include <unistd.h>
#include <algorithm>

#include <signal.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "bench_measure.h"
#include "grpc_echo.h"
#include "latency_recorder.h"
#include "mrpc/base/subprocess.h"
#include "nginx_sidecar.h"
#ifdef MRPC_BENCH_WITH_MRPC
#include "echo_load.h"
#include "echo_load_run.h"
#include "mrpc/client/channel.h"
#endif
#include "tcp_pingpong.h"

namespace mrpc::bench {
namespace {

struct Settings {
  uint32_t calls = 20000;
  uint32_t payload = 64;
  uint32_t window = 64;
  std::string self;
};

uint16_t pick_port(uint16_t offset) {
  return static_cast<uint16_t>(20000 + (::getpid() * 7 + offset) % 30000);
}

Expected<Subprocess> start_self(const Settings& settings, std::vector<std::string> args) {
  args.insert(args.begin(), settings.self);
  return Subprocess::start(args);
}

Status bench_tcp(const Settings& settings, std::vector<BenchRow>& rows) {
  for (uint32_t window : {1u, settings.window}) {
    const uint16_t port = pick_port(static_cast<uint16_t>(window));
    auto server = start_self(settings, {"--role", "tcp-server", "--port", std::to_string(port),
                                        "--payload", std::to_string(settings.payload)});
    if (!server.ok()) return server.status();
    Processes processes;
    processes.add("server", std::move(*server));
    auto row = measure(fmt::format("raw TCP ping-pong (window {})", window), settings.calls,
                       settings.payload, window, processes.participants(),
                       [&](LatencyRecorder& latencies, double& seconds) {
                         TcpRunOptions options;
                         options.port = port;
                         options.payload = settings.payload;
                         options.calls = settings.calls;
                         options.window = window;
                         return run_tcp_client(options, latencies, seconds);
                       });
    if (!row.ok()) return row.status();
    rows.push_back(std::move(*row));
  }
  return Status();
}

#ifdef MRPC_BENCH_WITH_MRPC
// One way to run mrpc for the bench.
struct MrpcSetup {
  const char* label;
  bool daemon_spin_0;    // mrpcd --spin-budget-us 0: its runtime sleeps at once when idle
  bool apps_spin_0;      // echo_server (MRPC_SPIN_BUDGET_US=0) and this process's channel too
  bool inline_handlers;  // echo_server --threads 0: handlers on its completion thread
};

// mrpc: mrpcd and echo_server as processes, this process as the client app, in each setup.
Status bench_mrpc(const Settings& settings, std::vector<BenchRow>& rows) {
  constexpr MrpcSetup kSetups[] = {
      {"mrpc, spin default", false, false, false},
      {"mrpc, spin 0", true, false, false},
      {"mrpc, all spin 0", true, true, false},
      {"mrpc, inline handlers", false, false, true},
  };
  for (const MrpcSetup& setup : kSetups) {
    char directory_template[] = "/tmp/mrpc-bench-XXXXXX";
    const std::string directory = ::mkdtemp(directory_template);
    const std::string socket = directory + "/app.sock";
    std::vector<std::string> daemon_args = {MRPCD_PATH, "--app-socket", socket, "--control-socket",
                                            directory + "/control.sock"};
    if (setup.daemon_spin_0) {
      daemon_args.push_back("--spin-budget-us");
      daemon_args.push_back("0");
    }
    auto daemon = Subprocess::start(daemon_args, {}, directory + "/mrpcd.log");
    if (!daemon.ok()) return daemon.status();
    if (!wait_for_path(socket, std::chrono::seconds(30)))
      return Status(StatusCode::kUnavailable, "mrpcd did not start; see " + directory);
    std::vector<std::string> server_args = {ECHO_SERVER_PATH};
    if (setup.inline_handlers) server_args.insert(server_args.end(), {"--threads", "0"});
    std::vector<std::string> server_env = {"MRPC_SOCKET=" + socket};
    if (setup.apps_spin_0) server_env.push_back(std::string(mrpc::kSpinBudgetEnv) + "=0");
    auto server = Subprocess::start(server_args, server_env, directory + "/echo_server.log");
    if (!server.ok()) return server.status();
    ChannelOptions options;
    options.socket_path = socket;
    options.app_name = "echo_bench";
    if (setup.apps_spin_0) options.spin_budget = std::chrono::nanoseconds(0);
    // mrpcd's socket appears only once it listens (bind, listen, rename): connect at once.
    auto channel = Channel::connect(options);
    if (!channel.ok()) return channel.status();
    // Wait until the server has registered: the first call that succeeds.
    echo::EchoLoadOptions probe;
    probe.calls = 1;
    for (int attempt = 0; attempt < 3000; ++attempt) {
      if (echo::run_echo_load(*channel, probe).answered == 1) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    Processes processes;
    processes.add("daemon", std::move(*daemon));
    processes.add("server", std::move(*server));
    for (uint32_t window : {1u, settings.window}) {
      auto row =
          measure(fmt::format("{} (window {})", setup.label, window), settings.calls,
                  settings.payload, window, processes.participants(), echo_load_run(*channel, [&] {
                    echo::EchoLoadOptions load;
                    load.calls = settings.calls;
                    load.in_flight = window;
                    load.payload_bytes = settings.payload;
                    return load;
                  }()));
      if (!row.ok()) return row.status();
      rows.push_back(std::move(*row));
    }
    channel->reset();
    for (auto& [role, process] : processes.owned) process.stop(SIGTERM);
    std::error_code ignored;
    std::filesystem::remove_all(directory, ignored);
  }
  return Status();
}
#endif

Status bench_grpc(const Settings& settings, std::vector<BenchRow>& rows) {
  const uint16_t port = pick_port(100);
  auto server = start_self(settings, {"--role", "grpc-server", "--port", std::to_string(port)});
  if (!server.ok()) return server.status();
  Processes processes;
  processes.add("server", std::move(*server));

  auto run = [&](std::string name, uint16_t target_port, uint32_t window) -> Status {
    auto row = measure(std::move(name), settings.calls, settings.payload, window,
                       processes.participants(), [&](LatencyRecorder& latencies, double& seconds) {
                         GrpcRunOptions options{fmt::format("127.0.0.1:{}", target_port),
                                                settings.payload, settings.calls, window};
                         return run_grpc_client(options, latencies, seconds);
                       });
    if (!row.ok()) return row.status();
    rows.push_back(std::move(*row));
    return Status();
  };
  for (uint32_t window : {1u, settings.window})
    MRPC_TRY_STATUS(run(fmt::format("gRPC (window {})", window), port, window));

  if (!nginx_installed()) {
    fmt::print(
        "(gRPC through an nginx sidecar: skipped, nginx is not installed: "
        "apt-get install nginx-light)\n");
    return Status();
  }
  char directory_template[] = "/tmp/mrpc-bench-nginx-XXXXXX";
  std::string directory = ::mkdtemp(directory_template);
  const uint16_t proxy_port = pick_port(200);
  auto nginx = start_nginx_grpc_proxy(directory, fmt::format("127.0.0.1:{}", proxy_port),
                                      fmt::format("127.0.0.1:{}", port));
  if (!nginx.ok()) return nginx.status();
  processes.add("nginx", std::move(*nginx));
  for (uint32_t window : {1u, settings.window})
    MRPC_TRY_STATUS(
        run(fmt::format("gRPC via nginx sidecar (window {})", window), proxy_port, window));
  return Status();
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
  // Each row against the floor measured with the same number of calls in flight.
  fmt::print("\nratios against the raw TCP floor at the same window (p50, p99, calls/s):\n");
  for (const auto& row : rows) {
    const BenchRow* floor = nullptr;
    for (const auto& candidate : rows)
      if (floor == nullptr && candidate.window == row.window) floor = &candidate;
    fmt::print("  {:<42} {:>7.2f}x {:>7.2f}x {:>7.2f}x\n", row.name, row.p50_us / floor->p50_us,
               row.p99_us / floor->p99_us, row.calls_per_second / floor->calls_per_second);
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
  uint32_t repeat = 1;
  app.add_option("--repeat", repeat,
                 "run the whole comparison this many times; prints each run and the p50 ratios "
                 "of every run side by side");
  app.add_option("--role", role, "internal: driver | tcp-server");
  app.add_option("--port", port, "internal: port of the tcp-server role");
  CLI11_PARSE(app, argc, argv);
  if (role == "tcp-server") return run_tcp_echo_server(port, settings.payload);
  if (role == "grpc-server") return run_grpc_echo_server(port);

  settings.self = "/proc/self/exe";
  char path[4096];
  ssize_t n = ::readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n > 0) settings.self.assign(path, static_cast<size_t>(n));

  using Bench = mrpc::Status (*)(const Settings&, std::vector<BenchRow>&);
  const std::vector<std::pair<std::string, Bench>> benches = {{"tcp", bench_tcp},
#ifdef MRPC_BENCH_WITH_MRPC
                                                              {"mrpc", bench_mrpc},
#endif
                                                              {"grpc", bench_grpc}};
  // Row name -> its p50 against the raw TCP floor at the same window, one value per run.
  std::vector<std::pair<std::string, std::vector<double>>> p50_ratios;
  for (uint32_t run = 1; run <= std::max(repeat, 1u); ++run) {
    if (repeat > 1) fmt::print("\n== run {} of {}\n", run, repeat);
    std::vector<BenchRow> rows;
    for (const auto& [name, bench] : benches) {
      mrpc::Status status = bench(settings, rows);
      if (!status.ok()) {
        fmt::print(stderr, "{}: {}\n", name, status.to_string());
        return 1;
      }
    }
    print_rows(rows);
    for (const auto& row : rows) {
      const BenchRow* floor = nullptr;
      for (const auto& candidate : rows)
        if (floor == nullptr && candidate.window == row.window) floor = &candidate;
      auto it = std::find_if(p50_ratios.begin(), p50_ratios.end(),
                             [&](const auto& entry) { return entry.first == row.name; });
      if (it == p50_ratios.end()) it = p50_ratios.insert(p50_ratios.end(), {row.name, {}});
      it->second.push_back(row.p50_us / floor->p50_us);
    }
  }
  if (repeat > 1) {
    fmt::print("\np50 against raw TCP at the same window, run by run:\n");
    for (const auto& [name, ratios] : p50_ratios) {
      std::string line;
      for (double ratio : ratios) line += fmt::format(" {:>6.2f}x", ratio);
      fmt::print("  {:<42}{}\n", name, line);
    }
  }
  return 0;
}
