// ServiceRegistry: the daemon's table of services. A service full name gets an id when its first
// app registers it (what kCall entries carry), the schema it was registered with (whose layouts
// the daemon copies messages with) and an endpoint set: every connection serving it. The
// registration lives while any app serves or calls the service; when the last one leaves it is
// dropped, its id is never handed out again, and the name can be registered anew with another
// schema.
// Ids are slot handles folded into 32 bits ((generation << 16) | slot): a lookup is an index, and
// an id of a dropped registration finds nothing.
//
// With several shards (shard_link.h) the registry is the ServiceDirectory, shared and locked
// (registration is rare), and every shard routes with its own ServiceTable, a view the directory
// keeps up to date by publishing a snapshot of each change to every shard: no lock and no shared
// write on the per-call path. A shard's view may lag the directory by one hand-off; a lookup that
// finds no server consults the directory before giving up (ServiceDirectory::snapshot).
// ServiceRegistry itself: not thread-safe (the directory holds it under its lock).
//
// Ownership (docs/security.md, finding 5): the first uid to serve a name owns it while any of its
// apps serves it and for Rules::grace_period after the last one left, so a restarting server
// reclaims its name and no other uid can serve it meanwhile (a registration kept only by its
// grace period has no apps; it is dropped when the period ends). A name in Rules::allowed_uids
// may be served only by the uids listed, whoever came first. Registrations are bounded per uid
// (Rules::max_services_per_uid, counted against the uid that created each) and in all
// (limits::kMaxRegisteredServices).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "mrpc/base/clock.h"
#include "mrpc/base/expected.h"
#include "mrpc/base/limits.h"
#include "mrpc/dataflow/rpc.h"
#include "mrpc/message/schema.h"
#include "mrpc/transports/codec.h"

namespace mrpc {

// A caller whose schema of the service differs from the registration's, compatibly (as protobuf
// defines it: fields added or removed, wire-compatible types): its messages are converted through
// the protobuf wire encoding at its door (daemon/schema_convert.h), so everything past it sees
// the registration's layouts.
struct SchemaVariant {
  ConnectionId connection = kNoConnection;
  std::shared_ptr<const Schema> schema;  // keeps `info` alive
  const ServiceInfo* info = nullptr;
  std::shared_ptr<const ServiceCodecs> codecs;  // the caller's own codecs
};

struct RegisteredService {
  uint32_t id = 0;
  std::string full_name;
  std::shared_ptr<const Schema> schema;  // keeps `info` alive
  const ServiceInfo* info = nullptr;
  // The compiled codecs of its methods (from the first registration; later ones have the same
  // layouts), for transports that leave the host (TransportCodecs).
  std::shared_ptr<const ServiceCodecs> codecs;
  // The endpoint set: connections serving it, in registration order; round robin over it.
  std::vector<ConnectionId> servers;
  std::vector<std::string> server_apps;  // the app name of each server, in the same order
  size_t next_server = 0;
  // Connections that registered to call it (each counted once).
  std::vector<ConnectionId> callers;
  // Those of them whose schema differs compatibly (usually none).
  std::vector<SchemaVariant> variants;
  bool conversion_logged = false;  // the first variant was logged (once per registration)
  // The uid whose apps created this registration (counted in its max_services_per_uid).
  uint32_t creator_uid = 0;
  // The uid that owns the name (only its apps may serve it), or kNoOwner: anyone may, until one
  // serves it. While `servers` is empty, ownership lapses at owner_until.
  static constexpr uint32_t kNoOwner = UINT32_MAX;
  uint32_t owner_uid = kNoOwner;
  MonoTime owner_until = kNoDeadline;
  // wait_for_ready calls parked until a server registers (some may have ended meanwhile).
  std::vector<RpcPtr> waiting;
  size_t waiting_after_sweep = 0;  // its size after the last sweep of ended calls
};

// Who registers: the connection, its app's uid and name.
struct Registrant {
  ConnectionId connection = kNoConnection;
  uint32_t uid = 0;
  std::string app_name;
};

class ServiceRegistry {
 public:
  struct Rules {
    std::chrono::nanoseconds grace_period = limits::kDefaultServiceOwnerGracePeriod;
    std::map<std::string, std::vector<uint32_t>> allowed_uids;  // service -> uids that may serve
    uint32_t max_services_per_uid = limits::kDefaultMaxServicesPerUid;
  };
  void set_rules(Rules rules) { rules_ = std::move(rules); }

  // Registers `service_name` from `schema` for `who` at `now`; with `serve`, the connection joins
  // the service's endpoint set, else it is recorded as a caller. Registering again in the same
  // role is harmless. A caller whose schema differs from the registration's in a wire-compatible
  // way (schemas_compatible) is recorded as a SchemaVariant. NOT_FOUND: the schema has no such
  // service. PERMISSION_DENIED: `serve` by a
  // uid that does not own the name (another uid serves it, or did within the grace period) or is
  // not on its allow-list. FAILED_PRECONDITION: the name is registered (by apps still there) with
  // other methods or message layouts that are not wire-compatible (for a caller), or by a server
  // with other layouts (for another server). RESOURCE_EXHAUSTED: the uid has max_services_per_uid
  // registrations, or limits::kMaxRegisteredServices exist. Registrations dropped on the way (a
  // lapsed grace period) are appended to `changed`.
  Expected<const RegisteredService*> register_service(
      std::shared_ptr<const Schema> schema, const std::string& service_name, const Registrant& who,
      bool serve, MonoTime now, std::vector<uint32_t>& changed,
      std::shared_ptr<const ServiceCodecs> codecs = nullptr);
  // Null for an unknown or dropped id.
  RegisteredService* find_mutable(uint32_t service_id) {
    return const_cast<RegisteredService*>(find(service_id));
  }
  const RegisteredService* find(uint32_t service_id) const {
    const uint32_t slot = service_id & kSlotMask;
    if (slot >= slots_.size()) return nullptr;
    const auto& entry = slots_[slot];
    return entry.service != nullptr && entry.service->id == service_id ? entry.service.get()
                                                                       : nullptr;
  }
  // The connection leaves every service it served or called; a service whose last server left
  // stays owned for the grace period; one nobody uses and nobody owns any more is dropped.
  // Appends the ids of the services it left or dropped to `changed`.
  void connection_closed(ConnectionId connection, MonoTime now, std::vector<uint32_t>& changed);
  // Ends ownerships whose grace period is over and drops registrations nobody uses any more
  // (appended to `changed`). Cheap when nothing is due: a comparison with the earliest end.
  void expire_ownerships(MonoTime now, std::vector<uint32_t>& changed);
  size_t size() const { return by_name_.size(); }
  // Calls fn(const RegisteredService&) for every registered service (policy attach checks).
  template <typename Fn>
  void for_each(Fn&& fn) const {
    for (const auto& slot : slots_)
      if (slot.service != nullptr) fn(*slot.service);
  }

 private:
  static constexpr uint32_t kSlotBits = 16;
  static constexpr uint32_t kSlotMask = (1u << kSlotBits) - 1;
  static_assert(limits::kMaxRegisteredServices <= kSlotMask);
  struct Slot {
    uint32_t generation = 0;
    std::unique_ptr<RegisteredService> service;
  };
  void drop(uint32_t slot, std::vector<uint32_t>& changed);

  std::vector<Slot> slots_;
  std::vector<uint32_t> free_slots_;
  std::unordered_map<std::string, RegisteredService*> by_name_;  // registration only
  Rules rules_;
  std::unordered_map<uint32_t, uint32_t> created_by_uid_;  // registrations each uid created
  MonoTime next_expiry_ = kNoDeadline;                     // no ownership lapses before this
};

// One change of a service's registration, as the directory publishes it to the shards: the whole
// registration as it is after the change (or its end), with a sequence number so a shard that gets
// two snapshots out of order keeps the newer.
struct ServiceUpdate {
  uint64_t sequence = 0;
  uint32_t id = 0;
  bool dropped = false;
  std::string full_name;
  std::shared_ptr<const Schema> schema;
  const ServiceInfo* info = nullptr;
  std::vector<ConnectionId> servers;
  std::vector<std::string> server_apps;
  std::shared_ptr<const ServiceCodecs> codecs;
  std::vector<SchemaVariant> variants;
};

// OK if messages of `offered`'s methods can be read as those of `known`'s and back through the
// protobuf wire encoding: the same method names at the indices both have, and in every message
// type reached, each field number both declare has wire-compatible types (int32/uint32/int64/
// uint64/bool/enum; sint32/sint64; fixed32/sfixed32; fixed64/sfixed64; string/bytes; messages
// compared the same way) and the same repeatedness. Added and removed fields are compatible.
// FAILED_PRECONDITION naming the first difference otherwise.
Status schemas_compatible(const Schema& known_schema, const ServiceInfo& known,
                          const Schema& offered_schema, const ServiceInfo& offered);

// The daemon's registry, shared by its shards. Thread-safe (one lock; control plane only).
class ServiceDirectory {
 public:
  void set_rules(ServiceRegistry::Rules rules);
  // What register_service did: its status and the snapshots to publish (on success the
  // registration first, then, either way, registrations dropped on the way).
  struct Registration {
    Status status;
    std::vector<ServiceUpdate> updates;
  };
  // As ServiceRegistry::register_service.
  Registration register_service(std::shared_ptr<const Schema> schema,
                                const std::string& service_name, const Registrant& who, bool serve,
                                MonoTime now,
                                std::shared_ptr<const ServiceCodecs> codecs = nullptr);
  // As ServiceRegistry::connection_closed; the registrations it changed.
  std::vector<ServiceUpdate> connection_closed(ConnectionId connection, MonoTime now);
  // As ServiceRegistry::expire_ownerships; the registrations it dropped.
  std::vector<ServiceUpdate> expire_ownerships(MonoTime now);
  // The registration as it is now (a dropped update if `service_id` names none).
  ServiceUpdate snapshot(uint32_t service_id);
  size_t size() const;
  // fn(const RegisteredService&) for every registration, under the lock (control plane).
  template <typename Fn>
  void for_each(Fn&& fn) const {
    std::lock_guard lock(mutex_);
    registry_.for_each(fn);
  }

 private:
  ServiceUpdate snapshot_locked(uint32_t service_id);
  std::vector<ServiceUpdate> snapshots_locked(const std::vector<uint32_t>& ids);

  mutable std::mutex mutex_;
  ServiceRegistry registry_;
  uint64_t sequence_ = 0;
};

// One shard's view of the registry: what its routers and frontends read per call. Runtime thread
// of its shard only.
class ServiceTable {
 public:
  // Takes `update` unless the view already has a newer one. Parked wait_for_ready calls of a
  // dropped service go to `orphaned`. Returns the service if it now has servers and calls are
  // parked in it (the caller routes them), else null.
  RegisteredService* apply(ServiceUpdate update, std::vector<RpcPtr>& orphaned);

  RegisteredService* find_mutable(uint32_t service_id) {
    return const_cast<RegisteredService*>(find(service_id));
  }
  const RegisteredService* find(uint32_t service_id) const {
    const uint32_t slot = service_id & kSlotMask;
    if (slot >= slots_.size()) return nullptr;
    const auto& entry = slots_[slot];
    return entry.service != nullptr && entry.service->id == service_id ? entry.service.get()
                                                                       : nullptr;
  }
  // The next endpoint of the service, round robin, skipping those `usable` refuses; kNoConnection
  // if none is usable.
  template <typename Usable>
  ConnectionId pick_server(uint32_t service_id, Usable&& usable) {
    RegisteredService* service = find_mutable(service_id);
    if (service == nullptr) return kNoConnection;
    const size_t count = service->servers.size();
    for (size_t tried = 0; tried < count; ++tried) {
      ConnectionId candidate = service->servers[service->next_server++ % count];
      if (usable(candidate)) return candidate;
    }
    return kNoConnection;
  }
  // fn(const RegisteredService&) for every service of this view (the TCP transport looks a peer's
  // service up by name this way, then caches the id).
  template <typename Fn>
  void for_each(Fn&& fn) const {
    for (const auto& slot : slots_)
      if (slot.service != nullptr) fn(*slot.service);
  }

 private:
  static constexpr uint32_t kSlotMask = (1u << 16) - 1;
  struct Slot {
    uint64_t sequence = 0;
    std::unique_ptr<RegisteredService> service;
  };
  std::vector<Slot> slots_;
};

}  // namespace mrpc
