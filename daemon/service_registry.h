// ServiceRegistry: the daemon's local routing table. Each service full name gets one id for the
// daemon's lifetime (what kCall entries carry), the schema it was first registered with (whose
// layouts the daemon copies messages with), and the connection serving it, if any.
// Runtime thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "mrpc/base/expected.h"
#include "mrpc/dataflow/rpc.h"
#include "mrpc/message/schema.h"

namespace mrpc {

struct RegisteredService {
  uint32_t id = 0;
  std::string full_name;
  std::shared_ptr<const Schema> schema;  // keeps `info` alive
  const ServiceInfo* info = nullptr;
  ConnectionId server = kNoConnection;
};

class ServiceRegistry {
 public:
  // Registers `service_name` from `schema` for `connection`; with `serve`, routes its calls there.
  // NOT_FOUND: the schema has no such service. FAILED_PRECONDITION: the name is known with other
  // methods or message layouts. ALREADY_EXISTS: another connection already serves it.
  // RESOURCE_EXHAUSTED: limits::kMaxRegisteredServices reached.
  Expected<const RegisteredService*> register_service(std::shared_ptr<const Schema> schema,
                                                      const std::string& service_name,
                                                      ConnectionId connection, bool serve);
  // Null for an unknown id.
  const RegisteredService* find(uint32_t service_id) const;
  // The connection stops serving everything it served.
  void connection_closed(ConnectionId connection);
  size_t size() const { return by_id_.size(); }

 private:
  std::vector<std::unique_ptr<RegisteredService>> by_id_;  // index = id - 1
  std::unordered_map<std::string, RegisteredService*> by_name_;
};

}  // namespace mrpc
