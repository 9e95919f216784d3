#include "policy_control.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <nlohmann/json.hpp>
#include <random>

#include "../compiler/sha256.h"
#include "core.h"
#include "mrpc/base/check.h"
#include "mrpc/base/limits.h"
#include "mrpc/compiler/checker.h"
#include "mrpc/compiler/verifier.h"
#include "mrpc/dsl/diagnostics.h"
#include "mrpc/dsl/source.h"
#include "runner_factory.h"

namespace mrpc {

namespace ir = compiler::ir;
using nlohmann::json;

namespace {

std::string ok_reply(json body) {
  body["ok"] = true;
  return body.dump();
}
std::string error_reply(const Status& status, json extra = json::object()) {
  extra["ok"] = false;
  extra["code"] = std::string(status_code_name(status.code()));
  extra["error"] = status.message();
  return extra.dump();
}

// The JSON object after the verb ("" and "{}" alike: no arguments).
Expected<json> parse_args(const std::string& text) {
  if (text.find_first_not_of(" \t") == std::string::npos) return json::object();
  json parsed = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object())
    return Status(StatusCode::kInvalidArgument,
                  "the command's arguments are not a JSON object (verb {\"key\": value, ...})");
  return parsed;
}

std::string string_arg(const json& args, const char* key, std::string fallback = "") {
  auto found = args.find(key);
  return found != args.end() && found->is_string() ? found->get<std::string>() : fallback;
}

bool bool_arg(const json& args, const char* key) {
  auto found = args.find(key);
  return found != args.end() && found->is_boolean() && found->get<bool>();
}

// "10ms", "2s", "1500us", "5m", "1h", "250ns", or a number of nanoseconds.
Expected<int64_t> duration_from_json(const json& value) {
  if (value.is_number_integer()) return value.get<int64_t>();
  if (!value.is_string()) return Status(StatusCode::kInvalidArgument, "not a duration");
  const std::string text = value.get<std::string>();
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  if (digits == 0 || digits > 18)
    return Status(StatusCode::kInvalidArgument, fmt::format("'{}' is not a duration", text));
  const int64_t number = std::stoll(text.substr(0, digits));
  const std::string unit = text.substr(digits);
  int64_t scale = 0;
  if (unit == "ns") scale = 1;
  if (unit == "us") scale = 1'000;
  if (unit == "ms") scale = 1'000'000;
  if (unit == "s") scale = 1'000'000'000;
  if (unit == "m") scale = 60'000'000'000;
  if (unit == "h") scale = 3'600'000'000'000;
  if (scale == 0 || number > INT64_MAX / scale)
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("'{}' is not a duration (units: ns us ms s m h)", text));
  return number * scale;
}

// A param value from its JSON form, by the param's type.
Expected<ir::Value> value_from_json(const ir::Type& type, const json& value,
                                    const std::string& what) {
  auto wrong = [&](const char* expected) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("{}: expected {} for {}, got {}", what, expected, ir::type_text(type),
                              value.dump()));
  };
  ir::Value out;
  out.kind = type.kind;
  switch (type.kind) {
    case ir::Kind::kInt:
      if (!value.is_number_integer()) return wrong("an integer");
      out.i = value.get<int64_t>();
      return out;
    case ir::Kind::kFloat:
      if (!value.is_number()) return wrong("a number");
      out.f = value.get<double>();
      return out;
    case ir::Kind::kBool:
      if (!value.is_boolean()) return wrong("true or false");
      out.i = value.get<bool>() ? 1 : 0;
      return out;
    case ir::Kind::kString:
    case ir::Kind::kBytes:
      if (!value.is_string()) return wrong("a string");
      out.s = value.get<std::string>();
      return out;
    case ir::Kind::kDuration:
    case ir::Kind::kTime: {
      auto ns = duration_from_json(value);
      if (!ns.ok()) return wrong("a duration (\"10ms\") or nanoseconds");
      out.i = *ns;
      return out;
    }
    case ir::Kind::kStatus: {
      StatusCode code;
      if (!value.is_string() || !status_code_from_name(value.get<std::string>(), code))
        return wrong("a status name (\"PERMISSION_DENIED\")");
      out.i = static_cast<int64_t>(code);
      return out;
    }
    case ir::Kind::kList:
    case ir::Kind::kSet: {
      if (!value.is_array()) return wrong("a JSON array");
      for (const auto& item : value) {
        auto element = value_from_json(type.args.at(0), item, what);
        if (!element.ok()) return element.status();
        out.items.push_back(std::move(*element));
      }
      if (type.kind == ir::Kind::kSet) {
        std::sort(out.items.begin(), out.items.end());
        out.items.erase(std::unique(out.items.begin(), out.items.end()), out.items.end());
      }
      return out;
    }
    case ir::Kind::kMap: {
      if (!value.is_object()) return wrong("a JSON object");
      for (const auto& [key, item] : value.items()) {
        auto k = value_from_json(type.args.at(0), json(key), what);
        auto v = value_from_json(type.args.at(1), item, what);
        if (!k.ok()) return k.status();
        if (!v.ok()) return v.status();
        out.items.push_back(std::move(*k));
        out.items.push_back(std::move(*v));
      }
      return out;
    }
    default:
      return wrong("a value of a type params cannot have");
  }
}

const char* anchor_text(Placement::Anchor anchor) {
  switch (anchor) {
    case Placement::Anchor::kFirst:
      return "first";
    case Placement::Anchor::kLast:
      return "last";
    case Placement::Anchor::kBefore:
      return "before";
    case Placement::Anchor::kAfter:
      return "after";
  }
  return "?";
}

json describe(const ir::Policy& policy) {
  json params = json::array();
  for (const auto& p : policy.params)
    params.push_back({{"name", p.name},
                      {"type", ir::type_text(p.type)},
                      {"default", ir::value_text(p.default_value)}});
  json states = json::array();
  for (const auto& s : policy.states)
    states.push_back({{"name", s.name}, {"type", ir::type_text(s.type)}});
  json methods = json::array();
  for (const auto& m : policy.methods) methods.push_back(m.full_name);
  return {{"name", policy.name},
          {"at", policy.placement == ir::Placement::kCaller ? "caller" : "callee"},
          {"applies_to", policy.patterns},
          {"methods", methods},
          {"reads_message", policy.reads_message},
          {"params", params},
          {"states", states}};
}

std::string escape_label(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// A histogram bound as Prometheus wants it: a number (durations in seconds).
std::string bucket_bound(const ir::Value& bound) {
  switch (bound.kind) {
    case ir::Kind::kFloat:
      return fmt::format("{}", bound.f);
    case ir::Kind::kDuration:
      return fmt::format("{}", static_cast<double>(bound.i) / 1e9);
    default:
      return fmt::format("{}", bound.i);
  }
}

uint64_t fresh_seed() {
  std::random_device device;
  return (uint64_t{device()} << 32) | device();
}

}  // namespace

// The loaded file with that hash (a prefix will do), or the newest one defining the policy.
Expected<std::shared_ptr<const CompiledPolicyFile>> PolicyControl::find_loaded(
    const std::string& hash, const std::string& policy_name) const {
  for (auto it = loaded_.rbegin(); it != loaded_.rend(); ++it)
    if ((hash.empty() || (*it)->hash.starts_with(hash)) && (*it)->find(policy_name) != nullptr)
      return *it;
  return Status(StatusCode::kNotFound,
                fmt::format("no loaded file{} defines policy '{}' (load it first)",
                            hash.empty() ? "" : " with hash " + hash, policy_name));
}

PolicyControl::PolicyControl(Daemon& daemon, DaemonCore& core) : daemon_(daemon), core_(core) {
  worker_ = std::thread([this] { run(); });
}

PolicyControl::~PolicyControl() {
  stop();
}

bool PolicyControl::handles(const std::string& command) {
  const std::string verb = command.substr(0, command.find(' '));
  return verb == "load" || verb == "attach" || verb == "upgrade" || verb == "detach" ||
         verb == "list" || verb == "show" || verb == "metrics";
}

void PolicyControl::submit(std::string command, Reply reply) {
  {
    std::lock_guard lock(queue_mutex_);
    if (!stopping_) {
      queue_.emplace_back(std::move(command), std::move(reply));
      queue_ready_.notify_one();
      return;
    }
  }
  reply(error_reply(Status(StatusCode::kUnavailable, "mrpcd is stopping")));
}

void PolicyControl::stop() {
  std::deque<std::pair<std::string, Reply>> left;
  {
    std::lock_guard lock(queue_mutex_);
    if (stopping_ && !worker_.joinable()) return;
    stopping_ = true;
    left.swap(queue_);
    queue_ready_.notify_all();
  }
  for (auto& [command, reply] : left)
    reply(error_reply(Status(StatusCode::kUnavailable, "mrpcd is stopping")));
  if (worker_.joinable()) worker_.join();
}

void PolicyControl::run() {
  for (;;) {
    std::pair<std::string, Reply> job;
    {
      std::unique_lock lock(queue_mutex_);
      queue_ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    std::string answer;
    try {
      answer = execute(job.first);
    } catch (const std::exception& e) {  // a bug of ours (json type errors): said, not fatal
      answer =
          error_reply(Status(StatusCode::kInternal, fmt::format("internal error: {}", e.what())));
    }
    job.second(answer);
  }
}

std::string PolicyControl::execute(const std::string& command) {
  const size_t space = command.find(' ');
  const std::string verb = command.substr(0, space);
  const std::string args = space == std::string::npos ? "" : command.substr(space + 1);
  if (verb == "load") return load(args);
  if (verb == "attach") return attach(args);
  if (verb == "upgrade") return upgrade(args);
  if (verb == "detach") return detach(args);
  if (verb == "list") return list();
  if (verb == "show") return show(args);
  if (verb == "metrics") return metrics();
  return error_reply(Status(StatusCode::kInvalidArgument, fmt::format("unknown verb '{}'", verb)));
}

std::string PolicyControl::load(const std::string& text) {
  auto args = parse_args(text);
  if (!args.ok()) return error_reply(args.status());
  const std::string source = string_arg(*args, "source");
  const std::string path = string_arg(*args, "path", "policy.mpol");
  const bool dry_run = bool_arg(*args, "dry_run");
  if (source.empty())
    return error_reply(
        Status(StatusCode::kInvalidArgument, "load needs \"source\": the .mpol text"));
  if (source.size() > limits::kMaxPolicyFileBytes)
    return error_reply(Status(StatusCode::kInvalidArgument,
                              fmt::format("the source is {} bytes, over kMaxPolicyFileBytes ({})",
                                          source.size(), limits::kMaxPolicyFileBytes)));
  compiler::CheckOptions options;
  if (auto paths = args->find("proto_paths"); paths != args->end() && paths->is_array())
    for (const auto& p : *paths)
      if (p.is_string()) options.proto_paths.push_back(p.get<std::string>());

  const auto started = std::chrono::steady_clock::now();
  struct Front {
    dsl::SourceManager sources;
    std::unique_ptr<dsl::DiagnosticEngine> diagnostics;
    std::unique_ptr<compiler::Checker> checker;
  };
  auto front = std::make_shared<Front>();
  front->diagnostics = std::make_unique<dsl::DiagnosticEngine>(front->sources);
  front->checker =
      std::make_unique<compiler::Checker>(options, front->sources, *front->diagnostics);
  auto fail = [&](const char* stage) {
    return error_reply(
        Status(StatusCode::kInvalidArgument,
               fmt::format("{} failed:\n{}", stage, front->diagnostics->render_text())),
        {{"diagnostics", json::parse(front->diagnostics->render_json(), nullptr, false)}});
  };
  if (!front->checker->check_text(path, source)) return fail("check");
  auto unit = front->checker->build_ir(path);
  if (unit == nullptr)
    return error_reply(Status(StatusCode::kInternal, "no IR for a file that checked clean"));
  compiler::VerifyReport report;
  if (!compiler::verify(*unit, *front->diagnostics, &report)) return fail("verify");
  if (unit->policies.empty())
    return error_reply(Status(StatusCode::kInvalidArgument, "the file defines no policy"));
  // Compile: build each policy's runner once (the JIT's compile; the evaluator's set-up).
  SeededRandom random(0);
  for (const auto& policy : unit->policies) (void)make_policy_runner(policy, core_.clock, random);
  const double compile_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();

  auto file = std::make_shared<CompiledPolicyFile>();
  file->hash = compiler::sha256_hex(source);
  file->path = path;
  file->unit = std::move(unit);
  json policies = json::array();
  for (const auto& policy : file->unit->policies) policies.push_back(describe(policy));
  json body{{"hash", file->hash},       {"path", path},
            {"policies", policies},     {"runner", policy_runner_kind()},
            {"compile_ms", compile_ms}, {"warnings", front->diagnostics->render_text()},
            {"dry_run", dry_run}};
  if (dry_run) return ok_reply(std::move(body));
  file->keep_alive = front;
  // Same source again: the newest load wins the "latest of this policy name" lookup.
  std::erase_if(loaded_, [&](const auto& f) { return f->hash == file->hash; });
  loaded_.push_back(file);
  if (loaded_.size() > kMaxLoadedPolicyFiles) {
    for (auto it = loaded_.begin(); it != loaded_.end(); ++it) {
      const bool in_use = std::any_of(attached_.begin(), attached_.end(),
                                      [&](const auto& a) { return a.second.file == *it; });
      if (!in_use) {
        spdlog::info("policy file {} ({}) forgotten: over kMaxLoadedPolicyFiles ({})",
                     (*it)->hash.substr(0, 12), (*it)->path, kMaxLoadedPolicyFiles);
        loaded_.erase(it);
        break;
      }
    }
  }
  spdlog::info("policy file {} loaded: hash {}, {} policies, {:.2f} ms", path, file->hash,
               file->unit->policies.size(), compile_ms);
  return ok_reply(std::move(body));
}

std::string PolicyControl::attach(const std::string& text) {
  auto args = parse_args(text);
  if (!args.ok()) return error_reply(args.status());
  const std::string policy_name = string_arg(*args, "policy");
  const std::string hash = string_arg(*args, "hash");
  const std::string name = string_arg(*args, "as", policy_name);
  const bool dry_run = bool_arg(*args, "dry_run");
  if (policy_name.empty())
    return error_reply(Status(StatusCode::kInvalidArgument, "attach needs \"policy\": its name"));
  auto found = find_loaded(hash, policy_name);
  if (!found.ok()) return error_reply(found.status());
  std::shared_ptr<const CompiledPolicyFile> file = std::move(*found);
  const ir::Policy& policy = *file->find(policy_name);

  Placement placement;
  placement.side =
      policy.placement == ir::Placement::kCaller ? GraphSide::kEgress : GraphSide::kIngress;
  const std::string anchor = string_arg(*args, "anchor", "last");
  if (anchor == "first") {
    placement.anchor = Placement::Anchor::kFirst;
  } else if (anchor == "last") {
    placement.anchor = Placement::Anchor::kLast;
  } else if (anchor == "before" || anchor == "after") {
    placement.anchor = anchor == "before" ? Placement::Anchor::kBefore : Placement::Anchor::kAfter;
    placement.relative_to = string_arg(*args, "relative_to");
    if (placement.relative_to.empty())
      return error_reply(Status(StatusCode::kInvalidArgument,
                                fmt::format("anchor '{}' needs \"relative_to\"", anchor)));
  } else {
    return error_reply(
        Status(StatusCode::kInvalidArgument,
               fmt::format("anchor '{}' is not first, last, before or after", anchor)));
  }
  placement.app_name = string_arg(*args, "app");

  const uint64_t seed = fresh_seed();
  auto op = std::make_shared<PolicyOperator>(name, file, policy, core_, seed);
  json params = args->value("params", json::object());
  if (!params.is_object())
    return error_reply(Status(StatusCode::kInvalidArgument, "\"params\" must be a JSON object"));
  for (const auto& [param, value] : params.items()) {
    const ir::Param* declared = nullptr;
    for (const auto& p : policy.params)
      if (p.name == param) declared = &p;
    if (declared == nullptr)
      return error_reply(Status(StatusCode::kInvalidArgument,
                                fmt::format("policy '{}' has no param '{}'", policy_name, param)));
    auto converted = value_from_json(declared->type, value, "param '" + param + "'");
    if (!converted.ok()) return error_reply(converted.status());
    if (Status set = op->set_param(param, std::move(*converted)); !set.ok())
      return error_reply(set);
  }

  // The schema check against what apps registered (apps that register later are checked at
  // their first call).
  json schema = json::array();
  if (policy.schema_known) {
    // The shared directory (its lock), read from this control thread.
    core_.shared.directory.for_each([&](const RegisteredService& service) {
      for (const auto& method : service.info->methods) {
        const std::string full = service.full_name + "." + method.name;
        for (const auto& built : policy.methods) {
          if (built.full_name != full) continue;
          const bool matches = built.input && built.output && method.input && method.output &&
                               built.input->fingerprint() == method.input->fingerprint() &&
                               built.output->fingerprint() == method.output->fingerprint();
          schema.push_back({{"method", full}, {"layout_matches", matches}});
        }
      }
    });
  }
  bool mismatch = false;
  for (const auto& entry : schema) mismatch |= !entry["layout_matches"].get<bool>();
  json body{{"name", name},
            {"policy", policy_name},
            {"hash", file->hash},
            {"side", placement.side == GraphSide::kEgress ? "egress" : "ingress"},
            {"anchor", anchor_text(placement.anchor)},
            {"schema", schema},
            {"dry_run", dry_run}};
  if (mismatch)
    body["warning"] =
        "a registered method has another layout than the policy was built against: its calls "
        "will be rejected FAILED_PRECONDITION";
  if (dry_run) return ok_reply(std::move(body));

  auto attached = daemon_.attach_policy(
      PolicyEntry{name, placement, [op](const CallerIdentity&) { return op; }});
  if (!attached.ok()) return error_reply(attached.status());
  attached_[name] = Attachment{name, policy_name, file, placement, op, params.dump(), *attached, 1};
  spdlog::info("policy '{}' ({} of {}, hash {}) attached {} {}: generation {}", name, policy_name,
               file->path, file->hash,
               placement.side == GraphSide::kEgress ? "at caller" : "at callee",
               anchor_text(placement.anchor), *attached);
  body["generation"] = *attached;
  return ok_reply(std::move(body));
}

std::string PolicyControl::upgrade(const std::string& text) {
  auto args = parse_args(text);
  if (!args.ok()) return error_reply(args.status());
  const std::string name = string_arg(*args, "name");
  auto current = attached_.find(name);
  if (current == attached_.end())
    return error_reply(
        Status(StatusCode::kNotFound, fmt::format("no policy is attached as '{}'", name)));
  Attachment& old = current->second;
  const std::string hash = string_arg(*args, "hash");
  const std::string policy_name = string_arg(*args, "policy", old.policy);
  auto found = find_loaded(hash, policy_name);
  if (!found.ok()) return error_reply(found.status());
  std::shared_ptr<const CompiledPolicyFile> file = std::move(*found);
  const ir::Policy& policy = *file->find(policy_name);
  const GraphSide side =
      policy.placement == ir::Placement::kCaller ? GraphSide::kEgress : GraphSide::kIngress;
  if (side != old.placement.side)
    return error_reply(Status(
        StatusCode::kFailedPrecondition,
        fmt::format("'{}' is attached {}; the new version runs {}: detach "
                    "and attach instead",
                    name, old.placement.side == GraphSide::kEgress ? "at caller" : "at callee",
                    side == GraphSide::kEgress ? "at caller" : "at callee")));
  auto op = std::make_shared<PolicyOperator>(name, file, policy, core_, fresh_seed());
  json params = args->contains("params") ? (*args)["params"] : json::parse(old.params);
  if (!params.is_object())
    return error_reply(Status(StatusCode::kInvalidArgument, "\"params\" must be a JSON object"));
  json warnings = json::array();
  for (const auto& [param, value] : params.items()) {
    const ir::Param* declared = nullptr;
    for (const auto& p : policy.params)
      if (p.name == param) declared = &p;
    if (declared == nullptr) {
      warnings.push_back(
          fmt::format("param '{}' dropped: the new version has no such param", param));
      continue;
    }
    auto converted = value_from_json(declared->type, value, "param '" + param + "'");
    if (!converted.ok()) return error_reply(converted.status());
    if (Status set = op->set_param(param, std::move(*converted)); !set.ok())
      return error_reply(set);
  }
  std::shared_ptr<PolicyOperator> previous = old.op;
  // Each graph's factory call carries the state, once, between rounds (nothing runs either
  // version then); with no graph at all it is carried below.
  auto upgraded = daemon_.upgrade_policy(name, [op, previous](const CallerIdentity&) {
    op->carry_from(*previous);
    return op;
  });
  if (!upgraded.ok()) return error_reply(upgraded.status());
  op->carry_from(*previous);  // a no-op if a graph already did it
  for (auto& warning : op->take_warnings()) {
    spdlog::warn("policy '{}' upgrade: {}", name, warning);
    warnings.push_back(warning);
  }
  const std::string old_hash = old.file->hash;
  old.file = file;
  old.policy = policy_name;
  old.op = op;
  old.params = params.dump();
  old.generation = *upgraded;
  ++old.version;
  spdlog::info("policy '{}' upgraded from hash {} to {} (version {}): generation {}", name,
               old_hash, file->hash, old.version, *upgraded);
  return ok_reply({{"name", name},
                   {"hash", file->hash},
                   {"previous_hash", old_hash},
                   {"version", old.version},
                   {"generation", *upgraded},
                   {"warnings", warnings}});
}

std::string PolicyControl::detach(const std::string& text) {
  auto args = parse_args(text);
  if (!args.ok()) return error_reply(args.status());
  const std::string name = string_arg(*args, "name");
  auto current = attached_.find(name);
  if (current == attached_.end())
    return error_reply(
        Status(StatusCode::kNotFound, fmt::format("no policy is attached as '{}'", name)));
  auto detached = daemon_.detach_policy(name);
  if (!detached.ok()) return error_reply(detached.status());
  spdlog::info("policy '{}' (hash {}) detached: generation {}", name, current->second.file->hash,
               *detached);
  const std::string hash = current->second.file->hash;
  attached_.erase(current);
  return ok_reply({{"name", name}, {"hash", hash}, {"generation", *detached}});
}

std::string PolicyControl::list() const {
  json loaded = json::array();
  for (const auto& file : loaded_) {
    json names = json::array();
    for (const auto& policy : file->unit->policies) names.push_back(policy.name);
    loaded.push_back({{"hash", file->hash}, {"path", file->path}, {"policies", names}});
  }
  json attached = json::array();
  for (const auto& [name, a] : attached_)
    attached.push_back({{"name", name},
                        {"policy", a.policy},
                        {"hash", a.file->hash},
                        {"side", a.placement.side == GraphSide::kEgress ? "egress" : "ingress"},
                        {"anchor", anchor_text(a.placement.anchor)},
                        {"relative_to", a.placement.relative_to},
                        {"app", a.placement.app_name},
                        {"version", a.version},
                        {"generation", a.generation},
                        {"runner", policy_runner_kind()}});
  return ok_reply(
      {{"loaded", loaded}, {"attached", attached}, {"generation", daemon_.policy_generation()}});
}

std::string PolicyControl::show(const std::string& text) const {
  auto args = parse_args(text);
  if (!args.ok()) return error_reply(args.status());
  const std::string name = string_arg(*args, "name");
  auto current = attached_.find(name);
  if (current == attached_.end())
    return error_reply(
        Status(StatusCode::kNotFound, fmt::format("no policy is attached as '{}'", name)));
  const Attachment& a = current->second;
  json states = json::object();
  for (const auto& [state, value] : a.op->states()) states[state] = ir::value_text(value);
  json series = json::array();
  for (const auto& s : a.op->series())
    series.push_back({{"caller", s.caller},
                      {"method", s.method},
                      {"event", s.event},
                      {"outcome", s.outcome},
                      {"count", s.count}});
  return ok_reply({{"name", name},
                   {"policy", describe(a.op->policy())},
                   {"hash", a.file->hash},
                   {"path", a.file->path},
                   {"side", a.placement.side == GraphSide::kEgress ? "egress" : "ingress"},
                   {"anchor", anchor_text(a.placement.anchor)},
                   {"relative_to", a.placement.relative_to},
                   {"app", a.placement.app_name},
                   {"params", json::parse(a.params)},
                   {"state", states},
                   {"calls", series},
                   {"version", a.version},
                   {"generation", a.generation},
                   {"runner", policy_runner_kind()},
                   {"seed", a.op->seed()}});
}

std::string PolicyControl::metrics() const {
  std::string out;
  out += "# HELP mrpc_policy_generation The policy set's generation (bumped by every change).\n";
  out += "# TYPE mrpc_policy_generation gauge\n";
  out += fmt::format("mrpc_policy_generation {}\n", daemon_.policy_generation());
  out +=
      "# HELP mrpc_policy_calls_total Handler runs of an attached policy, by caller app, method, "
      "event and outcome.\n";
  out += "# TYPE mrpc_policy_calls_total counter\n";
  for (const auto& [name, a] : attached_)
    for (const auto& s : a.op->series())
      out += fmt::format(
          "mrpc_policy_calls_total{{policy=\"{}\",caller=\"{}\",method=\"{}\",event=\"{}\","
          "outcome=\"{}\"}} {}\n",
          escape_label(name), escape_label(s.caller), escape_label(s.method), s.event, s.outcome,
          s.count);
  out += "# HELP mrpc_policy_counter A policy's counter state.\n";
  out += "# TYPE mrpc_policy_counter counter\n";
  std::string histograms;
  for (const auto& [name, a] : attached_) {
    const auto states = a.op->states();
    for (size_t i = 0; i < states.size(); ++i) {
      const ir::State& declared = a.op->policy().states[i];
      const ir::Value& value = states[i].second;
      if (!declared.labels.empty()) {
        // One series per label-value combination (state() gives them as a map: the values, then
        // the count or the bucket counts).
        for (size_t e = 0; e + 1 < value.items.size(); e += 2) {
          std::string labels =
              fmt::format("policy=\"{}\",state=\"{}\"", escape_label(name), declared.name);
          for (size_t l = 0; l < declared.labels.size() && l < value.items[e].items.size(); ++l)
            labels += fmt::format(",{}=\"{}\"", declared.labels[l],
                                  escape_label(value.items[e].items[l].s));
          const ir::Value& counts = value.items[e + 1];
          if (declared.type.kind == ir::Kind::kCounter) {
            out += fmt::format("mrpc_policy_counter{{{}}} {}\n", labels, counts.i);
            continue;
          }
          int64_t cumulative = 0;
          for (size_t b = 0; b < counts.items.size(); ++b) {
            cumulative += counts.items[b].i;
            const std::string le =
                b < declared.buckets.size() ? bucket_bound(declared.buckets[b]) : "+Inf";
            histograms += fmt::format("mrpc_policy_histogram_bucket{{{},le=\"{}\"}} {}\n", labels,
                                      escape_label(le), cumulative);
          }
          histograms += fmt::format("mrpc_policy_histogram_count{{{}}} {}\n", labels, cumulative);
        }
      } else if (declared.type.kind == ir::Kind::kCounter) {
        out += fmt::format("mrpc_policy_counter{{policy=\"{}\",state=\"{}\"}} {}\n",
                           escape_label(name), declared.name, value.i);
      } else if (declared.type.kind == ir::Kind::kHistogram) {
        int64_t cumulative = 0;
        for (size_t b = 0; b < value.items.size(); ++b) {
          cumulative += value.items[b].i;
          const std::string le =
              b < declared.buckets.size() ? bucket_bound(declared.buckets[b]) : "+Inf";
          histograms += fmt::format(
              "mrpc_policy_histogram_bucket{{policy=\"{}\",state=\"{}\",le=\"{}\"}} {}\n",
              escape_label(name), declared.name, escape_label(le), cumulative);
        }
        histograms += fmt::format("mrpc_policy_histogram_count{{policy=\"{}\",state=\"{}\"}} {}\n",
                                  escape_label(name), declared.name, cumulative);
      }
    }
  }
  out +=
      "# HELP mrpc_policy_histogram A policy's histogram state (no _sum: the policy keeps "
      "bucket counts only).\n";
  out += "# TYPE mrpc_policy_histogram histogram\n";
  out += histograms;
  return out;
}

}  // namespace mrpc
