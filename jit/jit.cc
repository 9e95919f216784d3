// Jit: LLJIT with one ResourceTracker per module and LLVM's O2 pipeline before loading
// (see include/mrpc/jit/jit.h).
#include "mrpc/jit/jit.h"

#include <map>
#include <mutex>

#include <fmt/format.h>
#include <llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h>
#include <llvm/ExecutionEngine/Orc/LLJIT.h>
#include <llvm/ExecutionEngine/Orc/ThreadSafeModule.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/Module.h>
#include <llvm/IR/Verifier.h>
#include <llvm/Passes/PassBuilder.h>
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

}  // namespace

struct Jit::State {
  std::unique_ptr<llvm::orc::LLJIT> lljit;
  std::unique_ptr<llvm::TargetMachine> target_machine;  // for the optimizer's cost models
  mutable std::mutex mutex;
  ModuleId next_id = 1;
  std::map<ModuleId, llvm::orc::ResourceTrackerSP> modules;

  // LLVM's default O2 module pipeline, tuned for the host.
  void optimize(llvm::Module& module) {
    llvm::LoopAnalysisManager loops;
    llvm::FunctionAnalysisManager functions;
    llvm::CGSCCAnalysisManager sccs;
    llvm::ModuleAnalysisManager modules_analyses;
    llvm::PassBuilder builder(target_machine.get());
    builder.registerModuleAnalyses(modules_analyses);
    builder.registerCGSCCAnalyses(sccs);
    builder.registerFunctionAnalyses(functions);
    builder.registerLoopAnalyses(loops);
    builder.crossRegisterProxies(loops, functions, sccs, modules_analyses);
    llvm::ModulePassManager pipeline =
        builder.buildPerModuleDefaultPipeline(llvm::OptimizationLevel::O2);
    pipeline.run(module, modules_analyses);
  }
};

Jit::Jit(std::unique_ptr<State> state) : state_(std::move(state)) {}
Jit::~Jit() = default;

Expected<std::unique_ptr<Jit>> Jit::create() {
  initialize_llvm_once();
  auto machine_builder = llvm::orc::JITTargetMachineBuilder::detectHost();
  if (!machine_builder) {
    return Status(StatusCode::kInternal, fmt::format("LLVM cannot target this host: {}",
                                                     error_text(machine_builder.takeError())));
  }
  machine_builder->setCodeGenOptLevel(llvm::CodeGenOptLevel::Default);
  auto target_machine = machine_builder->createTargetMachine();
  if (!target_machine) {
    return Status(StatusCode::kInternal,
                  fmt::format("LLVM target machine: {}", error_text(target_machine.takeError())));
  }
  auto lljit = llvm::orc::LLJITBuilder().setJITTargetMachineBuilder(*machine_builder).create();
  if (!lljit) {
    return Status(StatusCode::kInternal,
                  fmt::format("creating the LLJIT failed: {}", error_text(lljit.takeError())));
  }
  auto state = std::make_unique<State>();
  state->lljit = std::move(*lljit);
  state->target_machine = std::move(*target_machine);
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

Expected<ModuleId> Jit::add_module(std::unique_ptr<llvm::LLVMContext> context,
                                   std::unique_ptr<llvm::Module> module) {
  std::lock_guard lock(state_->mutex);
  llvm::orc::LLJIT& lljit = *state_->lljit;
  if (module->getTargetTriple().empty()) module->setTargetTriple(lljit.getTargetTriple().str());
  if (module->getDataLayoutStr().empty()) module->setDataLayout(lljit.getDataLayout());
  std::string problems;
  llvm::raw_string_ostream problem_stream(problems);
  if (llvm::verifyModule(*module, &problem_stream)) {
    const std::string name = module->getModuleIdentifier();
    module.reset();  // before its context: the order parameters die in is the caller's
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("module {} is not valid IR: {}", name, problem_stream.str()));
  }
  state_->optimize(*module);
  llvm::orc::ResourceTrackerSP tracker = lljit.getMainJITDylib().createResourceTracker();
  if (llvm::Error error = lljit.addIRModule(
          tracker, llvm::orc::ThreadSafeModule(std::move(module), std::move(context)))) {
    return Status(StatusCode::kAlreadyExists,
                  fmt::format("loading a module: {}", error_text(std::move(error))));
  }
  const ModuleId id = state_->next_id++;
  state_->modules.emplace(id, std::move(tracker));
  return id;
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

size_t Jit::module_count() const {
  std::lock_guard lock(state_->mutex);
  return state_->modules.size();
}

}  // namespace mrpc::jit
