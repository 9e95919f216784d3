// MessageLayout computation (docs/message-layout.md). Runs in protoc-gen-mrpc at build time and
// in the daemon at run time; everything here depends only on the descriptor.
#include "mrpc/message/layout.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>

#include <algorithm>
#include <map>
#include <set>

#include "mrpc/base/check.h"

namespace mrpc {
namespace {

namespace pb = google::protobuf;

FieldKind kind_of(const pb::FieldDescriptor& field) {
  switch (field.type()) {
    case pb::FieldDescriptor::TYPE_BOOL:
      return FieldKind::kBool;
    case pb::FieldDescriptor::TYPE_INT32:
    case pb::FieldDescriptor::TYPE_SINT32:
    case pb::FieldDescriptor::TYPE_SFIXED32:
      return FieldKind::kInt32;
    case pb::FieldDescriptor::TYPE_UINT32:
    case pb::FieldDescriptor::TYPE_FIXED32:
      return FieldKind::kUint32;
    case pb::FieldDescriptor::TYPE_INT64:
    case pb::FieldDescriptor::TYPE_SINT64:
    case pb::FieldDescriptor::TYPE_SFIXED64:
      return FieldKind::kInt64;
    case pb::FieldDescriptor::TYPE_UINT64:
    case pb::FieldDescriptor::TYPE_FIXED64:
      return FieldKind::kUint64;
    case pb::FieldDescriptor::TYPE_FLOAT:
      return FieldKind::kFloat;
    case pb::FieldDescriptor::TYPE_DOUBLE:
      return FieldKind::kDouble;
    case pb::FieldDescriptor::TYPE_ENUM:
      return FieldKind::kEnum;
    case pb::FieldDescriptor::TYPE_STRING:
      return FieldKind::kString;
    case pb::FieldDescriptor::TYPE_BYTES:
      return FieldKind::kBytes;
    case pb::FieldDescriptor::TYPE_MESSAGE:
    case pb::FieldDescriptor::TYPE_GROUP:
      return FieldKind::kMessage;
  }
  MRPC_ASSERT(false, "unknown protobuf field type {}", static_cast<int>(field.type()));
  return FieldKind::kBool;
}

uint32_t align_up(uint32_t value, uint32_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

// Storage of a field inside the body: references for everything that is not an inline scalar.
uint32_t storage_size(const pb::FieldDescriptor& field) {
  if (field.is_repeated()) return sizeof(RegionRef);
  return inline_size(kind_of(field));
}

uint64_t fnv1a64(std::string_view text) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (char c : text) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

void collect_reachable(const MessageLayout& layout,
                       std::map<std::string, const MessageLayout*>& out) {
  if (!out.emplace(layout.full_name(), &layout).second) return;
  for (const FieldLayout& field : layout.fields())
    if (field.message != nullptr) collect_reachable(*field.message, out);
}

}  // namespace

std::string_view field_kind_name(FieldKind kind) {
  switch (kind) {
    case FieldKind::kBool:
      return "bool";
    case FieldKind::kInt32:
      return "int32";
    case FieldKind::kUint32:
      return "uint32";
    case FieldKind::kInt64:
      return "int64";
    case FieldKind::kUint64:
      return "uint64";
    case FieldKind::kFloat:
      return "float";
    case FieldKind::kDouble:
      return "double";
    case FieldKind::kEnum:
      return "enum";
    case FieldKind::kString:
      return "string";
    case FieldKind::kBytes:
      return "bytes";
    case FieldKind::kMessage:
      return "message";
  }
  return "?";
}

uint32_t inline_size(FieldKind kind) {
  switch (kind) {
    case FieldKind::kBool:
      return 1;
    case FieldKind::kInt32:
    case FieldKind::kUint32:
    case FieldKind::kFloat:
    case FieldKind::kEnum:
      return 4;
    case FieldKind::kInt64:
    case FieldKind::kUint64:
    case FieldKind::kDouble:
      return 8;
    case FieldKind::kString:
    case FieldKind::kBytes:
    case FieldKind::kMessage:
      return sizeof(RegionRef);
  }
  return 0;
}

const FieldLayout* MessageLayout::field_by_number(uint32_t number) const {
  for (const FieldLayout& field : fields_)
    if (field.number == number) return &field;
  return nullptr;
}

const FieldLayout* MessageLayout::field_by_name(std::string_view name) const {
  for (const FieldLayout& field : fields_)
    if (field.name == name) return &field;
  return nullptr;
}

std::string describe_layout(const MessageLayout& layout) {
  std::string text = fmt::format("message {} size={} presence_words={} unknown={} map_entry={}\n",
                                 layout.full_name(), layout.body_size(), layout.presence_words(),
                                 layout.unknown_fields_offset(), layout.is_map_entry() ? 1 : 0);
  for (const FieldLayout& f : layout.fields()) {
    text += fmt::format(
        "  field {} {} {} repeated={} map={} offset={} size={} element={} bit={} "
        "oneof={} type={}\n",
        f.number, f.name, field_kind_name(f.kind), f.repeated ? 1 : 0, f.is_map ? 1 : 0, f.offset,
        f.size, f.element_size, f.presence_bit, f.oneof_index,
        f.message != nullptr ? f.message->full_name() : "-");
  }
  for (const OneofLayout& o : layout.oneofs()) {
    text += fmt::format("  oneof {} case={} storage={} size={} fields={}\n", o.name, o.case_offset,
                        o.storage_offset, o.storage_size, fmt::join(o.fields, ","));
  }
  return text;
}

std::string MessageLayout::canonical_text() const {
  std::map<std::string, const MessageLayout*> reachable;
  collect_reachable(*this, reachable);
  std::string text = "root " + full_name_ + "\n";
  for (const auto& [name, layout] : reachable) text += describe_layout(*layout);
  return text;
}

struct LayoutSet::State {
  std::map<std::string, std::unique_ptr<MessageLayout>, std::less<>> layouts;
};

LayoutSet::LayoutSet() : state_(std::make_unique<State>()) {}
LayoutSet::~LayoutSet() = default;

const MessageLayout* LayoutSet::find(std::string_view full_name) const {
  auto it = state_->layouts.find(full_name);
  return it == state_->layouts.end() ? nullptr : it->second.get();
}

const MessageLayout& LayoutSet::add(const pb::Descriptor& root) {
  if (const MessageLayout* known = find(root.full_name())) return *known;

  // Every type reachable from `root` that is not yet known.
  std::vector<const pb::Descriptor*> pending;
  std::set<std::string> seen;
  std::vector<const pb::Descriptor*> stack{&root};
  while (!stack.empty()) {
    const pb::Descriptor* descriptor = stack.back();
    stack.pop_back();
    if (find(descriptor->full_name()) != nullptr || !seen.insert(descriptor->full_name()).second)
      continue;
    pending.push_back(descriptor);
    for (int i = 0; i < descriptor->field_count(); ++i)
      if (const pb::Descriptor* sub = descriptor->field(i)->message_type()) stack.push_back(sub);
  }

  // Pass 1: bodies. Nothing in a body depends on another type's layout.
  std::vector<MessageLayout*> added;
  for (const pb::Descriptor* descriptor : pending) {
    auto layout = std::unique_ptr<MessageLayout>(new MessageLayout());
    layout->full_name_ = descriptor->full_name();
    layout->is_map_entry_ = descriptor->options().map_entry();

    uint32_t presence_bits = 0;
    for (int i = 0; i < descriptor->field_count(); ++i) {
      const pb::FieldDescriptor& field = *descriptor->field(i);
      if (field.has_presence() && !field.is_repeated() && field.real_containing_oneof() == nullptr)
        ++presence_bits;
    }
    layout->presence_words_ = (presence_bits + 31) / 32;
    uint32_t cursor = layout->presence_words_ * 4;

    for (int i = 0; i < descriptor->real_oneof_decl_count(); ++i) {
      OneofLayout oneof;
      oneof.name = descriptor->oneof_decl(i)->name();
      oneof.case_offset = cursor;
      cursor += 4;
      layout->oneofs_.push_back(std::move(oneof));
    }

    int32_t next_bit = 0;
    for (int i = 0; i < descriptor->field_count(); ++i) {
      const pb::FieldDescriptor& field = *descriptor->field(i);
      FieldLayout f;
      f.name = field.name();
      f.number = static_cast<uint32_t>(field.number());
      f.kind = kind_of(field);
      f.repeated = field.is_repeated();
      f.is_map = field.is_map();
      f.size = storage_size(field);
      f.element_size = f.repeated ? inline_size(f.kind) : f.size;
      if (const pb::OneofDescriptor* oneof = field.real_containing_oneof()) {
        f.oneof_index = oneof->index();
        OneofLayout& o = layout->oneofs_[static_cast<size_t>(oneof->index())];
        if (o.storage_size == 0) {
          // The shared storage sits where the oneof's first member is declared; it is as big and
          // as aligned as the biggest member (alignment == size for every storage kind, up to 8).
          uint32_t biggest = 0;
          for (int m = 0; m < oneof->field_count(); ++m)
            biggest = std::max(biggest, storage_size(*oneof->field(m)));
          cursor = align_up(cursor, std::min<uint32_t>(biggest, 8));
          o.storage_offset = cursor;
          o.storage_size = biggest;
          cursor += biggest;
        }
        f.offset = o.storage_offset;
        o.fields.push_back(static_cast<uint32_t>(layout->fields_.size()));
      } else {
        if (field.has_presence() && !field.is_repeated()) f.presence_bit = next_bit++;
        cursor = align_up(cursor, std::min<uint32_t>(f.size, 8));
        f.offset = cursor;
        cursor += f.size;
      }
      layout->fields_.push_back(std::move(f));
    }
    cursor = align_up(cursor, 8);
    layout->unknown_fields_offset_ = cursor;
    cursor += sizeof(RegionRef);
    layout->body_size_ = align_up(cursor, MessageLayout::kAlignment);

    added.push_back(layout.get());
    state_->layouts.emplace(layout->full_name_, std::move(layout));
  }

  // Pass 2: link sub-message layouts; a repeated message's element is its whole body.
  for (size_t n = 0; n < pending.size(); ++n) {
    const pb::Descriptor& descriptor = *pending[n];
    MessageLayout& layout = *added[n];
    for (int i = 0; i < descriptor.field_count(); ++i) {
      const pb::Descriptor* sub = descriptor.field(i)->message_type();
      if (sub == nullptr) continue;
      FieldLayout& f = layout.fields_[static_cast<size_t>(i)];
      f.message = find(sub->full_name());
      MRPC_ASSERT(f.message != nullptr, "layout of {} missing", sub->full_name());
      if (f.repeated) f.element_size = f.message->body_size();
    }
  }

  // Pass 3: fingerprints, now that every reachable layout is complete.
  for (MessageLayout* layout : added) layout->fingerprint_ = fnv1a64(layout->canonical_text());

  return *find(root.full_name());
}

}  // namespace mrpc
