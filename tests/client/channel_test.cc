#include <doctest/doctest.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include "echo.mrpc.h"
#include "fake_daemon.h"
#include "mrpc/base/limits.h"
#include "mrpc/base/slot_table.h"

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

mrpc::Owned<echo::EchoRequest> echo_request(Channel& channel, std::string_view text) {
  auto request = echo::EchoRequest::create(channel.heap());
  request.set_text(text);
  return request;
}

// The one live thread of this process named `name` (the test runs one channel at a time).
std::string thread_dir(const std::string& name) {
  std::string found;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string comm_name;
    std::getline(comm, comm_name);
    if (comm_name != name) continue;
    REQUIRE_MESSAGE(found.empty(), "two threads named " << name);
    found = task.path().string();
  }
  REQUIRE_MESSAGE(!found.empty(), "no thread named " << name);
  return found;
}

// How often the thread blocked (poll, futex): voluntary_ctxt_switches in its status file.
long voluntary_switches(const std::string& dir) {
  std::ifstream status(dir + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("voluntary_ctxt_switches:", 0) == 0) return std::stol(line.substr(24));
  }
  FAIL("no voluntary_ctxt_switches in " << dir << "/status");
  return 0;
}

// The thread's scheduler state now, from its stat file: 'S' asleep (poll, futex), 'R' running or
// waiting for a CPU.
char thread_state(const std::string& dir) {
  std::ifstream stat_file(dir + "/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  // The state follows the command name, which is in parentheses and may hold spaces.
  const size_t name_end = stat.rfind(')');
  const bool parsed = name_end != std::string::npos && name_end + 2 < stat.size();
  REQUIRE_MESSAGE(parsed, stat);
  return stat[name_end + 2];
}

std::shared_ptr<Channel> connect_with_spin(const FakeDaemon& daemon,
                                           std::optional<std::chrono::nanoseconds> spin_budget) {
  ChannelOptions options;
  options.socket_path = daemon.socket_path();
  options.app_name = "channel-test";
  options.spin_budget = spin_budget;
  auto channel = Channel::connect(options);
  REQUIRE_MESSAGE(channel.ok(), channel.status().to_string());
  return *channel;
}

// Makes `calls` echo calls one after another; returns how often the completion thread blocked.
long completion_thread_sleeps_over_calls(const std::shared_ptr<Channel>& channel, int calls) {
  const std::string completion = thread_dir("mrpc-completion");
  echo::EchoService::Client client(channel);
  // The first call registers the service; count only the steady state.
  REQUIRE(client.Echo(echo_request(*channel, "warm-up")).ok());
  const long before = voluntary_switches(completion);
  for (int i = 0; i < calls; ++i) {
    auto result = client.Echo(echo_request(*channel, "ping"));
    REQUIRE_MESSAGE(result.ok(), result.status().to_string());
    CHECK(result->text() == "ping");
  }
  return voluntary_switches(completion) - before;
}

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = ::getenv(name)) old_ = old;
    ::setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

constexpr int kSequentialCalls = 200;
// Wake-ups an idle completion thread may have in 2 s: its bounded re-checks (kHeldBlockRecheckMax
// is 64 ms at most, about 31 in 2 s) and room for a few more. A polling thread has none, but it
// is never found asleep either.
constexpr long kIdleWakeupsBound = 50;

// A served method whose responses are echo.EchoReply; the test sets the handler.
mrpc::UntypedMethod echo_reply_method() {
  mrpc::UntypedMethod method;
  method.new_response = [](mrpc::ShmHeap& heap) {
    return heap.new_message(echo::EchoReply::kBodySize);
  };
  return method;
}

}  // namespace

TEST_CASE(
    "connecting where no daemon listens fails with UNAVAILABLE saying mrpcd is not running and "
    "where it looked") {
  ChannelOptions options;
  options.socket_path = "/tmp/mrpc-client-test-nobody-here.sock";
  auto channel = Channel::connect(options);
  REQUIRE_FALSE(channel.ok());
  CHECK(channel.status().code() == StatusCode::kUnavailable);
  const std::string text = channel.status().message();
  CHECK_MESSAGE(text.starts_with("mrpcd is not running: nothing listens at "
                                 "/tmp/mrpc-client-test-nobody-here.sock "
                                 "(ChannelOptions::socket_path)"),
                text);
  CHECK_MESSAGE(text.find("MRPC_SOCKET") != std::string::npos, text);

  ::setenv(mrpc::shm::kAppSocketEnv, "/tmp/mrpc-client-test-env-nobody.sock", 1);
  auto from_env = Channel::connect({});
  ::unsetenv(mrpc::shm::kAppSocketEnv);
  REQUIRE_FALSE(from_env.ok());
  CHECK(from_env.status().code() == StatusCode::kUnavailable);
  CHECK_MESSAGE(from_env.status().message().find(
                    "/tmp/mrpc-client-test-env-nobody.sock ($MRPC_SOCKET)") != std::string::npos,
                from_env.status().message());
}

TEST_CASE("value() of a failed connect aborts printing the status, not bad_variant_access") {
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::dup2(pipe_fds[1], STDERR_FILENO);
    ChannelOptions options;
    options.socket_path = "/tmp/mrpc-client-test-nobody-here.sock";
    options.reconnect = false;
    auto channel = Channel::connect(options).value();  // aborts
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  std::string printed;
  char buffer[512];
  for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof(buffer))) > 0;)
    printed.append(buffer, static_cast<size_t>(n));
  ::close(pipe_fds[0]);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGABRT);
  CHECK_MESSAGE(printed.find("Expected::value() of an error: UNAVAILABLE: mrpcd is not running") !=
                    std::string::npos,
                printed);
  CHECK(printed.find("bad_variant_access") == std::string::npos);
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
    auto result = client.Echo(std::move(request));
    REQUIRE_MESSAGE(result.ok(), result.status().to_string());
    CHECK(result->text() == "hello");
    CHECK(result->payload() == std::string(1000, 'p'));
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
  auto result = client.Echo(std::move(request));
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
        if (result.ok() && result->text() == fmt::format("{}-{}", t, i)) correct.fetch_add(1);
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
      CHECK(result->text() == "again");
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
    mrpc::Status Echo(mrpc::ServerContext& context, const echo::EchoRequest::View& request,
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

namespace {
// An echo service that counts its handler runs.
struct CountingEcho final : echo::EchoService::Service {
  std::atomic<int> runs{0};
  mrpc::Status Echo(mrpc::ServerContext&, const echo::EchoRequest::View& request,
                    echo::EchoReply& response) override {
    ++runs;
    response.set_text(request.text());
    return {};
  }
};

FakeDaemonOptions echo_daemon_serving(uint32_t max_calls_served) {
  FakeDaemonOptions options = echo_daemon();
  options.max_calls_served = max_calls_served;
  return options;
}

// A FakeDaemon with `max_calls_served` slots and a channel serving CountingEcho.
struct CountingEchoServer {
  CountingEchoServer(uint32_t max_calls_served, int handler_threads)
      : daemon(echo_daemon_serving(max_calls_served)),
        channel(connect_to(daemon, handler_threads)) {
    REQUIRE(channel->serve(echo::EchoService::schema(), service.methods()).ok());
  }
  FakeDaemon daemon;
  std::shared_ptr<Channel> channel;
  CountingEcho service;
};
}  // namespace

TEST_CASE(
    "served calls are kept by slot: each generation of a slot is answered, and a kReplyDone frees "
    "only the response of its own generation") {
  CountingEchoServer server(2, 2);
  FakeDaemon& daemon = server.daemon;
  Channel* channel = server.channel.get();
  CountingEcho& service = server.service;

  constexpr int kRounds = 20;
  std::vector<uint64_t> ids;
  for (int round = 0; round < kRounds; ++round) {
    const uint64_t first = daemon.send_incoming_echo("echo.EchoService", fmt::format("a{}", round));
    const uint64_t second =
        daemon.send_incoming_echo("echo.EchoService", fmt::format("b{}", round));
    CHECK(mrpc::slot_of(first) == 0);
    CHECK(mrpc::slot_of(second) == 1);
    daemon.wait_for([&] { return daemon.replies.size() == 2u * (round + 1); });
    {
      auto lock = daemon.lock();
      CHECK(daemon.replies.at(first).text == fmt::format("a{}", round));
      CHECK(daemon.replies.at(second).text == fmt::format("b{}", round));
    }
    CHECK(channel->heap().live_messages() == 2);  // both responses wait for their kReplyDone
    daemon.send_reply_done(first);
    daemon.send_reply_done(second);
    while (channel->heap().live_messages() != 0) std::this_thread::sleep_for(1ms);
    ids.push_back(first);
  }
  CHECK(service.runs == 2 * kRounds);

  // A kReplyDone naming an earlier generation of slot 0 leaves the current call's response alone.
  const uint64_t current = daemon.send_incoming_echo("echo.EchoService", "current");
  daemon.wait_for([&] { return daemon.replies.count(current) == 1; });
  daemon.send_reply_done(ids.front());
  // The completion ring is read in order: once this call is answered, the stale kReplyDone was
  // seen.
  const uint64_t next = daemon.send_incoming_echo("echo.EchoService", "next");
  daemon.wait_for([&] { return daemon.replies.count(next) == 1; });
  CHECK(mrpc::slot_of(current) == mrpc::slot_of(ids.front()));
  CHECK(channel->heap().live_messages() == 2);
  daemon.send_reply_done(current);
  daemon.send_reply_done(next);
  while (channel->heap().live_messages() != 0) std::this_thread::sleep_for(1ms);
}

TEST_CASE(
    "an incoming call id outside max_calls_served, or 0, is answered INTERNAL without running a "
    "handler") {
  CountingEchoServer server(4, 1);
  FakeDaemon& daemon = server.daemon;
  CountingEcho& service = server.service;

  const uint64_t past_the_slots = (uint64_t{1} << 32) | 4;
  daemon.send_incoming_echo_as(past_the_slots, "echo.EchoService", "too far");
  daemon.send_incoming_echo_as(0, "echo.EchoService", "zero");
  daemon.wait_for([&] { return daemon.replies.size() == 2; });
  {
    auto lock = daemon.lock();
    for (const uint64_t id : {past_the_slots, uint64_t{0}}) {
      const auto& reply = daemon.replies.at(id);
      CHECK(reply.status == static_cast<uint32_t>(StatusCode::kInternal));
      // (Refusals made before a handler runs carry a status and no text: text lives in the
      // heap until a kReplyDone, which an id without a slot cannot be matched to.)
      CHECK(reply.text.empty());
    }
    CHECK(daemon.receive_live_messages == 0);  // the requests went back
  }
  CHECK(service.runs == 0);
  // The connection still serves calls with good ids.
  const uint64_t good = daemon.send_incoming_echo("echo.EchoService", "fine");
  daemon.wait_for([&] { return daemon.replies.count(good) == 1; });
  CHECK(service.runs == 1);
}

TEST_CASE(
    "a refusal made before any handler runs carries its text, kept in the heap until kReplyDone") {
  CountingEchoServer server(4, 1);
  FakeDaemon& daemon = server.daemon;
  const uint64_t unserved = daemon.send_incoming_echo_to_method("echo.EchoService", 7, "nobody");
  daemon.wait_for([&] { return daemon.replies.count(unserved) == 1; });
  {
    auto lock = daemon.lock();
    const auto& reply = daemon.replies.at(unserved);
    CHECK(reply.status == static_cast<uint32_t>(StatusCode::kUnimplemented));
    CHECK(reply.detail == "this app does not serve that method");
    CHECK(reply.text.empty());
    CHECK(daemon.receive_live_messages == 0);  // the request went back with the reply
  }
  CHECK(server.service.runs == 0);
  CHECK(server.channel->heap().live_messages() == 1);  // the text, until kReplyDone
  daemon.send_reply_done(unserved);
  while (server.channel->heap().live_messages() != 0) std::this_thread::sleep_for(1ms);
}

TEST_CASE("a Welcome whose max_calls_served is 0 or past the accepted bound fails connect") {
  for (const uint32_t served : {0u, mrpc::limits::kMaxCallsServedAccepted + 1}) {
    CAPTURE(served);
    FakeDaemon daemon(echo_daemon_serving(served));
    ChannelOptions channel_options;
    channel_options.socket_path = daemon.socket_path();
    channel_options.app_name = "channel-test";
    auto channel = Channel::connect(channel_options);
    REQUIRE_FALSE(channel.ok());
    CHECK(channel.status().code() == StatusCode::kInvalidArgument);
    CHECK(channel.status().message().find("max_calls_served") != std::string::npos);
  }
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
  mrpc::UntypedMethod method = echo_reply_method();
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

TEST_CASE("a channel with spin budget 0 completes calls and its completion thread sleeps") {
  FakeDaemon daemon(echo_daemon());
  auto channel = connect_with_spin(daemon, 0ns);
  // Spin 0: after each completion the thread finds its ring empty and sleeps in poll, so it blocks
  // about once per call (allow for completions that arrive before it gets to sleep).
  const long sleeps = completion_thread_sleeps_over_calls(channel, kSequentialCalls);
  CHECK(sleeps >= kSequentialCalls / 4);

  // Idle, it sleeps: found asleep whenever looked at over 2 s, and woken only a few times. Judged
  // by its state and wake-ups, not its CPU time (which depends on the machine and its load). A
  // thread that polled would be found running (or waiting for a CPU) every time, and never block.
  const std::string completion = thread_dir("mrpc-completion");
  const long switches_before = voluntary_switches(completion);
  constexpr int kLooks = 40;
  int asleep = 0;
  for (int look = 0; look < kLooks; ++look) {
    std::this_thread::sleep_for(50ms);
    if (thread_state(completion) == 'S') ++asleep;
  }
  const long woken = voluntary_switches(completion) - switches_before;
  MESSAGE("idle completion thread: asleep at " << asleep << " of " << kLooks << " looks, woken "
                                               << woken << " times in 2 s");
  constexpr int kAsleepAtLeast = kLooks - 4;  // a few wake-ups that a look happened to catch
  CHECK(asleep >= kAsleepAtLeast);
  CHECK(woken <= kIdleWakeupsBound);
}

TEST_CASE("a long spin budget keeps the completion thread awake between back-to-back calls") {
  FakeDaemon daemon(echo_daemon());
  auto channel = connect_with_spin(daemon, mrpc::limits::kMaxSpinBudget);
  // The counterpart of the spin-0 test: the same calls, but the thread polls through the gaps.
  const long sleeps = completion_thread_sleeps_over_calls(channel, kSequentialCalls);
  CHECK(sleeps < kSequentialCalls / 4);
}

TEST_CASE("MRPC_SPIN_BUDGET_US sets the spin budget when the options leave it unset") {
  FakeDaemon daemon(echo_daemon());
  {
    ScopedEnv spin("MRPC_SPIN_BUDGET_US", "0");
    auto channel = connect_with_spin(daemon, std::nullopt);
    CHECK(completion_thread_sleeps_over_calls(channel, kSequentialCalls) >= kSequentialCalls / 4);
  }
  {
    // The option wins: the environment is not even read.
    ScopedEnv spin("MRPC_SPIN_BUDGET_US", "not a number");
    auto channel = connect_with_spin(daemon, mrpc::limits::kMaxSpinBudget);
    CHECK(completion_thread_sleeps_over_calls(channel, kSequentialCalls) < kSequentialCalls / 4);
  }
}

TEST_CASE("a bad spin budget or a negative handler thread count fails connect") {
  FakeDaemon daemon(echo_daemon());
  ChannelOptions options;
  options.socket_path = daemon.socket_path();
  {
    ScopedEnv spin("MRPC_SPIN_BUDGET_US", "50us");
    auto channel = Channel::connect(options);
    REQUIRE_FALSE(channel.ok());
    CHECK(channel.status().code() == StatusCode::kInvalidArgument);
  }
  options.spin_budget = -1ns;
  CHECK(Channel::connect(options).status().code() == StatusCode::kInvalidArgument);
  options.spin_budget = 2s;
  CHECK(Channel::connect(options).status().code() == StatusCode::kInvalidArgument);
  options.spin_budget = 0ns;
  options.handler_threads = -1;
  CHECK(Channel::connect(options).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("with 0 handler threads handlers run inline on the completion thread and answer") {
  FakeDaemon daemon(echo_daemon());
  auto channel = connect_to(daemon, 0);
  std::mutex mutex;
  std::vector<std::string> handler_thread_names;
  mrpc::UntypedMethod method = echo_reply_method();
  method.handler = [&](mrpc::ServerContext&, const mrpc::ReceivedMessage& request,
                       mrpc::MessageRef& response) {
    char name[16] = {};
    pthread_getname_np(pthread_self(), name, sizeof(name));
    {
      std::lock_guard lock(mutex);
      handler_thread_names.emplace_back(name);
    }
    const std::string_view text = echo::EchoRequest(request.ref()).text();
    if (text == "fail") return mrpc::Status(StatusCode::kNotFound, "no such thing");
    echo::EchoReply(response).set_text(std::string(text) + "!");
    return mrpc::Status();
  };
  std::vector<mrpc::UntypedMethod> methods;
  methods.push_back(std::move(method));
  REQUIRE(channel->serve(echo::EchoService::schema(), std::move(methods)).ok());

  std::vector<uint64_t> ok_calls;
  for (int i = 0; i < 10; ++i) {
    ok_calls.push_back(daemon.send_incoming_echo("echo.EchoService", fmt::format("call {}", i)));
  }
  const uint64_t failed_call = daemon.send_incoming_echo("echo.EchoService", "fail");
  daemon.wait_for([&] { return daemon.replies.size() == 11; });
  {
    auto lock = daemon.lock();
    for (size_t i = 0; i < ok_calls.size(); ++i) {
      CHECK(daemon.replies.at(ok_calls[i]).status == 0);
      CHECK(daemon.replies.at(ok_calls[i]).text == fmt::format("call {}!", i));
    }
    CHECK(daemon.replies.at(failed_call).status == static_cast<uint32_t>(StatusCode::kNotFound));
    CHECK(daemon.replies.at(failed_call).detail == "no such thing");
    CHECK(daemon.receive_live_messages == 0);
  }
  std::lock_guard lock(mutex);
  REQUIRE(handler_thread_names.size() == 11);
  for (const auto& name : handler_thread_names) CHECK(name == "mrpc-completion");

  // Calls of its own still complete on the same channel.
  echo::EchoService::Client client(channel);
  auto result = client.Echo(echo_request(*channel, "outgoing"));
  REQUIRE_MESSAGE(result.ok(), result.status().to_string());
  CHECK(result->text() == "outgoing");
}
