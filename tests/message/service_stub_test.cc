// Generated Client stubs and Service skeletons, driven through an in-process channel that does
// what the daemon does to a message: copy_message from the caller's heap into the callee's
// receive region (and back for the response). Proves the stubs use only Channel's virtual members,
// pass method indices and schemas through, and own the request once it is handed over.
#include <doctest/doctest.h>

#include <map>
#include <mutex>

#include "document_fixture.h"
#include "echo.mrpc.h"
#include "mrpc/base/clock.h"
#include "mrpc/base/limits.h"
#include "mrpc/message/copy.h"
#include "mrpc/message/region_allocator.h"
#include "mrpc/message/schema.h"

using mrpc::StatusCode;
using mrpc::testing::TestRegion;

namespace {

class LoopbackContext final : public mrpc::ServerContext {
 public:
  explicit LoopbackContext(mrpc::ShmHeap& heap, const mrpc::Metadata& metadata)
      : heap_(heap), metadata_(metadata) {}
  const mrpc::Metadata& metadata() const override { return metadata_; }
  int64_t deadline() const override { return mrpc::kNoDeadline; }
  bool is_cancelled() const override { return false; }
  mrpc::ShmHeap& heap() override { return heap_; }

 private:
  mrpc::ShmHeap& heap_;
  const mrpc::Metadata& metadata_;
};

// One process playing caller, daemon and callee. Calls complete synchronously.
class LoopbackChannel final : public mrpc::Channel {
 public:
  LoopbackChannel()
      : heap_(heap_region_.base(), heap_region_.size()),
        receive_allocator_(receive_region_.size()) {}

  mrpc::ShmHeap& heap() override { return heap_; }

  mrpc::CallId start_call(const mrpc::ServiceSchema& service, uint32_t method_index,
                          const mrpc::MessageRef& request, const mrpc::CallOptions& options,
                          mrpc::UntypedCompletion done) override {
    const mrpc::CallId id = ++last_call_;
    auto finish = [&](mrpc::Status status, mrpc::ReceivedMessage response) {
      (void)heap_.free_message(request.offset);  // "the daemon no longer reads the request"
      done(std::move(status), std::move(response));
    };
    auto served = served_.find(std::string(service.full_name));
    if (served == served_.end()) {
      finish(mrpc::Status(StatusCode::kUnavailable, "nobody serves it"), {});
      return id;
    }
    auto schema = mrpc::Schema::from_file_descriptor_set(service.file_descriptor_set);
    REQUIRE(schema.ok());
    const mrpc::MethodInfo& method =
        (*schema)->service(service.full_name)->methods.at(method_index);
    auto delivered = copy(*method.input, request.offset);
    if (!delivered.ok()) {
      finish(delivered.status(), {});
      return id;
    }
    mrpc::ReceivedMessage incoming(received_ref(*delivered), nullptr);
    const mrpc::UntypedMethod& handler = served->second.at(method_index);
    auto response = handler.new_response(heap_);
    REQUIRE(response.ok());
    LoopbackContext context(heap_, options.metadata);
    mrpc::Status status = handler.handler(context, incoming, *response);
    REQUIRE(receive_allocator_.free(*delivered).ok());  // the callee's kReply releases the request
    if (status.ok()) status = mrpc::sendable(*response);
    mrpc::Expected<uint64_t> reply =
        status.ok() ? copy(*method.output, response->offset) : mrpc::Expected<uint64_t>(status);
    (void)heap_.free_message(response->offset);  // kReplyDone
    if (!reply.ok()) {
      finish(reply.status(), {});
      return id;
    }
    replies_.push_back(*reply);
    finish(mrpc::Status(), mrpc::ReceivedMessage(received_ref(*reply), nullptr));
    return id;
  }

  void cancel(mrpc::CallId) override {}

  mrpc::Status serve(const mrpc::ServiceSchema& service,
                     std::vector<mrpc::UntypedMethod> methods) override {
    if (methods.size() != service.methods.size())
      return mrpc::Status(StatusCode::kInvalidArgument, "method count");
    served_[std::string(service.full_name)] = std::move(methods);
    return mrpc::Status();
  }

  // What the caller's lease release does.
  void release_replies() {
    for (uint64_t reply : replies_) REQUIRE(receive_allocator_.free(reply).ok());
    replies_.clear();
  }
  uint64_t receive_used() const { return receive_allocator_.used_bytes(); }

 private:
  mrpc::Expected<uint64_t> copy(const mrpc::MessageLayout& layout, uint64_t root) {
    return mrpc::copy_message(
        layout, {heap_region_.base(), heap_region_.size()}, root,
        {receive_region_.base(), receive_region_.size()}, receive_allocator_,
        {mrpc::limits::kDefaultMaxMessageBytes, mrpc::limits::kMaxMessageNesting});
  }
  mrpc::MessageRef received_ref(uint64_t root) const {
    return mrpc::MessageRef{receive_region_.base(), receive_region_.size(), root, nullptr};
  }

  TestRegion heap_region_{1 << 20};
  TestRegion receive_region_{1 << 20};
  mrpc::ShmHeap heap_;
  mrpc::RegionAllocator receive_allocator_;
  std::map<std::string, std::vector<mrpc::UntypedMethod>> served_;
  std::vector<uint64_t> replies_;
  mrpc::CallId last_call_ = 0;
};

class Echoer final : public echo::EchoService::Service {
 public:
  mrpc::Status Echo(mrpc::ServerContext& context, const echo::EchoRequest::View& request,
                    echo::EchoReply& response) override {
    if (request.text() == "fail")
      return mrpc::Status(StatusCode::kFailedPrecondition, "asked to fail");
    response.set_text(std::string(request.text()) +
                      std::string(context.metadata().get("suffix").value_or("")));
    response.set_payload(request.payload());
    return mrpc::Status();
  }
};

class Store final : public nested::DocumentStore::Service {};  // Put left unimplemented

}  // namespace

TEST_CASE(
    "generated stub and skeleton carry a call and its reply: blocking and callback and future "
    "forms") {
  auto channel = std::make_shared<LoopbackChannel>();
  Echoer echoer;
  REQUIRE(channel->serve(echo::EchoService::schema(), echoer.methods()).ok());
  echo::EchoService::Client client(channel);
  const std::string payload("\0\x01payload", 9);

  auto request = echo::EchoRequest::create(channel->heap());
  request.set_text("hi");
  request.set_payload(payload);
  mrpc::CallOptions options;
  options.metadata.add("suffix", "!");
  auto reply = client.Echo(std::move(request), options);
  REQUIRE(reply.ok());
  CHECK(reply->text() == "hi!");
  CHECK(reply->payload() == payload);

  auto second = echo::EchoRequest::create(channel->heap());
  second.set_text("callback");
  bool called = false;
  client.Echo(std::move(second), {}, [&](mrpc::CallResult<echo::EchoReply> result) {
    called = true;
    REQUIRE(result.ok());
    CHECK(result->text() == "callback");
  });
  CHECK(called);

  auto third = echo::EchoRequest::create(channel->heap());
  third.set_text("fail");
  auto failed = client.EchoAsync(std::move(third)).get();
  CHECK(failed.status().code() == StatusCode::kFailedPrecondition);

  channel->release_replies();
  CHECK(channel->heap().used_bytes() == 0);
  CHECK(channel->receive_used() == 0);
}

TEST_CASE(
    "a request that ran out of heap fails with RESOURCE_EXHAUSTED without being sent and is "
    "freed") {
  auto channel = std::make_shared<LoopbackChannel>();
  Echoer echoer;
  REQUIRE(channel->serve(echo::EchoService::schema(), echoer.methods()).ok());
  echo::EchoService::Client client(channel);
  auto request = echo::EchoRequest::create(channel->heap());
  request.set_payload(std::string(2 << 20, 'x'));  // larger than the heap
  auto reply = client.Echo(std::move(request));
  CHECK(reply.status().code() == StatusCode::kResourceExhausted);
  CHECK(channel->heap().used_bytes() == 0);
}

TEST_CASE("a send of a request whose heap filled says RESOURCE_EXHAUSTED naming the lost field") {
  auto channel = std::make_shared<LoopbackChannel>();
  Echoer echoer;
  REQUIRE(channel->serve(echo::EchoService::schema(), echoer.methods()).ok());
  echo::EchoService::Client client(channel);
  auto request = echo::EchoRequest::create(channel->heap());
  CHECK(request.set_text("fits"));
  CHECK_FALSE(request.set_payload(std::string(2 << 20, 'x')));  // larger than the heap
  CHECK(request.set_text("written after the loss: the message stays failed") == false);
  auto reply = client.Echo(std::move(request));
  CHECK(reply.status().code() == StatusCode::kResourceExhausted);
  CHECK(reply.status().message() ==
        "send heap full while the message was built: the write of echo.EchoRequest.payload (and "
        "any after it) was lost");
  CHECK(channel->heap().used_bytes() == 0);
}

class BigReplier final : public echo::EchoService::Service {
 public:
  mrpc::Status Echo(mrpc::ServerContext&, const echo::EchoRequest::View&,
                    echo::EchoReply& response) override {
    (void)response.set_text("fits");
    (void)response.set_payload(std::string(2 << 20, 'r'));  // larger than the server's heap
    return mrpc::Status();
  }
};

TEST_CASE("a reply whose heap filled reaches the caller as RESOURCE_EXHAUSTED naming the field") {
  auto channel = std::make_shared<LoopbackChannel>();
  BigReplier replier;
  REQUIRE(channel->serve(echo::EchoService::schema(), replier.methods()).ok());
  echo::EchoService::Client client(channel);
  auto request = echo::EchoRequest::create(channel->heap());
  REQUIRE(request.set_text("hi"));
  auto reply = client.Echo(std::move(request));
  CHECK(reply.status().code() == StatusCode::kResourceExhausted);
  CHECK(reply.status().message().find("echo.EchoReply.payload") != std::string::npos);
  CHECK(channel->heap().used_bytes() == 0);
}

TEST_CASE(
    "the nested example round-trips through a service and unimplemented methods say "
    "UNIMPLEMENTED") {
  auto channel = std::make_shared<LoopbackChannel>();
  Store store;
  REQUIRE(channel->serve(nested::DocumentStore::schema(), store.methods()).ok());
  nested::DocumentStore::Client client(channel);
  auto doc = nested::Document::create(channel->heap());
  mrpc::testing::fill_document(doc);
  auto reply = client.Put(std::move(doc));
  CHECK(reply.status().code() == StatusCode::kUnimplemented);
  CHECK(channel->heap().used_bytes() == 0);
  CHECK(channel->receive_used() == 0);
}
