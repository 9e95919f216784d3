// Two daemons as two hosts (two_hosts.h), the failure items of the TCP transport that need memory
// and keepalive checks: a peer that stops reading fills the link's bounded send queue and further
// calls fail RESOURCE_EXHAUSTED while daemon A's memory stays bounded; after a partition under
// load both daemons' memory returns to its level before the load, and daemon A's after daemon B
// is killed under load; an idle link's silent peer is found by the keepalive before any call is
// sent into it, and a daemon that was itself stopped past the keepalive timeout does not blame a
// peer that kept talking. Memory is judged from the daemons' own
// counters (`stats`) and their anonymous resident memory (/proc/PID/status RssAnon), each with the
// bound stated where it is checked; waits are bounded polls of those counters, not timings.
// Registered twice: 1 and 3 runtime threads per daemon (SHARDED).
#include <doctest/doctest.h>

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
#include <iterator>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "echo.mrpc.h"
#include "echo_host.h"
#include "echo_load.h"
#include "mrpc/base/limits.h"
#include "tcp/frame.h"
#include "two_hosts.h"

using namespace std::chrono_literals;
using mrpc::StatusCode;
using mrpc::testing::echo_once;
using mrpc::testing::LocalHost;
using mrpc::testing::TwoHosts;

namespace {

constexpr uint64_t kMiB = 1ull << 20;

// Under a sanitizer the daemon's resident memory includes shadow memory and (ASan) a quarantine of
// freed blocks: the RSS bounds hold for the plain build only; the daemon's counters are checked in
// every build.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kCheckRss = false;
#else
constexpr bool kCheckRss = true;
#endif

nlohmann::json stats(LocalHost& host) {
  auto text = host.control("stats");
  REQUIRE_MESSAGE(text.ok(), text.status().to_string());
  return nlohmann::json::parse(*text);
}

uint64_t tcp_counter(LocalHost& host, const char* name) {
  return stats(host).at("tcp").at(name).get<uint64_t>();
}

// The daemon's anonymous resident memory (its heap: buffers, tables), from /proc/PID/status; the
// apps' shared regions it maps are not in it.
uint64_t rss_anon_bytes(LocalHost& host) {
  std::ifstream status(fmt::format("/proc/{}/status", host.daemon().pid()));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("RssAnon:", 0) != 0) continue;
    std::istringstream fields(line.substr(8));
    uint64_t kib = 0;
    fields >> kib;
    return kib * 1024;
  }
  FAIL("no RssAnon in /proc/", host.daemon().pid(), "/status");
  return 0;
}

// Polls `done` up to `attempts` times, 10 ms apart; its last answer.
template <typename Done>
bool eventually(Done done, int attempts = 1000) {
  for (int attempt = 0; attempt < attempts; ++attempt) {
    if (done()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return done();
}

// The frames the slow peer sends, encoded by the real encoder (hex, for its script).
std::string frame_hex(mrpc::tcp::FrameKind kind, uint64_t call_id, std::string_view host) {
  mrpc::tcp::Frame frame;
  frame.kind = kind;
  frame.call_id = call_id;
  frame.caller_host = host;
  std::vector<std::byte> bytes(mrpc::tcp::frame_prefix_bytes(frame));
  auto written = mrpc::tcp::encode_frame_prefix(frame, 0, bytes);
  REQUIRE_MESSAGE(written.ok(), written.status().to_string());
  std::string hex;
  for (std::byte b : bytes) hex += fmt::format("{:02x}", static_cast<unsigned>(b));
  return hex;
}

// A peer daemon that accepts A's link, says hello, sends a ping every 200 ms (so A's keepalive
// never closes the link) and never reads: A's frames pile up in the kernel's buffers (its receive
// buffer is set small) and then in A's send queue. Listens where daemon B did (B's namespace).
mrpc::Subprocess start_slow_peer(TwoHosts& hosts) {
  const std::string script = hosts.a().directory() + "/slow_peer.py";
  std::ofstream(script) << "import socket, sys, time\n"
                           "hello, ping = bytes.fromhex(sys.argv[3]), bytes.fromhex(sys.argv[4])\n"
                           "l = socket.socket()\n"
                           "l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                           "l.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)\n"
                           "l.bind((sys.argv[1], int(sys.argv[2])))\n"
                           "l.listen(4)\n"
                           "print('listening', flush=True)\n"
                           "c, _ = l.accept()\n"
                           "c.sendall(hello)\n"
                           "while True:\n"
                           "  time.sleep(0.2)\n"
                           "  c.sendall(ping)\n";
  std::vector<std::string> argv = hosts.prefix_b();
  argv.insert(argv.end(), {"python3", script, hosts.b_address(), std::to_string(hosts.port()),
                           frame_hex(mrpc::tcp::FrameKind::kHello, 0, "slow-peer"),
                           frame_hex(mrpc::tcp::FrameKind::kPing, 7, "")});
  const std::string log = hosts.a().directory() + "/slow_peer.log";
  auto peer = mrpc::Subprocess::start(argv, {}, log);
  REQUIRE_MESSAGE(peer.ok(), peer.status().to_string());
  const bool listening = eventually([&] {
    std::ifstream in(log);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return text.find("listening") != std::string::npos;
  });
  REQUIRE_MESSAGE(listening, "the slow peer did not start; see ", log);
  return std::move(*peer);
}

// Completions of calls started with callbacks: how many ended, and how.
struct Ended {
  std::mutex mutex;
  uint64_t count = 0;
  std::map<StatusCode, uint64_t> codes;
  mrpc::Status first_refusal;

  void add(const mrpc::Status& status) {
    std::lock_guard lock(mutex);
    ++count;
    ++codes[status.code()];
    if (status.code() == StatusCode::kResourceExhausted && first_refusal.ok())
      first_refusal = status;
  }
  uint64_t of(StatusCode code) {
    std::lock_guard lock(mutex);
    return codes[code];
  }
  uint64_t total() {
    std::lock_guard lock(mutex);
    return count;
  }
  std::string summary() {
    std::lock_guard lock(mutex);
    std::string text = fmt::format("{} ended", count);
    for (const auto& [code, n] : codes)
      text += fmt::format(", {} {}", n, mrpc::status_code_name(code));
    return text;
  }
};

void start_echo(const std::shared_ptr<mrpc::Channel>& channel, const std::string& payload,
                Ended& ended) {
  echo::EchoService::Client client(channel);
  auto request = echo::EchoRequest::create(channel->heap());
  request.set_text("fill");
  request.set_payload(payload);
  mrpc::CallOptions options;
  options.timeout = 120s;  // far past the test: no call may end by its deadline
  client.Echo(std::move(request), options,
              [&ended](mrpc::CallResult<echo::EchoReply> reply) { ended.add(reply.status()); });
}

}  // namespace

TEST_CASE(
    "a peer that stops reading fills the link's bounded send queue, then calls fail "
    "RESOURCE_EXHAUSTED and the daemon's memory stays bounded") {
  TwoHosts hosts;
  // Room in the app's heap for every request that can wait on the link (64 MiB queued, plus the
  // kernel's buffers) and the refused ones.
  constexpr uint64_t kHeapBytes = 256 * kMiB;
  mrpc::Status started = hosts.start_daemons({"--heap-bytes", std::to_string(kHeapBytes)});
  REQUIRE_MESSAGE(started.ok(), started.to_string());
  hosts.b().kill_daemon();  // B's address and port now belong to the slow peer
  mrpc::Subprocess peer = start_slow_peer(hosts);
  Ended ended;  // before the channel: it outlives the channel's completion thread
  auto channel = hosts.a().connect("backpressure_client");
  REQUIRE_MESSAGE(channel.ok(), channel.status().to_string());
  const uint64_t rss_before = rss_anon_bytes(hosts.a());
  const nlohmann::json before = stats(hosts.a());

  // 1 MiB requests, one at a time until the link refuses one: each call is sent (queued on the
  // link: A's counter) or has ended (refused) before the next starts.
  const std::string payload(kMiB, 'p');
  constexpr uint64_t kFrameBytes = kMiB + 4096;  // one request frame: payload + header + names
  constexpr uint32_t kMaxCalls = 200;            // 64 MiB queued + the kernel's buffers: far fewer
  uint32_t started_calls = 0;
  uint64_t refused = 0;
  while (refused == 0 && started_calls < kMaxCalls) {
    start_echo(*channel, payload, ended);
    ++started_calls;
    nlohmann::json tcp;
    const bool settled = eventually([&] {
      tcp = stats(hosts.a()).at("tcp");
      return tcp.at("calls_sent").get<uint64_t>() + ended.total() >= started_calls;
    });
    REQUIRE_MESSAGE(settled, "call ", started_calls, " neither sent nor ended; A: ", tcp.dump(),
                    "; ended: ", ended.summary());
    refused = ended.of(StatusCode::kResourceExhausted);
    REQUIRE_MESSAGE(ended.total() == refused, "a call failed otherwise: ", ended.summary());
  }
  const uint64_t queued_calls = started_calls - refused;
  MESSAGE(queued_calls, " calls of 1 MiB waiting on the link when call ", started_calls,
          " was refused");
  REQUIRE(refused == 1);
  CHECK(tcp_counter(hosts.a(), "calls_refused_queue_full") == 1);
  CHECK(ended.total() == 1);  // the calls on the link wait; none failed otherwise
  const std::string refusal = ended.first_refusal.message();
  CHECK_MESSAGE(refusal.find("kMaxTcpSendQueueBytes=") != std::string::npos, refusal);

  // The queue is full and bounded: at least the limit (that is why it refused), at most the limit
  // plus the one frame that crossed it.
  const nlohmann::json full = stats(hosts.a()).at("tcp");
  MESSAGE("A's tcp counters when full: ", full.dump());
  const uint64_t queue_bound = mrpc::limits::kMaxTcpSendQueueBytes + kFrameBytes;
  CHECK(full.at("send_queue_bytes").get<uint64_t>() >= mrpc::limits::kMaxTcpSendQueueBytes);
  CHECK(full.at("send_queue_bytes").get<uint64_t>() <= queue_bound);
  CHECK(full.at("send_queue_bytes_peak").get<uint64_t>() <= queue_bound);

  // More calls change nothing: each is refused, the queue does not grow.
  constexpr uint32_t kMoreCalls = 20;
  for (uint32_t i = 0; i < kMoreCalls; ++i) start_echo(*channel, payload, ended);
  REQUIRE(eventually([&] { return ended.of(StatusCode::kResourceExhausted) == 1 + kMoreCalls; }));
  const nlohmann::json still = stats(hosts.a()).at("tcp");
  CHECK(still.at("calls_refused_queue_full").get<uint64_t>() == 1 + kMoreCalls);
  CHECK(still.at("calls_sent").get<uint64_t>() == queued_calls);
  CHECK(still.at("send_queue_bytes").get<uint64_t>() <= queue_bound);
  CHECK(still.at("send_queue_bytes_peak").get<uint64_t>() <= queue_bound);
  // Daemon A's own memory: its heap grew by the queue (and a frame being encoded), not more.
  // Slack: 16 MiB for the allocator, the RPC descriptors and the link's receive buffer.
  const uint64_t rss_full = rss_anon_bytes(hosts.a());
  MESSAGE("daemon A RssAnon: ", rss_before / kMiB, " MiB before, ", rss_full / kMiB,
          " MiB with the queue full");
  if (kCheckRss) CHECK(rss_full <= rss_before + queue_bound + kFrameBytes + 16 * kMiB);

  // The peer goes away: the calls waiting on the link fail UNAVAILABLE, and the queue's memory
  // goes with the link.
  peer.stop(SIGKILL, 0ms);
  REQUIRE(eventually([&] { return ended.total() == started_calls + kMoreCalls; }));
  CHECK(ended.of(StatusCode::kUnavailable) == queued_calls);
  nlohmann::json after;
  const bool settled = eventually([&] {
    after = stats(hosts.a());
    return after.at("tcp").at("send_queue_bytes").get<uint64_t>() == 0 &&
           after.at("calls_in_flight").get<uint64_t>() == 0 &&
           after.at("rpcs_alive") == before.at("rpcs_alive");
  });
  CHECK_MESSAGE(settled, after.dump());
  CHECK(after.at("tcp").at("links_open").get<uint64_t>() == 0);
  const uint64_t rss_after = rss_anon_bytes(hosts.a());
  MESSAGE("daemon A RssAnon after the link closed: ", rss_after / kMiB, " MiB");
  if (kCheckRss) CHECK(rss_after <= rss_before + 16 * kMiB);
  (*channel).reset();  // joins the completion thread: no completion can come after this
  CHECK(ended.total() == started_calls + kMoreCalls);  // each call ended exactly once
}

TEST_CASE(
    "a daemon stopped for longer than the keepalive timeout reads what its peer sent meanwhile "
    "before judging it silent: the link and its call survive") {
  TwoHosts hosts;
  mrpc::Status started = hosts.start_daemons();
  REQUIRE_MESSAGE(started.ok(), started.to_string());
  hosts.b().kill_daemon();  // B's address and port now belong to the slow peer (pings every 200 ms)
  mrpc::Subprocess peer = start_slow_peer(hosts);
  Ended ended;  // before the channel: it outlives the channel's completion thread
  auto channel = hosts.a().connect("stalled_client");
  REQUIRE_MESSAGE(channel.ok(), channel.status().to_string());
  start_echo(*channel, "waits on the link", ended);  // the peer never answers it
  REQUIRE(eventually([&] { return tcp_counter(hosts.a(), "calls_sent") == 1; }));

  // Daemon A stops for longer than kTcpKeepaliveTimeout; the peer's pings pile up in A's socket.
  // When A runs again its keepalive sweep is due at once: it must read those pings first.
  const pid_t daemon_a = hosts.a().daemon().pid();
  REQUIRE(::kill(daemon_a, SIGSTOP) == 0);
  std::this_thread::sleep_for(mrpc::limits::kTcpKeepaliveTimeout + 1s);
  REQUIRE(::kill(daemon_a, SIGCONT) == 0);
  // A heard the peer again (its bytes_received grows with each ping) ...
  const uint64_t received = tcp_counter(hosts.a(), "bytes_received");
  REQUIRE(eventually([&] { return tcp_counter(hosts.a(), "bytes_received") > received; }));
  // ... and never closed the link: the call still waits on it.
  CHECK(tcp_counter(hosts.a(), "keepalive_timeouts") == 0);
  CHECK(tcp_counter(hosts.a(), "links_open") == 1);
  CHECK(ended.total() == 0);
  peer.stop(SIGKILL, 0ms);  // now the call fails: the link is gone
  CHECK(eventually([&] { return ended.of(StatusCode::kUnavailable) == 1; }));
  (*channel).reset();
  CHECK(ended.total() == 1);
}

namespace {

// How the load of memory_returns_after() is broken.
enum class Break {
  kCutLink,  // the veth link goes down (a partition: silence); both daemons survive
  kKillB,    // daemon B is SIGKILLed (and restarted after); daemon A survives
};

// Loads the hosts (32 KiB calls, 256 in flight), breaks them `how`, brings them back until a call
// crosses, then checks that the surviving daemons' memory is back to its level before the load:
// their counters (RPC descriptors, receive-region bytes, call table, calls in flight, the TCP send
// queue) exactly, and their anonymous resident memory within 8 MiB (the allocator keeps some freed
// memory; the load moved up to 16 MiB at a time through each daemon's buffers).
void memory_returns_after(Break how) {
  mrpc::testing::EchoAcrossHosts setup("memory_client");
  TwoHosts& hosts = setup.hosts;
  if (how == Break::kCutLink && !hosts.namespaces()) {
    MESSAGE("SKIPPED: no network namespaces here, so there is no link to cut");
    return;
  }
  REQUIRE(echo_once(setup.channel, "warm-up").ok());
  // The baseline once the warm-up's release has reached A (libmrpc posts it quietly).
  nlohmann::json a_before, b_before;
  REQUIRE(eventually([&] {
    a_before = stats(hosts.a());
    return a_before.at("receive_bytes_in_use").get<uint64_t>() == 0;
  }));
  b_before = stats(hosts.b());
  const uint64_t a_rss_before = rss_anon_bytes(hosts.a());
  const uint64_t b_rss_before = rss_anon_bytes(hosts.b());

  echo::EchoLoadOptions load;
  load.calls = 20'000;
  load.in_flight = 256;
  load.payload_bytes = 32 << 10;
  load.same_payload = true;
  load.timeout = 30s;  // a hang would show as DEADLINE_EXCEEDED after 30 s
  auto running =
      std::async(std::launch::async, [&] { return echo::run_echo_load(setup.channel, load); });
  REQUIRE(eventually([&] { return tcp_counter(hosts.a(), "calls_sent") > 2000; }, 3000));
  const uint64_t a_rss_loaded = rss_anon_bytes(hosts.a());
  const uint64_t b_rss_loaded = rss_anon_bytes(hosts.b());
  if (how == Break::kCutLink)
    REQUIRE(hosts.set_link(false));  // no FIN, no RST: silence
  else
    hosts.b().kill_daemon();
  echo::EchoLoadResult result = running.get();
  MESSAGE(result.summary());
  CHECK(result.answered + result.failed() == load.calls);
  CHECK(result.failed() > 0);
  CHECK(result.errors.count(StatusCode::kDeadlineExceeded) == 0);
  CHECK(result.mismatched == 0);
  if (how == Break::kCutLink) {
    // Both sides' keepalives close the link: A's with calls waiting, B's with none waiting (B
    // only served): B's link must not linger until TCP gives up.
    CHECK(eventually([&] { return tcp_counter(hosts.b(), "keepalive_timeouts") >= 1; }));
    CHECK(tcp_counter(hosts.a(), "keepalive_timeouts") >= 1);
    REQUIRE(hosts.set_link(true));
  } else {
    mrpc::Status restarted = hosts.restart_b();
    REQUIRE_MESSAGE(restarted.ok(), restarted.to_string());
    auto restarted_server = hosts.b().start_echo_server();
    REQUIRE_MESSAGE(restarted_server.ok(), restarted_server.status().to_string());
    setup.server = std::move(*restarted_server);
  }
  mrpc::Status last;
  for (int attempt = 0; attempt < 300 && !(last = echo_once(setup.channel, "after", {}, 5s)).ok();
       ++attempt)
    std::this_thread::sleep_for(20ms);
  REQUIRE_MESSAGE(last.ok(), last.to_string());

  // Polled for the releases libmrpc posts quietly and B's records of calls its server answered
  // after the link was gone.
  auto back = [](const nlohmann::json& now, const nlohmann::json& then) {
    return now.at("rpcs_alive") == then.at("rpcs_alive") &&
           now.at("receive_bytes_in_use") == then.at("receive_bytes_in_use") &&
           now.at("calls_in_flight").get<uint64_t>() == 0 &&
           now.at("call_table_size") == then.at("call_table_size") &&
           now.at("tcp").at("send_queue_bytes").get<uint64_t>() == 0;
  };
  nlohmann::json a_after, b_after;
  CHECK_MESSAGE(eventually([&] {
                  a_after = stats(hosts.a());
                  return back(a_after, a_before);
                }),
                "A before: ", a_before.dump(), "\nA after: ", a_after.dump());
  CHECK(a_after.at("tcp").at("links_open").get<uint64_t>() == 1);  // the new link only
  const uint64_t a_rss_after = rss_anon_bytes(hosts.a());
  MESSAGE("daemon A RssAnon KiB before / under load / after: ", a_rss_before >> 10, " / ",
          a_rss_loaded >> 10, " / ", a_rss_after >> 10);
  if (kCheckRss) CHECK(a_rss_after <= a_rss_before + 8 * kMiB);
  if (how != Break::kCutLink) return;  // B is a new process: nothing to compare with
  CHECK_MESSAGE(eventually([&] {
                  b_after = stats(hosts.b());
                  return back(b_after, b_before);
                }),
                "B before: ", b_before.dump(), "\nB after: ", b_after.dump());
  CHECK(b_after.at("tcp").at("links_open").get<uint64_t>() == 1);
  const uint64_t b_rss_after = rss_anon_bytes(hosts.b());
  MESSAGE("daemon B RssAnon KiB before / under load / after: ", b_rss_before >> 10, " / ",
          b_rss_loaded >> 10, " / ", b_rss_after >> 10);
  if (kCheckRss) CHECK(b_rss_after <= b_rss_before + 8 * kMiB);
}

}  // namespace

TEST_CASE(
    "after a partition under load both daemons' memory returns to its level before the load") {
  memory_returns_after(Break::kCutLink);
}

TEST_CASE(
    "after host B's daemon is killed under load daemon A's memory returns to its level before "
    "the load") {
  memory_returns_after(Break::kKillB);
}

TEST_CASE(
    "an idle link whose peer goes silent is closed by the keepalive on both sides before any "
    "call, and the next call fails UNAVAILABLE instead of waiting for its deadline") {
  mrpc::testing::EchoAcrossHosts setup("idle_client");
  TwoHosts& hosts = setup.hosts;
  if (!hosts.namespaces()) {
    MESSAGE("SKIPPED: no network namespaces here, so there is no link to cut");
    return;
  }
  REQUIRE(echo_once(setup.channel, "opens the link").ok());

  // Idle (no call waits): the link is still pinged and stays open. Whichever side's peer was
  // silent for kTcpKeepaliveInterval pings; the pong (and the ping itself, at the other side)
  // counts as hearing from the peer, so usually one side does the pinging.
  auto pings = [&] {
    return tcp_counter(hosts.a(), "pings_sent") + tcp_counter(hosts.b(), "pings_sent");
  };
  const uint64_t pings_before = pings();
  REQUIRE(eventually([&] { return pings() >= pings_before + 3; }));
  CHECK(tcp_counter(hosts.a(), "keepalive_timeouts") == 0);
  CHECK(tcp_counter(hosts.a(), "links_open") == 1);

  // The partition, with no call under way: each side finds its peer silent and closes the link.
  REQUIRE(hosts.set_link(false));
  CHECK(eventually([&] { return tcp_counter(hosts.a(), "keepalive_timeouts") == 1; }));
  CHECK(eventually([&] { return tcp_counter(hosts.b(), "keepalive_timeouts") == 1; }));
  CHECK(tcp_counter(hosts.a(), "links_open") == 0);
  CHECK(tcp_counter(hosts.a(), "calls_sent") == 1);  // nothing was sent into the dead link

  // A call now is not sent into a link that looks open: it fails UNAVAILABLE (the peer is
  // unreachable or backing off), long before its deadline.
  const auto called_at = std::chrono::steady_clock::now();
  mrpc::Status during = echo_once(setup.channel, "during the partition", {}, 20s);
  const auto took = std::chrono::steady_clock::now() - called_at;
  MESSAGE(during.to_string());
  CHECK(during.code() == StatusCode::kUnavailable);
  CHECK(took < 20s);

  REQUIRE(hosts.set_link(true));
  mrpc::Status last;
  for (int attempt = 0; attempt < 300 && !(last = echo_once(setup.channel, "after", {}, 5s)).ok();
       ++attempt)
    std::this_thread::sleep_for(20ms);
  CHECK_MESSAGE(last.ok(), last.to_string());
}

TEST_CASE(
    "a peer whose first frame is not a hello is disconnected with a logged reason and the daemon "
    "keeps serving") {
  mrpc::testing::EchoAcrossHosts setup("hello_client");
  TwoHosts& hosts = setup.hosts;
  REQUIRE(echo_once(setup.channel, "before").ok());
  const uint64_t bad_before = tcp_counter(hosts.b(), "bad_frames");
  // Policies read the hello's host as rpc.caller.host ("" means this host's apps): a peer must
  // not skip it (a hello without a host does not parse). The script sends a ping first and reads
  // until B closes the connection.
  const std::string script = hosts.a().directory() + "/no_hello.py";
  std::ofstream(script) << "import socket, sys\n"
                           "for frame in sys.argv[3:]:\n"
                           "  s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 10)\n"
                           "  s.sendall(bytes.fromhex(frame))\n"
                           "  try:\n"
                           "    while s.recv(4096): pass\n"
                           "  except OSError: pass\n"
                           "  s.close()\n";
  const std::string command =
      fmt::format("python3 {} {} {} {}", script, hosts.b_address(), hosts.port(),
                  frame_hex(mrpc::tcp::FrameKind::kPing, 7, ""));
  CHECK(hosts.run_at_a(command) == 0);  // returns once B closed the connection
  CHECK(tcp_counter(hosts.b(), "bad_frames") == bad_before + 1);
  std::ifstream log(hosts.b().directory() + "/mrpcd.log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  CHECK(text.find("a frame of kind 5 before the peer's hello") != std::string::npos);
  mrpc::Status after = echo_once(setup.channel, "after");
  CHECK_MESSAGE(after.ok(), after.to_string());
}
