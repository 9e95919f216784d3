// Helpers shared by the .mpol tests: finding the repository's .mpol files and running the front
// end (parse + check) on text, the way `mrpc-polc check` does.
#pragma once

#include <string>
#include <vector>

#include "mrpc/dsl/diagnostics.h"
#include "mrpc/dsl/source.h"

namespace mrpc::dsl::testing {

std::string source_dir();
std::string read_file(const std::string& path);
// Every .mpol under `dir` (relative to the repository root), sorted.
std::vector<std::string> mpol_files_under(const std::string& dir);
// Every .mpol of the repository: tests/, stdlib-policies/, examples/, docs/.
std::vector<std::string> all_repository_mpol_files();
// The proto path the tests check against.
std::vector<std::string> test_proto_paths();

struct CheckResult {
  bool ok = false;
  std::vector<Diagnostic> diagnostics;
  std::string rendered;
  std::vector<std::string> file_paths;  // by source id: where each diagnostic's span is
};
// Parses and checks `text` as if it were the file `path` (imports resolve beside it).
CheckResult check_text(const std::string& path, const std::string& text);

}  // namespace mrpc::dsl::testing
