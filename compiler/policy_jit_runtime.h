// The runtime library of JIT-compiled policies: the frame a compiled handler runs with, and the
// helper functions it calls (registered with the Jit as absolute symbols, by name). No LLVM here.
//
// A compiled handler is `void handler(JitHeader*)`. It reads the header's fields at fixed
// offsets (JitHeader is plain data) and ir::Value cells (locals, params, scalar state, temps) at
// the offsets ValueLayout gives. Helpers that see `*ended` set do nothing and return zero, like
// the evaluator's eval() after the handler ended, so the random source and fault counts stay in
// step with the evaluator.
// Private to the compiler; one frame per CompiledPolicy, used by the thread running it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "compiler/eval_session.h"
#include "mrpc/base/clock.h"
#include "mrpc/base/random.h"
#include "mrpc/compiler/ir.h"
#include "mrpc/jit/jit.h"

namespace mrpc::compiler {

// What generated code reads directly. Field order is the lowering's contract (offsetof below).
struct JitHeader {
  mrpc_rpc_view* rpc;
  ir::Value* locals;
  ir::Value* scalars;  // state cells (scalars and counters), by state slot
  ir::Value* params;
  ir::Value* temps;  // one cell per IR node, for values handed around by pointer
  bool* ended;       // the run's "handler ended" flag (shared with the evaluator's session)
  void* frame;       // the JitFrame
  int64_t method;    // the index into Policy::methods this call matched (-1: generic policy)
};

// Byte offsets of the parts of an ir::Value generated code touches, and its size.
struct ValueLayout {
  uint64_t size, kind, i, f;
};
ValueLayout value_layout();

// Every expression and statement of a policy in one fixed order (handlers, then statements
// depth-first, expressions depth-first): the ids the lowering bakes into calls. Two policies with
// the same IR dump number the same way, so one module serves both.
struct NodeTable {
  std::vector<const ir::Expr*> exprs;
  std::vector<const ir::Stmt*> stmts;
};
NodeTable number_nodes(const ir::Policy& policy);

struct JitFrame {
  JitFrame(PolicyInstance& instance, const Clock& clock, RandomSource& random,
           const ir::Policy& policy);

  JitHeader header{};
  EvalSession session;
  NodeTable nodes;
  std::vector<ir::Value> temps;
  ir::Value key;  // a reused cell for container look-ups by a string key
  Verdict* verdict = nullptr;
  const Clock& clock;
  RandomSource& random;
};

// The runtime library's symbols ("mpolrt_*").
std::vector<jit::HostSymbol> policy_runtime_symbols();

// Packs an operation for mpolrt_arith / mpolrt_unary: op, result kind, operand kinds.
constexpr uint32_t pack_op(ir::Op op, ir::Kind result, ir::Kind a, ir::Kind b) {
  return static_cast<uint32_t>(op) | static_cast<uint32_t>(result) << 8 |
         static_cast<uint32_t>(a) << 16 | static_cast<uint32_t>(b) << 24;
}

}  // namespace mrpc::compiler
