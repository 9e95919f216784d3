// The run-time meaning of .mpol operators and pure builtins on ir::Values, in one place: the IR
// builder folds constants with it and the evaluator runs with it, so both agree by construction
// (the LLVM lowering must match it; docs/mpol-design.md "Run-time faults" is the contract).
// Every fault has a defined result; `fault` is set when one happened (the folder then leaves
// the expression for run time, where the verifier and the evaluator see it).
// Private to the compiler. Pure functions; any thread.
#pragma once

#include <span>

#include "mrpc/compiler/ir.h"

namespace mrpc::compiler::ir {

// `-a`, `!a`.
Value apply_unary(Op op, const Value& a, bool& fault);
// Arithmetic and comparisons on scalars; `result` is the expression's type kind (a duration
// times a float is a duration). `&&`, `||`, `in` are not here (they short-circuit or look into
// containers): the evaluator does them.
Value apply_binary(Op op, const Value& a, const Value& b, Kind result, bool& fault);
// A pure builtin (not now/random/has, not len of a message field) on values.
Value apply_builtin(Builtin builtin, std::span<const Value> args, Kind result, bool& fault);
// `x in container` for a list, set or map value.
bool contains_value(const Value& container, const Value& x);
// Saturating int64 nanosecond arithmetic for durations and times.
int64_t saturating_add(int64_t a, int64_t b);
int64_t saturating_mul(int64_t a, int64_t b);
// A string value longer than limits::kMaxPolicyStringBytes is a fault.
bool string_too_long(const Value& v);

}  // namespace mrpc::compiler::ir
