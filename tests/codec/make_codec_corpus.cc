// Writes the seed corpus of the codec fuzz targets (tests/codec/corpus/{wire,native}/): encodings
// of seeded random messages of the fuzz targets' schemas, each prefixed by the schema's index.
//   build/tests/codec/make_codec_corpus tests/codec/corpus
// Deterministic: rerunning writes the same files.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "codec_harness.h"

using namespace mrpc::codec_testing;

namespace {
std::filesystem::path corpus_dir;
}  // namespace

// Runs inside doctest (the test helpers report through REQUIRE); not registered with CTest.
TEST_CASE("write the codec fuzz corpus") {
  const std::filesystem::path& dir = corpus_dir;
  std::filesystem::create_directories(dir / "wire");
  std::filesystem::create_directories(dir / "native");
  const std::pair<const char*, const char*> types[] = {
      {"tests/codec/protos/codec_kinds.proto", "codec_test.AllKinds"},
      {"nested.proto", "nested.Document"},
      {"tests/codec/protos/codec_legacy.proto", "codec_test.Legacy"}};
  for (size_t s = 0; s < std::size(types); ++s) {
    const pb::Descriptor& type = harness().protos.message(types[s].first, types[s].second);
    const MessageCodec& codec = harness().codec(type);
    for (uint64_t seed = 1; seed <= 6; ++seed) {
      RandomCase c = random_case(type, 0xc0de00 + s * 100 + seed);
      const std::string name = "s" + std::to_string(s) + "_" + std::to_string(seed) + ".bin";
      std::ofstream(dir / "wire" / name, std::ios::binary) << static_cast<char>(s) << c.variant;
      Region heap(1 << 20);
      const uint64_t root = build(codec.layout(), *c.message, heap);
      std::vector<mrpc::codec::NativeSpan> spans;
      REQUIRE(codec.encode_native(heap.view(), root, spans, CodecLimits{}).ok());
      std::ofstream native(dir / "native" / name, std::ios::binary);
      native << static_cast<char>(s);
      for (const auto& span : spans) {
        native.write(reinterpret_cast<const char*>(span.data),
                     static_cast<std::streamsize>(span.size));
      }
    }
  }
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus dir>\n", argv[0]);
    return 1;
  }
  corpus_dir = argv[1];
  doctest::Context context;
  return context.run();
}
