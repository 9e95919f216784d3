// EvalSession: the evaluator's machinery, opened up for the JIT-compiled policy's runtime helpers
// (compiler/policy_jit_runtime.cc). A compiled handler does the constructs the lowering knows
// natively and hands every other statement or expression to the evaluator through this session,
// on the same locals, state, params and verdict, so the two agree by construction on those parts.
//
// One session belongs to one CompiledPolicy (over its PolicyInstance, which holds the state and
// params); begin() starts a run of one handler without allocating (the evaluation lives in
// `storage_`, the locals vector keeps its capacity). Single-threaded, like the policy it serves.
// Private to the compiler.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "mrpc/compiler/evaluator.h"

namespace mrpc::compiler {

class Evaluation;

class EvalSession {
 public:
  static constexpr size_t kStorageBytes = 160;

  explicit EvalSession(PolicyInstance& instance);
  ~EvalSession();
  EvalSession(const EvalSession&) = delete;
  EvalSession& operator=(const EvalSession&) = delete;

  // Starts a run of `handler` on `rpc`: false when the handler does not run on this call (a
  // method the policy does not apply to, or a message of another schema: then `verdict` says so).
  bool begin(mrpc_rpc_view& rpc, const ir::Handler& handler, Verdict& verdict);
  void end();

  // Between begin() and end():
  ir::Value eval(const ir::Expr& e);
  void stmt(const ir::Stmt& s);  // nothing once the handler has ended
  bool* ended_flag();            // the run's "handler ended" flag, read by compiled code
  int method() const;            // the index into Policy::methods matched, -1 for none
  bool state_contains(uint32_t slot, const ir::Value& key) const;
  // A state map's value at `key` (its zero when absent; LRU order touched), and an insert or
  // update under the state's capacity and eviction rule: the evaluator's own.
  ir::Value state_lookup(uint32_t slot, const ir::Value& key);
  void state_put(uint32_t slot, const ir::Value& key, ir::Value value);
  // A string over limits::kMaxPolicyStringBytes ends the handler (the evaluator's abort) and is
  // cleared.
  void check_string(ir::Value& v);
  // `observe(histogram, x)`.
  void observe(uint32_t slot, const ir::Value& x);
  size_t state_size(uint32_t slot) const;

  std::vector<ir::Value>& locals() { return locals_; }
  ir::Value* params();
  ir::Value* scalars();
  std::vector<int64_t>& histogram(uint32_t slot);
  PolicyInstance& instance() { return instance_; }

 private:
  PolicyInstance& instance_;
  std::vector<ir::Value> locals_;
  alignas(std::max_align_t) unsigned char storage_[kStorageBytes];
  Evaluation* active_ = nullptr;
};

}  // namespace mrpc::compiler
