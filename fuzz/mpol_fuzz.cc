// libFuzzer target over .mpol text: parse + check with the example schemas on the proto path,
// then, for input that checks clean, the typed IR, the verifier and (when it passes) one run of
// every handler in the evaluator over empty messages. Built only with -DMRPC_BUILD_FUZZERS=ON and
// clang (docs/fuzzing.md). The default test suite replays the seed corpus and fixed mutations of
// it (tests/dsl/fuzz_replay_test.cc, tests/compiler/pipeline_replay_test.cc).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "mrpc/base/clock.h"
#include "mrpc/base/random.h"
#include "mrpc/compiler/checker.h"
#include "mrpc/compiler/evaluator.h"
#include "mrpc/compiler/ir.h"
#include "mrpc/compiler/verifier.h"
#include "mrpc/dsl/diagnostics.h"
#include "mrpc/dsl/source.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mrpc::dsl::SourceManager sources;
  mrpc::dsl::DiagnosticEngine diagnostics(sources);
  mrpc::compiler::Checker checker(
      {{MRPC_SOURCE_DIR "/examples/protos", MRPC_SOURCE_DIR "/tests/dsl/protos"}}, sources,
      diagnostics);
  const char* path = MRPC_SOURCE_DIR "/tests/dsl/corpus/fuzz_input.mpol";
  bool ok = checker.check_text(path, std::string(reinterpret_cast<const char*>(data), size));
  if (ok) {
    auto unit = checker.build_ir(path);
    if (unit != nullptr && mrpc::compiler::verify(*unit, diagnostics)) {
      (void)mrpc::compiler::ir::dump(*unit);
      mrpc::ManualClock clock(1);
      mrpc::SeededRandom random(1);
      for (const auto& policy : unit->policies) {
        mrpc::compiler::PolicyInstance instance(policy, clock, random);
        std::string service = policy.methods.empty() ? "s.S" : policy.methods[0].service;
        std::string method = policy.methods.empty() ? "M" : policy.methods[0].name;
        std::vector<uint8_t> req(policy.methods.empty() ? 8 : policy.methods[0].input->body_size());
        std::vector<uint8_t> resp(policy.methods.empty() ? 8
                                                         : policy.methods[0].output->body_size());
        for (auto event :
             {mrpc::compiler::ir::Event::kRequest, mrpc::compiler::ir::Event::kResponse,
              mrpc::compiler::ir::Event::kError}) {
          mrpc_rpc_view view{};
          view.service = {service.data(), static_cast<uint32_t>(service.size())};
          view.method = {method.data(), static_cast<uint32_t>(method.size())};
          view.request = {req.data(), req.size(), 0, 0};
          view.response = {resp.data(), resp.size(), 0, 0};
          (void)instance.run(event, view);
        }
      }
    }
  }
  (void)diagnostics.render_text();
  (void)diagnostics.render_json();
  return 0;
}
