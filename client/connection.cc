#include "connection.h"

#include <sys/socket.h>

#include <atomic>

#include <fmt/format.h>

#include "mrpc/base/check.h"
#include "mrpc/base/limits.h"
#include "mrpc/base/slot_table.h"
#include "mrpc/transports/shm/app_socket.h"
#include "mrpc/transports/shm/protocol.h"

namespace mrpc::client {

namespace {
// Welcome's fds, in order.
enum WelcomeFd { kHeapFd, kReceiveFd, kRingsFd, kAppToDaemonFd, kDaemonToAppFd, kWelcomeFds };
}  // namespace

OwnedSchema OwnedSchema::copy_of(const ServiceSchema& schema) {
  OwnedSchema owned{std::string(schema.full_name), std::string(schema.file_descriptor_set), {}};
  for (std::string_view method : schema.methods) owned.methods.emplace_back(method);
  return owned;
}

Expected<std::shared_ptr<Connection>> Connection::open(const std::string& socket_path,
                                                       const std::string& app_name,
                                                       uint32_t first_generation) {
  auto socket = shm::connect_app_socket(socket_path);
  if (!socket) return socket.status();
  MRPC_TRY_STATUS(shm::set_receive_timeout(socket->get(), limits::kAppControlReplyTimeout));

  wire::AppMessage hello;
  hello.mutable_hello()->set_protocol_version(shm::kProtocolVersion);
  hello.mutable_hello()->set_app_name(app_name);
  MRPC_TRY_STATUS(shm::send_message(socket->get(), hello));

  wire::DaemonMessage answer;
  auto fds = shm::receive_message(socket->get(), answer, kWelcomeFds);
  if (!fds) {
    if (fds.status().code() == StatusCode::kDeadlineExceeded) {
      return Status(StatusCode::kUnavailable,
                    fmt::format("mrpcd at {} did not answer Hello within {} ms", socket_path,
                                limits::kAppControlReplyTimeout.count() / 1'000'000));
    }
    return Status(fds.status().code(), fmt::format("handshake with mrpcd at {}: {}", socket_path,
                                                   fds.status().message()));
  }
  if (answer.has_refused()) {
    return Status(StatusCode::kFailedPrecondition,
                  fmt::format("mrpcd (protocol version {}) refused the connection: {}",
                              answer.refused().protocol_version(), answer.refused().reason()));
  }
  if (!answer.has_welcome()) {
    return Status(StatusCode::kInvalidArgument,
                  "mrpcd answered Hello with neither Welcome nor Refused");
  }
  const wire::Welcome& welcome = answer.welcome();
  if (welcome.protocol_version() != shm::kProtocolVersion) {
    return Status(StatusCode::kFailedPrecondition,
                  fmt::format("mrpcd speaks protocol version {}, this library {}",
                              welcome.protocol_version(), shm::kProtocolVersion));
  }
  if (fds->size() != kWelcomeFds) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("Welcome carried {} fds, expected {}", fds->size(), kWelcomeFds));
  }
  if (welcome.max_calls_served() == 0 ||
      welcome.max_calls_served() > limits::kMaxCallsServedAccepted) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("Welcome's max_calls_served {} is outside [1, {}]",
                              welcome.max_calls_served(), limits::kMaxCallsServedAccepted));
  }
  if (welcome.max_calls_in_flight() == 0 ||
      welcome.max_calls_in_flight() > limits::kMaxCallsInFlightAccepted) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("Welcome's max_calls_in_flight {} is outside [1, {}]",
                              welcome.max_calls_in_flight(), limits::kMaxCallsInFlightAccepted));
  }
  if (!shm::valid_ring_entries(welcome.ring_entries())) {
    return Status(
        StatusCode::kInvalidArgument,
        fmt::format("Welcome's ring_entries {} is not a power of two", welcome.ring_entries()));
  }

  std::shared_ptr<Connection> connection(new Connection());
  Connection& c = *connection;
  auto heap = shm::SharedRegion::attach(std::move((*fds)[kHeapFd]), welcome.heap_bytes(),
                                        shm::kFixedSizeSeals, shm::RegionAccess::kReadWrite);
  if (!heap) return Status(heap.status().code(), "heap region: " + heap.status().message());
  auto receive = shm::SharedRegion::attach(std::move((*fds)[kReceiveFd]), welcome.receive_bytes(),
                                           shm::kReceiveRegionSeals, shm::RegionAccess::kReadOnly);
  if (!receive)
    return Status(receive.status().code(), "receive region: " + receive.status().message());
  auto rings = shm::SharedRegion::attach(std::move((*fds)[kRingsFd]),
                                         shm::rings_region_bytes(welcome.ring_entries()),
                                         shm::kFixedSizeSeals, shm::RegionAccess::kReadWrite);
  if (!rings) return Status(rings.status().code(), "rings region: " + rings.status().message());

  c.socket_ = std::move(*socket);
  c.welcome_ = welcome;
  c.heap_region_ = std::move(*heap);
  c.receive_ = std::move(*receive);
  c.rings_ = std::move(*rings);
  c.app_to_daemon_ = shm::Doorbell(std::move((*fds)[kAppToDaemonFd]));
  c.daemon_to_app_ = shm::Doorbell(std::move((*fds)[kDaemonToAppFd]));
  c.heap_ = std::make_unique<ShmHeap>(c.heap_region_.data(), c.heap_region_.size());
  c.submissions_ = shm::SharedRingProducer(
      shm::submission_ring(c.rings_.data(), welcome.ring_entries()), &c.app_to_daemon_);
  c.completions_ = shm::RingConsumer(shm::completion_ring(c.rings_.data(), welcome.ring_entries()));
  c.calls_ = std::make_unique<CallTable>(welcome.max_calls_in_flight(), first_generation);
  static std::atomic<uint64_t> serials{0};
  c.serial_ = serials.fetch_add(1, std::memory_order_relaxed) + 1;
  return connection;
}

bool Connection::submit(const shm::RingEntry& entry) {
  return post(entry, /*quiet=*/false);
}

bool Connection::submit_quiet(const shm::RingEntry& entry) {
  return post(entry, /*quiet=*/true);
}

bool Connection::post(const shm::RingEntry& entry, bool quiet) {
  if (submissions_broken_.load(std::memory_order_acquire)) return false;
  // Entries wait in the overflow queue: this one goes behind them (a thread's entries stay in
  // order; so do another thread's that it learnt of, e.g. a cancel of this thread's call, since
  // the flag is set before the call's start returns).
  if (!overflow_pending_.load(std::memory_order_acquire)) {
    // Read before the push: a notice pending since before then covers only entries this push
    // now carries (see below).
    const MonoTime quiet_before = quiet_since_.load(std::memory_order_seq_cst);
    Status pushed = quiet ? submissions_.push_quiet(entry) : submissions_.push(entry);
    if (pushed.ok()) {
      if (!quiet) {
        // The push rang a sleeping daemon, or found it awake: either way it reads the quiet
        // entries posted before `quiet_before` was read. A quiet entry posted since then may have
        // left no time of its own (its compare-exchange from 0 fails while `quiet_before` is
        // there), and the daemon may have gone to sleep after taking this push: so once the
        // notice is cleared, a daemon that sleeps with entries in the ring is rung (review,
        // session 9: without it such an entry waited for the next loud one, a kRelease holding
        // its block). A quiet entry published after the tail is read here sets a notice of its
        // own (the clear came first). Not notify_if_sleeping(): a daemon that took this push and
        // went back to sleep on an empty ring would be rung for nothing.
        if (quiet_before != 0) {
          MonoTime expected = quiet_before;
          if (quiet_since_.compare_exchange_strong(expected, 0, std::memory_order_seq_cst))
            submissions_.notify_if_sleeping_on_entries();
        }
      } else {
        MonoTime none = 0;
        quiet_since_.compare_exchange_strong(none, MonotonicClock::instance().now(),
                                             std::memory_order_seq_cst);
      }
      return true;
    }
    if (pushed.code() != StatusCode::kResourceExhausted) {
      submissions_broken_.store(true, std::memory_order_release);
      return false;
    }
  }
  std::lock_guard lock(overflow_mutex_);
  overflow_.push_back(entry);
  overflow_pending_.store(true, std::memory_order_release);
  // The completion thread retries queued entries; it may be asleep on this doorbell.
  if (overflow_.size() == 1) (void)daemon_to_app_.ring();
  return true;
}

void Connection::notice_quiet() {
  if (submissions_broken_.load(std::memory_order_acquire)) return;
  MonoTime since = quiet_since_.load(std::memory_order_seq_cst);
  if (since == 0) return;
  // Cleared first: a quiet entry posted after this sets a fresh time (and is announced later);
  // one posted before is in the ring before the daemon's sleep check below.
  if (!quiet_since_.compare_exchange_strong(since, 0, std::memory_order_seq_cst)) return;
  submissions_.notify_if_sleeping();
}

bool Connection::flush_overflow() {
  if (!overflow_pending_.load(std::memory_order_acquire)) return false;
  std::lock_guard lock(overflow_mutex_);
  while (!overflow_.empty() && !submissions_broken_.load(std::memory_order_relaxed)) {
    Status pushed = submissions_.push(overflow_.front());
    if (pushed.code() == StatusCode::kResourceExhausted) break;
    if (!pushed.ok()) {
      submissions_broken_.store(true, std::memory_order_release);
      break;
    }
    overflow_.pop_front();
  }
  if (overflow_.empty()) overflow_pending_.store(false, std::memory_order_release);
  return !overflow_.empty() && !submissions_broken_.load(std::memory_order_relaxed);
}

void Connection::mark_lost() {
  std::lock_guard lock(replies_mutex_);
  alive_.store(false, std::memory_order_release);
  for (Incoming& incoming : incoming_) {
    if (incoming.call_id == 0) continue;
    if (incoming.cancelled) incoming.cancelled->store(true);
    if (incoming.response_root != shm::kNoOffset) (void)heap_->free_message(incoming.response_root);
    clear_incoming(incoming);
  }
  responses_awaiting_done_.store(0, std::memory_order_seq_cst);
}

void Connection::shut_down_socket() {
  ::shutdown(socket_.get(), SHUT_RDWR);
}

Connection::Incoming* Connection::find_incoming(uint64_t call_id) {
  const uint32_t slot = slot_of(call_id);
  if (slot >= incoming_.size() || incoming_[slot].call_id != call_id) return nullptr;
  return &incoming_[slot];
}

bool Connection::track_incoming(uint64_t call_id, std::shared_ptr<std::atomic<bool>> cancelled) {
  const uint32_t slot = slot_of(call_id);
  if (call_id == 0 || slot >= welcome_.max_calls_served()) return false;  // protocol.h
  std::lock_guard lock(replies_mutex_);
  if (!alive()) cancelled->store(true);
  // Grows to the highest slot seen (mrpcd takes a new slot only when none is free), on the
  // completion thread.
  if (slot >= incoming_.size())
    incoming_.resize(std::min<size_t>(std::max<size_t>(slot + 1, incoming_.size() * 2),
                                      welcome_.max_calls_served()));
  Incoming& incoming = incoming_[slot];
  if (incoming.response_root != shm::kNoOffset) {
    // The daemon gave the slot to a new call before the previous one's kReplyDone, which it
    // does not do (protocol.h): that response is no longer read.
    (void)heap_->free_message(incoming.response_root);
    responses_awaiting_done_.fetch_sub(1, std::memory_order_seq_cst);
  }
  incoming = Incoming{call_id, std::move(cancelled), shm::kNoOffset};
  return true;
}

void Connection::cancel_incoming(uint64_t call_id) {
  std::lock_guard lock(replies_mutex_);
  Incoming* incoming = find_incoming(call_id);
  if (incoming != nullptr && incoming->cancelled) incoming->cancelled->store(true);
}

void Connection::post_reply(const shm::RingEntry& reply, uint64_t response_root) {
  std::lock_guard lock(replies_mutex_);
  Incoming* incoming = find_incoming(reply.call_id);
  if (!alive()) {
    if (incoming != nullptr) clear_incoming(*incoming);
    if (response_root != shm::kNoOffset) (void)heap_->free_message(response_root);
    return;
  }
  uint64_t awaiting_before = 1;  // (no response: nothing awaits a kReplyDone)
  if (response_root == shm::kNoOffset) {
    if (incoming != nullptr) clear_incoming(*incoming);
  } else if (incoming != nullptr) {
    // Kept until kReplyDone (no allocation here: this may be an app thread).
    incoming->cancelled.reset();
    incoming->response_root = response_root;
    awaiting_before = responses_awaiting_done_.fetch_add(1, std::memory_order_seq_cst);
  } else {
    // Replies with a response come only from handlers, which run after track_incoming().
    MRPC_ASSERT(false, "a reply with a response to incoming call {:#x}, which is not tracked",
                reply.call_id);
  }
  submit(reply);
  // The first response awaiting kReplyDone, posted by a handler thread while the completion
  // thread sleeps without a bound (it saw none): wake it so it bounds its sleep. On the completion
  // thread itself (inline handlers) nothing is announced, so this rings nothing.
  if (awaiting_before == 0 && completions_.take_sleep_announcement()) (void)daemon_to_app_.ring();
}

void Connection::reply_done(uint64_t call_id) {
  std::lock_guard lock(replies_mutex_);
  Incoming* incoming = find_incoming(call_id);
  if (incoming == nullptr || incoming->response_root == shm::kNoOffset) return;
  (void)heap_->free_message(incoming->response_root);
  clear_incoming(*incoming);
  responses_awaiting_done_.fetch_sub(1, std::memory_order_seq_cst);
}

Status Connection::send_control(const wire::AppMessage& message) {
  std::lock_guard lock(send_mutex_);
  return shm::send_message(socket_.get(), message);
}

}  // namespace mrpc::client
