// The wire encoder over a list of buffers: the same bytes as the one-buffer encoder (so as
// libprotobuf's), whatever the buffer sizes, with writes crossing buffer edges everywhere.
#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

#include "codec_harness.h"
#include "mrpc/codec/codecs.h"

namespace {

using namespace mrpc::codec_testing;
using mrpc::codec::ScatteredWire;

// The scattered encoding's bytes, joined.
std::string joined(const ScatteredWire& wire, const std::vector<std::vector<std::byte>>& buffers) {
  std::string out;
  for (std::span<const std::byte> piece : wire.pieces(buffers))
    out.append(reinterpret_cast<const char*>(piece.data()), piece.size());
  return out;
}

std::vector<std::span<std::byte>> spans_of(std::vector<std::vector<std::byte>>& buffers) {
  return {buffers.begin(), buffers.end()};
}

}  // namespace

TEST_CASE("the scattered wire encoder writes libprotobuf's bytes across buffers of any size") {
  int total = 0;
  for (size_t s = 0; s < std::size(kSchemas); ++s) {
    const SchemaCase& schema = kSchemas[s];
    const pb::Descriptor& type = harness().protos.message(schema.file, schema.type);
    const MessageCodec& codec = harness().codec(type);
    for (int i = 0; i < schema.messages / 5; ++i, ++total) {
      const uint64_t seed = 0x5ca77e00ull + s * 100000 + static_cast<uint64_t>(i);
      CAPTURE(seed);
      RandomCase c = random_case(type, seed);
      const std::string expected = c.message->SerializeAsString();
      mrpc::codec_testing::Region heap(1 << 20);
      const uint64_t root = build(codec.layout(), *c.message, heap);
      // Buffers of 0 to 24 bytes (many edges, empty ones too) and a few large ones, until they
      // hold the message plus some spare room in front.
      std::mt19937_64 random(seed);
      std::vector<std::vector<std::byte>> buffers;
      size_t room = 0;
      while (room < expected.size() + random() % 40) {
        const size_t size = random() % 8 == 0 ? random() % 4096 : random() % 25;
        buffers.emplace_back(size, std::byte{0xee});
        room += size;
      }
      if (buffers.empty()) buffers.emplace_back(1);
      auto spans = spans_of(buffers);
      auto wire = codec.encode_wire(heap.view(), root, spans, CodecLimits{});
      REQUIRE_MESSAGE(wire.ok(), wire.status().to_string(), " seed ", seed);
      CHECK(wire->size == expected.size());
      CHECK_MESSAGE(joined(*wire, buffers) == expected, "seed ", seed);
      // Every later buffer is whole: the encoding ends at the end of the last one.
      if (wire->size > 0) {
        CHECK(wire->first_offset < buffers[wire->first_buffer].size());
      }
    }
  }
  CHECK(total == 2000);
}

TEST_CASE("the scattered wire encoder reports the size it needs when the buffers are too small") {
  const pb::Descriptor& type = harness().protos.message("nested.proto", "nested.Document");
  const MessageCodec& codec = harness().codec(type);
  RandomCase c = random_case(type, 91);
  mrpc::codec_testing::Region heap(1 << 20);
  const uint64_t root = build(codec.layout(), *c.message, heap);
  const std::string expected = c.message->SerializeAsString();
  REQUIRE(expected.size() > 20);
  std::vector<std::vector<std::byte>> buffers{std::vector<std::byte>(7),
                                              std::vector<std::byte>(expected.size() - 8)};
  auto spans = spans_of(buffers);
  uint64_t needed = 0;
  auto wire = codec.encode_wire(heap.view(), root, spans, CodecLimits{}, &needed);
  REQUIRE_FALSE(wire.ok());
  CHECK(wire.status().code() == mrpc::StatusCode::kOutOfRange);
  CHECK(wire.status().message().find("2 buffers") != std::string::npos);
  CHECK(needed == expected.size());
  // One more byte in front is enough: the first buffer is used from its second byte.
  buffers.insert(buffers.begin(), std::vector<std::byte>(1));
  buffers[1].resize(7);
  spans = spans_of(buffers);
  wire = codec.encode_wire(heap.view(), root, spans, CodecLimits{});
  REQUIRE_MESSAGE(wire.ok(), wire.status().to_string());
  CHECK(wire->first_buffer == 0);
  CHECK(wire->first_offset == 0);
  CHECK(joined(*wire, buffers) == expected);

  const std::vector<std::span<std::byte>> none;
  auto empty = codec.encode_wire(heap.view(), root, none, CodecLimits{});
  REQUIRE_FALSE(empty.ok());
  CHECK(empty.status().code() == mrpc::StatusCode::kInvalidArgument);
}
