// The .mpol checker: module loading (imports, protos), pattern resolution, type checking.
#include "mrpc/compiler/checker.h"

#include <fmt/format.h>
#include <google/protobuf/compiler/importer.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>

#include "mrpc/base/limits.h"
#include "mrpc/base/status.h"
#include "mrpc/dsl/ast.h"
#include "mrpc/dsl/format.h"
#include "mrpc/dsl/parser.h"
#include "types.h"

namespace mrpc::compiler {

namespace pb = google::protobuf;
using dsl::Diagnostic;
using dsl::DiagnosticEngine;
using dsl::Span;
using K = Type::Kind;

// ---- types ----

std::string type_name(const Type& t) {
  switch (t.kind) {
    case K::kError:
      return "<error>";
    case K::kVoid:
      return "nothing";
    case K::kInt:
      return "int";
    case K::kFloat:
      return "float";
    case K::kBool:
      return "bool";
    case K::kString:
      return "string";
    case K::kBytes:
      return "bytes";
    case K::kDuration:
      return "duration";
    case K::kTime:
      return "time";
    case K::kStatus:
      return "status";
    case K::kList:
      return "list<" + type_name(t.args[0]) + ">";
    case K::kSet:
      return "set<" + type_name(t.args[0]) + ">";
    case K::kMap:
      return "map<" + type_name(t.args[0]) + ", " + type_name(t.args[1]) + ">";
    case K::kEmptyBraces:
      return "{}";
    case K::kCounter:
      return "counter";
    case K::kHistogram:
      return "histogram";
    case K::kResponse:
      return "response";
    case K::kMessage:
      return t.messages.empty() ? "message" : "message " + t.messages[0]->full_name();
    case K::kRpc:
      return "rpc";
    case K::kCaller:
      return "rpc.caller";
  }
  return "?";
}

bool same_type(const Type& a, const Type& b) {
  if (a.is_error() || b.is_error()) return true;
  if (a.kind == K::kEmptyBraces)
    return b.kind == K::kSet || b.kind == K::kMap || b.kind == K::kEmptyBraces;
  if (b.kind == K::kEmptyBraces) return a.kind == K::kSet || a.kind == K::kMap;
  if (a.kind != b.kind || a.args.size() != b.args.size()) return false;
  for (size_t i = 0; i < a.args.size(); ++i) {
    if (!same_type(a.args[i], b.args[i])) return false;
  }
  if (a.kind == K::kMessage) {
    std::set<std::string> x, y;
    for (auto* d : a.messages) x.insert(d->full_name());
    for (auto* d : b.messages) y.insert(d->full_name());
    return x == y;
  }
  return true;
}

namespace {

const std::vector<std::string>& status_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (uint32_t i = 0; i <= kMaxStatusCode; ++i) {
      out.emplace_back(status_code_name(static_cast<StatusCode>(i)));
    }
    return out;
  }();
  return names;
}

bool is_status_name(const std::string& name) {
  for (const auto& s : status_names()) {
    if (s == name) return true;
  }
  return false;
}

std::optional<Type> scalar_type_named(const std::string& name) {
  static const std::map<std::string, K> scalars = {
      {"int", K::kInt},     {"float", K::kFloat},       {"bool", K::kBool}, {"string", K::kString},
      {"bytes", K::kBytes}, {"duration", K::kDuration}, {"time", K::kTime}, {"status", K::kStatus}};
  auto it = scalars.find(name);
  if (it == scalars.end()) return std::nullopt;
  return Type::of(it->second);
}

const std::vector<std::string>& type_names() {
  static const std::vector<std::string> names = {
      "int",    "float", "bool", "string", "bytes",   "duration",  "time",
      "status", "list",  "set",  "map",    "counter", "histogram", "response"};
  return names;
}

Type field_type(const pb::FieldDescriptor* field, bool is_request);

Type element_type(const pb::FieldDescriptor* field, bool is_request) {
  switch (field->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32:
    case pb::FieldDescriptor::CPPTYPE_INT64:
    case pb::FieldDescriptor::CPPTYPE_UINT32:
    case pb::FieldDescriptor::CPPTYPE_UINT64:
    case pb::FieldDescriptor::CPPTYPE_ENUM:
      return Type::of(K::kInt);
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      return Type::of(K::kFloat);
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      return Type::of(K::kBool);
    case pb::FieldDescriptor::CPPTYPE_STRING:
      return Type::of(field->type() == pb::FieldDescriptor::TYPE_BYTES ? K::kBytes : K::kString);
    case pb::FieldDescriptor::CPPTYPE_MESSAGE: {
      Type t = Type::of(K::kMessage);
      t.messages.push_back(field->message_type());
      t.is_request = is_request;
      return t;
    }
  }
  return Type::of(K::kError);
}

Type field_type(const pb::FieldDescriptor* field, bool is_request) {
  if (field->is_map()) {
    const pb::Descriptor* entry = field->message_type();
    return Type::map(element_type(entry->map_key(), is_request),
                     element_type(entry->map_value(), is_request));
  }
  if (field->is_repeated()) return Type::list(element_type(field, is_request));
  return element_type(field, is_request);
}

std::string read_whole_file(const std::string& path, bool& ok) {
  std::ifstream in(path, std::ios::binary);
  ok = static_cast<bool>(in);
  if (!ok) return {};
  // Read at most one byte past the limit: the parser reports the size; no need to load more.
  std::string text;
  text.resize(limits::kMaxPolicyFileBytes + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  return text;
}

}  // namespace

// ---- modules ----

struct Module {
  bool checked = false;
  std::string path;  // canonical
  std::optional<dsl::ast::File> file;
  std::vector<const pb::FileDescriptor*> protos;
  std::vector<Module*> imports;
};

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

struct Symbol {
  enum class Kind { kConst, kParam, kState, kLocal, kLoopVariable } kind = Kind::kLocal;
  Type type;
  Span declared;
  bool is_mutable = false;
  const dsl::ast::Expr* default_value = nullptr;  // a param's default
};

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
};

namespace {

// Everything a module sees: its consts, policies and schemas, and its imports'.
struct Visible {
  std::map<std::string, const dsl::ast::Const*> consts;
  std::vector<const pb::FileDescriptor*> protos;
};

void collect_visible(const Module& module, Visible& out, std::set<const Module*>& seen) {
  if (!seen.insert(&module).second || !module.file) return;
  for (const auto& item : module.file->items) {
    if (auto* c = std::get_if<dsl::ast::Const>(&item)) out.consts.emplace(c->name, c);
  }
  for (auto* p : module.protos) out.protos.push_back(p);
  for (auto* m : module.imports) collect_visible(*m, out, seen);
}

// The type checker for one module's items.
class ModuleChecker {
 public:
  ModuleChecker(Module& module, DiagnosticEngine& diagnostics, std::vector<PolicySummary>& out)
      : module_(module), diagnostics_(diagnostics), summaries_(out) {
    std::set<const Module*> seen;
    collect_visible(module, visible_, seen);
    for (auto* file : visible_.protos) {
      for (int s = 0; s < file->service_count(); ++s) services_.push_back(file->service(s));
    }
    if (!visible_.protos.empty()) pool_ = visible_.protos[0]->pool();
  }

  void run() {
    check_consts();
    // `marshal` rules of the imported files: one of this file's may collide with them.
    std::set<const Module*> seen = {&module_};
    for (const Module* imported : module_.imports) collect_marshal_patterns(*imported, seen);
    std::map<std::string, Span> policy_names;
    for (auto& item : module_.file->items) {
      if (auto* policy = std::get_if<dsl::ast::Policy>(&item)) {
        auto [it, fresh] = policy_names.emplace(policy->name, policy->name_span);
        if (!fresh) {
          Diagnostic& d =
              error(policy->name_span, fmt::format("policy '{}' is defined twice", policy->name));
          DiagnosticEngine::note(d, "first defined here", it->second);
        }
        check_policy(*policy);
      } else if (auto* marshal = std::get_if<dsl::ast::Marshal>(&item)) {
        check_marshal(*marshal);
        check_marshal_overlap(*marshal);
      }
      if (diagnostics_.too_many()) return;
    }
  }

 private:
  // While quiet_ > 0 (typing a const through a reference to it) errors are not reported: the
  // const's own declaration reports them once, in its own file.
  Diagnostic& error(Span span, std::string message) {
    if (quiet_ > 0) {
      scratch_ = Diagnostic{};
      return scratch_;
    }
    return diagnostics_.error(span, std::move(message));
  }

  // ---- consts ----

  void check_consts() {
    std::map<std::string, Span> seen;
    for (auto& item : module_.file->items) {
      auto* c = std::get_if<dsl::ast::Const>(&item);
      if (c == nullptr) continue;
      auto [it, fresh] = seen.emplace(c->name, c->name_span);
      if (!fresh) {
        Diagnostic& d = error(c->name_span, fmt::format("const '{}' is defined twice", c->name));
        DiagnosticEngine::note(d, "first defined here", it->second);
      }
      Scope scope;
      const_in_progress_ = {c->name};
      const_cycle_ = false;
      Type t = check_constant(
          *c->value, scope, c->type ? std::optional(resolve_type(*c->type, false)) : std::nullopt);
      const_in_progress_.clear();
      if (const_cycle_) {
        error(c->name_span, fmt::format("const '{}' is defined in terms of itself", c->name));
        continue;
      }
      if (!t.is_error() && !t.is_scalar()) {
        error(c->value->span,
              fmt::format("a const must be an int, float, bool, string, duration or status, not {}",
                          type_name(t)));
      }
    }
  }

  // ---- scopes ----

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

  static bool in_handler(const Scope& scope) { return !scope.handlers.empty(); }
  static bool runs_on(const Scope& scope, dsl::ast::HandlerKind kind) {
    return std::find(scope.handlers.begin(), scope.handlers.end(), kind) != scope.handlers.end();
  }
  // The first event of the current handler that is not one of `allowed`, if there is one.
  static std::optional<dsl::ast::HandlerKind> event_outside(
      const Scope& scope, std::initializer_list<dsl::ast::HandlerKind> allowed) {
    for (auto kind : scope.handlers) {
      if (std::find(allowed.begin(), allowed.end(), kind) == allowed.end()) return kind;
    }
    return std::nullopt;
  }

  const Symbol* lookup(const Scope& scope, const std::string& name) {
    for (auto it = scope.frames.rbegin(); it != scope.frames.rend(); ++it) {
      auto found = it->find(name);
      if (found != it->end()) return &found->second;
    }
    return nullptr;
  }

  void declare(Scope& scope, const std::string& name, Span at, Symbol symbol) {
    if (name == "req" || name == "resp" || name == "rpc" || is_status_name(name)) {
      error(at, fmt::format("'{}' is a built-in name and cannot be redeclared", name));
      return;
    }
    if (const Symbol* previous = lookup(scope, name)) {
      Diagnostic& d = error(at, fmt::format("'{}' is already declared", name));
      DiagnosticEngine::note(d, "previous declaration here", previous->declared);
      return;
    }
    symbol.declared = at;
    scope.frames.back().emplace(name, std::move(symbol));
  }

  std::vector<std::string> names_in_scope(const Scope& scope) {
    std::vector<std::string> out = {"req", "resp", "rpc"};
    for (const auto& frame : scope.frames) {
      for (const auto& [name, _] : frame) out.push_back(name);
    }
    for (const auto& [name, _] : visible_.consts) out.push_back(name);
    return out;
  }

  // ---- types written in the source ----

  Type resolve_type(const dsl::ast::Type& t, bool allow_state_kinds) {
    if (auto scalar = scalar_type_named(t.name)) {
      if (!t.args.empty()) error(t.span, fmt::format("type '{}' takes no type arguments", t.name));
      return *scalar;
    }
    auto expect_args = [&](size_t n) {
      if (t.args.size() != n) {
        error(t.span, fmt::format("type '{}' takes {} type argument{}, found {}", t.name, n,
                                  n == 1 ? "" : "s", t.args.size()));
        return false;
      }
      return true;
    };
    auto element = [&](const dsl::ast::Type& arg, bool allow_response) {
      Type e = resolve_type(arg, false);
      if (e.is(K::kResponse) && allow_response) return e;
      if (!e.is_error() && !e.is_scalar()) {
        error(
            arg.span,
            fmt::format("containers hold scalars (int, float, bool, string, bytes, duration, time, "
                        "status){}, not {}",
                        allow_response ? " or response" : "", type_name(e)));
        return Type::of(K::kError);
      }
      return e;
    };
    if (t.name == "list" || t.name == "set") {
      if (!expect_args(1)) return Type::of(K::kError);
      Type e = element(t.args[0], false);
      return t.name == "list" ? Type::list(e) : Type::set(e);
    }
    if (t.name == "map") {
      if (!expect_args(2)) return Type::of(K::kError);
      Type key = element(t.args[0], false);
      Type value = allow_state_kinds && t.args[1].name == "response" && t.args[1].args.empty()
                       ? Type::of(K::kResponse)
                       : element(t.args[1], allow_state_kinds);
      return Type::map(key, value);
    }
    if (t.name == "counter" || t.name == "histogram" || t.name == "response") {
      if (!allow_state_kinds) {
        error(t.span, t.name == "response"
                          ? std::string("'response' is only usable as a state map's value type")
                          : fmt::format("'{}' is only a state type", t.name));
        return Type::of(K::kError);
      }
      expect_args(0);
      return Type::of(t.name == "counter"     ? K::kCounter
                      : t.name == "histogram" ? K::kHistogram
                                              : K::kResponse);
    }
    Diagnostic& d = error(t.span, fmt::format("unknown type '{}'", t.name));
    std::string guess = dsl::closest_name(t.name, type_names());
    if (!guess.empty()) DiagnosticEngine::help(d, fmt::format("did you mean '{}'?", guess));
    return Type::of(K::kError);
  }

  // ---- constants ----

  // Checks a constant expression (literals, consts, status names, unary/binary arithmetic,
  // list/set/map literals of those) against an optional expected type.
  Type check_constant(const dsl::ast::Expr& e, Scope& scope, std::optional<Type> expected) {
    if (!is_constant(e, scope)) {
      error(e.span, "expected a constant expression (literals, consts and arithmetic on them)");
      return Type::of(K::kError);
    }
    Type t = check_expr(e, scope);
    if (expected) {
      if (!assignable(t, *expected, e)) {
        error(e.span, fmt::format("expected {}, found {}", type_name(*expected), type_name(t)));
      }
      return *expected;
    }
    return t;
  }

  bool is_constant(const dsl::ast::Expr& e, const Scope& scope) {
    using EK = dsl::ast::ExprKind;
    switch (e.kind) {
      case EK::kInt:
      case EK::kFloat:
      case EK::kDuration:
      case EK::kString:
      case EK::kBool:
      case EK::kEmptyBraces:
        return true;
      case EK::kName:
        // An unknown name is left to check_expr, which says it is unknown (with a suggestion).
        return visible_.consts.count(e.text) > 0 || is_status_name(e.text) ||
               (lookup(scope, e.text) == nullptr && e.text != "req" && e.text != "resp" &&
                e.text != "rpc");
      case EK::kUnary:
      case EK::kBinary:
      case EK::kList:
      case EK::kSet:
      case EK::kMap:
        for (const auto& c : e.children) {
          if (!is_constant(*c, scope)) return false;
        }
        return true;
      case EK::kMember:
        return enum_value(e).has_value();
      default:
        return false;
    }
  }

  // Integer value of a constant int expression, if it has one.
  std::optional<int64_t> const_int(const dsl::ast::Expr& e, int depth = 0) {
    using EK = dsl::ast::ExprKind;
    if (depth > static_cast<int>(limits::kMaxPolicyNestingDepth)) return std::nullopt;
    switch (e.kind) {
      case EK::kInt:
        return e.int_value;
      case EK::kName: {
        auto it = visible_.consts.find(e.text);
        if (it == visible_.consts.end()) return std::nullopt;
        return const_int(*it->second->value, depth + 1);
      }
      case EK::kUnary: {
        if (e.text != "-") return std::nullopt;
        auto v = const_int(*e.children[0], depth + 1);
        if (!v || *v == INT64_MIN) return std::nullopt;
        return -*v;
      }
      case EK::kBinary: {
        auto a = const_int(*e.children[0], depth + 1), b = const_int(*e.children[1], depth + 1);
        if (!a || !b) return std::nullopt;
        int64_t r = 0;
        if (e.text == "+" && !__builtin_add_overflow(*a, *b, &r)) return r;
        if (e.text == "-" && !__builtin_sub_overflow(*a, *b, &r)) return r;
        if (e.text == "*" && !__builtin_mul_overflow(*a, *b, &r)) return r;
        if (e.text == "/" && *b != 0 && !(*a == INT64_MIN && *b == -1)) return *a / *b;
        return std::nullopt;
      }
      default:
        return std::nullopt;
    }
  }

  // A constant number or duration as a double (durations in ns), for bucket ordering.
  std::optional<double> const_number(const dsl::ast::Expr& e) {
    using EK = dsl::ast::ExprKind;
    if (e.kind == EK::kFloat) return e.float_value;
    if (e.kind == EK::kDuration) return duration_ns(e);
    if (auto v = const_int(e)) return static_cast<double>(*v);
    return std::nullopt;
  }

  std::optional<double> duration_ns(const dsl::ast::Expr& e) {
    static const std::map<std::string, double> unit = {{"ns", 1},  {"us", 1e3}, {"ms", 1e6},
                                                       {"s", 1e9}, {"m", 60e9}, {"h", 3600e9}};
    auto it = unit.find(e.text);
    if (it == unit.end()) return std::nullopt;
    return static_cast<double>(e.int_value) * it->second;
  }

  // `hotel.Kind.SUITE`: an enum value named through its enum type.
  std::optional<int> enum_value(const dsl::ast::Expr& e) {
    std::string path;
    if (!dotted_name(e, path, 0) || pool_ == nullptr) return std::nullopt;
    size_t dot = path.rfind('.');
    if (dot == std::string::npos) return std::nullopt;
    const pb::EnumDescriptor* en = pool_->FindEnumTypeByName(path.substr(0, dot));
    if (en == nullptr) return std::nullopt;
    const pb::EnumValueDescriptor* v = en->FindValueByName(path.substr(dot + 1));
    if (v == nullptr) return std::nullopt;
    return v->number();
  }

  bool dotted_name(const dsl::ast::Expr& e, std::string& out, int depth) {
    if (depth > static_cast<int>(limits::kMaxPolicyNestingDepth)) return false;
    if (e.kind == dsl::ast::ExprKind::kName) {
      out = e.text;
      return true;
    }
    if (e.kind != dsl::ast::ExprKind::kMember || !dotted_name(*e.children[0], out, depth + 1))
      return false;
    out += "." + e.text;
    return true;
  }

  bool is_int_literal(const dsl::ast::Expr& e) {
    return e.kind == dsl::ast::ExprKind::kInt ||
           (e.kind == dsl::ast::ExprKind::kUnary && e.text == "-" &&
            e.children[0]->kind == dsl::ast::ExprKind::kInt);
  }

  // May a value of type `from` (written as `e`) be stored where `to` is expected?
  bool assignable(const Type& from, const Type& to, const dsl::ast::Expr& e) {
    if (same_type(from, to)) return true;
    if (to.is(K::kFloat) && from.is(K::kInt) && is_int_literal(e)) return true;
    // A literal list/set/map of int literals where floats are expected.
    if ((from.is(K::kList) || from.is(K::kSet)) && from.kind == to.kind && !e.children.empty()) {
      for (const auto& c : e.children) {
        if (!assignable(check_expr_quiet(*c), to.args[0], *c)) return false;
      }
      return true;
    }
    if (from.is(K::kResponse) && to.is(K::kResponse)) return true;
    return false;
  }

  Type check_expr_quiet(const dsl::ast::Expr& e) {
    // Element types of literals are scalars of literals: recompute without reporting.
    using EK = dsl::ast::ExprKind;
    switch (e.kind) {
      case EK::kInt:
        return Type::of(K::kInt);
      case EK::kFloat:
        return Type::of(K::kFloat);
      case EK::kDuration:
        return Type::of(K::kDuration);
      case EK::kString:
        return Type::of(K::kString);
      case EK::kBool:
        return Type::of(K::kBool);
      case EK::kUnary:
        return check_expr_quiet(*e.children[0]);
      default:
        return Type::of(K::kError);
    }
  }

  // ---- patterns ----

  std::vector<const pb::MethodDescriptor*> match(const dsl::ast::Pattern& p) {
    std::vector<const pb::MethodDescriptor*> out;
    std::string prefix;
    for (const auto& s : p.segments) prefix += (prefix.empty() ? "" : ".") + s;
    for (auto* service : services_) {
      for (int m = 0; m < service->method_count(); ++m) {
        const pb::MethodDescriptor* method = service->method(m);
        bool hit = false;
        if (!p.wildcard) {
          hit = method->full_name() == prefix;
        } else if (prefix.empty()) {
          hit = true;
        } else {
          // `pkg.*`: every service of package pkg; `pkg.Service.*`: every method of Service.
          hit = service->full_name() == prefix || service->file()->package() == prefix;
        }
        if (hit) out.push_back(method);
      }
    }
    return out;
  }

  void suggest_method(Diagnostic& d, const dsl::ast::Pattern& p) {
    std::vector<std::string> candidates;
    for (auto* service : services_) {
      candidates.push_back(service->full_name());
      for (int m = 0; m < service->method_count(); ++m)
        candidates.push_back(service->method(m)->full_name());
    }
    std::string text = dsl::ast::pattern_text(p);
    std::string base = p.wildcard && text.size() >= 2 ? text.substr(0, text.size() - 2) : text;
    std::string guess = dsl::closest_name(base, candidates);
    if (!guess.empty())
      DiagnosticEngine::help(d, fmt::format("did you mean '{}{}'?", guess, p.wildcard ? ".*" : ""));
  }

  // Resolves patterns; fills the request/response message sets of the scope.
  std::vector<const pb::MethodDescriptor*> resolve_patterns(
      const std::vector<const dsl::ast::Pattern*>& patterns, Scope& scope) {
    std::vector<const pb::MethodDescriptor*> methods;
    scope.schema_known = !visible_.protos.empty();
    if (!scope.schema_known) return methods;
    for (const dsl::ast::Pattern* p : patterns) {
      auto found = match(*p);
      if (found.empty()) {
        Diagnostic& d =
            error(p->span, fmt::format("pattern '{}' matches no method of the imported services",
                                       dsl::ast::pattern_text(*p)));
        suggest_method(d, *p);
      }
      for (auto* m : found) {
        if (std::find(methods.begin(), methods.end(), m) == methods.end()) methods.push_back(m);
      }
    }
    scope.request = Type::of(K::kMessage);
    scope.request.is_request = true;
    scope.response = Type::of(K::kMessage);
    for (auto* m : methods) {
      if (std::find(scope.request.messages.begin(), scope.request.messages.end(),
                    m->input_type()) == scope.request.messages.end()) {
        scope.request.messages.push_back(m->input_type());
      }
      if (std::find(scope.response.messages.begin(), scope.response.messages.end(),
                    m->output_type()) == scope.response.messages.end()) {
        scope.response.messages.push_back(m->output_type());
      }
    }
    if (methods.empty()) scope.schema_known = false;
    return methods;
  }

  // ---- policy ----

  void check_policy(const dsl::ast::Policy& policy) {
    Scope scope;
    const dsl::ast::AppliesTo* applies = nullptr;
    std::map<dsl::ast::HandlerKind, Span> handlers;
    const dsl::ast::Schedule* schedule = nullptr;
    for (const auto& member : policy.members) {
      if (auto* a = std::get_if<dsl::ast::AppliesTo>(&member)) {
        if (applies != nullptr) {
          Diagnostic& d = error(
              a->span, fmt::format("policy '{}' has more than one `applies to`", policy.name));
          DiagnosticEngine::note(d, "first `applies to` here", applies->span);
          DiagnosticEngine::help(d, "list every pattern in one `applies to`, separated by commas");
        } else {
          applies = a;
        }
      }
    }
    PolicySummary summary;
    summary.name = policy.name;
    if (applies == nullptr) {
      Diagnostic& d =
          error(policy.name_span, fmt::format("policy '{}' has no `applies to`", policy.name));
      DiagnosticEngine::help(d, "add `applies to pkg.Service.* at callee;`");
    } else {
      std::vector<const dsl::ast::Pattern*> patterns;
      for (const auto& p : applies->patterns) patterns.push_back(&p);
      for (auto* m : resolve_patterns(patterns, scope)) summary.methods.push_back(m->full_name());
      scope.placement = applies->placement;
    }
    // Declarations first (handlers may use any of them), in source order.
    for (const auto& member : policy.members) {
      if (auto* p = std::get_if<dsl::ast::Param>(&member)) {
        Type t = resolve_type(p->type, false);
        if (!t.is_error() && !t.is_scalar() && !t.is(K::kList) && !t.is(K::kSet) &&
            !t.is(K::kMap)) {
          error(p->type.span, fmt::format("a param cannot be a {}", type_name(t)));
        }
        check_constant(*p->default_value, scope, t);
        Symbol s;
        s.kind = Symbol::Kind::kParam;
        s.type = t;
        s.default_value = p->default_value.get();
        declare(scope, p->name, p->name_span, s);
      } else if (auto* st = std::get_if<dsl::ast::State>(&member)) {
        Symbol s;
        s.kind = Symbol::Kind::kState;
        s.type = check_state(*st, scope);
        s.is_mutable = true;
        declare(scope, st->name, st->name_span, s);
      } else if (auto* sc = std::get_if<dsl::ast::Schedule>(&member)) {
        if (schedule != nullptr) {
          Diagnostic& d = error(sc->span, "more than one `schedule`");
          DiagnosticEngine::note(d, "first `schedule` here", schedule->span);
        }
        schedule = sc;
        check_schedule(*sc, scope);
      }
    }
    for (const auto& member : policy.members) {
      if (auto* h = std::get_if<dsl::ast::Handler>(&member)) {
        // Each event has at most one handler, counting every name of `on response, error`.
        for (size_t i = 0; i < h->kinds.size(); ++i) {
          auto [it, fresh] = handlers.emplace(h->kinds[i], h->kind_spans[i]);
          if (!fresh) {
            Diagnostic& d = error(h->kind_spans[i],
                                  fmt::format("policy '{}' has two `on {}` handlers", policy.name,
                                              dsl::ast::handler_kind_name(h->kinds[i])));
            DiagnosticEngine::note(d, "first handler here", it->second);
          }
        }
        scope.handlers = h->kinds;
        scope.frames.emplace_back();
        check_block(h->body, scope, 0);
        scope.frames.pop_back();
        scope.handlers.clear();
      }
    }
    if (schedule != nullptr && !scope.sets_priority) {
      Diagnostic& d =
          error(schedule->span, "`schedule` in a policy that never sets `rpc.priority`");
      DiagnosticEngine::help(d, "set `rpc.priority = N;` in `on request`, or remove the schedule");
    }
    summaries_.push_back(std::move(summary));
  }

  Type check_state(const dsl::ast::State& st, Scope& scope) {
    Type t = resolve_type(st.type, true);
    if (t.is_error()) return t;
    if (st.initial) {
      if (t.is_scalar()) {
        check_constant(*st.initial, scope, t);
      } else {
        Diagnostic& d =
            error(st.initial->span,
                  fmt::format("state of type {} cannot have an initial value", type_name(t)));
        DiagnosticEngine::note(d,
                               "only scalar state has one; containers and histograms start empty, "
                               "counters at 0");
      }
    }
    auto no_args = [&]() {
      if (!st.args.empty()) {
        error(st.args[0].value->span,
              fmt::format("state of type {} takes no `[...]` options", type_name(t)));
      }
    };
    if (t.is_scalar() || t.is(K::kCounter)) {
      no_args();
      return t;
    }
    if (t.is(K::kResponse)) {
      error(st.type.span, "a `response` is stored only as the value of a state map");
      return Type::of(K::kError);
    }
    if (t.is(K::kList)) {
      Diagnostic& d = error(st.type.span, "state cannot be a list");
      DiagnosticEngine::help(d, "use a set<T> or map<K, V> with a capacity and an eviction rule");
      return Type::of(K::kError);
    }
    if (t.is(K::kHistogram)) {
      if (st.args.empty()) {
        Diagnostic& d =
            error(st.span, fmt::format("histogram '{}' needs its bucket bounds", st.name));
        DiagnosticEngine::help(d, "write `histogram[1ms, 5ms, 10ms]`");
        return t;
      }
      std::optional<double> previous;
      std::optional<bool> durations;
      for (const auto& arg : st.args) {
        if (!arg.key.empty()) {
          error(arg.key_span, "histogram options are bucket bounds only");
          continue;
        }
        Type b = check_expr(*arg.value, scope);
        auto value = const_number(*arg.value);
        if (!value || !(b.is_number() || b.is(K::kDuration))) {
          error(arg.value->span, "a bucket bound must be a constant number or duration");
          continue;
        }
        bool is_duration = b.is(K::kDuration);
        if (durations && *durations != is_duration) {
          error(arg.value->span, "bucket bounds must be all durations or all numbers");
          continue;
        }
        durations = is_duration;
        if (previous && *value <= *previous) {
          error(arg.value->span, "bucket bounds must be strictly increasing");
        }
        previous = value;
      }
      return t;
    }
    // map / set: bounded containers.
    bool has_capacity = false;
    for (const auto& arg : st.args) {
      if (arg.key == "capacity") {
        has_capacity = true;
        std::string from_param;
        auto n = int_or_int_param(*arg.value, scope, "capacity", from_param);
        if (n && (*n < 1 || *n > limits::kMaxContainerCapacity)) {
          error(arg.value->span,
                fmt::format("capacity {}{} is outside 1..{} (limits::kMaxContainerCapacity)", *n,
                            from_param, limits::kMaxContainerCapacity));
        }
      } else if (arg.key == "evict") {
        const auto& v = *arg.value;
        if (v.kind != dsl::ast::ExprKind::kName ||
            (v.text != "lru" && v.text != "fifo" && v.text != "reject")) {
          Diagnostic& d =
              error(v.span, fmt::format("unknown eviction rule '{}'", dsl::format_expr(v)));
          DiagnosticEngine::help(d, "eviction rules are `lru`, `fifo` and `reject`");
        }
      } else {
        Span at = arg.key.empty() ? arg.value->span : arg.key_span;
        Diagnostic& d =
            error(at, fmt::format("unknown container option '{}'",
                                  arg.key.empty() ? dsl::format_expr(*arg.value) : arg.key));
        std::string guess = dsl::closest_name(arg.key, {"capacity", "evict"});
        if (!guess.empty()) DiagnosticEngine::help(d, fmt::format("did you mean '{}'?", guess));
      }
    }
    if (!has_capacity) {
      Diagnostic& d =
          error(st.name_span, fmt::format("state container '{}' has no capacity", st.name));
      DiagnosticEngine::help(d, fmt::format("bound it: `state {}: {}[capacity 10000, evict lru];`",
                                            st.name, dsl::format_type(st.type)));
    }
    if (t.is(K::kMap) && t.args[1].is(K::kResponse) && scope.schema_known) {
      std::set<std::string> outputs;
      for (auto* d : scope.response.messages) outputs.insert(d->full_name());
      if (outputs.size() > 1) {
        Diagnostic& d =
            error(st.type.span, "map<K, response> needs all matched methods to return one type");
        DiagnosticEngine::note(
            d, fmt::format("the matched methods return {} different types", outputs.size()));
      }
    }
    return t;
  }

  // A container capacity or a schedule weight: a constant int, or an int param. A param is
  // checked here on its default (`from_param` then names it) and by the daemon on the value given
  // at attach time. Returns the value to range-check, or nothing after an error.
  std::optional<int64_t> int_or_int_param(const dsl::ast::Expr& e, Scope& scope, const char* what,
                                          std::string& from_param) {
    Type t = check_expr(e, scope);
    if (t.is_error()) return std::nullopt;
    if (auto n = const_int(e)) return n;
    const Symbol* sym = e.kind == dsl::ast::ExprKind::kName ? lookup(scope, e.text) : nullptr;
    if (sym != nullptr && sym->kind == Symbol::Kind::kParam && t.is(K::kInt) &&
        sym->default_value != nullptr) {
      from_param = fmt::format(" (the default of param '{}')", e.text);
      return const_int(*sym->default_value);
    }
    std::string found = sym != nullptr && sym->kind == Symbol::Kind::kParam
                            ? fmt::format("a {} param", type_name(t))
                        : t.is(K::kInt) ? std::string("an int computed at run time")
                                        : type_name(t);
    error(e.span, fmt::format("{} must be a constant int or an int param, found {}", what, found));
    return std::nullopt;
  }

  void check_schedule(const dsl::ast::Schedule& sc, Scope& scope) {
    if (sc.kind == "strict") {
      if (!sc.weights.empty()) error(sc.weights[0]->span, "`schedule strict` takes no weights");
    } else if (sc.kind == "weighted") {
      if (sc.weights.empty()) {
        Diagnostic& d = error(sc.span, "`schedule weighted` needs one weight per priority class");
        DiagnosticEngine::help(d, "write `schedule weighted [4, 2, 1];`");
      }
      for (const auto& w : sc.weights) {
        std::string from_param;
        auto n = int_or_int_param(*w, scope, "a weight", from_param);
        if (n && *n < 1) error(w->span, fmt::format("weight {}{} is not positive", *n, from_param));
      }
    } else {
      Diagnostic& d = error(sc.kind_span, fmt::format("unknown schedule '{}'", sc.kind));
      DiagnosticEngine::help(d, "schedules are `strict` and `weighted [w0, w1, ...]`");
    }
  }

  // ---- marshal ----

  void collect_marshal_patterns(const Module& module, std::set<const Module*>& seen) {
    if (!seen.insert(&module).second || !module.file) return;
    for (const auto& item : module.file->items) {
      if (auto* m = std::get_if<dsl::ast::Marshal>(&item))
        marshal_patterns_.emplace(dsl::ast::pattern_text(m->pattern), m->pattern.span);
    }
    for (const Module* imported : module.imports) collect_marshal_patterns(*imported, seen);
  }

  // When several rules match a method the most specific wins: the exact method, then
  // `Service.*`, then `package.*`, then `*`. For one method and one of those levels the pattern
  // is a single text, so two rules of equal specificity that match one method are two rules with
  // the same pattern.
  void check_marshal_overlap(const dsl::ast::Marshal& marshal) {
    std::string text = dsl::ast::pattern_text(marshal.pattern);
    auto [it, fresh] = marshal_patterns_.emplace(text, marshal.pattern.span);
    if (fresh) return;
    Diagnostic& d = error(
        marshal.pattern.span,
        fmt::format("two `marshal {}` rules: equally specific rules cannot both apply", text));
    DiagnosticEngine::note(d, "the other rule is here", it->second);
    DiagnosticEngine::help(d, "merge them into one rule, or make one more specific");
  }

  void check_marshal(const dsl::ast::Marshal& marshal) {
    Scope scope;
    scope.in_marshal = true;
    resolve_patterns({&marshal.pattern}, scope);
    for (const auto& rule : marshal.rules) {
      if (rule.kind == dsl::ast::MarshalRule::Kind::kPeer && rule.peer_glob.empty()) {
        error(rule.span, "a peer glob cannot be empty");
      }
      if (rule.kind == dsl::ast::MarshalRule::Kind::kRedact) {
        const dsl::ast::Expr* e = rule.path.get();
        while (e->kind == dsl::ast::ExprKind::kMember) e = e->children[0].get();
        if (e->kind != dsl::ast::ExprKind::kName || (e->text != "req" && e->text != "resp") ||
            rule.path->kind != dsl::ast::ExprKind::kMember) {
          error(rule.path->span, "`redact` takes a field path: `req.a.b` or `resp.a.b`");
          continue;
        }
        Type t = check_expr(*rule.path, scope);
        if (t.is(K::kMessage))
          error(rule.path->span,
                "`redact` clears a field, not a whole message: name a field inside it");
      }
    }
  }

  // ---- statements ----

  void check_block(const dsl::ast::Block& block, Scope& scope, int loop_depth) {
    scope.frames.emplace_back();
    const dsl::ast::Stmt* ended_by = nullptr;
    bool warned = false;
    for (const auto& stmt : block.statements) {
      if (ended_by != nullptr && !warned) {
        // Once per block: the first statement after the handler's end.
        warned = true;
        Diagnostic& d = diagnostics_.warning(stmt->span, "unreachable statement");
        DiagnosticEngine::note(d, "the handler ends here", ended_by->span);
      }
      check_statement(*stmt, scope, loop_depth);
      if (ended_by == nullptr && ends_handler(*stmt)) ended_by = stmt.get();
      if (diagnostics_.too_many()) break;
    }
    scope.frames.pop_back();
  }

  // `pass`, `drop`, `reject(...)` and `respond(...)` end the handler (the call is decided); so
  // does an `if` with an `else` whose every branch ends it. Nothing else does (`delay`, `route`,
  // `mirror`, `retry`, `log`, assignments continue; a `for` body may run zero times).
  static bool ends_handler(const dsl::ast::Stmt& s) {
    using SK = dsl::ast::StmtKind;
    switch (s.kind) {
      case SK::kPass:
      case SK::kDrop:
        return true;
      case SK::kExpr: {
        const auto& e = *s.exprs[0];
        return e.kind == dsl::ast::ExprKind::kCall &&
               e.children[0]->kind == dsl::ast::ExprKind::kName &&
               (e.children[0]->text == "reject" || e.children[0]->text == "respond");
      }
      case SK::kIf: {
        if (s.blocks.size() <= s.exprs.size()) return false;  // no `else`
        for (const auto& b : s.blocks) {
          bool ends = false;
          for (const auto& inner : b.statements) ends = ends || ends_handler(*inner);
          if (!ends) return false;
        }
        return true;
      }
      default:
        return false;
    }
  }

  void check_statement(const dsl::ast::Stmt& s, Scope& scope, int loop_depth) {
    using SK = dsl::ast::StmtKind;
    switch (s.kind) {
      case SK::kLet: {
        Type t = check_expr(*s.exprs[0], scope);
        if (s.type) {
          Type declared = resolve_type(*s.type, false);
          if (!assignable(t, declared, *s.exprs[0])) {
            error(s.exprs[0]->span,
                  fmt::format("expected {}, found {}", type_name(declared), type_name(t)));
          }
          t = declared;
        } else if (t.is(K::kVoid)) {
          error(s.exprs[0]->span, "this expression has no value");
        } else if (t.is(K::kEmptyBraces)) {
          error(s.exprs[0]->span, "the type of `{}` is unknown here: write `let x: set<T> = {};`");
        }
        Symbol sym;
        sym.kind = Symbol::Kind::kLocal;
        sym.type = t;
        sym.is_mutable = s.is_mutable;
        declare(scope, s.name, s.name_span, sym);
        return;
      }
      case SK::kAssign:
        check_assignment(s, scope);
        return;
      case SK::kRemove: {
        const auto& e = *s.exprs[0];
        if (e.kind != dsl::ast::ExprKind::kIndex) {
          error(e.span, "`remove` takes a state map entry: `remove m[key];`");
          return;
        }
        Type container = check_expr(*e.children[0], scope);
        Type key = check_expr(*e.children[1], scope);
        require_state(*e.children[0], scope, "remove from");
        if (!container.is_error() && !container.is(K::kMap)) {
          error(e.children[0]->span,
                fmt::format("`remove` needs a map, found {}", type_name(container)));
        } else if (container.is(K::kMap) && !assignable(key, container.args[0], *e.children[1])) {
          error(e.children[1]->span, fmt::format("key must be {}, found {}",
                                                 type_name(container.args[0]), type_name(key)));
        }
        return;
      }
      case SK::kClear: {
        const auto& e = *s.exprs[0];
        check_message_write(e, scope, "clear");
        return;
      }
      case SK::kIf:
        for (const auto& cond : s.exprs)
          expect(*cond, scope, Type::of(K::kBool), "an `if` condition");
        for (const auto& b : s.blocks) check_block(b, scope, loop_depth);
        return;
      case SK::kFor:
        check_for(s, scope, loop_depth);
        return;
      case SK::kPass:
        return;
      case SK::kDrop:
        if (runs_on(scope, dsl::ast::HandlerKind::kError)) {
          error(s.span, "`drop` is not allowed in `on error`: the call has already failed");
        }
        return;
      case SK::kExpr:
        check_expression_statement(*s.exprs[0], scope);
        return;
    }
  }

  void expect(const dsl::ast::Expr& e, Scope& scope, const Type& want, const char* what) {
    Type t = check_expr(e, scope);
    if (!assignable(t, want, e)) {
      error(e.span, fmt::format("{} must be {}, found {}", what, type_name(want), type_name(t)));
    }
  }

  void check_for(const dsl::ast::Stmt& s, Scope& scope, int loop_depth) {
    Type element;
    if (s.exprs.size() == 2) {
      check_expr(*s.exprs[0], scope);
      check_expr(*s.exprs[1], scope);
      auto low = const_int(*s.exprs[0]), high = const_int(*s.exprs[1]);
      if (!low || !high) {
        Diagnostic& d =
            error(!low ? s.exprs[0]->span : s.exprs[1]->span, "range bounds must be constant ints");
        DiagnosticEngine::note(
            d, "a loop over a computed range could run unbounded; loop over a field or list");
      } else if (*high < *low || static_cast<uint64_t>(*high) - static_cast<uint64_t>(*low) >
                                     static_cast<uint64_t>(limits::kMaxRangeIterations)) {
        error(s.exprs[1]->span,
              fmt::format("range {}..{} has more than {} iterations (limits::kMaxRangeIterations)",
                          *low, *high, limits::kMaxRangeIterations));
      }
      element = Type::of(K::kInt);
    } else {
      Type t = check_expr(*s.exprs[0], scope);
      if (t.is(K::kList) || t.is(K::kSet)) {
        element = t.args[0];
      } else if (!t.is_error()) {
        Diagnostic& d = error(s.exprs[0]->span, fmt::format("cannot loop over {}", type_name(t)));
        DiagnosticEngine::note(
            d, "`for` runs over a repeated field, a list or set, or a constant range `A..B`");
        element = Type::of(K::kError);
      }
    }
    scope.frames.emplace_back();
    Symbol sym;
    sym.kind = Symbol::Kind::kLoopVariable;
    sym.type = element;
    declare(scope, s.name, s.name_span, sym);
    check_block(s.blocks[0], scope, loop_depth + 1);
    scope.frames.pop_back();
  }

  // The root name of a field path (`req` in req.a.b[0].c), or null.
  const dsl::ast::Expr* root_of(const dsl::ast::Expr& e) {
    const dsl::ast::Expr* p = &e;
    while (p->kind == dsl::ast::ExprKind::kMember || p->kind == dsl::ast::ExprKind::kIndex)
      p = p->children[0].get();
    return p->kind == dsl::ast::ExprKind::kName ? p : nullptr;
  }

  void require_state(const dsl::ast::Expr& e, Scope& scope, const char* verb) {
    if (e.kind != dsl::ast::ExprKind::kName) return;
    const Symbol* s = lookup(scope, e.text);
    if (s != nullptr && s->kind != Symbol::Kind::kState) {
      error(e.span, fmt::format("cannot {} '{}': only state containers change", verb, e.text));
    }
  }

  // `req.x = ...` / `clear req.x`: the handler kind decides which message may change.
  Type check_message_write(const dsl::ast::Expr& target, Scope& scope, const char* verb) {
    const dsl::ast::Expr* root = root_of(target);
    bool is_map_entry = target.kind == dsl::ast::ExprKind::kIndex && std::string(verb) != "clear";
    if (root == nullptr || (root->text != "req" && root->text != "resp") ||
        (target.kind != dsl::ast::ExprKind::kMember && !is_map_entry)) {
      error(target.span,
            fmt::format("`{}` takes a message field: `req.field` or `resp.field`", verb));
      return Type::of(K::kError);
    }
    if (is_map_entry) {
      Type container = check_expr(*target.children[0], scope);
      if (!container.is_error() && !container.is(K::kMap)) {
        error(target.span,
              fmt::format("only a map field's entries can be assigned by key, not a {}'s",
                          type_name(container)));
        return Type::of(K::kError);
      }
    }
    Type t = check_expr(target, scope);
    auto other = event_outside(scope, {dsl::ast::HandlerKind::kRequest});
    if (root->text == "req" && other) {
      Diagnostic& d = error(target.span, fmt::format("cannot {} the request in `on {}`", verb,
                                                     dsl::ast::handler_kind_name(*other)));
      DiagnosticEngine::note(d, "the request can only change in `on request`, before it is sent");
    }
    if (t.is(K::kMessage) && std::string(verb) != "clear") {
      error(target.span, "cannot assign a whole message: assign its fields");
    }
    return t;
  }

  void check_assignment(const dsl::ast::Stmt& s, Scope& scope) {
    const auto& target = *s.exprs[0];
    const auto& value = *s.exprs[1];
    Type target_type;
    const dsl::ast::Expr* root = root_of(target);
    if (root != nullptr && (root->text == "req" || root->text == "resp")) {
      target_type = check_message_write(target, scope, "assign to");
      if (target_type.is(K::kList) || target_type.is(K::kMap)) {
        error(target.span, "cannot assign a repeated or map field as a whole");
        return;
      }
    } else if (root != nullptr && root->text == "rpc") {
      target_type = check_expr(target, scope);
      bool writable = target.kind == dsl::ast::ExprKind::kMember &&
                      target.children[0]->kind == dsl::ast::ExprKind::kName &&
                      (target.text == "priority" || target.text == "deadline");
      if (!writable) {
        Diagnostic& d =
            error(target.span, fmt::format("'{}' is read-only", dsl::format_expr(target)));
        DiagnosticEngine::note(d, "a policy may set `rpc.priority` and `rpc.deadline` only");
        return;
      }
      if (!in_handler(scope) || event_outside(scope, {dsl::ast::HandlerKind::kRequest})) {
        error(target.span,
              fmt::format("`{}` can only be set in `on request`", dsl::format_expr(target)));
      }
      if (target.text == "priority") scope.sets_priority = true;
    } else if (target.kind == dsl::ast::ExprKind::kName) {
      target_type = check_expr(target, scope);
      const Symbol* sym = lookup(scope, target.text);
      if (sym == nullptr) {
        if (visible_.consts.count(target.text) > 0)
          error(target.span, fmt::format("cannot assign to const '{}'", target.text));
        return;
      }
      switch (sym->kind) {
        case Symbol::Kind::kParam: {
          Diagnostic& d =
              error(target.span, fmt::format("cannot assign to param '{}'", target.text));
          DiagnosticEngine::note(d, "params are set when the policy is attached and are read-only");
          return;
        }
        case Symbol::Kind::kLoopVariable:
          error(target.span, fmt::format("cannot assign to loop variable '{}'", target.text));
          return;
        case Symbol::Kind::kLocal:
          if (!sym->is_mutable) {
            Diagnostic& d =
                error(target.span, fmt::format("cannot assign twice to '{}'", target.text));
            DiagnosticEngine::note(d, "declared with `let` here", sym->declared);
            DiagnosticEngine::help(
                d, fmt::format("declare it with `var {}` to change it", target.text));
            return;
          }
          break;
        case Symbol::Kind::kState:
          if (!target_type.is_scalar() && !target_type.is(K::kCounter)) {
            error(target.span, fmt::format("cannot assign to state '{}' of type {} as a whole",
                                           target.text, type_name(target_type)));
            return;
          }
          break;
        case Symbol::Kind::kConst:
          break;
      }
    } else if (target.kind == dsl::ast::ExprKind::kIndex) {
      target_type = check_expr(target, scope);
      const auto& container = *target.children[0];
      require_state(container, scope, "assign into");
      if (container.kind != dsl::ast::ExprKind::kName) {
        error(target.span, "only a state map entry can be assigned by key: `m[key] = v;`");
        return;
      }
    } else {
      check_expr(target, scope);
      error(target.span, "cannot assign to this expression");
      return;
    }
    Type v = check_expr(value, scope);
    if (target_type.is(K::kCounter)) {
      if (s.op != "+=") {
        Diagnostic& d = error(target.span, "a counter only goes up: use `+=`");
        DiagnosticEngine::help(d, "for a value that goes up and down use an `int` state");
      }
      if (!assignable(v, Type::of(K::kInt), value)) {
        error(value.span, fmt::format("a counter is bumped by an int, found {}", type_name(v)));
      }
      return;
    }
    if (s.op != "=") {
      if (!target_type.is_error() && !target_type.is_number() && !target_type.is(K::kDuration) &&
          !target_type.is(K::kTime) && !(s.op == "+=" && target_type.is(K::kString))) {
        error(target.span, fmt::format("`{}` needs a number, duration or time, found {}", s.op,
                                       type_name(target_type)));
        return;
      }
      Type want = target_type.is(K::kTime) ? Type::of(K::kDuration) : target_type;
      if (!assignable(v, want, value)) {
        error(value.span, fmt::format("expected {}, found {}", type_name(want), type_name(v)));
      }
      return;
    }
    if (target_type.is(K::kResponse) && !(v.is(K::kMessage) && !v.is_request) &&
        !v.is(K::kResponse) && !v.is_error()) {
      error(value.span, fmt::format("a response map stores `resp`, found {}", type_name(v)));
      return;
    }
    if (target_type.is(K::kResponse)) return;
    if (!assignable(v, target_type, value)) {
      error(value.span, fmt::format("expected {}, found {}", type_name(target_type), type_name(v)));
    }
  }

  // ---- actions and calls used as statements ----

  void check_expression_statement(const dsl::ast::Expr& e, Scope& scope) {
    if (e.kind != dsl::ast::ExprKind::kCall) {
      check_expr(e, scope);
      Diagnostic& d = error(e.span, "this expression does nothing");
      DiagnosticEngine::note(
          d,
          "a statement is an action (`reject(...)`, `log(...)`, ...), an assignment, "
          "`let`/`var`, `if` or `for`");
      return;
    }
    const auto& callee = *e.children[0];
    if (callee.kind == dsl::ast::ExprKind::kMember) {
      check_method_call(e, scope);
      return;
    }
    if (callee.kind == dsl::ast::ExprKind::kName && is_action(callee.text)) {
      check_action(e, scope);
      return;
    }
    Type t = check_expr(e, scope);
    if (!t.is_error()) {
      error(e.span, fmt::format("the result of '{}' is unused", dsl::format_expr(callee)));
    }
  }

  static bool is_action(const std::string& name) {
    static const std::set<std::string> actions = {"reject",  "delay", "route", "mirror",
                                                  "respond", "retry", "log",   "observe"};
    return actions.count(name) > 0;
  }

  void check_args(const dsl::ast::Expr& call, const std::vector<Type>& want, Scope& scope) {
    size_t given = call.children.size() - 1;
    const std::string& name = call.children[0]->text;
    if (given != want.size()) {
      error(call.span, fmt::format("'{}' takes {} argument{}, found {}", name, want.size(),
                                   want.size() == 1 ? "" : "s", given));
    }
    for (size_t i = 0; i < given; ++i) {
      const auto& arg = *call.children[i + 1];
      if (!call.arg_names[i].empty())
        error(arg.span, fmt::format("'{}' takes no named arguments", name));
      Type t = check_expr(arg, scope);
      if (i < want.size() && !assignable(t, want[i], arg)) {
        error(arg.span, fmt::format("argument {} of '{}' must be {}, found {}", i + 1, name,
                                    type_name(want[i]), type_name(t)));
      }
    }
  }

  void only_in(const dsl::ast::Expr& call, Scope& scope,
               std::initializer_list<dsl::ast::HandlerKind> kinds) {
    auto other = event_outside(scope, kinds);
    if (!other) return;
    std::string allowed;
    for (auto k : kinds)
      allowed +=
          fmt::format("{}`on {}`", allowed.empty() ? "" : " or ", dsl::ast::handler_kind_name(k));
    Diagnostic& d = error(call.children[0]->span,
                          fmt::format("'{}' is not allowed in `on {}`", call.children[0]->text,
                                      dsl::ast::handler_kind_name(*other)));
    DiagnosticEngine::note(d,
                           fmt::format("'{}' is allowed in {}", call.children[0]->text, allowed));
  }

  // `route`, `mirror` and `retry` choose or repeat where a call goes: only the caller's daemon
  // can. (`respond` is allowed at both placements.)
  void only_at_caller(const dsl::ast::Expr& call, Scope& scope) {
    if (scope.placement != dsl::ast::Placement::kCallee) return;
    const std::string& name = call.children[0]->text;
    Diagnostic& d = error(call.children[0]->span,
                          fmt::format("'{}' is not allowed in a policy `at callee`", name));
    DiagnosticEngine::note(
        d, "only the caller's daemon chooses where a call goes, copies it or sends it again");
    DiagnosticEngine::help(d, "place the policy `at caller`");
  }

  void check_action(const dsl::ast::Expr& call, Scope& scope) {
    using HK = dsl::ast::HandlerKind;
    const std::string& name = call.children[0]->text;
    if (name == "reject") {
      check_args(call, {Type::of(K::kStatus), Type::of(K::kString)}, scope);
      if (call.children.size() > 1 && call.children[1]->kind == dsl::ast::ExprKind::kName &&
          call.children[1]->text == "OK") {
        error(call.children[1]->span, "reject with OK: use `pass;` to let the call go on");
      }
    } else if (name == "delay") {
      check_args(call, {Type::of(K::kDuration)}, scope);
    } else if (name == "route") {
      only_in(call, scope, {HK::kRequest});
      only_at_caller(call, scope);
      check_args(call, {Type::of(K::kString)}, scope);
    } else if (name == "mirror") {
      only_in(call, scope, {HK::kRequest});
      only_at_caller(call, scope);
      check_args(call, {Type::of(K::kString), Type::of(K::kFloat)}, scope);
    } else if (name == "respond") {
      only_in(call, scope, {HK::kRequest});
      check_args(call, {Type::of(K::kResponse)}, scope);
    } else if (name == "retry") {
      only_in(call, scope, {HK::kError});
      only_at_caller(call, scope);
      check_args(call, {Type::of(K::kDuration)}, scope);
    } else if (name == "observe") {
      if (call.children.size() != 3) {
        error(call.span, "'observe' takes 2 arguments: a histogram and a value");
        return;
      }
      Type h = check_expr(*call.children[1], scope);
      Type v = check_expr(*call.children[2], scope);
      if (!h.is_error() && !h.is(K::kHistogram)) {
        error(call.children[1]->span,
              fmt::format("argument 1 of 'observe' must be a histogram, found {}", type_name(h)));
      }
      if (!v.is_error() && !v.is_number() && !v.is(K::kDuration)) {
        error(call.children[2]->span,
              fmt::format("argument 2 of 'observe' must be a number or duration, found {}",
                          type_name(v)));
      }
    } else if (name == "log") {
      if (call.children.size() < 2) {
        error(call.span, "'log' takes an event name first: `log(\"event\", key = value, ...)`");
        return;
      }
      if (!call.arg_names[0].empty())
        error(call.children[1]->span, "the event name comes first, unnamed");
      expect(*call.children[1], scope, Type::of(K::kString), "the event name");
      std::set<std::string> keys;
      for (size_t i = 2; i < call.children.size(); ++i) {
        const auto& arg = *call.children[i];
        Type t = check_expr(arg, scope);
        if (call.arg_names[i - 1].empty()) {
          Diagnostic& d = error(arg.span, "log fields are named: `key = value`");
          DiagnosticEngine::help(d, fmt::format("write `{} = {}`", "field", dsl::format_expr(arg)));
        } else if (!keys.insert(call.arg_names[i - 1]).second) {
          error(arg.span, fmt::format("log field '{}' given twice", call.arg_names[i - 1]));
        }
        if (!t.is_error() && !t.is_scalar()) {
          error(arg.span, fmt::format("a log field must be a scalar, found {}", type_name(t)));
        }
      }
    }
  }

  void check_method_call(const dsl::ast::Expr& call, Scope& scope) {
    const auto& callee = *call.children[0];
    const auto& object = *callee.children[0];
    Type t = check_expr(object, scope);
    if (t.is_error()) return;
    if (!t.is(K::kSet) || (callee.text != "insert" && callee.text != "remove")) {
      Diagnostic& d =
          error(callee.name_span, fmt::format("{} has no method '{}'", type_name(t), callee.text));
      DiagnosticEngine::note(
          d, "state sets have `insert(x)` and `remove(x)`; maps use `m[k] = v` and `remove m[k]`");
      return;
    }
    require_state(object, scope, "change");
    if (call.children.size() != 2) {
      error(call.span, fmt::format("'{}' takes 1 argument", callee.text));
      return;
    }
    Type v = check_expr(*call.children[1], scope);
    if (!assignable(v, t.args[0], *call.children[1])) {
      error(call.children[1]->span,
            fmt::format("expected {}, found {}", type_name(t.args[0]), type_name(v)));
    }
  }

  // ---- expressions ----

  Type check_expr(const dsl::ast::Expr& e, Scope& scope) {
    using EK = dsl::ast::ExprKind;
    switch (e.kind) {
      case EK::kInt:
        return Type::of(K::kInt);
      case EK::kFloat:
        return Type::of(K::kFloat);
      case EK::kDuration:
        if (auto ns = duration_ns(e); !ns || *ns > 9.2e18) {
          error(e.span, "duration literal is too large");
          return Type::of(K::kError);
        }
        return Type::of(K::kDuration);
      case EK::kString:
        return Type::of(K::kString);
      case EK::kBool:
        return Type::of(K::kBool);
      case EK::kEmptyBraces:
        return Type::of(K::kEmptyBraces);
      case EK::kName:
        return check_name(e, scope);
      case EK::kMember:
        return check_member(e, scope);
      case EK::kIndex:
        return check_index(e, scope);
      case EK::kCall:
        return check_call(e, scope);
      case EK::kUnary: {
        Type t = check_expr(*e.children[0], scope);
        if (t.is_error()) return t;
        if (e.text == "!" && !t.is(K::kBool)) {
          error(e.span, fmt::format("'!' needs a bool, found {}", type_name(t)));
          return Type::of(K::kError);
        }
        if (e.text == "-" && !t.is_number() && !t.is(K::kDuration)) {
          error(e.span, fmt::format("'-' needs a number or duration, found {}", type_name(t)));
          return Type::of(K::kError);
        }
        return t;
      }
      case EK::kBinary:
        return check_binary(e, scope);
      case EK::kList:
      case EK::kSet: {
        Type element = Type::of(K::kError);
        for (size_t i = 0; i < e.children.size(); ++i) {
          Type t = check_expr(*e.children[i], scope);
          if (i == 0) {
            element = t;
            if (!t.is_error() && !t.is_scalar())
              error(e.children[i]->span,
                    fmt::format("containers hold scalars, not {}", type_name(t)));
          } else if (!same_type(t, element) &&
                     !(element.is(K::kFloat) && is_int_literal(*e.children[i]))) {
            if (t.is(K::kFloat) && element.is(K::kInt) && is_int_literal(*e.children[0])) {
              element = t;
            } else {
              error(e.children[i]->span, fmt::format("elements must all be {}, found {}",
                                                     type_name(element), type_name(t)));
            }
          }
        }
        return e.kind == EK::kList ? Type::list(element) : Type::set(element);
      }
      case EK::kMap: {
        Type key = Type::of(K::kError), value = Type::of(K::kError);
        for (size_t i = 0; i + 1 < e.children.size(); i += 2) {
          Type k = check_expr(*e.children[i], scope), v = check_expr(*e.children[i + 1], scope);
          if (i == 0) {
            key = k;
            value = v;
          } else {
            if (!same_type(k, key))
              error(e.children[i]->span,
                    fmt::format("keys must all be {}, found {}", type_name(key), type_name(k)));
            if (!same_type(v, value) &&
                !(value.is(K::kFloat) && is_int_literal(*e.children[i + 1]))) {
              error(e.children[i + 1]->span,
                    fmt::format("values must all be {}, found {}", type_name(value), type_name(v)));
            }
          }
        }
        return Type::map(key, value);
      }
    }
    return Type::of(K::kError);
  }

  Type check_name(const dsl::ast::Expr& e, Scope& scope) {
    using HK = dsl::ast::HandlerKind;
    if (e.text == "req" || e.text == "resp") {
      bool is_req = e.text == "req";
      if (!in_handler(scope) && !scope.in_marshal) {
        error(e.span, fmt::format("'{}' is only available inside a handler", e.text));
        return Type::of(K::kError);
      }
      auto other = event_outside(scope, {HK::kResponse});
      if (!is_req && other) {
        Diagnostic& d = error(e.span, fmt::format("'resp' is not available in `on {}`",
                                                  dsl::ast::handler_kind_name(*other)));
        DiagnosticEngine::note(d, "the response exists only in `on response`");
        return Type::of(K::kError);
      }
      if (!scope.schema_known) {
        Diagnostic& d = error(
            e.span, fmt::format("'{}' needs the message schema, and this policy has none", e.text));
        DiagnosticEngine::help(d,
                               "`import proto \"x.proto\";` and name its methods in `applies to`");
        return Type::of(K::kError);
      }
      return is_req ? scope.request : scope.response;
    }
    if (e.text == "rpc") {
      if (!in_handler(scope)) {
        error(e.span, "'rpc' is only available inside a handler");
        return Type::of(K::kError);
      }
      return Type::of(K::kRpc);
    }
    if (is_status_name(e.text)) return Type::of(K::kStatus);
    if (const Symbol* s = lookup(scope, e.text)) return s->type;
    auto c = visible_.consts.find(e.text);
    if (c != visible_.consts.end()) {
      if (const_in_progress_.count(e.text) > 0) {
        const_cycle_ = true;
        return Type::of(K::kError);
      }
      const_in_progress_.insert(e.text);
      ++quiet_;
      Scope empty;
      Type t = check_expr(*c->second->value, empty);
      --quiet_;
      const_in_progress_.erase(e.text);
      if (c->second->type) t = resolve_type_quiet(*c->second->type, t);
      return t;
    }
    Diagnostic& d = error(e.span, fmt::format("unknown name '{}'", e.text));
    std::vector<std::string> candidates = names_in_scope(scope);
    for (const auto& s : status_names()) candidates.push_back(s);
    std::string guess = dsl::closest_name(e.text, candidates);
    if (!guess.empty()) DiagnosticEngine::help(d, fmt::format("did you mean '{}'?", guess));
    return Type::of(K::kError);
  }

  Type resolve_type_quiet(const dsl::ast::Type& t, const Type& fallback) {
    if (auto s = scalar_type_named(t.name)) return *s;
    return fallback;
  }

  Type check_member(const dsl::ast::Expr& e, Scope& scope) {
    if (auto v = enum_value(e)) {
      std::string root;
      dotted_name(e, root, 0);
      root = root.substr(0, root.find('.'));
      if (lookup(scope, root) == nullptr && root != "req" && root != "resp" && root != "rpc")
        return Type::of(K::kInt);
    }
    Type object = check_expr(*e.children[0], scope);
    if (object.is_error()) return object;
    const std::string& field = e.text;
    if (object.is(K::kRpc)) return rpc_member(e, scope);
    if (object.is(K::kCaller)) {
      if (field == "app" || field == "host") return Type::of(K::kString);
      if (field == "uid") return Type::of(K::kInt);
      Diagnostic& d = error(e.name_span, fmt::format("rpc.caller has no '{}'", field));
      std::string guess = dsl::closest_name(field, {"app", "host", "uid"});
      if (!guess.empty()) DiagnosticEngine::help(d, fmt::format("did you mean '{}'?", guess));
      return Type::of(K::kError);
    }
    if (!object.is(K::kMessage)) {
      error(e.name_span, fmt::format("{} has no field '{}'", type_name(object), field));
      return Type::of(K::kError);
    }
    // Every matched message must have the field, with one type.
    std::optional<Type> result;
    Type nested = Type::of(K::kMessage);
    nested.is_request = object.is_request;
    for (const pb::Descriptor* message : object.messages) {
      const pb::FieldDescriptor* f = message->FindFieldByName(field);
      if (f == nullptr) {
        Diagnostic& d =
            error(e.name_span,
                  object.messages.size() == 1
                      ? fmt::format("no field '{}' in message '{}'", field, message->full_name())
                      : fmt::format("field '{}' is not in every matched message: '{}' has none",
                                    field, message->full_name()));
        std::vector<std::string> fields;
        for (int i = 0; i < message->field_count(); ++i)
          fields.push_back(message->field(i)->name());
        std::string guess = dsl::closest_name(field, fields);
        if (!guess.empty()) DiagnosticEngine::help(d, fmt::format("did you mean '{}'?", guess));
        if (object.messages.size() > 1) {
          DiagnosticEngine::note(
              d,
              "under a wildcard, a field is usable only if every matched method's message has it");
        }
        return Type::of(K::kError);
      }
      Type t = field_type(f, object.is_request);
      if (!result) {
        result = t;
      } else if (t.kind != result->kind || (t.kind != K::kMessage && !same_type(t, *result))) {
        Diagnostic& d =
            error(e.name_span,
                  fmt::format("field '{}' has different types across the matched methods", field));
        DiagnosticEngine::note(
            d, fmt::format("{} in '{}', {} in '{}'", type_name(*result),
                           object.messages[0]->full_name(), type_name(t), message->full_name()));
        return Type::of(K::kError);
      }
      if (t.is(K::kMessage)) {
        for (auto* m : t.messages) {
          if (std::find(nested.messages.begin(), nested.messages.end(), m) == nested.messages.end())
            nested.messages.push_back(m);
        }
      }
    }
    if (!result) return Type::of(K::kError);
    if (result->is(K::kMessage)) return nested;
    return *result;
  }

  Type rpc_member(const dsl::ast::Expr& e, Scope& scope) {
    static const std::map<std::string, K> scalar_fields = {
        {"service", K::kString},     {"method", K::kString}, {"deadline", K::kTime},
        {"remaining", K::kDuration}, {"size", K::kInt},      {"status", K::kStatus},
        {"latency", K::kDuration},   {"priority", K::kInt},  {"endpoint", K::kString},
        {"attempt", K::kInt}};
    const std::string& field = e.text;
    if ((field == "status" || field == "latency") &&
        runs_on(scope, dsl::ast::HandlerKind::kRequest)) {
      Diagnostic& d = error(e.span, fmt::format("'rpc.{}' is not known in `on request`", field));
      DiagnosticEngine::note(d, "it exists in `on response` and `on error`");
      return Type::of(K::kError);
    }
    auto it = scalar_fields.find(field);
    if (it != scalar_fields.end()) return Type::of(it->second);
    if (field == "caller") return Type::of(K::kCaller);
    if (field == "metadata") return Type::map(Type::of(K::kString), Type::of(K::kString));
    if (field == "endpoints") return Type::list(Type::of(K::kString));
    Diagnostic& d = error(e.name_span, fmt::format("rpc has no '{}'", field));
    std::vector<std::string> names = {"caller", "metadata", "endpoints"};
    for (const auto& [n, _] : scalar_fields) names.push_back(n);
    std::string guess = dsl::closest_name(field, names);
    if (!guess.empty()) DiagnosticEngine::help(d, fmt::format("did you mean '{}'?", guess));
    return Type::of(K::kError);
  }

  Type check_index(const dsl::ast::Expr& e, Scope& scope) {
    Type object = check_expr(*e.children[0], scope);
    Type index = check_expr(*e.children[1], scope);
    if (object.is_error()) return object;
    if (object.is(K::kList)) {
      if (!assignable(index, Type::of(K::kInt), *e.children[1])) {
        error(e.children[1]->span,
              fmt::format("a list index must be int, found {}", type_name(index)));
      }
      return object.args[0];
    }
    if (object.is(K::kMap)) {
      if (!assignable(index, object.args[0], *e.children[1])) {
        error(e.children[1]->span,
              fmt::format("key must be {}, found {}", type_name(object.args[0]), type_name(index)));
      }
      return object.args[1];
    }
    error(e.span, fmt::format("cannot index {}", type_name(object)));
    return Type::of(K::kError);
  }

  Type check_binary(const dsl::ast::Expr& e, Scope& scope) {
    Type a = check_expr(*e.children[0], scope);
    Type b = check_expr(*e.children[1], scope);
    const std::string& op = e.text;
    if (a.is_error() || b.is_error()) {
      if (op == "&&" || op == "||" || op == "==" || op == "!=" || op == "<" || op == "<=" ||
          op == ">" || op == ">=" || op == "in" || op == "not in") {
        return Type::of(K::kBool);
      }
      return Type::of(K::kError);
    }
    const auto& le = *e.children[0];
    const auto& re = *e.children[1];
    // An int literal beside a float is a float.
    auto unify = [&](Type& x, Type& y) {
      if (x.is(K::kFloat) && y.is(K::kInt) && is_int_literal(re)) y = x;
      if (y.is(K::kFloat) && x.is(K::kInt) && is_int_literal(le)) x = y;
    };
    auto mismatch = [&]() {
      error(e.span, fmt::format("'{}' cannot combine {} and {}", op, type_name(a), type_name(b)));
      return Type::of(K::kError);
    };
    if (op == "&&" || op == "||") {
      if (!a.is(K::kBool) || !b.is(K::kBool)) return mismatch();
      return Type::of(K::kBool);
    }
    if (op == "in" || op == "not in") {
      if (!b.is(K::kSet) && !b.is(K::kMap) && !b.is(K::kList)) {
        error(re.span, fmt::format("'{}' needs a set, map or list on its right, found {}", op,
                                   type_name(b)));
        return Type::of(K::kBool);
      }
      if (!assignable(a, b.args[0], le)) {
        error(le.span, fmt::format("'{}' looks for {} in {}, found {}", op, type_name(b.args[0]),
                                   type_name(b), type_name(a)));
      }
      return Type::of(K::kBool);
    }
    unify(a, b);
    if (op == "==" || op == "!=") {
      if (!same_type(a, b) || !(a.is_scalar())) return mismatch();
      return Type::of(K::kBool);
    }
    if (op == "<" || op == "<=" || op == ">" || op == ">=") {
      if (!same_type(a, b) ||
          !(a.is_number() || a.is(K::kDuration) || a.is(K::kTime) || a.is(K::kString))) {
        return mismatch();
      }
      return Type::of(K::kBool);
    }
    if (op == "+" || op == "-") {
      if (a.is_number() && same_type(a, b)) return a;
      if (a.is(K::kDuration) && b.is(K::kDuration)) return a;
      if (a.is(K::kTime) && b.is(K::kDuration)) return a;
      if (op == "-" && a.is(K::kTime) && b.is(K::kTime)) return Type::of(K::kDuration);
      if (op == "+" && a.is(K::kString) && b.is(K::kString)) return a;
      return mismatch();
    }
    // * / %
    if (a.is_number() && same_type(a, b)) return a;
    if (op == "*" && a.is(K::kDuration) && b.is_number()) return a;
    if (op == "/" && a.is(K::kDuration) && b.is(K::kInt)) return a;
    if (op == "*" && b.is(K::kDuration) && a.is_number()) return b;
    return mismatch();
  }

  Type check_call(const dsl::ast::Expr& call, Scope& scope) {
    const auto& callee = *call.children[0];
    if (callee.kind != dsl::ast::ExprKind::kName) {
      if (callee.kind == dsl::ast::ExprKind::kMember) {
        Type object = check_expr(*callee.children[0], scope);
        if (object.is_error()) return object;
        if (object.is(K::kSet) && (callee.text == "insert" || callee.text == "remove")) {
          Diagnostic& d =
              error(callee.name_span, fmt::format("'{}' is a statement, not a value", callee.text));
          DiagnosticEngine::note(d, "container methods return nothing");
          return Type::of(K::kError);
        }
        error(callee.name_span,
              fmt::format("{} has no method '{}'", type_name(object), callee.text));
        return Type::of(K::kError);
      }
      error(callee.span, "only built-in functions can be called");
      return Type::of(K::kError);
    }
    const std::string& name = callee.text;
    if (is_action(name)) {
      Diagnostic& d = error(callee.span,
                            fmt::format("'{}' is an action: it is a statement, not a value", name));
      DiagnosticEngine::help(d, fmt::format("write `{}(...);` on its own line", name));
      return Type::of(K::kError);
    }
    auto args = [&](size_t n) {
      std::vector<Type> out;
      if (call.children.size() - 1 != n) {
        error(call.span, fmt::format("'{}' takes {} argument{}, found {}", name, n,
                                     n == 1 ? "" : "s", call.children.size() - 1));
      }
      for (size_t i = 1; i < call.children.size(); ++i) {
        if (!call.arg_names[i - 1].empty())
          error(call.children[i]->span, fmt::format("'{}' takes no named arguments", name));
        out.push_back(check_expr(*call.children[i], scope));
      }
      out.resize(n, Type::of(K::kError));
      return out;
    };
    auto want = [&](const Type& got, size_t i, bool ok, const char* what) {
      if (!got.is_error() && !ok) {
        error(call.children[i + 1]->span, fmt::format("argument {} of '{}' must be {}, found {}",
                                                      i + 1, name, what, type_name(got)));
      }
    };
    auto is_str = [](const Type& t) { return t.is(K::kString) || t.is_error(); };
    if (name == "now") return args(0), Type::of(K::kTime);
    if (name == "random") return args(0), Type::of(K::kFloat);
    if (name == "hash") {
      auto a = args(1);
      want(a[0], 0, a[0].is_scalar(), "a scalar");
      return Type::of(K::kInt);
    }
    if (name == "min" || name == "max") {
      auto a = args(2);
      unify_args(call, a);
      want(a[0], 0, a[0].is_number() || a[0].is(K::kDuration) || a[0].is(K::kTime),
           "a number, duration or time");
      if (!same_type(a[0], a[1])) want(a[1], 1, false, type_name(a[0]).c_str());
      return a[0];
    }
    if (name == "abs") {
      auto a = args(1);
      want(a[0], 0, a[0].is_number() || a[0].is(K::kDuration), "a number or duration");
      return a[0];
    }
    if (name == "len") {
      auto a = args(1);
      want(a[0], 0,
           a[0].is(K::kString) || a[0].is(K::kBytes) || a[0].is(K::kList) || a[0].is(K::kSet) ||
               a[0].is(K::kMap),
           "a string, bytes, list, set or map");
      return Type::of(K::kInt);
    }
    if (name == "has") {
      if (call.children.size() != 2 || call.children[1]->kind != dsl::ast::ExprKind::kMember) {
        error(call.span, "'has' takes one message field: `has(req.field)`");
        for (size_t i = 1; i < call.children.size(); ++i) check_expr(*call.children[i], scope);
        return Type::of(K::kBool);
      }
      const dsl::ast::Expr* root = root_of(*call.children[1]);
      if (root == nullptr || (root->text != "req" && root->text != "resp")) {
        error(call.children[1]->span, "'has' takes a message field: `has(req.field)`");
      }
      check_expr(*call.children[1], scope);
      return Type::of(K::kBool);
    }
    if (name == "seconds") {
      auto a = args(1);
      want(a[0], 0, a[0].is(K::kDuration), "a duration");
      return Type::of(K::kFloat);
    }
    if (name == "from_seconds") {
      auto a = args(1);
      want(a[0], 0, a[0].is_number(), "a number");
      return Type::of(K::kDuration);
    }
    if (name == "int" || name == "float") {
      auto a = args(1);
      want(a[0], 0, a[0].is_number() || a[0].is(K::kBool) || a[0].is(K::kString),
           "a number, bool or string");
      return Type::of(name == "int" ? K::kInt : K::kFloat);
    }
    if (name == "str") {
      auto a = args(1);
      want(a[0], 0, a[0].is_scalar(), "a scalar");
      return Type::of(K::kString);
    }
    if (name == "lower" || name == "upper" || name == "sha256") {
      auto a = args(1);
      want(a[0], 0, is_str(a[0]) || (name == "sha256" && a[0].is(K::kBytes)), "a string");
      return Type::of(K::kString);
    }
    if (name == "starts_with" || name == "ends_with" || name == "contains") {
      auto a = args(2);
      want(a[0], 0, is_str(a[0]), "a string");
      want(a[1], 1, is_str(a[1]), "a string");
      return Type::of(K::kBool);
    }
    if (name == "substr") {
      auto a = args(3);
      want(a[0], 0, is_str(a[0]), "a string");
      want(a[1], 1, a[1].is(K::kInt) || a[1].is_error(), "an int");
      want(a[2], 2, a[2].is(K::kInt) || a[2].is_error(), "an int");
      return Type::of(K::kString);
    }
    if (name == "consistent_hash") {
      auto a = args(2);
      want(a[0], 0, a[0].is_scalar(), "a scalar");
      want(a[1], 1, a[1].is(K::kList), "a list");
      return a[1].is(K::kList) ? a[1].args[0] : Type::of(K::kError);
    }
    for (size_t i = 1; i < call.children.size(); ++i) check_expr(*call.children[i], scope);
    Diagnostic& d = error(callee.span, fmt::format("unknown function '{}'", name));
    static const std::vector<std::string> builtins = {
        "now",    "random",      "hash",         "min",      "max",     "abs",    "len",
        "has",    "seconds",     "from_seconds", "int",      "float",   "str",    "lower",
        "upper",  "starts_with", "ends_with",    "contains", "substr",  "sha256", "consistent_hash",
        "reject", "delay",       "route",        "mirror",   "respond", "retry",  "log",
        "observe"};
    std::string guess = dsl::closest_name(name, builtins);
    if (!guess.empty()) DiagnosticEngine::help(d, fmt::format("did you mean '{}'?", guess));
    return Type::of(K::kError);
  }

  void unify_args(const dsl::ast::Expr& call, std::vector<Type>& a) {
    if (a[0].is(K::kFloat) && a[1].is(K::kInt) && is_int_literal(*call.children[2])) a[1] = a[0];
    if (a[1].is(K::kFloat) && a[0].is(K::kInt) && is_int_literal(*call.children[1])) a[0] = a[1];
  }

  Module& module_;
  DiagnosticEngine& diagnostics_;
  std::vector<PolicySummary>& summaries_;
  Visible visible_;
  std::vector<const pb::ServiceDescriptor*> services_;
  const pb::DescriptorPool* pool_ = nullptr;
  std::set<std::string> const_in_progress_;
  std::map<std::string, Span> marshal_patterns_;  // pattern text -> first rule with it
  bool const_cycle_ = false;
  int quiet_ = 0;
  Diagnostic scratch_;
};

}  // namespace

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

bool Checker::check_file(const std::string& path) {
  size_t before = impl_->diagnostics.error_count();
  Module* module = impl_->load(path, std::nullopt, nullptr);
  if (module == nullptr) return false;
  if (module->file && !impl_->diagnostics.too_many()) impl_->check_module(*module);
  return impl_->diagnostics.error_count() == before;
}

bool Checker::check_text(const std::string& path, std::string text) {
  size_t before = impl_->diagnostics.error_count();
  Module* module = impl_->load(path, std::move(text), nullptr);
  if (module == nullptr) return false;
  if (module->file && !impl_->diagnostics.too_many()) impl_->check_module(*module);
  return impl_->diagnostics.error_count() == before;
}

const std::vector<PolicySummary>& Checker::policies() const {
  return impl_->summaries;
}

}  // namespace mrpc::compiler
