// Jit: mrpc's one ORC LLJIT instance wrapper, shared by the marshalling compiler (compiler/codec)
// and the policy compiler. It compiles LLVM IR modules to machine code at a tier chosen per module
// (fast: -O0 code generation, no IR optimization; optimized: LLVM's O2 pipeline and -O2 code
// generation), loads them, looks up their symbols, and unloads a module again (one ORC
// ResourceTracker per module). Host functions the generated code calls (runtime helpers) are
// registered by name.
//
// This header names LLVM types only by forward declaration, so including it costs nothing; only
// the code that builds IR includes LLVM's headers.
//
// Threads: every member may be called from any thread. Optimization and code generation run on
// the calling thread outside the Jit's lock, one module at a time per tier (each tier has its own
// LLVM TargetMachine and lock), so a slow optimized compile on one thread does not hold up a fast
// compile, a lookup or an unload on another. Loading, lookups and unloads are serialized by the
// Jit's lock (LLJIT itself is thread-safe, the module table is not). Addresses returned by
// lookup() stay valid until their module is removed or the Jit is destroyed; the caller makes sure
// no thread runs code of a module while it is removed.
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

// How much work LLVM puts into a module's machine code (Jit::add_module).
enum class CodegenTier : uint8_t {
  // No IR optimization; machine code at -O0 (FastISel, the fast register allocator): several
  // times cheaper to compile, slower code. For code needed now (a registration waiting for it).
  kFast = 0,
  // LLVM's O2 pipeline, then -O2 machine code (SelectionDAG, greedy register allocator).
  kOptimized = 2,
};

const char* codegen_tier_name(CodegenTier tier);

// Where one add_module's time went (wall time, nanoseconds).
struct ModuleTimes {
  uint64_t verify_nanoseconds = 0;    // the IR verifier
  uint64_t optimize_nanoseconds = 0;  // the IR pipeline (0 at the fast tier)
  uint64_t codegen_nanoseconds = 0;   // machine code into an object file in memory
  uint64_t load_nanoseconds = 0;      // handing the object to ORC (linking is at the first lookup)
  uint64_t cache_nanoseconds = 0;     // with an object cache: hashing the IR, reading/writing
  bool from_object_cache = false;     // loaded from the on-disk cache: nothing optimized/compiled
};

struct ModuleOptions {
  CodegenTier tier = CodegenTier::kOptimized;
  ModuleTimes* times = nullptr;  // if given, filled in
  // If given, receives the object file when add_module compiled one (not for an entry loaded from
  // the object cache): what a caller with its own cache (the policy compiler) stores.
  std::string* object_out = nullptr;
};

struct JitStats {
  uint64_t modules_compiled = 0;       // compiled here (either tier)
  uint64_t modules_compiled_fast = 0;  // of which at CodegenTier::kFast
  uint64_t cache_hits = 0;             // loaded from the object cache instead
  uint64_t cache_rejected = 0;         // cache entries refused (hash, owner, mode or size)
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

  // Verifies `module`, compiles it to machine code at `options.tier` (on the calling thread) and
  // loads it (linked at the first lookup of one of its symbols). INVALID_ARGUMENT with the
  // verifier's text if the IR is malformed; ALREADY_EXISTS if it defines a symbol another loaded
  // module defines.
  //
  // With an object cache the object is stored, or, when the cache has a valid entry for the same
  // IR and tier (their text, hashed, names the entry), neither optimized nor compiled: the entry is
  // loaded.
  Expected<ModuleId> add_module(std::unique_ptr<llvm::LLVMContext> context,
                                std::unique_ptr<llvm::Module> module,
                                const ModuleOptions& options = {});

  // Loads an object file compiled earlier by add_module (ModuleOptions::object_out) on a host
  // with the same host_tag(), e.g. from a caller's own cache; `name` appears in errors.
  // ALREADY_EXISTS if it defines a symbol another loaded module defines; INVALID_ARGUMENT (at the
  // first lookup) for bytes that are not such an object.
  Expected<ModuleId> add_object(std::string_view object, const std::string& name);

  // This host's target triple, CPU, its features and the LLVM version: what an object compiled
  // here depends on (part of every cache key).
  std::string host_tag() const;

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
