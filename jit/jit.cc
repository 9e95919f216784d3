// Jit: LLJIT with one ResourceTracker per module; modules are compiled to objects here, at the
// tier the caller chose, and loaded as objects (see include/mrpc/jit/jit.h).
#include "mrpc/jit/jit.h"

#include "mrpc/base/limits.h"
#include "mrpc/jit/object_cache.h"

#include <chrono>
#include <map>
#include <mutex>

#include <fmt/format.h>
#include <llvm/Config/llvm-config.h>
#include <llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h>
#include <llvm/ExecutionEngine/Orc/LLJIT.h>
#include <llvm/ExecutionEngine/Orc/ThreadSafeModule.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/LegacyPassManager.h>
#include <llvm/IR/Module.h>
#include <llvm/IR/Verifier.h>
#include <llvm/Passes/PassBuilder.h>
#include <llvm/Support/MemoryBuffer.h>
#include <llvm/Support/TargetSelect.h>
#include <llvm/Support/raw_ostream.h>
#include <llvm/Target/TargetMachine.h>

namespace mrpc::jit {
namespace {

std::string error_text(llvm::Error error) {
  std::string text;
  llvm::raw_string_ostream stream(text);
  stream << error;
  return stream.str();
}

void initialize_llvm_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
  });
}

uint64_t nanoseconds_since(std::chrono::steady_clock::time_point start) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start)
          .count());
}

// Machine code for `module`, as an object file in memory.
Expected<std::string> compile_to_object(llvm::TargetMachine& machine, llvm::Module& module) {
  llvm::SmallVector<char, 0> buffer;
  llvm::raw_svector_ostream stream(buffer);
  llvm::legacy::PassManager passes;
  // No verifier pass in the pipeline: add_module verified the module before.
  if (machine.addPassesToEmitFile(passes, stream, nullptr, llvm::CodeGenFileType::ObjectFile,
                                  /*DisableVerify=*/true)) {
    return Status(StatusCode::kInternal, "LLVM cannot emit an object file for this host");
  }
  passes.run(module);
  return std::string(buffer.data(), buffer.size());
}

// LLVM's default O2 module pipeline, tuned for the host.
void optimize(llvm::TargetMachine& machine, llvm::Module& module) {
  llvm::LoopAnalysisManager loops;
  llvm::FunctionAnalysisManager functions;
  llvm::CGSCCAnalysisManager sccs;
  llvm::ModuleAnalysisManager modules_analyses;
  llvm::PassBuilder builder(&machine);
  builder.registerModuleAnalyses(modules_analyses);
  builder.registerCGSCCAnalyses(sccs);
  builder.registerFunctionAnalyses(functions);
  builder.registerLoopAnalyses(loops);
  builder.crossRegisterProxies(loops, functions, sccs, modules_analyses);
  llvm::ModulePassManager pipeline =
      builder.buildPerModuleDefaultPipeline(llvm::OptimizationLevel::O2);
  pipeline.run(module, modules_analyses);
}

// One compile tier: its TargetMachine (codegen level) and the lock that keeps it to one module at
// a time (a TargetMachine is not meant for concurrent code generation).
struct TierMachine {
  std::mutex mutex;
  std::unique_ptr<llvm::TargetMachine> machine;
};

}  // namespace

const char* codegen_tier_name(CodegenTier tier) {
  return tier == CodegenTier::kFast ? "fast" : "optimized";
}

struct Jit::State {
  std::unique_ptr<llvm::orc::LLJIT> lljit;
  TierMachine fast;       // CodeGenOptLevel::None, FastISel
  TierMachine optimized;  // CodeGenOptLevel::Default; also the O2 pipeline's cost models
  // Guards what follows and every call into lljit (not the tiers' compiles).
  mutable std::mutex mutex;
  ModuleId next_id = 1;
  std::map<ModuleId, llvm::orc::ResourceTrackerSP> modules;
  std::unique_ptr<ObjectCache> cache;  // null: no object cache
  std::string host_tag;  // triple, CPU, LLVM version: part of every cache entry's name
  JitStats stats;

  TierMachine& tier(CodegenTier which) { return which == CodegenTier::kFast ? fast : optimized; }

  // Hands an object file to ORC under a new ResourceTracker (linked at the first lookup).
  Expected<ModuleId> load_object(std::unique_ptr<llvm::MemoryBuffer> object,
                                 const std::string& name) {
    std::lock_guard lock(mutex);
    llvm::orc::ResourceTrackerSP tracker = lljit->getMainJITDylib().createResourceTracker();
    if (llvm::Error error = lljit->addObjectFile(tracker, std::move(object))) {
      return Status(StatusCode::kAlreadyExists,
                    fmt::format("loading object {}: {}", name, error_text(std::move(error))));
    }
    const ModuleId id = next_id++;
    modules.emplace(id, std::move(tracker));
    return id;
  }

  std::string entry_key(std::string_view ir_text, CodegenTier which) const {
    return fmt::format("{}\n{}\ntier {}", ir_text, host_tag, codegen_tier_name(which));
  }
};

Jit::Jit(std::unique_ptr<State> state) : state_(std::move(state)) {}
Jit::~Jit() = default;

Expected<std::unique_ptr<Jit>> Jit::create(const JitOptions& options) {
  initialize_llvm_once();
  auto machine_builder = llvm::orc::JITTargetMachineBuilder::detectHost();
  if (!machine_builder) {
    return Status(StatusCode::kInternal, fmt::format("LLVM cannot target this host: {}",
                                                     error_text(machine_builder.takeError())));
  }
  machine_builder->setCodeGenOptLevel(llvm::CodeGenOptLevel::None);
  auto fast_machine = machine_builder->createTargetMachine();
  if (!fast_machine) {
    return Status(StatusCode::kInternal,
                  fmt::format("LLVM target machine: {}", error_text(fast_machine.takeError())));
  }
  machine_builder->setCodeGenOptLevel(llvm::CodeGenOptLevel::Default);
  auto target_machine = machine_builder->createTargetMachine();
  if (!target_machine) {
    return Status(StatusCode::kInternal,
                  fmt::format("LLVM target machine: {}", error_text(target_machine.takeError())));
  }
  (*fast_machine)->setO0WantsFastISel(true);
  auto lljit = llvm::orc::LLJITBuilder().setJITTargetMachineBuilder(*machine_builder).create();
  if (!lljit) {
    return Status(StatusCode::kInternal,
                  fmt::format("creating the LLJIT failed: {}", error_text(lljit.takeError())));
  }
  auto state = std::make_unique<State>();
  state->lljit = std::move(*lljit);
  state->fast.machine = std::move(*fast_machine);
  state->optimized.machine = std::move(*target_machine);
  state->host_tag = fmt::format("{} {} {} LLVM {}", machine_builder->getTargetTriple().str(),
                                machine_builder->getCPU(),
                                machine_builder->getFeatures().getString(), LLVM_VERSION_STRING);
  if (!options.object_cache_dir.empty()) {
    auto cache = ObjectCache::open(options.object_cache_dir);
    if (!cache.ok()) return cache.status();
    state->cache = std::move(*cache);
  }
  return std::unique_ptr<Jit>(new Jit(std::move(state)));
}

Status Jit::define_host_symbols(const std::vector<HostSymbol>& symbols) {
  std::lock_guard lock(state_->mutex);
  llvm::orc::LLJIT& lljit = *state_->lljit;
  llvm::orc::SymbolMap map;
  for (const HostSymbol& symbol : symbols) {
    map[lljit.mangleAndIntern(symbol.name)] = {llvm::orc::ExecutorAddr::fromPtr(symbol.address),
                                               llvm::JITSymbolFlags::Exported};
  }
  if (llvm::Error error = lljit.getMainJITDylib().define(llvm::orc::absoluteSymbols(map))) {
    return Status(StatusCode::kAlreadyExists,
                  fmt::format("defining host symbols: {}", error_text(std::move(error))));
  }
  return Status();
}

std::string Jit::target_triple() const {
  return state_->lljit->getTargetTriple().str();
}

std::string Jit::data_layout() const {
  return state_->lljit->getDataLayout().getStringRepresentation();
}

namespace {

// Sets the JIT's triple and data layout on `module` where it has none, and verifies it.
Status prepare_module(const llvm::orc::LLJIT& lljit, llvm::Module& module) {
  if (module.getTargetTriple().empty()) module.setTargetTriple(lljit.getTargetTriple().str());
  if (module.getDataLayoutStr().empty()) module.setDataLayout(lljit.getDataLayout());
  std::string problems;
  llvm::raw_string_ostream problem_stream(problems);
  if (llvm::verifyModule(module, &problem_stream)) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("module {} is not valid IR: {}", module.getModuleIdentifier(),
                              problem_stream.str()));
  }
  return Status();
}

}  // namespace

Expected<std::string> Jit::emit_text(std::unique_ptr<llvm::LLVMContext> context,
                                     std::unique_ptr<llvm::Module> module, TextForm form) {
  // The LLJIT's triple and data layout never change: no lock needed to read them.
  if (Status prepared = prepare_module(*state_->lljit, *module); !prepared.ok()) {
    module.reset();  // before its context
    return prepared;
  }
  TierMachine& tier = state_->optimized;
  std::lock_guard lock(tier.mutex);
  optimize(*tier.machine, *module);
  std::string text;
  if (form == TextForm::kOptimizedIr) {
    llvm::raw_string_ostream stream(text);
    module->print(stream, nullptr);
    stream.flush();
  } else {
    llvm::SmallVector<char, 0> buffer;
    llvm::raw_svector_ostream stream(buffer);
    llvm::legacy::PassManager passes;
    if (tier.machine->addPassesToEmitFile(passes, stream, nullptr,
                                          llvm::CodeGenFileType::AssemblyFile)) {
      module.reset();
      return Status(StatusCode::kInternal, "LLVM cannot emit assembly for this host");
    }
    passes.run(*module);
    text.assign(buffer.data(), buffer.size());
  }
  module.reset();  // before its context
  context.reset();
  return text;
}

Expected<ModuleId> Jit::add_module(std::unique_ptr<llvm::LLVMContext> context,
                                   std::unique_ptr<llvm::Module> module,
                                   const ModuleOptions& options) {
  // Everything up to loading works on the caller's module and context only (no Jit lock): a
  // compile at one tier runs while other threads compile at the other tier, look up or unload.
  ModuleTimes times;
  auto start = std::chrono::steady_clock::now();
  const Status prepared = prepare_module(*state_->lljit, *module);
  times.verify_nanoseconds = nanoseconds_since(start);
  if (!prepared.ok()) {
    module.reset();  // before its context: the order parameters die in is the caller's
    return prepared;
  }
  std::unique_ptr<llvm::MemoryBuffer> object;
  std::string path = module->getModuleIdentifier();
  std::string cache_key;
  if (state_->cache != nullptr) {
    start = std::chrono::steady_clock::now();
    std::string ir_text;
    llvm::raw_string_ostream ir_stream(ir_text);
    module->print(ir_stream, nullptr);
    cache_key = state_->entry_key(ir_stream.str(), options.tier);
    path = state_->cache->path_of(cache_key);
    if (auto cached = state_->cache->load(cache_key)) {
      object = llvm::MemoryBuffer::getMemBufferCopy(*cached, path);
    }
    times.cache_nanoseconds += nanoseconds_since(start);
  }
  if (object != nullptr) {
    times.from_object_cache = true;
  } else {
    TierMachine& tier = state_->tier(options.tier);
    Expected<std::string> compiled = std::string();
    {
      std::lock_guard tier_lock(tier.mutex);
      if (options.tier == CodegenTier::kOptimized) {
        start = std::chrono::steady_clock::now();
        optimize(*tier.machine, *module);
        times.optimize_nanoseconds = nanoseconds_since(start);
      }
      start = std::chrono::steady_clock::now();
      compiled = compile_to_object(*tier.machine, *module);
      times.codegen_nanoseconds = nanoseconds_since(start);
    }
    if (!compiled.ok()) {
      module.reset();
      return compiled.status();
    }
    if (state_->cache != nullptr) {
      start = std::chrono::steady_clock::now();
      (void)state_->cache->store(cache_key, *compiled);  // a failure is counted there
      times.cache_nanoseconds += nanoseconds_since(start);
    }
    {
      std::lock_guard lock(state_->mutex);
      ++state_->stats.modules_compiled;
      if (options.tier == CodegenTier::kFast) ++state_->stats.modules_compiled_fast;
    }
    object = llvm::MemoryBuffer::getMemBufferCopy(*compiled, path);
    if (options.object_out != nullptr) *options.object_out = std::move(*compiled);
  }
  module.reset();  // before its context
  context.reset();
  start = std::chrono::steady_clock::now();
  auto id = state_->load_object(std::move(object), path);
  times.load_nanoseconds = nanoseconds_since(start);
  if (options.times != nullptr) *options.times = times;
  return id;
}

Expected<ModuleId> Jit::add_object(std::string_view object, const std::string& name) {
  return state_->load_object(
      llvm::MemoryBuffer::getMemBufferCopy(llvm::StringRef(object.data(), object.size()), name),
      name);
}

std::string Jit::host_tag() const {
  return state_->host_tag;
}

Expected<void*> Jit::lookup(std::string_view name) {
  std::lock_guard lock(state_->mutex);
  auto address = state_->lljit->lookup(llvm::StringRef(name.data(), name.size()));
  if (!address) {
    return Status(StatusCode::kNotFound,
                  fmt::format("JIT symbol {}: {}", name, error_text(address.takeError())));
  }
  return address->toPtr<void*>();
}

Expected<std::vector<void*>> Jit::lookup_all(const std::vector<std::string>& names) {
  std::lock_guard lock(state_->mutex);
  llvm::orc::LLJIT& lljit = *state_->lljit;
  llvm::orc::SymbolLookupSet wanted;
  std::vector<llvm::orc::SymbolStringPtr> mangled;
  for (const std::string& name : names) {
    mangled.push_back(lljit.mangleAndIntern(name));
    wanted.add(mangled.back());
  }
  auto found = lljit.getExecutionSession().lookup(
      llvm::orc::makeJITDylibSearchOrder(&lljit.getMainJITDylib()), std::move(wanted));
  if (!found) {
    return Status(StatusCode::kNotFound, fmt::format("JIT symbols ({} of them): {}", names.size(),
                                                     error_text(found.takeError())));
  }
  std::vector<void*> addresses;
  for (const auto& symbol : mangled) {
    addresses.push_back(found->find(symbol)->second.getAddress().toPtr<void*>());
  }
  return addresses;
}

Status Jit::remove_module(ModuleId id) {
  std::lock_guard lock(state_->mutex);
  auto it = state_->modules.find(id);
  if (it == state_->modules.end()) {
    return Status(StatusCode::kNotFound, fmt::format("no loaded JIT module has id {}", id));
  }
  llvm::orc::ResourceTrackerSP tracker = std::move(it->second);
  state_->modules.erase(it);
  if (llvm::Error error = tracker->remove()) {
    return Status(StatusCode::kInternal,
                  fmt::format("unloading module {}: {}", id, error_text(std::move(error))));
  }
  return Status();
}

JitStats Jit::stats() const {
  JitStats stats;
  {
    std::lock_guard lock(state_->mutex);
    stats = state_->stats;
  }
  if (state_->cache != nullptr) {
    const ObjectCacheStats cache = state_->cache->stats();
    stats.cache_hits = cache.hits;
    stats.cache_rejected = cache.rejected;
    stats.cache_write_failures = cache.write_failures;
  }
  return stats;
}

size_t Jit::module_count() const {
  std::lock_guard lock(state_->mutex);
  return state_->modules.size();
}

}  // namespace mrpc::jit
