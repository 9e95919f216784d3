#include "service_registry.h"

#include <fmt/format.h>

#include "mrpc/base/limits.h"
#include "mrpc/message/layout.h"

namespace mrpc {

Expected<const RegisteredService*> ServiceRegistry::register_service(
    std::shared_ptr<const Schema> schema, const std::string& service_name, ConnectionId connection,
    bool serve) {
  const ServiceInfo* info = schema->service(service_name);
  if (info == nullptr)
    return Status(StatusCode::kNotFound,
                  fmt::format("the registered schema has no service '{}'", service_name));
  RegisteredService* entry = nullptr;
  if (auto it = by_name_.find(service_name); it != by_name_.end()) {
    entry = it->second;
    // Apps build messages with their own layouts and the daemon copies them with the first
    // registration's: every method and message layout must agree.
    const auto& known = entry->info->methods;
    bool same = known.size() == info->methods.size();
    for (size_t i = 0; same && i < known.size(); ++i) {
      same = known[i].name == info->methods[i].name &&
             known[i].input->fingerprint() == info->methods[i].input->fingerprint() &&
             known[i].output->fingerprint() == info->methods[i].output->fingerprint();
    }
    if (!same)
      return Status(StatusCode::kFailedPrecondition,
                    fmt::format("service '{}' is already registered with other methods or "
                                "message layouts",
                                service_name));
  } else {
    if (by_id_.size() >= limits::kMaxRegisteredServices)
      return Status(StatusCode::kResourceExhausted,
                    fmt::format("mrpcd already knows kMaxRegisteredServices={} services",
                                limits::kMaxRegisteredServices));
    auto fresh = std::make_unique<RegisteredService>();
    fresh->id = static_cast<uint32_t>(by_id_.size() + 1);
    fresh->full_name = service_name;
    fresh->schema = std::move(schema);
    fresh->info = info;
    entry = fresh.get();
    by_name_.emplace(service_name, entry);
    by_id_.push_back(std::move(fresh));
  }
  if (serve) {
    if (entry->server != kNoConnection && entry->server != connection)
      return Status(StatusCode::kAlreadyExists,
                    fmt::format("service '{}' is already served by connection {}", service_name,
                                entry->server));
    entry->server = connection;
  }
  return static_cast<const RegisteredService*>(entry);
}

const RegisteredService* ServiceRegistry::find(uint32_t service_id) const {
  if (service_id == 0 || service_id > by_id_.size()) return nullptr;
  return by_id_[service_id - 1].get();
}

void ServiceRegistry::connection_closed(ConnectionId connection) {
  for (auto& entry : by_id_)
    if (entry->server == connection) entry->server = kNoConnection;
}

}  // namespace mrpc
