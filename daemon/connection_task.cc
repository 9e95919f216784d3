#include "connection_task.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include "codec_compiler.h"
#include "mrpc/base/limits.h"
#include "mrpc/base/utf8.h"
#include "mrpc/transports/shm/app_socket.h"
#include "transports/shm/app_protocol.pb.h"

namespace mrpc {

namespace {
// Control messages read from one app per round: setup is rare, so a few bound a chatty app.
constexpr int kControlMessagesPerRound = 4;
}  // namespace

ConnectionTask::ConnectionTask(DaemonCore& core, std::shared_ptr<Connection> connection)
    : core_(core),
      connection_(std::move(connection)),
      frontend_(core, *connection_),
      router_(core) {}

bool ConnectionTask::run() {
  if (closed()) return false;
  Connection& app = *connection_;
  bool did_work = false;
  if (app.state == Connection::State::kHandshake && core_.clock.now() >= app.handshake_deadline) {
    close("no Hello within the handshake timeout");
    return true;
  }
  // The socket carries rare control messages: it is read only when the runtime saw it readable,
  // so idle connections cost no syscall per round.
  if (app.socket_readable.exchange(false, std::memory_order_relaxed)) {
    const char* why = nullptr;
    if (!read_control_messages(why)) {
      close(why);
      return true;
    }
    did_work = true;
  }
  if (!registrations_.empty() && !finish_registrations(did_work)) {
    close("the app's socket failed");
    return true;
  }
  if (app.ready()) {
    did_work |= frontend_.poll();
    if (!app.egress->idle()) did_work |= app.egress->run();
    if (!app.ingress->idle()) did_work |= app.ingress->run();
  }
  if (app.broken) {
    close("the app corrupted its rings");
    return true;
  }
  return did_work;
}

MonoTime ConnectionTask::next_timer() const {
  const Connection& app = *connection_;
  if (app.state == Connection::State::kHandshake) return app.handshake_deadline;
  if (!app.ready()) return kNoDeadline;
  return std::min({frontend_.next_timer(), app.egress->next_timer(), app.ingress->next_timer()});
}

bool ConnectionTask::prepare_to_sleep() {
  Connection& app = *connection_;
  // A registration that can move on is work (defence in depth: its wake-up came meanwhile).
  if (registration_can_move()) return false;
  if (!app.ready()) return true;
  if (!app.egress->prepare_to_sleep()) return false;
  if (!app.ingress->prepare_to_sleep()) {
    app.egress->woke();
    return false;
  }
  if (!frontend_.prepare_to_sleep()) {
    app.egress->woke();
    app.ingress->woke();
    return false;
  }
  return true;
}

void ConnectionTask::woke() {
  Connection& app = *connection_;
  if (!app.ready()) return;
  frontend_.woke();
  app.egress->woke();
  app.ingress->woke();
}

bool ConnectionTask::read_control_messages(const char*& why) {
  for (int i = 0; i < kControlMessagesPerRound; ++i) {
    wire::AppMessage message;
    core_.counters.socket_reads.fetch_add(1, std::memory_order_relaxed);
    auto fds = shm::receive_message(connection_->socket.get(), message, 0);
    if (!fds.ok()) {
      StatusCode code = fds.status().code();
      if (code == StatusCode::kAborted) return true;  // nothing more to read now
      if (code == StatusCode::kInvalidArgument) {
        core_.counters.protocol_errors.fetch_add(1, std::memory_order_relaxed);
        spdlog::info("connection {}: bad control message: {}", connection_->id,
                     fds.status().to_string());
        why = "the app sent a malformed control message";
        return false;
      }
      why = "the app closed its socket";
      return false;
    }
    bool keep = true;
    switch (message.body_case()) {
      case wire::AppMessage::kHello:
        keep = on_hello(message.hello());
        why = "the handshake failed";
        break;
      case wire::AppMessage::kRegisterService:
        keep = on_register_service(message.register_service());
        why = "the app broke the registration protocol";
        break;
      default:
        core_.counters.protocol_errors.fetch_add(1, std::memory_order_relaxed);
        why = "the app sent an unknown control message";
        keep = false;
        break;
    }
    if (!keep) return false;
  }
  // There may be more: look again next round.
  connection_->socket_readable.store(true, std::memory_order_relaxed);
  return true;
}

bool ConnectionTask::refuse(const std::string& reason) {
  wire::DaemonMessage message;
  auto* refused = message.mutable_refused();
  refused->set_protocol_version(shm::kProtocolVersion);
  refused->set_reason(reason);
  (void)shm::send_message(connection_->socket.get(), message);
  spdlog::info("connection {}: refused: {}", connection_->id, reason);
  return false;
}

bool ConnectionTask::on_hello(const wire::Hello& hello) {
  Connection& app = *connection_;
  if (app.state != Connection::State::kHandshake) {
    core_.counters.protocol_errors.fetch_add(1, std::memory_order_relaxed);
    return refuse("Hello sent twice");
  }
  if (hello.protocol_version() != shm::kProtocolVersion)
    return refuse(fmt::format("protocol version {} is not supported (mrpcd speaks {})",
                              hello.protocol_version(), shm::kProtocolVersion));
  if (core_.draining) return refuse("mrpcd is shutting down");

  const DaemonConfig& config = core_.config;
  auto heap = shm::SharedRegion::create(fmt::format("mrpc-heap-{}", app.id), config.heap_bytes);
  auto receive = shm::SharedRegion::create_receive(fmt::format("mrpc-receive-{}", app.id),
                                                   config.receive_bytes);
  auto rings = shm::SharedRegion::create(fmt::format("mrpc-rings-{}", app.id),
                                         shm::rings_region_bytes(config.ring_entries));
  auto app_to_daemon = shm::Doorbell::create();
  auto daemon_to_app = shm::Doorbell::create();
  for (const Status& status : {heap.status(), receive.status(), rings.status(),
                               app_to_daemon.status(), daemon_to_app.status()}) {
    if (!status.ok()) return refuse("could not create shared memory: " + status.to_string());
  }
  // The daemon keeps only a read-only mapping of the heap: creating it mapped it read-write.
  app.heap_fd = shm::UniqueFd(::fcntl(heap->fd(), F_DUPFD_CLOEXEC, 0));
  if (!app.heap_fd) return refuse("could not duplicate the heap's fd");
  auto heap_mapping =
      shm::Mapping::map(app.heap_fd.get(), config.heap_bytes, shm::RegionAccess::kReadOnly);
  if (!heap_mapping.ok())
    return refuse("could not map the heap: " + heap_mapping.status().to_string());
  app.heap = std::move(*heap_mapping);
  *heap = shm::SharedRegion();
  app.receive = std::move(*receive);
  app.rings = std::move(*rings);
  app.app_to_daemon = std::move(*app_to_daemon);
  app.daemon_to_app = std::move(*daemon_to_app);
  app.submissions = shm::RingConsumer(shm::submission_ring(app.rings.data(), config.ring_entries));
  app.completions = shm::RingProducer(shm::completion_ring(app.rings.data(), config.ring_entries),
                                      &app.daemon_to_app);
  app.receive_allocator = std::make_unique<RegionAllocator>(config.receive_bytes);
  if (app.uid_budget != nullptr) {
    if (Status charged = app.receive_allocator->charge_to(app.uid_budget->receive_bytes,
                                                          "max_receive_bytes_per_uid");
        !charged.ok())
      return refuse(charged.to_string());
  }
  // Spare blocks for error text, so a full region does not swallow why a call failed.
  app.spare_detail_blocks.reserve(limits::kReservedStatusDetailBlocks);
  app.lent_detail_blocks.reserve(limits::kReservedStatusDetailBlocks);
  for (uint32_t i = 0; i < limits::kReservedStatusDetailBlocks; ++i) {
    auto block = app.receive_allocator->allocate(limits::kMaxStatusDetailBytes, 1);
    if (!block.ok()) break;  // a tiny region: fewer spares
    app.spare_detail_blocks.push_back(*block);
  }
  if (!app.spare_detail_blocks.empty())
    app.detail_block_bytes = app.receive_allocator->used_bytes() / app.spare_detail_blocks.size();
  app.receive_bytes_total = &core_.counters.receive_bytes_in_use;

  auto identity = std::make_shared<CallerIdentity>(*app.identity);
  identity->app_name = std::string(utf8_prefix(hello.app_name(), limits::kMaxAppNameBytes));
  app.identity = std::move(identity);

  wire::DaemonMessage message;
  auto* welcome = message.mutable_welcome();
  welcome->set_protocol_version(shm::kProtocolVersion);
  welcome->set_connection_id(app.id);
  welcome->set_heap_bytes(config.heap_bytes);
  welcome->set_receive_bytes(config.receive_bytes);
  welcome->set_ring_entries(config.ring_entries);
  welcome->set_max_calls_in_flight(config.max_calls_in_flight);
  welcome->set_max_calls_served(config.max_calls_served);
  welcome->set_max_message_bytes(config.max_message_bytes);
  const int fds[] = {app.heap_fd.get(), app.receive.fd(), app.rings.fd(), app.app_to_daemon.fd(),
                     app.daemon_to_app.fd()};
  if (!shm::send_message(app.socket.get(), message, fds).ok()) return false;

  GraphOptions options{.max_batch = config.max_batch,
                       .admission_epoch = &core_.shared.admission_epoch,
                       .gate_counters = &core_.counters.gate};
  app.egress = std::make_unique<Graph>(
      core_.clock,
      GraphExits{[this](RpcPtr rpc) { router_.route(*connection_, std::move(rpc)); },
                 [this](RpcPtr rpc) { frontend_.complete(std::move(rpc)); },
                 [this](RpcPtr rpc) { core_.end_attempt(std::move(rpc)); }},
      options);
  app.ingress = std::make_unique<Graph>(
      core_.clock,
      GraphExits{[this](RpcPtr rpc) { frontend_.deliver(std::move(rpc)); },
                 [this](RpcPtr rpc) {
                   core_.free_received_request(*rpc);  // turned back before its delivery
                   core_.transport->send_reply(std::move(rpc));
                 },
                 [this](RpcPtr rpc) { core_.end_attempt(std::move(rpc)); }},
      options);
  core_.policies.build(*app.egress, GraphSide::kEgress, *app.identity);
  core_.policies.build(*app.ingress, GraphSide::kIngress, *app.identity);
  app.outgoing.assign(config.max_calls_in_flight, OutgoingSlot{});
  app.incoming = SlotTable<IncomingCall>(config.max_calls_served);
  Status watched = core_.runtime->watch_eventfd(app.app_to_daemon.fd());
  if (!watched.ok()) return refuse(watched.to_string());
  app.state = Connection::State::kReady;
  spdlog::info("connection {}: app '{}' (pid {}, uid {}) connected", app.id, app.identity->app_name,
               app.identity->pid, app.identity->uid);
  return true;
}

// The schema is parsed and the codecs compiled on the codec compile thread (codec_compiler.h):
// the reply waits until they are ready (or refused), so the app cannot call the service before,
// and this runtime goes on serving every other call meanwhile.
bool ConnectionTask::on_register_service(const wire::RegisterService& request) {
  Connection& app = *connection_;
  if (!app.ready()) {
    core_.counters.protocol_errors.fetch_add(1, std::memory_order_relaxed);
    return refuse("RegisterService before Hello");
  }
  if (registrations_.size() >= limits::kMaxPendingRegistrationsPerApp) {
    wire::DaemonMessage message;
    auto* reply = message.mutable_service_registered();
    reply->set_request_id(request.request_id());
    reply->set_status(static_cast<uint32_t>(StatusCode::kResourceExhausted));
    reply->set_detail(
        fmt::format("{} registrations of this app are being compiled already "
                    "(limits::kMaxPendingRegistrationsPerApp={}); wait for their answers",
                    registrations_.size(), limits::kMaxPendingRegistrationsPerApp));
    return shm::send_message(app.socket.get(), message).ok();
  }
  auto job = std::make_shared<CodecJob>();
  job->file_descriptor_set = request.file_descriptor_set();
  job->service = request.service();
  registrations_.push_back(PendingRegistration{job, request.request_id(), request.serve()});
  core_.codec_worker->submit(std::move(job), [runtime = core_.runtime] { runtime->wake(); });
  return true;
}

bool ConnectionTask::finish_registrations(bool& did_work) {
  // Registers, in the order they came, those whose codecs are ready (the shards take them all
  // at once), then answers from the oldest while the shards have it.
  for (PendingRegistration& pending : registrations_) {
    if (pending.reply != nullptr) continue;
    if (!pending.job->done.load(std::memory_order_acquire)) break;
    register_ready(pending);
    did_work = true;
  }
  while (!registrations_.empty() && registrations_.front().reply != nullptr &&
         registrations_.front().shards_left->load(std::memory_order_acquire) == 0) {
    const bool sent =
        shm::send_message(connection_->socket.get(), *registrations_.front().reply).ok();
    registrations_.pop_front();
    did_work = true;
    if (!sent) return false;
  }
  return true;
}

bool ConnectionTask::registration_can_move() const {
  if (registrations_.empty()) return false;
  const PendingRegistration& front = registrations_.front();
  if (front.reply != nullptr && front.shards_left->load(std::memory_order_acquire) == 0)
    return true;
  for (const PendingRegistration& pending : registrations_)
    if (pending.reply == nullptr) return pending.job->done.load(std::memory_order_acquire);
  return false;
}

void ConnectionTask::register_ready(PendingRegistration& pending) {
  Connection& app = *connection_;
  const CodecJob& job = *pending.job;
  pending.reply = std::make_shared<wire::DaemonMessage>();
  pending.shards_left = std::make_shared<std::atomic<size_t>>(0);
  auto* reply = pending.reply->mutable_service_registered();
  reply->set_request_id(pending.request_id);
  ServiceDirectory::Registration registered;
  if (job.status.ok()) {
    registered = core_.shared.directory.register_service(
        job.schema, job.service, Registrant{app.id, app.identity->uid, app.identity->app_name},
        pending.serve, core_.clock.now(), job.codecs);
  } else {
    registered.status = job.status;
  }
  // Every shard's view takes the changes (this one's now, the others' before the reply goes).
  // Only the registered service's own update is waited for; services dropped on the way (a
  // lapsed grace period) reach the other shards when they do.
  for (size_t i = 0; i < registered.updates.size(); ++i)
    core_.publish(registered.updates[i], i == 0 ? pending.shards_left : nullptr);
  if (registered.status.ok()) {
    const ServiceUpdate& service = registered.updates.front();
    // A caller with another, compatible schema hears its own methods (those past the
    // registration's are refused when called).
    const ServiceInfo* methods = service.info;
    for (const SchemaVariant& variant : service.variants) {
      if (variant.connection != app.id) continue;
      app.schema_variants = true;
      methods = variant.info;
    }
    reply->set_status(static_cast<uint32_t>(StatusCode::kOk));
    reply->set_service_id(service.id);
    for (const auto& method : methods->methods) reply->add_methods(method.name);
    spdlog::info("connection {}: {} service {} as id {}", app.id,
                 pending.serve ? "serves" : "calls", service.full_name, service.id);
  } else {
    reply->set_status(static_cast<uint32_t>(registered.status.code()));
    reply->set_detail(registered.status.message());
    spdlog::info("connection {}: registering {} failed: {}", app.id, job.service,
                 registered.status.to_string());
  }
}

void ConnectionTask::close(const char* why) {
  Connection& app = *connection_;
  if (app.state == Connection::State::kClosed) return;
  bool was_ready = app.ready();
  app.state = Connection::State::kClosed;
  spdlog::info("connection {} ('{}'): closed: {}", app.id,
               app.identity ? app.identity->app_name : std::string(), why);
  core_.runtime->unwatch(app.socket.get());
  if (was_ready) core_.runtime->unwatch(app.app_to_daemon.fd());
  core_.connection_lost(app);
  app.report_receive_usage(/*closing=*/true);
  core_.connections.erase(shards::local(app.id));
  if (app.uid_budget != nullptr) core_.shared.uid_budgets.remove_connection(*app.uid_budget);
  core_.counters.connections_open.fetch_sub(1, std::memory_order_relaxed);
  app.socket.reset();
  core_.runtime->remove(this);
}

}  // namespace mrpc
