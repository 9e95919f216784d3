#include "frame.h"

#include <fmt/format.h>

#include <bit>
#include <cstring>

#include "mrpc/base/check.h"
#include "mrpc/base/status.h"

namespace mrpc::tcp {

namespace {

// Field offsets in the fixed header (docs/tcp-transport.md, "Frame header").
constexpr size_t kMagicAt = 0;
constexpr size_t kVersionAt = 4;
constexpr size_t kKindAt = 5;
constexpr size_t kFlagsAt = 6;
constexpr size_t kLengthAt = 8;
constexpr size_t kStatusAt = 12;
constexpr size_t kCallIdAt = 16;
constexpr size_t kTimeoutAt = 24;
constexpr size_t kAttemptAt = 32;
constexpr size_t kMethodAt = 34;
constexpr size_t kEncodingAt = 36;
constexpr size_t kPriorityAt = 37;
constexpr size_t kReservedAt = 38;
constexpr size_t kHostLengthAt = 40;
constexpr size_t kAppLengthAt = 42;
constexpr size_t kServiceLengthAt = 44;
constexpr size_t kStatusTextLengthAt = 46;
constexpr size_t kMetadataLengthAt = 48;
constexpr size_t kPayloadLengthAt = 52;
static_assert(kPayloadLengthAt + 4 == kFrameHeaderBytes);

// Little-endian loads and stores (the hosts we build for are little-endian; memcpy keeps them
// unaligned-safe).
static_assert(std::endian::native == std::endian::little, "the framing code assumes little-endian");
template <typename T>
T load(const std::byte* at) {
  T value;
  std::memcpy(&value, at, sizeof(T));
  return value;
}
template <typename T>
void store(std::byte* at, T value) {
  std::memcpy(at, &value, sizeof(T));
}

const char* kind_name(FrameKind kind) {
  switch (kind) {
    case FrameKind::kHello:
      return "hello";
    case FrameKind::kRequest:
      return "request";
    case FrameKind::kReply:
      return "reply";
    case FrameKind::kCancel:
      return "cancel";
    case FrameKind::kPing:
      return "ping";
    case FrameKind::kPong:
      return "pong";
    case FrameKind::kSchemaOffer:
      return "schema offer";
    case FrameKind::kSchemaAnswer:
      return "schema answer";
  }
  return "?";
}

// The lengths of a frame's sections.
struct Sizes {
  uint64_t host = 0, app = 0, service = 0, text = 0, metadata = 0, payload = 0;
};

Sizes sizes_of(const Frame& frame, uint64_t payload_bytes) {
  return Sizes{frame.caller_host.size(), frame.caller_app.size(), frame.service.size(),
               frame.status_text.size(), frame.metadata.size(),   payload_bytes};
}

// The rules every frame obeys beyond its total length (shared by encoder and parser, which
// checks them from the header alone, before the body has arrived).
Status check_fields(const Frame& frame, const Sizes& size) {
  const char* kind = kind_name(frame.kind);
  MRPC_REQUIRE((frame.flags & ~kKnownFlags) == 0, StatusCode::kInvalidArgument,
               "tcp frame ({}): unknown flags {:#x}", kind, frame.flags);
  MRPC_REQUIRE(static_cast<uint8_t>(frame.encoding) <= kMaxPayloadEncoding,
               StatusCode::kInvalidArgument, "tcp frame ({}): unknown payload encoding {}", kind,
               static_cast<unsigned>(frame.encoding));
  MRPC_REQUIRE(size.host <= limits::kMaxTcpHostNameBytes, StatusCode::kResourceExhausted,
               "tcp frame ({}): host name of {} bytes, past kMaxTcpHostNameBytes={}", kind,
               size.host, limits::kMaxTcpHostNameBytes);
  MRPC_REQUIRE(size.app <= limits::kMaxTcpHostNameBytes, StatusCode::kResourceExhausted,
               "tcp frame ({}): app name of {} bytes, past kMaxTcpHostNameBytes={}", kind, size.app,
               limits::kMaxTcpHostNameBytes);
  MRPC_REQUIRE(size.service <= limits::kMaxTcpServiceNameBytes, StatusCode::kResourceExhausted,
               "tcp frame ({}): service name of {} bytes, past kMaxTcpServiceNameBytes={}", kind,
               size.service, limits::kMaxTcpServiceNameBytes);
  MRPC_REQUIRE(size.text <= limits::kMaxTcpStatusTextBytes, StatusCode::kResourceExhausted,
               "tcp frame ({}): status text of {} bytes, past kMaxTcpStatusTextBytes={}", kind,
               size.text, limits::kMaxTcpStatusTextBytes);
  MRPC_REQUIRE(size.metadata <= limits::kMaxMetadataBytes, StatusCode::kResourceExhausted,
               "tcp frame ({}): metadata of {} bytes, past kMaxMetadataBytes={}", kind,
               size.metadata, limits::kMaxMetadataBytes);
  const bool has_payload = size.payload > 0 || frame.encoding != PayloadEncoding::kNone;
  switch (frame.kind) {
    case FrameKind::kHello:
    case FrameKind::kCancel:
    case FrameKind::kPing:
    case FrameKind::kPong:
      MRPC_REQUIRE((frame.kind == FrameKind::kHello) == (size.host > 0),
                   StatusCode::kInvalidArgument,
                   "tcp {} frame: a host name of {} bytes (only hello carries one, and must)", kind,
                   size.host);
      MRPC_REQUIRE(size.app == 0 && size.service == 0 && size.text == 0 && size.metadata == 0 &&
                       !has_payload && frame.status_code == 0,
                   StatusCode::kInvalidArgument,
                   "tcp {} frame with sections it cannot have (app {} B, service {} B, status {} "
                   "text {} B, metadata {} B, payload {} B encoding {})",
                   kind, size.app, size.service, frame.status_code, size.text, size.metadata,
                   size.payload, static_cast<unsigned>(frame.encoding));
      return {};
    case FrameKind::kSchemaOffer:
    case FrameKind::kSchemaAnswer:
      MRPC_REQUIRE(size.service > 0 && size.host == 0 && size.app == 0 && size.text == 0 &&
                       size.metadata == 0 && !has_payload && frame.status_code == 0,
                   StatusCode::kInvalidArgument,
                   "tcp {} frame: it carries a service name and nothing else (host {} B, app {} "
                   "B, service {} B, status {} text {} B, metadata {} B, payload {} B encoding {})",
                   kind, size.host, size.app, size.service, frame.status_code, size.text,
                   size.metadata, size.payload, static_cast<unsigned>(frame.encoding));
      return {};
    case FrameKind::kRequest:
      MRPC_REQUIRE(size.service > 0, StatusCode::kInvalidArgument,
                   "tcp request frame (call {}) without a service name", frame.call_id);
      MRPC_REQUIRE(frame.encoding != PayloadEncoding::kNone, StatusCode::kInvalidArgument,
                   "tcp request frame (call {}) without a payload encoding", frame.call_id);
      MRPC_REQUIRE(frame.status_code == 0 && size.text == 0, StatusCode::kInvalidArgument,
                   "tcp request frame (call {}) with a status ({}, {} B of text)", frame.call_id,
                   frame.status_code, size.text);
      return {};
    case FrameKind::kReply:
      MRPC_REQUIRE(frame.status_code <= kMaxStatusCode, StatusCode::kInvalidArgument,
                   "tcp reply frame (call {}): status code {} past {}", frame.call_id,
                   frame.status_code, kMaxStatusCode);
      MRPC_REQUIRE(size.service == 0 && size.host == 0 && size.app == 0 && size.metadata == 0,
                   StatusCode::kInvalidArgument,
                   "tcp reply frame (call {}) with request sections (host {} B, app {} B, "
                   "service {} B, metadata {} B)",
                   frame.call_id, size.host, size.app, size.service, size.metadata);
      if (frame.status_code == 0) {
        MRPC_REQUIRE(frame.encoding != PayloadEncoding::kNone && size.text == 0,
                     StatusCode::kInvalidArgument,
                     "tcp reply frame (call {}): OK without a payload encoding or with {} B of "
                     "status text",
                     frame.call_id, size.text);
      } else {
        MRPC_REQUIRE(!has_payload, StatusCode::kInvalidArgument,
                     "tcp reply frame (call {}): error {} with a payload ({} B, encoding {})",
                     frame.call_id, frame.status_code, size.payload,
                     static_cast<unsigned>(frame.encoding));
      }
      return {};
  }
  return Status(StatusCode::kInvalidArgument,
                fmt::format("tcp frame of unknown kind {}", static_cast<unsigned>(frame.kind)));
}

}  // namespace

uint64_t frame_bytes(const Frame& frame) {
  return frame_prefix_bytes(frame) + frame.metadata.size() + frame.payload.size();
}

Expected<size_t> encode_frame_prefix(const Frame& frame, uint64_t payload_bytes,
                                     std::span<std::byte> out) {
  Status fields = check_fields(frame, sizes_of(frame, payload_bytes));
  if (!fields.ok()) return fields;
  const size_t prefix = frame_prefix_bytes(frame);
  const uint64_t total = prefix + frame.metadata.size() + payload_bytes;
  MRPC_REQUIRE(total <= limits::kMaxTcpFrameBytes, StatusCode::kResourceExhausted,
               "tcp frame of {} bytes (payload {} B), past kMaxTcpFrameBytes={}", total,
               payload_bytes, limits::kMaxTcpFrameBytes);
  MRPC_REQUIRE(out.size() >= prefix, StatusCode::kOutOfRange,
               "tcp frame prefix needs {} bytes, the buffer has {}", prefix, out.size());
  std::byte* at = out.data();
  store<uint32_t>(at + kMagicAt, kFrameMagic);
  store<uint8_t>(at + kVersionAt, kProtocolVersion);
  store<uint8_t>(at + kKindAt, static_cast<uint8_t>(frame.kind));
  store<uint16_t>(at + kFlagsAt, frame.flags);
  store<uint32_t>(at + kLengthAt, static_cast<uint32_t>(total));
  store<uint32_t>(at + kStatusAt, frame.status_code);
  store<uint64_t>(at + kCallIdAt, frame.call_id);
  store<uint64_t>(at + kTimeoutAt, frame.timeout_ns);
  store<uint16_t>(at + kAttemptAt, frame.attempt);
  store<uint16_t>(at + kMethodAt, frame.method_index);
  store<uint8_t>(at + kEncodingAt, static_cast<uint8_t>(frame.encoding));
  store<uint8_t>(at + kPriorityAt, frame.priority);
  store<uint16_t>(at + kReservedAt, 0);
  store<uint16_t>(at + kHostLengthAt, static_cast<uint16_t>(frame.caller_host.size()));
  store<uint16_t>(at + kAppLengthAt, static_cast<uint16_t>(frame.caller_app.size()));
  store<uint16_t>(at + kServiceLengthAt, static_cast<uint16_t>(frame.service.size()));
  store<uint16_t>(at + kStatusTextLengthAt, static_cast<uint16_t>(frame.status_text.size()));
  store<uint32_t>(at + kMetadataLengthAt, static_cast<uint32_t>(frame.metadata.size()));
  store<uint32_t>(at + kPayloadLengthAt, static_cast<uint32_t>(payload_bytes));
  at += kFrameHeaderBytes;
  for (std::string_view text :
       {frame.caller_host, frame.caller_app, frame.service, frame.status_text}) {
    if (!text.empty()) std::memcpy(at, text.data(), text.size());
    at += text.size();
  }
  return prefix;
}

Expected<ParsedFrame> FrameParser::parse(std::span<const std::byte> buffered) const {
  ParsedFrame parsed;
  // Check what has arrived of the header as early as possible: a stream that is not ours fails
  // on its first bytes.
  if (buffered.size() >= 4) {
    const uint32_t magic = load<uint32_t>(buffered.data() + kMagicAt);
    MRPC_REQUIRE(magic == kFrameMagic, StatusCode::kInvalidArgument,
                 "tcp frame: bad magic {:#010x} (want {:#010x}): not an mrpc daemon's stream",
                 magic, kFrameMagic);
  }
  if (buffered.size() >= 5) {
    const uint8_t version = load<uint8_t>(buffered.data() + kVersionAt);
    MRPC_REQUIRE(version == kProtocolVersion, StatusCode::kInvalidArgument,
                 "tcp frame: protocol version {} (this daemon speaks {})", version,
                 kProtocolVersion);
  }
  if (buffered.size() < kFrameHeaderBytes) {
    parsed.needed = kFrameHeaderBytes;
    return parsed;
  }
  const std::byte* at = buffered.data();
  const uint8_t kind = load<uint8_t>(at + kKindAt);
  MRPC_REQUIRE(kind >= 1 && kind <= kMaxFrameKind, StatusCode::kInvalidArgument,
               "tcp frame: unknown kind {}", kind);
  const uint32_t length = load<uint32_t>(at + kLengthAt);
  MRPC_REQUIRE(load<uint16_t>(at + kReservedAt) == 0, StatusCode::kInvalidArgument,
               "tcp frame: reserved header field is {:#x}, not 0",
               load<uint16_t>(at + kReservedAt));
  const uint64_t host = load<uint16_t>(at + kHostLengthAt);
  const uint64_t app = load<uint16_t>(at + kAppLengthAt);
  const uint64_t service = load<uint16_t>(at + kServiceLengthAt);
  const uint64_t text = load<uint16_t>(at + kStatusTextLengthAt);
  const uint64_t metadata = load<uint32_t>(at + kMetadataLengthAt);
  const uint64_t payload = load<uint32_t>(at + kPayloadLengthAt);
  const uint64_t sections = host + app + service + text + metadata + payload;
  MRPC_REQUIRE(length <= limits::kMaxTcpFrameBytes, StatusCode::kResourceExhausted,
               "tcp frame of {} bytes, past kMaxTcpFrameBytes={}", length,
               limits::kMaxTcpFrameBytes);
  MRPC_REQUIRE(length == kFrameHeaderBytes + sections, StatusCode::kInvalidArgument,
               "tcp frame: length {} but header ({}) + sections (host {}, app {}, service {}, "
               "status text {}, metadata {}, payload {}) = {}",
               length, kFrameHeaderBytes, host, app, service, text, metadata, payload,
               kFrameHeaderBytes + sections);
  Frame& frame = parsed.frame;
  frame.kind = static_cast<FrameKind>(kind);
  frame.flags = load<uint16_t>(at + kFlagsAt);
  frame.status_code = load<uint32_t>(at + kStatusAt);
  frame.call_id = load<uint64_t>(at + kCallIdAt);
  frame.timeout_ns = load<uint64_t>(at + kTimeoutAt);
  frame.attempt = load<uint16_t>(at + kAttemptAt);
  frame.method_index = load<uint16_t>(at + kMethodAt);
  frame.encoding = static_cast<PayloadEncoding>(load<uint8_t>(at + kEncodingAt));
  frame.priority = load<uint8_t>(at + kPriorityAt);
  // The kind rules and limits, from the header alone: before the body has arrived.
  Status fields = check_fields(frame, Sizes{host, app, service, text, metadata, payload});
  if (!fields.ok()) return fields;
  if (buffered.size() < length) {
    parsed.needed = length;
    return parsed;
  }
  const char* text_at = reinterpret_cast<const char*>(at + kFrameHeaderBytes);
  frame.caller_host = std::string_view(text_at, host);
  text_at += host;
  frame.caller_app = std::string_view(text_at, app);
  text_at += app;
  frame.service = std::string_view(text_at, service);
  text_at += service;
  frame.status_text = std::string_view(text_at, text);
  text_at += text;
  const auto* bytes_at = reinterpret_cast<const std::byte*>(text_at);
  frame.metadata = std::span<const std::byte>(bytes_at, metadata);
  frame.payload = std::span<const std::byte>(bytes_at + metadata, payload);
  parsed.complete = true;
  parsed.needed = length;
  return parsed;
}

}  // namespace mrpc::tcp
