// ShmChannel, losing mrpcd and reconnecting: failing the calls of a lost connection, opening the
// next one with backoff, and destroying (unmapping) old connections nothing references.
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

Status lost_status(const Status& why) {
  return Status(StatusCode::kUnavailable, "lost the connection to mrpcd: " + why.message());
}

}  // namespace

void ShmChannel::retire_old_connections() {
  // Only this thread adds or removes connections: the size is read without the lock.
  if (connections_.size() <= 1) return;
  // Pairs with InsideGuard: a start_call that entered after this load reads the newest
  // connection (the old ones stopped being current before).
  if (callers_inside_.load(std::memory_order_seq_cst) != 0) return;
  std::vector<std::shared_ptr<Connection>> retired;
  {
    std::lock_guard lock(connection_mutex_);
    for (auto it = connections_.begin(); it + 1 < connections_.end();) {
      // Nothing else holds it (no lease, no incoming call) and no message lives in its heap.
      if (it->use_count() == 1 && (*it)->heap().live_messages() == 0) {
        retired.push_back(std::move(*it));
        it = connections_.erase(it);
      } else {
        ++it;
      }
    }
  }
  // Destroyed outside the lock: their regions are unmapped here.
}

ShmChannel::ShmChannel(ChannelOptions options) : options_(std::move(options)) {}

void ShmChannel::handle_loss(const std::shared_ptr<Connection>& connection, const Status& why) {
  std::vector<UntypedCompletion> failed;
  // Marked first: a call published after the pass below sees it and ends itself.
  connection->mark_lost();
  connection->calls().fail_all(failed, [](ShmHeap* heap, uint64_t request_root) {
    // The daemon is gone: nobody reads the request any more.
    if (heap != nullptr) (void)heap->free_message(request_root);
  });
  next_first_generation_ = connection->calls().max_generation() + 1;
  if (next_first_generation_ >= 0x7fffffffu) next_first_generation_ = 1;
  connection->shut_down_socket();
  {
    std::lock_guard lock(connection_mutex_);
    if (current_ == connection) {
      current_.reset();
      current_raw_.store(nullptr, std::memory_order_release);
    }
  }
  std::vector<std::shared_ptr<std::promise<wire::ServiceRegistered>>> registrations;
  {
    std::lock_guard lock(registry_mutex_);
    for (auto& [id, promise] : registrations_) registrations.push_back(std::move(promise));
    registrations_.clear();
  }
  for (auto& promise : registrations) {
    wire::ServiceRegistered answer;
    answer.set_status(static_cast<uint32_t>(StatusCode::kUnavailable));
    answer.set_detail("lost the connection to mrpcd");
    promise->set_value(answer);
  }
  const Status status = lost_status(why);
  for (auto& done : failed) done(status, ReceivedMessage());
  backoff_ = limits::kReconnectInitialBackoff;
  reconnect_at_ = saturating_add(clock_.now(), backoff_);
}

void ShmChannel::try_reconnect() {
  auto connection =
      Connection::open(options_.socket_path, options_.app_name, next_first_generation_);
  bool ok = connection.ok();
  if (ok) {
    install_connection(*connection);
    std::vector<std::shared_ptr<ServedService>> served;
    {
      std::lock_guard lock(registry_mutex_);
      for (const auto& [name, service] : served_) served.push_back(service);
    }
    for (const auto& service : served) {
      if (!register_served(*connection, service).ok()) {
        ok = false;
        break;
      }
    }
    if (!ok) handle_loss(*connection, Status(StatusCode::kUnavailable, "re-registration failed"));
  }
  if (!ok) {
    backoff_ = std::min<std::chrono::nanoseconds>(backoff_ * 2, limits::kReconnectMaxBackoff);
    reconnect_at_ = saturating_add(clock_.now(), backoff_);
  }
}

}  // namespace mrpc::client
