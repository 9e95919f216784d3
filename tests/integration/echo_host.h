// EchoHost: the usual start of an echo integration test: mrpcd, one echo_server (with the given
// arguments) and a channel from this process. Fails the test case if any of them does not start.
// EchoAcrossHosts: the same across two daemons (TwoHosts): the server behind B, the channel on A.
// echo_once: one blocking echo call whose reply is checked.
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "echo.mrpc.h"
#include "local_host.h"
#include "two_hosts.h"

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

struct EchoAcrossHosts {
  // `daemon_args`: added to both daemons' command lines; `echo_encoding`: what host A's
  // configuration names for the echo service (TwoHosts::set_echo_encoding).
  explicit EchoAcrossHosts(const std::string& client_name,
                           const std::vector<std::string>& daemon_args = {},
                           const std::string& echo_encoding = "protobuf") {
    hosts.set_echo_encoding(echo_encoding);
    MESSAGE("hosts on " << hosts.a_address() << " and " << hosts.b_address() << " port "
                        << hosts.port()
                        << (hosts.namespaces() ? " (network namespaces + veth)"
                                               : " (loopback addresses)"));
    Status started = hosts.start_daemons(daemon_args);
    REQUIRE_MESSAGE(started.ok(), started.to_string());
    auto echo_server = hosts.b().start_echo_server();
    REQUIRE_MESSAGE(echo_server.ok(), echo_server.status().to_string());
    server = std::move(*echo_server);
    auto connected = hosts.a().connect(client_name);
    REQUIRE_MESSAGE(connected.ok(), connected.status().to_string());
    channel = std::move(*connected);
  }

  TwoHosts hosts;
  Subprocess server;
  std::shared_ptr<Channel> channel;
};

// One echo call of `text` and `payload` within `timeout`: its status, DATA_LOSS if the reply
// differs from the request.
inline Status echo_once(const std::shared_ptr<Channel>& channel, const std::string& text,
                        const std::string& payload = {},
                        std::chrono::nanoseconds timeout = std::chrono::seconds(10)) {
  echo::EchoService::Client client(channel);
  auto request = echo::EchoRequest::create(channel->heap());
  request.set_text(text);
  request.set_payload(payload);
  CallOptions options;
  options.timeout = timeout;
  auto reply = client.Echo(std::move(request), options);
  if (!reply.ok()) return reply.status();
  if (reply->text() != text || reply->payload() != payload)
    return Status(StatusCode::kDataLoss, "the reply differs from the request");
  return {};
}

}  // namespace mrpc::testing
