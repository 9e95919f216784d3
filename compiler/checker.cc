// The .mpol checker's front: the Checker API, and loading modules: `.mpol` imports (cycles and
// depth reported) and `import proto` through libprotobuf's Importer. Each loaded module is then
// type-checked by a ModuleChecker (checker_internal.h).
#include "mrpc/compiler/checker.h"

#include <fmt/format.h>
#include <google/protobuf/compiler/importer.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>

#include "checker_internal.h"
#include "mrpc/base/limits.h"
#include "mrpc/compiler/ir.h"
#include "mrpc/dsl/ast.h"
#include "mrpc/dsl/parser.h"

namespace mrpc::compiler {

namespace {

std::string read_whole_file(const std::string& path, bool& ok) {
  std::ifstream in(path, std::ios::binary);
  ok = static_cast<bool>(in);
  if (!ok) return {};
  // Read at most one byte past the limit: the parser reports the size; no need to load more.
  // In chunks: sizing the string to the limit up front zeroed (and faulted in) a megabyte per
  // file, more than half of a small policy's whole front end.
  std::string text;
  char chunk[16384];
  while (text.size() <= limits::kMaxPolicyFileBytes) {
    const size_t want = std::min(sizeof chunk, limits::kMaxPolicyFileBytes + 1 - text.size());
    in.read(chunk, static_cast<std::streamsize>(want));
    const auto got = static_cast<size_t>(in.gcount());
    text.append(chunk, got);
    if (got < want) break;
  }
  return text;
}

// Collects protobuf's parse errors for one `import proto` and turns them into diagnostics there.
class ProtoErrors final : public pb::compiler::MultiFileErrorCollector {
 public:
  explicit ProtoErrors(DiagnosticEngine& diagnostics) : diagnostics_(diagnostics) {}
  void AddError(const std::string& filename, int line, int column,
                const std::string& message) override {
    if (at_ == nullptr) return;
    // The import itself missing is reported by the caller, with the proto path it searched.
    if (message == "File not found." && filename == *import_) return;
    Diagnostic& d =
        diagnostics_.error(*at_, fmt::format("cannot load '{}': {}", filename, message));
    if (line >= 0)
      DiagnosticEngine::note(d, fmt::format("at {}:{}:{}", filename, line + 1, column + 1));
    ++count_;
  }
  void AddWarning(const std::string&, int, int, const std::string&) override {}
  void point_at(const Span* span, const std::string* import = nullptr) {
    at_ = span;
    import_ = import;
    count_ = 0;
  }
  int count() const { return count_; }

 private:
  DiagnosticEngine& diagnostics_;
  const Span* at_ = nullptr;
  const std::string* import_ = nullptr;
  int count_ = 0;
};

}  // namespace

struct Checker::Impl {
  Impl(CheckOptions opts, dsl::SourceManager& src, DiagnosticEngine& diag)
      : options(std::move(opts)), sources(src), diagnostics(diag), proto_errors(diag) {
    for (const auto& dir : options.proto_paths) source_tree.MapPath("", dir);
  }

  CheckOptions options;
  dsl::SourceManager& sources;
  DiagnosticEngine& diagnostics;
  pb::compiler::DiskSourceTree source_tree;
  ProtoErrors proto_errors;
  std::unique_ptr<pb::compiler::Importer> importer;
  std::set<std::string> mapped_dirs;
  std::map<std::string, std::unique_ptr<Module>> modules;
  std::vector<std::string> import_stack;
  std::vector<PolicySummary> summaries;

  Module* load(const std::string& path, std::optional<std::string> text, const Span* from);
  void load_imports(Module& module);
  bool check_module(Module& module);
  // Loads the file given by the caller (or its `text`) and checks it and what it imports.
  bool check_root(const std::string& path, std::optional<std::string> text);
};

// ---- loading ----

Module* Checker::Impl::load(const std::string& path, std::optional<std::string> text,
                            const Span* from) {
  std::error_code ec;
  std::string canonical = std::filesystem::weakly_canonical(path, ec).string();
  if (ec) canonical = path;
  auto found = modules.find(canonical);
  if (found != modules.end()) return found->second.get();
  if (!text) {
    bool ok = false;
    text = read_whole_file(path, ok);
    if (!ok) {
      if (from != nullptr) {
        Diagnostic& d =
            diagnostics.error(*from, fmt::format("cannot open imported file '{}'", path));
        DiagnosticEngine::note(d,
                               "imports are resolved relative to the importing file's directory");
      } else {
        // No location to point at: a diagnostic without a file.
        dsl::SourceFile& f = sources.add(path, "");
        diagnostics.error(f.span(0, 0), fmt::format("cannot open '{}'", path));
      }
      return nullptr;
    }
  }
  auto module = std::make_unique<Module>();
  module->path = canonical;
  Module* raw = module.get();
  modules.emplace(canonical, std::move(module));
  dsl::SourceFile& source = sources.add(path, std::move(*text));
  raw->file = dsl::parse_file(source, diagnostics);
  if (!raw->file) return raw;
  import_stack.push_back(canonical);
  load_imports(*raw);
  import_stack.pop_back();
  return raw;
}

void Checker::Impl::load_imports(Module& module) {
  std::filesystem::path dir = std::filesystem::path(module.path).parent_path();
  for (const auto& item : module.file->items) {
    auto* import = std::get_if<dsl::ast::Import>(&item);
    if (import == nullptr) continue;
    if (diagnostics.too_many()) return;
    if (import->is_proto) {
      if (!importer)
        importer = std::make_unique<pb::compiler::Importer>(&source_tree, &proto_errors);
      if (mapped_dirs.insert(dir.string()).second)
        source_tree.MapPath("", dir.empty() ? "." : dir.string());
      proto_errors.point_at(&import->path_span, &import->path);
      const pb::FileDescriptor* file = importer->Import(import->path);
      int proto_error_count = proto_errors.count();
      proto_errors.point_at(nullptr);
      if (file == nullptr) {
        if (proto_error_count == 0) {
          Diagnostic& d =
              diagnostics.error(import->path_span, fmt::format("cannot find '{}'", import->path));
          std::string searched;
          for (const auto& p : options.proto_paths) searched += p + ", ";
          DiagnosticEngine::note(
              d, fmt::format("searched the proto path ({}the policy's directory)", searched));
          DiagnosticEngine::help(d, "add the directory holding it with `--proto-path DIR`");
        }
        continue;
      }
      module.protos.push_back(file);
      continue;
    }
    std::string target = (dir / import->path).lexically_normal().string();
    std::error_code ec;
    std::string canonical = std::filesystem::weakly_canonical(target, ec).string();
    if (ec) canonical = target;
    auto in_stack = std::find(import_stack.begin(), import_stack.end(), canonical);
    if (in_stack != import_stack.end()) {
      std::string chain;
      for (auto it = in_stack; it != import_stack.end(); ++it) {
        chain += std::filesystem::path(*it).filename().string() + " -> ";
      }
      chain += std::filesystem::path(canonical).filename().string();
      Diagnostic& d = diagnostics.error(import->path_span, fmt::format("import cycle: {}", chain));
      DiagnosticEngine::help(d, "move what both files need into a third file that both import");
      continue;
    }
    if (import_stack.size() >= limits::kMaxPolicyImportDepth) {
      diagnostics.error(
          import->path_span,
          fmt::format("imports nest deeper than {} files (limits::kMaxPolicyImportDepth)",
                      limits::kMaxPolicyImportDepth));
      continue;
    }
    if (!std::filesystem::is_regular_file(target)) {
      Diagnostic& d = diagnostics.error(
          import->path_span, fmt::format("cannot open imported file '{}'", import->path));
      DiagnosticEngine::note(d, "imports are resolved relative to the importing file's directory");
      continue;
    }
    Module* imported = load(target, std::nullopt, &import->path_span);
    if (imported != nullptr) module.imports.push_back(imported);
  }
}

bool Checker::Impl::check_root(const std::string& path, std::optional<std::string> text) {
  size_t before = diagnostics.error_count();
  Module* module = load(path, std::move(text), nullptr);
  if (module == nullptr) return false;
  if (module->file && !diagnostics.too_many()) check_module(*module);
  return diagnostics.error_count() == before;
}

bool Checker::Impl::check_module(Module& module) {
  if (!module.file || module.checked) return false;
  module.checked = true;
  // What it imports first: an error in an imported policy is reported in its own file.
  for (Module* imported : module.imports) {
    if (!diagnostics.too_many()) check_module(*imported);
  }
  size_t before = diagnostics.error_count();
  ModuleChecker(module, diagnostics, summaries).run();
  return diagnostics.error_count() == before;
}

Checker::Checker(CheckOptions options, dsl::SourceManager& sources, DiagnosticEngine& diagnostics)
    : impl_(std::make_unique<Impl>(std::move(options), sources, diagnostics)) {}

Checker::~Checker() = default;

std::unique_ptr<ir::Unit> Checker::build_ir(const std::string& path) {
  std::error_code ec;
  std::string canonical = std::filesystem::weakly_canonical(path, ec).string();
  if (ec) canonical = path;
  auto found = impl_->modules.find(canonical);
  if (found == impl_->modules.end() || !found->second->file || !found->second->checked ||
      impl_->diagnostics.has_errors()) {
    return nullptr;
  }
  return build_module_ir(*found->second, impl_->diagnostics);
}

bool Checker::check_file(const std::string& path) {
  return impl_->check_root(path, std::nullopt);
}

bool Checker::check_text(const std::string& path, std::string text) {
  return impl_->check_root(path, std::move(text));
}

const std::vector<PolicySummary>& Checker::policies() const {
  return impl_->summaries;
}

}  // namespace mrpc::compiler
