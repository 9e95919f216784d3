// Shards: with `--runtime-threads N` the daemon runs N runtime threads, each a shard that owns its
// connections (their rings, regions, allocators and graphs), the calls those connections started
// (call table and deadlines) and a view of the service registry. Nothing on the per-call path is
// shared between shards: work for another shard travels as a ShardMessage through a ShardLink, a
// lock-free single-producer single-consumer queue per (from, to) pair of shards, with a doorbell
// that rings the receiving runtime only when it sleeps.
//
// Handles of the per-shard tables (connections, calls) carry their shard in bits 24-31 of the slot
// word (the tables never hold 2^24 entries), so any shard can tell where a handle lives; only the
// owning shard dereferences it.
//
// Memory: an RPC that crosses to another shard may point into the sending shard's connection
// memory (the caller's heap for a request, the server's heap for a response). It takes a
// reference to that Connection with it (Rpc::pinned_memory), so the memory stays mapped until the
// receiving shard has copied what it needs, whatever the owning shard does meanwhile; the
// reference goes back to the owning shard with the message that lets it free the bytes.
//
// Threads: a link's push runs on its `from` shard, its pop on its `to` shard.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "mrpc/base/check.h"
#include "mrpc/base/slot_table.h"
#include "mrpc/dataflow/rpc.h"

namespace mrpc {

class Runtime;

namespace shards {
inline constexpr uint32_t kShift = 24;
inline constexpr uint64_t kMask = uint64_t{0xff} << kShift;
inline constexpr uint32_t kMaxSlot = (1u << kShift) - 1;

inline uint32_t shard_of(uint64_t handle) {
  return static_cast<uint32_t>((handle & kMask) >> kShift);
}
// The handle as its shard's table knows it.
inline uint64_t local(uint64_t handle) {
  return handle & ~kMask;
}
inline uint64_t global(uint64_t local_handle, uint32_t shard) {
  return local_handle == kNoSlotHandle ? kNoSlotHandle
                                       : local_handle | (static_cast<uint64_t>(shard) << kShift);
}
}  // namespace shards

// One piece of work for another shard.
struct ShardMessage {
  enum class Kind : uint8_t {
    kRequest,       // rpc: deliver to rpc->endpoint.connection (the receiving shard's)
    kBounced,       // rpc: its endpoint was gone when it arrived: route it again (caller's shard)
    kReply,         // rpc: a reply (or error) for a call of the receiving shard
    kDelivered,     // call `call` was delivered to `connection` as `value` (caller's shard)
    kCancel,        // the call delivered to `connection` as `value` ended for its caller
    kReplyDone,     // `connection` may free its response `value` (a delivery id)
    kFreeReceived,  // free block `value` of `connection`'s receive region
  };
  Kind kind = Kind::kRequest;
  RpcPtr rpc;
  ConnectionId connection = kNoConnection;
  uint64_t value = 0;
  uint64_t call = 0;
  std::shared_ptr<const void> pinned_memory;  // see the file comment
};

// A bounded SPSC ring of messages plus, on the producer side, an overflow for when it is full
// (flushed by the producer every round), so a push never fails and never blocks.
class ShardLink {
 public:
  explicit ShardLink(uint32_t capacity);
  ShardLink(const ShardLink&) = delete;
  ShardLink& operator=(const ShardLink&) = delete;

  // Producer side.
  void push(ShardMessage message);
  // Moves overflowed messages into the ring; returns whether any are still waiting.
  bool flush();
  bool has_overflow() const { return !overflow_.empty(); }

  // Consumer side: pops at most `max` messages into `out` (appended); returns how many.
  size_t pop(std::vector<ShardMessage>& out, size_t max);
  bool empty() const {
    return head_.load(std::memory_order_acquire) == tail_.load(std::memory_order_seq_cst);
  }

 private:
  bool try_push(ShardMessage& message);

  std::vector<ShardMessage> slots_;
  const uint64_t mask_;
  alignas(64) std::atomic<uint64_t> head_{0};      // consumer's
  alignas(64) std::atomic<uint64_t> tail_{0};      // producer's
  alignas(64) std::deque<ShardMessage> overflow_;  // producer's
};

// The links into one shard and its doorbell.
class ShardInbox {
 public:
  ShardInbox(uint32_t shard_count, uint32_t capacity, Runtime& runtime);

  ShardLink& from(uint32_t shard) { return *links_[shard]; }
  // After pushing into one of this inbox's links: wakes the shard if it sleeps.
  void ring();
  // The shard is about to sleep: false if a message is waiting (then it must not).
  bool prepare_to_sleep();
  void woke() { sleeping_.store(false, std::memory_order_relaxed); }
  uint64_t wakeups() const { return wakeups_.load(std::memory_order_relaxed); }

 private:
  std::vector<std::unique_ptr<ShardLink>> links_;
  Runtime& runtime_;
  alignas(64) std::atomic<bool> sleeping_{false};
  std::atomic<uint64_t> wakeups_{0};
};

}  // namespace mrpc
