// Cutting text that apps supply (names) without splitting a UTF-8 character, so whatever shows
// it later (logs, the control socket's JSON) gets well-formed text.
#pragma once

#include <cstddef>
#include <string_view>

namespace mrpc {

// The longest prefix of `text` of at most `max_bytes` bytes that does not end inside a UTF-8
// character. `text` is expected to be valid UTF-8 (protobuf checks string fields); for other bytes
// the cut still never leaves a lead byte without its continuation bytes at the end.
inline std::string_view utf8_prefix(std::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t cut = max_bytes;
  // Back off over continuation bytes (10xxxxxx) to the start of the character the cut is in; a
  // character is at most 4 bytes, so a run longer than 3 is not UTF-8 and is cut where it is.
  for (size_t back = 0; back < 4; ++back) {
    if ((static_cast<unsigned char>(text[cut]) & 0xC0) != 0x80) return text.substr(0, cut);
    if (cut == 0) break;
    --cut;
  }
  return text.substr(0, max_bytes);
}

}  // namespace mrpc
