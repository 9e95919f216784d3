#include "router.h"

#include <algorithm>

#include "tcp_transport.h"

namespace mrpc {

void Router::route(Connection& caller, RpcPtr rpc) {
  if (core_.call(rpc->call_id) == nullptr) {  // ended while in the graph
    core_.discard(std::move(rpc));
    return;
  }
  auto fail = [&](StatusCode code, std::string text) {
    rpc->status = Status(code, std::move(text));
    caller.egress->push_reply(std::move(rpc));
  };
  if (rpc->deadline <= core_.clock.now())
    return fail(StatusCode::kDeadlineExceeded, "the call passed its deadline");
  const RegisteredService* service = core_.registry.find(rpc->service_id);
  if (service == nullptr || service->servers.empty()) {
    // This shard's view may lag the directory by one hand-off (a server that just registered on
    // another shard): look there before failing. Failure path only.
    core_.refresh_service(rpc->service_id);
    service = core_.registry.find(rpc->service_id);
  }
  if (service == nullptr)
    return fail(StatusCode::kUnavailable,
                fmt::format("no app serves service id {} any more", rpc->service_id));
  if (service->servers.empty() && core_.tcp != nullptr) {
    // No app of this host serves it: the resolver's peer daemons, if it names any.
    rpc = core_.tcp->route(caller, *service, std::move(rpc));
    if (rpc == nullptr) return;
  }
  auto has_room = [this](ConnectionId id) {
    if (!core_.is_local(id)) return true;  // its shard checks, and bounces the call if full
    Connection* server = core_.connection(id);
    return server != nullptr && server->incoming.size() < server->incoming.max_entries();
  };
  ConnectionId target = kNoConnection;
  if (rpc->endpoint.routed()) {
    // Chosen by a policy: honoured if it serves the service. If it is full, this attempt fails
    // (the policy chose that endpoint: a mirror to a shadow must not land on the primary).
    const auto& servers = service->servers;
    if (std::find(servers.begin(), servers.end(), rpc->endpoint.connection) != servers.end()) {
      if (!has_room(rpc->endpoint.connection))
        return fail(StatusCode::kResourceExhausted,
                    fmt::format("the endpoint chosen for this call (connection {}) has "
                                "max_calls_served calls it has not answered",
                                rpc->endpoint.connection));
      target = rpc->endpoint.connection;
    }
  }
  if (target == kNoConnection) target = core_.registry.pick_server(rpc->service_id, has_room);
  if (target == kNoConnection) {
    if (service->servers.empty() && rpc->wait_for_ready) {
      RegisteredService& waiting_in = *core_.registry.find_mutable(rpc->service_id);
      park(waiting_in, std::move(rpc));
      return;
    }
    if (service->servers.empty())
      return fail(StatusCode::kUnavailable, fmt::format("no app serves {}", service->full_name));
    return fail(StatusCode::kResourceExhausted,
                fmt::format("every app serving {} ({}) has max_calls_served calls it has not "
                            "answered",
                            service->full_name, service->servers.size()));
  }
  rpc->endpoint.connection = target;
  core_.transport->send_request(std::move(rpc));
}

void Router::park(RegisteredService& service, RpcPtr rpc) {
  // Calls that ended meanwhile (deadline, cancel, caller gone) leave their RPCs here until a
  // server comes or the list doubles: then they are swept out, so the list stays within twice the
  // calls really waiting.
  if (service.waiting.size() >= std::max<size_t>(16, 2 * service.waiting_after_sweep)) {
    std::erase_if(service.waiting, [this](RpcPtr& waiting) {
      if (core_.call(waiting->call_id) != nullptr) return false;
      core_.discard(std::move(waiting));
      return true;
    });
    service.waiting_after_sweep = service.waiting.size();
  }
  if (CallRecord* record = core_.call(rpc->call_id)) record->waiting_for_server = true;
  service.waiting.push_back(std::move(rpc));
}

void Router::server_registered(RegisteredService& service) {
  std::vector<RpcPtr> waiting = std::move(service.waiting);
  service.waiting.clear();
  service.waiting_after_sweep = 0;
  for (RpcPtr& rpc : waiting) {
    CallRecord* record = core_.call(rpc->call_id);
    Connection* caller = record == nullptr ? nullptr : core_.connection(record->caller);
    if (caller == nullptr) {
      core_.discard(std::move(rpc));
      continue;
    }
    record->waiting_for_server = false;
    route(*caller, std::move(rpc));
  }
}

}  // namespace mrpc
