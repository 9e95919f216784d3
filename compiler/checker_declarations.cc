// The checker's declarations: the items of a module (consts, policies, marshal rules), a
// policy's `applies to` patterns, params, state (containers, histograms) and `schedule`, the
// scopes that hold them, and the rules a `marshal` block must follow.
#include <fmt/format.h>

#include <algorithm>

#include "checker_internal.h"
#include "mrpc/base/limits.h"
#include "mrpc/dsl/format.h"

namespace mrpc::compiler {

namespace {

// What `module` and, transitively, its imports declare (each module once).
void collect_visible(const Module& module, Visible& out, std::set<const Module*>& seen) {
  if (!seen.insert(&module).second || !module.file) return;
  for (const auto& item : module.file->items) {
    if (auto* c = std::get_if<dsl::ast::Const>(&item)) out.consts.emplace(c->name, c);
  }
  for (auto* p : module.protos) out.protos.push_back(p);
  for (auto* m : module.imports) collect_visible(*m, out, seen);
}

}  // namespace

ModuleChecker::ModuleChecker(Module& module, DiagnosticEngine& diagnostics,
                             std::vector<PolicySummary>& out)
    : module_(module), diagnostics_(diagnostics), summaries_(out) {
  std::set<const Module*> seen;
  collect_visible(module, visible_, seen);
  for (auto* file : visible_.protos) {
    for (int s = 0; s < file->service_count(); ++s) services_.push_back(file->service(s));
  }
  if (!visible_.protos.empty()) pool_ = visible_.protos[0]->pool();
}

void ModuleChecker::run() {
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

// While quiet_ > 0 (typing a const through a reference to it) errors are not reported: the
// const's own declaration reports them once, in its own file.
Diagnostic& ModuleChecker::error(Span span, std::string message) {
  if (quiet_ > 0) {
    scratch_ = Diagnostic{};
    return scratch_;
  }
  return diagnostics_.error(span, std::move(message));
}

// ---- consts ----

void ModuleChecker::check_consts() {
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
    Type t = check_constant(*c->value, scope,
                            c->type ? std::optional(resolve_type(*c->type, false)) : std::nullopt);
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

bool ModuleChecker::runs_on(const Scope& scope, dsl::ast::HandlerKind kind) {
  return std::find(scope.handlers.begin(), scope.handlers.end(), kind) != scope.handlers.end();
}

// The first event of the current handler that is not one of `allowed`, if there is one.
std::optional<dsl::ast::HandlerKind> ModuleChecker::event_outside(
    const Scope& scope, std::initializer_list<dsl::ast::HandlerKind> allowed) {
  for (auto kind : scope.handlers) {
    if (std::find(allowed.begin(), allowed.end(), kind) == allowed.end()) return kind;
  }
  return std::nullopt;
}

const Symbol* ModuleChecker::lookup(const Scope& scope, const std::string& name) {
  for (auto it = scope.frames.rbegin(); it != scope.frames.rend(); ++it) {
    auto found = it->find(name);
    if (found != it->end()) return &found->second;
  }
  return nullptr;
}

void ModuleChecker::declare(Scope& scope, const std::string& name, Span at, Symbol symbol) {
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

std::vector<std::string> ModuleChecker::names_in_scope(const Scope& scope) {
  std::vector<std::string> out = {"req", "resp", "rpc"};
  for (const auto& frame : scope.frames) {
    for (const auto& [name, _] : frame) out.push_back(name);
  }
  for (const auto& [name, _] : visible_.consts) out.push_back(name);
  return out;
}

// ---- patterns ----

std::vector<const pb::MethodDescriptor*> ModuleChecker::match(const dsl::ast::Pattern& p) {
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

void ModuleChecker::suggest_method(Diagnostic& d, const dsl::ast::Pattern& p) {
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
std::vector<const pb::MethodDescriptor*> ModuleChecker::resolve_patterns(
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
    if (std::find(scope.request.messages.begin(), scope.request.messages.end(), m->input_type()) ==
        scope.request.messages.end()) {
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

void ModuleChecker::check_policy(const dsl::ast::Policy& policy) {
  Scope scope;
  const dsl::ast::AppliesTo* applies = nullptr;
  std::map<dsl::ast::HandlerKind, Span> handlers;
  const dsl::ast::Schedule* schedule = nullptr;
  for (const auto& member : policy.members) {
    if (auto* a = std::get_if<dsl::ast::AppliesTo>(&member)) {
      if (applies != nullptr) {
        Diagnostic& d =
            error(a->span, fmt::format("policy '{}' has more than one `applies to`", policy.name));
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
  uint32_t call_variables = 0;
  for (const auto& member : policy.members) {
    if (auto* p = std::get_if<dsl::ast::Param>(&member)) {
      Type t = resolve_type(p->type, false);
      if (!t.is_error() && !t.is_scalar() && !t.is(K::kList) && !t.is(K::kSet) && !t.is(K::kMap)) {
        error(p->type.span, fmt::format("a param cannot be a {}", type_name(t)));
      }
      check_constant(*p->default_value, scope, t);
      Symbol s;
      s.kind = Symbol::Kind::kParam;
      s.type = t;
      s.default_value = p->default_value.get();
      declare(scope, p->name, p->name_span, s);
    } else if (auto* var = std::get_if<dsl::ast::State>(&member); var != nullptr && var->per_call) {
      Symbol s;
      s.kind = Symbol::Kind::kCallVariable;
      s.type = check_call_variable(*var, scope);
      s.is_mutable = true;
      if (++call_variables > limits::kMaxPolicyCallVariables) {
        error(var->name_span, fmt::format("policy '{}' declares more than {} per-call variables "
                                          "(limits::kMaxPolicyCallVariables)",
                                          policy.name, limits::kMaxPolicyCallVariables));
      }
      declare(scope, var->name, var->name_span, s);
    } else if (auto* st = std::get_if<dsl::ast::State>(&member)) {
      Symbol s;
      s.kind = Symbol::Kind::kState;
      s.type = check_state(*st, scope);
      s.is_mutable = true;
      if (s.type.is(K::kCounter) || s.type.is(K::kHistogram)) s.labels = check_labels(*st);
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
    Diagnostic& d = error(schedule->span, "`schedule` in a policy that never sets `rpc.priority`");
    DiagnosticEngine::help(d, "set `rpc.priority = N;` in `on request`, or remove the schedule");
  }
  summaries_.push_back(std::move(summary));
}

Type ModuleChecker::check_call_variable(const dsl::ast::State& var, Scope& scope) {
  Type t = resolve_type(var.type, false);
  if (t.is_error()) return t;
  if (!t.is_scalar()) {
    Diagnostic& d =
        error(var.type.span, fmt::format("per-call variable '{}' is a {}: only scalars are carried "
                                         "with a call",
                                         var.name, type_name(t)));
    DiagnosticEngine::help(d, "keep a string key, and look it up in a state map");
    return Type::of(K::kError);
  }
  if (var.initial) check_constant(*var.initial, scope, t);
  return t;
}

std::vector<std::string> ModuleChecker::check_labels(const dsl::ast::State& st) {
  std::vector<std::string> labels;
  for (const auto& arg : st.args) {
    if (arg.key != "label") continue;
    const auto& v = *arg.value;
    if (v.kind != dsl::ast::ExprKind::kName) {
      Diagnostic& d = error(v.span, "a label is named by a word: `label method`");
      DiagnosticEngine::help(d,
                             "the value comes where the metric is counted: "
                             "`calls.add(1, method = rpc.method)`");
      continue;
    }
    if (v.text == "policy" || v.text == "state" || v.text == "le" || v.text.rfind("__", 0) == 0) {
      error(v.span, fmt::format("label '{}' is reserved (the daemon's export uses `policy`, "
                                "`state` and `le`; `__` starts Prometheus' own)",
                                v.text));
      continue;
    }
    if (std::find(labels.begin(), labels.end(), v.text) != labels.end()) {
      error(v.span, fmt::format("label '{}' is declared twice", v.text));
      continue;
    }
    labels.push_back(v.text);
  }
  if (labels.size() > limits::kMaxMetricLabels) {
    error(st.name_span, fmt::format("metric '{}' declares {} labels, over the limit of {} "
                                    "(limits::kMaxMetricLabels)",
                                    st.name, labels.size(), limits::kMaxMetricLabels));
  }
  return labels;
}

Type ModuleChecker::check_state(const dsl::ast::State& st, Scope& scope) {
  Type t = resolve_type(st.type, true);
  if (t.is_error()) return t;
  if (st.initial) {
    const Symbol* param =
        st.initial->kind == dsl::ast::ExprKind::kName ? lookup(scope, st.initial->text) : nullptr;
    if (t.is_scalar() && param != nullptr && param->kind == Symbol::Kind::kParam) {
      // Starts from a param (declared before it): the value given at attach time.
      if (!param->type.is_error() && type_name(param->type) != type_name(t)) {
        error(st.initial->span,
              fmt::format("state '{}' of type {} cannot start from param '{}' of type {}", st.name,
                          type_name(t), st.initial->text, type_name(param->type)));
      }
    } else if (t.is_scalar()) {
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
  if (t.is_scalar()) {
    no_args();
    return t;
  }
  if (t.is(K::kCounter)) {
    for (const auto& arg : st.args) {
      if (arg.key != "label") {
        Diagnostic& d = error(arg.key.empty() ? arg.value->span : arg.key_span,
                              "a counter's only options are labels");
        DiagnosticEngine::help(d, "write `counter[label method, label code]`");
      }
    }
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
    bool has_bounds = false;
    for (const auto& arg : st.args) {
      if (arg.key == "label") continue;
      if (!arg.key.empty()) {
        error(arg.key_span, "histogram options are bucket bounds and labels only");
        continue;
      }
      has_bounds = true;
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
    if (!has_bounds) {
      Diagnostic& d =
          error(st.span, fmt::format("histogram '{}' needs its bucket bounds", st.name));
      DiagnosticEngine::help(d, "write `histogram[1ms, 5ms, 10ms, label method]`");
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
std::optional<int64_t> ModuleChecker::int_or_int_param(const dsl::ast::Expr& e, Scope& scope,
                                                       const char* what, std::string& from_param) {
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

void ModuleChecker::check_schedule(const dsl::ast::Schedule& sc, Scope& scope) {
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

void ModuleChecker::collect_marshal_patterns(const Module& module, std::set<const Module*>& seen) {
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
void ModuleChecker::check_marshal_overlap(const dsl::ast::Marshal& marshal) {
  std::string text = dsl::ast::pattern_text(marshal.pattern);
  auto [it, fresh] = marshal_patterns_.emplace(text, marshal.pattern.span);
  if (fresh) return;
  Diagnostic& d =
      error(marshal.pattern.span,
            fmt::format("two `marshal {}` rules: equally specific rules cannot both apply", text));
  DiagnosticEngine::note(d, "the other rule is here", it->second);
  DiagnosticEngine::help(d, "merge them into one rule, or make one more specific");
}

void ModuleChecker::check_marshal(const dsl::ast::Marshal& marshal) {
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

}  // namespace mrpc::compiler
