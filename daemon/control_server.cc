#include "control_server.h"

#include "mrpc/transports/shm/app_socket.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace mrpc {

namespace {
Expected<sockaddr_un> socket_address(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof address.sun_path)
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("socket path '{}' is empty or longer than {} bytes", path,
                              sizeof address.sun_path - 1));
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  return address;
}

Status errno_status(StatusCode code, const std::string& what) {
  return Status(code, fmt::format("{}: {}", what, std::strerror(errno)));
}
}  // namespace

Expected<ControlServer> ControlServer::listen(const std::string& path, Handler handler,
                                              Watch watch) {
  auto address = socket_address(path);
  if (!address.ok()) return address.status();
  shm::UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!listener) return errno_status(StatusCode::kUnavailable, "control socket");
  MRPC_TRY_STATUS(shm::listen_unix_socket_at(listener.get(), path, 0600, 16));
  ControlServer server;
  server.listener_ = std::move(listener);
  server.handler_ = std::move(handler);
  server.watch_ = std::move(watch);
  return server;
}

bool ControlServer::poll() {
  bool did_work = false;
  for (;;) {
    int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) break;
    if (clients_.size() >= kMaxPendingClients) {
      watch_(clients_.front().socket.get(), false);
      clients_.erase(clients_.begin());
    }
    clients_.push_back(Client{shm::UniqueFd(fd), {}});
    watch_(fd, true);
    did_work = true;
  }
  for (size_t i = 0; i < clients_.size();) {
    Client& client = clients_[i];
    char chunk[16384];
    bool finished = false;
    bool deferred = false;
    for (;;) {  // what is there, up to the end of the line
      ssize_t got = ::recv(client.socket.get(), chunk, sizeof chunk, 0);
      if (got > 0) {
        client.buffer.append(chunk, static_cast<size_t>(got));
        did_work = true;
        size_t newline = client.buffer.find('\n');
        if (newline == std::string::npos && client.buffer.size() <= kMaxCommandBytes) continue;
        if (newline == std::string::npos) {  // over the limit: refused, not cut and run
          const std::string reply = fmt::format(
              "{{\"ok\":false,\"code\":\"INVALID_ARGUMENT\",\"error\":\"a control request "
              "is at most {} bytes (ControlServer::kMaxCommandBytes) up to its newline\"}}\n",
              kMaxCommandBytes);
          (void)::send(client.socket.get(), reply.data(), reply.size(), MSG_NOSIGNAL);
          finished = true;
          break;
        }
        std::string command = client.buffer.substr(0, newline);
        if (takes_ && takes_(command)) {
          deferred = true;
          watch_(client.socket.get(), false);
          auto socket = std::make_shared<shm::UniqueFd>(std::move(client.socket));
          deferred_(command, [socket](const std::string& reply) {
            send_reply(socket->get(), reply + "\n");
          });
        }
        if (!deferred) {
          std::string reply = handler_(command) + "\n";
          // A reply is small; a client that does not read it loses it.
          (void)::send(client.socket.get(), reply.data(), reply.size(), MSG_NOSIGNAL);
        }
        finished = true;
      } else if (got == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        finished = true;
      }
      break;
    }
    if (finished) {
      if (!deferred) watch_(client.socket.get(), false);
      clients_.erase(clients_.begin() + static_cast<std::ptrdiff_t>(i));
      did_work = true;
    } else {
      ++i;
    }
  }
  return did_work;
}

void ControlServer::send_reply(int fd, const std::string& reply) {
  // Blocking, with a timeout: a reply (metrics, list) may be bigger than the socket buffer.
  int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) (void)::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  timeval timeout{kReplySendTimeoutSeconds, 0};
  (void)::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  size_t sent = 0;
  while (sent < reply.size()) {
    ssize_t n = ::send(fd, reply.data() + sent, reply.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;  // the client left or stopped reading: it loses the reply
    sent += static_cast<size_t>(n);
  }
}

Expected<std::string> ControlServer::request(const std::string& path, const std::string& command) {
  auto address = socket_address(path);
  if (!address.ok()) return address.status();
  shm::UniqueFd socket(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!socket) return errno_status(StatusCode::kUnavailable, "socket");
  if (::connect(socket.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof *address) < 0)
    return errno_status(StatusCode::kUnavailable, "connect " + path);
  std::string line = command + "\n";
  // A signal (a timer of the calling program) interrupts a blocking call: try again.
  ssize_t sent = 0;
  do {
    sent = ::send(socket.get(), line.data(), line.size(), MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return errno_status(StatusCode::kUnavailable, "send");
  std::string reply;
  char chunk[4096];
  for (;;) {
    ssize_t got = ::recv(socket.get(), chunk, sizeof chunk, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return errno_status(StatusCode::kUnavailable, "recv");
    if (got == 0) break;
    reply.append(chunk, static_cast<size_t>(got));
  }
  return reply;
}

}  // namespace mrpc
