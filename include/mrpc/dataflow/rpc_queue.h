// RpcQueue: a first-in first-out queue of RPCs that keeps its storage, so that steady traffic
// through a graph stage allocates nothing (a std::deque allocates a new block every few dozen
// pushes as it moves along). A ring of power-of-two capacity that doubles when full and never
// shrinks while it lives: it holds at most what waited at its stage at once.
// Threads: one owner (the graph's runtime thread), like the Graph that holds it.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

#include "mrpc/dataflow/operator.h"

namespace mrpc {

class RpcQueue {
 public:
  RpcQueue() = default;
  RpcQueue(RpcQueue&& other) noexcept
      : slots_(std::move(other.slots_)),
        head_(std::exchange(other.head_, 0)),
        size_(std::exchange(other.size_, 0)) {}
  RpcQueue& operator=(RpcQueue&&) = delete;
  RpcQueue(const RpcQueue&) = delete;

  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }

  void push_back(RpcPtr rpc) {
    if (size_ == slots_.size()) grow();
    slots_[(head_ + size_) & (slots_.size() - 1)] = std::move(rpc);
    ++size_;
  }
  // The oldest; the queue is not empty.
  RpcPtr pop_front() {
    RpcPtr rpc = std::move(slots_[head_]);
    head_ = (head_ + 1) & (slots_.size() - 1);
    --size_;
    return rpc;
  }
  // Hands every RPC, oldest first, to `sink` (the storage is kept). `sink` may push onto this
  // queue: what it pushes stays, the only RPCs left afterwards.
  template <class Sink>
  void drain(Sink&& sink) {
    for (size_t n = size_; n > 0; --n) sink(pop_front());
  }

 private:
  void grow() {
    std::vector<RpcPtr> larger(slots_.empty() ? 16 : 2 * slots_.size());
    for (size_t i = 0; i < size_; ++i)
      larger[i] = std::move(slots_[(head_ + i) & (slots_.size() - 1)]);
    slots_ = std::move(larger);
    head_ = 0;
  }

  std::vector<RpcPtr> slots_;  // capacity: a power of two, or empty
  size_t head_ = 0;
  size_t size_ = 0;
};

}  // namespace mrpc
