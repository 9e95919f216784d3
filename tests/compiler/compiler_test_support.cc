#include "compiler_test_support.h"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <filesystem>
#include <set>
#include <sstream>

#include "mpol_test_support.h"
#include "mrpc/compiler/checker.h"
#include "mrpc/compiler/verifier.h"

namespace mrpc::compiler::testing {

Built build(const std::string& path, const std::string& text) {
  dsl::SourceManager sources;
  dsl::DiagnosticEngine diagnostics(sources);
  Checker checker({dsl::testing::test_proto_paths()}, sources, diagnostics);
  Built out;
  if (checker.check_text(path, text)) {
    out.unit = checker.build_ir(path);
    if (out.unit != nullptr) out.verified = verify(*out.unit, diagnostics);
  }
  out.diagnostics = diagnostics.diagnostics();
  out.rendered = diagnostics.render_text();
  for (size_t i = 0; i < sources.size(); ++i)
    out.file_paths.push_back(sources.file(static_cast<uint32_t>(i)).path());
  return out;
}

std::string mutate_policy_text(const std::string& input, SeededRandom& random) {
  std::string s = input;
  int steps = 1 + static_cast<int>(random.next_u64() % 3);
  for (int i = 0; i < steps; ++i) {
    if (s.empty()) break;
    size_t at = random.next_u64() % s.size();
    switch (random.next_u64() % 4) {
      case 0:  // delete a short range (often a token: a `!`, a digit, an operand)
        s.erase(at, 1 + random.next_u64() % 4);
        break;
      case 1:  // duplicate a range (a statement twice, a nested expression)
        s.insert(at, s.substr(at, random.next_u64() % 48));
        break;
      case 2: {  // swap a digit
        size_t digit = s.find_first_of("0123456789", at);
        if (digit != std::string::npos) s[digit] = static_cast<char>('0' + random.next_u64() % 10);
        break;
      }
      default: {  // swap an operator for another
        static const char* ops[] = {"+", "-", "*", "/", "%", "<", ">", "==", "&&", "||"};
        size_t op = s.find_first_of("+-*/%<>", at);
        if (op != std::string::npos) s.replace(op, 1, ops[random.next_u64() % 10]);
        break;
      }
    }
  }
  return s;
}

void check_expectations(const std::string& path, const std::string& text, const Built& built) {
  CAPTURE(path);
  std::multiset<std::string> errors, warnings, actual_errors, actual_warnings;
  std::vector<std::string> helps;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    const std::string e = "// expect: ", w = "// expect-warning: ", h = "// expect-help: ";
    if (line.rfind(e, 0) == 0) errors.insert(line.substr(e.size()));
    if (line.rfind(w, 0) == 0) warnings.insert(line.substr(w.size()));
    if (line.rfind(h, 0) == 0) helps.push_back(line.substr(h.size()));
  }
  for (const dsl::Diagnostic& d : built.diagnostics) {
    (d.severity == dsl::Severity::kWarning ? actual_warnings : actual_errors)
        .insert(fmt::format("{}:{}: {}", d.span.line, d.span.column, d.message));
  }
  INFO(built.rendered);
  CHECK(actual_errors == errors);
  CHECK(actual_warnings == warnings);
  for (const std::string& help : helps) {
    bool found = false;
    for (const dsl::Diagnostic& d : built.diagnostics) {
      for (const dsl::SubDiagnostic& child : d.children) found = found || child.message == help;
    }
    CHECK_MESSAGE(found, "missing help/note: " << help);
  }
}

}  // namespace mrpc::compiler::testing
