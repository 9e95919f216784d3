// Daemon: the sockets, the runtime, and the housekeeping task (accepting apps, the control
// socket, deadlines). See mrpc/daemon/daemon.h.
#include "mrpc/daemon/daemon.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

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

namespace mrpc {

namespace {
// Connections accepted per round, so a connect storm cannot hold the runtime.
constexpr int kAcceptsPerRound = 16;
}  // namespace

// Accepts apps, serves the control socket and ends calls at their deadlines.
class HousekeepingTask final : public Task {
 public:
  HousekeepingTask(DaemonCore& core, int app_listener, ControlServer& control,
                   const std::atomic<bool>& drain_requested)
      : core_(core),
        app_listener_(app_listener),
        control_(control),
        drain_requested_(drain_requested) {}

  // Runs `job` on the runtime thread at the start of the next round. Thread-safe.
  void post(std::function<void()> job) {
    {
      std::lock_guard lock(jobs_mutex_);
      jobs_.push_back(std::move(job));
      has_jobs_.store(true, std::memory_order_release);
    }
    wake_runtime();
  }

  bool run() override {
    bool did_work = run_jobs();
    if (drain_requested_.load(std::memory_order_acquire) && !core_.draining) {
      core_.draining = true;
      spdlog::info("draining: new calls and connections are refused");
      did_work = true;
    }
    // The listeners cost a syscall each: look at them after a socket woke the runtime (a connect
    // or a control request does) and otherwise at most every kDaemonListenerCheckInterval.
    const MonoTime now = core_.clock.now();
    if (listeners_due_ ||
        now - listeners_checked_ >= limits::kDaemonListenerCheckInterval.count()) {
      listeners_due_ = false;
      listeners_checked_ = now;
      if (!core_.draining) did_work |= accept_apps();
      did_work |= control_.poll();
    }
    did_work |= core_.expire_deadlines();
    return did_work;
  }
  void woke() override { listeners_due_ = listeners_due_ || core_.runtime->woke_by_readable(); }
  MonoTime next_timer() const override { return core_.next_deadline(); }

 private:
  bool run_jobs() {
    if (!has_jobs_.load(std::memory_order_acquire)) return false;
    std::vector<std::function<void()>> jobs;
    {
      std::lock_guard lock(jobs_mutex_);
      jobs.swap(jobs_);
      has_jobs_.store(false, std::memory_order_release);
    }
    for (auto& job : jobs) job();
    return true;
  }

  bool accept_apps() {
    bool did_work = false;
    for (int i = 0; i < kAcceptsPerRound; ++i) {
      auto accepted = shm::accept_app_socket(app_listener_);
      if (!accepted.ok()) break;
      did_work = true;
      shm::UniqueFd socket = std::move(*accepted);
      if (core_.connections.size() >= core_.config.max_connections) {
        spdlog::warn("refusing a connection: max_connections={} reached",
                     core_.config.max_connections);
        continue;  // closing the socket is the refusal
      }
      auto credentials = shm::peer_credentials(socket.get());
      if (!credentials.ok() || !shm::set_nonblocking(socket.get()).ok()) {
        spdlog::warn("dropping a connection: {}", credentials.status().to_string());
        continue;
      }
      auto connection = std::make_shared<Connection>();
      connection->socket = std::move(socket);
      connection->handshake_deadline = core_.clock.now() + core_.config.handshake_timeout.count();
      auto identity = std::make_shared<CallerIdentity>();
      identity->pid = credentials->pid;
      identity->uid = credentials->uid;
      identity->gid = credentials->gid;
      connection->identity = std::move(identity);
      connection->id = core_.connections.insert(connection);
      if (Status watched =
              core_.runtime->watch_readable(connection->socket.get(), &connection->socket_readable);
          !watched.ok()) {
        spdlog::warn("dropping a connection: {}", watched.to_string());
        core_.connections.erase(connection->id);
        continue;
      }
      core_.runtime->add(std::make_shared<ConnectionTask>(core_, connection));
      core_.counters.connections_accepted.fetch_add(1, std::memory_order_relaxed);
      core_.counters.connections_open.fetch_add(1, std::memory_order_relaxed);
    }
    return did_work;
  }

  DaemonCore& core_;
  int app_listener_;
  ControlServer& control_;
  const std::atomic<bool>& drain_requested_;
  bool listeners_due_ = true;
  MonoTime listeners_checked_ = 0;
  std::mutex jobs_mutex_;
  std::atomic<bool> has_jobs_{false};
  std::vector<std::function<void()>> jobs_;
};

struct Daemon::Impl {
  Impl(DaemonConfig config, const Clock& clock)
      : core(std::move(config), clock),
        local_transport(core),
        runtime(clock,
                RuntimeOptions{.name = "mrpcd-runtime", .spin_budget = core.config.spin_budget}) {
    core.runtime = &runtime;
    core.transport = &local_transport;
  }

  std::string stats_json() const;
  nlohmann::json codecs_json() const;
  Status start_codec_worker();
  // Runtime thread only (the control server runs there).
  std::string connections_json() const;

  // Before core: the registry's services hold compiled codecs, which unload from the worker's
  // JIT, so the worker goes last. Its thread (which wakes the runtime) is stopped in stop().
  std::unique_ptr<CodecWorker> codec_worker;
  DaemonCore core;
  LocalTransport local_transport;
  std::shared_ptr<LoopbackTransport> loopback;  // when fault injection is on
  Runtime runtime;  // after core: its tasks refer to core, so it goes first
  std::unique_ptr<RegistryCodecs> registry_codecs;
  shm::UniqueFd app_listener;
  std::optional<ControlServer> control;
  std::shared_ptr<HousekeepingTask> housekeeping;
  std::atomic<bool> drain_requested{false};
  bool started = false;
};

// The compile thread for registrations, its JIT and the on-disk object cache (codec_compiler.h).
Status Daemon::Impl::start_codec_worker() {
  if (codec_worker != nullptr) return {};
  const DaemonConfig& config = core.config;
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
  registry_codecs = std::make_unique<RegistryCodecs>(core.registry);
  core.codec_worker = codec_worker.get();
  core.codecs = registry_codecs.get();
  spdlog::info("codec compiler: object cache in {}", cache_dir);
  return {};
}

Daemon::Daemon(DaemonConfig config, const Clock& clock)
    : impl_(std::make_unique<Impl>(std::move(config), clock)) {}

Daemon::~Daemon() {
  stop(std::chrono::nanoseconds(0));
}

const DaemonConfig& Daemon::config() const {
  return impl_->core.config;
}

namespace {
Status check_config(const DaemonConfig& config) {
  auto invalid = [](std::string what) { return Status(StatusCode::kInvalidArgument, what); };
  if (!shm::valid_ring_entries(config.ring_entries))
    return invalid(
        fmt::format("ring_entries={} is not a power of two up to 2^24", config.ring_entries));
  if (config.heap_bytes == 0 || config.receive_bytes == 0)
    return invalid("heap and receive regions need a size");
  if (config.max_calls_in_flight == 0) return invalid("max_calls_in_flight must be at least 1");
  if (config.max_calls_served == 0) return invalid("max_calls_served must be at least 1");
  if (config.max_batch == 0) return invalid("max_batch must be at least 1");
  if (config.max_connections == 0) return invalid("max_connections must be at least 1");
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
  MRPC_TRY_STATUS(check_config(impl.core.config));
  make_parent_directory(impl.core.config.app_socket_path);
  make_parent_directory(impl.core.config.control_socket_path);
  MRPC_TRY_STATUS(impl.start_codec_worker());
  auto listener = shm::listen_app_socket(impl.core.config.app_socket_path);
  if (!listener.ok()) return listener.status();
  MRPC_TRY_STATUS(shm::set_nonblocking(listener->get()));
  impl.app_listener = std::move(*listener);
  auto control = ControlServer::listen(
      impl.core.config.control_socket_path,
      [&impl](const std::string& command) -> std::string {
        if (command == "stats") return impl.stats_json();
        if (command == "connections") return impl.connections_json();
        return nlohmann::json{{"error", fmt::format("unknown command '{}'", command)},
                              {"commands", {"stats", "connections"}}}
            .dump();
      },
      [&impl](int fd, bool watch) {
        if (watch)
          (void)impl.runtime.watch_readable(fd);  // unwatched, it is still read on wake-ups
        else
          impl.runtime.unwatch(fd);
      });
  if (!control.ok()) {
    ::unlink(impl.core.config.app_socket_path.c_str());
    return control.status();
  }
  impl.control.emplace(std::move(*control));
  MRPC_TRY_STATUS(impl.runtime.watch_readable(impl.app_listener.get()));
  MRPC_TRY_STATUS(impl.runtime.watch_readable(impl.control->fd()));
  impl.housekeeping = std::make_shared<HousekeepingTask>(impl.core, impl.app_listener.get(),
                                                         *impl.control, impl.drain_requested);
  impl.runtime.add(impl.housekeeping);
  if (impl.loopback) impl.runtime.add(impl.loopback);
  impl.runtime.start();
  impl.started = true;
  spdlog::info("mrpcd listening: apps on {}, control on {}", impl.core.config.app_socket_path,
               impl.core.config.control_socket_path);
  return {};
}

void Daemon::stop(std::chrono::nanoseconds drain) {
  Impl& impl = *impl_;
  if (!impl.started) return;
  impl.started = false;
  impl.drain_requested.store(true, std::memory_order_release);
  impl.runtime.wake();
  const auto& real_clock = MonotonicClock::instance();
  const MonoTime give_up = real_clock.now() + drain.count();
  while (impl.core.counters.calls_in_flight.load(std::memory_order_relaxed) > 0 &&
         real_clock.now() < give_up)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  impl.runtime.stop();
  if (impl.codec_worker != nullptr) impl.codec_worker->stop();

  // The runtime thread has stopped: this thread owns the state now.
  impl.core.calls.for_each([&impl](SlotHandle call, CallRecord&) {
    impl.core.finish_call(call, Status(StatusCode::kUnavailable, "mrpcd stopped"), shm::kNoOffset);
  });
  impl.core.connections.for_each([&impl](SlotHandle id, std::shared_ptr<Connection>& connection) {
    connection->state = Connection::State::kClosed;
    connection->socket.reset();
    // Graphs hold RPCs and exits that refer to the connection's task: empty them first.
    auto forget = [](RpcPtr) {};
    if (connection->egress) connection->egress->drain_into(forget);
    if (connection->ingress) connection->ingress->drain_into(forget);
    impl.core.connections.erase(id);
  });
  impl.app_listener.reset();
  ::unlink(impl.core.config.app_socket_path.c_str());
  ::unlink(impl.core.config.control_socket_path.c_str());
  spdlog::info("mrpcd stopped");
}

std::future<void> Daemon::change_graphs(GraphChange change) {
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> future = done->get_future();
  if (!impl_->started) {
    done->set_value();
    return future;
  }
  DaemonCore& core = impl_->core;
  impl_->housekeeping->post([&core, change = std::move(change), done] {
    core.connections.for_each([&](SlotHandle id, std::shared_ptr<Connection>& connection) {
      if (connection->ready())
        change(id, *connection->identity,
               ConnectionGraphs{*connection->egress, *connection->ingress});
    });
    done->set_value();
  });
  return future;
}

namespace {
// Runs `change` on the daemon's runtime thread between rounds and waits for its result.
template <typename Change>
Expected<uint64_t> on_runtime(bool started, HousekeepingTask& housekeeping, Change change) {
  if (!started) return Status(StatusCode::kFailedPrecondition, "the daemon is not running");
  auto result = std::make_shared<std::promise<Expected<uint64_t>>>();
  auto future = result->get_future();
  housekeeping.post(
      [result, change = std::move(change)]() mutable { result->set_value(change()); });
  return future.get();
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
  DaemonCore& core = impl_->core;
  return on_runtime(
      impl_->started, *impl_->housekeeping,
      [&core, policy = std::move(policy)]() mutable -> Expected<uint64_t> {
        const std::string name = policy.name;
        MRPC_TRY_STATUS(core.policies.attach(std::move(policy)));
        const PolicyEntry& entry = *core.policies.find(name);
        const size_t graphs = for_each_graph(
            core, entry.placement.side, entry.placement, [&](Connection& app, Graph& graph) {
              const size_t at = PolicySet::position_in(graph, entry.placement);
              MRPC_ASSERT(at != Graph::kNone, "policy '{}' has no place", name);
              auto inserted = graph.insert(at, entry.make(*app.identity), name);
              MRPC_ASSERT(inserted.ok(), "{}", inserted.status().to_string());
            });
        const uint64_t generation = core.policies.generation();
        core.counters.policy_generation.store(generation);
        spdlog::info("policy '{}' attached to {} graphs: generation {}", name, graphs, generation);
        return generation;
      });
}

Expected<uint64_t> Daemon::detach_policy(std::string name) {
  DaemonCore& core = impl_->core;
  return on_runtime(impl_->started, *impl_->housekeeping, [&core, name]() -> Expected<uint64_t> {
    const PolicyEntry* entry = core.policies.find(name);
    if (entry == nullptr)
      return Status(StatusCode::kNotFound, fmt::format("no policy '{}' is attached", name));
    const Placement placement = entry->placement;
    MRPC_TRY_STATUS(core.policies.detach(name));
    const size_t graphs =
        for_each_graph(core, placement.side, placement, [&](Connection&, Graph& graph) {
          const size_t at = graph.position_of_label(name);
          MRPC_ASSERT(at != Graph::kNone, "policy '{}' missing from a graph it applies to", name);
          MRPC_ASSERT(graph.remove(graph.stage_at(at)).ok());
        });
    const uint64_t generation = core.policies.generation();
    core.counters.policy_generation.store(generation);
    spdlog::info("policy '{}' detached from {} graphs: generation {}", name, graphs, generation);
    return generation;
  });
}

Expected<uint64_t> Daemon::upgrade_policy(std::string name, OperatorFactory make) {
  DaemonCore& core = impl_->core;
  return on_runtime(impl_->started, *impl_->housekeeping,
                    [&core, name, make = std::move(make)]() mutable -> Expected<uint64_t> {
                      auto upgraded = core.policies.upgrade(name, std::move(make));
                      if (!upgraded.ok()) return upgraded.status();
                      const PolicyEntry& entry = **upgraded;
                      const size_t graphs = for_each_graph(
                          core, entry.placement.side, entry.placement,
                          [&](Connection& app, Graph& graph) {
                            const size_t at = graph.position_of_label(name);
                            MRPC_ASSERT(at != Graph::kNone,
                                        "policy '{}' missing from a graph it applies to", name);
                            std::shared_ptr<Operator> next = entry.make(*app.identity);
                            Operator& previous = graph.operator_at(at);
                            if (&previous != next.get())
                              next->import_state(previous.export_state());
                            MRPC_ASSERT(graph.replace(graph.stage_at(at), std::move(next)).ok());
                          });
                      const uint64_t generation = core.policies.generation();
                      core.counters.policy_generation.store(generation);
                      spdlog::info("policy '{}' upgraded to version {} in {} graphs: generation {}",
                                   name, entry.version, graphs, generation);
                      return generation;
                    });
}

LoopbackTransport& Daemon::enable_loopback_faults(uint64_t seed) {
  MRPC_ASSERT(!impl_->started, "enable_loopback_faults must come before start()");
  if (!impl_->loopback) {
    impl_->loopback =
        std::make_shared<LoopbackTransport>(impl_->local_transport, impl_->core.clock, seed);
    impl_->core.transport = impl_->loopback.get();
  }
  return *impl_->loopback;
}

uint64_t Daemon::policy_generation() const {
  return impl_->core.counters.policy_generation.load();
}

std::string Daemon::Impl::stats_json() const {
  const auto& c = core.counters;
  auto load = [](const std::atomic<uint64_t>& value) {
    return value.load(std::memory_order_relaxed);
  };
  return nlohmann::json{{"connections_accepted", load(c.connections_accepted)},
                        {"connections_open", load(c.connections_open)},
                        {"services", load(c.services)},
                        {"calls_started", load(c.calls_started)},
                        {"calls_completed", load(c.calls_completed)},
                        {"calls_failed", load(c.calls_failed)},
                        {"calls_in_flight", load(c.calls_in_flight)},
                        {"protocol_errors", load(c.protocol_errors)},
                        {"runtime_sleeps", runtime.stats().sleeps},
                        {"receive_bytes_in_use", load(c.receive_bytes_in_use)},
                        {"late_replies", load(c.late_replies)},
                        {"attempts_ended", load(c.attempts_ended)},
                        {"rpcs_alive", rpcs_alive()},
                        {"socket_reads", load(c.socket_reads)},
                        {"call_table_size", load(c.call_table_size)},
                        {"call_table_capacity", load(c.call_table_capacity)},
                        {"deadline_heap_size", load(c.deadline_heap_size)},
                        {"deadline_heap_capacity", load(c.deadline_heap_capacity)},
                        {"codecs", codecs_json()}}
      .dump();
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
          {"schemas", schemas}};
}

CodecStats Daemon::codec_stats() const {
  return impl_->codec_worker == nullptr ? CodecStats{} : impl_->codec_worker->stats();
}

std::shared_ptr<const ServiceCodecs> Daemon::service_codecs(uint32_t service_id) {
  if (!impl_->started) return nullptr;
  auto result = std::make_shared<std::promise<std::shared_ptr<const ServiceCodecs>>>();
  auto future = result->get_future();
  const TransportCodecs* codecs = impl_->core.codecs;
  impl_->housekeeping->post(
      [result, codecs, service_id] { result->set_value(codecs->service(service_id)); });
  return future.get();
}

std::string Daemon::Impl::connections_json() const {
  nlohmann::json connections = nlohmann::json::array();
  auto operators = [](const Graph& graph) {
    nlohmann::json names = nlohmann::json::array();
    for (size_t i = 0; i < graph.size(); ++i) names.push_back(graph.label_at(i));
    return names;
  };
  const_cast<DaemonCore&>(core).connections.for_each(
      [&](SlotHandle id, std::shared_ptr<Connection>& connection) {
        if (!connection->ready()) return;
        connections.push_back({{"id", id},
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
  return nlohmann::json{{"connections", connections}}.dump();
}

DaemonStats Daemon::stats() const {
  const auto& c = impl_->core.counters;
  auto load = [](const std::atomic<uint64_t>& value) {
    return value.load(std::memory_order_relaxed);
  };
  DaemonStats stats;
  stats.connections_accepted = load(c.connections_accepted);
  stats.connections_open = load(c.connections_open);
  stats.services = load(c.services);
  stats.calls_started = load(c.calls_started);
  stats.calls_completed = load(c.calls_completed);
  stats.calls_failed = load(c.calls_failed);
  stats.calls_in_flight = load(c.calls_in_flight);
  stats.protocol_errors = load(c.protocol_errors);
  stats.runtime_sleeps = impl_->runtime.stats().sleeps;
  stats.receive_bytes_in_use = load(c.receive_bytes_in_use);
  stats.late_replies = load(c.late_replies);
  stats.attempts_ended = load(c.attempts_ended);
  stats.rpcs_alive = rpcs_alive();
  stats.socket_reads = load(c.socket_reads);
  stats.runtime_rounds = impl_->runtime.stats().rounds;
  stats.call_table_size = load(c.call_table_size);
  stats.call_table_capacity = load(c.call_table_capacity);
  stats.deadline_heap_size = load(c.deadline_heap_size);
  stats.deadline_heap_capacity = load(c.deadline_heap_capacity);
  return stats;
}

}  // namespace mrpc
