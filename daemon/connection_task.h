// ConnectionTask: one app connection as a task of the daemon's runtime. Each round it reads the
// app socket if the runtime saw it readable (Hello, RegisterService: rare), drains the app's
// submission ring through its AppFrontend, and runs the connection's two graphs: egress (this
// app's calls: policies, then the Router) and ingress (calls to this app: policies, then
// delivery). It sets the connection up (regions, rings, doorbells, graphs, Welcome with fds) and
// tears it down (the app closed its socket, broke its rings, or the daemon stops).
// Runtime thread only; owns its Connection jointly with DaemonCore's connection table.
#pragma once

#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "app_frontend.h"
#include "core.h"
#include "router.h"

namespace mrpc {

struct CodecJob;  // codec_compiler.h

namespace wire {
class Hello;
class RegisterService;
class DaemonMessage;
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
  // Reads at most a few control messages; false if the connection must close (`why` says why).
  bool read_control_messages(const char*& why);
  bool on_hello(const wire::Hello& hello);
  bool on_register_service(const wire::RegisterService& request);
  // Finishes the registrations whose codecs are ready, in the order they came; false if the
  // connection must close.
  bool finish_registrations(bool& did_work);
  struct PendingRegistration;
  // The front registration's codecs are ready: registers it, publishes the change to every
  // shard and makes its reply.
  void register_ready(PendingRegistration& pending);
  // Whether finish_registrations() has something to do now.
  bool registration_can_move() const;
  bool refuse(const std::string& reason);

  DaemonCore& core_;
  std::shared_ptr<Connection> connection_;
  AppFrontend frontend_;
  Router router_;
  // RegisterService requests at the codec compile thread (codec_compiler.h), oldest first. Once
  // its codecs are ready one is registered and `reply` made; the reply is sent when every other
  // shard's view has the change (`shards_left` is 0).
  struct PendingRegistration {
    std::shared_ptr<CodecJob> job;
    uint64_t request_id = 0;
    bool serve = false;
    std::shared_ptr<std::atomic<size_t>> shards_left;  // null until registered
    std::shared_ptr<wire::DaemonMessage> reply;
  };
  std::deque<PendingRegistration> registrations_;
};

}  // namespace mrpc
