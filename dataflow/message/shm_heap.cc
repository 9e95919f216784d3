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
  using ArenaMap = std::unordered_map<uint64_t, std::unique_ptr<Arena>>;
  ArenaMap arenas;  // by root offset
  struct Owner {
    uint64_t end;
    Arena* arena;
  };
  using OwnerMap = std::map<uint64_t, Owner>;
  OwnerMap chunk_owner;  // chunk start -> its end and arena
  // Map nodes of freed messages (with their Arena), kept for reuse: building and freeing a
  // message in steady state allocates nothing (libmrpc's per-call path builds one per call).
  std::vector<ArenaMap::node_type> spare_arena_nodes;  // at most kHeapSpareArenas
  std::vector<OwnerMap::node_type> spare_owner_nodes;  // at most kSpareOwnerNodes
  static constexpr size_t kSpareOwnerNodes = 4 * limits::kHeapSpareArenas;

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
    if (spare_owner_nodes.empty()) {
      chunk_owner.emplace(*start, Owner{*start + bytes, &arena});
    } else {
      OwnerMap::node_type node = std::move(spare_owner_nodes.back());
      spare_owner_nodes.pop_back();
      node.key() = *start;
      node.mapped() = Owner{*start + bytes, &arena};
      chunk_owner.insert(std::move(node));
    }
    return true;
  }
};

ShmHeap::ShmHeap(std::byte* base, uint64_t size)
    : base_(base), size_(size), state_(std::make_unique<State>(size)) {}

ShmHeap::~ShmHeap() = default;

Expected<MessageRef> ShmHeap::new_message(uint32_t body_size) {
  std::lock_guard lock(state_->mutex);
  State::ArenaMap::node_type node;  // a freed message's, reused
  std::unique_ptr<Arena> fresh;
  Arena* arena = nullptr;
  if (state_->spare_arena_nodes.empty()) {
    fresh = std::make_unique<Arena>();
    arena = fresh.get();
  } else {
    node = std::move(state_->spare_arena_nodes.back());
    state_->spare_arena_nodes.pop_back();
    arena = node.mapped().get();
  }
  const uint64_t body = round_up(body_size == 0 ? 8 : body_size, 8);
  if (!state_->add_chunk(*arena, body + kFirstChunkSlack) && !state_->add_chunk(*arena, body)) {
    if (node) state_->spare_arena_nodes.push_back(std::move(node));
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
  if (node) {
    node.key() = root;
    state_->arenas.insert(std::move(node));
  } else {
    state_->arenas.emplace(root, std::move(fresh));
  }
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
    State::OwnerMap::node_type owner = state_->chunk_owner.extract(chunk.start);
    if (owner && state_->spare_owner_nodes.size() < State::kSpareOwnerNodes)
      state_->spare_owner_nodes.push_back(std::move(owner));
    Status freed = state_->allocator.free(chunk.start);
    MRPC_ASSERT(freed.ok(), "chunk at {} of message {}: {}", chunk.start, root_offset,
                freed.to_string());
  }
  Arena& arena = *it->second;
  arena.chunks.clear();  // keeps its capacity
  arena.failed = false;
  arena.failed_field = nullptr;
  State::ArenaMap::node_type node = state_->arenas.extract(it);
  if (state_->spare_arena_nodes.size() < limits::kHeapSpareArenas)
    state_->spare_arena_nodes.push_back(std::move(node));
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
