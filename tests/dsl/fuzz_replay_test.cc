// Replays the fuzz corpus (every .mpol of the repository and tests/dsl/corpus/) through parse +
// check, then a fixed number of mutations of it drawn from a fixed seed: the same inputs every
// run. Passing means no crash, no sanitizer report and termination. fuzz/mpol_fuzz.cc runs the
// same entry point under libFuzzer for longer searches (docs/fuzzing.md).
#include <doctest/doctest.h>

#include <filesystem>

#include "mpol_test_support.h"
#include "mrpc/base/random.h"

namespace mrpc::dsl::testing {
namespace {

constexpr uint64_t kMutationSeed = 0x5eed;
constexpr int kMutationsPerSeedFile = 40;

std::vector<std::string> corpus() {
  std::vector<std::string> out;
  for (const auto& path : all_repository_mpol_files()) out.push_back(read_file(path));
  std::filesystem::path dir = std::filesystem::path(source_dir()) / "tests/dsl/corpus";
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.is_regular_file()) out.push_back(read_file(entry.path().string()));
  }
  return out;
}

const std::vector<std::string>& dictionary() {
  static const std::vector<std::string> words = {"policy",
                                                 "applies to",
                                                 "at callee",
                                                 "param",
                                                 "state",
                                                 "on request",
                                                 "on response",
                                                 "on error",
                                                 "{",
                                                 "}",
                                                 "(",
                                                 ")",
                                                 "[",
                                                 "]",
                                                 ";",
                                                 ",",
                                                 ".",
                                                 "req",
                                                 "resp",
                                                 "rpc",
                                                 "let",
                                                 "var",
                                                 "if",
                                                 "else",
                                                 "for",
                                                 "in",
                                                 "..",
                                                 "0..8",
                                                 "import proto \"hotel/reservation.proto\";",
                                                 "map<string, int>",
                                                 "[capacity 10, evict lru]",
                                                 "reject(",
                                                 "\"",
                                                 "/*",
                                                 "//",
                                                 "\n",
                                                 "-",
                                                 "!",
                                                 "1ms",
                                                 "1e999",
                                                 "99999999999999999999",
                                                 "\\x",
                                                 "\xc3\xa9",
                                                 "\xff"};
  return words;
}

std::string mutate(const std::string& input, SeededRandom& random) {
  std::string s = input;
  int steps = 1 + static_cast<int>(random.next_u64() % 4);
  for (int i = 0; i < steps; ++i) {
    size_t at = s.empty() ? 0 : random.next_u64() % (s.size() + 1);
    switch (random.next_u64() % 5) {
      case 0:  // flip a byte
        if (!s.empty()) s[at % s.size()] = static_cast<char>(random.next_u64() & 0xff);
        break;
      case 1: {  // delete a range
        size_t length = random.next_u64() % 32;
        if (at < s.size()) s.erase(at, length);
        break;
      }
      case 2:  // insert a word of the language
        s.insert(at, dictionary()[random.next_u64() % dictionary().size()]);
        break;
      case 3: {  // duplicate a range
        size_t length = random.next_u64() % 64;
        if (at < s.size()) s.insert(at, s.substr(at, length));
        break;
      }
      default:  // truncate
        s.resize(at);
        break;
    }
  }
  return s;
}

TEST_CASE("the fuzz corpus and a fixed set of its mutations go through parse and check") {
  auto seeds = corpus();
  REQUIRE(seeds.size() >= 40);
  for (const auto& seed : seeds) (void)check_text("corpus.mpol", seed);
  SeededRandom random(kMutationSeed);
  size_t rejected = 0;
  for (const auto& seed : seeds) {
    for (int i = 0; i < kMutationsPerSeedFile; ++i) {
      CheckResult result = check_text("mutant.mpol", mutate(seed, random));
      if (!result.ok) ++rejected;
    }
  }
  // Most mutants are broken; the point is that every one came back.
  CHECK(rejected > 0);
}

}  // namespace
}  // namespace mrpc::dsl::testing
