// toml++ (Debian's libtomlplusplus-dev, a compiled library) is included only here.
#include "config_file.h"

#include <toml++/toml.h>

#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "endpoint_resolver.h"

namespace mrpc {

namespace {

std::string where(const std::string& name, const toml::source_region& region) {
  return fmt::format("{}:{}:{}", name, region.begin.line, region.begin.column);
}

Status error_at(const std::string& name, const toml::source_region& region, std::string what) {
  return Status(StatusCode::kInvalidArgument, fmt::format("{}: {}", where(name, region), what));
}

Status read_string(const std::string& name, const toml::key& key, const toml::node& node,
                   std::string& out) {
  const auto* value = node.as_string();
  if (value == nullptr)
    return error_at(name, node.source(),
                    fmt::format("'{}' must be a string", std::string_view(key.str())));
  out = value->get();
  return {};
}

Status read_remote(const std::string& name, const toml::key& service_key, const toml::node& node,
                   RemoteServiceConfig& service) {
  const auto* table = node.as_table();
  if (table == nullptr)
    return error_at(name, node.source(),
                    fmt::format("remote.\"{}\" must be a table with endpoints = [...]",
                                std::string_view(service_key.str())));
  service.service = std::string(service_key.str());
  if (service.service.empty() || service.service.size() > limits::kMaxTcpServiceNameBytes)
    return error_at(name, service_key.source(),
                    fmt::format("a service name of {} bytes (1..{})", service.service.size(),
                                limits::kMaxTcpServiceNameBytes));
  bool has_endpoints = false;
  for (const auto& [key, value] : *table) {
    if (key == "endpoints") {
      const auto* list = value.as_array();
      if (list == nullptr)
        return error_at(name, value.source(), "'endpoints' must be an array of \"address:port\"");
      for (const toml::node& item : *list) {
        const auto* text = item.as_string();
        if (text == nullptr)
          return error_at(name, item.source(), "an endpoint must be a string \"address:port\"");
        auto parsed = parse_peer_address(text->get());
        if (!parsed.ok()) return error_at(name, item.source(), parsed.status().message());
        service.endpoints.push_back(text->get());
      }
      if (service.endpoints.empty()) return error_at(name, value.source(), "'endpoints' is empty");
      if (service.endpoints.size() > limits::kMaxRemoteEndpointsPerService)
        return error_at(
            name, value.source(),
            fmt::format("{} endpoints, past kMaxRemoteEndpointsPerService={}",
                        service.endpoints.size(), limits::kMaxRemoteEndpointsPerService));
      has_endpoints = true;
    } else if (key == "encoding") {
      std::string encoding;
      MRPC_TRY_STATUS(read_string(name, key, value, encoding));
      if (encoding == "native")
        service.encoding = RemoteServiceConfig::Encoding::kNative;
      else if (encoding == "protobuf")
        service.encoding = RemoteServiceConfig::Encoding::kProtobuf;
      else if (encoding == "auto")
        service.encoding = RemoteServiceConfig::Encoding::kAuto;
      else
        return error_at(name, value.source(),
                        fmt::format("encoding '{}' is not native, protobuf or auto", encoding));
    } else {
      return error_at(name, key.source(),
                      fmt::format("unknown key '{}' in remote.\"{}\" (known: endpoints, encoding)",
                                  std::string_view(key.str()), service.service));
    }
  }
  if (!has_endpoints)
    return error_at(name, node.source(),
                    fmt::format("remote.\"{}\" has no endpoints", service.service));
  return {};
}

}  // namespace

Status load_config_text(std::string_view text, const std::string& name, DaemonConfig& config) {
  toml::table root;
  try {
    root = toml::parse(text, name);
  } catch (const toml::parse_error& error) {
    return error_at(name, error.source(), std::string(error.description()));
  }
  DaemonConfig read = config;
  for (const auto& [key, node] : root) {
    if (key == "host") {
      MRPC_TRY_STATUS(read_string(name, key, node, read.host_name));
      if (read.host_name.empty() || read.host_name.size() > limits::kMaxTcpHostNameBytes)
        return error_at(name, node.source(),
                        fmt::format("a host name of {} bytes (1..{})", read.host_name.size(),
                                    limits::kMaxTcpHostNameBytes));
    } else if (key == "listen") {
      MRPC_TRY_STATUS(read_string(name, key, node, read.tcp_listen));
      auto parsed = parse_peer_address(read.tcp_listen);
      if (!parsed.ok()) return error_at(name, node.source(), parsed.status().message());
    } else if (key == "remote") {
      const auto* table = node.as_table();
      if (table == nullptr)
        return error_at(name, node.source(),
                        "'remote' must be a table of services: [remote.\"pkg.Service\"]");
      read.remote_services.clear();
      for (const auto& [service_key, service_node] : *table) {
        RemoteServiceConfig service;
        MRPC_TRY_STATUS(read_remote(name, service_key, service_node, service));
        read.remote_services.push_back(std::move(service));
      }
    } else {
      return error_at(name, key.source(),
                      fmt::format("unknown key '{}' (known: host, listen, remote)",
                                  std::string_view(key.str())));
    }
  }
  config = std::move(read);
  return {};
}

Status load_config_file(const std::string& path, DaemonConfig& config) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status(StatusCode::kNotFound, fmt::format("cannot read {}", path));
  std::stringstream text;
  text << in.rdbuf();
  const std::string content = text.str();
  if (content.size() > limits::kMaxConfigFileBytes)
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("{}: {} bytes, past kMaxConfigFileBytes={}", path, content.size(),
                              limits::kMaxConfigFileBytes));
  return load_config_text(content, path, config);
}

}  // namespace mrpc
