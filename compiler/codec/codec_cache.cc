// CodecCache (include/mrpc/codec/codec_cache.h).
#include "mrpc/codec/codec_cache.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace mrpc::codec {

CodecCache::CodecCache(CodecCompiler& compiler, CodecCacheOptions options)
    : compiler_(compiler), options_(options) {
  if (options_.first_tier == jit::CodegenTier::kFast) {
    tier_up_thread_ = std::thread([this] { run_tier_ups(); });
  }
}

CodecCache::~CodecCache() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  tier_up_wanted_.notify_all();
  if (tier_up_thread_.joinable()) tier_up_thread_.join();
}

Expected<std::shared_ptr<const CompiledSchema>> CodecCache::get(
    const std::vector<const google::protobuf::Descriptor*>& roots) {
  const uint64_t key = CodecCompiler::key_of(roots);
  std::lock_guard lock(mutex_);
  if (auto it = schemas_.find(key); it != schemas_.end()) {
    ++stats_.hits;
    return it->second;
  }
  auto compiled = compiler_.compile(roots, options_.first_tier);
  if (!compiled.ok()) return compiled.status();
  ++stats_.compiles;
  stats_.compile_nanoseconds +=
      (*compiled)->generate_nanoseconds() + (*compiled)->compile_nanoseconds();
  schemas_.emplace(key, *compiled);
  if ((*compiled)->tier() != jit::CodegenTier::kOptimized && !stopping_) {
    tier_up_queue_.emplace_back(*compiled);
    tier_ups_pending_.fetch_add(1, std::memory_order_relaxed);
    tier_up_wanted_.notify_one();
  }
  return compiled;
}

void CodecCache::run_tier_ups() {
  // Below the compile thread and the runtime threads: a tier-up only uses idle CPU. On Linux
  // the nice value is per thread (PRIO_PROCESS with a thread id); failing to set it is harmless.
  (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), 10);
  std::unique_lock lock(mutex_);
  for (;;) {
    tier_up_wanted_.wait(lock, [this] { return stopping_ || !tier_up_queue_.empty(); });
    if (stopping_) break;
    std::shared_ptr<const CompiledSchema> schema = tier_up_queue_.front().lock();
    tier_up_queue_.pop_front();
    tier_up_busy_ = true;
    tier_up_current_ = schema.get();
    lock.unlock();
    Status status;
    if (schema != nullptr) status = compiler_.tier_up(*schema);
    lock.lock();
    tier_up_busy_ = false;
    tier_up_current_ = nullptr;
    tier_ups_pending_.fetch_sub(1, std::memory_order_relaxed);
    if (schema != nullptr) {
      if (status.ok()) {
        tier_ups_.fetch_add(1, std::memory_order_relaxed);
        tier_up_nanoseconds_.fetch_add(schema->tier_up_nanoseconds(), std::memory_order_relaxed);
      } else {
        tier_up_failures_.fetch_add(1, std::memory_order_relaxed);
      }
    }
    // Dropped here, under the lock: if the cache let go of it meanwhile, it unloads now.
    schema.reset();
    if (tier_up_queue_.empty()) tier_up_idle_.notify_all();
  }
  tier_ups_pending_.fetch_sub(tier_up_queue_.size(), std::memory_order_relaxed);
  tier_up_queue_.clear();
  tier_up_idle_.notify_all();
}

void CodecCache::wait_for_tier_ups() {
  std::unique_lock lock(mutex_);
  tier_up_idle_.wait(lock,
                     [this] { return stopping_ || (tier_up_queue_.empty() && !tier_up_busy_); });
}

size_t CodecCache::prune() {
  std::lock_guard lock(mutex_);
  size_t dropped = 0;
  for (auto it = schemas_.begin(); it != schemas_.end();) {
    // The tier-up thread's reference does not keep a schema: it unloads when that thread lets go.
    const long holders = it->second.get() == tier_up_current_ ? 2 : 1;
    if (it->second.use_count() == holders) {
      it = schemas_.erase(it);
      ++dropped;
    } else {
      ++it;
    }
  }
  return dropped;
}

bool CodecCache::contains(uint64_t key) const {
  std::lock_guard lock(mutex_);
  return schemas_.count(key) != 0;
}

CodecCache::Stats CodecCache::stats() const {
  std::lock_guard lock(mutex_);
  Stats out = stats_;
  out.schemas = schemas_.size();
  const TierUpCounts counts = tier_up_counts();
  out.tier_ups = counts.done;
  out.tier_up_failures = counts.failed;
  out.tier_up_nanoseconds = counts.nanoseconds;
  out.tier_ups_pending = counts.pending;
  return out;
}

CodecCache::TierUpCounts CodecCache::tier_up_counts() const {
  return TierUpCounts{tier_ups_.load(std::memory_order_relaxed),
                      tier_up_failures_.load(std::memory_order_relaxed),
                      tier_up_nanoseconds_.load(std::memory_order_relaxed),
                      tier_ups_pending_.load(std::memory_order_relaxed)};
}

}  // namespace mrpc::codec
