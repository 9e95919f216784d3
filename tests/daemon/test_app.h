// TestApp: a raw app for daemon tests, built only from the mrpc_shm primitives (no libmrpc), so a
// test can be well-behaved or hostile at will: it writes ring entries and heap bytes directly.
// One thread uses a TestApp at a time (its rings are single-producer, single-consumer).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "mrpc/message/schema.h"
#include "mrpc/message/shm_heap.h"
#include "mrpc/transports/shm/doorbell.h"
#include "mrpc/transports/shm/metadata_block.h"
#include "mrpc/transports/shm/protocol.h"
#include "mrpc/transports/shm/region.h"
#include "mrpc/transports/shm/ring.h"
#include "mrpc/transports/shm/unique_fd.h"

namespace mrpc::testing {

// The echo service of examples/echo/echo.proto, as a serialized FileDescriptorSet built here.
const std::string& echo_file_descriptor_set();
inline constexpr std::string_view kEchoService = "echo.EchoService";

// A fresh directory for one test's sockets, removed with its contents when destroyed.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  std::string path(std::string_view name) const { return dir_ + "/" + std::string(name); }

 private:
  std::string dir_;
};

class TestApp {
 public:
  // Connects, says Hello, checks the Welcome and maps what it carries. Fails the test otherwise.
  static std::unique_ptr<TestApp> connect(const std::string& socket_path, std::string name);

  // ServiceRegistered's status and service id.
  struct Registration {
    StatusCode status;
    uint32_t service_id;
  };
  Registration register_service(
      std::string_view service, bool serve,
      const std::string& file_descriptor_set = echo_file_descriptor_set());
  // The two halves of register_service, for a test that does something while mrpcd works on
  // the registration: send it (returns the request id), then wait for its answer.
  uint64_t send_register_service(std::string_view service, bool serve,
                                 const std::string& file_descriptor_set);
  Registration receive_registration(uint64_t request_id);
  // Whether a control message from mrpcd is waiting on the socket now (does not wait).
  bool control_message_waiting() const;
  // The detail text of the last registration answer.
  const std::string& registration_detail() const { return registration_detail_; }

  // An echo.EchoRequest / echo.EchoReply (same layout) with `text`, built in the heap.
  uint64_t build_echo(std::string_view text);
  // A metadata block built in the heap: (offset, length).
  std::pair<uint64_t, uint32_t> build_metadata(const shm::MetadataPairs& pairs);
  // The metadata block of an incoming call, decoded from the receive region.
  shm::MetadataPairs received_metadata(uint64_t offset, uint32_t length) const;
  // The text field of an echo message in the receive region.
  std::string received_text(uint64_t offset) const;

  void submit(const shm::RingEntry& entry);
  // As submit, but false when the ring is full.
  bool try_submit(const shm::RingEntry& entry) { return submissions_.push(entry).ok(); }
  // Rings the daemon's doorbell (after writing the rings behind the producer's back).
  void wake_daemon() { (void)app_to_daemon_.ring(); }
  // Where the text field lies in an echo message body.
  uint32_t text_offset() const;
  // kRelease of a block the daemon placed in our receive region.
  void release(uint64_t offset);
  // A kCall entry for the echo method with a deadline `timeout` from now.
  shm::RingEntry call_entry(uint32_t service_id, uint64_t call_id, uint64_t request,
                            std::chrono::nanoseconds timeout = std::chrono::seconds(10)) const;
  // Starts an echo call of `text`; returns nothing (the caller waits for kCallDone).
  void call_echo(uint32_t service_id, uint64_t call_id, std::string_view text,
                 std::chrono::nanoseconds timeout = std::chrono::seconds(10));
  // The next completion, waiting on the doorbell; nullopt after `timeout` (a test failure when the
  // daemon should have answered: tests use generous timeouts, never to measure).
  std::optional<shm::RingEntry> next_completion(
      std::chrono::nanoseconds timeout = std::chrono::seconds(10));
  // Waits for kCallDone of `call_id`, handling other completions as a client would.
  std::optional<shm::RingEntry> wait_call_done(uint64_t call_id);
  // The error text that came with kCallDone of `call_id` ("" if none).
  std::string call_detail(uint64_t call_id) const;

  ShmHeap& heap() { return *heap_; }
  shm::SharedRegion& heap_region() { return heap_region_; }
  shm::SharedRegion& rings_region() { return rings_; }
  int socket_fd() const { return socket_.get(); }
  uint64_t connection_id() const { return connection_id_; }
  uint32_t ring_entries() const { return ring_entries_; }
  // Closes the socket and unmaps everything: what a process that dies looks like to the daemon.
  void disconnect();

 private:
  TestApp() = default;
  shm::UniqueFd socket_;
  shm::SharedRegion heap_region_;
  shm::SharedRegion receive_;
  shm::SharedRegion rings_;
  shm::Doorbell app_to_daemon_;
  shm::Doorbell daemon_to_app_;
  shm::RingProducer submissions_;
  shm::RingConsumer completions_;
  std::unique_ptr<ShmHeap> heap_;
  std::shared_ptr<const Schema> echo_schema_;
  uint64_t connection_id_ = 0;
  uint32_t ring_entries_ = 0;
  uint64_t next_request_id_ = 1;
  std::string registration_detail_;
  std::unordered_map<uint64_t, shm::RingEntry> other_calls_done_;  // seen while waiting for another
  std::unordered_map<uint64_t, std::string> details_;  // error text of ended calls, by call id
};

// An echo server on its own thread: replies to each incoming call with the same text (or holds
// them, when told to), frees replies on kReplyDone, counts cancellations.
class EchoServer {
 public:
  // kEcho: reply at once. kHold: keep every call until reply_to_held(). kReplyWhenCancelled: a
  // server too slow for its callers: it replies to a call only once the daemon says it was
  // cancelled (deadline, caller gone), so every reply is late. kUnavailableFirstTime: the first
  // call with a given text fails UNAVAILABLE, a later one with the same text is echoed.
  enum class Mode { kEcho, kHold, kReplyWhenCancelled, kUnavailableFirstTime };
  void set_mode(Mode mode) { mode_ = mode; }
  uint64_t replies_sent() const { return replies_sent_.load(); }
  EchoServer(const std::string& socket_path, Mode mode = Mode::kEcho);
  ~EchoServer();
  uint32_t service_id() const { return service_id_; }
  uint64_t connection_id() const { return app_->connection_id(); }
  uint64_t cancellations() const { return cancellations_.load(); }
  uint64_t calls_seen() const { return calls_seen_.load(); }
  // Incoming calls whose metadata had the key "counted" (set by test operators).
  uint64_t tagged_calls() const { return tagged_calls_.load(); }
  uint64_t live_replies() const { return live_replies_.load(); }
  // Counts the incoming calls whose metadata has `key` = `value` (watched_calls()).
  void watch_metadata(std::string key, std::string value) {
    std::lock_guard lock(mutex_);
    watched_ = {std::move(key), std::move(value)};
  }
  uint64_t watched_calls() const { return watched_calls_.load(); }
  // The metadata of the last incoming call.
  shm::MetadataPairs last_metadata() const {
    std::lock_guard lock(mutex_);
    return last_metadata_;
  }
  // Replies to every held call now (they may have ended already: late replies).
  void reply_to_held();
  // Dies: the socket closes and the thread ends, leaving whatever it held unanswered.
  void kill();

 private:
  void serve();
  std::unique_ptr<TestApp> app_;
  uint32_t service_id_ = 0;
  std::atomic<Mode> mode_;
  std::atomic<uint64_t> replies_sent_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> reply_held_{false};
  std::atomic<uint64_t> cancellations_{0};
  std::atomic<uint64_t> calls_seen_{0};
  std::atomic<uint64_t> tagged_calls_{0};
  std::atomic<uint64_t> live_replies_{0};
  mutable std::mutex mutex_;
  shm::MetadataPairs last_metadata_;
  std::optional<std::pair<std::string, std::string>> watched_;
  std::atomic<uint64_t> watched_calls_{0};
  std::thread thread_;
};

// What a run of calls ended with.
struct EchoOutcomes {
  uint64_t ok = 0;
  std::map<StatusCode, uint64_t> failed;
  // Each ended call's time from its submission to its kCallDone (for reports, never asserted).
  std::vector<int64_t> latencies_ns;
  uint64_t of(StatusCode code) const {
    if (code == StatusCode::kOk) return ok;
    auto it = failed.find(code);
    return it == failed.end() ? 0 : it->second;
  }
};

// `count` echo calls from `app` with up to `window` (at most 64) in flight and `timeout`
// deadlines, the way a client keeps its pipeline full. Ids start at `next_id`; a finished call's
// slot is reused with id + 64 (the daemon's rule: slot = id mod max_calls_in_flight, 64 in the
// test configurations); `next_id` is left past every id used. Each reply must echo its request,
// and a second kCallDone for a call fails the test: every call ends exactly once.
// `flags`: the kCall entries' flags (shm::kCallWaitForReady).
EchoOutcomes echo_load(TestApp& app, uint32_t service, uint64_t& next_id, uint64_t count,
                       std::chrono::nanoseconds timeout, uint32_t window = 64, uint8_t flags = 0);

}  // namespace mrpc::testing
