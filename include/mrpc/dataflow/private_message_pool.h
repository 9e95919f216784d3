// PrivateMessagePool: reusable PrivateMessages (rpc.h) for the daemon's private copies of
// messages, such as a policy's time-of-check copy of a request, so that taking one allocates
// nothing once the pool holds as many as are in flight at once: a message dropped by its last
// holder goes back to the pool with its buffer, and the shared_ptr's control block comes from a
// BlockPool.
//
// Threads: take() from one thread at a time (its owner serialises: the policy operator calls it
// under its mutex); the last reference to a taken message may die on any thread (a call's request
// ends on whichever shard finishes the call), which pushes it back on a lock-free stack. Only
// take() pops, one at a time, so a popped node cannot have been popped and pushed back meanwhile
// (no ABA).
// Ownership: each taken message's deleter holds the pool, so the pool outlives its messages.
// Memory: a message whose buffer is over limits::kMaxPooledPrivateMessageBytes is freed when
// dropped instead of kept, and at most limits::kMaxIdlePrivateMessages idle ones are kept (the
// count is approximate under races, never far over).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "mrpc/base/block_pool.h"
#include "mrpc/base/limits.h"
#include "mrpc/dataflow/rpc.h"

namespace mrpc {

class PrivateMessagePool : public std::enable_shared_from_this<PrivateMessagePool> {
 public:
  static std::shared_ptr<PrivateMessagePool> create() {
    return std::shared_ptr<PrivateMessagePool>(new PrivateMessagePool());
  }
  PrivateMessagePool(const PrivateMessagePool&) = delete;
  PrivateMessagePool& operator=(const PrivateMessagePool&) = delete;
  ~PrivateMessagePool() {
    Node* node = free_.exchange(nullptr, std::memory_order_acquire);
    while (node != nullptr) delete std::exchange(node, node->next);
  }

  // A message whose buffer holds at least `bytes` bytes; its `size` is `bytes` and its
  // `message_bytes` 0. The owner thread only.
  std::shared_ptr<PrivateMessage> take(uint64_t bytes) {
    Node* node = free_.load(std::memory_order_acquire);
    while (node != nullptr &&
           !free_.compare_exchange_weak(node, node->next, std::memory_order_acquire,
                                        std::memory_order_acquire)) {
    }
    if (node != nullptr) {
      idle_.fetch_sub(1, std::memory_order_relaxed);
    } else {
      node = new Node();
    }
    if (node->capacity < bytes) {
      node->bytes.reset(new std::byte[bytes]);  // uninitialised: the copy writes what it uses
      node->capacity = bytes;
    }
    node->size = bytes;
    node->message_bytes = 0;
    return std::shared_ptr<PrivateMessage>(node, Giveback{shared_from_this()},
                                           BlockAllocator<PrivateMessage>(control_blocks_));
  }

  size_t idle() const { return idle_.load(std::memory_order_relaxed); }

 private:
  struct Node : PrivateMessage {
    uint64_t capacity = 0;
    Node* next = nullptr;
  };
  struct Giveback {
    std::shared_ptr<PrivateMessagePool> pool;
    void operator()(PrivateMessage* message) const noexcept {
      pool->give_back(static_cast<Node*>(message));
    }
  };

  PrivateMessagePool() = default;

  // Any thread.
  void give_back(Node* node) noexcept {
    if (node->capacity > limits::kMaxPooledPrivateMessageBytes ||
        idle_.load(std::memory_order_relaxed) >= limits::kMaxIdlePrivateMessages) {
      delete node;
      return;
    }
    idle_.fetch_add(1, std::memory_order_relaxed);
    node->next = free_.load(std::memory_order_relaxed);
    while (!free_.compare_exchange_weak(node->next, node, std::memory_order_release,
                                        std::memory_order_relaxed)) {
    }
  }

  std::atomic<Node*> free_{nullptr};
  std::atomic<size_t> idle_{0};
  const std::shared_ptr<BlockPool> control_blocks_ = std::make_shared<BlockPool>();
};

}  // namespace mrpc
