// TwoHosts: two mrpcd processes as two hosts joined by TCP, for the cross-host tests. Where the
// machine lets us (root, `ip netns`), each daemon runs in a network namespace of its own and the
// two are joined by a veth pair (10.77.0.1 <-> 10.77.0.2), so the link is a real network link
// that can be cut; otherwise both run in this namespace on 127.0.0.1 and 127.0.0.2 (the skip is
// printed once). Host B runs an echo server; host A's configuration routes echo.EchoService (and
// nested.DocumentStore) to B. The test process is the client app, connected to A. Apps reach their
// daemon over its Unix socket (a path: usable from any network namespace).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "local_host.h"
#include "mrpc/base/status.h"

namespace mrpc::testing {

class TwoHosts {
 public:
  TwoHosts();
  ~TwoHosts();
  TwoHosts(const TwoHosts&) = delete;
  TwoHosts& operator=(const TwoHosts&) = delete;

  // Host A's configuration also routes `service` to B, with `encoding` ("native", "protobuf",
  // "auto"). Before start_daemons.
  void add_remote_a(std::string service, std::string encoding) {
    extra_remotes_.emplace_back(std::move(service), std::move(encoding));
  }
  // The encoding host A's configuration names for echo.EchoService ("protobuf" unless set).
  // Before start_daemons.
  void set_echo_encoding(std::string encoding) { echo_encoding_ = std::move(encoding); }
  // Writes both configuration files and starts daemon B, then daemon A (each with the test's
  // runtime threads, and `extra_args` after the others). Servers are started by the test
  // (b().start_echo_server()).
  Status start_daemons(const std::vector<std::string>& extra_args = {});
  // Starts daemon B again (after kill_b), on the same address and port.
  Status restart_b();

  LocalHost& a() { return a_; }
  LocalHost& b() { return b_; }
  bool namespaces() const { return namespaces_; }
  const std::string& a_address() const { return a_address_; }
  const std::string& b_address() const { return b_address_; }
  uint16_t port() const { return port_; }
  // Cuts or restores the veth link (namespaces only; false otherwise).
  bool set_link(bool up);
  // Runs a shell command where host A's network is (its namespace, or here); its exit status.
  int run_at_a(const std::string& command);
  // The prefix that runs a program where host A's (B's) network is: {"ip", "netns", "exec", NS},
  // or nothing without namespaces. The program replaces `ip` (exec): its pid is the program's.
  std::vector<std::string> prefix_a() const {
    return namespaces_ ? prefix(ns_a_) : std::vector<std::string>{};
  }
  std::vector<std::string> prefix_b() const {
    return namespaces_ ? prefix(ns_b_) : std::vector<std::string>{};
  }
  // Moves the calling thread into host A's network namespace (threads it starts later inherit
  // it); nothing without namespaces.
  Status enter_a();

 private:
  Status start_b(const std::vector<std::string>& extra_args);
  std::string config_a() const;
  std::string config_b() const;
  std::vector<std::string> prefix(const std::string& ns) const;

  LocalHost a_;
  LocalHost b_;
  bool namespaces_ = false;
  std::string ns_a_, ns_b_, veth_a_, veth_b_;
  std::string a_address_ = "127.0.0.1";
  std::string b_address_ = "127.0.0.2";
  uint16_t port_ = 0;
  std::vector<std::pair<std::string, std::string>> extra_remotes_;  // service, encoding
  std::string echo_encoding_ = "protobuf";
};

}  // namespace mrpc::testing
