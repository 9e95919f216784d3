#include "codec_compiler.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>

#include "mrpc/base/check.h"
#include "mrpc/message/layout.h"

namespace mrpc {

Expected<std::unique_ptr<CodecWorker>> CodecWorker::create(CodecWorkerOptions options) {
  std::unique_ptr<CodecWorker> worker(new CodecWorker());
  auto jit = jit::Jit::create(jit::JitOptions{.object_cache_dir = options.object_cache_dir});
  if (!jit.ok()) return jit.status();
  worker->jit_ = std::move(*jit);
  auto compiler = codec::CodecCompiler::create(*worker->jit_, options.compile_limits);
  if (!compiler.ok()) return compiler.status();
  worker->compiler_ = std::move(*compiler);
  worker->cache_ = std::make_unique<codec::CodecCache>(
      *worker->compiler_, codec::CodecCacheOptions{.first_tier = options.first_tier});
  worker->options_ = std::move(options);
  worker->thread_ = std::thread([raw = worker.get()] { raw->run(); });
  return worker;
}

void CodecWorker::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wanted_.notify_all();
  if (thread_.joinable()) thread_.join();
}

CodecWorker::~CodecWorker() {
  stop();
  // The cache's schemas unload their modules from the JIT: both go before the JIT.
  cache_.reset();
  compiler_.reset();
}

void CodecWorker::submit(std::shared_ptr<CodecJob> job, std::function<void()> wake) {
  {
    std::lock_guard lock(mutex_);
    queue_.emplace_back(std::move(job), std::move(wake));
    ++stats_.registrations_pending;
  }
  wanted_.notify_one();
}

void CodecWorker::run() {
  for (;;) {
    std::shared_ptr<CodecJob> job;
    std::function<void()> wake;
    {
      std::unique_lock lock(mutex_);
      wanted_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = std::move(queue_.front().first);
      wake = std::move(queue_.front().second);
      queue_.pop_front();
    }
    if (options_.before_job) options_.before_job();
    process(*job);
    {
      std::lock_guard lock(mutex_);
      --stats_.registrations_pending;
    }
    job->done.store(true, std::memory_order_release);
    std::lock_guard lock(mutex_);
    if (!stopping_) wake();  // the runtime is still there until stop() returns
  }
}

void CodecWorker::process(CodecJob& job) {
  const auto start = std::chrono::steady_clock::now();
  // Schemas no registered service holds any more are unloaded first (a later registration of the
  // same schema compiles it again, or loads it from the on-disk cache).
  if (cache_->prune() > 0) {
    std::lock_guard lock(mutex_);
    std::erase_if(stats_.schemas,
                  [this](const CodecSchemaStats& entry) { return !cache_->contains(entry.key); });
    stats_.cached_schemas = stats_.schemas.size();
  }
  auto schema = Schema::from_file_descriptor_set(job.file_descriptor_set);
  if (!schema.ok()) {
    job.status = schema.status();
    return;
  }
  const ServiceInfo* info = (*schema)->service(job.service);
  if (info == nullptr) {
    job.status = Status(StatusCode::kNotFound,
                        fmt::format("the registered schema has no service '{}'", job.service));
    return;
  }
  // The roots: every method's input and output (the codecs of what they reach come along).
  std::vector<const google::protobuf::Descriptor*> roots;
  for (const MethodInfo& method : info->methods) {
    for (const MessageLayout* layout : {method.input, method.output}) {
      const google::protobuf::Descriptor* descriptor = (*schema)->descriptor(layout->full_name());
      MRPC_ASSERT(descriptor != nullptr, "schema has a layout for {} but no descriptor",
                  layout->full_name());
      roots.push_back(descriptor);
    }
  }
  const codec::CodecCache::Stats before = cache_->stats();
  auto compiled = cache_->get(roots);
  const auto wall = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start)
          .count());
  if (!compiled.ok()) {
    job.status =
        Status(compiled.status().code(), fmt::format("compiling the codecs of service '{}': {}",
                                                     job.service, compiled.status().message()));
    std::lock_guard lock(mutex_);
    ++stats_.failures;
    spdlog::warn("codecs of service {}: {}", job.service, job.status.to_string());
    return;
  }
  auto codecs = std::make_shared<ServiceCodecs>();
  codecs->schema = *compiled;
  for (const MethodInfo& method : info->methods) {
    codecs->methods.push_back(
        ServiceCodecs::Method{codecs->schema->find(method.input->full_name()),
                              codecs->schema->find(method.output->full_name())});
    MRPC_ASSERT(
        codecs->methods.back().request != nullptr && codecs->methods.back().response != nullptr,
        "the compiled schema lacks a method's message type");
  }
  const bool compiled_here = cache_->stats().compiles > before.compiles;
  const jit::JitStats jit = jit_->stats();
  {
    std::lock_guard lock(mutex_);
    stats_.object_cache_hits = jit.cache_hits;
    stats_.object_cache_rejected = jit.cache_rejected;
    if (compiled_here) {
      ++stats_.compiles;
      stats_.compile_nanoseconds +=
          codecs->schema->generate_nanoseconds() + codecs->schema->compile_nanoseconds();
      stats_.schemas.push_back(
          CodecSchemaStats{.key = codecs->schema->key(),
                           .first_service = job.service,
                           .functions = codecs->schema->functions(),
                           .instructions = codecs->schema->instructions(),
                           .generate_nanoseconds = codecs->schema->generate_nanoseconds(),
                           .compile_nanoseconds = codecs->schema->compile_nanoseconds(),
                           .registration_nanoseconds = wall,
                           .registrations = 1});
      stats_.cached_schemas = stats_.schemas.size();
    } else {
      ++stats_.cache_hits;
      for (CodecSchemaStats& entry : stats_.schemas) {
        if (entry.key == codecs->schema->key()) ++entry.registrations;
      }
    }
  }
  spdlog::info("codecs of service {}: {} (key {:016x}, {} functions, {:.2f} ms)", job.service,
               compiled_here ? "compiled" : "from the cache", codecs->schema->key(),
               codecs->schema->functions(), static_cast<double>(wall) / 1e6);
  job.schema = std::move(*schema);
  job.codecs = std::move(codecs);
}

CodecStats CodecWorker::stats() const {
  // Never the cache's or the JIT's lock: they are held through a compile, and stats are read on
  // a runtime thread.
  const codec::CodecCache::TierUpCounts tier_ups = cache_->tier_up_counts();
  std::lock_guard lock(mutex_);
  CodecStats out = stats_;
  out.tier_ups = tier_ups.done;
  out.tier_up_failures = tier_ups.failed;
  out.tier_up_nanoseconds = tier_ups.nanoseconds;
  out.tier_ups_pending = tier_ups.pending;
  return out;
}

}  // namespace mrpc
