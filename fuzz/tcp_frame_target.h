// What the TCP frame fuzz target (fuzz/tcp_frame_fuzz.cc) and the default suite's replay of its
// corpus (tests/transports/tcp_frame_test.cc) run on one input: the bytes are fed to the frame
// parser as a connection would receive them, in pieces whose sizes the first byte picks, and every
// frame it accepts must encode back to the same bytes and parse to the same fields. A parser error
// is a fine outcome (the connection would close); a crash, a read outside the input (ASan) or a
// frame that does not round-trip aborts with the reason.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "tcp/frame.h"

namespace mrpc::tcp_fuzz {

inline void require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "tcp frame fuzz: %s\n", what);
  std::abort();
}

// Returns the number of frames parsed.
inline size_t run(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t piece = 1 + data[0] % 64;  // bytes arriving per read
  const auto* input = reinterpret_cast<const std::byte*>(data + 1);
  const size_t length = size - 1;
  tcp::FrameParser parser;
  std::vector<std::byte> received;  // what a connection's receive buffer would hold
  size_t consumed = 0, fed = 0, frames = 0;
  std::vector<std::byte> encoded;
  while (fed < length) {
    const size_t take = std::min(piece, length - fed);
    received.insert(received.end(), input + fed, input + fed + take);
    fed += take;
    for (;;) {
      auto parsed = parser.parse(std::span(received).subspan(consumed));
      if (!parsed.ok()) return frames;  // the connection would close here
      if (!parsed->complete) {
        require(parsed->needed > received.size() - consumed, "need-more below what is buffered");
        break;
      }
      const tcp::Frame& frame = parsed->frame;
      require(
          parsed->needed >= tcp::kFrameHeaderBytes && parsed->needed <= received.size() - consumed,
          "a complete frame longer than the bytes buffered");
      // Round trip: encode what was parsed; it must be the same bytes.
      encoded.assign(tcp::frame_prefix_bytes(frame), std::byte{0});
      auto written = tcp::encode_frame_prefix(frame, frame.payload.size(), encoded);
      require(written.ok(), "a parsed frame does not encode");
      encoded.insert(encoded.end(), frame.metadata.begin(), frame.metadata.end());
      encoded.insert(encoded.end(), frame.payload.begin(), frame.payload.end());
      require(encoded.size() == parsed->needed, "re-encoded frame has another size");
      require(std::memcmp(encoded.data(), received.data() + consumed, encoded.size()) == 0,
              "re-encoded frame differs");
      consumed += parsed->needed;
      ++frames;
    }
  }
  return frames;
}

}  // namespace mrpc::tcp_fuzz
