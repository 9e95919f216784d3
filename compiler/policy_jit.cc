// PolicyCompiler and CompiledPolicy (mrpc/compiler/policy_jit.h): keying, sharing and unloading
// modules, and running a compiled handler. No LLVM header here (the lowering is policy_lower.cc).
#include "mrpc/compiler/policy_jit.h"

#include <fmt/format.h>

#include <cstring>
#include <optional>

#include "compiler/policy_jit_runtime.h"
#include "compiler/policy_lower.h"
#include "compiler/sha256.h"
#include "mrpc/base/limits.h"

namespace mrpc::compiler {
namespace {
// A policy's cache entry: its four counts (native statements, evaluator statements, evaluator
// expressions, LLVM instructions; uint64 each, host order: the key names the host) and the object.
constexpr size_t kCachedHeaderBytes = 4 * sizeof(uint64_t);
}  // namespace

// The loaded code of one policy IR, shared by every CompiledPolicy of it; removing the module
// (its ResourceTracker) when the last one goes.
struct CompiledCode {
  PolicyCompiler* compiler = nullptr;
  std::string key;
  jit::ModuleId module = 0;
  std::vector<void (*)(JitHeader*)> handlers;  // by Policy::handlers index
  uint32_t native_statements = 0;
  uint32_t evaluator_statements = 0;
  uint32_t evaluator_expressions = 0;
  uint64_t instructions = 0;
  bool registered = false;  // in PolicyCompiler::loaded_ (else being built, under its mutex)

  ~CompiledCode() {
    if (!registered) {
      if (module != 0) (void)compiler->jit_.remove_module(module);
      return;
    }
    compiler->release(key, module);
  }
};

Expected<std::unique_ptr<PolicyCompiler>> PolicyCompiler::create(jit::Jit& jit) {
  Status s = jit.define_host_symbols(policy_runtime_symbols());
  // Another PolicyCompiler on the same Jit registered the same runtime already: fine.
  if (!s.ok() && s.code() != StatusCode::kAlreadyExists) return s;
  return std::unique_ptr<PolicyCompiler>(new PolicyCompiler(jit));
}

PolicyCompiler::~PolicyCompiler() = default;

void PolicyCompiler::release(const std::string& key, jit::ModuleId module) {
  // Under the mutex, so a compile() of the same policy cannot load its symbols before these are
  // gone. The code expired before this destructor ran: a compile() in between may have removed
  // the module already (and loaded another under the same key).
  std::lock_guard lock(mutex_);
  auto it = loaded_.find(key);
  if (it == loaded_.end() || it->second.module != module || !it->second.code.expired()) return;
  if (module != 0) (void)jit_.remove_module(module);
  loaded_.erase(it);
}

size_t PolicyCompiler::loaded_modules() const {
  std::lock_guard lock(mutex_);
  size_t n = 0;
  for (const auto& [key, loaded] : loaded_) n += loaded.code.expired() ? 0 : 1;
  return n;
}

PolicyCompileStats PolicyCompiler::stats() const {
  std::lock_guard lock(mutex_);
  PolicyCompileStats stats = stats_;
  if (cache_ != nullptr) {
    const jit::ObjectCacheStats cache = cache_->stats();
    stats.object_cache_rejected = cache.rejected + stats_.object_cache_malformed;
    stats.object_cache_write_failures = cache.write_failures;
  }
  return stats;
}

Status PolicyCompiler::use_object_cache(const std::string& directory) {
  std::shared_ptr<jit::ObjectCache> cache;
  if (!directory.empty()) {
    auto opened = jit::ObjectCache::open(directory);
    if (!opened.ok()) return opened.status();
    cache = std::move(*opened);
  }
  std::lock_guard lock(mutex_);
  cache_ = std::move(cache);
  return Status();
}

std::string PolicyCompiler::object_cache_directory() const {
  std::lock_guard lock(mutex_);
  return cache_ != nullptr ? cache_->directory() : std::string();
}

std::string PolicyCompiler::object_cache_path(const std::string& module_key) const {
  std::lock_guard lock(mutex_);
  if (cache_ == nullptr) return {};
  return cache_->path_of(fmt::format("policy {}\n{}", module_key, jit_.host_tag()));
}

namespace {

std::string module_key(const ir::Policy& policy, const std::string& source_hash) {
  return sha256_hex(fmt::format("{}\nsource {}\npolicy-compiler {}\n", ir::dump(policy),
                                source_hash, kPolicyCompilerVersion));
}

std::string prefix_of(const std::string& key) {
  return "mpol_" + key.substr(0, 24);
}

}  // namespace

Expected<std::string> PolicyCompiler::emit_llvm(const ir::Policy& policy) {
  auto lowered = lower_policy(policy, prefix_of(module_key(policy, "")), /*with_text=*/true);
  if (!lowered.ok()) return lowered.status();
  return std::move(lowered->ir_text);
}

Expected<std::string> PolicyCompiler::emit(const ir::Policy& policy, jit::Jit::TextForm form) {
  auto lowered = lower_policy(policy, prefix_of(module_key(policy, "")));
  if (!lowered.ok()) return lowered.status();
  return emit_lowered(jit_, std::move(*lowered), form);
}

Expected<std::unique_ptr<CompiledPolicy>> PolicyCompiler::compile(const ir::Policy& policy,
                                                                  const Clock& clock,
                                                                  RandomSource& random,
                                                                  const std::string& source_hash) {
  std::string key = module_key(policy, source_hash);
  std::lock_guard lock(mutex_);
  std::shared_ptr<CompiledCode> code;
  if (auto it = loaded_.find(key); it != loaded_.end()) {
    code = it->second.code.lock();
    if (code == nullptr) {
      // Its last user is being destroyed on another thread and has not released it yet: its
      // symbols go now, before the same names load again (its release() then finds nothing).
      const jit::ModuleId stale = it->second.module;
      loaded_.erase(it);
      if (Status removed = stale != 0 ? jit_.remove_module(stale) : Status(); !removed.ok()) {
        return Status(StatusCode::kInternal,
                      fmt::format("policy '{}': unloading its previous code: {}", policy.name,
                                  removed.message()));
      }
    }
  }
  if (code != nullptr) {
    ++stats_.modules_shared;
  } else {
    std::string prefix = prefix_of(key);
    auto fresh = std::make_shared<CompiledCode>();
    fresh->compiler = this;
    fresh->key = key;
    // The on-disk cache: a valid entry skips lowering and LLVM (only the object is loaded).
    const std::string cache_key = fmt::format("policy {}\n{}", key, jit_.host_tag());
    std::optional<std::string> cached;
    if (cache_ != nullptr) cached = cache_->load(cache_key);
    if (cached.has_value() && cached->size() <= kCachedHeaderBytes) {
      ++stats_.object_cache_malformed;  // hash-valid but not an entry of ours: compile again
      cached.reset();
    }
    if (cached.has_value()) {
      uint64_t header[4];
      std::memcpy(header, cached->data(), sizeof header);
      fresh->native_statements = static_cast<uint32_t>(header[0]);
      fresh->evaluator_statements = static_cast<uint32_t>(header[1]);
      fresh->evaluator_expressions = static_cast<uint32_t>(header[2]);
      fresh->instructions = header[3];
      auto id =
          jit_.add_object(std::string_view(*cached).substr(kCachedHeaderBytes), "policy " + key);
      if (!id.ok()) {
        return Status(StatusCode::kInternal, fmt::format("policy '{}': loading its cached code: {}",
                                                         policy.name, id.status().message()));
      }
      fresh->module = *id;
      ++stats_.object_cache_hits;
    } else {
      auto lowered = lower_policy(policy, prefix);
      if (!lowered.ok()) return lowered.status();
      // The LLVM part's budget: optimization and code generation cost about linearly in the
      // instructions lowered (docs/security.md), so bounding them bounds one compile's time and
      // memory before LLVM spends either.
      if (lowered->instructions > limits::kMaxPolicyInstructions) {
        return Status(
            StatusCode::kResourceExhausted,
            fmt::format("policy '{}' lowers to {} LLVM instructions, more than "
                        "kMaxPolicyInstructions={}: split it into smaller policies",
                        policy.name, lowered->instructions, limits::kMaxPolicyInstructions));
      }
      fresh->native_statements = lowered->native_statements;
      fresh->evaluator_statements = lowered->evaluator_statements;
      fresh->evaluator_expressions = lowered->evaluator_expressions;
      fresh->instructions = lowered->instructions;
      std::string object;
      auto id = load_lowered(jit_, std::move(*lowered), cache_ != nullptr ? &object : nullptr);
      if (!id.ok()) {
        fresh->module = 0;
        return Status(StatusCode::kInternal, fmt::format("policy '{}': loading its code: {}",
                                                         policy.name, id.status().message()));
      }
      fresh->module = *id;
      ++stats_.modules_built;
      if (cache_ != nullptr && !object.empty()) {
        const uint64_t header[4] = {fresh->native_statements, fresh->evaluator_statements,
                                    fresh->evaluator_expressions, fresh->instructions};
        std::string payload(reinterpret_cast<const char*>(header), sizeof header);
        payload += object;
        (void)cache_->store(cache_key, payload);  // a failure is counted by the cache
      }
    }
    std::vector<std::string> names;
    for (size_t h = 0; h < policy.handlers.size(); ++h)
      names.push_back(fmt::format("{}_h{}", prefix, h));
    if (!names.empty()) {
      auto addresses = jit_.lookup_all(names);
      if (!addresses.ok()) {
        return Status(StatusCode::kInternal,
                      fmt::format("policy '{}': compiling its code: {}", policy.name,
                                  addresses.status().message()));
      }
      for (void* a : *addresses)
        fresh->handlers.push_back(reinterpret_cast<void (*)(JitHeader*)>(a));
    }
    fresh->registered = true;
    code = fresh;
    loaded_[key] = Loaded{code, code->module};
  }
  return std::unique_ptr<CompiledPolicy>(
      new CompiledPolicy(policy, clock, random, std::move(code)));
}

// ---- CompiledPolicy ----

CompiledPolicy::CompiledPolicy(const ir::Policy& policy, const Clock& clock, RandomSource& random,
                               std::shared_ptr<CompiledCode> code)
    : policy_(policy),
      code_(std::move(code)),
      instance_(std::make_unique<PolicyInstance>(policy, clock, random)),
      frame_(std::make_unique<JitFrame>(*instance_, clock, random, policy)),
      native_statements_(code_->native_statements),
      evaluator_statements_(code_->evaluator_statements),
      evaluator_expressions_(code_->evaluator_expressions) {}

CompiledPolicy::~CompiledPolicy() = default;

const std::string& CompiledPolicy::module_key() const {
  return code_->key;
}

uint64_t CompiledPolicy::instructions() const {
  return code_->instructions;
}

Status CompiledPolicy::set_param(const std::string& name, ir::Value value) {
  return instance_->set_param(name, std::move(value));
}

ir::Value CompiledPolicy::state(const std::string& name) const {
  return instance_->state(name);
}

Status CompiledPolicy::set_state(const std::string& name, const ir::Value& value) {
  return instance_->set_state(name, value);
}

void CompiledPolicy::run_into(ir::Event event, mrpc_rpc_view& rpc, Verdict& verdict) {
  verdict.reset();
  const ir::Handler* handler = policy_.handler_for(event);
  if (handler == nullptr) return;
  auto index = static_cast<size_t>(handler - policy_.handlers.data());
  JitFrame& f = *frame_;
  if (f.session.begin(rpc, *handler, verdict)) {
    f.verdict = &verdict;
    f.header.rpc = &rpc;
    f.header.locals = f.session.locals().data();
    f.header.ended = f.session.ended_flag();
    f.header.method = f.session.method();
    code_->handlers[index](&f.header);
    f.verdict = nullptr;
  }
  f.session.end();
}

}  // namespace mrpc::compiler
