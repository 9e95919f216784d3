// MessageRef: where the root of one message lives, untyped. Generated message classes
// (protoc-gen-mrpc) wrap one; libmrpc passes them between apps' code and the rings.
// A ref does not own the message: the heap (send side) or a lease (receive side) does.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mrpc {

class ShmHeap;  // the app's allocator over its send heap: mrpc/message/shm_heap.h

struct MessageRef {
  std::byte* base = nullptr;  // start of the region, as mapped in this process
  uint64_t region_size = 0;
  uint64_t offset = 0;      // root of the message within the region
  ShmHeap* heap = nullptr;  // the heap it may grow in; null for a read-only received message
};

}  // namespace mrpc
