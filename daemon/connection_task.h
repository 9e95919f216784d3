// ConnectionTask: one app connection as a task of the daemon's runtime. Each round it reads a few
// control messages from the app socket (Hello, RegisterService), then runs the connection's graph
// (frontend -> router). It sets the connection up (regions, rings, doorbells, Welcome with fds)
// and tears it down (the app closed its socket, broke its rings, or the daemon stops).
// Runtime thread only; owns its Connection jointly with DaemonCore::connections.
#pragma once

#include <memory>

#include "core.h"
#include "mrpc/dataflow/runtime.h"

namespace mrpc {

namespace wire {
class Hello;
class RegisterService;
}  // namespace wire

class ConnectionTask final : public Task {
 public:
  ConnectionTask(DaemonCore& core, std::shared_ptr<Connection> connection);

  bool run() override;
  MonoTime next_timer() const override;
  bool prepare_to_sleep() override;
  void woke() override;

  // Closes the socket, fails or drops the connection's calls, and leaves the runtime.
  void close(const char* why);
  bool closed() const { return connection_->state == Connection::State::kClosed; }

 private:
  // Reads at most a few control messages; false if the connection must close.
  bool read_control_messages();
  bool on_hello(const wire::Hello& hello);
  bool on_register_service(const wire::RegisterService& request);
  bool refuse(const std::string& reason);

  static constexpr uint32_t kRoundsBetweenSocketChecks = 64;

  DaemonCore& core_;
  std::shared_ptr<Connection> connection_;
  uint32_t socket_check_countdown_ = 0;
};

}  // namespace mrpc
