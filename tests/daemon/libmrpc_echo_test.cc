// libmrpc apps through the real daemon engine: generated echo stubs and skeletons, sync and async
// calls, errors the daemon produces, and memory returned on both sides.
#include <doctest/doctest.h>

#include <future>
#include <thread>

#include "../runtime_threads.h"
#include "echo.mrpc.h"
#include "mrpc/client/channel.h"
#include "mrpc/daemon/daemon.h"
#include "test_app.h"

using namespace std::chrono_literals;
using namespace mrpc;
using mrpc::testing::TempDir;
using mrpc::testing::test_runtime_threads;

namespace {

struct EchoImpl final : echo::EchoService::Service {
  Status Echo(ServerContext& context, const echo::EchoRequest::View& request,
              echo::EchoReply& response) override {
    if (request.text() == "sleep") {
      ++sleeping;
      while (!context.is_cancelled()) std::this_thread::sleep_for(1ms);
      --sleeping;
      return Status(StatusCode::kCancelled, "gave up");
    }
    response.set_text(request.text());
    response.set_payload(request.payload());
    std::string_view tag = context.metadata().get("tag").value_or("");
    if (!tag.empty()) response.set_text(std::string(request.text()) + "+" + std::string(tag));
    return {};
  }
  std::atomic<int> sleeping{0};  // handlers waiting for their cancellation
};

struct Setup {
  explicit Setup(bool serve = true) : daemon(config(), MonotonicClock::instance()) {
    Status started = daemon.start();
    REQUIRE_MESSAGE(started.ok(), started.to_string());
    if (serve) {
      server = connect("echo-server");
      REQUIRE(server->serve(echo::EchoService::schema(), impl.methods()).ok());
    }
    client = connect("echo-client");
  }
  DaemonConfig config() {
    DaemonConfig c;
    c.app_socket_path = dir.path("app.sock");
    c.control_socket_path = dir.path("control.sock");
    c.heap_bytes = 8 << 20;
    c.receive_bytes = 8 << 20;
    c.runtime_threads = test_runtime_threads();
    return c;
  }
  std::shared_ptr<Channel> connect(std::string name) {
    ChannelOptions options;
    options.socket_path = dir.path("app.sock");
    options.app_name = std::move(name);
    options.reconnect = false;
    auto channel = Channel::connect(options);
    REQUIRE_MESSAGE(channel.ok(), channel.status().to_string());
    return *channel;
  }

  TempDir dir;
  Daemon daemon;
  EchoImpl impl;
  std::shared_ptr<Channel> server;
  std::shared_ptr<Channel> client;
};

}  // namespace

TEST_CASE("libmrpc echo through the daemon: blocking calls return what was sent") {
  Setup setup;
  echo::EchoService::Client stub(setup.client);
  for (int i = 0; i < 200; ++i) {
    auto request = echo::EchoRequest::create(setup.client->heap());
    request.set_text("hello " + std::to_string(i));
    request.set_payload(std::string(static_cast<size_t>(i), '\x7f'));
    auto result = stub.Echo(std::move(request));
    REQUIRE_MESSAGE(result.ok(), result.status().to_string());
    CHECK(result->text() == "hello " + std::to_string(i));
    CHECK(result->payload() == std::string(static_cast<size_t>(i), '\x7f'));
  }
  CallOptions options;
  options.metadata.add("tag", "blue");
  auto request = echo::EchoRequest::create(setup.client->heap());
  request.set_text("m");
  auto tagged = stub.Echo(std::move(request), options);
  REQUIRE(tagged.ok());
  CHECK(tagged->text() == "m+blue");
}

TEST_CASE("libmrpc echo through the daemon: 64 calls in flight, all answered, memory back") {
  Setup setup;
  echo::EchoService::Client stub(setup.client);
  constexpr int kCalls = 5000;
  constexpr int kWindow = 64;
  std::atomic<int> answered{0}, wrong{0}, in_flight{0};
  for (int i = 0; i < kCalls; ++i) {
    while (in_flight.load() >= kWindow) std::this_thread::yield();
    auto request = echo::EchoRequest::create(setup.client->heap());
    std::string text = std::to_string(i);
    request.set_text(text);
    ++in_flight;
    stub.Echo(std::move(request), {}, [&, text](CallResult<echo::EchoReply> result) {
      if (!result.ok() || result->text() != text) ++wrong;
      ++answered;
      --in_flight;
    });
  }
  while (answered.load() < kCalls) std::this_thread::sleep_for(1ms);
  CHECK(wrong.load() == 0);
  const MonoTime give_up = MonotonicClock::instance().now() + 10'000'000'000;
  while ((setup.client->heap().used_bytes() != 0 || setup.server->heap().used_bytes() != 0 ||
          setup.daemon.stats().receive_bytes_in_use != 0) &&
         MonotonicClock::instance().now() < give_up)
    std::this_thread::sleep_for(1ms);
  CHECK(setup.client->heap().used_bytes() == 0);
  CHECK(setup.server->heap().used_bytes() == 0);
  CHECK(setup.daemon.stats().receive_bytes_in_use == 0);
  CHECK(setup.daemon.stats().calls_failed == 0);
}

TEST_CASE("libmrpc through the daemon: a call past its deadline, and a cancelled call") {
  Setup setup;
  echo::EchoService::Client stub(setup.client);
  CallOptions short_deadline;
  short_deadline.timeout = 50ms;
  auto slow = echo::EchoRequest::create(setup.client->heap());
  slow.set_text("sleep");
  CHECK(stub.Echo(std::move(slow), short_deadline).status().code() ==
        StatusCode::kDeadlineExceeded);

  auto request = echo::EchoRequest::create(setup.client->heap());
  request.set_text("sleep");
  std::promise<Status> ended;
  CallId id = setup.client->start_call(
      echo::EchoService::schema(), 0, request.ref(), {},
      [&](Status status, ReceivedMessage) { ended.set_value(std::move(status)); });
  setup.client->cancel(id);
  CHECK(ended.get_future().get().code() == StatusCode::kCancelled);

  auto quick = echo::EchoRequest::create(setup.client->heap());
  quick.set_text("still fine");
  auto result = stub.Echo(std::move(quick));
  REQUIRE(result.ok());
  CHECK(result->text() == "still fine");
}

TEST_CASE("libmrpc through the daemon: destroying a serving channel cancels its running handlers") {
  // The handler waits for its cancellation; nobody cancels the call. Destroying the server's
  // channel must cancel the handler's context instead of waiting for it forever.
  Setup setup;
  echo::EchoService::Client stub(setup.client);
  CallOptions long_deadline;
  long_deadline.timeout = 60s;
  auto request = echo::EchoRequest::create(setup.client->heap());
  request.set_text("sleep");
  std::promise<StatusCode> ended;
  stub.Echo(std::move(request), long_deadline,
            [&](CallResult<echo::EchoReply> result) { ended.set_value(result.status().code()); });
  const MonoTime give_up = MonotonicClock::instance().now() + 10'000'000'000;
  while (setup.impl.sleeping.load() == 0 && MonotonicClock::instance().now() < give_up)
    std::this_thread::sleep_for(1ms);
  REQUIRE(setup.impl.sleeping.load() == 1);
  setup.server.reset();  // returns only once the handler has returned
  CHECK(setup.impl.sleeping.load() == 0);
  // The caller learns that its server went away.
  CHECK(ended.get_future().get() == StatusCode::kUnavailable);
}

TEST_CASE("libmrpc through the daemon: a call nobody serves fails UNAVAILABLE") {
  Setup setup(/*serve=*/false);
  echo::EchoService::Client stub(setup.client);
  auto request = echo::EchoRequest::create(setup.client->heap());
  request.set_text("anyone?");
  CHECK(stub.Echo(std::move(request)).status().code() == StatusCode::kUnavailable);
}

TEST_CASE("libmrpc through a restarted daemon: calls fail UNAVAILABLE, then work again") {
  TempDir dir;
  auto make_config = [&] {
    DaemonConfig config;
    config.app_socket_path = dir.path("app.sock");
    config.control_socket_path = dir.path("control.sock");
    config.heap_bytes = 8 << 20;
    config.receive_bytes = 8 << 20;
    config.runtime_threads = test_runtime_threads();
    return config;
  };
  auto daemon = std::make_unique<Daemon>(make_config(), MonotonicClock::instance());
  REQUIRE(daemon->start().ok());
  EchoImpl impl;
  auto connect = [&](std::string name) {
    ChannelOptions options;
    options.socket_path = dir.path("app.sock");
    options.app_name = std::move(name);
    auto channel = Channel::connect(options);
    REQUIRE_MESSAGE(channel.ok(), channel.status().to_string());
    return *channel;
  };
  auto server = connect("server");
  REQUIRE(server->serve(echo::EchoService::schema(), impl.methods()).ok());
  auto client = connect("client");
  echo::EchoService::Client stub(client);
  auto echo_once = [&](const std::string& text) {
    auto request = echo::EchoRequest::create(client->heap());
    request.set_text(text);
    return stub.Echo(std::move(request));
  };
  REQUIRE(echo_once("before").ok());

  daemon->stop(std::chrono::nanoseconds(0));
  daemon.reset();
  CHECK(echo_once("while down").status().code() == StatusCode::kUnavailable);

  daemon = std::make_unique<Daemon>(make_config(), MonotonicClock::instance());
  REQUIRE(daemon->start().ok());
  // Both apps reconnect in the background and the server registers its service again.
  const MonoTime give_up = MonotonicClock::instance().now() + 20'000'000'000;
  CallResult<echo::EchoReply> result = Status(StatusCode::kUnknown, "not tried");
  while (MonotonicClock::instance().now() < give_up) {
    result = echo_once("after");
    if (result.ok()) break;
    std::this_thread::sleep_for(10ms);
  }
  REQUIRE_MESSAGE(result.ok(), result.status().to_string());
  CHECK(result->text() == "after");
}
