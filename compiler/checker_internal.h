// What the checker's files share, private to the compiler: a loaded module, a symbol, and
// ModuleChecker, the type checker for one module's items. ModuleChecker is one class split by
// concern over checker_declarations.cc, checker_types.cc, checker_expressions.cc and
// checker_statements.cc; checker.cc loads the modules and runs one ModuleChecker per module.
// Single-threaded, like the Checker that owns the modules.
#pragma once

#include <google/protobuf/descriptor.h>

#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "mrpc/compiler/checker.h"
#include "mrpc/dsl/ast.h"
#include "mrpc/dsl/diagnostics.h"
#include "types.h"

namespace mrpc::compiler {

namespace ir {
struct Unit;
}

namespace pb = google::protobuf;
using dsl::Diagnostic;
using dsl::DiagnosticEngine;
using dsl::Span;
using K = Type::Kind;

// ---- names and protobuf fields (checker_types.cc) ----

// The status code names (`OK`, `NOT_FOUND`, ...), usable as values of type status.
const std::vector<std::string>& status_names();
bool is_status_name(const std::string& name);
// `int`, `string`, ...: the scalar type of that name, if it is one.
std::optional<Type> scalar_type_named(const std::string& name);
// Every type name, for "did you mean" suggestions.
const std::vector<std::string>& type_names();
// The type of a literal (`1`, `1.5`, `10ms`, `"s"`, `true`), or nothing if `e` is not one.
std::optional<Type> literal_type(const dsl::ast::Expr& e);
// The type of a message field (repeated: a list; map: a map).
Type field_type(const pb::FieldDescriptor* field, bool is_request);

// ---- modules ----

// One loaded .mpol file, owned by Checker::Impl.
struct Module {
  bool checked = false;
  std::string path;  // canonical
  std::optional<dsl::ast::File> file;
  std::vector<const pb::FileDescriptor*> protos;
  std::vector<Module*> imports;
};

struct Symbol {
  enum class Kind {
    kConst,
    kParam,
    kState,
    kLocal,
    kLoopVariable,
    kCallVariable
  } kind = Kind::kLocal;
  Type type;
  Span declared;
  bool is_mutable = false;
  const dsl::ast::Expr* default_value = nullptr;  // a param's default
  std::vector<std::string> labels;                // a labelled counter or histogram's label keys
};

// Everything a module sees: its consts, policies and schemas, and its imports'.
struct Visible {
  std::map<std::string, const dsl::ast::Const*> consts;
  std::vector<const pb::FileDescriptor*> protos;
};

// The type checker for one module's items.
class ModuleChecker {
 public:
  ModuleChecker(Module& module, DiagnosticEngine& diagnostics, std::vector<PolicySummary>& out);

  void run();

 private:
  struct Scope {
    std::vector<std::map<std::string, Symbol>> frames{1};
    // Inside a handler: the events its body runs on (`on response, error` names two); the body
    // must be valid under the rules of every one of them.
    std::vector<dsl::ast::HandlerKind> handlers;
    std::optional<dsl::ast::Placement> placement;
    bool in_marshal = false;
    Type request, response;  // message types of the matched methods
    bool schema_known = false;
    bool sets_priority = false;
  };

  // ---- declarations, scopes, patterns and marshal rules (checker_declarations.cc) ----

  Diagnostic& error(Span span, std::string message);
  void check_consts();
  static bool in_handler(const Scope& scope) { return !scope.handlers.empty(); }
  static bool runs_on(const Scope& scope, dsl::ast::HandlerKind kind);
  static std::optional<dsl::ast::HandlerKind> event_outside(
      const Scope& scope, std::initializer_list<dsl::ast::HandlerKind> allowed);
  const Symbol* lookup(const Scope& scope, const std::string& name);
  void declare(Scope& scope, const std::string& name, Span at, Symbol symbol);
  std::vector<std::string> names_in_scope(const Scope& scope);
  std::vector<const pb::MethodDescriptor*> match(const dsl::ast::Pattern& p);
  void suggest_method(Diagnostic& d, const dsl::ast::Pattern& p);
  std::vector<const pb::MethodDescriptor*> resolve_patterns(
      const std::vector<const dsl::ast::Pattern*>& patterns, Scope& scope);
  void check_policy(const dsl::ast::Policy& policy);
  Type check_state(const dsl::ast::State& st, Scope& scope);
  // `label NAME` options of a counter or histogram: the label keys, in order.
  std::vector<std::string> check_labels(const dsl::ast::State& st);
  Type check_call_variable(const dsl::ast::State& var, Scope& scope);
  std::optional<int64_t> int_or_int_param(const dsl::ast::Expr& e, Scope& scope, const char* what,
                                          std::string& from_param);
  void check_schedule(const dsl::ast::Schedule& sc, Scope& scope);
  void collect_marshal_patterns(const Module& module, std::set<const Module*>& seen);
  void check_marshal_overlap(const dsl::ast::Marshal& marshal);
  void check_marshal(const dsl::ast::Marshal& marshal);

  // ---- types written in the source, compatibility (checker_types.cc) ----

  Type resolve_type(const dsl::ast::Type& t, bool allow_state_kinds);
  Type resolve_type_quiet(const dsl::ast::Type& t, const Type& fallback);
  bool is_int_literal(const dsl::ast::Expr& e);
  bool assignable(const Type& from, const Type& to, const dsl::ast::Expr& e);
  Type check_expr_quiet(const dsl::ast::Expr& e);

  // ---- constants and expressions (checker_expressions.cc) ----

  Type check_constant(const dsl::ast::Expr& e, Scope& scope, std::optional<Type> expected);
  bool is_constant(const dsl::ast::Expr& e, const Scope& scope);
  std::optional<int64_t> const_int(const dsl::ast::Expr& e, int depth = 0);
  std::optional<double> const_number(const dsl::ast::Expr& e);
  std::optional<double> duration_ns(const dsl::ast::Expr& e);
  std::optional<int> enum_value(const dsl::ast::Expr& e);
  bool dotted_name(const dsl::ast::Expr& e, std::string& out, int depth);
  Type check_expr(const dsl::ast::Expr& e, Scope& scope);
  Type check_name(const dsl::ast::Expr& e, Scope& scope);
  Type check_member(const dsl::ast::Expr& e, Scope& scope);
  Type rpc_member(const dsl::ast::Expr& e, Scope& scope);
  Type check_index(const dsl::ast::Expr& e, Scope& scope);
  Type check_binary(const dsl::ast::Expr& e, Scope& scope);
  Type check_call(const dsl::ast::Expr& call, Scope& scope);
  void unify_int_literal(Type& a, const dsl::ast::Expr& a_expr, Type& b,
                         const dsl::ast::Expr& b_expr);

  // ---- statements and actions (checker_statements.cc) ----

  void check_block(const dsl::ast::Block& block, Scope& scope, int loop_depth);
  static bool ends_handler(const dsl::ast::Stmt& s);
  void check_statement(const dsl::ast::Stmt& s, Scope& scope, int loop_depth);
  // `rpc.metadata[key]`: a request header (readable everywhere, writable in `on request`).
  static bool is_metadata_entry(const dsl::ast::Expr& e);
  void expect(const dsl::ast::Expr& e, Scope& scope, const Type& want, const char* what);
  void check_for(const dsl::ast::Stmt& s, Scope& scope, int loop_depth);
  const dsl::ast::Expr* root_of(const dsl::ast::Expr& e);
  void require_state(const dsl::ast::Expr& e, Scope& scope, const char* verb);
  Type check_message_write(const dsl::ast::Expr& target, Scope& scope, const char* verb);
  void check_assignment(const dsl::ast::Stmt& s, Scope& scope);
  void check_expression_statement(const dsl::ast::Expr& e, Scope& scope);
  static bool is_action(const std::string& name);
  void check_args(const dsl::ast::Expr& call, const std::vector<Type>& want, Scope& scope);
  void only_in(const dsl::ast::Expr& call, Scope& scope,
               std::initializer_list<dsl::ast::HandlerKind> kinds);
  void only_at_caller(const dsl::ast::Expr& call, Scope& scope);
  void check_action(const dsl::ast::Expr& call, Scope& scope);
  void check_method_call(const dsl::ast::Expr& call, Scope& scope);
  // The `key = value` label arguments of `c.add(n, ...)` / `observe(h, x, ...)` from argument
  // `first` on: every declared label once, values of a scalar type that prints (string, int,
  // bool, status).
  void check_label_values(const dsl::ast::Expr& call, size_t first, const dsl::ast::Expr& metric,
                          const Symbol& symbol, Scope& scope);

  Module& module_;
  DiagnosticEngine& diagnostics_;
  std::vector<PolicySummary>& summaries_;
  Visible visible_;
  std::vector<const pb::ServiceDescriptor*> services_;
  const pb::DescriptorPool* pool_ = nullptr;
  std::set<std::string> const_in_progress_;
  std::map<std::string, Span> marshal_patterns_;  // pattern text -> first rule with it
  bool const_cycle_ = false;
  // While quiet_ > 0 (typing a const through a reference to it) errors are not reported: the
  // const's own declaration reports them once, in its own file.
  int quiet_ = 0;
  Diagnostic scratch_;
};

// The typed IR of a module that checked clean (ir_builder.cc).
// Warnings (constants that fault) go to `diagnostics`.
std::unique_ptr<ir::Unit> build_module_ir(const Module& module, DiagnosticEngine& diagnostics);

}  // namespace mrpc::compiler
