// Helpers for the compiler tests: check a .mpol file (text) the way `mrpc-polc build` does and
// return its IR with every diagnostic of the check and the verifier.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "mrpc/base/random.h"
#include "mrpc/compiler/ir.h"
#include "mrpc/dsl/diagnostics.h"

namespace mrpc::compiler::testing {

struct Built {
  std::unique_ptr<ir::Unit> unit;  // null when the check failed
  bool verified = false;           // the verifier found no error
  std::vector<dsl::Diagnostic> diagnostics;
  std::string rendered;
  std::vector<std::string> file_paths;
};

// One to three random edits of a policy's text (delete a short range, duplicate one, change a
// digit or an operator): mutants that often still check, to reach unusual programs.
std::string mutate_policy_text(const std::string& input, SeededRandom& random);

// Checks, builds the IR and verifies `text` as the file `path`.
Built build(const std::string& path, const std::string& text);

// `// expect: L:C: message` (errors), `// expect-warning: ...`, `// expect-help: TEXT` (a note or
// help line of some diagnostic): the format of tests/dsl/cases.
void check_expectations(const std::string& path, const std::string& text, const Built& built);

}  // namespace mrpc::compiler::testing
