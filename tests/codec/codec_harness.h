// Shared by the codec tests: the schemas of the differential tests, one JIT and codec compiler per
// test process, receive regions, and the seeded random cases.
#pragma once

#include <doctest/doctest.h>

#include <google/protobuf/descriptor.h>

#include <span>
#include <string>
#include <vector>

#include "codec_test_support.h"
#include "mrpc/codec/codecs.h"
#include "mrpc/jit/jit.h"
#include "mrpc/message/layout.h"
#include "mrpc/message/region_allocator.h"

namespace mrpc::codec_testing {

using mrpc::codec::CodecLimits;
using mrpc::codec::MessageCodec;
namespace pb = google::protobuf;

struct SchemaCase {
  const char* file;
  const char* type;
  int messages;
};

// 10,000 messages in all.
inline constexpr SchemaCase kSchemas[] = {
    {"nested.proto", "nested.Document", 2000},
    {"examples/protos/hotel/profile.proto", "hotel.ProfileResult", 1500},
    {"examples/protos/hotel/rate.proto", "hotel.RateResult", 500},
    {"examples/protos/shop/orders.proto", "shop.OrderRequest", 1500},
    {"tests/codec/protos/codec_kinds.proto", "codec_test.AllKinds", 3000},
    {"tests/codec/protos/codec_legacy.proto", "codec_test.Legacy", 1000},
    {"tests/message/edge_cases.proto", "mrpc_test.edge.Settings", 500},
};

// One JIT, one compiler and the proto files, shared by the cases of a test process.
struct Harness {
  ProtoLibrary protos;
  std::unique_ptr<mrpc::jit::Jit> jit;
  std::unique_ptr<mrpc::codec::CodecCompiler> compiler;
  std::vector<std::shared_ptr<const mrpc::codec::CompiledSchema>> compiled;

  Harness() {
    auto created = mrpc::jit::Jit::create();
    REQUIRE_MESSAGE(created.ok(), created.status().to_string());
    jit = std::move(*created);
    auto codec_compiler = mrpc::codec::CodecCompiler::create(*jit);
    REQUIRE_MESSAGE(codec_compiler.ok(), codec_compiler.status().to_string());
    compiler = std::move(*codec_compiler);
  }

  const MessageCodec& codec(const pb::Descriptor& type) {
    auto schema = compiler->compile({&type});
    REQUIRE_MESSAGE(schema.ok(), schema.status().to_string());
    compiled.push_back(*schema);
    const MessageCodec* found = (*schema)->find(type.full_name());
    REQUIRE(found != nullptr);
    return *found;
  }
};

inline Harness& harness() {
  static Harness instance;
  return instance;
}

// A receive region with its allocator.
struct ReceiveRegion {
  Region region{8 << 20};
  mrpc::RegionAllocator allocator{8 << 20};
};

inline std::span<const std::byte> as_bytes(const std::string& text) {
  return {reinterpret_cast<const std::byte*>(text.data()), text.size()};
}

// The message `seed` gives for `type`: random, then re-parsed by libprotobuf from a variant
// encoding (shuffled fields, random packing, unknown fields), so it carries unknown fields too.
struct RandomCase {
  std::unique_ptr<pb::Message> message;
  std::string variant;
};

inline RandomCase random_case(const pb::Descriptor& type, uint64_t seed) {
  std::mt19937_64 random(seed);
  auto original = harness().protos.make(type);
  fill_random(*original, random);
  RandomCase out;
  out.variant = write_variant(*original, random, true);
  out.message = harness().protos.make(type);
  REQUIRE(out.message->ParseFromString(out.variant));
  return out;
}

inline void check_equal(const pb::Message& expected, const pb::Message& actual, const char* what,
                        uint64_t seed) {
  std::string report;
  if (!equal(expected, actual, &report)) {
    FAIL_CHECK(what << " differs for seed " << seed << ":\n"
                    << report << "expected:\n"
                    << expected.DebugString() << "got:\n"
                    << actual.DebugString());
  }
}

}  // namespace mrpc::codec_testing
