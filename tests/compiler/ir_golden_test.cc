// Golden tests of the typed IR: every tests/compiler/ir/NAME.mpol checks and verifies clean
// (warnings allowed, as its `// expect-warning:` lines say) and `mrpc-polc build --emit=ir` of it
// prints exactly NAME.ir. Regenerate after a deliberate change with MRPC_UPDATE_GOLDEN=1 and
// review the diff.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "compiler_test_support.h"
#include "mpol_test_support.h"

namespace mrpc::compiler::testing {
namespace {

TEST_CASE("every IR golden case dumps exactly its expected IR") {
  auto files = dsl::testing::mpol_files_under("tests/compiler/ir");
  REQUIRE(files.size() >= 7);
  bool update = std::getenv("MRPC_UPDATE_GOLDEN") != nullptr;
  for (const auto& path : files) {
    CAPTURE(path);
    std::string text = dsl::testing::read_file(path);
    Built built = build(path, text);
    REQUIRE_MESSAGE(built.unit != nullptr, built.rendered);
    CHECK(built.verified);
    check_expectations(path, text, built);
    std::string golden_path = std::filesystem::path(path).replace_extension(".ir").string();
    std::string dump = ir::dump(*built.unit);
    if (update) {
      std::ofstream(golden_path, std::ios::binary) << dump;
      continue;
    }
    REQUIRE_MESSAGE(std::filesystem::exists(golden_path), "missing " << golden_path);
    CHECK(dump == dsl::testing::read_file(golden_path));
  }
}

TEST_CASE("every stdlib and reference policy builds IR and passes the verifier") {
  std::vector<std::string> files = dsl::testing::mpol_files_under("stdlib-policies");
  for (const auto& f : dsl::testing::mpol_files_under("tests/dsl/cases/valid")) files.push_back(f);
  REQUIRE(files.size() >= 40);
  for (const auto& path : files) {
    CAPTURE(path);
    Built built = build(path, dsl::testing::read_file(path));
    INFO(built.rendered);
    REQUIRE(built.unit != nullptr);
    CHECK(built.verified);
    CHECK(built.diagnostics.empty());
  }
}

}  // namespace
}  // namespace mrpc::compiler::testing
