#include "mrpc/base/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

extern char** environ;

namespace mrpc {
namespace {

Status errno_status(std::string_view what) {
  return Status(StatusCode::kInternal, fmt::format("{}: {}", what, std::strerror(errno)));
}

int exit_code_of(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

}  // namespace

Expected<Subprocess> Subprocess::start(const std::vector<std::string>& argv,
                                       const std::vector<std::string>& extra_env,
                                       const std::string& output_path) {
  if (argv.empty()) return Status(StatusCode::kInvalidArgument, "empty argv");
  // Everything the child needs is prepared before fork: after it only async-signal-safe calls.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) env_storage.emplace_back(*e);
  for (const auto& e : extra_env) env_storage.push_back(e);
  std::vector<char*> env;
  for (auto& e : env_storage) env.push_back(e.data());
  env.push_back(nullptr);

  int output_fd = -1;
  if (!output_path.empty()) {
    output_fd = ::open(output_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (output_fd < 0) return errno_status("open " + output_path);
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    if (output_fd >= 0) ::close(output_fd);
    return errno_status("fork");
  }
  if (pid == 0) {
    if (output_fd >= 0) {
      ::dup2(output_fd, STDOUT_FILENO);
      ::dup2(output_fd, STDERR_FILENO);
    }
    ::execvpe(args[0], args.data(), env.data());
    _exit(127);
  }
  if (output_fd >= 0) ::close(output_fd);
  return Subprocess(pid);
}

Subprocess& Subprocess::operator=(Subprocess&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0) stop(SIGKILL, std::chrono::milliseconds(0));
    pid_ = std::exchange(other.pid_, -1);
  }
  return *this;
}

Subprocess::~Subprocess() {
  if (pid_ > 0) stop(SIGKILL, std::chrono::milliseconds(0));
}

bool Subprocess::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

Expected<int> Subprocess::wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return Status(StatusCode::kFailedPrecondition, "no child");
  auto until = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      return exit_code_of(status);
    }
    if (r < 0 && errno != EINTR) return errno_status("waitpid");
    if (std::chrono::steady_clock::now() >= until)
      return Status(StatusCode::kDeadlineExceeded, fmt::format("pid {} still running", pid_));
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

int Subprocess::stop(int signal, std::chrono::milliseconds grace) {
  if (pid_ <= 0) return 0;
  ::kill(pid_, signal);
  auto exited = wait(grace);
  if (exited.ok()) return *exited;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return exit_code_of(status);
}

Expected<ProcessCpu> Subprocess::cpu() const {
  return process_cpu(pid_);
}

Expected<ProcessCpu> process_cpu(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string line;
  if (!in || !std::getline(in, line)) return Status(StatusCode::kNotFound, "no such process");
  // The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
  auto close = line.rfind(')');
  if (close == std::string::npos) return Status(StatusCode::kInternal, "bad /proc stat line");
  std::istringstream fields(line.substr(close + 2));
  std::string field;
  // After ')': field 3 is state; utime and stime are fields 14 and 15.
  unsigned long long utime = 0, stime = 0;
  for (int index = 3; index <= 15 && fields >> field; ++index) {
    if (index == 14) utime = std::stoull(field);
    if (index == 15) stime = std::stoull(field);
  }
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  return ProcessCpu{static_cast<double>(utime) / ticks, static_cast<double>(stime) / ticks};
}

bool wait_for_path(const std::string& path, std::chrono::milliseconds timeout) {
  auto until = std::chrono::steady_clock::now() + timeout;
  struct stat st {};
  while (::stat(path.c_str(), &st) != 0) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace mrpc
