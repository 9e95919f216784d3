#include "mrpc/transports/shm/app_socket.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include <fmt/format.h>
#include <google/protobuf/message_lite.h>

#include "mrpc/base/limits.h"

namespace mrpc::shm {

namespace {

Status errno_status(StatusCode code, const std::string& what) {
  return Status(code, fmt::format("{}: {}", what, std::strerror(errno)));
}

Expected<sockaddr_un> unix_address(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(address.sun_path)) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("app socket path '{}' is empty or longer than {} bytes", path,
                              sizeof(address.sun_path) - 1));
  }
  std::memcpy(address.sun_path, path.data(), path.size());
  return address;
}

Expected<UniqueFd> new_socket() {
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd) return errno_status(StatusCode::kResourceExhausted, "socket(AF_UNIX, SOCK_SEQPACKET)");
  return fd;
}

// A SOCK_SEQPACKET packet must fit in the sender's SO_SNDBUF, whose default (wmem_default,
// usually 208 KiB) is far below limits::kMaxAppSocketMessageBytes: raise it for a big packet
// (capped by net.core.wmem_max; SO_SNDBUFFORCE passes the cap where the process may use it).
// Leaves the socket as it is when the buffer is big enough already.
// Packets up to this fit any default send buffer: no getsockopt for them.
constexpr size_t kDefaultSendBufferPayloadBytes = 64 << 10;

Status make_room_to_send(int socket_fd, size_t bytes) {
  // The kernel reports (and needs) about twice the payload: bookkeeping of the skb.
  const int wanted = static_cast<int>(std::min<size_t>(bytes * 2 + 4096, INT32_MAX / 2));
  int current = 0;
  socklen_t length = sizeof current;
  if (::getsockopt(socket_fd, SOL_SOCKET, SO_SNDBUF, &current, &length) != 0) {
    return errno_status(StatusCode::kInvalidArgument, "SO_SNDBUF");
  }
  if (current >= wanted) return Status();
  const int request = wanted / 2;  // the kernel doubles what it is given
  (void)::setsockopt(socket_fd, SOL_SOCKET, SO_SNDBUF, &request, sizeof request);
  length = sizeof current;
  if (::getsockopt(socket_fd, SOL_SOCKET, SO_SNDBUF, &current, &length) == 0 && current >= wanted) {
    return Status();
  }
  (void)::setsockopt(socket_fd, SOL_SOCKET, SO_SNDBUFFORCE, &request, sizeof request);
  length = sizeof current;
  if (::getsockopt(socket_fd, SOL_SOCKET, SO_SNDBUF, &current, &length) == 0 && current >= wanted) {
    return Status();
  }
  return Status(StatusCode::kResourceExhausted,
                fmt::format("an app socket message of {} bytes needs a send buffer of {} bytes; "
                            "the socket's is {} (raise net.core.wmem_max to at least {})",
                            bytes, wanted, current, wanted / 2));
}

// Where a thread receives packets: room for the largest (one extra byte tells an oversized packet
// from one of exactly the limit), allocated once per thread and never zeroed; pages are touched
// only as far as packets reach. (A buffer of the limit's size zeroed per packet cost a 4 MiB memset
// and a thousand page faults per Hello or registration: ~20 ms each under ASan on a VM.)
char* receive_scratch() {
  thread_local const std::unique_ptr<char[]> scratch(
      new char[limits::kMaxAppSocketMessageBytes + 1]);
  return scratch.get();
}

}  // namespace

Status listen_unix_socket_at(int fd, const std::string& path, mode_t mode, int backlog) {
  // Bind under a temporary name, listen, then rename into place: whoever sees `path` can connect
  // (no window between bind and listen in which a connect is refused), and a stale socket file
  // is replaced atomically.
  const std::string temporary = fmt::format("{}.{}.tmp", path, ::getpid());
  auto address = unix_address(temporary);
  if (!address) return address.status();
  ::unlink(temporary.c_str());
  // The file is born with `mode` at most: no window in which others could connect.
  const mode_t previous = ::umask(static_cast<mode_t>(~mode & 0777));
  const int bound = ::bind(fd, reinterpret_cast<const sockaddr*>(&*address), sizeof(sockaddr_un));
  ::umask(previous);
  if (bound != 0) return errno_status(StatusCode::kUnavailable, fmt::format("bind {}", temporary));
  if (::chmod(temporary.c_str(), mode) != 0 || ::listen(fd, backlog) != 0 ||
      ::rename(temporary.c_str(), path.c_str()) != 0) {
    Status failed = errno_status(StatusCode::kUnavailable, fmt::format("listen on {}", path));
    ::unlink(temporary.c_str());
    return failed;
  }
  return {};
}

Expected<UniqueFd> listen_app_socket(const std::string& path, int backlog) {
  if (auto address = unix_address(path); !address) return address.status();
  auto fd = new_socket();
  if (!fd) return fd.status();
  struct stat existing {};
  if (::lstat(path.c_str(), &existing) == 0 && !S_ISSOCK(existing.st_mode))
    return Status(StatusCode::kFailedPrecondition,
                  fmt::format("{} exists and is not a socket: not replacing it", path));
  MRPC_TRY_STATUS(listen_unix_socket_at(fd->get(), path, 0666, backlog));
  return fd;
}

Expected<UniqueFd> connect_app_socket(const std::string& path) {
  auto address = unix_address(path);
  if (!address) return address.status();
  auto fd = new_socket();
  if (!fd) return fd.status();
  int result = 0;
  do {
    result =
        ::connect(fd->get(), reinterpret_cast<const sockaddr*>(&*address), sizeof(sockaddr_un));
  } while (result != 0 && errno == EINTR);
  if (result != 0) {
    return errno_status(StatusCode::kUnavailable, fmt::format("connecting to mrpcd at {}", path));
  }
  return fd;
}

Expected<UniqueFd> accept_app_socket(int listen_fd) {
  UniqueFd fd(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
  if (!fd) {
    // Nothing waiting is the common case (listeners are polled): no message text to allocate.
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Status(StatusCode::kUnavailable, "");
    if (errno == ECONNABORTED || errno == EINTR) {
      return errno_status(StatusCode::kUnavailable, "accept");
    }
    return errno_status(StatusCode::kResourceExhausted, "accept");
  }
  return fd;
}

Expected<std::pair<UniqueFd, UniqueFd>> app_socket_pair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) {
    return errno_status(StatusCode::kResourceExhausted, "socketpair");
  }
  return std::pair<UniqueFd, UniqueFd>(UniqueFd(fds[0]), UniqueFd(fds[1]));
}

Status set_nonblocking(int fd, bool nonblocking) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) return errno_status(StatusCode::kInvalidArgument, "F_GETFL");
  const int wanted = nonblocking ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
  if (::fcntl(fd, F_SETFL, wanted) != 0)
    return errno_status(StatusCode::kInvalidArgument, "F_SETFL");
  return Status();
}

Status set_receive_timeout(int fd, std::chrono::nanoseconds timeout) {
  timeval value{};
  value.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
  value.tv_usec = static_cast<suseconds_t>((timeout.count() % 1'000'000'000) / 1000);
  if (timeout.count() > 0 && value.tv_sec == 0 && value.tv_usec == 0) value.tv_usec = 1;
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &value, sizeof value) != 0) {
    return errno_status(StatusCode::kInvalidArgument, "SO_RCVTIMEO");
  }
  return Status();
}

Status send_packet(int socket_fd, std::string_view bytes, std::span<const int> fds) {
  if (bytes.size() > limits::kMaxAppSocketMessageBytes) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("app socket message of {} bytes exceeds "
                              "limits::kMaxAppSocketMessageBytes ({})",
                              bytes.size(), limits::kMaxAppSocketMessageBytes));
  }
  if (fds.size() > kMaxFdsPerPacket) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("{} fds in one packet exceed kMaxFdsPerPacket ({})", fds.size(),
                              kMaxFdsPerPacket));
  }
  // A zero-length packet reads as end of stream on the other side. AppMessage and DaemonMessage
  // always set their oneof, so they are never empty.
  if (bytes.empty()) return Status(StatusCode::kInvalidArgument, "empty app socket message");
  if (bytes.size() > kDefaultSendBufferPayloadBytes) {
    Status room = make_room_to_send(socket_fd, bytes.size());
    if (!room.ok()) return room;
  }
  iovec data{const_cast<char*>(bytes.data()), bytes.size()};
  msghdr message{};
  message.msg_iov = &data;
  message.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerPacket)] = {};
  if (!fds.empty()) {
    message.msg_control = control;
    message.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(header), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t sent = 0;
  do {
    sent = ::sendmsg(socket_fd, &message, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) {
    const StatusCode code = errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN
                                ? StatusCode::kUnavailable
                                : StatusCode::kResourceExhausted;
    return errno_status(code, "sending on the app socket");
  }
  return Status();
}

Expected<Packet> receive_packet(int socket_fd, size_t max_fds) {
  Packet packet;
  char* const scratch = receive_scratch();
  iovec data{scratch, limits::kMaxAppSocketMessageBytes + 1};
  msghdr message{};
  message.msg_iov = &data;
  message.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerPacket)] = {};
  message.msg_control = control;
  message.msg_controllen = sizeof control;
  ssize_t received = 0;
  do {
    received = ::recvmsg(socket_fd, &message, MSG_CMSG_CLOEXEC);
  } while (received < 0 && errno == EINTR);
  if (received < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      // SO_RCVTIMEO and O_NONBLOCK both report EAGAIN; tell them apart by the file flags.
      const int flags = ::fcntl(socket_fd, F_GETFL);
      if (flags >= 0 && (flags & O_NONBLOCK) != 0) {
        return Status(StatusCode::kAborted, "no packet ready on the app socket");
      }
      return Status(StatusCode::kDeadlineExceeded, "no packet within the receive timeout");
    }
    return errno_status(StatusCode::kUnavailable, "receiving on the app socket");
  }
  // Take ownership of every fd first, so every error path below closes them.
  for (cmsghdr* header = CMSG_FIRSTHDR(&message); header != nullptr;
       header = CMSG_NXTHDR(&message, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd = -1;
      std::memcpy(&fd, CMSG_DATA(header) + i * sizeof(int), sizeof(int));
      packet.fds.emplace_back(fd);
    }
  }
  if (received == 0) {
    return Status(StatusCode::kUnavailable, "the peer closed the app socket");
  }
  if ((message.msg_flags & MSG_CTRUNC) != 0) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("app socket packet carried more than kMaxFdsPerPacket ({}) fds",
                              kMaxFdsPerPacket));
  }
  if ((message.msg_flags & MSG_TRUNC) != 0 ||
      static_cast<size_t>(received) > limits::kMaxAppSocketMessageBytes) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("app socket packet exceeds limits::kMaxAppSocketMessageBytes ({})",
                              limits::kMaxAppSocketMessageBytes));
  }
  if (packet.fds.size() > max_fds) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("app socket packet carried {} fds, at most {} expected",
                              packet.fds.size(), max_fds));
  }
  packet.bytes.assign(scratch, static_cast<size_t>(received));
  return packet;
}

Status send_message(int socket_fd, const google::protobuf::MessageLite& message,
                    std::span<const int> fds) {
  std::string bytes;
  if (!message.SerializeToString(&bytes)) {
    return Status(StatusCode::kInternal,
                  fmt::format("serializing {} failed", message.GetTypeName()));
  }
  return send_packet(socket_fd, bytes, fds);
}

Expected<std::vector<UniqueFd>> receive_message(int socket_fd,
                                                google::protobuf::MessageLite& message,
                                                size_t max_fds) {
  auto packet = receive_packet(socket_fd, max_fds);
  if (!packet) return packet.status();
  if (!message.ParseFromString(packet->bytes)) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("app socket packet is not a valid {}", message.GetTypeName()));
  }
  return std::move(packet->fds);
}

Expected<PeerCredentials> peer_credentials(int socket_fd) {
  ucred credentials{};
  socklen_t length = sizeof credentials;
  if (::getsockopt(socket_fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) {
    return errno_status(StatusCode::kInternal, "SO_PEERCRED");
  }
  return PeerCredentials{credentials.pid, credentials.uid, credentials.gid};
}

}  // namespace mrpc::shm
