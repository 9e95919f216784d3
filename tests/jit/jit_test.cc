// The JIT wrapper: IR modules load, optimize, run host functions, and unload.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

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

namespace {

// A fresh private directory under /tmp, removed at the end of the test.
struct TemporaryDirectory {
  std::string path;
  TemporaryDirectory() {
    char name[] = "/tmp/mrpc-jit-test-XXXXXX";
    REQUIRE(::mkdtemp(name) != nullptr);
    path = name;
  }
  ~TemporaryDirectory() { std::filesystem::remove_all(path); }
};

std::vector<std::filesystem::path> entries(const std::string& dir) {
  std::vector<std::filesystem::path> out;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) out.push_back(entry.path());
  return out;
}

int64_t run_cached(const std::string& dir, mrpc::jit::JitStats* stats) {
  auto jit = mrpc::jit::Jit::create({dir});
  REQUIRE_MESSAGE(jit.ok(), jit.status().to_string());
  REQUIRE((*jit)
              ->define_host_symbols({{"host_triple", reinterpret_cast<const void*>(&host_triple)}})
              .ok());
  BuiltModule built = module_calling_host("plus_seven", 7);
  auto id = (*jit)->add_module(std::move(built.context), std::move(built.module));
  REQUIRE_MESSAGE(id.ok(), id.status().to_string());
  auto address = (*jit)->lookup("plus_seven");
  REQUIRE_MESSAGE(address.ok(), address.status().to_string());
  *stats = (*jit)->stats();
  return reinterpret_cast<int64_t (*)(int64_t)>(*address)(1);
}

}  // namespace

TEST_CASE("the object cache serves a second JIT and refuses a tampered entry") {
  TemporaryDirectory dir;
  mrpc::jit::JitStats stats;
  CHECK(run_cached(dir.path, &stats) == 10);
  CHECK(stats.modules_compiled == 1);
  CHECK(stats.cache_hits == 0);
  const auto files = entries(dir.path);
  REQUIRE(files.size() == 1);
  CHECK((std::filesystem::status(files[0]).permissions() & std::filesystem::perms::group_write) ==
        std::filesystem::perms::none);

  CHECK(run_cached(dir.path, &stats) == 10);
  CHECK(stats.cache_hits == 1);
  CHECK(stats.modules_compiled == 0);

  // One byte of the object changed: the hash check refuses it, the module is compiled again and
  // the entry rewritten.
  {
    std::fstream file(files[0], std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(60);
    file.put('\x5a');
  }
  CHECK(run_cached(dir.path, &stats) == 10);
  CHECK(stats.cache_rejected == 1);
  CHECK(stats.modules_compiled == 1);
  CHECK(run_cached(dir.path, &stats) == 10);
  CHECK(stats.cache_hits == 1);
}

TEST_CASE("an object cache directory others can write is refused") {
  TemporaryDirectory dir;
  std::filesystem::permissions(dir.path, std::filesystem::perms::all);
  ::chmod(dir.path.c_str(), 0777);
  auto jit = mrpc::jit::Jit::create({dir.path});
  REQUIRE_FALSE(jit.ok());
  CHECK(jit.status().code() == mrpc::StatusCode::kFailedPrecondition);
  CHECK(jit.status().message().find("writable by no one else") != std::string::npos);
}

TEST_CASE("lookup_all finds every symbol in one lookup or says NOT_FOUND") {
  auto jit = mrpc::jit::Jit::create();
  REQUIRE(jit.ok());
  REQUIRE((*jit)
              ->define_host_symbols({{"host_triple", reinterpret_cast<const void*>(&host_triple)}})
              .ok());
  BuiltModule one = module_calling_host("plus_one", 1);
  REQUIRE((*jit)->add_module(std::move(one.context), std::move(one.module)).ok());
  BuiltModule two = module_calling_host("plus_two", 2);
  REQUIRE((*jit)->add_module(std::move(two.context), std::move(two.module)).ok());
  auto both = (*jit)->lookup_all({"plus_two", "plus_one"});
  REQUIRE_MESSAGE(both.ok(), both.status().to_string());
  CHECK(reinterpret_cast<int64_t (*)(int64_t)>((*both)[0])(1) == 5);
  CHECK(reinterpret_cast<int64_t (*)(int64_t)>((*both)[1])(1) == 4);
  CHECK((*jit)->lookup_all({"plus_one", "missing"}).status().code() == mrpc::StatusCode::kNotFound);
}

namespace {

// Adds `plus_<addend>` at `tier` to a JIT with the object cache in `dir`; returns f(1).
int64_t run_at_tier(const std::string& dir, mrpc::jit::CodegenTier tier, int64_t addend,
                    mrpc::jit::JitStats* stats, mrpc::jit::ModuleTimes* times) {
  auto jit = mrpc::jit::Jit::create({dir});
  REQUIRE_MESSAGE(jit.ok(), jit.status().to_string());
  REQUIRE((*jit)
              ->define_host_symbols({{"host_triple", reinterpret_cast<const void*>(&host_triple)}})
              .ok());
  BuiltModule built = module_calling_host("plus", addend);
  auto id = (*jit)->add_module(std::move(built.context), std::move(built.module),
                               {.tier = tier, .times = times});
  REQUIRE_MESSAGE(id.ok(), id.status().to_string());
  auto address = (*jit)->lookup("plus");
  REQUIRE_MESSAGE(address.ok(), address.status().to_string());
  *stats = (*jit)->stats();
  return reinterpret_cast<int64_t (*)(int64_t)>(*address)(1);
}

}  // namespace

TEST_CASE("the same IR compiled at the fast and optimized tiers gets two object cache entries") {
  using mrpc::jit::CodegenTier;
  TemporaryDirectory dir;
  mrpc::jit::JitStats stats;
  mrpc::jit::ModuleTimes times;
  CHECK(run_at_tier(dir.path, CodegenTier::kFast, 5, &stats, &times) == 8);
  CHECK(stats.modules_compiled == 1);
  CHECK(stats.modules_compiled_fast == 1);
  CHECK_FALSE(times.from_object_cache);
  CHECK(times.optimize_nanoseconds == 0);  // the fast tier runs no IR pipeline
  CHECK(times.codegen_nanoseconds > 0);
  // The same IR, optimized: not the fast entry (the tier is part of the entry's name).
  CHECK(run_at_tier(dir.path, CodegenTier::kOptimized, 5, &stats, &times) == 8);
  CHECK(stats.cache_hits == 0);
  CHECK(stats.modules_compiled == 1);
  CHECK(stats.modules_compiled_fast == 0);
  CHECK(entries(dir.path).size() == 2);
  // Each tier now loads its own entry.
  for (CodegenTier tier : {CodegenTier::kFast, CodegenTier::kOptimized}) {
    CAPTURE(mrpc::jit::codegen_tier_name(tier));
    CHECK(run_at_tier(dir.path, tier, 5, &stats, &times) == 8);
    CHECK(stats.cache_hits == 1);
    CHECK(stats.modules_compiled == 0);
    CHECK(times.from_object_cache);
  }
}

TEST_CASE("a module compiled at the fast tier runs like the optimized one and unloads") {
  auto jit = mrpc::jit::Jit::create();
  REQUIRE_MESSAGE(jit.ok(), jit.status().to_string());
  REQUIRE((*jit)
              ->define_host_symbols({{"host_triple", reinterpret_cast<const void*>(&host_triple)}})
              .ok());
  BuiltModule fast = module_calling_host("fast_plus_two", 2);
  auto fast_id = (*jit)->add_module(std::move(fast.context), std::move(fast.module),
                                    {.tier = mrpc::jit::CodegenTier::kFast});
  REQUIRE_MESSAGE(fast_id.ok(), fast_id.status().to_string());
  BuiltModule optimized = module_calling_host("optimized_plus_two", 2);
  auto optimized_id = (*jit)->add_module(std::move(optimized.context), std::move(optimized.module));
  REQUIRE_MESSAGE(optimized_id.ok(), optimized_id.status().to_string());
  auto addresses = (*jit)->lookup_all({"fast_plus_two", "optimized_plus_two"});
  REQUIRE_MESSAGE(addresses.ok(), addresses.status().to_string());
  for (int64_t x : {-5, 0, 1, 1000}) {
    CHECK(reinterpret_cast<int64_t (*)(int64_t)>((*addresses)[0])(x) ==
          reinterpret_cast<int64_t (*)(int64_t)>((*addresses)[1])(x));
  }
  CHECK((*jit)->stats().modules_compiled_fast == 1);
  REQUIRE((*jit)->remove_module(*fast_id).ok());
  CHECK((*jit)->lookup("fast_plus_two").status().code() == mrpc::StatusCode::kNotFound);
  CHECK((*jit)->lookup("optimized_plus_two").ok());
}
