// ShmChannel, its completion thread: the loop, sleeping, draining the completion ring, ending
// calls (kCallDone, deadlines), control messages and deferred completions.
#include "shm_channel.h"

#include <poll.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cstring>
#include <exception>

#include <fmt/format.h>

#include "mrpc/base/check.h"
#include "mrpc/base/limits.h"
#include "mrpc/client/receive_lease.h"
#include "mrpc/message/shm_heap.h"
#include "mrpc/transports/shm/app_socket.h"
#include "mrpc/transports/shm/metadata_block.h"
#include "mrpc/transports/shm/protocol.h"

namespace mrpc::client {

namespace {

// Entries taken off the completion ring per pass.
constexpr uint32_t kCompletionBatch = 64;
// How soon to retry submissions queued behind a full ring (the daemon does not ring us when it
// frees submission slots).
constexpr std::chrono::nanoseconds kOverflowRetry = std::chrono::milliseconds(1);

// Gives one receive-region block back to mrpcd with a quiet kRelease. `leased`: run by a
// ReceiveLease (maybe on an app thread, while the completion thread sleeps), counted in
// Connection::blocks_leased(), which bounds that thread's sleep while any is held.
struct ReleaseBlock {
  std::shared_ptr<Connection> connection;
  uint64_t offset;
  bool leased;

  void operator()() const {
    if (connection->alive()) {  // else the daemon that owned the block is gone
      shm::RingEntry released = shm::make_ring_entry(shm::EntryKind::kRelease, 0);
      released.message_offset = offset;
      connection->submit_quiet(released);
    }
    if (leased) connection->block_returned();  // after the post: see blocks_leased()
  }
};

}  // namespace

// ---- Completion thread ----

void ShmChannel::completion_loop() {
  completion_thread_channel = this;
  MonoTime idle_since = clock_.now();
  MonoTime last_socket_check = idle_since;
  const auto spin_budget = options_.spin_budget.value_or(limits::kDefaultSpinBudget).count();
  std::shared_ptr<Connection> connection;  // current_, copied when it changes (only here)
  // While the app holds response blocks or awaits kReplyDone: how long the next sleep may last (
  // limits::kHeldBlockRecheckMax); doubles after each sleep that bound ended, reset by work.
  std::chrono::nanoseconds held_recheck = limits::kQuietEntryNoticeDelay;
  for (;;) {
    // Whether to sleep after this pass, and until when.
    bool sleep_after = false;
    MonoTime sleep_until = kNoDeadline;
    {
      if (stopping_.load(std::memory_order_acquire)) return;
      if (connection.get() != current_.get()) connection = current_;
      if (!connection) {
        run_deferred();
        fire_deadlines();
        if (options_.reconnect && clock_.now() >= reconnect_at_) {
          try_reconnect();
        } else {
          sleep_after = true;
          sleep_until =
              options_.reconnect ? std::min(reconnect_at_, next_deadline()) : next_deadline();
        }
      } else {
        bool worked = drain_completions(connection);
        worked |= run_deferred();
        worked |= fire_deadlines();
        const bool overflow = connection->flush_overflow();
        const MonoTime now = clock_.now();
        if (now - last_socket_check >= limits::kAppSocketCheckInterval.count()) {
          last_socket_check = now;
          if (!read_control(connection, /*wait=*/false)) connection->mark_lost();
          retire_old_connections();
        }
        if (!connection->alive()) {
          handle_loss(connection, Status(StatusCode::kUnavailable, "mrpcd closed the app socket"));
        } else if (worked) {
          idle_since = now;
          held_recheck = limits::kQuietEntryNoticeDelay;
        } else if (now - idle_since < spin_budget) {
          sched_yield();  // spin, but let a runnable thread on this core (often a peer) go first
        } else {
          // Idle: releases posted quietly are announced once they have waited long enough.
          // Read before quiet_since: blocks still held may be released (quietly, on an app
          // thread, ringing nothing) while this thread sleeps, so it then wakes on a timer.
          const bool blocks_held = connection->blocks_leased() != 0;
          const MonoTime quiet_since = connection->quiet_since();
          const MonoTime notice_at =
              quiet_since == 0 ? kNoDeadline
                               : saturating_add(quiet_since, limits::kQuietEntryNoticeDelay);
          if (now >= notice_at) {
            connection->notice_quiet();
          } else if (connection->completions().prepare_to_sleep()) {
            sleep_after = true;
            sleep_until = std::min(next_deadline(), notice_at);
            // mrpcd posts kReplyDone without a doorbell: read after the announcement above.
            const bool replies_pending = connection->responses_awaiting_done() != 0;
            if ((quiet_since == 0 && blocks_held) || replies_pending) {
              sleep_until = std::min(sleep_until, saturating_add(now, held_recheck));
              held_recheck = std::min(held_recheck * 2, limits::kHeldBlockRecheckMax);
            }
            if (overflow) sleep_until = std::min(sleep_until, saturating_add(now, kOverflowRetry));
          }
          if (!sleep_after) idle_since = clock_.now();
        }
      }
    }
    if (delete_after_pass_) {
      // The app dropped its last reference in a callback of this pass (release_last_reference):
      // destroyed here, where nothing of it is in use; the destructor detaches this thread.
      delete this;
      return;
    }
    if (!sleep_after) continue;
    if (!connection) {
      sleep(nullptr, sleep_until);
      continue;
    }
    sleep(connection, sleep_until);
    connection->completions().finish_sleep();
    last_socket_check = 0;  // look at the socket now: it may be why we woke
    idle_since = clock_.now();
  }
}

MonoTime ShmChannel::next_deadline() {
  Connection* connection = current();
  return connection == nullptr ? kNoDeadline : connection->calls().earliest_deadline();
}

void ShmChannel::sleep(const std::shared_ptr<Connection>& connection, MonoTime until) {
  if (connection) {
    // Announced before the re-check: a call published from now on with an earlier deadline
    // rings wake_ (CallTable::publish), or this sees its deadline.
    connection->calls().set_sleeping_until(until);
    until = std::min(until, connection->calls().earliest_deadline());
  }
  if (deferred_count_.load(std::memory_order_acquire) != 0) until = 0;
  pollfd fds[3] = {{wake_.fd(), POLLIN, 0}, {-1, POLLIN, 0}, {-1, POLLIN, 0}};
  if (connection) {
    fds[1].fd = connection->completion_doorbell().fd();
    fds[2].fd = connection->socket_fd();
  }
  int timeout_ms = -1;
  if (until != kNoDeadline) {
    const MonoTime left = std::max<MonoTime>(until - clock_.now(), 0);
    timeout_ms = static_cast<int>(std::min<MonoTime>((left + 999'999) / 1'000'000, INT32_MAX));
  }
  const int ready = stopping_.load() ? 0 : ::poll(fds, 3, timeout_ms);
  if (connection) connection->calls().set_sleeping_until(INT64_MIN);
  // Only a doorbell that was rung is read (a read of a quiet eventfd is a wasted syscall).
  if (ready < 0 || (fds[0].revents & POLLIN) != 0) wake_.drain();
  if (connection && (ready < 0 || (fds[1].revents & POLLIN) != 0))
    connection->completion_doorbell().drain();
}

bool ShmChannel::drain_completions(const std::shared_ptr<Connection>& connection) {
  shm::RingEntry batch[kCompletionBatch];
  auto popped = connection->completions().pop_batch(batch);
  if (!popped) {
    connection->mark_lost();
    return true;
  }
  for (uint32_t i = 0; i < *popped; ++i) {
    const shm::RingEntry& entry = batch[i];
    switch (entry.kind) {
      case shm::EntryKind::kCallDone:
        on_call_done(connection, entry);
        break;
      case shm::EntryKind::kReplyDone:
        connection->reply_done(entry.call_id);
        break;
      case shm::EntryKind::kIncomingCall:
        on_incoming_call(connection, entry);
        break;
      case shm::EntryKind::kIncomingCancelled:
        connection->cancel_incoming(entry.call_id);
        break;
      default:
        break;  // not ours to handle; nothing to release
    }
  }
  return *popped > 0;
}

std::string ShmChannel::take_call_detail(const std::shared_ptr<Connection>& connection,
                                         const shm::RingEntry& entry) {
  if (entry.detail_offset == shm::kNoOffset) return {};
  std::string detail;
  const uint64_t length = std::min<uint64_t>(entry.detail_length, limits::kMaxStatusDetailBytes);
  if (entry.detail_offset <= connection->receive_bytes() &&
      length <= connection->receive_bytes() - entry.detail_offset) {
    detail.assign(reinterpret_cast<const char*>(connection->receive_base() + entry.detail_offset),
                  length);
  }
  // The text was copied out: its block goes back to the daemon at once.
  shm::RingEntry released = shm::make_ring_entry(shm::EntryKind::kRelease, 0);
  released.message_offset = entry.detail_offset;
  connection->submit_quiet(released);
  return detail;
}

void ShmChannel::on_call_done(const std::shared_ptr<Connection>& connection,
                              const shm::RingEntry& entry) {
  const StatusCode code = status_code_from_wire(entry.status);
  const bool has_response = code == StatusCode::kOk && entry.message_offset != shm::kNoOffset &&
                            entry.message_offset < connection->receive_bytes();
  // No doorbell: the daemon needs the block back only eventually (Connection::submit_quiet).
  const ReleaseBlock release{connection, entry.message_offset, /*leased=*/false};

  UntypedCompletion done;
  if (auto retired = connection->calls().retire(entry.call_id)) {
    done = std::move(retired->done);
    if (retired->heap != nullptr) (void)retired->heap->free_message(retired->request_root);
  }
  if (!done && code == StatusCode::kOk) {
    // Ended already (deadline, cancel) or unknown: nobody will read the response.
    if (entry.message_offset != shm::kNoOffset) release();
    return;
  }
  if (code != StatusCode::kOk) {
    std::string detail = take_call_detail(connection, entry);
    if (done) done(Status(code, std::move(detail)), ReceivedMessage());
    return;
  }
  if (!has_response) {
    if (entry.message_offset != shm::kNoOffset) release();
    done(Status(StatusCode::kInternal, "mrpcd ended the call OK without a valid response"),
         ReceivedMessage());
    return;
  }
  MessageRef response{const_cast<std::byte*>(connection->receive_base()),
                      connection->receive_bytes(), entry.message_offset, nullptr};
  // The lease's control block comes from the channel's pool: no allocation once it has grown.
  connection->block_leased();
  done(Status(), ReceivedMessage(response, std::allocate_shared<ReceiveLease>(
                                               BlockAllocator<ReceiveLease>(lease_pool_),
                                               ReleaseBlock{connection, entry.message_offset,
                                                            /*leased=*/true})));
}

bool ShmChannel::read_control(const std::shared_ptr<Connection>& connection, bool wait) {
  for (;;) {
    pollfd ready{connection->socket_fd(), POLLIN, 0};
    if (::poll(&ready, 1, wait ? -1 : 0) <= 0) return true;
    if ((ready.revents & (POLLIN | POLLHUP | POLLERR)) == 0) return true;
    wire::DaemonMessage message;
    auto fds = shm::receive_message(connection->socket_fd(), message, 0);
    if (!fds) return fds.status().code() == StatusCode::kDeadlineExceeded;
    if (message.has_refused()) return false;
    dispatch_control(message);
  }
}

void ShmChannel::dispatch_control(const wire::DaemonMessage& message) {
  if (!message.has_service_registered()) return;
  std::shared_ptr<std::promise<wire::ServiceRegistered>> waiting;
  {
    std::lock_guard lock(registry_mutex_);
    auto it = registrations_.find(message.service_registered().request_id());
    if (it == registrations_.end()) return;
    waiting = std::move(it->second);
    registrations_.erase(it);
  }
  waiting->set_value(message.service_registered());
}

bool ShmChannel::run_deferred() {
  if (deferred_count_.load(std::memory_order_acquire) == 0) return false;
  std::deque<std::function<void()>> work;
  {
    std::lock_guard lock(deferred_mutex_);
    work.swap(deferred_);
    deferred_count_.store(0, std::memory_order_release);
  }
  for (auto& item : work) item();
  return !work.empty();
}

bool ShmChannel::fire_deadlines() {
  Connection* connection = current();
  if (connection == nullptr) return false;
  expired_.clear();
  connection->calls().take_expired(clock_.now(), expired_);  // no lock unless one is due
  if (expired_.empty()) return false;
  // The daemon enforces the same deadline; the cancel makes sure it lets go of the request even
  // if its clock disagrees. Its kCallDone frees the request and the slot.
  for (const auto& [id, done] : expired_)
    connection->submit(shm::make_ring_entry(shm::EntryKind::kCancel, id));
  for (auto& [id, done] : expired_) {
    done(Status(StatusCode::kDeadlineExceeded, "the call passed its deadline"), ReceivedMessage());
  }
  expired_.clear();
  return true;
}

}  // namespace mrpc::client
