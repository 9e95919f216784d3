#include "service_registry.h"

#include <fmt/format.h>

#include <algorithm>

#include "mrpc/base/limits.h"
#include "mrpc/message/layout.h"

namespace mrpc {

namespace {
bool same_methods(const ServiceInfo& known, const ServiceInfo& offered) {
  if (known.methods.size() != offered.methods.size()) return false;
  for (size_t i = 0; i < known.methods.size(); ++i) {
    const MethodInfo& a = known.methods[i];
    const MethodInfo& b = offered.methods[i];
    if (a.name != b.name || a.input->fingerprint() != b.input->fingerprint() ||
        a.output->fingerprint() != b.output->fingerprint())
      return false;
  }
  return true;
}

void add_once(std::vector<ConnectionId>& set, ConnectionId connection) {
  if (std::find(set.begin(), set.end(), connection) == set.end()) set.push_back(connection);
}
}  // namespace

Expected<const RegisteredService*> ServiceRegistry::register_service(
    std::shared_ptr<const Schema> schema, const std::string& service_name, ConnectionId connection,
    bool serve, const std::string& app_name, std::shared_ptr<const ServiceCodecs> codecs) {
  const ServiceInfo* info = schema->service(service_name);
  if (info == nullptr)
    return Status(StatusCode::kNotFound,
                  fmt::format("the registered schema has no service '{}'", service_name));
  RegisteredService* entry = nullptr;
  if (auto it = by_name_.find(service_name); it != by_name_.end()) {
    entry = it->second;
    // Apps build messages with their own layouts and the daemon copies them with the
    // registration's: every method and message layout must agree.
    if (!same_methods(*entry->info, *info))
      return Status(StatusCode::kFailedPrecondition,
                    fmt::format("service '{}' is registered (by {} serving and {} calling apps "
                                "still connected) with other methods or message layouts",
                                service_name, entry->servers.size(), entry->callers.size()));
  } else {
    if (by_name_.size() >= limits::kMaxRegisteredServices)
      return Status(StatusCode::kResourceExhausted,
                    fmt::format("mrpcd already has kMaxRegisteredServices={} services registered",
                                limits::kMaxRegisteredServices));
    uint32_t slot;
    if (!free_slots_.empty()) {
      slot = free_slots_.back();
      free_slots_.pop_back();
    } else {
      slot = static_cast<uint32_t>(slots_.size());
      slots_.emplace_back();
    }
    Slot& place = slots_[slot];
    // Generation 0 never appears, so no id is 0 and a dropped id is never reissued until the
    // 16-bit generation wraps.
    place.generation = (place.generation + 1) & 0xffffu;
    if (place.generation == 0) place.generation = 1;
    place.service = std::make_unique<RegisteredService>();
    entry = place.service.get();
    entry->id = (place.generation << kSlotBits) | slot;
    entry->full_name = service_name;
    entry->schema = std::move(schema);
    entry->info = info;
    by_name_.emplace(service_name, entry);
  }
  if (entry->codecs == nullptr) entry->codecs = std::move(codecs);
  if (serve && std::find(entry->servers.begin(), entry->servers.end(), connection) ==
                   entry->servers.end()) {
    entry->servers.push_back(connection);
    entry->server_apps.push_back(app_name);
  }
  if (!serve) add_once(entry->callers, connection);
  return static_cast<const RegisteredService*>(entry);
}

void ServiceRegistry::connection_closed(ConnectionId connection, std::vector<uint32_t>& changed) {
  for (uint32_t slot = 0; slot < slots_.size(); ++slot) {
    auto& service = slots_[slot].service;
    if (service == nullptr) continue;
    size_t erased = std::erase(service->callers, connection);
    for (size_t i = service->servers.size(); i-- > 0;) {
      if (service->servers[i] != connection) continue;
      service->servers.erase(service->servers.begin() + static_cast<ptrdiff_t>(i));
      service->server_apps.erase(service->server_apps.begin() + static_cast<ptrdiff_t>(i));
      ++erased;
    }
    if (erased > 0) changed.push_back(service->id);
    if (service->servers.empty() && service->callers.empty()) {
      by_name_.erase(service->full_name);
      service.reset();
      free_slots_.push_back(slot);
    }
  }
}

ServiceUpdate ServiceDirectory::snapshot_locked(uint32_t service_id) {
  ServiceUpdate update;
  update.sequence = ++sequence_;
  update.id = service_id;
  const RegisteredService* service = registry_.find(service_id);
  if (service == nullptr) {
    update.dropped = true;
    return update;
  }
  update.full_name = service->full_name;
  update.schema = service->schema;
  update.info = service->info;
  update.servers = service->servers;
  update.server_apps = service->server_apps;
  update.codecs = service->codecs;
  return update;
}

Expected<ServiceUpdate> ServiceDirectory::register_service(std::shared_ptr<const Schema> schema,
                                                           const std::string& service_name,
                                                           ConnectionId connection, bool serve,
                                                           const std::string& app_name,
                                                           std::shared_ptr<const ServiceCodecs> codecs) {
  std::lock_guard lock(mutex_);
  auto registered = registry_.register_service(std::move(schema), service_name, connection, serve,
                                               app_name, std::move(codecs));
  if (!registered.ok()) return registered.status();
  return snapshot_locked((*registered)->id);
}

std::vector<ServiceUpdate> ServiceDirectory::connection_closed(ConnectionId connection) {
  std::lock_guard lock(mutex_);
  std::vector<uint32_t> changed;
  registry_.connection_closed(connection, changed);
  std::vector<ServiceUpdate> updates;
  updates.reserve(changed.size());
  for (uint32_t id : changed) updates.push_back(snapshot_locked(id));
  return updates;
}

ServiceUpdate ServiceDirectory::snapshot(uint32_t service_id) {
  std::lock_guard lock(mutex_);
  return snapshot_locked(service_id);
}

size_t ServiceDirectory::size() const {
  std::lock_guard lock(mutex_);
  return registry_.size();
}

RegisteredService* ServiceTable::apply(ServiceUpdate update, std::vector<RpcPtr>& orphaned) {
  const uint32_t slot = update.id & kSlotMask;
  if (slot >= slots_.size()) slots_.resize(slot + 1);
  Slot& entry = slots_[slot];
  if (update.sequence <= entry.sequence) return nullptr;  // an older snapshot, arrived late
  entry.sequence = update.sequence;
  if (update.dropped) {
    if (entry.service != nullptr && entry.service->id == update.id) {
      for (RpcPtr& rpc : entry.service->waiting) orphaned.push_back(std::move(rpc));
      entry.service.reset();
    }
    return nullptr;
  }
  if (entry.service == nullptr || entry.service->id != update.id) {
    if (entry.service != nullptr)  // a dropped registration whose drop has not arrived yet
      for (RpcPtr& rpc : entry.service->waiting) orphaned.push_back(std::move(rpc));
    entry.service = std::make_unique<RegisteredService>();
    entry.service->id = update.id;
  }
  RegisteredService& service = *entry.service;
  service.full_name = std::move(update.full_name);
  service.schema = std::move(update.schema);
  service.info = update.info;
  service.servers = std::move(update.servers);
  service.server_apps = std::move(update.server_apps);
  service.codecs = std::move(update.codecs);
  return !service.servers.empty() && !service.waiting.empty() ? &service : nullptr;
}

}  // namespace mrpc
