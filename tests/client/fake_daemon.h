// FakeDaemon: a small stand-in for mrpcd in libmrpc's tests, built from the real mrpc_shm parts
// (a listening app socket, sealed memfd regions, rings, doorbells). It runs one app connection at
// a time on its own thread: answers Hello and RegisterService, and for each kCall either echoes
// (an echo.EchoReply with the request's text and payload) or stays silent, as told. Test threads
// read what it saw through wait_for() and the accessors, all under one mutex.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "mrpc/message/shm_heap.h"
#include "mrpc/transports/shm/doorbell.h"
#include "mrpc/transports/shm/metadata_block.h"
#include "mrpc/transports/shm/region.h"
#include "mrpc/transports/shm/ring.h"
#include "mrpc/transports/shm/unique_fd.h"

namespace mrpc::testing {

struct FakeDaemonOptions {
  uint32_t protocol_version;          // what Welcome says
  std::optional<std::string> refuse;  // answer Hello with Refused(reason)
  bool echo = true;                   // false: never answer kCall (deadline and cancel tests)
  uint64_t heap_bytes = 1 << 20;
  uint64_t receive_bytes = 1 << 20;
  uint32_t ring_entries = 64;
  uint32_t max_calls_in_flight = 4096;
  uint32_t max_calls_served = 4096;
};

class FakeDaemon {
 public:
  explicit FakeDaemon(FakeDaemonOptions options);
  ~FakeDaemon();

  const std::string& socket_path() const { return path_; }

  // Blocks until `condition` (run under the daemon's mutex) holds.
  void wait_for(const std::function<bool()>& condition);

  // Whether kCall gets an echo reply from now on.
  void set_echo(bool echo) { echo_.store(echo); }
  // Closes the current app connection as if the daemon died; it accepts the next one.
  void drop_connection();
  // Sends one incoming call of service `service_name` (registered by the app with serve) with an
  // echo.EchoRequest carrying `text`, built in the receive region. Returns the daemon call id.
  uint64_t send_incoming_echo(const std::string& service_name, const std::string& text,
                              const shm::MetadataPairs& metadata = {});
  // As send_incoming_echo, with the call id given (a daemon that breaks the id rules).
  void send_incoming_echo_as(uint64_t call_id, const std::string& service_name,
                             const std::string& text);
  // As send_incoming_echo, naming method `method_index` of the service (one the app may not have).
  uint64_t send_incoming_echo_to_method(const std::string& service_name, uint16_t method_index,
                                        const std::string& text);
  // Writes a completion-ring tail far past the app's head, as a broken daemon would, and rings.
  void corrupt_completion_tail();
  // Posts kReplyDone for a reply seen earlier.
  void send_reply_done(uint64_t call_id);

  // What it saw; read under the mutex (inside wait_for's condition, or with lock()).
  struct Reply {
    uint32_t status;
    std::string text;  // the echo.EchoReply's text, if a response came
    std::string detail;
  };
  std::unique_lock<std::mutex> lock() { return std::unique_lock(mutex_); }
  int connections_accepted = 0;
  std::vector<std::string> hellos;         // app names
  std::map<std::string, bool> registered;  // service name -> serve
  int registrations = 0;
  std::vector<shm::RingEntry> calls;  // kCall entries
  std::vector<shm::MetadataPairs> call_metadata;
  std::vector<uint64_t> cancels;      // app call ids
  std::vector<uint64_t> releases;     // receive offsets
  std::map<uint64_t, Reply> replies;  // by daemon call id
  uint64_t receive_live_messages = 0;

 private:
  void run();
  void accept_and_handshake();
  void serve_connection();
  void handle_submission(const shm::RingEntry& entry);
  void post(const shm::RingEntry& entry);
  // Builds the request in the receive region and posts the kIncomingCall. Under mutex_.
  void post_incoming_echo(uint64_t call_id, const std::string& service_name,
                          const std::string& text, const shm::MetadataPairs& metadata,
                          uint16_t method_index = 0);
  // The next id as mrpcd would give it. Under mutex_.
  uint64_t next_incoming_call_id();

  FakeDaemonOptions options_;
  std::string path_;
  shm::UniqueFd listener_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> drop_requested_{false};
  std::atomic<bool> echo_;

  // The current connection (daemon thread, and test threads under mutex_ for posting).
  shm::UniqueFd socket_;
  shm::SharedRegion heap_;
  shm::SharedRegion receive_;
  shm::SharedRegion rings_;
  shm::Doorbell app_to_daemon_;
  shm::Doorbell daemon_to_app_;
  std::unique_ptr<ShmHeap> receive_heap_;
  shm::RingConsumer submissions_;
  shm::RingProducer completions_;
  std::map<std::string, uint32_t> service_ids_;
  std::map<uint64_t, uint64_t> incoming_requests_;  // daemon call id -> receive offset
  uint64_t incoming_calls_sent_ = 0;
  std::thread thread_;
};

}  // namespace mrpc::testing
