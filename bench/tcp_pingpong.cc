#include "tcp_pingpong.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "mrpc/base/clock.h"

namespace mrpc::bench {
namespace {

bool write_all(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool read_all(int fd, char* data, size_t n) {
  while (n > 0) {
    ssize_t r = ::read(fd, data, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    data += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

sockaddr_in ipv4(const std::string& text, uint16_t port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  if (::inet_pton(AF_INET, text.c_str(), &address.sin_addr) != 1)
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return address;
}

}  // namespace

int run_tcp_echo_server(uint16_t port, uint32_t payload, const std::string& address_text) {
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in address = ipv4(address_text, port);
  if (::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::listen(listener, 1) != 0) {
    fmt::print(stderr, "tcp echo server: bind/listen on {}:{}: {}\n", address_text, port,
               std::strerror(errno));
    return 1;
  }
  int connection = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  ::close(listener);
  if (connection < 0) return 1;
  set_nodelay(connection);
  std::vector<char> buffer(payload);
  while (read_all(connection, buffer.data(), payload) &&
         write_all(connection, buffer.data(), payload)) {
  }
  ::close(connection);
  return 0;
}

Status run_tcp_client(const TcpRunOptions& options, LatencyRecorder& latencies, double& seconds) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address = ipv4(options.address, options.port);
  // The server process may still be starting (another namespace's `ip netns exec` first): retry
  // the connect for a while.
  int attempts = 0;
  while (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    if (++attempts > 10000) {
      ::close(fd);
      return Status(StatusCode::kUnavailable, "tcp echo server did not start");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  set_nodelay(fd);
  const auto& clock = MonotonicClock::instance();
  std::vector<char> out(options.payload, 'x');
  std::vector<char> in(options.payload);
  latencies.reserve(options.calls);
  MonoTime start = clock.now();
  bool ok = true;
  if (options.window <= 1) {
    for (uint32_t i = 0; i < options.calls && ok; ++i) {
      MonoTime t0 = clock.now();
      ok = write_all(fd, out.data(), out.size()) && read_all(fd, in.data(), in.size());
      latencies.add(clock.now() - t0);
    }
  } else {
    // Keep `window` messages in flight: a writer thread sends, this thread reads the echoes.
    std::vector<MonoTime> sent_at(options.calls);
    std::atomic<uint32_t> received{0};
    std::thread writer([&] {
      for (uint32_t i = 0; i < options.calls; ++i) {
        while (i - received.load(std::memory_order_acquire) >= options.window) {
          std::this_thread::yield();
        }
        sent_at[i] = clock.now();
        if (!write_all(fd, out.data(), out.size())) return;
      }
    });
    for (uint32_t i = 0; i < options.calls && ok; ++i) {
      ok = read_all(fd, in.data(), in.size());
      latencies.add(clock.now() - sent_at[i]);
      received.store(i + 1, std::memory_order_release);
    }
    if (!ok) ::shutdown(fd, SHUT_RDWR);  // unblocks the writer
    writer.join();
  }
  seconds = static_cast<double>(clock.now() - start) / 1e9;
  ::close(fd);
  return ok ? Status() : Status(StatusCode::kUnavailable, "tcp echo connection broke");
}

}  // namespace mrpc::bench
