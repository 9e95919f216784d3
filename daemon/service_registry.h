// ServiceRegistry: the daemon's table of services. A service full name gets an id when its first
// app registers it (what kCall entries carry), the schema it was registered with (whose layouts
// the daemon copies messages with) and an endpoint set: every connection serving it. The
// registration lives while any app serves or calls the service; when the last one leaves it is
// dropped, its id is never handed out again, and the name can be registered anew with another
// schema.
// Ids are slot handles folded into 32 bits ((generation << 16) | slot): a lookup is an index, and
// an id of a dropped registration finds nothing.
// Runtime thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "mrpc/base/expected.h"
#include "mrpc/base/limits.h"
#include "mrpc/dataflow/rpc.h"
#include "mrpc/message/schema.h"
#include "mrpc/transports/codec.h"

namespace mrpc {

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
  size_t next_server = 0;
  // Connections that registered to call it (each counted once).
  std::vector<ConnectionId> callers;
  // wait_for_ready calls parked until a server registers (some may have ended meanwhile).
  std::vector<RpcPtr> waiting;
  size_t waiting_after_sweep = 0;  // its size after the last sweep of ended calls
};

class ServiceRegistry {
 public:
  // Registers `service_name` from `schema` for `connection`; with `serve`, the connection joins
  // the service's endpoint set, else it is recorded as a caller. Registering again in the same
  // role is harmless. NOT_FOUND: the schema has no such service. FAILED_PRECONDITION: the name is
  // registered (by apps still there) with other methods or message layouts.
  // RESOURCE_EXHAUSTED: limits::kMaxRegisteredServices services are registered.
  Expected<const RegisteredService*> register_service(std::shared_ptr<const Schema> schema,
                                                      const std::string& service_name,
                                                      ConnectionId connection, bool serve);
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
  // The next endpoint of the service, round robin, skipping those `usable` refuses; kNoConnection
  // if none is usable.
  template <typename Usable>
  ConnectionId pick_server(uint32_t service_id, Usable&& usable) {
    RegisteredService* service = const_cast<RegisteredService*>(find(service_id));
    if (service == nullptr) return kNoConnection;
    const size_t count = service->servers.size();
    for (size_t tried = 0; tried < count; ++tried) {
      ConnectionId candidate = service->servers[service->next_server++ % count];
      if (usable(candidate)) return candidate;
    }
    return kNoConnection;
  }
  // The connection leaves every service it served or called; services nobody uses any more are
  // dropped.
  void connection_closed(ConnectionId connection);
  size_t size() const { return by_name_.size(); }

 private:
  static constexpr uint32_t kSlotBits = 16;
  static constexpr uint32_t kSlotMask = (1u << kSlotBits) - 1;
  static_assert(limits::kMaxRegisteredServices <= kSlotMask);
  struct Slot {
    uint32_t generation = 0;
    std::unique_ptr<RegisteredService> service;
  };
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_slots_;
  std::unordered_map<std::string, RegisteredService*> by_name_;  // registration only
};

}  // namespace mrpc
