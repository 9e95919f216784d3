// ShmHeap: per-message arenas of chunks carved from a RegionAllocator, under one mutex. Every
// lookup is by offset, none hashes: arenas live in a slab indexed by id, and a table with two
// entries per kGranule bytes of the heap names the arena of the chunk that starts in that granule
// and of the one that covers it from an earlier granule. Chunks are at least kGranule long, so no
// two start in one granule: an offset's arena is one of its granule's two, confirmed against that
// arena's chunks.
#include "mrpc/message/shm_heap.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "mrpc/base/check.h"
#include "mrpc/base/limits.h"
#include "mrpc/message/layout.h"
#include "mrpc/message/region_allocator.h"

namespace mrpc {
namespace {

constexpr uint64_t kFirstChunkSlack = limits::kHeapFirstChunkSlackBytes;
constexpr uint64_t kMaxChunkGrowth = limits::kHeapMaxChunkGrowthBytes;
// The granule of the offset table, and the shortest chunk.
constexpr uint64_t kGranule = 256;
static_assert(kFirstChunkSlack >= kGranule, "a first chunk must not need rounding up");

uint64_t round_up(uint64_t value, uint64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

struct Chunk {
  uint64_t start = 0;
  uint64_t end = 0;
  uint64_t cursor = 0;
};

struct Arena {
  uint64_t root = kNoOffset;  // kNoOffset while the arena is free
  std::vector<Chunk> chunks;  // the last is the one being filled
  bool failed = false;
  const char* failed_field = nullptr;  // the first write lost to a full heap, if one was named
};

// Zero-filled memory from calloc: the pages of a large table are only touched where the heap is.
struct FreeDeleter {
  void operator()(uint32_t* table) const { std::free(table); }
};
using Table = std::unique_ptr<uint32_t[], FreeDeleter>;

Table zeroed_table(uint64_t entries) {
  auto* table = static_cast<uint32_t*>(std::calloc(entries == 0 ? 1 : entries, sizeof(uint32_t)));
  MRPC_ASSERT(table != nullptr, "no memory for a send heap's table of {} granules", entries);
  return Table(table);
}

}  // namespace

struct ShmHeap::State {
  mutable std::mutex mutex;
  RegionAllocator allocator;
  uint64_t heap_bytes;
  // Arenas by id - 1; freed ones (root kNoOffset) keep their chunk vectors' capacity and are
  // reused from free_ids: building and freeing a message in steady state allocates nothing.
  std::vector<std::unique_ptr<Arena>> arenas;
  std::vector<uint32_t> free_ids;
  uint64_t live = 0;
  // Per granule: the id of the arena whose chunk starts in it, and of the arena whose chunk
  // (started before it) covers its first byte; 0: none.
  Table starting;
  Table covering;

  explicit State(uint64_t bytes)
      : allocator(bytes),
        heap_bytes(bytes),
        starting(zeroed_table((bytes + kGranule - 1) / kGranule)),
        covering(zeroed_table((bytes + kGranule - 1) / kGranule)) {}

  static bool contains(const Arena& arena, uint64_t offset) {
    for (const Chunk& chunk : arena.chunks)
      if (offset >= chunk.start && offset < chunk.end) return true;
    return false;
  }

  Arena* arena_containing(uint64_t offset) const {
    if (offset >= heap_bytes) return nullptr;
    const uint64_t granule = offset / kGranule;
    for (const uint32_t id : {starting[granule], covering[granule]}) {
      if (id != 0 && contains(*arenas[id - 1], offset)) return arenas[id - 1].get();
    }
    return nullptr;
  }

  // The live arena whose root is `root`, or null.
  Arena* arena_rooted_at(uint64_t root) const {
    if (root >= heap_bytes) return nullptr;
    const uint32_t id = starting[root / kGranule];
    if (id == 0 || arenas[id - 1]->root != root) return nullptr;
    return arenas[id - 1].get();
  }

  uint32_t id_of(const Arena& arena) const {
    return starting[arena.chunks.front().start / kGranule];
  }

  void mark(const Chunk& chunk, uint32_t id) {
    const uint64_t first = chunk.start / kGranule;
    const uint64_t last = (chunk.end - 1) / kGranule;
    starting[first] = id;
    for (uint64_t granule = first + 1; granule <= last; ++granule) covering[granule] = id;
  }

  bool add_chunk(Arena& arena, uint32_t id, uint64_t bytes) {
    bytes = std::max(bytes, kGranule);
    auto start = allocator.allocate(bytes, MessageLayout::kAlignment);
    if (!start.ok()) return false;
    arena.chunks.push_back(Chunk{*start, *start + bytes, *start});
    mark(arena.chunks.back(), id);
    return true;
  }

  // A free arena's id (grows the slab when none is free).
  uint32_t take_arena() {
    if (!free_ids.empty()) {
      const uint32_t id = free_ids.back();
      free_ids.pop_back();
      return id;
    }
    MRPC_ASSERT(arenas.size() < UINT32_MAX, "more live messages than arena ids");
    arenas.push_back(std::make_unique<Arena>());
    return static_cast<uint32_t>(arenas.size());
  }

  void return_arena(uint32_t id) {
    Arena& arena = *arenas[id - 1];
    for (const Chunk& chunk : arena.chunks) {
      mark(chunk, 0);
      Status freed = allocator.free(chunk.start);
      MRPC_ASSERT(freed.ok(), "chunk at {} of arena {}: {}", chunk.start, id, freed.to_string());
    }
    arena.chunks.clear();  // keeps its capacity
    arena.root = kNoOffset;
    arena.failed = false;
    arena.failed_field = nullptr;
    free_ids.push_back(id);
  }
};

ShmHeap::ShmHeap(std::byte* base, uint64_t size)
    : base_(base), size_(size), state_(std::make_unique<State>(size)) {}

ShmHeap::~ShmHeap() = default;

Expected<MessageRef> ShmHeap::new_message(uint32_t body_size) {
  std::lock_guard lock(state_->mutex);
  const uint32_t id = state_->take_arena();
  Arena& arena = *state_->arenas[id - 1];
  const uint64_t body = round_up(body_size == 0 ? 8 : body_size, 8);
  if (!state_->add_chunk(arena, id, body + kFirstChunkSlack) &&
      !state_->add_chunk(arena, id, body)) {
    state_->free_ids.push_back(id);
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("send heap full: no room for a new message of {} bytes ({} of {} "
                              "bytes in use)",
                              body, state_->allocator.used_bytes(), size_));
  }
  Chunk& chunk = arena.chunks.back();
  arena.root = chunk.start;
  chunk.cursor = chunk.start + body;
  std::memset(base_ + chunk.start, 0, body);
  ++state_->live;
  return MessageRef{base_, size_, arena.root, this};
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
    const uint32_t id = state_->id_of(*arena);
    if (bytes > size_ ||
        (!state_->add_chunk(*arena, id, wanted) && !state_->add_chunk(*arena, id, bytes + align))) {
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
  const Arena* arena = state_->arena_rooted_at(root_offset);
  if (arena == nullptr) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("offset {} is not the root of a live message", root_offset));
  }
  if (arena->failed) {
    if (arena->failed_field != nullptr) {
      return Status(StatusCode::kResourceExhausted,
                    fmt::format("send heap full while the message was built: the write of {} "
                                "(and any after it) was lost",
                                arena->failed_field));
    }
    return Status(StatusCode::kResourceExhausted,
                  "send heap full while the message was built; some fields were not set");
  }
  return Status();
}

Status ShmHeap::free_message(uint64_t root_offset) {
  std::lock_guard lock(state_->mutex);
  const Arena* arena = state_->arena_rooted_at(root_offset);
  if (arena == nullptr) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("offset {} is not the root of a live message", root_offset));
  }
  state_->return_arena(state_->id_of(*arena));
  --state_->live;
  return Status();
}

uint64_t ShmHeap::used_bytes() const {
  std::lock_guard lock(state_->mutex);
  return state_->allocator.used_bytes();
}

uint64_t ShmHeap::live_messages() const {
  std::lock_guard lock(state_->mutex);
  return state_->live;
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
