#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include "echo.mrpc.h"
#include "fake_daemon.h"

#include "mrpc/base/clock.h"
#include "mrpc/client/channel.h"
#include "mrpc/transports/shm/protocol.h"

using mrpc::Channel;
using mrpc::ChannelOptions;
using mrpc::StatusCode;
using mrpc::testing::FakeDaemon;
using mrpc::testing::FakeDaemonOptions;
using namespace std::chrono_literals;

namespace {

FakeDaemonOptions echo_daemon() {
  return FakeDaemonOptions{mrpc::shm::kProtocolVersion};
}
FakeDaemonOptions silent_daemon() {
  FakeDaemonOptions options{mrpc::shm::kProtocolVersion};
  options.echo = false;
  return options;
}

std::shared_ptr<Channel> connect_to(const FakeDaemon& daemon, int handler_threads = 1) {
  ChannelOptions options;
  options.socket_path = daemon.socket_path();
  options.app_name = "channel-test";
  options.handler_threads = handler_threads;
  auto channel = Channel::connect(options);
  REQUIRE_MESSAGE(channel.ok(), channel.status().to_string());
  return *channel;
}

echo::EchoRequest echo_request(Channel& channel, std::string_view text) {
  auto request = echo::EchoRequest::create(channel.heap());
  request.set_text(text);
  return request;
}

}  // namespace

TEST_CASE("connecting where no daemon listens fails with UNAVAILABLE") {
  ChannelOptions options;
  options.socket_path = "/tmp/mrpc-client-test-nobody-here.sock";
  auto channel = Channel::connect(options);
  REQUIRE_FALSE(channel.ok());
  CHECK(channel.status().code() == StatusCode::kUnavailable);
}

TEST_CASE("the socket path comes from MRPC_SOCKET when the options name none") {
  FakeDaemon daemon(echo_daemon());
  ::setenv(mrpc::shm::kAppSocketEnv, daemon.socket_path().c_str(), 1);
  auto channel = Channel::connect({});
  ::unsetenv(mrpc::shm::kAppSocketEnv);
  REQUIRE(channel.ok());
}

TEST_CASE("a daemon that refuses the connection fails connect with its reason") {
  FakeDaemonOptions options = echo_daemon();
  options.refuse = "protocol version 1 is not supported";
  FakeDaemon daemon(options);
  ChannelOptions channel_options;
  channel_options.socket_path = daemon.socket_path();
  auto channel = Channel::connect(channel_options);
  REQUIRE_FALSE(channel.ok());
  CHECK(channel.status().code() == StatusCode::kFailedPrecondition);
  CHECK(channel.status().message().find("not supported") != std::string::npos);
}

TEST_CASE("a daemon speaking another protocol version is refused by the library") {
  FakeDaemonOptions options = echo_daemon();
  options.protocol_version = mrpc::shm::kProtocolVersion + 1;
  FakeDaemon daemon(options);
  ChannelOptions channel_options;
  channel_options.socket_path = daemon.socket_path();
  auto channel = Channel::connect(channel_options);
  REQUIRE_FALSE(channel.ok());
  CHECK(channel.status().code() == StatusCode::kFailedPrecondition);
}

TEST_CASE("a call completes with the daemon's response, and every block goes back") {
  FakeDaemon daemon(echo_daemon());
  auto channel = connect_to(daemon);
  echo::EchoService::Client client(channel);
  {
    auto request = echo_request(*channel, "hello");
    request.set_payload(std::string(1000, 'p'));
    auto result = client.Echo(request);
    REQUIRE_MESSAGE(result.ok(), result.status().to_string());
    CHECK((*result)->text() == "hello");
    CHECK((*result)->payload() == std::string(1000, 'p'));
    // The request was freed when the daemon said it no longer reads it.
    CHECK(channel->heap().live_messages() == 0);
  }
  // The response was released to the daemon when its last copy died.
  daemon.wait_for([&] { return daemon.releases.size() == 1; });
  auto lock = daemon.lock();
  CHECK(daemon.receive_live_messages == 0);
  CHECK(daemon.registered.at("echo.EchoService") == false);
  CHECK(daemon.hellos.at(0) == "channel-test");
}

TEST_CASE("per-call metadata and deadline reach the daemon") {
  FakeDaemon daemon(echo_daemon());
  auto channel = connect_to(daemon);
  echo::EchoService::Client client(channel);
  mrpc::CallOptions options;
  options.metadata.add("x-user", "alice");
  options.metadata.add("trace-id", "42");
  options.timeout = 10s;
  const auto before = mrpc::MonotonicClock::instance().now();
  REQUIRE(client.Echo(echo_request(*channel, "m"), options).ok());
  auto lock = daemon.lock();
  REQUIRE(daemon.calls.size() == 1);
  CHECK(daemon.call_metadata.at(0) ==
        mrpc::shm::MetadataPairs{{"x-user", "alice"}, {"trace-id", "42"}});
  CHECK(daemon.calls[0].deadline >= before + std::chrono::nanoseconds(10s).count());
}

TEST_CASE("metadata with an invalid key fails the call without sending it") {
  FakeDaemon daemon(echo_daemon());
  auto channel = connect_to(daemon);
  echo::EchoService::Client client(channel);
  mrpc::CallOptions options;
  options.metadata.add("Not-Lower", "v");
  auto result = client.Echo(echo_request(*channel, "m"), options);
  CHECK(result.status().code() == StatusCode::kInvalidArgument);
  CHECK(channel->heap().live_messages() == 0);
  auto lock = daemon.lock();
  CHECK(daemon.calls.empty());
}

TEST_CASE("a call ends with DEADLINE_EXCEEDED at its deadline though the daemon is silent") {
  FakeDaemon daemon(silent_daemon());
  auto channel = connect_to(daemon);
  echo::EchoService::Client client(channel);
  mrpc::CallOptions options;
  options.timeout = 20ms;
  auto result = client.Echo(echo_request(*channel, "late"), options);
  CHECK(result.status().code() == StatusCode::kDeadlineExceeded);
  // The library told the daemon to stop, and freed the request once it did.
  daemon.wait_for([&] { return daemon.cancels.size() == 1; });
  while (channel->heap().live_messages() != 0) std::this_thread::sleep_for(1ms);
}

TEST_CASE("cancel ends a call with CANCELLED exactly once") {
  FakeDaemon daemon(silent_daemon());
  auto channel = connect_to(daemon);
  echo::EchoService::Client client(channel);
  std::promise<mrpc::Status> ended;
  std::atomic<int> completions{0};
  const mrpc::CallId id =
      client.Echo(echo_request(*channel, "c"), {}, [&](mrpc::CallResult<echo::EchoReply> result) {
        if (completions.fetch_add(1) == 0) ended.set_value(result.status());
      });
  daemon.wait_for([&] { return daemon.calls.size() == 1; });
  channel->cancel(id);
  channel->cancel(id);
  CHECK(ended.get_future().get().code() == StatusCode::kCancelled);
  daemon.wait_for([&] { return daemon.cancels.size() == 1; });
  while (channel->heap().live_messages() != 0) std::this_thread::sleep_for(1ms);
  CHECK(completions.load() == 1);
}

TEST_CASE("a message that ran out of heap fails with RESOURCE_EXHAUSTED without being sent") {
  FakeDaemonOptions options = echo_daemon();
  options.heap_bytes = 64 << 10;
  FakeDaemon daemon(options);
  auto channel = connect_to(daemon);
  echo::EchoService::Client client(channel);
  auto request = echo_request(*channel, "big");
  request.set_payload(std::string(128 << 10, 'x'));  // bigger than the whole heap
  auto result = client.Echo(request);
  CHECK(result.status().code() == StatusCode::kResourceExhausted);
  CHECK(channel->heap().live_messages() == 0);
  auto lock = daemon.lock();
  CHECK(daemon.calls.empty());
}

TEST_CASE("many calls in flight from many threads all complete with their own responses") {
  FakeDaemonOptions options = echo_daemon();
  options.ring_entries = 16;  // far fewer than the calls in flight: exercises the overflow queue
  options.heap_bytes = 8 << 20;
  FakeDaemon daemon(options);
  auto channel = connect_to(daemon);
  echo::EchoService::Client client(channel);
  constexpr int kThreads = 4;
  constexpr int kCallsPerThread = 500;
  std::atomic<int> correct{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::future<mrpc::CallResult<echo::EchoReply>>> futures;
      for (int i = 0; i < kCallsPerThread; ++i) {
        futures.push_back(client.EchoAsync(echo_request(*channel, fmt::format("{}-{}", t, i))));
      }
      for (int i = 0; i < kCallsPerThread; ++i) {
        auto result = futures[static_cast<size_t>(i)].get();
        if (result.ok() && (*result)->text() == fmt::format("{}-{}", t, i)) correct.fetch_add(1);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  CHECK(correct.load() == kThreads * kCallsPerThread);
  CHECK(channel->heap().live_messages() == 0);
  daemon.wait_for([&] { return daemon.releases.size() == kThreads * kCallsPerThread; });
  auto lock = daemon.lock();
  CHECK(daemon.receive_live_messages == 0);
}

TEST_CASE("losing the daemon fails pending calls with UNAVAILABLE, then the channel reconnects") {
  FakeDaemon daemon(silent_daemon());
  auto channel = connect_to(daemon);
  echo::EchoService::Client client(channel);
  auto pending = client.EchoAsync(echo_request(*channel, "lost"));
  daemon.wait_for([&] { return daemon.calls.size() == 1; });
  daemon.drop_connection();
  CHECK(pending.get().status().code() == StatusCode::kUnavailable);
  // The channel reconnects in the background, with a new heap, and calls succeed again.
  daemon.set_echo(true);
  daemon.wait_for([&] { return daemon.connections_accepted == 2; });
  for (;;) {
    auto result = client.EchoAsync(echo_request(*channel, "again")).get();
    if (result.ok()) {
      CHECK((*result)->text() == "again");
      break;
    }
    // Until the channel has installed the new connection (a request built in the old heap just
    // before the switch is refused as built in an earlier connection's heap).
    REQUIRE((result.status().code() == StatusCode::kUnavailable ||
             result.status().code() == StatusCode::kFailedPrecondition));
    std::this_thread::sleep_for(1ms);
  }
}

TEST_CASE("a served method answers incoming calls, and reply memory is freed on kReplyDone") {
  FakeDaemon daemon(echo_daemon());
  auto channel = connect_to(daemon, 2);

  struct Upper final : echo::EchoService::Service {
    mrpc::Status Echo(mrpc::ServerContext& context, const echo::EchoRequest& request,
                      echo::EchoReply& response) override {
      if (request.text() == "fail") return mrpc::Status(StatusCode::kNotFound, "no such thing");
      std::string text(request.text());
      for (char& c : text) c = static_cast<char>(std::toupper(c));
      response.set_text(text + std::string(context.metadata().get("suffix").value_or("")));
      return {};
    }
  } service;
  REQUIRE(channel->serve(echo::EchoService::schema(), service.methods()).ok());
  {
    auto lock = daemon.lock();
    CHECK(daemon.registered.at("echo.EchoService") == true);
  }

  const uint64_t ok_call = daemon.send_incoming_echo("echo.EchoService", "abc", {{"suffix", "!"}});
  const uint64_t failed_call = daemon.send_incoming_echo("echo.EchoService", "fail");
  daemon.wait_for([&] { return daemon.replies.size() == 2; });
  {
    auto lock = daemon.lock();
    CHECK(daemon.replies.at(ok_call).status == 0);
    CHECK(daemon.replies.at(ok_call).text == "ABC!");
    CHECK(daemon.replies.at(failed_call).status == static_cast<uint32_t>(StatusCode::kNotFound));
    CHECK(daemon.replies.at(failed_call).detail == "no such thing");
    // The replies released the requests the daemon placed.
    CHECK(daemon.receive_live_messages == 0);
  }
  CHECK(channel->heap().live_messages() == 2);  // until the daemon says it is done with them
  daemon.send_reply_done(ok_call);
  daemon.send_reply_done(failed_call);
  while (channel->heap().live_messages() != 0) std::this_thread::sleep_for(1ms);
}

TEST_CASE("a corrupt completion ring index ends pending calls UNAVAILABLE and the app reconnects") {
  FakeDaemon daemon(silent_daemon());
  auto channel = connect_to(daemon);
  echo::EchoService::Client client(channel);
  auto pending = client.EchoAsync(echo_request(*channel, "doomed"));
  daemon.wait_for([&] { return daemon.calls.size() == 1; });
  daemon.corrupt_completion_tail();
  const auto result = pending.get();
  CHECK(result.status().code() == StatusCode::kUnavailable);
  // The app left the broken connection (the daemon saw its socket close) and came back.
  daemon.wait_for([&] { return daemon.connections_accepted == 2; });
}

TEST_CASE("the reply to an incoming call waits for the last copy of its request") {
  FakeDaemon daemon(echo_daemon());
  auto channel = connect_to(daemon);
  std::mutex mutex;
  std::optional<mrpc::ReceivedMessage> kept;
  mrpc::UntypedMethod method;
  method.new_response = [](mrpc::ShmHeap& heap) {
    return heap.new_message(echo::EchoReply::kBodySize);
  };
  method.handler = [&](mrpc::ServerContext&, const mrpc::ReceivedMessage& request,
                       mrpc::MessageRef& response) {
    echo::EchoReply(response).set_text(echo::EchoRequest(request.ref()).text());
    std::lock_guard lock(mutex);
    kept = request;  // the app holds on to the request past the handler
    return mrpc::Status();
  };
  std::vector<mrpc::UntypedMethod> methods;
  methods.push_back(std::move(method));
  REQUIRE(channel->serve(echo::EchoService::schema(), std::move(methods)).ok());

  const uint64_t call = daemon.send_incoming_echo("echo.EchoService", "kept");
  while (true) {
    std::lock_guard lock(mutex);
    if (kept) break;
  }
  {
    auto lock = daemon.lock();
    // The request is still readable, so the daemon has not been told it may reuse it.
    CHECK(daemon.replies.empty());
  }
  {
    std::lock_guard lock(mutex);
    CHECK(echo::EchoRequest(kept->ref()).text() == "kept");
    kept.reset();
  }
  daemon.wait_for([&] { return daemon.replies.size() == 1; });
  auto lock = daemon.lock();
  CHECK(daemon.replies.at(call).text == "kept");
  CHECK(daemon.receive_live_messages == 0);
}
