// The daemon-to-daemon TCP framing (docs/tcp-transport.md is the specification; this is its code).
// A frame is a fixed 56-byte little-endian header followed by its variable sections in a fixed
// order: caller host, caller app, service name, status text, metadata block, payload. Every
// length is in the header, so a parser knows a frame's full size from its first 56 bytes and can
// refuse a bad one before its body arrives.
//
// Encoding: encode_frame_header writes the header and the four short text sections into a
// caller's buffer; the metadata block and payload follow (copied or gathered by the caller).
// Parsing: FrameParser::parse looks at the bytes received so far and answers "need more", a
// frame (views into those bytes, no copy), or an error Status naming the field and values; any
// bytes whatsoever give one of the three (tests/transports/tcp_frame_test.cc,
// fuzz/tcp_frame_fuzz.cc). Sizes are bounded by limits::kMaxTcp*.
//
// Threads: plain functions and values; a parser per connection, used by one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "mrpc/base/expected.h"
#include "mrpc/base/limits.h"

namespace mrpc::tcp {

inline constexpr uint32_t kFrameMagic = 0x4350524d;  // "MRPC" read as little-endian bytes
inline constexpr uint8_t kProtocolVersion = 1;
inline constexpr size_t kFrameHeaderBytes = 56;

enum class FrameKind : uint8_t {
  kHello = 1,    // first frame each way: the sender's host name (caller_host)
  kRequest = 2,  // a call: service, method, caller, remaining timeout, metadata, payload
  kReply = 3,    // its answer: status code and text, payload (the response) if OK
  kCancel = 4,   // the caller gave up on call_id: the callee side may drop it
  kPing = 5,     // keepalive: answered by kPong with the same call_id (a nonce)
  kPong = 6,
  // Schema handshake, per service, lazily on a link's first call of it (docs/tcp-transport.md):
  // service = the service's full name, call_id = the sender's schema fingerprint of it (0: none
  // registered here). An offer asks the peer for its fingerprint; the peer answers with its own.
  kSchemaOffer = 7,
  kSchemaAnswer = 8,
};
inline constexpr uint8_t kMaxFrameKind = 8;

// How the payload's bytes encode the message.
enum class PayloadEncoding : uint8_t {
  kNone = 0,      // no payload (hello, cancel, ping, pong, a failed reply)
  kProtobuf = 1,  // protobuf wire format (the compiled wire codec)
  kNative = 2,    // mrpc native (scatter-gather) encoding; both sides need the same layouts:
                  // the payload starts with the sender's 8-byte schema fingerprint of the service
};
// Bytes before the native encoding in a kNative payload: the service's schema fingerprint.
inline constexpr size_t kNativeFingerprintBytes = 8;
inline constexpr uint8_t kMaxPayloadEncoding = 2;

// Header flag bits.
inline constexpr uint16_t kFlagWaitForReady = 1u << 0;
inline constexpr uint16_t kKnownFlags = kFlagWaitForReady;

// One frame's fields. The string views and spans point into the buffer the frame was parsed from
// (or, when encoding, at the caller's data).
struct Frame {
  FrameKind kind = FrameKind::kPing;
  uint16_t flags = 0;
  uint32_t status_code = 0;   // kReply: a StatusCode value (0 = OK)
  uint64_t call_id = 0;       // the caller daemon's id of the call (nonce for ping/pong)
  uint64_t timeout_ns = 0;    // kRequest: time left until the deadline; 0 = none
  uint16_t attempt = 0;       // which attempt of the call
  uint16_t method_index = 0;  // kRequest: the method's declaration index in the service
  PayloadEncoding encoding = PayloadEncoding::kNone;
  uint8_t priority = 0;
  std::string_view caller_host;         // kHello: the sender's host; kRequest: the caller's host
  std::string_view caller_app;          // kRequest: the calling app's name
  std::string_view service;             // kRequest: the service's full name ("echo.EchoService")
  std::string_view status_text;         // kReply: the error text (empty when OK)
  std::span<const std::byte> metadata;  // kRequest: the shm metadata block, as the app encoded it
  std::span<const std::byte> payload;   // kRequest/kReply: the message, in `encoding`
};

// The size of the frame whose header says what `frame`'s fields say (header + every section).
uint64_t frame_bytes(const Frame& frame);

// Bytes encode_frame_header writes: the header and the four text sections.
inline size_t frame_prefix_bytes(const Frame& frame) {
  return kFrameHeaderBytes + frame.caller_host.size() + frame.caller_app.size() +
         frame.service.size() + frame.status_text.size();
}

// Writes `frame`'s header (its lengths taken from the fields, the payload's from
// `payload_bytes`, which may differ from frame.payload.size() when the payload is written
// elsewhere) and its text sections into `out`, which must hold frame_prefix_bytes(frame).
// INVALID_ARGUMENT if a field is past its limit (the frame would be refused by the peer).
// Returns the bytes written.
Expected<size_t> encode_frame_prefix(const Frame& frame, uint64_t payload_bytes,
                                     std::span<std::byte> out);

// What parse() found at the front of the buffer.
struct ParsedFrame {
  bool complete = false;  // false: more bytes are needed (at least `needed` in all)
  uint64_t needed = 0;    // complete: the frame's size (bytes to consume); else the total wanted
  Frame frame;            // valid when complete
};

// Checks and splits frames from the front of a byte stream. Stateless between calls except for
// counters: give it whatever has been received (from the first unconsumed byte).
class FrameParser {
 public:
  // INVALID_ARGUMENT (or RESOURCE_EXHAUSTED for a size past a limit) with the field and values
  // at the first bad byte; the connection should close then (the stream cannot be resynchronized).
  Expected<ParsedFrame> parse(std::span<const std::byte> buffered) const;
};

}  // namespace mrpc::tcp
