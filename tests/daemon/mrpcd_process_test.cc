// mrpcd as a real process: it serves apps over its socket, sleeps when idle, stops on SIGTERM.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "../../daemon/control_server.h"
#include "../idle_daemon.h"
#include "mrpc/transports/shm/app_socket.h"
#include "test_app.h"

using namespace std::chrono_literals;
using namespace mrpc;
using namespace mrpc::testing;

namespace {

class DaemonProcess {
 public:
  explicit DaemonProcess(const TempDir& dir, std::vector<std::string> extra = {})
      : app_socket_(dir.path("app.sock")), control_socket_(dir.path("control.sock")) {
    std::vector<std::string> args = {
        MRPCD_PATH,      "--app-socket", app_socket_, "--control-socket",
        control_socket_, "--heap-bytes", "4194304",   "--receive-bytes",
        "4194304",       "--log-level",  "warn"};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      std::vector<char*> argv;
      for (auto& arg : args) argv.push_back(arg.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    // Ready once it accepts connections.
    for (int attempt = 0; attempt < 10'000; ++attempt) {
      if (shm::connect_app_socket(app_socket_).ok()) return;
      std::this_thread::sleep_for(1ms);
    }
    FAIL("mrpcd did not start listening");
  }
  ~DaemonProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  // Sends SIGTERM and returns the exit status.
  int terminate() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }
  // CPU seconds (user + system) the process has used, from /proc/PID/stat.
  double cpu_seconds() const {
    std::ifstream file("/proc/" + std::to_string(pid_) + "/stat");
    std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    // Fields after the command name (which may hold spaces) start after the last ')'.
    std::istringstream rest(text.substr(text.rfind(')') + 2));
    std::string field;
    long long utime = 0, stime = 0;
    for (int index = 3; rest >> field; ++index) {
      if (index == 14) utime = std::stoll(field);
      if (index == 15) {
        stime = std::stoll(field);
        break;
      }
    }
    return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  }
  const std::string& app_socket() const { return app_socket_; }
  // The daemon's `stats` answer on its control socket.
  nlohmann::json stats() const {
    auto reply = ControlServer::request(control_socket_, "stats");
    REQUIRE_MESSAGE(reply.ok(), reply.status().to_string());
    return nlohmann::json::parse(*reply);
  }

 private:
  std::string app_socket_;
  std::string control_socket_;
  pid_t pid_ = -1;
};

}  // namespace

TEST_CASE("mrpcd as a process routes calls, sleeps when idle, and exits cleanly on SIGTERM") {
  TempDir dir;
  DaemonProcess daemon(dir);
  EchoServer server(daemon.app_socket());
  auto client = TestApp::connect(daemon.app_socket(), "client");
  for (uint64_t id = 1; id <= 100; ++id) {
    client->call_echo(server.service_id(), id, "ping");
    auto done = client->wait_call_done(id);
    REQUIRE(done.has_value());
    REQUIRE(status_code_from_wire(done->status) == StatusCode::kOk);
    CHECK(client->received_text(done->message_offset) == "ping");
    client->release(done->message_offset);
  }

  // Idle with two apps connected: the daemon must sleep, not poll. Judged by its runtime's own
  // counts (a polling runtime makes a round every few hundred nanoseconds: millions in 2 s; a
  // sleeping one makes none without an event), not by its CPU time, which depends on the machine
  // and on what else runs on it (under ASan on a loaded CI machine it reached 0.11 s).
  std::this_thread::sleep_for(100ms);
  const nlohmann::json before = daemon.stats();
  const double cpu_before = daemon.cpu_seconds();
  std::this_thread::sleep_for(2s);
  const nlohmann::json after = daemon.stats();
  MESSAGE("idle mrpcd used ", daemon.cpu_seconds() - cpu_before, " CPU seconds in 2 s");
  check_daemon_slept(before, after);

  int status = daemon.terminate();
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(::access(daemon.app_socket().c_str(), F_OK) != 0);
}

TEST_CASE("mrpcd refuses a bad configuration with exit code 1") {
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::execl(MRPCD_PATH, MRPCD_PATH, "--ring-entries", "1000", "--app-socket", "/tmp/x-a.sock",
            "--control-socket", "/tmp/x-c.sock", "--log-level", "off", nullptr);
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 1);
}
