// Every .mpol of the repository, and a fixed set of mutations of them drawn from a fixed seed,
// that checks clean also builds its IR, goes through the verifier and runs in the evaluator on
// each event without a crash: the IR builder's assertions ("the checker accepted it, so it is
// well typed") hold on programs nobody wrote by hand.
#include <doctest/doctest.h>

#include <cstdlib>

#include "compiler_test_support.h"
#include "mpol_test_support.h"
#include "mrpc/base/random.h"
#include "mrpc/compiler/evaluator.h"

namespace mrpc::compiler::testing {
namespace {

constexpr uint64_t kMutationSeed = 0x1a7e;
constexpr int kMutationsPerFile = 30;

void run_everywhere(const ir::Unit& unit) {
  ManualClock clock(1'000'000'000);
  SeededRandom random(7);
  for (const ir::Policy& policy : unit.policies) {
    PolicyInstance instance(policy, clock, random);
    for (auto event : {ir::Event::kRequest, ir::Event::kResponse, ir::Event::kError}) {
      mrpc_rpc_view view{};
      std::string service = policy.methods.empty() ? "s.S" : policy.methods[0].service;
      std::string method = policy.methods.empty() ? "M" : policy.methods[0].name;
      view.service = {service.data(), static_cast<uint32_t>(service.size())};
      view.method = {method.data(), static_cast<uint32_t>(method.size())};
      // An empty body of each message (every field its default).
      std::vector<uint8_t> req(policy.methods.empty() ? 8 : policy.methods[0].input->body_size());
      std::vector<uint8_t> resp(policy.methods.empty() ? 8 : policy.methods[0].output->body_size());
      view.request = {req.data(), req.size(), 0, 0};
      view.response = {resp.data(), resp.size(), 0, 0};
      Verdict v = instance.run(event, view);
      CHECK((!v.aborted || v.outcome == Verdict::Outcome::kReject));
    }
  }
}

TEST_CASE("repository policies and their mutants that check clean build IR verify and run") {
  auto files = dsl::testing::all_repository_mpol_files();
  REQUIRE(files.size() >= 100);
  // MRPC_TEST_SEED and MRPC_MUTATIONS search further than the fixed default run.
  uint64_t seed = kMutationSeed;
  int per_file = kMutationsPerFile;
  if (const char* env = std::getenv("MRPC_TEST_SEED")) seed = std::strtoull(env, nullptr, 10);
  if (const char* env = std::getenv("MRPC_MUTATIONS")) per_file = std::atoi(env);
  INFO("seed " << seed << ", " << per_file << " mutations per file");
  SeededRandom random(seed);
  int built = 0, mutants_built = 0;
  for (const auto& path : files) {
    std::string text = dsl::testing::read_file(path);
    // Imports resolve beside the file: keep its path for the original and the mutants.
    Built original = build(path, text);
    if (original.unit != nullptr) {
      ++built;
      // Only what the verifier passed may run (its rejects include 2^40-iteration loops).
      if (original.verified) run_everywhere(*original.unit);
    }
    for (int i = 0; i < per_file; ++i) {
      std::string mutant = mutate_policy_text(text, random);
      CAPTURE(mutant);
      Built b = build(path, mutant);
      if (b.unit == nullptr) continue;
      ++mutants_built;
      if (b.verified) run_everywhere(*b.unit);
    }
  }
  MESSAGE(built << " files and " << mutants_built << " mutants built IR");
  CHECK(built >= 70);
  CHECK(mutants_built > 500);
}

}  // namespace
}  // namespace mrpc::compiler::testing
