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
// Ownership: the channel owns its threads and every Connection it ever opened (apps may hold
// their heaps; received messages keep their Connection, hence their mapping, alive).
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

#include "call_ids.h"
#include "connection.h"
#include "mrpc/base/clock.h"
#include "mrpc/client/channel.h"

namespace mrpc::client {

// A fixed set of threads running queued work in FIFO order.
class WorkerPool {
 public:
  void start(int threads);
  // Only after start() with at least one thread (handler_threads 0 runs handlers inline instead).
  void post(std::function<void()> work);
  // Runs what is queued, then joins.
  void stop();

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

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
  struct OutgoingCall {
    UntypedCompletion done;  // empty once the app has been told
    MonoTime deadline = kNoDeadline;
    ShmHeap* heap = nullptr;    // where the request lives
    uint64_t request_root = 0;  // freed on kCallDone or daemon loss
  };
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

  std::shared_ptr<Connection> current_connection();
  void install_connection(std::shared_ptr<Connection> connection);

  // Registration (RegisterService -> ServiceRegistered).
  Expected<uint32_t> register_service(const std::shared_ptr<Connection>& connection,
                                      const OwnedSchema& schema, bool serve);
  Expected<uint32_t> service_id_for_call(const std::shared_ptr<Connection>& connection,
                                         const ServiceSchema& service);
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
  std::shared_ptr<Connection> current_;                   // null while the daemon is lost
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

  std::mutex calls_mutex_;
  std::unordered_map<CallId, OutgoingCall> calls_;
  std::priority_queue<std::pair<MonoTime, CallId>, std::vector<std::pair<MonoTime, CallId>>,
                      std::greater<>>
      deadlines_;
  MonoTime sleeping_until_ = INT64_MIN;   // the completion thread's wake-up time while it sleeps
  CallIds call_ids_;                      // ids of calls sent to the daemon; under calls_mutex_
  std::atomic<CallId> next_local_id_{1};  // ids of calls that fail before reaching it

  std::mutex deferred_mutex_;
  std::deque<std::function<void()>> deferred_;

  shm::Doorbell wake_;
  std::atomic<bool> stopping_{false};
  MonoTime reconnect_at_ = 0;
  std::chrono::nanoseconds backoff_{0};
  std::thread completion_thread_;
  std::thread::id completion_thread_id_;
  WorkerPool handlers_;
};

}  // namespace mrpc::client
