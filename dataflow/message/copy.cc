// copy_message: measure, allocate once, copy (docs/message-layout.md, "How the daemon copies an
// untrusted message"); copy_message_to may first try the copy alone, into a block given up front.
// The source is app-writable shared memory: every value is loaded once into private memory (a
// reference into a local, a body into the destination) and only the loaded copy is checked and
// used, so a concurrent writer can make the copy fail, never make it read or write out of bounds.
#include "mrpc/message/copy.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "mrpc/message/layout.h"
#include "mrpc/message/region_allocator.h"

namespace mrpc {
namespace {

uint64_t round8(uint64_t value) {
  return (value + 7) & ~uint64_t{7};
}

template <class T>
T load(const std::byte* at) {
  T value;
  std::memcpy(&value, at, sizeof(T));
  return value;
}

template <class T>
void store(std::byte* at, const T& value) {
  std::memcpy(at, &value, sizeof(T));
}

bool presence_bit(const std::byte* body, int32_t bit) {
  const uint32_t word = load<uint32_t>(body + 4 * static_cast<uint32_t>(bit / 32));
  return ((word >> (bit % 32)) & 1u) != 0;
}

Status invalid(std::string what) {
  return Status(StatusCode::kInvalidArgument, std::move(what));
}

bool is_reference(const FieldLayout& field) {
  return field.repeated || field.kind == FieldKind::kString || field.kind == FieldKind::kBytes ||
         field.kind == FieldKind::kMessage;
}

// The member of oneof `oneof` whose number a body's case holds: null for none set,
// INVALID_ARGUMENT for a case that names no member. One binary search, whatever the member count.
Expected<const FieldLayout*> active_member(const MessageLayout& layout, int32_t oneof_index,
                                           const std::byte* body) {
  const OneofLayout& oneof = layout.oneofs()[static_cast<size_t>(oneof_index)];
  const uint32_t number = load<uint32_t>(body + oneof.case_offset);
  if (number == 0) return static_cast<const FieldLayout*>(nullptr);
  const FieldLayout* member = layout.oneof_member(oneof, number);
  if (member == nullptr) {
    return invalid(fmt::format("{}: oneof {} case {} is not one of its fields", layout.full_name(),
                               oneof.name, number));
  }
  return member;
}

// The walk returns false on the first error and keeps it in error_ (a Status per step would cost
// more than the step: this is on every delivery's path).
class Copier {
 public:
  // `one_pass`: pass 2 alone, into a block that may be too small (take() then fails and keeps no
  // error: the caller runs the two passes), each step counting twice (as two passes count it).
  Copier(ConstRegion source, const CopyLimits& limits, bool one_pass = false)
      : source_(source), limits_(limits), one_pass_(one_pass) {}

  // ---- pass 1: how many bytes the copy takes ----
  // Reads the source in place: each reference is loaded once, then checked, then followed. A
  // concurrent writer can only make the estimate wrong, which pass 2 detects.
  bool measure_message(const MessageLayout& layout, uint64_t offset, uint32_t depth) {
    return check_depth(layout, depth) &&
           check_range(layout, offset, layout.body_size(), "message body") &&
           add(layout.body_size()) && measure_body(layout, source_.base + offset, depth);
  }

  // ---- pass 2: copy into [cursor, end) of the destination ----
  // The copy's offset in the destination, in `at`.
  bool copy_message(const MessageLayout& layout, uint64_t offset, uint32_t depth, uint64_t& at) {
    if (!check_depth(layout, depth) ||
        !check_range(layout, offset, layout.body_size(), "message body") ||
        !take(layout.body_size(), at))
      return false;
    std::memcpy(destination_.base + at, source_.base + offset, layout.body_size());
    return copy_body(layout, destination_.base + at, depth);
  }

  void start_copy(MutableRegion destination, uint64_t start, uint64_t bytes) {
    destination_ = destination;
    start_ = start;
    cursor_ = start;
    end_ = start + bytes;
  }
  uint64_t measured() const { return total_; }
  uint64_t work() const { return work_; }
  // Bytes of the destination the copy took, from start_copy's start.
  uint64_t copied_bytes() const { return cursor_ - start_; }
  Status take_error() { return std::move(error_); }

 private:
  [[gnu::cold, gnu::noinline]] bool fail(Status status) {
    error_ = std::move(status);
    return false;
  }

  bool check_depth(const MessageLayout& layout, uint32_t depth) {
    return depth < limits_.max_nesting || depth_error(layout);
  }
  [[gnu::cold, gnu::noinline]] bool depth_error(const MessageLayout& layout) {
    return fail(
        invalid(fmt::format("{}: messages nested deeper than the limit of {} "
                            "(max_nesting; a reference cycle looks like this too)",
                            layout.full_name(), limits_.max_nesting)));
  }

  bool check_range(const MessageLayout& layout, uint64_t offset, uint64_t bytes,
                   std::string_view what) {
    return (offset <= source_.size && bytes <= source_.size - offset) ||
           range_error(layout, offset, bytes, what);
  }
  [[gnu::cold, gnu::noinline]] bool range_error(const MessageLayout& layout, uint64_t offset,
                                                uint64_t bytes, std::string_view what) {
    return fail(
        invalid(fmt::format("{}: {} at offset {} of {} bytes is outside the source region of "
                            "{} bytes",
                            layout.full_name(), what, offset, bytes, source_.size)));
  }

  // One step of work (a body, a reference or a oneof case): bounded per walk by max_work (a
  // one-pass copy that fails and is made again by two passes may take up to 1.5x it in all).
  bool step() {
    work_ += one_pass_ ? 2 : 1;
    return work_ <= limits_.max_work || work_error();
  }
  [[gnu::cold, gnu::noinline]] bool work_error() {
    return fail(Status(StatusCode::kResourceExhausted,
                       fmt::format("copying the message took more than the limit of {} steps "
                                   "(max_work)",
                                   limits_.max_work)));
  }

  // The field of `reference` to follow in `body` (in `field`; null when it holds nothing to
  // follow).
  bool followed(const MessageLayout& layout, const BodyReference& reference, const std::byte* body,
                const FieldLayout*& field) {
    if (reference.oneof == kNoOneof) [[likely]] {
      const FieldLayout& plain = layout.fields()[reference.field];
      field = plain.presence_bit != kNoPresenceBit && !presence_bit(body, plain.presence_bit)
                  ? nullptr
                  : &plain;
      return true;
    }
    return followed_oneof(layout, reference, body, field);
  }
  [[gnu::noinline]] bool followed_oneof(const MessageLayout& layout, const BodyReference& reference,
                                        const std::byte* body, const FieldLayout*& field) {
    auto member = active_member(layout, reference.oneof, body);
    if (!member.ok()) return fail(member.status());
    field = *member != nullptr && is_reference(**member) ? *member : nullptr;
    return true;
  }

  bool add(uint64_t bytes) {
    total_ += round8(bytes);
    return total_ <= limits_.max_message_bytes || size_error();
  }
  [[gnu::cold, gnu::noinline]] bool size_error() {
    return fail(Status(StatusCode::kResourceExhausted,
                       fmt::format("message larger than the limit of {} bytes (max_message_bytes)",
                                   limits_.max_message_bytes)));
  }

  // Bytes an array of `field` takes: `count` elements.
  static uint64_t array_bytes(const FieldLayout& field, uint32_t count) {
    return static_cast<uint64_t>(count) * field.element_size;
  }

  bool measure_body(const MessageLayout& layout, const std::byte* body, uint32_t depth) {
    if (!step()) return false;
    for (const BodyReference& reference : layout.body_references()) {
      const FieldLayout* active = nullptr;
      if (!step() || !followed(layout, reference, body, active)) return false;
      if (active == nullptr) continue;
      const FieldLayout& field = *active;
      const RegionRef ref = load<RegionRef>(body + field.offset);
      if (!field.repeated) {
        const bool measured =
            field.kind == FieldKind::kMessage
                ? measure_message(*field.message, ref.offset, depth + 1)
                : check_range(layout, ref.offset, ref.size, field.name) && add(ref.size);
        if (!measured) return false;
        continue;
      }
      const uint64_t bytes = array_bytes(field, ref.size);
      if (!check_range(layout, ref.offset, bytes, field.name) || !add(bytes)) return false;
      if (field.kind == FieldKind::kString || field.kind == FieldKind::kBytes) {
        for (uint32_t i = 0; i < ref.size; ++i) {
          const RegionRef element =
              load<RegionRef>(source_.base + ref.offset + uint64_t{i} * sizeof(RegionRef));
          if (!step() || !check_range(layout, element.offset, element.size, field.name) ||
              !add(element.size))
            return false;
        }
      } else if (field.kind == FieldKind::kMessage) {
        if (!check_depth(*field.message, depth + 1)) return false;
        const uint32_t element_size = field.message->body_size();
        for (uint32_t i = 0; i < ref.size; ++i) {
          if (!measure_body(*field.message, source_.base + ref.offset + uint64_t{i} * element_size,
                            depth + 1))
            return false;
        }
      }
    }
    const RegionRef unknown = load<RegionRef>(body + layout.unknown_fields_offset());
    return check_range(layout, unknown.offset, unknown.size, "unknown fields") && add(unknown.size);
  }

  bool take(uint64_t bytes, uint64_t& at) {
    const uint64_t rounded = round8(bytes);
    if (rounded > end_ - cursor_) {
      if (one_pass_) return false;  // out of room: the caller measures and copies again
      return fail(
          invalid("the message changed while it was copied (it no longer fits what was "
                  "measured)"));
    }
    at = cursor_;
    cursor_ += rounded;
    return true;
  }

  // Copies `bytes` from the source at `ref` into a new piece of the block; `copy` is the
  // reference the copy stores.
  bool copy_bytes(const MessageLayout& layout, const RegionRef& ref, uint64_t bytes,
                  std::string_view what, RegionRef& copy) {
    // Checked also when empty, as pass 1 checks it (so one pass refuses what two would).
    if (!check_range(layout, ref.offset, bytes, what)) return false;
    if (ref.size == 0) {
      copy = RegionRef{0, 0, 0};
      return true;
    }
    uint64_t at = 0;
    if (!take(bytes, at)) return false;
    std::memcpy(destination_.base + at, source_.base + ref.offset, bytes);
    copy = RegionRef{at, ref.size, ref.size};
    return true;
  }

  // `body` is already in the destination (only the daemon writes there): read it, follow its
  // references in the source, rewrite them to point at their copies.
  bool copy_body(const MessageLayout& layout, std::byte* body, uint32_t depth) {
    if (!step()) return false;
    for (const BodyReference& reference : layout.body_references()) {
      const FieldLayout* active = nullptr;
      if (!step() || !followed(layout, reference, body, active)) return false;
      if (active == nullptr) {
        // Not set: never followed, and the stale reference is not passed on (a oneof's storage
        // may hold a scalar member, so it is left as it is).
        if (reference.oneof == kNoOneof) {
          store(body + layout.fields()[reference.field].offset, RegionRef{0, 0, 0});
        }
        continue;
      }
      const FieldLayout& field = *active;
      std::byte* slot = body + field.offset;
      const RegionRef ref = load<RegionRef>(slot);
      if (!field.repeated && field.kind == FieldKind::kMessage) {
        uint64_t copied = 0;
        if (!copy_message(*field.message, ref.offset, depth + 1, copied)) return false;
        store(slot, RegionRef{copied, field.message->body_size(), field.message->body_size()});
        continue;
      }
      const uint64_t bytes = field.repeated ? array_bytes(field, ref.size) : ref.size;
      RegionRef copied;
      if (!copy_bytes(layout, ref, bytes, field.name, copied)) return false;
      store(slot, copied);
      // Also for an empty array, as pass 1 checks it (so one pass refuses what two would).
      if (field.repeated && field.kind == FieldKind::kMessage &&
          !check_depth(*field.message, depth + 1))
        return false;
      if (!field.repeated || copied.size == 0) continue;
      std::byte* array = destination_.base + copied.offset;
      if (field.kind == FieldKind::kString || field.kind == FieldKind::kBytes) {
        for (uint32_t i = 0; i < copied.size; ++i) {
          std::byte* element_slot = array + uint64_t{i} * sizeof(RegionRef);
          const RegionRef element = load<RegionRef>(element_slot);
          RegionRef element_copy;
          if (!step() || !copy_bytes(layout, element, element.size, field.name, element_copy))
            return false;
          store(element_slot, element_copy);
        }
      } else if (field.kind == FieldKind::kMessage) {
        for (uint32_t i = 0; i < copied.size; ++i) {
          if (!copy_body(*field.message, array + uint64_t{i} * field.element_size, depth + 1))
            return false;
        }
      }
    }
    std::byte* unknown_slot = body + layout.unknown_fields_offset();
    const RegionRef unknown = load<RegionRef>(unknown_slot);
    RegionRef copied;
    if (!copy_bytes(layout, unknown, unknown.size, "unknown fields", copied)) return false;
    store(unknown_slot, copied);
    return true;
  }

  ConstRegion source_;
  CopyLimits limits_;
  uint64_t total_ = 0;
  uint64_t work_ = 0;
  const bool one_pass_;
  MutableRegion destination_;
  uint64_t start_ = 0;
  uint64_t cursor_ = 0;
  uint64_t end_ = 0;
  Status error_;
};

}  // namespace

namespace {
// Pass 1, then `place(bytes)` (the destination block's region and its start, or the error), then
// pass 2; `unplace(start)` when pass 2 fails.
template <class Place, class Unplace>
Expected<uint64_t> measure_and_copy(const MessageLayout& layout, ConstRegion source,
                                    uint64_t source_offset, const CopyLimits& limits,
                                    CopyStats* stats, Place place, Unplace unplace) {
  Copier copier(source, limits);
  struct Report {
    const Copier& copier;
    CopyStats* stats;
    ~Report() {
      if (stats == nullptr) return;
      stats->work = copier.work();
      stats->bytes = copier.copied_bytes();
      stats->passes = 2;
    }
  } report{copier, stats};
  if (!copier.measure_message(layout, source_offset, 0)) return copier.take_error();
  const uint64_t bytes = copier.measured();
  MutableRegion destination;
  uint64_t start = 0;
  if (Status placed = place(bytes, destination, start); !placed.ok()) return placed;
  copier.start_copy(destination, start, bytes);
  uint64_t root = 0;
  if (!copier.copy_message(layout, source_offset, 0, root)) {
    unplace(start);
    return copier.take_error();
  }
  return root;
}
}  // namespace

Expected<uint64_t> copy_message(const MessageLayout& layout, ConstRegion source,
                                uint64_t source_offset, MutableRegion destination,
                                RegionAllocator& destination_allocator, const CopyLimits& limits,
                                CopyStats* stats) {
  auto place = [&](uint64_t bytes, MutableRegion& region, uint64_t& start) {
    auto block = destination_allocator.allocate(bytes, MessageLayout::kAlignment);
    if (!block.ok()) return block.status();
    if (*block > destination.size || bytes > destination.size - *block) {
      (void)destination_allocator.free(*block);
      return Status(StatusCode::kInternal,
                    fmt::format("the destination allocator ({} bytes) does not match the "
                                "destination region ({} bytes)",
                                destination_allocator.region_bytes(), destination.size));
    }
    region = destination;
    start = *block;
    return Status();
  };
  auto unplace = [&](uint64_t start) { (void)destination_allocator.free(start); };
  return measure_and_copy(layout, source, source_offset, limits, stats, place, unplace);
}

Expected<uint64_t> copy_message_to(const MessageLayout& layout, ConstRegion source,
                                   uint64_t source_offset, ReserveCopy reserve, void* context,
                                   const CopyLimits& limits, CopyStats* stats,
                                   uint64_t first_try_bytes) {
  if (first_try_bytes != 0) {
    const MutableRegion block = reserve(context, first_try_bytes);
    if (block.base != nullptr && block.size >= first_try_bytes) {
      Copier copier(source, limits, /*one_pass=*/true);
      // Never more than max_message_bytes: what fits was within the limit pass 1 enforces.
      copier.start_copy(block, 0, std::min(first_try_bytes, limits.max_message_bytes));
      uint64_t root = 0;
      if (copier.copy_message(layout, source_offset, 0, root)) {
        if (stats != nullptr) *stats = CopyStats{copier.work(), copier.copied_bytes(), 1};
        return root;
      }
      // Out of room, or refused: the two passes decide, and say what they would have said.
    }
  }
  auto place = [&](uint64_t bytes, MutableRegion& region, uint64_t& start) {
    region = reserve(context, bytes);
    start = 0;
    if (region.base == nullptr || region.size < bytes) {
      return Status(
          StatusCode::kResourceExhausted,
          fmt::format("no block of {} bytes for the copy of {}", bytes, layout.full_name()));
    }
    return Status();
  };
  return measure_and_copy(layout, source, source_offset, limits, stats, place, [](uint64_t) {});
}

}  // namespace mrpc
