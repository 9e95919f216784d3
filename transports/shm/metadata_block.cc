#include "mrpc/transports/shm/metadata_block.h"

#include <cstring>

#include <fmt/format.h>

#include "mrpc/base/limits.h"
#include "mrpc/transports/shm/protocol.h"

namespace mrpc::shm {

namespace {

constexpr uint64_t kCountBytes = sizeof(uint32_t);
constexpr uint64_t kPairHeaderBytes = 2 * sizeof(uint32_t);

uint32_t read_u32(const std::byte* at) {
  uint32_t value = 0;
  std::memcpy(&value, at, sizeof value);
  return value;
}

void write_u32(std::byte* at, uint32_t value) {
  std::memcpy(at, &value, sizeof value);
}

Status invalid(std::string message) {
  return Status(StatusCode::kInvalidArgument, fmt::format("metadata block: {}", message));
}

}  // namespace

uint64_t metadata_block_bytes(const MetadataPairs& pairs) {
  uint64_t bytes = kCountBytes;
  for (const auto& [key, value] : pairs) bytes += kPairHeaderBytes + key.size() + value.size();
  return bytes;
}

bool valid_metadata_key(std::string_view key) {
  if (key.empty()) return false;
  for (char c : key) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

Status check_metadata(const MetadataPairs& pairs) {
  for (const auto& pair : pairs) {
    if (!valid_metadata_key(pair.first)) {
      return invalid(fmt::format("key '{}' is not lower-case ASCII (a-z 0-9 - _ .)", pair.first));
    }
  }
  const uint64_t bytes = metadata_block_bytes(pairs);
  if (bytes > limits::kMaxMetadataBytes) {
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("metadata of {} bytes exceeds limits::kMaxMetadataBytes ({})", bytes,
                              limits::kMaxMetadataBytes));
  }
  return Status();
}

Expected<uint64_t> encode_metadata(const MetadataPairs& pairs, std::span<std::byte> out) {
  MRPC_TRY_STATUS(check_metadata(pairs));
  const uint64_t bytes = metadata_block_bytes(pairs);
  if (out.size() < bytes) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("metadata block needs {} bytes, {} given", bytes, out.size()));
  }
  std::byte* at = out.data();
  write_u32(at, static_cast<uint32_t>(pairs.size()));
  at += kCountBytes;
  for (const auto& [key, value] : pairs) {
    write_u32(at, static_cast<uint32_t>(key.size()));
    write_u32(at + sizeof(uint32_t), static_cast<uint32_t>(value.size()));
    at += kPairHeaderBytes;
    std::memcpy(at, key.data(), key.size());
    at += key.size();
    std::memcpy(at, value.data(), value.size());
    at += value.size();
  }
  return bytes;
}

Expected<MetadataPairs> decode_metadata(const std::byte* base, uint64_t region_bytes,
                                        uint64_t offset, uint64_t length) {
  MetadataPairs pairs;
  if (offset == kNoOffset || length == 0) return pairs;
  if (length > limits::kMaxMetadataBytes) {
    return invalid(fmt::format("length {} exceeds limits::kMaxMetadataBytes ({})", length,
                               limits::kMaxMetadataBytes));
  }
  if (offset > region_bytes || length > region_bytes - offset) {
    return invalid(
        fmt::format("[{}, +{}) lies outside the region of {} bytes", offset, length, region_bytes));
  }
  if (length < kCountBytes) return invalid(fmt::format("length {} holds no count", length));
  // Read once: the region may be written by the peer while we parse.
  std::vector<std::byte> copy(base + offset, base + offset + length);
  const std::byte* at = copy.data();
  uint64_t left = length;
  const uint32_t count = read_u32(at);
  at += kCountBytes;
  left -= kCountBytes;
  if (count > left / kPairHeaderBytes) {
    return invalid(fmt::format("count {} does not fit in {} bytes", count, length));
  }
  pairs.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    if (left < kPairHeaderBytes) return invalid(fmt::format("pair {} header is cut off", i));
    const uint64_t key_length = read_u32(at);
    const uint64_t value_length = read_u32(at + sizeof(uint32_t));
    at += kPairHeaderBytes;
    left -= kPairHeaderBytes;
    if (key_length > left || value_length > left - key_length) {
      return invalid(fmt::format("pair {} lengths ({}, {}) exceed the {} bytes left", i, key_length,
                                 value_length, left));
    }
    std::string key(reinterpret_cast<const char*>(at), key_length);
    at += key_length;
    std::string value(reinterpret_cast<const char*>(at), value_length);
    at += value_length;
    left -= key_length + value_length;
    if (!valid_metadata_key(key)) return invalid(fmt::format("pair {} has an invalid key", i));
    pairs.emplace_back(std::move(key), std::move(value));
  }
  if (left != 0) return invalid(fmt::format("{} trailing bytes after {} pairs", left, count));
  return pairs;
}

}  // namespace mrpc::shm
