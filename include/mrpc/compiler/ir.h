// The typed, resolved intermediate form of a checked .mpol policy: what the verifier checks, the
// evaluator runs and (later) the LLVM lowering compiles. Built by Checker::build_ir from a file
// that checked clean. In it:
//   - every expression has a Type; int literals that stand for floats are float constants;
//   - every name is resolved: consts are folded into kConst values, params/state/locals are
//     slots (Policy::params, Policy::states, Handler::locals), builtins and actions are enums
//     from the one table in builtins.h, rpc fields are RpcField values;
//   - constant subexpressions are folded (never across a run-time fault: `1 / 0` stays);
//   - every message field step (`req.a`, `.b`, `[i]`) carries, per matched method (the order of
//     Policy::methods), the offset and kind of the field in the shared-memory layout
//     (message/layout.h) and the layout fingerprint it was resolved against.
// Ownership: a Unit owns its policies, their nodes (unique_ptr, no sharing) and the LayoutSet
// every FieldStep points into. Immutable once built; may be read from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mrpc/compiler/builtins.h"
#include "mrpc/dsl/source.h"
#include "mrpc/message/layout.h"

namespace mrpc::compiler::ir {

enum class Kind : uint8_t {
  kVoid,
  kInt,    // int64
  kFloat,  // double
  kBool,
  kString,  // UTF-8 bytes
  kBytes,
  kDuration,  // int64 nanoseconds
  kTime,      // int64 nanoseconds of CLOCK_MONOTONIC; 0 is "never"
  kStatus,    // a gRPC status code (StatusCode)
  kList,
  kSet,
  kMap,
  kCounter,
  kHistogram,
  kResponse,  // a stored copy of a response message
  kMessage,   // a message in shared memory (req, resp, a sub-message, a repeated element)
};

struct Type {
  Kind kind = Kind::kVoid;
  std::vector<Type> args;  // list/set: element; map: key, value
  // kMessage: the layout per matched method (index = Policy::methods), null where it is not
  // a message for that method.
  std::vector<const MessageLayout*> layouts;

  static Type of(Kind k) { return Type{k, {}, {}}; }
  bool is(Kind k) const { return kind == k; }
  bool is_scalar() const { return kind >= Kind::kInt && kind <= Kind::kStatus; }
};
// "int", "list<string>", "message hotel.Request"
std::string type_text(const Type& type);

// A constant or run-time value. Scalars use `i` (int, bool 0/1, duration and time ns, status
// code), `f` (float) or `s` (string, bytes); list and set keep `items` in order; a map keeps
// key, value, key, value... in `items`.
struct Value {
  Kind kind = Kind::kVoid;
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::vector<Value> items;

  static Value of_int(int64_t v) { return Value{Kind::kInt, v, 0, {}, {}}; }
  static Value of_float(double v) { return Value{Kind::kFloat, 0, v, {}, {}}; }
  static Value of_bool(bool v) { return Value{Kind::kBool, v ? 1 : 0, 0, {}, {}}; }
  static Value of_string(std::string v) { return Value{Kind::kString, 0, 0, std::move(v), {}}; }
  static Value of(Kind k, int64_t v) { return Value{k, v, 0, {}, {}}; }
  // The zero value of a scalar type (0, 0.0, false, "", 0s, time zero, OK).
  static Value zero(const Type& type);
};
// `42`, `1.5`, `"x"`, `10ms`, `PERMISSION_DENIED`, `["a", "b"]`
std::string value_text(const Value& value);
// Scalars of one kind compare by value; false across kinds. Containers: element-wise.
bool operator==(const Value& a, const Value& b);
// A total order on values of one kind (for set and map keys).
bool operator<(const Value& a, const Value& b);

// `rpc.x`
enum class RpcField : uint8_t {
  kService,
  kMethod,
  kCallerApp,
  kCallerHost,
  kCallerUid,
  kDeadline,
  kRemaining,
  kSize,
  kStatus,
  kLatency,
  kPriority,
  kEndpoint,
  kEndpoints,
  kAttempt,
  kMetadata,  // the whole map (`k in rpc.metadata`); `rpc.metadata[k]` is ExprKind::kMetadata
};
const char* rpc_field_text(RpcField field);  // "rpc.caller.app"

enum class Op : uint8_t {
  kNeg,
  kNot,
  kAdd,
  kSub,
  kMul,
  kDiv,
  kRem,
  kEq,
  kNe,
  kLt,
  kLe,
  kGt,
  kGe,
  kAnd,
  kOr,
  kIn,
  kNotIn,
};
const char* op_text(Op op);

// Where one field lives, for one matched method: the layout of the message holding it, the
// field's storage there and its fingerprint.
struct FieldStep {
  const MessageLayout* holder = nullptr;  // null: the path does not exist for this method
  const FieldLayout* field = nullptr;
  uint64_t fingerprint = 0;  // holder->fingerprint()
};

enum class ExprKind : uint8_t {
  kConst,         // value
  kParam,         // slot into Policy::params
  kState,         // slot into Policy::states
  kLocal,         // slot into Handler::locals (let, var, for variables)
  kCallVariable,  // slot into Policy::call_variables (`call x: T;`)
  kRpc,           // rpc_field
  kMetadata,      // rpc.metadata[children[0]]
  kMessageRoot,   // `req` (request) or `resp`
  kField,         // children[0] . name, resolved per method in `steps`
  kIndex,         // children[0] [children[1]]: list, repeated field, map, map field
  kUnary,         // op children[0]
  kBinary,        // children[0] op children[1]
  kCall,          // builtin (children...)
  kList,          // [children...]
  kSet,           // {children...}
  kMap,           // {children[0]: children[1], ...}
};

struct Expr {
  ExprKind kind = ExprKind::kConst;
  Type type;
  dsl::Span span;
  Value value;  // kConst
  uint32_t slot = 0;
  RpcField rpc_field = RpcField::kService;
  Op op = Op::kAdd;
  Builtin builtin = Builtin::kNow;
  bool request = true;           // kMessageRoot: req (true) or resp
  std::string name;              // kField: the field name; kParam/kState/kLocal: the name
  std::vector<FieldStep> steps;  // kField: one per matched method
  std::vector<std::unique_ptr<Expr>> children;
};
using ExprPtr = std::unique_ptr<Expr>;

struct Stmt;
using Block = std::vector<std::unique_ptr<Stmt>>;

enum class StmtKind : uint8_t {
  kLet,         // locals[slot] = exprs[0]
  kAssign,      // exprs[0] op exprs[1]; op kAdd for +=, kSub for -=, else plain `=`
                // (exprs[0] kMetadata: sets a request header)
  kRemove,      // remove exprs[0] (a state map entry: kIndex over kState; or kMetadata)
  kListAppend,  // local list `slot`.append(exprs[0])
  kSetInsert,   // state set `slot`.insert(exprs[0])
  kSetRemove,   // state set `slot`.remove(exprs[0])
  kClear,       // clear exprs[0] (a message field)
  kIf,          // if exprs[i] blocks[i]...; else blocks.back() when blocks.size() > exprs.size()
  kForRange,    // for locals[slot] in exprs[0]..exprs[1] (constants) blocks[0]
  kForEach,     // for locals[slot] in exprs[0] (a list, set or repeated field) blocks[0]
  kPass,
  kDrop,
  kBreak,       // leaves the innermost kForRange / kForEach
  kAction,      // action(exprs...); log: log_keys name exprs[1..]; observe: exprs[2..] are the
                // histogram's label values, in the order State::labels declares them
  kCounterAdd,  // state counter `slot`.add(exprs[0], label = exprs[1..] in State::labels order)
};

struct Stmt {
  StmtKind kind = StmtKind::kPass;
  dsl::Span span;
  uint32_t slot = 0;
  bool compound = false;  // kAssign: `+=` / `-=` (op says which)
  Op op = Op::kAdd;
  Action action = Action::kReject;
  std::vector<std::string> log_keys;  // kAction log: the names of exprs[1..]
  std::vector<ExprPtr> exprs;
  std::vector<Block> blocks;
};

enum class Event : uint8_t { kRequest, kResponse, kError };
const char* event_text(Event event);

struct Local {
  std::string name;
  Type type;
  bool is_mutable = false;
  dsl::Span declared;
};

struct Handler {
  std::vector<Event> events;  // one body may run on several events (`on response, error`)
  Block body;
  std::vector<Local> locals;  // every let/var/for variable of the body gets its own slot
  dsl::Span span;
};

struct Param {
  std::string name;
  Type type;
  Value default_value;
  dsl::Span declared;
};

enum class Evict : uint8_t { kLru, kFifo, kReject };

struct State {
  std::string name;
  Type type;
  Value initial;                // scalars: the start value (zero unless given)
  int32_t initial_param = -1;   // scalars: the param slot it starts from (its value at attach
                                // time; `initial` is the param's default), or -1
  int64_t capacity = 0;         // map/set: constant capacity, or the param's default
  int32_t capacity_param = -1;  // map/set: the param slot giving the capacity, or -1
  Evict evict = Evict::kLru;
  std::vector<Value> buckets;  // histogram bounds
  // Counter and histogram: the label keys (`label method`), in declaration order. With labels
  // the metric keeps one series per distinct label-value combination, at most
  // limits::kMaxMetricLabelSets, then the overflow series (every value "_other").
  std::vector<std::string> labels;
  dsl::Span declared;
};

// `call NAME: TYPE (= VALUE);`: a scalar carried from `on request` to the later handlers of the
// same call. It starts at `initial` on every call; the daemon keeps it in the call's record
// (Rpc::policy_call_data) between handlers.
struct CallVariable {
  std::string name;
  Type type;
  Value initial;
  dsl::Span declared;
};

struct Method {
  std::string full_name;  // "hotel.Reservation.MakeReservation"
  std::string service;    // "hotel.Reservation"
  std::string name;       // "MakeReservation"
  const MessageLayout* input = nullptr;
  const MessageLayout* output = nullptr;
};

struct Schedule {
  enum class Kind : uint8_t { kNone, kStrict, kWeighted } kind = Kind::kNone;
  std::vector<int64_t> weights;        // constant weight, or the param's default
  std::vector<int32_t> weight_params;  // the param slot of each weight, or -1
};

enum class Placement : uint8_t { kCaller, kCallee };

struct Policy {
  std::string name;
  Placement placement = Placement::kCallee;
  std::vector<std::string> patterns;  // as written: "hotel.Reservation.*"
  bool schema_known = false;          // false: generic (no `req`/`resp`, any service)
  // Some handler reads `req` or `resp` (then the daemon runs it on a private copy of the bytes,
  // so the app cannot change what was checked); false: metadata and rpc fields only.
  bool reads_message = false;
  std::vector<Method> methods;
  std::vector<Param> params;
  std::vector<State> states;
  std::vector<CallVariable> call_variables;
  Schedule schedule;
  std::vector<Handler> handlers;
  dsl::Span span;

  // The handler running on `event`, or null.
  const Handler* handler_for(Event event) const;
};

// The policies of one checked file (imports' policies are in their own units).
struct Unit {
  std::string path;
  std::vector<Policy> policies;
  std::unique_ptr<LayoutSet> layouts;  // every FieldStep and Method points into it
};

// The readable dump `mrpc-polc build --emit=ir` prints; stable (golden tests compare it).
std::string dump(const Unit& unit);
// One policy's part of it (the policy JIT keys its modules by it: it names every field offset and
// schema fingerprint).
std::string dump(const Policy& policy);

}  // namespace mrpc::compiler::ir
