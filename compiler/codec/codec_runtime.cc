// The codec runtime helpers (codec_runtime.h). Called only from generated code, with contexts the
// codec drivers (codecs.cc) set up. Encoders read untrusted memory: each value is loaded once and
// checked before use. Decoders read untrusted bytes: every read is bounds-checked against the
// cursor's end, every write against the receive block.
#include "compiler/codec/codec_runtime.h"

#include <algorithm>
#include <cstring>

namespace mrpc::codec {
namespace {

constexpr uint64_t round8(uint64_t value) {
  return (value + 7) & ~uint64_t{7};
}

// ---- wire encoder ----

inline void put(WireEncoder* e, const void* bytes, uint64_t size) {
  e->pos -= static_cast<int64_t>(size);
  if (e->pos >= e->chunk_floor) {
    std::memcpy(e->out + e->pos, bytes, size);
  } else {
    mrpc_we_spill(e, static_cast<const uint8_t*>(bytes), size);
  }
}

bool in_region(uint64_t region_size, uint64_t offset, uint64_t bytes) {
  return offset <= region_size && bytes <= region_size - offset;
}

}  // namespace

const char* codec_error_text(int32_t error) {
  switch (error) {
    case kCodecOk:
      return "no error";
    case kErrorTooDeep:
      return "messages nested deeper than the limit (max_nesting)";
    case kErrorOutsideRegion:
      return "a reference points outside the source region";
    case kErrorTruncated:
      return "the input ends inside a field";
    case kErrorBadVarint:
      return "a varint is longer than 10 bytes";
    case kErrorBadTag:
      return "a tag is longer than 5 bytes or its field number is 0";
    case kErrorBadWireType:
      return "wire type is a group (3, 4) or invalid (6, 7)";
    case kErrorOutOfRoom:
      return "the receive block is full";
    case kErrorTooLarge:
      return "a length or element count past the limits (max_message_bytes)";
    case kErrorBadOneofCase:
      return "a oneof case word names none of its fields";
    case kErrorBadLength:
      return "a length prefix is longer than 5 bytes or past 2^31-17";
    case kErrorBadUnknown:
      return "the unknown-field bytes are not a sequence of protobuf fields the message does not "
             "know (a field of its own, or not a protobuf field)";
    default:
      return "unknown codec error";
  }
}

extern "C" {

void mrpc_we_spill(WireEncoder* e, const uint8_t* bytes, uint64_t size) {
  if (e->pos < 0 || e->chunks == nullptr) return;  // the output is too small: counting only
  // From the top down: the part in the current buffer, then the buffers before it.
  int64_t high = e->pos + static_cast<int64_t>(size);
  for (;;) {
    const WireChunk& chunk = e->chunks[e->chunk];
    const int64_t low = std::max(e->pos, chunk.start);
    if (low < high) {
      std::memcpy(chunk.data + (low - chunk.start), bytes + (low - e->pos),
                  static_cast<size_t>(high - low));
    }
    high = low;
    if (high == e->pos) break;
    // pos >= 0 and buffer 0 starts at 0: there is a buffer before this one.
    --e->chunk;
    const WireChunk& previous = e->chunks[e->chunk];
    e->out = wire_chunk_base(previous);
    e->chunk_floor = previous.start;
  }
}

void mrpc_we_varint(WireEncoder* e, uint64_t value) {
  if (value < 0x80 && e->pos > e->chunk_floor) {  // one byte, inside the current buffer
    e->out[--e->pos] = static_cast<uint8_t>(value);
    return;
  }
  const int64_t size = (64 - __builtin_clzll(value | 1) + 6) / 7;
  if (e->pos - size >= e->chunk_floor) {  // inside the current buffer: written in place
    e->pos -= size;
    uint8_t* p = e->out + e->pos;
    while (value >= 0x80) {
      *p++ = static_cast<uint8_t>(value | 0x80);
      value >>= 7;
    }
    *p = static_cast<uint8_t>(value);
    return;
  }
  uint8_t bytes[10];
  int n = 0;
  while (value >= 0x80) {
    bytes[n++] = static_cast<uint8_t>(value | 0x80);
    value >>= 7;
  }
  bytes[n++] = static_cast<uint8_t>(value);
  put(e, bytes, static_cast<uint64_t>(n));
}

void mrpc_we_fixed32(WireEncoder* e, uint32_t value) {
  put(e, &value, 4);
}

void mrpc_we_fixed64(WireEncoder* e, uint64_t value) {
  put(e, &value, 8);
}

// `count` elements of `element_size` bytes at region offset `offset`, or null (error set).
const uint8_t* mrpc_we_resolve(WireEncoder* e, uint64_t offset, uint64_t count,
                               uint64_t element_size) {
  if (e->pos < e->floor) {  // bounds the work a heap of aliased references can cause
    e->error = kErrorTooLarge;
    e->error_detail = offset;
    return nullptr;
  }
  const unsigned __int128 bytes = static_cast<unsigned __int128>(count) * element_size;
  if (bytes > e->region_size || !in_region(e->region_size, offset, static_cast<uint64_t>(bytes))) {
    e->error = kErrorOutsideRegion;
    e->error_detail = offset;
    return nullptr;
  }
  return e->base + offset;
}

// A string or bytes value: its bytes, then their length. `ref` is in untrusted memory.
int32_t mrpc_we_bytes(WireEncoder* e, const RegionRef* ref) {
  RegionRef value;
  std::memcpy(&value, ref, sizeof value);
  // The common case first: a short value inside the region, written into the current buffer.
  if (value.size < 0x80 && e->pos >= e->floor && value.offset <= e->region_size &&
      value.size <= e->region_size - value.offset &&
      e->pos - 1 - static_cast<int64_t>(value.size) >= e->chunk_floor) {
    e->pos -= 1 + static_cast<int64_t>(value.size);
    e->out[e->pos] = static_cast<uint8_t>(value.size);
    std::memcpy(e->out + e->pos + 1, e->base + value.offset, value.size);
    return kCodecOk;
  }
  if (value.size != 0 || e->pos < e->floor) {
    const uint8_t* bytes = mrpc_we_resolve(e, value.offset, value.size, 1);
    if (bytes == nullptr) return e->error;
    put(e, bytes, value.size);
  }
  mrpc_we_varint(e, value.size);
  return kCodecOk;
}

// Unknown-field bytes, already in wire format.
int32_t mrpc_we_raw(WireEncoder* e, const RegionRef* ref) {
  RegionRef value;
  std::memcpy(&value, ref, sizeof value);
  if (value.size == 0) return kCodecOk;
  const uint8_t* bytes = mrpc_we_resolve(e, value.offset, value.size, 1);
  if (bytes == nullptr) return e->error;
  put(e, bytes, value.size);
  return kCodecOk;
}

int64_t mrpc_we_mark(WireEncoder* e) {
  return e->pos;
}

void mrpc_we_length_since(WireEncoder* e, int64_t mark) {
  mrpc_we_varint(e, static_cast<uint64_t>(mark - e->pos));
}

int32_t mrpc_codec_fail(int32_t* error_slot, int32_t error) {
  *error_slot = error;
  return error;
}

// ---- wire decoder ----

static int32_t decode_fail(WireDecoder* d, int32_t error, const uint8_t* at) {
  d->error = error;
  d->error_at = at;
  return error;
}

// ---- scanning protobuf bytes, with libprotobuf's rules ----
// libprotobuf 3.21 (parse_context.h: VarintParse, ReadTag, ReadSize) accepts a varint of at most
// 10 bytes, a tag of at most 5 bytes whose value it takes modulo 2^32, and a length prefix of at
// most 5 bytes below 2^31 - 16; a field number 0 is an error. The decoders follow the same rules,
// so they accept exactly the unknown fields libprotobuf accepts (except groups: refused, see
// docs/marshalling.md), and unknown-field bytes kept in a message re-encode into bytes libprotobuf
// parses. Each scan advances *p and returns kCodecOk, or returns an error with *p at the byte
// where the bad value starts (truncation: where the input ran out).

static int32_t scan_varint(const uint8_t** p, const uint8_t* end, uint64_t* out) {
  const uint8_t* q = *p;
  if (end - q >= 10) {  // no bounds check per byte (unrolled by the compiler)
    uint64_t value = 0;
    for (int i = 0; i < 10; ++i) {
      const uint64_t byte = q[i];
      value |= (byte & 0x7f) << (7 * i);  // the 10th byte: only its lowest bit is kept
      if (byte < 0x80) {
        *p = q + i + 1;
        *out = value;
        return kCodecOk;
      }
    }
    return kErrorBadVarint;
  }
  uint64_t value = 0;
  for (int shift = 0; shift < 70; shift += 7) {
    if (q >= end) {
      *p = q;
      return kErrorTruncated;
    }
    const uint8_t byte = *q++;
    value |= static_cast<uint64_t>(byte & 0x7f) << (shift < 64 ? shift : 63);
    if ((byte & 0x80) == 0) {
      *p = q;
      *out = value;
      return kCodecOk;
    }
  }
  return kErrorBadVarint;
}

static int32_t scan_tag(const uint8_t** p, const uint8_t* end, uint64_t* tag) {
  const uint8_t* q = *p;
  uint32_t value = 0;
  for (int i = 0; i < 5; ++i) {
    if (q >= end) {
      *p = q;
      return kErrorTruncated;
    }
    const uint8_t byte = *q++;
    value |= static_cast<uint32_t>(byte & 0x7f) << (7 * i);  // the 5th byte's high bits drop
    if ((byte & 0x80) == 0) {
      if ((value >> 3) == 0) return kErrorBadTag;
      *p = q;
      *tag = value;
      return kCodecOk;
    }
  }
  return kErrorBadTag;
}

// A length prefix and the bytes it covers: [*start, *start + *size) within [*p, end).
static int32_t scan_length(const uint8_t** p, const uint8_t* end, const uint8_t** start,
                           uint64_t* size) {
  const uint8_t* q = *p;
  uint64_t value = 0;
  for (int i = 0;; ++i) {
    if (q >= end) return kErrorTruncated;
    const uint8_t byte = *q++;
    value |= static_cast<uint64_t>(byte & 0x7f) << (7 * i);
    if ((byte & 0x80) == 0) break;
    if (i == 4) return kErrorBadLength;
  }
  if (value > kMaxWireLength) return kErrorBadLength;
  if (value > static_cast<uint64_t>(end - q)) return kErrorTruncated;
  *start = q;
  *size = value;
  *p = q + value;
  return kCodecOk;
}

// Skips the value of a field with `tag` (its tag already read).
static int32_t scan_value(const uint8_t** p, const uint8_t* end, uint64_t tag) {
  switch (tag & 7) {
    case 0: {
      uint64_t ignored;
      return scan_varint(p, end, &ignored);
    }
    case 1:
    case 5: {
      const int64_t width = (tag & 7) == 1 ? 8 : 4;
      if (end - *p < width) return kErrorTruncated;
      *p += width;
      return kCodecOk;
    }
    case 2: {
      const uint8_t* start;
      uint64_t size;
      return scan_length(p, end, &start, &size);
    }
    default:
      return kErrorBadWireType;
  }
}

}  // extern "C"

int32_t check_unknown_fields(const uint8_t* bytes, uint64_t size, const uint32_t* known_tags,
                             uint64_t known_count, uint64_t* error_offset) {
  const uint8_t* p = bytes;
  const uint8_t* end = bytes + size;
  while (p < end) {
    const uint8_t* field = p;
    uint64_t tag;
    int32_t error = scan_tag(&p, end, &tag);
    if (error == kCodecOk &&
        std::binary_search(known_tags, known_tags + known_count, static_cast<uint32_t>(tag))) {
      error = kErrorBadUnknown;
    }
    if (error == kCodecOk) error = scan_value(&p, end, tag);
    if (error != kCodecOk) {
      *error_offset = static_cast<uint64_t>(field - bytes);
      return error;
    }
  }
  return kCodecOk;
}

extern "C" {

static int32_t read_varint(WireDecoder* d, WireCursor* c, uint64_t* out) {
  const uint8_t* at = c->at;
  if (int32_t error = scan_varint(&at, c->end, out)) return decode_fail(d, error, at);
  c->at = at;
  return kCodecOk;
}

int32_t mrpc_wd_varint(WireDecoder* d, WireCursor* c, uint64_t* out) {
  const uint8_t* p = c->at;
  if (c->end - p >= 1 && *p < 0x80) {  // the common one-byte case
    *out = *p;
    c->at = p + 1;
    return kCodecOk;
  }
  if (c->end - p >= 5) {  // up to 5 bytes without a bounds check per byte
    uint64_t value = p[0] & 0x7f;
    for (int i = 1; i < 5; ++i) {
      value |= static_cast<uint64_t>(p[i] & 0x7f) << (7 * i);
      if (p[i] < 0x80) {
        *out = value;
        c->at = p + i + 1;
        return kCodecOk;
      }
    }
  }
  return read_varint(d, c, out);
}

int32_t mrpc_wd_tag(WireDecoder* d, WireCursor* c, uint64_t* tag) {
  const uint8_t* at = c->at;
  if (int32_t error = scan_tag(&at, c->end, tag)) return decode_fail(d, error, at);
  c->at = at;
  return kCodecOk;
}

int32_t mrpc_wd_fixed32(WireDecoder* d, WireCursor* c, uint32_t* out) {
  if (c->end - c->at < 4) return decode_fail(d, kErrorTruncated, c->at);
  std::memcpy(out, c->at, 4);
  c->at += 4;
  return kCodecOk;
}

int32_t mrpc_wd_fixed64(WireDecoder* d, WireCursor* c, uint64_t* out) {
  if (c->end - c->at < 8) return decode_fail(d, kErrorTruncated, c->at);
  std::memcpy(out, c->at, 8);
  c->at += 8;
  return kCodecOk;
}

// A length prefix and the bytes it covers: [*start, *start + *size) within the input.
static int32_t read_length(WireDecoder* d, WireCursor* c, const uint8_t** start, uint64_t* size) {
  const uint8_t* at = c->at;
  if (int32_t error = scan_length(&at, c->end, start, size)) return decode_fail(d, error, c->at);
  c->at = at;
  return kCodecOk;
}

constexpr uint64_t kNoRoom = UINT64_MAX;

// `bytes` (8-aligned) of the receive block, or kNoRoom with kErrorOutOfRoom.
static uint64_t take(WireDecoder* d, uint64_t bytes, const uint8_t* at) {
  bytes = round8(bytes);
  if (bytes > d->end - d->cursor) {
    decode_fail(d, kErrorOutOfRoom, at);
    return kNoRoom;
  }
  const uint64_t offset = d->cursor;
  d->cursor += bytes;
  return offset;
}

// Makes room for `more` elements in the array at `slot` (ours: only the decoder wrote it).
static uint8_t* reserve(WireDecoder* d, RegionRef* slot, uint64_t more, uint32_t element_size,
                        const uint8_t* at) {
  const uint64_t needed = uint64_t{slot->size} + more;
  if (needed > UINT32_MAX) {
    decode_fail(d, kErrorTooLarge, at);
    return nullptr;
  }
  if (needed <= slot->capacity) return d->base + slot->offset;
  uint64_t capacity = slot->capacity < 4 ? 4 : uint64_t{slot->capacity} * 2;
  if (capacity < needed) capacity = needed;
  if (capacity > UINT32_MAX) capacity = UINT32_MAX;
  // The array is the last piece of the block: grow it where it is.
  if (slot->capacity != 0 &&
      round8(slot->offset + uint64_t{slot->capacity} * element_size) == d->cursor) {
    const uint64_t grown_end = slot->offset + capacity * element_size;
    if (round8(grown_end) <= d->end) {
      d->cursor = round8(grown_end);
      slot->capacity = static_cast<uint32_t>(capacity);
      return d->base + slot->offset;
    }
  }
  const uint64_t offset = take(d, capacity * element_size, at);
  if (offset == kNoRoom) return nullptr;
  if (slot->size != 0) {
    std::memcpy(d->base + offset, d->base + slot->offset, uint64_t{slot->size} * element_size);
  }
  slot->offset = offset;
  slot->capacity = static_cast<uint32_t>(capacity);
  return d->base + offset;
}

// A zeroed new element at the end of the array at `slot`.
uint8_t* mrpc_wd_append(WireDecoder* d, RegionRef* slot, uint32_t element_size, const uint8_t* at) {
  uint8_t* array = reserve(d, slot, 1, element_size, at);
  if (array == nullptr) return nullptr;
  uint8_t* element = array + uint64_t{slot->size} * element_size;
  std::memset(element, 0, element_size);
  ++slot->size;
  return element;
}

static int32_t copy_bytes(WireDecoder* d, WireCursor* c, RegionRef* slot) {
  const uint8_t* at = c->at;
  const uint8_t* start;
  uint64_t size;
  if (int32_t error = read_length(d, c, &start, &size)) return error;
  if (size > UINT32_MAX) return decode_fail(d, kErrorTooLarge, at);
  RegionRef ref{0, static_cast<uint32_t>(size), static_cast<uint32_t>(size)};
  if (size != 0) {
    ref.offset = take(d, size, at);
    if (ref.offset == kNoRoom) return d->error;
    std::memcpy(d->base + ref.offset, start, size);
  }
  *slot = ref;
  return kCodecOk;
}

int32_t mrpc_wd_bytes(WireDecoder* d, WireCursor* c, RegionRef* slot) {
  // The common case inline: a one-byte length, within the input, with room in the block.
  const uint8_t* p = c->at;
  if (p < c->end && *p < 0x80) {
    const uint64_t size = *p;
    const uint64_t room = round8(size);
    if (size < static_cast<uint64_t>(c->end - p) && room <= d->end - d->cursor) {
      RegionRef ref{0, static_cast<uint32_t>(size), static_cast<uint32_t>(size)};
      if (size != 0) {
        ref.offset = d->cursor;
        d->cursor += room;
        std::memcpy(d->base + ref.offset, p + 1, size);
      }
      *slot = ref;
      c->at = p + 1 + size;
      return kCodecOk;
    }
  }
  return copy_bytes(d, c, slot);
}

int32_t mrpc_wd_append_bytes(WireDecoder* d, WireCursor* c, RegionRef* array_slot) {
  auto* element =
      reinterpret_cast<RegionRef*>(mrpc_wd_append(d, array_slot, sizeof(RegionRef), c->at));
  if (element == nullptr) return d->error;
  return copy_bytes(d, c, element);
}

// Enters a length-delimited sub-message: `inner` covers it, `outer` moves past it.
int32_t mrpc_wd_enter(WireDecoder* d, WireCursor* outer, WireCursor* inner) {
  const uint8_t* start;
  uint64_t size;
  if (int32_t error = read_length(d, outer, &start, &size)) return error;
  inner->at = start;
  inner->end = start + size;
  return kCodecOk;
}

// The body of a singular sub-message: the one already there when `reuse` (a repeated occurrence
// merges into it), else a new zeroed body referenced from `slot`.
uint8_t* mrpc_wd_sub_body(WireDecoder* d, RegionRef* slot, uint32_t body_size, uint32_t reuse,
                          const uint8_t* at) {
  if (reuse != 0) return d->base + slot->offset;
  const uint64_t offset = take(d, body_size, at);
  if (offset == kNoRoom) return nullptr;
  std::memset(d->base + offset, 0, body_size);
  *slot = RegionRef{offset, body_size, body_size};
  return d->base + offset;
}

}  // extern "C"

// Stores element `i` of a packed field, converted as `E` says.
template <PackedEncoding E>
static void store_unpacked(uint8_t* out, uint64_t i, uint64_t v) {
  if constexpr (E == kPackedBool) {
    out[i] = v != 0;
  } else if constexpr (E == kPackedVarint32 || E == kPackedZigzag32) {
    uint32_t low = static_cast<uint32_t>(v);
    if constexpr (E == kPackedZigzag32) low = (low >> 1) ^ (0u - (low & 1));
    std::memcpy(out + 4 * i, &low, 4);
  } else {
    if constexpr (E == kPackedZigzag64) v = (v >> 1) ^ (uint64_t{0} - (v & 1));
    std::memcpy(out + 8 * i, &v, 8);
  }
}

// Decodes `count` varints from [p, end) (their last bytes counted by the caller) into `out` as
// `E` says: one-byte values inline, longer ones through scan_varint.
template <PackedEncoding E>
static int32_t unpack_varints(const uint8_t* p, const uint8_t* end, uint64_t count, uint8_t* out) {
  if (count == static_cast<uint64_t>(end - p)) {  // every value one byte: no branch per element
    for (uint64_t i = 0; i < count; ++i) store_unpacked<E>(out, i, p[i]);
    return kCodecOk;
  }
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t v = *p;
    if (v < 0x80) {
      ++p;
    } else if (int32_t error = scan_varint(&p, end, &v)) {
      return error;
    }
    store_unpacked<E>(out, i, v);
  }
  return kCodecOk;
}

extern "C" {

int32_t mrpc_wd_packed(WireDecoder* d, WireCursor* c, RegionRef* slot, uint32_t encoding,
                       uint32_t element_size) {
  const uint8_t* at = c->at;
  const uint8_t* start;
  uint64_t size;
  if (at < c->end && *at < 0x80 && *at < c->end - at) {  // a one-byte length, inline
    size = *at;
    start = at + 1;
    c->at = start + size;
  } else if (int32_t error = read_length(d, c, &start, &size)) {
    return error;
  }
  const uint8_t* end = start + size;
  uint64_t count = 0;
  if (encoding == kPackedFixed32 || encoding == kPackedFixed64) {
    const uint64_t width = encoding == kPackedFixed32 ? 4 : 8;
    if (size % width != 0) return decode_fail(d, kErrorTruncated, at);
    count = size / width;
  } else {
    for (const uint8_t* p = start; p < end; ++p) count += (*p & 0x80) == 0;
    if (size != 0 && (end[-1] & 0x80) != 0) return decode_fail(d, kErrorTruncated, end - 1);
  }
  if (count == 0) return kCodecOk;
  uint8_t* array;
  if (slot->capacity == 0 && count <= UINT32_MAX) {  // the field's first elements: exact size
    const uint64_t offset = take(d, count * element_size, at);
    if (offset == kNoRoom) return d->error;
    *slot = RegionRef{offset, 0, static_cast<uint32_t>(count)};
    array = d->base + offset;
  } else {
    array = reserve(d, slot, count, element_size, at);
    if (array == nullptr) return d->error;
  }
  uint8_t* out = array + uint64_t{slot->size} * element_size;
  if (encoding == kPackedFixed32 || encoding == kPackedFixed64) {
    std::memcpy(out, start, size);
  } else {
    int32_t error = kCodecOk;
    switch (encoding) {
      case kPackedBool:
        error = unpack_varints<kPackedBool>(start, end, count, out);
        break;
      case kPackedVarint32:
        error = unpack_varints<kPackedVarint32>(start, end, count, out);
        break;
      case kPackedZigzag32:
        error = unpack_varints<kPackedZigzag32>(start, end, count, out);
        break;
      case kPackedVarint64:
        error = unpack_varints<kPackedVarint64>(start, end, count, out);
        break;
      case kPackedZigzag64:
        error = unpack_varints<kPackedZigzag64>(start, end, count, out);
        break;
      default:
        break;
    }
    if (error != kCodecOk) return decode_fail(d, error, start);
  }
  slot->size += static_cast<uint32_t>(count);
  return kCodecOk;
}

// A field this schema does not know (or with an unexpected wire type): skipped, and its raw bytes
// (tag included, from `field_start`) appended to the unknown-field bytes at `slot`.
int32_t mrpc_wd_unknown(WireDecoder* d, WireCursor* c, uint64_t tag, const uint8_t* field_start,
                        RegionRef* slot) {
  const uint8_t* at = c->at;
  if (int32_t error = scan_value(&at, c->end, tag)) {
    return decode_fail(d, error, error == kErrorBadWireType ? field_start : at);
  }
  c->at = at;
  const uint64_t size = static_cast<uint64_t>(c->at - field_start);
  uint8_t* array = reserve(d, slot, size, 1, field_start);
  if (array == nullptr) return d->error;
  std::memcpy(array + slot->size, field_start, size);
  slot->size += static_cast<uint32_t>(size);
  return kCodecOk;
}

int32_t mrpc_wd_fail(WireDecoder* d, int32_t error, const uint8_t* at) {
  return decode_fail(d, error, at);
}

// ---- native encoder: spans of the source region, each piece padded to 8 bytes ----

static const uint8_t kZeros[8] = {};

// `bytes` at region offset `offset` (count * element size, computed without overflow by the
// caller from a u32 count).
const uint8_t* mrpc_ne_piece(NativeEncoder* e, uint64_t offset, uint64_t bytes) {
  if (!in_region(e->region_size, offset, bytes)) {
    e->error = kErrorOutsideRegion;
    e->error_detail = offset;
    return nullptr;
  }
  if (bytes == 0) return e->base + offset;
  if (round8(bytes) > e->max_bytes - e->total) {
    e->error = kErrorTooLarge;
    e->error_detail = e->total;
    return nullptr;
  }
  NativeSpan span{reinterpret_cast<const std::byte*>(e->base + offset), bytes};
  if (!e->spans->empty() && e->spans->back().data + e->spans->back().size == span.data) {
    e->spans->back().size += bytes;  // adjacent pieces (a heap arena) become one span
  } else {
    e->spans->push_back(span);
  }
  if (bytes % 8 != 0) {
    e->spans->push_back(NativeSpan{reinterpret_cast<const std::byte*>(kZeros), 8 - bytes % 8});
  }
  e->total += round8(bytes);
  return e->base + offset;
}

int32_t mrpc_ne_fail(NativeEncoder* e, int32_t error) {
  e->error = error;
  return error;
}

// ---- native decoder: the next piece of the received block, and the reference to it ----

// The next `bytes` of the received block; `slot` is rewritten to reference them, with size and
// capacity `stored_size`.
uint8_t* mrpc_nd_piece(NativeDecoder* d, RegionRef* slot, uint64_t bytes, uint32_t stored_size) {
  if (bytes > d->size - d->cursor || round8(bytes) > d->size - d->cursor) {
    d->error = kErrorTruncated;
    d->error_detail = d->cursor;
    return nullptr;
  }
  uint8_t* piece = d->base + d->block + d->cursor;
  slot->offset = bytes == 0 ? 0 : d->block + d->cursor;
  slot->size = stored_size;
  slot->capacity = stored_size;
  d->cursor += round8(bytes);
  return piece;
}

// The unknown-field bytes (the last piece of a body): a piece, whose bytes must be whole protobuf
// fields (what the wire encoder copies into its output as they are).
uint8_t* mrpc_nd_unknown(NativeDecoder* d, RegionRef* slot, uint64_t bytes, uint32_t stored_size,
                         const uint32_t* known_tags, uint64_t known_count) {
  const uint64_t at = d->cursor;
  uint8_t* piece = mrpc_nd_piece(d, slot, bytes, stored_size);
  if (piece == nullptr || bytes == 0) return piece;
  uint64_t bad = 0;
  if (check_unknown_fields(piece, bytes, known_tags, known_count, &bad) != kCodecOk) {
    d->error = kErrorBadUnknown;
    d->error_detail = at + bad;
    return nullptr;
  }
  return piece;
}

int32_t mrpc_nd_fail(NativeDecoder* d, int32_t error) {
  d->error = error;
  d->error_detail = d->cursor;
  return error;
}

}  // extern "C"

std::vector<jit::HostSymbol> codec_runtime_symbols() {
  auto symbol = [](const char* name, auto* function) {
    return jit::HostSymbol{name, reinterpret_cast<const void*>(function)};
  };
  return {
      symbol("mrpc_we_varint", &mrpc_we_varint),
      symbol("mrpc_we_spill", &mrpc_we_spill),
      symbol("mrpc_we_fixed32", &mrpc_we_fixed32),
      symbol("mrpc_we_fixed64", &mrpc_we_fixed64),
      symbol("mrpc_we_resolve", &mrpc_we_resolve),
      symbol("mrpc_we_bytes", &mrpc_we_bytes),
      symbol("mrpc_we_raw", &mrpc_we_raw),
      symbol("mrpc_we_mark", &mrpc_we_mark),
      symbol("mrpc_we_length_since", &mrpc_we_length_since),
      symbol("mrpc_codec_fail", &mrpc_codec_fail),
      symbol("mrpc_wd_varint", &mrpc_wd_varint),
      symbol("mrpc_wd_tag", &mrpc_wd_tag),
      symbol("mrpc_wd_fixed32", &mrpc_wd_fixed32),
      symbol("mrpc_wd_fixed64", &mrpc_wd_fixed64),
      symbol("mrpc_wd_append", &mrpc_wd_append),
      symbol("mrpc_wd_bytes", &mrpc_wd_bytes),
      symbol("mrpc_wd_append_bytes", &mrpc_wd_append_bytes),
      symbol("mrpc_wd_enter", &mrpc_wd_enter),
      symbol("mrpc_wd_sub_body", &mrpc_wd_sub_body),
      symbol("mrpc_wd_packed", &mrpc_wd_packed),
      symbol("mrpc_wd_unknown", &mrpc_wd_unknown),
      symbol("mrpc_wd_fail", &mrpc_wd_fail),
      symbol("mrpc_ne_piece", &mrpc_ne_piece),
      symbol("mrpc_ne_fail", &mrpc_ne_fail),
      symbol("mrpc_nd_piece", &mrpc_nd_piece),
      symbol("mrpc_nd_unknown", &mrpc_nd_unknown),
      symbol("mrpc_nd_fail", &mrpc_nd_fail),
  };
}

}  // namespace mrpc::codec
