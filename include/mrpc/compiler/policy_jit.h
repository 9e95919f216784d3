// The policy JIT: a verified policy (ir.h) lowered to one LLVM module, optimized (O2) and loaded
// into mrpc's ORC LLJIT (jit/jit.h), run as a PolicyRunner the daemon (and the differential tests)
// use exactly like the evaluator.
//
// What is compiled natively and what is handed to the evaluator is listed in docs/mpol-design.md,
// "Compilation": in short, control flow, scalars, params, scalar state, state map look-ups and
// updates, rpc fields, bounds-checked message field reads, comparisons, string equality,
// membership and concatenation, and the clock and random source are compiled; statements and
// expressions the lowering does not know (message writes, `for` over a collection, `log`,
// `respond`, string builtins, ...) run through a runtime helper with the evaluator's own code, on
// the same locals and state, so they agree by construction (and are not faster).
//
// Unloading: a CompiledPolicy holds its code (one ResourceTracker, shared by every instance of the
// same policy IR); the module is removed when the last instance goes away.
// Threads: PolicyCompiler::compile may be called from any thread (the Jit serializes); a
// CompiledPolicy is run by one thread at a time (PolicyRunner's rule).
// Ownership: a CompiledPolicy borrows the ir::Policy (and its Unit), the clock and the random
// source, which must outlive it; the PolicyCompiler (and its Jit) must outlive every policy it
// compiled.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "mrpc/base/clock.h"
#include "mrpc/base/expected.h"
#include "mrpc/base/random.h"
#include "mrpc/compiler/evaluator.h"
#include "mrpc/compiler/ir.h"
#include "mrpc/compiler/policy_runner.h"
#include "mrpc/jit/jit.h"
#include "mrpc/jit/object_cache.h"

namespace mrpc::compiler {

// Bumped whenever the lowering changes the code it emits (part of every module's cache key).
inline constexpr uint32_t kPolicyCompilerVersion = 2;

class CompiledPolicy;
struct CompiledCode;
struct JitFrame;

struct PolicyCompileStats {
  uint64_t modules_built = 0;   // lowered to LLVM IR, optimized and compiled (LLVM ran)
  uint64_t modules_shared = 0;  // compile() found the same policy IR loaded and shared its code
  // The on-disk object cache (use_object_cache): entries loaded instead of running LLVM, entries
  // refused (owner, mode, size, hash, or a valid file that is not a policy entry) and compiled
  // again, entries that could not be written.
  uint64_t object_cache_hits = 0;
  uint64_t object_cache_rejected = 0;
  uint64_t object_cache_write_failures = 0;
  uint64_t object_cache_malformed = 0;  // (part of rejected)
};

class PolicyCompiler {
 public:
  // Registers the runtime library's symbols with `jit` (once per Jit).
  static Expected<std::unique_ptr<PolicyCompiler>> create(jit::Jit& jit);
  ~PolicyCompiler();
  PolicyCompiler(const PolicyCompiler&) = delete;
  PolicyCompiler& operator=(const PolicyCompiler&) = delete;

  // Uses an on-disk object cache in `directory` (jit::ObjectCache: created 0700, owner and mode
  // checked, each entry hash-checked) for compiles from now on; empty: none. The daemon gives its
  // cache directory, so a restart or a second attach of the same policy skips LLVM.
  // FAILED_PRECONDITION if the directory cannot be made or is not safe.
  Status use_object_cache(const std::string& directory);
  std::string object_cache_directory() const;
  // The file holding the cache entry of a module key (CompiledPolicy::module_key), for tests.
  std::string object_cache_path(const std::string& module_key) const;

  // Lowers `policy` (verified) and loads it: one module per policy IR, keyed by the SHA-256 of the
  // policy's IR dump (which names every field offset and schema fingerprint), the source hash
  // given and kPolicyCompilerVersion. With an object cache (use_object_cache), an entry under that
  // key and this host's tag (jit::Jit::host_tag) is loaded instead of lowering and compiling, and
  // a compiled module is stored. Params are not part of the key: code does not depend on them
  // (they are values the instance holds).
  // INTERNAL when LLVM refuses the module (a lowering bug); RESOURCE_EXHAUSTED when it lowers to
  // more than limits::kMaxPolicyInstructions (checked before LLVM optimizes or generates code).
  Expected<std::unique_ptr<CompiledPolicy>> compile(const ir::Policy& policy, const Clock& clock,
                                                    RandomSource& random,
                                                    const std::string& source_hash = "");

  // The LLVM IR text of `policy`'s module (before optimization), for tests.
  Expected<std::string> emit_llvm(const ir::Policy& policy);
  // What `mrpc-polc build --emit=llvm|asm` prints: the module after O2, or the host's assembly.
  Expected<std::string> emit(const ir::Policy& policy, jit::Jit::TextForm form);

  size_t loaded_modules() const;
  PolicyCompileStats stats() const;
  jit::Jit& jit() { return jit_; }

 private:
  friend struct CompiledCode;
  explicit PolicyCompiler(jit::Jit& jit) : jit_(jit) {}
  void release(const std::string& key, jit::ModuleId module);

  jit::Jit& jit_;
  mutable std::mutex mutex_;
  // The code loaded per module key, and its module: an expired entry's module is still loaded
  // until its last CompiledCode's destructor releases it or a compile() of the same key removes
  // it first (whichever takes the mutex first; the other finds the entry gone or replaced).
  struct Loaded {
    std::weak_ptr<CompiledCode> code;
    jit::ModuleId module = 0;
  };
  std::map<std::string, Loaded> loaded_;     // by module key
  std::shared_ptr<jit::ObjectCache> cache_;  // null: no on-disk cache
  PolicyCompileStats stats_;
};

class CompiledPolicy final : public PolicyRunner {
 public:
  ~CompiledPolicy() override;

  Status set_param(const std::string& name, ir::Value value) override;
  void run_into(ir::Event event, mrpc_rpc_view& rpc, Verdict& verdict) override;
  ir::Value state(const std::string& name) const override;
  Status set_state(const std::string& name, const ir::Value& value) override;

  // How many of the policy's statements the lowering compiled natively and how many it handed
  // to the evaluator (a statement inside a handed-over one is not counted).
  uint32_t native_statements() const { return native_statements_; }
  uint32_t evaluator_statements() const { return evaluator_statements_; }
  // Expressions inside natively compiled statements that the evaluator computes.
  uint32_t evaluator_expressions() const { return evaluator_expressions_; }
  const std::string& module_key() const;
  // LLVM instructions of its module before optimization (at most limits::kMaxPolicyInstructions).
  uint64_t instructions() const;

 private:
  friend class PolicyCompiler;
  CompiledPolicy(const ir::Policy& policy, const Clock& clock, RandomSource& random,
                 std::shared_ptr<CompiledCode> code);

  const ir::Policy& policy_;
  std::shared_ptr<CompiledCode> code_;
  std::unique_ptr<PolicyInstance> instance_;  // params, state, containers (the runtime's)
  std::unique_ptr<JitFrame> frame_;
  uint32_t native_statements_ = 0;
  uint32_t evaluator_statements_ = 0;
  uint32_t evaluator_expressions_ = 0;
};

}  // namespace mrpc::compiler
