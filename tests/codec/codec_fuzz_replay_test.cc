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

namespace {

constexpr uint64_t kMutationSeed = 0xc0de5eed;
constexpr int kMutationsPerFile = 200;

std::vector<std::string> corpus(const char* kind) {
  std::vector<std::string> files;
  const std::filesystem::path dir =
      std::filesystem::path(MRPC_SOURCE_DIR) / "tests/codec/corpus" / kind;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(entry.path(), std::ios::binary);
    files.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::string mutate(std::string input, std::mt19937_64& random) {
  const int edits = 1 + static_cast<int>(random() % 4);
  for (int e = 0; e < edits && !input.empty(); ++e) {
    const size_t at = 1 + random() % std::max<size_t>(1, input.size() - 1);
    switch (random() % 5) {
      case 0:
        input[std::min(at, input.size() - 1)] = static_cast<char>(random());
        break;
      case 1:
        input.resize(std::min(at, input.size()));
        break;
      case 2:
        input.insert(std::min(at, input.size()), 1, static_cast<char>(random()));
        break;
      case 3:
        input[std::min(at, input.size() - 1)] ^= static_cast<char>(1 << (random() % 8));
        break;
      default: {  // repeat a slice: nested lengths and duplicated fields
        const size_t from = random() % input.size();
        const size_t length = std::min<size_t>(random() % 16, input.size() - from);
        input.insert(std::min(at, input.size()), input.substr(from, length));
      }
    }
  }
  return input;
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
