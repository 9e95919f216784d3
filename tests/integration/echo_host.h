// EchoHost: the usual start of an echo integration test: mrpcd, one echo_server (with the given
// arguments) and a channel from this process. Fails the test case if any of them does not start.
#pragma once

#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "local_host.h"

namespace mrpc::testing {

struct EchoHost {
  explicit EchoHost(std::vector<std::string> server_args = {}) {
    REQUIRE(host.start_daemon().ok());
    auto started = host.start_echo_server(std::move(server_args));
    REQUIRE_MESSAGE(started.ok(), started.status().to_string());
    server = std::move(*started);
    auto connected = host.connect();
    REQUIRE_MESSAGE(connected.ok(), connected.status().to_string());
    channel = std::move(*connected);
  }

  LocalHost host;
  Subprocess server;
  std::shared_ptr<Channel> channel;
};

}  // namespace mrpc::testing
