// Subprocess: start, watch and stop another program. Used by the main-job demo, the integration
// tests and the benchmarks to run the real daemon and real apps as separate processes.
// A Subprocess owns its child: destroying it kills (SIGKILL) and reaps the child if still running.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "mrpc/base/expected.h"

namespace mrpc {

struct ProcessCpu {
  double user_seconds = 0;
  double system_seconds = 0;
  double total() const { return user_seconds + system_seconds; }
};

class Subprocess {
 public:
  // Starts argv[0] (searched on PATH) with argv and the current environment plus `extra_env`
  // ("NAME=value"). stdout/stderr are inherited unless `output_path` is set (both appended there).
  static Expected<Subprocess> start(const std::vector<std::string>& argv,
                                    const std::vector<std::string>& extra_env = {},
                                    const std::string& output_path = {});
  Subprocess() = default;
  Subprocess(Subprocess&& other) noexcept : pid_(std::exchange(other.pid_, -1)) {}
  Subprocess& operator=(Subprocess&& other) noexcept;
  ~Subprocess();

  pid_t pid() const { return pid_; }
  bool running();
  // Sends `signal`; then waits up to `grace` for the exit, SIGKILL after. Returns the wait status.
  int stop(int signal, std::chrono::milliseconds grace = std::chrono::seconds(5));
  // Waits for exit up to `timeout`; DEADLINE_EXCEEDED if still running. Value: exit code, or
  // 128 + signal number when killed by a signal.
  Expected<int> wait(std::chrono::milliseconds timeout);
  // CPU time used so far, from /proc/PID/stat (the child must still be running or unreaped).
  Expected<ProcessCpu> cpu() const;

 private:
  explicit Subprocess(pid_t pid) : pid_(pid) {}
  pid_t pid_ = -1;
};

// CPU time of any process from /proc/PID/stat.
Expected<ProcessCpu> process_cpu(pid_t pid);
// Polls until `path` exists (a socket a daemon creates, say) or `timeout` passes.
bool wait_for_path(const std::string& path, std::chrono::milliseconds timeout);

}  // namespace mrpc
