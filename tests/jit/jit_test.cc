// The JIT wrapper: IR modules load, optimize, run host functions, and unload.
#include <doctest/doctest.h>

#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/Module.h>

#include "mrpc/jit/jit.h"

namespace {

int64_t host_triple(int64_t value) {
  return 3 * value;
}

struct BuiltModule {
  std::unique_ptr<llvm::LLVMContext> context = std::make_unique<llvm::LLVMContext>();
  std::unique_ptr<llvm::Module> module;
};

// `int64 name(int64 x) { return host_triple(x) + addend; }`
BuiltModule module_calling_host(const std::string& name, int64_t addend) {
  BuiltModule built;
  built.module = std::make_unique<llvm::Module>(name, *built.context);
  llvm::Type* i64 = llvm::Type::getInt64Ty(*built.context);
  auto* type = llvm::FunctionType::get(i64, {i64}, false);
  llvm::FunctionCallee host = built.module->getOrInsertFunction("host_triple", type);
  auto* function =
      llvm::Function::Create(type, llvm::Function::ExternalLinkage, name, *built.module);
  llvm::IRBuilder<> ir(llvm::BasicBlock::Create(*built.context, "entry", function));
  llvm::Value* tripled = ir.CreateCall(host, {function->getArg(0)});
  ir.CreateRet(ir.CreateAdd(tripled, ir.getInt64(static_cast<uint64_t>(addend))));
  return built;
}

}  // namespace

TEST_CASE("a loaded module calls a registered host function and unloads") {
  auto jit = mrpc::jit::Jit::create();
  REQUIRE_MESSAGE(jit.ok(), jit.status().to_string());
  REQUIRE((*jit)
              ->define_host_symbols({{"host_triple", reinterpret_cast<const void*>(&host_triple)}})
              .ok());
  BuiltModule built = module_calling_host("plus_one", 1);
  auto id = (*jit)->add_module(std::move(built.context), std::move(built.module));
  REQUIRE_MESSAGE(id.ok(), id.status().to_string());
  auto address = (*jit)->lookup("plus_one");
  REQUIRE_MESSAGE(address.ok(), address.status().to_string());
  auto* function = reinterpret_cast<int64_t (*)(int64_t)>(*address);
  CHECK(function(14) == 43);
  CHECK((*jit)->module_count() == 1);

  REQUIRE((*jit)->remove_module(*id).ok());
  CHECK((*jit)->module_count() == 0);
  CHECK((*jit)->lookup("plus_one").status().code() == mrpc::StatusCode::kNotFound);
  CHECK((*jit)->remove_module(*id).code() == mrpc::StatusCode::kNotFound);

  // The same name loads again once the first module is gone.
  BuiltModule again = module_calling_host("plus_one", 2);
  auto second = (*jit)->add_module(std::move(again.context), std::move(again.module));
  REQUIRE(second.ok());
  auto reloaded = (*jit)->lookup("plus_one");
  REQUIRE(reloaded.ok());
  CHECK(reinterpret_cast<int64_t (*)(int64_t)>(*reloaded)(1) == 5);
}

TEST_CASE("invalid IR is refused with the verifier's reason") {
  auto jit = mrpc::jit::Jit::create();
  REQUIRE(jit.ok());
  BuiltModule built;
  built.module = std::make_unique<llvm::Module>("broken", *built.context);
  llvm::Type* i64 = llvm::Type::getInt64Ty(*built.context);
  auto* function =
      llvm::Function::Create(llvm::FunctionType::get(i64, {}, false),
                             llvm::Function::ExternalLinkage, "no_return", *built.module);
  llvm::IRBuilder<> ir(llvm::BasicBlock::Create(*built.context, "entry", function));
  ir.CreateRetVoid();  // the function returns i64
  auto id = (*jit)->add_module(std::move(built.context), std::move(built.module));
  REQUIRE_FALSE(id.ok());
  CHECK(id.status().code() == mrpc::StatusCode::kInvalidArgument);
  CHECK(id.status().message().find("broken") != std::string::npos);
}

TEST_CASE("an unknown symbol is NOT_FOUND and a duplicate host symbol ALREADY_EXISTS") {
  auto jit = mrpc::jit::Jit::create();
  REQUIRE(jit.ok());
  CHECK((*jit)->lookup("nothing_here").status().code() == mrpc::StatusCode::kNotFound);
  const void* address = reinterpret_cast<const void*>(&host_triple);
  REQUIRE((*jit)->define_host_symbols({{"host_triple", address}}).ok());
  CHECK((*jit)->define_host_symbols({{"host_triple", address}}).code() ==
        mrpc::StatusCode::kAlreadyExists);
}
