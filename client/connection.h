// Connection: one live session with mrpcd (socket, the three mapped regions, the rings and the
// doorbells, the send heap). The Channel opens a new one after each daemon loss and keeps the old
// ones alive (their heaps and mappings stay valid for apps and leases still holding them).
//
// Threads: submit() from any thread (lock-free: a SharedRingProducer; a mutex only while entries
// wait in the overflow queue behind a full ring);
// everything else of the rings and the socket's receiving side from the channel's completion
// thread only; send_control() from any thread (a mutex serializes socket writes).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "call_table.h"
#include "mrpc/base/clock.h"
#include "mrpc/base/expected.h"
#include "mrpc/client/channel.h"
#include "mrpc/message/shm_heap.h"
#include "mrpc/transports/shm/doorbell.h"
#include "mrpc/transports/shm/region.h"
#include "mrpc/transports/shm/ring.h"
#include "mrpc/transports/shm/unique_fd.h"
#include "transports/shm/app_protocol.pb.h"

namespace mrpc::client {

// A ServiceSchema whose strings the library owns (the caller's may not be static).
struct OwnedSchema {
  std::string full_name;
  std::string file_descriptor_set;
  std::vector<std::string> methods;

  static OwnedSchema copy_of(const ServiceSchema& schema);
};

class Connection {
 public:
  // Connects to `socket_path`, sends Hello, checks the Welcome (version, fds, sizes, seals) and
  // maps the regions. UNAVAILABLE if no daemon answers; FAILED_PRECONDITION if the daemon
  // refuses (version) or speaks another version; INVALID_ARGUMENT if what it sent is malformed.
  // `first_generation`: of the call table's slots (CallTable).
  static Expected<std::shared_ptr<Connection>> open(const std::string& socket_path,
                                                    const std::string& app_name,
                                                    uint32_t first_generation = 1);

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  ShmHeap& heap() { return *heap_; }
  const wire::Welcome& welcome() const { return welcome_; }
  int socket_fd() const { return socket_.get(); }
  const shm::Doorbell& completion_doorbell() const { return daemon_to_app_; }
  shm::RingConsumer& completions() { return completions_; }
  const std::byte* receive_base() const { return receive_.data(); }
  uint64_t receive_bytes() const { return receive_.size(); }

  // Posts `entry` to the daemon; queued in private memory when the ring is full (the completion
  // thread retries: it is woken through its own doorbell). Returns false once the ring is found
  // corrupt.
  bool submit(const shm::RingEntry& entry);
  // As submit(), without ringing a sleeping daemon: for entries it need not act on soon
  // (kRelease). The completion thread calls notice_quiet() once the app has been idle for
  // limits::kQuietEntryNoticeDelay with such entries posted (a later submit() carries them too).
  bool submit_quiet(const shm::RingEntry& entry);
  // When the oldest entry posted by submit_quiet() and not yet announced was posted; 0 if none.
  MonoTime quiet_since() const { return quiet_since_.load(std::memory_order_acquire); }
  // Rings the daemon's doorbell if it sleeps, for the entries posted quietly. Any thread.
  void notice_quiet();
  // Response blocks handed to the app (a ReceiveLease) and not yet released. Counted up by the
  // completion thread when it creates the lease, down by the lease's release after it posted its
  // kRelease (any thread): read before quiet_since(), a count of 0 means every release posted so
  // far shows in quiet_since() (or was announced already).
  void block_leased() { blocks_leased_.fetch_add(1, std::memory_order_relaxed); }
  void block_returned() { blocks_leased_.fetch_sub(1, std::memory_order_release); }
  uint64_t blocks_leased() const { return blocks_leased_.load(std::memory_order_acquire); }
  // Completion thread: moves queued entries onto the ring. True if some remain queued.
  bool flush_overflow();

  // The calls this connection has in flight (max_calls_in_flight slots).
  CallTable& calls() { return *calls_; }
  // Unique per process, never reused (tells connections apart in caches keyed by connection).
  uint64_t serial() const { return serial_; }

  // One control message to the daemon, from any thread.
  Status send_control(const wire::AppMessage& message);

  // Cleared (once) when the daemon is lost; never set again.
  bool alive() const { return alive_.load(std::memory_order_acquire); }
  // Marks the connection lost and frees every response still waiting for its kReplyDone.
  void mark_lost();
  // Shuts the socket down (both ways), so the daemon sees this app leave even though the
  // Connection object lives on for the leases and heap references that still hold it.
  void shut_down_socket();

  // Responses this app sent with kReply, freed when the daemon says kReplyDone. Any thread.
  // Posts `reply` and remembers `response_root` (kNoOffset: none) until reply_done(); on a lost
  // connection frees the response at once instead.
  void post_reply(const shm::RingEntry& reply, uint64_t response_root);
  // Incoming calls being handled, indexed by the slot of the daemon's call id (its low 32 bits,
  // below Welcome.max_calls_served; the daemon gives a slot to no other call before the previous
  // one's kReplyDone): their cancellation flags, set on kIncomingCancelled (and on loss) until
  // post_reply(); then the response root until kReplyDone. Completion thread; the table grows
  // there, to the highest slot seen.
  // False (nothing tracked) for an id mrpcd does not give: 0, or a slot past max_calls_served.
  bool track_incoming(uint64_t call_id, std::shared_ptr<std::atomic<bool>> cancelled);
  void cancel_incoming(uint64_t call_id);
  // Completion thread, on kReplyDone: frees the response of daemon call `call_id`.
  void reply_done(uint64_t call_id);
  // Responses posted with post_reply() whose kReplyDone has not been handled. mrpcd posts
  // kReplyDone without a doorbell, so while this is not 0 the completion thread bounds its sleep
  // (limits::kHeldBlockRecheckMax). Read after prepare_to_sleep(): post_reply() counts up before
  // it posts, then wakes a thread that announced sleep (seq_cst on both sides).
  uint64_t responses_awaiting_done() const {
    return responses_awaiting_done_.load(std::memory_order_seq_cst);
  }

 private:
  // submit() and submit_quiet(): the ring if it has room, else the overflow (kept in order).
  bool post(const shm::RingEntry& entry, bool quiet);
  Connection() = default;

  shm::UniqueFd socket_;
  wire::Welcome welcome_;
  shm::SharedRegion heap_region_;
  shm::SharedRegion receive_;
  shm::SharedRegion rings_;
  shm::Doorbell app_to_daemon_;
  shm::Doorbell daemon_to_app_;
  std::unique_ptr<ShmHeap> heap_;
  shm::RingConsumer completions_;

  std::unique_ptr<CallTable> calls_;
  uint64_t serial_ = 0;
  std::atomic<MonoTime> quiet_since_{0};
  std::atomic<uint64_t> blocks_leased_{0};
  std::atomic<bool> overflow_pending_{false};  // overflow_ is not empty (set under the lock)

  shm::SharedRingProducer submissions_;  // any thread
  std::atomic<bool> submissions_broken_{false};
  std::mutex overflow_mutex_;
  std::deque<shm::RingEntry> overflow_;  // guarded by overflow_mutex_

  std::mutex send_mutex_;

  std::mutex replies_mutex_;
  // One incoming call: the daemon's id (0: the slot is free), its cancellation flag while its
  // handler may run (null after post_reply), then its response until kReplyDone (kNoOffset: none).
  struct Incoming {
    uint64_t call_id = 0;
    std::shared_ptr<std::atomic<bool>> cancelled;
    uint64_t response_root = UINT64_MAX;
  };
  // The live entry for daemon call `call_id`, or null (free slot, another call's, out of range).
  // Under replies_mutex_.
  Incoming* find_incoming(uint64_t call_id);
  // Frees the slot (its response, if any, is the caller's to free first). Under replies_mutex_.
  static void clear_incoming(Incoming& incoming) { incoming = Incoming{}; }
  std::vector<Incoming> incoming_;                    // by slot; under replies_mutex_
  std::atomic<bool> alive_{true};                     // cleared under replies_mutex_
  std::atomic<uint64_t> responses_awaiting_done_{0};  // responses_in_flight_.size()
};

}  // namespace mrpc::client
