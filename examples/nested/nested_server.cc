// nested_server: serves nested.DocumentStore through the host's mrpcd ($MRPC_SOCKET) until
// SIGTERM or SIGINT. Put answers with an exact copy of the document it received.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "document_copy.h"
#include "mrpc/client/channel.h"

namespace {

class DocumentStoreImpl final : public nested::DocumentStore::Service {
 public:
  mrpc::Status Put(mrpc::ServerContext&, const nested::Document& request,
                   nested::Document& response) override {
    nested::copy_document(request, response);
    return {};
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"nested_server: serves nested.DocumentStore through mrpcd"};
  mrpc::ChannelOptions options;
  options.app_name = "nested_server";
  app.add_option("--socket", options.socket_path, "mrpcd app socket (default: $MRPC_SOCKET)");
  CLI11_PARSE(app, argc, argv);

  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto channel = mrpc::Channel::connect(options);
  if (!channel.ok()) {
    fmt::print(stderr, "nested_server: cannot connect to mrpcd: {}\n", channel.status().to_string());
    return 1;
  }
  DocumentStoreImpl service;
  if (mrpc::Status served = (*channel)->serve(nested::DocumentStore::schema(), service.methods());
      !served.ok()) {
    fmt::print(stderr, "nested_server: cannot serve: {}\n", served.to_string());
    return 1;
  }
  fmt::print("nested_server: serving nested.DocumentStore\n");
  std::fflush(stdout);
  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  return 0;
}
