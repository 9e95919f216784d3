// The per-call metadata block of protocol.h: u32 count, then per pair u32 key_length,
// u32 value_length, key bytes, value bytes; little-endian as the host, no padding, at most
// limits::kMaxMetadataBytes in all. Keys are non-empty lower-case ASCII: a-z 0-9 '-' '_' '.'.
//
// The app encodes into its heap; the daemon decodes from the app's heap (untrusted: the block is
// copied to private memory once, then every length is checked against it) and encodes into the
// receive region of the app it delivers to. Pure functions, any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "mrpc/base/expected.h"
#include "mrpc/base/status.h"

namespace mrpc::shm {

using MetadataPairs = std::vector<std::pair<std::string, std::string>>;

// Bytes the block for `pairs` takes.
uint64_t metadata_block_bytes(const MetadataPairs& pairs);
// True if `key` is a valid metadata key.
bool valid_metadata_key(std::string_view key);
// Checks `pairs` (keys valid, size within limits::kMaxMetadataBytes): INVALID_ARGUMENT or
// RESOURCE_EXHAUSTED naming the key or limit.
Status check_metadata(const MetadataPairs& pairs);
// Writes the block into `out`, which must hold metadata_block_bytes(pairs) bytes; checks as
// check_metadata and returns the bytes written.
Expected<uint64_t> encode_metadata(const MetadataPairs& pairs, std::span<std::byte> out);
// Reads the block at [offset, offset + length) of the region [base, base + region_bytes).
// INVALID_ARGUMENT if the block lies outside the region, exceeds kMaxMetadataBytes, has a length
// or count that does not fit, an invalid key, or trailing bytes. offset == kNoOffset or
// length == 0 decodes as no pairs.
Expected<MetadataPairs> decode_metadata(const std::byte* base, uint64_t region_bytes,
                                        uint64_t offset, uint64_t length);

}  // namespace mrpc::shm
