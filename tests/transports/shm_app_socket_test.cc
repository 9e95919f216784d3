#include <doctest/doctest.h>

#include <cstdio>

#include <sys/stat.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <string>

#include "mrpc/base/limits.h"
#include "mrpc/transports/shm/app_socket.h"
#include "mrpc/transports/shm/region.h"
#include "transports/shm/app_protocol.pb.h"

// Counts heap allocations (this test binary only): receiving must not allocate per packet.
#include "../counting_new.h"

using mrpc::StatusCode;
using mrpc::shm::UniqueFd;

namespace {

int open_fd_count() {
  int count = 0;
  DIR* directory = ::opendir("/proc/self/fd");
  while (::readdir(directory) != nullptr) ++count;
  ::closedir(directory);
  return count;
}

std::pair<UniqueFd, UniqueFd> pair() {
  auto sockets = mrpc::shm::app_socket_pair();
  REQUIRE(sockets.ok());
  return std::move(*sockets);
}

std::string temp_socket_path() {
  return "/tmp/mrpc-test-" + std::to_string(::getpid()) + ".sock";
}

}  // namespace

TEST_CASE("a packet and its fds arrive together and the fds work") {
  auto [app, daemon] = pair();
  auto region = mrpc::shm::SharedRegion::create("test-passed", 4096);
  REQUIRE(region.ok());
  region->data()[0] = std::byte{77};
  const std::array<int, 1> fds = {region->fd()};
  REQUIRE(mrpc::shm::send_packet(daemon.get(), "welcome", fds).ok());

  auto packet = mrpc::shm::receive_packet(app.get(), 5);
  REQUIRE(packet.ok());
  CHECK(packet->bytes == "welcome");
  REQUIRE(packet->fds.size() == 1);
  CHECK((::fcntl(packet->fds[0].get(), F_GETFD) & FD_CLOEXEC) != 0);
  auto attached =
      mrpc::shm::SharedRegion::attach(std::move(packet->fds[0]), 4096, mrpc::shm::kFixedSizeSeals,
                                      mrpc::shm::RegionAccess::kReadOnly);
  REQUIRE(attached.ok());
  CHECK(attached->data()[0] == std::byte{77});
}

TEST_CASE(
    "receiving small packets allocates nothing once the thread has received one: no buffer of "
    "the packet limit per packet") {
  auto [app, daemon] = pair();
  REQUIRE(mrpc::shm::send_packet(daemon.get(), "warm-up", {}).ok());
  REQUIRE(mrpc::shm::receive_packet(app.get(), 0).ok());  // the thread's buffer, once
  uint64_t allocations = 0;
  size_t received = 0;
  for (int i = 0; i < 100; ++i) {
    REQUIRE(mrpc::shm::send_packet(daemon.get(), "hello", {}).ok());
    mrpc::testing::counted_allocations = 0;
    mrpc::testing::count_allocations_here = true;
    auto packet = mrpc::shm::receive_packet(app.get(), 0);
    mrpc::testing::count_allocations_here = false;
    allocations += mrpc::testing::counted_allocations;
    if (packet.ok() && packet->bytes == "hello") ++received;
  }
  CHECK(received == 100);
  CHECK(allocations == 0);
}

TEST_CASE("a packet with more fds than expected is refused and its fds closed") {
  auto [app, daemon] = pair();
  int pipe_fds[2];
  REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
  UniqueFd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
  const std::array<int, 3> fds = {read_end.get(), write_end.get(), read_end.get()};
  REQUIRE(mrpc::shm::send_packet(daemon.get(), "x", fds).ok());
  const int before = open_fd_count();
  auto packet = mrpc::shm::receive_packet(app.get(), 2);
  REQUIRE_FALSE(packet.ok());
  CHECK(packet.status().code() == StatusCode::kInvalidArgument);
  CHECK(open_fd_count() == before);
}

TEST_CASE("a packet beyond the socket message limit is refused on both ends") {
  auto [app, daemon] = pair();
  const std::string too_big(mrpc::limits::kMaxAppSocketMessageBytes + 1, 'x');
  CHECK(mrpc::shm::send_packet(daemon.get(), too_big).code() == StatusCode::kInvalidArgument);

  // A hostile peer bypasses send_packet's check: the receiver still refuses it.
  int buffer_bytes = 8 << 20;
  ::setsockopt(daemon.get(), SOL_SOCKET, SO_SNDBUF, &buffer_bytes, sizeof buffer_bytes);
  ::setsockopt(app.get(), SOL_SOCKET, SO_RCVBUF, &buffer_bytes, sizeof buffer_bytes);
  if (::send(daemon.get(), too_big.data(), too_big.size(), MSG_NOSIGNAL) ==
      static_cast<ssize_t>(too_big.size())) {
    auto packet = mrpc::shm::receive_packet(app.get(), 0);
    REQUIRE_FALSE(packet.ok());
    CHECK(packet.status().code() == StatusCode::kInvalidArgument);
  }
}

TEST_CASE(
    "a packet of the socket message limit is sent whatever send buffer the socket began with") {
  auto [app, daemon] = pair();
  int small = 16 << 10;  // far below the kernel's default, which is itself far below the limit
  REQUIRE(::setsockopt(app.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
  std::string big(mrpc::limits::kMaxAppSocketMessageBytes, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131 % 251);
  const mrpc::Status sent = mrpc::shm::send_packet(app.get(), big);
  if (!sent.ok()) {
    // Only where the kernel caps buffers below it and the process may not pass the cap: then the
    // error says what to raise.
    CHECK(sent.code() == StatusCode::kResourceExhausted);
    CHECK(sent.message().find("net.core.wmem_max") != std::string::npos);
    return;
  }
  auto packet = mrpc::shm::receive_packet(daemon.get(), 0);
  REQUIRE_MESSAGE(packet.ok(), packet.status().to_string());
  CHECK(packet->bytes == big);
}

TEST_CASE("the peer closing the socket reads as UNAVAILABLE, sending to it too") {
  auto [app, daemon] = pair();
  daemon.reset();
  auto packet = mrpc::shm::receive_packet(app.get(), 5);
  REQUIRE_FALSE(packet.ok());
  CHECK(packet.status().code() == StatusCode::kUnavailable);
  CHECK(mrpc::shm::send_packet(app.get(), "hello").code() == StatusCode::kUnavailable);
}

TEST_CASE(
    "a non-blocking socket with nothing to read reports ABORTED, a timed one DEADLINE_EXCEEDED") {
  auto [app, daemon] = pair();
  REQUIRE(mrpc::shm::set_nonblocking(app.get()).ok());
  CHECK(mrpc::shm::receive_packet(app.get(), 0).status().code() == StatusCode::kAborted);
  REQUIRE(mrpc::shm::set_nonblocking(app.get(), false).ok());
  REQUIRE(mrpc::shm::set_receive_timeout(app.get(), std::chrono::milliseconds(1)).ok());
  CHECK(mrpc::shm::receive_packet(app.get(), 0).status().code() == StatusCode::kDeadlineExceeded);
}

TEST_CASE("protobuf control messages round-trip, and garbage does not parse") {
  auto [app, daemon] = pair();
  mrpc::wire::AppMessage hello;
  hello.mutable_hello()->set_protocol_version(1);
  hello.mutable_hello()->set_app_name("test-app");
  REQUIRE(mrpc::shm::send_message(app.get(), hello).ok());
  mrpc::wire::AppMessage received;
  auto fds = mrpc::shm::receive_message(daemon.get(), received, 0);
  REQUIRE(fds.ok());
  CHECK(fds->empty());
  REQUIRE(received.has_hello());
  CHECK(received.hello().app_name() == "test-app");

  REQUIRE(mrpc::shm::send_packet(app.get(), "\xff\xff\xff\xff").ok());
  CHECK(mrpc::shm::receive_message(daemon.get(), received, 0).status().code() ==
        StatusCode::kInvalidArgument);
}

TEST_CASE("a listening socket accepts a connection and names the peer's process") {
  const std::string path = temp_socket_path();
  auto listener = mrpc::shm::listen_app_socket(path);
  REQUIRE(listener.ok());
  auto client = mrpc::shm::connect_app_socket(path);
  REQUIRE(client.ok());
  auto server = mrpc::shm::accept_app_socket(listener->get());
  REQUIRE(server.ok());
  auto credentials = mrpc::shm::peer_credentials(server->get());
  REQUIRE(credentials.ok());
  CHECK(credentials->pid == ::getpid());
  CHECK(credentials->uid == ::getuid());
  REQUIRE(mrpc::shm::send_packet(client->get(), "ping").ok());
  CHECK(mrpc::shm::receive_packet(server->get(), 0).value().bytes == "ping");
  ::unlink(path.c_str());
}

TEST_CASE("listening replaces a stale socket file and never leaves a file that refuses") {
  const std::string path = temp_socket_path();
  {
    // A daemon that died: its socket file stays, nobody listens on it.
    auto dead = mrpc::shm::listen_app_socket(path);
    REQUIRE(dead.ok());
  }
  CHECK(mrpc::shm::connect_app_socket(path).status().code() == StatusCode::kUnavailable);
  auto listener = mrpc::shm::listen_app_socket(path);
  REQUIRE(listener.ok());
  CHECK(mrpc::shm::connect_app_socket(path).ok());
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0666);
  // No temporary file is left beside it.
  CHECK(::access((path + "." + std::to_string(::getpid()) + ".tmp").c_str(), F_OK) != 0);
  ::unlink(path.c_str());
}

TEST_CASE("a path that exists and is not a socket is not replaced") {
  const std::string path = temp_socket_path();
  FILE* file = std::fopen(path.c_str(), "w");
  REQUIRE(file != nullptr);
  std::fclose(file);
  CHECK(mrpc::shm::listen_app_socket(path).status().code() == StatusCode::kFailedPrecondition);
  ::unlink(path.c_str());
}

TEST_CASE("connecting where nothing listens is UNAVAILABLE") {
  auto connected = mrpc::shm::connect_app_socket("/tmp/mrpc-test-nothing-listens-here.sock");
  REQUIRE_FALSE(connected.ok());
  CHECK(connected.status().code() == StatusCode::kUnavailable);
  CHECK(mrpc::shm::connect_app_socket(std::string(200, 'x')).status().code() ==
        StatusCode::kInvalidArgument);
}
