// Builds the typed, resolved IR (ir.h) of a module that checked clean: names to slots, consts
// and constant subexpressions folded (ir_ops.h), int literals made floats where floats are
// expected, builtins to enums, and every message field step resolved per matched method against
// the shared-memory layout. It relies on the checker: anything ill-typed here is a bug in one of
// the two (an assertion), not an input error.
#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "checker_internal.h"
#include "ir_ops.h"
#include "mrpc/base/check.h"
#include "mrpc/base/status.h"
#include "mrpc/compiler/ir.h"

namespace mrpc::compiler {

namespace {

using ir::ExprPtr;
using IK = ir::Kind;
namespace ast = dsl::ast;

struct Sym {
  ir::ExprKind kind;
  uint32_t slot;
  ir::Type type;
  std::string name;
};

void collect_consts(const Module& module, std::map<std::string, const ast::Const*>& out,
                    std::vector<const pb::FileDescriptor*>& protos, std::set<const Module*>& seen) {
  if (!seen.insert(&module).second || !module.file) return;
  for (const auto& item : module.file->items) {
    if (auto* c = std::get_if<ast::Const>(&item)) out.emplace(c->name, c);
  }
  for (auto* p : module.protos) protos.push_back(p);
  for (auto* m : module.imports) collect_consts(*m, out, protos, seen);
}

ir::Type scalar_of(FieldKind kind) {
  switch (kind) {
    case FieldKind::kBool:
      return ir::Type::of(IK::kBool);
    case FieldKind::kFloat:
    case FieldKind::kDouble:
      return ir::Type::of(IK::kFloat);
    case FieldKind::kString:
      return ir::Type::of(IK::kString);
    case FieldKind::kBytes:
      return ir::Type::of(IK::kBytes);
    case FieldKind::kMessage:
      return ir::Type::of(IK::kMessage);
    default:
      return ir::Type::of(IK::kInt);
  }
}

ExprPtr make_const(ir::Value v, ir::Type t, Span span) {
  auto e = std::make_unique<ir::Expr>();
  e->kind = ir::ExprKind::kConst;
  e->type = std::move(t);
  e->value = std::move(v);
  e->span = span;
  return e;
}

ir::Op binary_op(const std::string& op) {
  static const std::map<std::string, ir::Op> ops = {
      {"+", ir::Op::kAdd}, {"-", ir::Op::kSub}, {"*", ir::Op::kMul},       {"/", ir::Op::kDiv},
      {"%", ir::Op::kRem}, {"==", ir::Op::kEq}, {"!=", ir::Op::kNe},       {"<", ir::Op::kLt},
      {"<=", ir::Op::kLe}, {">", ir::Op::kGt},  {">=", ir::Op::kGe},       {"&&", ir::Op::kAnd},
      {"||", ir::Op::kOr}, {"in", ir::Op::kIn}, {"not in", ir::Op::kNotIn}};
  auto it = ops.find(op);
  MRPC_ASSERT(it != ops.end());
  return it->second;
}

class IrBuilder {
 public:
  IrBuilder(const Module& module, LayoutSet& layouts, DiagnosticEngine& diagnostics)
      : layouts_(layouts), diagnostics_(diagnostics) {
    std::set<const Module*> seen;
    collect_consts(module, consts_, protos_, seen);
    for (auto* file : protos_) {
      for (int s = 0; s < file->service_count(); ++s) services_.push_back(file->service(s));
    }
    if (!protos_.empty()) pool_ = protos_[0]->pool();
  }

  ir::Policy policy(const ast::Policy& p);

 private:
  struct Ctx {
    ir::Policy* policy = nullptr;
    ir::Handler* handler = nullptr;
    std::vector<std::map<std::string, Sym>> frames{1};
  };

  const Sym* lookup(const Ctx& ctx, const std::string& name) const {
    for (auto it = ctx.frames.rbegin(); it != ctx.frames.rend(); ++it) {
      auto found = it->find(name);
      if (found != it->end()) return &found->second;
    }
    return nullptr;
  }

  std::vector<const pb::MethodDescriptor*> match(const ast::Pattern& p) const;
  ir::Type source_type(const ast::Type& t);
  ir::Value constant(const ast::Expr& e, const ir::Type& want);
  ExprPtr coerce(ExprPtr e, const ir::Type& want);
  ExprPtr fold(ExprPtr e);
  ExprPtr expr(const ast::Expr& e, Ctx& ctx);
  ExprPtr name(const ast::Expr& e, Ctx& ctx);
  ExprPtr member(const ast::Expr& e, Ctx& ctx);
  ExprPtr field(const ast::Expr& e, ExprPtr object);
  ExprPtr binary(const ast::Expr& e, Ctx& ctx);
  ExprPtr call(const ast::Expr& e, Ctx& ctx);
  std::optional<int64_t> enum_value(const ast::Expr& e) const;
  ir::Block block(const ast::Block& b, Ctx& ctx);
  std::unique_ptr<ir::Stmt> stmt(const ast::Stmt& s, Ctx& ctx);
  uint32_t declare_local(Ctx& ctx, const std::string& name, ir::Type type, bool is_mutable,
                         Span at);
  int32_t param_slot(const ast::Expr& e, const ir::Policy& p) const;
  // Appends the label values of `call` (named args from `first` on) in the order `metric`
  // declares its labels.
  void append_labels(const ast::Expr& call, size_t first, const ir::State& metric, Ctx& ctx,
                     ir::Stmt& out);

  LayoutSet& layouts_;
  DiagnosticEngine& diagnostics_;
  // While > 0, a constant is being built (a const, a param default, a state's initial value, a
  // capacity): a fault folds to its defined result (with a warning) since nothing runs later.
  int in_constant_ = 0;
  std::set<std::pair<uint32_t, uint32_t>> warned_;  // (file, offset) of constant faults
  std::map<std::string, const ast::Const*> consts_;
  std::vector<const pb::FileDescriptor*> protos_;
  std::vector<const pb::ServiceDescriptor*> services_;
  const pb::DescriptorPool* pool_ = nullptr;
  std::set<std::string> const_stack_;
};

std::vector<const pb::MethodDescriptor*> IrBuilder::match(const ast::Pattern& p) const {
  std::vector<const pb::MethodDescriptor*> out;
  std::string prefix;
  for (const auto& s : p.segments) prefix += (prefix.empty() ? "" : ".") + s;
  for (auto* service : services_) {
    for (int m = 0; m < service->method_count(); ++m) {
      const pb::MethodDescriptor* method = service->method(m);
      bool hit = !p.wildcard ? method->full_name() == prefix
                 : prefix.empty()
                     ? true
                     : service->full_name() == prefix || service->file()->package() == prefix;
      if (hit) out.push_back(method);
    }
  }
  return out;
}

ir::Type IrBuilder::source_type(const ast::Type& t) {
  static const std::map<std::string, IK> named = {{"int", IK::kInt},
                                                  {"float", IK::kFloat},
                                                  {"bool", IK::kBool},
                                                  {"string", IK::kString},
                                                  {"bytes", IK::kBytes},
                                                  {"duration", IK::kDuration},
                                                  {"time", IK::kTime},
                                                  {"status", IK::kStatus},
                                                  {"list", IK::kList},
                                                  {"set", IK::kSet},
                                                  {"map", IK::kMap},
                                                  {"counter", IK::kCounter},
                                                  {"histogram", IK::kHistogram},
                                                  {"response", IK::kResponse}};
  auto it = named.find(t.name);
  MRPC_ASSERT(it != named.end());
  ir::Type out = ir::Type::of(it->second);
  for (const auto& a : t.args) out.args.push_back(source_type(a));
  return out;
}

// A constant expression (param default, state initial value, const) as a value of `want`.
ir::Value IrBuilder::constant(const ast::Expr& e, const ir::Type& want) {
  Ctx empty;
  ++in_constant_;
  ExprPtr x = coerce(expr(e, empty), want);
  --in_constant_;
  MRPC_ASSERT(x->kind == ir::ExprKind::kConst);
  return x->value;
}

// An int literal where a float is expected becomes a float; `{}` takes the kind it is used as.
ExprPtr IrBuilder::coerce(ExprPtr e, const ir::Type& want) {
  if (e->kind != ir::ExprKind::kConst) return e;
  if (want.is(IK::kFloat) && e->type.is(IK::kInt)) {
    e->value = ir::Value::of_float(static_cast<double>(e->value.i));
    e->type = want;
  } else if ((want.is(IK::kList) || want.is(IK::kSet) || want.is(IK::kMap)) &&
             e->type.kind == want.kind) {
    // Elements: `[1, 2]` as a list<float>.
    size_t stride = want.is(IK::kMap) ? 2 : 1;
    for (size_t i = 0; i < e->value.items.size(); ++i) {
      const ir::Type& wt = want.args[want.is(IK::kMap) ? i % stride : 0];
      if (wt.is(IK::kFloat) && e->value.items[i].kind == IK::kInt)
        e->value.items[i] = ir::Value::of_float(static_cast<double>(e->value.items[i].i));
    }
    e->type = want;
  } else if ((want.is(IK::kSet) || want.is(IK::kMap)) && e->value.kind == IK::kSet &&
             e->value.items.empty()) {
    e->value.kind = want.kind;  // `{}`
    e->type = want;
  }
  return e;
}

// Folds a unary, binary or pure call whose operands are all constants, unless it faults (then
// it stays for run time, where its defined result applies).
ExprPtr IrBuilder::fold(ExprPtr e) {
  for (const auto& c : e->children) {
    if (c->kind != ir::ExprKind::kConst) return e;
  }
  bool fault = false;
  ir::Value v;
  switch (e->kind) {
    case ir::ExprKind::kUnary:
      v = ir::apply_unary(e->op, e->children[0]->value, fault);
      break;
    case ir::ExprKind::kBinary:
      if (e->op == ir::Op::kAnd || e->op == ir::Op::kOr) {
        bool a = e->children[0]->value.i != 0, b = e->children[1]->value.i != 0;
        v = ir::Value::of_bool(e->op == ir::Op::kAnd ? a && b : a || b);
      } else if (e->op == ir::Op::kIn || e->op == ir::Op::kNotIn) {
        bool in = ir::contains_value(e->children[1]->value, e->children[0]->value);
        v = ir::Value::of_bool(e->op == ir::Op::kIn ? in : !in);
      } else {
        v = ir::apply_binary(e->op, e->children[0]->value, e->children[1]->value, e->type.kind,
                             fault);
      }
      break;
    case ir::ExprKind::kCall: {
      if (builtin_info(e->builtin).impure || e->builtin == Builtin::kHas) return e;
      std::vector<ir::Value> args;
      for (const auto& c : e->children) args.push_back(c->value);
      v = ir::apply_builtin(e->builtin, args, e->type.kind, fault);
      break;
    }
    case ir::ExprKind::kList:
    case ir::ExprKind::kSet:
    case ir::ExprKind::kMap:
      v.kind = e->type.kind;
      for (const auto& c : e->children) v.items.push_back(c->value);
      break;
    default:
      return e;
  }
  if (fault) {
    if (in_constant_ == 0) return e;
    if (warned_.insert({e->span.file, e->span.begin}).second) {
      diagnostics_.warning(e->span,
                           fmt::format("this constant expression faults: its defined result, {}, "
                                       "is used",
                                       ir::value_text(v)));
    }
  }
  return make_const(std::move(v), e->type, e->span);
}

std::optional<int64_t> IrBuilder::enum_value(const ast::Expr& e) const {
  std::string path;
  const ast::Expr* p = &e;
  while (p->kind == ast::ExprKind::kMember) {
    path = "." + p->text + path;
    p = p->children[0].get();
  }
  if (p->kind != ast::ExprKind::kName || pool_ == nullptr) return std::nullopt;
  path = p->text + path;
  size_t dot = path.rfind('.');
  if (dot == std::string::npos) return std::nullopt;
  const pb::EnumDescriptor* en = pool_->FindEnumTypeByName(path.substr(0, dot));
  if (en == nullptr) return std::nullopt;
  const pb::EnumValueDescriptor* v = en->FindValueByName(path.substr(dot + 1));
  if (v == nullptr) return std::nullopt;
  return v->number();
}

ExprPtr IrBuilder::expr(const ast::Expr& e, Ctx& ctx) {
  using EK = ast::ExprKind;
  switch (e.kind) {
    case EK::kInt:
      return make_const(ir::Value::of_int(e.int_value), ir::Type::of(IK::kInt), e.span);
    case EK::kFloat:
      return make_const(ir::Value::of_float(e.float_value), ir::Type::of(IK::kFloat), e.span);
    case EK::kBool:
      return make_const(ir::Value::of_bool(e.int_value != 0), ir::Type::of(IK::kBool), e.span);
    case EK::kString:
      return make_const(ir::Value::of_string(e.text), ir::Type::of(IK::kString), e.span);
    case EK::kDuration: {
      static const std::map<std::string, int64_t> unit = {{"ns", 1},
                                                          {"us", 1'000},
                                                          {"ms", 1'000'000},
                                                          {"s", 1'000'000'000},
                                                          {"m", 60'000'000'000},
                                                          {"h", 3'600'000'000'000}};
      return make_const(ir::Value::of(IK::kDuration, e.int_value * unit.at(e.text)),
                        ir::Type::of(IK::kDuration), e.span);
    }
    case EK::kEmptyBraces: {
      ir::Value v;
      v.kind = IK::kSet;
      return make_const(std::move(v), ir::Type::of(IK::kSet), e.span);
    }
    case EK::kName:
      return name(e, ctx);
    case EK::kMember:
      return member(e, ctx);
    case EK::kIndex: {
      ExprPtr object = expr(*e.children[0], ctx);
      ExprPtr index = expr(*e.children[1], ctx);
      if (object->kind == ir::ExprKind::kRpc && object->rpc_field == ir::RpcField::kMetadata) {
        auto out = std::make_unique<ir::Expr>();
        out->kind = ir::ExprKind::kMetadata;
        out->type = ir::Type::of(IK::kString);
        out->span = e.span;
        out->children.push_back(std::move(index));
        return out;
      }
      auto out = std::make_unique<ir::Expr>();
      out->kind = ir::ExprKind::kIndex;
      out->span = e.span;
      if (object->type.is(IK::kList)) {
        out->type = object->type.args[0];
      } else {
        MRPC_ASSERT(object->type.is(IK::kMap));
        out->type = object->type.args[1];
        index = coerce(std::move(index), object->type.args[0]);
      }
      out->children.push_back(std::move(object));
      out->children.push_back(std::move(index));
      return out;
    }
    case EK::kCall:
      return call(e, ctx);
    case EK::kUnary: {
      auto out = std::make_unique<ir::Expr>();
      out->kind = ir::ExprKind::kUnary;
      out->span = e.span;
      out->op = e.text == "!" ? ir::Op::kNot : ir::Op::kNeg;
      out->children.push_back(expr(*e.children[0], ctx));
      out->type = out->children[0]->type;
      return fold(std::move(out));
    }
    case EK::kBinary:
      return binary(e, ctx);
    case EK::kList:
    case EK::kSet:
    case EK::kMap: {
      auto out = std::make_unique<ir::Expr>();
      out->kind = e.kind == EK::kList  ? ir::ExprKind::kList
                  : e.kind == EK::kSet ? ir::ExprKind::kSet
                                       : ir::ExprKind::kMap;
      out->span = e.span;
      for (const auto& c : e.children) out->children.push_back(expr(*c, ctx));
      // The element type: float if any element is a float (int literals then become floats).
      size_t stride = e.kind == EK::kMap ? 2 : 1;
      std::vector<ir::Type> element(stride, ir::Type::of(IK::kVoid));
      for (size_t i = 0; i < out->children.size(); ++i) {
        ir::Type& t = element[i % stride];
        if (t.is(IK::kVoid) || out->children[i]->type.is(IK::kFloat)) t = out->children[i]->type;
      }
      for (size_t i = 0; i < out->children.size(); ++i)
        out->children[i] = coerce(std::move(out->children[i]), element[i % stride]);
      out->type = ir::Type::of(e.kind == EK::kList  ? IK::kList
                               : e.kind == EK::kSet ? IK::kSet
                                                    : IK::kMap);
      out->type.args = element;
      return fold(std::move(out));
    }
  }
  MRPC_ASSERT(false);
  return nullptr;
}

ExprPtr IrBuilder::name(const ast::Expr& e, Ctx& ctx) {
  auto out = std::make_unique<ir::Expr>();
  out->span = e.span;
  if (e.text == "req" || e.text == "resp") {
    ctx.policy->reads_message = true;
    out->kind = ir::ExprKind::kMessageRoot;
    out->request = e.text == "req";
    out->type = ir::Type::of(IK::kMessage);
    for (const ir::Method& m : ctx.policy->methods)
      out->type.layouts.push_back(out->request ? m.input : m.output);
    return out;
  }
  if (e.text == "rpc") {
    // Only reached through rpc_member below; a bare `rpc` is not a value.
    out->kind = ir::ExprKind::kRpc;
    return out;
  }
  if (const Sym* s = lookup(ctx, e.text)) {
    out->kind = s->kind;
    out->slot = s->slot;
    out->type = s->type;
    out->name = s->name;
    return out;
  }
  StatusCode code;
  if (status_code_from_name(e.text, code)) {
    return make_const(ir::Value::of(IK::kStatus, static_cast<int64_t>(code)),
                      ir::Type::of(IK::kStatus), e.span);
  }
  auto c = consts_.find(e.text);
  MRPC_ASSERT(c != consts_.end());
  MRPC_ASSERT(const_stack_.insert(e.text).second);
  Ctx empty;
  ++in_constant_;
  ExprPtr value = expr(*c->second->value, empty);
  --in_constant_;
  if (c->second->type) value = coerce(std::move(value), source_type(*c->second->type));
  const_stack_.erase(e.text);
  MRPC_ASSERT(value->kind == ir::ExprKind::kConst);
  value->span = e.span;
  return value;
}

ExprPtr IrBuilder::member(const ast::Expr& e, Ctx& ctx) {
  // `hotel.Kind.SUITE` (an enum value), unless its root names something in scope.
  if (auto v = enum_value(e)) {
    const ast::Expr* root = &e;
    while (root->kind == ast::ExprKind::kMember) root = root->children[0].get();
    if (lookup(ctx, root->text) == nullptr && root->text != "req" && root->text != "resp" &&
        root->text != "rpc") {
      return make_const(ir::Value::of_int(*v), ir::Type::of(IK::kInt), e.span);
    }
  }
  const ast::Expr& object = *e.children[0];
  auto rpc = [&](ir::RpcField f, ir::Type t) {
    auto out = std::make_unique<ir::Expr>();
    out->kind = ir::ExprKind::kRpc;
    out->rpc_field = f;
    out->type = std::move(t);
    out->span = e.span;
    return out;
  };
  if (object.kind == ast::ExprKind::kName && object.text == "rpc" &&
      lookup(ctx, "rpc") == nullptr) {
    static const std::map<std::string, std::pair<ir::RpcField, IK>> fields = {
        {"service", {ir::RpcField::kService, IK::kString}},
        {"method", {ir::RpcField::kMethod, IK::kString}},
        {"deadline", {ir::RpcField::kDeadline, IK::kTime}},
        {"remaining", {ir::RpcField::kRemaining, IK::kDuration}},
        {"size", {ir::RpcField::kSize, IK::kInt}},
        {"status", {ir::RpcField::kStatus, IK::kStatus}},
        {"latency", {ir::RpcField::kLatency, IK::kDuration}},
        {"priority", {ir::RpcField::kPriority, IK::kInt}},
        {"endpoint", {ir::RpcField::kEndpoint, IK::kString}},
        {"attempt", {ir::RpcField::kAttempt, IK::kInt}}};
    auto it = fields.find(e.text);
    if (it != fields.end()) return rpc(it->second.first, ir::Type::of(it->second.second));
    if (e.text == "endpoints") {
      ir::Type t = ir::Type::of(IK::kList);
      t.args.push_back(ir::Type::of(IK::kString));
      return rpc(ir::RpcField::kEndpoints, t);
    }
    MRPC_ASSERT(e.text == "metadata");
    ir::Type t = ir::Type::of(IK::kMap);
    t.args = {ir::Type::of(IK::kString), ir::Type::of(IK::kString)};
    return rpc(ir::RpcField::kMetadata, t);
  }
  if (object.kind == ast::ExprKind::kMember && object.text == "caller" &&
      object.children[0]->kind == ast::ExprKind::kName && object.children[0]->text == "rpc") {
    if (e.text == "app") return rpc(ir::RpcField::kCallerApp, ir::Type::of(IK::kString));
    if (e.text == "host") return rpc(ir::RpcField::kCallerHost, ir::Type::of(IK::kString));
    return rpc(ir::RpcField::kCallerUid, ir::Type::of(IK::kInt));
  }
  return field(e, expr(object, ctx));
}

// `object.name` where object is a message: one step per matched method.
ExprPtr IrBuilder::field(const ast::Expr& e, ExprPtr object) {
  MRPC_ASSERT(object->type.is(IK::kMessage));
  auto out = std::make_unique<ir::Expr>();
  out->kind = ir::ExprKind::kField;
  out->span = e.span;
  out->name = e.text;
  std::optional<ir::Type> type;
  std::vector<const MessageLayout*> element_layouts, value_layouts;
  for (const MessageLayout* holder : object->type.layouts) {
    ir::FieldStep step;
    const FieldLayout* f = holder != nullptr ? holder->field_by_name(e.text) : nullptr;
    if (f != nullptr) {
      step.holder = holder;
      step.field = f;
      step.fingerprint = holder->fingerprint();
    }
    out->steps.push_back(step);
    const MessageLayout* element = nullptr;
    const MessageLayout* value = nullptr;
    if (f != nullptr && !type) {
      if (f->is_map) {
        const FieldLayout* k = f->message->field_by_number(1);
        const FieldLayout* v = f->message->field_by_number(2);
        type = ir::Type::of(IK::kMap);
        type->args = {scalar_of(k->kind), scalar_of(v->kind)};
      } else if (f->repeated) {
        type = ir::Type::of(IK::kList);
        type->args = {scalar_of(f->kind)};
      } else {
        type = scalar_of(f->kind);
      }
    }
    if (f != nullptr && f->is_map) value = f->message->field_by_number(2)->message;
    if (f != nullptr && !f->is_map) element = f->message;
    element_layouts.push_back(element);
    value_layouts.push_back(value);
  }
  MRPC_ASSERT(type.has_value());
  if (type->is(IK::kMessage)) type->layouts = element_layouts;
  if (type->is(IK::kList) && type->args[0].is(IK::kMessage))
    type->args[0].layouts = element_layouts;
  if (type->is(IK::kMap) && type->args[1].is(IK::kMessage)) type->args[1].layouts = value_layouts;
  out->type = *type;
  out->children.push_back(std::move(object));
  return out;
}

ExprPtr IrBuilder::binary(const ast::Expr& e, Ctx& ctx) {
  auto out = std::make_unique<ir::Expr>();
  out->kind = ir::ExprKind::kBinary;
  out->span = e.span;
  out->op = binary_op(e.text);
  ExprPtr a = expr(*e.children[0], ctx);
  ExprPtr b = expr(*e.children[1], ctx);
  using O = ir::Op;
  if (out->op == O::kIn || out->op == O::kNotIn) {
    a = coerce(std::move(a), b->type.args[0]);
  } else {
    // An int literal beside a float is a float.
    if (a->type.is(IK::kFloat)) b = coerce(std::move(b), a->type);
    if (b->type.is(IK::kFloat)) a = coerce(std::move(a), b->type);
  }
  const ir::Type& ta = a->type;
  const ir::Type& tb = b->type;
  switch (out->op) {
    case O::kEq:
    case O::kNe:
    case O::kLt:
    case O::kLe:
    case O::kGt:
    case O::kGe:
    case O::kAnd:
    case O::kOr:
    case O::kIn:
    case O::kNotIn:
      out->type = ir::Type::of(IK::kBool);
      break;
    default:
      if (ta.is(IK::kTime) && tb.is(IK::kTime)) {
        out->type = ir::Type::of(IK::kDuration);
      } else if (tb.is(IK::kDuration) && !ta.is(IK::kTime)) {
        out->type = tb;
      } else {
        out->type = ta;
      }
  }
  out->children.push_back(std::move(a));
  out->children.push_back(std::move(b));
  return fold(std::move(out));
}

ExprPtr IrBuilder::call(const ast::Expr& e, Ctx& ctx) {
  const BuiltinInfo* info = find_builtin(e.children[0]->text);
  MRPC_ASSERT(info != nullptr);
  auto out = std::make_unique<ir::Expr>();
  out->kind = ir::ExprKind::kCall;
  out->builtin = info->id;
  out->span = e.span;
  for (size_t i = 1; i < e.children.size(); ++i) out->children.push_back(expr(*e.children[i], ctx));
  auto& args = out->children;
  using B = Builtin;
  switch (info->id) {
    case B::kNow:
      out->type = ir::Type::of(IK::kTime);
      break;
    case B::kRandom:
    case B::kSeconds:
    case B::kFloat:
      out->type = ir::Type::of(IK::kFloat);
      break;
    case B::kHash:
    case B::kLen:
    case B::kInt:
      out->type = ir::Type::of(IK::kInt);
      break;
    case B::kMin:
    case B::kMax:
      if (args[0]->type.is(IK::kFloat)) args[1] = coerce(std::move(args[1]), args[0]->type);
      if (args[1]->type.is(IK::kFloat)) args[0] = coerce(std::move(args[0]), args[1]->type);
      out->type = args[0]->type;
      break;
    case B::kAbs:
      out->type = args[0]->type;
      break;
    case B::kHas:
    case B::kStartsWith:
    case B::kEndsWith:
    case B::kContains:
      out->type = ir::Type::of(IK::kBool);
      break;
    case B::kFromSeconds:
      out->type = ir::Type::of(IK::kDuration);
      break;
    case B::kStr:
    case B::kLower:
    case B::kUpper:
    case B::kSubstr:
    case B::kSha256:
      out->type = ir::Type::of(IK::kString);
      break;
    case B::kConsistentHash:
      out->type = args[1]->type.args[0];
      break;
  }
  return fold(std::move(out));
}

uint32_t IrBuilder::declare_local(Ctx& ctx, const std::string& name, ir::Type type, bool is_mutable,
                                  Span at) {
  auto slot = static_cast<uint32_t>(ctx.handler->locals.size());
  ctx.handler->locals.push_back(ir::Local{name, type, is_mutable, at});
  ctx.frames.back()[name] = Sym{ir::ExprKind::kLocal, slot, std::move(type), name};
  return slot;
}

ir::Block IrBuilder::block(const ast::Block& b, Ctx& ctx) {
  ir::Block out;
  ctx.frames.emplace_back();
  for (const auto& s : b.statements) out.push_back(stmt(*s, ctx));
  ctx.frames.pop_back();
  return out;
}

std::unique_ptr<ir::Stmt> IrBuilder::stmt(const ast::Stmt& s, Ctx& ctx) {
  using SK = ast::StmtKind;
  auto out = std::make_unique<ir::Stmt>();
  out->span = s.span;
  switch (s.kind) {
    case SK::kLet: {
      ExprPtr value = expr(*s.exprs[0], ctx);
      ir::Type t = s.type ? source_type(*s.type) : value->type;
      value = coerce(std::move(value), t);
      out->kind = ir::StmtKind::kLet;
      out->slot = declare_local(ctx, s.name, t, s.is_mutable, s.name_span);
      out->exprs.push_back(std::move(value));
      return out;
    }
    case SK::kAssign: {
      out->kind = ir::StmtKind::kAssign;
      ExprPtr target = expr(*s.exprs[0], ctx);
      ExprPtr value = expr(*s.exprs[1], ctx);
      out->compound = s.op != "=";
      out->op = s.op == "-=" ? ir::Op::kSub : ir::Op::kAdd;
      ir::Type want = target->type;
      if (want.is(IK::kTime) && out->compound) want = ir::Type::of(IK::kDuration);
      if (want.is(IK::kCounter)) want = ir::Type::of(IK::kInt);
      out->exprs.push_back(std::move(target));
      out->exprs.push_back(coerce(std::move(value), want));
      return out;
    }
    case SK::kRemove:
      out->kind = ir::StmtKind::kRemove;
      out->exprs.push_back(expr(*s.exprs[0], ctx));
      return out;
    case SK::kClear:
      out->kind = ir::StmtKind::kClear;
      out->exprs.push_back(expr(*s.exprs[0], ctx));
      return out;
    case SK::kIf:
      out->kind = ir::StmtKind::kIf;
      for (const auto& c : s.exprs) out->exprs.push_back(expr(*c, ctx));
      for (const auto& b : s.blocks) out->blocks.push_back(block(b, ctx));
      return out;
    case SK::kFor: {
      ctx.frames.emplace_back();
      if (s.exprs.size() == 2) {
        out->kind = ir::StmtKind::kForRange;
        out->exprs.push_back(expr(*s.exprs[0], ctx));
        out->exprs.push_back(expr(*s.exprs[1], ctx));
        out->slot = declare_local(ctx, s.name, ir::Type::of(IK::kInt), false, s.name_span);
      } else {
        out->kind = ir::StmtKind::kForEach;
        out->exprs.push_back(expr(*s.exprs[0], ctx));
        out->slot = declare_local(ctx, s.name, out->exprs[0]->type.args[0], false, s.name_span);
      }
      out->blocks.push_back(block(s.blocks[0], ctx));
      ctx.frames.pop_back();
      return out;
    }
    case SK::kPass:
      out->kind = ir::StmtKind::kPass;
      return out;
    case SK::kDrop:
      out->kind = ir::StmtKind::kDrop;
      return out;
    case SK::kBreak:
      out->kind = ir::StmtKind::kBreak;
      return out;
    case SK::kExpr:
      break;
  }
  const ast::Expr& call = *s.exprs[0];
  const ast::Expr& callee = *call.children[0];
  if (callee.kind == ast::ExprKind::kMember && callee.text == "append") {
    // local_list.append(x)
    const Sym* list = lookup(ctx, callee.children[0]->text);
    MRPC_ASSERT(list != nullptr && list->kind == ir::ExprKind::kLocal);
    out->kind = ir::StmtKind::kListAppend;
    out->slot = list->slot;
    out->exprs.push_back(coerce(expr(*call.children[1], ctx), list->type.args[0]));
    return out;
  }
  if (callee.kind == ast::ExprKind::kMember && callee.text == "add") {
    // counter.add(n, label = value, ...): the values in the order the state declares its labels
    const Sym* counter = lookup(ctx, callee.children[0]->text);
    MRPC_ASSERT(counter != nullptr && counter->kind == ir::ExprKind::kState);
    out->kind = ir::StmtKind::kCounterAdd;
    out->slot = counter->slot;
    out->exprs.push_back(coerce(expr(*call.children[1], ctx), ir::Type::of(IK::kInt)));
    append_labels(call, 2, ctx.policy->states[counter->slot], ctx, *out);
    return out;
  }
  if (callee.kind == ast::ExprKind::kMember) {
    // state_set.insert(x) / .remove(x)
    const Sym* set = lookup(ctx, callee.children[0]->text);
    MRPC_ASSERT(set != nullptr && set->kind == ir::ExprKind::kState);
    out->kind = callee.text == "insert" ? ir::StmtKind::kSetInsert : ir::StmtKind::kSetRemove;
    out->slot = set->slot;
    out->exprs.push_back(coerce(expr(*call.children[1], ctx), set->type.args[0]));
    return out;
  }
  const ActionInfo* action = find_action(callee.text);
  MRPC_ASSERT(action != nullptr);
  out->kind = ir::StmtKind::kAction;
  out->action = action->id;
  for (size_t i = 1; i < call.children.size(); ++i) {
    if (action->id == Action::kObserve && i == 3) {
      append_labels(call, 3, ctx.policy->states[out->exprs[0]->slot], ctx, *out);
      break;
    }
    ExprPtr arg = expr(*call.children[i], ctx);
    if (action->id == Action::kMirror && i == 2)
      arg = coerce(std::move(arg), ir::Type::of(IK::kFloat));
    if (action->id == Action::kLog && i > 1) out->log_keys.push_back(call.arg_names[i - 1]);
    out->exprs.push_back(std::move(arg));
  }
  return out;
}

void IrBuilder::append_labels(const ast::Expr& call, size_t first, const ir::State& metric,
                              Ctx& ctx, ir::Stmt& out) {
  for (const std::string& label : metric.labels) {
    for (size_t i = first; i < call.children.size(); ++i) {
      if (call.arg_names[i - 1] == label) out.exprs.push_back(expr(*call.children[i], ctx));
    }
  }
  MRPC_ASSERT(out.exprs.size() == metric.labels.size() + first - 1,
              "metric '{}' has {} labels, the checked call gave {} values", metric.name,
              metric.labels.size(), out.exprs.size() + 1 - first);
}

int32_t IrBuilder::param_slot(const ast::Expr& e, const ir::Policy& p) const {
  if (e.kind != ast::ExprKind::kName) return -1;
  for (size_t i = 0; i < p.params.size(); ++i) {
    if (p.params[i].name == e.text) return static_cast<int32_t>(i);
  }
  return -1;
}

ir::Policy IrBuilder::policy(const ast::Policy& p) {
  ir::Policy out;
  out.name = p.name;
  out.span = p.span;
  Ctx ctx;
  ctx.policy = &out;
  for (const auto& member : p.members) {
    auto* a = std::get_if<ast::AppliesTo>(&member);
    if (a == nullptr) continue;
    out.placement =
        a->placement == ast::Placement::kCaller ? ir::Placement::kCaller : ir::Placement::kCallee;
    std::vector<const pb::MethodDescriptor*> methods;
    for (const auto& pattern : a->patterns) {
      out.patterns.push_back(ast::pattern_text(pattern));
      if (protos_.empty()) continue;
      for (auto* m : match(pattern)) {
        if (std::find(methods.begin(), methods.end(), m) == methods.end()) methods.push_back(m);
      }
    }
    for (auto* m : methods) {
      ir::Method method;
      method.full_name = m->full_name();
      method.service = m->service()->full_name();
      method.name = m->name();
      method.input = &layouts_.add(*m->input_type());
      method.output = &layouts_.add(*m->output_type());
      out.methods.push_back(method);
    }
    out.schema_known = !out.methods.empty();
  }
  for (const auto& member : p.members) {
    if (auto* param = std::get_if<ast::Param>(&member)) {
      ir::Param ip;
      ip.name = param->name;
      ip.type = source_type(param->type);
      ip.default_value = constant(*param->default_value, ip.type);
      ip.declared = param->name_span;
      ctx.frames.back()[param->name] =
          Sym{ir::ExprKind::kParam, static_cast<uint32_t>(out.params.size()), ip.type, ip.name};
      out.params.push_back(std::move(ip));
    } else if (auto* var = std::get_if<ast::State>(&member); var != nullptr && var->per_call) {
      ir::CallVariable iv;
      iv.name = var->name;
      iv.type = source_type(var->type);
      iv.initial = var->initial ? constant(*var->initial, iv.type) : ir::Value::zero(iv.type);
      iv.declared = var->name_span;
      ctx.frames.back()[var->name] =
          Sym{ir::ExprKind::kCallVariable, static_cast<uint32_t>(out.call_variables.size()),
              iv.type, iv.name};
      out.call_variables.push_back(std::move(iv));
    } else if (auto* st = std::get_if<ast::State>(&member)) {
      ir::State is;
      is.name = st->name;
      is.type = source_type(st->type);
      is.declared = st->name_span;
      if (is.type.is_scalar()) {
        is.initial_param = st->initial ? param_slot(*st->initial, out) : -1;
        is.initial = is.initial_param >= 0
                         ? out.params[static_cast<size_t>(is.initial_param)].default_value
                     : st->initial ? constant(*st->initial, is.type)
                                   : ir::Value::zero(is.type);
      }
      for (const auto& arg : st->args) {
        if (arg.key == "capacity") {
          is.capacity_param = param_slot(*arg.value, out);
          is.capacity = is.capacity_param >= 0
                            ? out.params[static_cast<size_t>(is.capacity_param)].default_value.i
                            : constant(*arg.value, ir::Type::of(IK::kInt)).i;
        } else if (arg.key == "label") {
          is.labels.push_back(arg.value->text);
        } else if (arg.key == "evict") {
          is.evict = arg.value->text == "fifo"     ? ir::Evict::kFifo
                     : arg.value->text == "reject" ? ir::Evict::kReject
                                                   : ir::Evict::kLru;
        } else {
          is.buckets.push_back(constant(*arg.value, ir::Type::of(IK::kVoid)));
        }
      }
      ctx.frames.back()[st->name] =
          Sym{ir::ExprKind::kState, static_cast<uint32_t>(out.states.size()), is.type, is.name};
      out.states.push_back(std::move(is));
    } else if (auto* sc = std::get_if<ast::Schedule>(&member)) {
      out.schedule.kind =
          sc->kind == "strict" ? ir::Schedule::Kind::kStrict : ir::Schedule::Kind::kWeighted;
      for (const auto& w : sc->weights) {
        int32_t slot = param_slot(*w, out);
        out.schedule.weight_params.push_back(slot);
        out.schedule.weights.push_back(slot >= 0
                                           ? out.params[static_cast<size_t>(slot)].default_value.i
                                           : constant(*w, ir::Type::of(IK::kInt)).i);
      }
    }
  }
  // Bucket bounds that are ints beside floats: keep them as written (numbers compare as such).
  for (const auto& member : p.members) {
    auto* h = std::get_if<ast::Handler>(&member);
    if (h == nullptr) continue;
    ir::Handler ih;
    ih.span = h->span;
    for (auto k : h->kinds) {
      ih.events.push_back(k == ast::HandlerKind::kRequest    ? ir::Event::kRequest
                          : k == ast::HandlerKind::kResponse ? ir::Event::kResponse
                                                             : ir::Event::kError);
    }
    ctx.handler = &ih;
    ih.body = block(h->body, ctx);
    ctx.handler = nullptr;
    out.handlers.push_back(std::move(ih));
  }
  return out;
}

}  // namespace

std::unique_ptr<ir::Unit> build_module_ir(const Module& module, DiagnosticEngine& diagnostics) {
  auto unit = std::make_unique<ir::Unit>();
  unit->path = module.path;
  unit->layouts = std::make_unique<LayoutSet>();
  IrBuilder builder(module, *unit->layouts, diagnostics);
  for (const auto& item : module.file->items) {
    if (auto* p = std::get_if<ast::Policy>(&item)) unit->policies.push_back(builder.policy(*p));
  }
  return unit;
}

}  // namespace mrpc::compiler
