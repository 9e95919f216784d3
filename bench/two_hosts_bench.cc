// two_hosts_bench: echo calls between two hosts, in one run, four ways over the same link: two
// mrpcd daemons (the app at host A -> daemon A -> TCP -> daemon B -> echo server at host B), raw
// TCP ping-pong, gRPC, and gRPC through an nginx sidecar on each side (client -> nginx at A ->
// nginx at B -> server). The hosts are two network namespaces joined by a veth pair
// (tests/integration/two_hosts.h; 127.0.0.1 and 127.0.0.2 where namespaces cannot be made, said
// at the start). This process is the client at host A (it enters A's namespace first); every
// server, daemon and proxy is a process of its own, whose CPU time (/proc/PID/stat) is charged to
// the calls it took part in.
//
// Measured: p50/p99 latency and calls/s for 64 B and 8 KiB echo at 1 and --window calls in flight,
// goodput of 1 MiB messages (--big-window in flight), CPU per call of every process; ratios against
// raw TCP and against gRPC; issue 9's goals, each said met or not.
//
//   build/bench/two_hosts_bench [--calls N] [--big-calls N] [--window W] [--big-window W]
//                               [--runtime-threads N]      (root, for the namespaces)
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "bench_measure.h"
#include "echo_load.h"
#include "echo_load_run.h"
#include "grpc_echo.h"
#include "mrpc/client/channel.h"
#include "nginx_sidecar.h"
#include "tcp_pingpong.h"
#include "two_hosts.h"

namespace mrpc::bench {
namespace {

using namespace std::chrono_literals;

struct Settings {
  uint32_t calls = 20000;    // per 64 B and 8 KiB measurement (CPU time counts in 10 ms ticks)
  uint32_t big_calls = 300;  // 1 MiB messages
  uint32_t window = 64;
  uint32_t big_window = 4;
  uint32_t runtime_threads = 1;  // per daemon
  int spin_us = -1;              // mrpc rows: spin budget of daemons and apps; -1: their defaults
  std::string self;              // this binary, for the server roles
};

// One measurement of every transport: message size, calls in flight, number of calls.
struct Case {
  uint32_t payload;
  uint32_t window;
  uint32_t calls;
};

std::vector<Case> cases_of(const Settings& settings) {
  return {{64, 1, settings.calls},
          {64, settings.window, settings.calls},
          {8192, 1, settings.calls},
          {8192, settings.window, settings.calls},
          {1u << 20, settings.big_window, settings.big_calls}};
}

std::string size_text(uint32_t bytes) {
  if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) return fmt::format("{} MiB", bytes >> 20);
  if (bytes >= 1024 && bytes % 1024 == 0) return fmt::format("{} KiB", bytes >> 10);
  return fmt::format("{} B", bytes);
}

// Where the servers listen: fixed ports inside the namespaces (nothing else lives there), else
// ports derived from the pid on the loopback addresses.
struct Ports {
  uint16_t base;
  explicit Ports(bool namespaces)
      : base(namespaces ? 7300 : static_cast<uint16_t>(20000 + (::getpid() * 13) % 30000)) {}
  uint16_t tcp(size_t index) const { return static_cast<uint16_t>(base + index); }
  uint16_t grpc() const { return static_cast<uint16_t>(base + 50); }
  uint16_t nginx_a() const { return static_cast<uint16_t>(base + 51); }
  uint16_t nginx_b() const { return static_cast<uint16_t>(base + 52); }
};

Expected<Subprocess> start_at_b(testing::TwoHosts& hosts, const Settings& settings,
                                std::vector<std::string> args, const std::string& log) {
  std::vector<std::string> argv = hosts.prefix_b();
  argv.push_back(settings.self);
  argv.insert(argv.end(), args.begin(), args.end());
  return Subprocess::start(argv, {}, log);
}

Status bench_tcp(testing::TwoHosts& hosts, const Settings& settings, const Ports& ports,
                 const std::string& directory, std::vector<BenchRow>& rows) {
  const std::vector<Case> cases = cases_of(settings);
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    auto server = start_at_b(hosts, settings,
                             {"--role", "tcp-server", "--address", hosts.b_address(), "--port",
                              std::to_string(ports.tcp(i)), "--payload", std::to_string(c.payload)},
                             directory + "/tcp-server.log");
    if (!server.ok()) return server.status();
    Processes processes;
    processes.add("server", std::move(*server));
    auto row = measure("raw TCP", c.calls, c.payload, c.window, processes.participants(),
                       [&](LatencyRecorder& latencies, double& seconds) {
                         TcpRunOptions options;
                         options.address = hosts.b_address();
                         options.port = ports.tcp(i);
                         options.payload = c.payload;
                         options.calls = c.calls;
                         options.window = c.window;
                         return run_tcp_client(options, latencies, seconds);
                       });
    if (!row.ok()) return row.status();
    rows.push_back(std::move(*row));
  }
  return Status();
}

// A few single calls until one succeeds: the server (and the proxies) are up and connected.
Status grpc_warm_up(const std::string& target) {
  Status last;
  for (int attempt = 0; attempt < 100; ++attempt) {
    LatencyRecorder ignored;
    double seconds = 0;
    GrpcRunOptions options{target, 64, 1, 1};
    last = run_grpc_client(options, ignored, seconds);
    if (last.ok()) return last;
    std::this_thread::sleep_for(100ms);
  }
  return Status(last.code(), "gRPC through " + target + " never answered: " + last.message());
}

Status grpc_rows(const std::string& name, const std::string& target, const Settings& settings,
                 const Processes& processes, std::vector<BenchRow>& rows) {
  MRPC_TRY_STATUS(grpc_warm_up(target));
  for (const Case& c : cases_of(settings)) {
    auto row = measure(name, c.calls, c.payload, c.window, processes.participants(),
                       [&](LatencyRecorder& latencies, double& seconds) {
                         GrpcRunOptions options{target, c.payload, c.calls, c.window};
                         return run_grpc_client(options, latencies, seconds);
                       });
    if (!row.ok()) return row.status();
    rows.push_back(std::move(*row));
  }
  return Status();
}

Status bench_grpc(testing::TwoHosts& hosts, const Settings& settings, const Ports& ports,
                  const std::string& directory, std::vector<BenchRow>& rows) {
  auto server = start_at_b(hosts, settings,
                           {"--role", "grpc-server", "--address", hosts.b_address(), "--port",
                            std::to_string(ports.grpc())},
                           directory + "/grpc-server.log");
  if (!server.ok()) return server.status();
  Processes processes;
  processes.add("server", std::move(*server));
  const std::string direct = fmt::format("{}:{}", hosts.b_address(), ports.grpc());
  MRPC_TRY_STATUS(grpc_rows("gRPC", direct, settings, processes, rows));

  if (!nginx_installed()) {
    fmt::print(
        "(gRPC with nginx sidecars: SKIPPED, {} is not installed: "
        "scripts/install-bench-deps.sh)\n",
        kNginxPath);
    return Status();
  }
  // Host B's sidecar in front of the server; host A's in front of the client, passing to B's.
  const std::string at_b = directory + "/nginx-b", at_a = directory + "/nginx-a";
  std::filesystem::create_directories(at_b);
  std::filesystem::create_directories(at_a);
  const std::string b_listen = fmt::format("{}:{}", hosts.b_address(), ports.nginx_b());
  auto nginx_b = start_nginx_grpc_proxy(at_b, b_listen, direct, hosts.prefix_b());
  if (!nginx_b.ok()) return nginx_b.status();
  const std::string a_listen = fmt::format("127.0.0.1:{}", ports.nginx_a());
  auto nginx_a = start_nginx_grpc_proxy(at_a, a_listen, b_listen, hosts.prefix_a());
  if (!nginx_a.ok()) return nginx_a.status();
  processes.add("nginx-a", std::move(*nginx_a));
  processes.add("nginx-b", std::move(*nginx_b));
  return grpc_rows("gRPC+nginx", a_listen, settings, processes, rows);
}

Status bench_mrpc(testing::TwoHosts& hosts, const Settings& settings, std::vector<BenchRow>& rows) {
  std::vector<std::string> daemon_args;
  if (settings.spin_us >= 0) daemon_args = {"--spin-budget-us", std::to_string(settings.spin_us)};
  MRPC_TRY_STATUS(hosts.start_daemons(daemon_args));
  auto server = hosts.b().start_echo_server();
  if (!server.ok()) return server.status();
  auto channel = hosts.a().connect("two_hosts_bench");
  if (!channel.ok()) return channel.status();
  // Until the first call crosses (the server registered at B, A's link to B made).
  echo::EchoLoadOptions probe;
  probe.calls = 1;
  echo::EchoLoadResult probed;
  for (int attempt = 0; attempt < 1000 && probed.answered == 0; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(10ms);
    probed = echo::run_echo_load(*channel, probe);
  }
  if (probed.answered == 0)
    return Status(StatusCode::kUnavailable, "no echo call crossed the hosts: " + probed.summary());
  const std::vector<Participant> participants = {{"daemon-a", hosts.a().daemon().pid()},
                                                 {"daemon-b", hosts.b().daemon().pid()},
                                                 {"server", server->pid()}};
  for (const Case& c : cases_of(settings)) {
    auto row =
        measure("mrpc", c.calls, c.payload, c.window, participants, echo_load_run(*channel, [&] {
                  echo::EchoLoadOptions load;
                  load.calls = c.calls;
                  load.in_flight = c.window;
                  load.payload_bytes = c.payload;
                  load.same_payload = true;  // as raw TCP and gRPC: built once
                  load.timeout = 60s;
                  return load;
                }()));
    if (!row.ok()) return row.status();
    rows.push_back(std::move(*row));
  }
  (*channel).reset();
  return Status();
}

const BenchRow* find(const std::vector<BenchRow>& rows, const std::string& name, uint32_t payload,
                     uint32_t window) {
  for (const auto& row : rows)
    if (row.name == name && row.payload == payload && row.window == window) return &row;
  return nullptr;
}

void print_table(const std::vector<BenchRow>& rows) {
  fmt::print("{:<11} {:>6} {:>4} {:>9} {:>9} {:>9} {:>9} {:>9}  {}\n", "transport", "size", "in",
             "p50 us", "p99 us", "calls/s", "MB/s", "CPU us", "CPU us per call, by process");
  for (const auto& row : rows) {
    std::string by_process;
    for (const auto& [who, seconds] : row.cpu_per_call)
      by_process += fmt::format("{}={:.1f} ", who, seconds * 1e6);
    fmt::print("{:<11} {:>6} {:>4} {:>9.1f} {:>9.1f} {:>9.0f} {:>9.1f} {:>9.1f}  {}\n", row.name,
               size_text(row.payload), row.window, row.p50_us, row.p99_us, row.calls_per_second,
               row.bytes_per_second / 1e6, row.total_cpu_per_call() * 1e6, by_process);
  }
}

void print_ratios(const std::vector<BenchRow>& rows, const std::string& against) {
  fmt::print(
      "\nratios against {} at the same size and calls in flight (p50, p99, calls/s, CPU "
      "per call):\n",
      against);
  for (const auto& row : rows) {
    if (row.name == against) continue;
    const BenchRow* base = find(rows, against, row.payload, row.window);
    if (base == nullptr) continue;
    fmt::print("  {:<11} {:>6} {:>4}  {:>6.2f}x {:>6.2f}x {:>6.2f}x {:>6.2f}x\n", row.name,
               size_text(row.payload), row.window, row.p50_us / base->p50_us,
               row.p99_us / base->p99_us, row.calls_per_second / base->calls_per_second,
               row.total_cpu_per_call() / base->total_cpu_per_call());
  }
}

// Issue 9's goals, from this run's rows.
void print_goals(const std::vector<BenchRow>& rows, const Settings& settings) {
  fmt::print("\ngoals (issue 9):\n");
  auto goal = [](const char* what, const BenchRow* mine, const BenchRow* base, double value,
                 const char* relation, double bound) {
    if (mine == nullptr || base == nullptr) {
      fmt::print("  {:<58} not measured\n", what);
      return;
    }
    const bool met = std::string(relation) == "<=" ? value <= bound : value >= bound;
    fmt::print("  {:<58} {:>6.2f}x ({} {:.2f}x)  {}\n", what, value, relation, bound,
               met ? "met" : "NOT MET");
  };
  const uint32_t big = 1u << 20;
  const BenchRow* mrpc_64_1 = find(rows, "mrpc", 64, 1);
  const BenchRow* tcp_64_1 = find(rows, "raw TCP", 64, 1);
  goal("64 B p50 at 1 in flight, mrpc / raw TCP", mrpc_64_1, tcp_64_1,
       mrpc_64_1 && tcp_64_1 ? mrpc_64_1->p50_us / tcp_64_1->p50_us : 0, "<=", 1.5);
  const BenchRow* mrpc_64_w = find(rows, "mrpc", 64, settings.window);
  const BenchRow* tcp_64_w = find(rows, "raw TCP", 64, settings.window);
  goal("64 B calls/s at the window, mrpc / raw TCP", mrpc_64_w, tcp_64_w,
       mrpc_64_w && tcp_64_w ? mrpc_64_w->calls_per_second / tcp_64_w->calls_per_second : 0,
       ">=", 1.0);
  const BenchRow* mrpc_8k_w = find(rows, "mrpc", 8192, settings.window);
  const BenchRow* tcp_8k_w = find(rows, "raw TCP", 8192, settings.window);
  goal("8 KiB calls/s at the window, mrpc / raw TCP", mrpc_8k_w, tcp_8k_w,
       mrpc_8k_w && tcp_8k_w ? mrpc_8k_w->calls_per_second / tcp_8k_w->calls_per_second : 0,
       ">=", 1.0);
  const BenchRow* mrpc_big = find(rows, "mrpc", big, settings.big_window);
  const BenchRow* tcp_big = find(rows, "raw TCP", big, settings.big_window);
  goal("1 MiB goodput, mrpc / raw TCP", mrpc_big, tcp_big,
       mrpc_big && tcp_big ? mrpc_big->bytes_per_second / tcp_big->bytes_per_second : 0, ">=", 0.8);
  for (uint32_t window : {1u, settings.window}) {
    const BenchRow* mine = find(rows, "mrpc", 64, window);
    const BenchRow* grpc = find(rows, "gRPC", 64, window);
    const BenchRow* sidecars = find(rows, "gRPC+nginx", 64, window);
    goal(fmt::format("64 B total CPU per call at {} in flight, mrpc / gRPC", window).c_str(), mine,
         grpc, mine && grpc ? mine->total_cpu_per_call() / grpc->total_cpu_per_call() : 0,
         "<=", 0.5);
    goal(fmt::format("64 B total CPU per call at {} in flight, mrpc / gRPC+nginx", window).c_str(),
         mine, sidecars,
         mine && sidecars ? mine->total_cpu_per_call() / sidecars->total_cpu_per_call() : 0,
         "<=", 0.25);
  }
}

int drive(Settings settings) {
  if (settings.runtime_threads > 1)
    ::setenv("MRPC_TEST_RUNTIME_THREADS", std::to_string(settings.runtime_threads).c_str(), 1);
  // The apps (this client and the echo server, which inherits the environment) read it.
  if (settings.spin_us >= 0) ::setenv(kSpinBudgetEnv, std::to_string(settings.spin_us).c_str(), 1);
  testing::TwoHosts hosts;  // the namespaces and the veth pair (or the loopback fallback)
  if (Status entered = hosts.enter_a(); !entered.ok()) {
    fmt::print(stderr, "two_hosts_bench: {}\n", entered.to_string());
    return 1;
  }
  fmt::print(
      "two hosts: A {} and B {} ({}); mrpcd with {} runtime thread(s) each; mrpc spin budget "
      "{}; {} calls per 64 B / 8 KiB measurement, {} of 1 MiB; {} and {} in flight\n\n",
      hosts.a_address(), hosts.b_address(),
      hosts.namespaces() ? "two network namespaces joined by a veth pair"
                         : "NO network namespaces here: loopback addresses",
      settings.runtime_threads,
      settings.spin_us < 0 ? std::string("default") : fmt::format("{} us", settings.spin_us),
      settings.calls, settings.big_calls, settings.window, settings.big_window);
  const Ports ports(hosts.namespaces());
  const std::string directory = hosts.a().directory();  // logs of the comparison's processes
  std::vector<BenchRow> rows;
  using Bench = Status (*)(testing::TwoHosts&, const Settings&, const Ports&, const std::string&,
                           std::vector<BenchRow>&);
  const std::pair<const char*, Bench> comparisons[] = {{"raw TCP", bench_tcp},
                                                       {"gRPC", bench_grpc}};
  for (const auto& [name, bench] : comparisons) {
    if (Status status = bench(hosts, settings, ports, directory, rows); !status.ok()) {
      fmt::print(stderr, "{}: {}\n", name, status.to_string());
      return 1;
    }
  }
  if (Status status = bench_mrpc(hosts, settings, rows); !status.ok()) {
    fmt::print(stderr, "mrpc: {} (daemon logs under {} and {})\n", status.to_string(),
               hosts.a().directory(), hosts.b().directory());
    return 1;
  }
  print_table(rows);
  print_ratios(rows, "raw TCP");
  print_ratios(rows, "gRPC");
  print_goals(rows, settings);
  return 0;
}

}  // namespace
}  // namespace mrpc::bench

int main(int argc, char** argv) {
  using namespace mrpc::bench;
  CLI::App app{
      "two_hosts_bench: mrpc between two daemons beside raw TCP, gRPC and gRPC with nginx "
      "sidecars, between two network namespaces"};
  Settings settings;
  std::string role = "driver", address = "127.0.0.1";
  uint16_t port = 0;
  uint32_t payload = 64;
  app.add_option("--calls", settings.calls, "calls per 64 B and 8 KiB measurement");
  app.add_option("--big-calls", settings.big_calls, "calls of 1 MiB messages (goodput)");
  app.add_option("--window", settings.window, "calls in flight for calls/s");
  app.add_option("--big-window", settings.big_window, "calls in flight for the 1 MiB goodput");
  app.add_option("--runtime-threads", settings.runtime_threads, "mrpcd --runtime-threads, each");
  app.add_option("--spin-us", settings.spin_us,
                 "mrpc rows: spin budget (us) of both daemons (--spin-budget-us) and both apps "
                 "(MRPC_SPIN_BUDGET_US); default: theirs");
  app.add_option("--role", role, "internal: driver | tcp-server | grpc-server");
  app.add_option("--address", address, "internal: the server role's address");
  app.add_option("--port", port, "internal: the server role's port");
  app.add_option("--payload", payload, "internal: the tcp-server's message size");
  CLI11_PARSE(app, argc, argv);
  if (role == "tcp-server") return run_tcp_echo_server(port, payload, address);
  if (role == "grpc-server") return run_grpc_echo_server(port, address);
  if (settings.calls == 0 || settings.big_calls == 0 || settings.window == 0 ||
      settings.big_window == 0) {
    fmt::print(stderr,
               "two_hosts_bench: --calls, --big-calls, --window and --big-window must be "
               "at least 1\n");
    return 1;
  }
  char path[4096];
  const ssize_t n = ::readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) {
    fmt::print(stderr, "two_hosts_bench: cannot read /proc/self/exe\n");
    return 1;
  }
  settings.self.assign(path, static_cast<size_t>(n));
  return drive(settings);
}
