// The IR evaluator on crafted RPCs: each construct gives the expected verdict, writes and state;
// each run-time fault gives its documented result (docs/mpol-design.md, "Run-time faults"); and
// every stdlib policy runs on seeded random RPCs, garbage message bytes included, without a crash.
//
// Built twice: as compiler_test (the evaluator) and, with MRPC_TEST_THROUGH_JIT, as
// policy_jit_golden_test, where every runner is the JIT-compiled policy (policy_jit.h): the same
// crafted RPCs must give the same verdicts, faults and state through the JIT.
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <limits>

#include "compiler_test_support.h"
#include "mpol_test_support.h"
#include "mrpc/base/limits.h"
#include "mrpc/compiler/evaluator.h"
#include "rpc_test_support.h"

#ifdef MRPC_TEST_THROUGH_JIT
#include "mrpc/compiler/policy_jit.h"
#define MRPC_CASE_PREFIX "through the jit: "
#else
#define MRPC_CASE_PREFIX ""
#endif

namespace mrpc::compiler::testing {
namespace {

using ir::Value;

// The runner under test: the evaluator, or the JIT-compiled policy.
std::unique_ptr<PolicyRunner> make_runner(const ir::Policy& policy, const Clock& clock,
                                          RandomSource& random) {
#ifdef MRPC_TEST_THROUGH_JIT
  static std::unique_ptr<jit::Jit> jit = [] {
    auto created = jit::Jit::create();
    REQUIRE(created.ok());
    return std::move(*created);
  }();
  static std::unique_ptr<PolicyCompiler> compiler = [] {
    auto created = PolicyCompiler::create(*jit);
    REQUIRE(created.ok());
    return std::move(*created);
  }();
  auto compiled = compiler->compile(policy, clock, random);
  REQUIRE_MESSAGE(compiled.ok(), compiled.status().message());
  return std::move(*compiled);
#else
  return std::make_unique<PolicyInstance>(policy, clock, random);
#endif
}

const char* kShop = "import proto \"shop/orders.proto\";\n";

// One policy built from text, with an instance over a manual clock and a seeded random source.
struct Harness {
  explicit Harness(const std::string& text, uint64_t seed = 1)
      : built(build("eval.mpol", text)), random(seed) {
    INFO(built.rendered);
    REQUIRE(built.unit != nullptr);
    REQUIRE(built.verified);
    REQUIRE(built.unit->policies.size() == 1);
    instance = make_runner(policy(), clock, random);
  }
  const ir::Policy& policy() const { return built.unit->policies[0]; }
  const MessageLayout& input() const { return *policy().methods[0].input; }
  const MessageLayout& output() const { return *policy().methods[0].output; }
  Verdict run(ir::Event event, Call& call) { return instance->run(event, call.get()); }

  Built built;
  ManualClock clock{1'000'000'000};
  SeededRandom random;
  std::unique_ptr<PolicyRunner> instance;
};

TEST_CASE(MRPC_CASE_PREFIX
          "an ACL on a request string field rejects denied customers and passes others") {
  Harness h(std::string(kShop) + R"(
policy acl {
  applies to shop.Orders.PlaceOrder at callee;
  param deny: set<string> = {"mallory"};
  state denied: counter;
  on request {
    if req.customer.name in deny {
      denied += 1;
      reject(PERMISSION_DENIED, "customer " + req.customer.name + " not allowed");
    }
  }
}
)");
  for (const char* name : {"mallory", "alice", "mallory"}) {
    Region r;
    uint64_t body = r.body(h.input());
    uint64_t customer = r.set_message(body, h.input(), "customer");
    r.set_string(customer, *h.input().field_by_name("customer")->message, "name", name);
    Call call;
    call.view.request = r.view(body, h.input());
    Verdict v = h.run(ir::Event::kRequest, call);
    if (std::string(name) == "mallory") {
      CHECK(v.outcome == Verdict::Outcome::kReject);
      CHECK(v.status == StatusCode::kPermissionDenied);
      CHECK(v.message == "customer mallory not allowed");
    } else {
      CHECK(v.outcome == Verdict::Outcome::kContinue);
    }
  }
  CHECK(h.instance->state("denied").i == 2);
  // An attach-time param replaces the default.
  REQUIRE(
      h.instance->set_param("deny", Value{ir::Kind::kSet, 0, 0, {}, {Value::of_string("alice")}})
          .ok());
  Region r;
  uint64_t body = r.body(h.input());
  uint64_t customer = r.set_message(body, h.input(), "customer");
  r.set_string(customer, *h.input().field_by_name("customer")->message, "name", "alice");
  Call call;
  call.view.request = r.view(body, h.input());
  CHECK(h.run(ir::Event::kRequest, call).outcome == Verdict::Outcome::kReject);
  CHECK_FALSE(h.instance->set_param("deny", Value::of_int(3)).ok());
  CHECK_FALSE(h.instance->set_param("nope", Value::of_int(3)).ok());
}

TEST_CASE(MRPC_CASE_PREFIX
          "loops over repeated fields map fields and ranges compute the expected values") {
  Harness h(std::string(kShop) + R"(
policy sums {
  applies to shop.Orders.PlaceOrder at callee;
  on request {
    var total = 0;
    for item in req.items {
      total += item.quantity * item.price_cents;
    }
    var steps = 0;
    for i in 0..5 {
      steps += i;
    }
    let first = req.items[0].sku;
    let missing = req.items[7].sku;
    log("sums", total = total, steps = steps, n = len(req.items), first = first,
        missing = missing, label = req.labels["team"], none = req.labels["nope"],
        has_team = "team" in req.labels, no_z = "z" in req.labels);
  }
}
)");
  Region r;
  const MessageLayout& in = h.input();
  const MessageLayout& item = *in.field_by_name("items")->message;
  uint64_t body = r.body(in);
  uint64_t items = r.set_elements(body, in, "items", 3);
  for (uint32_t i = 0; i < 3; ++i) {
    uint64_t e = items + uint64_t{i} * item.body_size();
    r.set_int(e, item, "quantity", i + 1);
    r.set_int(e, item, "price_cents", 100);
    r.set_string(e, item, "sku", std::string(1, static_cast<char>('a' + i)));
  }
  const MessageLayout& entry = *in.field_by_name("labels")->message;
  uint64_t labels = r.set_elements(body, in, "labels", 2);
  r.set_string(labels, entry, "key", "team");
  r.set_string(labels, entry, "value", "red");
  r.set_string(labels + entry.body_size(), entry, "key", "team");
  r.set_string(labels + entry.body_size(), entry, "value", "blue");  // a later duplicate wins
  Call call;
  call.view.request = r.view(body, in);
  Verdict v = h.run(ir::Event::kRequest, call);
  REQUIRE(v.logs.size() == 1);
  auto field = [&](const char* k) {
    for (auto& [name, value] : v.logs[0].fields) {
      if (name == k) return value;
    }
    FAIL("no log field " << k);
    return Value{};
  };
  CHECK(field("total").i == (1 + 2 + 3) * 100);
  CHECK(field("steps").i == 0 + 1 + 2 + 3 + 4);
  CHECK(field("n").i == 3);
  CHECK(field("first").s == "a");
  CHECK(field("missing").s.empty());
  CHECK(field("label").s == "blue");
  CHECK(field("none").s.empty());
  CHECK(field("has_team").i == 1);
  CHECK(field("no_z").i == 0);
  CHECK(v.defined_faults == 1);  // items[7]: past the end
}

Value log_field(const Verdict& v, const char* key) {
  REQUIRE(!v.logs.empty());
  for (auto& [name, value] : v.logs.back().fields) {
    if (name == key) return value;
  }
  FAIL("no log field " << key);
  return Value{};
}

TEST_CASE(MRPC_CASE_PREFIX "state containers keep their capacity by lru fifo and reject eviction") {
  Harness h(R"(
policy containers {
  applies to * at callee;
  state lru: map<string, int>[capacity 2, evict lru];
  state fifo: set<string>[capacity 2, evict fifo];
  state strict: set<string>[capacity 2, evict reject];
  state calls: counter;
  on request {
    calls += 1;
    let k = rpc.metadata["k"];
    if k == "touch-a" {
      let x = lru["a"];
      log("read", x = x);
      pass;
    }
    lru[k] = lru[k] + 1;
    fifo.insert(k);
    strict.insert(k);
    if k == "drop-b" {
      remove lru["b"];
      fifo.remove("b");
    }
  }
}
)");
  auto call_with = [&](const std::string& k) {
    Call c;
    c.metadata = encode_metadata({{"k", k}});
    return h.run(ir::Event::kRequest, c);
  };
  call_with("a");
  call_with("b");
  call_with("a");                                // a = 2, b = 1
  CHECK(call_with("touch-a").logs.size() == 1);  // a is the most recent now
  Verdict v = call_with("c");                    // lru evicts b; fifo evicts a; strict refuses c
  CHECK(v.refused_inserts == 1);                 // `c` refused by the full `evict reject` set
  Value lru = h.instance->state("lru");
  REQUIRE(lru.items.size() == 4);
  CHECK(lru.items[0] == Value::of_string("a"));
  CHECK(lru.items[1] == Value::of_int(2));
  CHECK(lru.items[2] == Value::of_string("c"));
  Value fifo = h.instance->state("fifo");
  REQUIRE(fifo.items.size() == 2);
  CHECK(fifo.items[0] == Value::of_string("b"));
  CHECK(fifo.items[1] == Value::of_string("c"));
  Value strict = h.instance->state("strict");
  REQUIRE(strict.items.size() == 2);
  CHECK(strict.items[0] == Value::of_string("a"));
  CHECK(strict.items[1] == Value::of_string("b"));
  CHECK(h.instance->state("calls").i == 5);
}

TEST_CASE(MRPC_CASE_PREFIX
          "actions and rpc fields give the expected verdict under a manual clock and seed") {
  Harness h(R"(
policy steer {
  applies to * at caller;
  state latency: histogram[1ms, 10ms];
  state last: time;
  on request {
    if rpc.metadata["x-drop"] == "1" {
      drop;
    }
    delay(5ms);
    delay(-3ms);
    mirror("shadow", 0.25);
    if len(rpc.endpoints) > 1 {
      route(rpc.endpoints[1]);
    }
    rpc.priority = 3;
    rpc.deadline = now() + 2s;
    log("ctx", svc = rpc.service + "." + rpc.method, app = rpc.caller.app, uid = rpc.caller.uid,
        traced = "x-trace" in rpc.metadata, untraced = "x-none" in rpc.metadata,
        entries = len(rpc.metadata),
        remaining = rpc.remaining, since = now() - last, r = random(), size = rpc.size);
    last = now();
  }
  on response {
    observe(latency, rpc.latency);
  }
  on error {
    observe(latency, rpc.latency);
    if rpc.status == UNAVAILABLE {
      retry(20ms);
    }
  }
}
)",
            42);
  Call c;
  c.endpoints = encode_strings({"e0", "e1"});
  c.metadata = encode_metadata({{"x-trace", "t1"}});
  c.view.caller_uid = 1000;
  c.view.size = 77;
  c.view.deadline_ns = h.clock.now() + 500'000'000;
  Verdict v = h.run(ir::Event::kRequest, c);
  CHECK(v.outcome == Verdict::Outcome::kContinue);
  CHECK(v.delay_ns == 5'000'000);
  REQUIRE(v.mirrors.size() == 1);
  CHECK(v.mirrors[0].first == "shadow");
  CHECK(v.mirrors[0].second == 0.25);
  CHECK(v.route == "e1");
  CHECK(c.view.priority == 3);
  CHECK(c.view.deadline_ns == h.clock.now() + 2'000'000'000);
  CHECK(log_field(v, "svc").s == "shop.Orders.PlaceOrder");
  CHECK(log_field(v, "app").s == "frontend");
  CHECK(log_field(v, "traced").i == 1);
  CHECK(log_field(v, "untraced").i == 0);
  CHECK(log_field(v, "entries").i == 1);
  CHECK(log_field(v, "uid").i == 1000);
  CHECK(log_field(v, "remaining").i == 2'000'000'000);  // the handler set the deadline first
  CHECK(log_field(v, "since").i == h.clock.now());      // `last` was time zero: "never"
  CHECK(log_field(v, "size").i == 77);
  SeededRandom same(42);
  CHECK(log_field(v, "r").f == same.next_unit());

  c.metadata = encode_metadata({{"x-drop", "1"}});
  CHECK(h.run(ir::Event::kRequest, c).outcome == Verdict::Outcome::kDrop);

  Call done;
  done.view.latency_ns = 5'000'000;
  done.view.status = static_cast<uint32_t>(StatusCode::kUnavailable);
  Verdict e = h.run(ir::Event::kError, done);
  CHECK(e.retry_after_ns == 20'000'000);
  done.view.latency_ns = 50'000'000;
  done.view.status = 0;
  CHECK_FALSE(h.run(ir::Event::kResponse, done).retry_after_ns.has_value());
  Value counts = h.instance->state("latency");
  REQUIRE(counts.items.size() == 3);
  CHECK(counts.items[0].i == 0);
  CHECK(counts.items[1].i == 1);
  CHECK(counts.items[2].i == 1);
}

TEST_CASE(MRPC_CASE_PREFIX
          "clearing a oneof member that is not the one set leaves the member that is") {
  Harness h(R"(import proto "choice.proto";
policy unpick {
  applies to choice.Picker.Choose at callee;
  on request {
    clear req.number;
  }
}
)");
  Region r;
  const MessageLayout& in = h.input();
  const uint64_t body = r.body(in);
  r.set_string(body, in, "text", "abc");
  const OneofLayout& oneof = in.oneofs()[0];
  const uint32_t text_case = static_cast<uint32_t>(in.field_by_name("text")->number);
  std::memcpy(r.bytes().data() + body + oneof.case_offset, &text_case, 4);
  Call call;
  call.service = "choice.Picker";
  call.method = "Choose";
  call.view.request = r.view(body, in);
  Verdict v = h.run(ir::Event::kRequest, call);
  REQUIRE(v.writes.size() == 1);
  CHECK(v.writes[0].applied);
  uint32_t now_case = 0;
  std::memcpy(&now_case, r.bytes().data() + body + oneof.case_offset, 4);
  CHECK(now_case == text_case);
  RegionRef text{};
  std::memcpy(&text, r.bytes().data() + body + in.field_by_name("text")->offset, sizeof text);
  CHECK(text.size == 3);  // the shared storage still holds the string
}

TEST_CASE(MRPC_CASE_PREFIX "message writes land in the message bytes and clear resets a field") {
  Harness h(std::string(kShop) + R"(
policy mutate {
  applies to shop.Orders.PlaceOrder at callee;
  on request {
    req.items[0].quantity = min(req.items[0].quantity, 10);
    req.items[5].quantity = 1;
    req.customer.tier = shop.CustomerTier.GOLD;
    req.customer.email = lower(req.customer.email);
    req.labels["checked"] = "yes";
    clear req.credit_card;
  }
  on response {
    resp.total_cents += 1;
  }
}
)");
  Region r;
  const MessageLayout& in = h.input();
  const MessageLayout& item = *in.field_by_name("items")->message;
  const MessageLayout& customer = *in.field_by_name("customer")->message;
  uint64_t body = r.body(in);
  uint64_t items = r.set_elements(body, in, "items", 1);
  r.set_int(items, item, "quantity", 50);
  uint64_t cust = r.set_message(body, in, "customer");
  r.set_string(cust, customer, "email", "A@B.C");
  r.set_string(body, in, "credit_card", "4111");
  Call call;
  call.view.request = r.view(body, in);
  Verdict v = h.run(ir::Event::kRequest, call);
  int32_t quantity = 0, tier = 0;
  std::memcpy(&quantity, r.bytes().data() + items + item.field_by_name("quantity")->offset, 4);
  std::memcpy(&tier, r.bytes().data() + cust + customer.field_by_name("tier")->offset, 4);
  CHECK(quantity == 10);
  CHECK(tier == 2);
  RegionRef card{};
  std::memcpy(&card, r.bytes().data() + body + in.field_by_name("credit_card")->offset, 16);
  CHECK(card.size == 0);
  REQUIRE(v.writes.size() == 6);
  CHECK(v.writes[0].applied);
  CHECK(v.writes[1].path == "req.items[5].quantity");
  CHECK_FALSE(v.writes[1].applied);  // past the end: no effect
  CHECK(v.writes[2].applied);
  CHECK(v.writes[3].path == "req.customer.email");
  CHECK(v.writes[3].value.s == "a@b.c");
  CHECK_FALSE(v.writes[3].applied);  // strings need the daemon's allocator: recorded
  CHECK(v.writes[4].path == "req.labels[\"checked\"]");
  CHECK(v.writes[5].applied);
  CHECK(v.defined_faults == 1);

  Region out;
  uint64_t reply = out.body(h.output());
  out.set_int(reply, h.output(), "total_cents", 41);
  Call response;
  response.view.response = out.view(reply, h.output());
  h.run(ir::Event::kResponse, response);
  int64_t total = 0;
  std::memcpy(&total, out.bytes().data() + reply + h.output().field_by_name("total_cents")->offset,
              8);
  CHECK(total == 42);
}

TEST_CASE(MRPC_CASE_PREFIX "a response cache answers the second call with the stored response") {
  Harness h(R"(
import proto "hotel/profile.proto";
policy cache {
  applies to hotel.Profile.GetProfiles at caller;
  state cached: map<string, response>[capacity 4, evict lru];
  on request {
    let key = rpc.metadata["x-locale"];
    if key in cached {
      respond(cached[key]);
    }
  }
  on response {
    cached[rpc.metadata["x-locale"]] = resp;
  }
}
)");
  Call first;
  first.service = "hotel.Profile";
  first.method = "GetProfiles";
  first.metadata = encode_metadata({{"x-locale", "en"}});
  CHECK(h.run(ir::Event::kRequest, first).outcome == Verdict::Outcome::kContinue);
  Region r;
  uint64_t body = r.body(h.output());
  first.view.response = r.view(body, h.output());
  h.run(ir::Event::kResponse, first);
  Call second = first;
  second.view.response = {};
  Verdict v = h.run(ir::Event::kRequest, second);
  CHECK(v.outcome == Verdict::Outcome::kRespond);
  CHECK(v.response_bytes.size() == r.bytes().size());
}

TEST_CASE(MRPC_CASE_PREFIX "break leaves the innermost loop and the enclosing loop goes on") {
  Harness h(R"(
policy breaks {
  applies to * at callee;
  param names: list<string> = ["a", "b", "stop", "c"];
  on request {
    var sum = 0;
    for i in 0..10 {
      if i == 4 {
        break;
      }
      for j in 0..10 {
        if j > i {
          break;
        }
        sum += 1;
      }
    }
    var seen = 0;
    var inner = 0;
    for n in names {
      for q in 0..5 {
        if q == 2 {
          break;
        }
        inner += 1;
      }
      if n == "stop" {
        break;
      }
      seen += 1;
    }
    var after = 0;
    for k in 0..3 {
      after += 1;
    }
    log("b", sum = sum, seen = seen, inner = inner, after = after);
  }
}
)");
  Call c;
  Verdict v = h.run(ir::Event::kRequest, c);
  CHECK(v.outcome == Verdict::Outcome::kContinue);
  CHECK(log_field(v, "sum").i == 1 + 2 + 3 + 4);  // i = 0..3, j = 0..i
  CHECK(log_field(v, "seen").i == 2);             // "a", "b"
  CHECK(log_field(v, "inner").i == 3 * 2);        // q = 0, 1 for "a", "b", "stop"
  CHECK(log_field(v, "after").i == 3);            // a break does not leak out of its loop
}

TEST_CASE(MRPC_CASE_PREFIX
          "metadata writes set and remove request headers and later reads see them") {
  Harness h(R"(
policy headers {
  applies to * at caller;
  on request {
    let had = rpc.metadata["authorization"];
    rpc.metadata["x-request-id"] = "req-" + str(rpc.attempt);
    rpc.metadata["x-user"] = "replaced";
    remove rpc.metadata["authorization"];
    log("h", had = had, id = rpc.metadata["x-request-id"], user = rpc.metadata["x-user"],
        auth = rpc.metadata["authorization"]);
  }
}
)");
  Call c;
  c.metadata = encode_metadata({{"authorization", "secret"}, {"x-user", "app"}});
  c.view.attempt = 2;
  Verdict v = h.run(ir::Event::kRequest, c);
  CHECK(log_field(v, "had").s == "secret");
  CHECK(log_field(v, "id").s == "req-2");
  CHECK(log_field(v, "user").s == "replaced");
  CHECK(log_field(v, "auth").s.empty());
  // What the view holds afterwards (the daemon delivers its own copy the same way).
  CHECK(c.metadata == encode_metadata({{"x-request-id", "req-2"}, {"x-user", "replaced"}}));
  CHECK(v.defined_faults == 0);
}

TEST_CASE(MRPC_CASE_PREFIX "append builds a local list up to its limit and past it rejects") {
  Harness h(R"(
policy lists {
  applies to * at callee;
  param names: list<string> = ["a", "bb", "ccc"];
  on request {
    var long: list<string> = [];
    var total = 0;
    for n in names {
      if len(n) > 1 {
        long.append(n);
      }
    }
    for x in long {
      total += len(x);
    }
    var many: list<int> = [];
    if rpc.metadata["many"] == "1" {
      for i in 0..300 {
        many.append(i);
      }
    }
    log("l", count = len(long), total = total, first = long[0], many = len(many));
  }
}
)");
  Call c;
  Verdict v = h.run(ir::Event::kRequest, c);
  CHECK(v.outcome == Verdict::Outcome::kContinue);
  CHECK(log_field(v, "count").i == 2);
  CHECK(log_field(v, "total").i == 5);
  CHECK(log_field(v, "first").s == "bb");
  CHECK(log_field(v, "many").i == 0);
  Call big;
  big.metadata = encode_metadata({{"many", "1"}});
  Verdict over = h.run(ir::Event::kRequest, big);
  CHECK(over.outcome == Verdict::Outcome::kReject);
  CHECK(over.aborted);
  CHECK(over.status == StatusCode::kResourceExhausted);
  CHECK_MESSAGE(over.message.find("kMaxLocalListElements") != std::string::npos, over.message);
}

TEST_CASE(MRPC_CASE_PREFIX "a state that starts from a param starts from the attached value") {
  const char* text = R"(
policy budgets {
  applies to * at callee;
  param max_tokens: int = 3;
  state tokens: int = max_tokens;
  on request {
    if tokens <= 0 {
      reject(RESOURCE_EXHAUSTED, "no tokens");
    }
    tokens -= 1;
  }
}
)";
  Harness defaults(text);
  CHECK(defaults.instance->state("tokens").i == 3);
  Harness attached(text);
  REQUIRE(attached.instance->set_param("max_tokens", Value::of_int(1)).ok());
  CHECK(attached.instance->state("tokens").i == 1);
  Call c;
  CHECK(attached.run(ir::Event::kRequest, c).outcome == Verdict::Outcome::kContinue);
  CHECK(attached.run(ir::Event::kRequest, c).outcome == Verdict::Outcome::kReject);
  CHECK(defaults.run(ir::Event::kRequest, c).outcome == Verdict::Outcome::kContinue);
  CHECK(defaults.instance->state("tokens").i == 2);
}

TEST_CASE(MRPC_CASE_PREFIX
          "labelled metrics count one series per label value combination and overflow to _other") {
  Harness h(R"(
policy labelled {
  applies to * at callee;
  state calls: counter[label method, label code];
  state plain: counter;
  state sizes: histogram[10, 100, label caller];
  on request {
    plain.add(2);
    calls.add(1, code = OK, method = rpc.method);
    observe(sizes, len(rpc.caller.app), caller = rpc.caller.app);
  }
  on error {
    calls.add(3, method = rpc.method, code = rpc.status);
    calls.add(-1, method = rpc.method, code = rpc.status);
  }
}
)");
  Call c;
  c.method = "Get";
  for (int i = 0; i < 3; ++i) h.run(ir::Event::kRequest, c);
  c.method = "Put";
  c.app = std::string(20, 'a');
  h.run(ir::Event::kRequest, c);
  c.view.status = static_cast<uint32_t>(StatusCode::kNotFound);
  Verdict negative = h.run(ir::Event::kError, c);
  CHECK(negative.defined_faults == 1);  // a negative amount is ignored, a fault

  CHECK(h.instance->state("plain").i == 8);
  // Series in label-value order: (Get, OK) 3, (Put, NOT_FOUND) 3, (Put, OK) 1.
  CHECK(ir::value_text(h.instance->state("calls")) ==
        R"({["Get", "OK"]: 3, ["Put", "NOT_FOUND"]: 3, ["Put", "OK"]: 1})");
  CHECK(ir::value_text(h.instance->state("sizes")) ==
        R"({["aaaaaaaaaaaaaaaaaaaa"]: [0, 1, 0], ["frontend"]: [3, 0, 0]})");

  // Past limits::kMaxMetricLabelSets combinations, and for values that are too long or not
  // UTF-8, the overflow series (every label "_other") counts: the total stays what was counted.
  Harness many(R"(
policy many {
  applies to * at callee;
  state calls: counter[label caller];
  on request {
    calls.add(1, caller = rpc.caller.app);
  }
}
)");
  const int distinct = static_cast<int>(limits::kMaxMetricLabelSets) + 10;
  for (int i = 0; i < distinct; ++i) {
    c.app = "app-" + std::to_string(i);
    many.run(ir::Event::kRequest, c);
  }
  c.app = std::string(limits::kMaxMetricLabelValueBytes + 1, 'x');
  many.run(ir::Event::kRequest, c);
  c.app = "app-0";  // an existing series still counts as itself
  many.run(ir::Event::kRequest, c);
  Value calls = many.instance->state("calls");
  REQUIRE(calls.items.size() == 2 * (limits::kMaxMetricLabelSets + 1));
  int64_t total = 0;
  for (size_t e = 1; e < calls.items.size(); e += 2) total += calls.items[e].i;
  CHECK(total == distinct + 2);
  const Value& overflow_key = calls.items[calls.items.size() - 2];
  REQUIRE(overflow_key.items.size() == 1);
  CHECK(overflow_key.items[0].s == "_other");
  CHECK(calls.items.back().i == 11);
  CHECK(ir::value_text(calls.items[0]) == R"(["app-0"])");
  CHECK(calls.items[1].i == 2);

  // state() and set_state() round-trip (an upgrade carries the series).
  Harness next(R"(
policy many {
  applies to * at callee;
  state calls: counter[label caller];
  on request {
    calls.add(1, caller = rpc.caller.app);
  }
}
)");
  REQUIRE(next.instance->set_state("calls", calls).ok());
  CHECK(ir::value_text(next.instance->state("calls")) == ir::value_text(calls));
}

TEST_CASE(MRPC_CASE_PREFIX
          "per-call variables set on request are read by the later handlers of the same call") {
  Harness h(R"(
policy timing {
  applies to * at callee;
  state slow: counter[label who];
  call started: time;
  call who: string = "nobody";
  call big: string;
  on request {
    started = now();
    who = rpc.caller.app + "@" + rpc.caller.host;
    if rpc.caller.app == "greedy" {
      big = rpc.metadata["blob"];
    }
  }
  on response, error {
    if now() - started > 5ms {
      slow.add(1, who = who);
    }
    log("call", who = who, took = now() - started);
  }
}
)");
  // Two calls in flight at once, each with its own record (the daemon keeps one per call).
  std::vector<Value> first(h.policy().call_variables.size()), second(first.size());
  for (size_t i = 0; i < first.size(); ++i)
    first[i] = second[i] = h.policy().call_variables[i].initial;
  Call a, b;
  a.app = "alpha";
  b.app = "beta";
  a.get().call_variables = first.data();
  b.get().call_variables = second.data();
  h.instance->run(ir::Event::kRequest, a.view);
  h.clock.advance(std::chrono::milliseconds(10));
  h.instance->run(ir::Event::kRequest, b.view);
  h.clock.advance(std::chrono::milliseconds(1));
  Verdict done_a = h.instance->run(ir::Event::kResponse, a.view);
  Verdict done_b = h.instance->run(ir::Event::kError, b.view);
  REQUIRE(done_a.logs.size() == 1);
  CHECK(ir::value_text(done_a.logs[0].fields[0].second) == R"("alpha@host-1")");
  CHECK(ir::value_text(done_a.logs[0].fields[1].second) == "11ms");
  REQUIRE(done_b.logs.size() == 1);
  CHECK(ir::value_text(done_b.logs[0].fields[0].second) == R"("beta@host-1")");
  CHECK(ir::value_text(done_b.logs[0].fields[1].second) == "1ms");
  CHECK(ir::value_text(h.instance->state("slow")) == R"({["alpha@host-1"]: 1})");

  // Without a call record a response handler sees the initial values.
  Call orphan;
  Verdict alone = h.run(ir::Event::kResponse, orphan);
  REQUIRE(alone.logs.size() == 1);
  CHECK(ir::value_text(alone.logs[0].fields[0].second) == R"("nobody")");

  // A string past limits::kMaxPolicyCallVariableBytes is a fault: the call is rejected.
  Call greedy;
  greedy.app = "greedy";
  greedy.metadata =
      encode_metadata({{"blob", std::string(limits::kMaxPolicyCallVariableBytes + 1, 'b')}});
  std::vector<Value> cells = first;
  greedy.get().call_variables = cells.data();
  Verdict refused = h.instance->run(ir::Event::kRequest, greedy.view);
  CHECK(refused.outcome == Verdict::Outcome::kReject);
  CHECK(refused.status == StatusCode::kResourceExhausted);
  CHECK_MESSAGE(refused.message.find("kMaxPolicyCallVariableBytes") != std::string::npos,
                refused.message);
}

TEST_CASE(MRPC_CASE_PREFIX "builtins and if else chains give their documented values") {
  Harness h(R"(
policy builtins {
  applies to * at callee;
  on request {
    let u = rpc.metadata["user"];
    var class = "";
    if u == "" {
      class = "anonymous";
    } else if starts_with(u, "test-") {
      class = "test";
    } else if ends_with(u, "@example.com") || contains(u, "bot") {
      class = "synthetic";
    } else {
      class = "real";
    }
    log("b", class = class, digest = sha256(u), up = upper(u), low = lower("MiXeD"),
        head = substr(u, 0, 4), tail = substr(u, 3, 100), none = substr(u, -5, 2),
        empty = substr(u, 100, 2), s_int = str(42), s_dur = str(1500ms), s_bool = str(true),
        s_status = str(NOT_FOUND), pick = consistent_hash(u, ["a", "b", "c"]),
        pick_none = consistent_hash(u, rpc.endpoints), secs = seconds(1500ms),
        back = from_seconds(0.25), h = hash(u), h2 = hash(u), f = float("2.5"),
        i = int(2.9), mn = min(3s, 2s), mx = max(1.5, 2));
  }
}
)");
  auto run = [&](const std::string& user) {
    Call c;
    c.metadata = encode_metadata({{"user", user}});
    return h.run(ir::Event::kRequest, c);
  };
  CHECK(log_field(run(""), "class").s == "anonymous");
  CHECK(log_field(run("test-1"), "class").s == "test");
  CHECK(log_field(run("x@example.com"), "class").s == "synthetic");
  CHECK(log_field(run("robot"), "class").s == "synthetic");
  Verdict v = run("abc");
  CHECK(log_field(v, "class").s == "real");
  CHECK(log_field(v, "digest").s ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(log_field(run(""), "digest").s ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(log_field(v, "up").s == "ABC");
  CHECK(log_field(v, "low").s == "mixed");
  CHECK(log_field(v, "head").s == "abc");
  CHECK(log_field(v, "tail").s.empty());
  CHECK(log_field(v, "none").s == "ab");
  CHECK(log_field(v, "empty").s.empty());
  CHECK(log_field(v, "s_int").s == "42");
  CHECK(log_field(v, "s_dur").s == "1500ms");
  CHECK(log_field(v, "s_bool").s == "true");
  CHECK(log_field(v, "s_status").s == "NOT_FOUND");
  std::string pick = log_field(v, "pick").s;
  CHECK((pick == "a" || pick == "b" || pick == "c"));
  CHECK(log_field(run("abc"), "pick").s == pick);  // stable
  CHECK(log_field(v, "pick_none").s.empty());      // no endpoints: the zero value
  CHECK(log_field(v, "secs").f == 1.5);
  CHECK(log_field(v, "back").i == 250'000'000);
  CHECK(log_field(v, "h").i == log_field(v, "h2").i);
  CHECK(log_field(v, "h").i != log_field(run("abd"), "h").i);
  CHECK(log_field(v, "f").f == 2.5);
  CHECK(log_field(v, "i").i == 2);
  CHECK(log_field(v, "mn").i == 2'000'000'000);
  CHECK(log_field(v, "mx").f == 2.0);
  CHECK(v.defined_faults == 0);
}

TEST_CASE(MRPC_CASE_PREFIX
          "arithmetic faults give their documented results and the handler goes on") {
  Harness h(R"(
policy faults {
  applies to * at callee;
  state big: int = 9223372036854775807;
  on request {
    let zero = int(rpc.metadata["zero"]);
    let minus_one = zero - 1;
    let min = -9223372036854775807 - 1;
    big += 1;
    log("f", div = rpc.size / zero, rem = 7 % zero, min_div = min / minus_one,
        min_rem = min % minus_one, neg_min = -min, abs_min = abs(min), wrapped = big,
        far = rpc.deadline + 9223372036854775807 * 1ns, long_wait = 1h * 9223372036854775807,
        back = from_seconds(1e300), nan = from_seconds(0.0 / 0.0), int_str = int("12x"),
        int_ok = int("-12"), float_str = float("x"), int_nan = int(0.0 / 0.0),
        int_big = int(1e300), dur_div = 5s / zero, frem = 7.5 % 2.0);
  }
}
)");
  Call c;
  c.view.size = 9;
  c.view.deadline_ns = 5;
  Verdict v = h.run(ir::Event::kRequest, c);
  CHECK(v.outcome == Verdict::Outcome::kContinue);
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  CHECK(log_field(v, "div").i == 0);
  CHECK(log_field(v, "rem").i == 7);
  CHECK(log_field(v, "min_div").i == kMin);
  CHECK(log_field(v, "min_rem").i == 0);
  CHECK(log_field(v, "neg_min").i == kMin);
  CHECK(log_field(v, "abs_min").i == kMax);
  CHECK(log_field(v, "wrapped").i == kMin);
  CHECK(log_field(v, "far").i == kMax);
  CHECK(log_field(v, "long_wait").i == kMax);
  CHECK(log_field(v, "back").i == kMax);
  CHECK(log_field(v, "nan").i == 0);
  CHECK(log_field(v, "int_str").i == 0);
  CHECK(log_field(v, "int_ok").i == -12);
  CHECK(log_field(v, "float_str").f == 0.0);
  CHECK(log_field(v, "int_nan").i == 0);
  CHECK(log_field(v, "int_big").i == kMax);
  CHECK(log_field(v, "dur_div").i == 0);
  CHECK(log_field(v, "frem").f == 1.5);
  CHECK(v.defined_faults >= 15);
}

TEST_CASE(MRPC_CASE_PREFIX
          "faults without a value to go on with reject the call with RESOURCE_EXHAUSTED") {
  Harness strings(R"(
policy grow {
  applies to * at callee;
  on request {
    var s = rpc.metadata["seed"];
    for i in 0..1000 {
      s = s + rpc.metadata["seed"];
    }
    log("never", s = s);
  }
}
)");
  Call c;
  c.metadata = encode_metadata({{"seed", std::string(100, 'x')}});
  Verdict v = strings.run(ir::Event::kRequest, c);
  CHECK(v.aborted);
  CHECK(v.outcome == Verdict::Outcome::kReject);
  CHECK(v.status == StatusCode::kResourceExhausted);
  CHECK(v.message.find("limits::kMaxPolicyStringBytes") != std::string::npos);
  CHECK(v.logs.empty());

  Harness state(R"(
policy keep {
  applies to * at callee;
  state last: string;
  on request {
    last = rpc.metadata["v"];
  }
}
)");
  Call small, big;
  small.metadata = encode_metadata({{"v", "ok"}});
  big.metadata = encode_metadata({{"v", std::string(limits::kMaxStateStringBytes + 1, 'y')}});
  CHECK(state.run(ir::Event::kRequest, small).outcome == Verdict::Outcome::kContinue);
  Verdict b = state.run(ir::Event::kRequest, big);
  CHECK(b.aborted);
  CHECK(b.message.find("limits::kMaxStateStringBytes") != std::string::npos);
  CHECK(state.instance->state("last").s == "ok");

  Harness loop(std::string(kShop) + R"(
policy every_item {
  applies to shop.Orders.PlaceOrder at callee;
  on request {
    for item in req.items {
      if item.quantity > 5 {
        reject(INVALID_ARGUMENT, "too many");
      }
    }
  }
}
)");
  Region r;
  uint64_t body = r.body(loop.input());
  r.set_elements(body, loop.input(), "items",
                 static_cast<uint32_t>(limits::kMaxForEachIterations) + 1);
  Call many;
  many.view.request = r.view(body, loop.input());
  Verdict l = loop.run(ir::Event::kRequest, many);
  CHECK(l.aborted);
  CHECK(l.status == StatusCode::kResourceExhausted);
  CHECK(l.message.find("limits::kMaxForEachIterations") != std::string::npos);
}

TEST_CASE(MRPC_CASE_PREFIX "lying references read as empty and another schema is rejected") {
  Harness h(std::string(kShop) + R"(
policy reads {
  applies to shop.Orders.PlaceOrder at callee;
  on request {
    log("r", card = req.credit_card, n = len(req.items), name = req.customer.name,
        has_customer = has(req.customer));
  }
}
)");
  Region r;
  const MessageLayout& in = h.input();
  uint64_t body = r.body(in);
  // Every reference points past the region.
  r.put(body + in.field_by_name("credit_card")->offset, RegionRef{1ull << 40, 16, 16});
  r.put(body + in.field_by_name("items")->offset, RegionRef{16, 0xffffffffu, 0});
  r.set_message(body, in, "customer");
  r.put(body + in.field_by_name("customer")->offset, RegionRef{~uint64_t{0} - 8, 64, 64});
  Call c;
  c.view.request = r.view(body, in);
  Verdict v = h.run(ir::Event::kRequest, c);
  CHECK(v.outcome == Verdict::Outcome::kContinue);
  CHECK(log_field(v, "card").s.empty());
  CHECK(log_field(v, "n").i == 0);
  CHECK(log_field(v, "name").s.empty());

  // A body that does not fit the region: every field is the default.
  c.view.request.body_offset = r.bytes().size() - 8;
  v = h.run(ir::Event::kRequest, c);
  CHECK(log_field(v, "has_customer").i == 0);

  c.view.request.fingerprint = in.fingerprint() ^ 1;
  v = h.run(ir::Event::kRequest, c);
  CHECK(v.aborted);
  CHECK(v.status == StatusCode::kFailedPrecondition);

  // A method the policy does not apply to: it does not run.
  Call other;
  other.method = "CancelOrder";
  CHECK(h.run(ir::Event::kRequest, other).logs.empty());
}

TEST_CASE(MRPC_CASE_PREFIX "every stdlib policy runs on seeded random RPCs without a crash") {
  uint64_t seed = 20261201;
  if (const char* env = std::getenv("MRPC_TEST_SEED")) seed = std::strtoull(env, nullptr, 10);
  INFO("seed " << seed << " (rerun with MRPC_TEST_SEED=" << seed << ")");
  auto files = dsl::testing::mpol_files_under("stdlib-policies");
  REQUIRE(files.size() >= 20);
  SeededRandom rng(seed);
  ManualClock clock(1'000'000'000);
  int runs = 0, effects = 0, aborted = 0;
  for (const auto& path : files) {
    CAPTURE(path);
    Built built = build(path, dsl::testing::read_file(path));
    REQUIRE(built.unit != nullptr);
    for (const ir::Policy& policy : built.unit->policies) {
      std::unique_ptr<PolicyRunner> runner = make_runner(policy, clock, rng);
      PolicyRunner& instance = *runner;
      for (int i = 0; i < 500; ++i) {
        Region req, resp;
        Call c;
        c.app = rng.next_u64() % 2 ? "frontend" : "batch";
        c.metadata = encode_metadata({{"x-user", std::to_string(rng.next_u64() % 5)},
                                      {"session", std::to_string(rng.next_u64() % 7)}});
        c.endpoints = encode_strings({"e0", "e1", "e2"});
        if (!policy.methods.empty()) {
          const ir::Method& m = policy.methods[rng.next_u64() % policy.methods.size()];
          c.service = m.service;
          c.method = m.name;
          random_message(req, *m.input, rng, c.view.request);
          random_message(resp, *m.output, rng, c.view.response);
        }
        c.view.deadline_ns = clock.now() + static_cast<int64_t>(rng.next_u64() % 1'000'000'000);
        c.view.status = static_cast<uint32_t>(rng.next_u64() % 17);
        c.view.latency_ns = static_cast<int64_t>(rng.next_u64() % 100'000'000);
        c.view.attempt = static_cast<uint32_t>(rng.next_u64() % 3);
        c.view.size = rng.next_u64() % 4096;
        auto event = static_cast<ir::Event>(rng.next_u64() % 3);
        Verdict v = instance.run(event, c.get());
        CHECK((!v.aborted || v.outcome == Verdict::Outcome::kReject));
        if (v.outcome != Verdict::Outcome::kContinue || !v.logs.empty() || v.delay_ns > 0 ||
            v.route || v.retry_after_ns) {
          ++effects;
        }
        aborted += v.aborted ? 1 : 0;
        clock.advance(std::chrono::milliseconds(rng.next_u64() % 50));
        ++runs;
      }
    }
  }
  CHECK(runs >= 20 * 500);
  // The policies did things (rejected, logged, delayed, routed, retried), not only nothing.
  MESSAGE("runs " << runs << ", with an effect " << effects << ", aborted " << aborted);
  CHECK(effects > runs / 10);
}

}  // namespace
}  // namespace mrpc::compiler::testing
