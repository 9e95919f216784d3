// The .mpol verifier: the safety rules a policy must pass before it loads, checked on the typed
// IR (ir.h) after the checker. Like eBPF's verifier it bounds what a loaded policy can cost:
//   - work per handler (limits::kMaxHandlerWork): statements and expression nodes, loops
//     multiplying their body by their iteration bound, so nested loops multiply;
//   - memory in bytes: worst-case state (limits::kMaxPolicyStateBytes, every container full of
//     its largest entries), string state that grows on every call, strings that double on every
//     loop iteration (limits::kMaxPolicyStringBytes);
//   - constant faults: a division or remainder by a constant zero is a warning (its defined
//     result, docs/mpol-design.md "Run-time faults", is almost surely not what was meant).
// Every rule reports where it is hit and names its limit. Run-time faults the verifier cannot
// rule out have defined results (ir_ops.h, the evaluator).
// Single-threaded; a pure function of the IR.
#pragma once

#include <cstdint>
#include <vector>

#include "mrpc/compiler/ir.h"
#include "mrpc/dsl/diagnostics.h"

namespace mrpc::compiler {

struct VerifyReport {
  // Per policy of the unit, per handler: the static work bound.
  std::vector<std::vector<int64_t>> handler_work;
  // Per policy: worst-case state bytes.
  std::vector<uint64_t> state_bytes;
};

// Reports every violation to `diagnostics`; true when there was no error.
bool verify(const ir::Unit& unit, dsl::DiagnosticEngine& diagnostics,
            VerifyReport* report = nullptr);

}  // namespace mrpc::compiler
