// The codec generator: LLVM IR for the wire and native codecs of each message type, from its
// layout (offsets, presence, oneofs) and its protobuf descriptor (wire types). See
// codec_codegen.h for the functions and docs/marshalling.md for the design.
#include "compiler/codec/codec_codegen.h"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>
#include <llvm/IR/Constants.h>
#include <llvm/IR/GlobalVariable.h>
#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/Module.h>
#include <llvm/Support/raw_ostream.h>

#include "compiler/codec/codec_runtime.h"
#include "mrpc/base/check.h"
#include "mrpc/message/layout.h"

namespace mrpc::codec {
namespace {

namespace pb = google::protobuf;

// How one scalar travels on the wire and sits in the body.
enum class Scalar { kBool, kInt32, kUint32, kSint32, kInt64, kSint64, kFixed32, kFixed64 };

Scalar scalar_of(const pb::FieldDescriptor& field) {
  switch (field.type()) {
    case pb::FieldDescriptor::TYPE_BOOL:
      return Scalar::kBool;
    case pb::FieldDescriptor::TYPE_INT32:
    case pb::FieldDescriptor::TYPE_ENUM:
      return Scalar::kInt32;
    case pb::FieldDescriptor::TYPE_UINT32:
      return Scalar::kUint32;
    case pb::FieldDescriptor::TYPE_SINT32:
      return Scalar::kSint32;
    case pb::FieldDescriptor::TYPE_INT64:
    case pb::FieldDescriptor::TYPE_UINT64:
      return Scalar::kInt64;
    case pb::FieldDescriptor::TYPE_SINT64:
      return Scalar::kSint64;
    case pb::FieldDescriptor::TYPE_FIXED32:
    case pb::FieldDescriptor::TYPE_SFIXED32:
    case pb::FieldDescriptor::TYPE_FLOAT:
      return Scalar::kFixed32;
    default:
      return Scalar::kFixed64;  // fixed64, sfixed64, double
  }
}

uint32_t wire_type_of(Scalar scalar) {
  switch (scalar) {
    case Scalar::kFixed32:
      return 5;
    case Scalar::kFixed64:
      return 1;
    default:
      return 0;
  }
}

uint32_t packed_encoding_of(Scalar scalar) {
  switch (scalar) {
    case Scalar::kBool:
      return kPackedBool;
    case Scalar::kInt32:
    case Scalar::kUint32:
      return kPackedVarint32;
    case Scalar::kSint32:
      return kPackedZigzag32;
    case Scalar::kInt64:
      return kPackedVarint64;
    case Scalar::kSint64:
      return kPackedZigzag64;
    case Scalar::kFixed32:
      return kPackedFixed32;
    case Scalar::kFixed64:
      return kPackedFixed64;
  }
  return kPackedVarint64;
}

bool is_reference(const FieldLayout& field) {
  return field.repeated || field.kind == FieldKind::kString || field.kind == FieldKind::kBytes ||
         field.kind == FieldKind::kMessage;
}

bool is_length_delimited(const FieldLayout& field) {
  return field.kind == FieldKind::kString || field.kind == FieldKind::kBytes ||
         field.kind == FieldKind::kMessage;
}

class Generator {
 public:
  Generator(const std::vector<CodecType>& types, std::string_view prefix)
      : types_(types),
        context_(std::make_unique<llvm::LLVMContext>()),
        module_(std::make_unique<llvm::Module>(fmt::format("{}_codecs", prefix), *context_)),
        ir_(*context_),
        prefix_(prefix) {
    i8_ = ir_.getInt8Ty();
    i32_ = ir_.getInt32Ty();
    i64_ = ir_.getInt64Ty();
    ptr_ = ir_.getPtrTy();
    for (size_t i = 0; i < types_.size(); ++i) index_[types_[i].layout] = i;
  }

  struct GeneratedModule {
    std::unique_ptr<llvm::LLVMContext> context;
    std::unique_ptr<llvm::Module> module;
  };

  Expected<GeneratedModule> run() {
    for (const CodecType& type : types_) {
      for (const FieldLayout& field : type.layout->fields()) {
        const pb::FieldDescriptor* descriptor =
            type.descriptor->FindFieldByNumber(static_cast<int>(field.number));
        if (descriptor == nullptr || descriptor->type() == pb::FieldDescriptor::TYPE_GROUP) {
          return Status(StatusCode::kInvalidArgument,
                        fmt::format("{}.{}: groups are not supported by the codecs",
                                    type.layout->full_name(), field.name));
        }
        if (field.kind == FieldKind::kMessage && index_.count(field.message) == 0) {
          return Status(
              StatusCode::kInvalidArgument,
              fmt::format("{}.{}: its type {} is not among the types compiled",
                          type.layout->full_name(), field.name, field.message->full_name()));
        }
      }
    }
    declare_runtime();
    auto* signature4 = llvm::FunctionType::get(i32_, {ptr_, ptr_, ptr_, i32_}, false);
    auto* signature3 = llvm::FunctionType::get(i32_, {ptr_, ptr_, i32_}, false);
    for (size_t i = 0; i < types_.size(); ++i) {
      auto define = [&](CodecFunction which, llvm::FunctionType* type) {
        llvm::Function* function =
            llvm::Function::Create(type, llvm::Function::ExternalLinkage,
                                   codec_function_name(prefix_, which, i), *module_);
        // Each type's codec stays one function: inlining sub-message codecs into their parents
        // multiplies the code the JIT compiles (compile time) for little run time.
        function->addFnAttr(llvm::Attribute::NoInline);
        function->addFnAttr(llvm::Attribute::NoUnwind);
        return function;
      };
      wire_encoders_.push_back(define(CodecFunction::kWireEncode, signature3));
      wire_decoders_.push_back(define(CodecFunction::kWireDecode, signature4));
      native_encoders_.push_back(define(CodecFunction::kNativeEncode, signature3));
      native_decoders_.push_back(define(CodecFunction::kNativeDecode, signature3));
    }
    for (size_t i = 0; i < types_.size(); ++i) {
      emit_wire_encoder(i);
      emit_wire_decoder(i);
      emit_native_encoder(i);
      emit_native_decoder(i);
    }
    return GeneratedModule{std::move(context_), std::move(module_)};
  }

 private:
  // ---- shared pieces ----

  void declare_runtime() {
    auto declare = [&](const char* name, llvm::Type* result, std::vector<llvm::Type*> args) {
      return module_->getOrInsertFunction(name, llvm::FunctionType::get(result, args, false));
    };
    llvm::Type* void_ = ir_.getVoidTy();
    we_varint_ = declare("mrpc_we_varint", void_, {ptr_, i64_});
    we_spill_ = declare("mrpc_we_spill", void_, {ptr_, ptr_, i64_});
    we_fixed32_ = declare("mrpc_we_fixed32", void_, {ptr_, i32_});
    we_fixed64_ = declare("mrpc_we_fixed64", void_, {ptr_, i64_});
    we_resolve_ = declare("mrpc_we_resolve", ptr_, {ptr_, i64_, i64_, i64_});
    we_bytes_ = declare("mrpc_we_bytes", i32_, {ptr_, ptr_});
    we_raw_ = declare("mrpc_we_raw", i32_, {ptr_, ptr_});
    we_mark_ = declare("mrpc_we_mark", i64_, {ptr_});
    we_length_since_ = declare("mrpc_we_length_since", void_, {ptr_, i64_});
    codec_fail_ = declare("mrpc_codec_fail", i32_, {ptr_, i32_});
    wd_varint_ = declare("mrpc_wd_varint", i32_, {ptr_, ptr_, ptr_});
    wd_tag_ = declare("mrpc_wd_tag", i32_, {ptr_, ptr_, ptr_});
    wd_fixed32_ = declare("mrpc_wd_fixed32", i32_, {ptr_, ptr_, ptr_});
    wd_fixed64_ = declare("mrpc_wd_fixed64", i32_, {ptr_, ptr_, ptr_});
    wd_append_ = declare("mrpc_wd_append", ptr_, {ptr_, ptr_, i32_, ptr_});
    wd_bytes_ = declare("mrpc_wd_bytes", i32_, {ptr_, ptr_, ptr_});
    wd_append_bytes_ = declare("mrpc_wd_append_bytes", i32_, {ptr_, ptr_, ptr_});
    wd_enter_ = declare("mrpc_wd_enter", i32_, {ptr_, ptr_, ptr_});
    wd_sub_body_ = declare("mrpc_wd_sub_body", ptr_, {ptr_, ptr_, i32_, i32_, ptr_});
    wd_packed_ = declare("mrpc_wd_packed", i32_, {ptr_, ptr_, ptr_, i32_, i32_});
    wd_unknown_ = declare("mrpc_wd_unknown", i32_, {ptr_, ptr_, i64_, ptr_, ptr_});
    wd_fail_ = declare("mrpc_wd_fail", i32_, {ptr_, i32_, ptr_});
    ne_piece_ = declare("mrpc_ne_piece", ptr_, {ptr_, i64_, i64_});
    nd_piece_ = declare("mrpc_nd_piece", ptr_, {ptr_, ptr_, i64_, i32_});
    nd_unknown_ = declare("mrpc_nd_unknown", ptr_, {ptr_, ptr_, i64_, i32_, ptr_, i64_});
  }

  const pb::FieldDescriptor& descriptor_of(size_t type, const FieldLayout& field) const {
    return *types_[type].descriptor->FindFieldByNumber(static_cast<int>(field.number));
  }

  // The tags the wire decoder takes as `type`'s own fields (the wire types decode_field accepts),
  // sorted. Unknown-field bytes holding one of them would decode, once re-encoded, as that field.
  std::vector<uint32_t> known_tags(size_t type) const {
    std::vector<uint32_t> tags;
    for (const FieldLayout& field : types_[type].layout->fields()) {
      auto tag = [&](uint32_t wire_type) { tags.push_back(field.number << 3 | wire_type); };
      if (is_length_delimited(field)) {
        tag(2);
        continue;
      }
      tag(wire_type_of(scalar_of(descriptor_of(type, field))));
      if (field.repeated) tag(2);  // packed
    }
    std::sort(tags.begin(), tags.end());
    return tags;
  }

  // A private constant array of `values` in the module; its address.
  llvm::Value* constant_array(const std::vector<uint32_t>& values, const char* name) {
    auto* type = llvm::ArrayType::get(i32_, values.size());
    return new llvm::GlobalVariable(*module_, type, true, llvm::GlobalValue::PrivateLinkage,
                                    llvm::ConstantDataArray::get(*context_, values), name);
  }

  llvm::Value* at(llvm::Value* base, uint64_t offset) {
    return offset == 0 ? base : ir_.CreateConstInBoundsGEP1_64(i8_, base, offset);
  }
  llvm::Value* load(llvm::Type* type, llvm::Value* base, uint64_t offset) {
    llvm::LoadInst* value = ir_.CreateLoad(type, at(base, offset));
    value->setAlignment(llvm::Align(1));
    return value;
  }
  void store(llvm::Value* value, llvm::Value* base, uint64_t offset) {
    ir_.CreateStore(value, at(base, offset))->setAlignment(llvm::Align(1));
  }
  llvm::BasicBlock* block(const char* name) {
    return llvm::BasicBlock::Create(*context_, name, function_);
  }

  // Returns `error` from the function when it is not 0.
  void check(llvm::Value* error) {
    llvm::BasicBlock* fail = block("fail");
    llvm::BasicBlock* next = block("ok");
    ir_.CreateCondBr(ir_.CreateICmpNE(error, ir_.getInt32(0)), fail, next);
    ir_.SetInsertPoint(fail);
    ir_.CreateRet(error);
    ir_.SetInsertPoint(next);
  }
  // Returns the context's error word (at `error_offset`) when `pointer` is null: the helper that
  // returned it recorded why.
  void check_pointer(llvm::Value* pointer, llvm::Value* context, size_t error_offset) {
    llvm::BasicBlock* fail = block("fail");
    llvm::BasicBlock* next = block("ok");
    ir_.CreateCondBr(ir_.CreateIsNull(pointer), fail, next);
    ir_.SetInsertPoint(fail);
    ir_.CreateRet(ir_.CreateLoad(i32_, at(context, error_offset)));
    ir_.SetInsertPoint(next);
  }
  // Records `error` in the context's error word at `error_offset` and returns it, if `condition`.
  void fail_if(llvm::Value* condition, llvm::Value* context, size_t error_offset, int32_t error) {
    llvm::BasicBlock* fail = block("fail");
    llvm::BasicBlock* next = block("ok");
    ir_.CreateCondBr(condition, fail, next);
    ir_.SetInsertPoint(fail);
    ir_.CreateRet(ir_.CreateCall(
        codec_fail_, {at(context, error_offset), ir_.getInt32(static_cast<uint32_t>(error))}));
    ir_.SetInsertPoint(next);
  }

  // Whether field storage holds a value, for fields with presence (bit or oneof case); null for
  // fields without (their value decides).
  llvm::Value* presence(const MessageLayout& layout, const FieldLayout& field, llvm::Value* body) {
    if (field.oneof_index != kNoOneof) {
      const OneofLayout& oneof = layout.oneofs()[static_cast<size_t>(field.oneof_index)];
      return ir_.CreateICmpEQ(load(i32_, body, oneof.case_offset), ir_.getInt32(field.number));
    }
    if (field.presence_bit != kNoPresenceBit) {
      const auto bit = static_cast<uint32_t>(field.presence_bit);
      llvm::Value* word = load(i32_, body, 4 * (bit / 32));
      return ir_.CreateICmpNE(ir_.CreateAnd(word, ir_.getInt32(1u << (bit % 32))), ir_.getInt32(0));
    }
    return nullptr;
  }

  void mark_present(const MessageLayout& layout, const FieldLayout& field, llvm::Value* body) {
    if (field.oneof_index != kNoOneof) {
      const OneofLayout& oneof = layout.oneofs()[static_cast<size_t>(field.oneof_index)];
      store(ir_.getInt32(field.number), body, oneof.case_offset);
    } else if (field.presence_bit != kNoPresenceBit) {
      const auto bit = static_cast<uint32_t>(field.presence_bit);
      llvm::Value* word = load(i32_, body, 4 * (bit / 32));
      store(ir_.CreateOr(word, ir_.getInt32(1u << (bit % 32))), body, 4 * (bit / 32));
    }
  }

  // Fails with kErrorBadOneofCase when a case word names none of its oneof's fields.
  void check_oneof_cases(const MessageLayout& layout, llvm::Value* body, llvm::Value* context,
                         size_t error_offset) {
    for (const OneofLayout& oneof : layout.oneofs()) {
      llvm::Value* number = load(i32_, body, oneof.case_offset);
      llvm::Value* valid = ir_.CreateICmpEQ(number, ir_.getInt32(0));
      for (uint32_t index : oneof.fields) {
        valid = ir_.CreateOr(valid,
                             ir_.CreateICmpEQ(number, ir_.getInt32(layout.fields()[index].number)));
      }
      fail_if(ir_.CreateNot(valid), context, error_offset, kErrorBadOneofCase);
    }
  }

  // Runs `body(index)` for index = count-1 down to 0 (`reverse`) or 0 up to count-1.
  template <class Body>
  void loop(llvm::Value* count, bool reverse, Body&& body) {
    llvm::BasicBlock* before = ir_.GetInsertBlock();
    llvm::BasicBlock* header = block("loop");
    llvm::BasicBlock* work = block("loop_body");
    llvm::BasicBlock* done = block("loop_done");
    ir_.CreateBr(header);
    ir_.SetInsertPoint(header);
    llvm::PHINode* counter = ir_.CreatePHI(i64_, 2);
    counter->addIncoming(reverse ? count : ir_.getInt64(0), before);
    ir_.CreateCondBr(
        reverse ? ir_.CreateICmpNE(counter, ir_.getInt64(0)) : ir_.CreateICmpULT(counter, count),
        work, done);
    ir_.SetInsertPoint(work);
    llvm::Value* index = reverse ? ir_.CreateSub(counter, ir_.getInt64(1)) : counter;
    body(index);
    counter->addIncoming(reverse ? index : ir_.CreateAdd(counter, ir_.getInt64(1)),
                         ir_.GetInsertBlock());
    ir_.CreateBr(header);
    ir_.SetInsertPoint(done);
  }

  // Runs `then()` when `condition` (null: always).
  template <class Then>
  void when(llvm::Value* condition, Then&& then) {
    if (condition == nullptr) {
      then();
      return;
    }
    llvm::BasicBlock* yes = block("when");
    llvm::BasicBlock* done = block("when_done");
    ir_.CreateCondBr(condition, yes, done);
    ir_.SetInsertPoint(yes);
    then();
    ir_.CreateBr(done);
    ir_.SetInsertPoint(done);
  }

  llvm::Value* element_at(llvm::Value* array, llvm::Value* index, uint64_t element_size) {
    return ir_.CreateInBoundsGEP(i8_, array, ir_.CreateMul(index, ir_.getInt64(element_size)));
  }

  // ---- protobuf wire encoder ----

  // Writes `bytes` (i8 values, first byte first) backwards into the output, inline: the cursor
  // moves down by their count and they are stored only if they fit (see WireEncoder).
  // `values` are stored one after the other; `size` is their total bytes.
  void put_inline(llvm::Value* encoder, const std::vector<llvm::Value*>& values,
                  uint64_t size = 0) {
    if (size == 0) size = values.size();  // bytes
    MRPC_ASSERT(size <= kMaxInlineWireBytes, "inline write of {} bytes", size);
    llvm::Value* pos_slot = at(encoder, offsetof(WireEncoder, pos));
    llvm::Value* pos = ir_.CreateSub(ir_.CreateLoad(i64_, pos_slot), ir_.getInt64(size));
    ir_.CreateStore(pos, pos_slot);
    llvm::BasicBlock* write = block("write");
    llvm::BasicBlock* spill = block("spill");
    llvm::BasicBlock* done = block("written");
    llvm::Value* chunk_floor =
        ir_.CreateLoad(i64_, at(encoder, offsetof(WireEncoder, chunk_floor)));
    ir_.CreateCondBr(ir_.CreateICmpSGE(pos, chunk_floor), write, spill);
    auto store_all = [&](llvm::Value* start) {
      uint64_t offset = 0;
      for (llvm::Value* value : values) {
        store(value, start, offset);
        offset += value->getType()->getPrimitiveSizeInBits() / 8;
      }
    };
    ir_.SetInsertPoint(write);
    llvm::Value* out = ir_.CreateLoad(ptr_, at(encoder, offsetof(WireEncoder, out)));
    store_all(ir_.CreateInBoundsGEP(i8_, out, pos));
    ir_.CreateBr(done);
    // Below the current buffer (or past the output's start): the runtime splits the bytes.
    ir_.SetInsertPoint(spill);
    store_all(put_slot_);
    ir_.CreateCall(we_spill_, {encoder, put_slot_, ir_.getInt64(size)});
    ir_.CreateBr(done);
    ir_.SetInsertPoint(done);
  }

  // A varint: one byte inline when it is below 128, else through the runtime.
  void put_varint(llvm::Value* encoder, llvm::Value* value) {
    llvm::BasicBlock* small = block("varint_small");
    llvm::BasicBlock* large = block("varint_large");
    llvm::BasicBlock* done = block("varint_done");
    ir_.CreateCondBr(ir_.CreateICmpULT(value, ir_.getInt64(128)), small, large);
    ir_.SetInsertPoint(small);
    put_inline(encoder, {ir_.CreateTrunc(value, i8_)});
    ir_.CreateBr(done);
    ir_.SetInsertPoint(large);
    ir_.CreateCall(we_varint_, {encoder, value});
    ir_.CreateBr(done);
    ir_.SetInsertPoint(done);
  }

  // A tag is a constant: its varint bytes are written inline.
  void put_tag(llvm::Value* encoder, uint32_t number, uint32_t wire_type) {
    uint64_t tag = (uint64_t{number} << 3) | wire_type;
    std::vector<llvm::Value*> bytes;
    while (tag >= 0x80) {
      bytes.push_back(ir_.getInt8(static_cast<uint8_t>(tag | 0x80)));
      tag >>= 7;
    }
    bytes.push_back(ir_.getInt8(static_cast<uint8_t>(tag)));
    put_inline(encoder, bytes);
  }

  // Writes one scalar stored at `where`.
  void put_scalar(llvm::Value* encoder, Scalar scalar, llvm::Value* where) {
    switch (scalar) {
      case Scalar::kBool: {
        llvm::Value* set = ir_.CreateICmpNE(load(i8_, where, 0), ir_.getInt8(0));
        put_varint(encoder, ir_.CreateZExt(set, i64_));
        return;
      }
      case Scalar::kInt32:
        put_varint(encoder, ir_.CreateSExt(load(i32_, where, 0), i64_));
        return;
      case Scalar::kUint32:
        put_varint(encoder, ir_.CreateZExt(load(i32_, where, 0), i64_));
        return;
      case Scalar::kSint32: {
        llvm::Value* v = load(i32_, where, 0);
        llvm::Value* zigzag = ir_.CreateXor(ir_.CreateShl(v, 1), ir_.CreateAShr(v, 31));
        put_varint(encoder, ir_.CreateZExt(zigzag, i64_));
        return;
      }
      case Scalar::kInt64:
        put_varint(encoder, load(i64_, where, 0));
        return;
      case Scalar::kSint64: {
        llvm::Value* v = load(i64_, where, 0);
        put_varint(encoder, ir_.CreateXor(ir_.CreateShl(v, 1), ir_.CreateAShr(v, 63)));
        return;
      }
      case Scalar::kFixed32:
        put_inline(encoder, {load(i32_, where, 0)}, 4);
        return;
      case Scalar::kFixed64:
        put_inline(encoder, {load(i64_, where, 0)}, 8);
        return;
    }
  }

  // Whether a field without presence holds a non-default value (proto3 implicit presence).
  llvm::Value* non_default(const FieldLayout& field, llvm::Value* body) {
    if (is_reference(field)) {
      return ir_.CreateICmpNE(load(i32_, body, field.offset + 8), ir_.getInt32(0));
    }
    llvm::Type* type = field.size == 1 ? i8_ : field.size == 4 ? i32_ : i64_;
    return ir_.CreateICmpNE(load(type, body, field.offset), llvm::ConstantInt::get(type, 0));
  }

  void emit_wire_encoder(size_t type) {
    const MessageLayout& layout = *types_[type].layout;
    function_ = wire_encoders_[type];
    llvm::Value* encoder = function_->getArg(0);
    llvm::Value* body = function_->getArg(1);
    llvm::Value* depth_left = function_->getArg(2);
    ir_.SetInsertPoint(block("entry"));
    put_slot_ = ir_.CreateAlloca(llvm::ArrayType::get(i8_, kMaxInlineWireBytes));
    const size_t error_offset = offsetof(WireEncoder, error);
    fail_if(ir_.CreateICmpEQ(depth_left, ir_.getInt32(0)), encoder, error_offset, kErrorTooDeep);
    check_oneof_cases(layout, body, encoder, error_offset);
    llvm::Value* deeper = ir_.CreateSub(depth_left, ir_.getInt32(1));
    // Backwards: the unknown fields (last on the wire) first, then the fields from the last.
    check(ir_.CreateCall(we_raw_, {encoder, at(body, layout.unknown_fields_offset())}));
    const auto& fields = layout.fields();
    for (auto it = fields.rbegin(); it != fields.rend(); ++it) {
      const FieldLayout& field = *it;
      const pb::FieldDescriptor& descriptor = descriptor_of(type, field);
      llvm::Value* present = presence(layout, field, body);
      if (layout.is_map_entry()) {
        // Like libprotobuf, map entries always carry key and value (an unset message value as
        // an empty one), so the bytes are the same as its.
        if (field.kind == FieldKind::kMessage && present != nullptr) {
          llvm::BasicBlock* set = block("value_set");
          llvm::BasicBlock* unset = block("value_unset");
          llvm::BasicBlock* done = block("value_done");
          ir_.CreateCondBr(present, set, unset);
          ir_.SetInsertPoint(unset);
          ir_.CreateCall(we_varint_, {encoder, ir_.getInt64(0)});
          put_tag(encoder, field.number, 2);
          ir_.CreateBr(done);
          ir_.SetInsertPoint(set);
          encode_field(encoder, field, descriptor, body, deeper);
          ir_.CreateBr(done);
          ir_.SetInsertPoint(done);
        } else {
          encode_field(encoder, field, descriptor, body, deeper);
        }
        continue;
      }
      if (present == nullptr) present = non_default(field, body);
      when(present, [&] { encode_field(encoder, field, descriptor, body, deeper); });
    }
    ir_.CreateRet(ir_.getInt32(0));
  }

  void encode_field(llvm::Value* encoder, const FieldLayout& field,
                    const pb::FieldDescriptor& descriptor, llvm::Value* body, llvm::Value* deeper) {
    if (!field.repeated) {
      if (field.kind == FieldKind::kString || field.kind == FieldKind::kBytes) {
        check(ir_.CreateCall(we_bytes_, {encoder, at(body, field.offset)}));
        put_tag(encoder, field.number, 2);
      } else if (field.kind == FieldKind::kMessage) {
        llvm::Value* sub =
            ir_.CreateCall(we_resolve_, {encoder, load(i64_, body, field.offset), ir_.getInt64(1),
                                         ir_.getInt64(field.message->body_size())});
        check_pointer(sub, encoder, offsetof(WireEncoder, error));
        encode_sub_message(encoder, field, sub, deeper);
      } else {
        const Scalar scalar = scalar_of(descriptor);
        put_scalar(encoder, scalar, at(body, field.offset));
        put_tag(encoder, field.number, wire_type_of(scalar));
      }
      return;
    }
    llvm::Value* count = ir_.CreateZExt(load(i32_, body, field.offset + 8), i64_);
    llvm::Value* array = ir_.CreateCall(we_resolve_, {encoder, load(i64_, body, field.offset),
                                                      count, ir_.getInt64(field.element_size)});
    check_pointer(array, encoder, offsetof(WireEncoder, error));
    if (field.kind == FieldKind::kString || field.kind == FieldKind::kBytes) {
      loop(count, true, [&](llvm::Value* index) {
        check(ir_.CreateCall(we_bytes_, {encoder, element_at(array, index, sizeof(RegionRef))}));
        put_tag(encoder, field.number, 2);
      });
    } else if (field.kind == FieldKind::kMessage) {
      loop(count, true, [&](llvm::Value* index) {
        encode_sub_message(encoder, field, element_at(array, index, field.element_size), deeper);
      });
    } else {
      const Scalar scalar = scalar_of(descriptor);
      if (descriptor.is_packed()) {
        llvm::Value* mark = ir_.CreateCall(we_mark_, {encoder});
        loop(count, true, [&](llvm::Value* index) {
          put_scalar(encoder, scalar, element_at(array, index, field.element_size));
        });
        ir_.CreateCall(we_length_since_, {encoder, mark});
        put_tag(encoder, field.number, 2);
      } else {
        loop(count, true, [&](llvm::Value* index) {
          put_scalar(encoder, scalar, element_at(array, index, field.element_size));
          put_tag(encoder, field.number, wire_type_of(scalar));
        });
      }
    }
  }

  void encode_sub_message(llvm::Value* encoder, const FieldLayout& field, llvm::Value* sub,
                          llvm::Value* deeper) {
    llvm::Value* mark = ir_.CreateCall(we_mark_, {encoder});
    check(ir_.CreateCall(wire_encoders_[index_.at(field.message)], {encoder, sub, deeper}));
    ir_.CreateCall(we_length_since_, {encoder, mark});
    put_tag(encoder, field.number, 2);
  }

  // ---- protobuf wire decoder ----

  // Converts a decoded varint or fixed value (i64) to the body's storage and stores it.
  void store_scalar(Scalar scalar, llvm::Value* value, llvm::Value* where) {
    switch (scalar) {
      case Scalar::kBool:
        store(ir_.CreateZExt(ir_.CreateICmpNE(value, ir_.getInt64(0)), i8_), where, 0);
        return;
      case Scalar::kInt32:
      case Scalar::kUint32:
      case Scalar::kFixed32:
        store(ir_.CreateTrunc(value, i32_), where, 0);
        return;
      case Scalar::kSint32: {
        llvm::Value* v = ir_.CreateTrunc(value, i32_);
        llvm::Value* sign = ir_.CreateSub(ir_.getInt32(0), ir_.CreateAnd(v, ir_.getInt32(1)));
        store(ir_.CreateXor(ir_.CreateLShr(v, 1), sign), where, 0);
        return;
      }
      case Scalar::kInt64:
      case Scalar::kFixed64:
        store(value, where, 0);
        return;
      case Scalar::kSint64: {
        llvm::Value* sign = ir_.CreateSub(ir_.getInt64(0), ir_.CreateAnd(value, ir_.getInt64(1)));
        store(ir_.CreateXor(ir_.CreateLShr(value, 1), sign), where, 0);
        return;
      }
    }
  }

  // Reads one scalar value of `scalar`'s wire type into an i64.
  // Reads one value at the cursor into an i64: inline when it is the common case (a one-byte
  // varint, or a fixed value with enough input left), else through the runtime helper `slow`,
  // which also reports errors. `min_byte`: a one-byte value below it takes the slow path (tags:
  // field number 0 is an error the helper reports).
  llvm::Value* read_value(llvm::Value* decoder, llvm::Value* cursor, llvm::FunctionCallee slow,
                          uint32_t fixed_bytes, uint8_t min_byte = 0) {
    llvm::Value* position = ir_.CreateLoad(ptr_, cursor);
    llvm::Value* end = ir_.CreateLoad(ptr_, at(cursor, sizeof(void*)));
    llvm::BasicBlock* fast = block("read_fast");
    llvm::BasicBlock* slow_block = block("read_slow");
    llvm::BasicBlock* done = block("read_done");
    llvm::Value* fast_value = nullptr;
    if (fixed_bytes != 0) {
      llvm::Value* after = ir_.CreateGEP(i8_, position, ir_.getInt64(fixed_bytes));
      ir_.CreateCondBr(ir_.CreateICmpULE(after, end), fast, slow_block);
      ir_.SetInsertPoint(fast);
      llvm::Type* type = fixed_bytes == 4 ? i32_ : i64_;
      fast_value = ir_.CreateZExt(load(type, position, 0), i64_);
      ir_.CreateStore(after, cursor);
    } else {
      llvm::BasicBlock* look = block("read_look");
      ir_.CreateCondBr(ir_.CreateICmpULT(position, end), look, slow_block);
      ir_.SetInsertPoint(look);
      llvm::Value* byte = ir_.CreateLoad(i8_, position);
      llvm::Value* one_byte = ir_.CreateICmpULT(byte, ir_.getInt8(0x80));
      if (min_byte != 0) {
        one_byte = ir_.CreateAnd(one_byte, ir_.CreateICmpUGE(byte, ir_.getInt8(min_byte)));
      }
      ir_.CreateCondBr(one_byte, fast, slow_block);
      ir_.SetInsertPoint(fast);
      fast_value = ir_.CreateZExt(byte, i64_);
      ir_.CreateStore(ir_.CreateConstInBoundsGEP1_64(i8_, position, 1), cursor);
    }
    llvm::BasicBlock* fast_end = ir_.GetInsertBlock();
    ir_.CreateBr(done);
    ir_.SetInsertPoint(slow_block);
    ir_.CreateStore(ir_.getInt64(0), value_slot_);
    check(ir_.CreateCall(slow, {decoder, cursor, value_slot_}));
    llvm::Value* slow_value = ir_.CreateLoad(i64_, value_slot_);
    llvm::BasicBlock* slow_end = ir_.GetInsertBlock();
    ir_.CreateBr(done);
    ir_.SetInsertPoint(done);
    llvm::PHINode* value = ir_.CreatePHI(i64_, 2);
    value->addIncoming(fast_value, fast_end);
    value->addIncoming(slow_value, slow_end);
    return value;
  }

  // Reads one scalar value of `scalar`'s wire type into an i64.
  llvm::Value* read_scalar(Scalar scalar, llvm::Value* decoder, llvm::Value* cursor) {
    switch (scalar) {
      case Scalar::kFixed32:
        return read_value(decoder, cursor, wd_fixed32_, 4);
      case Scalar::kFixed64:
        return read_value(decoder, cursor, wd_fixed64_, 8);
      default:
        return read_value(decoder, cursor, wd_varint_, 0);
    }
  }

  void emit_wire_decoder(size_t type) {
    const MessageLayout& layout = *types_[type].layout;
    function_ = wire_decoders_[type];
    llvm::Value* decoder = function_->getArg(0);
    llvm::Value* body = function_->getArg(1);
    llvm::Value* cursor = function_->getArg(2);
    llvm::Value* depth_left = function_->getArg(3);
    ir_.SetInsertPoint(block("entry"));
    value_slot_ = ir_.CreateAlloca(i64_);
    inner_cursor_ = ir_.CreateAlloca(llvm::ArrayType::get(ptr_, 2));
    {
      llvm::BasicBlock* fail = block("too_deep");
      llvm::BasicBlock* next = block("start");
      ir_.CreateCondBr(ir_.CreateICmpEQ(depth_left, ir_.getInt32(0)), fail, next);
      ir_.SetInsertPoint(fail);
      ir_.CreateRet(ir_.CreateCall(
          wd_fail_, {decoder, ir_.getInt32(kErrorTooDeep), ir_.CreateLoad(ptr_, cursor)}));
      ir_.SetInsertPoint(next);
    }
    llvm::Value* deeper = ir_.CreateSub(depth_left, ir_.getInt32(1));
    llvm::BasicBlock* top = block("next_field");
    ir_.CreateBr(top);
    ir_.SetInsertPoint(top);
    loop_top_ = top;
    llvm::Value* field_start = ir_.CreateLoad(ptr_, cursor);
    llvm::Value* end = ir_.CreateLoad(ptr_, at(cursor, sizeof(void*)));
    llvm::BasicBlock* read_tag = block("read_tag");
    llvm::BasicBlock* done = block("done");
    ir_.CreateCondBr(ir_.CreateICmpUGE(field_start, end), done, read_tag);
    ir_.SetInsertPoint(done);
    ir_.CreateRet(ir_.getInt32(0));
    ir_.SetInsertPoint(read_tag);
    llvm::Value* tag = read_value(decoder, cursor, wd_tag_, 0, 8);
    llvm::Value* wire_type = ir_.CreateAnd(tag, ir_.getInt64(7));
    llvm::BasicBlock* unknown = block("unknown_field");
    llvm::SwitchInst* dispatch = ir_.CreateSwitch(ir_.CreateLShr(tag, 3), unknown,
                                                  static_cast<unsigned>(layout.fields().size()));
    ir_.SetInsertPoint(unknown);
    check(ir_.CreateCall(wd_unknown_, {decoder, cursor, tag, field_start,
                                       at(body, layout.unknown_fields_offset())}));
    ir_.CreateBr(top);

    for (const FieldLayout& field : layout.fields()) {
      llvm::BasicBlock* case_block = block("field");
      dispatch->addCase(ir_.getInt64(field.number), case_block);
      ir_.SetInsertPoint(case_block);
      DecodeSite site{decoder, body, cursor, deeper, field_start, wire_type, unknown};
      decode_field(layout, field, descriptor_of(type, field), site);
    }
  }

  struct DecodeSite {
    llvm::Value* decoder;
    llvm::Value* body;
    llvm::Value* cursor;
    llvm::Value* deeper;
    llvm::Value* field_start;
    llvm::Value* wire_type;
    llvm::BasicBlock* unknown;
  };

  // Continues in a new block when the wire type is `expected`; other wire types are unknown fields.
  void expect_wire_type(const DecodeSite& site, uint32_t expected) {
    llvm::BasicBlock* match = block("wire_type_ok");
    ir_.CreateCondBr(ir_.CreateICmpEQ(site.wire_type, ir_.getInt64(expected)), match, site.unknown);
    ir_.SetInsertPoint(match);
  }

  void decode_sub_message(const FieldLayout& field, const DecodeSite& site, llvm::Value* sub) {
    check(ir_.CreateCall(wd_enter_, {site.decoder, site.cursor, inner_cursor_}));
    check(ir_.CreateCall(wire_decoders_[index_.at(field.message)],
                         {site.decoder, sub, inner_cursor_, site.deeper}));
  }

  void decode_field(const MessageLayout& layout, const FieldLayout& field,
                    const pb::FieldDescriptor& descriptor, const DecodeSite& site) {
    llvm::Value* slot = at(site.body, field.offset);
    if (!field.repeated) {
      if (field.kind == FieldKind::kString || field.kind == FieldKind::kBytes) {
        expect_wire_type(site, 2);
        check(ir_.CreateCall(wd_bytes_, {site.decoder, site.cursor, slot}));
        mark_present(layout, field, site.body);
      } else if (field.kind == FieldKind::kMessage) {
        expect_wire_type(site, 2);
        llvm::Value* reuse = ir_.CreateZExt(presence(layout, field, site.body), i32_);
        llvm::Value* sub = ir_.CreateCall(
            wd_sub_body_, {site.decoder, slot, ir_.getInt32(field.message->body_size()), reuse,
                           site.field_start});
        check_pointer(sub, site.decoder, offsetof(WireDecoder, error));
        mark_present(layout, field, site.body);
        decode_sub_message(field, site, sub);
      } else {
        const Scalar scalar = scalar_of(descriptor);
        expect_wire_type(site, wire_type_of(scalar));
        store_scalar(scalar, read_scalar(scalar, site.decoder, site.cursor), slot);
        mark_present(layout, field, site.body);
      }
      ir_.CreateBr(loop_top_);
      return;
    }
    if (is_length_delimited(field)) {
      expect_wire_type(site, 2);
      if (field.kind == FieldKind::kMessage) {
        llvm::Value* element = ir_.CreateCall(
            wd_append_, {site.decoder, slot, ir_.getInt32(field.element_size), site.field_start});
        check_pointer(element, site.decoder, offsetof(WireDecoder, error));
        decode_sub_message(field, site, element);
      } else {
        check(ir_.CreateCall(wd_append_bytes_, {site.decoder, site.cursor, slot}));
      }
      ir_.CreateBr(loop_top_);
      return;
    }
    // Repeated scalars: packed (wire type 2) or one element (its own wire type), whatever the
    // schema says the sender uses.
    const Scalar scalar = scalar_of(descriptor);
    llvm::BasicBlock* packed = block("packed");
    llvm::BasicBlock* single = block("single");
    llvm::BasicBlock* not_packed = block("not_packed");
    ir_.CreateCondBr(ir_.CreateICmpEQ(site.wire_type, ir_.getInt64(2)), packed, not_packed);
    ir_.SetInsertPoint(not_packed);
    ir_.CreateCondBr(ir_.CreateICmpEQ(site.wire_type, ir_.getInt64(wire_type_of(scalar))), single,
                     site.unknown);
    ir_.SetInsertPoint(packed);
    check(ir_.CreateCall(wd_packed_,
                         {site.decoder, site.cursor, slot, ir_.getInt32(packed_encoding_of(scalar)),
                          ir_.getInt32(field.element_size)}));
    ir_.CreateBr(loop_top_);
    ir_.SetInsertPoint(single);
    llvm::Value* value = read_scalar(scalar, site.decoder, site.cursor);
    llvm::Value* element = ir_.CreateCall(
        wd_append_, {site.decoder, slot, ir_.getInt32(field.element_size), site.field_start});
    check_pointer(element, site.decoder, offsetof(WireDecoder, error));
    store_scalar(scalar, value, element);
    ir_.CreateBr(loop_top_);
  }

  // ---- native encoder: the spans of the message, in the order the decoder expects them ----

  void emit_native_encoder(size_t type) {
    const MessageLayout& layout = *types_[type].layout;
    function_ = native_encoders_[type];
    llvm::Value* encoder = function_->getArg(0);
    llvm::Value* body = function_->getArg(1);
    llvm::Value* depth_left = function_->getArg(2);
    ir_.SetInsertPoint(block("entry"));
    const size_t error_offset = offsetof(NativeEncoder, error);
    fail_if(ir_.CreateICmpEQ(depth_left, ir_.getInt32(0)), encoder, error_offset, kErrorTooDeep);
    check_oneof_cases(layout, body, encoder, error_offset);
    llvm::Value* deeper = ir_.CreateSub(depth_left, ir_.getInt32(1));
    auto piece = [&](llvm::Value* offset, llvm::Value* bytes) {
      llvm::Value* at_piece = ir_.CreateCall(ne_piece_, {encoder, offset, bytes});
      llvm::BasicBlock* fail = block("fail");
      llvm::BasicBlock* next = block("ok");
      ir_.CreateCondBr(ir_.CreateIsNull(at_piece), fail, next);
      ir_.SetInsertPoint(fail);
      ir_.CreateRet(ir_.CreateLoad(i32_, at(encoder, error_offset)));
      ir_.SetInsertPoint(next);
      return at_piece;
    };
    for (const FieldLayout& field : layout.fields()) {
      if (!is_reference(field)) continue;
      when(presence(layout, field, body), [&] {
        llvm::Value* offset = load(i64_, body, field.offset);
        if (!field.repeated && field.kind == FieldKind::kMessage) {
          llvm::Value* sub = piece(offset, ir_.getInt64(field.message->body_size()));
          check(ir_.CreateCall(native_encoders_[index_.at(field.message)], {encoder, sub, deeper}));
          return;
        }
        llvm::Value* count = ir_.CreateZExt(load(i32_, body, field.offset + 8), i64_);
        when(ir_.CreateICmpNE(count, ir_.getInt64(0)), [&] {
          llvm::Value* array = piece(
              offset, ir_.CreateMul(count, ir_.getInt64(field.repeated ? field.element_size : 1)));
          if (!field.repeated) return;
          if (field.kind == FieldKind::kString || field.kind == FieldKind::kBytes) {
            loop(count, false, [&](llvm::Value* index) {
              llvm::Value* element = element_at(array, index, sizeof(RegionRef));
              llvm::Value* size = ir_.CreateZExt(load(i32_, element, 8), i64_);
              when(ir_.CreateICmpNE(size, ir_.getInt64(0)),
                   [&] { piece(load(i64_, element, 0), size); });
            });
          } else if (field.kind == FieldKind::kMessage) {
            loop(count, false, [&](llvm::Value* index) {
              check(
                  ir_.CreateCall(native_encoders_[index_.at(field.message)],
                                 {encoder, element_at(array, index, field.element_size), deeper}));
            });
          }
        });
      });
    }
    llvm::Value* unknown_size =
        ir_.CreateZExt(load(i32_, body, layout.unknown_fields_offset() + 8), i64_);
    when(ir_.CreateICmpNE(unknown_size, ir_.getInt64(0)),
         [&] { piece(load(i64_, body, layout.unknown_fields_offset()), unknown_size); });
    ir_.CreateRet(ir_.getInt32(0));
  }

  // ---- native decoder: walks the received copy in the same order, rewriting each reference ----

  void emit_native_decoder(size_t type) {
    const MessageLayout& layout = *types_[type].layout;
    function_ = native_decoders_[type];
    llvm::Value* decoder = function_->getArg(0);
    llvm::Value* body = function_->getArg(1);
    llvm::Value* depth_left = function_->getArg(2);
    ir_.SetInsertPoint(block("entry"));
    const size_t error_offset = offsetof(NativeDecoder, error);
    fail_if(ir_.CreateICmpEQ(depth_left, ir_.getInt32(0)), decoder, error_offset, kErrorTooDeep);
    check_oneof_cases(layout, body, decoder, error_offset);
    llvm::Value* deeper = ir_.CreateSub(depth_left, ir_.getInt32(1));
    auto piece = [&](llvm::Value* slot, llvm::Value* bytes, llvm::Value* stored_size) {
      llvm::Value* at_piece = ir_.CreateCall(nd_piece_, {decoder, slot, bytes, stored_size});
      check_pointer(at_piece, decoder, offsetof(NativeDecoder, error));
      return at_piece;
    };
    for (const FieldLayout& field : layout.fields()) {
      if (!is_reference(field)) continue;
      llvm::Value* slot = at(body, field.offset);
      llvm::Value* present = presence(layout, field, body);
      llvm::BasicBlock* active = block("active");
      llvm::BasicBlock* next = block("next");
      if (present != nullptr) {
        llvm::BasicBlock* inactive = block("inactive");
        ir_.CreateCondBr(present, active, inactive);
        ir_.SetInsertPoint(inactive);
        // Not set: never followed; a stale reference is cleared (a oneof's storage may hold
        // another member).
        if (field.oneof_index == kNoOneof) {
          store(ir_.getInt64(0), slot, 0);
          store(ir_.getInt64(0), slot, 8);
        }
        ir_.CreateBr(next);
      } else {
        ir_.CreateBr(active);
      }
      ir_.SetInsertPoint(active);
      if (!field.repeated && field.kind == FieldKind::kMessage) {
        const uint32_t size = field.message->body_size();
        llvm::Value* sub = piece(slot, ir_.getInt64(size), ir_.getInt32(size));
        check(ir_.CreateCall(native_decoders_[index_.at(field.message)], {decoder, sub, deeper}));
      } else {
        llvm::Value* count32 = load(i32_, slot, 8);
        llvm::Value* count = ir_.CreateZExt(count32, i64_);
        llvm::Value* array =
            piece(slot, ir_.CreateMul(count, ir_.getInt64(field.repeated ? field.element_size : 1)),
                  count32);
        if (field.repeated &&
            (field.kind == FieldKind::kString || field.kind == FieldKind::kBytes)) {
          loop(count, false, [&](llvm::Value* index) {
            llvm::Value* element = element_at(array, index, sizeof(RegionRef));
            llvm::Value* size32 = load(i32_, element, 8);
            piece(element, ir_.CreateZExt(size32, i64_), size32);
          });
        } else if (field.repeated && field.kind == FieldKind::kMessage) {
          loop(count, false, [&](llvm::Value* index) {
            check(ir_.CreateCall(native_decoders_[index_.at(field.message)],
                                 {decoder, element_at(array, index, field.element_size), deeper}));
          });
        }
      }
      ir_.CreateBr(next);
      ir_.SetInsertPoint(next);
    }
    llvm::Value* unknown = at(body, layout.unknown_fields_offset());
    llvm::Value* unknown_size = load(i32_, unknown, 8);
    const std::vector<uint32_t> tags = known_tags(type);
    check_pointer(ir_.CreateCall(nd_unknown_, {decoder, unknown, ir_.CreateZExt(unknown_size, i64_),
                                               unknown_size, constant_array(tags, "known_tags"),
                                               ir_.getInt64(tags.size())}),
                  decoder, offsetof(NativeDecoder, error));
    ir_.CreateRet(ir_.getInt32(0));
  }

  const std::vector<CodecType>& types_;
  std::unique_ptr<llvm::LLVMContext> context_;
  std::unique_ptr<llvm::Module> module_;
  llvm::IRBuilder<> ir_;
  std::string prefix_;
  std::unordered_map<const MessageLayout*, size_t> index_;
  llvm::Type* i8_;
  llvm::Type* i32_;
  llvm::Type* i64_;
  llvm::PointerType* ptr_;
  llvm::Function* function_ = nullptr;
  llvm::BasicBlock* loop_top_ = nullptr;
  llvm::Value* value_slot_ = nullptr;
  llvm::Value* inner_cursor_ = nullptr;
  llvm::Value* put_slot_ = nullptr;  // wire encoder: bytes of an inline write that spills
  std::vector<llvm::Function*> wire_encoders_, wire_decoders_, native_encoders_, native_decoders_;
  llvm::FunctionCallee we_varint_, we_spill_, we_fixed32_, we_fixed64_, we_resolve_, we_bytes_,
      we_raw_, we_mark_, we_length_since_, codec_fail_;
  llvm::FunctionCallee wd_varint_, wd_tag_, wd_fixed32_, wd_fixed64_, wd_append_, wd_bytes_,
      wd_append_bytes_, wd_enter_, wd_sub_body_, wd_packed_, wd_unknown_, wd_fail_;
  llvm::FunctionCallee ne_piece_, nd_piece_, nd_unknown_;
};

}  // namespace

std::string codec_function_name(std::string_view prefix, CodecFunction function, size_t type) {
  const char* kind = function == CodecFunction::kWireEncode     ? "we"
                     : function == CodecFunction::kWireDecode   ? "wd"
                     : function == CodecFunction::kNativeEncode ? "ne"
                                                                : "nd";
  return fmt::format("{}_{}_{}", prefix, kind, type);
}

struct GeneratedCodecModule {
  std::unique_ptr<llvm::LLVMContext> context;
  std::unique_ptr<llvm::Module> module;
};

void GeneratedCodecModuleDeleter::operator()(GeneratedCodecModule* generated) const {
  generated->module.reset();  // before its context
  delete generated;
}

Expected<GeneratedCodecModulePtr> generate_codec_module(const std::vector<CodecType>& types,
                                                        std::string_view prefix,
                                                        uint64_t max_instructions,
                                                        CodecModuleStats* stats) {
  const auto start = std::chrono::steady_clock::now();
  auto generated = Generator(types, prefix).run();
  if (!generated.ok()) return generated.status();
  stats->generate_nanoseconds = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start)
          .count());
  stats->functions = 0;
  stats->instructions = 0;
  for (const llvm::Function& function : *generated->module) {
    if (function.isDeclaration()) continue;
    ++stats->functions;
    stats->instructions += function.getInstructionCount();
  }
  // For profiling the compile (docs/marshalling.md): the module as generated, before O2, for
  // LLVM's own tools (opt -time-passes, llc).
  if (const char* dump_dir = std::getenv("MRPC_CODEC_DUMP_IR"); dump_dir != nullptr) {
    std::error_code error;
    llvm::raw_fd_ostream file(fmt::format("{}/{}.ll", dump_dir, prefix), error);
    if (!error) generated->module->print(file, nullptr);
  }
  if (stats->instructions > max_instructions) {
    generated->module.reset();
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("the codecs of {} message types need {} IR instructions, more than "
                              "the compile budget of {} (CodecCompileLimits::max_instructions)",
                              types.size(), stats->instructions, max_instructions));
  }
  return GeneratedCodecModulePtr(
      new GeneratedCodecModule{std::move(generated->context), std::move(generated->module)});
}

Expected<jit::ModuleId> load_codec_module(jit::Jit& jit, GeneratedCodecModulePtr generated,
                                          const jit::ModuleOptions& options) {
  return jit.add_module(std::move(generated->context), std::move(generated->module), options);
}

}  // namespace mrpc::codec
