#include "tcp_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "mrpc/base/check.h"
#include "mrpc/message/layout.h"
#include "mrpc/transports/shm/metadata_block.h"
#include "remote_ids.h"

namespace mrpc {

namespace {

// Bytes read from a socket per recv.
constexpr size_t kReadChunk = 256 << 10;
// Accepts per round on the listener.
constexpr int kAcceptsPerRound = 16;
// How often calls whose caller gave up are swept from the link tables.
constexpr Nanos kSweepInterval = std::chrono::milliseconds(100);
// While a link has bytes queued or a connect under way, the runtime looks again this soon (the
// runtime watches sockets for readability only).
constexpr Nanos kPendingIoRecheck = std::chrono::microseconds(200);
// A cold link (Link::cold) is read without a readiness flag only every this many busy rounds.
constexpr uint32_t kColdLinkReadRounds = 8;
// Pieces per sendmsg (the kernel's UIO_MAXIOV).
constexpr size_t kMaxIovecs = 1024;

std::string errno_text(int error) {
  return fmt::format("{} ({})", std::strerror(error), error);
}

std::string peer_name(const sockaddr_storage& address) {
  char text[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (address.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&address);
    ::inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text));
    port = ntohs(v4->sin_port);
  } else if (address.ss_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&address);
    ::inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text));
    port = ntohs(v6->sin6_port);
  }
  return fmt::format("{}:{}", text, port);
}

void set_nodelay(int fd) {
  const int one = 1;
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

}  // namespace

TcpTransport::TcpTransport(DaemonCore& core, TcpShared& shared)
    : core_(core),
      shared_(shared),
      peer_links_(shared.resolver->peers().size(), kNoSlotHandle),
      peer_state_(shared.resolver->peers().size()) {}

TcpTransport::~TcpTransport() = default;

void TcpTransport::shutdown() {
  if (listener_) core_.runtime->unwatch(listener_.get());
  listener_.reset();
  close_all("mrpcd stopped");
}

// ---- links ----

TcpTransport::Link* TcpTransport::add_link(shm::UniqueFd socket, bool outgoing,
                                           std::string peer_text) {
  auto link = std::make_unique<Link>();
  Link* raw = link.get();
  const SlotHandle handle = links_.insert(std::move(link));
  if (handle == kNoSlotHandle) return nullptr;
  raw->handle = handle;
  raw->id = remote_ids::of_link(handle, core_.shard);
  raw->socket = std::move(socket);
  raw->outgoing = outgoing;
  raw->peer = std::move(peer_text);
  raw->last_heard = core_.clock.now();
  if (core_.runtime->watch_readable(raw->socket.get(), &raw->readable).ok()) raw->watched = true;
  counters_.links_opened.fetch_add(1, std::memory_order_relaxed);
  counters_.links_open.fetch_add(1, std::memory_order_relaxed);
  return raw;
}

TcpTransport::Link* TcpTransport::link_to(const PeerAddress& peer) {
  SlotHandle& handle = peer_links_[peer.index];
  if (auto* existing = links_.find(handle)) return existing->get();
  const int fd = ::socket(peer.address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return nullptr;
  Link* link = add_link(shm::UniqueFd(fd), true, peer.text);
  if (link == nullptr) return nullptr;
  link->peer_index = peer.index;
  handle = link->handle;
  start_connect(*link, peer);
  return link;
}

void TcpTransport::start_connect(Link& link, const PeerAddress& peer) {
  set_nodelay(link.socket.get());
  link.connect_deadline = core_.clock.now() + limits::kTcpConnectTimeout.count();
  // Our hello goes first; it waits in the send buffer until the connect completes.
  tcp::Frame hello;
  hello.kind = tcp::FrameKind::kHello;
  hello.caller_host = shared_.host_name;
  (void)append_frame(link, hello, {}, {});
  const int rc =
      ::connect(link.socket.get(), reinterpret_cast<const sockaddr*>(&peer.address), peer.length);
  if (rc == 0) {
    link.state = Link::State::kOpen;
  } else if (errno == EINPROGRESS) {
    link.state = Link::State::kConnecting;
  } else {
    close_link(link, "connect: " + errno_text(errno));
  }
  pending_io_ = true;
}

void TcpTransport::check_connect(Link& link) {
  pollfd watch{link.socket.get(), POLLOUT, 0};
  if (::poll(&watch, 1, 0) <= 0) {
    if (core_.clock.now() >= link.connect_deadline)
      close_link(link, fmt::format("connect timed out after {} ms",
                                   std::chrono::duration_cast<std::chrono::milliseconds>(
                                       limits::kTcpConnectTimeout)
                                       .count()));
    return;
  }
  int error = 0;
  socklen_t length = sizeof(error);
  (void)::getsockopt(link.socket.get(), SOL_SOCKET, SO_ERROR, &error, &length);
  if (error != 0) return close_link(link, "connect: " + errno_text(error));
  link.state = Link::State::kOpen;
  link.last_heard = core_.clock.now();  // the keepalive counts from here
  spdlog::info("tcp: connected to peer {} (shard {})", link.peer, core_.shard);
}

void TcpTransport::adopt(shm::UniqueFd socket, std::string peer) {
  set_nodelay(socket.get());
  Link* link = add_link(std::move(socket), false, std::move(peer));
  if (link == nullptr) {
    spdlog::warn("tcp: refusing a peer connection: kMaxTcpPeerConnections={} links on shard {}",
                 limits::kMaxTcpPeerConnections, core_.shard);
    return;
  }
  link->state = Link::State::kOpen;
  tcp::Frame hello;
  hello.kind = tcp::FrameKind::kHello;
  hello.caller_host = shared_.host_name;
  (void)append_frame(*link, hello, {}, {});
  pending_io_ = true;
  spdlog::info("tcp: accepted peer {} (shard {})", link->peer, core_.shard);
}

void TcpTransport::set_listener(shm::UniqueFd listener) {
  listener_ = std::move(listener);
  (void)core_.runtime->watch_readable(listener_.get(), &listener_readable_);
}

bool TcpTransport::accept_links() {
  if (!listener_ || !listener_readable_.exchange(false, std::memory_order_acq_rel)) return false;
  bool did_work = false;
  for (int i = 0; i < kAcceptsPerRound; ++i) {
    sockaddr_storage address{};
    socklen_t length = sizeof(address);
    const int fd = ::accept4(listener_.get(), reinterpret_cast<sockaddr*>(&address), &length,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) break;
    did_work = true;
    shm::UniqueFd socket(fd);
    std::string peer = peer_name(address);
    if (core_.draining) continue;  // closing it is the refusal
    TcpTransport& target = *shared_.shards[next_shard_++ % shared_.shards.size()];
    if (&target == this) {
      adopt(std::move(socket), std::move(peer));
    } else {
      auto moved = std::make_shared<shm::UniqueFd>(std::move(socket));
      target.core_.jobs.post([&target, moved, peer = std::move(peer)]() mutable {
        target.adopt(std::move(*moved), std::move(peer));
      });
    }
  }
  // Level-triggered: look again next round in case more are waiting.
  if (did_work) listener_readable_.store(true, std::memory_order_relaxed);
  return did_work;
}

void TcpTransport::count_queued(size_t bytes) {
  const uint64_t queued =
      counters_.send_queue_bytes.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  if (queued > counters_.send_queue_bytes_peak.load(std::memory_order_relaxed))
    counters_.send_queue_bytes_peak.store(queued, std::memory_order_relaxed);
}

void TcpTransport::append_owned(Link& link, size_t at, size_t bytes) {
  if (bytes == 0) return;
  link.queued_bytes += bytes;
  count_queued(bytes);
  if (link.segments.size() > link.segment_head) {
    Segment& last = link.segments.back();
    if (last.external == nullptr && last.end == at) {
      last.end += bytes;
      return;
    }
  }
  link.segments.push_back(Segment{nullptr, at, at + bytes});
}

void TcpTransport::append_external(Link& link, const std::byte* data, size_t bytes) {
  if (bytes == 0) return;
  link.queued_bytes += bytes;
  count_queued(bytes);
  link.has_external = true;
  if (link.segments.size() > link.segment_head) {
    Segment& last = link.segments.back();
    if (last.external != nullptr && last.external + last.end == data) {  // contiguous in the heap
      last.end += bytes;
      return;
    }
  }
  link.segments.push_back(Segment{data, 0, bytes});
}

Status TcpTransport::append_frame(Link& link, const tcp::Frame& frame,
                                  std::span<const std::byte> metadata,
                                  std::span<const std::byte> payload) {
  tcp::Frame sized = frame;
  sized.metadata = metadata;
  const size_t prefix = tcp::frame_prefix_bytes(sized);
  // The buffer is reused: cleared once everything queued is sent, so no allocation per call in
  // steady state.
  const size_t at = link.out.size();
  link.out.resize(at + prefix + metadata.size() + payload.size());
  auto written =
      tcp::encode_frame_prefix(sized, payload.size(), std::span(link.out).subspan(at, prefix));
  if (!written.ok()) {
    link.out.resize(at);
    return written.status();
  }
  if (!metadata.empty())
    std::memcpy(link.out.data() + at + prefix, metadata.data(), metadata.size());
  if (!payload.empty())
    std::memcpy(link.out.data() + at + prefix + metadata.size(), payload.data(), payload.size());
  append_owned(link, at, link.out.size() - at);
  pending_io_ = true;
  return {};
}

Status TcpTransport::append_native_frame(Link& link, const tcp::Frame& frame,
                                         std::span<const std::byte> metadata, uint64_t fingerprint,
                                         const std::vector<codec::NativeSpan>& spans,
                                         uint64_t total, bool gather) {
  tcp::Frame sized = frame;
  sized.metadata = metadata;
  sized.encoding = tcp::PayloadEncoding::kNative;
  const size_t prefix = tcp::frame_prefix_bytes(sized);
  const uint64_t payload = tcp::kNativeFingerprintBytes + total;
  const size_t at = link.out.size();
  const size_t owned = prefix + metadata.size() + tcp::kNativeFingerprintBytes;
  link.out.resize(at + owned + (gather ? 0 : total));
  auto written = tcp::encode_frame_prefix(sized, payload, std::span(link.out).subspan(at, prefix));
  if (!written.ok()) {
    link.out.resize(at);
    return written.status();
  }
  std::byte* cursor = link.out.data() + at + prefix;
  if (!metadata.empty()) std::memcpy(cursor, metadata.data(), metadata.size());
  cursor += metadata.size();
  std::memcpy(cursor, &fingerprint, sizeof(fingerprint));  // little-endian hosts (frame.h)
  cursor += sizeof(fingerprint);
  if (!gather) {
    for (const codec::NativeSpan& span : spans) {
      std::memcpy(cursor, span.data, span.size);
      cursor += span.size;
    }
    append_owned(link, at, owned + total);
  } else {
    append_owned(link, at, owned);
    for (const codec::NativeSpan& span : spans) append_external(link, span.data, span.size);
  }
  pending_io_ = true;
  return {};
}

bool TcpTransport::flush_link(Link& link) {
  if (link.state != Link::State::kOpen || link.queued() == 0) return false;
  bool did_work = false;
  while (link.segment_head < link.segments.size()) {
    iovecs_.clear();
    for (size_t i = link.segment_head; i < link.segments.size() && iovecs_.size() < kMaxIovecs;
         ++i) {
      const Segment& segment = link.segments[i];
      const std::byte* base = segment.external != nullptr ? segment.external : link.out.data();
      iovecs_.push_back(
          iovec{const_cast<std::byte*>(base + segment.begin), segment.end - segment.begin});
    }
    msghdr message{};
    message.msg_iov = iovecs_.data();
    message.msg_iovlen = iovecs_.size();
    const ssize_t sent = ::sendmsg(link.socket.get(), &message, MSG_NOSIGNAL | MSG_DONTWAIT);
    counters_.send_syscalls.fetch_add(1, std::memory_order_relaxed);
    if (sent < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      close_link(link, "send: " + errno_text(errno));
      return true;
    }
    did_work = true;
    counters_.bytes_sent.fetch_add(static_cast<uint64_t>(sent), std::memory_order_relaxed);
    size_t left = static_cast<size_t>(sent);
    link.queued_bytes -= left;
    counters_.send_queue_bytes.fetch_sub(left, std::memory_order_relaxed);
    while (left > 0) {
      Segment& segment = link.segments[link.segment_head];
      const size_t take = std::min(left, segment.end - segment.begin);
      segment.begin += take;
      left -= take;
      if (segment.begin == segment.end) ++link.segment_head;
    }
  }
  if (link.segment_head == link.segments.size()) {
    link.segments.clear();
    link.segment_head = 0;
    link.out.clear();
    link.has_external = false;
  } else if (link.segments[link.segment_head].external == nullptr) {
    // Much of `out` is sent: move the rest to the front (owned segments shift with it).
    const size_t shift = link.segments[link.segment_head].begin;
    if (shift > (1u << 20) && shift > link.out.size() / 2) {
      link.out.erase(link.out.begin(), link.out.begin() + static_cast<ptrdiff_t>(shift));
      link.segments.erase(link.segments.begin(),
                          link.segments.begin() + static_cast<ptrdiff_t>(link.segment_head));
      link.segment_head = 0;
      for (Segment& segment : link.segments) {
        if (segment.external != nullptr) continue;
        segment.begin -= shift;
        segment.end -= shift;
      }
    }
  }
  return did_work;
}

void TcpTransport::settle(Link& link) {
  if (link.has_external && link.segment_head < link.segments.size()) {
    // The socket did not take everything this round: the heap spans left are copied (their app
    // may change or free them once the round is over), with the rest of the queue, in order.
    std::vector<std::byte> rest;
    rest.reserve(link.queued_bytes);
    uint64_t copied = 0;
    for (size_t i = link.segment_head; i < link.segments.size(); ++i) {
      const Segment& segment = link.segments[i];
      const std::byte* base = segment.external != nullptr ? segment.external : link.out.data();
      rest.insert(rest.end(), base + segment.begin, base + segment.end);
      if (segment.external != nullptr) ++copied;
    }
    counters_.gather_segments_copied.fetch_add(copied, std::memory_order_relaxed);
    link.out = std::move(rest);
    link.segments.clear();
    link.segment_head = 0;
    link.segments.push_back(Segment{nullptr, 0, link.out.size()});
  }
  link.has_external = false;
  link.pins.clear();
  run_releases(link);
}

void TcpTransport::run_releases(Link& link) {
  for (DeferredRelease& release : link.releases)
    core_.reply_done(release.server, release.delivery, std::move(release.pinned));
  link.releases.clear();
}

bool TcpTransport::read_link(Link& link) {
  if (link.state != Link::State::kOpen) return false;
  // The runtime flags a readable socket after a sleep, in every spinning round and, while busy,
  // only every event_check_interval: a link with calls under way is read every busy round
  // instead (one recv), so replies and pipelined requests do not wait for the next event check.
  // Not in a round right after an event check, though: there an unflagged link had nothing (a
  // recv would be a syscall for EAGAIN; at one call in flight that was one per wake-up).
  const bool flagged = link.readable.exchange(false, std::memory_order_acq_rel);
  if (!flagged) {
    if (core_.runtime->events_fresh() || (link.calls.size() == 0 && link.serving == 0))
      return false;
    if (link.cold && ++link.cold_rounds < kColdLinkReadRounds) return false;
    link.cold_rounds = 0;
  }
  bool did_work = false;
  tcp::FrameParser parser;
  for (;;) {
    // Room for one more chunk after what is unparsed. The buffer keeps its size (its capacity):
    // bytes are moved to the front when needed, and it grows (zero-filling only the growth) only
    // for a frame bigger than what it holds, so a read costs no memset.
    if (link.in_start == link.in_end) link.in_start = link.in_end = 0;
    if (link.in.size() - link.in_end < kReadChunk) {
      if (link.in_start > 0) {
        std::memmove(link.in.data(), link.in.data() + link.in_start, link.in_end - link.in_start);
        link.in_end -= link.in_start;
        link.in_start = 0;
      }
      if (link.in.size() - link.in_end < kReadChunk) link.in.resize(link.in_end + kReadChunk);
    }
    const size_t room = link.in.size() - link.in_end;
    const ssize_t got = ::recv(link.socket.get(), link.in.data() + link.in_end, room, MSG_DONTWAIT);
    counters_.recv_syscalls.fetch_add(1, std::memory_order_relaxed);
    if (got <= 0) {
      if (got < 0 && errno == EINTR) continue;
      if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        counters_.recv_empty.fetch_add(1, std::memory_order_relaxed);
        if (!flagged && !did_work) link.cold = true;
        break;
      }
      close_link(link, got == 0 ? std::string("the peer closed the connection")
                                : "recv: " + errno_text(errno));
      return true;
    }
    did_work = true;
    if (!flagged) link.cold = false;
    link.last_heard = core_.clock.now();
    link.in_end += static_cast<size_t>(got);
    counters_.bytes_received.fetch_add(static_cast<uint64_t>(got), std::memory_order_relaxed);
    // Every whole frame received so far.
    while (link.state == Link::State::kOpen) {
      auto parsed =
          parser.parse(std::span(link.in.data() + link.in_start, link.in_end - link.in_start));
      if (!parsed.ok()) {
        counters_.bad_frames.fetch_add(1, std::memory_order_relaxed);
        close_link(link, "malformed frame: " + parsed.status().to_string());
        return true;
      }
      if (!parsed->complete) break;
      handle_frame(link, parsed->frame);
      link.in_start += parsed->needed;
    }
    if (link.state != Link::State::kOpen) return true;
    if (static_cast<size_t>(got) < room) break;  // drained
  }
  return did_work;
}

void TcpTransport::close_link(Link& link, std::string reason) {
  if (link.state == Link::State::kClosed) return;
  link.state = Link::State::kClosed;
  link.close_reason = std::move(reason);
  spdlog::warn("tcp: link {} peer {} ({}) closed: {}", link.outgoing ? "to" : "from", link.peer,
               link.peer_host.empty() ? "no hello" : link.peer_host, link.close_reason);
  pending_io_ = true;  // teardown in this round
}

void TcpTransport::teardown(Link& link) {
  counters_.send_queue_bytes.fetch_sub(link.queued(), std::memory_order_relaxed);
  if (link.watched) core_.runtime->unwatch(link.socket.get());
  link.watched = false;
  link.socket.reset();
  link.pins.clear();
  run_releases(link);  // the servers may free those responses: nothing will send them now
  const std::string why =
      fmt::format("the connection to peer daemon {} was lost: {}", link.peer, link.close_reason);
  link.calls.for_each([&](SlotHandle handle, OutCall& call) {
    RpcPtr rpc = std::move(call.rpc);
    link.calls.erase(handle);
    counters_.calls_failed_on_link_loss.fetch_add(1, std::memory_order_relaxed);
    fail_out_call(std::move(rpc), Status(StatusCode::kUnavailable, why));
  });
  if (link.outgoing && link.peer_index < peer_links_.size() &&
      peer_links_[link.peer_index] == link.handle) {
    peer_links_[link.peer_index] = kNoSlotHandle;
    PeerState& peer = peer_state_[link.peer_index];
    peer.backoff = peer.backoff.count() == 0
                       ? Nanos(limits::kTcpReconnectBackoffMin)
                       : std::min<Nanos>(2 * peer.backoff, limits::kTcpReconnectBackoffMax);
    peer.retry_at = core_.clock.now() + peer.backoff.count();
    peer.last_error = link.close_reason;
  }
  counters_.links_closed.fetch_add(1, std::memory_order_relaxed);
  counters_.links_open.fetch_sub(1, std::memory_order_relaxed);
  // Calls this link delivered to local apps keep their records until the apps reply (reply_here
  // finds the link gone and only ends the record) or their deadlines pass.
}

void TcpTransport::close_all(const char* reason) {
  links_.for_each([&](SlotHandle handle, std::unique_ptr<Link>& link) {
    close_link(*link, reason);
    teardown(*link);
    links_.erase(handle);
  });
}

// ---- frames ----

void TcpTransport::handle_frame(Link& link, const tcp::Frame& frame) {
  // A link's first frame is the peer's hello, naming its host (policies read it as
  // rpc.caller.host, and "" means this host's apps): a frame before it, or a hello without a
  // host, closes the link; a later hello changes nothing. The name is the peer's own claim: the
  // network between daemons is trusted (no authentication yet).
  if (frame.kind != tcp::FrameKind::kHello && link.peer_host.empty()) {
    counters_.bad_frames.fetch_add(1, std::memory_order_relaxed);
    close_link(link, fmt::format("a frame of kind {} before the peer's hello",
                                 static_cast<int>(frame.kind)));
    return;
  }
  switch (frame.kind) {
    case tcp::FrameKind::kHello:
      if (!link.peer_host.empty()) return;
      if (frame.caller_host.empty()) {
        counters_.bad_frames.fetch_add(1, std::memory_order_relaxed);
        close_link(link, "a hello without a host name");
        return;
      }
      link.peer_host = std::string(frame.caller_host);
      if (link.outgoing && link.peer_index < peer_state_.size())
        peer_state_[link.peer_index] = PeerState{};  // the peer is back: no backoff
      return;
    case tcp::FrameKind::kRequest:
      return handle_request(link, frame);
    case tcp::FrameKind::kReply:
      return handle_reply(link, frame);
    case tcp::FrameKind::kCancel: {
      // The caller gave up: the call ends here too, and the serving app is told
      // (kIncomingCancelled); its late reply is dropped.
      auto served = link.served.find(frame.call_id);
      if (served == link.served.end()) return;
      const SlotHandle call = served->second;  // finish_call forgets it (served_call_ended)
      if (core_.call(call) == nullptr) {
        link.served.erase(served);
        return;
      }
      counters_.calls_cancelled_by_peer.fetch_add(1, std::memory_order_relaxed);
      core_.finish_call(call,
                        Status(StatusCode::kCancelled, "the caller's daemon cancelled the call"),
                        shm::kNoOffset);
      return;
    }
    case tcp::FrameKind::kPing: {
      tcp::Frame pong;
      pong.kind = tcp::FrameKind::kPong;
      pong.call_id = frame.call_id;
      (void)append_frame(link, pong, {}, {});
      return;
    }
    case tcp::FrameKind::kPong:
      return;
    case tcp::FrameKind::kSchemaOffer:
    case tcp::FrameKind::kSchemaAnswer:
      return handle_schema(link, frame);
  }
}

// ---- the schema handshake ----

uint64_t service_fingerprint(const RegisteredService& service) {
  // FNV-1a over the method names, then the layout fingerprints mixed in.
  uint64_t hash = 0xcbf29ce484222325ull;
  auto mix = [&hash](uint64_t value) {
    for (int i = 0; i < 8; ++i) {
      hash ^= (value >> (8 * i)) & 0xff;
      hash *= 0x100000001b3ull;
    }
  };
  for (const MethodInfo& method : service.info->methods) {
    for (char c : method.name) {
      hash ^= static_cast<uint8_t>(c);
      hash *= 0x100000001b3ull;
    }
    mix(method.input->fingerprint());
    mix(method.output->fingerprint());
  }
  return hash == 0 ? 1 : hash;
}

void TcpTransport::send_schema(Link& link, tcp::FrameKind kind, std::string_view service,
                               uint64_t fingerprint) {
  tcp::Frame frame;
  frame.kind = kind;
  frame.service = service;
  frame.call_id = fingerprint;
  (void)append_frame(link, frame, {}, {});
}

void TcpTransport::handle_schema(Link& link, const tcp::Frame& frame) {
  const uint32_t service_id = find_service(frame.service);
  const RegisteredService* service = service_id == 0 ? nullptr : core_.registry.find(service_id);
  const uint64_t ours = service == nullptr ? 0 : service_fingerprint(*service);
  if (frame.kind == tcp::FrameKind::kSchemaOffer) {
    // A peer's caller side asks: answer with ours (0: not registered here).
    if (ours != 0 && frame.call_id != ours &&
        shared_.first_time(fmt::format("serve {} {}", frame.service, link.peer_host)))
      spdlog::info(
          "tcp: host {} calls {} with another schema (fingerprint {:#x}, ours {:#x}): "
          "its calls come in the protobuf wire encoding",
          link.peer_host, frame.service, frame.call_id, ours);
    send_schema(link, tcp::FrameKind::kSchemaAnswer, frame.service, ours);
    return;
  }
  // The answer to our offer (or news after a native request was refused).
  for (size_t i = 0; i < link.wire.size(); ++i) {
    ServiceWire& wire = link.wire[i];
    if (wire.name != frame.service) continue;
    if (frame.call_id == 0) {
      // Not registered there (now): ask again on the next call.
      link.wire.erase(link.wire.begin() + static_cast<ptrdiff_t>(i));
      return;
    }
    if (frame.call_id == wire.fingerprint) {
      wire.state = ServiceWire::State::kNative;
      return;
    }
    wire.state = ServiceWire::State::kProtobuf;
    counters_.schema_mismatches.fetch_add(1, std::memory_order_relaxed);
    if (shared_.first_time(fmt::format("call {} {}", frame.service, link.peer)))
      spdlog::info(
          "tcp: {} at peer {} ({}) has another schema (fingerprint {:#x}, ours {:#x}): "
          "calls to it use the protobuf wire encoding",
          frame.service, link.peer, link.peer_host, frame.call_id, wire.fingerprint);
    return;
  }
}

tcp::PayloadEncoding TcpTransport::choose_encoding(Link& link, const RegisteredService& service,
                                                   const RemoteService& remote) {
  switch (remote.encoding) {
    case RemoteServiceConfig::Encoding::kProtobuf:
      return tcp::PayloadEncoding::kProtobuf;
    case RemoteServiceConfig::Encoding::kNative:
      return tcp::PayloadEncoding::kNative;
    case RemoteServiceConfig::Encoding::kAuto:
      break;
  }
  for (const ServiceWire& wire : link.wire) {
    if (wire.service_id != service.id) continue;
    return wire.state == ServiceWire::State::kNative ? tcp::PayloadEncoding::kNative
                                                     : tcp::PayloadEncoding::kProtobuf;
  }
  // The link's first call of the service: offer our fingerprint; protobuf (understood whatever
  // the peer's schema) until the answer comes.
  if (link.wire.size() >= limits::kMaxRegisteredServices) link.wire.clear();
  std::erase_if(link.wire, [&](const ServiceWire& old) {
    return old.name == service.full_name;  // an earlier registration of the name
  });
  ServiceWire wire;
  wire.service_id = service.id;
  wire.name = service.full_name;
  wire.fingerprint = service_fingerprint(service);
  send_schema(link, tcp::FrameKind::kSchemaOffer, wire.name, wire.fingerprint);
  counters_.schema_offers_sent.fetch_add(1, std::memory_order_relaxed);
  link.wire.push_back(std::move(wire));
  return tcp::PayloadEncoding::kProtobuf;
}

uint32_t TcpTransport::find_service(std::string_view name) {
  for (auto& [cached_name, id] : service_cache_) {
    if (cached_name != name) continue;
    const RegisteredService* service = core_.registry.find(id);
    if (service != nullptr && service->full_name == name) return id;
    break;  // dropped since: look again
  }
  uint32_t found = 0;
  core_.registry.for_each([&](const RegisteredService& service) {
    if (found == 0 && service.full_name == name) found = service.id;
  });
  if (found != 0) {
    std::erase_if(service_cache_, [&](const auto& entry) { return entry.first == name; });
    if (service_cache_.size() >= 64) service_cache_.erase(service_cache_.begin());
    service_cache_.emplace_back(std::string(name), found);
  }
  return found;
}

void TcpTransport::send_error_reply(Link& link, uint64_t call_id, const Status& status) {
  tcp::Frame reply;
  reply.kind = tcp::FrameKind::kReply;
  reply.call_id = call_id;
  reply.status_code = static_cast<uint32_t>(status.code());
  const std::string& text = status.message();
  reply.status_text = std::string_view(text).substr(
      0, std::min<size_t>(text.size(), limits::kMaxTcpStatusTextBytes));
  (void)append_frame(link, reply, {}, {});
}

void TcpTransport::handle_request(Link& link, const tcp::Frame& frame) {
  counters_.calls_served.fetch_add(1, std::memory_order_relaxed);
  auto refuse = [&](StatusCode code, std::string text) {
    send_error_reply(link, frame.call_id, Status(code, std::move(text)));
  };
  if (core_.draining) return refuse(StatusCode::kUnavailable, "the peer daemon is stopping");
  uint32_t service_id = find_service(frame.service);
  const RegisteredService* service = service_id == 0 ? nullptr : core_.registry.find(service_id);
  if (service != nullptr && service->servers.empty()) {
    core_.refresh_service(service_id);  // this shard's view may lag by one hand-off
    service = core_.registry.find(service_id);
  }
  if (service == nullptr || service->servers.empty())
    return refuse(StatusCode::kUnavailable,
                  fmt::format("no app serves {} on host {}", frame.service, shared_.host_name));
  if (frame.method_index >= service->info->methods.size())
    return refuse(StatusCode::kInvalidArgument,
                  fmt::format("{} has {} methods, not one at index {}", frame.service,
                              service->info->methods.size(), frame.method_index));
  std::span<const std::byte> body = frame.payload;
  if (frame.encoding == tcp::PayloadEncoding::kNative) {
    // Native bytes mean something only with our layouts: the sender's fingerprint must be ours.
    uint64_t theirs = 0;
    if (body.size() >= tcp::kNativeFingerprintBytes)
      std::memcpy(&theirs, body.data(), sizeof(theirs));
    const uint64_t ours = service_fingerprint(*service);
    if (body.size() < tcp::kNativeFingerprintBytes || theirs != ours) {
      counters_.native_refused.fetch_add(1, std::memory_order_relaxed);
      send_schema(link, tcp::FrameKind::kSchemaAnswer, frame.service, ours);
      return refuse(StatusCode::kFailedPrecondition,
                    fmt::format("a native request for {} with schema fingerprint {:#x}; host {} "
                                "serves it with fingerprint {:#x} (another schema: use the "
                                "protobuf encoding)",
                                frame.service, theirs, shared_.host_name, ours));
    }
    body = body.subspan(tcp::kNativeFingerprintBytes);
  }
  const MonoTime now = core_.clock.now();
  const uint64_t timeout = frame.timeout_ns != 0
                               ? frame.timeout_ns
                               : static_cast<uint64_t>(limits::kDefaultCallTimeout.count());
  const MonoTime deadline = now + static_cast<MonoTime>(std::min<uint64_t>(timeout, INT64_MAX / 4));
  CallRecord record;
  record.caller = link.id;
  record.app_call_id = frame.call_id;
  record.deadline = deadline;
  const SlotHandle call = core_.start_call(record);
  if (call == kNoSlotHandle)
    return refuse(StatusCode::kResourceExhausted, "the peer daemon's call table is full");
  auto has_room = [this](ConnectionId id) {
    if (!core_.is_local(id)) return true;  // its shard checks, and fails the call if full
    Connection* server = core_.connection(id);
    return server != nullptr && server->incoming.size() < server->incoming.max_entries();
  };
  const ConnectionId target = core_.registry.pick_server(service_id, has_room);
  if (target == kNoConnection) {
    core_.finish_call(call, Status(StatusCode::kResourceExhausted, "full"), shm::kNoOffset);
    return refuse(StatusCode::kResourceExhausted,
                  fmt::format("every app serving {} on host {} has max_calls_served calls it has "
                              "not answered",
                              frame.service, shared_.host_name));
  }
  RpcPtr rpc = make_rpc();
  rpc->call_id = call;
  rpc->caller_call_id = frame.call_id;
  rpc->connection = link.id;
  const std::string app_name = fmt::format("{}/{}", link.peer_host, frame.caller_app);
  if (last_identity_ == nullptr || last_identity_->app_name != app_name) {
    auto identity = std::make_shared<CallerIdentity>();
    identity->app_name = app_name;  // uid/gid/pid: not known across hosts (0)
    identity->host = link.peer_host;
    last_identity_ = std::move(identity);
  }
  rpc->caller = last_identity_;
  rpc->service_id = service_id;
  rpc->method_index = frame.method_index;
  rpc->deadline = deadline;
  rpc->priority = frame.priority;
  rpc->attempt = frame.attempt;
  rpc->request = MessageLocation{link.id, RegionKind::kHeap, 0};  // in the payload (below)
  rpc->peer_encoding = static_cast<uint8_t>(frame.encoding);
  auto payload = std::make_shared<PeerRequest>();
  payload->encoding = frame.encoding;
  payload->payload.assign(body.begin(), body.end());
  payload->metadata.assign(frame.metadata.begin(), frame.metadata.end());
  rpc->metadata_length = static_cast<uint32_t>(frame.metadata.size());
  rpc->peer_request = std::move(payload);
  rpc->endpoint.connection = target;
  ++link.serving;
  link.served[frame.call_id] = call;
  if (core_.is_local(target)) {
    Connection* server = core_.connection(target);
    MRPC_ASSERT(server != nullptr, "picked server {} is not a connection of shard {}", target,
                core_.shard);
    server->ingress->push_request(std::move(rpc));
  } else {
    ShardMessage message;
    message.kind = ShardMessage::Kind::kRequest;
    message.rpc = std::move(rpc);
    core_.send_to(shards::shard_of(target), std::move(message));
  }
}

void TcpTransport::handle_reply(Link& link, const tcp::Frame& frame) {
  OutCall* waiting = link.calls.find(frame.call_id);
  if (waiting == nullptr) return;  // swept (its caller gave up) or never ours
  RpcPtr rpc = std::move(waiting->rpc);
  link.calls.erase(frame.call_id);
  CallRecord* record = core_.call(rpc->call_id);
  Connection* caller = record == nullptr ? nullptr : core_.connection(record->caller);
  if (caller == nullptr) {
    core_.discard(std::move(rpc));
    return;
  }
  if (frame.status_code != 0) {
    rpc->status = Status(status_code_from_wire(frame.status_code),
                         fmt::format("from host {}: {}", link.peer_host, frame.status_text));
    rpc->response = MessageLocation{};
  } else {
    codec::CodecLimits limits;
    limits.max_message_bytes = core_.config.max_message_bytes;
    Expected<uint64_t> decoded = Status(StatusCode::kUnavailable, "the service was unregistered");
    auto codec = core_.codecs->codec(rpc->service_id, rpc->method_index, MessageSide::kResponse);
    const RegisteredService* service = core_.registry.find(rpc->service_id);
    if (!codec.ok() || service == nullptr) {
      decoded = codec.ok() ? decoded : codec.status();
    } else if (frame.encoding == tcp::PayloadEncoding::kNative) {
      // Sent in our layouts only if the peer checked our fingerprint; checked again here.
      uint64_t theirs = 0;
      if (frame.payload.size() >= tcp::kNativeFingerprintBytes)
        std::memcpy(&theirs, frame.payload.data(), sizeof(theirs));
      const uint64_t ours = service_fingerprint(*service);
      decoded =
          theirs != ours || frame.payload.size() < tcp::kNativeFingerprintBytes
              ? Expected<uint64_t>(Status(
                    StatusCode::kFailedPrecondition,
                    fmt::format("a native reply with schema fingerprint {:#x}, ours is {:#x}",
                                theirs, ours)))
              : (*codec)->decode_native(frame.payload.subspan(tcp::kNativeFingerprintBytes),
                                        caller->receive_view(), *caller->receive_allocator, limits);
    } else {
      decoded = (*codec)->decode_wire(frame.payload, caller->receive_view(),
                                      *caller->receive_allocator, limits);
    }
    caller->report_receive_usage();
    if (decoded.ok()) {
      rpc->response = MessageLocation{caller->id, RegionKind::kReceive, *decoded};
    } else {
      rpc->status = Status(decoded.status().code(),
                           fmt::format("the response from host {} does not decode: {}",
                                       link.peer_host, decoded.status().message()));
      rpc->response = MessageLocation{};
    }
  }
  caller->egress->push_reply(std::move(rpc));
}

void TcpTransport::fail_out_call(RpcPtr rpc, Status status) {
  CallRecord* record = core_.call(rpc->call_id);
  Connection* caller = record == nullptr ? nullptr : core_.connection(record->caller);
  if (caller == nullptr) {
    core_.discard(std::move(rpc));
    return;
  }
  rpc->status = std::move(status);
  rpc->response = MessageLocation{};
  caller->egress->push_reply(std::move(rpc));
}

// ---- caller side ----

RpcPtr TcpTransport::route(Connection& caller, const RegisteredService& service, RpcPtr rpc) {
  const RemoteService* remote = nullptr;
  bool cached = false;
  for (const auto& [id, peers] : remote_cache_) {
    if (id == service.id) {
      remote = peers;
      cached = true;
      break;
    }
  }
  if (!cached) {
    remote = shared_.resolver->resolve(service.full_name);
    if (remote_cache_.size() >= limits::kMaxRegisteredServices) remote_cache_.clear();
    remote_cache_.emplace_back(service.id, remote);
  }
  if (remote == nullptr || remote->peers.empty()) return rpc;
  auto fail = [&](StatusCode code, std::string text) {
    rpc->status = Status(code, std::move(text));
    caller.egress->push_reply(std::move(rpc));
    return RpcPtr();
  };
  // Round robin over the peers whose link is usable (not broken, room in its queue and table).
  Link* link = nullptr;
  const size_t count = remote->peers.size();
  const MonoTime now = core_.clock.now();
  size_t full = 0;
  const PeerState* backing_off = nullptr;
  for (size_t tried = 0; tried < count && link == nullptr; ++tried) {
    const PeerAddress& peer = *remote->peers[next_peer_++ % count];
    if (links_.find(peer_links_[peer.index]) == nullptr && now < peer_state_[peer.index].retry_at) {
      backing_off = &peer_state_[peer.index];  // its last link failed: not yet
      continue;
    }
    Link* candidate = link_to(peer);
    if (candidate == nullptr || candidate->state == Link::State::kClosed) continue;
    if (candidate->queued() >= limits::kMaxTcpSendQueueBytes ||
        candidate->calls.size() >= candidate->calls.max_entries()) {
      ++full;
      continue;
    }
    link = candidate;
  }
  if (link == nullptr && full > 0) {
    counters_.calls_refused_queue_full.fetch_add(1, std::memory_order_relaxed);
    return fail(StatusCode::kResourceExhausted,
                fmt::format("every link to the peers serving {} is full ({} of {} peers: "
                            "kMaxTcpSendQueueBytes={} queued or kMaxTcpCallsPerConnection={} "
                            "calls waiting)",
                            service.full_name, full, count, limits::kMaxTcpSendQueueBytes,
                            limits::kMaxTcpCallsPerConnection));
  }
  if (link == nullptr) {
    if (backing_off != nullptr)
      counters_.calls_refused_backoff.fetch_add(1, std::memory_order_relaxed);
    return fail(StatusCode::kUnavailable,
                fmt::format("no peer daemon serving {} is reachable now ({} peer{}){}",
                            service.full_name, count, count == 1 ? "" : "s",
                            backing_off == nullptr
                                ? std::string()
                                : fmt::format("; the last link failed ({}), next try in {} ms",
                                              backing_off->last_error,
                                              (backing_off->retry_at - now) / 1'000'000)));
  }
  // Encode the request from the caller's heap (bounds-checked by the codec), or from the private
  // copy a policy checked (then those bytes, not the heap the app can still write, are sent).
  const ConstRegion request_source =
      rpc->request.region == RegionKind::kPrivate
          ? ConstRegion{rpc->request.private_copy->bytes.get(), rpc->request.private_copy->size}
          : caller.heap_view();
  auto codec = core_.codecs->codec(rpc->service_id, rpc->method_index, MessageSide::kRequest);
  if (!codec.ok()) return fail(StatusCode::kUnavailable, codec.status().message());
  codec::CodecLimits limits;
  limits.max_message_bytes = core_.config.max_message_bytes;
  const tcp::PayloadEncoding encoding = choose_encoding(*link, service, *remote);
  // Native: the encoder's spans of the caller's heap are sent from there (gathered by sendmsg);
  // a private copy a policy checked is copied into the frame (it dies with the RPC).
  const bool from_heap = rpc->request.region != RegionKind::kPrivate;
  Expected<std::span<const std::byte>> encoded = std::span<const std::byte>();
  uint64_t native_total = 0;
  if (encoding == tcp::PayloadEncoding::kNative) {
    native_spans_.clear();
    auto total =
        (*codec)->encode_native(request_source, rpc->request.offset, native_spans_, limits);
    if (!total.ok())
      return fail(total.status().code(),
                  "the request cannot be encoded for the peer: " + total.status().message());
    if (*total > limits::kMaxTcpFrameBytes)
      return fail(StatusCode::kResourceExhausted,
                  fmt::format("the request's native encoding ({} bytes) is past "
                              "kMaxTcpFrameBytes={}",
                              *total, limits::kMaxTcpFrameBytes));
    native_total = *total;
  } else {
    if (scratch_.empty()) scratch_.resize(64 << 10);
    uint64_t needed = 0;
    encoded = (*codec)->encode_wire(request_source, rpc->request.offset, scratch_, limits, &needed);
    if (!encoded.ok() && encoded.status().code() == StatusCode::kOutOfRange &&
        needed <= limits::kMaxTcpFrameBytes) {
      scratch_.resize(needed);
      encoded =
          (*codec)->encode_wire(request_source, rpc->request.offset, scratch_, limits, &needed);
    }
    if (!encoded.ok())
      return fail(encoded.status().code() == StatusCode::kOutOfRange
                      ? StatusCode::kResourceExhausted
                      : encoded.status().code(),
                  "the request cannot be encoded for the peer: " + encoded.status().message());
  }
  std::span<const std::byte> metadata;
  if (rpc->metadata_length > 0) {
    const ConstRegion heap = caller.heap_view();
    if (!rpc->metadata_block.present() || rpc->metadata_block.offset > heap.size ||
        heap.size - rpc->metadata_block.offset < rpc->metadata_length)
      return fail(StatusCode::kInvalidArgument,
                  fmt::format("the metadata block ({} bytes at {}) is outside the heap ({} bytes)",
                              rpc->metadata_length, rpc->metadata_block.offset, heap.size));
    metadata = std::span(heap.base + rpc->metadata_block.offset, rpc->metadata_length);
  }
  if (!rpc->metadata.empty()) {
    // Entries set by operators on the way (or the whole of it, taken out of the heap by a policy
    // that read it): merged into one block, an operator's entry replacing the app's of its key.
    auto pairs = shm::decode_metadata(metadata.data(), metadata.size(), 0, metadata.size());
    if (!pairs.ok())
      return fail(StatusCode::kInvalidArgument, "bad metadata block: " + pairs.status().message());
    std::erase_if(*pairs,
                  [&](const auto& pair) { return rpc->find_metadata(pair.first) != nullptr; });
    for (const auto& added : rpc->metadata) pairs->emplace_back(added.key, added.value);
    metadata_scratch_.resize(shm::metadata_block_bytes(*pairs));
    auto written = shm::encode_metadata(*pairs, metadata_scratch_);
    if (!written.ok()) return fail(written.status().code(), written.status().message());
    metadata = std::span<const std::byte>(metadata_scratch_.data(), *written);
  }
  const SlotHandle slot = link->calls.insert(OutCall{});
  MRPC_ASSERT(slot != kNoSlotHandle, "link call table full after the check");
  tcp::Frame frame;
  frame.kind = tcp::FrameKind::kRequest;
  frame.flags = rpc->wait_for_ready ? tcp::kFlagWaitForReady : 0;
  frame.call_id = slot;
  frame.timeout_ns = rpc->deadline == kNoDeadline
                         ? 0
                         : static_cast<uint64_t>(std::max<MonoTime>(1, rpc->deadline - now));
  frame.attempt = rpc->attempt;
  frame.method_index = rpc->method_index;
  frame.encoding = encoding;
  frame.priority = rpc->priority;
  frame.caller_host = shared_.host_name;
  frame.caller_app =
      rpc->caller != nullptr ? std::string_view(rpc->caller->app_name) : std::string_view();
  if (frame.caller_app.size() > limits::kMaxTcpHostNameBytes)
    frame.caller_app = frame.caller_app.substr(0, limits::kMaxTcpHostNameBytes);
  frame.service = service.full_name;
  Status appended;
  if (encoding == tcp::PayloadEncoding::kNative) {
    if (from_heap) {
      std::shared_ptr<const void> pin = core_.pin(caller.id);
      if (link->pins.empty() || link->pins.back() != pin) link->pins.push_back(std::move(pin));
    }
    appended = append_native_frame(*link, frame, metadata, service_fingerprint(service),
                                   native_spans_, native_total, from_heap);
  } else {
    appended = append_frame(*link, frame, metadata, *encoded);
  }
  if (!appended.ok()) {
    link->calls.erase(slot);
    return fail(appended.code(), "the request does not fit a frame: " + appended.message());
  }
  counters_.calls_sent.fetch_add(1, std::memory_order_relaxed);
  (encoding == tcp::PayloadEncoding::kNative ? counters_.requests_sent_native
                                             : counters_.requests_sent_protobuf)
      .fetch_add(1, std::memory_order_relaxed);
  link->calls.find(slot)->rpc = std::move(rpc);
  return RpcPtr();
}

// ---- callee side: the reply ----

void TcpTransport::served_call_ended(ConnectionId link_id, uint64_t peer_call_id) {
  auto* entry = links_.find(remote_ids::link_of(link_id));
  Link* link = entry == nullptr ? nullptr : entry->get();
  if (link != nullptr && link->served.erase(peer_call_id) > 0 && link->serving > 0) --link->serving;
}

void TcpTransport::reply_here(RpcPtr rpc) {
  auto* entry = links_.find(remote_ids::link_of(rpc->connection));
  Link* link = entry == nullptr ? nullptr : entry->get();
  const bool call_alive = core_.call(rpc->call_id) != nullptr;
  const bool heap_response = rpc->response.present() && rpc->response.region == RegionKind::kHeap;
  // A response a policy at this (the callee's) daemon checked travels from its private copy.
  const bool private_response =
      rpc->response.present() && rpc->response.region == RegionKind::kPrivate;
  const ConnectionId server_id = rpc->response.owner;
  bool released = false;  // reply_done deferred to the end of the round (native gather)
  if (link != nullptr && link->state == Link::State::kOpen && call_alive) {
    Status status = rpc->status;
    bool sent = false;
    if (status.ok() && (heap_response || private_response)) {
      const Connection* server = core_.memory_of(*rpc, server_id);
      auto codec = core_.codecs->codec(rpc->service_id, rpc->method_index, MessageSide::kResponse);
      if (server == nullptr && heap_response) {
        status = Status(StatusCode::kUnavailable, "the serving app left before its reply was read");
      } else if (!codec.ok()) {
        status = Status(StatusCode::kUnavailable, "the service was unregistered during the call");
      } else {
        codec::CodecLimits limits;
        limits.max_message_bytes = core_.config.max_message_bytes;
        const ConstRegion source = private_response
                                       ? ConstRegion{rpc->response.private_copy->bytes.get(),
                                                     rpc->response.private_copy->size}
                                       : server->heap_view();
        tcp::Frame reply;
        reply.kind = tcp::FrameKind::kReply;
        reply.call_id = rpc->caller_call_id;
        const RegisteredService* service = core_.registry.find(rpc->service_id);
        if (rpc->peer_encoding == static_cast<uint8_t>(tcp::PayloadEncoding::kNative) &&
            service != nullptr) {
          // The request came native (its fingerprint was ours): so does the reply, gathered from
          // the server's heap, which the server may reuse only after the round (releases).
          native_spans_.clear();
          auto total = (*codec)->encode_native(source, rpc->response.offset, native_spans_, limits);
          if (total.ok() && *total > limits::kMaxTcpFrameBytes)
            total = Status(StatusCode::kResourceExhausted,
                           fmt::format("the response's native encoding ({} bytes) is past "
                                       "kMaxTcpFrameBytes={}",
                                       *total, limits::kMaxTcpFrameBytes));
          if (total.ok()) {
            Status appended = append_native_frame(*link, reply, {}, service_fingerprint(*service),
                                                  native_spans_, *total, heap_response);
            sent = appended.ok();
            if (!sent) status = appended;
            if (sent && heap_response) {
              std::shared_ptr<const void> pinned = std::move(rpc->pinned_memory);
              if (pinned == nullptr) pinned = core_.pin(server_id);
              link->releases.push_back(
                  DeferredRelease{server_id, rpc->delivery_id, std::move(pinned)});
              released = true;
            }
            if (sent) counters_.replies_sent_native.fetch_add(1, std::memory_order_relaxed);
          } else {
            status = Status(total.status().code(),
                            "bad response from the server: " + total.status().message());
          }
        } else {
          if (scratch_.empty()) scratch_.resize(64 << 10);
          uint64_t needed = 0;
          auto encoded =
              (*codec)->encode_wire(source, rpc->response.offset, scratch_, limits, &needed);
          if (!encoded.ok() && encoded.status().code() == StatusCode::kOutOfRange &&
              needed <= limits::kMaxTcpFrameBytes) {
            scratch_.resize(needed);
            encoded =
                (*codec)->encode_wire(source, rpc->response.offset, scratch_, limits, &needed);
          }
          if (encoded.ok()) {
            reply.encoding = tcp::PayloadEncoding::kProtobuf;
            Status appended = append_frame(*link, reply, {}, *encoded);
            sent = appended.ok();
            if (!sent) status = appended;
          } else {
            status = Status(encoded.status().code(),
                            "bad response from the server: " + encoded.status().message());
          }
        }
      }
    } else if (status.ok()) {
      status = Status(StatusCode::kInternal, "a reply without a response");
    }
    if (!sent) send_error_reply(*link, rpc->caller_call_id, status);
  }
  if (heap_response && !released)
    core_.reply_done(server_id, rpc->delivery_id, std::move(rpc->pinned_memory));
  rpc->response = MessageLocation{};
  if (call_alive) core_.finish_call(rpc->call_id, rpc->status, shm::kNoOffset);
}

// ---- the task ----

void TcpTransport::sweep() {
  const MonoTime now = core_.clock.now();
  links_.for_each([&](SlotHandle, std::unique_ptr<Link>& link) {
    // Keepalive, for every open link, idle or not: a silent peer (a partition) is found before
    // the next call is sent into it, and the calls waiting on it fail.
    if (link->state == Link::State::kOpen) {
      MonoTime silent = now - link->last_heard;
      if (silent >= limits::kTcpKeepaliveTimeout.count()) {
        // This thread's own stall (a long round, a stopped or starved process) must not count
        // against the peer: what arrived while it was away is read before the peer is judged.
        link->readable.store(true, std::memory_order_relaxed);
        (void)read_link(*link);
        if (link->state != Link::State::kOpen) return;  // the read found it closed or bad
        silent = core_.clock.now() - link->last_heard;
      }
      if (silent >= limits::kTcpKeepaliveTimeout.count()) {
        counters_.keepalive_timeouts.fetch_add(1, std::memory_order_relaxed);
        close_link(*link, fmt::format("no frame from the peer for {} ms with {} calls waiting "
                                      "and {} being served (kTcpKeepaliveTimeout)",
                                      silent / 1'000'000, link->calls.size(), link->serving));
        return;
      }
      if (silent >= limits::kTcpKeepaliveInterval.count() &&
          now - link->ping_sent >= limits::kTcpKeepaliveInterval.count()) {
        tcp::Frame ping;
        ping.kind = tcp::FrameKind::kPing;
        ping.call_id = ++link->pings;
        (void)append_frame(*link, ping, {}, {});
        link->ping_sent = now;
        counters_.pings_sent.fetch_add(1, std::memory_order_relaxed);
      }
    }
    link->calls.for_each([&](SlotHandle handle, OutCall& call) {
      if (call.rpc == nullptr || core_.call(call.rpc->call_id) != nullptr) return;
      core_.discard(std::move(call.rpc));
      link->calls.erase(handle);
      if (link->state == Link::State::kOpen) {
        tcp::Frame cancel;
        cancel.kind = tcp::FrameKind::kCancel;
        cancel.call_id = handle;
        (void)append_frame(*link, cancel, {}, {});
      }
    });
  });
}

bool TcpTransport::run() {
  bool did_work = accept_links();
  const MonoTime now = core_.clock.now();
  if (now >= next_sweep_) {
    next_sweep_ = now + kSweepInterval.count();
    sweep();
  }
  bool pending = false;
  links_.for_each([&](SlotHandle handle, std::unique_ptr<Link>& entry) {
    Link& link = *entry;
    if (link.state == Link::State::kConnecting) check_connect(link);
    did_work |= read_link(link);
    did_work |= flush_link(link);
    settle(link);
    if (link.state == Link::State::kClosed) {
      teardown(link);
      links_.erase(handle);
      did_work = true;
      return;
    }
    pending |= link.state == Link::State::kConnecting || link.queued() > 0;
  });
  pending_io_ = pending;
  return did_work;
}

MonoTime TcpTransport::next_timer() const {
  if (pending_io_) return core_.clock.now() + kPendingIoRecheck.count();
  MonoTime earliest = kNoDeadline;
  if (links_.size() > 0) earliest = next_sweep_;
  return earliest;
}

bool TcpTransport::prepare_to_sleep() {
  return true;
}

// ---- decoding a peer's request (AppFrontend's delivery, a policy at the callee) ----

Expected<uint64_t> decode_peer_request(DaemonCore& core, const Rpc& rpc, Connection& callee,
                                       uint64_t* bytes) {
  const PeerRequest* peer = rpc.peer_request.get();
  MRPC_ASSERT(peer != nullptr, "call {}: decoding a peer's request it does not carry", rpc.call_id);
  codec::CodecLimits limits;
  limits.max_message_bytes = core.config.max_message_bytes;
  auto codec = core.codecs->codec(rpc.service_id, rpc.method_index, MessageSide::kRequest);
  if (!codec.ok()) return codec.status();
  const uint64_t used_before = callee.receive_allocator->used_bytes();
  auto decoded = peer->encoding == tcp::PayloadEncoding::kNative
                     ? (*codec)->decode_native(peer->payload, callee.receive_view(),
                                               *callee.receive_allocator, limits)
                     : (*codec)->decode_wire(peer->payload, callee.receive_view(),
                                             *callee.receive_allocator, limits);
  if (!decoded.ok())
    return Status(decoded.status().code(),
                  "the request from the peer does not decode: " + decoded.status().message());
  if (bytes != nullptr) *bytes = callee.receive_allocator->used_bytes() - used_before;
  return *decoded;
}

// ---- the listener ----

Expected<shm::UniqueFd> listen_tcp(const std::string& address, uint16_t* port) {
  auto parsed = parse_peer_address(address);
  if (!parsed.ok()) return parsed.status();
  const int fd = ::socket(parsed->address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return Status(StatusCode::kUnavailable, fmt::format("tcp socket: {}", errno_text(errno)));
  shm::UniqueFd socket(fd);
  const int one = 1;
  (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&parsed->address), parsed->length) != 0)
    return Status(StatusCode::kUnavailable,
                  fmt::format("tcp bind {}: {}", address, errno_text(errno)));
  if (::listen(fd, 128) != 0)
    return Status(StatusCode::kUnavailable,
                  fmt::format("tcp listen {}: {}", address, errno_text(errno)));
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  (void)::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length);
  if (port != nullptr)
    *port = ntohs(bound.ss_family == AF_INET
                      ? reinterpret_cast<const sockaddr_in*>(&bound)->sin_port
                      : reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port);
  return socket;
}

}  // namespace mrpc
