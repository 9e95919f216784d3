// nested_server: serves nested.DocumentStore through the host's mrpcd ($MRPC_SOCKET) until
// SIGTERM or SIGINT. Put answers with an exact copy of the document it received.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "common/serve_until_signal.h"
#include "document_copy.h"

namespace {

class DocumentStoreImpl final : public nested::DocumentStore::Service {
 public:
  mrpc::Status Put(mrpc::ServerContext&, const nested::Document::View& request,
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

  DocumentStoreImpl service;
  return examples::serve_until_signal(options, nested::DocumentStore::schema(), service.methods());
}
