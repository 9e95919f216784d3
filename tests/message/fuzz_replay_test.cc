// Replays the seed corpora of the message fuzz targets (fuzz/message_inputs.h) and a fixed set of
// mutations of them drawn from a fixed seed: the same inputs every run, so a crash found once
// stays found. tests/message/corpus/{copy,schema}/ hold the seeds on disk (libFuzzer starts from
// them; docs/fuzzing.md) plus any input a fuzzer found; MRPC_WRITE_FUZZ_SEEDS=1 rewrites the
// generated seeds there.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "../fuzz_replay.h"
#include "message_inputs.h"
#include "mrpc/base/random.h"

namespace mrpc::testing {
namespace {

constexpr uint64_t kMutationSeed = 0xf022;
constexpr int kMutationsPerSeed = 100;

std::filesystem::path corpus_dir(const char* target) {
  return std::filesystem::path(MRPC_SOURCE_DIR) / "tests/message/corpus" / target;
}

// The generated seeds (written to the corpus folder when asked) and every file of the folder.
std::vector<std::string> corpus(const char* target, const std::vector<std::string>& generated) {
  const auto dir = corpus_dir(target);
  if (std::getenv("MRPC_WRITE_FUZZ_SEEDS") != nullptr) {
    std::filesystem::create_directories(dir);
    for (size_t i = 0; i < generated.size(); ++i) {
      std::ofstream(dir / ("seed-" + std::to_string(i)), std::ios::binary) << generated[i];
    }
  }
  return fuzz::seeds_and_files(generated, dir);
}

TEST_CASE("the copy fuzz corpus and a fixed set of its mutations copy or fail cleanly") {
  auto seeds = corpus("copy", fuzz::copy_seeds());
  REQUIRE(seeds.size() >= 4);
  replay_fuzz_inputs("copy", seeds, fuzz::copy_from_heap, kMutationSeed, kMutationsPerSeed);
}

TEST_CASE("the schema fuzz corpus and a fixed set of its mutations register or fail cleanly") {
  auto seeds = corpus("schema", fuzz::schema_seeds());
  REQUIRE(seeds.size() >= 4);
  replay_fuzz_inputs("schema", seeds, fuzz::register_schema, kMutationSeed, kMutationsPerSeed);
}

}  // namespace
}  // namespace mrpc::testing
