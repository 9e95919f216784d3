// The checker's statements and actions: blocks and unreachable-code warnings, `let`/`var`,
// assignments and what each may change, `if`/`for`, and the actions (`reject`, `route`, ...)
// with the rules for where each is allowed (per handler event, per placement).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "checker_internal.h"
#include "mrpc/base/limits.h"
#include "mrpc/compiler/builtins.h"
#include "mrpc/dsl/format.h"

namespace mrpc::compiler {

// ---- statements ----

void ModuleChecker::check_block(const dsl::ast::Block& block, Scope& scope, int loop_depth) {
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
bool ModuleChecker::ends_handler(const dsl::ast::Stmt& s) {
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

void ModuleChecker::check_statement(const dsl::ast::Stmt& s, Scope& scope, int loop_depth) {
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
      if (is_metadata_entry(e)) {
        // `remove rpc.metadata["key"];`: the callee does not receive that header.
        Type key = check_expr(*e.children[1], scope);
        if (!assignable(key, Type::of(K::kString), *e.children[1]))
          error(e.children[1]->span, fmt::format("key must be string, found {}", type_name(key)));
        if (!in_handler(scope) || event_outside(scope, {dsl::ast::HandlerKind::kRequest}))
          error(e.span, "request metadata can only be removed in `on request`");
        return;
      }
      if (e.kind != dsl::ast::ExprKind::kIndex) {
        error(e.span, "`remove` takes a state map entry: `remove m[key];`");
        return;
      }
      Type container = check_expr(*e.children[0], scope);
      Type key = check_expr(*e.children[1], scope);
      if (e.children[0]->kind != dsl::ast::ExprKind::kName && !container.is_error()) {
        // `remove req.labels["k"]`: removing from a message's map field is not in the language.
        Diagnostic& d =
            error(e.children[0]->span, "`remove` takes a state map entry: `remove m[key];`");
        DiagnosticEngine::note(d, "message map fields cannot have entries removed (yet)");
        return;
      }
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
    case SK::kBreak:
      if (loop_depth == 0) error(s.span, "`break` outside a `for` loop");
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

void ModuleChecker::expect(const dsl::ast::Expr& e, Scope& scope, const Type& want,
                           const char* what) {
  Type t = check_expr(e, scope);
  if (!assignable(t, want, e)) {
    error(e.span, fmt::format("{} must be {}, found {}", what, type_name(want), type_name(t)));
  }
}

void ModuleChecker::check_for(const dsl::ast::Stmt& s, Scope& scope, int loop_depth) {
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
const dsl::ast::Expr* ModuleChecker::root_of(const dsl::ast::Expr& e) {
  const dsl::ast::Expr* p = &e;
  while (p->kind == dsl::ast::ExprKind::kMember || p->kind == dsl::ast::ExprKind::kIndex)
    p = p->children[0].get();
  return p->kind == dsl::ast::ExprKind::kName ? p : nullptr;
}

void ModuleChecker::require_state(const dsl::ast::Expr& e, Scope& scope, const char* verb) {
  if (e.kind != dsl::ast::ExprKind::kName) return;
  const Symbol* s = lookup(scope, e.text);
  if (s != nullptr && s->kind != Symbol::Kind::kState) {
    error(e.span, fmt::format("cannot {} '{}': only state containers change", verb, e.text));
  }
}

// `req.x = ...` / `clear req.x`: the handler kind decides which message may change.
Type ModuleChecker::check_message_write(const dsl::ast::Expr& target, Scope& scope,
                                        const char* verb) {
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

bool ModuleChecker::is_metadata_entry(const dsl::ast::Expr& e) {
  if (e.kind != dsl::ast::ExprKind::kIndex) return false;
  const auto& map = *e.children[0];
  return map.kind == dsl::ast::ExprKind::kMember && map.text == "metadata" &&
         map.children[0]->kind == dsl::ast::ExprKind::kName && map.children[0]->text == "rpc";
}

void ModuleChecker::check_assignment(const dsl::ast::Stmt& s, Scope& scope) {
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
  } else if (is_metadata_entry(target)) {
    // `rpc.metadata["key"] = value;`: adds or replaces a request header the callee receives.
    target_type = check_expr(target, scope);
    if (s.op != "=") {
      error(target.span, "a metadata entry is set with `=` (it is a string)");
      return;
    }
    if (!in_handler(scope) || event_outside(scope, {dsl::ast::HandlerKind::kRequest})) {
      error(target.span, "request metadata can only be set in `on request`");
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
      DiagnosticEngine::note(d,
                             "a policy may set `rpc.priority`, `rpc.deadline` and "
                             "`rpc.metadata[key]` only");
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
      // An unknown name was reported by check_expr; anything else it resolved (a status code) is
      // a constant, which must be refused here (the IR builder has nothing to assign to).
      if (visible_.consts.count(target.text) > 0)
        error(target.span, fmt::format("cannot assign to const '{}'", target.text));
      else if (!target_type.is_error())
        error(target.span, fmt::format("cannot assign to '{}', a {} constant", target.text,
                                       type_name(target_type)));
      return;
    }
    switch (sym->kind) {
      case Symbol::Kind::kParam: {
        Diagnostic& d = error(target.span, fmt::format("cannot assign to param '{}'", target.text));
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
          DiagnosticEngine::help(d,
                                 fmt::format("declare it with `var {}` to change it", target.text));
          return;
        }
        break;
      case Symbol::Kind::kState:
        if (!target_type.is_scalar() && !target_type.is(K::kCounter)) {
          error(target.span, fmt::format("cannot assign to state '{}' of type {} as a whole",
                                         target.text, type_name(target_type)));
          return;
        }
        if (!sym->labels.empty()) {
          Diagnostic& d = error(target.span, fmt::format("counter '{}' has labels: count it "
                                                         "with their values",
                                                         target.text));
          DiagnosticEngine::help(
              d, fmt::format("write `{}.add(1, {} = ...)`", target.text, sym->labels[0]));
          return;
        }
        break;
      case Symbol::Kind::kCallVariable:
        if (!in_handler(scope) || event_outside(scope, {dsl::ast::HandlerKind::kRequest})) {
          Diagnostic& d = error(target.span, fmt::format("per-call variable '{}' can only be set "
                                                         "in `on request`",
                                                         target.text));
          DiagnosticEngine::note(d, "later handlers of the call read what `on request` set");
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

void ModuleChecker::check_expression_statement(const dsl::ast::Expr& e, Scope& scope) {
  if (e.kind != dsl::ast::ExprKind::kCall) {
    // An expression that is already an error (`return;`: an unknown name) says enough.
    if (check_expr(e, scope).is_error()) return;
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

bool ModuleChecker::is_action(const std::string& name) {
  return find_action(name) != nullptr;
}

void ModuleChecker::check_args(const dsl::ast::Expr& call, const std::vector<Type>& want,
                               Scope& scope) {
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

void ModuleChecker::only_in(const dsl::ast::Expr& call, Scope& scope,
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
  DiagnosticEngine::note(d, fmt::format("'{}' is allowed in {}", call.children[0]->text, allowed));
}

// `route`, `mirror` and `retry` choose or repeat where a call goes: only the caller's daemon
// can. (`respond` is allowed at both placements.)
void ModuleChecker::only_at_caller(const dsl::ast::Expr& call, Scope& scope) {
  if (scope.placement != dsl::ast::Placement::kCallee) return;
  const std::string& name = call.children[0]->text;
  Diagnostic& d = error(call.children[0]->span,
                        fmt::format("'{}' is not allowed in a policy `at callee`", name));
  DiagnosticEngine::note(
      d, "only the caller's daemon chooses where a call goes, copies it or sends it again");
  DiagnosticEngine::help(d, "place the policy `at caller`");
}

void ModuleChecker::check_action(const dsl::ast::Expr& call, Scope& scope) {
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
    if (call.children.size() < 3) {
      error(call.span, "'observe' takes 2 arguments: a histogram and a value");
      return;
    }
    const auto& metric = *call.children[1];
    const Symbol* sym =
        metric.kind == dsl::ast::ExprKind::kName ? lookup(scope, metric.text) : nullptr;
    if (sym != nullptr && sym->kind == Symbol::Kind::kState) {
      check_label_values(call, 3, metric, *sym, scope);
    } else if (call.children.size() != 3) {
      error(call.span, "'observe' takes 2 arguments: a histogram and a value");
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

void ModuleChecker::check_label_values(const dsl::ast::Expr& call, size_t first,
                                       const dsl::ast::Expr& metric, const Symbol& symbol,
                                       Scope& scope) {
  std::set<std::string> given;
  for (size_t i = first; i < call.children.size(); ++i) {
    const auto& arg = *call.children[i];
    const std::string& key = call.arg_names[i - 1];
    Type t = check_expr(arg, scope);
    if (key.empty()) {
      Diagnostic& d = error(arg.span, "label values are named: `label = value`");
      if (!symbol.labels.empty())
        DiagnosticEngine::help(
            d, fmt::format("write `{} = {}`", symbol.labels[0], dsl::format_expr(arg)));
      continue;
    }
    if (std::find(symbol.labels.begin(), symbol.labels.end(), key) == symbol.labels.end()) {
      Diagnostic& d = error(arg.span, fmt::format("'{}' has no label '{}'", metric.text, key));
      DiagnosticEngine::note(
          d, symbol.labels.empty()
                 ? std::string("it declares no labels")
                 : fmt::format("its labels are: {}", fmt::join(symbol.labels, ", ")));
      continue;
    }
    if (!given.insert(key).second) {
      error(arg.span, fmt::format("label '{}' given twice", key));
      continue;
    }
    if (!t.is_error() && !t.is(K::kString) && !t.is(K::kInt) && !t.is(K::kBool) &&
        !t.is(K::kStatus)) {
      error(arg.span,
            fmt::format("a label value is a string, int, bool or status, found {}", type_name(t)));
    }
  }
  for (const auto& label : symbol.labels) {
    if (given.count(label) == 0) {
      Diagnostic& d =
          error(call.span, fmt::format("label '{}' of '{}' has no value here", label, metric.text));
      DiagnosticEngine::help(d, fmt::format("add `{} = ...`", label));
    }
  }
}

void ModuleChecker::check_method_call(const dsl::ast::Expr& call, Scope& scope) {
  const auto& callee = *call.children[0];
  const auto& object = *callee.children[0];
  Type t = check_expr(object, scope);
  if (t.is_error()) return;
  if (t.is(K::kCounter) && callee.text == "add") {
    // labelled_counter.add(n, label = value, ...)
    const Symbol* sym =
        object.kind == dsl::ast::ExprKind::kName ? lookup(scope, object.text) : nullptr;
    if (sym == nullptr || sym->kind != Symbol::Kind::kState) {
      error(object.span, "'add' counts into a state counter: `calls.add(1, method = rpc.method)`");
      return;
    }
    if (call.children.size() < 2 || !call.arg_names[0].empty()) {
      error(call.span,
            "'add' takes the amount first, then the label values: "
            "`calls.add(1, method = rpc.method)`");
      return;
    }
    Type n = check_expr(*call.children[1], scope);
    if (!assignable(n, Type::of(K::kInt), *call.children[1])) {
      error(call.children[1]->span,
            fmt::format("a counter is bumped by an int, found {}", type_name(n)));
    }
    check_label_values(call, 2, object, *sym, scope);
    return;
  }
  if (t.is(K::kList) && callee.text == "append") {
    const Symbol* sym =
        object.kind == dsl::ast::ExprKind::kName ? lookup(scope, object.text) : nullptr;
    if (sym == nullptr || sym->kind != Symbol::Kind::kLocal) {
      Diagnostic& d = error(object.span, "'append' adds to a local list");
      DiagnosticEngine::help(d, "build one with `var xs: list<T> = []; xs.append(x);`");
      return;
    }
    if (!sym->is_mutable) {
      Diagnostic& d =
          error(object.span,
                fmt::format("cannot append to '{}': it is declared with `let`", object.text));
      DiagnosticEngine::note(d, "declared here", sym->declared);
      DiagnosticEngine::help(d, fmt::format("declare it with `var {}` to change it", object.text));
      return;
    }
    if (call.children.size() != 2) {
      error(call.span, "'append' takes 1 argument");
      return;
    }
    Type v = check_expr(*call.children[1], scope);
    if (!assignable(v, t.args[0], *call.children[1])) {
      error(call.children[1]->span,
            fmt::format("expected {}, found {}", type_name(t.args[0]), type_name(v)));
    }
    return;
  }
  if (!t.is(K::kSet) || (callee.text != "insert" && callee.text != "remove")) {
    Diagnostic& d =
        error(callee.name_span, fmt::format("{} has no method '{}'", type_name(t), callee.text));
    DiagnosticEngine::note(d,
                           "state sets have `insert(x)` and `remove(x)`, local lists (`var`) "
                           "`append(x)`; maps use `m[k] = v` and `remove m[k]`");
    return;
  }
  if (object.kind != dsl::ast::ExprKind::kName) {
    error(object.span,
          fmt::format("'{}' changes a state set: `s.{}(x);`", callee.text, callee.text));
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

}  // namespace mrpc::compiler
