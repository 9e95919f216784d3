// The default suite's replay of a fuzz target (tests/*/fuzz_replay_test.cc): its seeds, then a
// fixed set of their mutations drawn from a fixed seed (fuzz/replay_mutate.h), through the
// target's entry point; the same inputs every run, so a crash found once stays found. A failure
// names the input that ran (its index: seeds first, then the mutations in order).
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "replay_mutate.h"

namespace mrpc::testing {

template <typename Entry>
void replay_fuzz_inputs(const char* target, const std::vector<std::string>& seeds, Entry entry,
                        uint64_t mutation_seed, int mutations_per_seed) {
  size_t index = 0;
  CAPTURE(index);
  fuzz::replay_seeds_and_mutations(seeds, entry, mutation_seed, mutations_per_seed, index);
  MESSAGE(std::string(target), ": ", seeds.size(), " seeds and ",
          seeds.size() * static_cast<size_t>(mutations_per_seed), " mutations (seed ",
          mutation_seed, ") went through");
}

}  // namespace mrpc::testing
