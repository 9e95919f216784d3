// The verifier's rules (verifier.h), each with its limit from limits.h and a diagnostic at the
// place it is hit.
#include "mrpc/compiler/verifier.h"

#include <fmt/format.h>

#include <algorithm>

#include "ir_ops.h"
#include "mrpc/base/limits.h"

namespace mrpc::compiler {

namespace {

using ir::Block;
using ir::Expr;
using ir::ExprKind;
using ir::Kind;
using ir::Stmt;
using ir::StmtKind;

int64_t add(int64_t a, int64_t b) {
  return ir::saturating_add(a, b);
}
int64_t mul(int64_t a, int64_t b) {
  return ir::saturating_mul(a, b);
}

int64_t nodes(const Expr& e) {
  int64_t n = 1;
  for (const auto& c : e.children) n = add(n, nodes(*c));
  return n;
}

bool is_loop(const Stmt& s) {
  return s.kind == StmtKind::kForRange || s.kind == StmtKind::kForEach;
}

// How many times a loop's body runs at most.
int64_t iterations(const Stmt& s) {
  if (s.kind == StmtKind::kForRange) {
    return std::max<int64_t>(0, s.exprs[1]->value.i - s.exprs[0]->value.i);
  }
  const Expr& over = *s.exprs[0];
  if (over.kind == ExprKind::kConst) return static_cast<int64_t>(over.value.items.size());
  if (over.kind == ExprKind::kParam) return limits::kMaxParamElements;
  return limits::kMaxForEachIterations;
}

const char* bound_of(const Stmt& s) {
  if (s.kind != StmtKind::kForEach) return "";
  switch (s.exprs[0]->kind) {
    case ExprKind::kConst:
      return "";
    case ExprKind::kParam:
      return " (a param: at most limits::kMaxParamElements)";
    default:
      return " (a collection: at most limits::kMaxForEachIterations)";
  }
}

int64_t block_work(const Block& b);

int64_t stmt_work(const Stmt& s) {
  int64_t w = 1;
  for (const auto& e : s.exprs) w = add(w, nodes(*e));
  if (s.kind == StmtKind::kIf) {
    int64_t heaviest = 0;
    for (const auto& b : s.blocks) heaviest = std::max(heaviest, block_work(b));
    return add(w, heaviest);
  }
  if (is_loop(s)) return add(w, mul(iterations(s), add(1, block_work(s.blocks[0]))));
  return w;
}

int64_t block_work(const Block& b) {
  int64_t w = 0;
  for (const auto& s : b) w = add(w, stmt_work(*s));
  return w;
}

// The heaviest loop directly or indirectly inside `b` (not inside another loop of `b`).
const Stmt* heaviest_loop(const Block& b) {
  const Stmt* best = nullptr;
  int64_t best_work = -1;
  for (const auto& s : b) {
    const Stmt* candidate = nullptr;
    if (is_loop(*s)) {
      candidate = s.get();
    } else if (s->kind == StmtKind::kIf) {
      for (const auto& inner : s->blocks) {
        const Stmt* l = heaviest_loop(inner);
        if (l != nullptr && (candidate == nullptr || stmt_work(*l) > stmt_work(*candidate)))
          candidate = l;
      }
    }
    if (candidate != nullptr && stmt_work(*candidate) > best_work) {
      best = candidate;
      best_work = stmt_work(*candidate);
    }
  }
  return best;
}

class Verifier {
 public:
  Verifier(const ir::Policy& policy, dsl::DiagnosticEngine& diagnostics)
      : policy_(policy), diagnostics_(diagnostics) {}

  int64_t handler(const ir::Handler& h) {
    int64_t work = block_work(h.body);
    if (work > limits::kMaxHandlerWork) report_work(h);
    walk_block(h.body, 0);
    return work;
  }

  void params() {
    for (const ir::Param& p : policy_.params) {
      size_t n = p.default_value.items.size() / (p.type.is(Kind::kMap) ? 2 : 1);
      if (n > static_cast<size_t>(limits::kMaxParamElements)) {
        diagnostics_.error(p.declared,
                           fmt::format("param '{}' has {} elements, over the limit of {} "
                                       "(limits::kMaxParamElements)",
                                       p.name, n, limits::kMaxParamElements));
      }
    }
  }

  uint64_t state() {
    uint64_t total = 0;
    for (const ir::State& s : policy_.states) {
      uint64_t bytes = state_bytes(s);
      uint64_t before = total;
      total = total + bytes < total ? UINT64_MAX : total + bytes;
      if (before <= limits::kMaxPolicyStateBytes && total > limits::kMaxPolicyStateBytes) {
        dsl::Diagnostic& d = diagnostics_.error(
            s.declared,
            fmt::format("state '{}' may take up to {} bytes, which brings policy '{}' to {} bytes "
                        "of state, over the limit of {} (limits::kMaxPolicyStateBytes)",
                        s.name, bytes, policy_.name, total, limits::kMaxPolicyStateBytes));
        if (s.type.is(Kind::kMap) || s.type.is(Kind::kSet)) {
          dsl::DiagnosticEngine::note(
              d, fmt::format("{} entries of up to {} bytes each (strings count "
                             "limits::kMaxStateStringBytes = {}, responses "
                             "limits::kMaxStoredResponseBytes = {})",
                             s.capacity,
                             bytes / static_cast<uint64_t>(std::max<int64_t>(1, s.capacity)),
                             limits::kMaxStateStringBytes, limits::kMaxStoredResponseBytes));
          dsl::DiagnosticEngine::help(d, "lower the capacity");
        }
      }
    }
    return total;
  }

 private:
  static uint64_t scalar_bytes(const ir::Type& t) {
    if (t.is(Kind::kString) || t.is(Kind::kBytes)) return limits::kMaxStateStringBytes;
    if (t.is(Kind::kResponse)) return limits::kMaxStoredResponseBytes;
    return 8;
  }

  // Per-entry bookkeeping a container needs besides its key and value (order links, hash slot).
  static constexpr uint64_t kEntryOverheadBytes = 64;

  static uint64_t state_bytes(const ir::State& s) {
    uint64_t counts = s.type.is(Kind::kHistogram) ? (s.buckets.size() + 2) * 8 : 8;
    if (!s.labels.empty()) {
      // Every series full: its label values at their longest, its counts, map bookkeeping; the
      // overflow series besides.
      uint64_t series =
          kEntryOverheadBytes + counts + s.labels.size() * limits::kMaxMetricLabelValueBytes;
      return (uint64_t{limits::kMaxMetricLabelSets} + 1) * series;
    }
    if (s.type.is(Kind::kHistogram) || s.type.is(Kind::kCounter)) return counts;
    if (s.type.is(Kind::kSet) || s.type.is(Kind::kMap)) {
      uint64_t entry = kEntryOverheadBytes;
      for (const auto& a : s.type.args) entry += scalar_bytes(a);
      return static_cast<uint64_t>(std::max<int64_t>(0, s.capacity)) * entry;
    }
    return scalar_bytes(s.type);
  }

  // Notes naming the loops of a nest, at most (then "and N more").
  static constexpr int kMaxLoopNotes = 6;

  void report_work(const ir::Handler& h) {
    // Point at the outermost loop that alone goes over the limit, else at the handler.
    const Stmt* loop = heaviest_loop(h.body);
    if (loop != nullptr && stmt_work(*loop) > limits::kMaxHandlerWork) {
      dsl::Diagnostic& d = diagnostics_.error(
          loop->span, fmt::format("this loop nest does up to {} units of work per call, over the "
                                  "limit of {} per handler (limits::kMaxHandlerWork)",
                                  stmt_work(*loop), limits::kMaxHandlerWork));
      int shown = 0;
      for (const Stmt* l = loop; l != nullptr; l = heaviest_loop(l->blocks[0])) {
        if (++shown > kMaxLoopNotes) {
          int more = 0;
          for (; l != nullptr; l = heaviest_loop(l->blocks[0])) ++more;
          dsl::DiagnosticEngine::note(d, fmt::format("and {} more nested loops", more));
          break;
        }
        dsl::DiagnosticEngine::note(
            d, fmt::format("{} iterations here{}", iterations(*l), bound_of(*l)), l->span);
      }
      dsl::DiagnosticEngine::help(d, "nested loops multiply: shorten a range or un-nest the loops");
      return;
    }
    dsl::Diagnostic& d = diagnostics_.error(
        h.span, fmt::format("this handler does up to {} units of work per call, over the limit of "
                            "{} (limits::kMaxHandlerWork)",
                            block_work(h.body), limits::kMaxHandlerWork));
    if (loop != nullptr) {
      dsl::DiagnosticEngine::note(
          d, fmt::format("its heaviest loop does up to {} units", stmt_work(*loop)), loop->span);
    }
  }

  // How often `slot` of `kind` appears as an operand of the `+` chain at the top of `e`.
  static int in_concat(const Expr& e, ExprKind kind, uint32_t slot) {
    if (e.kind == kind && e.slot == slot) return 1;
    if (e.kind == ExprKind::kBinary && e.op == ir::Op::kAdd)
      return in_concat(*e.children[0], kind, slot) + in_concat(*e.children[1], kind, slot);
    return 0;
  }

  void check_growth(const Stmt& s, int loop_depth) {
    const Expr& target = *s.exprs[0];
    const Expr& value = *s.exprs[1];
    if (!target.type.is(Kind::kString) && !target.type.is(Kind::kBytes)) return;
    if (target.kind != ExprKind::kState && target.kind != ExprKind::kLocal) return;
    int self = in_concat(value, target.kind, target.slot) + (s.compound ? 1 : 0);
    if (target.kind == ExprKind::kState && self >= 1 &&
        (s.compound || value.kind == ExprKind::kBinary)) {
      dsl::Diagnostic& d = diagnostics_.error(
          s.span, fmt::format("string state '{}' grows on every call without a bound (limits::"
                              "kMaxStateStringBytes = {})",
                              target.name, limits::kMaxStateStringBytes));
      dsl::DiagnosticEngine::note(
          d, "once it is longer than the limit, every call that stores it faults and is rejected");
      dsl::DiagnosticEngine::help(
          d, fmt::format("keep a bounded part: `{0} = substr({0} + x, 0, N);`", target.name));
      return;
    }
    if (loop_depth > 0 && self >= 2) {
      dsl::Diagnostic& d = diagnostics_.error(
          s.span, fmt::format("string '{}' doubles on every loop iteration: it outgrows the limit "
                              "of {} bytes (limits::kMaxPolicyStringBytes)",
                              target.name, limits::kMaxPolicyStringBytes));
      dsl::DiagnosticEngine::note(d, "a string past the limit faults and the call is rejected");
    }
  }

  void walk_expr(const Expr& e) {
    for (const auto& c : e.children) walk_expr(*c);
    if (e.kind == ExprKind::kBinary && (e.op == ir::Op::kDiv || e.op == ir::Op::kRem) &&
        e.children[1]->kind == ExprKind::kConst && e.children[1]->value.i == 0 &&
        !e.children[1]->type.is(Kind::kFloat)) {
      diagnostics_.warning(e.span,
                           e.op == ir::Op::kDiv
                               ? "division by zero: the result is always 0"
                               : "remainder by zero: the result is always the left operand");
      return;
    }
    bool all_const = !e.children.empty();
    for (const auto& c : e.children) all_const = all_const && c->kind == ExprKind::kConst;
    if (!all_const || (e.kind != ExprKind::kBinary && e.kind != ExprKind::kUnary)) return;
    // A constant expression the builder did not fold: it faults every time it runs.
    if (e.type.is(Kind::kInt)) {
      diagnostics_.warning(e.span, "this constant expression overflows int64: the result wraps");
    } else if (e.type.is(Kind::kDuration) || e.type.is(Kind::kTime)) {
      diagnostics_.warning(e.span,
                           "this constant expression overflows int64 nanoseconds: it saturates");
    }
  }

  void walk_block(const Block& b, int loop_depth) {
    for (const auto& s : b) {
      for (const auto& e : s->exprs) walk_expr(*e);
      if (s->kind == StmtKind::kAssign) check_growth(*s, loop_depth);
      for (const auto& inner : s->blocks) walk_block(inner, loop_depth + (is_loop(*s) ? 1 : 0));
    }
  }

  const ir::Policy& policy_;
  dsl::DiagnosticEngine& diagnostics_;
};

}  // namespace

bool verify(const ir::Unit& unit, dsl::DiagnosticEngine& diagnostics, VerifyReport* report) {
  size_t before = diagnostics.error_count();
  for (const ir::Policy& p : unit.policies) {
    Verifier v(p, diagnostics);
    std::vector<int64_t> work;
    for (const ir::Handler& h : p.handlers) work.push_back(v.handler(h));
    v.params();
    uint64_t bytes = v.state();
    if (report != nullptr) {
      report->handler_work.push_back(std::move(work));
      report->state_bytes.push_back(bytes);
    }
  }
  return diagnostics.error_count() == before;
}

}  // namespace mrpc::compiler
