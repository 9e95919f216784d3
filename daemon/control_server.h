// ControlServer: the daemon's control interface, a Unix stream socket separate from the app socket,
// created with mode 0600 so only the daemon's user (and root) can use it. One request per
// connection: a command line ("stats"), answered with one JSON document, then the socket closes.
// Runtime thread only (a task's run() polls it); clients that never finish their line are dropped
// after kMaxPendingClients newer ones. A command the deferred handler takes (the policy commands,
// which wait for the runtime to splice) is answered later from another thread: the client's
// socket goes with the reply callback.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "mrpc/base/expected.h"
#include "mrpc/base/limits.h"
#include "mrpc/transports/shm/unique_fd.h"

namespace mrpc {

class ControlServer {
 public:
  // Answers one command line (without the newline) with a JSON document.
  using Handler = std::function<std::string(const std::string& command)>;

  // Tells the runtime to wake on (true) or forget (false) a client socket.
  using Watch = std::function<void(int fd, bool watch)>;

  // Commands `takes` accepts go to `deferred`, which answers later, from any thread, through
  // `reply`; the others to the Handler.
  using Reply = std::function<void(const std::string& reply)>;
  using Takes = std::function<bool(const std::string& command)>;
  using Deferred = std::function<void(const std::string& command, Reply reply)>;
  void set_deferred(Takes takes, Deferred deferred) {
    takes_ = std::move(takes);
    deferred_ = std::move(deferred);
  }

  static Expected<ControlServer> listen(const std::string& path, Handler handler, Watch watch);
  int fd() const { return listener_.get(); }
  // Accepts and serves what is ready, without blocking. Returns whether anything happened.
  bool poll();
  // Clients whose request has not come in whole yet.
  bool has_clients() const { return !clients_.empty(); }
  // Blocking helper for tools and tests: sends `command`, returns the reply.
  static Expected<std::string> request(const std::string& path, const std::string& command);

 private:
  struct Client {
    shm::UniqueFd socket;
    std::string buffer;
  };
  static constexpr size_t kMaxPendingClients = 16;
  // A command line: room for `load` with a whole policy file as JSON, every byte of it escaped
  // (\u0001 is six bytes).
  static constexpr size_t kMaxCommandBytes = 6 * limits::kMaxPolicyFileBytes + (64u << 10);
  // How long a deferred reply waits for a client that does not read it.
  static constexpr int kReplySendTimeoutSeconds = 2;

  shm::UniqueFd listener_;
  Handler handler_;
  Watch watch_;
  Takes takes_;
  Deferred deferred_;
  static void send_reply(int fd, const std::string& reply);
  std::vector<Client> clients_;
};

}  // namespace mrpc
