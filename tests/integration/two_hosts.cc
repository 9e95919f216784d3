#include "two_hosts.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

namespace mrpc::testing {

namespace {

bool sh(const std::string& command) {
  return std::system((command + " >/dev/null 2>&1").c_str()) == 0;
}

// A port free on 127.0.0.2 now (closed again: a small race with other processes, bounded by the
// kernel's port allocation never handing the same ephemeral port out twice in a row).
uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(0x7f000002);
  socklen_t length = sizeof(address);
  uint16_t port = 0;
  if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0)
    port = ntohs(address.sin_port);
  if (fd >= 0) ::close(fd);
  return port;
}

}  // namespace

TwoHosts::TwoHosts() {
  const int pid = static_cast<int>(::getpid());
  ns_a_ = fmt::format("mrpc-a-{}", pid);
  ns_b_ = fmt::format("mrpc-b-{}", pid);
  veth_a_ = fmt::format("mra{}", pid % 1000000000);
  veth_b_ = fmt::format("mrb{}", pid % 1000000000);
  const std::string a = "ip -n " + ns_a_, b = "ip -n " + ns_b_;
  // MRPC_TEST_NO_NETNS=1 takes the loopback fallback on purpose (to test it).
  const bool allowed = std::getenv("MRPC_TEST_NO_NETNS") == nullptr;
  namespaces_ = allowed && ::geteuid() == 0 && sh("ip netns add " + ns_a_) &&
                sh("ip netns add " + ns_b_) &&
                sh(fmt::format("ip link add {} type veth peer name {}", veth_a_, veth_b_)) &&
                sh(fmt::format("ip link set {} netns {}", veth_a_, ns_a_)) &&
                sh(fmt::format("ip link set {} netns {}", veth_b_, ns_b_)) &&
                sh(fmt::format("{} addr add 10.77.0.1/24 dev {}", a, veth_a_)) &&
                sh(fmt::format("{} addr add 10.77.0.2/24 dev {}", b, veth_b_)) &&
                sh(fmt::format("{} link set {} up", a, veth_a_)) &&
                sh(fmt::format("{} link set {} up", b, veth_b_)) && sh(a + " link set lo up") &&
                sh(b + " link set lo up");
  if (namespaces_) {
    a_address_ = "10.77.0.1";
    b_address_ = "10.77.0.2";
    port_ = 7100;
    a_.set_daemon_prefix(prefix(ns_a_));
    b_.set_daemon_prefix(prefix(ns_b_));
  } else {
    sh("ip netns del " + ns_a_);
    sh("ip netns del " + ns_b_);
    static bool said = false;
    if (!said)
      std::fprintf(stderr,
                   "TwoHosts: no network namespaces (MRPC_TEST_NO_NETNS set, or not root, or `ip "
                   "netns` fails): "
                   "SKIPPING the namespace setup, using 127.0.0.1 and 127.0.0.2 instead\n");
    said = true;
    port_ = free_port();
  }
}

TwoHosts::~TwoHosts() {
  a_.kill_daemon();
  b_.kill_daemon();
  if (namespaces_) {
    sh("ip netns del " + ns_a_);  // takes the veth pair with it
    sh("ip netns del " + ns_b_);
  }
}

std::vector<std::string> TwoHosts::prefix(const std::string& ns) const {
  return {"ip", "netns", "exec", ns};
}

std::string TwoHosts::config_a() const {
  std::string extra;
  for (const auto& [service, encoding] : extra_remotes_)
    extra += fmt::format("\n[remote.\"{}\"]\nendpoints = [\"{}:{}\"]\nencoding = \"{}\"\n", service,
                         b_address_, port_, encoding);
  // The extra tables go last: a top-level key after a table would belong to it.
  return fmt::format(
             "host = \"host-a\"\nlisten = \"{}:{}\"\n\n"
             "[remote.\"echo.EchoService\"]\nendpoints = [\"{}:{}\"]\nencoding = \"{}\"\n\n"
             "[remote.\"nested.DocumentStore\"]\nendpoints = [\"{}:{}\"]\n",
             a_address_, port_, b_address_, port_, echo_encoding_, b_address_, port_) +
         extra;
}

std::string TwoHosts::config_b() const {
  return fmt::format("host = \"host-b\"\nlisten = \"{}:{}\"\n", b_address_, port_);
}

Status TwoHosts::start_b(const std::vector<std::string>& extra_args) {
  const std::string path = b_.directory() + "/mrpcd.toml";
  std::ofstream(path) << config_b();
  std::vector<std::string> args = {"-c", path, "--log-level", "info"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  return b_.start_daemon(std::move(args));
}

Status TwoHosts::start_daemons(const std::vector<std::string>& extra_args) {
  if (port_ == 0) return Status(StatusCode::kUnavailable, "no free port on 127.0.0.2");
  Status b = start_b(extra_args);
  if (!b.ok()) return b;
  const std::string path = a_.directory() + "/mrpcd.toml";
  std::ofstream(path) << config_a();
  std::vector<std::string> args = {"-c", path, "--log-level", "info"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  return a_.start_daemon(std::move(args));
}

Status TwoHosts::restart_b() {
  return b_.start_daemon();  // the same arguments as before
}

int TwoHosts::run_at_a(const std::string& command) {
  std::string quoted = "'";
  for (char c : command) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  quoted += "'";
  const std::string line =
      namespaces_ ? "ip netns exec " + ns_a_ + " sh -c " + quoted : "sh -c " + quoted;
  return std::system(line.c_str());
}

Status TwoHosts::enter_a() {
  if (!namespaces_) return Status();
  const std::string path = "/var/run/netns/" + ns_a_;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return Status(StatusCode::kUnavailable, fmt::format("open {}: {}", path, std::strerror(errno)));
  const int rc = ::setns(fd, CLONE_NEWNET);
  const int error = errno;
  ::close(fd);
  if (rc != 0)
    return Status(StatusCode::kUnavailable,
                  fmt::format("setns {}: {}", path, std::strerror(error)));
  return Status();
}

bool TwoHosts::set_link(bool up) {
  if (!namespaces_) return false;
  return sh(fmt::format("ip -n {} link set {} {}", ns_a_, veth_a_, up ? "up" : "down"));
}

}  // namespace mrpc::testing
