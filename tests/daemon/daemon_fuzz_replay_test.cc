// Replays the seeds of the daemon's fuzz targets for app inputs (fuzz/daemon_inputs.h: app-socket
// frames, submission-ring entries), the files of tests/daemon/corpus/<target>/ (inputs a fuzzer
// found, and hand-made ones) and a fixed set of mutations drawn from a fixed seed, against a live
// daemon engine: the same inputs every run. Each input must leave the daemon serving
// (daemon_inputs.cc's oracle).
#include <doctest/doctest.h>

#include <filesystem>

#include "../fuzz_replay.h"
#include "daemon_inputs.h"

namespace mrpc::testing {
namespace {

constexpr uint64_t kMutationSeed = 0xd43;
constexpr int kMutationsPerSeed = 30;

std::vector<std::string> corpus(const char* target, const std::vector<std::string>& generated) {
  return fuzz::seeds_and_files(
      generated, std::filesystem::path(MRPC_SOURCE_DIR) / "tests/daemon/corpus" / target);
}

TEST_CASE("the app-socket frame corpus and a fixed set of its mutations leave the daemon serving") {
  auto seeds = corpus("app_socket", fuzz::frame_seeds());
  REQUIRE(seeds.size() >= 8);
  replay_fuzz_inputs("app_socket", seeds, fuzz::app_socket_frames, kMutationSeed,
                     kMutationsPerSeed);
}

TEST_CASE("the ring entry corpus and a fixed set of its mutations leave the daemon serving") {
  auto seeds = corpus("ring", fuzz::ring_seeds());
  REQUIRE(seeds.size() >= 6);
  replay_fuzz_inputs("ring", seeds, fuzz::ring_entries, kMutationSeed, kMutationsPerSeed);
}

}  // namespace
}  // namespace mrpc::testing
