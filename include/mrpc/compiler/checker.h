// The .mpol resolver and type checker (`mrpc-polc check`). Loads a policy file, the .mpol files
// it imports (cycles reported) and the .proto files it names (through libprotobuf's own
// compiler::Importer over a DiskSourceTree built from the proto path), resolves every
// `applies to` / `marshal` pattern against the imported services, and types every expression:
// message fields by the protobuf schema, params, state, consts, locals and the rpc context.
// Every problem becomes a diagnostic in the DiagnosticEngine; nothing throws.
// Single-threaded: one Checker per compiler run; it owns the parsed files and the descriptor pool.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "mrpc/dsl/diagnostics.h"
#include "mrpc/dsl/source.h"

namespace mrpc::compiler {

namespace ir {
struct Unit;
}

struct CheckOptions {
  // Directories searched for `import proto "x.proto"`, in order. The importing .mpol file's
  // own directory is searched after them.
  std::vector<std::string> proto_paths;
};

// What a successful check found, for tools and tests.
struct PolicySummary {
  std::string name;
  std::vector<std::string> methods;  // full method names the policy applies to
};

class Checker {
 public:
  Checker(CheckOptions options, dsl::SourceManager& sources, dsl::DiagnosticEngine& diagnostics);
  ~Checker();
  Checker(const Checker&) = delete;
  Checker& operator=(const Checker&) = delete;

  // Checks one file (and what it imports); false if any error was reported.
  bool check_file(const std::string& path);
  // Checks text given directly (tests, the fuzzer); imports resolve against `path`'s directory.
  bool check_text(const std::string& path, std::string text);

  const std::vector<PolicySummary>& policies() const;

  // The typed IR (ir.h) of the policies of the file `path` names, which a check_file or
  // check_text call must have checked clean; null otherwise.
  std::unique_ptr<ir::Unit> build_ir(const std::string& path);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mrpc::compiler
