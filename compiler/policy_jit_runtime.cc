// The runtime library of JIT-compiled policies (policy_jit_runtime.h).
#include "compiler/policy_jit_runtime.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <span>

#include "compiler/ir_ops.h"

namespace mrpc::compiler {

using ir::Kind;
using ir::Value;

ValueLayout value_layout() {
  Value v;
  auto base = reinterpret_cast<const char*>(&v);
  return ValueLayout{sizeof(Value),
                     static_cast<uint64_t>(reinterpret_cast<const char*>(&v.kind) - base),
                     static_cast<uint64_t>(reinterpret_cast<const char*>(&v.i) - base),
                     static_cast<uint64_t>(reinterpret_cast<const char*>(&v.f) - base)};
}

namespace {

void number_expr(const ir::Expr& e, NodeTable& t) {
  t.exprs.push_back(&e);
  for (const auto& c : e.children) number_expr(*c, t);
}

void number_block(const ir::Block& b, NodeTable& t) {
  for (const auto& s : b) {
    t.stmts.push_back(s.get());
    for (const auto& e : s->exprs) number_expr(*e, t);
    for (const auto& inner : s->blocks) number_block(inner, t);
  }
}

JitFrame& frame_of(JitHeader* h) {
  return *static_cast<JitFrame*>(h->frame);
}

Value scalar(Kind kind, int64_t bits) {
  Value v;
  v.kind = kind;
  if (kind == Kind::kFloat) {
    std::memcpy(&v.f, &bits, 8);
  } else {
    v.i = bits;
  }
  return v;
}

int64_t bits_of(const Value& v) {
  if (v.kind != Kind::kFloat) return v.i;
  int64_t bits = 0;
  std::memcpy(&bits, &v.f, 8);
  return bits;
}

bool same_string(const Value& v, Kind kind, const char* p, uint64_t n) {
  return v.kind == kind && v.s.size() == n && (n == 0 || std::memcmp(v.s.data(), p, n) == 0);
}

}  // namespace

NodeTable number_nodes(const ir::Policy& policy) {
  NodeTable t;
  for (const auto& h : policy.handlers) number_block(h.body, t);
  return t;
}

JitFrame::JitFrame(PolicyInstance& instance, const Clock& clk, RandomSource& rng,
                   const ir::Policy& policy)
    : session(instance), nodes(number_nodes(policy)), clock(clk), random(rng) {
  temps.resize(nodes.exprs.size());
  header.scalars = session.scalars();
  header.params = session.params();
  header.temps = temps.data();
  header.frame = this;
}

extern "C" {

// Arithmetic, comparisons and negation on scalars: ir_ops, the evaluator's own rules.
static int64_t mpolrt_arith(JitHeader* h, uint32_t packed, int64_t a, int64_t b) {
  if (*h->ended) return 0;
  auto op = static_cast<ir::Op>(packed & 0xff);
  auto result = static_cast<Kind>((packed >> 8) & 0xff);
  bool fault = false;
  Value r = ir::apply_binary(op, scalar(static_cast<Kind>((packed >> 16) & 0xff), a),
                             scalar(static_cast<Kind>(packed >> 24), b), result, fault);
  if (fault) ++frame_of(h).verdict->defined_faults;
  return bits_of(r);
}

static int64_t mpolrt_unary(JitHeader* h, uint32_t packed, int64_t a) {
  if (*h->ended) return 0;
  bool fault = false;
  Value r = ir::apply_unary(static_cast<ir::Op>(packed & 0xff),
                            scalar(static_cast<Kind>((packed >> 16) & 0xff), a), fault);
  if (fault) ++frame_of(h).verdict->defined_faults;
  return bits_of(r);
}

static int64_t mpolrt_now(JitHeader* h) {
  if (*h->ended) return 0;
  return frame_of(h).clock.now();
}

static int64_t mpolrt_random(JitHeader* h) {
  if (*h->ended) return 0;
  double d = frame_of(h).random.next_unit();
  int64_t bits = 0;
  std::memcpy(&bits, &d, 8);
  return bits;
}

static int64_t mpolrt_remaining(JitHeader* h) {
  if (*h->ended) return 0;
  int64_t now = frame_of(h).clock.now();
  return now == std::numeric_limits<int64_t>::min() ? std::numeric_limits<int64_t>::max()
                                                    : ir::saturating_add(h->rpc->deadline_ns, -now);
}

static void mpolrt_fault(JitHeader* h) {
  if (!*h->ended) ++frame_of(h).verdict->defined_faults;
}

// An expression the lowering leaves to the evaluator: its value in the node's temp cell.
static Value* mpolrt_eval(JitHeader* h, uint32_t id) {
  JitFrame& f = frame_of(h);
  f.temps[id] = f.session.eval(*f.nodes.exprs[id]);
  return &f.temps[id];
}

static void mpolrt_stmt(JitHeader* h, uint32_t id) {
  JitFrame& f = frame_of(h);
  f.session.stmt(*f.nodes.stmts[id]);
}

static const Value* mpolrt_const(JitHeader* h, uint32_t id) {
  return &frame_of(h).nodes.exprs[id]->value;
}

static const char* mpolrt_str_data(const Value* v, uint64_t* size) {
  *size = v->s.size();
  return v->s.data();
}

static void mpolrt_box_str(Value* out, uint32_t kind, const char* p, uint64_t n) {
  out->kind = static_cast<Kind>(kind);
  out->s.assign(p, n);
}

static int64_t mpolrt_items_size(const Value* v) {
  return static_cast<int64_t>(v->items.size());
}

static int64_t mpolrt_str_eq(const char* a, uint64_t an, const char* b, uint64_t bn) {
  return an == bn && (an == 0 || std::memcmp(a, b, an) == 0);
}

// `x in container` for a list, set or map value and a string x (ir::contains_value, no copy).
static int64_t mpolrt_in_str(const Value* c, uint32_t kind, const char* p, uint64_t n) {
  size_t step = c->kind == Kind::kMap ? 2 : 1;
  for (size_t i = 0; i < c->items.size(); i += step) {
    if (same_string(c->items[i], static_cast<Kind>(kind), p, n)) return 1;
  }
  return 0;
}

static int64_t mpolrt_in_scalar(const Value* c, uint32_t kind, int64_t bits) {
  return ir::contains_value(*c, scalar(static_cast<Kind>(kind), bits)) ? 1 : 0;
}

static int64_t mpolrt_state_has_str(JitHeader* h, uint32_t slot, uint32_t kind, const char* p,
                                    uint64_t n) {
  if (*h->ended) return 0;
  JitFrame& f = frame_of(h);
  f.key.kind = static_cast<Kind>(kind);
  f.key.s.assign(p, n);
  return f.session.state_contains(slot, f.key) ? 1 : 0;
}

static int64_t mpolrt_state_has_scalar(JitHeader* h, uint32_t slot, uint32_t kind, int64_t bits) {
  if (*h->ended) return 0;
  return frame_of(h).session.state_contains(slot, scalar(static_cast<Kind>(kind), bits)) ? 1 : 0;
}

static int64_t mpolrt_state_len(JitHeader* h, uint32_t slot) {
  if (*h->ended) return 0;
  return static_cast<int64_t>(frame_of(h).session.state_size(slot));
}

// A cell holding a container key: a string (copied into the frame's reused key cell) or a scalar.
static Value* mpolrt_key_str(JitHeader* h, uint32_t kind, const char* p, uint64_t n) {
  JitFrame& f = frame_of(h);
  f.key.kind = static_cast<Kind>(kind);
  f.key.s.assign(p, n);
  return &f.key;
}

static Value* mpolrt_key_scalar(JitHeader* h, uint32_t kind, int64_t bits) {
  JitFrame& f = frame_of(h);
  f.key = scalar(static_cast<Kind>(kind), bits);
  return &f.key;
}

// `state[key]` of a map with scalar values.
static int64_t mpolrt_state_get(JitHeader* h, uint32_t slot, const Value* key) {
  if (*h->ended) return 0;
  return bits_of(frame_of(h).session.state_lookup(slot, *key));
}

// `state[key] = v` / `+=` / `-=` (packed: op, compound flag in bit 7 of the op byte, target
// kind, value kind): the old value is looked up first (LRU order), like the evaluator.
static void mpolrt_state_set(JitHeader* h, uint32_t slot, uint32_t packed, const Value* key,
                             int64_t bits) {
  if (*h->ended) return;
  JitFrame& f = frame_of(h);
  Value old = f.session.state_lookup(slot, *key);
  Value value = scalar(static_cast<Kind>(packed >> 24), bits);
  if ((packed & 0x80) != 0) {
    bool fault = false;
    value = ir::apply_binary(static_cast<ir::Op>(packed & 0x7f), old, value,
                             static_cast<Kind>((packed >> 8) & 0xff), fault);
    if (fault) ++f.verdict->defined_faults;
  }
  f.session.state_put(slot, *key, std::move(value));
}

// A pure builtin of one or two scalar arguments (packed: builtin, result kind, argument kinds).
static int64_t mpolrt_builtin(JitHeader* h, uint32_t packed, uint32_t arity, int64_t a, int64_t b) {
  if (*h->ended) return 0;
  Value args[2] = {scalar(static_cast<Kind>((packed >> 16) & 0xff), a),
                   scalar(static_cast<Kind>(packed >> 24), b)};
  bool fault = false;
  Value r =
      ir::apply_builtin(static_cast<Builtin>(packed & 0xff), std::span<const Value>(args, arity),
                        static_cast<Kind>((packed >> 8) & 0xff), fault);
  if (fault) ++frame_of(h).verdict->defined_faults;
  return bits_of(r);
}

// `a + b` of strings into `out` (the node's temp cell: its capacity is reused).
static Value* mpolrt_concat(JitHeader* h, Value* out, uint32_t kind, const char* a, uint64_t an,
                            const char* b, uint64_t bn) {
  out->kind = static_cast<Kind>(kind);
  out->s.clear();
  if (*h->ended) return out;
  out->s.append(a, an).append(b, bn);
  if (ir::string_too_long(*out)) {
    JitFrame& f = frame_of(h);
    ++f.verdict->defined_faults;
    f.session.check_string(*out);
  }
  return out;
}

// `observe(h, x)`: like the evaluator, it counts even when evaluating `x` ended the handler.
static void mpolrt_observe(JitHeader* h, uint32_t slot, uint32_t kind, int64_t bits) {
  frame_of(h).session.observe(slot, scalar(static_cast<Kind>(kind), bits));
}

static void mpolrt_mirror(JitHeader* h, const char* p, uint64_t n, int64_t fraction_bits) {
  double fraction = 0;
  std::memcpy(&fraction, &fraction_bits, 8);
  frame_of(h).verdict->mirrors.emplace_back(std::string(p, n), fraction);
}

// `rpc.metadata[key]`: the value in place (the view keeps it alive and unchanged while the
// handler runs), empty when absent.
static const char* mpolrt_metadata(JitHeader* h, const char* key, uint64_t key_size,
                                   uint64_t* size) {
  *size = 0;
  if (*h->ended) return nullptr;
  mrpc_rpc_view* rpc = h->rpc;
  const mrpc_rpc_view_ops* ops = rpc->ops != nullptr ? rpc->ops : encoded_block_ops();
  mrpc_str out{nullptr, 0};
  if (ops->metadata_get == nullptr ||
      !ops->metadata_get(rpc, key, static_cast<uint32_t>(key_size), &out) || out.data == nullptr) {
    return nullptr;
  }
  *size = out.size;
  return out.data;
}

// len(rpc.endpoints): the entries of the encoded block up to the first lying length.
static int64_t mpolrt_endpoints_len(JitHeader* h) {
  const uint8_t* data = h->rpc->endpoints;
  uint32_t size = h->rpc->endpoints_size;
  uint64_t at = 0;
  int64_t n = 0;
  while (data != nullptr && at + 4 <= size) {
    uint32_t len = 0;
    std::memcpy(&len, data + at, 4);
    at += 4;
    if (len > size - at) break;
    at += len;
    ++n;
  }
  return n;
}

// `log(event, k = v, ...)`: `args` are the statement's values in order (event first).
static void mpolrt_log(JitHeader* h, uint32_t stmt, const Value* const* args, uint32_t n) {
  JitFrame& f = frame_of(h);
  const ir::Stmt& s = *f.nodes.stmts[stmt];
  LogRecord record;
  record.event = args[0]->s;
  for (uint32_t i = 1; i < n; ++i) record.fields.emplace_back(s.log_keys[i - 1], *args[i]);
  f.verdict->logs.push_back(std::move(record));
}

// `rpc.endpoints[i]`: the name in place; past the end (or negative): "" and a counted fault.
static const char* mpolrt_endpoint_at(JitHeader* h, int64_t index, uint64_t* size) {
  *size = 0;
  if (*h->ended) return nullptr;
  const uint8_t* data = h->rpc->endpoints;
  uint32_t block = h->rpc->endpoints_size;
  uint64_t at = 0;
  int64_t n = 0;
  while (data != nullptr && at + 4 <= block) {
    uint32_t len = 0;
    std::memcpy(&len, data + at, 4);
    at += 4;
    if (len > block - at) break;
    if (n == index) {
      *size = len;
      return reinterpret_cast<const char*>(data + at);
    }
    at += len;
    ++n;
  }
  ++frame_of(h).verdict->defined_faults;
  return nullptr;
}

static void mpolrt_reject(JitHeader* h, int64_t status, const char* p, uint64_t n) {
  if (*h->ended) return;
  Verdict& v = *frame_of(h).verdict;
  *h->ended = true;
  v.outcome = Verdict::Outcome::kReject;
  v.status = static_cast<StatusCode>(status);
  v.message.assign(p, n);
}

static void mpolrt_drop(JitHeader* h) {
  if (*h->ended) return;
  *h->ended = true;
  frame_of(h).verdict->outcome = Verdict::Outcome::kDrop;
}

static void mpolrt_delay(JitHeader* h, int64_t ns) {
  Verdict& v = *frame_of(h).verdict;
  v.delay_ns = ir::saturating_add(v.delay_ns, std::max<int64_t>(0, ns));
}

static void mpolrt_route(JitHeader* h, const char* p, uint64_t n) {
  frame_of(h).verdict->route = std::string(p, n);
}

static void mpolrt_retry(JitHeader* h, int64_t ns) {
  frame_of(h).verdict->retry_after_ns = std::max<int64_t>(0, ns);
}

}  // extern "C"

std::vector<jit::HostSymbol> policy_runtime_symbols() {
#define MPOLRT(name)                              \
  jit::HostSymbol {                               \
#name, reinterpret_cast < const void*>(&name) \
  }
  return {MPOLRT(mpolrt_arith),         MPOLRT(mpolrt_unary),
          MPOLRT(mpolrt_now),           MPOLRT(mpolrt_random),
          MPOLRT(mpolrt_remaining),     MPOLRT(mpolrt_fault),
          MPOLRT(mpolrt_eval),          MPOLRT(mpolrt_stmt),
          MPOLRT(mpolrt_const),         MPOLRT(mpolrt_str_data),
          MPOLRT(mpolrt_box_str),       MPOLRT(mpolrt_str_eq),
          MPOLRT(mpolrt_in_str),        MPOLRT(mpolrt_in_scalar),
          MPOLRT(mpolrt_state_has_str), MPOLRT(mpolrt_state_has_scalar),
          MPOLRT(mpolrt_state_len),     MPOLRT(mpolrt_reject),
          MPOLRT(mpolrt_drop),          MPOLRT(mpolrt_delay),
          MPOLRT(mpolrt_route),         MPOLRT(mpolrt_retry),
          MPOLRT(mpolrt_items_size),    MPOLRT(mpolrt_key_str),
          MPOLRT(mpolrt_key_scalar),    MPOLRT(mpolrt_state_get),
          MPOLRT(mpolrt_state_set),     MPOLRT(mpolrt_builtin),
          MPOLRT(mpolrt_concat),        MPOLRT(mpolrt_observe),
          MPOLRT(mpolrt_mirror),        MPOLRT(mpolrt_metadata),
          MPOLRT(mpolrt_endpoints_len), MPOLRT(mpolrt_log),
          MPOLRT(mpolrt_endpoint_at)};
#undef MPOLRT
}

}  // namespace mrpc::compiler
