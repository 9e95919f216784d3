// The daemon's configuration file (daemon/config_file.h) and the static endpoint resolver
// (daemon/endpoint_resolver.h): a valid file fills DaemonConfig; an unknown key, a wrong type, a
// bad address or encoding is an error naming file:line:column; `mrpcd --validate -c FILE` says
// the same and exits 1 (0 for a valid file).
#include <doctest/doctest.h>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include "config_file.h"
#include "endpoint_resolver.h"
#include "mrpc/base/subprocess.h"

namespace {

using mrpc::DaemonConfig;
using mrpc::RemoteServiceConfig;
using mrpc::StatusCode;

const char* const kValid = R"(# host a
host = "host-a"
listen = "127.0.0.1:7100"

[remote."echo.EchoService"]
endpoints = ["127.0.0.2:7100", "127.0.0.3:7100"]
encoding = "protobuf"

[remote."nested.DocumentStore"]
endpoints = ["127.0.0.2:7100"]
encoding = "native"
)";

mrpc::Status load(const std::string& text, DaemonConfig& config) {
  return mrpc::load_config_text(text, "mrpcd.toml", config);
}

}  // namespace

TEST_CASE("a valid configuration file sets the host, the listen address and the remote table") {
  DaemonConfig config;
  config.runtime_threads = 3;  // not in the file: untouched
  mrpc::Status status = load(kValid, config);
  REQUIRE_MESSAGE(status.ok(), status.to_string());
  CHECK(config.host_name == "host-a");
  CHECK(config.tcp_listen == "127.0.0.1:7100");
  CHECK(config.runtime_threads == 3);
  REQUIRE(config.remote_services.size() == 2);
  const RemoteServiceConfig& echo = config.remote_services[0].service == "echo.EchoService"
                                        ? config.remote_services[0]
                                        : config.remote_services[1];
  CHECK(echo.endpoints == std::vector<std::string>{"127.0.0.2:7100", "127.0.0.3:7100"});
  CHECK(echo.encoding == RemoteServiceConfig::Encoding::kProtobuf);

  auto resolver = mrpc::StaticResolver::create(config.remote_services);
  REQUIRE_MESSAGE(resolver.ok(), resolver.status().to_string());
  CHECK((*resolver)->peers().size() == 2);  // 127.0.0.2:7100 is one peer for both services
  const mrpc::RemoteService* remote = (*resolver)->resolve("echo.EchoService");
  REQUIRE(remote != nullptr);
  REQUIRE(remote->peers.size() == 2);
  CHECK(remote->peers[0]->text == "127.0.0.2:7100");
  const mrpc::RemoteService* nested = (*resolver)->resolve("nested.DocumentStore");
  REQUIRE(nested != nullptr);
  CHECK(nested->peers[0] == remote->peers[0]);
  CHECK(nested->encoding == RemoteServiceConfig::Encoding::kNative);
  CHECK((*resolver)->resolve("other.Service") == nullptr);
}

TEST_CASE("configuration errors name the file, line and column") {
  struct Case {
    const char* text;
    const char* expect;
  };
  const Case cases[] = {
      {"host = \"a\"\nlisten_on = \"1.2.3.4:5\"\n", "mrpcd.toml:2:1: unknown key 'listen_on'"},
      {"host = 5\n", "mrpcd.toml:1:8: 'host' must be a string"},
      {"listen = \"1.2.3.4\"\n", "mrpcd.toml:1:10: endpoint '1.2.3.4' is not address:port"},
      {"listen = \"1.2.3.4:99999\"\n", "port '99999' is not a number 0..65535"},
      {"[remote.\"a.B\"]\nendpoints = [\"127.0.0.1:1\"]\nencoding = \"json\"\n",
       "mrpcd.toml:3:12: encoding 'json' is not native, protobuf or auto"},
      {"[remote.\"a.B\"]\nendpoints = [\"127.0.0.1:1\"]\nweight = 3\n",
       "mrpcd.toml:3:1: unknown key 'weight' in remote.\"a.B\""},
      {"[remote.\"a.B\"]\nencoding = \"native\"\n", "remote.\"a.B\" has no endpoints"},
      {"[remote.\"a.B\"]\nendpoints = [\"127.0.0.1:1\", 7]\n",
       "mrpcd.toml:2:29: an endpoint must be a string"},
      {"[remote.\"a.B\"]\nendpoints = []\n", "'endpoints' is empty"},
      {"host = \"a\"\nhost = \"b\"\n", "mrpcd.toml:2:"},  // toml++: redefinition
      {"[remote\n", "mrpcd.toml:1:"},                     // toml++: syntax
  };
  for (const Case& c : cases) {
    const std::string text = c.text;
    CAPTURE(text);
    DaemonConfig config;
    mrpc::Status status = load(c.text, config);
    CHECK(status.code() == StatusCode::kInvalidArgument);
    CHECK_MESSAGE(status.message().find(c.expect) != std::string::npos, status.message());
    CHECK(config.remote_services.empty());  // nothing taken from a bad file
  }
}

TEST_CASE("mrpcd --validate -c FILE exits 0 for a valid file and 1 with the position of an error") {
  char dir_template[] = "/tmp/mrpc-config-XXXXXX";
  const std::string dir = ::mkdtemp(dir_template);
  auto run = [&](const std::string& text, int& exit_code, std::string& output) {
    const std::string path = dir + "/mrpcd.toml";
    std::ofstream(path) << text;
    auto process =
        mrpc::Subprocess::start({MRPCD_PATH, "--validate", "-c", path}, {}, dir + "/out.log");
    REQUIRE(process.ok());
    auto code = process->wait(std::chrono::milliseconds(30000));
    REQUIRE(code.ok());
    exit_code = *code;
    std::ifstream in(dir + "/out.log");
    output.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    return path;
  };
  int code = -1;
  std::string output;
  run(kValid, code, output);
  CHECK(code == 0);
  CHECK(output.find("valid (host 'host-a', listen '127.0.0.1:7100', 2 remote services)") !=
        std::string::npos);
  const std::string path = run("host = \"a\"\n\nport = 7\n", code, output);
  CHECK(code == 1);
  CHECK_MESSAGE(output.find(path + ":3:1: unknown key 'port'") != std::string::npos, output);
  std::remove((dir + "/mrpcd.toml").c_str());
  std::remove((dir + "/out.log").c_str());
  ::rmdir(dir.c_str());
}
