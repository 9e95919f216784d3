// copy_message: measure, allocate once, copy (docs/message-layout.md, "How the daemon copies an
// untrusted message"). The source is app-writable shared memory: every value is loaded once into
// private memory (a reference into a local, a body into the destination) and only the loaded
// copy is checked and used, so a concurrent writer can make the copy fail, never make it read or
// write out of bounds.
#include "mrpc/message/copy.h"

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

class Copier {
 public:
  Copier(ConstRegion source, const CopyLimits& limits) : source_(source), limits_(limits) {}

  // ---- pass 1: how many bytes the copy takes ----
  // Reads the source in place: each reference is loaded once, then checked, then followed. A
  // concurrent writer can only make the estimate wrong, which pass 2 detects.
  Status measure_message(const MessageLayout& layout, uint64_t offset, uint32_t depth) {
    MRPC_TRY_STATUS(check_depth(layout, depth));
    MRPC_TRY_STATUS(check_range(layout, offset, layout.body_size(), "message body"));
    MRPC_TRY_STATUS(add(layout.body_size()));
    return measure_body(layout, source_.base + offset, depth);
  }

  // ---- pass 2: copy into [cursor, end) of the destination ----
  Expected<uint64_t> copy_message(const MessageLayout& layout, uint64_t offset, uint32_t depth) {
    MRPC_TRY_STATUS(check_depth(layout, depth));
    MRPC_TRY_STATUS(check_range(layout, offset, layout.body_size(), "message body"));
    auto at = take(layout.body_size());
    if (!at.ok()) return at.status();
    std::memcpy(destination_.base + *at, source_.base + offset, layout.body_size());
    MRPC_TRY_STATUS(copy_body(layout, destination_.base + *at, depth));
    return *at;
  }

  void start_copy(MutableRegion destination, uint64_t start, uint64_t bytes) {
    destination_ = destination;
    cursor_ = start;
    end_ = start + bytes;
  }
  uint64_t measured() const { return total_; }
  uint64_t work() const { return work_; }

 private:
  Status check_depth(const MessageLayout& layout, uint32_t depth) const {
    if (depth >= limits_.max_nesting) {
      return invalid(
          fmt::format("{}: messages nested deeper than the limit of {} "
                      "(max_nesting; a reference cycle looks like this too)",
                      layout.full_name(), limits_.max_nesting));
    }
    return Status();
  }

  Status check_range(const MessageLayout& layout, uint64_t offset, uint64_t bytes,
                     std::string_view what) const {
    if (offset > source_.size || bytes > source_.size - offset) {
      return invalid(
          fmt::format("{}: {} at offset {} of {} bytes is outside the source region of "
                      "{} bytes",
                      layout.full_name(), what, offset, bytes, source_.size));
    }
    return Status();
  }

  // One step of work (a body, a reference or a oneof case): bounded per call by max_work.
  Status step() {
    if (++work_ > limits_.max_work) {
      return Status(StatusCode::kResourceExhausted,
                    fmt::format("copying the message took more than the limit of {} steps "
                                "(max_work)",
                                limits_.max_work));
    }
    return Status();
  }

  // The field of `reference` to follow in `body`, or null when it holds nothing to follow.
  static Expected<const FieldLayout*> followed(const MessageLayout& layout,
                                               const BodyReference& reference,
                                               const std::byte* body) {
    if (reference.oneof == kNoOneof) {
      const FieldLayout& field = layout.fields()[reference.field];
      if (field.presence_bit != kNoPresenceBit && !presence_bit(body, field.presence_bit))
        return static_cast<const FieldLayout*>(nullptr);
      return &field;
    }
    auto member = active_member(layout, reference.oneof, body);
    if (!member.ok() || *member == nullptr || is_reference(**member)) return member;
    return static_cast<const FieldLayout*>(nullptr);
  }

  Status add(uint64_t bytes) {
    total_ += round8(bytes);
    if (total_ > limits_.max_message_bytes) {
      return Status(StatusCode::kResourceExhausted,
                    fmt::format("message larger than the limit of {} bytes (max_message_bytes)",
                                limits_.max_message_bytes));
    }
    return Status();
  }

  // Bytes an array of `field` takes: `count` elements.
  static uint64_t array_bytes(const FieldLayout& field, uint32_t count) {
    return static_cast<uint64_t>(count) * field.element_size;
  }

  Status measure_body(const MessageLayout& layout, const std::byte* body, uint32_t depth) {
    MRPC_TRY_STATUS(step());
    for (const BodyReference& reference : layout.body_references()) {
      MRPC_TRY_STATUS(step());
      auto active = followed(layout, reference, body);
      if (!active.ok()) return active.status();
      if (*active == nullptr) continue;
      const FieldLayout& field = **active;
      const RegionRef ref = load<RegionRef>(body + field.offset);
      if (!field.repeated) {
        if (field.kind == FieldKind::kMessage) {
          MRPC_TRY_STATUS(measure_message(*field.message, ref.offset, depth + 1));
        } else {
          MRPC_TRY_STATUS(check_range(layout, ref.offset, ref.size, field.name));
          MRPC_TRY_STATUS(add(ref.size));
        }
        continue;
      }
      const uint64_t bytes = array_bytes(field, ref.size);
      MRPC_TRY_STATUS(check_range(layout, ref.offset, bytes, field.name));
      MRPC_TRY_STATUS(add(bytes));
      if (field.kind == FieldKind::kString || field.kind == FieldKind::kBytes) {
        for (uint32_t i = 0; i < ref.size; ++i) {
          MRPC_TRY_STATUS(step());
          const RegionRef element =
              load<RegionRef>(source_.base + ref.offset + uint64_t{i} * sizeof(RegionRef));
          MRPC_TRY_STATUS(check_range(layout, element.offset, element.size, field.name));
          MRPC_TRY_STATUS(add(element.size));
        }
      } else if (field.kind == FieldKind::kMessage) {
        MRPC_TRY_STATUS(check_depth(*field.message, depth + 1));
        const uint32_t element_size = field.message->body_size();
        for (uint32_t i = 0; i < ref.size; ++i) {
          MRPC_TRY_STATUS(measure_body(
              *field.message, source_.base + ref.offset + uint64_t{i} * element_size, depth + 1));
        }
      }
    }
    const RegionRef unknown = load<RegionRef>(body + layout.unknown_fields_offset());
    MRPC_TRY_STATUS(check_range(layout, unknown.offset, unknown.size, "unknown fields"));
    return add(unknown.size);
  }

  Expected<uint64_t> take(uint64_t bytes) {
    const uint64_t rounded = round8(bytes);
    if (rounded > end_ - cursor_) {
      return invalid(
          "the message changed while it was copied (it no longer fits what was "
          "measured)");
    }
    const uint64_t at = cursor_;
    cursor_ += rounded;
    return at;
  }

  // Copies `bytes` from the source at `offset` into a new piece of the block; returns the
  // reference the copy stores.
  Expected<RegionRef> copy_bytes(const MessageLayout& layout, const RegionRef& ref, uint64_t bytes,
                                 std::string_view what) {
    if (ref.size == 0) return RegionRef{0, 0, 0};
    MRPC_TRY_STATUS(check_range(layout, ref.offset, bytes, what));
    auto at = take(bytes);
    if (!at.ok()) return at.status();
    std::memcpy(destination_.base + *at, source_.base + ref.offset, bytes);
    return RegionRef{*at, ref.size, ref.size};
  }

  // `body` is already in the destination (only the daemon writes there): read it, follow its
  // references in the source, rewrite them to point at their copies.
  Status copy_body(const MessageLayout& layout, std::byte* body, uint32_t depth) {
    MRPC_TRY_STATUS(step());
    for (const BodyReference& reference : layout.body_references()) {
      MRPC_TRY_STATUS(step());
      auto active = followed(layout, reference, body);
      if (!active.ok()) return active.status();
      if (*active == nullptr) {
        // Not set: never followed, and the stale reference is not passed on (a oneof's storage
        // may hold a scalar member, so it is left as it is).
        if (reference.oneof == kNoOneof) {
          store(body + layout.fields()[reference.field].offset, RegionRef{0, 0, 0});
        }
        continue;
      }
      const FieldLayout& field = **active;
      std::byte* slot = body + field.offset;
      const RegionRef ref = load<RegionRef>(slot);
      if (!field.repeated && field.kind == FieldKind::kMessage) {
        auto copied = copy_message(*field.message, ref.offset, depth + 1);
        if (!copied.ok()) return copied.status();
        store(slot, RegionRef{*copied, field.message->body_size(), field.message->body_size()});
        continue;
      }
      const uint64_t bytes = field.repeated ? array_bytes(field, ref.size) : ref.size;
      auto copied = copy_bytes(layout, ref, bytes, field.name);
      if (!copied.ok()) return copied.status();
      store(slot, *copied);
      if (!field.repeated || copied->size == 0) continue;
      std::byte* array = destination_.base + copied->offset;
      if (field.kind == FieldKind::kString || field.kind == FieldKind::kBytes) {
        for (uint32_t i = 0; i < copied->size; ++i) {
          MRPC_TRY_STATUS(step());
          std::byte* element_slot = array + uint64_t{i} * sizeof(RegionRef);
          const RegionRef element = load<RegionRef>(element_slot);
          auto element_copy = copy_bytes(layout, element, element.size, field.name);
          if (!element_copy.ok()) return element_copy.status();
          store(element_slot, *element_copy);
        }
      } else if (field.kind == FieldKind::kMessage) {
        MRPC_TRY_STATUS(check_depth(*field.message, depth + 1));
        for (uint32_t i = 0; i < copied->size; ++i) {
          MRPC_TRY_STATUS(
              copy_body(*field.message, array + uint64_t{i} * field.element_size, depth + 1));
        }
      }
    }
    std::byte* unknown_slot = body + layout.unknown_fields_offset();
    const RegionRef unknown = load<RegionRef>(unknown_slot);
    auto copied = copy_bytes(layout, unknown, unknown.size, "unknown fields");
    if (!copied.ok()) return copied.status();
    store(unknown_slot, *copied);
    return Status();
  }

  ConstRegion source_;
  CopyLimits limits_;
  uint64_t total_ = 0;
  uint64_t work_ = 0;
  MutableRegion destination_;
  uint64_t cursor_ = 0;
  uint64_t end_ = 0;
};

}  // namespace

Expected<uint64_t> copy_message(const MessageLayout& layout, ConstRegion source,
                                uint64_t source_offset, MutableRegion destination,
                                RegionAllocator& destination_allocator, const CopyLimits& limits,
                                CopyStats* stats) {
  Copier copier(source, limits);
  struct Report {
    const Copier& copier;
    CopyStats* stats;
    ~Report() {
      if (stats != nullptr) stats->work = copier.work();
    }
  } report{copier, stats};
  MRPC_TRY_STATUS(copier.measure_message(layout, source_offset, 0));
  const uint64_t bytes = copier.measured();
  auto block = destination_allocator.allocate(bytes, MessageLayout::kAlignment);
  if (!block.ok()) return block.status();
  if (*block > destination.size || bytes > destination.size - *block) {
    (void)destination_allocator.free(*block);
    return Status(StatusCode::kInternal,
                  fmt::format("the destination allocator ({} bytes) does not match the "
                              "destination region ({} bytes)",
                              destination_allocator.region_bytes(), destination.size));
  }
  copier.start_copy(destination, *block, bytes);
  auto root = copier.copy_message(layout, source_offset, 0);
  if (!root.ok()) {
    (void)destination_allocator.free(*block);
    return root.status();
  }
  return root;
}

}  // namespace mrpc
