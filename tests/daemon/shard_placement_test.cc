// Placement of connections by load: a daemon with 3 runtime threads puts each new app connection
// on the shard with the fewest open connections (then the fewest calls in flight), read from the
// daemon's own per-shard counters, not round robin.
#include <doctest/doctest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../../daemon/control_server.h"
#include "embedded_daemon.h"
#include "test_app.h"

using namespace mrpc;
using namespace mrpc::testing;

namespace {

// Open connections per shard, from the daemon's stats.
std::vector<uint64_t> connections_per_shard(EmbeddedDaemon& daemon) {
  auto stats = ControlServer::request(daemon.control_socket(), "stats");
  REQUIRE(stats.ok());
  const nlohmann::json parsed = nlohmann::json::parse(*stats);
  std::vector<uint64_t> open;
  for (const auto& shard : parsed["shards"])
    open.push_back(shard["connections_open"].get<uint64_t>());
  return open;
}

// The shard each app (by name) is on, from the daemon's connection listing.
std::map<std::string, uint32_t> shard_of_apps(EmbeddedDaemon& daemon) {
  auto listing = ControlServer::request(daemon.control_socket(), "connections");
  REQUIRE(listing.ok());
  const nlohmann::json parsed = nlohmann::json::parse(*listing);
  std::map<std::string, uint32_t> shards;
  for (const auto& connection : parsed["connections"])
    shards[connection["app"].get<std::string>()] = connection["shard"].get<uint32_t>();
  return shards;
}

}  // namespace

TEST_CASE("a new connection lands on the shard with the fewest connections after others left") {
  DaemonConfig config = EmbeddedDaemon::small_config();
  config.runtime_threads = 3;
  EmbeddedDaemon daemon(config);
  std::map<std::string, std::unique_ptr<TestApp>> apps;
  for (int i = 0; i < 6; ++i) {
    const std::string name = "app-" + std::to_string(i);
    apps[name] = TestApp::connect(daemon.app_socket(), name);
  }
  REQUIRE(connections_per_shard(daemon) == std::vector<uint64_t>{2, 2, 2});

  // Both apps of one shard leave (the middle one: round robin would not come back to it next).
  const auto placed = shard_of_apps(daemon);
  REQUIRE(placed.size() == 6);
  std::vector<std::string> on_shard_1;
  for (const auto& [name, shard] : placed)
    if (shard == 1) on_shard_1.push_back(name);
  REQUIRE(on_shard_1.size() == 2);
  for (const auto& name : on_shard_1) apps.erase(name);
  REQUIRE(eventually([&] {
    return connections_per_shard(daemon) == std::vector<uint64_t>{2, 0, 2};
  }));

  // The next two connections both go to shard 1, the least loaded; a third then goes anywhere
  // (all have 2 again) but not past the others.
  apps["late-0"] = TestApp::connect(daemon.app_socket(), "late-0");
  CHECK(shard_of_apps(daemon)["late-0"] == 1);
  apps["late-1"] = TestApp::connect(daemon.app_socket(), "late-1");
  CHECK(shard_of_apps(daemon)["late-1"] == 1);
  CHECK(connections_per_shard(daemon) == std::vector<uint64_t>{2, 2, 2});
  apps["late-2"] = TestApp::connect(daemon.app_socket(), "late-2");
  const auto after = connections_per_shard(daemon);
  CHECK(*std::max_element(after.begin(), after.end()) == 3);
  CHECK(*std::min_element(after.begin(), after.end()) == 2);
}
