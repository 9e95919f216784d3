// echo_server: serves echo.EchoService through the host's mrpcd ($MRPC_SOCKET) until SIGTERM or
// SIGINT. Replies with the request's text and payload.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "echo.mrpc.h"
#include "mrpc/client/channel.h"

namespace {

class EchoServiceImpl final : public echo::EchoService::Service {
 public:
  mrpc::Status Echo(mrpc::ServerContext&, const echo::EchoRequest& request,
                    echo::EchoReply& response) override {
    response.set_text(request.text());
    response.set_payload(request.payload());
    return {};
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"echo_server: serves echo.EchoService through mrpcd"};
  mrpc::ChannelOptions options;
  options.app_name = "echo_server";
  app.add_option("--threads", options.handler_threads, "handler threads");
  app.add_option("--socket", options.socket_path, "mrpcd app socket (default: $MRPC_SOCKET)");
  CLI11_PARSE(app, argc, argv);

  // Signals are taken synchronously below; block them before any library thread starts.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto channel = mrpc::Channel::connect(options);
  if (!channel.ok()) {
    fmt::print(stderr, "echo_server: cannot connect to mrpcd: {}\n", channel.status().to_string());
    return 1;
  }
  EchoServiceImpl service;
  if (mrpc::Status served = (*channel)->serve(echo::EchoService::schema(), service.methods());
      !served.ok()) {
    fmt::print(stderr, "echo_server: cannot serve: {}\n", served.to_string());
    return 1;
  }
  fmt::print("echo_server: serving echo.EchoService\n");
  std::fflush(stdout);
  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  fmt::print("echo_server: stopping on signal {}\n", signal_number);
  return 0;
}
