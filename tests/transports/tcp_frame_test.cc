// The daemon-to-daemon framing (transports/tcp/frame.h): every kind round-trips through the
// encoder and the parser, byte by byte arrival gives the same frame, and bad input (bad magic,
// version, kind, lengths, sections a kind cannot have, sizes past the limits) is an error that
// names the field. Then the fuzz corpus (tests/transports/corpus/tcp_frame/) and a fixed set of
// its mutations go through the fuzz target's entry (fuzz/tcp_frame_target.h).
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "corpus_mutations.h"
#include "tcp/frame.h"
#include "tcp_frame_target.h"

namespace {

using mrpc::StatusCode;
using namespace mrpc::tcp;

std::vector<std::byte> encode(const Frame& frame) {
  std::vector<std::byte> out(frame_prefix_bytes(frame));
  auto written = encode_frame_prefix(frame, frame.payload.size(), out);
  REQUIRE_MESSAGE(written.ok(), written.status().to_string());
  out.insert(out.end(), frame.metadata.begin(), frame.metadata.end());
  out.insert(out.end(), frame.payload.begin(), frame.payload.end());
  return out;
}

std::span<const std::byte> bytes_of(const std::string& text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

Frame sample_request(const std::string& metadata, const std::string& payload) {
  Frame frame;
  frame.kind = FrameKind::kRequest;
  frame.flags = kFlagWaitForReady;
  frame.call_id = 0x1122334455667788ull;
  frame.timeout_ns = 1'500'000'000ull;
  frame.attempt = 2;
  frame.method_index = 3;
  frame.encoding = PayloadEncoding::kProtobuf;
  frame.priority = 7;
  frame.caller_host = "host-a";
  frame.caller_app = "echo_client";
  frame.service = "echo.EchoService";
  frame.metadata = bytes_of(metadata);
  frame.payload = bytes_of(payload);
  return frame;
}

void check_same(const Frame& a, const Frame& b) {
  CHECK(a.kind == b.kind);
  CHECK(a.flags == b.flags);
  CHECK(a.status_code == b.status_code);
  CHECK(a.call_id == b.call_id);
  CHECK(a.timeout_ns == b.timeout_ns);
  CHECK(a.attempt == b.attempt);
  CHECK(a.method_index == b.method_index);
  CHECK(a.encoding == b.encoding);
  CHECK(a.priority == b.priority);
  CHECK(a.caller_host == b.caller_host);
  CHECK(a.caller_app == b.caller_app);
  CHECK(a.service == b.service);
  CHECK(a.status_text == b.status_text);
  CHECK(std::ranges::equal(a.metadata, b.metadata));
  CHECK(std::ranges::equal(a.payload, b.payload));
}

mrpc::Status parse_error(std::vector<std::byte> bytes) {
  FrameParser parser;
  auto parsed = parser.parse(bytes);
  if (parsed.ok()) return mrpc::Status(StatusCode::kOk, parsed->complete ? "complete" : "more");
  return parsed.status();
}

template <typename T>
void poke(std::vector<std::byte>& bytes, size_t at, T value) {
  std::memcpy(bytes.data() + at, &value, sizeof(T));
}

}  // namespace

TEST_CASE("each tcp frame kind encodes and parses back to the same fields") {
  const std::string metadata = "meta-block-bytes";
  const std::string payload(300, 'p');
  std::vector<Frame> frames;
  frames.push_back(sample_request(metadata, payload));
  Frame hello;
  hello.kind = FrameKind::kHello;
  hello.caller_host = "host-b";
  frames.push_back(hello);
  Frame ok_reply;
  ok_reply.kind = FrameKind::kReply;
  ok_reply.call_id = 9;
  ok_reply.encoding = PayloadEncoding::kProtobuf;
  ok_reply.payload = bytes_of(payload);
  frames.push_back(ok_reply);
  Frame error_reply;
  error_reply.kind = FrameKind::kReply;
  error_reply.call_id = 10;
  error_reply.status_code = static_cast<uint32_t>(StatusCode::kUnavailable);
  error_reply.status_text = "no app serves echo.EchoService";
  frames.push_back(error_reply);
  for (FrameKind kind : {FrameKind::kCancel, FrameKind::kPing, FrameKind::kPong}) {
    Frame frame;
    frame.kind = kind;
    frame.call_id = 77;
    frames.push_back(frame);
  }
  for (FrameKind kind : {FrameKind::kSchemaOffer, FrameKind::kSchemaAnswer}) {
    Frame frame;
    frame.kind = kind;
    frame.service = "echo.EchoService";
    frame.call_id = 0x1234567890abcdefull;  // the sender's schema fingerprint of the service
    frames.push_back(frame);
  }
  FrameParser parser;
  for (const Frame& frame : frames) {
    CAPTURE(static_cast<int>(frame.kind));
    const std::vector<std::byte> bytes = encode(frame);
    CHECK(bytes.size() == frame_bytes(frame));
    auto parsed = parser.parse(bytes);
    REQUIRE_MESSAGE(parsed.ok(), parsed.status().to_string());
    REQUIRE(parsed->complete);
    CHECK(parsed->needed == bytes.size());
    check_same(parsed->frame, frame);
  }
}

TEST_CASE("a tcp frame arriving a byte at a time asks for more until it is whole") {
  const std::string metadata = "m";
  const std::string payload = "hello";
  const Frame frame = sample_request(metadata, payload);
  const std::vector<std::byte> bytes = encode(frame);
  FrameParser parser;
  for (size_t have = 0; have < bytes.size(); ++have) {
    CAPTURE(have);
    auto parsed = parser.parse(std::span(bytes).first(have));
    REQUIRE_MESSAGE(parsed.ok(), parsed.status().to_string());
    CHECK_FALSE(parsed->complete);
    CHECK(parsed->needed > have);
    CHECK(parsed->needed <= bytes.size());
  }
  auto parsed = parser.parse(bytes);
  REQUIRE(parsed.ok());
  REQUIRE(parsed->complete);
  check_same(parsed->frame, frame);
}

TEST_CASE("two tcp frames back to back parse one after the other") {
  const std::string payload = "abc";
  std::vector<std::byte> stream = encode(sample_request("", payload));
  Frame ping;
  ping.kind = FrameKind::kPing;
  ping.call_id = 5;
  const std::vector<std::byte> second = encode(ping);
  const size_t first_size = stream.size();
  stream.insert(stream.end(), second.begin(), second.end());
  FrameParser parser;
  auto first = parser.parse(stream);
  REQUIRE(first.ok());
  REQUIRE(first->complete);
  CHECK(first->needed == first_size);
  auto next = parser.parse(std::span(stream).subspan(first_size));
  REQUIRE(next.ok());
  REQUIRE(next->complete);
  CHECK(next->frame.kind == FrameKind::kPing);
  CHECK(next->frame.call_id == 5);
}

TEST_CASE("bad tcp frames are errors that name the field and its value") {
  const std::string payload = "abc";
  const std::vector<std::byte> good = encode(sample_request("", payload));
  auto with = [&](auto change) {
    std::vector<std::byte> bytes = good;
    change(bytes);
    return parse_error(bytes);
  };
  mrpc::Status status = with([](auto& b) { poke<uint32_t>(b, 0, 0x48545450); });  // "PTTH"
  CHECK(status.code() == StatusCode::kInvalidArgument);
  CHECK(status.message().find("bad magic 0x48545450") != std::string::npos);
  // Only the first 4 bytes are needed to refuse a stream that is not ours.
  status = parse_error({std::byte{'G'}, std::byte{'E'}, std::byte{'T'}, std::byte{' '}});
  CHECK(status.code() == StatusCode::kInvalidArgument);
  status = with([](auto& b) { b[4] = std::byte{9}; });
  CHECK(status.message().find("protocol version 9") != std::string::npos);
  status = with([](auto& b) { b[5] = std::byte{0}; });
  CHECK(status.message().find("unknown kind 0") != std::string::npos);
  status = with([](auto& b) { b[5] = std::byte{9}; });
  CHECK(status.message().find("unknown kind 9") != std::string::npos);
  status = with([](auto& b) { poke<uint16_t>(b, 6, 0x80); });
  CHECK(status.message().find("unknown flags 0x80") != std::string::npos);
  status = with([](auto& b) { poke<uint32_t>(b, 8, 1000); });
  CHECK(status.message().find("length 1000") != std::string::npos);
  status = with([](auto& b) { poke<uint32_t>(b, 8, mrpc::limits::kMaxTcpFrameBytes + 1); });
  CHECK(status.code() == StatusCode::kResourceExhausted);
  CHECK(status.message().find("kMaxTcpFrameBytes") != std::string::npos);
  status = with([](auto& b) { b[36] = std::byte{3}; });
  CHECK(status.message().find("unknown payload encoding 3") != std::string::npos);
  status = with([](auto& b) { b[36] = std::byte{0}; });
  CHECK(status.message().find("without a payload encoding") != std::string::npos);
  status = with([](auto& b) { poke<uint16_t>(b, 38, 1); });
  CHECK(status.message().find("reserved") != std::string::npos);
  status = with([](auto& b) { poke<uint32_t>(b, 12, 3); });
  CHECK(status.message().find("with a status (3") != std::string::npos);
  // A request's service name past its limit (with the total length made consistent).
  status = with([](auto& b) {
    const uint32_t extra = mrpc::limits::kMaxTcpServiceNameBytes;
    uint16_t service;
    std::memcpy(&service, b.data() + 44, 2);
    uint32_t length;
    std::memcpy(&length, b.data() + 8, 4);
    poke<uint16_t>(b, 44, static_cast<uint16_t>(service + extra));
    poke<uint32_t>(b, 8, length + extra);
  });
  CHECK(status.code() == StatusCode::kResourceExhausted);
  CHECK(status.message().find("kMaxTcpServiceNameBytes") != std::string::npos);
  // A ping carrying a payload.
  Frame ping;
  ping.kind = FrameKind::kPing;
  std::vector<std::byte> bytes = encode(ping);
  poke<uint32_t>(bytes, 52, 4);
  poke<uint32_t>(bytes, 8, static_cast<uint32_t>(bytes.size() + 4));
  bytes.resize(bytes.size() + 4);
  status = parse_error(bytes);
  CHECK(status.message().find("ping frame with sections") != std::string::npos);
  // An error reply with a payload; a reply status past the known codes.
  Frame reply;
  reply.kind = FrameKind::kReply;
  reply.status_code = 99;
  std::vector<std::byte> buffer(256);
  auto refused = encode_frame_prefix(reply, 0, buffer);
  CHECK(refused.status().message().find("status code 99") != std::string::npos);
  reply.status_code = 14;
  reply.encoding = PayloadEncoding::kProtobuf;
  refused = encode_frame_prefix(reply, 8, buffer);
  CHECK(refused.status().message().find("error 14 with a payload") != std::string::npos);
  // A schema frame carries a service name and its fingerprint (the call id), nothing else.
  Frame schema;
  schema.kind = FrameKind::kSchemaOffer;
  refused = encode_frame_prefix(schema, 0, buffer);
  CHECK(refused.status().message().find("schema offer frame") != std::string::npos);
  schema.service = "compat.Store";
  schema.encoding = PayloadEncoding::kNative;
  refused = encode_frame_prefix(schema, 8, buffer);
  CHECK(refused.status().message().find("payload 8 B encoding 2") != std::string::npos);
}

TEST_CASE("a bad tcp frame header is refused before its body arrives") {
  const std::string payload(1000, 'x');
  std::vector<std::byte> bytes = encode(sample_request("", payload));
  bytes[36] = std::byte{0};         // no encoding
  bytes.resize(kFrameHeaderBytes);  // only the header has arrived
  CHECK(parse_error(bytes).code() == StatusCode::kInvalidArgument);
}

namespace {

constexpr uint64_t kMutationSeed = 0x7c9f00d5;
constexpr int kMutationsPerFile = 300;

std::vector<std::string> corpus() {
  return mrpc::fuzz::read_corpus(std::filesystem::path(MRPC_SOURCE_DIR) /
                                 "tests/transports/corpus/tcp_frame");
}

// A slice of up to 64 bytes repeated: a frame twice, a header cut in two.
std::string mutate(std::string input, std::mt19937_64& random) {
  return mrpc::fuzz::mutate_bytes(std::move(input), random, 64);
}

}  // namespace

TEST_CASE("the tcp frame fuzz corpus and a fixed set of its mutations parse or fail cleanly") {
  const std::vector<std::string> files = corpus();
  REQUIRE(files.size() >= 8);
  std::mt19937_64 random(kMutationSeed);
  size_t frames = 0;
  for (const std::string& file : files) {
    frames += mrpc::tcp_fuzz::run(reinterpret_cast<const uint8_t*>(file.data()), file.size());
    for (int m = 0; m < kMutationsPerFile; ++m) {
      const std::string mutated = mutate(file, random);
      (void)mrpc::tcp_fuzz::run(reinterpret_cast<const uint8_t*>(mutated.data()), mutated.size());
    }
  }
  MESSAGE("seed files ", files.size(), ", frames in them ", frames, ", mutation seed ",
          kMutationSeed);
  CHECK(frames >= files.size());  // every seed holds at least one good frame
}
