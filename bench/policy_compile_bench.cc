// How long the policy front half takes, per stdlib policy: parse + check + typed IR + verify
// (p50 of 20 runs, cold process caches warm after the first), and what one call costs through
// the IR evaluator (acl_by_field, a string-field ACL). The LLVM lowering and the JIT are not
// built yet: their time is not in these figures.
//   policy_compile_bench [--runs N] [--calls N]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <vector>

#include <fmt/format.h>

#include "mrpc/base/clock.h"
#include "mrpc/base/random.h"
#include "mrpc/compiler/checker.h"
#include "mrpc/compiler/evaluator.h"
#include "mrpc/compiler/ir.h"
#include "mrpc/compiler/verifier.h"

namespace {

using Clock = std::chrono::steady_clock;

std::unique_ptr<mrpc::compiler::ir::Unit> compile(const std::string& path, bool& ok) {
  mrpc::dsl::SourceManager sources;
  mrpc::dsl::DiagnosticEngine diagnostics(sources);
  mrpc::compiler::Checker checker({{std::string(MRPC_SOURCE_DIR) + "/examples/protos"}}, sources,
                                  diagnostics);
  ok = checker.check_file(path);
  if (!ok) return nullptr;
  auto unit = checker.build_ir(path);
  ok = unit != nullptr && mrpc::compiler::verify(*unit, diagnostics);
  return unit;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"policy_compile_bench: check + IR + verify per stdlib policy; evaluator per call"};
  int runs = 20;
  int calls = 200000;
  app.add_option("--runs", runs, "compilations per policy");
  app.add_option("--calls", calls, "evaluator calls");
  CLI11_PARSE(app, argc, argv);

  std::vector<std::string> files;
  for (const auto& e :
       std::filesystem::directory_iterator(std::string(MRPC_SOURCE_DIR) + "/stdlib-policies")) {
    if (e.path().extension() == ".mpol") files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  fmt::print("{:<36} {:>12}\n", "policy (check + IR + verify)", "p50 us");
  std::vector<double> all;
  for (const auto& f : files) {
    std::vector<double> us;
    for (int i = 0; i < runs; ++i) {
      auto start = Clock::now();
      bool ok = false;
      compile(f, ok);
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
      if (!ok) {
        fmt::print(stderr, "{} does not compile\n", f);
        return 1;
      }
    }
    std::sort(us.begin(), us.end());
    all.push_back(us[us.size() / 2]);
    fmt::print("{:<36} {:>12.0f}\n", std::filesystem::path(f).filename().string(),
               us[us.size() / 2]);
  }
  std::sort(all.begin(), all.end());
  fmt::print("{:<36} {:>12.0f}\n", "median over policies", all[all.size() / 2]);

  bool ok = false;
  auto unit = compile(std::string(MRPC_SOURCE_DIR) + "/stdlib-policies/acl_by_field.mpol", ok);
  const auto& policy = unit->policies[0];
  mrpc::ManualClock clock(1);
  mrpc::SeededRandom random(1);
  mrpc::compiler::PolicyInstance instance(policy, clock, random);
  // A request with customer_name "alice" and hotel_id "h1", in its shared-memory layout.
  const mrpc::MessageLayout& in = *policy.methods[0].input;
  std::vector<uint8_t> region(in.body_size() + 64, 0);
  auto put_string = [&](const char* field, const char* text, uint64_t at) {
    std::memcpy(region.data() + at, text, std::strlen(text));
    mrpc::RegionRef ref{at, static_cast<uint32_t>(std::strlen(text)),
                        static_cast<uint32_t>(std::strlen(text))};
    std::memcpy(region.data() + in.field_by_name(field)->offset, &ref, sizeof ref);
  };
  put_string("customer_name", "alice", in.body_size());
  put_string("hotel_id", "h1", in.body_size() + 32);
  std::string service = policy.methods[0].service, method = policy.methods[0].name;
  mrpc_rpc_view view{};
  view.service = {service.data(), static_cast<uint32_t>(service.size())};
  view.method = {method.data(), static_cast<uint32_t>(method.size())};
  view.request = {region.data(), region.size(), 0, in.fingerprint()};
  auto start = Clock::now();
  int passed = 0;
  for (int i = 0; i < calls; ++i) {
    passed += instance.run(mrpc::compiler::ir::Event::kRequest, view).outcome ==
              mrpc::compiler::Verdict::Outcome::kContinue;
  }
  double ns = std::chrono::duration<double, std::nano>(Clock::now() - start).count() / calls;
  fmt::print("evaluator, acl_by_field on request: {:.0f} ns/call ({} of {} passed)\n", ns, passed,
             calls);
  return 0;
}
