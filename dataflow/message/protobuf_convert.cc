#include "mrpc/message/protobuf_convert.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/reflection.h>

#include <fmt/format.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "mrpc/message/generated_support.h"
#include "mrpc/message/layout.h"

namespace mrpc {
namespace {

namespace pb = google::protobuf;
using gen::get;

// One LayoutSet per descriptor pool's message type, built on first use.
const MessageLayout& layout_of(const pb::Descriptor& descriptor) {
  static std::mutex mutex;
  static std::map<const pb::Descriptor*, std::unique_ptr<LayoutSet>> sets;
  std::lock_guard lock(mutex);
  auto& set = sets[&descriptor];
  if (!set) set = std::make_unique<LayoutSet>();
  return set->add(descriptor);
}

Status check_layout(const MessageLayout& layout, uint64_t fingerprint) {
  if (layout.fingerprint() == fingerprint) return Status();
  return Status(
      StatusCode::kFailedPrecondition,
      fmt::format("{}: the protobuf message's layout (fingerprint {:016x}) is not the mrpc "
                  "type's ({:016x}): generated from different versions of the .proto",
                  layout.full_name(), layout.fingerprint(), fingerprint));
}

bool field_set(const MessageRef& in, const MessageLayout& layout, const FieldLayout& f) {
  if (f.presence_bit != kNoPresenceBit) return gen::has_bit(in, f.presence_bit);
  if (f.oneof_index != kNoOneof) {
    const OneofLayout& o = layout.oneofs()[static_cast<size_t>(f.oneof_index)];
    return get<uint32_t>(in, o.case_offset) == f.number;
  }
  return true;
}

void read_message(const MessageRef& in, const MessageLayout& layout, pb::Message& out);

// Value `index` of repeated field `f` (or the singular value when index < 0) into `out`.
void read_value(const MessageRef& in, const FieldLayout& f, const pb::FieldDescriptor& field,
                int index, pb::Message& out) {
  const pb::Reflection& r = *out.GetReflection();
  const bool repeated = index >= 0;
  auto scalar = [&](auto type_tag) {
    using T = decltype(type_tag);
    return repeated ? gen::get_element<T>(in, f.offset, index) : get<T>(in, f.offset);
  };
  switch (f.kind) {
    case FieldKind::kBool: {
      const bool v = scalar(uint8_t{}) != 0;
      repeated ? r.AddBool(&out, &field, v) : r.SetBool(&out, &field, v);
      break;
    }
    case FieldKind::kInt32: {
      const int32_t v = scalar(int32_t{});
      repeated ? r.AddInt32(&out, &field, v) : r.SetInt32(&out, &field, v);
      break;
    }
    case FieldKind::kEnum: {
      const int32_t v = scalar(int32_t{});
      repeated ? r.AddEnumValue(&out, &field, v) : r.SetEnumValue(&out, &field, v);
      break;
    }
    case FieldKind::kUint32: {
      const uint32_t v = scalar(uint32_t{});
      repeated ? r.AddUInt32(&out, &field, v) : r.SetUInt32(&out, &field, v);
      break;
    }
    case FieldKind::kInt64: {
      const int64_t v = scalar(int64_t{});
      repeated ? r.AddInt64(&out, &field, v) : r.SetInt64(&out, &field, v);
      break;
    }
    case FieldKind::kUint64: {
      const uint64_t v = scalar(uint64_t{});
      repeated ? r.AddUInt64(&out, &field, v) : r.SetUInt64(&out, &field, v);
      break;
    }
    case FieldKind::kFloat: {
      const float v = scalar(float{});
      repeated ? r.AddFloat(&out, &field, v) : r.SetFloat(&out, &field, v);
      break;
    }
    case FieldKind::kDouble: {
      const double v = scalar(double{});
      repeated ? r.AddDouble(&out, &field, v) : r.SetDouble(&out, &field, v);
      break;
    }
    case FieldKind::kString:
    case FieldKind::kBytes: {
      std::string v(repeated ? gen::get_bytes_element(in, f.offset, index)
                             : gen::get_bytes(in, f.offset));
      repeated ? r.AddString(&out, &field, std::move(v)) : r.SetString(&out, &field, std::move(v));
      break;
    }
    case FieldKind::kMessage: {
      const MessageLayout& sub = *f.message;
      const MessageRef body = repeated
                                  ? gen::get_message_element(in, f.offset, sub.body_size(), index)
                                  : gen::get_message(in, f.offset, sub.body_size());
      pb::Message* target = repeated ? r.AddMessage(&out, &field) : r.MutableMessage(&out, &field);
      read_message(body, sub, *target);
      break;
    }
  }
}

void read_message(const MessageRef& in, const MessageLayout& layout, pb::Message& out) {
  const pb::Descriptor& descriptor = *out.GetDescriptor();
  for (const FieldLayout& f : layout.fields()) {
    const pb::FieldDescriptor* field = descriptor.FindFieldByNumber(static_cast<int>(f.number));
    if (field == nullptr) continue;  // cannot happen: same fingerprint
    if (f.repeated) {
      const int count = gen::repeated_size(in, f.offset, f.element_size);
      for (int i = 0; i < count; ++i) read_value(in, f, *field, i, out);
    } else if (field_set(in, layout, f)) {
      read_value(in, f, *field, -1, out);
    }
  }
}

bool write_message(const pb::Message& in, const MessageLayout& layout, const MessageRef& out);

bool write_value(const pb::Message& in, const pb::FieldDescriptor& field, int index,
                 const FieldLayout& f, const MessageRef& out) {
  const pb::Reflection& r = *in.GetReflection();
  const bool repeated = index >= 0;
  auto put = [&](auto v) {
    return repeated ? gen::add_element(out, f.offset, v) : gen::set(out, f.offset, v);
  };
  switch (f.kind) {
    case FieldKind::kBool:
      return put(static_cast<uint8_t>(
          (repeated ? r.GetRepeatedBool(in, &field, index) : r.GetBool(in, &field)) ? 1 : 0));
    case FieldKind::kInt32:
      return put(repeated ? r.GetRepeatedInt32(in, &field, index) : r.GetInt32(in, &field));
    case FieldKind::kEnum:
      return put(static_cast<int32_t>(repeated ? r.GetRepeatedEnumValue(in, &field, index)
                                               : r.GetEnumValue(in, &field)));
    case FieldKind::kUint32:
      return put(repeated ? r.GetRepeatedUInt32(in, &field, index) : r.GetUInt32(in, &field));
    case FieldKind::kInt64:
      return put(static_cast<int64_t>(repeated ? r.GetRepeatedInt64(in, &field, index)
                                               : r.GetInt64(in, &field)));
    case FieldKind::kUint64:
      return put(static_cast<uint64_t>(repeated ? r.GetRepeatedUInt64(in, &field, index)
                                                : r.GetUInt64(in, &field)));
    case FieldKind::kFloat:
      return put(repeated ? r.GetRepeatedFloat(in, &field, index) : r.GetFloat(in, &field));
    case FieldKind::kDouble:
      return put(repeated ? r.GetRepeatedDouble(in, &field, index) : r.GetDouble(in, &field));
    case FieldKind::kString:
    case FieldKind::kBytes: {
      std::string scratch;
      const std::string& v = repeated ? r.GetRepeatedStringReference(in, &field, index, &scratch)
                                      : r.GetStringReference(in, &field, &scratch);
      return repeated ? gen::add_bytes_element(out, f.offset, v) : gen::set_bytes(out, f.offset, v);
    }
    case FieldKind::kMessage: {
      const MessageLayout& sub = *f.message;
      MessageRef body;
      if (repeated) {
        const int at = gen::add_message_index(out, f.offset, sub.body_size());
        if (at < 0) return false;
        body = gen::get_message_element(out, f.offset, sub.body_size(), at);
      } else {
        body = gen::mutable_message(out, f.offset, sub.body_size());
      }
      if (body.base == nullptr) return false;
      return write_message(
          repeated ? r.GetRepeatedMessage(in, &field, index) : r.GetMessage(in, &field), sub, body);
    }
  }
  return false;
}

bool write_message(const pb::Message& in, const MessageLayout& layout, const MessageRef& out) {
  const pb::Descriptor& descriptor = *in.GetDescriptor();
  const pb::Reflection& r = *in.GetReflection();
  bool ok = true;
  for (const FieldLayout& f : layout.fields()) {
    const pb::FieldDescriptor* field = descriptor.FindFieldByNumber(static_cast<int>(f.number));
    if (field == nullptr) continue;
    if (f.repeated) {
      for (int i = 0, count = r.FieldSize(in, field); i < count; ++i)
        ok &= write_value(in, *field, i, f, out);
      continue;
    }
    const bool has_presence = f.presence_bit != kNoPresenceBit || f.oneof_index != kNoOneof;
    if (has_presence && !r.HasField(in, field)) continue;
    if (f.presence_bit != kNoPresenceBit) gen::set_bit(out, f.presence_bit, true);
    if (f.oneof_index != kNoOneof) {
      const OneofLayout& o = layout.oneofs()[static_cast<size_t>(f.oneof_index)];
      gen::set_case(out, o.case_offset, o.storage_offset, o.storage_size, f.number);
    }
    ok &= write_value(in, *field, -1, f, out);
  }
  return ok;
}

}  // namespace

Status to_protobuf(const MessageRef& in, uint64_t layout_fingerprint, pb::Message& out) {
  const MessageLayout& layout = layout_of(*out.GetDescriptor());
  MRPC_TRY_STATUS(check_layout(layout, layout_fingerprint));
  out.Clear();
  read_message(in, layout, out);
  return Status();
}

Status from_protobuf(const pb::Message& in, uint64_t layout_fingerprint, const MessageRef& out) {
  const MessageLayout& layout = layout_of(*in.GetDescriptor());
  MRPC_TRY_STATUS(check_layout(layout, layout_fingerprint));
  if (out.heap == nullptr || out.base == nullptr)
    return Status(
        StatusCode::kFailedPrecondition,
        fmt::format("from_protobuf: the {} to write is not a message being built in a heap",
                    layout.full_name()));
  if (!write_message(in, layout, out))
    return Status(
        StatusCode::kResourceExhausted,
        fmt::format("from_protobuf: the heap filled up while writing a {}", layout.full_name()));
  return Status();
}

}  // namespace mrpc
