#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "mrpc/base/limits.h"
#include "mrpc/transports/shm/metadata_block.h"
#include "mrpc/transports/shm/protocol.h"

using mrpc::StatusCode;
using mrpc::shm::decode_metadata;
using mrpc::shm::encode_metadata;
using mrpc::shm::MetadataPairs;

namespace {
void put_u32(std::vector<std::byte>& block, uint32_t value) {
  const auto* bytes = reinterpret_cast<const std::byte*>(&value);
  block.insert(block.end(), bytes, bytes + sizeof value);
}
}  // namespace

TEST_CASE("metadata round-trips through a block at an offset of a region") {
  const MetadataPairs pairs = {
      {"x-user", "alice"}, {"trace-id", "0af7651916cd43dd"}, {"empty", ""}};
  std::vector<std::byte> region(4096);
  const uint64_t offset = 100;
  auto written = encode_metadata(pairs, std::span(region).subspan(offset));
  REQUIRE(written.ok());
  CHECK(*written == mrpc::shm::metadata_block_bytes(pairs));
  CHECK(*written == 4 + 3 * 8 + 6 + 5 + 8 + 16 + 5);
  auto decoded = decode_metadata(region.data(), region.size(), offset, *written);
  REQUIRE(decoded.ok());
  CHECK(*decoded == pairs);
}

TEST_CASE("no metadata decodes as no pairs") {
  std::vector<std::byte> region(16);
  CHECK(decode_metadata(region.data(), region.size(), mrpc::shm::kNoOffset, 0).value().empty());
  CHECK(decode_metadata(region.data(), region.size(), 0, 0).value().empty());
}

TEST_CASE("encoding refuses bad keys and oversized metadata") {
  std::vector<std::byte> out(1 << 16);
  CHECK(encode_metadata({{"Upper", "v"}}, out).status().code() == StatusCode::kInvalidArgument);
  CHECK(encode_metadata({{"", "v"}}, out).status().code() == StatusCode::kInvalidArgument);
  const MetadataPairs big = {{"k", std::string(mrpc::limits::kMaxMetadataBytes, 'v')}};
  CHECK(encode_metadata(big, out).status().code() == StatusCode::kResourceExhausted);
  std::vector<std::byte> small(8);
  CHECK(encode_metadata({{"key", "value"}}, small).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("decoding refuses a block outside its region") {
  std::vector<std::byte> region(64);
  CHECK(decode_metadata(region.data(), region.size(), 60, 8).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(decode_metadata(region.data(), region.size(), UINT64_MAX - 2, 8).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(decode_metadata(region.data(), region.size(), 0, uint64_t{1} << 40).status().code() ==
        StatusCode::kInvalidArgument);
}

TEST_CASE("decoding refuses lengths that do not fit the block") {
  std::vector<std::byte> block;
  SUBCASE("a count larger than the pairs present") {
    put_u32(block, 1'000'000);
  }
  SUBCASE("a key length of 2^32-1") {
    put_u32(block, 1);
    put_u32(block, UINT32_MAX);
    put_u32(block, 0);
  }
  SUBCASE("a value length past the end") {
    put_u32(block, 1);
    put_u32(block, 1);
    put_u32(block, 100);
    block.push_back(std::byte{'k'});
  }
  SUBCASE("trailing bytes after the pairs") {
    put_u32(block, 0);
    block.push_back(std::byte{0});
  }
  SUBCASE("a key with a capital letter") {
    put_u32(block, 1);
    put_u32(block, 1);
    put_u32(block, 0);
    block.push_back(std::byte{'K'});
  }
  SUBCASE("a block too short for its count") {
    block.push_back(std::byte{1});
  }
  auto decoded = decode_metadata(block.data(), block.size(), 0, block.size());
  REQUIRE_FALSE(decoded.ok());
  CHECK(decoded.status().code() == StatusCode::kInvalidArgument);
}
