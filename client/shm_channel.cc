// ShmChannel, set-up, registration and starting calls (the other concerns: completions.cc,
// serving.cc, reconnection.cc).
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

}  // namespace

// ---- ShmChannel: set-up ----

ShmChannel::InsideGuard::InsideGuard(std::atomic<int>& count) : count_(count) {
  count_.fetch_add(1, std::memory_order_seq_cst);
}
ShmChannel::InsideGuard::~InsideGuard() {
  count_.fetch_sub(1, std::memory_order_release);
}

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
  // The deleter runs when the app drops its last reference, on whichever thread that is.
  std::shared_ptr<ShmChannel> channel(new ShmChannel(std::move(options)), [](ShmChannel* dropped) {
    dropped->release_last_reference();
  });
  channel->wake_ = std::move(*wake);
  channel->install_connection(std::move(*connection));
  channel->handlers_.start(channel->options_.handler_threads);
  channel->completion_thread_ = std::thread([raw = channel.get()] { raw->completion_loop(); });
  channel->completion_thread_id_ = channel->completion_thread_.get_id();
  // Named before connect returns (not from inside: a caller may look it up at once).
  pthread_setname_np(channel->completion_thread_.native_handle(), "mrpc-completion");
  return channel;
}

thread_local const ShmChannel* completion_thread_channel = nullptr;

void ShmChannel::release_last_reference() {
  if (completion_thread_channel == this) {
    // Inside a completion (or an inline handler) on this channel's own thread: destroying now
    // would free the object under the loop that runs the callback. The loop deletes it when the
    // pass ends.
    delete_after_pass_ = true;
    return;
  }
  delete this;  // joins the completion thread
}

ShmChannel::~ShmChannel() {
  stopping_.store(true);
  (void)wake_.ring();
  if (completion_thread_.joinable()) {
    if (completion_thread_.get_id() == std::this_thread::get_id()) {
      // Deleted by the completion loop at the end of a pass (release_last_reference): the loop
      // returns at once, touching nothing of this object.
      completion_thread_.detach();
    } else {
      completion_thread_.join();
    }
  }
  // Leases still held by the app keep Connections alive; the daemon must see the app leave now.
  // Losing the connections also marks every incoming call cancelled, so handlers still running
  // (one may wait for its cancellation, whose kIncomingCancelled the stopped completion thread
  // will never read) see is_cancelled() and return before the pool joins them.
  {
    std::lock_guard lock(connection_mutex_);
    for (const auto& connection : connections_) {
      connection->mark_lost();
      connection->shut_down_socket();
    }
  }
  handlers_.stop();
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

}  // namespace mrpc::client
