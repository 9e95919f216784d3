// The checker's type model: printing and comparing types, the scalar and status names, the types
// of protobuf fields, types written in the source, and which values may be stored where.
#include <fmt/format.h>

#include <string>

#include "checker_internal.h"
#include "mrpc/base/limits.h"
#include "mrpc/base/status.h"

namespace mrpc::compiler {

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

std::optional<Type> literal_type(const dsl::ast::Expr& e) {
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
    default:
      return std::nullopt;
  }
}

namespace {

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

}  // namespace

Type field_type(const pb::FieldDescriptor* field, bool is_request) {
  if (field->is_map()) {
    const pb::Descriptor* entry = field->message_type();
    return Type::map(element_type(entry->map_key(), is_request),
                     element_type(entry->map_value(), is_request));
  }
  if (field->is_repeated()) return Type::list(element_type(field, is_request));
  return element_type(field, is_request);
}

// ---- types written in the source ----

Type ModuleChecker::resolve_type(const dsl::ast::Type& t, bool allow_state_kinds) {
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
      error(arg.span,
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

bool ModuleChecker::is_int_literal(const dsl::ast::Expr& e) {
  return e.kind == dsl::ast::ExprKind::kInt ||
         (e.kind == dsl::ast::ExprKind::kUnary && e.text == "-" &&
          e.children[0]->kind == dsl::ast::ExprKind::kInt);
}

// May a value of type `from` (written as `e`) be stored where `to` is expected?
bool ModuleChecker::assignable(const Type& from, const Type& to, const dsl::ast::Expr& e) {
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

Type ModuleChecker::check_expr_quiet(const dsl::ast::Expr& e) {
  // Element types of literals are scalars of literals: recompute without reporting.
  if (e.kind == dsl::ast::ExprKind::kUnary) return check_expr_quiet(*e.children[0]);
  return literal_type(e).value_or(Type::of(K::kError));
}

Type ModuleChecker::resolve_type_quiet(const dsl::ast::Type& t, const Type& fallback) {
  if (auto s = scalar_type_named(t.name)) return *s;
  return fallback;
}

}  // namespace mrpc::compiler
