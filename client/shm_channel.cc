#include "shm_channel.h"

#include <poll.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
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

MonoTime saturating_add(MonoTime now, std::chrono::nanoseconds by) {
  if (by.count() <= 0) return now;
  return by.count() > kNoDeadline - now ? kNoDeadline : now + by.count();
}

std::string resolve_socket_path(const std::string& configured) {
  if (!configured.empty()) return configured;
  const char* from_env = std::getenv(shm::kAppSocketEnv);
  if (from_env != nullptr && *from_env != '\0') return from_env;
  return shm::kDefaultAppSocketPath;
}

// ChannelOptions::spin_budget, else $MRPC_SPIN_BUDGET_US, else limits::kDefaultSpinBudget.
Expected<std::chrono::nanoseconds> resolve_spin_budget(
    const std::optional<std::chrono::nanoseconds>& configured) {
  if (configured) {
    if (*configured < std::chrono::nanoseconds::zero() || *configured > limits::kMaxSpinBudget) {
      return Status(StatusCode::kInvalidArgument,
                    fmt::format("ChannelOptions::spin_budget {} ns is outside [0, {} ns]",
                                configured->count(), limits::kMaxSpinBudget.count()));
    }
    return *configured;
  }
  const char* from_env = std::getenv(kSpinBudgetEnv);
  if (from_env == nullptr || *from_env == '\0') return limits::kDefaultSpinBudget;
  const std::string_view text(from_env);
  uint64_t micros = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), micros);
  const auto max_micros =
      std::chrono::duration_cast<std::chrono::microseconds>(limits::kMaxSpinBudget).count();
  if (error != std::errc() || end != text.data() + text.size() ||
      micros > static_cast<uint64_t>(max_micros)) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("${}='{}' is not a whole number of microseconds in [0, {}]",
                              kSpinBudgetEnv, text, max_micros));
  }
  return std::chrono::nanoseconds(std::chrono::microseconds(micros));
}

Status lost_status(const Status& why) {
  return Status(StatusCode::kUnavailable, "lost the connection to mrpcd: " + why.message());
}

// A handler's view of the call it answers.
class IncomingContext final : public ServerContext {
 public:
  IncomingContext(const Metadata& metadata, MonoTime deadline, const std::atomic<bool>& cancelled,
                  ShmHeap& heap)
      : metadata_(metadata), deadline_(deadline), cancelled_(cancelled), heap_(heap) {}
  const Metadata& metadata() const override { return metadata_; }
  int64_t deadline() const override { return deadline_; }
  bool is_cancelled() const override { return cancelled_.load(std::memory_order_relaxed); }
  ShmHeap& heap() override { return heap_; }

 private:
  const Metadata& metadata_;
  MonoTime deadline_;
  const std::atomic<bool>& cancelled_;
  ShmHeap& heap_;
};

// One incoming call while its handler runs and until its request lease dies.
struct IncomingCall {
  std::shared_ptr<Connection> connection;
  uint64_t call_id = 0;  // the daemon's
  MonoTime deadline = kNoDeadline;
  Metadata metadata;
  std::shared_ptr<std::atomic<bool>> cancelled = std::make_shared<std::atomic<bool>>(false);
  shm::RingEntry reply{};  // written before the lease can die
  uint64_t response_root = shm::kNoOffset;
};

}  // namespace

// ---- WorkerPool ----

void WorkerPool::start(int threads) {
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back([this] {
      for (;;) {
        std::function<void()> work;
        {
          std::unique_lock lock(mutex_);
          ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
          if (queue_.empty()) return;
          work = std::move(queue_.front());
          queue_.pop_front();
        }
        work();
      }
    });
    pthread_setname_np(threads_.back().native_handle(), "mrpc-handler");
  }
}

void WorkerPool::post(std::function<void()> work) {
  MRPC_ASSERT(!threads_.empty(), "work posted to a pool without threads");
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(work));
  }
  ready_.notify_one();
}

void WorkerPool::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  ready_.notify_all();
  for (auto& thread : threads_) {
    if (thread.get_id() == std::this_thread::get_id()) {
      thread.detach();
    } else {
      thread.join();
    }
  }
  threads_.clear();
}

// ---- ShmChannel: set-up ----

ShmChannel::InsideGuard::InsideGuard(std::atomic<int>& count) : count_(count) {
  count_.fetch_add(1, std::memory_order_seq_cst);
}
ShmChannel::InsideGuard::~InsideGuard() {
  count_.fetch_sub(1, std::memory_order_release);
}

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

Expected<std::shared_ptr<ShmChannel>> ShmChannel::open(ChannelOptions options) {
  options.socket_path = resolve_socket_path(options.socket_path);
  if (options.handler_threads < 0) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("ChannelOptions::handler_threads is {}; 0 runs handlers inline",
                              options.handler_threads));
  }
  auto spin_budget = resolve_spin_budget(options.spin_budget);
  if (!spin_budget) return spin_budget.status();
  options.spin_budget = *spin_budget;
  auto wake = shm::Doorbell::create();
  if (!wake) return wake.status();
  auto connection = Connection::open(options.socket_path, options.app_name);
  if (!connection) return connection.status();
  auto channel = std::make_shared<ShmChannel>(std::move(options));
  channel->wake_ = std::move(*wake);
  channel->install_connection(std::move(*connection));
  channel->handlers_.start(channel->options_.handler_threads);
  channel->completion_thread_ = std::thread([raw = channel.get()] { raw->completion_loop(); });
  channel->completion_thread_id_ = channel->completion_thread_.get_id();
  // Named before connect returns (not from inside: a caller may look it up at once).
  pthread_setname_np(channel->completion_thread_.native_handle(), "mrpc-completion");
  return channel;
}

ShmChannel::~ShmChannel() {
  stopping_.store(true);
  (void)wake_.ring();
  if (completion_thread_.joinable()) {
    if (completion_thread_.get_id() == std::this_thread::get_id()) {
      // The last reference died on the completion thread (its loop held it across callbacks and
      // dropped it last): the loop returns, touching nothing of this object, once this is done.
      if (destroyed_flag_ != nullptr) *destroyed_flag_ = true;
      completion_thread_.detach();
    } else {
      completion_thread_.join();
    }
  }
  handlers_.stop();
  // Leases still held by the app keep Connections alive; the daemon must see the app leave now.
  {
    std::lock_guard lock(connection_mutex_);
    for (const auto& connection : connections_) {
      connection->mark_lost();
      connection->shut_down_socket();
    }
  }
  std::vector<UntypedCompletion> orphans;
  for (const auto& connection : connections_) {
    // Requests stay where they are: the heap goes with the Connection.
    connection->calls().fail_all(orphans, [](ShmHeap*, uint64_t) {});
  }
  for (auto& done : orphans) done(Status(StatusCode::kCancelled, "the channel was destroyed"), {});
  std::deque<std::function<void()>> deferred;
  {
    std::lock_guard lock(deferred_mutex_);
    deferred.swap(deferred_);
  }
  for (auto& work : deferred) work();
}

std::shared_ptr<Connection> ShmChannel::current_connection() {
  std::lock_guard lock(connection_mutex_);
  return current_;
}

void ShmChannel::install_connection(std::shared_ptr<Connection> connection) {
  {
    std::lock_guard lock(registry_mutex_);
    service_ids_.clear();
    served_by_id_.clear();
    ids_connection_ = connection.get();
  }
  std::lock_guard lock(connection_mutex_);
  current_ = connection;
  current_raw_.store(connection.get(), std::memory_order_release);
  latest_.store(connection.get(), std::memory_order_release);
  connections_.push_back(std::move(connection));
}

ShmHeap& ShmChannel::heap() {
  return latest_.load(std::memory_order_acquire)->heap();
}

bool ShmChannel::on_completion_thread() const {
  return !completion_thread_.joinable() || std::this_thread::get_id() == completion_thread_id_;
}

// ---- Registration ----

Expected<uint32_t> ShmChannel::register_service(const std::shared_ptr<Connection>& connection,
                                                const OwnedSchema& schema, bool serve) {
  // The completion thread reads the socket itself; other threads wait for it to.
  const bool read_here = on_completion_thread();
  auto promise = std::make_shared<std::promise<wire::ServiceRegistered>>();
  auto answer_future = promise->get_future();
  uint64_t request_id = 0;
  {
    std::lock_guard lock(registry_mutex_);
    request_id = next_request_id_++;
    if (!read_here) registrations_[request_id] = promise;
  }
  wire::AppMessage message;
  auto* request = message.mutable_register_service();
  request->set_request_id(request_id);
  request->set_file_descriptor_set(schema.file_descriptor_set);
  request->set_service(schema.full_name);
  request->set_serve(serve);
  Status sent = connection->send_control(message);

  wire::ServiceRegistered answer;
  if (!sent.ok()) {
    answer.set_status(static_cast<uint32_t>(StatusCode::kUnavailable));
    answer.set_detail(sent.message());
  } else if (read_here) {
    // Other control messages that arrive meanwhile are dispatched as usual.
    for (;;) {
      wire::DaemonMessage received;
      auto fds = shm::receive_message(connection->socket_fd(), received, 0);
      if (!fds) {
        if (fds.status().code() != StatusCode::kDeadlineExceeded) connection->mark_lost();
        answer.set_status(static_cast<uint32_t>(StatusCode::kUnavailable));
        answer.set_detail("no answer to RegisterService: " + fds.status().message());
        break;
      }
      if (received.has_service_registered() &&
          received.service_registered().request_id() == request_id) {
        answer = received.service_registered();
        break;
      }
      dispatch_control(received);
    }
  } else if (answer_future.wait_for(limits::kAppControlReplyTimeout) == std::future_status::ready) {
    answer = answer_future.get();
  } else {
    answer.set_status(static_cast<uint32_t>(StatusCode::kUnavailable));
    answer.set_detail("mrpcd did not answer RegisterService in time");
  }
  {
    std::lock_guard lock(registry_mutex_);
    registrations_.erase(request_id);
  }

  if (answer.status() != static_cast<uint32_t>(StatusCode::kOk)) {
    return Status(status_code_from_wire(answer.status()),
                  fmt::format("registering {}: {}", schema.full_name, answer.detail()));
  }
  const bool methods_agree = std::equal(schema.methods.begin(), schema.methods.end(),
                                        answer.methods().begin(), answer.methods().end());
  if (!methods_agree) {
    return Status(
        StatusCode::kFailedPrecondition,
        fmt::format("mrpcd's method list of {} differs from this app's ({} vs {} methods)",
                    schema.full_name, answer.methods_size(), schema.methods.size()));
  }
  return answer.service_id();
}

namespace {
// The service id this thread used last, by connection and name: a thread calling one service
// finds its id without the registry's lock or hash lookup.
struct LastServiceId {
  uint64_t connection_serial = 0;  // Connection::serial(); 0: empty
  uint32_t name_length = 0;
  char name[96];
  uint32_t id = 0;

  bool matches(uint64_t serial, std::string_view full_name) const {
    return connection_serial == serial && name_length == full_name.size() &&
           std::memcmp(name, full_name.data(), name_length) == 0;
  }
  void remember(uint64_t serial, std::string_view full_name, uint32_t service_id) {
    if (full_name.size() > sizeof(name)) return;
    connection_serial = serial;
    name_length = static_cast<uint32_t>(full_name.size());
    std::memcpy(name, full_name.data(), name_length);
    id = service_id;
  }
};
thread_local LastServiceId last_service_id;
}  // namespace

Expected<uint32_t> ShmChannel::service_id_for_call(Connection& connection,
                                                   const ServiceSchema& service) {
  if (last_service_id.matches(connection.serial(), service.full_name)) return last_service_id.id;
  {
    std::lock_guard lock(registry_mutex_);
    if (ids_connection_ == &connection) {
      auto it = service_ids_.find(service.full_name);
      if (it != service_ids_.end()) {
        last_service_id.remember(connection.serial(), service.full_name, it->second);
        return it->second;
      }
    }
  }
  std::shared_ptr<Connection> shared;
  {
    std::lock_guard lock(connection_mutex_);
    for (const auto& known : connections_)
      if (known.get() == &connection) shared = known;
  }
  auto id = register_service(shared, OwnedSchema::copy_of(service), /*serve=*/false);
  if (!id) return id.status();
  std::lock_guard lock(registry_mutex_);
  if (ids_connection_ == &connection) service_ids_.emplace(service.full_name, *id);
  last_service_id.remember(connection.serial(), service.full_name, *id);
  return id;
}

Status ShmChannel::register_served(const std::shared_ptr<Connection>& connection,
                                   const std::shared_ptr<ServedService>& served) {
  {
    std::lock_guard lock(registry_mutex_);
    ++serve_registrations_pending_;
  }
  auto id = register_service(connection, served->schema, /*serve=*/true);
  std::vector<std::pair<std::shared_ptr<Connection>, shm::RingEntry>> early;
  {
    std::lock_guard lock(registry_mutex_);
    if (id && ids_connection_ == connection.get()) {
      service_ids_.emplace(served->schema.full_name, *id);
      served_by_id_[*id] = served;
    }
    if (--serve_registrations_pending_ == 0) early.swap(early_incoming_);
  }
  // Calls that arrived before the registration was recorded: now their service is known (or,
  // if it failed, they are answered UNIMPLEMENTED as before).
  for (auto& [early_connection, entry] : early) on_incoming_call(early_connection, entry);
  if (!id) return id.status();
  return Status();
}

Status ShmChannel::serve(const ServiceSchema& service, std::vector<UntypedMethod> methods) {
  if (methods.size() != service.methods.size()) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("{} has {} methods, {} handlers given", service.full_name,
                              service.methods.size(), methods.size()));
  }
  auto served = std::make_shared<ServedService>(
      ServedService{OwnedSchema::copy_of(service), std::move(methods)});
  {
    std::lock_guard lock(registry_mutex_);
    served_[served->schema.full_name] = served;
  }
  auto connection = current_connection();
  if (!connection) {
    return Status(StatusCode::kUnavailable,
                  fmt::format("mrpcd is not connected; {} will be served after reconnection",
                              service.full_name));
  }
  return register_served(connection, served);
}

// ---- Calls ----

void ShmChannel::defer(std::function<void()> work) {
  {
    std::lock_guard lock(deferred_mutex_);
    deferred_.push_back(std::move(work));
    deferred_count_.store(deferred_.size(), std::memory_order_release);
  }
  (void)wake_.ring();
}

void ShmChannel::fail_call_later(UntypedCompletion done, Status status) {
  // std::function needs a copyable callable; the completion may be move-only.
  auto shared = std::make_shared<UntypedCompletion>(std::move(done));
  defer([shared, status = std::move(status)]() mutable {
    (*shared)(std::move(status), ReceivedMessage());
  });
}

CallId ShmChannel::start_call(const ServiceSchema& service, uint32_t method_index,
                              const MessageRef& request, const CallOptions& options,
                              UntypedCompletion done) {
  // Keeps the Connection this call reads from being retired meanwhile (retire_old_connections).
  const InsideGuard inside(callers_inside_);
  // Until the call is admitted below, its id is local: a call that fails before it reaches the
  // daemon never takes one of the daemon's call slots.
  CallId id = CallTable::kLocalOnly | next_local_id_.fetch_add(1, std::memory_order_relaxed);
  // From here the request is ours: every path below either sends it or frees it.
  auto free_request = [&request] {
    if (request.heap != nullptr && request.offset != kNoOffset) {
      (void)request.heap->free_message(request.offset);
    }
  };
  Status ready = sendable(request);
  if (!ready.ok()) {
    if (ready.code() == StatusCode::kResourceExhausted) free_request();
    fail_call_later(std::move(done), std::move(ready));
    return id;
  }
  Connection* connection = current();
  if (connection == nullptr || !connection->alive()) {
    free_request();
    fail_call_later(std::move(done),
                    Status(StatusCode::kUnavailable, "not connected to mrpcd (reconnecting)"));
    return id;
  }
  if (request.heap != &connection->heap()) {
    free_request();
    fail_call_later(std::move(done),
                    Status(StatusCode::kFailedPrecondition,
                           "the request was built in the heap of an earlier connection to mrpcd; "
                           "build it again in Channel::heap()"));
    return id;
  }
  if (method_index >= service.methods.size() || method_index > UINT16_MAX) {
    free_request();
    fail_call_later(std::move(done),
                    Status(StatusCode::kInvalidArgument,
                           fmt::format("{} has no method {}", service.full_name, method_index)));
    return id;
  }
  auto service_id = service_id_for_call(*connection, service);
  if (!service_id) {
    free_request();
    fail_call_later(std::move(done), service_id.status());
    return id;
  }

  shm::RingEntry entry = shm::make_ring_entry(shm::EntryKind::kCall, id);
  if (options.wait_for_ready) entry.flags = shm::kCallWaitForReady;  // mrpcd waits for a server
  entry.service_id = *service_id;
  entry.method_index = static_cast<uint16_t>(method_index);
  entry.message_offset = request.offset;
  if (!options.metadata.entries().empty()) {
    const auto& pairs = options.metadata.entries();
    Status valid = shm::check_metadata(pairs);
    const uint64_t bytes = shm::metadata_block_bytes(pairs);
    // The block lives in the request's arena: freeing the request frees it.
    const uint64_t at =
        valid.ok() ? request.heap->allocate(request.offset, bytes, 8, false) : kNoOffset;
    if (at == kNoOffset) {
      free_request();
      fail_call_later(std::move(done), valid.ok()
                                           ? Status(StatusCode::kResourceExhausted,
                                                    "no room in the heap for the call's metadata")
                                           : valid);
      return id;
    }
    auto written = shm::encode_metadata(pairs, std::span(request.base + at, bytes));
    MRPC_ASSERT(written.ok(), "{}", written.status().to_string());
    entry.metadata_offset = at;
    entry.metadata_length = static_cast<uint32_t>(bytes);
  }
  const MonoTime deadline =
      saturating_add(clock_.now(), options.timeout.value_or(limits::kDefaultCallTimeout));
  entry.deadline = deadline;

  CallTable& table = connection->calls();
  const CallId admitted = table.reserve();
  if (admitted == 0) {
    free_request();
    fail_call_later(
        std::move(done),
        Status(StatusCode::kResourceExhausted,
               fmt::format("{} calls in flight: mrpcd's max_calls_in_flight", table.slots())));
    return id;
  }
  entry.call_id = admitted;
  // The slot is filled before the daemon can answer; publishing it makes it claimable.
  const bool wake =
      table.publish(admitted, std::move(done), deadline, request.heap, request.offset);
  // The completion thread marks the connection lost before failing the calls in its table: a call
  // published after that pass ends here (whoever moves its slot to lost frees the request).
  if (!connection->alive()) {
    UntypedCompletion lost;
    bool free_it = false;
    table.abandon(admitted, lost, free_it);
    if (free_it) free_request();
    if (lost) {
      fail_call_later(std::move(lost),
                      Status(StatusCode::kUnavailable, "lost the connection to mrpcd"));
    }
    return admitted;
  }
  if (!connection->submit(entry)) {
    connection->mark_lost();
    (void)wake_.ring();  // the completion thread fails the call with the connection
  } else if (wake) {
    (void)wake_.ring();  // it sleeps past this call's deadline: the one re-arming wake-up
  }
  return admitted;
}

void ShmChannel::cancel(CallId call) {
  const InsideGuard inside(callers_inside_);
  Connection* connection = current();
  if (connection == nullptr) return;  // lost: every call of the old connection has ended
  UntypedCompletion done = connection->calls().claim(call);
  if (!done) return;
  // The daemon stops the call and answers kCallDone, which frees the request and the slot.
  connection->submit(shm::make_ring_entry(shm::EntryKind::kCancel, call));
  fail_call_later(std::move(done), Status(StatusCode::kCancelled, "the call was cancelled"));
}

// ---- Completion thread ----

void ShmChannel::completion_loop() {
  bool destroyed = false;
  destroyed_flag_ = &destroyed;
  const std::weak_ptr<ShmChannel> weak_self = weak_from_this();
  MonoTime idle_since = clock_.now();
  MonoTime last_socket_check = idle_since;
  const auto spin_budget = options_.spin_budget.value_or(limits::kDefaultSpinBudget).count();
  std::shared_ptr<Connection> connection;  // current_, copied when it changes (only here)
  for (;;) {
    // Whether to sleep after this pass, and until when; the sleep is outside the pass, where
    // the channel is not held (an app dropping its last reference then destroys it on its own
    // thread, which wakes and joins this one).
    bool sleep_after = false;
    MonoTime sleep_until = kNoDeadline;
    {
      // Held across this pass's callbacks: an app that drops its last reference in one destroys
      // the channel here, at the end of the pass, where nothing of it is used any more.
      std::shared_ptr<ShmChannel> self = weak_self.lock();
      if (!self || stopping_.load(std::memory_order_acquire)) return;
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
        } else if (now - idle_since < spin_budget) {
          sched_yield();  // spin, but let a runnable thread on this core (often a peer) go first
        } else {
          // Idle: releases posted quietly are announced once they have waited long enough.
          const MonoTime quiet_since = connection->quiet_since();
          const MonoTime notice_at =
              quiet_since == 0 ? kNoDeadline
                               : saturating_add(quiet_since, limits::kQuietEntryNoticeDelay);
          if (now >= notice_at) {
            connection->notice_quiet();
          } else if (connection->completions().prepare_to_sleep()) {
            sleep_after = true;
            sleep_until = std::min(next_deadline(), notice_at);
            if (overflow) sleep_until = std::min(sleep_until, saturating_add(now, kOverflowRetry));
          }
          if (!sleep_after) idle_since = clock_.now();
        }
      }
    }
    if (destroyed) return;  // the pass's reference was the last: the channel is gone
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
  if (!stopping_.load()) ::poll(fds, 3, timeout_ms);
  if (connection) connection->calls().set_sleeping_until(INT64_MIN);
  wake_.drain();
  if (connection) connection->completion_doorbell().drain();
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
  auto release = [connection, offset = entry.message_offset] {
    if (!connection->alive()) return;  // the daemon that owned the block is gone
    shm::RingEntry released = shm::make_ring_entry(shm::EntryKind::kRelease, 0);
    released.message_offset = offset;
    connection->submit_quiet(released);
  };

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
  done(Status(), ReceivedMessage(
                     response, std::allocate_shared<ReceiveLease>(
                                   LeaseAllocator<ReceiveLease>(lease_pool_), std::move(release))));
}

void ShmChannel::on_incoming_call(const std::shared_ptr<Connection>& connection,
                                  const shm::RingEntry& entry) {
  auto call = std::make_shared<IncomingCall>();
  call->connection = connection;
  call->call_id = entry.call_id;
  call->deadline = entry.deadline;
  call->reply = shm::make_ring_entry(shm::EntryKind::kReply, entry.call_id);
  auto reply_now = [&](Status status) {
    call->reply.status = static_cast<uint32_t>(status.code());
    connection->post_reply(call->reply, shm::kNoOffset);
  };

  std::shared_ptr<ServedService> served;
  {
    std::lock_guard lock(registry_mutex_);
    auto it = served_by_id_.find(entry.service_id);
    if (it != served_by_id_.end()) {
      served = it->second;
    } else if (serve_registrations_pending_ > 0) {
      early_incoming_.emplace_back(connection, entry);  // handled once the registration is in
      return;
    }
  }
  if (!served || entry.method_index >= served->methods.size()) {
    reply_now(Status(StatusCode::kUnimplemented, "this app does not serve that method"));
    return;
  }
  if (entry.message_offset >= connection->receive_bytes()) {
    reply_now(Status(StatusCode::kInvalidArgument, "request outside the receive region"));
    return;
  }
  auto metadata = shm::decode_metadata(connection->receive_base(), connection->receive_bytes(),
                                       entry.metadata_offset, entry.metadata_length);
  if (!metadata) {
    reply_now(metadata.status());
    return;
  }
  for (auto& [key, value] : *metadata) call->metadata.add(std::move(key), std::move(value));
  connection->track_incoming(call->call_id, call->cancelled);

  const uint64_t request_offset = entry.message_offset;
  const uint16_t method_index = entry.method_index;
  auto run_handler = [call, served, request_offset, method_index] {
    Connection& owner = *call->connection;
    // The kReply goes out when the last copy of the request dies (it releases the request).
    ReceivedMessage request(MessageRef{const_cast<std::byte*>(owner.receive_base()),
                                       owner.receive_bytes(), request_offset, nullptr},
                            std::make_shared<ReceiveLease>([call] {
                              call->connection->post_reply(call->reply, call->response_root);
                            }));
    const UntypedMethod& method = served->methods[method_index];
    ShmHeap& heap = owner.heap();
    Status status;
    if (call->cancelled->load()) {
      status = Status(StatusCode::kCancelled, "the call was cancelled before its handler ran");
    } else if (auto response = method.new_response(heap); !response) {
      status = response.status();
    } else {
      call->response_root = response->offset;
      IncomingContext context(call->metadata, call->deadline, *call->cancelled, heap);
      MessageRef response_ref = *response;
      try {
        status = method.handler(context, request, response_ref);
      } catch (const std::exception& error) {
        status = Status(StatusCode::kUnknown, fmt::format("the handler threw: {}", error.what()));
      } catch (...) {
        status = Status(StatusCode::kUnknown, "the handler threw");
      }
      if (status.ok()) status = sendable(*response);
      if (status.ok()) {
        call->reply.message_offset = response->offset;
      } else if (!status.message().empty()) {
        // The error text lives in the response's arena, freed with it on kReplyDone.
        const uint64_t length =
            std::min<uint64_t>(status.message().size(), limits::kMaxStatusDetailBytes);
        const uint64_t at = heap.allocate(response->offset, length, 1, false);
        if (at != kNoOffset) {
          std::memcpy(heap.base() + at, status.message().data(), length);
          call->reply.detail_offset = at;
          call->reply.detail_length = static_cast<uint32_t>(length);
        }
      }
    }
    call->reply.status = static_cast<uint32_t>(status.code());
  };
  if (options_.handler_threads == 0) {
    run_handler();  // inline: no hand-off; this completion thread waits for the handler
  } else {
    handlers_.post(std::move(run_handler));
  }
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
