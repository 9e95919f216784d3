// The LLVM lowering of one verified policy (policy_lower.cc): a module with one function per
// handler, `<prefix>_h<N>` (N: index into Policy::handlers), over a JitHeader
// (policy_jit_runtime.h). This header names LLVM types by forward declaration only.
// Private to the compiler. Pure: any thread (one lowering per LLVMContext).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "mrpc/base/expected.h"
#include "mrpc/compiler/ir.h"
#include "mrpc/jit/jit.h"

namespace llvm {
class LLVMContext;
class Module;
}  // namespace llvm

namespace mrpc::compiler {

struct LoweredModule {
  LoweredModule();
  ~LoweredModule();
  LoweredModule(LoweredModule&&) noexcept;
  LoweredModule& operator=(LoweredModule&&) noexcept;

  std::unique_ptr<llvm::LLVMContext> context;
  std::unique_ptr<llvm::Module> module;
  std::string ir_text;  // the module before optimization (only when asked for: printing costs)
  uint32_t native_statements = 0;
  uint32_t evaluator_statements = 0;
  uint32_t evaluator_expressions = 0;  // inside natively compiled statements
  uint64_t instructions = 0;           // LLVM instructions before optimization (the budget's unit)
};

// INTERNAL when the module fails LLVM's verifier (a bug of the lowering).
Expected<LoweredModule> lower_policy(const ir::Policy& policy, const std::string& prefix,
                                     bool with_text = false);

// Hands the module to `jit` (Jit::add_module: O2, object cache). Here because the hand-over
// needs LLVM's complete types.
// `object_out`, when given, receives the object file compiled (jit::ModuleOptions::object_out).
Expected<jit::ModuleId> load_lowered(jit::Jit& jit, LoweredModule lowered,
                                     std::string* object_out = nullptr);
Expected<std::string> emit_lowered(jit::Jit& jit, LoweredModule lowered, jit::Jit::TextForm form);

}  // namespace mrpc::compiler
