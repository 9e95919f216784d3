#include "local_host.h"

#include "../runtime_threads.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "mrpc/transports/shm/protocol.h"

namespace mrpc::testing {

using namespace std::chrono_literals;

namespace {

// Long enough for a loaded 2-core CI machine to start a process; only a bound on failure.
constexpr auto kStartTimeout = 60s;

bool file_contains(const std::string& path, const std::string& text) {
  std::ifstream in(path);
  std::stringstream content;
  content << in.rdbuf();
  return content.str().find(text) != std::string::npos;
}

}  // namespace

LocalHost::LocalHost() {
  char name[] = "/tmp/mrpc-it-XXXXXX";
  directory_ = ::mkdtemp(name);
}

LocalHost::~LocalHost() {
  daemon_.stop(SIGKILL, 0ms);
  if (std::getenv("MRPC_TEST_KEEP_LOGS") != nullptr) {
    std::fprintf(stderr, "LocalHost: logs kept in %s\n", directory_.c_str());
    return;
  }
  std::error_code ignored;
  std::filesystem::remove_all(directory_, ignored);
}

Status LocalHost::start_daemon(std::vector<std::string> extra_args) {
  if (!extra_args.empty()) daemon_args_ = std::move(extra_args);
  ::unlink(app_socket().c_str());
  std::vector<std::string> argv = {MRPCD_PATH, "--app-socket", app_socket(), "--control-socket",
                                   control_socket()};
  if (const uint32_t threads = mrpc::testing::test_runtime_threads(); threads > 1) {
    argv.push_back("--runtime-threads");
    argv.push_back(std::to_string(threads));
  }
  argv.insert(argv.end(), daemon_args_.begin(), daemon_args_.end());
  argv.insert(argv.begin(), daemon_prefix_.begin(), daemon_prefix_.end());
  auto daemon = Subprocess::start(argv, {}, directory_ + "/mrpcd.log");
  if (!daemon.ok()) return daemon.status();
  daemon_ = std::move(*daemon);
  if (!wait_for_path(app_socket(), kStartTimeout))
    return Status(StatusCode::kUnavailable,
                  "mrpcd did not create its app socket; see " + directory_ + "/mrpcd.log");
  return Status();
}

void LocalHost::kill_daemon() {
  daemon_.stop(SIGKILL, 0ms);
}

Expected<Subprocess> LocalHost::start_app(const std::string& binary, const std::string& name,
                                          const std::string& ready_line,
                                          std::vector<std::string> args) {
  // A log of its own per start, so a restarted app's ready line is its own.
  const std::string log = directory_ + "/" + name + "-" + std::to_string(++apps_started_) + ".log";
  args.insert(args.begin(), binary);
  auto app = Subprocess::start(args, {std::string(shm::kAppSocketEnv) + "=" + app_socket()}, log);
  if (!app.ok()) return app.status();
  auto until = std::chrono::steady_clock::now() + kStartTimeout;
  while (!file_contains(log, ready_line)) {
    if (!app->running() || std::chrono::steady_clock::now() > until)
      return Status(StatusCode::kUnavailable, name + " did not get ready; see " + log);
    std::this_thread::sleep_for(2ms);
  }
  return app;
}

Expected<Subprocess> LocalHost::start_echo_server(std::vector<std::string> args) {
  return start_app(ECHO_SERVER_PATH, "echo_server", "serving echo.EchoService", std::move(args));
}

Expected<Subprocess> LocalHost::start_nested_server() {
  return start_app(NESTED_SERVER_PATH, "nested_server", "serving nested.DocumentStore");
}

Expected<std::shared_ptr<Channel>> LocalHost::connect(const std::string& app_name) {
  ChannelOptions options;
  options.socket_path = app_socket();
  options.app_name = app_name;
  return Channel::connect(options);
}

}  // namespace mrpc::testing

#include "control_server.h"

namespace mrpc::testing {

Expected<std::string> LocalHost::control(const std::string& command) {
  return ControlServer::request(control_socket(), command);
}

}  // namespace mrpc::testing
