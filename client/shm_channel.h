// ShmChannel: the Channel implementation of libmrpc over the shared-memory transport.
//
// Threads:
//  - any app thread: start_call, cancel, serve, heap (the call table, the registry and the
//    submission ring each have their own mutex).
//  - one completion thread per channel: drains the completion ring (spinning up to the spin
//    budget, then sleeping on the daemon_to_app doorbell with the sleeping flag set), reads the
//    app socket, fires call deadlines, runs every completion callback, and reconnects after a
//    daemon loss (backoff kReconnectInitialBackoff doubling to kReconnectMaxBackoff). Named
//    "mrpc-completion". With ChannelOptions::handler_threads 0 it also runs server handlers.
//  - ChannelOptions::handler_threads threads running server handlers, named "mrpc-handler".
// Code: split by concern, as eRPC splits its Rpc class: shm_channel.cc (set-up, registration,
// starting and cancelling calls), completions.cc (the completion thread), serving.cc (served
// services, handlers, replies), reconnection.cc (daemon loss, reconnecting, retiring old
// connections); the calls in flight are a CallTable (call_table.h) in each Connection.
// Ownership: the channel owns its threads and its Connections: the current one, and earlier ones
// while something references them (a received message's lease, an incoming call, a message
// still alive in their heap); then they are destroyed and their regions unmapped.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <queue>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "connection.h"
#include "mrpc/base/block_pool.h"
#include "mrpc/base/clock.h"
#include "mrpc/base/inline_function.h"
#include "mrpc/client/channel.h"

namespace mrpc::client {

// now + by, at most kNoDeadline.
inline MonoTime saturating_add(MonoTime now, std::chrono::nanoseconds by) {
  if (by.count() <= 0) return now;
  return by.count() > kNoDeadline - now ? kNoDeadline : now + by.count();
}

// A fixed set of threads running queued work in FIFO order.
// Threads: post() from any thread (libmrpc posts from the completion thread); the pool's own
// threads run the work. The queue is a ring of InlineFunctions that grows to the most work ever
// queued at once and is then reused: posting work whose callable fits kWorkInlineBytes (a
// handler's call, as serving.cc posts it) allocates nothing.
class WorkerPool {
 public:
  static constexpr size_t kWorkInlineBytes = 64;
  using Work = InlineFunction<void(), kWorkInlineBytes>;

  void start(int threads);
  // Only after start() with at least one thread (handler_threads 0 runs handlers inline instead).
  void post(Work work);
  // Runs what is queued, then joins.
  void stop();

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  // Ring of queued work: queued_ entries from head_ (mod ring_.size()); grown by doubling.
  std::vector<Work> ring_;
  size_t head_ = 0;
  size_t queued_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

class ShmChannel;
// The channel whose completion thread this is (null on other threads).
extern thread_local const ShmChannel* completion_thread_channel;

class ShmChannel final : public Channel {
 public:
  static Expected<std::shared_ptr<ShmChannel>> open(ChannelOptions options);
  ~ShmChannel() override;

  ShmHeap& heap() override;
  CallId start_call(const ServiceSchema& service, uint32_t method_index, const MessageRef& request,
                    const CallOptions& options, UntypedCompletion done) override;
  void cancel(CallId call) override;
  Status serve(const ServiceSchema& service, std::vector<UntypedMethod> methods) override;

  explicit ShmChannel(ChannelOptions options);

 private:
  struct ServedService {
    OwnedSchema schema;
    std::vector<UntypedMethod> methods;
  };
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  template <class V>
  using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

  // Any thread: the shared pointer under connection_mutex_. current() is the same without a lock
  // (Connections live as long as the channel).
  std::shared_ptr<Connection> current_connection();
  Connection* current() const { return current_raw_.load(std::memory_order_acquire); }
  void install_connection(std::shared_ptr<Connection> connection);

  // Registration (RegisterService -> ServiceRegistered).
  Expected<uint32_t> register_service(const std::shared_ptr<Connection>& connection,
                                      const OwnedSchema& schema, bool serve);
  Expected<uint32_t> service_id_for_call(Connection& connection, const ServiceSchema& service);
  Status register_served(const std::shared_ptr<Connection>& connection,
                         const std::shared_ptr<ServedService>& served);
  bool on_completion_thread() const;

  // Completion thread.
  void completion_loop();
  bool drain_completions(const std::shared_ptr<Connection>& connection);
  // Copies a kCallDone's error text out of the receive region and releases its block.
  std::string take_call_detail(const std::shared_ptr<Connection>& connection,
                               const shm::RingEntry& entry);
  void on_call_done(const std::shared_ptr<Connection>& connection, const shm::RingEntry& entry);
  void on_incoming_call(const std::shared_ptr<Connection>& connection, const shm::RingEntry& entry);
  // Reads control messages while the socket has some; false if the daemon is gone.
  bool read_control(const std::shared_ptr<Connection>& connection, bool wait);
  void dispatch_control(const wire::DaemonMessage& message);
  bool fire_deadlines();
  bool run_deferred();
  void handle_loss(const std::shared_ptr<Connection>& connection, const Status& why);
  void try_reconnect();
  // Sleeps until the doorbell, the socket or the wake fd, or `until`.
  void sleep(const std::shared_ptr<Connection>& connection, MonoTime until);
  MonoTime next_deadline();

  // Completion callbacks that must not run on the app's thread.
  void defer(std::function<void()> work);
  void fail_call_later(UntypedCompletion done, Status status);

  const ChannelOptions options_;
  const Clock& clock_ = MonotonicClock::instance();

  std::mutex connection_mutex_;
  std::shared_ptr<Connection> current_;  // null while the daemon is lost; written only by the
                                         // completion thread (and open), under the mutex
  std::atomic<Connection*> current_raw_{nullptr};         // current_.get()
  std::atomic<Connection*> latest_{nullptr};              // connections_.back().get()
  std::vector<std::shared_ptr<Connection>> connections_;  // every one ever opened

  std::mutex registry_mutex_;
  StringMap<std::shared_ptr<ServedService>> served_;
  StringMap<uint32_t> service_ids_;  // for `ids_connection_`
  const Connection* ids_connection_ = nullptr;
  std::unordered_map<uint32_t, std::shared_ptr<ServedService>> served_by_id_;  // same
  // Serve registrations sent and not yet recorded in served_by_id_; incoming calls for a service
  // id not known yet wait here meanwhile (mrpcd may deliver a call, e.g. one that waited for a
  // server, before this app has read its registration reply).
  int serve_registrations_pending_ = 0;
  std::vector<std::pair<std::shared_ptr<Connection>, shm::RingEntry>> early_incoming_;
  std::unordered_map<uint64_t, std::shared_ptr<std::promise<wire::ServiceRegistered>>>
      registrations_;
  uint64_t next_request_id_ = 1;

  // Calls in flight live in each Connection's CallTable. Ids of calls that fail before reaching
  // mrpcd (CallTable::kLocalOnly set):
  std::atomic<CallId> next_local_id_{1};
  // The generation the next connection's call table starts at (past every id of the last one).
  uint32_t next_first_generation_ = 1;  // completion thread
  // Response leases' control blocks (allocate_shared on the completion thread).
  std::shared_ptr<BlockPool> lease_pool_ = std::make_shared<BlockPool>();
  // Reused by fire_deadlines (no allocation per pass).
  std::vector<std::pair<uint64_t, UntypedCompletion>> expired_;
  // The shared_ptr deleter: deletes the channel, unless called on its own completion thread (the
  // app dropped its last reference in a completion): then the loop deletes it after the pass.
  void release_last_reference();
  bool delete_after_pass_ = false;  // completion thread
  // App threads inside start_call or cancel (which read current() without a reference).
  std::atomic<int> callers_inside_{0};
  struct InsideGuard {
    explicit InsideGuard(std::atomic<int>& count);
    ~InsideGuard();
    std::atomic<int>& count_;
  };
  // Completion thread: destroys (unmaps) the connections before the newest that nothing
  // references any more. Checked with the app socket, every kAppSocketCheckInterval at most.
  void retire_old_connections();

  std::mutex deferred_mutex_;
  std::deque<std::function<void()>> deferred_;
  std::atomic<size_t> deferred_count_{0};  // deferred_.size(), read without the lock

  shm::Doorbell wake_;
  std::atomic<bool> stopping_{false};
  MonoTime reconnect_at_ = 0;
  std::chrono::nanoseconds backoff_{0};
  std::thread completion_thread_;
  std::thread::id completion_thread_id_;
  WorkerPool handlers_;
};

}  // namespace mrpc::client
