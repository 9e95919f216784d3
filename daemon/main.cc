// mrpcd: the host daemon. Flags override the configuration file (-c FILE), which overrides the
// environment, which overrides the defaults of DaemonConfig (include/mrpc/base/limits.h).
// `mrpcd --validate -c FILE` checks the file and exits (0: valid, 1: the first error as
// FILE:LINE:COLUMN: what). SIGTERM or SIGINT drains and stops it.
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "config_file.h"
#include "mrpc/daemon/daemon.h"

int main(int argc, char** argv) {
  mrpc::DaemonConfig config;
  if (const char* env = std::getenv(mrpc::shm::kAppSocketEnv)) config.app_socket_path = env;
  if (const char* env = std::getenv("MRPC_CONTROL_SOCKET")) config.control_socket_path = env;
  int64_t spin_budget_us =
      std::chrono::duration_cast<std::chrono::microseconds>(config.spin_budget).count();
  int64_t drain_ms = 5000;
  std::string log_level = "info";

  std::string config_file;
  bool validate_only = false;
  std::string tcp_listen_flag;
  std::string host_name_flag;

  CLI::App app{"mrpcd: the mrpc host daemon"};
  app.add_option("-c,--config", config_file,
                 "configuration file (TOML: host, listen, [remote.\"pkg.Service\"]; "
                 "docs/tcp-transport.md); flags given as well win");
  app.add_flag("--validate", validate_only, "check the -c file, print the verdict and exit");
  app.add_option("--tcp-listen", tcp_listen_flag,
                 "address:port where peer daemons connect (overrides the file's listen)");
  app.add_option("--host-name", host_name_flag,
                 "this host's name in frames to peers (overrides the file's host; default: "
                 "gethostname)");
  app.add_option("--app-socket", config.app_socket_path, "app socket path (env MRPC_SOCKET)")
      ->capture_default_str();
  app.add_option("--control-socket", config.control_socket_path,
                 "control socket path, mode 0600 (env MRPC_CONTROL_SOCKET)")
      ->capture_default_str();
  app.add_option("--heap-bytes", config.heap_bytes, "per-app send heap size")
      ->capture_default_str();
  app.add_option("--receive-bytes", config.receive_bytes, "per-app receive region size")
      ->capture_default_str();
  app.add_option("--ring-entries", config.ring_entries, "slots per ring, a power of two")
      ->capture_default_str();
  app.add_option("--max-calls-in-flight", config.max_calls_in_flight,
                 "calls one app may have in flight; beyond: RESOURCE_EXHAUSTED")
      ->capture_default_str();
  app.add_option("--max-calls-served", config.max_calls_served,
                 "calls delivered to one serving app and not yet answered; beyond: the service's "
                 "other endpoints, else RESOURCE_EXHAUSTED")
      ->capture_default_str();
  app.add_option("--max-message-bytes", config.max_message_bytes, "largest message an app may send")
      ->capture_default_str();
  app.add_option("--max-connections", config.max_connections, "app connections held at once")
      ->capture_default_str();
  app.add_option("--max-connections-per-uid", config.max_connections_per_uid,
                 "app connections one uid may hold at once")
      ->capture_default_str();
  app.add_option("--max-calls-in-flight-per-uid", config.max_calls_in_flight_per_uid,
                 "calls one uid's apps may have in flight together")
      ->capture_default_str();
  app.add_option("--max-receive-bytes-per-uid", config.max_receive_bytes_per_uid,
                 "bytes the daemon may hold in one uid's receive regions, unreleased")
      ->capture_default_str();
  app.add_option("--max-batch", config.max_batch, "ring entries handled per connection per round")
      ->capture_default_str();
  app.add_option("--runtime-threads", config.runtime_threads,
                 "runtime threads (shards); each owns the app connections placed on it")
      ->capture_default_str();
  app.add_option("--round-copy-bytes", config.round_copy_bytes,
                 "bytes copied for one connection's messages per round, on average")
      ->capture_default_str();
  app.add_option("--spin-budget-us", spin_budget_us,
                 "microseconds an idle runtime polls before sleeping (0: sleep at once)")
      ->capture_default_str();
  app.add_option("--cache-dir", config.codec_cache_dir,
                 "the compiled codecs' on-disk object cache, a directory mrpcd owns (mode 0700); "
                 "default: jit-cache next to the app socket");
  app.add_option("--codec-max-instructions", config.codec_max_instructions,
                 "compile budget of one registered schema's codecs (IR instructions); beyond, "
                 "its registration fails RESOURCE_EXHAUSTED")
      ->capture_default_str();
  app.add_option("--drain-ms", drain_ms, "on SIGTERM, how long calls in flight may finish")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
  std::vector<std::string> service_owners;
  app.add_option("--service-owner", service_owners,
                 "SERVICE=UID[,UID...]: only these uids may serve SERVICE (repeatable; unlisted "
                 "services belong to the first uid that serves them)");
  int64_t service_grace_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(config.service_grace_period).count();
  app.add_option("--service-grace-ms", service_grace_ms,
                 "how long a service stays its uid's after its last server left")
      ->capture_default_str();
  app.add_option("--max-services-per-uid", config.max_services_per_uid,
                 "service registrations one uid's apps may create")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (!config_file.empty()) {
    // The file is read into a copy whose flag-given fields are then put back: flags win.
    mrpc::DaemonConfig from_file = config;
    mrpc::Status loaded = mrpc::load_config_file(config_file, from_file);
    if (!loaded.ok()) {
      std::fprintf(stderr, "mrpcd: %s\n", loaded.message().c_str());
      return 1;
    }
    config.tcp_listen = from_file.tcp_listen;
    config.host_name = from_file.host_name;
    config.remote_services = from_file.remote_services;
    if (validate_only) {
      std::printf("%s: valid (host '%s', listen '%s', %zu remote service%s)\n", config_file.c_str(),
                  config.host_name.c_str(), config.tcp_listen.c_str(),
                  config.remote_services.size(), config.remote_services.size() == 1 ? "" : "s");
      return 0;
    }
  } else if (validate_only) {
    std::fprintf(stderr, "mrpcd: --validate needs -c FILE\n");
    return 1;
  }
  if (!tcp_listen_flag.empty()) config.tcp_listen = tcp_listen_flag;
  if (!host_name_flag.empty()) config.host_name = host_name_flag;
  config.spin_budget = std::chrono::microseconds(spin_budget_us);
  config.service_grace_period = std::chrono::milliseconds(service_grace_ms);
  for (const std::string& entry : service_owners) {
    const size_t equals = entry.find('=');
    if (equals == std::string::npos || equals == 0 || equals + 1 == entry.size()) {
      spdlog::error("--service-owner {}: expected SERVICE=UID[,UID...]", entry);
      return 1;
    }
    std::vector<uint32_t>& uids = config.service_owners[entry.substr(0, equals)];
    size_t start = equals + 1;
    while (start <= entry.size()) {
      const size_t comma = std::min(entry.find(',', start), entry.size());
      const std::string uid = entry.substr(start, comma - start);
      char* end = nullptr;
      const unsigned long value = std::strtoul(uid.c_str(), &end, 10);
      if (uid.empty() || *end != '\0' || value > UINT32_MAX - 1) {
        spdlog::error("--service-owner {}: '{}' is not a uid", entry, uid);
        return 1;
      }
      uids.push_back(static_cast<uint32_t>(value));
      start = comma + 1;
    }
  }
  spdlog::set_level(spdlog::level::from_str(log_level));

  // Every app holds a few of the daemon's fds (docs/security.md): use all the hard limit allows.
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    const rlim_t soft = files.rlim_cur;
    files.rlim_cur = files.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &files) == 0) {
      spdlog::info("RLIMIT_NOFILE raised from {} to {}", soft, files.rlim_max);
    }
  }

  // Signals are taken synchronously by this thread; the runtime thread never sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  mrpc::Daemon daemon(config, mrpc::MonotonicClock::instance());
  mrpc::Status started = daemon.start();
  if (!started.ok()) {
    spdlog::error("mrpcd could not start: {}", started.to_string());
    return started.code() == mrpc::StatusCode::kInvalidArgument ? 1 : 2;
  }
  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  spdlog::info("signal {}: draining for up to {} ms", signal_number, drain_ms);
  daemon.stop(std::chrono::milliseconds(drain_ms));
  return 0;
}
