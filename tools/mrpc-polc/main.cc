// mrpc-polc: the .mpol policy compiler's command line.
//   mrpc-polc check FILE.mpol... [--proto-path DIR]... [-j|--json] [--warnings-as-errors]
//   mrpc-polc fmt FILE.mpol
//   mrpc-polc build FILE.mpol [--proto-path DIR]... --emit=ir|llvm|asm   (checks, verifies,
//       prints the IR, or each policy's LLVM module after O2, or its host assembly)
//   mrpc-polc load|attach|upgrade|detach|list|show|metrics ...  against a running mrpcd
//                                                             (daemon_commands.h)
// Exit codes: 0 ok (warnings alone keep 0), 1 errors in the input (warnings too under
// --warnings-as-errors), 2 internal error (a bug in mrpc-polc).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <fstream>
#include <iostream>
#include <sstream>

#include "daemon_commands.h"
#include "mrpc/base/limits.h"
#include "mrpc/compiler/checker.h"
#include "mrpc/compiler/ir.h"
#include "mrpc/compiler/policy_jit.h"
#include "mrpc/compiler/verifier.h"
#include "mrpc/dsl/diagnostics.h"
#include "mrpc/dsl/format.h"
#include "mrpc/dsl/parser.h"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitInputError = 1;
constexpr int kExitInternalError = 2;

void print_diagnostics(const mrpc::dsl::DiagnosticEngine& diagnostics, bool json) {
  if (json) {
    std::cout << diagnostics.render_json() << "\n";
  } else {
    std::cerr << diagnostics.render_text();
  }
}

int run_check(const std::vector<std::string>& files, const std::vector<std::string>& proto_paths,
              bool json, bool warnings_as_errors) {
  mrpc::dsl::SourceManager sources;
  mrpc::dsl::DiagnosticEngine diagnostics(sources);
  diagnostics.set_warnings_as_errors(warnings_as_errors);
  mrpc::compiler::Checker checker({proto_paths}, sources, diagnostics);
  for (const auto& file : files) {
    checker.check_file(file);
    if (diagnostics.too_many()) break;
  }
  print_diagnostics(diagnostics, json);
  return diagnostics.has_errors() ? kExitInputError : kExitOk;
}

// Each policy's LLVM module after O2 (`llvm`) or its assembly for this host (`asm`).
int print_compiled(const mrpc::compiler::ir::Unit& unit, const std::string& emit) {
  auto jit = mrpc::jit::Jit::create();
  if (!jit.ok()) {
    std::cerr << "mrpc-polc: " << jit.status().message() << "\n";
    return kExitInternalError;
  }
  auto compiler = mrpc::compiler::PolicyCompiler::create(**jit);
  if (!compiler.ok()) {
    std::cerr << "mrpc-polc: " << compiler.status().message() << "\n";
    return kExitInternalError;
  }
  for (const auto& policy : unit.policies) {
    auto text = (*compiler)->emit(policy, emit == "asm" ? mrpc::jit::Jit::TextForm::kAssembly
                                                        : mrpc::jit::Jit::TextForm::kOptimizedIr);
    if (!text.ok()) {
      std::cerr << "mrpc-polc: internal error: policy '" << policy.name
                << "': " << text.status().message() << "\n";
      return kExitInternalError;
    }
    std::cout << "; policy " << policy.name << "\n" << *text;
  }
  return kExitOk;
}

// Checks and verifies one file and prints what --emit asks for.
int run_build(const std::string& path, const std::vector<std::string>& proto_paths,
              const std::string& emit, bool json) {
  mrpc::dsl::SourceManager sources;
  mrpc::dsl::DiagnosticEngine diagnostics(sources);
  mrpc::compiler::Checker checker({proto_paths}, sources, diagnostics);
  if (!checker.check_file(path)) {
    print_diagnostics(diagnostics, json);
    return kExitInputError;
  }
  auto unit = checker.build_ir(path);
  if (unit == nullptr) {
    std::cerr << "mrpc-polc: internal error: no IR for a file that checked clean\n";
    return kExitInternalError;
  }
  mrpc::compiler::verify(*unit, diagnostics);
  if (diagnostics.has_errors()) {
    print_diagnostics(diagnostics, json);
    return kExitInputError;
  }
  // The IR goes to stdout: with --json the diagnostics (warnings) object goes to stderr.
  if (json) {
    std::cerr << diagnostics.render_json() << "\n";
  } else {
    std::cerr << diagnostics.render_text();
  }
  if (emit != "ir") return print_compiled(*unit, emit);
  std::cout << mrpc::compiler::ir::dump(*unit);
  return kExitOk;
}

int run_fmt(const std::string& path, bool json) {
  mrpc::dsl::SourceManager sources;
  mrpc::dsl::DiagnosticEngine diagnostics(sources);
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    mrpc::dsl::SourceFile& f = sources.add(path, "");
    diagnostics.error(f.span(0, 0), "cannot open '" + path + "'");
    print_diagnostics(diagnostics, json);
    return kExitInputError;
  }
  std::string text;
  text.resize(mrpc::limits::kMaxPolicyFileBytes + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  const mrpc::dsl::SourceFile& source = sources.add(path, std::move(text));
  auto file = mrpc::dsl::parse_file(source, diagnostics);
  if (!file) {
    print_diagnostics(diagnostics, json);
    return kExitInputError;
  }
  std::cout << mrpc::dsl::format_file(*file);
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mrpc-polc: check, format and build .mpol policies"};
  app.require_subcommand(1);
  app.fallthrough();  // `check x.mpol --error-format=json` as well as before the subcommand
  bool json = false;
  app.add_flag("-j,--json", json, "print diagnostics as JSON (--error-format=json)");
  mrpc::polc::DaemonRequest daemon;
  app.add_option("--socket", daemon.socket,
                 "mrpcd's control socket, for the commands against a running daemon");
  std::string error_format;
  app.add_option("--error-format", error_format, "text (default) or json")
      ->check(CLI::IsMember({"text", "json"}));

  std::vector<std::string> check_files;
  std::vector<std::string> proto_paths;
  CLI::App* check = app.add_subcommand("check", "check policies against their .proto schemas");
  check->add_option("files", check_files, "the .mpol files")->required();
  check->add_option("-I,--proto-path", proto_paths,
                    "a directory searched for imported .proto files");
  check->add_flag("-j,--json", json, "print diagnostics as JSON");
  bool warnings_as_errors = false;
  check->add_flag("--warnings-as-errors", warnings_as_errors,
                  "report every warning as an error (and exit 1 on one)");

  std::string fmt_file;
  CLI::App* fmt = app.add_subcommand("fmt", "print the canonical formatting of a policy file");
  fmt->add_option("file", fmt_file, "the .mpol file")->required();
  fmt->add_flag("-j,--json", json, "print diagnostics as JSON");

  std::string build_file;
  std::string emit = "ir";
  CLI::App* build = app.add_subcommand("build", "check and verify a policy file and print its IR");
  build->add_option("file", build_file, "the .mpol file")->required();
  build->add_option("-I,--proto-path", proto_paths,
                    "a directory searched for imported .proto files");
  build->add_option("--emit", emit, "what to print: ir, llvm (after O2) or asm (this host)")
      ->check(CLI::IsMember({"ir", "llvm", "asm"}));
  build->add_flag("-j,--json", json, "print diagnostics as JSON");

  // Commands against a running daemon.
  auto common = [&](CLI::App* command) {
    command->add_option("--socket", daemon.socket,
                        "mrpcd's control socket (default $MRPC_CONTROL_SOCKET, else "
                        "/run/mrpc/control.sock)");
    command->add_flag("-j,--json", daemon.json, "print the daemon's JSON answer");
    return command;
  };
  CLI::App* load = common(app.add_subcommand("load",
                                             "check, verify and compile a policy file in "
                                             "a running mrpcd; prints its hash"));
  load->add_option("file", daemon.target, "the .mpol file")->required();
  load->add_option("-I,--proto-path", daemon.proto_paths, "a directory of imported .proto files");
  load->add_flag("--dry-run", daemon.dry_run, "check, verify and compile; keep nothing");
  CLI::App* attach = common(app.add_subcommand(
      "attach", "attach a loaded policy (or a .mpol file, loaded first) to the apps' graphs"));
  attach->add_option("policy", daemon.target, "a loaded policy's name, or a .mpol file")
      ->required();
  attach->add_option("params", daemon.params, "NAME=VALUE params (VALUE as JSON or {\"a\",\"b\"})");
  attach->add_option("-p,--param", daemon.params, "NAME=VALUE");
  attach->add_option("-I,--proto-path", daemon.proto_paths, "a directory of imported .proto files");
  attach->add_option("--as", daemon.as, "the name it is attached as (default: the policy's)");
  attach->add_option("--hash", daemon.hash, "which loaded version (default: the newest)");
  attach->add_option("--app", daemon.app, "only the apps that call themselves this");
  attach->add_flag("--first", daemon.first, "first in the graph (default: last)");
  attach->add_option("--before", daemon.before, "just before this attached policy");
  attach->add_option("--after", daemon.after, "just after this attached policy");
  attach->add_flag("--dry-run", daemon.dry_run,
                   "build it and check it against the registered schemas; splice nothing");
  CLI::App* upgrade = common(app.add_subcommand(
      "upgrade", "replace an attached policy by a new version, its state carried"));
  upgrade->add_option("name", daemon.target, "what it is attached as")->required();
  upgrade->add_option("file", daemon.file, "the new version's .mpol file (loaded first)");
  upgrade->add_option("-p,--param", daemon.params, "NAME=VALUE (default: the old params)");
  upgrade->add_option("-I,--proto-path", daemon.proto_paths,
                      "a directory of imported .proto files");
  upgrade->add_option("--hash", daemon.hash, "which loaded version (default: the newest)");
  CLI::App* detach = common(app.add_subcommand("detach", "detach an attached policy"));
  detach->add_option("name", daemon.target, "what it is attached as")->required();
  CLI::App* list = common(app.add_subcommand("list", "loaded files and attached policies"));
  CLI::App* show = common(app.add_subcommand("show", "an attached policy: params, state, calls"));
  show->add_option("name", daemon.target, "what it is attached as")->required();
  CLI::App* metrics =
      common(app.add_subcommand("metrics", "the policies' metrics, Prometheus text format"));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kExitOk : kExitInputError;
  }
  if (error_format == "json") json = true;
  try {
    for (CLI::App* command : {load, attach, upgrade, detach, list, show, metrics}) {
      if (!*command) continue;
      daemon.verb = command->get_name();
      daemon.json = daemon.json || json;
      return mrpc::polc::run_daemon_command(daemon);
    }
    if (*check) return run_check(check_files, proto_paths, json, warnings_as_errors);
    if (*build) return run_build(build_file, proto_paths, emit, json);
    return run_fmt(fmt_file, json);
  } catch (const std::exception& e) {
    std::cerr << "mrpc-polc: internal error: " << e.what() << "\n";
    return kExitInternalError;
  }
}
