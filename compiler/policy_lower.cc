// The LLVM lowering of a verified policy (policy_jit.h says what is compiled natively and what is
// handed to the evaluator). One module per policy; one function per handler,
// `void <prefix>_h<N>(JitHeader*)`. The only file of the policy JIT that includes LLVM headers.
//
// Values in generated code:
//   - scalars (int, bool, duration, time, status, float) are i64 registers; a float travels as
//     its IEEE bits and is bitcast where it is computed on;
//   - a string the code can point at without copying (a constant, a param, an rpc field, a
//     message field) is a (pointer, length) pair;
//   - a message is an i64: body offset << 1 | region (0 request, 1 response), -1 when absent;
//   - anything else is a pointer to an ir::Value cell (a local, a param, or the node's temp).
#include "compiler/policy_lower.h"

#include <fmt/format.h>
#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/Intrinsics.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/Module.h>
#include <llvm/IR/Verifier.h>
#include <llvm/Support/raw_ostream.h>

#include <climits>
#include <cstddef>
#include <cstring>
#include <unordered_map>

#include "compiler/policy_jit_runtime.h"
#include "mrpc/base/check.h"
#include "mrpc/message/layout.h"

namespace mrpc::compiler {
namespace {

using ir::Expr;
using ir::ExprKind;
using ir::Kind;
using ir::Stmt;
using ir::StmtKind;

bool int_like(Kind k) {
  return k == Kind::kInt || k == Kind::kBool || k == Kind::kDuration || k == Kind::kTime ||
         k == Kind::kStatus;
}
bool is_scalar(Kind k) {
  return int_like(k) || k == Kind::kFloat;
}
bool is_string(Kind k) {
  return k == Kind::kString || k == Kind::kBytes;
}

struct LV {
  enum class K { kScalar, kStr, kBoxed, kMsg } k = K::kScalar;
  llvm::Value* a = nullptr;  // scalar bits, string pointer, Value*, message ref
  llvm::Value* b = nullptr;  // string length (i64)
};

class Lowerer {
 public:
  Lowerer(const ir::Policy& policy, std::string prefix, bool with_text)
      : policy_(policy),
        with_text_(with_text),
        prefix_(std::move(prefix)),
        context_(std::make_unique<llvm::LLVMContext>()),
        module_(std::make_unique<llvm::Module>(prefix_, *context_)),
        b_(*context_),
        nodes_(number_nodes(policy)),
        vl_(value_layout()) {
    for (uint32_t i = 0; i < nodes_.exprs.size(); ++i) expr_ids_[nodes_.exprs[i]] = i;
    for (uint32_t i = 0; i < nodes_.stmts.size(); ++i) stmt_ids_[nodes_.stmts[i]] = i;
    i8_ = b_.getInt8Ty();
    i32_ = b_.getInt32Ty();
    i64_ = b_.getInt64Ty();
    f64_ = b_.getDoubleTy();
    ptr_ = b_.getPtrTy();
    void_ = b_.getVoidTy();
  }

  Expected<LoweredModule> run() {
    for (size_t h = 0; h < policy_.handlers.size(); ++h) handler(h);
    std::string error;
    llvm::raw_string_ostream os(error);
    if (llvm::verifyModule(*module_, &os)) {
      return Status(StatusCode::kInternal,
                    fmt::format("policy '{}': the lowering made invalid LLVM IR: {}", policy_.name,
                                os.str()));
    }
    LoweredModule out;
    out.native_statements = native_;
    out.evaluator_statements = evaluated_;
    out.evaluator_expressions = evaluated_exprs_;
    out.instructions = module_->getInstructionCount();
    if (with_text_) {
      llvm::raw_string_ostream text(out.ir_text);
      module_->print(text, nullptr);
    }
    out.context = std::move(context_);
    out.module = std::move(module_);
    return out;
  }

 private:
  // ---- runtime helpers ----

  llvm::FunctionCallee helper(const char* name, llvm::Type* ret,
                              std::initializer_list<llvm::Type*> args) {
    return module_->getOrInsertFunction(
        name,
        llvm::FunctionType::get(ret, llvm::ArrayRef<llvm::Type*>(args.begin(), args.end()), false));
  }
  llvm::Value* call(const char* name, llvm::Type* ret, std::initializer_list<llvm::Type*> types,
                    std::initializer_list<llvm::Value*> args) {
    return b_.CreateCall(helper(name, ret, types),
                         llvm::ArrayRef<llvm::Value*>(args.begin(), args.end()));
  }

  llvm::Value* c64(uint64_t v) { return b_.getInt64(v); }
  llvm::Value* c32(uint32_t v) { return b_.getInt32(v); }

  // ---- the header and ir::Value cells ----

  llvm::Value* header_field(size_t offset) {
    return b_.CreateLoad(ptr_, b_.CreateConstGEP1_64(i8_, header_, offset));
  }
  llvm::Value* rpc() { return header_field(offsetof(JitHeader, rpc)); }
  llvm::Value* cell(size_t header_offset, uint32_t slot) {
    return b_.CreateConstGEP1_64(i8_, header_field(header_offset), uint64_t{slot} * vl_.size);
  }
  llvm::Value* local_cell(uint32_t slot) { return cell(offsetof(JitHeader, locals), slot); }
  llvm::Value* temp_cell(uint32_t id) { return cell(offsetof(JitHeader, temps), id); }

  // The scalar bits of a Value cell of kind `kind`.
  llvm::Value* load_bits(llvm::Value* cell, Kind kind) {
    uint64_t at = kind == Kind::kFloat ? vl_.f : vl_.i;
    return b_.CreateLoad(i64_, b_.CreateConstGEP1_64(i8_, cell, at));
  }
  void store_scalar(llvm::Value* cell, Kind kind, llvm::Value* bits) {
    b_.CreateStore(b_.getInt8(static_cast<uint8_t>(kind)),
                   b_.CreateConstGEP1_64(i8_, cell, vl_.kind));
    b_.CreateStore(bits, b_.CreateConstGEP1_64(i8_, cell, kind == Kind::kFloat ? vl_.f : vl_.i));
  }

  // Ends the handler when the ended flag is set (after anything that may have ended it).
  // Only where something since the last check could have ended it: a helper that runs the
  // evaluator, builds a string (its limit) or stores into a container (its limits). Each block of
  // statements ends with a check, so a merge point after it starts with nothing pending.
  void exit_if_ended() {
    if (!may_end_) return;
    may_end_ = false;
    llvm::Value* flag = b_.CreateLoad(i8_, header_field(offsetof(JitHeader, ended)));
    llvm::BasicBlock* go = llvm::BasicBlock::Create(*context_, "go", fn_);
    b_.CreateCondBr(b_.CreateICmpNE(flag, b_.getInt8(0)), exit_, go);
    b_.SetInsertPoint(go);
  }
  void end_handler() {
    b_.CreateStore(b_.getInt8(1), header_field(offsetof(JitHeader, ended)));
    b_.CreateBr(exit_);
    b_.SetInsertPoint(llvm::BasicBlock::Create(*context_, "dead", fn_));
  }

  // ---- handlers and statements ----

  void handler(size_t index) {
    const ir::Handler& h = policy_.handlers[index];
    handler_ = &h;
    fn_ = llvm::Function::Create(llvm::FunctionType::get(void_, {ptr_}, false),
                                 llvm::Function::ExternalLinkage,
                                 fmt::format("{}_h{}", prefix_, index), module_.get());
    header_ = fn_->getArg(0);
    b_.SetInsertPoint(llvm::BasicBlock::Create(*context_, "entry", fn_));
    exit_ = llvm::BasicBlock::Create(*context_, "exit", fn_);
    may_end_ = false;
    block(h.body);
    b_.CreateBr(exit_);
    b_.SetInsertPoint(exit_);
    b_.CreateRetVoid();
  }

  void block(const ir::Block& body) {
    for (const auto& s : body) {
      stmt(*s);
      exit_if_ended();
    }
  }

  void evaluate_stmt(const Stmt& s) {
    ++evaluated_;
    call("mpolrt_stmt", void_, {ptr_, i32_}, {header_, c32(stmt_ids_.at(&s))});
    may_end_ = true;
  }

  void stmt(const Stmt& s) {
    switch (s.kind) {
      case StmtKind::kLet:
        if (store_local(s.slot, handler_->locals[s.slot].type.kind, *s.exprs[0])) {
          ++native_;
          return;
        }
        break;
      case StmtKind::kAssign:
        if (assign(s)) {
          ++native_;
          return;
        }
        break;
      case StmtKind::kIf:
        ++native_;
        if_chain(s);
        return;
      case StmtKind::kForRange: {
        ++native_;
        // Constant bounds (the verifier's rule); the body ends the loop when the handler ends.
        int64_t from = s.exprs[0]->value.i, to = s.exprs[1]->value.i;
        llvm::BasicBlock* head = llvm::BasicBlock::Create(*context_, "for", fn_);
        llvm::BasicBlock* body = llvm::BasicBlock::Create(*context_, "for.body", fn_);
        llvm::BasicBlock* done = llvm::BasicBlock::Create(*context_, "for.done", fn_);
        llvm::BasicBlock* before = b_.GetInsertBlock();
        b_.CreateBr(head);
        b_.SetInsertPoint(head);
        llvm::PHINode* i = b_.CreatePHI(i64_, 2);
        i->addIncoming(c64(static_cast<uint64_t>(from)), before);
        b_.CreateCondBr(b_.CreateICmpSLT(i, c64(static_cast<uint64_t>(to))), body, done);
        b_.SetInsertPoint(body);
        store_scalar(local_cell(s.slot), Kind::kInt, i);
        loop_exits_.push_back(done);
        block(s.blocks[0]);
        loop_exits_.pop_back();
        i->addIncoming(b_.CreateAdd(i, c64(1)), b_.GetInsertBlock());
        b_.CreateBr(head);
        b_.SetInsertPoint(done);
        return;
      }
      case StmtKind::kPass:
        ++native_;
        end_handler();
        return;
      case StmtKind::kBreak:
        // Natively lowered loops only reach here: a `for` over a collection runs whole in the
        // evaluator, its `break` included.
        MRPC_ASSERT(!loop_exits_.empty(), "`break` outside a lowered loop in policy '{}'",
                    policy_.name);
        ++native_;
        b_.CreateBr(loop_exits_.back());
        b_.SetInsertPoint(llvm::BasicBlock::Create(*context_, "dead", fn_));
        return;
      case StmtKind::kDrop:
        ++native_;
        call("mpolrt_drop", void_, {ptr_}, {header_});
        b_.CreateBr(exit_);
        b_.SetInsertPoint(llvm::BasicBlock::Create(*context_, "dead", fn_));
        return;
      case StmtKind::kAction:
        if (action(s)) {
          ++native_;
          return;
        }
        break;
      default:
        break;
    }
    evaluate_stmt(s);
  }

  void if_chain(const Stmt& s) {
    llvm::BasicBlock* done = llvm::BasicBlock::Create(*context_, "if.done", fn_);
    for (size_t i = 0; i < s.blocks.size(); ++i) {
      if (i >= s.exprs.size()) {
        block(s.blocks[i]);
        b_.CreateBr(done);
        break;
      }
      llvm::Value* cond = scalar(*s.exprs[i]);
      exit_if_ended();
      llvm::BasicBlock* then = llvm::BasicBlock::Create(*context_, "then", fn_);
      llvm::BasicBlock* next = llvm::BasicBlock::Create(*context_, "else", fn_);
      b_.CreateCondBr(b_.CreateICmpNE(cond, c64(0)), then, next);
      b_.SetInsertPoint(then);
      block(s.blocks[i]);
      b_.CreateBr(done);
      b_.SetInsertPoint(next);
      if (i + 1 == s.blocks.size()) b_.CreateBr(done);
    }
    if (s.blocks.empty()) b_.CreateBr(done);
    b_.SetInsertPoint(done);
  }

  // `let` / plain `=` into a local, natively when the value is a scalar or a string the code can
  // point at.
  bool store_local(uint32_t slot, Kind kind, const Expr& value) {
    if (is_scalar(kind)) {
      llvm::Value* bits = scalar(value);
      exit_if_ended();
      store_scalar(local_cell(slot), kind, bits);
      return true;
    }
    if (is_string(kind)) {
      auto [p, n] = str(value);  // a string the evaluator makes is copied out of its temp cell
      call("mpolrt_box_str", void_, {ptr_, i32_, ptr_, i64_},
           {local_cell(slot), c32(static_cast<uint32_t>(kind)), p, n});
      return true;
    }
    return false;
  }

  bool assign(const Stmt& s) {
    const Expr& target = *s.exprs[0];
    const Expr& value = *s.exprs[1];
    Kind kind = target.type.kind;
    if (target.kind == ExprKind::kLocal) {
      if (!s.compound) return store_local(target.slot, kind, value);
      if (!is_scalar(kind) || !is_scalar(value.type.kind)) return false;
      llvm::Value* v = scalar(value);
      exit_if_ended();
      llvm::Value* cell = local_cell(target.slot);
      store_scalar(cell, kind, arith(s.op, kind, kind, load_bits(cell, kind), value.type.kind, v));
      return true;
    }
    if (target.kind == ExprKind::kState) {
      llvm::Value* cell = this->cell(offsetof(JitHeader, scalars), target.slot);
      if (target.type.is(Kind::kCounter)) {
        // Counters only go up (a negative bump is a fault, ignored) and saturate.
        llvm::Value* v = scalar(value);
        exit_if_ended();
        llvm::BasicBlock* neg = llvm::BasicBlock::Create(*context_, "counter.neg", fn_);
        llvm::BasicBlock* add = llvm::BasicBlock::Create(*context_, "counter.add", fn_);
        llvm::BasicBlock* done = llvm::BasicBlock::Create(*context_, "counter.done", fn_);
        b_.CreateCondBr(b_.CreateICmpSLT(v, c64(0)), neg, add);
        b_.SetInsertPoint(neg);
        call("mpolrt_fault", void_, {ptr_}, {header_});
        b_.CreateBr(done);
        b_.SetInsertPoint(add);
        llvm::Value* old = load_bits(cell, Kind::kInt);
        llvm::Value* sum =
            b_.CreateBinaryIntrinsic(llvm::Intrinsic::sadd_sat, old, v, nullptr, "count");
        b_.CreateStore(sum, b_.CreateConstGEP1_64(i8_, cell, vl_.i));
        b_.CreateBr(done);
        b_.SetInsertPoint(done);
        return true;
      }
      if (!is_scalar(kind) || !is_scalar(value.type.kind)) return false;
      llvm::Value* v = scalar(value);
      exit_if_ended();
      if (s.compound) v = arith(s.op, kind, kind, load_bits(cell, kind), value.type.kind, v);
      store_scalar(cell, kind, v);
      return true;
    }
    if (target.kind == ExprKind::kRpc && (target.rpc_field == ir::RpcField::kPriority ||
                                          target.rpc_field == ir::RpcField::kDeadline)) {
      if (!is_scalar(value.type.kind)) return false;
      bool priority = target.rpc_field == ir::RpcField::kPriority;
      llvm::Value* v = scalar(value);
      exit_if_ended();
      size_t at =
          priority ? offsetof(mrpc_rpc_view, priority) : offsetof(mrpc_rpc_view, deadline_ns);
      llvm::Value* field = b_.CreateConstGEP1_64(i8_, rpc(), at);
      Kind old_kind = priority ? Kind::kInt : Kind::kTime;
      if (s.compound) {
        llvm::Value* old =
            priority ? b_.CreateSExt(b_.CreateLoad(i32_, field), i64_) : b_.CreateLoad(i64_, field);
        v = arith(s.op, old_kind, old_kind, old, value.type.kind, v);
      }
      if (priority) {
        // Clamped into int32 (the evaluator's rule).
        v = b_.CreateBinaryIntrinsic(llvm::Intrinsic::smax, v,
                                     c64(static_cast<uint64_t>(INT32_MIN)));
        v = b_.CreateBinaryIntrinsic(llvm::Intrinsic::smin, v, c64(INT32_MAX));
        b_.CreateStore(b_.CreateTrunc(v, i32_), field);
      } else {
        b_.CreateStore(v, field);
      }
      return true;
    }
    if (target.kind == ExprKind::kIndex && target.children[0]->kind == ExprKind::kState &&
        target.children[0]->type.is(Kind::kMap) && is_scalar(kind) && is_scalar(value.type.kind) &&
        key_native(*target.children[1])) {
      // The value first, then the key (the evaluator's order).
      llvm::Value* v = scalar(value);
      exit_if_ended();
      llvm::Value* key = key_cell(*target.children[1]);
      uint32_t packed = pack_op(s.op, kind, kind, value.type.kind) | (s.compound ? 0x80u : 0u);
      may_end_ = true;
      call("mpolrt_state_set", void_, {ptr_, i32_, i32_, ptr_, i64_},
           {header_, c32(target.children[0]->slot), c32(packed), key, v});
      return true;
    }
    return false;
  }

  bool action(const Stmt& s) {
    switch (s.action) {
      case Action::kReject: {
        llvm::Value* status = scalar(*s.exprs[0]);
        exit_if_ended();
        if (!string_native(*s.exprs[1])) {
          LV msg = boxed(*s.exprs[1]);
          exit_if_ended();
          auto [p, n] = box_str(msg.a);
          call("mpolrt_reject", void_, {ptr_, i64_, ptr_, i64_}, {header_, status, p, n});
        } else {
          auto [p, n] = str(*s.exprs[1]);
          call("mpolrt_reject", void_, {ptr_, i64_, ptr_, i64_}, {header_, status, p, n});
        }
        b_.CreateBr(exit_);
        b_.SetInsertPoint(llvm::BasicBlock::Create(*context_, "dead", fn_));
        return true;
      }
      case Action::kDelay:
      case Action::kRetry: {
        llvm::Value* ns = scalar(*s.exprs[0]);
        exit_if_ended();
        call(s.action == Action::kDelay ? "mpolrt_delay" : "mpolrt_retry", void_, {ptr_, i64_},
             {header_, ns});
        return true;
      }
      case Action::kRoute: {
        auto [p, n] = str(*s.exprs[0]);
        exit_if_ended();
        call("mpolrt_route", void_, {ptr_, ptr_, i64_}, {header_, p, n});
        return true;
      }
      case Action::kMirror: {
        auto [p, n] = str(*s.exprs[0]);
        exit_if_ended();
        llvm::Value* fraction = scalar(*s.exprs[1]);
        exit_if_ended();
        call("mpolrt_mirror", void_, {ptr_, ptr_, i64_, i64_}, {header_, p, n, fraction});
        return true;
      }
      case Action::kLog: {
        // Every value in a cell, in order (the handler ends at the first that ends it), then one
        // record.
        auto n = static_cast<uint32_t>(s.exprs.size());
        llvm::Value* args = entry_alloca(llvm::ArrayType::get(ptr_, n));
        for (uint32_t i = 0; i < n; ++i) {
          LV v = boxed(*s.exprs[i]);
          exit_if_ended();
          b_.CreateStore(v.a, b_.CreateConstGEP1_64(ptr_, args, i));
        }
        call("mpolrt_log", void_, {ptr_, i32_, ptr_, i32_},
             {header_, c32(stmt_ids_.at(&s)), args, c32(n)});
        return true;
      }
      case Action::kObserve: {
        const Expr& x = *s.exprs[1];
        // A labelled histogram's series are the evaluator's (through mpolrt_stmt).
        if (!is_scalar(x.type.kind) || s.exprs.size() > 2) return false;
        llvm::Value* bits = scalar(x);
        call("mpolrt_observe", void_, {ptr_, i32_, i32_, i64_},
             {header_, c32(s.exprs[0]->slot), c32(static_cast<uint32_t>(x.type.kind)), bits});
        return true;
      }
      default:
        return false;
    }
  }

  // ---- expressions ----

  uint32_t id(const Expr& e) const { return expr_ids_.at(&e); }

  LV evaluate(const Expr& e) {
    ++evaluated_exprs_;
    may_end_ = true;
    return LV{LV::K::kBoxed, call("mpolrt_eval", ptr_, {ptr_, i32_}, {header_, c32(id(e))}),
              nullptr};
  }

  // The i64 bits of a scalar expression.
  llvm::Value* scalar(const Expr& e) {
    LV v = expr(e);
    if (v.k == LV::K::kScalar) return v.a;
    return load_bits(v.a, e.type.kind);
  }

  // A string the code can point at without a copy.
  bool str_native(const Expr& e) const {
    switch (e.kind) {
      case ExprKind::kConst:
      case ExprKind::kParam:
      case ExprKind::kLocal:
        return true;
      case ExprKind::kRpc:
        return e.rpc_field == ir::RpcField::kService || e.rpc_field == ir::RpcField::kMethod ||
               e.rpc_field == ir::RpcField::kCallerApp ||
               e.rpc_field == ir::RpcField::kCallerHost || e.rpc_field == ir::RpcField::kEndpoint;
      case ExprKind::kField:
        return field_native(e);
      case ExprKind::kMetadata:
        return true;
      case ExprKind::kIndex:
        return e.children[0]->kind == ExprKind::kRpc &&
               e.children[0]->rpc_field == ir::RpcField::kEndpoints &&
               is_scalar(e.children[1]->type.kind);
      default:
        return false;
    }
  }

  // A string the code builds or points at without the evaluator (concatenations of those).
  bool string_native(const Expr& e) const {
    if (str_native(e)) return true;
    return e.kind == ExprKind::kBinary && e.op == ir::Op::kAdd && is_string(e.type.kind) &&
           string_native(*e.children[0]) && string_native(*e.children[1]);
  }

  // An alloca in the entry block (one per use site, not one per loop iteration).
  llvm::Value* entry_alloca(llvm::Type* type) {
    llvm::IRBuilder<> entry(&fn_->getEntryBlock(), fn_->getEntryBlock().begin());
    return entry.CreateAlloca(type);
  }

  std::pair<llvm::Value*, llvm::Value*> box_str(llvm::Value* cell) {
    llvm::Value* size = entry_alloca(i64_);
    llvm::Value* p = call("mpolrt_str_data", ptr_, {ptr_, ptr_}, {cell, size});
    return {p, b_.CreateLoad(i64_, size)};
  }

  std::pair<llvm::Value*, llvm::Value*> str(const Expr& e) {
    LV v = expr(e);
    if (v.k == LV::K::kStr) return {v.a, v.b};
    return box_str(v.a);
  }

  // A Value cell holding the expression's value.
  LV boxed(const Expr& e) {
    LV v = expr(e);
    if (v.k == LV::K::kBoxed) return v;
    llvm::Value* cell = temp_cell(id(e));
    if (v.k == LV::K::kScalar) {
      store_scalar(cell, e.type.kind, v.a);
    } else if (v.k == LV::K::kStr) {
      call("mpolrt_box_str", void_, {ptr_, i32_, ptr_, i64_},
           {cell, c32(static_cast<uint32_t>(e.type.kind)), v.a, v.b});
    } else {
      return evaluate(e);  // a message: the evaluator's own reference form
    }
    return LV{LV::K::kBoxed, cell, nullptr};
  }

  llvm::Value* arith(ir::Op op, Kind result, Kind a_kind, llvm::Value* a, Kind b_kind,
                     llvm::Value* b) {
    return call("mpolrt_arith", i64_, {ptr_, i32_, i64_, i64_},
                {header_, c32(pack_op(op, result, a_kind, b_kind)), a, b});
  }

  LV expr(const Expr& e) {
    switch (e.kind) {
      case ExprKind::kConst:
        if (is_scalar(e.type.kind)) {
          int64_t bits = e.value.i;
          if (e.type.kind == Kind::kFloat) std::memcpy(&bits, &e.value.f, 8);
          return LV{LV::K::kScalar, c64(static_cast<uint64_t>(bits)), nullptr};
        }
        if (is_string(e.type.kind)) {
          llvm::Value* g = b_.CreateGlobalString(e.value.s, "s", 0, module_.get());
          return LV{LV::K::kStr, g, c64(e.value.s.size())};
        }
        return LV{LV::K::kBoxed, call("mpolrt_const", ptr_, {ptr_, i32_}, {header_, c32(id(e))}),
                  nullptr};
      case ExprKind::kParam: {
        llvm::Value* c = cell(offsetof(JitHeader, params), e.slot);
        if (is_scalar(e.type.kind)) return LV{LV::K::kScalar, load_bits(c, e.type.kind), nullptr};
        return LV{LV::K::kBoxed, c, nullptr};
      }
      case ExprKind::kState: {
        if (is_scalar(e.type.kind) || e.type.is(Kind::kCounter)) {
          llvm::Value* c = cell(offsetof(JitHeader, scalars), e.slot);
          return LV{LV::K::kScalar,
                    load_bits(c, e.type.is(Kind::kCounter) ? Kind::kInt : e.type.kind), nullptr};
        }
        return evaluate(e);
      }
      case ExprKind::kLocal: {
        llvm::Value* c = local_cell(e.slot);
        if (is_scalar(e.type.kind)) return LV{LV::K::kScalar, load_bits(c, e.type.kind), nullptr};
        return LV{LV::K::kBoxed, c, nullptr};
      }
      case ExprKind::kRpc:
        return rpc_field(e);
      case ExprKind::kMessageRoot: {
        size_t at =
            e.request ? offsetof(mrpc_rpc_view, request) : offsetof(mrpc_rpc_view, response);
        llvm::Value* view = b_.CreateConstGEP1_64(i8_, rpc(), at);
        llvm::Value* region = b_.CreateLoad(
            ptr_, b_.CreateConstGEP1_64(i8_, view, offsetof(mrpc_message_view, region)));
        llvm::Value* body = b_.CreateLoad(
            i64_, b_.CreateConstGEP1_64(i8_, view, offsetof(mrpc_message_view, body_offset)));
        llvm::Value* ref = b_.CreateOr(b_.CreateShl(body, 1), c64(e.request ? 0 : 1));
        // No message, or a body offset past INT64_MAX (the evaluator's negative reference).
        llvm::Value* absent = b_.CreateOr(b_.CreateIsNull(region), b_.CreateICmpSLT(body, c64(0)));
        return LV{LV::K::kMsg, b_.CreateSelect(absent, c64(~uint64_t{0}), ref), nullptr};
      }
      case ExprKind::kField:
        if (field_native(e)) return field(e);
        return evaluate(e);
      case ExprKind::kUnary: {
        if (e.op == ir::Op::kNot) {
          llvm::Value* a = scalar(*e.children[0]);
          return LV{LV::K::kScalar, b_.CreateZExt(b_.CreateICmpEQ(a, c64(0)), i64_), nullptr};
        }
        if (!is_scalar(e.children[0]->type.kind)) return evaluate(e);
        llvm::Value* a = scalar(*e.children[0]);
        Kind k = e.children[0]->type.kind;
        return LV{LV::K::kScalar,
                  call("mpolrt_unary", i64_, {ptr_, i32_, i64_},
                       {header_, c32(pack_op(e.op, e.type.kind, k, k)), a}),
                  nullptr};
      }
      case ExprKind::kBinary:
        return binary(e);
      case ExprKind::kCall:
        return builtin(e);
      case ExprKind::kMetadata: {
        auto [p, n] = str(*e.children[0]);
        llvm::Value* size = entry_alloca(i64_);
        llvm::Value* data =
            call("mpolrt_metadata", ptr_, {ptr_, ptr_, i64_, ptr_}, {header_, p, n, size});
        return LV{LV::K::kStr, data, b_.CreateLoad(i64_, size)};
      }
      case ExprKind::kIndex: {
        const Expr& object = *e.children[0];
        if (object.kind == ExprKind::kRpc && object.rpc_field == ir::RpcField::kEndpoints &&
            is_scalar(e.children[1]->type.kind)) {
          llvm::Value* index = scalar(*e.children[1]);
          llvm::Value* size = entry_alloca(i64_);
          llvm::Value* data =
              call("mpolrt_endpoint_at", ptr_, {ptr_, i64_, ptr_}, {header_, index, size});
          return LV{LV::K::kStr, data, b_.CreateLoad(i64_, size)};
        }
        if (object.kind == ExprKind::kState && object.type.is(Kind::kMap) &&
            is_scalar(e.type.kind) && key_native(*e.children[1])) {
          llvm::Value* key = key_cell(*e.children[1]);
          return LV{
              LV::K::kScalar,
              call("mpolrt_state_get", i64_, {ptr_, i32_, ptr_}, {header_, c32(object.slot), key}),
              nullptr};
        }
        return evaluate(e);
      }
      default:
        return evaluate(e);
    }
  }

  // A container key the code passes without the evaluator: a scalar or a string it points at.
  bool key_native(const Expr& key) const {
    return is_scalar(key.type.kind) || (is_string(key.type.kind) && string_native(key));
  }
  llvm::Value* key_cell(const Expr& key) {
    Kind k = key.type.kind;
    if (is_scalar(k)) {
      llvm::Value* bits = scalar(key);
      return call("mpolrt_key_scalar", ptr_, {ptr_, i32_, i64_},
                  {header_, c32(static_cast<uint32_t>(k)), bits});
    }
    auto [p, n] = str(key);
    return call("mpolrt_key_str", ptr_, {ptr_, i32_, ptr_, i64_},
                {header_, c32(static_cast<uint32_t>(k)), p, n});
  }

  LV rpc_field(const Expr& e) {
    using F = ir::RpcField;
    auto load = [&](size_t at, llvm::Type* type, bool sign) -> llvm::Value* {
      llvm::Value* v = b_.CreateLoad(type, b_.CreateConstGEP1_64(i8_, rpc(), at));
      if (type == i64_) return v;
      return sign ? b_.CreateSExt(v, i64_) : b_.CreateZExt(v, i64_);
    };
    auto str_field = [&](size_t at) {
      llvm::Value* p =
          b_.CreateLoad(ptr_, b_.CreateConstGEP1_64(i8_, rpc(), at + offsetof(mrpc_str, data)));
      llvm::Value* n = load(at + offsetof(mrpc_str, size), i32_, false);
      // A null string reads as empty.
      n = b_.CreateSelect(b_.CreateIsNull(p), c64(0), n);
      return LV{LV::K::kStr, p, n};
    };
    auto sc = [](llvm::Value* v) { return LV{LV::K::kScalar, v, nullptr}; };
    switch (e.rpc_field) {
      case F::kService:
        return str_field(offsetof(mrpc_rpc_view, service));
      case F::kMethod:
        return str_field(offsetof(mrpc_rpc_view, method));
      case F::kCallerApp:
        return str_field(offsetof(mrpc_rpc_view, caller_app));
      case F::kCallerHost:
        return str_field(offsetof(mrpc_rpc_view, caller_host));
      case F::kEndpoint:
        return str_field(offsetof(mrpc_rpc_view, endpoint));
      case F::kCallerUid:
        return sc(load(offsetof(mrpc_rpc_view, caller_uid), i32_, false));
      case F::kDeadline:
        return sc(load(offsetof(mrpc_rpc_view, deadline_ns), i64_, true));
      case F::kLatency:
        return sc(load(offsetof(mrpc_rpc_view, latency_ns), i64_, true));
      case F::kPriority:
        return sc(load(offsetof(mrpc_rpc_view, priority), i32_, true));
      case F::kAttempt:
        return sc(load(offsetof(mrpc_rpc_view, attempt), i32_, false));
      case F::kStatus:
        return sc(load(offsetof(mrpc_rpc_view, status), i32_, false));
      case F::kSize: {
        // u64 bytes, read as int64 (past INT64_MAX: INT64_MAX).
        llvm::Value* v = load(offsetof(mrpc_rpc_view, size), i64_, false);
        return sc(b_.CreateSelect(b_.CreateICmpSLT(v, c64(0)), c64(INT64_MAX), v));
      }
      case F::kRemaining:
        return sc(call("mpolrt_remaining", i64_, {ptr_}, {header_}));
      default:
        return evaluate(e);
    }
  }

  // A field the code reads natively: one storage for every matched method, a scalar, string,
  // bytes or (non-repeated) message, on a message the code holds natively.
  bool field_native(const Expr& e) const {
    if (e.kind != ExprKind::kField || e.steps.empty()) return false;
    if (e.type.is(Kind::kList) || e.type.is(Kind::kMap)) return false;
    if (!is_scalar(e.type.kind) && !is_string(e.type.kind) && !e.type.is(Kind::kMessage))
      return false;
    bool any = false;
    for (const auto& s : e.steps) {
      if (s.holder == nullptr) continue;
      any = true;
      if (s.field->repeated) return false;
      // A float is read from a float or double field only (anything else: the evaluator).
      bool float_field = s.field->kind == FieldKind::kFloat || s.field->kind == FieldKind::kDouble;
      if (e.type.is(Kind::kFloat) != float_field) return false;
    }
    if (!any) return false;
    const Expr& parent = *e.children[0];
    return parent.kind == ExprKind::kMessageRoot || field_native(parent);
  }

  // Loads a `type` at region + at (unaligned).
  llvm::Value* load_at(llvm::Type* type, llvm::Value* region, llvm::Value* at) {
    llvm::LoadInst* l = b_.CreateLoad(type, b_.CreateGEP(i8_, region, at));
    l->setAlignment(llvm::Align(1));
    return l;
  }

  // A region reference at `at` checked against the region (unit: 1 byte): {offset, size}, size 0
  // when it points outside (the evaluator's region_ref).
  std::pair<llvm::Value*, llvm::Value*> region_ref(llvm::Value* region, llvm::Value* size,
                                                   llvm::Value* at) {
    llvm::Value* off = load_at(i64_, region, at);
    llvm::Value* n = b_.CreateZExt(load_at(i32_, region, b_.CreateAdd(at, c64(8))), i64_);
    llvm::Value* bad = b_.CreateOr(b_.CreateICmpEQ(n, c64(0)), b_.CreateICmpUGT(n, size));
    bad = b_.CreateOr(bad, b_.CreateICmpUGT(off, size));
    bad = b_.CreateOr(bad, b_.CreateICmpUGT(n, b_.CreateSub(size, off)));
    return {b_.CreateSelect(bad, c64(0), off), b_.CreateSelect(bad, c64(0), n)};
  }

  // The field's value: one read when every matched method stores it alike, else a switch on the
  // method the run matched (a method where the path does not exist reads the default).
  LV field(const Expr& e) {
    LV parent = expr(*e.children[0]);
    if (uniform_steps(e)) return read_step(e, e.steps[0], parent.a);
    llvm::Value* method =
        b_.CreateLoad(i64_, b_.CreateConstGEP1_64(i8_, header_, offsetof(JitHeader, method)));
    llvm::BasicBlock* done = llvm::BasicBlock::Create(*context_, "field.method.done", fn_);
    llvm::BasicBlock* none = llvm::BasicBlock::Create(*context_, "field.method.none", fn_);
    llvm::SwitchInst* sw = b_.CreateSwitch(method, none, static_cast<unsigned>(e.steps.size()));
    std::vector<std::pair<LV, llvm::BasicBlock*>> results;
    for (size_t m = 0; m < e.steps.size(); ++m) {
      if (e.steps[m].holder == nullptr) continue;
      llvm::BasicBlock* bb = llvm::BasicBlock::Create(*context_, "field.method", fn_);
      sw->addCase(llvm::cast<llvm::ConstantInt>(c64(m)), bb);
      b_.SetInsertPoint(bb);
      LV r = read_step(e, e.steps[m], parent.a);
      results.emplace_back(r, b_.GetInsertBlock());
      b_.CreateBr(done);
    }
    b_.SetInsertPoint(none);
    LV d = default_of(e);
    b_.CreateBr(done);
    b_.SetInsertPoint(done);
    LV out = d;
    llvm::PHINode* pa = b_.CreatePHI(d.a->getType(), static_cast<unsigned>(results.size() + 1));
    pa->addIncoming(d.a, none);
    for (auto& [r, bb] : results) pa->addIncoming(r.a, bb);
    out.a = pa;
    if (d.b != nullptr) {
      llvm::PHINode* pb = b_.CreatePHI(i64_, static_cast<unsigned>(results.size() + 1));
      pb->addIncoming(d.b, none);
      for (auto& [r, bb] : results) pb->addIncoming(r.b, bb);
      out.b = pb;
    }
    return out;
  }

  LV default_of(const Expr& e) {
    if (e.type.is(Kind::kMessage)) return LV{LV::K::kMsg, c64(~uint64_t{0}), nullptr};
    if (is_string(e.type.kind)) {
      return LV{LV::K::kStr, llvm::ConstantPointerNull::get(llvm::cast<llvm::PointerType>(ptr_)),
                c64(0)};
    }
    return LV{LV::K::kScalar, c64(0), nullptr};
  }

  bool uniform_steps(const Expr& e) const {
    const ir::FieldStep& first = e.steps[0];
    for (const auto& s : e.steps) {
      if (s.holder == nullptr || first.holder == nullptr || s.fingerprint != first.fingerprint ||
          s.field->offset != first.field->offset || s.field->kind != first.field->kind) {
        return false;
      }
    }
    return true;
  }

  // One method's read of the field on message `m`.
  LV read_step(const Expr& e, const ir::FieldStep& step, llvm::Value* m) {
    const FieldLayout& f = *step.field;
    llvm::BasicBlock* read = llvm::BasicBlock::Create(*context_, "field.read", fn_);
    llvm::BasicBlock* done = llvm::BasicBlock::Create(*context_, "field.done", fn_);

    // Valid: present and the holder's body inside the region.
    llvm::Value* region_index = b_.CreateAnd(m, c64(1));
    llvm::Value* body = b_.CreateLShr(m, 1);
    llvm::Value* view = b_.CreateGEP(i8_, rpc(),
                                     b_.CreateSelect(b_.CreateICmpEQ(region_index, c64(0)),
                                                     c64(offsetof(mrpc_rpc_view, request)),
                                                     c64(offsetof(mrpc_rpc_view, response))));
    llvm::Value* region =
        b_.CreateLoad(ptr_, b_.CreateConstGEP1_64(i8_, view, offsetof(mrpc_message_view, region)));
    llvm::Value* size = b_.CreateLoad(
        i64_, b_.CreateConstGEP1_64(i8_, view, offsetof(mrpc_message_view, region_size)));
    llvm::Value* ok = b_.CreateICmpSGE(m, c64(0));
    ok = b_.CreateAnd(ok, b_.CreateIsNotNull(region));
    ok = b_.CreateAnd(ok, b_.CreateICmpULE(body, size));
    ok =
        b_.CreateAnd(ok, b_.CreateICmpULE(c64(step.holder->body_size()), b_.CreateSub(size, body)));
    llvm::BasicBlock* checked = llvm::BasicBlock::Create(*context_, "field.valid", fn_);
    std::vector<llvm::BasicBlock*> to_default{b_.GetInsertBlock()};
    b_.CreateCondBr(ok, checked, done);
    b_.SetInsertPoint(checked);
    if (f.presence_bit >= 0) {
      llvm::Value* word = load_at(
          i32_, region, b_.CreateAdd(body, c64(4 * static_cast<uint64_t>(f.presence_bit / 32))));
      llvm::Value* set =
          b_.CreateICmpNE(b_.CreateAnd(word, c32(1u << (f.presence_bit % 32))), c32(0));
      llvm::BasicBlock* next = llvm::BasicBlock::Create(*context_, "field.present", fn_);
      to_default.push_back(b_.GetInsertBlock());
      b_.CreateCondBr(set, next, done);
      b_.SetInsertPoint(next);
    }
    if (f.oneof_index >= 0) {
      const OneofLayout& o = step.holder->oneofs()[static_cast<size_t>(f.oneof_index)];
      llvm::Value* which = load_at(i32_, region, b_.CreateAdd(body, c64(o.case_offset)));
      llvm::BasicBlock* next = llvm::BasicBlock::Create(*context_, "field.case", fn_);
      to_default.push_back(b_.GetInsertBlock());
      b_.CreateCondBr(b_.CreateICmpEQ(which, c32(f.number)), next, done);
      b_.SetInsertPoint(next);
    }
    b_.CreateBr(read);
    b_.SetInsertPoint(read);
    llvm::Value* at = b_.CreateAdd(body, c64(f.offset));
    LV out;
    llvm::Value* a = nullptr;
    llvm::Value* n = nullptr;
    llvm::Value* default_a = nullptr;
    llvm::Value* default_n = nullptr;
    if (e.type.is(Kind::kMessage)) {
      auto [off, len] = region_ref(region, size, at);
      a = b_.CreateSelect(b_.CreateICmpEQ(len, c64(0)), c64(~uint64_t{0}),
                          b_.CreateOr(b_.CreateShl(off, 1), region_index));
      default_a = c64(~uint64_t{0});
      out.k = LV::K::kMsg;
    } else if (is_string(e.type.kind)) {
      auto [off, len] = region_ref(region, size, at);
      a = b_.CreateGEP(i8_, region, off);
      n = len;
      default_a = llvm::ConstantPointerNull::get(llvm::cast<llvm::PointerType>(ptr_));
      default_n = c64(0);
      out.k = LV::K::kStr;
    } else {
      out.k = LV::K::kScalar;
      default_a = c64(0);
      switch (f.kind) {
        case FieldKind::kBool:
          a = b_.CreateZExt(b_.CreateICmpNE(load_at(i8_, region, at), b_.getInt8(0)), i64_);
          break;
        case FieldKind::kInt32:
        case FieldKind::kEnum:
          a = b_.CreateSExt(load_at(i32_, region, at), i64_);
          break;
        case FieldKind::kUint32:
          a = b_.CreateZExt(load_at(i32_, region, at), i64_);
          break;
        case FieldKind::kFloat:
          a = b_.CreateBitCast(b_.CreateFPExt(load_at(b_.getFloatTy(), region, at), f64_), i64_);
          break;
        default:  // int64, uint64, double: the 8 bytes as they are
          a = load_at(i64_, region, at);
          break;
      }
    }
    llvm::BasicBlock* read_end = b_.GetInsertBlock();
    b_.CreateBr(done);
    b_.SetInsertPoint(done);
    llvm::PHINode* pa = b_.CreatePHI(a->getType(), 4);
    pa->addIncoming(a, read_end);
    for (llvm::BasicBlock* d : to_default) pa->addIncoming(default_a, d);
    out.a = pa;
    if (n != nullptr) {
      llvm::PHINode* pn = b_.CreatePHI(i64_, 4);
      pn->addIncoming(n, read_end);
      for (llvm::BasicBlock* d : to_default) pn->addIncoming(default_n, d);
      out.b = pn;
    }
    return out;
  }

  LV binary(const Expr& e) {
    using O = ir::Op;
    const Expr& l = *e.children[0];
    const Expr& r = *e.children[1];
    if (e.op == O::kAnd || e.op == O::kOr) {
      llvm::Value* a = b_.CreateICmpNE(scalar(l), c64(0));
      llvm::BasicBlock* from = b_.GetInsertBlock();
      llvm::BasicBlock* rhs = llvm::BasicBlock::Create(*context_, "rhs", fn_);
      llvm::BasicBlock* done = llvm::BasicBlock::Create(*context_, "logic", fn_);
      if (e.op == O::kAnd) {
        b_.CreateCondBr(a, rhs, done);
      } else {
        b_.CreateCondBr(a, done, rhs);
      }
      b_.SetInsertPoint(rhs);
      llvm::Value* bv = b_.CreateICmpNE(scalar(r), c64(0));
      llvm::BasicBlock* rhs_end = b_.GetInsertBlock();
      b_.CreateBr(done);
      b_.SetInsertPoint(done);
      llvm::PHINode* phi = b_.CreatePHI(b_.getInt1Ty(), 2);
      phi->addIncoming(a, from);
      phi->addIncoming(bv, rhs_end);
      return LV{LV::K::kScalar, b_.CreateZExt(phi, i64_), nullptr};
    }
    if (e.op == O::kIn || e.op == O::kNotIn) {
      llvm::Value* in = membership(l, r);
      if (in == nullptr) return evaluate(e);
      if (e.op == O::kNotIn) in = b_.CreateXor(in, c64(1));
      return LV{LV::K::kScalar, in, nullptr};
    }
    Kind lk = l.type.kind, rk = r.type.kind;
    bool compare = e.op == O::kEq || e.op == O::kNe || e.op == O::kLt || e.op == O::kLe ||
                   e.op == O::kGt || e.op == O::kGe;
    if (compare && lk == rk && int_like(lk)) {
      llvm::Value* a = scalar(l);
      llvm::Value* b = scalar(r);
      llvm::CmpInst::Predicate p = e.op == O::kEq   ? llvm::CmpInst::ICMP_EQ
                                   : e.op == O::kNe ? llvm::CmpInst::ICMP_NE
                                   : e.op == O::kLt ? llvm::CmpInst::ICMP_SLT
                                   : e.op == O::kLe ? llvm::CmpInst::ICMP_SLE
                                   : e.op == O::kGt ? llvm::CmpInst::ICMP_SGT
                                                    : llvm::CmpInst::ICMP_SGE;
      return LV{LV::K::kScalar, b_.CreateZExt(b_.CreateICmp(p, a, b), i64_), nullptr};
    }
    if (compare && lk == Kind::kFloat && rk == Kind::kFloat) {
      llvm::Value* a = b_.CreateBitCast(scalar(l), f64_);
      llvm::Value* b = b_.CreateBitCast(scalar(r), f64_);
      // ir_ops: ==/!= by value (NaN != NaN); < and > ordered; <= is "not >", >= is "not <".
      llvm::CmpInst::Predicate p = e.op == O::kEq   ? llvm::CmpInst::FCMP_OEQ
                                   : e.op == O::kNe ? llvm::CmpInst::FCMP_UNE
                                   : e.op == O::kLt ? llvm::CmpInst::FCMP_OLT
                                   : e.op == O::kLe ? llvm::CmpInst::FCMP_ULE
                                   : e.op == O::kGt ? llvm::CmpInst::FCMP_OGT
                                                    : llvm::CmpInst::FCMP_UGE;
      return LV{LV::K::kScalar, b_.CreateZExt(b_.CreateFCmp(p, a, b), i64_), nullptr};
    }
    if ((e.op == O::kEq || e.op == O::kNe) && lk == rk && is_string(lk) && str_native(l) &&
        str_native(r)) {
      auto [ap, an] = str(l);
      auto [bp, bn] = str(r);
      llvm::Value* eq = call("mpolrt_str_eq", i64_, {ptr_, i64_, ptr_, i64_}, {ap, an, bp, bn});
      if (e.op == O::kNe) eq = b_.CreateXor(eq, c64(1));
      return LV{LV::K::kScalar, eq, nullptr};
    }
    if (e.op == O::kAdd && is_string(e.type.kind) && is_string(lk) && is_string(rk)) {
      auto [ap, an] = str(l);
      auto [bp, bn] = str(r);
      may_end_ = true;  // a result past the string limit ends the handler
      llvm::Value* out = call(
          "mpolrt_concat", ptr_, {ptr_, ptr_, i32_, ptr_, i64_, ptr_, i64_},
          {header_, temp_cell(id(e)), c32(static_cast<uint32_t>(e.type.kind)), ap, an, bp, bn});
      return LV{LV::K::kBoxed, out, nullptr};
    }
    if (is_scalar(lk) && is_scalar(rk) && is_scalar(e.type.kind)) {
      llvm::Value* a = scalar(l);
      llvm::Value* b = scalar(r);
      return LV{LV::K::kScalar, arith(e.op, e.type.kind, lk, a, rk, b), nullptr};
    }
    return evaluate(e);
  }

  // `x in c` natively: a string or scalar in a param or constant container, or a key of a state
  // map or set. Null when not handled here.
  llvm::Value* membership(const Expr& x, const Expr& c) {
    Kind xk = x.type.kind;
    bool str_x = is_string(xk);
    if (!str_x && !is_scalar(xk)) return nullptr;
    if (c.kind == ExprKind::kState && (c.type.is(Kind::kSet) || c.type.is(Kind::kMap))) {
      if (str_x) {
        auto [p, n] = str(x);
        return call("mpolrt_state_has_str", i64_, {ptr_, i32_, i32_, ptr_, i64_},
                    {header_, c32(c.slot), c32(static_cast<uint32_t>(xk)), p, n});
      }
      llvm::Value* bits = scalar(x);
      return call("mpolrt_state_has_scalar", i64_, {ptr_, i32_, i32_, i64_},
                  {header_, c32(c.slot), c32(static_cast<uint32_t>(xk)), bits});
    }
    if (c.kind != ExprKind::kParam && c.kind != ExprKind::kConst) return nullptr;
    if (str_x) {
      auto [p, n] = str(x);
      LV container = expr(c);
      return call("mpolrt_in_str", i64_, {ptr_, i32_, ptr_, i64_},
                  {container.a, c32(static_cast<uint32_t>(xk)), p, n});
    }
    llvm::Value* bits = scalar(x);
    LV container = expr(c);
    return call("mpolrt_in_scalar", i64_, {ptr_, i32_, i64_},
                {container.a, c32(static_cast<uint32_t>(xk)), bits});
  }

  LV builtin(const Expr& e) {
    switch (e.builtin) {
      case Builtin::kNow:
        return LV{LV::K::kScalar, call("mpolrt_now", i64_, {ptr_}, {header_}), nullptr};
      case Builtin::kRandom:
        return LV{LV::K::kScalar, call("mpolrt_random", i64_, {ptr_}, {header_}), nullptr};
      case Builtin::kLen: {
        const Expr& x = *e.children[0];
        if (is_string(x.type.kind) && str_native(x)) {
          return LV{LV::K::kScalar, str(x).second, nullptr};
        }
        if (x.kind == ExprKind::kRpc && x.rpc_field == ir::RpcField::kEndpoints) {
          return LV{LV::K::kScalar, call("mpolrt_endpoints_len", i64_, {ptr_}, {header_}), nullptr};
        }
        if (x.kind == ExprKind::kState && (x.type.is(Kind::kSet) || x.type.is(Kind::kMap))) {
          return LV{LV::K::kScalar,
                    call("mpolrt_state_len", i64_, {ptr_, i32_}, {header_, c32(x.slot)}), nullptr};
        }
        if (x.kind == ExprKind::kParam && !is_scalar(x.type.kind)) {
          // A list, set or map param: its item count (a map holds key, value, ...).
          llvm::Value* cell = expr(x).a;
          llvm::Value* items = cell_items_size(cell);
          if (x.type.is(Kind::kMap)) items = b_.CreateLShr(items, 1);
          return LV{LV::K::kScalar, items, nullptr};
        }
        break;
      }
      case Builtin::kMin:
      case Builtin::kMax:
      case Builtin::kAbs:
      case Builtin::kSeconds:
      case Builtin::kFromSeconds:
      case Builtin::kInt:
      case Builtin::kFloat:
      case Builtin::kHash: {
        if (!is_scalar(e.type.kind) || e.children.empty() || e.children.size() > 2) break;
        for (const auto& c : e.children) {
          if (!is_scalar(c->type.kind)) return evaluate(e);
        }
        llvm::Value* a = scalar(*e.children[0]);
        Kind ak = e.children[0]->type.kind;
        llvm::Value* bv = c64(0);
        Kind bk = ak;
        if (e.children.size() == 2) {
          bv = scalar(*e.children[1]);
          bk = e.children[1]->type.kind;
        }
        uint32_t packed = static_cast<uint32_t>(e.builtin) |
                          static_cast<uint32_t>(e.type.kind) << 8 |
                          static_cast<uint32_t>(ak) << 16 | static_cast<uint32_t>(bk) << 24;
        return LV{
            LV::K::kScalar,
            call("mpolrt_builtin", i64_, {ptr_, i32_, i32_, i64_, i64_},
                 {header_, c32(packed), c32(static_cast<uint32_t>(e.children.size())), a, bv}),
            nullptr};
      }
      default:
        break;
    }
    return evaluate(e);
  }

  // The element count of a Value cell's `items` (through a helper: std::vector's layout is the
  // library's).
  llvm::Value* cell_items_size(llvm::Value* cell) {
    return call("mpolrt_items_size", i64_, {ptr_}, {cell});
  }

  const ir::Policy& policy_;
  bool with_text_ = false;  // print the module into LoweredModule::ir_text
  std::string prefix_;
  std::unique_ptr<llvm::LLVMContext> context_;
  std::unique_ptr<llvm::Module> module_;
  llvm::IRBuilder<> b_;
  NodeTable nodes_;
  ValueLayout vl_;
  std::unordered_map<const Expr*, uint32_t> expr_ids_;
  std::unordered_map<const Stmt*, uint32_t> stmt_ids_;
  llvm::Type* i8_ = nullptr;
  llvm::Type* i32_ = nullptr;
  llvm::Type* i64_ = nullptr;
  llvm::Type* f64_ = nullptr;
  llvm::Type* ptr_ = nullptr;
  llvm::Type* void_ = nullptr;
  const ir::Handler* handler_ = nullptr;
  llvm::Function* fn_ = nullptr;
  llvm::Value* header_ = nullptr;
  llvm::BasicBlock* exit_ = nullptr;
  std::vector<llvm::BasicBlock*> loop_exits_;  // the innermost lowered `for` last (`break`)
  uint32_t native_ = 0;
  uint32_t evaluated_ = 0;
  uint32_t evaluated_exprs_ = 0;
  bool may_end_ = false;  // a helper that can end the handler ran since the last check
};

}  // namespace

LoweredModule::LoweredModule() = default;
LoweredModule::~LoweredModule() = default;
LoweredModule::LoweredModule(LoweredModule&&) noexcept = default;
LoweredModule& LoweredModule::operator=(LoweredModule&&) noexcept = default;

Expected<LoweredModule> lower_policy(const ir::Policy& policy, const std::string& prefix,
                                     bool with_text) {
  return Lowerer(policy, prefix, with_text).run();
}

Expected<std::string> emit_lowered(jit::Jit& jit, LoweredModule lowered, jit::Jit::TextForm form) {
  return jit.emit_text(std::move(lowered.context), std::move(lowered.module), form);
}

Expected<jit::ModuleId> load_lowered(jit::Jit& jit, LoweredModule lowered,
                                     std::string* object_out) {
  return jit.add_module(std::move(lowered.context), std::move(lowered.module),
                        jit::ModuleOptions{.object_out = object_out});
}

}  // namespace mrpc::compiler
