// MessageLayout: where each field of one protobuf message type lives in a message body in shared
// memory (docs/message-layout.md). A pure function of the protobuf descriptor: protoc-gen-mrpc
// computes it at build time and bakes the offsets into generated code; the daemon computes it at
// run time from the FileDescriptorSet an app registers; both get the same result and fingerprint.
//
// Layouts are immutable once built and shared read-only between threads. A LayoutSet owns the
// layouts of every message type reachable from the descriptors it was asked about (sub-message
// layouts point at each other, cycles included).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace google::protobuf {
class Descriptor;
}  // namespace google::protobuf

namespace mrpc {

// A reference from one part of a message to another, in the same region: strings, bytes,
// repeated fields, singular sub-messages and unknown-field bytes. 16 bytes, 8-aligned.
//   offset    region-relative start of the referenced bytes (0 when size is 0)
//   size      strings/bytes/unknown: bytes; repeated: elements; sub-message: body bytes
//   capacity  room allocated at `offset` (in the same unit as size); writers grow in place below
//             it. Readers never trust it.
struct RegionRef {
  uint64_t offset;
  uint32_t size;
  uint32_t capacity;
};
static_assert(sizeof(RegionRef) == 16);

// What one field (or one element of a repeated field) holds.
enum class FieldKind : uint8_t {
  kBool = 1,    // 1 byte, 0 or 1 (readers treat any non-zero as true)
  kInt32 = 2,   // int32, sint32, sfixed32
  kUint32 = 3,  // uint32, fixed32
  kInt64 = 4,   // int64, sint64, sfixed64
  kUint64 = 5,  // uint64, fixed64
  kFloat = 6,
  kDouble = 7,
  kEnum = 8,     // int32
  kString = 9,   // RegionRef to UTF-8 bytes
  kBytes = 10,   // RegionRef to bytes
  kMessage = 11  // singular: RegionRef to a body; repeated: element = inline body
};
std::string_view field_kind_name(FieldKind kind);

// Bytes one element of `kind` takes inline (a repeated message's element size is its body size,
// not this: see FieldLayout::element_size).
uint32_t inline_size(FieldKind kind);

inline constexpr int32_t kNoPresenceBit = -1;
inline constexpr int32_t kNoOneof = -1;

struct FieldLayout {
  std::string name;
  uint32_t number = 0;
  FieldKind kind = FieldKind::kBool;
  bool repeated = false;  // map fields are repeated entry messages
  bool is_map = false;
  uint32_t offset = 0;        // of the field's storage within the body
  uint32_t size = 0;          // bytes of that storage (16 for every reference)
  uint32_t element_size = 0;  // repeated: bytes of one element in the array; else == size
  int32_t presence_bit = kNoPresenceBit;         // bit index in the presence bitmap
  int32_t oneof_index = kNoOneof;                // index into MessageLayout::oneofs()
  const class MessageLayout* message = nullptr;  // kMessage: the sub-message's layout
};

struct OneofLayout {
  std::string name;
  uint32_t case_offset = 0;     // u32: the field number of the member set, 0 for none
  uint32_t storage_offset = 0;  // shared by all members
  uint32_t storage_size = 0;
  std::vector<uint32_t> fields;  // indices into MessageLayout::fields()
  // (field number, index into MessageLayout::fields()) of every member, sorted by number: the
  // copy resolves a case in O(log members), never by scanning them (docs/security.md, finding 3).
  std::vector<std::pair<uint32_t, uint32_t>> members_by_number;
};

// What a copy of a body must look at, in declaration order: each field outside any oneof whose
// storage is a reference (string, bytes, repeated, sub-message), and each oneof once. Scalars are
// not in it, so the work per body is bounded by the body's size, whatever the schema declares.
struct BodyReference {
  uint32_t field = 0;        // index into MessageLayout::fields(); unused for a oneof
  int32_t oneof = kNoOneof;  // index into MessageLayout::oneofs(), or kNoOneof for a field
};

class MessageLayout {
 public:
  // Every body is 8-aligned and its size a multiple of 8.
  static constexpr uint32_t kAlignment = 8;

  const std::string& full_name() const { return full_name_; }
  uint32_t body_size() const { return body_size_; }
  const std::vector<FieldLayout>& fields() const { return fields_; }  // declaration order
  const std::vector<OneofLayout>& oneofs() const { return oneofs_; }  // real oneofs only
  // The presence bitmap: `presence_words` u32 words at offset 0; bit b is word b/32, bit b%32.
  uint32_t presence_words() const { return presence_words_; }
  // RegionRef to bytes of fields this layout does not know (protobuf wire format).
  uint32_t unknown_fields_offset() const { return unknown_fields_offset_; }
  bool is_map_entry() const { return is_map_entry_; }
  // A hash of the layout of every type reachable from this one (docs/message-layout.md, "The
  // fingerprint"): computed per strongly connected group of types, so linear in the schema.
  // Equal fingerprints: caller and callee agree on every offset of the whole message tree.
  uint64_t fingerprint() const { return fingerprint_; }
  // Every layout reachable from this one, as text (sorted by name): what the fingerprint covers;
  // for diagnostics (diff two of them to see what differs). Linear in the reachable types.
  std::string canonical_text() const;
  const std::vector<BodyReference>& body_references() const { return body_references_; }
  // The member of `oneof` whose field number is `number`, or null.
  const FieldLayout* oneof_member(const OneofLayout& oneof, uint32_t number) const;

  const FieldLayout* field_by_number(uint32_t number) const;
  const FieldLayout* field_by_name(std::string_view name) const;

 private:
  friend class LayoutSet;
  std::string full_name_;
  uint32_t body_size_ = 0;
  uint32_t presence_words_ = 0;
  uint32_t unknown_fields_offset_ = 0;
  bool is_map_entry_ = false;
  uint64_t fingerprint_ = 0;
  std::vector<FieldLayout> fields_;
  std::vector<OneofLayout> oneofs_;
  std::vector<BodyReference> body_references_;
};

// Owns layouts computed from descriptors. Not thread-safe while adding; once filled, the layouts
// it hands out may be read from any thread. The descriptors must outlive only the `add` calls.
class LayoutSet {
 public:
  LayoutSet();
  ~LayoutSet();
  LayoutSet(const LayoutSet&) = delete;
  LayoutSet& operator=(const LayoutSet&) = delete;

  // The layout of `descriptor`, computing it and every message type it reaches if needed.
  const MessageLayout& add(const google::protobuf::Descriptor& descriptor);
  // A layout already added (directly or reached), or null.
  const MessageLayout* find(std::string_view full_name) const;
  // Steps every `add` so far took (types, fields and references visited by each pass): the tests
  // assert it grows linearly with the schema (docs/security.md, findings 1 and 2).
  uint64_t work() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// The canonical text of one layout alone (what canonical_text concatenates).
std::string describe_layout(const MessageLayout& layout);

}  // namespace mrpc
