// BlockPool: fixed-size blocks for what libmrpc creates per call, so that a call allocates
// nothing once the pool has grown to what the app holds at once. Each channel's completion thread
// has one (the shared_ptr control blocks of response and request leases and of incoming calls,
// made with std::allocate_shared and BlockAllocator, and the nodes of a Connection's table of
// incoming calls); each app thread that starts future-form calls has one (thread_block_pool():
// the std::promise's shared state and result, generated_support.h's future_call).
//
// Threads: allocate() from one thread only, the pool's owner (the thread that creates every one of
// its objects); deallocate() from any thread (the last copy of a ReceivedMessage or a future dies
// anywhere). The free list is a lock-free stack: any thread pushes, only the owner pops, so a
// popped node cannot have been popped and pushed back meanwhile (no ABA).
// Ownership: every allocator copy (the one in each control block too) holds the pool, so the pool
// outlives its blocks, whoever drops them last (also after its owner thread exited).
#pragma once

#include <atomic>
#include <cstddef>
#include <future>
#include <memory>
#include <vector>

namespace mrpc {

class BlockPool {
 public:
  static constexpr size_t kBlockBytes = 256;
  static constexpr size_t kBlocksPerChunk = 64;

  BlockPool() = default;
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  // A block of kBlockBytes. The owner thread only.
  void* allocate() {
    Node* head = free_.load(std::memory_order_acquire);
    while (head != nullptr &&
           !free_.compare_exchange_weak(head, head->next, std::memory_order_acquire,
                                        std::memory_order_acquire)) {
    }
    if (head != nullptr) return head;
    // Warm-up: a chunk more; all but the first block go to the free list.
    auto& chunk = chunks_.emplace_back(new Block[kBlocksPerChunk]);
    for (size_t i = 1; i < kBlocksPerChunk; ++i) deallocate(&chunk[i]);
    return &chunk[0];
  }
  // Any thread.
  void deallocate(void* block) noexcept {
    Node* node = ::new (block) Node{free_.load(std::memory_order_relaxed)};
    while (!free_.compare_exchange_weak(node->next, node, std::memory_order_release,
                                        std::memory_order_relaxed)) {
    }
  }

 private:
  struct Node {
    Node* next;
  };
  struct alignas(std::max_align_t) Block {
    std::byte bytes[kBlockBytes];
  };
  std::atomic<Node*> free_{nullptr};
  std::vector<std::unique_ptr<Block[]>> chunks_;  // the owner thread only
};

template <class T>
struct BlockAllocator {
  using value_type = T;

  explicit BlockAllocator(std::shared_ptr<BlockPool> owner) : pool(std::move(owner)) {}
  template <class U>
  BlockAllocator(const BlockAllocator<U>& other) : pool(other.pool) {}  // NOLINT: rebind

  T* allocate(size_t n) {
    static_assert(sizeof(T) <= BlockPool::kBlockBytes && alignof(T) <= alignof(std::max_align_t),
                  "a pooled object outgrew the pool's blocks");
    if (n != 1) return std::allocator<T>().allocate(n);
    return static_cast<T*>(pool->allocate());
  }
  void deallocate(T* block, size_t n) noexcept {
    if (n != 1) return std::allocator<T>().deallocate(block, n);
    pool->deallocate(block);
  }
  template <class U>
  bool operator==(const BlockAllocator<U>& other) const {
    return pool == other.pool;
  }

  std::shared_ptr<BlockPool> pool;
};

// The calling thread's pool: the thread owns it (allocates from it); blocks may be freed anywhere.
// Created at the thread's first use (one allocation), kept while the thread or a block lives.
inline const std::shared_ptr<BlockPool>& thread_block_pool() {
  thread_local const std::shared_ptr<BlockPool> pool = std::make_shared<BlockPool>();
  return pool;
}

// A promise whose shared state and result come from the calling thread's pool (the future forms
// of libmrpc: no allocation per call once the pool holds as many as the thread has futures alive).
template <class T>
std::promise<T> pooled_promise() {
  return std::promise<T>(std::allocator_arg, BlockAllocator<char>(thread_block_pool()));
}

}  // namespace mrpc
