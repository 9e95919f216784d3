// The IR evaluator on crafted RPCs: each construct gives the expected verdict, writes and state;
// each run-time fault gives its documented result (docs/mpol-design.md, "Run-time faults"); and
// every stdlib policy runs on seeded random RPCs, garbage message bytes included, without a crash.
#include <doctest/doctest.h>

#include <cstring>
#include <limits>

#include "compiler_test_support.h"
#include "mpol_test_support.h"
#include "mrpc/base/limits.h"
#include "mrpc/compiler/evaluator.h"

namespace mrpc::compiler::testing {
namespace {

using ir::Value;

// Builds messages in one region by their layout, the way generated code lays them out.
class Region {
 public:
  Region() { bytes_.reserve(1 << 20); }

  uint64_t alloc(uint64_t n) {
    uint64_t at = (bytes_.size() + 7) & ~uint64_t{7};
    bytes_.resize(at + n, 0);
    return at;
  }
  uint64_t body(const MessageLayout& l) { return alloc(l.body_size()); }

  template <typename T>
  void put(uint64_t at, T v) {
    std::memcpy(bytes_.data() + at, &v, sizeof v);
  }
  void presence(uint64_t body, const FieldLayout& f) {
    if (f.presence_bit < 0) return;
    uint64_t at = body + 4 * static_cast<uint64_t>(f.presence_bit / 32);
    uint32_t w = 0;
    std::memcpy(&w, bytes_.data() + at, 4);
    put<uint32_t>(at, w | (1u << (f.presence_bit % 32)));
  }
  void set_int(uint64_t body, const MessageLayout& l, const char* name, int64_t v) {
    const FieldLayout& f = *l.field_by_name(name);
    if (f.size == 4) put<int32_t>(body + f.offset, static_cast<int32_t>(v));
    if (f.size == 8) put<int64_t>(body + f.offset, v);
    if (f.size == 1) put<uint8_t>(body + f.offset, v != 0);
    presence(body, f);
  }
  void set_string(uint64_t body, const MessageLayout& l, const char* name, const std::string& s) {
    const FieldLayout& f = *l.field_by_name(name);
    uint64_t at = alloc(s.size());
    std::memcpy(bytes_.data() + at, s.data(), s.size());
    put(body + f.offset,
        RegionRef{at, static_cast<uint32_t>(s.size()), static_cast<uint32_t>(s.size())});
    presence(body, f);
  }
  uint64_t set_message(uint64_t body, const MessageLayout& l, const char* name) {
    const FieldLayout& f = *l.field_by_name(name);
    uint64_t sub = this->body(*f.message);
    put(body + f.offset, RegionRef{sub, f.message->body_size(), f.message->body_size()});
    presence(body, f);
    return sub;
  }
  // `n` inline element bodies of a repeated message field (a map field's entries too).
  uint64_t set_elements(uint64_t body, const MessageLayout& l, const char* name, uint32_t n) {
    const FieldLayout& f = *l.field_by_name(name);
    uint64_t array = alloc(uint64_t{f.element_size} * n);
    put(body + f.offset, RegionRef{array, n, n});
    return array;
  }

  mrpc_message_view view(uint64_t body, const MessageLayout& l) {
    return mrpc_message_view{bytes_.data(), bytes_.size(), body, l.fingerprint()};
  }
  std::vector<uint8_t>& bytes() { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

mrpc_str s(const std::string& text) {
  return mrpc_str{text.data(), static_cast<uint32_t>(text.size())};
}

// A call with its strings kept alive.
struct Call {
  std::string service = "shop.Orders", method = "PlaceOrder", app = "frontend", host = "host-1",
              endpoint;
  std::string metadata, endpoints;
  mrpc_rpc_view view{};

  mrpc_rpc_view& get() {
    view.service = s(service);
    view.method = s(method);
    view.caller_app = s(app);
    view.caller_host = s(host);
    view.endpoint = s(endpoint);
    view.metadata = reinterpret_cast<const uint8_t*>(metadata.data());
    view.metadata_size = static_cast<uint32_t>(metadata.size());
    view.endpoints = reinterpret_cast<const uint8_t*>(endpoints.data());
    view.endpoints_size = static_cast<uint32_t>(endpoints.size());
    view.ops = encoded_block_ops();
    return view;
  }
};

const char* kShop = "import proto \"shop/orders.proto\";\n";

// One policy built from text, with an instance over a manual clock and a seeded random source.
struct Harness {
  explicit Harness(const std::string& text, uint64_t seed = 1)
      : built(build("eval.mpol", text)), random(seed) {
    INFO(built.rendered);
    REQUIRE(built.unit != nullptr);
    REQUIRE(built.verified);
    REQUIRE(built.unit->policies.size() == 1);
    instance = std::make_unique<PolicyInstance>(policy(), clock, random);
  }
  const ir::Policy& policy() const { return built.unit->policies[0]; }
  const MessageLayout& input() const { return *policy().methods[0].input; }
  const MessageLayout& output() const { return *policy().methods[0].output; }
  Verdict run(ir::Event event, Call& call) { return instance->run(event, call.get()); }

  Built built;
  ManualClock clock{1'000'000'000};
  SeededRandom random;
  std::unique_ptr<PolicyInstance> instance;
};

TEST_CASE("an ACL on a request string field rejects denied customers and passes others") {
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

TEST_CASE("loops over repeated fields map fields and ranges compute the expected values") {
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

}  // namespace
}  // namespace mrpc::compiler::testing
