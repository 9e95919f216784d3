#include "shard_link.h"

#include <bit>

#include "mrpc/dataflow/runtime.h"

namespace mrpc {

ShardLink::ShardLink(uint32_t capacity)
    : slots_(std::bit_ceil(std::max<uint32_t>(capacity, 2))), mask_(slots_.size() - 1) {}

bool ShardLink::try_push(ShardMessage& message) {
  const uint64_t tail = tail_.load(std::memory_order_relaxed);
  if (tail - head_.load(std::memory_order_acquire) == slots_.size()) return false;
  slots_[tail & mask_] = std::move(message);
  // seq_cst, with the doorbell's: either the consumer sees this message before it sleeps, or
  // ring() sees it asleep (Dekker's pattern, no fence: TSan does not model fences).
  tail_.store(tail + 1, std::memory_order_seq_cst);
  return true;
}

void ShardLink::push(ShardMessage message) {
  if (!overflow_.empty() || !try_push(message)) overflow_.push_back(std::move(message));
}

bool ShardLink::flush() {
  while (!overflow_.empty() && try_push(overflow_.front())) overflow_.pop_front();
  return !overflow_.empty();
}

size_t ShardLink::pop(std::vector<ShardMessage>& out, size_t max) {
  uint64_t head = head_.load(std::memory_order_relaxed);
  const uint64_t tail = tail_.load(std::memory_order_acquire);
  size_t popped = 0;
  while (head != tail && popped < max) {
    out.push_back(std::move(slots_[head & mask_]));
    ++head;
    ++popped;
  }
  head_.store(head, std::memory_order_release);
  return popped;
}

ShardInbox::ShardInbox(uint32_t shard_count, uint32_t capacity, Runtime& runtime)
    : runtime_(runtime) {
  for (uint32_t i = 0; i < shard_count; ++i)
    links_.push_back(std::make_unique<ShardLink>(capacity));
}

void ShardInbox::ring() {
  // Pairs with prepare_to_sleep: either the sleeper sees the message, or this sees it asleep.
  if (sleeping_.load(std::memory_order_seq_cst) &&
      sleeping_.exchange(false, std::memory_order_seq_cst)) {
    wakeups_.fetch_add(1, std::memory_order_relaxed);
    runtime_.wake();
  }
}

bool ShardInbox::prepare_to_sleep() {
  sleeping_.store(true, std::memory_order_seq_cst);
  for (const auto& link : links_) {
    if (!link->empty()) {
      sleeping_.store(false, std::memory_order_relaxed);
      return false;
    }
  }
  return true;
}

}  // namespace mrpc
