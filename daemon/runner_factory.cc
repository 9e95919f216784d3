#include "runner_factory.h"

#include <spdlog/spdlog.h>

#include <mutex>

#include "mrpc/compiler/evaluator.h"
#include "mrpc/compiler/policy_jit.h"
#include "mrpc/jit/jit.h"

namespace mrpc {

namespace {
// The daemon's policy JIT: one per process, made on first use and never destroyed (compiled
// policies may live until the process exits, and they need it). Null if LLVM could not be set up;
// policies then run on the evaluator, and the log says why.
compiler::PolicyCompiler* policy_compiler() {
  static compiler::PolicyCompiler* compiler = []() -> compiler::PolicyCompiler* {
    auto jit = jit::Jit::create();
    if (!jit.ok()) {
      spdlog::error("policy JIT unavailable, policies run on the evaluator: {}",
                    jit.status().to_string());
      return nullptr;
    }
    jit::Jit* owned = jit->release();  // lives as long as the process
    auto made = compiler::PolicyCompiler::create(*owned);
    if (!made.ok()) {
      spdlog::error("policy JIT unavailable, policies run on the evaluator: {}",
                    made.status().to_string());
      return nullptr;
    }
    return made->release();
  }();
  return compiler;
}
}  // namespace

std::unique_ptr<compiler::PolicyRunner> make_policy_runner(const compiler::ir::Policy& policy,
                                                           const Clock& clock,
                                                           RandomSource& random) {
  if (compiler::PolicyCompiler* jit = policy_compiler()) {
    auto compiled = jit->compile(policy, clock, random);
    if (compiled.ok()) return std::move(*compiled);
    spdlog::error("policy '{}' could not be compiled, it runs on the evaluator: {}", policy.name,
                  compiled.status().to_string());
  }
  return std::make_unique<compiler::PolicyInstance>(policy, clock, random);
}

Status use_policy_object_cache(const std::string& directory) {
  compiler::PolicyCompiler* jit = policy_compiler();
  return jit != nullptr ? jit->use_object_cache(directory) : Status();
}

compiler::PolicyCompileStats policy_compile_stats() {
  compiler::PolicyCompiler* jit = policy_compiler();
  return jit != nullptr ? jit->stats() : compiler::PolicyCompileStats{};
}

const char* policy_runner_kind() {
  return policy_compiler() != nullptr ? "jit" : "evaluator";
}

}  // namespace mrpc
