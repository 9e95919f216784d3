// ShmHeap: per-message arenas of chunks carved from a RegionAllocator, under one mutex.
#include "mrpc/message/shm_heap.h"

#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "mrpc/base/check.h"
#include "mrpc/base/limits.h"
#include "mrpc/message/layout.h"
#include "mrpc/message/region_allocator.h"

namespace mrpc {
namespace {

constexpr uint64_t kFirstChunkSlack = limits::kHeapFirstChunkSlackBytes;
constexpr uint64_t kMaxChunkGrowth = limits::kHeapMaxChunkGrowthBytes;

uint64_t round_up(uint64_t value, uint64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

struct Chunk {
  uint64_t start = 0;
  uint64_t end = 0;
  uint64_t cursor = 0;
};

struct Arena {
  uint64_t root = 0;
  std::vector<Chunk> chunks;  // the last is the one being filled
  bool failed = false;
  const char* failed_field = nullptr;  // the first write lost to a full heap, if one was named
};

}  // namespace

struct ShmHeap::State {
  mutable std::mutex mutex;
  RegionAllocator allocator;
  std::unordered_map<uint64_t, std::unique_ptr<Arena>> arenas;  // by root offset
  std::vector<std::unique_ptr<Arena>> spare_arenas;             // freed, kept for reuse
  struct Owner {
    uint64_t end;
    Arena* arena;
  };
  std::map<uint64_t, Owner> chunk_owner;  // chunk start -> its end and arena

  explicit State(uint64_t bytes) : allocator(bytes) {}

  Arena* arena_containing(uint64_t offset) {
    auto it = chunk_owner.upper_bound(offset);
    if (it == chunk_owner.begin()) return nullptr;
    --it;
    return offset < it->second.end ? it->second.arena : nullptr;
  }

  bool add_chunk(Arena& arena, uint64_t bytes) {
    auto start = allocator.allocate(bytes, MessageLayout::kAlignment);
    if (!start.ok()) return false;
    arena.chunks.push_back(Chunk{*start, *start + bytes, *start});
    chunk_owner.emplace(*start, Owner{*start + bytes, &arena});
    return true;
  }
};

ShmHeap::ShmHeap(std::byte* base, uint64_t size)
    : base_(base), size_(size), state_(std::make_unique<State>(size)) {}

ShmHeap::~ShmHeap() = default;

Expected<MessageRef> ShmHeap::new_message(uint32_t body_size) {
  std::lock_guard lock(state_->mutex);
  std::unique_ptr<Arena> arena;
  if (state_->spare_arenas.empty()) {
    arena = std::make_unique<Arena>();
  } else {
    arena = std::move(state_->spare_arenas.back());
    state_->spare_arenas.pop_back();
  }
  const uint64_t body = round_up(body_size == 0 ? 8 : body_size, 8);
  if (!state_->add_chunk(*arena, body + kFirstChunkSlack) && !state_->add_chunk(*arena, body)) {
    state_->spare_arenas.push_back(std::move(arena));
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("send heap full: no room for a new message of {} bytes ({} of {} "
                              "bytes in use)",
                              body, state_->allocator.used_bytes(), size_));
  }
  Chunk& chunk = arena->chunks.back();
  arena->root = chunk.start;
  chunk.cursor = chunk.start + body;
  std::memset(base_ + chunk.start, 0, body);
  const uint64_t root = arena->root;
  state_->arenas.emplace(root, std::move(arena));
  return MessageRef{base_, size_, root, this};
}

uint64_t ShmHeap::allocate(uint64_t owner_offset, uint64_t bytes, uint64_t align, bool zero) {
  MRPC_ASSERT(align != 0 && (align & (align - 1)) == 0 && align <= 4096, "align = {}", align);
  std::lock_guard lock(state_->mutex);
  Arena* arena = state_->arena_containing(owner_offset);
  if (arena == nullptr) return kNoOffset;
  if (arena->failed) return kNoOffset;
  Chunk* chunk = &arena->chunks.back();
  uint64_t start = round_up(chunk->cursor, align);
  if (start > chunk->end || bytes > chunk->end - start) {
    const uint64_t previous = chunk->end - chunk->start;
    const uint64_t wanted = std::max(std::min(previous * 2, kMaxChunkGrowth), bytes + align);
    if (bytes > size_ ||
        (!state_->add_chunk(*arena, wanted) && !state_->add_chunk(*arena, bytes + align))) {
      arena->failed = true;
      return kNoOffset;
    }
    chunk = &arena->chunks.back();
    start = round_up(chunk->cursor, align);
  }
  chunk->cursor = start + bytes;
  if (zero) std::memset(base_ + start, 0, bytes);
  return start;
}

void ShmHeap::mark_failed(uint64_t owner_offset) {
  std::lock_guard lock(state_->mutex);
  if (Arena* arena = state_->arena_containing(owner_offset)) arena->failed = true;
}

void ShmHeap::note_failed_field(uint64_t owner_offset, const char* field) {
  std::lock_guard lock(state_->mutex);
  Arena* arena = state_->arena_containing(owner_offset);
  if (arena == nullptr || !arena->failed) return;
  if (arena->failed_field == nullptr) arena->failed_field = field;
}

Status ShmHeap::message_status(uint64_t root_offset) const {
  std::lock_guard lock(state_->mutex);
  auto it = state_->arenas.find(root_offset);
  if (it == state_->arenas.end()) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("offset {} is not the root of a live message", root_offset));
  }
  if (it->second->failed) {
    if (it->second->failed_field != nullptr) {
      return Status(StatusCode::kResourceExhausted,
                    fmt::format("send heap full while the message was built: the write of {} "
                                "(and any after it) was lost",
                                it->second->failed_field));
    }
    return Status(StatusCode::kResourceExhausted,
                  "send heap full while the message was built; some fields were not set");
  }
  return Status();
}

Status ShmHeap::free_message(uint64_t root_offset) {
  std::lock_guard lock(state_->mutex);
  auto it = state_->arenas.find(root_offset);
  if (it == state_->arenas.end()) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("offset {} is not the root of a live message", root_offset));
  }
  for (const Chunk& chunk : it->second->chunks) {
    state_->chunk_owner.erase(chunk.start);
    Status freed = state_->allocator.free(chunk.start);
    MRPC_ASSERT(freed.ok(), "chunk at {} of message {}: {}", chunk.start, root_offset,
                freed.to_string());
  }
  if (state_->spare_arenas.size() < limits::kHeapSpareArenas) {
    it->second->chunks.clear();
    it->second->failed = false;
    it->second->failed_field = nullptr;
    state_->spare_arenas.push_back(std::move(it->second));
  }
  state_->arenas.erase(it);
  return Status();
}

uint64_t ShmHeap::used_bytes() const {
  std::lock_guard lock(state_->mutex);
  return state_->allocator.used_bytes();
}

uint64_t ShmHeap::live_messages() const {
  std::lock_guard lock(state_->mutex);
  return state_->arenas.size();
}

Status sendable(const MessageRef& message) {
  if (message.heap == nullptr) {
    return Status(StatusCode::kFailedPrecondition, "the message is not in a send heap");
  }
  if (message.offset == kNoOffset) {
    return Status(StatusCode::kResourceExhausted, "send heap full: the message was not created");
  }
  return message.heap->message_status(message.offset);
}

}  // namespace mrpc
