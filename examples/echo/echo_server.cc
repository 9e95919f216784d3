// echo_server: serves echo.EchoService through the host's mrpcd ($MRPC_SOCKET) until SIGTERM or
// SIGINT. Replies with the request's text and payload (after --delay-ms, if given).
#include <signal.h>

#include <chrono>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "echo.mrpc.h"
#include "mrpc/client/channel.h"

namespace {

class EchoServiceImpl final : public echo::EchoService::Service {
 public:
  explicit EchoServiceImpl(std::chrono::milliseconds delay) : delay_(delay) {}

  mrpc::Status Echo(mrpc::ServerContext&, const echo::EchoRequest& request,
                    echo::EchoReply& response) override {
    if (delay_.count() > 0) std::this_thread::sleep_for(delay_);
    response.set_text(request.text());
    response.set_payload(request.payload());
    return {};
  }

 private:
  std::chrono::milliseconds delay_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"echo_server: serves echo.EchoService through mrpcd"};
  mrpc::ChannelOptions options;
  options.app_name = "echo_server";
  int delay_ms = 0;
  app.add_option("--threads", options.handler_threads, "handler threads");
  app.add_option("--delay-ms", delay_ms, "wait this long before answering (to test deadlines)");
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
  EchoServiceImpl service{std::chrono::milliseconds(delay_ms)};
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
