// The IR evaluator (evaluator.h): statements, expressions, state containers and bounds-checked
// reads and writes of messages in their shared-memory layout.
#include "mrpc/compiler/evaluator.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <string_view>

#include "eval_session.h"
#include "ir_ops.h"
#include "mrpc/base/limits.h"
#include "mrpc/dsl/utf8.h"

namespace mrpc::compiler {

using ir::Expr;
using ir::ExprKind;
using ir::Kind;
using ir::Stmt;
using ir::StmtKind;
using ir::Value;

namespace {

bool in_bounds(uint64_t offset, uint64_t length, uint64_t size) {
  return offset <= size && length <= size - offset;
}

// A message in a region: `i` is its body offset (-1: absent or out of bounds, every field reads
// as its default), items[0] says which region (0 request, 1 response).
Value message_ref(int region, int64_t body) {
  Value v;
  v.kind = Kind::kMessage;
  v.i = body;
  v.items.push_back(Value::of_int(region));
  return v;
}

std::vector<std::string> decode_strings(const uint8_t* data, uint32_t size) {
  std::vector<std::string> out;
  uint64_t at = 0;
  while (data != nullptr && at + 4 <= size) {
    uint32_t n = 0;
    std::memcpy(&n, data + at, 4);
    at += 4;
    if (n > size - at) break;  // a lying length ends the block
    out.emplace_back(reinterpret_cast<const char*>(data + at), n);
    at += n;
  }
  return out;
}

int encoded_get(const mrpc_rpc_view* rpc, const char* key, uint32_t key_size, mrpc_str* value) {
  uint64_t at = 0;
  const uint8_t* data = rpc->metadata;
  uint32_t size = rpc->metadata_size;
  int found = 0;
  while (data != nullptr && at + 4 <= size) {
    uint32_t kn = 0, vn = 0;
    std::memcpy(&kn, data + at, 4);
    if (kn > size - at - 4) break;
    const char* k = reinterpret_cast<const char*>(data + at + 4);
    at += 4 + uint64_t{kn};
    if (at + 4 > size) break;
    std::memcpy(&vn, data + at, 4);
    if (vn > size - at - 4) break;
    const char* v = reinterpret_cast<const char*>(data + at + 4);
    at += 4 + uint64_t{vn};
    if (kn == key_size && std::memcmp(k, key, kn) == 0) {
      *value = mrpc_str{v, vn};
      found = 1;  // a later duplicate wins
    }
  }
  return found;
}

// With `ops_context` a std::string holding the view's block (tests), set and remove rewrite it:
// the key's entries go, a set appends the new one. Without one, the block cannot change.
int encoded_rewrite(mrpc_rpc_view* rpc, const char* key, uint32_t key_size, const char* value,
                    uint32_t value_size, bool set) {
  auto* block = static_cast<std::string*>(rpc->ops_context);
  if (block == nullptr) return 1;
  std::vector<std::string> flat = decode_strings(rpc->metadata, rpc->metadata_size);
  std::vector<std::string> kept;
  for (size_t i = 0; i + 1 < flat.size(); i += 2) {
    if (flat[i].size() == key_size && std::memcmp(flat[i].data(), key, key_size) == 0) continue;
    kept.push_back(std::move(flat[i]));
    kept.push_back(std::move(flat[i + 1]));
  }
  if (set) {
    kept.emplace_back(key, key_size);
    kept.emplace_back(value, value_size);
  }
  std::string rewritten = encode_strings(kept);
  if (rewritten.size() > limits::kMaxMetadataBytes) return 1;
  *block = std::move(rewritten);
  rpc->metadata = reinterpret_cast<const uint8_t*>(block->data());
  rpc->metadata_size = static_cast<uint32_t>(block->size());
  return 0;
}
int encoded_set(mrpc_rpc_view* rpc, const char* key, uint32_t key_size, const char* value,
                uint32_t value_size) {
  return encoded_rewrite(rpc, key, key_size, value, value_size, true);
}
int encoded_remove(mrpc_rpc_view* rpc, const char* key, uint32_t key_size) {
  return encoded_rewrite(rpc, key, key_size, nullptr, 0, false);
}

constexpr mrpc_rpc_view_ops kEncodedOps = {encoded_get, encoded_set, encoded_remove};

std::string str(mrpc_str s) {
  return s.data == nullptr ? std::string() : std::string(s.data, s.size);
}

double as_number(const Value& v) {
  return v.kind == Kind::kFloat ? v.f : static_cast<double>(v.i);
}

}  // namespace

std::string encode_strings(const std::vector<std::string>& strings) {
  std::string out;
  for (const auto& s : strings) {
    auto n = static_cast<uint32_t>(s.size());
    out.append(reinterpret_cast<const char*>(&n), 4);
    out += s;
  }
  return out;
}

std::string encode_metadata(const std::vector<std::pair<std::string, std::string>>& entries) {
  std::vector<std::string> flat;
  for (const auto& [k, v] : entries) {
    flat.push_back(k);
    flat.push_back(v);
  }
  return encode_strings(flat);
}

const mrpc_rpc_view_ops* encoded_block_ops() {
  return &kEncodedOps;
}

// ---- one run of one handler ----

class Evaluation {
  friend class EvalSession;

 public:
  Evaluation(PolicyInstance& instance, mrpc_rpc_view& rpc, const ir::Handler& handler,
             Verdict& verdict, std::vector<Value>& locals)
      : in_(instance),
        policy_(instance.policy_),
        rpc_(rpc),
        handler_(handler),
        v_(verdict),
        locals_(locals) {
    if (locals_.size() != handler.locals.size()) locals_.resize(handler.locals.size());
    if (rpc_.call_variables != nullptr) {
      call_ = static_cast<Value*>(rpc_.call_variables);
    } else if (!policy_.call_variables.empty()) {
      // No call record: cells for this run only, at their initial values.
      in_.call_scratch_.resize(policy_.call_variables.size());
      for (size_t i = 0; i < policy_.call_variables.size(); ++i)
        in_.call_scratch_[i] = policy_.call_variables[i].initial;
      call_ = in_.call_scratch_.data();
    }
  }

  void run() {
    if (start()) block(handler_.body);
  }

  // The checks before the body: false when the handler does not run on this call (a method the
  // policy does not apply to) or was stopped (a message of another schema).
  bool start() {
    if (policy_.schema_known) {
      if (rpc_.policy_method != 0 && rpc_.policy_method <= policy_.methods.size()) {
        method_ = static_cast<int>(rpc_.policy_method - 1);  // resolved by the daemon
      } else {
        match_method();
      }
      if (method_ < 0) return false;  // not a call this policy applies to: it does not run
      const ir::Method& m = policy_.methods[static_cast<size_t>(method_)];
      if (!schema_matches(rpc_.request, m.input) || !schema_matches(rpc_.response, m.output)) {
        abort(StatusCode::kFailedPrecondition,
              fmt::format("policy '{}': the message of {} is not the schema the policy was "
                          "built against",
                          policy_.name, m.full_name));
        return false;
      }
    }
    return true;
  }

  // `service + "." + method` against each full name of the policy's methods, without building it
  // (the per-call path allocates nothing).
  void match_method() {
    std::string_view service(rpc_.service.data != nullptr ? rpc_.service.data : "",
                             rpc_.service.data != nullptr ? rpc_.service.size : 0);
    std::string_view method(rpc_.method.data != nullptr ? rpc_.method.data : "",
                            rpc_.method.data != nullptr ? rpc_.method.size : 0);
    for (size_t m = 0; m < policy_.methods.size(); ++m) {
      std::string_view full = policy_.methods[m].full_name;
      if (full.size() == service.size() + 1 + method.size() && full.starts_with(service) &&
          full[service.size()] == '.' && full.ends_with(method)) {
        method_ = static_cast<int>(m);
      }
    }
  }

  // For the JIT's runtime helpers (eval_session.h): they run the parts of a handler the lowering
  // leaves to the evaluator, on the same locals, state and verdict.
  bool& ended_flag() { return ended_; }
  bool state_contains(uint32_t slot, const Value& key) const {
    return in_.containers_[slot].entries.count(key) > 0;
  }
  size_t state_size(uint32_t slot) const { return in_.containers_[slot].entries.size(); }
  Value state_lookup(uint32_t slot, const Value& key) { return lookup_state(slot, key); }

  void block(const ir::Block& b) {
    for (const auto& s : b) {
      if (ended_ || breaking_) return;
      stmt(*s);
    }
  }
  static bool schema_matches(const mrpc_message_view& view, const MessageLayout* layout) {
    return view.region == nullptr || view.fingerprint == 0 ||
           view.fingerprint == layout->fingerprint();
  }

  void abort(StatusCode code, std::string message) {
    if (ended_) return;
    ended_ = true;
    v_.aborted = true;
    v_.outcome = Verdict::Outcome::kReject;
    v_.status = code;
    v_.message = std::move(message);
  }
  void count(bool fault) {
    if (fault) ++v_.defined_faults;
  }
  Value checked_string(Value v) {
    if (ir::string_too_long(v)) {
      abort(StatusCode::kResourceExhausted,
            fmt::format("policy '{}': a string of {} bytes is over limits::kMaxPolicyStringBytes "
                        "({})",
                        policy_.name, v.s.size(), limits::kMaxPolicyStringBytes));
      v.s.clear();
    }
    return v;
  }

  // ---- statements ----

  void stmt(const Stmt& s) {
    switch (s.kind) {
      case StmtKind::kLet:
        locals_[s.slot] = eval(*s.exprs[0]);
        return;
      case StmtKind::kAssign:
        assign(s);
        return;
      case StmtKind::kRemove: {
        const Expr& index = *s.exprs[0];
        if (index.kind == ExprKind::kMetadata) {
          Value key = eval(*index.children[0]);
          if (ended_) return;
          const mrpc_rpc_view_ops* ops = rpc_.ops != nullptr ? rpc_.ops : &kEncodedOps;
          // No way to remove (or the view refused): a fault with no effect.
          count(ops->metadata_remove == nullptr ||
                ops->metadata_remove(&rpc_, key.s.data(), static_cast<uint32_t>(key.s.size())) !=
                    0);
          return;
        }
        Value key = eval(*index.children[1]);
        in_.containers_[index.children[0]->slot].entries.erase(key);
        return;
      }
      case StmtKind::kSetInsert:
        put(s.slot, eval(*s.exprs[0]), Value{});
        return;
      case StmtKind::kSetRemove:
        in_.containers_[s.slot].entries.erase(eval(*s.exprs[0]));
        return;
      case StmtKind::kClear:
        write_field(*s.exprs[0], std::nullopt);
        return;
      case StmtKind::kListAppend: {
        Value item = eval(*s.exprs[0]);
        if (ended_) return;
        Value& list = locals_[s.slot];
        uint64_t bytes = item.s.size();
        for (const Value& held : list.items) bytes += held.s.size();
        if (list.items.size() >= static_cast<size_t>(limits::kMaxLocalListElements) ||
            bytes > limits::kMaxLocalListBytes) {
          abort(StatusCode::kResourceExhausted,
                fmt::format("policy '{}': appending to list '{}' of {} elements ({} bytes) passes "
                            "limits::kMaxLocalListElements ({}) or kMaxLocalListBytes ({})",
                            policy_.name, handler_.locals[s.slot].name, list.items.size(), bytes,
                            limits::kMaxLocalListElements, limits::kMaxLocalListBytes));
          return;
        }
        list.items.push_back(std::move(item));
        return;
      }
      case StmtKind::kIf:
        for (size_t i = 0; i < s.blocks.size(); ++i) {
          if (i >= s.exprs.size() || eval(*s.exprs[i]).i != 0) {
            if (!ended_) block(s.blocks[i]);
            return;
          }
          if (ended_) return;
        }
        return;
      case StmtKind::kForRange:
        for (int64_t i = s.exprs[0]->value.i; i < s.exprs[1]->value.i && !ended_; ++i) {
          locals_[s.slot] = Value::of_int(i);
          block(s.blocks[0]);
          if (breaking_) break;
        }
        breaking_ = false;
        return;
      case StmtKind::kForEach: {
        std::vector<Value> items = elements(*s.exprs[0]);
        for (const Value& item : items) {
          if (ended_) return;
          locals_[s.slot] = item;
          block(s.blocks[0]);
          if (breaking_) break;
        }
        breaking_ = false;
        return;
      }
      case StmtKind::kPass:
        ended_ = true;
        return;
      case StmtKind::kDrop:
        ended_ = true;
        v_.outcome = Verdict::Outcome::kDrop;
        return;
      case StmtKind::kBreak:
        breaking_ = true;  // the enclosing loop stops (the checker allows `break` in one only)
        return;
      case StmtKind::kAction:
        action(s);
        return;
      case StmtKind::kCounterAdd: {
        Value n = eval(*s.exprs[0]);
        if (ended_) return;
        int64_t* count = policy_.states[s.slot].labels.empty() ? &in_.scalars_[s.slot].i
                                                               : metric_count(s.slot, s, 1, 0);
        if (count == nullptr) return;
        // Counters only go up: a negative amount is ignored (a fault); the count saturates.
        if (n.i < 0) {
          ++v_.defined_faults;
          return;
        }
        *count = ir::saturating_add(*count, n.i);
        return;
      }
    }
  }

  // The count `index` of the series of labelled metric `slot` named by the label values
  // s.exprs[first..] (evaluated here); null when evaluating one ended the handler.
  int64_t* metric_count(uint32_t slot, const Stmt& s, size_t first, size_t index) {
    const ir::State& metric = policy_.states[slot];
    PolicyInstance::LabelledMetric& m = in_.labelled_[slot];
    std::vector<std::string> key;
    key.reserve(s.exprs.size() - first);
    bool too_long = false;
    for (size_t i = first; i < s.exprs.size(); ++i) {
      Value v = eval(*s.exprs[i]);
      if (ended_) return nullptr;
      key.push_back(label_text(v));
      // Too long, or not UTF-8 (the Prometheus text format's label values are): the overflow
      // series counts it.
      too_long = too_long || key.back().size() > limits::kMaxMetricLabelValueBytes ||
                 dsl::first_invalid_utf8(key.back()) != std::string_view::npos;
    }
    const size_t width = metric.type.is(Kind::kHistogram) ? metric.buckets.size() + 1 : 1;
    auto it = too_long ? m.series.end() : m.series.find(key);
    if (it == m.series.end()) {
      if (too_long || m.series.size() >= limits::kMaxMetricLabelSets) {
        if (m.overflow.empty()) m.overflow.assign(width, 0);
        return &m.overflow[index];
      }
      it = m.series.emplace(std::move(key), std::vector<int64_t>(width, 0)).first;
    }
    return &it->second[index];
  }

  void action(const Stmt& s) {
    std::vector<Value> args;
    if (s.action != Action::kObserve) {
      for (const auto& e : s.exprs) {
        args.push_back(eval(*e));
        if (ended_) return;
      }
    }
    switch (s.action) {
      case Action::kReject:
        ended_ = true;
        v_.outcome = Verdict::Outcome::kReject;
        v_.status = static_cast<StatusCode>(args[0].i);
        v_.message = args[1].s;
        return;
      case Action::kDelay:
        // A negative delay is no delay; the total saturates.
        v_.delay_ns = ir::saturating_add(v_.delay_ns, std::max<int64_t>(0, args[0].i));
        return;
      case Action::kRoute:
        v_.route = args[0].s;
        return;
      case Action::kMirror:
        v_.mirrors.emplace_back(args[0].s, args[1].f);
        return;
      case Action::kRespond:
        ended_ = true;
        v_.outcome = Verdict::Outcome::kRespond;
        v_.response_bytes = args[0].s;
        v_.response_body_offset = static_cast<uint64_t>(args[0].i);
        return;
      case Action::kRetry:
        v_.retry_after_ns = std::max<int64_t>(0, args[0].i);
        return;
      case Action::kLog: {
        LogRecord record;
        record.event = args[0].s;
        for (size_t i = 1; i < args.size(); ++i)
          record.fields.emplace_back(s.log_keys[i - 1], args[i]);
        v_.logs.push_back(std::move(record));
        return;
      }
      case Action::kObserve: {
        uint32_t slot = s.exprs[0]->slot;
        if (policy_.states[slot].labels.empty()) {
          observe(slot, eval(*s.exprs[1]));
          return;
        }
        // Labelled: nothing is counted when evaluating an argument ends the handler.
        Value x = eval(*s.exprs[1]);
        if (ended_) return;
        int64_t* count = metric_count(slot, s, 2, bucket_of(slot, x));
        if (count != nullptr) *count = ir::saturating_add(*count, 1);
        return;
      }
    }
  }

  size_t bucket_of(uint32_t slot, const Value& x) const {
    const auto& bounds = policy_.states[slot].buckets;
    for (size_t b = 0; b < bounds.size(); ++b) {
      if (as_number(x) <= as_number(bounds[b])) return b;
    }
    return bounds.size();
  }

  // Counts `x` in the first bucket whose bound it does not pass (or the overflow bucket).
  void observe(uint32_t slot, const Value& x) {
    size_t bucket = bucket_of(slot, x);
    auto& counts = in_.histograms_[slot];
    counts[bucket] = ir::saturating_add(counts[bucket], 1);
  }

  void assign(const Stmt& s) {
    const Expr& target = *s.exprs[0];
    Value value = eval(*s.exprs[1]);
    if (ended_) return;
    auto combine = [&](const Value& old) {
      if (!s.compound) return value;
      bool fault = false;
      Value r = ir::apply_binary(s.op, old, value, target.type.kind, fault);
      count(fault);
      return checked_string(std::move(r));
    };
    switch (target.kind) {
      case ExprKind::kLocal:
        locals_[target.slot] = combine(locals_[target.slot]);
        return;
      case ExprKind::kCallVariable: {
        Value next = combine(call_[target.slot]);
        if (ended_) return;
        if ((next.kind == Kind::kString || next.kind == Kind::kBytes) &&
            next.s.size() > limits::kMaxPolicyCallVariableBytes) {
          abort(StatusCode::kResourceExhausted,
                fmt::format("policy '{}': per-call variable '{}' given {} bytes, over "
                            "limits::kMaxPolicyCallVariableBytes ({})",
                            policy_.name, target.name, next.s.size(),
                            limits::kMaxPolicyCallVariableBytes));
          return;
        }
        call_[target.slot] = std::move(next);
        return;
      }
      case ExprKind::kState: {
        Value& slot = in_.scalars_[target.slot];
        if (target.type.is(Kind::kCounter)) {
          // Counters only go up: a negative bump is ignored; the count saturates.
          if (value.i < 0) {
            ++v_.defined_faults;
            return;
          }
          slot.i = ir::saturating_add(slot.i, value.i);
          return;
        }
        Value next = combine(slot);
        if (ended_ || !storable(next)) return;
        slot = std::move(next);
        return;
      }
      case ExprKind::kRpc:
        if (target.rpc_field == ir::RpcField::kPriority) {
          int64_t p = combine(Value::of_int(rpc_.priority)).i;
          rpc_.priority = static_cast<int32_t>(std::clamp<int64_t>(
              p, std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()));
        } else {
          rpc_.deadline_ns = combine(Value::of(Kind::kTime, rpc_.deadline_ns)).i;
        }
        return;
      case ExprKind::kIndex: {
        const Expr& container = *target.children[0];
        if (container.kind == ExprKind::kState) {
          Value key = eval(*target.children[1]);
          Value old = lookup_state(container.slot, key);
          Value next = combine(old);
          if (target.type.is(Kind::kResponse)) next = stored_response();
          if (!ended_) put(container.slot, std::move(key), std::move(next));
          return;
        }
        // A map field entry: needs the daemon's allocator (recorded, not applied).
        if (s.compound) value = combine(eval(target));
        Value key = eval(*target.children[1]);
        v_.writes.push_back(
            FieldWrite{path_text(container) + "[" + ir::value_text(key) + "]", value, false});
        return;
      }
      case ExprKind::kField:
        if (s.compound) value = combine(eval(target));
        write_field(target, value);
        return;
      case ExprKind::kMetadata: {
        // A request header the callee receives: set through the view (the daemon's ops check
        // the key and the metadata limit); refused, it is a fault with no effect.
        Value key = eval(*target.children[0]);
        if (ended_) return;
        const mrpc_rpc_view_ops* ops = rpc_.ops != nullptr ? rpc_.ops : &kEncodedOps;
        count(ops->metadata_set == nullptr ||
              ops->metadata_set(&rpc_, key.s.data(), static_cast<uint32_t>(key.s.size()),
                                value.s.data(), static_cast<uint32_t>(value.s.size())) != 0);
        return;
      }
      default:
        return;
    }
  }

  // A string stored in state longer than limits::kMaxStateStringBytes is a fault.
  bool storable(const Value& v) {
    bool too_long = (v.kind == Kind::kString || v.kind == Kind::kBytes) &&
                    v.s.size() > limits::kMaxStateStringBytes;
    if (too_long) {
      abort(StatusCode::kResourceExhausted,
            fmt::format("policy '{}': storing a string of {} bytes in state, over "
                        "limits::kMaxStateStringBytes ({})",
                        policy_.name, v.s.size(), limits::kMaxStateStringBytes));
    }
    return !too_long;
  }

  Value stored_response() {
    Value r;
    r.kind = Kind::kResponse;
    const mrpc_message_view& m = rpc_.response;
    if (m.region == nullptr || m.region_size > limits::kMaxStoredResponseBytes) {
      ++v_.refused_inserts;  // too big to store: an empty response is kept instead
      return r;
    }
    r.s.assign(reinterpret_cast<const char*>(m.region), m.region_size);
    r.i = static_cast<int64_t>(m.body_offset);
    return r;
  }

  // Inserts or updates a container entry under its capacity and eviction rule.
  // The key is copied only when a new entry is made (an update allocates nothing).
  void put(uint32_t slot, const Value& key, Value value) {
    if (!storable(key) || !storable(value)) return;
    const ir::State& st = policy_.states[slot];
    PolicyInstance::Container& c = in_.containers_[slot];
    auto it = c.entries.find(key);
    if (it != c.entries.end()) {
      it->second.first = std::move(value);
      if (st.evict == ir::Evict::kLru) it->second.second = ++c.stamp;
      return;
    }
    int64_t capacity = st.capacity_param >= 0
                           ? in_.params_[static_cast<size_t>(st.capacity_param)].i
                           : st.capacity;
    if (static_cast<int64_t>(c.entries.size()) >= capacity) {
      if (st.evict == ir::Evict::kReject || c.entries.empty()) {
        ++v_.refused_inserts;
        return;
      }
      auto oldest = std::min_element(c.entries.begin(), c.entries.end(), [](auto& a, auto& b) {
        return a.second.second < b.second.second;
      });
      c.entries.erase(oldest);
    }
    c.entries.emplace(key, std::make_pair(std::move(value), ++c.stamp));
  }

  Value lookup_state(uint32_t slot, const Value& key) {
    PolicyInstance::Container& c = in_.containers_[slot];
    auto it = c.entries.find(key);
    if (it == c.entries.end()) return Value::zero(policy_.states[slot].type.args.back());
    if (policy_.states[slot].evict == ir::Evict::kLru) it->second.second = ++c.stamp;
    return it->second.first;
  }

  // ---- messages ----

  mrpc_message_view& view(int region) { return region == 0 ? rpc_.request : rpc_.response; }

  // The message `e` (of message type) evaluates to, with the layout that applies.
  Value message(const Expr& e) { return eval(e); }

  bool valid(const Value& m, const MessageLayout* layout) {
    if (m.i < 0 || layout == nullptr) return false;
    const mrpc_message_view& r = view(static_cast<int>(m.items[0].i));
    return r.region != nullptr &&
           in_bounds(static_cast<uint64_t>(m.i), layout->body_size(), r.region_size);
  }

  template <typename T>
  T load(int region, uint64_t at) {
    T out;
    std::memcpy(&out, view(region).region + at, sizeof(T));
    return out;
  }

  bool present(const Value& m, const ir::FieldStep& step) {
    const FieldLayout& f = *step.field;
    int region = static_cast<int>(m.items[0].i);
    auto body = static_cast<uint64_t>(m.i);
    if (f.presence_bit >= 0) {
      auto word = load<uint32_t>(region, body + 4 * static_cast<uint64_t>(f.presence_bit / 32));
      if ((word & (1u << (f.presence_bit % 32))) == 0) return false;
    }
    if (f.oneof_index >= 0) {
      const OneofLayout& o = step.holder->oneofs()[static_cast<size_t>(f.oneof_index)];
      if (load<uint32_t>(region, body + o.case_offset) != f.number) return false;
    }
    return true;
  }

  // A RegionRef at `at`, checked against the region (`unit` bytes per element): empty when it
  // points outside.
  RegionRef region_ref(int region, uint64_t at, uint64_t unit) {
    RegionRef ref = load<RegionRef>(region, at);
    uint64_t size = view(region).region_size;
    if (ref.size == 0 || unit == 0 || ref.size > size / unit ||
        !in_bounds(ref.offset, uint64_t{ref.size} * unit, size)) {
      return RegionRef{0, 0, 0};
    }
    return ref;
  }

  Value scalar_at(int region, uint64_t at, FieldKind kind, const ir::Type& type) {
    Value v = Value::zero(type);
    switch (kind) {
      case FieldKind::kBool:
        v.i = load<uint8_t>(region, at) != 0;
        break;
      case FieldKind::kInt32:
      case FieldKind::kEnum:
        v.i = load<int32_t>(region, at);
        break;
      case FieldKind::kUint32:
        v.i = load<uint32_t>(region, at);
        break;
      case FieldKind::kInt64:
        v.i = load<int64_t>(region, at);
        break;
      case FieldKind::kUint64:
        v.i = static_cast<int64_t>(load<uint64_t>(region, at));
        break;
      case FieldKind::kFloat:
        v.f = load<float>(region, at);
        break;
      case FieldKind::kDouble:
        v.f = load<double>(region, at);
        break;
      case FieldKind::kString:
      case FieldKind::kBytes: {
        RegionRef ref = region_ref(region, at, 1);
        v.s.assign(reinterpret_cast<const char*>(view(region).region + ref.offset), ref.size);
        break;
      }
      case FieldKind::kMessage:
        break;
    }
    return v;
  }

  // A repeated or map field: where its elements are.
  struct Collection {
    int region = 0;
    uint64_t array = 0;
    uint64_t count = 0;
    const FieldLayout* field = nullptr;
  };

  Collection collection(const Expr& field_expr) {
    Collection c;
    Value m = message(*field_expr.children[0]);
    const ir::FieldStep& step = field_expr.steps[static_cast<size_t>(method_)];
    if (ended_ || !valid(m, step.holder)) return c;
    c.region = static_cast<int>(m.items[0].i);
    c.field = step.field;
    RegionRef ref = region_ref(c.region, static_cast<uint64_t>(m.i) + step.field->offset,
                               step.field->element_size);
    c.array = ref.offset;
    c.count = ref.size;
    return c;
  }

  Value element(const Collection& c, uint64_t i, const ir::Type& type) {
    uint64_t at = c.array + i * c.field->element_size;
    if (c.field->kind == FieldKind::kMessage)
      return message_ref(c.region, static_cast<int64_t>(at));
    return scalar_at(c.region, at, c.field->kind, type);
  }

  // Key and value of map entry `i` (an inline entry body).
  std::pair<Value, Value> entry(const Collection& c, uint64_t i, const ir::Type& map_type) {
    const MessageLayout* e = c.field->message;
    uint64_t body = c.array + i * c.field->element_size;
    const FieldLayout* k = e->field_by_number(1);
    const FieldLayout* v = e->field_by_number(2);
    Value value = v->kind == FieldKind::kMessage
                      ? message_ref(c.region, -1)  // message values: not readable by key yet
                      : scalar_at(c.region, body + v->offset, v->kind, map_type.args[1]);
    if (v->kind == FieldKind::kMessage) {
      ir::FieldStep step{e, v, e->fingerprint()};
      Value entry_ref = message_ref(c.region, static_cast<int64_t>(body));
      if (present(entry_ref, step)) {
        RegionRef ref = region_ref(c.region, body + v->offset, 1);
        value = message_ref(c.region, ref.size == 0 ? -1 : static_cast<int64_t>(ref.offset));
      }
    }
    return {scalar_at(c.region, body + k->offset, k->kind, map_type.args[0]), value};
  }

  Value read_field(const Expr& e) {
    const ir::FieldStep& step = e.steps[static_cast<size_t>(method_)];
    if (e.type.is(Kind::kList) || e.type.is(Kind::kMap)) {
      Value out = Value::zero(e.type);
      for (Value& item : elements(e)) out.items.push_back(std::move(item));
      return out;
    }
    Value m = message(*e.children[0]);
    if (ended_) return Value::zero(e.type);
    if (!valid(m, step.holder) || !present(m, step)) {
      return e.type.is(Kind::kMessage) ? message_ref(0, -1) : Value::zero(e.type);
    }
    int region = static_cast<int>(m.items[0].i);
    uint64_t at = static_cast<uint64_t>(m.i) + step.field->offset;
    if (e.type.is(Kind::kMessage)) {
      RegionRef ref = region_ref(region, at, 1);
      return message_ref(region, ref.size == 0 ? -1 : static_cast<int64_t>(ref.offset));
    }
    return scalar_at(region, at, step.field->kind, e.type);
  }

  // Elements of a list, set, repeated field or map field (map: key, value, ...), bounded by
  // limits::kMaxForEachIterations (a longer collection is a fault).
  std::vector<Value> elements(const Expr& e) {
    std::vector<Value> out;
    if (e.kind == ExprKind::kField) {
      Collection c = collection(e);
      if (c.count > static_cast<uint64_t>(limits::kMaxForEachIterations)) {
        abort(StatusCode::kResourceExhausted,
              fmt::format("policy '{}': field '{}' has {} elements, more than "
                          "limits::kMaxForEachIterations ({})",
                          policy_.name, e.name, c.count, limits::kMaxForEachIterations));
        return out;
      }
      for (uint64_t i = 0; i < c.count; ++i) {
        if (e.type.is(Kind::kMap)) {
          auto [k, v] = entry(c, i, e.type);
          out.push_back(std::move(k));
          out.push_back(std::move(v));
        } else {
          out.push_back(element(c, i, e.type.args[0]));
        }
      }
      return out;
    }
    Value v = eval(e);
    if (v.items.size() > static_cast<size_t>(limits::kMaxForEachIterations)) {
      abort(StatusCode::kResourceExhausted,
            fmt::format("policy '{}': a collection of {} elements, more than "
                        "limits::kMaxForEachIterations ({})",
                        policy_.name, v.items.size(), limits::kMaxForEachIterations));
      return out;
    }
    return std::move(v.items);
  }

  // `target = value` (or `clear target` with no value) for a message field.
  void write_field(const Expr& target, const std::optional<Value>& value) {
    FieldWrite w{path_text(target), value.value_or(Value{}), false};
    const ir::FieldStep& step = target.steps[static_cast<size_t>(method_)];
    Value m = message(*target.children[0]);
    if (ended_) return;
    if (!valid(m, step.holder)) {
      // An element past the end (counted as a fault where it was indexed), or a message that
      // is not set: the write has no effect.
      v_.writes.push_back(std::move(w));
      return;
    }
    const FieldLayout& f = *step.field;
    int region = static_cast<int>(m.items[0].i);
    uint8_t* base = view(region).region;
    auto body = static_cast<uint64_t>(m.i);
    uint64_t at = body + f.offset;
    w.region = region;
    w.body = body;
    w.step = &step;
    bool scalar = f.kind != FieldKind::kString && f.kind != FieldKind::kBytes &&
                  f.kind != FieldKind::kMessage && !f.repeated;
    if (!value.has_value()) {
      // A oneof member's storage is shared: cleared only when it is the member set.
      if (f.oneof_index < 0 ||
          load<uint32_t>(
              region,
              body + step.holder->oneofs()[static_cast<size_t>(f.oneof_index)].case_offset) ==
              f.number)
        std::memset(base + at, 0, f.size);
      set_presence(region, body, step, false);
      w.applied = true;
    } else if (scalar) {
      store_scalar(base + at, f.kind, *value);
      set_presence(region, body, step, true);
      w.applied = true;
    }
    v_.writes.push_back(std::move(w));
  }

  // valid(m, step.holder) held for the body: it lies in the region.
  void set_presence(int region, uint64_t body, const ir::FieldStep& step, bool on) {
    set_field_presence(view(region).region, body, step, on);
  }

  // Integers are stored truncated to the field's width (two's complement), like protobuf's
  // own setters on a 64-bit value.
  static void store_scalar(uint8_t* at, FieldKind kind, const Value& v) {
    switch (kind) {
      case FieldKind::kBool: {
        uint8_t b = v.i != 0;
        std::memcpy(at, &b, 1);
        return;
      }
      case FieldKind::kInt32:
      case FieldKind::kEnum:
      case FieldKind::kUint32: {
        auto x = static_cast<uint32_t>(static_cast<uint64_t>(v.i));
        std::memcpy(at, &x, 4);
        return;
      }
      case FieldKind::kInt64:
      case FieldKind::kUint64:
        std::memcpy(at, &v.i, 8);
        return;
      case FieldKind::kFloat: {
        auto x = static_cast<float>(v.f);
        std::memcpy(at, &x, 4);
        return;
      }
      case FieldKind::kDouble:
        std::memcpy(at, &v.f, 8);
        return;
      default:
        return;
    }
  }

  std::string path_text(const Expr& e) {
    switch (e.kind) {
      case ExprKind::kMessageRoot:
        return e.request ? "req" : "resp";
      case ExprKind::kLocal:
        return handler_.locals[e.slot].name;
      case ExprKind::kField:
        return path_text(*e.children[0]) + "." + e.name;
      case ExprKind::kIndex:
        return path_text(*e.children[0]) + "[" + ir::value_text(eval(*e.children[1])) + "]";
      default:
        return "?";
    }
  }

  // ---- expressions ----

  Value eval(const Expr& e) {
    if (ended_) return Value::zero(e.type);
    switch (e.kind) {
      case ExprKind::kConst:
        return e.value;
      case ExprKind::kParam:
        return in_.params_[e.slot];
      case ExprKind::kState:
        return in_.state(policy_.states[e.slot].name);
      case ExprKind::kCallVariable:
        return call_[e.slot];
      case ExprKind::kLocal:
        return locals_[e.slot];
      case ExprKind::kRpc:
        return rpc_field(e);
      case ExprKind::kMetadata: {
        Value key = eval(*e.children[0]);
        mrpc_str out{nullptr, 0};
        const mrpc_rpc_view_ops* ops = rpc_.ops != nullptr ? rpc_.ops : &kEncodedOps;
        if (ops->metadata_get != nullptr &&
            ops->metadata_get(&rpc_, key.s.data(), static_cast<uint32_t>(key.s.size()), &out)) {
          return Value::of_string(str(out));
        }
        return Value::of_string("");
      }
      case ExprKind::kMessageRoot: {
        const mrpc_message_view& m = e.request ? rpc_.request : rpc_.response;
        if (m.region == nullptr) return message_ref(e.request ? 0 : 1, -1);
        return message_ref(e.request ? 0 : 1, static_cast<int64_t>(m.body_offset));
      }
      case ExprKind::kField:
        return read_field(e);
      case ExprKind::kIndex:
        return index(e);
      case ExprKind::kUnary: {
        bool fault = false;
        Value r = ir::apply_unary(e.op, eval(*e.children[0]), fault);
        count(fault);
        return r;
      }
      case ExprKind::kBinary:
        return binary(e);
      case ExprKind::kCall:
        return call(e);
      case ExprKind::kList:
      case ExprKind::kSet:
      case ExprKind::kMap: {
        Value out = Value::zero(e.type);
        for (const auto& c : e.children) out.items.push_back(eval(*c));
        return out;
      }
    }
    return Value::zero(e.type);
  }

  Value rpc_field(const Expr& e) {
    using F = ir::RpcField;
    switch (e.rpc_field) {
      case F::kService:
        return Value::of_string(str(rpc_.service));
      case F::kMethod:
        return Value::of_string(str(rpc_.method));
      case F::kCallerApp:
        return Value::of_string(str(rpc_.caller_app));
      case F::kCallerHost:
        return Value::of_string(str(rpc_.caller_host));
      case F::kCallerUid:
        return Value::of_int(rpc_.caller_uid);
      case F::kDeadline:
        return Value::of(Kind::kTime, rpc_.deadline_ns);
      case F::kRemaining: {
        int64_t now = in_.clock_.now();
        return Value::of(Kind::kDuration, now == std::numeric_limits<int64_t>::min()
                                              ? std::numeric_limits<int64_t>::max()
                                              : ir::saturating_add(rpc_.deadline_ns, -now));
      }
      case F::kSize:
        return Value::of_int(static_cast<int64_t>(
            std::min<uint64_t>(rpc_.size, std::numeric_limits<int64_t>::max())));
      case F::kStatus:
        return Value::of(Kind::kStatus, rpc_.status);
      case F::kLatency:
        return Value::of(Kind::kDuration, rpc_.latency_ns);
      case F::kPriority:
        return Value::of_int(rpc_.priority);
      case F::kEndpoint:
        return Value::of_string(str(rpc_.endpoint));
      case F::kEndpoints: {
        Value out = Value::zero(e.type);
        for (auto& s : decode_strings(rpc_.endpoints, rpc_.endpoints_size))
          out.items.push_back(Value::of_string(std::move(s)));
        return out;
      }
      case F::kAttempt:
        return Value::of_int(rpc_.attempt);
      case F::kMetadata: {
        // The whole block as a map (`k in rpc.metadata`, `len(rpc.metadata)`).
        Value out = Value::zero(e.type);
        for (auto& s : decode_strings(rpc_.metadata, rpc_.metadata_size))
          out.items.push_back(Value::of_string(std::move(s)));
        if (out.items.size() % 2 != 0) out.items.pop_back();
        return out;
      }
    }
    return Value::zero(e.type);
  }

  Value index(const Expr& e) {
    const Expr& object = *e.children[0];
    Value key = eval(*e.children[1]);
    if (ended_) return Value::zero(e.type);
    if (object.kind == ExprKind::kState) return lookup_state(object.slot, key);
    if (object.kind == ExprKind::kField) {
      Collection c = collection(object);
      if (object.type.is(Kind::kList)) {
        // Past the end (or negative): the element type's zero value.
        if (key.i < 0 || static_cast<uint64_t>(key.i) >= c.count) {
          ++v_.defined_faults;
          return e.type.is(Kind::kMessage) ? message_ref(c.region, -1) : Value::zero(e.type);
        }
        return element(c, static_cast<uint64_t>(key.i), e.type);
      }
      // A map field: linear scan, a later duplicate key wins.
      std::optional<Value> found;
      for (uint64_t i = 0; i < c.count; ++i) {
        auto [k, v] = entry(c, i, object.type);
        if (k == key) found = std::move(v);
      }
      if (found) return *found;
      return e.type.is(Kind::kMessage) ? message_ref(c.region, -1) : Value::zero(e.type);
    }
    Value container = eval(object);
    if (container.kind == Kind::kList) {
      if (key.i < 0 || static_cast<uint64_t>(key.i) >= container.items.size()) {
        ++v_.defined_faults;
        return Value::zero(e.type);
      }
      return container.items[static_cast<size_t>(key.i)];
    }
    for (size_t i = 0; i + 1 < container.items.size(); i += 2) {
      if (container.items[i] == key) return container.items[i + 1];
    }
    return Value::zero(e.type);
  }

  Value binary(const Expr& e) {
    using O = ir::Op;
    if (e.op == O::kAnd || e.op == O::kOr) {
      bool a = eval(*e.children[0]).i != 0;
      if (e.op == O::kAnd ? !a : a) return Value::of_bool(a);
      return Value::of_bool(eval(*e.children[1]).i != 0);
    }
    if (e.op == O::kIn || e.op == O::kNotIn) {
      Value x = eval(*e.children[0]);
      const Expr& c = *e.children[1];
      bool in = false;
      if (c.kind == ExprKind::kState) {
        in = in_.containers_[c.slot].entries.count(x) > 0;
      } else if (c.kind == ExprKind::kField) {
        Collection coll = collection(c);
        for (uint64_t i = 0; i < coll.count && !in; ++i) {
          in = c.type.is(Kind::kMap) ? entry(coll, i, c.type).first == x
                                     : element(coll, i, c.type.args[0]) == x;
        }
      } else {
        in = ir::contains_value(eval(c), x);
      }
      return Value::of_bool(e.op == O::kIn ? in : !in);
    }
    Value a = eval(*e.children[0]);
    Value b = eval(*e.children[1]);
    bool fault = false;
    Value r = ir::apply_binary(e.op, a, b, e.type.kind, fault);
    count(fault);
    return checked_string(std::move(r));
  }

  Value call(const Expr& e) {
    switch (e.builtin) {
      case Builtin::kNow:
        return Value::of(Kind::kTime, in_.clock_.now());
      case Builtin::kRandom:
        return Value::of_float(in_.random_.next_unit());
      case Builtin::kHas: {
        const Expr& f = *e.children[0];
        const ir::FieldStep& step = f.steps[static_cast<size_t>(method_)];
        Value m = message(*f.children[0]);
        return Value::of_bool(
            !ended_ && valid(m, step.holder) && present(m, step) &&
            (f.type.is_scalar() || load<RegionRef>(static_cast<int>(m.items[0].i),
                                                   static_cast<uint64_t>(m.i) + step.field->offset)
                                           .size != 0));
      }
      case Builtin::kLen: {
        const Expr& x = *e.children[0];
        if (x.kind == ExprKind::kField && (x.type.is(Kind::kList) || x.type.is(Kind::kMap)))
          return Value::of_int(static_cast<int64_t>(collection(x).count));
        if (x.kind == ExprKind::kState && !x.type.is_scalar())
          return Value::of_int(static_cast<int64_t>(in_.containers_[x.slot].entries.size()));
        break;
      }
      default:
        break;
    }
    std::vector<Value> args;
    for (const auto& c : e.children) args.push_back(eval(*c));
    if (ended_) return Value::zero(e.type);
    bool fault = false;
    Value r = ir::apply_builtin(e.builtin, args, e.type.kind, fault);
    count(fault);
    return checked_string(std::move(r));
  }

  PolicyInstance& in_;
  const ir::Policy& policy_;
  mrpc_rpc_view& rpc_;
  const ir::Handler& handler_;
  Verdict& v_;
  std::vector<Value>& locals_;
  int method_ = -1;
  Value* call_ = nullptr;  // the per-call variables' cells
  bool ended_ = false;
  bool breaking_ = false;  // a `break` ran: blocks up to the innermost loop stop
};

// ---- PolicyInstance ----

PolicyInstance::PolicyInstance(const ir::Policy& policy, const Clock& clock, RandomSource& random)
    : policy_(policy), clock_(clock), random_(random) {
  for (const auto& p : policy.params) params_.push_back(p.default_value);
  scalars_.resize(policy.states.size());
  containers_.resize(policy.states.size());
  histograms_.resize(policy.states.size());
  labelled_.resize(policy.states.size());
  for (size_t i = 0; i < policy.states.size(); ++i) {
    const ir::State& s = policy.states[i];
    if (s.type.is_scalar()) scalars_[i] = s.initial;
    if (s.type.is(Kind::kCounter)) scalars_[i] = Value::of_int(0);
    if (s.type.is(Kind::kHistogram)) histograms_[i].assign(s.buckets.size() + 1, 0);
  }
}

Status PolicyInstance::set_param(const std::string& name, Value value) {
  for (size_t i = 0; i < policy_.params.size(); ++i) {
    const ir::Param& p = policy_.params[i];
    if (p.name != name) continue;
    if (value.kind != p.type.kind) {
      return Status(StatusCode::kInvalidArgument,
                    fmt::format("param '{}' is {}, not {}", name, ir::type_text(p.type),
                                ir::type_text(ir::Type::of(value.kind))));
    }
    size_t n = value.items.size() / (value.kind == Kind::kMap ? 2 : 1);
    if (n > static_cast<size_t>(limits::kMaxParamElements)) {
      return Status(StatusCode::kInvalidArgument,
                    fmt::format("param '{}' has {} elements, over limits::kMaxParamElements ({})",
                                name, n, limits::kMaxParamElements));
    }
    for (const ir::State& s : policy_.states) {
      if (s.capacity_param == static_cast<int32_t>(i) &&
          (value.i < 1 || value.i > limits::kMaxContainerCapacity)) {
        return Status(StatusCode::kInvalidArgument,
                      fmt::format("param '{}' = {} sizes state '{}': outside 1..{} "
                                  "(limits::kMaxContainerCapacity)",
                                  name, value.i, s.name, limits::kMaxContainerCapacity));
      }
    }
    params_[i] = std::move(value);
    // A state that starts from this param starts from the attached value (params are set at
    // attach time, before any call; an upgrade then carries the old state over it).
    for (size_t s = 0; s < policy_.states.size(); ++s)
      if (policy_.states[s].initial_param == static_cast<int32_t>(i)) scalars_[s] = params_[i];
    return {};
  }
  return Status(StatusCode::kNotFound,
                fmt::format("policy '{}' has no param '{}'", policy_.name, name));
}

Verdict PolicyRunner::run(ir::Event event, mrpc_rpc_view& rpc) {
  Verdict verdict;
  run_into(event, rpc, verdict);
  return verdict;
}

void PolicyInstance::run_into(ir::Event event, mrpc_rpc_view& rpc, Verdict& verdict) {
  verdict.reset();
  const ir::Handler* handler = policy_.handler_for(event);
  if (handler == nullptr) return;
  std::vector<Value> locals;
  Evaluation(*this, rpc, *handler, verdict, locals).run();
}

Value PolicyInstance::state(const std::string& name) const {
  for (size_t i = 0; i < policy_.states.size(); ++i) {
    const ir::State& s = policy_.states[i];
    if (s.name != name) continue;
    if (!s.labels.empty()) {
      // A map: the label values (a list of strings) -> the count (counter) or the bucket
      // counts (histogram, a list); the overflow series last, when it counted anything.
      Value out;
      out.kind = Kind::kMap;
      auto add = [&](const std::vector<std::string>& key, const std::vector<int64_t>& counts) {
        Value k;
        k.kind = Kind::kList;
        for (const auto& label : key) k.items.push_back(Value::of_string(label));
        out.items.push_back(std::move(k));
        if (s.type.is(Kind::kCounter)) {
          out.items.push_back(Value::of_int(counts[0]));
          return;
        }
        Value v;
        v.kind = Kind::kList;
        for (int64_t c : counts) v.items.push_back(Value::of_int(c));
        out.items.push_back(std::move(v));
      };
      for (const auto& [key, counts] : labelled_[i].series) add(key, counts);
      if (!labelled_[i].overflow.empty())
        add(std::vector<std::string>(s.labels.size(), kOverflowLabel), labelled_[i].overflow);
      return out;
    }
    if (s.type.is_scalar() || s.type.is(Kind::kCounter)) return scalars_[i];
    if (s.type.is(Kind::kHistogram)) {
      Value out;
      out.kind = Kind::kList;
      for (int64_t c : histograms_[i]) out.items.push_back(Value::of_int(c));
      return out;
    }
    Value out;
    out.kind = s.type.kind;
    for (const auto& [k, v] : containers_[i].entries) {
      out.items.push_back(k);
      if (s.type.is(Kind::kMap)) out.items.push_back(v.first);
    }
    return out;
  }
  return Value{};
}

Status PolicyInstance::set_state(const std::string& name, const Value& value) {
  for (size_t i = 0; i < policy_.states.size(); ++i) {
    const ir::State& s = policy_.states[i];
    if (s.name != name) continue;
    Kind want = !s.labels.empty()             ? Kind::kMap
                : s.type.is(Kind::kCounter)   ? Kind::kInt
                : s.type.is(Kind::kHistogram) ? Kind::kList
                                              : s.type.kind;
    if (value.kind != want) {
      return Status(StatusCode::kInvalidArgument,
                    fmt::format("state '{}' is {}, the value given is {}", name,
                                ir::type_text(s.type), ir::type_text(ir::Type::of(value.kind))));
    }
    if (!s.labels.empty()) return set_labelled(i, value);
    if (s.type.is_scalar() || s.type.is(Kind::kCounter)) {
      scalars_[i] = value;
      return Status::ok_status();
    }
    if (s.type.is(Kind::kHistogram)) {
      if (value.items.size() != histograms_[i].size()) {
        return Status(StatusCode::kInvalidArgument,
                      fmt::format("histogram '{}' has {} buckets, the value given has {}", name,
                                  histograms_[i].size(), value.items.size()));
      }
      for (size_t b = 0; b < value.items.size(); ++b) histograms_[i][b] = value.items[b].i;
      return Status::ok_status();
    }
    bool is_map = s.type.is(Kind::kMap);
    size_t step = is_map ? 2 : 1;
    const Kind key_kind = s.type.args.empty() ? Kind::kVoid : s.type.args[0].kind;
    for (size_t k = 0; k + step <= value.items.size(); k += step) {
      if (value.items[k].kind != key_kind ||
          (is_map && s.type.args.size() > 1 && value.items[k + 1].kind != s.type.args[1].kind)) {
        return Status(
            StatusCode::kInvalidArgument,
            fmt::format("an entry of '{}' does not have the type {}", name, ir::type_text(s.type)));
      }
    }
    int64_t capacity =
        s.capacity_param >= 0 ? params_[static_cast<size_t>(s.capacity_param)].i : s.capacity;
    Container fresh;
    size_t entries = value.items.size() / step;
    size_t first =
        entries > static_cast<size_t>(capacity) ? entries - static_cast<size_t>(capacity) : 0;
    for (size_t e = first; e < entries; ++e) {
      const Value& key = value.items[e * step];
      Value mapped = is_map ? value.items[e * step + 1] : Value{};
      fresh.entries[key] = {std::move(mapped), ++fresh.stamp};
    }
    containers_[i] = std::move(fresh);
    return Status::ok_status();
  }
  return Status(StatusCode::kNotFound, fmt::format("the policy has no state '{}'", name));
}

Status PolicyInstance::set_labelled(size_t slot, const Value& value) {
  const ir::State& s = policy_.states[slot];
  const size_t width = s.type.is(Kind::kHistogram) ? s.buckets.size() + 1 : 1;
  LabelledMetric fresh;
  for (size_t e = 0; e + 1 < value.items.size(); e += 2) {
    const Value& key = value.items[e];
    const Value& counts = value.items[e + 1];
    bool fits =
        key.kind == Kind::kList && key.items.size() == s.labels.size() &&
        (s.type.is(Kind::kCounter) ? counts.kind == Kind::kInt
                                   : counts.kind == Kind::kList && counts.items.size() == width);
    if (!fits) {
      return Status(StatusCode::kInvalidArgument,
                    fmt::format("a series of '{}' does not fit its {} labels and {} counts", s.name,
                                s.labels.size(), width));
    }
    std::vector<std::string> labels;
    for (const auto& label : key.items) labels.push_back(label.s);
    std::vector<int64_t> n;
    if (s.type.is(Kind::kCounter)) n.push_back(counts.i);
    for (const auto& c : counts.items) n.push_back(c.i);
    bool overflow = std::all_of(labels.begin(), labels.end(),
                                [](const std::string& l) { return l == kOverflowLabel; });
    if (overflow || fresh.series.size() >= limits::kMaxMetricLabelSets) {
      if (fresh.overflow.empty()) fresh.overflow.assign(width, 0);
      for (size_t b = 0; b < width; ++b)
        fresh.overflow[b] = ir::saturating_add(fresh.overflow[b], n[b]);
      continue;
    }
    fresh.series[std::move(labels)] = std::move(n);
  }
  labelled_[slot] = std::move(fresh);
  return Status::ok_status();
}

std::string label_text(const Value& value) {
  switch (value.kind) {
    case Kind::kString:
    case Kind::kBytes:
      return value.s;
    case Kind::kBool:
      return value.i != 0 ? "true" : "false";
    case Kind::kStatus:
    case Kind::kFloat:
      return ir::value_text(value);
    default:
      return std::to_string(value.i);
  }
}

// ---- EvalSession (eval_session.h) ----

static_assert(sizeof(Evaluation) <= EvalSession::kStorageBytes &&
              alignof(Evaluation) <= alignof(std::max_align_t));

EvalSession::EvalSession(PolicyInstance& instance) : instance_(instance) {}

EvalSession::~EvalSession() {
  end();
}

bool EvalSession::begin(mrpc_rpc_view& rpc, const ir::Handler& handler, Verdict& verdict) {
  end();
  active_ = new (storage_) Evaluation(instance_, rpc, handler, verdict, locals_);
  return active_->start();
}

void EvalSession::end() {
  if (active_ != nullptr) active_->~Evaluation();
  active_ = nullptr;
}

Value EvalSession::eval(const Expr& e) {
  return active_->eval(e);
}

void EvalSession::stmt(const Stmt& s) {
  if (!active_->ended_) active_->stmt(s);
}

int EvalSession::method() const {
  return active_->method_;
}

bool* EvalSession::ended_flag() {
  return &active_->ended_;
}

Value EvalSession::state_lookup(uint32_t slot, const Value& key) {
  return active_->lookup_state(slot, key);
}

void EvalSession::state_put(uint32_t slot, const Value& key, Value value) {
  active_->put(slot, key, std::move(value));
}

void EvalSession::observe(uint32_t slot, const Value& x) {
  active_->observe(slot, x);
}

void EvalSession::check_string(Value& v) {
  v = active_->checked_string(std::move(v));
}

bool EvalSession::state_contains(uint32_t slot, const Value& key) const {
  return active_->state_contains(slot, key);
}

size_t EvalSession::state_size(uint32_t slot) const {
  return active_->state_size(slot);
}

Value* EvalSession::params() {
  return instance_.params_.data();
}

Value* EvalSession::scalars() {
  return instance_.scalars_.data();
}

std::vector<int64_t>& EvalSession::histogram(uint32_t slot) {
  return instance_.histograms_[slot];
}

void set_field_presence(uint8_t* region, uint64_t body, const ir::FieldStep& step, bool on) {
  const FieldLayout& f = *step.field;
  if (f.presence_bit >= 0) {
    const uint64_t at = body + 4 * static_cast<uint64_t>(f.presence_bit / 32);
    uint32_t word;
    std::memcpy(&word, region + at, 4);
    const uint32_t bit = 1u << (f.presence_bit % 32);
    word = on ? (word | bit) : (word & ~bit);
    std::memcpy(region + at, &word, 4);
  }
  if (f.oneof_index >= 0) {
    const OneofLayout& o = step.holder->oneofs()[static_cast<size_t>(f.oneof_index)];
    uint32_t current;
    std::memcpy(&current, region + body + o.case_offset, 4);
    const uint32_t next = on ? f.number : (current == f.number ? 0 : current);
    std::memcpy(region + body + o.case_offset, &next, 4);
  }
}

}  // namespace mrpc::compiler
