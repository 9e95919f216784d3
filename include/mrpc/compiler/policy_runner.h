// PolicyRunner: one attachment of one policy that the daemon can run, whatever executes it. The
// IR evaluator (evaluator.h, PolicyInstance) and the JIT-compiled policy both implement it, so
// the daemon's policy operator (the adapter from a Verdict to Output calls) and the tests that
// compare the two depend on this interface only.
//
// Threads: a runner is run by one runtime thread at a time; set_param/state/set_state are called
// by the control plane between runs (never while `run` is running on another thread).
// Ownership: a runner borrows the ir::Policy it was made from (and its Unit), which must outlive
// it.
#pragma once

#include <string>

#include "mrpc/base/status.h"
#include "mrpc/compiler/ir.h"
#include "mrpc/dataflow/rpc_view.h"

namespace mrpc::compiler {

struct Verdict;

class PolicyRunner {
 public:
  virtual ~PolicyRunner() = default;

  // A param's value given at attach time (type and limits checked): INVALID_ARGUMENT otherwise.
  virtual Status set_param(const std::string& name, ir::Value value) = 0;
  // Runs the handler for `event` into `verdict`, which it resets first and whose buffers it
  // reuses (the daemon's policy operator keeps one): an empty verdict, kContinue, when the policy
  // has no such handler.
  virtual void run_into(ir::Event event, mrpc_rpc_view& rpc, Verdict& verdict) = 0;
  // The same into a fresh verdict (tests and tools; defined in evaluator.cc).
  Verdict run(ir::Event event, mrpc_rpc_view& rpc);

  // A state's value in the form PolicyInstance::state documents (void: no such state), and its
  // import on upgrade: INVALID_ARGUMENT when `value` does not fit the state's type (the caller
  // then keeps the new version's initial value and warns), NOT_FOUND when there is no such state.
  virtual ir::Value state(const std::string& name) const = 0;
  virtual Status set_state(const std::string& name, const ir::Value& value) = 0;
};

}  // namespace mrpc::compiler
