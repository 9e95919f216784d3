// The fixed mutations the default test suite replays beside each fuzz target's corpus
// (tests/*/fuzz_replay_test.cc): drawn from a fixed seed, the same inputs every run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "corpus_mutations.h"
#include "mrpc/base/random.h"

namespace mrpc::fuzz {

// Byte-level mutations in the spirit of libFuzzer's: flips, interesting words (offsets, sizes,
// all ones) written at 8-aligned places, inserted and deleted ranges, truncation.
inline std::string mutate(const std::string& input, SeededRandom& random) {
  std::string s = input;
  const int steps = 1 + static_cast<int>(random.next_u64() % 6);
  for (int i = 0; i < steps; ++i) {
    const size_t at = s.empty() ? 0 : random.next_u64() % s.size();
    switch (random.next_u64() % 6) {
      case 0:
        if (!s.empty()) s[at] = static_cast<char>(random.next_u64() & 0xff);
        break;
      case 1: {
        const uint64_t words[] = {0,
                                  1,
                                  8,
                                  16,
                                  0xffffffffull,
                                  ~uint64_t{0},
                                  s.size(),
                                  s.size() - at,
                                  random.next_u64() % (s.size() + 1)};
        const uint64_t word = words[random.next_u64() % (sizeof(words) / sizeof(words[0]))];
        const size_t aligned = at / 8 * 8;
        if (aligned + 8 <= s.size()) s.replace(aligned, 8, reinterpret_cast<const char*>(&word), 8);
        break;
      }
      case 2:
        if (at < s.size()) s.erase(at, random.next_u64() % 64);
        break;
      case 3:
        if (at < s.size()) s.insert(at, s.substr(at, random.next_u64() % 64));
        break;
      case 4:
        s.insert(at, std::string(1 + random.next_u64() % 8, static_cast<char>(random.next_u64())));
        break;
      default:
        s.resize(at);
        break;
    }
  }
  return s;
}

// A target's seeds: `generated` and the bytes of every file in `dir`, each once, in a fixed order.
inline std::vector<std::string> seeds_and_files(const std::vector<std::string>& generated,
                                                const std::filesystem::path& dir) {
  std::set<std::string> out(generated.begin(), generated.end());
  for (std::string& file : read_corpus(dir)) out.insert(std::move(file));
  return {out.begin(), out.end()};
}

// Runs `entry` on every seed, then on `per_seed` mutations of each, drawn from `mutation_seed`:
// the same inputs every run. `index` says which input runs (seeds first, then the mutations in
// order), for a failure's message.
template <typename Entry>
void replay_seeds_and_mutations(const std::vector<std::string>& seeds, Entry entry,
                                uint64_t mutation_seed, int per_seed, size_t& index) {
  index = 0;
  for (const std::string& seed : seeds) {
    entry(seed);
    ++index;
  }
  SeededRandom random(mutation_seed);
  for (const std::string& seed : seeds) {
    for (int i = 0; i < per_seed; ++i, ++index) entry(mutate(seed, random));
  }
}

}  // namespace mrpc::fuzz
