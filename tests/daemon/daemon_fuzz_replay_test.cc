// Replays the seeds of the daemon's fuzz targets for app inputs (fuzz/daemon_inputs.h: app-socket
// frames, submission-ring entries), the files of tests/daemon/corpus/<target>/ (inputs a fuzzer
// found, and hand-made ones) and a fixed set of mutations drawn from a fixed seed, against a live
// daemon engine: the same inputs every run. Each input must leave the daemon serving
// (daemon_inputs.cc's oracle).
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "daemon_inputs.h"
#include "replay_mutate.h"

namespace mrpc::testing {
namespace {

constexpr uint64_t kMutationSeed = 0xd43;
constexpr int kMutationsPerSeed = 30;

std::vector<std::string> corpus(const char* target, const std::vector<std::string>& generated) {
  std::set<std::string> out(generated.begin(), generated.end());
  const auto dir = std::filesystem::path(MRPC_SOURCE_DIR) / "tests/daemon/corpus" / target;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    out.insert(bytes.str());
  }
  return {out.begin(), out.end()};
}

void replay(const char* target, const std::vector<std::string>& seeds,
            void (*entry)(std::string_view)) {
  size_t index = 0;  // which input, if one fails: seeds first, then mutations in order
  CAPTURE(index);
  for (const std::string& seed : seeds) {
    entry(seed);
    ++index;
  }
  SeededRandom random(kMutationSeed);
  for (const std::string& seed : seeds) {
    for (int i = 0; i < kMutationsPerSeed; ++i, ++index) entry(fuzz::mutate(seed, random));
  }
  MESSAGE(std::string(target), ": ", seeds.size(), " seeds and ", seeds.size() * kMutationsPerSeed,
          " mutations (seed ", kMutationSeed, ") went through");
}

TEST_CASE("the app-socket frame corpus and a fixed set of its mutations leave the daemon serving") {
  auto seeds = corpus("app_socket", fuzz::frame_seeds());
  REQUIRE(seeds.size() >= 8);
  replay("app_socket", seeds, fuzz::app_socket_frames);
}

TEST_CASE("the ring entry corpus and a fixed set of its mutations leave the daemon serving") {
  auto seeds = corpus("ring", fuzz::ring_seeds());
  REQUIRE(seeds.size() >= 6);
  replay("ring", seeds, fuzz::ring_entries);
}

}  // namespace
}  // namespace mrpc::testing
