#include "endpoint_resolver.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include <charconv>
#include <cstring>

#include "mrpc/base/check.h"

namespace mrpc {

Expected<PeerAddress> parse_peer_address(std::string_view text) {
  const size_t colon = text.rfind(':');
  MRPC_REQUIRE(colon != std::string_view::npos && colon > 0 && colon + 1 < text.size(),
               StatusCode::kInvalidArgument, "endpoint '{}' is not address:port", text);
  std::string_view host = text.substr(0, colon);
  const std::string_view port_text = text.substr(colon + 1);
  unsigned port = 0;
  auto [end, error] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  MRPC_REQUIRE(error == std::errc() && end == port_text.data() + port_text.size() && port <= 65535,
               StatusCode::kInvalidArgument, "endpoint '{}': port '{}' is not a number 0..65535",
               text, port_text);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  PeerAddress peer;
  peer.text = std::string(text);
  const std::string host_string(host);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host_string.c_str(), nullptr, &hints, &found);
  MRPC_REQUIRE(rc == 0 && found != nullptr, StatusCode::kInvalidArgument,
               "endpoint '{}': cannot resolve '{}': {}", text, host_string,
               rc == 0 ? "no address" : ::gai_strerror(rc));
  std::memcpy(&peer.address, found->ai_addr, found->ai_addrlen);
  peer.length = static_cast<socklen_t>(found->ai_addrlen);
  ::freeaddrinfo(found);
  if (peer.address.ss_family == AF_INET)
    reinterpret_cast<sockaddr_in*>(&peer.address)->sin_port = htons(static_cast<uint16_t>(port));
  else if (peer.address.ss_family == AF_INET6)
    reinterpret_cast<sockaddr_in6*>(&peer.address)->sin6_port = htons(static_cast<uint16_t>(port));
  else
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("endpoint '{}': not an IPv4 or IPv6 address", text));
  return peer;
}

Expected<std::unique_ptr<StaticResolver>> StaticResolver::create(
    const std::vector<RemoteServiceConfig>& services) {
  std::unique_ptr<StaticResolver> resolver(new StaticResolver());
  std::unordered_map<std::string, const PeerAddress*> by_text;
  for (const RemoteServiceConfig& service : services) {
    MRPC_REQUIRE(!resolver->services_.contains(service.service), StatusCode::kInvalidArgument,
                 "service '{}' is listed twice in the remote services", service.service);
    MRPC_REQUIRE(!service.endpoints.empty(), StatusCode::kInvalidArgument,
                 "service '{}' has no endpoints", service.service);
    MRPC_REQUIRE(service.endpoints.size() <= limits::kMaxRemoteEndpointsPerService,
                 StatusCode::kInvalidArgument,
                 "service '{}' has {} endpoints, past kMaxRemoteEndpointsPerService={}",
                 service.service, service.endpoints.size(), limits::kMaxRemoteEndpointsPerService);
    RemoteService remote;
    remote.encoding = service.encoding;
    for (const std::string& text : service.endpoints) {
      auto known = by_text.find(text);
      if (known == by_text.end()) {
        auto parsed = parse_peer_address(text);
        if (!parsed.ok())
          return Status(parsed.status().code(), fmt::format("service '{}': {}", service.service,
                                                            parsed.status().message()));
        parsed->index = static_cast<uint32_t>(resolver->peers_.size());
        resolver->peers_.push_back(std::make_unique<PeerAddress>(std::move(*parsed)));
        known = by_text.emplace(text, resolver->peers_.back().get()).first;
      }
      remote.peers.push_back(known->second);
    }
    resolver->services_.emplace(service.service, std::move(remote));
  }
  return resolver;
}

const RemoteService* StaticResolver::resolve(std::string_view service) const {
  auto found = services_.find(std::string(service));
  return found == services_.end() ? nullptr : &found->second;
}

}  // namespace mrpc
