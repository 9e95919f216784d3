// echo_client: makes echo.EchoService calls through the host's mrpcd ($MRPC_SOCKET), checks every
// reply and prints what happened and the round-trip latency. Exit code 0 iff every call was
// answered correctly.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "echo_load.h"
#include "mrpc/client/channel.h"

int main(int argc, char** argv) {
  CLI::App app{"echo_client: echo calls through mrpcd"};
  mrpc::ChannelOptions options;
  options.app_name = "echo_client";
  echo::EchoLoadOptions load;
  app.add_option("--calls", load.calls, "calls to make");
  app.add_option("--in-flight", load.in_flight, "calls in flight at once");
  app.add_option("--payload", load.payload_bytes, "bytes in each request's payload");
  app.add_option("--socket", options.socket_path, "mrpcd app socket (default: $MRPC_SOCKET)");
  CLI11_PARSE(app, argc, argv);

  auto channel = mrpc::Channel::connect(options);
  if (!channel.ok()) {
    fmt::print(stderr, "echo_client: cannot connect to mrpcd: {}\n", channel.status().to_string());
    return 1;
  }
  echo::EchoLoadResult result = echo::run_echo_load(*channel, load);
  fmt::print("echo_client: {} calls, {} in flight, {} B payload: {}\n", load.calls, load.in_flight,
             load.payload_bytes, result.summary());
  return result.failed() == 0 && result.answered == load.calls ? 0 : 1;
}
