#include "daemon_commands.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "mrpc/base/limits.h"
#include "mrpc/transports/shm/protocol.h"

namespace mrpc::polc {

namespace {

using nlohmann::json;

constexpr int kExitOk = 0;
constexpr int kExitUserError = 1;
constexpr int kExitInternalError = 2;

std::string socket_path(const DaemonRequest& request) {
  if (!request.socket.empty()) return request.socket;
  if (const char* env = std::getenv("MRPC_CONTROL_SOCKET"); env != nullptr && *env != '\0')
    return env;
  return shm::kDefaultControlSocketPath;
}

// Sends one command line, returns the whole answer; nullopt (and `error` set) if unreachable.
std::optional<std::string> exchange(const std::string& path, const std::string& line,
                                    std::string& error) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof address.sun_path) {
    error = "socket path '" + path + "' is too long";
    return std::nullopt;
  }
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) < 0) {
    error = "cannot reach mrpcd's control socket at " + path + ": " + std::strerror(errno) +
            " (is mrpcd running? --socket PATH)";
    if (fd >= 0) ::close(fd);
    return std::nullopt;
  }
  const std::string message = line + "\n";
  size_t sent = 0;
  while (sent < message.size()) {
    ssize_t n = ::send(fd, message.data() + sent, message.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      error = std::string("sending to mrpcd: ") + std::strerror(errno);
      ::close(fd);
      return std::nullopt;
    }
    sent += static_cast<size_t>(n);
  }
  std::string answer;
  char chunk[65536];
  for (;;) {
    ssize_t got = ::recv(fd, chunk, sizeof chunk, 0);
    if (got <= 0) break;
    answer.append(chunk, static_cast<size_t>(got));
  }
  ::close(fd);
  return answer;
}

bool read_text(const std::string& path, std::string& text, std::string& error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = "cannot open '" + path + "'";
    return false;
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  text = buffer.str();
  if (text.size() > limits::kMaxPolicyFileBytes) {
    error = "'" + path + "' is over kMaxPolicyFileBytes (" +
            std::to_string(limits::kMaxPolicyFileBytes) + " bytes)";
    return false;
  }
  return true;
}

// NAME=VALUE: VALUE as JSON (numbers, "strings", [lists], {"maps": 1}); the .mpol set syntax
// {"a", "b"} as a list; anything else as a plain string.
bool parse_param(const std::string& text, json& params, std::string& error) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    error = "param '" + text + "' is not NAME=VALUE";
    return false;
  }
  const std::string name = text.substr(0, eq);
  const std::string value = text.substr(eq + 1);
  json parsed = json::parse(value, nullptr, false);
  if (parsed.is_discarded() && value.size() >= 2 && value.front() == '{' && value.back() == '}')
    parsed = json::parse("[" + value.substr(1, value.size() - 2) + "]", nullptr, false);
  params[name] = parsed.is_discarded() ? json(value) : parsed;
  return true;
}

int answer_code(const json& answer) {
  if (answer.value("ok", false)) return kExitOk;
  const std::string code = answer.value("code", "");
  return code == "INTERNAL" || code == "UNKNOWN" || code == "DATA_LOSS" ? kExitInternalError
                                                                        : kExitUserError;
}

// The human form of an answer.
void print_text(const std::string& verb, const json& a) {
  if (verb == "load") {
    std::cout << (a.value("dry_run", false) ? "checked (dry run) " : "loaded ")
              << a["path"].get<std::string>() << "\nhash " << a["hash"].get<std::string>() << "\n";
    for (const auto& p : a["policies"])
      std::cout << "policy " << p["name"].get<std::string>() << " at " << p["at"].get<std::string>()
                << (p["reads_message"].get<bool>() ? ", reads message fields" : "") << "\n";
    if (!a["warnings"].get<std::string>().empty()) std::cerr << a["warnings"].get<std::string>();
  } else if (verb == "attach" || verb == "upgrade" || verb == "detach") {
    std::cout << verb << (a.value("dry_run", false) ? " (dry run, nothing spliced)" : "") << " "
              << a["name"].get<std::string>() << ": hash " << a["hash"].get<std::string>();
    if (a.contains("generation")) std::cout << ", generation " << a["generation"];
    std::cout << "\n";
    if (a.contains("schema"))
      for (const auto& s : a["schema"])
        std::cout << "  " << s["method"].get<std::string>() << ": registered layout "
                  << (s["layout_matches"].get<bool>() ? "matches" : "DIFFERS") << "\n";
    if (a.contains("warning")) std::cerr << "warning: " << a["warning"].get<std::string>() << "\n";
    if (a.contains("warnings"))
      for (const auto& w : a["warnings"]) std::cerr << "warning: " << w.get<std::string>() << "\n";
  } else if (verb == "list") {
    std::cout << "generation " << a["generation"] << "\nattached:\n";
    if (a["attached"].empty()) std::cout << "  (none)\n";
    for (const auto& p : a["attached"]) {
      std::cout << "  " << p["name"].get<std::string>() << "  policy "
                << p["policy"].get<std::string>() << "  " << p["side"].get<std::string>() << " "
                << p["anchor"].get<std::string>();
      if (!p["relative_to"].get<std::string>().empty())
        std::cout << " " << p["relative_to"].get<std::string>();
      if (!p["app"].get<std::string>().empty())
        std::cout << "  app " << p["app"].get<std::string>();
      std::cout << "  v" << p["version"] << "  hash " << p["hash"].get<std::string>().substr(0, 12)
                << "\n";
    }
    std::cout << "loaded:\n";
    for (const auto& f : a["loaded"]) {
      std::cout << "  " << f["hash"].get<std::string>().substr(0, 12) << "  "
                << f["path"].get<std::string>() << " (";
      for (size_t i = 0; i < f["policies"].size(); ++i)
        std::cout << (i ? ", " : "") << f["policies"][i].get<std::string>();
      std::cout << ")\n";
    }
  } else {  // show
    std::cout << a.dump(2) << "\n";
  }
}

}  // namespace

int run_daemon_command(const DaemonRequest& request) {
  std::string error;
  json args = json::object();
  json params = json::object();
  for (const auto& p : request.params)
    if (!parse_param(p, params, error)) {
      std::cerr << "mrpc-polc: " << error << "\n";
      return kExitUserError;
    }
  const std::string path = socket_path(request);

  // load FILE (also what attach FILE.mpol and upgrade NAME FILE do first): the hash.
  auto load = [&](const std::string& file, bool dry_run, json& answer) -> int {
    std::string source;
    if (!read_text(file, source, error)) {
      std::cerr << "mrpc-polc: " << error << "\n";
      return kExitUserError;
    }
    std::error_code ignored;
    const std::string absolute = std::filesystem::absolute(file, ignored).string();
    json proto_paths = json::array();
    for (const auto& p : request.proto_paths)
      proto_paths.push_back(std::filesystem::absolute(p, ignored).string());
    json load_args{
        {"source", source}, {"path", absolute}, {"proto_paths", proto_paths}, {"dry_run", dry_run}};
    auto reply = exchange(path, "load " + load_args.dump(), error);
    if (!reply) {
      std::cerr << "mrpc-polc: " << error << "\n";
      return kExitUserError;
    }
    answer = json::parse(*reply, nullptr, false);
    if (answer.is_discarded()) {
      std::cerr << "mrpc-polc: internal error: mrpcd answered something that is not JSON\n";
      return kExitInternalError;
    }
    return answer_code(answer);
  };
  auto fail_with = [&](const json& answer, int code) {
    if (request.json) {
      std::cout << answer.dump() << "\n";
    } else {
      std::cerr << "mrpc-polc: " << answer.value("code", "") << ": " << answer.value("error", "")
                << "\n";
    }
    return code;
  };

  std::string verb = request.verb;
  if (verb == "load") {
    json answer;
    const int code = load(request.target, request.dry_run, answer);
    if (answer.is_null()) return code;
    if (code != kExitOk) return fail_with(answer, code);
    if (request.json) {
      std::cout << answer.dump() << "\n";
    } else {
      print_text(verb, answer);
    }
    return kExitOk;
  }

  std::string hash = request.hash;
  std::string policy = request.target;
  if ((verb == "attach" && request.target.ends_with(".mpol")) ||
      (verb == "upgrade" && !request.file.empty())) {
    json loaded;
    const int code = load(verb == "attach" ? request.target : request.file, false, loaded);
    if (loaded.is_null()) return code;
    if (code != kExitOk) return fail_with(loaded, code);
    hash = loaded["hash"].get<std::string>();
    if (verb == "attach") {
      if (loaded["policies"].size() != 1) {
        std::cerr << "mrpc-polc: " << request.target
                  << " defines several policies: attach one by name (it is loaded now)\n";
        return kExitUserError;
      }
      policy = loaded["policies"][0]["name"].get<std::string>();
    }
  }
  if (verb == "attach") {
    args = {{"policy", policy}, {"params", params}, {"dry_run", request.dry_run}};
    if (!hash.empty()) args["hash"] = hash;
    if (!request.as.empty()) args["as"] = request.as;
    if (!request.app.empty()) args["app"] = request.app;
    if (request.first) args["anchor"] = "first";
    if (!request.before.empty()) args["anchor"] = "before", args["relative_to"] = request.before;
    if (!request.after.empty()) args["anchor"] = "after", args["relative_to"] = request.after;
  } else if (verb == "upgrade") {
    args = {{"name", request.target}};
    if (!hash.empty()) args["hash"] = hash;
    if (!request.params.empty()) args["params"] = params;
  } else if (verb == "detach" || verb == "show") {
    args = {{"name", request.target}};
  }
  auto reply = exchange(path, verb + " " + args.dump(), error);
  if (!reply) {
    std::cerr << "mrpc-polc: " << error << "\n";
    return kExitUserError;
  }
  if (verb == "metrics") {
    std::cout << *reply;
    return kExitOk;
  }
  json answer = json::parse(*reply, nullptr, false);
  if (answer.is_discarded()) {
    std::cerr << "mrpc-polc: internal error: mrpcd answered something that is not JSON: " << *reply
              << "\n";
    return kExitInternalError;
  }
  const int code = answer_code(answer);
  if (code != kExitOk) return fail_with(answer, code);
  if (request.json) {
    std::cout << answer.dump() << "\n";
  } else {
    print_text(verb, answer);
  }
  return kExitOk;
}

}  // namespace mrpc::polc
