// UidBudgets: what all the connections of one uid may hold of the daemon together, across every
// runtime thread (docs/security.md, "Per-user limits"):
//   connections      at most max_connections_per_uid (counted by shard 0 at accept, uncounted by
//                    the owning shard at close), under the mutex;
//   calls_in_flight  calls its apps started that have not ended for them, at most
//                    max_calls_in_flight_per_uid: one relaxed atomic add per call on the caller's
//                    shard, a subtract where the call ends (any shard);
//   receive_bytes    bytes the daemon placed in its connections' receive regions and the apps have
//                    not released, at most max_receive_bytes_per_uid (a ByteBudget that every such
//                    region's allocator charges).
// A connection holds a pointer to its uid's budget from accept to its destruction, so the per-call
// path needs no lookup. Budgets are never erased: one per uid that ever connected (a process cannot
// pick its uid, so their number is bounded by the host's users), a few dozen bytes each; that keeps
// the pointers valid for connections that outlive their close in shared_ptrs.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "mrpc/base/limits.h"
#include "mrpc/daemon/daemon.h"
#include "mrpc/message/region_allocator.h"

namespace mrpc {

struct UidBudget {
  UidBudget(uint32_t uid_in, uint64_t max_receive_bytes)
      : uid(uid_in), receive_bytes(max_receive_bytes) {}

  const uint32_t uid;
  uint32_t connections = 0;  // guarded by UidBudgets::mutex_
  std::atomic<uint32_t> calls_in_flight{0};
  ByteBudget receive_bytes;

  // Counts one more call in flight unless the uid has `max` already.
  bool try_start_call(uint32_t max) {
    if (calls_in_flight.fetch_add(1, std::memory_order_relaxed) < max) return true;
    calls_in_flight.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  void end_calls(uint32_t count) { calls_in_flight.fetch_sub(count, std::memory_order_relaxed); }
};

class UidBudgets {
 public:
  // Before the first connection (Daemon::start).
  void set_max_receive_bytes_per_uid(uint64_t max) {
    std::lock_guard lock(mutex_);
    max_receive_bytes_per_uid_ = max;
  }

  // Counts one more connection of `uid` unless it has `max` already; its budget, or null.
  UidBudget* try_add_connection(uint32_t uid, uint32_t max) {
    std::lock_guard lock(mutex_);
    std::unique_ptr<UidBudget>& budget = budgets_[uid];
    if (!budget) budget = std::make_unique<UidBudget>(uid, max_receive_bytes_per_uid_);
    if (budget->connections >= max) return nullptr;
    ++budget->connections;
    return budget.get();
  }
  void remove_connection(UidBudget& budget) {
    std::lock_guard lock(mutex_);
    --budget.connections;
  }

  // Every uid's usage now, by uid (stats; not the per-call path).
  std::vector<UidUsage> usage() const {
    std::lock_guard lock(mutex_);
    std::vector<UidUsage> out;
    for (const auto& [uid, budget] : budgets_)
      out.push_back({uid, budget->connections,
                     budget->calls_in_flight.load(std::memory_order_relaxed),
                     budget->receive_bytes.used()});
    std::sort(out.begin(), out.end(),
              [](const UidUsage& a, const UidUsage& b) { return a.uid < b.uid; });
    return out;
  }

 private:
  mutable std::mutex mutex_;
  uint64_t max_receive_bytes_per_uid_ = limits::kDefaultMaxReceiveBytesPerUid;
  std::unordered_map<uint32_t, std::unique_ptr<UidBudget>> budgets_;
};

}  // namespace mrpc
