// What the default test suite replays of a libFuzzer target besides its corpus: the corpus files
// (read in a fixed order) and byte-level mutations of each drawn from a fixed seed, the same
// inputs every run. Used by the corpus replay tests of the codec decoders and the TCP frame parser
// (tests/codec/codec_fuzz_replay_test.cc, tests/transports/tcp_frame_test.cc); the daemon input
// targets use replay_mutate.h.
#pragma once

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

namespace mrpc::fuzz {

// Every file of `dir`, sorted by contents.
inline std::vector<std::string> read_corpus(const std::filesystem::path& dir) {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(entry.path(), std::ios::binary);
    files.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// One to four edits: a byte set, a cut, a byte inserted, a bit flipped, or a slice of up to
// `max_slice` bytes repeated (nested lengths, duplicated fields, a frame twice).
inline std::string mutate_bytes(std::string input, std::mt19937_64& random, size_t max_slice) {
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
      default: {
        const size_t from = random() % input.size();
        const size_t length = std::min<size_t>(random() % max_slice, input.size() - from);
        input.insert(std::min(at, input.size()), input.substr(from, length));
      }
    }
  }
  return input;
}

}  // namespace mrpc::fuzz
