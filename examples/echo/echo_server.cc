// echo_server: serves echo.EchoService through the host's mrpcd ($MRPC_SOCKET) until SIGTERM or
// SIGINT. Replies with the request's text and payload (after --delay-ms, if given).
#include <chrono>
#include <thread>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "common/serve_until_signal.h"
#include "echo.mrpc.h"

namespace {

class EchoServiceImpl final : public echo::EchoService::Service {
 public:
  explicit EchoServiceImpl(std::chrono::milliseconds delay) : delay_(delay) {}

  mrpc::Status Echo(mrpc::ServerContext&, const echo::EchoRequest::View& request,
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
  app.add_option("--threads", options.handler_threads,
                 "handler threads (0: handlers run inline on the channel's completion thread)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--delay-ms", delay_ms, "wait this long before answering (to test deadlines)");
  app.add_option("--socket", options.socket_path, "mrpcd app socket (default: $MRPC_SOCKET)");
  CLI11_PARSE(app, argc, argv);

  EchoServiceImpl service{std::chrono::milliseconds(delay_ms)};
  return examples::serve_until_signal(options, echo::EchoService::schema(), service.methods());
}
