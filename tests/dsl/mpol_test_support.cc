#include "mpol_test_support.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "mrpc/compiler/checker.h"

namespace mrpc::dsl::testing {

std::string source_dir() {
  return MRPC_SOURCE_DIR;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::vector<std::string> mpol_files_under(const std::string& dir) {
  std::vector<std::string> out;
  std::filesystem::path root = std::filesystem::path(source_dir()) / dir;
  if (!std::filesystem::exists(root)) return out;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(root)) {
    if (entry.is_regular_file() && entry.path().extension() == ".mpol")
      out.push_back(entry.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> all_repository_mpol_files() {
  std::vector<std::string> out;
  for (const char* dir : {"tests", "stdlib-policies", "examples", "docs"}) {
    auto files = mpol_files_under(dir);
    out.insert(out.end(), files.begin(), files.end());
  }
  return out;
}

std::vector<std::string> test_proto_paths() {
  return {source_dir() + "/examples/protos", source_dir() + "/tests/dsl/protos"};
}

CheckResult check_text(const std::string& path, const std::string& text) {
  SourceManager sources;
  DiagnosticEngine diagnostics(sources);
  compiler::Checker checker({test_proto_paths()}, sources, diagnostics);
  CheckResult result;
  result.ok = checker.check_text(path, text);
  result.diagnostics = diagnostics.diagnostics();
  result.rendered = diagnostics.render_text();
  for (size_t i = 0; i < sources.size(); ++i)
    result.file_paths.push_back(sources.file(static_cast<uint32_t>(i)).path());
  return result;
}

}  // namespace mrpc::dsl::testing
