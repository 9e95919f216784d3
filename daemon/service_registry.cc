#include "service_registry.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <google/protobuf/descriptor.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "mrpc/base/limits.h"
#include "mrpc/message/layout.h"

namespace mrpc {

namespace {
namespace pb = google::protobuf;

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

// The protobuf wire class of a field type: types of one class read each other's encodings.
int wire_class(pb::FieldDescriptor::Type type) {
  using T = pb::FieldDescriptor;
  switch (type) {
    case T::TYPE_INT32:
    case T::TYPE_UINT32:
    case T::TYPE_INT64:
    case T::TYPE_UINT64:
    case T::TYPE_BOOL:
    case T::TYPE_ENUM:
      return 1;
    case T::TYPE_SINT32:
    case T::TYPE_SINT64:
      return 2;
    case T::TYPE_FIXED32:
    case T::TYPE_SFIXED32:
      return 3;
    case T::TYPE_FIXED64:
    case T::TYPE_SFIXED64:
      return 4;
    case T::TYPE_STRING:
    case T::TYPE_BYTES:
      return 5;
    case T::TYPE_MESSAGE:
      return 6;
    case T::TYPE_FLOAT:
      return 7;
    case T::TYPE_DOUBLE:
      return 8;
    case T::TYPE_GROUP:
      return 9;
  }
  return 0;
}

// Compares two message types field by field (by number), following message fields; each pair of
// types once (cycles), at most limits::kMaxSchemaFields field comparisons in all.
Status messages_compatible(const pb::Descriptor& known_root, const pb::Descriptor& offered_root) {
  std::vector<std::pair<const pb::Descriptor*, const pb::Descriptor*>> pending{
      {&known_root, &offered_root}};
  std::set<std::pair<const pb::Descriptor*, const pb::Descriptor*>> seen{pending.front()};
  uint64_t work = 0;
  while (!pending.empty()) {
    const auto [known, offered] = pending.back();
    pending.pop_back();
    for (int i = 0; i < known->field_count(); ++i) {
      const pb::FieldDescriptor& a = *known->field(i);
      const pb::FieldDescriptor* b = offered->FindFieldByNumber(a.number());
      if (++work > 4ull * limits::kMaxSchemaFields)
        return Status(StatusCode::kFailedPrecondition,
                      fmt::format("the schemas are too large to compare (past {} fields)",
                                  4ull * limits::kMaxSchemaFields));
      if (b == nullptr) continue;  // removed on one side: skipped as an unknown field
      if (wire_class(a.type()) != wire_class(b->type()) || a.is_repeated() != b->is_repeated())
        return Status(StatusCode::kFailedPrecondition,
                      fmt::format("{} field {} ('{}') is {}{} in the registration and {}{} ('{}') "
                                  "here: not wire-compatible",
                                  known->full_name(), a.number(), a.name(),
                                  a.is_repeated() ? "repeated " : "", a.type_name(),
                                  b->is_repeated() ? "repeated " : "", b->type_name(), b->name()));
      if (a.type() == pb::FieldDescriptor::TYPE_MESSAGE &&
          seen.emplace(a.message_type(), b->message_type()).second)
        pending.emplace_back(a.message_type(), b->message_type());
    }
  }
  return {};
}

void add_once(std::vector<ConnectionId>& set, ConnectionId connection) {
  if (std::find(set.begin(), set.end(), connection) == set.end()) set.push_back(connection);
}
}  // namespace

Expected<const RegisteredService*> ServiceRegistry::register_service(
    std::shared_ptr<const Schema> schema, const std::string& service_name, const Registrant& who,
    bool serve, MonoTime now, std::vector<uint32_t>& changed,
    std::shared_ptr<const ServiceCodecs> codecs) {
  expire_ownerships(now, changed);
  const ServiceInfo* info = schema->service(service_name);
  if (info == nullptr)
    return Status(StatusCode::kNotFound,
                  fmt::format("the registered schema has no service '{}'", service_name));
  const uint32_t uid = who.uid;
  const auto allowed = rules_.allowed_uids.find(service_name);
  if (serve && allowed != rules_.allowed_uids.end() &&
      std::find(allowed->second.begin(), allowed->second.end(), uid) == allowed->second.end()) {
    return Status(StatusCode::kPermissionDenied,
                  fmt::format("uid {} may not serve '{}': the daemon's service_owners allow only "
                              "uids {}",
                              uid, service_name, fmt::join(allowed->second, ", ")));
  }
  RegisteredService* entry = nullptr;
  if (auto it = by_name_.find(service_name); it != by_name_.end()) {
    entry = it->second;
    if (serve && allowed == rules_.allowed_uids.end() &&
        entry->owner_uid != RegisteredService::kNoOwner && entry->owner_uid != uid) {
      return Status(StatusCode::kPermissionDenied,
                    entry->servers.empty()
                        ? fmt::format("service '{}' belongs to uid {}, whose server left less "
                                      "than the grace period ago; uid {} may not serve it",
                                      service_name, entry->owner_uid, uid)
                        : fmt::format("service '{}' is served by uid {}; uid {} may not serve it",
                                      service_name, entry->owner_uid, uid));
    }
    bool variant = false;
    if (!same_methods(*entry->info, *info) && !serve) {
      // A caller with other layouts: it may call through conversion if they are compatible.
      Status compatible = schemas_compatible(*entry->schema, *entry->info, *schema, *info);
      if (!compatible.ok())
        return Status(StatusCode::kFailedPrecondition,
                      fmt::format("service '{}' is registered (by {} serving and {} calling apps "
                                  "still connected) with other message layouts that this "
                                  "schema's cannot be converted to: {}",
                                  service_name, entry->servers.size(), entry->callers.size(),
                                  compatible.message()));
      variant = true;
      std::erase_if(entry->variants,
                    [&](const SchemaVariant& old) { return old.connection == who.connection; });
      entry->variants.push_back(SchemaVariant{who.connection, schema, info, codecs});
      add_once(entry->callers, who.connection);
      if (!entry->conversion_logged) {
        entry->conversion_logged = true;
        spdlog::info(
            "service {}: app '{}' (connection {}) calls it with another, compatible "
            "schema; its messages are converted through the protobuf wire encoding "
            "(logged once per service)",
            service_name, who.app_name, who.connection);
      }
      return static_cast<const RegisteredService*>(entry);
    }
    if (!variant && !same_methods(*entry->info, *info)) {
      if (!serve || !entry->servers.empty()) {
        // Apps build messages with their own layouts and the daemon copies them with the
        // registration's: every method and message layout must agree.
        return Status(StatusCode::kFailedPrecondition,
                      fmt::format("service '{}' is registered (by {} serving and {} calling apps "
                                  "still connected) with other methods or message layouts",
                                  service_name, entry->servers.size(), entry->callers.size()));
      }
      // No app serves it, and one allowed to serve it comes with other layouts (a new version,
      // or callers that squat the name with layouts of their own): the server's layouts win, in
      // a new registration (a new id). The old one keeps its id for its callers, if any (their
      // calls find no server), until they leave; with none it goes now.
      by_name_.erase(it);
      if (entry->callers.empty() && entry->waiting.empty()) drop(entry->id & kSlotMask, changed);
      entry = nullptr;
    }
  }
  if (entry == nullptr) {
    if (created_by_uid_[uid] >= rules_.max_services_per_uid)
      return Status(StatusCode::kResourceExhausted,
                    fmt::format("uid {} already has max_services_per_uid={} services registered",
                                uid, rules_.max_services_per_uid));
    if (by_name_.size() >= limits::kMaxRegisteredServices)
      return Status(StatusCode::kResourceExhausted,
                    fmt::format("mrpcd already has kMaxRegisteredServices={} services registered",
                                limits::kMaxRegisteredServices));
    uint32_t slot;
    if (!free_slots_.empty()) {
      slot = free_slots_.back();
      free_slots_.pop_back();
    } else {
      if (slots_.size() > kSlotMask)  // every slot retired: ~2^32 registrations since start
        return Status(StatusCode::kResourceExhausted,
                      "mrpcd has issued every service id it can; restart it");
      slot = static_cast<uint32_t>(slots_.size());
      slots_.emplace_back();
    }
    Slot& place = slots_[slot];
    // Generation 0 never appears, so no id is 0; a dropped id is never reissued (drop retires a
    // slot whose generation is used up).
    place.generation = (place.generation + 1) & 0xffffu;
    if (place.generation == 0) place.generation = 1;
    place.service = std::make_unique<RegisteredService>();
    entry = place.service.get();
    entry->id = (place.generation << kSlotBits) | slot;
    entry->full_name = service_name;
    entry->schema = std::move(schema);
    entry->info = info;
    entry->creator_uid = uid;
    ++created_by_uid_[uid];
    by_name_.emplace(service_name, entry);
  }
  if (entry->codecs == nullptr) entry->codecs = std::move(codecs);
  if (serve) {
    if (allowed == rules_.allowed_uids.end()) entry->owner_uid = uid;
    entry->owner_until = kNoDeadline;
    if (std::find(entry->servers.begin(), entry->servers.end(), who.connection) ==
        entry->servers.end()) {
      entry->servers.push_back(who.connection);
      entry->server_apps.push_back(who.app_name);
    }
  } else {
    add_once(entry->callers, who.connection);
  }
  return static_cast<const RegisteredService*>(entry);
}

void ServiceRegistry::drop(uint32_t slot, std::vector<uint32_t>& changed) {
  auto& service = slots_[slot].service;
  // A registration replaced by a server's new layouts no longer holds its name.
  if (auto named = by_name_.find(service->full_name);
      named != by_name_.end() && named->second == service.get()) {
    by_name_.erase(named);
  }
  if (auto count = created_by_uid_.find(service->creator_uid);
      count != created_by_uid_.end() && --count->second == 0) {
    created_by_uid_.erase(count);
  }
  changed.push_back(service->id);
  service.reset();
  // An id is never issued twice: code that caches by id (a policy's per-method checks hold
  // layout pointers) must never see another registration behind a known id. A slot whose 16-bit
  // generation is used up is retired (at most kMaxRegisteredServices slots, after ~2^16 drops
  // each).
  if (slots_[slot].generation != 0xffffu) free_slots_.push_back(slot);
}

void ServiceRegistry::connection_closed(ConnectionId connection, MonoTime now,
                                        std::vector<uint32_t>& changed) {
  for (uint32_t slot = 0; slot < slots_.size(); ++slot) {
    auto& service = slots_[slot].service;
    if (service == nullptr) continue;
    const bool served = !service->servers.empty();
    size_t erased = std::erase(service->callers, connection);
    std::erase_if(service->variants,
                  [&](const SchemaVariant& variant) { return variant.connection == connection; });
    for (size_t i = service->servers.size(); i-- > 0;) {
      if (service->servers[i] != connection) continue;
      service->servers.erase(service->servers.begin() + static_cast<ptrdiff_t>(i));
      service->server_apps.erase(service->server_apps.begin() + static_cast<ptrdiff_t>(i));
      ++erased;
    }
    if (erased == 0) continue;
    changed.push_back(service->id);
    if (served && service->servers.empty() && service->owner_uid != RegisteredService::kNoOwner) {
      service->owner_until = rules_.grace_period.count() > kNoDeadline - now
                                 ? kNoDeadline
                                 : now + rules_.grace_period.count();
      next_expiry_ = std::min(next_expiry_, service->owner_until);
    }
    if (service->servers.empty() && service->callers.empty() &&
        service->owner_uid == RegisteredService::kNoOwner)
      drop(slot, changed);
  }
  expire_ownerships(now, changed);
}

void ServiceRegistry::expire_ownerships(MonoTime now, std::vector<uint32_t>& changed) {
  if (now < next_expiry_) return;
  next_expiry_ = kNoDeadline;
  for (uint32_t slot = 0; slot < slots_.size(); ++slot) {
    auto& service = slots_[slot].service;
    if (service == nullptr || !service->servers.empty()) continue;
    if (service->owner_uid != RegisteredService::kNoOwner && now < service->owner_until) {
      next_expiry_ = std::min(next_expiry_, service->owner_until);
      continue;
    }
    service->owner_uid = RegisteredService::kNoOwner;
    service->owner_until = kNoDeadline;
    if (service->callers.empty()) drop(slot, changed);
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
  update.variants = service->variants;
  return update;
}

std::vector<ServiceUpdate> ServiceDirectory::snapshots_locked(const std::vector<uint32_t>& ids) {
  std::vector<ServiceUpdate> updates;
  updates.reserve(ids.size());
  for (uint32_t id : ids) updates.push_back(snapshot_locked(id));
  return updates;
}

void ServiceDirectory::set_rules(ServiceRegistry::Rules rules) {
  std::lock_guard lock(mutex_);
  registry_.set_rules(std::move(rules));
}

ServiceDirectory::Registration ServiceDirectory::register_service(
    std::shared_ptr<const Schema> schema, const std::string& service_name, const Registrant& who,
    bool serve, MonoTime now, std::shared_ptr<const ServiceCodecs> codecs) {
  std::lock_guard lock(mutex_);
  std::vector<uint32_t> changed;
  auto registered = registry_.register_service(std::move(schema), service_name, who, serve, now,
                                               changed, std::move(codecs));
  Registration result;
  if (registered.ok()) {
    result.updates.push_back(snapshot_locked((*registered)->id));
  } else {
    result.status = registered.status();
  }
  for (ServiceUpdate& dropped : snapshots_locked(changed))
    result.updates.push_back(std::move(dropped));
  return result;
}

std::vector<ServiceUpdate> ServiceDirectory::connection_closed(ConnectionId connection,
                                                               MonoTime now) {
  std::lock_guard lock(mutex_);
  std::vector<uint32_t> changed;
  registry_.connection_closed(connection, now, changed);
  return snapshots_locked(changed);
}

std::vector<ServiceUpdate> ServiceDirectory::expire_ownerships(MonoTime now) {
  std::lock_guard lock(mutex_);
  std::vector<uint32_t> changed;
  registry_.expire_ownerships(now, changed);
  return snapshots_locked(changed);
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
  service.variants = std::move(update.variants);
  return !service.servers.empty() && !service.waiting.empty() ? &service : nullptr;
}

}  // namespace mrpc

namespace mrpc {

Status schemas_compatible(const Schema& known_schema, const ServiceInfo& known,
                          const Schema& offered_schema, const ServiceInfo& offered) {
  const size_t common = std::min(known.methods.size(), offered.methods.size());
  for (size_t i = 0; i < common; ++i) {
    const MethodInfo& a = known.methods[i];
    const MethodInfo& b = offered.methods[i];
    if (a.name != b.name)
      return Status(
          StatusCode::kFailedPrecondition,
          fmt::format("method {} is '{}' in the registration and '{}' here", i, a.name, b.name));
    const std::pair<const MessageLayout*, const MessageLayout*> sides[] = {{a.input, b.input},
                                                                           {a.output, b.output}};
    for (const auto& [known_type, offered_type] : sides) {
      const pb::Descriptor* x = known_schema.descriptor(known_type->full_name());
      const pb::Descriptor* y = offered_schema.descriptor(offered_type->full_name());
      if (x == nullptr || y == nullptr)
        return Status(StatusCode::kInternal,
                      fmt::format("no descriptor for {} or {}", known_type->full_name(),
                                  offered_type->full_name()));
      MRPC_TRY_STATUS(messages_compatible(*x, *y));
    }
  }
  return {};
}

}  // namespace mrpc
