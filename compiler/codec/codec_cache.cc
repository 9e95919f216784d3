// CodecCache (include/mrpc/codec/codec_cache.h).
#include "mrpc/codec/codec_cache.h"

namespace mrpc::codec {

Expected<std::shared_ptr<const CompiledSchema>> CodecCache::get(
    const std::vector<const google::protobuf::Descriptor*>& roots) {
  const uint64_t key = CodecCompiler::key_of(roots);
  std::lock_guard lock(mutex_);
  if (auto it = schemas_.find(key); it != schemas_.end()) {
    ++stats_.hits;
    return it->second;
  }
  auto compiled = compiler_.compile(roots);
  if (!compiled.ok()) return compiled.status();
  ++stats_.compiles;
  stats_.compile_nanoseconds +=
      (*compiled)->generate_nanoseconds() + (*compiled)->compile_nanoseconds();
  schemas_.emplace(key, *compiled);
  return compiled;
}

size_t CodecCache::prune() {
  std::lock_guard lock(mutex_);
  size_t dropped = 0;
  for (auto it = schemas_.begin(); it != schemas_.end();) {
    if (it->second.use_count() == 1) {
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
  return out;
}

}  // namespace mrpc::codec
