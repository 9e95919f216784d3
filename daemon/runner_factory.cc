#include "runner_factory.h"

#include "mrpc/compiler/evaluator.h"

namespace mrpc {

std::unique_ptr<compiler::PolicyRunner> make_policy_runner(const compiler::ir::Policy& policy,
                                                           const Clock& clock,
                                                           RandomSource& random) {
  return std::make_unique<compiler::PolicyInstance>(policy, clock, random);
}

const char* policy_runner_kind() {
  return "evaluator";
}

}  // namespace mrpc
