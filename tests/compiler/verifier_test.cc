// The verifier's rules, one error case each under tests/compiler/verify/ (the `// expect:` format
// of tests/dsl/cases): each bad program is rejected with its message, limit name and location,
// and nothing else is reported.
#include <doctest/doctest.h>

#include "compiler_test_support.h"
#include "mpol_test_support.h"
#include "mrpc/base/limits.h"
#include "mrpc/compiler/verifier.h"

namespace mrpc::compiler::testing {
namespace {

TEST_CASE("every verifier case is rejected with its expected message limit and location") {
  auto files = dsl::testing::mpol_files_under("tests/compiler/verify");
  REQUIRE(files.size() >= 9);
  for (const auto& path : files) {
    CAPTURE(path);
    std::string text = dsl::testing::read_file(path);
    Built built = build(path, text);
    REQUIRE_MESSAGE(built.unit != nullptr, built.rendered);
    check_expectations(path, text, built);
  }
}

TEST_CASE("the work bound multiplies nested loops and adds sequential statements") {
  Built built = build("work.mpol", R"(
policy p {
  applies to * at callee;
  state n: int;
  on request {
    for a in 0..10 {
      for b in 0..20 {
        n += 1;
      }
    }
  }
}
)");
  REQUIRE(built.unit != nullptr);
  VerifyReport report;
  dsl::SourceManager sources;
  dsl::DiagnosticEngine diagnostics(sources);
  REQUIRE(verify(*built.unit, diagnostics, &report));
  // `n += 1` is 1 statement + 2 nodes (n, 1); the inner loop 1 + 2 bound nodes + 20 * (1 + 3);
  // the outer 1 + 2 + 10 * (1 + 83).
  REQUIRE(report.handler_work.size() == 1);
  CHECK(report.handler_work[0][0] == 3 + 10 * (1 + 3 + 20 * (1 + 3)));
}

TEST_CASE("worst-case state bytes count capacity times the largest entry") {
  Built built = build("state.mpol", R"(
policy p {
  applies to * at callee;
  state m: map<string, int>[capacity 100];
  state s: string;
  state c: counter;
  on request {
    m[rpc.caller.app] = 1;
  }
}
)");
  REQUIRE(built.unit != nullptr);
  VerifyReport report;
  dsl::SourceManager sources;
  dsl::DiagnosticEngine diagnostics(sources);
  REQUIRE(verify(*built.unit, diagnostics, &report));
  CHECK(report.state_bytes[0] ==
        100 * (64 + limits::kMaxStateStringBytes + 8) + limits::kMaxStateStringBytes + 8);
}

}  // namespace
}  // namespace mrpc::compiler::testing
