// The data-driven language tests: every tests/dsl/cases/valid/*.mpol checks clean (one file per
// construct), and every tests/dsl/cases/errors/*.mpol gives exactly the diagnostics its header
// announces (one file per diagnostic):
//   // expect: LINE:COL: MESSAGE          an error at that place with exactly that message
//   // expect: FILE:LINE:COL: MESSAGE     the same, in another file (an import; FILE is its name)
//   // expect-warning: LINE:COL: MESSAGE  a warning (a file with warnings only still checks ok)
//   // expect-help: TEXT                  some diagnostic carries this help or note line
// Every error and warning reported must be expected, and every expectation met. Valid cases
// give no diagnostic at all, warnings included.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <filesystem>
#include <set>
#include <sstream>

#include "mpol_test_support.h"

namespace mrpc::dsl::testing {
namespace {

struct Expectations {
  std::multiset<std::string> errors;
  std::multiset<std::string> warnings;
  std::vector<std::string> helps;
};

Expectations read_expectations(const std::string& text) {
  Expectations out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const std::string error_prefix = "// expect: ", help_prefix = "// expect-help: ";
    const std::string warning_prefix = "// expect-warning: ";
    if (line.rfind(error_prefix, 0) == 0) out.errors.insert(line.substr(error_prefix.size()));
    if (line.rfind(warning_prefix, 0) == 0) out.warnings.insert(line.substr(warning_prefix.size()));
    if (line.rfind(help_prefix, 0) == 0) out.helps.push_back(line.substr(help_prefix.size()));
  }
  return out;
}

TEST_CASE("every valid .mpol case checks without diagnostics") {
  auto files = mpol_files_under("tests/dsl/cases/valid");
  REQUIRE(files.size() >= 20);
  for (const auto& path : files) {
    CAPTURE(path);
    CheckResult result = check_text(path, read_file(path));
    INFO(result.rendered);
    CHECK(result.ok);
    CHECK(result.diagnostics.empty());
  }
}

TEST_CASE("every wrong .mpol case gives its expected errors at the expected line and column") {
  auto files = mpol_files_under("tests/dsl/cases/errors");
  REQUIRE(files.size() >= 40);
  for (const auto& path : files) {
    CAPTURE(path);
    std::string text = read_file(path);
    Expectations expected = read_expectations(text);
    REQUIRE_MESSAGE(!(expected.errors.empty() && expected.warnings.empty()),
                    "an error case needs `// expect:` or `// expect-warning:` lines");
    CheckResult result = check_text(path, text);
    INFO(result.rendered);
    CHECK(result.ok == expected.errors.empty());
    std::multiset<std::string> actual, actual_warnings;
    for (const Diagnostic& d : result.diagnostics) {
      // An error in another file (an import) is expected as `other.mpol:LINE:COL: message`.
      std::string where =
          d.span.file < result.file_paths.size() && result.file_paths[d.span.file] != path
              ? std::filesystem::path(result.file_paths[d.span.file]).filename().string() + ":"
              : "";
      (d.severity == Severity::kWarning ? actual_warnings : actual)
          .insert(fmt::format("{}{}:{}: {}", where, d.span.line, d.span.column, d.message));
    }
    CHECK(actual == expected.errors);
    CHECK(actual_warnings == expected.warnings);
    for (const std::string& help : expected.helps) {
      bool found = false;
      for (const Diagnostic& d : result.diagnostics) {
        for (const SubDiagnostic& child : d.children) found = found || child.message == help;
      }
      CHECK_MESSAGE(found, "missing help/note: " << help);
    }
  }
}

}  // namespace
}  // namespace mrpc::dsl::testing
