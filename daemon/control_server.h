// ControlServer: the daemon's control interface, a Unix stream socket separate from the app socket,
// created with mode 0600 so only the daemon's user (and root) can use it. One request per
// connection: a command line ("stats"), answered with one JSON document, then the socket closes.
// Runtime thread only (a task's run() polls it); clients that never finish their line are dropped
// after kMaxPendingClients newer ones.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "mrpc/base/expected.h"
#include "mrpc/transports/shm/unique_fd.h"

namespace mrpc {

class ControlServer {
 public:
  // Answers one command line (without the newline) with a JSON document.
  using Handler = std::function<std::string(const std::string& command)>;

  // Tells the runtime to wake on (true) or forget (false) a client socket.
  using Watch = std::function<void(int fd, bool watch)>;

  static Expected<ControlServer> listen(const std::string& path, Handler handler, Watch watch);
  int fd() const { return listener_.get(); }
  // Accepts and serves what is ready, without blocking. Returns whether anything happened.
  bool poll();
  // Blocking helper for tools and tests: sends `command`, returns the reply.
  static Expected<std::string> request(const std::string& path, const std::string& command);

 private:
  struct Client {
    shm::UniqueFd socket;
    std::string buffer;
  };
  static constexpr size_t kMaxPendingClients = 16;
  static constexpr size_t kMaxCommandBytes = 1024;

  shm::UniqueFd listener_;
  Handler handler_;
  Watch watch_;
  std::vector<Client> clients_;
};

}  // namespace mrpc
