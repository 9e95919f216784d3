// Replays the codec fuzz corpus (tests/codec/corpus/{wire,native}/) through the fuzz targets'
// entry (fuzz/codec_decode_target.h), then a fixed number of mutations of each file drawn from a
// fixed seed: the same inputs every run. Passing: no crash, no abort (every decoded message is
// valid and one block), termination. Longer fuzzing: docs/fuzzing.md.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>

#include "codec_decode_target.h"
#include "corpus_mutations.h"

namespace {

constexpr uint64_t kMutationSeed = 0xc0de5eed;
constexpr int kMutationsPerFile = 200;

std::vector<std::string> corpus(const char* kind) {
  return mrpc::fuzz::read_corpus(std::filesystem::path(MRPC_SOURCE_DIR) / "tests/codec/corpus" /
                                 kind);
}

// A slice of up to 16 bytes repeated: nested lengths and duplicated fields.
std::string mutate(std::string input, std::mt19937_64& random) {
  return mrpc::fuzz::mutate_bytes(std::move(input), random, 16);
}

void replay(mrpc::codec_fuzz::Decoder decoder, const char* kind) {
  static mrpc::codec_fuzz::DecodeTarget target;
  const std::vector<std::string> files = corpus(kind);
  REQUIRE(files.size() >= 10);
  std::mt19937_64 random(kMutationSeed);
  for (const std::string& file : files) {
    target.run(decoder, reinterpret_cast<const uint8_t*>(file.data()), file.size());
    for (int m = 0; m < kMutationsPerFile; ++m) {
      const std::string mutated = mutate(file, random);
      target.run(decoder, reinterpret_cast<const uint8_t*>(mutated.data()), mutated.size());
    }
  }
}

}  // namespace

TEST_CASE("the wire decoder fuzz corpus and a fixed set of its mutations decode or fail cleanly") {
  replay(mrpc::codec_fuzz::Decoder::kWire, "wire");
}

TEST_CASE(
    "the native decoder fuzz corpus and a fixed set of its mutations decode or fail cleanly") {
  replay(mrpc::codec_fuzz::Decoder::kNative, "native");
}
