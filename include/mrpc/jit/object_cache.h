// ObjectCache: mrpc's on-disk cache of compiled code, shared by the marshalling compiler (through
// Jit, keyed by a module's IR) and the policy compiler (keyed by the policy's IR dump, source hash
// and compiler version, so a hit skips LLVM altogether).
//
// An entry is a file in one directory, named by the SHA-256 of its key text; it holds a magic, the
// SHA-256 of its payload and the payload. The directory is created with mode 0700 and must belong
// to this user and be writable by no one else, and so must each entry; an entry whose owner, mode,
// size, magic or hash is wrong is refused (counted) and the caller compiles again, overwriting it.
// Entries are written to a private temporary file and renamed into place (atomic).
//
// Threads: every member may be called from any thread. Ownership: the cache owns nothing but its
// counters; the payloads it returns are copies.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "mrpc/base/expected.h"

namespace mrpc::jit {

struct ObjectCacheStats {
  uint64_t hits = 0;            // load() found a valid entry
  uint64_t misses = 0;          // load() found no entry
  uint64_t rejected = 0;        // entries refused (owner, mode, size, magic or hash)
  uint64_t stores = 0;          // entries written
  uint64_t write_failures = 0;  // entries that could not be written
};

class ObjectCache {
 public:
  // FAILED_PRECONDITION if `directory` cannot be made or is not safe (not a directory, another
  // owner, writable by others).
  static Expected<std::unique_ptr<ObjectCache>> open(const std::string& directory);

  // The payload stored under `key`, or nothing (no entry, or an entry refused and counted).
  std::optional<std::string> load(std::string_view key);
  // Stores `payload` under `key` (replacing an entry); false (counted) if it could not.
  bool store(std::string_view key, std::string_view payload);
  // The file an entry of `key` lives in (for tests that tamper with it).
  std::string path_of(std::string_view key) const;

  const std::string& directory() const { return directory_; }
  ObjectCacheStats stats() const;

 private:
  explicit ObjectCache(std::string directory) : directory_(std::move(directory)) {}

  std::string directory_;
  std::atomic<uint64_t> hits_{0}, misses_{0}, rejected_{0}, stores_{0}, write_failures_{0};
  std::atomic<uint64_t> temporaries_{0};  // names this process's temporary entry files
};

}  // namespace mrpc::jit
