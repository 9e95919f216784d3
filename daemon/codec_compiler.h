// CodecWorker: the daemon's compile thread for registrations. An app's RegisterService is handed
// to it whole: it parses the FileDescriptorSet into a Schema (layouts) and compiles the service's
// codecs through the CodecCache (one compile per codec key: a second app with the same schema
// pays only for the key), then marks the job done and wakes the registering connection's runtime,
// which finishes the registration (registry, reply) between rounds. So a registration never holds
// a runtime thread: other apps' calls go on while a schema compiles (docs/mrpcd.md).
//
// Each job first prunes the cache: schemas whose services were all dropped are unloaded then.
// The worker owns the daemon's one jit::Jit (its on-disk object cache in a daemon-owned 0700
// directory), the CodecCompiler and the CodecCache. Jobs run one at a time, in submission order.
//
// Threads: submit() and stats() from any thread; everything else on the worker's own thread.
// A job is shared by the submitter and the worker; its results are written before `done` is
// set (release) and read after it is seen (acquire).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "mrpc/base/expected.h"
#include "mrpc/codec/codec_cache.h"
#include "mrpc/daemon/daemon.h"
#include "mrpc/jit/jit.h"
#include "mrpc/message/schema.h"
#include "mrpc/transports/codec.h"
#include "service_registry.h"

namespace mrpc {

// One registration waiting for its schema and codecs.
struct CodecJob {
  // In: what the app sent.
  std::string file_descriptor_set;
  std::string service;
  // Out, valid once `done`: the parsed schema and the service's codecs, or why not.
  Status status;
  std::shared_ptr<const Schema> schema;
  std::shared_ptr<const ServiceCodecs> codecs;
  std::atomic<bool> done{false};
};

struct CodecWorkerOptions {
  std::string object_cache_dir;  // empty: no on-disk cache
  codec::CodecCompileLimits compile_limits;
  // kFast: a registration waits for fast (-O0) codecs; the cache's tier-up thread recompiles them
  // optimized and swaps them in (docs/marshalling.md, "Tiers"). kOptimized: it waits for O2.
  jit::CodegenTier first_tier = jit::CodegenTier::kFast;
  std::function<void()> before_job;  // DaemonConfig::codec_compile_hook
};

class CodecWorker {
 public:
  // Creates the JIT (FAILED_PRECONDITION if the cache directory is unsafe) and starts the thread.
  static Expected<std::unique_ptr<CodecWorker>> create(CodecWorkerOptions options);
  // Stops the thread: finishes the job under way (without waking anyone), drops the others and
  // joins. Idempotent; submit() after it queues work nobody runs.
  void stop();
  // Stops, then unloads the cached schemas; the JIT goes last (schemas held elsewhere must be
  // gone by then: they unload from it).
  ~CodecWorker();
  CodecWorker(const CodecWorker&) = delete;
  CodecWorker& operator=(const CodecWorker&) = delete;

  // Queues `job`; `wake` runs on the worker thread once the job is done (it wakes the runtime
  // that waits for it).
  void submit(std::shared_ptr<CodecJob> job, std::function<void()> wake);

  CodecStats stats() const;
  // The shared JIT (the policy compiler may load its modules here too).
  jit::Jit& jit() { return *jit_; }

 private:
  CodecWorker() = default;
  void run();
  void process(CodecJob& job);

  CodecWorkerOptions options_;
  std::unique_ptr<jit::Jit> jit_;
  std::unique_ptr<codec::CodecCompiler> compiler_;
  std::unique_ptr<codec::CodecCache> cache_;

  mutable std::mutex mutex_;
  std::condition_variable wanted_;
  std::deque<std::pair<std::shared_ptr<CodecJob>, std::function<void()>>> queue_;
  bool stopping_ = false;
  CodecStats stats_;  // under mutex_
  std::thread thread_;
};

// TransportCodecs over the daemon's service registry. Runtime thread only (as the registry).
class RegistryCodecs final : public TransportCodecs {
 public:
  explicit RegistryCodecs(const ServiceTable& registry) : registry_(registry) {}
  std::shared_ptr<const ServiceCodecs> service(uint32_t service_id) const override {
    const RegisteredService* found = registry_.find(service_id);
    return found == nullptr ? nullptr : found->codecs;
  }

 private:
  const ServiceTable& registry_;
};

}  // namespace mrpc
