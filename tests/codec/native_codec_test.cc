// The compiled native codecs: a message's heap spans (no copy) rebuilt in a fresh receive region,
// over the same seeded random messages as the wire tests, and their answers to bad input.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "codec_harness.h"

namespace {

using namespace mrpc::codec_testing;
using mrpc::codec::CodecLimits;
using mrpc::codec::MessageCodec;
using mrpc::codec::NativeSpan;

std::vector<std::byte> gather(const std::vector<NativeSpan>& spans) {
  std::vector<std::byte> bytes;
  for (const NativeSpan& span : spans) bytes.insert(bytes.end(), span.data, span.data + span.size);
  return bytes;
}

}  // namespace

TEST_CASE("native encoding round-trips 10000 seeded random messages into a fresh receive region") {
  int total = 0;
  for (size_t s = 0; s < std::size(kSchemas); ++s) {
    const SchemaCase& schema = kSchemas[s];
    const pb::Descriptor& type = harness().protos.message(schema.file, schema.type);
    const MessageCodec& codec = harness().codec(type);
    ReceiveRegion receive;
    for (int i = 0; i < schema.messages; ++i, ++total) {
      const uint64_t seed = 0x5eed0000ull + s * 100000 + static_cast<uint64_t>(i);
      CAPTURE(seed);
      RandomCase c = random_case(type, seed);
      Region heap(1 << 20);
      const uint64_t root = build(codec.layout(), *c.message, heap);
      std::vector<NativeSpan> spans;
      auto size = codec.encode_native(heap.view(), root, spans, CodecLimits{});
      REQUIRE_MESSAGE(size.ok(), size.status().to_string());
      // No copy: every span lies in the heap, or is padding of at most 7 bytes.
      for (const NativeSpan& span : spans) {
        const bool in_heap =
            span.data >= heap.base() && span.data + span.size <= heap.base() + heap.size();
        CHECK((in_heap || span.size < 8));
      }
      const std::vector<std::byte> bytes = gather(spans);
      REQUIRE(bytes.size() == *size);
      auto received = codec.decode_native(bytes, receive.region.mutable_view(), receive.allocator,
                                          CodecLimits{});
      REQUIRE_MESSAGE(received.ok(), received.status().to_string());
      auto decoded = harness().protos.make(type);
      read(codec.layout(), receive.region.base(), *received, *decoded);
      check_equal(*c.message, *decoded, "native round trip", seed);
      REQUIRE(receive.allocator.free(*received).ok());
    }
    CHECK(receive.allocator.live_blocks() == 0);
  }
  CHECK(total == 10000);
}

TEST_CASE("the native decoder turns truncations and byte flips into a message or an error") {
  const pb::Descriptor& type =
      harness().protos.message("tests/codec/protos/codec_kinds.proto", "codec_test.AllKinds");
  const MessageCodec& codec = harness().codec(type);
  ReceiveRegion receive;
  std::mt19937_64 random(99);
  int errors = 0;
  for (uint64_t seed = 1; seed <= 30; ++seed) {
    CAPTURE(seed);
    RandomCase c = random_case(type, seed);
    Region heap(1 << 20);
    const uint64_t root = build(codec.layout(), *c.message, heap);
    std::vector<NativeSpan> spans;
    REQUIRE(codec.encode_native(heap.view(), root, spans, CodecLimits{}).ok());
    const std::vector<std::byte> bytes = gather(spans);
    for (size_t cut = 0; cut < bytes.size(); cut += 8) {
      auto received =
          codec.decode_native(std::span(bytes.data(), cut), receive.region.mutable_view(),
                              receive.allocator, CodecLimits{});
      CHECK_FALSE(received.ok());  // every piece is needed
      errors += !received.ok();
    }
    for (int flip = 0; flip < 300; ++flip) {
      std::vector<std::byte> mutated = bytes;
      mutated[random() % mutated.size()] = static_cast<std::byte>(random());
      auto received = codec.decode_native(mutated, receive.region.mutable_view(), receive.allocator,
                                          CodecLimits{});
      if (received.ok()) REQUIRE(receive.allocator.free(*received).ok());
    }
  }
  CHECK(errors > 0);
  CHECK(receive.allocator.live_blocks() == 0);
}

TEST_CASE("native encoding does not follow or pass on references of unset fields") {
  const pb::Descriptor& type =
      harness().protos.message("tests/codec/protos/codec_kinds.proto", "codec_test.AllKinds");
  const MessageCodec& codec = harness().codec(type);
  const mrpc::MessageLayout& layout = codec.layout();
  Region heap(1 << 16);
  const uint64_t root = heap.allocate(layout.body_size());
  // `leaf` is unset (presence bit clear) but its storage points outside the heap.
  const mrpc::FieldLayout* leaf = layout.field_by_name("leaf");
  REQUIRE(leaf != nullptr);
  const mrpc::RegionRef stale{heap.size() + 64, 8, 8};
  std::memcpy(heap.base() + root + leaf->offset, &stale, sizeof stale);
  std::vector<NativeSpan> spans;
  auto size = codec.encode_native(heap.view(), root, spans, CodecLimits{});
  REQUIRE_MESSAGE(size.ok(), size.status().to_string());
  CHECK(*size == (layout.body_size() + 7) / 8 * 8);
  ReceiveRegion receive;
  const std::vector<std::byte> bytes = gather(spans);
  auto received =
      codec.decode_native(bytes, receive.region.mutable_view(), receive.allocator, CodecLimits{});
  REQUIRE(received.ok());
  mrpc::RegionRef cleared;
  std::memcpy(&cleared, receive.region.base() + *received + leaf->offset, sizeof cleared);
  CHECK(cleared.offset == 0);
  CHECK(cleared.size == 0);
}
