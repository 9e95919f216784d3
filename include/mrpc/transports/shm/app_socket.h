// The app socket: a Unix SOCK_SEQPACKET socket carrying one control message per packet, each with
// up to a few file descriptors (SCM_RIGHTS). See protocol.h and app_protocol.proto.
//
// Functions here are thread-compatible: one sender and one receiver per socket at a time.
// Received fds arrive close-on-exec and owned (UniqueFd); a packet bigger than
// limits::kMaxAppSocketMessageBytes, truncated, or with more fds than the receiver accepts is an
// error, and any fds it carried are closed.
#pragma once

#include <sys/types.h>
#include <chrono>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mrpc/base/expected.h"
#include "mrpc/base/status.h"
#include "mrpc/transports/shm/unique_fd.h"

namespace google::protobuf {
class MessageLite;
}  // namespace google::protobuf

namespace mrpc::shm {

// Most fds one app-socket packet may carry (Welcome carries 5).
inline constexpr size_t kMaxFdsPerPacket = 8;

// A listening socket at `path` (an existing socket file there is replaced). Mode 0666 unless
// changed by the caller afterwards: access control is by SO_PEERCRED on each connection.
// Binds `fd` (a Unix socket) at `path` with permissions `mode` and listens, so that the path
// appears only once connections are accepted; an existing socket file there is replaced.
Status listen_unix_socket_at(int fd, const std::string& path, mode_t mode, int backlog);
Expected<UniqueFd> listen_app_socket(const std::string& path, int backlog = 64);
// Connects to `path`. UNAVAILABLE if nothing listens there (missing file, refused).
Expected<UniqueFd> connect_app_socket(const std::string& path);
// Accepts one connection (close-on-exec). UNAVAILABLE on a transient failure (EAGAIN,
// ECONNABORTED).
Expected<UniqueFd> accept_app_socket(int listen_fd);
// A connected pair, for tests and in-process peers.
Expected<std::pair<UniqueFd, UniqueFd>> app_socket_pair();

Status set_nonblocking(int fd, bool nonblocking = true);
// Sets SO_RCVTIMEO (0: none) so a blocking receive gives up; then receive_packet returns
// DEADLINE_EXCEEDED.
Status set_receive_timeout(int fd, std::chrono::nanoseconds timeout);

struct Packet {
  std::string bytes;
  std::vector<UniqueFd> fds;
};

// Sends one packet. UNAVAILABLE if the peer has gone (EPIPE, ECONNRESET); never raises SIGPIPE.
// INVALID_ARGUMENT if bytes exceed kMaxAppSocketMessageBytes or fds exceed kMaxFdsPerPacket.
Status send_packet(int socket_fd, std::string_view bytes, std::span<const int> fds = {});
// Receives one packet with at most `max_fds` fds.
//   UNAVAILABLE        the peer closed the socket (end of stream) or reset it
//   ABORTED            non-blocking socket and no packet is ready
//   DEADLINE_EXCEEDED  the receive timeout (set_receive_timeout) passed
//   INVALID_ARGUMENT   oversized or truncated packet, too many fds (all of them closed)
Expected<Packet> receive_packet(int socket_fd, size_t max_fds);

// Protobuf forms of the two: serialize/parse one message per packet.
Status send_message(int socket_fd, const google::protobuf::MessageLite& message,
                    std::span<const int> fds = {});
// Parses the packet into `message`; INVALID_ARGUMENT if it does not parse. Returns the fds.
Expected<std::vector<UniqueFd>> receive_message(int socket_fd,
                                                google::protobuf::MessageLite& message,
                                                size_t max_fds);

struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};
// Who is on the other end of a connected Unix socket (SO_PEERCRED), as of connect().
Expected<PeerCredentials> peer_credentials(int socket_fd);

}  // namespace mrpc::shm
