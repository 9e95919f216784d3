// CodecCompiler and the drivers of the compiled codecs (include/mrpc/codec/codecs.h): they set up
// the runtime contexts, call the generated functions, and turn their error codes into Statuses.
// No LLVM header here: IR generation is in codec_codegen.cc, loading in mrpc_jit.
#include "mrpc/codec/codecs.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <map>
#include <set>

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>

#include "compiler/codec/codec_codegen.h"
#include "compiler/codec/codec_runtime.h"
#include "mrpc/base/check.h"
#include "mrpc/jit/jit.h"
#include "mrpc/message/layout.h"
#include "mrpc/message/region_allocator.h"

namespace mrpc::codec {
namespace {

namespace pb = google::protobuf;

uint64_t round8(uint64_t value) {
  return (value + 7) & ~uint64_t{7};
}

bool in_region(uint64_t region_size, uint64_t offset, uint64_t bytes) {
  return offset <= region_size && bytes <= region_size - offset;
}

uint64_t nanoseconds_since(std::chrono::steady_clock::time_point start) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start)
          .count());
}

// Every message type reachable from `roots`, sorted by full name.
std::vector<const pb::Descriptor*> closure(const std::vector<const pb::Descriptor*>& roots) {
  std::map<std::string, const pb::Descriptor*> seen;
  std::vector<const pb::Descriptor*> work(roots.begin(), roots.end());
  while (!work.empty()) {
    const pb::Descriptor* type = work.back();
    work.pop_back();
    if (!seen.emplace(type->full_name(), type).second) continue;
    for (int i = 0; i < type->field_count(); ++i) {
      if (const pb::Descriptor* sub = type->field(i)->message_type()) work.push_back(sub);
    }
  }
  std::vector<const pb::Descriptor*> types;
  for (const auto& [name, type] : seen) types.push_back(type);
  return types;
}

uint64_t fnv1a(std::string_view text) {
  uint64_t hash = 14695981039346656037ull;
  for (char c : text) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 1099511628211ull;
  }
  return hash;
}

std::string key_text(const std::vector<const pb::Descriptor*>& types, LayoutSet& layouts) {
  std::string text = "mrpc-codec-v1\n";
  for (const pb::Descriptor* type : types) {
    text += describe_layout(layouts.add(*type));
    for (int i = 0; i < type->field_count(); ++i) {
      const pb::FieldDescriptor* field = type->field(i);
      text += fmt::format("  wire {} {} {}\n", field->number(), field->type_name(),
                          field->is_packed() ? "packed" : "");
    }
  }
  return text;
}

Status decode_error(const MessageLayout& layout, std::string_view codec, int32_t error,
                    uint64_t position) {
  return Status(StatusCode::kInvalidArgument,
                fmt::format("{} decode of {} failed at byte {}: {}", codec, layout.full_name(),
                            position, codec_error_text(error)));
}

}  // namespace

// ---- MessageCodec ----

Expected<std::span<const std::byte>> MessageCodec::encode_wire(ConstRegion source, uint64_t offset,
                                                               std::span<std::byte> out,
                                                               const CodecLimits& limits,
                                                               uint64_t* needed) const {
  const auto capacity = static_cast<int64_t>(out.size());
  WireEncoder encoder{reinterpret_cast<const uint8_t*>(source.base),
                      source.size,
                      reinterpret_cast<uint8_t*>(out.data()),
                      capacity,
                      capacity - static_cast<int64_t>(limits.max_message_bytes),
                      limits.max_nesting,
                      kCodecOk,
                      0,
                      0,
                      nullptr,
                      0};
  auto encoded = run_wire_encoder(encoder, source, offset, limits);
  if (!encoded.ok()) return encoded.status();
  const uint64_t size = *encoded;
  if (needed != nullptr) *needed = size;
  if (encoder.pos < 0) {
    return Status(StatusCode::kOutOfRange,
                  fmt::format("wire encoding of {} needs {} bytes, the buffer has {}",
                              layout_->full_name(), size, out.size()));
  }
  return std::span<const std::byte>(out.data() + encoder.pos, size);
}

Expected<ScatteredWire> MessageCodec::encode_wire(ConstRegion source, uint64_t offset,
                                                  std::span<const std::span<std::byte>> buffers,
                                                  const CodecLimits& limits,
                                                  uint64_t* needed) const {
  if (buffers.empty()) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("wire encode of {}: no output buffers", layout_->full_name()));
  }
  // The buffers as positions of one output: a few on the stack, more on the heap.
  constexpr size_t kOnStack = 16;
  std::array<WireChunk, kOnStack> on_stack;
  std::vector<WireChunk> on_heap;
  WireChunk* chunks = on_stack.data();
  if (buffers.size() > kOnStack) {
    on_heap.resize(buffers.size());
    chunks = on_heap.data();
  }
  int64_t capacity = 0;
  for (size_t i = 0; i < buffers.size(); ++i) {
    chunks[i] = WireChunk{reinterpret_cast<uint8_t*>(buffers[i].data()), capacity,
                          static_cast<int64_t>(buffers[i].size())};
    capacity += static_cast<int64_t>(buffers[i].size());
  }
  const WireChunk& last = chunks[buffers.size() - 1];
  WireEncoder encoder{reinterpret_cast<const uint8_t*>(source.base),
                      source.size,
                      wire_chunk_base(last),
                      capacity,
                      capacity - static_cast<int64_t>(limits.max_message_bytes),
                      limits.max_nesting,
                      kCodecOk,
                      0,
                      last.start,
                      chunks,
                      static_cast<int64_t>(buffers.size() - 1)};
  auto encoded = run_wire_encoder(encoder, source, offset, limits);
  if (!encoded.ok()) return encoded.status();
  const uint64_t size = *encoded;
  if (needed != nullptr) *needed = size;
  if (encoder.pos < 0) {
    return Status(StatusCode::kOutOfRange,
                  fmt::format("wire encoding of {} needs {} bytes, the {} buffers have {}",
                              layout_->full_name(), size, buffers.size(), capacity));
  }
  // The first byte's buffer: the current one, unless the output is empty.
  if (size == 0) return ScatteredWire{buffers.size() - 1, buffers.back().size(), 0};
  auto first = static_cast<size_t>(encoder.chunk);
  while (chunks[first].start + chunks[first].size <= encoder.pos) ++first;  // empty buffers
  return ScatteredWire{first, static_cast<uint64_t>(encoder.pos - chunks[first].start), size};
}

Expected<uint64_t> MessageCodec::run_wire_encoder(WireEncoder& encoder, ConstRegion source,
                                                  uint64_t offset,
                                                  const CodecLimits& limits) const {
  if (!in_region(source.size, offset, layout_->body_size())) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("{}: body at offset {} is outside the source region of {} bytes",
                              layout_->full_name(), offset, source.size));
  }
  const int64_t capacity = encoder.pos;
  const int32_t error = wire_encode_.load(std::memory_order_acquire)(&encoder, source.base + offset,
                                                                     limits.max_nesting);
  const uint64_t size = static_cast<uint64_t>(capacity - encoder.pos);
  if (error == kCodecOk && size > limits.max_message_bytes) {
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("{}: wire encoding of {} bytes is past the limit of {} bytes "
                              "(max_message_bytes)",
                              layout_->full_name(), size, limits.max_message_bytes));
  }
  if (error != kCodecOk) {
    return Status(
        error == kErrorTooLarge ? StatusCode::kResourceExhausted : StatusCode::kInvalidArgument,
        fmt::format("wire encode of {}: {} (offset or position {})", layout_->full_name(),
                    codec_error_text(error), encoder.error_detail));
  }
  return size;
}

Expected<uint64_t> MessageCodec::decode_wire(std::span<const std::byte> bytes,
                                             MutableRegion destination, RegionAllocator& allocator,
                                             const CodecLimits& limits) const {
  const uint64_t body = round8(layout_->body_size());
  if (bytes.size() > limits.max_message_bytes || body > limits.max_message_bytes) {
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("{}: {} input bytes are past the limit of {} (max_message_bytes)",
                              layout_->full_name(), bytes.size(), limits.max_message_bytes));
  }
  // A first guess at the decoded size; a decode that runs out of room retries with 4x.
  uint64_t block_bytes =
      std::min<uint64_t>(body + 2 * round8(bytes.size()) + 64, limits.max_message_bytes);
  const auto* input = reinterpret_cast<const uint8_t*>(bytes.data());
  for (;;) {
    auto block = allocator.allocate(block_bytes, MessageLayout::kAlignment);
    if (!block.ok()) return block.status();
    if (!in_region(destination.size, *block, block_bytes)) {
      (void)allocator.free(*block);
      return Status(StatusCode::kInternal,
                    fmt::format("the allocator ({} bytes) does not match the region ({} bytes)",
                                allocator.region_bytes(), destination.size));
    }
    auto* base = reinterpret_cast<uint8_t*>(destination.base);
    std::memset(base + *block, 0, body);
    WireDecoder decoder{base,  *block + body, *block + block_bytes, limits.max_nesting, kCodecOk,
                        input, input};
    WireCursor cursor{input, input + bytes.size()};
    const int32_t error = wire_decode_.load(std::memory_order_acquire)(&decoder, base + *block,
                                                                       &cursor, limits.max_nesting);
    if (error == kCodecOk) {
      // The guess was an upper bound: the unused tail goes back to the region.
      if (*block + block_bytes - decoder.cursor >= limits::kCodecDecodeShrinkMinBytes) {
        MRPC_TRY_STATUS(allocator.shrink(*block, decoder.cursor - *block));
      }
      return *block;
    }
    (void)allocator.free(*block);
    if (error != kErrorOutOfRoom) {
      return decode_error(*layout_, "wire", error, static_cast<uint64_t>(decoder.error_at - input));
    }
    if (block_bytes >= limits.max_message_bytes) {
      return Status(StatusCode::kResourceExhausted,
                    fmt::format("{}: the decoded message is larger than the limit of {} bytes "
                                "(max_message_bytes)",
                                layout_->full_name(), limits.max_message_bytes));
    }
    block_bytes = std::min<uint64_t>(block_bytes * 4, limits.max_message_bytes);
  }
}

Expected<uint64_t> MessageCodec::encode_native(ConstRegion source, uint64_t offset,
                                               std::vector<NativeSpan>& spans,
                                               const CodecLimits& limits) const {
  const size_t first_span = spans.size();
  NativeEncoder encoder{reinterpret_cast<const uint8_t*>(source.base),
                        source.size,
                        &spans,
                        0,
                        limits.max_message_bytes,
                        limits.max_nesting,
                        kCodecOk,
                        0};
  int32_t error = kCodecOk;
  const uint8_t* root = mrpc_ne_piece(&encoder, offset, layout_->body_size());
  error = root == nullptr
              ? encoder.error
              : native_encode_.load(std::memory_order_acquire)(&encoder, root, limits.max_nesting);
  if (error != kCodecOk) {
    spans.resize(first_span);
    return Status(
        error == kErrorTooLarge ? StatusCode::kResourceExhausted : StatusCode::kInvalidArgument,
        fmt::format("native encode of {}: {} (offset {})", layout_->full_name(),
                    codec_error_text(error), encoder.error_detail));
  }
  return encoder.total;
}

Expected<uint64_t> MessageCodec::decode_native(std::span<const std::byte> bytes,
                                               MutableRegion destination,
                                               RegionAllocator& allocator,
                                               const CodecLimits& limits) const {
  const uint64_t body = round8(layout_->body_size());
  if (bytes.size() > limits.max_message_bytes) {
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("{}: {} native bytes are past the limit of {} (max_message_bytes)",
                              layout_->full_name(), bytes.size(), limits.max_message_bytes));
  }
  if (bytes.size() < body || bytes.size() % 8 != 0) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("{}: a native encoding of {} bytes is not a whole number of 8-byte "
                              "pieces holding at least the body ({} bytes)",
                              layout_->full_name(), bytes.size(), body));
  }
  auto block = allocator.allocate(bytes.size(), MessageLayout::kAlignment);
  if (!block.ok()) return block.status();
  if (!in_region(destination.size, *block, bytes.size())) {
    (void)allocator.free(*block);
    return Status(StatusCode::kInternal,
                  fmt::format("the allocator ({} bytes) does not match the region ({} bytes)",
                              allocator.region_bytes(), destination.size));
  }
  auto* base = reinterpret_cast<uint8_t*>(destination.base);
  std::memcpy(base + *block, bytes.data(), bytes.size());
  NativeDecoder decoder{base, *block, body, bytes.size(), limits.max_nesting, kCodecOk, 0};
  const int32_t error =
      native_decode_.load(std::memory_order_acquire)(&decoder, base + *block, limits.max_nesting);
  if (error != kCodecOk) {
    (void)allocator.free(*block);
    return decode_error(*layout_, "native", error, decoder.error_detail);
  }
  if (decoder.cursor != bytes.size()) {
    (void)allocator.free(*block);
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("native decode of {}: the message takes {} of the {} bytes "
                              "received",
                              layout_->full_name(), decoder.cursor, bytes.size()));
  }
  return *block;
}

void MessageCodec::install(void* const* functions) {
  wire_encode_.store(reinterpret_cast<WireEncodeFn>(functions[0]), std::memory_order_release);
  wire_decode_.store(reinterpret_cast<WireDecodeFn>(functions[1]), std::memory_order_release);
  native_encode_.store(reinterpret_cast<NativeEncodeFn>(functions[2]), std::memory_order_release);
  native_decode_.store(reinterpret_cast<NativeDecodeFn>(functions[3]), std::memory_order_release);
}

// ---- CompiledSchema ----

struct CompiledSchema::State {
  jit::Jit* jit = nullptr;
  LayoutSet layouts;
  std::map<std::string, MessageCodec, std::less<>> codecs;
  // The order of `codecs` is the order of the generated types (both sorted by full name): type i's
  // four functions are codec_function_name(prefix, f, i).
  std::atomic<jit::CodegenTier> tier{jit::CodegenTier::kOptimized};
  std::atomic<uint64_t> tier_up_ns{0};
  // Under tier_up_mutex: the loaded modules (the first tier's, then the optimized one), and the
  // module generated for the tier-up with its function name prefix (null once used or if none).
  std::mutex tier_up_mutex;
  std::vector<jit::ModuleId> modules;
  GeneratedCodecModulePtr optimized_module;
  std::string optimized_prefix;
  Status tier_up_failure;  // why the one tier-up attempt failed (the fast code stays)
};

CompiledSchema::CompiledSchema() : state_(std::make_unique<State>()) {}

CompiledSchema::~CompiledSchema() {
  // No thread runs the codecs any more (whoever did held this schema), so both tiers can go.
  for (jit::ModuleId module : state_->modules) (void)state_->jit->remove_module(module);
}

jit::CodegenTier CompiledSchema::tier() const {
  return state_->tier.load(std::memory_order_acquire);
}

uint64_t CompiledSchema::tier_up_nanoseconds() const {
  return state_->tier_up_ns.load(std::memory_order_acquire);
}

const MessageCodec* CompiledSchema::find(std::string_view full_name) const {
  auto it = state_->codecs.find(full_name);
  return it == state_->codecs.end() ? nullptr : &it->second;
}

// ---- CodecCompiler ----

Expected<std::unique_ptr<CodecCompiler>> CodecCompiler::create(jit::Jit& jit,
                                                               const CodecCompileLimits& limits) {
  MRPC_TRY_STATUS(jit.define_host_symbols(codec_runtime_symbols()));
  return std::unique_ptr<CodecCompiler>(new CodecCompiler(jit, limits));
}

uint64_t CodecCompiler::key_of(const std::vector<const pb::Descriptor*>& roots) {
  LayoutSet layouts;
  return fnv1a(key_text(closure(roots), layouts));
}

namespace {

std::vector<std::string> function_names(std::string_view prefix, size_t types) {
  std::vector<std::string> names;
  for (size_t i = 0; i < types; ++i) {
    for (CodecFunction function : {CodecFunction::kWireEncode, CodecFunction::kWireDecode,
                                   CodecFunction::kNativeEncode, CodecFunction::kNativeDecode}) {
      names.push_back(codec_function_name(prefix, function, i));
    }
  }
  return names;
}

}  // namespace

Expected<std::shared_ptr<const CompiledSchema>> CodecCompiler::compile(
    const std::vector<const pb::Descriptor*>& roots, jit::CodegenTier tier) {
  std::shared_ptr<CompiledSchema> schema(new CompiledSchema());
  CompiledSchema::State& state = *schema->state_;
  const std::vector<const pb::Descriptor*> descriptors = closure(roots);
  schema->key_ = fnv1a(key_text(descriptors, state.layouts));
  std::vector<CodecType> types;
  for (const pb::Descriptor* descriptor : descriptors) {
    types.push_back(CodecType{state.layouts.find(descriptor->full_name()), descriptor});
  }
  std::string prefix;
  {
    // Names are unique per JIT, and the same in every process for the first compile of a key
    // (so the JIT's object cache finds the same IR).
    std::lock_guard lock(mutex_);
    prefix = fmt::format("mrpc_codec_{:016x}_{}", schema->key_, compiles_of_key_[schema->key_]++);
  }
  const auto compile_start = std::chrono::steady_clock::now();
  CodecModuleStats module_stats;
  auto module =
      generate_codec_module(types, prefix, compile_limits_.max_instructions, &module_stats);
  if (!module.ok()) return module.status();
  if (tier == jit::CodegenTier::kFast) {
    // The tier-up's module, generated now while the descriptors are here (its functions have
    // their own names: both modules are loaded at once for a while).
    state.optimized_prefix = prefix + "_o2";
    CodecModuleStats optimized_stats;
    auto optimized = generate_codec_module(types, state.optimized_prefix,
                                           compile_limits_.max_instructions, &optimized_stats);
    if (!optimized.ok()) return optimized.status();
    state.optimized_module = std::move(*optimized);
    module_stats.generate_nanoseconds += optimized_stats.generate_nanoseconds;
  }
  schema->generate_ns_ = module_stats.generate_nanoseconds;
  schema->functions_ = module_stats.functions;
  schema->instructions_ = module_stats.instructions;
  state.jit = &jit_;
  state.tier.store(tier, std::memory_order_relaxed);
  auto loaded = load_codec_module(
      jit_, std::move(*module), jit::ModuleOptions{.tier = tier, .times = &schema->module_times_});
  if (!loaded.ok()) return loaded.status();
  state.modules.push_back(*loaded);
  const auto link_start = std::chrono::steady_clock::now();
  auto addresses = jit_.lookup_all(function_names(prefix, types.size()));  // links the object
  if (!addresses.ok()) return addresses.status();
  schema->link_ns_ = nanoseconds_since(link_start);
  for (size_t i = 0; i < types.size(); ++i) {
    auto [codec, inserted] = state.codecs.try_emplace(types[i].layout->full_name());
    MRPC_ASSERT(inserted, "two codec types named {}", types[i].layout->full_name());
    codec->second.layout_ = types[i].layout;
    codec->second.install(addresses->data() + 4 * i);
  }
  schema->compile_ns_ = nanoseconds_since(compile_start) - schema->generate_ns_;
  return std::shared_ptr<const CompiledSchema>(std::move(schema));
}

Status CodecCompiler::tier_up(const CompiledSchema& schema) {
  CompiledSchema::State& state = *schema.state_;
  MRPC_ASSERT(state.jit == &jit_, "tier_up of a schema from another CodecCompiler");
  std::lock_guard lock(state.tier_up_mutex);
  if (state.optimized_module == nullptr) return state.tier_up_failure;  // done (or failed) before
  const auto start = std::chrono::steady_clock::now();
  auto loaded = load_codec_module(jit_, std::move(state.optimized_module),
                                  jit::ModuleOptions{.tier = jit::CodegenTier::kOptimized});
  state.optimized_module = nullptr;
  if (!loaded.ok()) {
    state.tier_up_failure = Status(
        loaded.status().code(),
        fmt::format("tier-up of codec schema {:016x}: {}", schema.key_, loaded.status().message()));
    return state.tier_up_failure;
  }
  state.modules.push_back(*loaded);
  auto addresses = jit_.lookup_all(function_names(state.optimized_prefix, state.codecs.size()));
  if (!addresses.ok()) {
    state.tier_up_failure = addresses.status();
    return state.tier_up_failure;
  }
  // The codecs and the generated types are in the same order (both by full name).
  size_t i = 0;
  for (auto& [name, codec] : state.codecs) codec.install(addresses->data() + 4 * i++);
  state.tier_up_ns.store(nanoseconds_since(start), std::memory_order_release);
  state.tier.store(jit::CodegenTier::kOptimized, std::memory_order_release);
  return Status();
}

}  // namespace mrpc::codec
