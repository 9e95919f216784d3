// The compiled protobuf wire codecs against libprotobuf, over seeded random messages of six
// schemas (every field kind), and the decoder's and encoder's answers to bad input.
#include <doctest/doctest.h>

#include <google/protobuf/descriptor.h>

#include <cstring>
#include <vector>

#include "codec_harness.h"
#include "mrpc/codec/codecs.h"
#include "mrpc/jit/jit.h"
#include "mrpc/message/layout.h"
#include "mrpc/message/region_allocator.h"

namespace {

using namespace mrpc::codec_testing;
using mrpc::codec::CodecLimits;
using mrpc::codec::MessageCodec;
namespace pb = google::protobuf;

// Decodes `bytes` with the compiled decoder and reads the result back with the reference reader.
std::unique_ptr<pb::Message> jit_decode(const MessageCodec& codec, const pb::Descriptor& type,
                                        const std::string& bytes, ReceiveRegion& receive) {
  auto root = codec.decode_wire(as_bytes(bytes), receive.region.mutable_view(), receive.allocator,
                                CodecLimits{});
  REQUIRE_MESSAGE(root.ok(), root.status().to_string());
  auto decoded = harness().protos.make(type);
  read(codec.layout(), receive.region.base(), *root, *decoded);
  REQUIRE(receive.allocator.free(*root).ok());
  return decoded;
}

}  // namespace

TEST_CASE("wire codecs agree with libprotobuf on 10000 seeded random messages of seven schemas") {
  int total = 0;
  for (size_t s = 0; s < std::size(kSchemas); ++s) {
    const SchemaCase& schema = kSchemas[s];
    const pb::Descriptor& type = harness().protos.message(schema.file, schema.type);
    const MessageCodec& codec = harness().codec(type);
    ReceiveRegion receive;
    std::vector<std::byte> out(1 << 20);
    for (int i = 0; i < schema.messages; ++i, ++total) {
      const uint64_t seed = 0x5eed0000ull + s * 100000 + static_cast<uint64_t>(i);
      CAPTURE(seed);
      RandomCase c = random_case(type, seed);
      // libprotobuf's own encoding, and the variant (other order, packing, unknown fields).
      check_equal(*c.message, *jit_decode(codec, type, c.message->SerializeAsString(), receive),
                  "decode of libprotobuf's bytes", seed);
      check_equal(*c.message, *jit_decode(codec, type, c.variant, receive),
                  "decode of reordered/repacked bytes with unknown fields", seed);
      // The compiled encoder's bytes, parsed by libprotobuf.
      Region heap(1 << 20);
      const uint64_t root = build(codec.layout(), *c.message, heap);
      auto encoded = codec.encode_wire(heap.view(), root, out, CodecLimits{});
      REQUIRE_MESSAGE(encoded.ok(), encoded.status().to_string(), " seed ", seed);
      auto parsed = harness().protos.make(type);
      REQUIRE_MESSAGE(parsed->ParseFromArray(encoded->data(), static_cast<int>(encoded->size())),
                      "libprotobuf rejects the JIT encoding, seed ", seed);
      check_equal(*c.message, *parsed, "libprotobuf's parse of the JIT encoding", seed);
      // Canonical form: the same bytes libprotobuf writes (fields in number order, then unknown).
      CHECK_MESSAGE(std::string(reinterpret_cast<const char*>(encoded->data()), encoded->size()) ==
                        c.message->SerializeAsString(),
                    "seed ", seed);
    }
    CHECK(receive.allocator.live_blocks() == 0);
  }
  CHECK(total == 10000);
}

TEST_CASE("the wire encoder reports the size it needs when the buffer is too small") {
  const pb::Descriptor& type = harness().protos.message("nested.proto", "nested.Document");
  const MessageCodec& codec = harness().codec(type);
  RandomCase c = random_case(type, 77);
  Region heap(1 << 20);
  const uint64_t root = build(codec.layout(), *c.message, heap);
  const std::string expected = c.message->SerializeAsString();
  REQUIRE(expected.size() > 10);
  std::vector<std::byte> small(expected.size() - 1);
  uint64_t needed = 0;
  auto encoded = codec.encode_wire(heap.view(), root, small, CodecLimits{}, &needed);
  REQUIRE_FALSE(encoded.ok());
  CHECK(encoded.status().code() == mrpc::StatusCode::kOutOfRange);
  CHECK(needed == expected.size());
  std::vector<std::byte> exact(needed);
  auto again = codec.encode_wire(heap.view(), root, exact, CodecLimits{});
  REQUIRE(again.ok());
  CHECK(again->size() == needed);
}

TEST_CASE("the wire encoder refuses references outside the heap, bad oneof cases and cycles") {
  const pb::Descriptor& type =
      harness().protos.message("tests/codec/protos/codec_kinds.proto", "codec_test.AllKinds");
  const MessageCodec& codec = harness().codec(type);
  const mrpc::MessageLayout& layout = codec.layout();
  std::vector<std::byte> out(4096);

  Region heap(1 << 16);
  const uint64_t root = heap.allocate(layout.body_size());
  const mrpc::FieldLayout* text = layout.field_by_name("text");
  REQUIRE(text != nullptr);
  mrpc::RegionRef outside{heap.size() - 4, 100, 100};
  std::memcpy(heap.base() + root + text->offset, &outside, sizeof outside);
  auto encoded = codec.encode_wire(heap.view(), root, out, CodecLimits{});
  REQUIRE_FALSE(encoded.ok());
  CHECK(encoded.status().code() == mrpc::StatusCode::kInvalidArgument);
  CHECK(encoded.status().message().find("outside the source region") != std::string::npos);

  Region heap2(1 << 16);
  const uint64_t root2 = heap2.allocate(layout.body_size());
  const uint32_t bad_case = 9999;
  std::memcpy(heap2.base() + root2 + layout.oneofs()[0].case_offset, &bad_case, 4);
  auto bad = codec.encode_wire(heap2.view(), root2, out, CodecLimits{});
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message().find("oneof") != std::string::npos);

  // o_self points at its own message: a cycle, stopped by the nesting limit.
  Region heap3(1 << 16);
  const uint64_t root3 = heap3.allocate(layout.body_size());
  const mrpc::FieldLayout* self = layout.field_by_name("o_self");
  REQUIRE(self != nullptr);
  const auto& other = layout.oneofs()[static_cast<size_t>(self->oneof_index)];
  std::memcpy(heap3.base() + root3 + other.case_offset, &self->number, 4);
  mrpc::RegionRef loop{root3, layout.body_size(), layout.body_size()};
  std::memcpy(heap3.base() + root3 + self->offset, &loop, sizeof loop);
  auto cycle = codec.encode_wire(heap3.view(), root3, out, CodecLimits{});
  REQUIRE_FALSE(cycle.ok());
  CHECK(cycle.status().message().find("max_nesting") != std::string::npos);
}

TEST_CASE(
    "the wire decoder turns every truncation and byte flip of valid input into a message or an "
    "error") {
  const pb::Descriptor& type =
      harness().protos.message("tests/codec/protos/codec_kinds.proto", "codec_test.AllKinds");
  const MessageCodec& codec = harness().codec(type);
  ReceiveRegion receive;
  std::mt19937_64 random(4242);
  int errors = 0;
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    CAPTURE(seed);
    RandomCase c = random_case(type, seed);
    std::string bytes = c.variant;
    for (size_t cut = 0; cut < bytes.size(); ++cut) {
      auto root = codec.decode_wire(as_bytes(bytes.substr(0, cut)), receive.region.mutable_view(),
                                    receive.allocator, CodecLimits{});
      if (root.ok()) {
        REQUIRE(receive.allocator.free(*root).ok());
      } else {
        ++errors;
        CHECK(root.status().code() == mrpc::StatusCode::kInvalidArgument);
      }
    }
    for (int flip = 0; flip < 200 && !bytes.empty(); ++flip) {
      std::string mutated = bytes;
      mutated[random() % mutated.size()] = static_cast<char>(random());
      auto root = codec.decode_wire(as_bytes(mutated), receive.region.mutable_view(),
                                    receive.allocator, CodecLimits{});
      if (root.ok()) REQUIRE(receive.allocator.free(*root).ok());
    }
  }
  CHECK(errors > 0);
  CHECK(receive.allocator.live_blocks() == 0);
}

TEST_CASE("the wire decoder stops at the nesting limit and at max_message_bytes") {
  const pb::Descriptor& type =
      harness().protos.message("tests/codec/protos/codec_kinds.proto", "codec_test.AllKinds");
  const MessageCodec& codec = harness().codec(type);
  ReceiveRegion receive;
  // o_self (field 70) nested 100 deep.
  std::string bytes;
  for (int i = 0; i < 100; ++i) {
    std::string outer("\xb2\x04", 2);  // field 70, wire type 2
    // length as a varint
    uint64_t length = bytes.size();
    while (length >= 0x80) {
      outer.push_back(static_cast<char>(length | 0x80));
      length >>= 7;
    }
    outer.push_back(static_cast<char>(length));
    bytes = outer + bytes;
  }
  auto deep = codec.decode_wire(as_bytes(bytes), receive.region.mutable_view(), receive.allocator,
                                CodecLimits{});
  REQUIRE_FALSE(deep.ok());
  CHECK(deep.status().code() == mrpc::StatusCode::kInvalidArgument);
  CHECK(deep.status().message().find("max_nesting") != std::string::npos);
  CodecLimits roomy;
  roomy.max_nesting = 200;
  auto allowed =
      codec.decode_wire(as_bytes(bytes), receive.region.mutable_view(), receive.allocator, roomy);
  REQUIRE_MESSAGE(allowed.ok(), allowed.status().to_string());
  REQUIRE(receive.allocator.free(*allowed).ok());

  // 10,000 empty Leaf elements: 20 KB on the wire, far more decoded.
  std::string leaves;
  for (int i = 0; i < 10000; ++i) leaves += std::string("\xca\x03\x00", 3);  // field 57, length 0
  CodecLimits small;
  small.max_message_bytes = 64 << 10;
  auto big =
      codec.decode_wire(as_bytes(leaves), receive.region.mutable_view(), receive.allocator, small);
  REQUIRE_FALSE(big.ok());
  CHECK(big.status().code() == mrpc::StatusCode::kResourceExhausted);
  CHECK(big.status().message().find("max_message_bytes") != std::string::npos);
  CHECK(receive.allocator.live_blocks() == 0);
}
