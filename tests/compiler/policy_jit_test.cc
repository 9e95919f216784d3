// The policy JIT against the evaluator, its reference: every stdlib policy and every valid
// example policy of the repository (tests/dsl/cases/valid, tests/compiler/ir) gives the same
// verdicts, message writes, view changes, state values and metric (counter and histogram)
// values as the evaluator on 10,000 seeded random RPCs; plus module sharing, unloading and the
// object cache. The per-construct golden and fault tests through the JIT are evaluator_test.cc
// built as policy_jit_golden_test.
#include <doctest/doctest.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <new>
#include <sstream>
#include <thread>

#include "compiler_test_support.h"
#include "mpol_test_support.h"
#include "mrpc/base/limits.h"
#include "mrpc/compiler/policy_jit.h"
#include "rpc_test_support.h"

// Counts heap allocations (this test binary only): the per-call path must make none.
#include "../counting_new.h"

namespace mrpc::compiler::testing {
namespace {

using ir::Kind;
using ir::Value;

std::unique_ptr<jit::Jit> make_jit(const std::string& cache_dir = "") {
  jit::JitOptions options;
  options.object_cache_dir = cache_dir;
  auto created = jit::Jit::create(options);
  REQUIRE_MESSAGE(created.ok(), created.status().message());
  return std::move(*created);
}

std::unique_ptr<PolicyCompiler> make_compiler(jit::Jit& jit) {
  auto created = PolicyCompiler::create(jit);
  REQUIRE_MESSAGE(created.ok(), created.status().message());
  return std::move(*created);
}

// The first policy of a verified unit, compiled by a JIT of its own, with the clock and random
// source the compiled policy reads.
struct JitCompiled {
  explicit JitCompiled(const Built& built, MonoTime now = 0)
      : policy(built.unit->policies[0]),
        jit(make_jit()),
        compiler(make_compiler(*jit)),
        clock(now) {
    auto result = compiler->compile(policy, clock, random);
    REQUIRE_MESSAGE(result.ok(), result.status().to_string());
    compiled = std::move(*result);
  }
  const ir::Policy& policy;
  std::unique_ptr<jit::Jit> jit;
  std::unique_ptr<PolicyCompiler> compiler;
  ManualClock clock;
  SeededRandom random{1};
  std::unique_ptr<CompiledPolicy> compiled;
};

std::string text(const Value& v) {
  return fmt::format("{}:{}", static_cast<int>(v.kind), ir::value_text(v));
}

// Everything a run can change, as text, so a difference prints what differs.
std::string describe(const Verdict& v, const mrpc_rpc_view& view) {
  std::string out = fmt::format(
      "outcome {} status {} message '{}' aborted {} faults {} delay {} route {} retry {} "
      "respond {} refused {} priority {} deadline {}",
      static_cast<int>(v.outcome), static_cast<int>(v.status), v.message, v.aborted,
      v.defined_faults, v.delay_ns, v.route.value_or("-"), v.retry_after_ns.value_or(-1),
      v.response_bytes.size(), v.refused_inserts, view.priority, view.deadline_ns);
  for (const auto& [to, f] : v.mirrors) out += fmt::format(" mirror {} {}", to, f);
  for (const auto& log : v.logs) {
    out += " log " + log.event;
    for (const auto& [k, value] : log.fields) out += " " + k + "=" + text(value);
  }
  for (const auto& w : v.writes)
    out += fmt::format(" write {}={} applied {}", w.path, text(w.value), w.applied);
  return out;
}

std::string states(const ir::Policy& policy, const PolicyRunner& runner) {
  std::string out;
  for (const auto& s : policy.states) out += s.name + "=" + text(runner.state(s.name)) + "; ";
  return out;
}

// Params that make the stdlib's defaults do something: string sets name a caller the random
// RPCs use, zero fractions become one half.
void twist_params(const ir::Policy& policy, PolicyRunner& a, PolicyRunner& b) {
  for (const auto& p : policy.params) {
    Value v;
    if ((p.type.is(Kind::kSet) || p.type.is(Kind::kList)) && !p.type.args.empty() &&
        p.type.args[0].is(Kind::kString)) {
      v.kind = p.type.kind;
      v.items = {Value::of_string("batch"), Value::of_string("aaa")};
    } else if (p.type.is(Kind::kFloat) && p.default_value.f == 0.0) {
      v = Value::of_float(0.5);
    } else {
      continue;
    }
    REQUIRE(a.set_param(p.name, v).ok());
    REQUIRE(b.set_param(p.name, v).ok());
  }
}

// One random call, the same for the same seed (the messages written in `req` and `resp`).
void random_call(const ir::Policy& policy, uint64_t seed, int64_t now, Region& req, Region& resp,
                 Call& c) {
  SeededRandom rng(seed);
  c.app = rng.next_u64() % 2 ? "frontend" : "batch";
  c.metadata = encode_metadata({{"x-user", std::to_string(rng.next_u64() % 5)},
                                {"session", std::to_string(rng.next_u64() % 7)}});
  // Endpoint blocks: three, one, none, or one whose last length lies (cut short).
  switch (rng.next_u64() % 4) {
    case 0:
      c.endpoints = encode_strings({"e1"});
      break;
    case 1:
      c.endpoints.clear();
      break;
    case 2:
      c.endpoints = encode_strings({"e0", "e1", "e2"});
      c.endpoints.resize(c.endpoints.size() - 1);
      break;
    default:
      c.endpoints = encode_strings({"e0", "e1", "e2"});
      break;
  }
  if (rng.next_u64() % 4 == 0) c.metadata.resize(c.metadata.size() - 1);  // a lying last length
  c.endpoint = rng.next_u64() % 2 ? "e1" : "";
  if (!policy.methods.empty()) {
    const ir::Method& m = policy.methods[rng.next_u64() % policy.methods.size()];
    c.service = m.service;
    c.method = m.name;
    random_message(req, *m.input, rng, c.view.request);
    random_message(resp, *m.output, rng, c.view.response);
    if (rng.next_u64() % 8 == 0) c.view.request.fingerprint ^= 1;  // another schema
  }
  c.view.deadline_ns = now + static_cast<int64_t>(rng.next_u64() % 1'000'000'000);
  c.view.status = static_cast<uint32_t>(rng.next_u64() % 17);
  c.view.latency_ns = static_cast<int64_t>(rng.next_u64() % 100'000'000);
  c.view.attempt = static_cast<uint32_t>(rng.next_u64() % 3);
  c.view.size = rng.next_u64() % 4096;
  c.view.priority = static_cast<int32_t>(rng.next_u64() % 3);
}

// Every ```mpol block of the user reference (docs/mpol.md) saved as a file the way
// tests/stdlib-policies/check_doc_examples.sh does (`// file: NAME` names a block others import).
std::vector<std::string> reference_examples(const std::string& dir) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::istringstream doc(dsl::testing::read_file(std::string(MRPC_SOURCE_DIR) + "/docs/mpol.md"));
  std::vector<std::string> out;
  std::string name, body;
  bool inside = false;
  for (std::string line; std::getline(doc, line);) {
    if (!inside && line.rfind("```mpol", 0) == 0 &&
        line.find_first_not_of(' ', 7) == std::string::npos) {
      inside = true;
      name = fmt::format("example_{:02d}.mpol", out.size() + 1);
      body.clear();
      continue;
    }
    if (!inside) continue;
    if (line.rfind("```", 0) == 0) {
      inside = false;
      std::ofstream(dir + "/" + name) << body;
      out.push_back(dir + "/" + name);
      continue;
    }
    if (body.empty() && line.rfind("// file: ", 0) == 0) name = line.substr(9);
    body += line + "\n";
  }
  return out;
}

std::vector<std::string> differential_corpus(const std::string& examples_dir) {
  std::vector<std::string> files;
  for (const char* dir : {"stdlib-policies", "tests/dsl/cases/valid", "tests/compiler/ir"}) {
    auto more = dsl::testing::mpol_files_under(dir);
    files.insert(files.end(), more.begin(), more.end());
  }
  auto examples = reference_examples(examples_dir);
  files.insert(files.end(), examples.begin(), examples.end());
  return files;
}

struct RunStats {
  bool agreed = true;
  bool whole = false;
  uint64_t native = 0, evaluated = 0, evaluated_exprs = 0, effects = 0;
};

// Runs `calls` random RPCs (seeds drawn from `seeds`) through the evaluator and the JIT and
// compares everything after each; `twisted`: with twist_params.
RunStats differential(const ir::Policy& policy, PolicyCompiler& compiler, SeededRandom& seeds,
                      int calls, bool twisted) {
  RunStats st;
  uint64_t policy_seed = seeds.next_u64();
  ManualClock clock(1'000'000'000);
  SeededRandom eval_random(policy_seed), jit_random(policy_seed);
  PolicyInstance reference(policy, clock, eval_random);
  auto compiled = compiler.compile(policy, clock, jit_random);
  REQUIRE_MESSAGE(compiled.ok(), compiled.status().message());
  CompiledPolicy& jitted = **compiled;
  if (twisted) twist_params(policy, reference, jitted);
  st.native = jitted.native_statements();
  st.evaluated = jitted.evaluator_statements();
  st.evaluated_exprs = jitted.evaluator_expressions();
  st.whole = st.evaluated == 0 && st.evaluated_exprs == 0;
  Region req_a, resp_a, req_b, resp_b;  // reused: their capacity stays
  // The call record of per-call variables, as the daemon keeps it: fresh on a new call's request,
  // then read and written by the handlers that follow.
  std::vector<ir::Value> cells_a, cells_b;
  auto new_call = [&] {
    cells_a.clear();
    for (const auto& v : policy.call_variables) cells_a.push_back(v.initial);
    cells_b = cells_a;
  };
  new_call();
  auto cells_text = [](const std::vector<ir::Value>& cells) {
    std::string out;
    for (const auto& v : cells) out += ir::value_text(v) + "; ";
    return out;
  };
  for (int i = 0; i < calls; ++i) {
    uint64_t call_seed = seeds.next_u64();
    CAPTURE(call_seed);
    CAPTURE(i);
    for (Region* r : {&req_a, &resp_a, &req_b, &resp_b}) r->bytes().clear();
    Call a, b;
    random_call(policy, call_seed, clock.now(), req_a, resp_a, a);
    random_call(policy, call_seed, clock.now(), req_b, resp_b, b);
    auto event = static_cast<ir::Event>(call_seed % 3);
    if (event == ir::Event::kRequest && (call_seed >> 8) % 2 == 0) new_call();
    a.view.call_variables = cells_a.empty() ? nullptr : cells_a.data();
    b.view.call_variables = cells_b.empty() ? nullptr : cells_b.data();
    Verdict va = reference.run(event, a.get());
    Verdict vb = jitted.run(event, b.get());
    std::string da = describe(va, a.view) + " call variables " + cells_text(cells_a);
    std::string db = describe(vb, b.view) + " call variables " + cells_text(cells_b);
    if (da != db || req_a.bytes() != req_b.bytes() || resp_a.bytes() != resp_b.bytes()) {
      FAIL_CHECK("the evaluator and the jit differ on event "
                 << static_cast<int>(event) << "\n  evaluator: " << da << "\n  jit:       " << db);
      st.agreed = false;
      return st;
    }
    std::string sa = states(policy, reference), sb = states(policy, jitted);
    if (sa != sb) {
      FAIL_CHECK("state differs\n  evaluator: " << sa << "\n  jit:       " << sb);
      st.agreed = false;
      return st;
    }
    if (va.outcome != Verdict::Outcome::kContinue || !va.logs.empty() || va.delay_ns > 0)
      ++st.effects;
    clock.advance(std::chrono::milliseconds(call_seed % 50));
  }
  return st;
}

TEST_CASE("the jit and the evaluator agree on 10000 seeded random rpcs for every policy") {
  uint64_t seed = 20261202;
  if (const char* env = std::getenv("MRPC_TEST_SEED")) seed = std::strtoull(env, nullptr, 10);
  int calls = 10'000;
  if (const char* env = std::getenv("MRPC_TEST_CALLS")) calls = std::atoi(env);
  INFO("seed " << seed << " (rerun with MRPC_TEST_SEED=" << seed << ")");
  auto jit = make_jit();
  auto compiler = make_compiler(*jit);
  SeededRandom seeds(seed);
  std::string examples_dir = fmt::format("{}/mrpc-mpol-examples-{}",
                                         std::filesystem::temp_directory_path().string(), getpid());
  int policies = 0, stdlib = 0, examples = 0;
  std::string all_native, partly_native;  // stdlib policies
  uint64_t native = 0, evaluated = 0, evaluated_exprs = 0, effects = 0;
  for (const auto& path : differential_corpus(examples_dir)) {
    CAPTURE(path);
    Built built = build(path, dsl::testing::read_file(path));
    if (built.unit == nullptr || !built.verified) continue;  // a case for other tests
    for (const ir::Policy& policy : built.unit->policies) {
      CAPTURE(policy.name);
      for (int twisted = 0; twisted < 2; ++twisted) {
        int n = twisted ? calls / 2 : calls - calls / 2;
        RunStats st = differential(policy, *compiler, seeds, n, twisted != 0);
        effects += st.effects;
        if (twisted == 0) {
          native += st.native;
          evaluated += st.evaluated;
          evaluated_exprs += st.evaluated_exprs;
          if (path.find("stdlib-policies") != std::string::npos) {
            (st.whole ? all_native : partly_native) += policy.name + " ";
          }
        }
        if (!st.agreed) break;
      }
      ++policies;
      if (path.find("stdlib-policies") != std::string::npos) ++stdlib;
      if (path.find(examples_dir) != std::string::npos) ++examples;
    }
  }
  std::filesystem::remove_all(examples_dir);
  MESSAGE("policies " << policies << " (stdlib " << stdlib << ", reference examples " << examples
                      << "), statements compiled natively " << native
                      << ", handed to the evaluator " << evaluated << " (and " << evaluated_exprs
                      << " expressions inside compiled ones), calls with an effect " << effects);
  MESSAGE("stdlib policies compiled whole: " << all_native);
  MESSAGE("stdlib policies with statements handed to the evaluator: " << partly_native);
  CHECK(stdlib >= 23);
  CHECK(examples >= 10);
  CHECK(policies >= 40);
  CHECK(native > evaluated);
}

TEST_CASE("the jit and the evaluator agree on mutants of the stdlib and the valid cases") {
  uint64_t seed = 0x6d75;
  if (const char* env = std::getenv("MRPC_TEST_SEED")) seed = std::strtoull(env, nullptr, 10);
  int per_file = 10;
  if (const char* env = std::getenv("MRPC_MUTATIONS")) per_file = std::atoi(env);
  INFO("seed " << seed << " (rerun with MRPC_TEST_SEED=" << seed << "), " << per_file
               << " mutations per file");
  auto jit = make_jit();
  auto compiler = make_compiler(*jit);
  SeededRandom mutations(seed), seeds(seed + 1);
  int verified = 0;
  for (const char* dir : {"stdlib-policies", "tests/dsl/cases/valid"}) {
    for (const auto& path : dsl::testing::mpol_files_under(dir)) {
      std::string text = dsl::testing::read_file(path);
      for (int i = 0; i < per_file; ++i) {
        std::string mutant = mutate_policy_text(text, mutations);
        Built b = build(path, mutant);
        if (b.unit == nullptr || !b.verified) continue;
        CAPTURE(path);
        CAPTURE(mutant);
        for (const ir::Policy& policy : b.unit->policies) {
          ++verified;
          if (!differential(policy, *compiler, seeds, 200, i % 2 == 1).agreed) break;
        }
      }
    }
  }
  MESSAGE(verified << " mutant policies verified and ran 200 random rpcs through both");
  CHECK(verified > 100);
}

const char* kAclByField = R"(import proto "hotel/reservation.proto";
policy acl_by_field {
  applies to hotel.Reservation.MakeReservation at callee;
  param deny_customers: set<string> = {"mallory"};
  state denied: counter;
  on request {
    if req.customer_name in deny_customers {
      denied += 1;
      reject(PERMISSION_DENIED, "customer not allowed");
    }
  }
}
)";

TEST_CASE("an acl on a string field is compiled without handing anything to the evaluator") {
  Built built = build("acl.mpol", kAclByField);
  REQUIRE(built.verified);
  JitCompiled jitted(built);
  const ir::Policy& policy = jitted.policy;
  const auto& compiled = jitted.compiled;
  CHECK(compiled->evaluator_statements() == 0);
  CHECK(compiled->evaluator_expressions() == 0);
  CHECK(compiled->native_statements() == 3);

  const MessageLayout& in = *policy.methods[0].input;
  for (const char* who : {"alice", "mallory"}) {
    Region r;
    uint64_t body = r.body(in);
    r.set_string(body, in, "customer_name", who);
    Call c;
    c.service = "hotel.Reservation";
    c.method = "MakeReservation";
    c.view.request = r.view(body, in);
    Verdict v = compiled->run(ir::Event::kRequest, c.get());
    bool denied = std::string(who) == "mallory";
    CHECK(v.outcome == (denied ? Verdict::Outcome::kReject : Verdict::Outcome::kContinue));
    if (denied) CHECK(v.message == "customer not allowed");
  }
  CHECK(compiled->state("denied").i == 1);

  // The LLVM text names the field's load at its layout offset.
  auto llvm_text = jitted.compiler->emit_llvm(policy);
  REQUIRE(llvm_text.ok());
  CHECK(llvm_text->find("mpolrt_in_str") != std::string::npos);
  CHECK(llvm_text->find("mpolrt_eval") == std::string::npos);
}

TEST_CASE("an acl on a string field and a rate limit allocate nothing per call through the jit") {
  for (const char* name : {"acl_by_field", "rate_limit"}) {
    CAPTURE(name);
    std::string path = std::string(MRPC_SOURCE_DIR) + "/stdlib-policies/" + name + ".mpol";
    Built built = build(path, dsl::testing::read_file(path));
    REQUIRE(built.verified);
    JitCompiled jitted(built, 1'000'000'000);
    const ir::Policy& policy = jitted.policy;
    const auto& compiled = jitted.compiled;
    PolicyInstance evaluator(policy, jitted.clock, jitted.random);
    Value deny;
    deny.kind = Kind::kSet;
    deny.items = {Value::of_string("mallory"), Value::of_string("eve")};
    if (std::string(name) == "acl_by_field") {
      REQUIRE(compiled->set_param("deny_customers", deny).ok());
      REQUIRE(evaluator.set_param("deny_customers", deny).ok());
    }
    Region r;
    Call c;
    c.service = "hotel.Reservation";
    c.method = "MakeReservation";
    if (!policy.methods.empty()) {
      const MessageLayout& in = *policy.methods[0].input;
      uint64_t body = r.body(in);
      r.set_string(body, in, "customer_name", "alice-with-a-long-name-past-sso");
      r.set_string(body, in, "hotel_id", "h1");
      c.view.request = r.view(body, in);
    }
    mrpc_rpc_view& view = c.get();
    auto calls = [&](PolicyRunner& runner, int n) {
      ::mrpc::testing::count_allocations_everywhere = true;
      const uint64_t before = ::mrpc::testing::counted_allocations.load();
      for (int i = 0; i < n; ++i) {
        jitted.clock.advance(std::chrono::milliseconds(10));
        Verdict v = runner.run(ir::Event::kRequest, view);
        REQUIRE(v.outcome == Verdict::Outcome::kContinue);
      }
      ::mrpc::testing::count_allocations_everywhere = false;
      return ::mrpc::testing::counted_allocations.load() - before;
    };
    calls(*compiled, 100);  // warm: temp cells and map entries made
    calls(evaluator, 100);
    uint64_t jit_allocations = calls(*compiled, 1000);
    uint64_t evaluator_allocations = calls(evaluator, 1000);
    MESSAGE(std::string(name) << ": allocations in 1000 calls: jit " << jit_allocations
                              << ", evaluator " << evaluator_allocations);
    CHECK(jit_allocations == 0);
  }
}

TEST_CASE("lying references in fields read by compiled code read as empty and never outside") {
  Built built = build("lying.mpol", R"(import proto "shop/orders.proto";
policy lying {
  applies to shop.Orders.PlaceOrder at callee;
  on request {
    if len(req.credit_card) != 0 || req.customer.name != "" || req.customer.tier != 0 {
      reject(INVALID_ARGUMENT, "read " + req.credit_card + req.customer.name);
    }
    delay(1ms);
  }
}
)");
  INFO(built.rendered);
  REQUIRE(built.verified);
  JitCompiled jitted(built);
  const ir::Policy& policy = jitted.policy;
  const auto& compiled = jitted.compiled;
  CHECK(compiled->evaluator_statements() == 0);
  CHECK(compiled->evaluator_expressions() == 0);

  const MessageLayout& in = *policy.methods[0].input;
  Region r;
  uint64_t body = r.body(in);
  // Every reference points past the region, or wraps around it.
  r.put(body + in.field_by_name("credit_card")->offset, RegionRef{1ull << 40, 16, 16});
  r.set_message(body, in, "customer");
  r.put(body + in.field_by_name("customer")->offset, RegionRef{~uint64_t{0} - 8, 64, 64});
  Call c;
  c.service = "shop.Orders";
  c.method = "PlaceOrder";
  c.view.request = r.view(body, in);
  Verdict v = compiled->run(ir::Event::kRequest, c.get());
  CHECK(v.outcome == Verdict::Outcome::kContinue);
  CHECK(v.delay_ns == 1'000'000);

  // A string whose length runs one byte past the region.
  r.set_string(body, in, "credit_card", "4111");
  RegionRef card{};
  std::memcpy(&card, r.bytes().data() + body + in.field_by_name("credit_card")->offset,
              sizeof card);
  card.size = static_cast<uint32_t>(r.bytes().size() - card.offset + 1);
  r.put(body + in.field_by_name("credit_card")->offset, card);
  c.view.request = r.view(body, in);
  CHECK(compiled->run(ir::Event::kRequest, c.get()).outcome == Verdict::Outcome::kContinue);
  // Exactly to the end: read.
  card.size -= 1;
  r.put(body + in.field_by_name("credit_card")->offset, card);
  Verdict read = compiled->run(ir::Event::kRequest, c.get());
  CHECK(read.outcome == Verdict::Outcome::kReject);
  CHECK(read.message.rfind("read 4111", 0) == 0);

  // A body that does not fit the region: every field is its default.
  c.view.request.body_offset = r.bytes().size() - 8;
  CHECK(compiled->run(ir::Event::kRequest, c.get()).outcome == Verdict::Outcome::kContinue);
}

TEST_CASE("instances of one policy share its module and the last one unloads it") {
  Built built = build("acl.mpol", kAclByField);
  REQUIRE(built.verified);
  const ir::Policy& policy = built.unit->policies[0];
  auto jit = make_jit();
  auto compiler = make_compiler(*jit);
  ManualClock clock;
  SeededRandom random(1);
  size_t before = jit->module_count();
  {
    auto a = compiler->compile(policy, clock, random);
    auto b = compiler->compile(policy, clock, random);
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    CHECK(jit->module_count() == before + 1);
    CHECK(compiler->loaded_modules() == 1);
    CHECK(compiler->stats().modules_shared == 1);
    CHECK((*a)->module_key() == (*b)->module_key());
    a->reset();
    CHECK(jit->module_count() == before + 1);  // b still runs it
  }
  CHECK(jit->module_count() == before);
  CHECK(compiler->loaded_modules() == 0);
  // Loading again after the unload works (its symbols were freed with the module).
  for (int i = 0; i < 20; ++i) {
    auto again = compiler->compile(policy, clock, random);
    REQUIRE(again.ok());
    CHECK(jit->module_count() == before + 1);
  }
  CHECK(jit->module_count() == before);
  CHECK(compiler->stats().modules_built == 21);
}

TEST_CASE(
    "threads compiling, running and dropping instances of one policy at once share its code") {
  std::string path = std::string(MRPC_SOURCE_DIR) + "/stdlib-policies/rate_limit.mpol";
  Built built = build(path, dsl::testing::read_file(path));
  REQUIRE(built.verified);
  const ir::Policy& policy = built.unit->policies[0];
  auto jit = make_jit();
  auto compiler = make_compiler(*jit);
  std::mutex failures_mutex;
  std::vector<std::string> failures;  // what went wrong, per thread and round
  auto fail = [&](std::string what) {
    std::lock_guard lock(failures_mutex);
    failures.push_back(std::move(what));
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      ManualClock clock(1'000'000'000);
      SeededRandom random(static_cast<uint64_t>(t));
      for (int round = 0; round < 20; ++round) {
        auto compiled = compiler->compile(policy, clock, random);
        if (!compiled.ok()) {
          fail(fmt::format("thread {} round {}: {}", t, round, compiled.status().to_string()));
          return;
        }
        Call c;
        c.app = "t" + std::to_string(t);
        int passed = 0;
        for (int i = 0; i < 500; ++i) {
          clock.advance(std::chrono::milliseconds(10));
          passed +=
              (*compiled)->run(ir::Event::kRequest, c.get()).outcome == Verdict::Outcome::kContinue;
        }
        // 100 calls a second, a burst of 100: every call at 10 ms intervals passes.
        if (passed != 500 || (*compiled)->state("limited").i != 0)
          fail(fmt::format("thread {} round {}: {} of 500 passed, limited {}", t, round, passed,
                           (*compiled)->state("limited").i));
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK_MESSAGE(failures.empty(), fmt::format("{}", fmt::join(failures, "; ")));
  CHECK(jit->module_count() == 0);
  CHECK(compiler->loaded_modules() == 0);
}

// Resident set size in bytes.
uint64_t rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

TEST_CASE(
    "compiling and unloading a policy 300 times after 50 warm-up cycles grows rss by under 4 MiB") {
  std::string path = std::string(MRPC_SOURCE_DIR) + "/stdlib-policies/rate_limit.mpol";
  Built built = build(path, dsl::testing::read_file(path));
  REQUIRE(built.verified);
  const ir::Policy& policy = built.unit->policies[0];
  auto jit = make_jit();
  auto compiler = make_compiler(*jit);
  ManualClock clock(1'000'000'000);
  SeededRandom random(1);
  Call c;
  auto cycle = [&] {
    auto compiled = compiler->compile(policy, clock, random);
    REQUIRE(compiled.ok());
    (void)(*compiled)->run(ir::Event::kRequest, c.get());
  };
  for (int i = 0; i < 50; ++i) cycle();
  uint64_t before = rss_bytes();
  for (int i = 0; i < 300; ++i) cycle();
  uint64_t after = rss_bytes();
  MESSAGE("rss before " << before << ", after 300 cycles " << after);
  CHECK(jit->module_count() == 0);
  CHECK(after < before + (4u << 20));
}

// The acl-by-field policy, built and verified, with what a compile takes and a fresh directory
// for an object cache (emptied before the test and removed after it).
struct CachedAclCase {
  explicit CachedAclCase(std::string_view name)
      : dir(fmt::format("{}/{}-{}", std::filesystem::temp_directory_path().string(), name,
                        getpid())) {
    std::filesystem::remove_all(dir);
    REQUIRE(built.verified);
  }
  ~CachedAclCase() { std::filesystem::remove_all(dir); }
  const ir::Policy& policy() const { return built.unit->policies[0]; }

  const std::string dir;
  Built built = build("acl.mpol", kAclByField);
  ManualClock clock;
  SeededRandom random{1};
};

TEST_CASE("a policy compiled again with the object cache is loaded from it") {
  CachedAclCase acl("mrpc-policy-cache");
  const std::string& dir = acl.dir;
  const ir::Policy& policy = acl.policy();
  ManualClock& clock = acl.clock;
  SeededRandom& random = acl.random;
  {
    auto jit = make_jit(dir);
    auto compiler = make_compiler(*jit);
    REQUIRE(compiler->compile(policy, clock, random).ok());
    CHECK(jit->stats().modules_compiled == 1);
  }
  auto jit = make_jit(dir);
  auto compiler = make_compiler(*jit);
  auto compiled = compiler->compile(policy, clock, random);
  REQUIRE(compiled.ok());
  CHECK(jit->stats().cache_hits == 1);
  CHECK(jit->stats().modules_compiled == 0);
  Call c;
  c.service = "hotel.Reservation";
  c.method = "MakeReservation";
  CHECK((*compiled)->run(ir::Event::kRequest, c.get()).outcome == Verdict::Outcome::kContinue);
}

TEST_CASE(
    "the policy compiler's own object cache skips llvm on a second compile, refuses a tampered "
    "entry and compiles it again") {
  CachedAclCase acl("mrpc-policy-objects");
  const std::string& dir = acl.dir;
  const ir::Policy& policy = acl.policy();
  ManualClock& clock = acl.clock;
  SeededRandom& random = acl.random;
  auto jit = make_jit();  // no Jit-level cache: only the policy compiler's
  auto compiler = make_compiler(*jit);
  REQUIRE(compiler->use_object_cache(dir).ok());
  CHECK((std::filesystem::status(dir).permissions() & std::filesystem::perms::all) ==
        std::filesystem::perms::owner_all);
  Value deny;
  deny.kind = Kind::kSet;
  deny.items = {Value::of_string("mallory")};
  // What a run of `compiled` says for a customer, and the counts the entry must carry.
  auto verdict_for = [&](PolicyRunner& runner, const char* customer) {
    REQUIRE(runner.set_param("deny_customers", deny).ok());
    Region r;
    Call c;
    c.service = "hotel.Reservation";
    c.method = "MakeReservation";
    const MessageLayout& in = *policy.methods[0].input;
    uint64_t body = r.body(in);
    r.set_string(body, in, "customer_name", customer);
    c.view.request = r.view(body, in);
    return runner.run(ir::Event::kRequest, c.get()).outcome;
  };
  std::string key;
  uint32_t native = 0;
  uint64_t instructions = 0;
  {
    auto first = compiler->compile(policy, clock, random);
    REQUIRE(first.ok());
    key = (*first)->module_key();
    native = (*first)->native_statements();
    instructions = (*first)->instructions();
    CHECK(compiler->stats().modules_built == 1);
    CHECK(compiler->stats().object_cache_hits == 0);
  }  // unloaded: the next compile cannot share the loaded module
  const std::string entry = compiler->object_cache_path(key);
  REQUIRE(std::filesystem::exists(entry));
  CHECK((std::filesystem::status(entry).permissions() & std::filesystem::perms::all) ==
        (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write));

  // A second compile (as after a daemon restart: a fresh compiler on a fresh Jit) hits.
  auto jit2 = make_jit();
  auto compiler2 = make_compiler(*jit2);
  REQUIRE(compiler2->use_object_cache(dir).ok());
  {
    auto second = compiler2->compile(policy, clock, random);
    REQUIRE(second.ok());
    CHECK(compiler2->stats().object_cache_hits == 1);
    CHECK(compiler2->stats().modules_built == 0);
    CHECK((*second)->native_statements() == native);
    CHECK((*second)->instructions() == instructions);
    CHECK(verdict_for(**second, "mallory") == Verdict::Outcome::kReject);
    CHECK(verdict_for(**second, "alice") == Verdict::Outcome::kContinue);
  }

  // Tampered: one byte of the object flipped. Refused (counted), compiled again, rewritten.
  {
    std::fstream file(entry, std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(-16, std::ios::end);
    char byte = 0;
    file.read(&byte, 1);
    file.seekp(-16, std::ios::end);
    byte = static_cast<char>(byte ^ 0x5a);
    file.write(&byte, 1);
  }
  {
    auto third = compiler2->compile(policy, clock, random);
    REQUIRE(third.ok());
    CHECK(compiler2->stats().object_cache_rejected == 1);
    CHECK(compiler2->stats().modules_built == 1);
    CHECK(compiler2->stats().object_cache_hits == 1);
    CHECK(verdict_for(**third, "mallory") == Verdict::Outcome::kReject);
  }
  {
    auto fourth = compiler2->compile(policy, clock, random);  // the rewritten entry is good
    REQUIRE(fourth.ok());
    CHECK(compiler2->stats().object_cache_hits == 2);
    CHECK(compiler2->stats().modules_built == 1);
  }
  // An entry another user could have written (group-writable) is refused too.
  std::filesystem::permissions(entry, std::filesystem::perms::group_write,
                               std::filesystem::perm_options::add);
  {
    auto fifth = compiler2->compile(policy, clock, random);
    REQUIRE(fifth.ok());
    CHECK(compiler2->stats().object_cache_rejected == 2);
    CHECK(compiler2->stats().modules_built == 2);
  }
  // A directory others may write is refused outright.
  std::filesystem::permissions(dir, std::filesystem::perms::others_write,
                               std::filesystem::perm_options::add);
  Status unsafe = compiler2->use_object_cache(dir);
  CHECK(unsafe.code() == StatusCode::kFailedPrecondition);
  CHECK(unsafe.message().find("writable by no one else") != std::string::npos);
}

// A policy of `statements` counter increments in one handler: about a dozen LLVM instructions each.
std::string policy_of_increments(int statements) {
  std::string text = R"(import proto "hotel/reservation.proto";
policy increments {
  applies to hotel.Reservation.MakeReservation at callee;
  state n: counter;
  on request {
)";
  for (int i = 0; i < statements; ++i) text += "    n += 1;\n";
  return text + "  }\n}\n";
}

TEST_CASE(
    "a policy lowering past kMaxPolicyInstructions is refused before LLVM optimizes it, and every "
    "stdlib policy fits far below it") {
  auto jit = make_jit();
  auto compiler = make_compiler(*jit);
  ManualClock clock;
  SeededRandom random(1);
  uint64_t largest = 0;
  std::string largest_name;
  for (const auto& path : dsl::testing::mpol_files_under("stdlib-policies")) {
    Built built = build(path, dsl::testing::read_file(path));
    if (built.unit == nullptr || !built.verified) continue;
    for (const ir::Policy& policy : built.unit->policies) {
      auto compiled = compiler->compile(policy, clock, random);
      REQUIRE_MESSAGE(compiled.ok(), policy.name, ": ", compiled.status().to_string());
      if ((*compiled)->instructions() > largest) {
        largest = (*compiled)->instructions();
        largest_name = policy.name;
      }
    }
  }
  MESSAGE("largest stdlib policy: ", largest_name, ", ", largest, " LLVM instructions (limit ",
          limits::kMaxPolicyInstructions, ")");
  CHECK(largest * 8 < limits::kMaxPolicyInstructions);

  // The per-statement cost, from a small policy; then one just under and one past the limit.
  Built small = build("small.mpol", policy_of_increments(100));
  REQUIRE(small.verified);
  auto small_compiled = compiler->compile(small.unit->policies[0], clock, random);
  REQUIRE(small_compiled.ok());
  const uint64_t per_statement = (*small_compiled)->instructions() / 100;
  REQUIRE(per_statement > 0);
  const int under = static_cast<int>(limits::kMaxPolicyInstructions / per_statement * 9 / 10);
  Built near = build("near.mpol", policy_of_increments(under));
  REQUIRE(near.verified);
  const auto started = std::chrono::steady_clock::now();
  auto near_compiled = compiler->compile(near.unit->policies[0], clock, random);
  const double near_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  REQUIRE_MESSAGE(near_compiled.ok(), near_compiled.status().to_string());
  // Reported, not asserted (time): what the budget lets one compile cost on this machine.
  MESSAGE("a policy of ", under, " statements, ", (*near_compiled)->instructions(),
          " LLVM instructions, compiled (O2 + code generation) in ", near_ms, " ms");

  const int over = static_cast<int>(limits::kMaxPolicyInstructions / per_statement * 11 / 10);
  Built past = build("past.mpol", policy_of_increments(over));
  REQUIRE(past.verified);
  auto refused = compiler->compile(past.unit->policies[0], clock, random);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == StatusCode::kResourceExhausted);
  CHECK(refused.status().message().find("kMaxPolicyInstructions") != std::string::npos);
}

}  // namespace
}  // namespace mrpc::compiler::testing
