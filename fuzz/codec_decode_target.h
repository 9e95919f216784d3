// What the codec fuzz targets (wire_decode_fuzz.cc, native_decode_fuzz.cc) and the default
// suite's replay of their corpus (tests/codec/codec_fuzz_replay_test.cc) run on one input: the
// first byte picks a schema, the rest is decoded with the compiled wire or native decoder. A
// decoded message must then be a valid message: copy_message (the daemon's bounds-checked walk)
// accepts it, the wire encoder encodes it, and the wire decoder decodes that encoding again (so a
// decoder never keeps unknown-field bytes that are not protobuf fields, which the encoder would
// pass on). Anything else aborts with the reason.
#pragma once

#include <google/protobuf/compiler/importer.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <span>
#include <vector>

#include "mrpc/codec/codecs.h"
#include "mrpc/jit/jit.h"
#include "mrpc/message/copy.h"
#include "mrpc/message/region_allocator.h"

namespace mrpc::codec_fuzz {

enum class Decoder { kWire, kNative };

class DecodeTarget {
 public:
  static constexpr uint64_t kRegionBytes = 4 << 20;

  DecodeTarget() : importer_(&tree_, &errors_) {
    tree_.MapPath("", MRPC_SOURCE_DIR);
    tree_.MapPath("", MRPC_SOURCE_DIR "/examples/nested");
    auto jit = jit::Jit::create();
    require(jit.ok(), jit.status().to_string());
    jit_ = std::move(*jit);
    auto compiler = codec::CodecCompiler::create(*jit_);
    require(compiler.ok(), compiler.status().to_string());
    compiler_ = std::move(*compiler);
    const std::pair<const char*, const char*> types[] = {
        {"tests/codec/protos/codec_kinds.proto", "codec_test.AllKinds"},
        {"nested.proto", "nested.Document"},
        {"tests/codec/protos/codec_legacy.proto", "codec_test.Legacy"}};
    for (const auto& [file, name] : types) {
      require(importer_.Import(file) != nullptr, file);
      const google::protobuf::Descriptor* type = importer_.pool()->FindMessageTypeByName(name);
      require(type != nullptr, name);
      auto schema = compiler_->compile({type});
      require(schema.ok(), schema.status().to_string());
      codecs_.push_back((*schema)->find(name));
      schemas_.push_back(*schema);
    }
  }

  size_t schema_count() const { return codecs_.size(); }

  void run(Decoder decoder, const uint8_t* data, size_t size) {
    if (size == 0) return;
    const codec::MessageCodec& codec = *codecs_[data[0] % codecs_.size()];
    const auto bytes = std::span(reinterpret_cast<const std::byte*>(data + 1), size - 1);
    RegionAllocator allocator(kRegionBytes);
    const MutableRegion region{receive_.data(), receive_.size()};
    codec::CodecLimits limits;
    limits.max_message_bytes = 1 << 20;
    auto root = decoder == Decoder::kWire ? codec.decode_wire(bytes, region, allocator, limits)
                                          : codec.decode_native(bytes, region, allocator, limits);
    if (!root.ok()) {
      require(allocator.live_blocks() == 0, "a failed decode left a block allocated");
      return;
    }
    RegionAllocator copy_allocator(kRegionBytes);
    auto copied = copy_message(codec.layout(), ConstRegion{region.base, region.size}, *root,
                               MutableRegion{copy_.data(), copy_.size()}, copy_allocator,
                               CopyLimits{limits.max_message_bytes, limits.max_nesting});
    require(copied.ok(), "copy_message rejects a decoded message: " + copied.status().to_string());
    uint64_t needed = 0;
    auto encoded =
        codec.encode_wire(ConstRegion{region.base, region.size}, *root, out_, limits, &needed);
    require(encoded.ok() || encoded.status().code() == StatusCode::kOutOfRange ||
                encoded.status().code() == StatusCode::kResourceExhausted,
            "the wire encoder rejects a decoded message: " + encoded.status().to_string());
    if (encoded.ok()) {
      RegionAllocator again_allocator(kRegionBytes);
      auto again = codec.decode_wire(*encoded, MutableRegion{copy_.data(), copy_.size()},
                                     again_allocator, limits);
      require(again.ok(), "the wire decoder rejects the encoding of a decoded message: " +
                              again.status().to_string());
    }
    require(allocator.free(*root).ok() && allocator.live_blocks() == 0,
            "a decoded message is not one block");
  }

 private:
  static void require(bool ok, const std::string& why) {
    if (ok) return;
    std::fprintf(stderr, "codec fuzz target: %s\n", why.c_str());
    std::abort();
  }

  struct Errors : google::protobuf::compiler::MultiFileErrorCollector {
    void AddError(const std::string& file, int line, int column,
                  const std::string& message) override {
      std::fprintf(stderr, "%s:%d:%d: %s\n", file.c_str(), line, column, message.c_str());
    }
  };
  google::protobuf::compiler::DiskSourceTree tree_;
  Errors errors_;
  google::protobuf::compiler::Importer importer_;
  std::unique_ptr<jit::Jit> jit_;
  std::unique_ptr<codec::CodecCompiler> compiler_;
  std::vector<std::shared_ptr<const codec::CompiledSchema>> schemas_;
  std::vector<const codec::MessageCodec*> codecs_;
  std::vector<std::byte> receive_ = std::vector<std::byte>(kRegionBytes);
  std::vector<std::byte> copy_ = std::vector<std::byte>(kRegionBytes);
  std::vector<std::byte> out_ = std::vector<std::byte>(1 << 16);
};

}  // namespace mrpc::codec_fuzz
