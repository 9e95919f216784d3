// LocalHost: one host's worth of real mrpc processes for integration tests: mrpcd on sockets in a
// fresh temporary directory, example server apps as child processes, and channels from the test
// process (which plays the client app). Everything started is stopped when it goes away; the
// directory (with every process's log) is removed too unless MRPC_TEST_KEEP_LOGS is set.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "mrpc/base/expected.h"
#include "mrpc/base/subprocess.h"
#include "mrpc/client/channel.h"

namespace mrpc::testing {

class LocalHost {
 public:
  // Makes the directory; starts nothing.
  LocalHost();
  ~LocalHost();
  LocalHost(const LocalHost&) = delete;
  LocalHost& operator=(const LocalHost&) = delete;

  const std::string& directory() const { return directory_; }
  std::string app_socket() const { return directory_ + "/app.sock"; }
  std::string control_socket() const { return directory_ + "/control.sock"; }

  // Starts mrpcd (again, after stop_daemon) and waits until its app socket exists.
  Status start_daemon(std::vector<std::string> extra_args = {});
  // Runs mrpcd under this command (e.g. {"ip", "netns", "exec", "NAME"}: another network
  // namespace); the command must exec mrpcd so its pid is mrpcd's. Empty by default.
  void set_daemon_prefix(std::vector<std::string> prefix) { daemon_prefix_ = std::move(prefix); }
  // SIGKILL: a crash, as far as the apps can tell.
  void kill_daemon();
  Subprocess& daemon() { return daemon_; }

  // Starts an app binary with MRPC_SOCKET pointing at this host's daemon and waits until it prints
  // `ready_line` on stdout (its log file is directory()/<name>-<n>.log).
  Expected<Subprocess> start_app(const std::string& binary, const std::string& name,
                                 const std::string& ready_line, std::vector<std::string> args = {});
  Expected<Subprocess> start_echo_server(std::vector<std::string> args = {});
  Expected<Subprocess> start_nested_server();

  // A channel from the test process to this host's daemon.
  Expected<std::shared_ptr<Channel>> connect(const std::string& app_name = "test_client");

  // The daemon's answer to a control command ("stats"), as JSON text.
  Expected<std::string> control(const std::string& command);

 private:
  std::string directory_;
  Subprocess daemon_;
  std::vector<std::string> daemon_args_;
  std::vector<std::string> daemon_prefix_;
  int apps_started_ = 0;
};

}  // namespace mrpc::testing
