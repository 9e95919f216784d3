// Test-only reference code for the codec tests (codec_test_support.h).
#include "codec_test_support.h"

#include <doctest/doctest.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/unknown_field_set.h>
#include <google/protobuf/util/message_differencer.h>
#include <google/protobuf/wire_format_lite.h>

#include <algorithm>
#include <cstring>
#include <map>

namespace mrpc::codec_testing {
namespace {

namespace pb = google::protobuf;
using pb::FieldDescriptor;
using pb::internal::WireFormatLite;

template <class T>
void put(std::byte* at, T value) {
  std::memcpy(at, &value, sizeof value);
}
template <class T>
T get(const std::byte* at) {
  T value;
  std::memcpy(&value, at, sizeof value);
  return value;
}

std::string random_text(std::mt19937_64& random, bool binary) {
  const size_t length = random() % 4 == 0 ? random() % 200 : random() % 12;
  std::string text(length, ' ');
  for (char& c : text) {
    c = binary ? static_cast<char>(random() & 0xff) : static_cast<char>('a' + random() % 26);
  }
  return text;
}

uint64_t random_bits(std::mt19937_64& random) {
  // Mostly small values (one- and two-byte varints), sometimes anything (ten-byte varints).
  switch (random() % 4) {
    case 0:
      return random() % 3;
    case 1:
      return random() % 300;
    case 2:
      return random() >> (random() % 64);
    default:
      return random();
  }
}

float random_float(std::mt19937_64& random) {
  return static_cast<float>(static_cast<int64_t>(random_bits(random))) / 7.0f;
}
double random_double(std::mt19937_64& random) {
  return static_cast<double>(static_cast<int64_t>(random_bits(random))) / 3.0;
}

// Sets (or adds, for repeated fields) one random value of `field`.
void set_random_value(pb::Message& message, const FieldDescriptor* field, std::mt19937_64& random,
                      int depth) {
  const pb::Reflection* r = message.GetReflection();
  const bool repeated = field->is_repeated();
  const uint64_t bits = random_bits(random);
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_BOOL:
      repeated ? r->AddBool(&message, field, bits & 1) : r->SetBool(&message, field, bits & 1);
      break;
    case FieldDescriptor::CPPTYPE_INT32:
      repeated ? r->AddInt32(&message, field, static_cast<int32_t>(bits))
               : r->SetInt32(&message, field, static_cast<int32_t>(bits));
      break;
    case FieldDescriptor::CPPTYPE_INT64:
      repeated ? r->AddInt64(&message, field, static_cast<int64_t>(bits))
               : r->SetInt64(&message, field, static_cast<int64_t>(bits));
      break;
    case FieldDescriptor::CPPTYPE_UINT32:
      repeated ? r->AddUInt32(&message, field, static_cast<uint32_t>(bits))
               : r->SetUInt32(&message, field, static_cast<uint32_t>(bits));
      break;
    case FieldDescriptor::CPPTYPE_UINT64:
      repeated ? r->AddUInt64(&message, field, bits) : r->SetUInt64(&message, field, bits);
      break;
    case FieldDescriptor::CPPTYPE_FLOAT:
      repeated ? r->AddFloat(&message, field, random_float(random))
               : r->SetFloat(&message, field, random_float(random));
      break;
    case FieldDescriptor::CPPTYPE_DOUBLE:
      repeated ? r->AddDouble(&message, field, random_double(random))
               : r->SetDouble(&message, field, random_double(random));
      break;
    case FieldDescriptor::CPPTYPE_ENUM: {
      const pb::EnumDescriptor* type = field->enum_type();
      const int number = type->value(static_cast<int>(random() % type->value_count()))->number();
      repeated ? r->AddEnumValue(&message, field, number)
               : r->SetEnumValue(&message, field, number);
      break;
    }
    case FieldDescriptor::CPPTYPE_STRING: {
      const std::string text = random_text(random, field->type() == FieldDescriptor::TYPE_BYTES);
      repeated ? r->AddString(&message, field, text) : r->SetString(&message, field, text);
      break;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE: {
      pb::Message* sub =
          repeated ? r->AddMessage(&message, field) : r->MutableMessage(&message, field);
      fill_random(*sub, random, depth - 1);
      break;
    }
  }
}

struct Chunk {
  int number;
  std::string bytes;
};

void write_scalar(pb::io::CodedOutputStream& out, const pb::Message& m, const FieldDescriptor* f,
                  int index) {
  const pb::Reflection* r = m.GetReflection();
  const bool rep = index >= 0;
  switch (f->type()) {
    case FieldDescriptor::TYPE_BOOL:
      out.WriteVarint32(rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f));
      break;
    case FieldDescriptor::TYPE_INT32:
      out.WriteVarint64(static_cast<uint64_t>(
          static_cast<int64_t>(rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f))));
      break;
    case FieldDescriptor::TYPE_ENUM:
      out.WriteVarint64(static_cast<uint64_t>(static_cast<int64_t>(
          rep ? r->GetRepeatedEnumValue(m, f, index) : r->GetEnumValue(m, f))));
      break;
    case FieldDescriptor::TYPE_SINT32:
      out.WriteVarint32(WireFormatLite::ZigZagEncode32(rep ? r->GetRepeatedInt32(m, f, index)
                                                           : r->GetInt32(m, f)));
      break;
    case FieldDescriptor::TYPE_SFIXED32:
      out.WriteLittleEndian32(
          static_cast<uint32_t>(rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f)));
      break;
    case FieldDescriptor::TYPE_UINT32:
      out.WriteVarint32(rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f));
      break;
    case FieldDescriptor::TYPE_FIXED32:
      out.WriteLittleEndian32(rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f));
      break;
    case FieldDescriptor::TYPE_INT64:
      out.WriteVarint64(
          static_cast<uint64_t>(rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f)));
      break;
    case FieldDescriptor::TYPE_SINT64:
      out.WriteVarint64(WireFormatLite::ZigZagEncode64(rep ? r->GetRepeatedInt64(m, f, index)
                                                           : r->GetInt64(m, f)));
      break;
    case FieldDescriptor::TYPE_SFIXED64:
      out.WriteLittleEndian64(
          static_cast<uint64_t>(rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f)));
      break;
    case FieldDescriptor::TYPE_UINT64:
      out.WriteVarint64(rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f));
      break;
    case FieldDescriptor::TYPE_FIXED64:
      out.WriteLittleEndian64(rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f));
      break;
    case FieldDescriptor::TYPE_FLOAT:
      out.WriteLittleEndian32(
          WireFormatLite::EncodeFloat(rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f)));
      break;
    case FieldDescriptor::TYPE_DOUBLE:
      out.WriteLittleEndian64(WireFormatLite::EncodeDouble(rep ? r->GetRepeatedDouble(m, f, index)
                                                               : r->GetDouble(m, f)));
      break;
    default:
      FAIL("not a scalar: " << f->full_name());
  }
}

int scalar_wire_type(const FieldDescriptor* f) {
  return WireFormatLite::WireTypeForFieldType(static_cast<WireFormatLite::FieldType>(f->type()));
}

template <class Write>
std::string bytes_of(Write&& write) {
  std::string text;
  {
    pb::io::StringOutputStream stream(&text);
    pb::io::CodedOutputStream out(&stream);
    write(out);
  }
  return text;
}

std::string length_delimited(int number, const std::string& payload) {
  return bytes_of([&](pb::io::CodedOutputStream& out) {
    out.WriteTag(WireFormatLite::MakeTag(number, WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
    out.WriteVarint32(static_cast<uint32_t>(payload.size()));
    out.WriteString(payload);
  });
}

std::string element_bytes(const pb::Message& m, const FieldDescriptor* f, int index,
                          std::mt19937_64& random) {
  const pb::Reflection* r = m.GetReflection();
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    const pb::Message& sub = index >= 0 ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f);
    return length_delimited(f->number(), write_variant(sub, random, false));
  }
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
    return length_delimited(f->number(),
                            index >= 0 ? r->GetRepeatedString(m, f, index) : r->GetString(m, f));
  }
  return bytes_of([&](pb::io::CodedOutputStream& out) {
    out.WriteTag(WireFormatLite::MakeTag(
        f->number(), static_cast<WireFormatLite::WireType>(scalar_wire_type(f))));
    write_scalar(out, m, f, index);
  });
}

}  // namespace

// ---- ProtoLibrary ----

void ProtoLibrary::Errors::AddError(const std::string& file, int line, int column,
                                    const std::string& message) {
  FAIL(file << ":" << line << ":" << column << ": " << message);
}

ProtoLibrary::ProtoLibrary() : importer_(&tree_, &errors_) {
  tree_.MapPath("", MRPC_SOURCE_DIR);
  tree_.MapPath("", std::string(MRPC_SOURCE_DIR) + "/examples/nested");
}

const pb::Descriptor& ProtoLibrary::message(const std::string& file, const std::string& full_name) {
  const pb::FileDescriptor* loaded = importer_.Import(file);
  REQUIRE_MESSAGE(loaded != nullptr, "cannot load " << file);
  const pb::Descriptor* type = importer_.pool()->FindMessageTypeByName(full_name);
  REQUIRE_MESSAGE(type != nullptr, full_name << " is not in " << file);
  return *type;
}

std::unique_ptr<pb::Message> ProtoLibrary::make(const pb::Descriptor& type) {
  return std::unique_ptr<pb::Message>(factory_.GetPrototype(&type)->New());
}

// ---- random messages and variant encodings ----

void fill_random(pb::Message& message, std::mt19937_64& random, int depth) {
  const pb::Descriptor* type = message.GetDescriptor();
  for (int i = 0; i < type->field_count(); ++i) {
    const FieldDescriptor* field = type->field(i);
    const bool is_message = field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE;
    if (field->is_required()) {
      set_random_value(message, field, random, depth);
      continue;
    }
    if (random() % 2 == 0) continue;
    if (is_message && depth <= 0) continue;
    if (field->is_repeated()) {
      const int count = static_cast<int>(random() % (is_message ? 3 : 5));
      for (int k = 0; k < count; ++k) set_random_value(message, field, random, depth);
    } else {
      set_random_value(message, field, random, depth);
    }
  }
}

std::string write_variant(const pb::Message& message, std::mt19937_64& random, bool unknown) {
  const pb::Reflection* r = message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(message, &fields);
  std::vector<Chunk> chunks;
  for (const FieldDescriptor* f : fields) {
    if (!f->is_repeated()) {
      chunks.push_back({f->number(), element_bytes(message, f, -1, random)});
      continue;
    }
    const int count = r->FieldSize(message, f);
    const bool scalar = f->cpp_type() != FieldDescriptor::CPPTYPE_STRING &&
                        f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE;
    if (scalar && random() % 2 == 0) {
      const std::string payload = bytes_of([&](pb::io::CodedOutputStream& out) {
        for (int k = 0; k < count; ++k) write_scalar(out, message, f, k);
      });
      chunks.push_back({f->number(), length_delimited(f->number(), payload)});
      continue;
    }
    for (int k = 0; k < count; ++k)
      chunks.push_back({f->number(), element_bytes(message, f, k, random)});
  }
  // Fields in a random order; elements of one field keep theirs.
  std::map<int, uint64_t> rank;
  for (const Chunk& chunk : chunks) rank.emplace(chunk.number, random());
  std::stable_sort(chunks.begin(), chunks.end(),
                   [&](const Chunk& a, const Chunk& b) { return rank[a.number] < rank[b.number]; });
  std::string out;
  for (const Chunk& chunk : chunks) out += chunk.bytes;
  std::string known_unknown;
  r->GetUnknownFields(message).SerializeToString(&known_unknown);
  out += known_unknown;
  if (unknown) {
    const int extra = static_cast<int>(random() % 4);
    for (int k = 0; k < extra; ++k) {
      const int number = 1000 + static_cast<int>(random() % 50000);
      out += bytes_of([&](pb::io::CodedOutputStream& o) {
        switch (random() % 4) {
          case 0:
            o.WriteTag(WireFormatLite::MakeTag(number, WireFormatLite::WIRETYPE_VARINT));
            o.WriteVarint64(random_bits(random));
            break;
          case 1:
            o.WriteTag(WireFormatLite::MakeTag(number, WireFormatLite::WIRETYPE_FIXED32));
            o.WriteLittleEndian32(static_cast<uint32_t>(random()));
            break;
          case 2:
            o.WriteTag(WireFormatLite::MakeTag(number, WireFormatLite::WIRETYPE_FIXED64));
            o.WriteLittleEndian64(random());
            break;
          default: {
            const std::string text = random_text(random, true);
            o.WriteTag(WireFormatLite::MakeTag(number, WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
            o.WriteVarint32(static_cast<uint32_t>(text.size()));
            o.WriteString(text);
          }
        }
      });
    }
  }
  return out;
}

// ---- Region and the reference builder/reader ----

Region::Region(uint64_t bytes) : words_(new uint64_t[(bytes + 7) / 8]()), size_(bytes) {}

uint64_t Region::allocate(uint64_t bytes) {
  bytes = (bytes + 7) & ~uint64_t{7};
  REQUIRE_MESSAGE(bytes <= size_ - used_, "test region full");
  const uint64_t at = used_;
  used_ += bytes;
  std::memset(base() + at, 0, bytes);
  return at;
}

namespace {

void write_element(const FieldLayout& field, const pb::Message& m, const FieldDescriptor* f,
                   int index, std::byte* at, Region& region);

void build_into(const MessageLayout& layout, const pb::Message& m, uint64_t body, Region& region) {
  const pb::Reflection* r = m.GetReflection();
  for (const FieldLayout& field : layout.fields()) {
    const FieldDescriptor* f = m.GetDescriptor()->FindFieldByNumber(static_cast<int>(field.number));
    std::byte* slot = region.base() + body + field.offset;
    if (field.repeated) {
      const int count = r->FieldSize(m, f);
      if (count == 0) continue;
      const uint64_t array = region.allocate(uint64_t{field.element_size} * count);
      for (int k = 0; k < count; ++k) {
        write_element(field, m, f, k, region.base() + array + uint64_t{field.element_size} * k,
                      region);
      }
      put(slot, RegionRef{array, static_cast<uint32_t>(count), static_cast<uint32_t>(count)});
      continue;
    }
    const bool has_presence = field.presence_bit != kNoPresenceBit || field.oneof_index != kNoOneof;
    if (has_presence && !r->HasField(m, f)) continue;
    if (field.kind == FieldKind::kMessage) {
      const uint64_t sub = region.allocate(field.message->body_size());
      build_into(*field.message, r->GetMessage(m, f), sub, region);
      put(slot, RegionRef{sub, field.message->body_size(), field.message->body_size()});
    } else {
      write_element(field, m, f, -1, slot, region);
    }
    if (field.oneof_index != kNoOneof) {
      put(region.base() + body +
              layout.oneofs()[static_cast<size_t>(field.oneof_index)].case_offset,
          field.number);
    } else if (field.presence_bit != kNoPresenceBit) {
      std::byte* word = region.base() + body + 4 * (field.presence_bit / 32);
      put(word, get<uint32_t>(word) | (1u << (field.presence_bit % 32)));
    }
  }
  std::string unknown;
  r->GetUnknownFields(m).SerializeToString(&unknown);
  if (!unknown.empty()) {
    const uint64_t at = region.allocate(unknown.size());
    std::memcpy(region.base() + at, unknown.data(), unknown.size());
    const auto size = static_cast<uint32_t>(unknown.size());
    put(region.base() + body + layout.unknown_fields_offset(), RegionRef{at, size, size});
  }
}

void write_element(const FieldLayout& field, const pb::Message& m, const FieldDescriptor* f,
                   int index, std::byte* at, Region& region) {
  const pb::Reflection* r = m.GetReflection();
  const bool rep = index >= 0;
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_BOOL:
      put(at, static_cast<uint8_t>(rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f)));
      break;
    case FieldDescriptor::CPPTYPE_INT32:
      put(at, rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f));
      break;
    case FieldDescriptor::CPPTYPE_UINT32:
      put(at, rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f));
      break;
    case FieldDescriptor::CPPTYPE_INT64:
      put(at, rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f));
      break;
    case FieldDescriptor::CPPTYPE_UINT64:
      put(at, rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f));
      break;
    case FieldDescriptor::CPPTYPE_FLOAT:
      put(at, rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f));
      break;
    case FieldDescriptor::CPPTYPE_DOUBLE:
      put(at, rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f));
      break;
    case FieldDescriptor::CPPTYPE_ENUM:
      put(at,
          static_cast<int32_t>(rep ? r->GetRepeatedEnumValue(m, f, index) : r->GetEnumValue(m, f)));
      break;
    case FieldDescriptor::CPPTYPE_STRING: {
      const std::string text = rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f);
      RegionRef ref{0, static_cast<uint32_t>(text.size()), static_cast<uint32_t>(text.size())};
      if (!text.empty()) {
        ref.offset = region.allocate(text.size());
        std::memcpy(region.base() + ref.offset, text.data(), text.size());
      }
      put(at, ref);
      break;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:  // repeated: the body inline in the array
      build_into(*field.message, r->GetRepeatedMessage(m, f, index),
                 static_cast<uint64_t>(at - region.base()), region);
      break;
  }
}

void read_element(const FieldLayout& field, const std::byte* base, const std::byte* at,
                  pb::Message& m, const FieldDescriptor* f) {
  const pb::Reflection* r = m.GetReflection();
  const bool rep = field.repeated;
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_BOOL: {
      const bool v = get<uint8_t>(at) != 0;
      rep ? r->AddBool(&m, f, v) : r->SetBool(&m, f, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_INT32: {
      const auto v = get<int32_t>(at);
      rep ? r->AddInt32(&m, f, v) : r->SetInt32(&m, f, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_UINT32: {
      const auto v = get<uint32_t>(at);
      rep ? r->AddUInt32(&m, f, v) : r->SetUInt32(&m, f, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_INT64: {
      const auto v = get<int64_t>(at);
      rep ? r->AddInt64(&m, f, v) : r->SetInt64(&m, f, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_UINT64: {
      const auto v = get<uint64_t>(at);
      rep ? r->AddUInt64(&m, f, v) : r->SetUInt64(&m, f, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_FLOAT: {
      const auto v = get<float>(at);
      rep ? r->AddFloat(&m, f, v) : r->SetFloat(&m, f, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_DOUBLE: {
      const auto v = get<double>(at);
      rep ? r->AddDouble(&m, f, v) : r->SetDouble(&m, f, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      const auto v = get<int32_t>(at);
      rep ? r->AddEnumValue(&m, f, v) : r->SetEnumValue(&m, f, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_STRING: {
      const auto ref = get<RegionRef>(at);
      std::string text(reinterpret_cast<const char*>(base + ref.offset), ref.size);
      rep ? r->AddString(&m, f, std::move(text)) : r->SetString(&m, f, std::move(text));
      break;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE: {
      pb::Message* sub = rep ? r->AddMessage(&m, f) : r->MutableMessage(&m, f);
      const uint64_t body = rep ? static_cast<uint64_t>(at - base) : get<RegionRef>(at).offset;
      read(*field.message, base, body, *sub);
      break;
    }
  }
}

bool is_zero(const std::byte* at, uint32_t size) {
  for (uint32_t i = 0; i < size; ++i)
    if (at[i] != std::byte{0}) return false;
  return true;
}

}  // namespace

uint64_t build(const MessageLayout& layout, const pb::Message& message, Region& region) {
  const uint64_t body = region.allocate(layout.body_size());
  build_into(layout, message, body, region);
  return body;
}

void read(const MessageLayout& layout, const std::byte* base, uint64_t offset, pb::Message& out) {
  const std::byte* body = base + offset;
  for (const FieldLayout& field : layout.fields()) {
    const FieldDescriptor* f =
        out.GetDescriptor()->FindFieldByNumber(static_cast<int>(field.number));
    const std::byte* slot = body + field.offset;
    if (field.repeated) {
      const auto ref = get<RegionRef>(slot);
      for (uint32_t k = 0; k < ref.size; ++k) {
        read_element(field, base, base + ref.offset + uint64_t{field.element_size} * k, out, f);
      }
      continue;
    }
    if (field.oneof_index != kNoOneof) {
      const auto& oneof = layout.oneofs()[static_cast<size_t>(field.oneof_index)];
      if (get<uint32_t>(body + oneof.case_offset) != field.number) continue;
    } else if (field.presence_bit != kNoPresenceBit) {
      const auto word = get<uint32_t>(body + 4 * (field.presence_bit / 32));
      if (((word >> (field.presence_bit % 32)) & 1) == 0) continue;
    } else if (field.kind == FieldKind::kString || field.kind == FieldKind::kBytes) {
      if (get<RegionRef>(slot).size == 0) continue;
    } else if (is_zero(slot, field.size)) {
      continue;
    }
    read_element(field, base, slot, out, f);
  }
  const auto unknown = get<RegionRef>(body + layout.unknown_fields_offset());
  if (unknown.size != 0) {
    REQUIRE(out.GetReflection()->MutableUnknownFields(&out)->ParseFromArray(
        base + unknown.offset, static_cast<int>(unknown.size)));
  }
}

bool equal(const pb::Message& a, const pb::Message& b, std::string* report) {
  pb::util::MessageDifferencer differencer;
  differencer.ReportDifferencesToString(report);
  return differencer.Compare(a, b);
}

}  // namespace mrpc::codec_testing
