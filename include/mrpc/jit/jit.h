// Jit: mrpc's one ORC LLJIT instance wrapper, shared by the marshalling compiler (compiler/codec)
// and, later, the policy compiler. It loads LLVM IR modules (optimized with LLVM's O2 pipeline
// first), looks up their symbols, and unloads a module again (one ORC ResourceTracker per module).
// Host functions the generated code calls (runtime helpers) are registered by name.
//
// This header names LLVM types only by forward declaration, so including it costs nothing; only
// the code that builds IR includes LLVM's headers.
//
// Threads: every member may be called from any thread; calls are serialized by an internal mutex
// (LLJIT itself is thread-safe, the module table is not). Addresses returned by lookup() stay
// valid until their module is removed or the Jit is destroyed; the caller makes sure no thread
// runs code of a module while it is removed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "mrpc/base/expected.h"

namespace llvm {
class LLVMContext;
class Module;
}  // namespace llvm

namespace mrpc::jit {

// A host function (or datum) generated code may reference by `name`.
struct HostSymbol {
  std::string name;
  const void* address = nullptr;
};

// A loaded module, as returned by Jit::add_module; 0 is never a valid id.
using ModuleId = uint64_t;

struct JitOptions {
  // When not empty: an on-disk cache of compiled objects, shared by every Jit (and process) given
  // the same directory. Created (mode 0700) if missing; it must belong to this user and be
  // writable by no one else, and so must each entry, else the entry is not loaded. Each entry
  // carries the SHA-256 of its object, checked before loading. Entries are found by the SHA-256 of
  // the module's IR text plus this host's target triple, CPU and LLVM version.
  std::string object_cache_dir;
};

struct JitStats {
  uint64_t modules_compiled = 0;  // optimized and compiled here
  uint64_t cache_hits = 0;        // loaded from the object cache instead
  uint64_t cache_rejected = 0;    // cache entries refused (hash, owner, mode or size)
  uint64_t cache_write_failures = 0;
};

class Jit {
 public:
  // Creates an LLJIT for the host CPU. INTERNAL if LLVM cannot target this host;
  // FAILED_PRECONDITION if the object cache directory cannot be made or is not safe (owner, mode).
  static Expected<std::unique_ptr<Jit>> create(const JitOptions& options = {});
  ~Jit();
  Jit(const Jit&) = delete;
  Jit& operator=(const Jit&) = delete;

  // Makes `symbols` resolvable by every module loaded afterwards. ALREADY_EXISTS if a name is
  // defined already.
  Status define_host_symbols(const std::vector<HostSymbol>& symbols);

  // What IR for this JIT must carry (set on the module before add_module; add_module sets them if
  // they are empty).
  std::string target_triple() const;
  std::string data_layout() const;

  // Verifies `module`, runs the O2 pipeline on it, and loads it (machine code is generated on the
  // first lookup of one of its symbols). INVALID_ARGUMENT with the verifier's text if the IR is
  // malformed; ALREADY_EXISTS if it defines a symbol another loaded module defines.
  //
  // With an object cache the module is compiled to an object at once and stored, or, when the
  // cache has a valid entry for the same IR (its text, hashed, names the entry), neither
  // optimized nor compiled: the entry is loaded.
  Expected<ModuleId> add_module(std::unique_ptr<llvm::LLVMContext> context,
                                std::unique_ptr<llvm::Module> module);

  // What `module` becomes, as text, without loading it: the IR after the O2 pipeline, or the
  // host's assembly of it (`mrpc-polc build --emit=llvm|asm`). INVALID_ARGUMENT for malformed IR.
  enum class TextForm { kOptimizedIr, kAssembly };
  Expected<std::string> emit_text(std::unique_ptr<llvm::LLVMContext> context,
                                  std::unique_ptr<llvm::Module> module, TextForm form);

  // The address of `name` (compiling its module if not done yet). NOT_FOUND if no loaded module
  // or host symbol defines it.
  Expected<void*> lookup(std::string_view name);

  // The addresses of all `names` in one lookup (one round through ORC: much cheaper than one
  // lookup() per name). NOT_FOUND if any is missing.
  Expected<std::vector<void*>> lookup_all(const std::vector<std::string>& names);

  // Unloads a module: its code and data are freed, its symbols no longer resolve.
  // NOT_FOUND for an id that is not loaded.
  Status remove_module(ModuleId id);

  // Modules loaded now.
  size_t module_count() const;
  JitStats stats() const;

 private:
  struct State;
  explicit Jit(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace mrpc::jit
