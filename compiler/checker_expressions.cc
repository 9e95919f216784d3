// The checker's expressions: constant folding (ints, durations, enum values), operators,
// builtin functions, names (params, state, consts, locals), message field paths and the rpc
// context.
#include <fmt/format.h>

#include <algorithm>

#include "checker_internal.h"
#include "mrpc/base/limits.h"
#include "mrpc/compiler/builtins.h"

namespace mrpc::compiler {

// ---- constants ----

// Checks a constant expression (literals, consts, status names, unary/binary arithmetic,
// list/set/map literals of those) against an optional expected type.
Type ModuleChecker::check_constant(const dsl::ast::Expr& e, Scope& scope,
                                   std::optional<Type> expected) {
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

bool ModuleChecker::is_constant(const dsl::ast::Expr& e, const Scope& scope) {
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
std::optional<int64_t> ModuleChecker::const_int(const dsl::ast::Expr& e, int depth) {
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
std::optional<double> ModuleChecker::const_number(const dsl::ast::Expr& e) {
  using EK = dsl::ast::ExprKind;
  if (e.kind == EK::kFloat) return e.float_value;
  if (e.kind == EK::kDuration) return duration_ns(e);
  if (auto v = const_int(e)) return static_cast<double>(*v);
  return std::nullopt;
}

std::optional<double> ModuleChecker::duration_ns(const dsl::ast::Expr& e) {
  static const std::map<std::string, double> unit = {{"ns", 1},  {"us", 1e3}, {"ms", 1e6},
                                                     {"s", 1e9}, {"m", 60e9}, {"h", 3600e9}};
  auto it = unit.find(e.text);
  if (it == unit.end()) return std::nullopt;
  return static_cast<double>(e.int_value) * it->second;
}

// `hotel.Kind.SUITE`: an enum value named through its enum type.
std::optional<int> ModuleChecker::enum_value(const dsl::ast::Expr& e) {
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

bool ModuleChecker::dotted_name(const dsl::ast::Expr& e, std::string& out, int depth) {
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

// ---- expressions ----

Type ModuleChecker::check_expr(const dsl::ast::Expr& e, Scope& scope) {
  using EK = dsl::ast::ExprKind;
  switch (e.kind) {
    case EK::kDuration:
      if (auto ns = duration_ns(e); !ns || *ns > 9.2e18) {
        error(e.span, "duration literal is too large");
        return Type::of(K::kError);
      }
      return *literal_type(e);
    case EK::kInt:
    case EK::kFloat:
    case EK::kString:
    case EK::kBool:
      return *literal_type(e);
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

Type ModuleChecker::check_name(const dsl::ast::Expr& e, Scope& scope) {
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
      DiagnosticEngine::help(d, "`import proto \"x.proto\";` and name its methods in `applies to`");
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
  // Words other languages have and .mpol does not.
  if (e.text == "return") {
    DiagnosticEngine::help(d,
                           "there is no `return`: `pass;` ends the handler and lets the call go "
                           "on, `reject(CODE, \"why\");` ends it with an error");
    return Type::of(K::kError);
  }
  if (e.text == "null" || e.text == "nil" || e.text == "None") {
    DiagnosticEngine::help(d, fmt::format("there is no `{}`: absent values read as zero (\"\", 0, "
                                          "false); test presence with `in` or `has(...)`",
                                          e.text));
    return Type::of(K::kError);
  }
  std::vector<std::string> candidates = names_in_scope(scope);
  for (const auto& s : status_names()) candidates.push_back(s);
  std::string guess = dsl::closest_name(e.text, candidates);
  if (!guess.empty()) DiagnosticEngine::help(d, fmt::format("did you mean '{}'?", guess));
  return Type::of(K::kError);
}

Type ModuleChecker::check_member(const dsl::ast::Expr& e, Scope& scope) {
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
      for (int i = 0; i < message->field_count(); ++i) fields.push_back(message->field(i)->name());
      std::string guess = dsl::closest_name(field, fields);
      if (!guess.empty()) DiagnosticEngine::help(d, fmt::format("did you mean '{}'?", guess));
      if (object.messages.size() > 1) {
        DiagnosticEngine::note(
            d, "under a wildcard, a field is usable only if every matched method's message has it");
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

Type ModuleChecker::rpc_member(const dsl::ast::Expr& e, Scope& scope) {
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

Type ModuleChecker::check_index(const dsl::ast::Expr& e, Scope& scope) {
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

Type ModuleChecker::check_binary(const dsl::ast::Expr& e, Scope& scope) {
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
      error(re.span,
            fmt::format("'{}' needs a set, map or list on its right, found {}", op, type_name(b)));
      return Type::of(K::kBool);
    }
    if (!assignable(a, b.args[0], le)) {
      error(le.span, fmt::format("'{}' looks for {} in {}, found {}", op, type_name(b.args[0]),
                                 type_name(b), type_name(a)));
    }
    return Type::of(K::kBool);
  }
  unify_int_literal(a, le, b, re);
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

Type ModuleChecker::check_call(const dsl::ast::Expr& call, Scope& scope) {
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
      error(callee.name_span, fmt::format("{} has no method '{}'", type_name(object), callee.text));
      return Type::of(K::kError);
    }
    error(callee.span, "only built-in functions can be called");
    return Type::of(K::kError);
  }
  const std::string& name = callee.text;
  if (is_action(name)) {
    Diagnostic& d =
        error(callee.span, fmt::format("'{}' is an action: it is a statement, not a value", name));
    DiagnosticEngine::help(d, fmt::format("write `{}(...);` on its own line", name));
    return Type::of(K::kError);
  }
  auto args = [&](size_t n) {
    std::vector<Type> out;
    if (call.children.size() - 1 != n) {
      error(call.span, fmt::format("'{}' takes {} argument{}, found {}", name, n, n == 1 ? "" : "s",
                                   call.children.size() - 1));
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
  // Typing per builtin; names and arity come from the one table (builtins.h).
  const BuiltinInfo* info = find_builtin(name);
  if (info != nullptr) {
    switch (info->id) {
      case Builtin::kNow:
        return args(static_cast<size_t>(info->arity)), Type::of(K::kTime);
      case Builtin::kRandom:
        return args(static_cast<size_t>(info->arity)), Type::of(K::kFloat);
      case Builtin::kHash: {
        auto a = args(static_cast<size_t>(info->arity));
        want(a[0], 0, a[0].is_scalar(), "a scalar");
        return Type::of(K::kInt);
      }
      case Builtin::kMin:
      case Builtin::kMax: {
        auto a = args(static_cast<size_t>(info->arity));
        // With fewer than two arguments a missing one is an error type: nothing to unify.
        if (call.children.size() >= 3)
          unify_int_literal(a[0], *call.children[1], a[1], *call.children[2]);
        want(a[0], 0, a[0].is_number() || a[0].is(K::kDuration) || a[0].is(K::kTime),
             "a number, duration or time");
        if (!same_type(a[0], a[1])) want(a[1], 1, false, type_name(a[0]).c_str());
        return a[0];
      }
      case Builtin::kAbs: {
        auto a = args(static_cast<size_t>(info->arity));
        want(a[0], 0, a[0].is_number() || a[0].is(K::kDuration), "a number or duration");
        return a[0];
      }
      case Builtin::kLen: {
        auto a = args(static_cast<size_t>(info->arity));
        want(a[0], 0,
             a[0].is(K::kString) || a[0].is(K::kBytes) || a[0].is(K::kList) || a[0].is(K::kSet) ||
                 a[0].is(K::kMap),
             "a string, bytes, list, set or map");
        return Type::of(K::kInt);
      }
      case Builtin::kHas: {
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
      case Builtin::kSeconds: {
        auto a = args(static_cast<size_t>(info->arity));
        want(a[0], 0, a[0].is(K::kDuration), "a duration");
        return Type::of(K::kFloat);
      }
      case Builtin::kFromSeconds: {
        auto a = args(static_cast<size_t>(info->arity));
        want(a[0], 0, a[0].is_number(), "a number");
        return Type::of(K::kDuration);
      }
      case Builtin::kInt:
      case Builtin::kFloat: {
        auto a = args(static_cast<size_t>(info->arity));
        want(a[0], 0, a[0].is_number() || a[0].is(K::kBool) || a[0].is(K::kString),
             "a number, bool or string");
        return Type::of(info->id == Builtin::kInt ? K::kInt : K::kFloat);
      }
      case Builtin::kStr: {
        auto a = args(static_cast<size_t>(info->arity));
        want(a[0], 0, a[0].is_scalar(), "a scalar");
        return Type::of(K::kString);
      }
      case Builtin::kLower:
      case Builtin::kUpper:
      case Builtin::kSha256: {
        auto a = args(static_cast<size_t>(info->arity));
        want(a[0], 0, is_str(a[0]) || (info->id == Builtin::kSha256 && a[0].is(K::kBytes)),
             "a string");
        return Type::of(K::kString);
      }
      case Builtin::kStartsWith:
      case Builtin::kEndsWith:
      case Builtin::kContains: {
        auto a = args(static_cast<size_t>(info->arity));
        want(a[0], 0, is_str(a[0]), "a string");
        want(a[1], 1, is_str(a[1]), "a string");
        return Type::of(K::kBool);
      }
      case Builtin::kSubstr: {
        auto a = args(static_cast<size_t>(info->arity));
        want(a[0], 0, is_str(a[0]), "a string");
        want(a[1], 1, a[1].is(K::kInt) || a[1].is_error(), "an int");
        want(a[2], 2, a[2].is(K::kInt) || a[2].is_error(), "an int");
        return Type::of(K::kString);
      }
      case Builtin::kConsistentHash: {
        auto a = args(static_cast<size_t>(info->arity));
        want(a[0], 0, a[0].is_scalar(), "a scalar");
        want(a[1], 1, a[1].is(K::kList), "a list");
        return a[1].is(K::kList) ? a[1].args[0] : Type::of(K::kError);
      }
    }
  }
  for (size_t i = 1; i < call.children.size(); ++i) check_expr(*call.children[i], scope);
  Diagnostic& d = error(callee.span, fmt::format("unknown function '{}'", name));
  // Every name from the one builtin/action table (builtins.h).
  std::vector<std::string> builtins;
  for (const auto& b : builtin_table()) builtins.emplace_back(b.name);
  for (const auto& a : action_table()) builtins.emplace_back(a.name);
  std::string guess = dsl::closest_name(name, builtins);
  if (!guess.empty()) DiagnosticEngine::help(d, fmt::format("did you mean '{}'?", guess));
  return Type::of(K::kError);
}

// An int literal beside a float is a float (`f * 2`, `max(f, 1)`): the literal's type becomes
// float.
void ModuleChecker::unify_int_literal(Type& a, const dsl::ast::Expr& a_expr, Type& b,
                                      const dsl::ast::Expr& b_expr) {
  if (a.is(K::kFloat) && b.is(K::kInt) && is_int_literal(b_expr)) b = a;
  if (b.is(K::kFloat) && a.is(K::kInt) && is_int_literal(a_expr)) a = b;
}

}  // namespace mrpc::compiler
