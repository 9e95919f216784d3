// The IR's values, names and its readable dump (ir.h).
#include "mrpc/compiler/ir.h"

#include <fmt/format.h>

#include <cmath>

#include "mrpc/base/status.h"

namespace mrpc::compiler::ir {

std::string type_text(const Type& t) {
  switch (t.kind) {
    case Kind::kVoid:
      return "nothing";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kBool:
      return "bool";
    case Kind::kString:
      return "string";
    case Kind::kBytes:
      return "bytes";
    case Kind::kDuration:
      return "duration";
    case Kind::kTime:
      return "time";
    case Kind::kStatus:
      return "status";
    case Kind::kList:
      return "list<" + type_text(t.args[0]) + ">";
    case Kind::kSet:
      return "set<" + type_text(t.args[0]) + ">";
    case Kind::kMap:
      return "map<" + type_text(t.args[0]) + ", " + type_text(t.args[1]) + ">";
    case Kind::kCounter:
      return "counter";
    case Kind::kHistogram:
      return "histogram";
    case Kind::kResponse:
      return "response";
    case Kind::kMessage: {
      std::string names;
      for (const MessageLayout* l : t.layouts) {
        std::string n = l != nullptr ? l->full_name() : "-";
        if (names.find(n) == std::string::npos) names += (names.empty() ? "" : "|") + n;
      }
      return "message " + names;
    }
  }
  return "?";
}

Value Value::zero(const Type& type) {
  Value v;
  v.kind = type.kind;
  return v;
}

namespace {

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (u < 0x20 || u == 0x7f) {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string duration_text(int64_t ns) {
  if (ns == 0) return "0s";
  struct Unit {
    int64_t ns;
    const char* name;
  };
  static constexpr Unit units[] = {{3600'000'000'000, "h"},
                                   {60'000'000'000, "m"},
                                   {1'000'000'000, "s"},
                                   {1'000'000, "ms"},
                                   {1'000, "us"}};
  for (const Unit& u : units) {
    if (ns % u.ns == 0) return fmt::format("{}{}", ns / u.ns, u.name);
  }
  return fmt::format("{}ns", ns);
}

}  // namespace

std::string value_text(const Value& v) {
  switch (v.kind) {
    case Kind::kVoid:
      return "()";
    case Kind::kInt:
      return std::to_string(v.i);
    case Kind::kFloat: {
      std::string s = fmt::format("{}", v.f);
      if (std::isfinite(v.f) && s.find_first_of(".e") == std::string::npos) s += ".0";
      return s;
    }
    case Kind::kBool:
      return v.i != 0 ? "true" : "false";
    case Kind::kString:
      return quote(v.s);
    case Kind::kBytes:
      return "b" + quote(v.s);
    case Kind::kDuration:
      return duration_text(v.i);
    case Kind::kTime:
      return fmt::format("time({}ns)", v.i);
    case Kind::kStatus:
      return std::string(status_code_name(static_cast<StatusCode>(v.i)));
    case Kind::kList:
    case Kind::kSet: {
      std::string out = v.kind == Kind::kList ? "[" : "{";
      for (size_t i = 0; i < v.items.size(); ++i)
        out += (i > 0 ? ", " : "") + value_text(v.items[i]);
      return out + (v.kind == Kind::kList ? "]" : "}");
    }
    case Kind::kMap: {
      std::string out = "{";
      for (size_t i = 0; i + 1 < v.items.size(); i += 2)
        out += (i > 0 ? ", " : "") + value_text(v.items[i]) + ": " + value_text(v.items[i + 1]);
      return out + "}";
    }
    default:
      return "<" + type_text(Type::of(v.kind)) + ">";
  }
}

bool operator==(const Value& a, const Value& b) {
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::kFloat:
      return a.f == b.f;
    case Kind::kString:
    case Kind::kBytes:
      return a.s == b.s;
    case Kind::kList:
    case Kind::kSet:
    case Kind::kMap:
      return a.items == b.items;
    default:
      return a.i == b.i;
  }
}

bool operator<(const Value& a, const Value& b) {
  if (a.kind != b.kind) return a.kind < b.kind;
  switch (a.kind) {
    case Kind::kFloat:
      return a.f < b.f;
    case Kind::kString:
    case Kind::kBytes:
      return a.s < b.s;
    default:
      return a.i < b.i;
  }
}

const char* rpc_field_text(RpcField field) {
  switch (field) {
    case RpcField::kService:
      return "rpc.service";
    case RpcField::kMethod:
      return "rpc.method";
    case RpcField::kCallerApp:
      return "rpc.caller.app";
    case RpcField::kCallerHost:
      return "rpc.caller.host";
    case RpcField::kCallerUid:
      return "rpc.caller.uid";
    case RpcField::kDeadline:
      return "rpc.deadline";
    case RpcField::kRemaining:
      return "rpc.remaining";
    case RpcField::kSize:
      return "rpc.size";
    case RpcField::kStatus:
      return "rpc.status";
    case RpcField::kLatency:
      return "rpc.latency";
    case RpcField::kPriority:
      return "rpc.priority";
    case RpcField::kEndpoint:
      return "rpc.endpoint";
    case RpcField::kEndpoints:
      return "rpc.endpoints";
    case RpcField::kAttempt:
      return "rpc.attempt";
    case RpcField::kMetadata:
      return "rpc.metadata";
  }
  return "rpc.?";
}

const char* op_text(Op op) {
  static constexpr const char* names[] = {"neg", "!",  "+", "-",  "*",  "/",  "%",  "==",    "!=",
                                          "<",   "<=", ">", ">=", "&&", "||", "in", "not in"};
  return names[static_cast<size_t>(op)];
}

const char* event_text(Event event) {
  switch (event) {
    case Event::kRequest:
      return "request";
    case Event::kResponse:
      return "response";
    case Event::kError:
      return "error";
  }
  return "?";
}

const Handler* Policy::handler_for(Event event) const {
  for (const Handler& h : handlers) {
    for (Event e : h.events) {
      if (e == event) return &h;
    }
  }
  return nullptr;
}

// ---- dump ----

namespace {

class Dumper {
 public:
  explicit Dumper(const Policy& policy) : policy_(policy) {}

  std::string expr(const Expr& e) {
    switch (e.kind) {
      case ExprKind::kConst:
        return value_text(e.value);
      case ExprKind::kParam:
        return fmt::format("param#{}:{}", e.slot, e.name);
      case ExprKind::kState:
        return fmt::format("state#{}:{}", e.slot, e.name);
      case ExprKind::kLocal:
        return fmt::format("local#{}:{}", e.slot, e.name);
      case ExprKind::kCallVariable:
        return fmt::format("call#{}:{}", e.slot, e.name);
      case ExprKind::kRpc:
        return rpc_field_text(e.rpc_field);
      case ExprKind::kMetadata:
        return fmt::format("(metadata {})", expr(*e.children[0]));
      case ExprKind::kMessageRoot:
        return e.request ? "req" : "resp";
      case ExprKind::kField: {
        std::string steps;
        for (size_t m = 0; m < e.steps.size(); ++m) {
          const FieldStep& s = e.steps[m];
          if (s.field == nullptr) {
            steps += fmt::format(" m{}:-", m);
            continue;
          }
          steps +=
              fmt::format(" m{}:{}+{}:{}{}{}", m, s.holder->full_name(), s.field->offset,
                          field_kind_name(s.field->kind),
                          s.field->is_map ? "[map]" : (s.field->repeated ? "[]" : ""),
                          s.field->presence_bit >= 0 ? fmt::format(":p{}", s.field->presence_bit)
                                                     : std::string());
        }
        return fmt::format("(field {} .{}{}): {}", expr(*e.children[0]), e.name, steps,
                           type_text(e.type));
      }
      case ExprKind::kIndex:
        return fmt::format("(index {} {}): {}", expr(*e.children[0]), expr(*e.children[1]),
                           type_text(e.type));
      case ExprKind::kUnary:
        return fmt::format("({} {}): {}", op_text(e.op), expr(*e.children[0]), type_text(e.type));
      case ExprKind::kBinary:
        return fmt::format("({} {} {}): {}", op_text(e.op), expr(*e.children[0]),
                           expr(*e.children[1]), type_text(e.type));
      case ExprKind::kCall: {
        std::string out = fmt::format("(call {}", builtin_info(e.builtin).name);
        for (const auto& c : e.children) out += " " + expr(*c);
        return out + "): " + type_text(e.type);
      }
      case ExprKind::kList:
      case ExprKind::kSet:
      case ExprKind::kMap: {
        std::string out = e.kind == ExprKind::kList  ? "(list"
                          : e.kind == ExprKind::kSet ? "(set"
                                                     : "(map";
        for (const auto& c : e.children) out += " " + expr(*c);
        return out + "): " + type_text(e.type);
      }
    }
    return "?";
  }

  void block(const Block& b, int depth, std::string& out) {
    for (const auto& s : b) stmt(*s, depth, out);
  }

  void stmt(const Stmt& s, int depth, std::string& out) {
    std::string pad(static_cast<size_t>(depth) * 2, ' ');
    switch (s.kind) {
      case StmtKind::kLet:
        out += fmt::format("{}let local#{} = {}\n", pad, s.slot, expr(*s.exprs[0]));
        return;
      case StmtKind::kAssign:
        out += fmt::format("{}{} {} {}\n", pad, expr(*s.exprs[0]),
                           !s.compound ? "=" : (s.op == Op::kAdd ? "+=" : "-="), expr(*s.exprs[1]));
        return;
      case StmtKind::kRemove:
        out += fmt::format("{}remove {}\n", pad, expr(*s.exprs[0]));
        return;
      case StmtKind::kSetInsert:
      case StmtKind::kSetRemove:
        out += fmt::format("{}{} state#{}:{} {}\n", pad,
                           s.kind == StmtKind::kSetInsert ? "insert" : "erase", s.slot,
                           policy_.states[s.slot].name, expr(*s.exprs[0]));
        return;
      case StmtKind::kClear:
        out += fmt::format("{}clear {}\n", pad, expr(*s.exprs[0]));
        return;
      case StmtKind::kListAppend:
        out += fmt::format("{}append local#{} {}\n", pad, s.slot, expr(*s.exprs[0]));
        return;
      case StmtKind::kIf:
        for (size_t i = 0; i < s.blocks.size(); ++i) {
          if (i < s.exprs.size()) {
            out += fmt::format("{}{} {}\n", pad, i == 0 ? "if" : "elif", expr(*s.exprs[i]));
          } else {
            out += pad + "else\n";
          }
          block(s.blocks[i], depth + 1, out);
        }
        return;
      case StmtKind::kForRange:
        out += fmt::format("{}for local#{} in {}..{}\n", pad, s.slot, expr(*s.exprs[0]),
                           expr(*s.exprs[1]));
        block(s.blocks[0], depth + 1, out);
        return;
      case StmtKind::kForEach:
        out += fmt::format("{}for local#{} in {}\n", pad, s.slot, expr(*s.exprs[0]));
        block(s.blocks[0], depth + 1, out);
        return;
      case StmtKind::kPass:
        out += pad + "pass\n";
        return;
      case StmtKind::kDrop:
        out += pad + "drop\n";
        return;
      case StmtKind::kBreak:
        out += pad + "break\n";
        return;
      case StmtKind::kAction: {
        out += fmt::format("{}{}", pad, action_info(s.action).name);
        for (size_t i = 0; i < s.exprs.size(); ++i) {
          bool named = s.action == Action::kLog && i > 0;
          bool label = s.action == Action::kObserve && i > 1;
          out += " " +
                 (named   ? s.log_keys[i - 1] + "="
                  : label ? policy_.states[s.exprs[0]->slot].labels[i - 2] + "="
                          : std::string()) +
                 expr(*s.exprs[i]);
        }
        out += "\n";
        return;
      }
      case StmtKind::kCounterAdd: {
        const State& counter = policy_.states[s.slot];
        out += fmt::format("{}add state#{}:{} {}", pad, s.slot, counter.name, expr(*s.exprs[0]));
        for (size_t i = 1; i < s.exprs.size(); ++i)
          out += fmt::format(" {}={}", counter.labels[i - 1], expr(*s.exprs[i]));
        out += "\n";
        return;
      }
    }
  }

 private:
  const Policy& policy_;
};

const char* evict_text(Evict e) {
  switch (e) {
    case Evict::kLru:
      return "lru";
    case Evict::kFifo:
      return "fifo";
    case Evict::kReject:
      return "reject";
  }
  return "?";
}

}  // namespace

std::string dump(const Unit& unit) {
  std::string out;
  for (const Policy& p : unit.policies) out += dump(p);
  return out;
}

std::string dump(const Policy& p) {
  std::string out;
  {
    Dumper d(p);
    std::string patterns;
    for (const auto& s : p.patterns) patterns += (patterns.empty() ? "" : ", ") + s;
    out += fmt::format("policy {} at {} applies to {}{}{}\n", p.name,
                       p.placement == Placement::kCaller ? "caller" : "callee", patterns,
                       p.schema_known ? "" : " (generic: no schema)",
                       p.reads_message ? " (reads message fields)" : "");
    for (size_t m = 0; m < p.methods.size(); ++m) {
      const Method& method = p.methods[m];
      out += fmt::format("  method m{} {}: {} fp={:016x} -> {} fp={:016x}\n", m, method.full_name,
                         method.input->full_name(), method.input->fingerprint(),
                         method.output->full_name(), method.output->fingerprint());
    }
    for (size_t i = 0; i < p.params.size(); ++i) {
      out += fmt::format("  param#{} {}: {} = {}\n", i, p.params[i].name,
                         type_text(p.params[i].type), value_text(p.params[i].default_value));
    }
    for (size_t i = 0; i < p.states.size(); ++i) {
      const State& s = p.states[i];
      std::string extra;
      if (s.type.is_scalar()) {
        extra = s.initial_param >= 0 ? fmt::format(" = param#{} (default {})", s.initial_param,
                                                   value_text(s.initial))
                                     : " = " + value_text(s.initial);
      }
      if (s.type.is(Kind::kMap) || s.type.is(Kind::kSet)) {
        extra = s.capacity_param >= 0
                    ? fmt::format(" [capacity param#{} (default {}), evict {}]", s.capacity_param,
                                  s.capacity, evict_text(s.evict))
                    : fmt::format(" [capacity {}, evict {}]", s.capacity, evict_text(s.evict));
      }
      if (s.type.is(Kind::kHistogram)) {
        extra = " [";
        for (size_t b = 0; b < s.buckets.size(); ++b)
          extra += (b > 0 ? ", " : "") + value_text(s.buckets[b]);
        extra += "]";
      }
      if (!s.labels.empty()) {
        extra += " by (";
        for (size_t l = 0; l < s.labels.size(); ++l) extra += (l > 0 ? ", " : "") + s.labels[l];
        extra += ")";
      }
      out += fmt::format("  state#{} {}: {}{}\n", i, s.name, type_text(s.type), extra);
    }
    for (size_t i = 0; i < p.call_variables.size(); ++i) {
      const CallVariable& v = p.call_variables[i];
      out += fmt::format("  call#{} {}: {} = {}\n", i, v.name, type_text(v.type),
                         value_text(v.initial));
    }
    if (p.schedule.kind == Schedule::Kind::kStrict) out += "  schedule strict\n";
    if (p.schedule.kind == Schedule::Kind::kWeighted) {
      std::string w;
      for (size_t i = 0; i < p.schedule.weights.size(); ++i) {
        w += (i > 0 ? ", " : "") +
             (p.schedule.weight_params[i] >= 0
                  ? fmt::format("param#{} (default {})", p.schedule.weight_params[i],
                                p.schedule.weights[i])
                  : std::to_string(p.schedule.weights[i]));
      }
      out += "  schedule weighted [" + w + "]\n";
    }
    for (const Handler& h : p.handlers) {
      std::string events;
      for (Event e : h.events) events += (events.empty() ? "" : ", ") + std::string(event_text(e));
      out += fmt::format("  on {}\n", events);
      for (size_t i = 0; i < h.locals.size(); ++i) {
        out += fmt::format("    local#{} {}: {}{}\n", i, h.locals[i].name,
                           type_text(h.locals[i].type), h.locals[i].is_mutable ? " (var)" : "");
      }
      std::string body;
      d.block(h.body, 2, body);
      out += body;
    }
  }
  return out;
}

}  // namespace mrpc::compiler::ir
