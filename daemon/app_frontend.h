// AppFrontend: where an app connection meets the daemon's graphs, at both ends.
//   poll      drains at most `max_batch` entries of the app's submission ring per round, checking
//             every one before anything else reads it: kCall becomes an RPC entering the app's
//             egress graph (or ends at once with an error), kReply resumes the call's ingress
//             graph on its reply path, kCancel ends the app's call, kRelease frees a receive block.
//   complete  the egress graph's reply exit: the call ends for this app (kCallDone).
//   deliver   the ingress graph's request exit: the request (and metadata) is copied into this
//             app's receive region and posted as kIncomingCall; the RPC is parked in the
//             connection's incoming table until the app replies.
// Runtime thread only. Owned by the connection's ConnectionTask; holds no RPC itself.
#pragma once

#include <deque>
#include <vector>

#include "core.h"

namespace mrpc {

class AppFrontend {
 public:
  AppFrontend(DaemonCore& core, Connection& app) : core_(core), app_(app) {}

  bool poll();
  void complete(RpcPtr rpc);
  void deliver(RpcPtr rpc);

  // The app's submission ring, for sleeping: arm its doorbell and re-check (false: work came).
  bool prepare_to_sleep();
  void woke();
  // When poll has something to do by time alone (retrying a full completion ring).
  MonoTime next_timer() const;

 private:
  void on_call(const shm::RingEntry& entry);
  void on_reply(const shm::RingEntry& entry);
  void on_cancel(const shm::RingEntry& entry);
  void on_release(const shm::RingEntry& entry);
  // Checks a kCall entry; the status the call ends with if it is refused.
  Status admit(const shm::RingEntry& entry, MonoTime now, MonoTime& deadline) const;
  void refuse_call(uint64_t call_id, const Status& status);
  // Copies the request and metadata into the receive region; the blocks, or why not.
  Status copy_request(Rpc& rpc, uint64_t& request, uint64_t& metadata, uint32_t& metadata_length);
  // The delivery failed: the RPC goes back up the ingress graph with `status`.
  void bounce(RpcPtr rpc, Status status);

  DaemonCore& core_;
  Connection& app_;
  bool sleeping_ = false;
  std::vector<shm::RingEntry> entries_;  // reused for each batch popped from the ring
  // kCall entries read while the app's completions were backed up, admitted once they are not.
  std::deque<shm::RingEntry> waiting_calls_;
};

}  // namespace mrpc
