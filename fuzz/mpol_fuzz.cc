// libFuzzer target over .mpol text: parse + check with the example schemas on the proto path.
// Built only with -DMRPC_BUILD_FUZZERS=ON and clang (docs/fuzzing.md). The default test suite
// replays the seed corpus and fixed mutations of it (tests/dsl/fuzz_replay_test.cc).
#include <cstddef>
#include <cstdint>
#include <string>

#include "mrpc/compiler/checker.h"
#include "mrpc/dsl/diagnostics.h"
#include "mrpc/dsl/source.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mrpc::dsl::SourceManager sources;
  mrpc::dsl::DiagnosticEngine diagnostics(sources);
  mrpc::compiler::Checker checker(
      {{MRPC_SOURCE_DIR "/examples/protos", MRPC_SOURCE_DIR "/tests/dsl/protos"}}, sources,
      diagnostics);
  (void)checker.check_text(MRPC_SOURCE_DIR "/tests/dsl/corpus/fuzz_input.mpol",
                           std::string(reinterpret_cast<const char*>(data), size));
  (void)diagnostics.render_text();
  (void)diagnostics.render_json();
  return 0;
}
