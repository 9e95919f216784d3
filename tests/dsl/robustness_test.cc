// The front end never crashes or hangs: random bytes, deep nesting, oversized files and literals
// and floods of errors are each rejected with their own diagnostic that names the limit.
#include <doctest/doctest.h>

#include "mpol_test_support.h"
#include "mrpc/base/limits.h"
#include "mrpc/base/random.h"

namespace mrpc::dsl::testing {
namespace {

bool mentions(const CheckResult& result, const std::string& text) {
  for (const Diagnostic& d : result.diagnostics) {
    if (d.message.find(text) != std::string::npos) return true;
  }
  return false;
}

TEST_CASE("1 MB of random bytes is rejected as not UTF-8 text") {
  SeededRandom random(0x6d706f6c);
  std::string bytes(1000000, '\0');
  for (char& c : bytes) c = static_cast<char>(random.next_u64() & 0xff);
  CheckResult result = check_text("random.mpol", bytes);
  CHECK_FALSE(result.ok);
  REQUIRE(result.diagnostics.size() == 1);
  CHECK(result.diagnostics[0].message.find("file is not UTF-8 text") == 0);
}

TEST_CASE("1 MB of random printable text stops after the error limit") {
  SeededRandom random(7);
  std::string text(1000000, ' ');
  const std::string alphabet = "abcxyz019 (){}[];:,.=+-*/<>!&|\"\n policy on request let if for in";
  for (char& c : text) c = alphabet[random.next_u64() % alphabet.size()];
  CheckResult result = check_text("printable.mpol", text);
  CHECK_FALSE(result.ok);
  CHECK(result.diagnostics.size() <= limits::kMaxPolicyErrors + 1);
  CHECK(mentions(result, "too many errors, stopping"));
}

TEST_CASE("a file over the size limit is rejected by name") {
  std::string text(limits::kMaxPolicyFileBytes + 1, ' ');
  CheckResult result = check_text("big.mpol", text);
  CHECK_FALSE(result.ok);
  CHECK(mentions(result, "limits::kMaxPolicyFileBytes"));
}

TEST_CASE("100k nested parentheses are rejected before parsing, without exhausting the stack") {
  std::string text = "const X = " + std::string(100000, '(') + "1" + std::string(100000, ')') + ";";
  CheckResult result = check_text("deep.mpol", text);
  CHECK_FALSE(result.ok);
  REQUIRE(result.diagnostics.size() == 1);
  CHECK(mentions(result, "limits::kMaxPolicyNestingDepth"));
  CHECK(result.diagnostics[0].span.column == 11 + limits::kMaxPolicyNestingDepth);
}

TEST_CASE("deep blocks, prefix operators and type arguments are all bounded") {
  std::string blocks = "policy p { applies to * at callee; on request {";
  for (int i = 0; i < 100000; ++i) blocks += "if true {";
  std::string unary = "const X = " + std::string(100000, '!') + "true;";
  std::string minus = "const X = 1" + std::string(100000, '-') + "1;";
  std::string types = "policy p { applies to * at callee; param x: ";
  for (int i = 0; i < 100000; ++i) types += "list<";
  for (const std::string& text : {blocks, unary, minus, types}) {
    CheckResult result = check_text("deep.mpol", text);
    CHECK_FALSE(result.ok);
    CHECK(mentions(result, "limits::kMaxPolicyNestingDepth"));
  }
}

TEST_CASE("long operator and member chains are rejected on their tokens, before parsing") {
  // Finding 8 of issue 11: a 16,000-term `let` chain (64 KB, also in tests/dsl/corpus/) made
  // ANTLR build its whole tree before the AST builder could reject it. The token check stops at
  // the first operator past the limit: one diagnostic, pointing there.
  std::string chain = "policy p { applies to * at callee; on request { let x = 1";
  for (int i = 0; i < 16000; ++i) chain += " + 1";
  chain += "; } }";
  std::string members = "const X = a";
  for (int i = 0; i < 100000; ++i) members += ".b";
  members += ";";
  std::string inside_call = "const X = f(1, 2, g(1";
  for (int i = 0; i < 10000; ++i) inside_call += " * 2";
  inside_call += "));";
  for (const std::string& text : {chain, members, inside_call}) {
    CheckResult result = check_text("chain.mpol", text);
    CHECK_FALSE(result.ok);
    REQUIRE(result.diagnostics.size() == 1);
    CHECK(mentions(result, "limits::kMaxPolicyOperatorChain"));
  }
  CheckResult result = check_text("chain.mpol", chain);
  const uint32_t first_term = static_cast<uint32_t>(chain.find("= 1") + 3);
  // Column (from 1) of the '+' that passes the limit.
  CHECK(result.diagnostics[0].span.column == first_term + 4 * limits::kMaxPolicyOperatorChain + 2);
}

TEST_CASE("operator runs restart at each separator and bracket level") {
  // 40 operators in each of 50 list elements: no run is long, so the token
  // check lets the file through (the AST builder then bounds the depth of each element).
  std::string list = "const X = [";
  for (int element = 0; element < 50; ++element) {
    list += element == 0 ? "1" : ", 1";
    for (int i = 0; i < 40; ++i) list += " * 2";
  }
  list += "];";
  CheckResult result = check_text("list.mpol", list);
  CHECK_FALSE(mentions(result, "limits::kMaxPolicyOperatorChain"));
}

TEST_CASE("a long string literal is rejected by name") {
  std::string text = "const S = \"" + std::string(limits::kMaxStringLiteralBytes + 1, 'a') + "\";";
  CheckResult result = check_text("string.mpol", text);
  CHECK_FALSE(result.ok);
  CHECK(mentions(result, "limits::kMaxStringLiteralBytes"));
}

TEST_CASE("many semantic errors stop at the error limit") {
  std::string text = "policy p { applies to * at callee; on request {\n";
  for (int i = 0; i < 200; ++i) text += "  let v" + std::to_string(i) + " = nope;\n";
  text += "} }\n";
  CheckResult result = check_text("many.mpol", text);
  CHECK(result.diagnostics.size() == limits::kMaxPolicyErrors + 1);
  CHECK(result.diagnostics.back().message.find("too many errors, stopping") == 0);
}

}  // namespace
}  // namespace mrpc::dsl::testing

#include <filesystem>
#include <fstream>

namespace mrpc::dsl::testing {
namespace {

TEST_CASE("a chain of imports deeper than the limit is rejected by name") {
  std::filesystem::path dir = std::filesystem::temp_directory_path() / "mrpc_import_chain_test";
  std::filesystem::create_directories(dir);
  const uint32_t files = limits::kMaxPolicyImportDepth + 4;
  for (uint32_t i = 0; i < files; ++i) {
    std::ofstream out(dir / ("chain" + std::to_string(i) + ".mpol"));
    if (i + 1 < files) out << "import \"chain" << i + 1 << ".mpol\";\n";
    out << "const C" << i << " = " << i << ";\n";
  }
  std::string first = (dir / "chain0.mpol").string();
  CheckResult result = check_text(first, read_file(first));
  CHECK_FALSE(result.ok);
  CHECK(mentions(result, "limits::kMaxPolicyImportDepth"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace mrpc::dsl::testing
