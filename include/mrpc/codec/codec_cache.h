// CodecCache: compiled schemas by codec key (CodecCompiler::key_of), so a second app registering
// the same schema pays only for computing the key. Meant to be owned by the daemon, one per
// CodecCompiler (docs/marshalling.md says how registration should use it).
//
// Threads: get() may be called from any thread; a compile holds the cache's lock, so concurrent
// registrations wait for each other (never the datapath, which only uses CompiledSchemas it
// already holds).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "mrpc/codec/codecs.h"

namespace mrpc::codec {

class CodecCache {
 public:
  explicit CodecCache(CodecCompiler& compiler) : compiler_(compiler) {}

  // The compiled codecs of `roots` and what they reach: from the cache, or compiled now.
  Expected<std::shared_ptr<const CompiledSchema>> get(
      const std::vector<const google::protobuf::Descriptor*>& roots);

  // Drops the schemas nobody else holds (their JIT modules are unloaded). Returns how many.
  size_t prune();
  // Whether the schema of codec key `key` is in the cache now.
  bool contains(uint64_t key) const;

  struct Stats {
    uint64_t hits = 0;
    uint64_t compiles = 0;
    uint64_t compile_nanoseconds = 0;  // all compiles together (IR + optimize + machine code)
    uint64_t schemas = 0;              // in the cache now
  };
  Stats stats() const;

 private:
  CodecCompiler& compiler_;
  mutable std::mutex mutex_;
  std::map<uint64_t, std::shared_ptr<const CompiledSchema>> schemas_;
  Stats stats_;
};

}  // namespace mrpc::codec
