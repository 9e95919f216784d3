// The outside app: serves kv.Store on one channel and calls it from another, through mrpcd.
// Prints "kv_app: ok" and exits 0 when the reply is what was asked for.
#include <cstdio>
#include <string>
#include <utility>

#include "a/kv.mrpc.h"  // protos/a/kv.proto
#include "b/kv.mrpc.h"  // protos/b/kv.proto: same file name
#include "mrpc/client/channel.h"

namespace {

class Store final : public kv::Store::Service {
 public:
  mrpc::Status Get(mrpc::ServerContext&, const kv::GetRequest::View& request,
                   kv::GetReply& response) override {
    auto entry = response.mutable_entry();
    entry.set_key(request.key());
    entry.set_value("value of " + std::string(request.key()));
    response.insert_versions(request.key(), 7);
    return {};
  }
};

int fail(const char* what, const mrpc::Status& status) {
  std::fprintf(stderr, "kv_app: %s: %s\n", what, status.to_string().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: kv_app APP_SOCKET\n");
    return 2;
  }
  mrpc::ChannelOptions options;
  options.socket_path = argv[1];
  options.app_name = "kv-server";
  auto server = mrpc::Channel::connect(options);
  if (!server.ok()) return fail("connect", server.status());
  Store store;
  if (auto served = (*server)->serve(kv::Store::schema(), store.methods()); !served.ok())
    return fail("serve", served);

  options.app_name = "kv-client";
  auto channel = mrpc::Channel::connect(options);
  if (!channel.ok()) return fail("connect", channel.status());
  kv::Store::Client client(*channel);
  auto request = kv::GetRequest::create((*channel)->heap());
  request.set_key("apple");
  auto reply = client.Get(std::move(request));
  if (!reply.ok()) return fail("Get", reply.status());
  if (reply->entry().key() != "apple" || reply->entry().value() != "value of apple" ||
      reply->versions_at("apple") != 7) {
    std::fprintf(stderr, "kv_app: wrong reply\n");
    return 1;
  }
  auto ping = kv::admin::Ping::create((*channel)->heap());  // the other kv.proto
  (void)ping;
  std::printf("kv_app: ok\n");
  return 0;
}
