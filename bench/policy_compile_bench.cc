// What a policy costs to make ready and to run, per stdlib policy:
//   - front: parse + check + typed IR + verify (p50 of --runs);
//   - cold: front + LLVM lowering + O2 + machine code (the module unloaded between runs, no object
//     cache), p50;
//   - cached: front + loading the object from the policy compiler's on-disk cache (filled by a
//     first compile; no lowering, no LLVM) + linking it, p50 (goals: cold <= 10 ms, cached
//     <= 1 ms);
// and per call, the evaluator against the JIT for a no-op policy, an ACL on a string field
// (acl_by_field, a deny set of two customers, the caller not in it) and a rate limit (rate_limit,
// defaults, the clock moved 10 ms per call so calls pass).
//   policy_compile_bench [--runs N] [--calls N]
//   policy_compile_bench --only acl --engine jit --calls N   (one loop, for callgrind: run it
//       with --calls N and --calls 0 and divide the difference of Ir by N)
// Not a test: figures vary with the machine; the splice into a running daemon is not in them.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <vector>

#include <fmt/format.h>
#include <time.h>
#include <unistd.h>

#include "mrpc/base/clock.h"
#include "mrpc/base/random.h"
#include "mrpc/compiler/checker.h"
#include "mrpc/compiler/evaluator.h"
#include "mrpc/compiler/ir.h"
#include "mrpc/compiler/policy_jit.h"
#include "mrpc/compiler/verifier.h"

namespace {

// Thread CPU time, not wall time: the figures should not depend on what else the (shared)
// machine runs. LLJIT compiles on the calling thread, so its work is counted.
struct SteadyClock {
  using time_point = int64_t;
  static time_point now() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
  }
};
namespace compiler = mrpc::compiler;

std::unique_ptr<compiler::ir::Unit> front(const std::string& path, const std::string* text,
                                          bool& ok) {
  mrpc::dsl::SourceManager sources;
  mrpc::dsl::DiagnosticEngine diagnostics(sources);
  compiler::Checker checker({{std::string(MRPC_SOURCE_DIR) + "/examples/protos"}}, sources,
                            diagnostics);
  ok = text != nullptr ? checker.check_text(path, *text) : checker.check_file(path);
  if (!ok) {
    fmt::print(stderr, "{}", diagnostics.render_text());
    return nullptr;
  }
  auto unit = checker.build_ir(path);
  ok = unit != nullptr && compiler::verify(*unit, diagnostics);
  return unit;
}

double since_us(SteadyClock::time_point start) {
  return static_cast<double>(SteadyClock::now() - start) / 1000.0;
}

double p50(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

std::unique_ptr<mrpc::jit::Jit> make_jit(const std::string& cache) {
  mrpc::jit::JitOptions options;
  options.object_cache_dir = cache;
  auto jit = mrpc::jit::Jit::create(options);
  if (!jit.ok()) {
    fmt::print(stderr, "jit: {}\n", jit.status().message());
    std::exit(2);
  }
  return std::move(*jit);
}

std::unique_ptr<compiler::PolicyCompiler> make_compiler(mrpc::jit::Jit& jit) {
  auto c = compiler::PolicyCompiler::create(jit);
  if (!c.ok()) {
    fmt::print(stderr, "policy compiler: {}\n", c.status().message());
    std::exit(2);
  }
  return std::move(*c);
}

// One call's view with a request of customer_name "alice", hotel_id "h1" (when the policy reads
// hotel.Reservation), kept alive by the struct.
struct Workload {
  std::string service = "hotel.Reservation", method = "MakeReservation", app = "frontend";
  std::vector<uint8_t> region;
  mrpc_rpc_view view{};

  explicit Workload(const compiler::ir::Policy& policy) {
    view.service = {service.data(), static_cast<uint32_t>(service.size())};
    view.method = {method.data(), static_cast<uint32_t>(method.size())};
    view.caller_app = {app.data(), static_cast<uint32_t>(app.size())};
    view.ops = compiler::encoded_block_ops();
    if (policy.methods.empty()) return;
    const mrpc::MessageLayout& in = *policy.methods[0].input;
    region.assign(in.body_size() + 64, 0);
    auto put_string = [&](const char* field, const char* text, uint64_t at) {
      const mrpc::FieldLayout* f = in.field_by_name(field);
      if (f == nullptr) return;
      std::memcpy(region.data() + at, text, std::strlen(text));
      mrpc::RegionRef ref{at, static_cast<uint32_t>(std::strlen(text)),
                          static_cast<uint32_t>(std::strlen(text))};
      std::memcpy(region.data() + f->offset, &ref, sizeof ref);
      if (f->presence_bit >= 0)
        region[static_cast<size_t>(f->presence_bit / 8)] |= 1u << (f->presence_bit % 8);
    };
    put_string("customer_name", "alice", in.body_size());
    put_string("hotel_id", "h1", in.body_size() + 32);
    view.request = {region.data(), region.size(), 0, in.fingerprint()};
  }
};

struct CallCase {
  const char* name;
  std::string path;
  std::string text;  // empty: read `path`
};

// ns per call of `runner` on `load` (the clock moved 10 ms per call).
double per_call(compiler::PolicyRunner& runner, Workload& load, mrpc::ManualClock& clock, int calls,
                int& passed) {
  auto start = SteadyClock::now();
  passed = 0;
  for (int i = 0; i < calls; ++i) {
    clock.advance(std::chrono::milliseconds(10));
    passed += runner.run(compiler::ir::Event::kRequest, load.view).outcome ==
              compiler::Verdict::Outcome::kContinue;
  }
  return calls == 0 ? 0 : since_us(start) * 1000.0 / calls;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"policy_compile_bench: compile + verify + JIT per stdlib policy; per-call cost"};
  int runs = 20;
  int calls = 200000;
  std::string only, engine = "jit";
  app.add_option("--runs", runs, "compilations per policy");
  app.add_option("--calls", calls, "calls per per-call figure");
  app.add_option("--only", only, "run only the per-call loop of noop, acl or rate")
      ->check(CLI::IsMember({"noop", "acl", "rate"}));
  app.add_option("--engine", engine, "with --only: jit or eval")
      ->check(CLI::IsMember({"jit", "eval"}));
  CLI11_PARSE(app, argc, argv);

  std::string cache = fmt::format("{}/mrpc-policy-bench-{}",
                                  std::filesystem::temp_directory_path().string(), getpid());
  std::filesystem::remove_all(cache);
  auto cold_jit = make_jit("");
  auto cold_compiler = make_compiler(*cold_jit);
  auto cached_jit = make_jit("");
  auto cached_compiler = make_compiler(*cached_jit);
  // The daemon's way: the policy compiler's own cache (a hit skips lowering and LLVM).
  if (mrpc::Status s = cached_compiler->use_object_cache(cache); !s.ok()) {
    fmt::print(stderr, "object cache: {}\n", s.message());
    return 2;
  }
  mrpc::ManualClock clock(1'000'000'000);
  mrpc::SeededRandom random(1);

  if (only.empty()) {
    std::vector<std::string> files;
    for (const auto& e :
         std::filesystem::directory_iterator(std::string(MRPC_SOURCE_DIR) + "/stdlib-policies")) {
      if (e.path().extension() == ".mpol") files.push_back(e.path().string());
    }
    std::sort(files.begin(), files.end());
    fmt::print("{:<34} {:>10} {:>12} {:>12}\n", "policy (p50, CPU us)", "front", "cold+jit",
               "cached+jit");
    std::vector<double> all_front, all_cold, all_cached;
    for (const auto& f : files) {
      std::vector<double> front_us, cold_us, cached_us;
      bool has_policy = true;
      for (int i = 0; i < runs; ++i) {
        auto start = SteadyClock::now();
        bool ok = false;
        auto unit = front(f, nullptr, ok);
        if (!ok) {
          fmt::print(stderr, "{} does not compile\n", f);
          return 1;
        }
        front_us.push_back(since_us(start));
        has_policy = !unit->policies.empty();
        for (const auto& policy : unit->policies) {
          auto compiled = cold_compiler->compile(policy, clock, random);
          if (!compiled.ok()) {
            fmt::print(stderr, "{}: {}\n", f, compiled.status().message());
            return 1;
          }
        }
        cold_us.push_back(since_us(start));  // the module is unloaded when `compiled` goes
      }
      // Fill the object cache once, then time front + compile from it.
      {
        bool ok = false;
        auto unit = front(f, nullptr, ok);
        for (const auto& policy : unit->policies)
          (void)cached_compiler->compile(policy, clock, random);
      }
      for (int i = 0; i < runs; ++i) {
        auto start = SteadyClock::now();
        bool ok = false;
        auto unit = front(f, nullptr, ok);
        for (const auto& policy : unit->policies)
          (void)cached_compiler->compile(policy, clock, random);
        cached_us.push_back(since_us(start));
      }
      all_front.push_back(p50(front_us));
      if (has_policy) {
        all_cold.push_back(p50(cold_us));
        all_cached.push_back(p50(cached_us));
        fmt::print("{:<34} {:>10.0f} {:>12.0f} {:>12.0f}\n",
                   std::filesystem::path(f).filename().string(), p50(front_us), p50(cold_us),
                   p50(cached_us));
      } else {
        fmt::print("{:<34} {:>10.0f} {:>12} {:>12}\n", std::filesystem::path(f).filename().string(),
                   p50(front_us), "-", "-");
      }
    }
    fmt::print("{:<34} {:>10.0f} {:>12.0f} {:>12.0f}\n", "median over policies", p50(all_front),
               p50(all_cold), p50(all_cached));
    fmt::print("object cache: {} hits, {} compiled\n", cached_compiler->stats().object_cache_hits,
               cached_compiler->stats().modules_built);
  }

  std::vector<CallCase> cases = {
      {"noop", "noop.mpol",
       "policy noop {\n  applies to * at callee;\n  on request {\n    pass;\n  }\n}\n"},
      {"acl", std::string(MRPC_SOURCE_DIR) + "/stdlib-policies/acl_by_field.mpol", ""},
      {"rate", std::string(MRPC_SOURCE_DIR) + "/stdlib-policies/rate_limit.mpol", ""},
  };
  if (only.empty())
    fmt::print("\n{:<10} {:>14} {:>10} {:>8}\n", "per call", "evaluator ns", "jit ns",
               "ratio");  // CPU ns
  for (const auto& c : cases) {
    if (!only.empty() && only != c.name) continue;
    bool ok = false;
    auto unit = front(c.path, c.text.empty() ? nullptr : &c.text, ok);
    if (!ok) return 1;
    const auto& policy = unit->policies[0];
    compiler::PolicyInstance evaluator(policy, clock, random);
    auto compiled = cold_compiler->compile(policy, clock, random);
    if (!compiled.ok()) return 1;
    if (std::string(c.name) == "acl") {
      compiler::ir::Value deny;
      deny.kind = compiler::ir::Kind::kSet;
      deny.items = {compiler::ir::Value::of_string("mallory"),
                    compiler::ir::Value::of_string("eve")};
      (void)evaluator.set_param("deny_customers", deny);
      (void)(*compiled)->set_param("deny_customers", deny);
    }
    Workload load(policy);
    int passed_eval = 0, passed_jit = 0;
    if (!only.empty()) {
      compiler::PolicyRunner& runner =
          engine == "jit" ? static_cast<compiler::PolicyRunner&>(**compiled) : evaluator;
      per_call(runner, load, clock, calls, passed_jit);
      fmt::print("{} {}: {} calls, {} passed\n", c.name, engine, calls, passed_jit);
      return 0;
    }
    per_call(evaluator, load, clock, calls / 10, passed_eval);  // warm-up
    per_call(**compiled, load, clock, calls / 10, passed_jit);
    double eval_ns = per_call(evaluator, load, clock, calls, passed_eval);
    double jit_ns = per_call(**compiled, load, clock, calls, passed_jit);
    fmt::print(
        "{:<10} {:>14.1f} {:>10.1f} {:>8.2f}   ({} / {} passed; {} statements native, {} "
        "statements and {} expressions through the evaluator)\n",
        c.name, eval_ns, jit_ns, eval_ns / jit_ns, passed_eval, passed_jit,
        (*compiled)->native_statements(), (*compiled)->evaluator_statements(),
        (*compiled)->evaluator_expressions());
  }
  std::filesystem::remove_all(cache);
  return 0;
}
