// MessageLayout computation (docs/message-layout.md). Runs in protoc-gen-mrpc at build time and
// in the daemon at run time; everything here depends only on the descriptor.
#include "mrpc/message/layout.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>

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

// Every layout reachable from `root`, by an explicit stack: a chain of types as long as the schema
// limits allow must not exhaust the thread's stack (docs/security.md, finding 1).
void collect_reachable(const MessageLayout& root,
                       std::map<std::string, const MessageLayout*>& out) {
  std::vector<const MessageLayout*> stack{&root};
  while (!stack.empty()) {
    const MessageLayout* layout = stack.back();
    stack.pop_back();
    if (!out.emplace(layout->full_name(), layout).second) continue;
    for (const FieldLayout& field : layout->fields())
      if (field.message != nullptr) stack.push_back(field.message);
  }
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

const FieldLayout* MessageLayout::oneof_member(const OneofLayout& oneof, uint32_t number) const {
  auto it = std::lower_bound(oneof.members_by_number.begin(), oneof.members_by_number.end(),
                             std::pair<uint32_t, uint32_t>{number, 0});
  if (it == oneof.members_by_number.end() || it->first != number) return nullptr;
  return &fields_[it->second];
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
  uint64_t work = 0;
};

uint64_t LayoutSet::work() const {
  return state_->work;
}

namespace {

// Fingerprints of the layouts `added` by one LayoutSet::add (docs/message-layout.md, "The
// fingerprint"). Tarjan's algorithm, iterative, finds the groups of mutually reachable types; it
// finishes a group only after every group the group reaches, so each group is hashed once, from
// its members' descriptions and the fingerprints of the types it reaches outside itself. Layouts
// not in `added` were added by an earlier call and cannot reach the new ones: their fingerprints
// are final. Linear in types + fields (plus sorting each group's members and exits).
class Fingerprinter {
 public:
  Fingerprinter(const std::vector<MessageLayout*>& added, uint64_t& work)
      : added_(added), work_(work), nodes_(added.size()), fingerprints_(added.size()) {
    for (uint32_t i = 0; i < added.size(); ++i) index_of_.emplace(added[i], i);
  }

  // Calls set(layout, fingerprint) once per added layout, after every layout it reaches.
  template <class Set>
  void run(Set&& set) {
    for (uint32_t root = 0; root < added_.size(); ++root) {
      if (nodes_[root].order != kUnvisited) continue;
      visit(root);
      while (!frames_.empty()) {
        Frame& frame = frames_.back();
        const std::vector<FieldLayout>& fields = added_[frame.node]->fields();
        if (frame.next_field < fields.size()) {
          ++work_;
          const MessageLayout* target = fields[frame.next_field++].message;
          const uint32_t to = internal(target);
          if (to == kExternal) continue;
          if (nodes_[to].order == kUnvisited) {
            visit(to);  // invalidates `frame`
          } else if (nodes_[to].on_stack) {
            nodes_[frame.node].low = std::min(nodes_[frame.node].low, nodes_[to].order);
          }
          continue;
        }
        const uint32_t done = frame.node;
        frames_.pop_back();
        if (!frames_.empty()) {
          Node& parent = nodes_[frames_.back().node];
          parent.low = std::min(parent.low, nodes_[done].low);
        }
        if (nodes_[done].low == nodes_[done].order) finish_group(done, set);
      }
    }
  }

 private:
  static constexpr uint32_t kUnvisited = UINT32_MAX;
  static constexpr uint32_t kExternal = UINT32_MAX;
  struct Node {
    uint32_t order = kUnvisited;
    uint32_t low = 0;
    uint32_t group = kUnvisited;
    bool on_stack = false;
  };
  struct Frame {
    uint32_t node;
    size_t next_field;
  };

  uint32_t internal(const MessageLayout* layout) const {
    if (layout == nullptr) return kExternal;
    auto it = index_of_.find(layout);
    return it == index_of_.end() ? kExternal : it->second;
  }

  void visit(uint32_t node) {
    ++work_;
    nodes_[node].order = nodes_[node].low = next_order_++;
    nodes_[node].on_stack = true;
    stack_.push_back(node);
    frames_.push_back(Frame{node, 0});
  }

  template <class Set>
  void finish_group(uint32_t head, Set& set) {
    std::vector<MessageLayout*> members;
    const uint32_t group = next_group_++;
    for (;;) {
      const uint32_t node = stack_.back();
      stack_.pop_back();
      nodes_[node].on_stack = false;
      nodes_[node].group = group;
      members.push_back(added_[node]);
      if (node == head) break;
    }
    std::sort(members.begin(), members.end(),
              [](MessageLayout* a, MessageLayout* b) { return a->full_name() < b->full_name(); });
    std::string text;
    std::vector<uint64_t> exits;
    for (const MessageLayout* member : members) {
      ++work_;
      text += describe_layout(*member);
      for (const FieldLayout& field : member->fields()) {
        ++work_;
        if (field.message == nullptr) continue;
        const uint32_t to = internal(field.message);
        if (to != kExternal && nodes_[to].group == group) continue;
        // Another group, finished before this one, or a layout of an earlier add.
        exits.push_back(to != kExternal ? fingerprints_[to] : field.message->fingerprint());
      }
    }
    std::sort(exits.begin(), exits.end());
    exits.erase(std::unique(exits.begin(), exits.end()), exits.end());
    for (uint64_t exit : exits) text += fmt::format("reaches {:016x}\n", exit);
    const uint64_t group_hash = fnv1a64(text);
    for (MessageLayout* member : members) {
      const uint64_t fingerprint =
          fnv1a64(fmt::format("root {} group {:016x}", member->full_name(), group_hash));
      fingerprints_[index_of_.at(member)] = fingerprint;
      set(member, fingerprint);
    }
  }

  const std::vector<MessageLayout*>& added_;
  uint64_t& work_;
  std::vector<Node> nodes_;
  std::unordered_map<const MessageLayout*, uint32_t> index_of_;
  std::vector<uint64_t> fingerprints_;  // by node, once its group is finished
  std::vector<uint32_t> stack_;
  std::vector<Frame> frames_;
  uint32_t next_order_ = 0;
  uint32_t next_group_ = 0;
};

}  // namespace

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
    ++state_->work;
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
      ++state_->work;
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
        o.members_by_number.emplace_back(f.number, static_cast<uint32_t>(layout->fields_.size()));
        if (o.fields.size() == 1) {
          layout->body_references_.push_back(BodyReference{0, f.oneof_index});
        }
      } else {
        if (f.repeated || f.kind == FieldKind::kString || f.kind == FieldKind::kBytes ||
            f.kind == FieldKind::kMessage) {
          layout->body_references_.push_back(
              BodyReference{static_cast<uint32_t>(layout->fields_.size()), kNoOneof});
        }
        if (field.has_presence() && !field.is_repeated()) f.presence_bit = next_bit++;
        cursor = align_up(cursor, std::min<uint32_t>(f.size, 8));
        f.offset = cursor;
        cursor += f.size;
      }
      layout->fields_.push_back(std::move(f));
    }
    for (OneofLayout& oneof : layout->oneofs_) {
      state_->work += oneof.members_by_number.size();
      std::sort(oneof.members_by_number.begin(), oneof.members_by_number.end());
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
      ++state_->work;
      const pb::Descriptor* sub = descriptor.field(i)->message_type();
      if (sub == nullptr) continue;
      FieldLayout& f = layout.fields_[static_cast<size_t>(i)];
      f.message = find(sub->full_name());
      MRPC_ASSERT(f.message != nullptr, "layout of {} missing", sub->full_name());
      if (f.repeated) f.element_size = f.message->body_size();
    }
  }

  // Pass 3: fingerprints, now that every reachable layout is complete.
  Fingerprinter(added, state_->work).run([](MessageLayout* layout, uint64_t fingerprint) {
    layout->fingerprint_ = fingerprint;
  });

  return *find(root.full_name());
}

}  // namespace mrpc
