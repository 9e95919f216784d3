// The small C runtime that generated codec code calls (registered with the JIT by name): byte
// output for the wire encoder, bounds-checked reads and region allocation for the decoder. The
// per-field dispatch, offsets, presence and conversions are compiled from the schema
// (wire_codegen.cc); these helpers only move bytes. Private to compiler/codec.
//
// Every helper that can fail returns a CodecError (0: none) and records where in the context.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mrpc/codec/codecs.h"
#include "mrpc/jit/jit.h"
#include "mrpc/message/layout.h"

namespace mrpc::codec {

enum CodecError : int32_t {
  kCodecOk = 0,
  kErrorTooDeep = 1,        // nesting past max_nesting
  kErrorOutsideRegion = 2,  // encoder: a reference outside the source region
  kErrorTruncated = 3,      // decoder: input ends inside a field
  kErrorBadVarint = 4,      // decoder: varint longer than 10 bytes
  kErrorBadTag = 5,         // decoder: a tag past 5 bytes, or field number 0
  kErrorBadWireType = 6,    // decoder: wire type 3, 4 (groups), 6 or 7
  kErrorOutOfRoom = 7,      // decoder: the receive block is full (the driver retries bigger)
  kErrorTooLarge = 8,       // a length or count past the limits
  kErrorBadOneofCase = 9,   // encoder: a oneof case word naming no member
  kErrorBadLength = 10,     // decoder: a length prefix longer than 5 bytes or past kMaxWireLength
  kErrorBadUnknown = 11,    // native decoder: unknown-field bytes not unknown protobuf fields
};
// The largest length prefix libprotobuf accepts (2^31 - 1 less its 16 slop bytes).
inline constexpr uint64_t kMaxWireLength = (uint64_t{1} << 31) - 1 - 16;
const char* codec_error_text(int32_t error);

// One output buffer of a scattered wire encoding: it holds positions [start, start + size) of
// the output (the buffers, in order, cover [0, capacity)).
struct WireChunk {
  uint8_t* data;
  int64_t start;
  int64_t size;
};
// The chunk's data shifted back by its start, so base + pos addresses output byte pos (computed on
// integers: an empty chunk may have no data pointer at all).
inline uint8_t* wire_chunk_base(const WireChunk& chunk) {
  return reinterpret_cast<uint8_t*>(reinterpret_cast<uintptr_t>(chunk.data) -
                                    static_cast<uintptr_t>(chunk.start));
}

// Wire encoder state. Output is written backwards: `pos` counts the bytes still free before the
// cursor; when it goes negative the output is too small and the encoder only counts from then
// on, so the final `capacity - pos` is the size needed either way.
// Positions are virtual when the output is a list of buffers (`chunks`): the current one holds
// [chunk_floor, ...) and `out + pos` addresses position pos in it, so a write that stays at or
// above chunk_floor is one store (inline in generated code); one that crosses below goes through
// mrpc_we_spill, which splits it and moves to the buffer before. One buffer: chunk_floor is 0 and
// chunks null.
struct WireEncoder {
  const uint8_t* base;  // source region (app heap, untrusted)
  uint64_t region_size;
  uint8_t* out;
  int64_t pos;
  int64_t floor;  // pos below this: the message is past max_message_bytes (stop counting)
  uint32_t max_nesting;
  int32_t error;
  uint64_t error_detail;  // the region offset or field number involved
  int64_t chunk_floor;
  const WireChunk* chunks;  // null: one buffer
  int64_t chunk;            // index of the current buffer in `chunks`
};

// The most bytes generated code writes in one inline store sequence (a tag, a fixed value).
inline constexpr uint64_t kMaxInlineWireBytes = 16;

// A read position in decoder input.
struct WireCursor {
  const uint8_t* at;
  const uint8_t* end;
};

// Wire decoder state: builds the message in [cursor, end) of a receive region block.
struct WireDecoder {
  uint8_t* base;  // receive region
  uint64_t cursor;
  uint64_t end;
  uint32_t max_nesting;
  int32_t error;
  const uint8_t* input;  // start of the whole input, for error positions
  const uint8_t* error_at;
};

// Encodings of packed repeated scalars (mrpc_wd_packed's `encoding`).
enum PackedEncoding : uint32_t {
  kPackedBool = 0,
  kPackedVarint32 = 1,  // int32, uint32, enum: the low 32 bits
  kPackedVarint64 = 2,
  kPackedZigzag32 = 3,
  kPackedZigzag64 = 4,
  kPackedFixed32 = 5,
  kPackedFixed64 = 6,
};

// Native (scatter-gather) encoder state: a list of spans of the source region, plus zero padding.
struct NativeEncoder {
  const uint8_t* base;
  uint64_t region_size;
  std::vector<NativeSpan>* spans;
  uint64_t total;  // bytes of all spans so far (each piece padded to 8)
  uint64_t max_bytes;
  uint32_t max_nesting;
  int32_t error;
  uint64_t error_detail;
};
struct NativeDecoder {
  uint8_t* base;  // receive region; the block holds the received bytes already
  uint64_t block;
  uint64_t cursor;  // next piece, relative to block
  uint64_t size;    // bytes received
  uint32_t max_nesting;
  int32_t error;
  uint64_t error_detail;
};

// Whether `size` bytes are a sequence of whole protobuf fields the wire decoder would keep as
// unknown fields (kCodecOk), else the error and, in *error_offset, where the bad field starts.
// `known_tags` (sorted, `known_count` of them): the tags the message's decoder takes as its own
// fields; an unknown field with one of them is refused (kErrorBadUnknown).
int32_t check_unknown_fields(const uint8_t* bytes, uint64_t size, const uint32_t* known_tags,
                             uint64_t known_count, uint64_t* error_offset);

// The helpers, by the names generated code calls them.
std::vector<jit::HostSymbol> codec_runtime_symbols();

}  // namespace mrpc::codec

// Called by the drivers (codecs.cc) as well as by generated code.
// The bytes of output positions [e->pos, e->pos + size), the write that crossed below
// chunk_floor: stored across buffers (nothing stored when the output is too small).
extern "C" void mrpc_we_spill(mrpc::codec::WireEncoder* e, const uint8_t* bytes, uint64_t size);
extern "C" const uint8_t* mrpc_ne_piece(mrpc::codec::NativeEncoder* e, uint64_t offset,
                                        uint64_t bytes);
