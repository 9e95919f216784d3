// Daemon: the sockets, the runtime, and the housekeeping task (accepting apps, the control
// socket, deadlines). See mrpc/daemon/daemon.h.
#include "mrpc/daemon/daemon.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "codec_compiler.h"
#include "connection_task.h"
#include "control_server.h"
#include "core.h"
#include "local_transport.h"
#include "mrpc/base/check.h"
#include "mrpc/transports/loopback.h"
#include "mrpc/transports/shm/app_socket.h"
#include "mrpc/transports/shm/ring.h"
#include "policy_control.h"
#include "protobuf_log.h"
#include "runner_factory.h"
#include "shard_task.h"
#include "tcp_transport.h"

namespace mrpc {

namespace {
// Connections accepted per round, so a connect storm cannot hold the runtime.
constexpr int kAcceptsPerRound = 16;
}  // namespace

// Sets up a connection accepted by shard 0 on the shard it was placed on: its task, its watch.
void adopt_connection(DaemonCore& core, shm::UniqueFd socket, const shm::PeerCredentials& peer,
                      UidBudget& uid_budget) {
  auto connection = std::make_shared<Connection>();
  connection->socket = std::move(socket);
  connection->handshake_deadline = core.clock.now() + core.config.handshake_timeout.count();
  auto identity = std::make_shared<CallerIdentity>();
  identity->pid = peer.pid;
  identity->uid = peer.uid;
  identity->gid = peer.gid;
  connection->identity = std::move(identity);
  connection->uid_budget = &uid_budget;
  const SlotHandle local = core.connections.insert(connection);
  if (local == kNoSlotHandle || slot_of(local) > shards::kMaxSlot) {
    if (local != kNoSlotHandle) core.connections.erase(local);
    core.shared.uid_budgets.remove_connection(uid_budget);
    spdlog::warn("dropping a connection: shard {} has no room", core.shard);
    return;
  }
  connection->id = shards::global(local, core.shard);
  if (Status watched =
          core.runtime->watch_readable(connection->socket.get(), &connection->socket_readable);
      !watched.ok()) {
    spdlog::warn("dropping a connection: {}", watched.to_string());
    core.connections.erase(local);
    core.shared.uid_budgets.remove_connection(uid_budget);
    return;
  }
  core.runtime->add(std::make_shared<ConnectionTask>(core, connection));
  core.counters.connections_accepted.fetch_add(1, std::memory_order_relaxed);
  core.counters.connections_open.fetch_add(1, std::memory_order_relaxed);
}

uint64_t connections_open(const DaemonShared& shared) {
  uint64_t open = 0;
  for (const DaemonCore* shard : shared.shards)
    open += shard->counters.connections_open.load(std::memory_order_relaxed);
  return open;
}

// The shard a new connection goes to: the one with the fewest open connections (those still
// handshaking or being handed over included: a shard counts one as soon as it is chosen), then
// the fewest calls in flight; among equals, round robin from `turn`. Two relaxed counter reads
// per shard.
DaemonCore& least_loaded_shard(const std::vector<DaemonCore*>& shards, size_t turn) {
  DaemonCore* best = nullptr;
  uint64_t best_connections = 0, best_calls = 0;
  for (size_t k = 0; k < shards.size(); ++k) {
    DaemonCore* shard = shards[(turn + k) % shards.size()];
    const uint64_t connections = shard->counters.connections_open.load(std::memory_order_relaxed);
    const uint64_t calls = shard->counters.calls_in_flight.load(std::memory_order_relaxed);
    if (best == nullptr || connections < best_connections ||
        (connections == best_connections && calls < best_calls)) {
      best = shard;
      best_connections = connections;
      best_calls = calls;
    }
  }
  return *best;
}

// Each shard's: runs the jobs posted to it and ends its calls at their deadlines. Shard 0's also
// accepts apps (placing each on the least-loaded shard) and serves the control socket.
class HousekeepingTask final : public Task {
 public:
  HousekeepingTask(DaemonCore& core, int app_listener, ControlServer* control,
                   std::atomic<bool>* listeners_readable, const std::atomic<bool>& drain_requested)
      : core_(core),
        app_listener_(app_listener),
        control_(control),
        listeners_readable_(listeners_readable),
        drain_requested_(drain_requested) {}

  bool run() override {
    core_.bind_to_this_thread();  // a store; first in every round of this shard
    bool did_work = core_.jobs.run();
    if (drain_requested_.load(std::memory_order_acquire) && !core_.draining) {
      core_.draining = true;
      if (core_.shard == 0) spdlog::info("draining: new calls and connections are refused");
      did_work = true;
    }
    // The listeners and control clients cost a syscall each: they are looked at only when the
    // runtime flagged one of them readable (a connect, a control request), not when some other
    // socket (an app's, a TCP link's) woke it, nor by time. A control client whose watch failed
    // is still read every kDaemonListenerCheckInterval while it is there.
    const MonoTime now = core_.clock.now();
    if (control_ != nullptr) {
      const bool interval =
          now - listeners_checked_ >= limits::kDaemonListenerCheckInterval.count();
      if (listeners_readable_->exchange(false, std::memory_order_acq_rel) ||
          (interval && control_->has_clients())) {
        core_.counters.listener_checks.fetch_add(1, std::memory_order_relaxed);
        bool accepted = false;
        if (!core_.draining) accepted = accept_apps();
        const bool served = control_->poll();
        // Level-triggered: more may wait (kAcceptsPerRound): look again next round.
        if (accepted || served) listeners_readable_->store(true, std::memory_order_relaxed);
        did_work |= accepted || served;
      }
      if (interval) {
        listeners_checked_ = now;
        // Registrations whose owner's grace period ended with no app left go (a comparison when
        // none is due).
        for (const ServiceUpdate& dropped : core_.shared.directory.expire_ownerships(now))
          core_.publish(dropped);
      }
    }
    did_work |= core_.expire_deadlines();
    return did_work;
  }
  MonoTime next_timer() const override { return core_.next_deadline(); }
  bool prepare_to_sleep() override { return !core_.jobs.pending(); }

 private:
  bool accept_apps() {
    bool did_work = false;
    for (int i = 0; i < kAcceptsPerRound; ++i) {
      auto accepted = shm::accept_app_socket(app_listener_);
      if (!accepted.ok()) break;
      did_work = true;
      shm::UniqueFd socket = std::move(*accepted);
      if (connections_open(core_.shared) >= core_.config.max_connections) {
        spdlog::warn("refusing a connection: max_connections={} reached",
                     core_.config.max_connections);
        continue;  // closing the socket is the refusal
      }
      auto credentials = shm::peer_credentials(socket.get());
      if (!credentials.ok() || !shm::set_nonblocking(socket.get()).ok()) {
        spdlog::warn("dropping a connection: {}", credentials.status().to_string());
        continue;
      }
      UidBudget* uid_budget = core_.shared.uid_budgets.try_add_connection(
          credentials->uid, core_.config.max_connections_per_uid);
      if (uid_budget == nullptr) {
        spdlog::warn("refusing a connection of uid {}: max_connections_per_uid={} reached",
                     credentials->uid, core_.config.max_connections_per_uid);
        continue;  // closing the socket is the refusal
      }
      const auto& shards = core_.shared.shards;
      DaemonCore& target = least_loaded_shard(shards, next_shard_++);
      if (&target == &core_) {
        adopt_connection(core_, std::move(socket), *credentials, *uid_budget);
      } else {
        // Counted as open now, so max_connections holds while the hand-over is under way.
        target.counters.connections_open.fetch_add(1, std::memory_order_relaxed);
        auto moved = std::make_shared<shm::UniqueFd>(std::move(socket));
        target.jobs.post([&target, moved, peer = *credentials, uid_budget] {
          target.counters.connections_open.fetch_sub(1, std::memory_order_relaxed);
          adopt_connection(target, std::move(*moved), peer, *uid_budget);
        });
      }
    }
    return did_work;
  }

  DaemonCore& core_;
  int app_listener_;
  ControlServer* control_;                 // shard 0's only
  std::atomic<bool>* listeners_readable_;  // set by the runtime (shard 0's only)
  const std::atomic<bool>& drain_requested_;
  MonoTime listeners_checked_ = 0;
  size_t next_shard_ = 0;
};

// One runtime thread and what it owns.
struct Shard {
  Shard(const DaemonConfig& config, const Clock& clock, uint32_t index, uint32_t count,
        DaemonShared& shared)
      : core(config, clock, index, shared),
        local_transport(core),
        runtime(clock, RuntimeOptions{.name = count == 1 ? std::string("mrpcd-runtime")
                                                         : fmt::format("mrpcd-rt{}", index),
                                      .spin_budget = config.spin_budget}) {
    core.runtime = &runtime;
    core.jobs.runtime = &runtime;
    core.transport = &local_transport;
    core.inbox = std::make_unique<ShardInbox>(count, limits::kShardLinkEntries, runtime);
  }

  DaemonCore core;
  LocalTransport local_transport;
  Runtime runtime;  // after core: its tasks refer to core, so it goes first
  std::shared_ptr<HousekeepingTask> housekeeping;
  std::unique_ptr<RegistryCodecs> codecs;  // over core.registry
};

struct Daemon::Impl {
  Impl(DaemonConfig config_in, const Clock& clock) : config(std::move(config_in)) {
    const uint32_t count =
        std::clamp<uint32_t>(config.runtime_threads, 1, limits::kMaxRuntimeThreads);
    for (uint32_t i = 0; i < count; ++i) {
      shards.push_back(std::make_unique<Shard>(config, clock, i, count, shared));
      shared.shards.push_back(&shards.back()->core);
    }
    shared.directory.set_rules(
        {config.service_grace_period, config.service_owners, config.max_services_per_uid});
    shared.uid_budgets.set_max_receive_bytes_per_uid(config.max_receive_bytes_per_uid);
  }

  std::string stats_json() const;
  nlohmann::json codecs_json() const;
  nlohmann::json policy_jit_json() const;
  nlohmann::json tcp_json() const;
  nlohmann::json uids_json() const;
  nlohmann::json shards_json() const;  // per shard: open connections, calls in flight
  Status start_codec_worker();
  // The TCP transport of every shard and the listener, if configured.
  Status start_tcp();
  // Shard 0's runtime thread (the control server runs there).
  std::string connections_json() const;
  DaemonCore& core0() const { return shards.front()->core; }
  // The sum over shards of one counter.
  uint64_t sum(std::atomic<uint64_t> DaemonCounters::*counter) const {
    uint64_t total = 0;
    for (const auto& shard : shards)
      total += (shard->core.counters.*counter).load(std::memory_order_relaxed);
    return total;
  }
  uint64_t sum_runtime(uint64_t RuntimeStats::*field) const {
    uint64_t total = 0;
    for (const auto& shard : shards) total += shard->runtime.stats().*field;
    return total;
  }

  DaemonConfig config;
  // Set by shard 0's runtime when the app listener, the control listener or a control client is
  // readable (HousekeepingTask). Before shards: their runtimes' watches point at it.
  std::atomic<bool> listeners_readable{true};
  // Before shared and shards: the registry's services hold compiled codecs, which unload from the
  // worker's JIT, so the worker goes last. Its thread (which wakes runtimes) is stopped in stop().
  std::unique_ptr<CodecWorker> codec_worker;
  DaemonShared shared;
  std::vector<std::unique_ptr<Shard>> shards;
  std::shared_ptr<LoopbackTransport> loopback;  // when fault injection is on
  // Between hosts (tcp_transport.h): when a listen address or remote services are configured.
  std::unique_ptr<TcpShared> tcp_shared;
  std::vector<std::shared_ptr<TcpTransport>> tcp;  // by shard
  shm::UniqueFd app_listener;
  std::optional<ControlServer> control;
  std::unique_ptr<PolicyControl> policy_control;  // the policy commands of the control socket
  std::mutex upgrade_mutex;  // one upgrade at a time (each makes the next admission epoch current)
  std::atomic<bool> drain_requested{false};
  bool started = false;
};

// The compile thread for registrations, its JIT and the on-disk object cache (codec_compiler.h).
Status Daemon::Impl::start_codec_worker() {
  if (codec_worker != nullptr) return {};
  std::string cache_dir = config.codec_cache_dir;
  if (cache_dir.empty())
    cache_dir =
        (std::filesystem::path(config.app_socket_path).parent_path() / "jit-cache").string();
  auto worker = CodecWorker::create(CodecWorkerOptions{
      .object_cache_dir = cache_dir,
      .compile_limits =
          codec::CodecCompileLimits{.max_instructions = config.codec_max_instructions},
      .before_job = config.codec_compile_hook});
  if (!worker.ok()) {
    return Status(worker.status().code(), fmt::format("the codec compiler (cache directory {}): {}",
                                                      cache_dir, worker.status().message()));
  }
  codec_worker = std::move(*worker);
  for (auto& shard : shards) {
    shard->codecs = std::make_unique<RegistryCodecs>(shard->core.registry);
    shard->core.codec_worker = codec_worker.get();
    shard->core.codecs = shard->codecs.get();
  }
  spdlog::info("codec compiler: object cache in {}", cache_dir);
  // The policy JIT shares the directory (its entries' keys differ from the codecs').
  if (Status policy_cache = use_policy_object_cache(cache_dir); !policy_cache.ok()) {
    return Status(policy_cache.code(),
                  fmt::format("the policy JIT's object cache: {}", policy_cache.message()));
  }
  return {};
}

Status Daemon::Impl::start_tcp() {
  if (config.tcp_listen.empty() && config.remote_services.empty()) return {};
  auto resolver = StaticResolver::create(config.remote_services);
  if (!resolver.ok()) return resolver.status();
  tcp_shared = std::make_unique<TcpShared>();
  tcp_shared->resolver = std::move(*resolver);
  tcp_shared->host_name = config.host_name;
  if (tcp_shared->host_name.empty()) {
    char name[256] = {};
    (void)::gethostname(name, sizeof(name) - 1);
    tcp_shared->host_name = name;
  }
  for (auto& shard : shards) {
    auto transport = std::make_shared<TcpTransport>(shard->core, *tcp_shared);
    tcp_shared->shards.push_back(transport.get());
    shard->core.tcp = transport.get();
    tcp.push_back(transport);
  }
  if (!config.tcp_listen.empty()) {
    uint16_t port = 0;
    auto listener = listen_tcp(config.tcp_listen, &port);
    if (!listener.ok()) return listener.status();
    tcp.front()->set_listener(std::move(*listener));
    spdlog::info("tcp: listening for peer daemons on {} (port {}), host name '{}'",
                 config.tcp_listen, port, tcp_shared->host_name);
  }
  // Last in each round: frames the connections' graphs queued this round leave in one sendmsg,
  // in the same round (not one round later).
  for (size_t i = 0; i < shards.size(); ++i) shards[i]->runtime.add(tcp[i], TaskPlace::kLast);
  for (const RemoteServiceConfig& remote : config.remote_services) {
    spdlog::info("tcp: {} is served by {} peer{} ({} encoding)", remote.service,
                 remote.endpoints.size(), remote.endpoints.size() == 1 ? "" : "s",
                 remote.encoding == RemoteServiceConfig::Encoding::kNative ? "native (forced)"
                 : remote.encoding == RemoteServiceConfig::Encoding::kProtobuf
                     ? "protobuf (forced)"
                     : "auto: native where the schema handshake agrees");
  }
  return {};
}

Daemon::Daemon(DaemonConfig config, const Clock& clock)
    : impl_(std::make_unique<Impl>(std::move(config), clock)) {}

Daemon::~Daemon() {
  stop(std::chrono::nanoseconds(0));
}

const DaemonConfig& Daemon::config() const {
  return impl_->config;
}

namespace {
Status check_config(const DaemonConfig& config) {
  auto invalid = [](std::string what) { return Status(StatusCode::kInvalidArgument, what); };
  if (!shm::valid_ring_entries(config.ring_entries))
    return invalid(
        fmt::format("ring_entries={} is not a power of two up to 2^24", config.ring_entries));
  if (config.heap_bytes == 0 || config.receive_bytes == 0)
    return invalid("heap and receive regions need a size");
  if (config.max_calls_in_flight == 0 ||
      config.max_calls_in_flight > limits::kMaxCallsInFlightAccepted)
    return invalid(fmt::format("max_calls_in_flight={} is outside [1, {}]",
                               config.max_calls_in_flight, limits::kMaxCallsInFlightAccepted));
  if (config.max_calls_in_flight_per_uid == 0)
    return invalid("max_calls_in_flight_per_uid must be at least 1");
  if (config.max_receive_bytes_per_uid < config.receive_bytes)
    return invalid(fmt::format(
        "max_receive_bytes_per_uid={} is less than one connection's receive region ({} bytes)",
        config.max_receive_bytes_per_uid, config.receive_bytes));
  if (config.max_calls_served == 0 || config.max_calls_served > limits::kMaxCallsServedAccepted)
    return invalid(fmt::format("max_calls_served={} is outside [1, {}]", config.max_calls_served,
                               limits::kMaxCallsServedAccepted));
  if (config.max_batch == 0) return invalid("max_batch must be at least 1");
  if (config.round_copy_bytes == 0 || config.round_copy_bytes > INT64_MAX / 2)
    return invalid("round_copy_bytes must be at least 1 (and below 2^62)");
  if (config.max_connections == 0) return invalid("max_connections must be at least 1");
  if (config.max_connections > shards::kMaxSlot)
    return invalid(
        fmt::format("max_connections={} is past {}", config.max_connections, shards::kMaxSlot));
  if (config.runtime_threads == 0 || config.runtime_threads > limits::kMaxRuntimeThreads)
    return invalid(fmt::format("runtime_threads={} is not in 1..{}", config.runtime_threads,
                               limits::kMaxRuntimeThreads));
  if (config.max_connections_per_uid == 0)
    return invalid("max_connections_per_uid must be at least 1");
  if (config.app_socket_path == config.control_socket_path)
    return invalid("the app and control sockets need different paths");
  return {};
}

void make_parent_directory(const std::string& path) {
  std::error_code ignored;  // bind reports the real problem
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ignored);
}
}  // namespace

Status Daemon::start() {
  Impl& impl = *impl_;
  MRPC_ASSERT(!impl.started, "daemon started twice");
  route_protobuf_log_to_spdlog();  // hostile schemas and frames must not spam stderr
  const DaemonConfig& config = impl.config;
  MRPC_TRY_STATUS(check_config(config));
  make_parent_directory(config.app_socket_path);
  make_parent_directory(config.control_socket_path);
  MRPC_TRY_STATUS(impl.start_codec_worker());
  auto listener = shm::listen_app_socket(config.app_socket_path);
  if (!listener.ok()) return listener.status();
  MRPC_TRY_STATUS(shm::set_nonblocking(listener->get()));
  impl.app_listener = std::move(*listener);
  Runtime& runtime0 = impl.shards.front()->runtime;
  auto control = ControlServer::listen(
      config.control_socket_path,
      [&impl](const std::string& command) -> std::string {
        if (command == "stats") return impl.stats_json();
        if (command == "connections") return impl.connections_json();
        return nlohmann::json{{"error", fmt::format("unknown command '{}'", command)},
                              {"commands",
                               {"stats", "connections", "load", "attach", "upgrade", "detach",
                                "list", "show", "metrics"}}}
            .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      },
      [&runtime0, &impl](int fd, bool watch) {
        if (watch)  // unwatched, it is still read every kDaemonListenerCheckInterval
          (void)runtime0.watch_readable(fd, &impl.listeners_readable);
        else
          runtime0.unwatch(fd);
      });
  if (!control.ok()) {
    ::unlink(config.app_socket_path.c_str());
    return control.status();
  }
  impl.control.emplace(std::move(*control));
  impl.policy_control = std::make_unique<PolicyControl>(*this, impl.core0());
  impl.control->set_deferred(&PolicyControl::handles,
                             [policies = impl.policy_control.get()](const std::string& command,
                                                                    ControlServer::Reply reply) {
                               policies->submit(command, std::move(reply));
                             });
  MRPC_TRY_STATUS(runtime0.watch_readable(impl.app_listener.get(), &impl.listeners_readable));
  MRPC_TRY_STATUS(runtime0.watch_readable(impl.control->fd(), &impl.listeners_readable));
  const bool sharded = impl.shards.size() > 1;
  for (auto& shard : impl.shards) {
    const bool first = shard.get() == impl.shards.front().get();
    shard->housekeeping = std::make_shared<HousekeepingTask>(
        shard->core, first ? impl.app_listener.get() : -1, first ? &*impl.control : nullptr,
        &impl.listeners_readable, impl.drain_requested);
    shard->runtime.add(shard->housekeeping);
    if (sharded)
      shard->runtime.add(std::make_shared<ShardTask>(shard->core, shard->local_transport));
  }
  if (impl.loopback) runtime0.add(impl.loopback);
  MRPC_TRY_STATUS(impl.start_tcp());
  for (auto& shard : impl.shards) shard->runtime.start();
  impl.started = true;
  spdlog::info("mrpcd listening: apps on {}, control on {}; {} runtime thread{}",
               config.app_socket_path, config.control_socket_path, impl.shards.size(),
               sharded ? "s" : "");
  return {};
}

void Daemon::stop(std::chrono::nanoseconds drain) {
  Impl& impl = *impl_;
  if (!impl.started) return;
  // Policy commands wait for the runtime: they finish while it still runs.
  if (impl.policy_control) impl.policy_control->stop();
  impl.started = false;
  impl.drain_requested.store(true, std::memory_order_release);
  for (auto& shard : impl.shards) shard->runtime.wake();
  const auto& real_clock = MonotonicClock::instance();
  const MonoTime give_up = real_clock.now() + drain.count();
  while (impl.sum(&DaemonCounters::calls_in_flight) > 0 && real_clock.now() < give_up)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  for (auto& shard : impl.shards) shard->runtime.stop();
  if (impl.codec_worker != nullptr) impl.codec_worker->stop();

  // The runtime threads have stopped: this thread owns the state now.
  for (auto& shard : impl.shards) {
    DaemonCore& core = shard->core;
    core.calls.for_each([&core](SlotHandle call, CallRecord&) {
      core.finish_call(shards::global(call, core.shard),
                       Status(StatusCode::kUnavailable, "mrpcd stopped"), shm::kNoOffset);
    });
  }
  // Links to peers close (their calls have ended above: what they hold is discarded).
  for (auto& transport : impl.tcp) transport->shutdown();
  for (auto& shard : impl.shards) {
    DaemonCore& core = shard->core;
    core.connections.for_each([&core](SlotHandle id, std::shared_ptr<Connection>& connection) {
      connection->state = Connection::State::kClosed;
      connection->socket.reset();
      // Graphs hold RPCs and exits that refer to the connection's task: empty them first.
      auto forget = [](RpcPtr) {};
      if (connection->egress) connection->egress->drain_into(forget);
      if (connection->ingress) connection->ingress->drain_into(forget);
      connection->incoming.for_each(
          [&](SlotHandle handle, IncomingCall&) { connection->incoming.erase(handle); });
      core.connections.erase(id);
    });
  }
  // What is still travelling between shards goes too (its RPCs, the connections it pins).
  std::vector<ShardMessage> left;
  for (auto& shard : impl.shards) {
    for (size_t from = 0; from < impl.shards.size(); ++from) {
      ShardLink& link = shard->core.inbox->from(static_cast<uint32_t>(from));
      while (link.has_overflow() || !link.empty()) {
        link.flush();
        left.clear();
        link.pop(left, limits::kShardLinkEntries);
      }
    }
  }
  left.clear();
  impl.app_listener.reset();
  ::unlink(impl.config.app_socket_path.c_str());
  ::unlink(impl.config.control_socket_path.c_str());
  spdlog::info("mrpcd stopped");
}

std::future<void> Daemon::change_graphs(GraphChange change) {
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> future = done->get_future();
  if (!impl_->started) {
    done->set_value();
    return future;
  }
  // Shard after shard: the last one's job fulfils the promise.
  auto shared_change = std::make_shared<GraphChange>(std::move(change));
  auto remaining = std::make_shared<std::atomic<size_t>>(impl_->shards.size());
  for (auto& shard : impl_->shards) {
    DaemonCore& core = shard->core;
    core.jobs.post([&core, shared_change, remaining, done] {
      core.connections.for_each([&](SlotHandle id, std::shared_ptr<Connection>& connection) {
        if (connection->ready())
          (*shared_change)(connection->id, *connection->identity,
                           ConnectionGraphs{*connection->egress, *connection->ingress});
        (void)id;
      });
      if (remaining->fetch_sub(1) == 1) done->set_value();
    });
  }
  return future;
}

namespace {
// Runs `change(core)` on every shard's runtime thread between its rounds, shard after shard,
// waiting for each; stops at the first error. The generation is the last shard's.
template <typename Change>
Expected<uint64_t> on_every_shard(bool started, const std::vector<std::unique_ptr<Shard>>& shards,
                                  Change&& change) {
  if (!started) return Status(StatusCode::kFailedPrecondition, "the daemon is not running");
  Expected<uint64_t> result = uint64_t{0};
  for (const auto& shard : shards) {
    DaemonCore& core = shard->core;
    auto promise = std::make_shared<std::promise<Expected<uint64_t>>>();
    auto future = promise->get_future();
    core.jobs.post([promise, &change, &core] { promise->set_value(change(core)); });
    result = future.get();
    if (!result.ok()) return result;
    core.counters.policy_generation.store(*result);
  }
  return result;
}

// Every ready connection's graph of `side` for which `applies` holds.
template <typename Fn>
size_t for_each_graph(DaemonCore& core, GraphSide side, const Placement& placement, Fn&& fn) {
  size_t changed = 0;
  core.connections.for_each([&](SlotHandle, std::shared_ptr<Connection>& connection) {
    if (!connection->ready() || !placement.applies_to(*connection->identity)) return;
    fn(*connection, connection->graph(side));
    ++changed;
  });
  return changed;
}
}  // namespace

Expected<uint64_t> Daemon::attach_policy(PolicyEntry policy) {
  const std::string name = policy.name;
  size_t graphs = 0;
  auto generation =
      on_every_shard(impl_->started, impl_->shards, [&](DaemonCore& core) -> Expected<uint64_t> {
        MRPC_TRY_STATUS(core.policies.attach(policy));
        const PolicyEntry& entry = *core.policies.find(name);
        graphs += for_each_graph(
            core, entry.placement.side, entry.placement, [&](Connection& app, Graph& graph) {
              const size_t at = PolicySet::position_in(graph, entry.placement);
              MRPC_ASSERT(at != Graph::kNone, "policy '{}' has no place", name);
              auto inserted = graph.insert(at, entry.make(*app.identity), name);
              MRPC_ASSERT(inserted.ok(), "{}", inserted.status().to_string());
            });
        return core.policies.generation();
      });
  if (generation.ok())
    spdlog::info("policy '{}' attached to {} graphs: generation {}", name, graphs, *generation);
  return generation;
}

Expected<uint64_t> Daemon::detach_policy(std::string name) {
  size_t graphs = 0;
  auto generation =
      on_every_shard(impl_->started, impl_->shards, [&](DaemonCore& core) -> Expected<uint64_t> {
        const PolicyEntry* entry = core.policies.find(name);
        if (entry == nullptr)
          return Status(StatusCode::kNotFound, fmt::format("no policy '{}' is attached", name));
        const Placement placement = entry->placement;
        MRPC_TRY_STATUS(core.policies.detach(name));
        graphs += for_each_graph(core, placement.side, placement, [&](Connection&, Graph& graph) {
          const size_t at = graph.position_of_label(name);
          MRPC_ASSERT(at != Graph::kNone, "policy '{}' missing from a graph it applies to", name);
          MRPC_ASSERT(graph.remove(graph.stage_at(at)).ok());
        });
        return core.policies.generation();
      });
  if (generation.ok())
    spdlog::info("policy '{}' detached from {} graphs: generation {}", name, graphs, *generation);
  return generation;
}

namespace {
// Runs `change` on this (control) thread while every shard's runtime thread is parked between two
// of its rounds (a job that waits), so `change` may touch every shard's graphs and operators: no
// operator runs meanwhile. The shards are released when it returns. Not from a runtime thread.
template <typename Change>
auto with_shards_parked(const std::vector<std::unique_ptr<Shard>>& shards, Change&& change) {
  struct Park {
    std::mutex mutex;
    std::condition_variable cv;
    size_t arrived = 0;
    bool released = false;
  };
  auto park = std::make_shared<Park>();
  for (const auto& shard : shards)
    shard->core.jobs.post([park] {
      std::unique_lock lock(park->mutex);
      ++park->arrived;
      park->cv.notify_all();
      park->cv.wait(lock, [&] { return park->released; });
    });
  {
    std::unique_lock lock(park->mutex);
    park->cv.wait(lock, [&] { return park->arrived == shards.size(); });
  }
  auto result = change();
  {
    std::lock_guard lock(park->mutex);
    park->released = true;
  }
  park->cv.notify_all();
  return result;
}
}  // namespace

// The upgrade gate, daemon-wide: with every shard parked, each graph the policy applies to gets the
// new version for calls admitted from epoch E+1 on, with the old version's state carried into it;
// then E+1 becomes current (one store), and the shards resume. So the switch is one instant for
// every shard, and the state is carried at that instant: neither version runs while it is copied.
// The old versions stay for the calls admitted up to E and leave once those have ended (each
// graph checks after its rounds; a job asks every graph once now, for those with none left).
Expected<uint64_t> Daemon::upgrade_policy(std::string name, OperatorFactory make) {
  if (!impl_->started) return Status(StatusCode::kFailedPrecondition, "the daemon is not running");
  std::lock_guard serial(impl_->upgrade_mutex);
  size_t graphs = 0;
  uint64_t version = 0;
  std::atomic<uint64_t>& epoch = impl_->shared.admission_epoch;
  auto generation = with_shards_parked(impl_->shards, [&]() -> Expected<uint64_t> {
    const uint64_t next_epoch = epoch.load(std::memory_order_acquire) + 1;
    Expected<uint64_t> result = uint64_t{0};
    for (const auto& shard : impl_->shards) {
      DaemonCore& core = shard->core;
      auto upgraded = core.policies.upgrade(name, make);
      if (!upgraded.ok()) return upgraded.status();  // the same set on every shard: the first
      const PolicyEntry& entry = **upgraded;
      version = entry.version;
      graphs += for_each_graph(
          core, entry.placement.side, entry.placement, [&](Connection& app, Graph& graph) {
            const size_t at = graph.position_of_label(name);
            MRPC_ASSERT(at != Graph::kNone, "policy '{}' missing from a graph it applies to", name);
            std::shared_ptr<Operator> next = entry.make(*app.identity);
            Operator& previous = graph.operator_at(at);
            if (&previous != next.get()) next->import_state(previous.export_state());
            auto replaced = graph.replace_gated(graph.stage_at(at), std::move(next), next_epoch);
            MRPC_ASSERT(replaced.ok(), "{}", replaced.to_string());
          });
      result = core.policies.generation();
      core.counters.policy_generation.store(*result);
    }
    epoch.store(next_epoch, std::memory_order_release);  // the switch
    return result;
  });
  for (const auto& shard : impl_->shards) {
    DaemonCore& core = shard->core;
    core.jobs.post([&core] {
      core.connections.for_each([](SlotHandle, std::shared_ptr<Connection>& connection) {
        if (!connection->ready()) return;
        connection->egress->retire_versions();
        connection->ingress->retire_versions();
      });
    });
  }
  if (generation.ok())
    spdlog::info("policy '{}' upgraded to version {} in {} graphs: generation {}", name, version,
                 graphs, *generation);
  return generation;
}

LoopbackTransport& Daemon::enable_loopback_faults(uint64_t seed) {
  MRPC_ASSERT(!impl_->started, "enable_loopback_faults must come before start()");
  MRPC_ASSERT(impl_->shards.size() == 1, "loopback faults need runtime_threads=1 (not {})",
              impl_->shards.size());
  Shard& shard = *impl_->shards.front();
  if (!impl_->loopback) {
    impl_->loopback =
        std::make_shared<LoopbackTransport>(shard.local_transport, shard.core.clock, seed);
    shard.core.transport = impl_->loopback.get();
  }
  return *impl_->loopback;
}

uint64_t Daemon::policy_generation() const {
  return impl_->core0().counters.policy_generation.load();
}

std::string Daemon::Impl::stats_json() const {
  using C = DaemonCounters;
  int64_t versions_retiring = 0;
  uint64_t versions_retired = 0, versions_retired_at_deadline = 0;
  for (const auto& shard : shards) {
    const GateCounters& gate = shard->core.counters.gate;
    versions_retiring += gate.versions_retiring.load(std::memory_order_relaxed);
    versions_retired += gate.versions_retired.load(std::memory_order_relaxed);
    versions_retired_at_deadline +=
        gate.versions_retired_at_deadline.load(std::memory_order_relaxed);
  }
  return nlohmann::json{{"runtime_threads", shards.size()},
                        {"connections_accepted", sum(&C::connections_accepted)},
                        {"connections_open", sum(&C::connections_open)},
                        {"services", shared.directory.size()},
                        {"calls_started", sum(&C::calls_started)},
                        {"calls_completed", sum(&C::calls_completed)},
                        {"calls_failed", sum(&C::calls_failed)},
                        {"calls_in_flight", sum(&C::calls_in_flight)},
                        {"protocol_errors", sum(&C::protocol_errors)},
                        {"runtime_sleeps", sum_runtime(&RuntimeStats::sleeps)},
                        {"runtime_rounds", sum_runtime(&RuntimeStats::rounds)},
                        {"runtime_event_checks", sum_runtime(&RuntimeStats::event_checks)},
                        {"runtime_timer_arms", sum_runtime(&RuntimeStats::timer_arms)},
                        {"receive_bytes_in_use", sum(&C::receive_bytes_in_use)},
                        {"late_replies", sum(&C::late_replies)},
                        {"attempts_ended", sum(&C::attempts_ended)},
                        {"rpcs_alive", rpcs_alive()},
                        {"socket_reads", sum(&C::socket_reads)},
                        {"listener_checks", sum(&C::listener_checks)},
                        {"turns_skipped_for_bytes", sum(&C::turns_skipped_for_bytes)},
                        {"call_table_size", sum(&C::call_table_size)},
                        {"call_table_capacity", sum(&C::call_table_capacity)},
                        {"deadline_heap_size", sum(&C::deadline_heap_size)},
                        {"deadline_heap_capacity", sum(&C::deadline_heap_capacity)},
                        {"versions_retiring", versions_retiring},
                        {"versions_retired", versions_retired},
                        {"versions_retired_at_deadline", versions_retired_at_deadline},
                        {"shards", shards_json()},
                        {"uids", uids_json()},
                        {"codecs", codecs_json()},
                        {"policy_jit", policy_jit_json()},
                        {"tcp", tcp_json()}}
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::json Daemon::Impl::shards_json() const {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& shard : shards) {
    const DaemonCounters& counters = shard->core.counters;
    list.push_back({{"shard", shard->core.shard},
                    {"connections_open", counters.connections_open.load(std::memory_order_relaxed)},
                    {"calls_in_flight", counters.calls_in_flight.load(std::memory_order_relaxed)}});
  }
  return list;
}

nlohmann::json Daemon::Impl::uids_json() const {
  nlohmann::json uids = nlohmann::json::array();
  for (const UidUsage& usage : shared.uid_budgets.usage())
    uids.push_back({{"uid", usage.uid},
                    {"connections", usage.connections},
                    {"calls_in_flight", usage.calls_in_flight},
                    {"receive_bytes", usage.receive_bytes}});
  return uids;
}

nlohmann::json Daemon::Impl::tcp_json() const {
  if (tcp.empty()) return nlohmann::json::object();
  auto total = [this](std::atomic<uint64_t> TcpCounters::*counter) {
    uint64_t sum = 0;
    for (const auto& transport : tcp)
      sum += (transport->counters().*counter).load(std::memory_order_relaxed);
    return sum;
  };
  using T = TcpCounters;
  return {{"links_opened", total(&T::links_opened)},
          {"links_closed", total(&T::links_closed)},
          {"links_open", total(&T::links_open)},
          {"calls_sent", total(&T::calls_sent)},
          {"calls_served", total(&T::calls_served)},
          {"calls_failed_on_link_loss", total(&T::calls_failed_on_link_loss)},
          {"bad_frames", total(&T::bad_frames)},
          {"bytes_sent", total(&T::bytes_sent)},
          {"bytes_received", total(&T::bytes_received)},
          {"send_syscalls", total(&T::send_syscalls)},
          {"recv_syscalls", total(&T::recv_syscalls)},
          {"recv_empty", total(&T::recv_empty)},
          {"keepalive_timeouts", total(&T::keepalive_timeouts)},
          {"pings_sent", total(&T::pings_sent)},
          {"calls_refused_backoff", total(&T::calls_refused_backoff)},
          {"calls_refused_queue_full", total(&T::calls_refused_queue_full)},
          {"calls_cancelled_by_peer", total(&T::calls_cancelled_by_peer)},
          {"requests_sent_native", total(&T::requests_sent_native)},
          {"requests_sent_protobuf", total(&T::requests_sent_protobuf)},
          {"replies_sent_native", total(&T::replies_sent_native)},
          {"schema_offers_sent", total(&T::schema_offers_sent)},
          {"schema_mismatches", total(&T::schema_mismatches)},
          {"native_refused", total(&T::native_refused)},
          {"gather_segments_copied", total(&T::gather_segments_copied)},
          {"send_queue_bytes", total(&T::send_queue_bytes)},
          {"send_queue_bytes_peak", total(&T::send_queue_bytes_peak)}};
}

nlohmann::json Daemon::Impl::codecs_json() const {
  if (codec_worker == nullptr) return nlohmann::json::object();
  const CodecStats stats = codec_worker->stats();
  nlohmann::json schemas = nlohmann::json::array();
  for (const CodecSchemaStats& schema : stats.schemas) {
    schemas.push_back(
        {{"key", fmt::format("{:016x}", schema.key)},
         {"first_service", schema.first_service},
         {"functions", schema.functions},
         {"instructions", schema.instructions},
         {"generate_ms", static_cast<double>(schema.generate_nanoseconds) / 1e6},
         {"compile_ms", static_cast<double>(schema.compile_nanoseconds) / 1e6},
         {"registration_ms", static_cast<double>(schema.registration_nanoseconds) / 1e6},
         {"registrations", schema.registrations}});
  }
  return {{"compiles", stats.compiles},
          {"cache_hits", stats.cache_hits},
          {"failures", stats.failures},
          {"compile_ms_total", static_cast<double>(stats.compile_nanoseconds) / 1e6},
          {"registrations_pending", stats.registrations_pending},
          {"object_cache_hits", stats.object_cache_hits},
          {"object_cache_rejected", stats.object_cache_rejected},
          {"cached_schemas", stats.cached_schemas},
          {"tier_ups", stats.tier_ups},
          {"tier_up_failures", stats.tier_up_failures},
          {"tier_up_ms_total", static_cast<double>(stats.tier_up_nanoseconds) / 1e6},
          {"tier_ups_pending", stats.tier_ups_pending},
          {"schemas", schemas}};
}

nlohmann::json Daemon::Impl::policy_jit_json() const {
  const compiler::PolicyCompileStats stats = policy_compile_stats();
  return {{"runner", policy_runner_kind()},
          {"modules_built", stats.modules_built},
          {"modules_shared", stats.modules_shared},
          {"object_cache_hits", stats.object_cache_hits},
          {"object_cache_rejected", stats.object_cache_rejected},
          {"object_cache_write_failures", stats.object_cache_write_failures}};
}

CodecStats Daemon::codec_stats() const {
  return impl_->codec_worker == nullptr ? CodecStats{} : impl_->codec_worker->stats();
}

std::shared_ptr<const ServiceCodecs> Daemon::service_codecs(uint32_t service_id) {
  if (!impl_->started) return nullptr;
  auto result = std::make_shared<std::promise<std::shared_ptr<const ServiceCodecs>>>();
  auto future = result->get_future();
  DaemonCore& core = impl_->core0();
  core.jobs.post(
      [result, &core, service_id] { result->set_value(core.codecs->service(service_id)); });
  return future.get();
}

namespace {
nlohmann::json shard_connections(DaemonCore& core) {
  nlohmann::json connections = nlohmann::json::array();
  auto operators = [](const Graph& graph) {
    nlohmann::json names = nlohmann::json::array();
    for (size_t i = 0; i < graph.size(); ++i) names.push_back(graph.label_at(i));
    return names;
  };
  core.connections.for_each([&](SlotHandle, std::shared_ptr<Connection>& connection) {
    if (!connection->ready()) return;
    connections.push_back({{"id", connection->id},
                           {"shard", core.shard},
                           {"app", connection->identity->app_name},
                           {"pid", connection->identity->pid},
                           {"uid", connection->identity->uid},
                           {"calls_in_flight", connection->outgoing_in_flight},
                           {"calls_being_served", connection->incoming.size()},
                           {"egress", operators(*connection->egress)},
                           {"ingress", operators(*connection->ingress)},
                           {"egress_generation", connection->egress->stats().changes},
                           {"ingress_generation", connection->ingress->stats().changes}});
  });
  return connections;
}
}  // namespace

std::string Daemon::Impl::connections_json() const {
  // Shard 0's part here (this is its thread); the others' on theirs, waited for (they never
  // wait for shard 0).
  nlohmann::json connections = shard_connections(core0());
  for (size_t i = 1; i < shards.size(); ++i) {
    DaemonCore& core = shards[i]->core;
    auto part = std::make_shared<std::promise<nlohmann::json>>();
    auto future = part->get_future();
    core.jobs.post([&core, part] { part->set_value(shard_connections(core)); });
    for (auto& connection : future.get()) connections.push_back(std::move(connection));
  }
  // App names are app-supplied bytes: invalid UTF-8 is replaced (U+FFFD), never thrown on.
  return nlohmann::json{{"connections", connections}}.dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
}

DaemonStats Daemon::stats() const {
  using C = DaemonCounters;
  const Impl& impl = *impl_;
  DaemonStats stats;
  stats.connections_accepted = impl.sum(&C::connections_accepted);
  stats.connections_open = impl.sum(&C::connections_open);
  stats.services = impl.shared.directory.size();
  stats.calls_started = impl.sum(&C::calls_started);
  stats.calls_completed = impl.sum(&C::calls_completed);
  stats.calls_failed = impl.sum(&C::calls_failed);
  stats.calls_in_flight = impl.sum(&C::calls_in_flight);
  stats.protocol_errors = impl.sum(&C::protocol_errors);
  stats.runtime_sleeps = impl.sum_runtime(&RuntimeStats::sleeps);
  stats.receive_bytes_in_use = impl.sum(&C::receive_bytes_in_use);
  stats.late_replies = impl.sum(&C::late_replies);
  stats.attempts_ended = impl.sum(&C::attempts_ended);
  stats.rpcs_alive = rpcs_alive();
  stats.socket_reads = impl.sum(&C::socket_reads);
  stats.turns_skipped_for_bytes = impl.sum(&C::turns_skipped_for_bytes);
  const compiler::PolicyCompileStats policy_jit = policy_compile_stats();
  stats.policy_modules_built = policy_jit.modules_built;
  stats.policy_object_cache_hits = policy_jit.object_cache_hits;
  stats.policy_object_cache_rejected = policy_jit.object_cache_rejected;
  stats.runtime_rounds = impl.sum_runtime(&RuntimeStats::rounds);
  stats.runtime_event_checks = impl.sum_runtime(&RuntimeStats::event_checks);
  stats.runtime_timer_arms = impl.sum_runtime(&RuntimeStats::timer_arms);
  stats.listener_checks = impl.sum(&C::listener_checks);
  stats.call_table_size = impl.sum(&C::call_table_size);
  stats.call_table_capacity = impl.sum(&C::call_table_capacity);
  stats.deadline_heap_size = impl.sum(&C::deadline_heap_size);
  stats.deadline_heap_capacity = impl.sum(&C::deadline_heap_capacity);
  stats.uids = impl.shared.uid_budgets.usage();
  for (const auto& shard : impl.shards) {
    const GateCounters& gate = shard->core.counters.gate;
    stats.versions_retiring += gate.versions_retiring.load(std::memory_order_relaxed);
    stats.versions_retired += gate.versions_retired.load(std::memory_order_relaxed);
    stats.versions_retired_at_deadline +=
        gate.versions_retired_at_deadline.load(std::memory_order_relaxed);
  }
  return stats;
}

}  // namespace mrpc
