// LeasePool: fixed-size blocks for the shared_ptr control blocks of response leases
// (std::allocate_shared with LeaseAllocator), so that handing a response to the app allocates
// nothing per call once the pool has grown to the responses the app holds at once.
//
// Threads: allocate() from one thread only (the channel's completion thread, which creates every
// response lease); deallocate() from any thread (the last copy of a ReceivedMessage dies
// anywhere). The free list is a lock-free stack: any thread pushes, only the allocating thread
// pops, so a popped node cannot have been popped and pushed back meanwhile (no ABA).
// Ownership: every allocator copy (the one in each control block too) holds the pool, so the pool
// outlives the leases, whoever drops them last.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <vector>

namespace mrpc::client {

class LeasePool {
 public:
  static constexpr size_t kBlockBytes = 128;
  static constexpr size_t kBlocksPerChunk = 64;

  LeasePool() = default;
  LeasePool(const LeasePool&) = delete;
  LeasePool& operator=(const LeasePool&) = delete;

  // A block of kBlockBytes. The allocating thread only.
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
  std::vector<std::unique_ptr<Block[]>> chunks_;  // the allocating thread only
};

template <class T>
struct LeaseAllocator {
  using value_type = T;

  explicit LeaseAllocator(std::shared_ptr<LeasePool> owner) : pool(std::move(owner)) {}
  template <class U>
  LeaseAllocator(const LeaseAllocator<U>& other) : pool(other.pool) {}  // NOLINT: rebind

  T* allocate(size_t n) {
    static_assert(sizeof(T) <= LeasePool::kBlockBytes, "lease control block outgrew the pool");
    if (n != 1) return std::allocator<T>().allocate(n);
    return static_cast<T*>(pool->allocate());
  }
  void deallocate(T* block, size_t n) noexcept {
    if (n != 1) return std::allocator<T>().deallocate(block, n);
    pool->deallocate(block);
  }
  template <class U>
  bool operator==(const LeaseAllocator<U>& other) const {
    return pool == other.pool;
  }

  std::shared_ptr<LeasePool> pool;
};

}  // namespace mrpc::client
