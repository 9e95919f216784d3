// ShmHeap: the app's allocator over its shared-memory send heap (libmrpc maps the heap and builds
// one; tests build one over plain memory). Thread-safe: apps build messages on many threads while
// the library frees sent ones on its own thread.
//
// Each message root owns an arena: a list of chunks of the heap in which the root body, its
// strings, arrays and sub-messages are bump-allocated. free_message(root) returns every chunk of
// the arena at once. The arenas' bookkeeping lives in this object (private memory), never in the
// heap, so the daemon (which maps the heap read-only) and the heap's contents cannot corrupt it.
//
// Running out of heap is not an exception: allocate() returns kNoOffset and marks the message
// failed; generated setters then do nothing, and sendable() reports RESOURCE_EXHAUSTED.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "mrpc/base/expected.h"
#include "mrpc/base/status.h"
#include "mrpc/message/message_ref.h"

namespace mrpc {

// "No block / no message" (the same value as shm::kNoOffset).
inline constexpr uint64_t kNoOffset = UINT64_MAX;

class ShmHeap {
 public:
  // Manages [base, base + size). The memory must outlive the heap; it is not touched here until
  // a message is created in it.
  ShmHeap(std::byte* base, uint64_t size);
  ~ShmHeap();
  ShmHeap(const ShmHeap&) = delete;
  ShmHeap& operator=(const ShmHeap&) = delete;

  std::byte* base() const { return base_; }
  uint64_t size() const { return size_; }

  // A new message: a zeroed body of `body_size` bytes, root of a new arena.
  // RESOURCE_EXHAUSTED when the heap has no room.
  Expected<MessageRef> new_message(uint32_t body_size);

  // `bytes` inside the arena of the message whose storage contains `owner_offset` (the root or
  // any part of it). kNoOffset if the heap is full (the message is then marked failed) or
  // `owner_offset` is not inside a live message. `align` is a power of two, at most 4096.
  uint64_t allocate(uint64_t owner_offset, uint64_t bytes, uint64_t align, bool zero);

  // Marks the message containing `owner_offset` failed (e.g. a size that cannot be represented).
  void mark_failed(uint64_t owner_offset);

  // A generated writer of `field` (a full field name with static storage: generated code passes a
  // literal) did not write into the message containing `owner_offset`. If the heap has marked
  // that message failed, the first field noted is the one message_status() names; otherwise
  // (an index out of range, a stale view) nothing changes.
  void note_failed_field(uint64_t owner_offset, const char* field);

  // OK, or RESOURCE_EXHAUSTED if a part of the message could not be allocated (naming the first
  // field whose write was lost, when a generated setter recorded it), or
  // INVALID_ARGUMENT if `root_offset` is not the root of a live message of this heap.
  Status message_status(uint64_t root_offset) const;

  // Frees the whole tree of the message. INVALID_ARGUMENT (and no change) if `root_offset` is not
  // the root of a live message.
  Status free_message(uint64_t root_offset);

  uint64_t used_bytes() const;  // bytes in chunks of live messages
  uint64_t live_messages() const;

 private:
  struct State;
  std::byte* base_;
  uint64_t size_;
  std::unique_ptr<State> state_;
};

// Whether a message built in a heap may be sent: OK, RESOURCE_EXHAUSTED for a message that ran
// out of heap while being built (or could not even be created), FAILED_PRECONDITION for a message
// that is not in a heap (a received one), INVALID_ARGUMENT for a root its heap does not know.
Status sendable(const MessageRef& message);

}  // namespace mrpc
