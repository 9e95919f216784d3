// Endpoint resolution between hosts: which peer daemons serve a service that no app of this host
// serves. The router asks its shard's resolver only after the local endpoint set came up empty
// (local apps first). EndpointResolver is the seam: the static table of the configuration file
// (StaticResolver) is the first implementation; DNS-SRV, Kubernetes EndpointSlices or xDS can feed
// the same answers later.
//
// Peers are numbered once (PeerAddress::index, dense from 0) so each shard's TCP transport keeps
// its pooled connections in a vector by peer index.
// Threads: a resolver is immutable after construction and read from every runtime thread.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mrpc/base/expected.h"
#include "mrpc/daemon/daemon.h"

namespace mrpc {

// A peer daemon's TCP address.
struct PeerAddress {
  uint32_t index = 0;  // dense, for per-peer tables
  std::string text;    // "address:port" as configured
  sockaddr_storage address{};
  socklen_t length = 0;
};

// "address:port" (IPv4 dotted, "[v6]:port", or a host name resolved now) -> a socket address.
// INVALID_ARGUMENT naming the text and what is wrong.
Expected<PeerAddress> parse_peer_address(std::string_view text);

// Where a service is served remotely, and how calls to it are encoded.
struct RemoteService {
  std::vector<const PeerAddress*> peers;
  RemoteServiceConfig::Encoding encoding = RemoteServiceConfig::Encoding::kAuto;
};

class EndpointResolver {
 public:
  virtual ~EndpointResolver() = default;
  // The peers serving `service` (full name), or null if none is known.
  virtual const RemoteService* resolve(std::string_view service) const = 0;
  // Every peer this resolver can name, by index.
  virtual std::span<const std::unique_ptr<PeerAddress>> peers() const = 0;
};

// The static table of DaemonConfig::remote_services.
class StaticResolver final : public EndpointResolver {
 public:
  // INVALID_ARGUMENT for a bad address or a service listed twice.
  static Expected<std::unique_ptr<StaticResolver>> create(
      const std::vector<RemoteServiceConfig>& services);
  const RemoteService* resolve(std::string_view service) const override;
  std::span<const std::unique_ptr<PeerAddress>> peers() const override { return peers_; }

 private:
  StaticResolver() = default;
  std::vector<std::unique_ptr<PeerAddress>> peers_;
  // Looked up once per service per shard (TcpTransport caches by service id).
  std::unordered_map<std::string, RemoteService> services_;
};

}  // namespace mrpc
