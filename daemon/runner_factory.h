// The one place the daemon chooses what executes a policy: the JIT-compiled policy
// (compiler/policy_jit.h), or the IR evaluator (PolicyInstance) where LLVM could not be set up or
// refuses a module (logged). Everything else in the daemon sees only compiler::PolicyRunner.
// Any thread; the runner it returns borrows `policy`, `clock` and `random` (they must outlive it).
#pragma once

#include <memory>

#include "mrpc/base/clock.h"
#include "mrpc/base/random.h"
#include "mrpc/compiler/ir.h"
#include "mrpc/compiler/policy_jit.h"
#include "mrpc/compiler/policy_runner.h"

namespace mrpc {

std::unique_ptr<compiler::PolicyRunner> make_policy_runner(const compiler::ir::Policy& policy,
                                                           const Clock& clock,
                                                           RandomSource& random);
// What make_policy_runner returns, for `list` and `show`: "jit" or "evaluator".
const char* policy_runner_kind();

// The policy JIT's on-disk object cache (compiler::PolicyCompiler::use_object_cache): the JIT is
// one per process, so the last daemon started in a process names the directory. Nothing happens
// (OK) when policies run on the evaluator. FAILED_PRECONDITION for an unsafe directory.
Status use_policy_object_cache(const std::string& directory);
// The policy JIT's counters (all zero on the evaluator); process-wide, like the JIT.
compiler::PolicyCompileStats policy_compile_stats();

}  // namespace mrpc
