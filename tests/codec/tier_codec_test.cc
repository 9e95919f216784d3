// The codec tiers: a schema compiled fast (no IR optimization, -O0 machine code) and the same
// schema compiled optimized give the same bytes and the same messages, on the differential tests'
// seeded random messages and on corrupted input (the swap under threads: tier_swap_test.cc).
#include <doctest/doctest.h>

#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "codec_harness.h"

namespace {

using namespace mrpc::codec_testing;
using mrpc::codec::CodecLimits;
using mrpc::codec::CompiledSchema;
using mrpc::codec::MessageCodec;
using mrpc::codec::NativeSpan;
using mrpc::jit::CodegenTier;

std::shared_ptr<const CompiledSchema> compile_at(const pb::Descriptor& type, CodegenTier tier) {
  auto schema = harness().compiler->compile({&type}, tier);
  REQUIRE_MESSAGE(schema.ok(), schema.status().to_string());
  CHECK((*schema)->tier() == tier);
  return *schema;
}

std::string wire_bytes(const MessageCodec& codec, const Region& heap, uint64_t root,
                       std::vector<std::byte>& out) {
  auto encoded = codec.encode_wire(heap.view(), root, out, CodecLimits{});
  REQUIRE_MESSAGE(encoded.ok(), encoded.status().to_string());
  return std::string(reinterpret_cast<const char*>(encoded->data()), encoded->size());
}

std::string native_bytes(const MessageCodec& codec, const Region& heap, uint64_t root) {
  std::vector<NativeSpan> spans;
  auto size = codec.encode_native(heap.view(), root, spans, CodecLimits{});
  REQUIRE_MESSAGE(size.ok(), size.status().to_string());
  std::string bytes;
  for (const NativeSpan& span : spans) {
    bytes.append(reinterpret_cast<const char*>(span.data), span.size);
  }
  return bytes;
}

// What a decoder made of `bytes`: the error's text, or the message read back (libprotobuf parses
// its unknown-field bytes: a decoder must keep only whole protobuf fields there) and its wire
// encoding by the same codec.
struct Decoded {
  std::string error;
  std::string encoded;
  std::unique_ptr<pb::Message> message;
};

Decoded decode(const MessageCodec& codec, const pb::Descriptor& type, bool native,
               const std::string& bytes, ReceiveRegion& receive) {
  auto root = native ? codec.decode_native(as_bytes(bytes), receive.region.mutable_view(),
                                           receive.allocator, CodecLimits{})
                     : codec.decode_wire(as_bytes(bytes), receive.region.mutable_view(),
                                         receive.allocator, CodecLimits{});
  Decoded out;
  if (!root.ok()) {
    out.error = root.status().to_string();
    return out;
  }
  std::vector<std::byte> buffer(4 << 20);
  auto encoded = codec.encode_wire(receive.region.view(), *root, buffer, CodecLimits{});
  out.encoded = encoded.ok()
                    ? std::string(reinterpret_cast<const char*>(encoded->data()), encoded->size())
                    : "re-encode: " + encoded.status().to_string();
  out.message = harness().protos.make(type);
  read(codec.layout(), receive.region.base(), *root, *out.message);
  REQUIRE(receive.allocator.free(*root).ok());
  return out;
}

void check_same_decode(const MessageCodec& fast, const MessageCodec& optimized,
                       const pb::Descriptor& type, bool native, const std::string& bytes,
                       ReceiveRegion& receive, const char* what, uint64_t seed) {
  const Decoded a = decode(fast, type, native, bytes, receive);
  const Decoded b = decode(optimized, type, native, bytes, receive);
  CHECK_MESSAGE(a.error == b.error, what, " seed ", seed);
  CHECK_MESSAGE(a.encoded == b.encoded, what, " (re-encoded) seed ", seed);
  if (a.message != nullptr && b.message != nullptr) check_equal(*b.message, *a.message, what, seed);
}

}  // namespace

TEST_CASE("fast and optimized codecs agree byte for byte on 10000 seeded random messages") {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // A sanitizer build runs a tenth of them (the plain stage runs all): ASan makes each about
  // 30x slower, past ctest's 300 s.
  constexpr int kShare = 10;
  MESSAGE("under a sanitizer: every " << kShare << "th message of each schema's share");
#else
  constexpr int kShare = 1;
#endif
  int total = 0;
  for (size_t s = 0; s < std::size(kSchemas); ++s) {
    const SchemaCase& schema = kSchemas[s];
    const pb::Descriptor& type = harness().protos.message(schema.file, schema.type);
    auto fast_schema = compile_at(type, CodegenTier::kFast);
    auto optimized_schema = compile_at(type, CodegenTier::kOptimized);
    CHECK(fast_schema->key() == optimized_schema->key());
    const MessageCodec& fast = *fast_schema->find(type.full_name());
    const MessageCodec& optimized = *optimized_schema->find(type.full_name());
    ReceiveRegion receive;
    std::vector<std::byte> out(1 << 20);
    for (int i = 0; i < schema.messages; i += kShare, ++total) {
      const uint64_t seed = 0x5eed0000ull + s * 100000 + static_cast<uint64_t>(i);
      CAPTURE(seed);
      RandomCase c = random_case(type, seed);
      Region heap(1 << 20);
      const uint64_t root = build(fast.layout(), *c.message, heap);
      // Encoders: the same bytes.
      const std::string wire = wire_bytes(fast, heap, root, out);
      CHECK_MESSAGE(wire == wire_bytes(optimized, heap, root, out), "wire encoding, seed ", seed);
      const std::string native = native_bytes(fast, heap, root);
      CHECK_MESSAGE(native == native_bytes(optimized, heap, root), "native encoding, seed ", seed);
      // Decoders: the same message from libprotobuf's bytes, the variant (reordered, repacked,
      // unknown fields) and the native bytes, and the same answer to a corrupted copy of each.
      check_same_decode(fast, optimized, type, false, wire, receive, "wire decode", seed);
      check_same_decode(fast, optimized, type, false, c.variant, receive, "variant decode", seed);
      check_same_decode(fast, optimized, type, true, native, receive, "native decode", seed);
      std::mt19937_64 random(seed);
      for (const std::string* original : {&std::as_const(c.variant), &native}) {
        if (original->empty()) continue;
        std::string corrupt = *original;
        corrupt[random() % corrupt.size()] ^= static_cast<char>(1 + random() % 255);
        if (random() % 2 == 0) corrupt.resize(random() % corrupt.size());
        check_same_decode(fast, optimized, type, original == &native, corrupt, receive,
                          "decode of corrupted bytes", seed);
      }
    }
    CHECK(receive.allocator.live_blocks() == 0);
  }
  if constexpr (kShare == 1) CHECK(total == 10000);
}
