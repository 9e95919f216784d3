// CodecCache: compiled schemas by codec key (CodecCompiler::key_of), so a second app registering
// the same schema pays only for computing the key. Meant to be owned by the daemon, one per
// CodecCompiler (docs/marshalling.md says how registration uses it).
//
// Tiered (CodecCacheOptions::first_tier = kFast): get() compiles a new schema at the fast tier
// (what the registering app waits for) and queues it for the cache's tier-up thread, which
// recompiles it optimized and swaps the code in (CodecCompiler::tier_up; the CompiledSchema and
// its MessageCodec pointers stay the same, see include/mrpc/codec/codecs.h). An entry is one
// schema whatever its tier: a hit returns it at the tier it has reached. (The JIT's on-disk
// object cache, below this one, does key its entries by tier.)
//
// Threads: get() may be called from any thread; a compile holds the cache's lock, so concurrent
// registrations wait for each other (never the datapath, which only uses CompiledSchemas it
// already holds). The tier-up thread (tiered caches only) runs at a lower CPU priority (nice +10)
// and takes the cache's lock only to pick work, never through a compile: a tier-up does not
// hold up get(), except through the CPU and the JIT's short loading lock. It holds a schema
// (shared_ptr) only while tiering it up; a schema dropped from the cache before its turn is
// skipped.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "mrpc/codec/codecs.h"
#include "mrpc/jit/jit.h"

namespace mrpc::codec {

struct CodecCacheOptions {
  // kOptimized: get() compiles optimized, no thread. kFast: compile fast, tier up in the
  // background (above).
  jit::CodegenTier first_tier = jit::CodegenTier::kOptimized;
};

class CodecCache {
 public:
  explicit CodecCache(CodecCompiler& compiler, CodecCacheOptions options = {});
  // Stops the tier-up thread (a tier-up under way finishes first; queued ones are dropped: their
  // schemas keep their fast code).
  ~CodecCache();
  CodecCache(const CodecCache&) = delete;
  CodecCache& operator=(const CodecCache&) = delete;

  // The compiled codecs of `roots` and what they reach: from the cache, or compiled now.
  Expected<std::shared_ptr<const CompiledSchema>> get(
      const std::vector<const google::protobuf::Descriptor*>& roots);

  // Drops the schemas nobody else holds (their JIT modules are unloaded; one being tiered up
  // unloads when its tier-up ends). Returns how many.
  size_t prune();
  // Whether the schema of codec key `key` is in the cache now.
  bool contains(uint64_t key) const;

  // Blocks until no tier-up is queued or under way (tests, benchmarks, orderly shutdown).
  void wait_for_tier_ups();

  struct Stats {
    uint64_t hits = 0;
    uint64_t compiles = 0;
    uint64_t compile_nanoseconds = 0;  // all first-tier compiles (IR + optimize + machine code)
    uint64_t schemas = 0;              // in the cache now
    uint64_t tier_ups = 0;             // schemas recompiled optimized and swapped in
    uint64_t tier_up_failures = 0;     // (they keep their fast code)
    uint64_t tier_up_nanoseconds = 0;  // all tier-ups together
    uint64_t tier_ups_pending = 0;     // queued or under way
  };
  Stats stats() const;

  // The tier-up counters alone, without the cache's lock (which a compile holds): for a thread
  // that must not wait, like a daemon's runtime reading its stats.
  struct TierUpCounts {
    uint64_t done = 0;
    uint64_t failed = 0;
    uint64_t nanoseconds = 0;
    uint64_t pending = 0;
  };
  TierUpCounts tier_up_counts() const;

 private:
  void run_tier_ups();

  CodecCompiler& compiler_;
  const CodecCacheOptions options_;
  mutable std::mutex mutex_;
  std::map<uint64_t, std::shared_ptr<const CompiledSchema>> schemas_;
  Stats stats_;
  // The tier-up queue, under mutex_.
  std::deque<std::weak_ptr<const CompiledSchema>> tier_up_queue_;
  std::atomic<uint64_t> tier_ups_{0};
  std::atomic<uint64_t> tier_up_failures_{0};
  std::atomic<uint64_t> tier_up_nanoseconds_{0};
  std::atomic<uint64_t> tier_ups_pending_{0};
  bool tier_up_busy_ = false;
  const CompiledSchema* tier_up_current_ = nullptr;  // the schema being tiered up, if any
  bool stopping_ = false;
  std::condition_variable tier_up_wanted_;
  std::condition_variable tier_up_idle_;
  std::thread tier_up_thread_;  // tiered caches only
};

}  // namespace mrpc::codec
