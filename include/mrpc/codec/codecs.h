// Marshalling compiled from an app's schema (docs/marshalling.md). A CodecCompiler turns the
// message types of a protobuf schema into machine code through LLVM IR and the shared JIT: per
// type, a protobuf wire encoder and decoder, and a native (scatter-gather) encoder and decoder.
// The result, a CompiledSchema, owns its JIT modules (unloaded when it dies) and its layouts.
//
// Tiers: a schema compiled at jit::CodegenTier::kFast (no IR optimization, -O0 machine code: a few
// times cheaper to compile, slower code) can be recompiled optimized later (CodecCompiler::
// tier_up, on any thread, typically CodecCache's background thread). The optimized code is
// swapped into the same MessageCodec objects, one atomic function pointer per codec, so a
// `const MessageCodec*` stays valid and correct across the swap: a call that started in the fast
// code finishes there (its sub-message calls are direct calls inside the fast module), later calls
// run the optimized code; both produce the same bytes and messages (tests/codec/tier_codec_test).
// The fast module stays loaded until the CompiledSchema dies (its last shared_ptr goes), because
// a thread may still be running in it; it is tens of KB per schema.
//
// Trust: encoders read a message in an app's heap, which the app may change meanwhile; every
// reference is bounds-checked against the region, each value loaded once. Decoders read bytes
// from the network: any input gives a message or an error, within the limits given.
//
// Threads: a CompiledSchema and its MessageCodecs are immutable but for the tier swap (atomic, see
// above); their members may run on any number of threads at once (each call has its own state). The
// decode calls use the caller's RegionAllocator, which the caller serializes (it is not
// thread-safe).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mrpc/base/expected.h"
#include "mrpc/base/limits.h"
#include "mrpc/jit/jit.h"
#include "mrpc/message/copy.h"

namespace google::protobuf {
class Descriptor;
}  // namespace google::protobuf

namespace mrpc {
class MessageLayout;
class RegionAllocator;
}  // namespace mrpc

namespace mrpc::codec {

struct WireEncoder;  // compiler/codec/codec_runtime.h

struct CodecLimits {
  uint64_t max_message_bytes = limits::kDefaultMaxMessageBytes;  // decoded or native-encoded
  uint32_t max_nesting = limits::kMaxMessageNesting;             // messages in messages
};

// What one schema's compile may cost (a hostile schema within the schema limits could still ask
// for minutes of LLVM time). Checked on the generated IR, before optimization.
struct CodecCompileLimits {
  uint64_t max_instructions = limits::kMaxCodecInstructions;
};

// One piece of a native encoding: bytes of the source region (or of static zero padding), never
// a copy. Valid while the message stays unchanged in its heap.
struct NativeSpan {
  const std::byte* data;
  uint64_t size;
};

// Where a wire encoding scattered over a list of buffers lies (MessageCodec::encode_wire).
struct ScatteredWire {
  size_t first_buffer = 0;    // the buffer holding the first byte
  uint64_t first_offset = 0;  // where in it; that buffer's tail and all later buffers follow
  uint64_t size = 0;          // bytes in all

  // The encoding's bytes as spans of `buffers` (the ones given to encode_wire), in order: what a
  // gather write (writev) sends.
  template <typename Buffers>
  std::vector<std::span<const std::byte>> pieces(const Buffers& buffers) const {
    std::vector<std::span<const std::byte>> out;
    if (size == 0) return out;
    for (size_t i = first_buffer; i < std::size(buffers); ++i) {
      std::span<const std::byte> buffer(buffers[i]);
      if (i == first_buffer) buffer = buffer.subspan(first_offset);
      if (!buffer.empty()) out.push_back(buffer);
    }
    return out;
  }
};

// The compiled codecs of one message type. Owned by its CompiledSchema; the same object for the
// schema's life (its code may be swapped for the optimized tier meanwhile, see above).
class MessageCodec {
 public:
  MessageCodec() = default;
  MessageCodec(const MessageCodec&) = delete;
  MessageCodec& operator=(const MessageCodec&) = delete;

  const MessageLayout& layout() const { return *layout_; }

  // Protobuf wire encoding of the message whose body is at `offset` of `source`. The bytes are
  // written at the END of `out` (the encoder writes backwards, so nested lengths need no second
  // pass); the returned span is where they are. OUT_OF_RANGE if `out` is too small: then
  // `*needed` (if given) is the size needed. INVALID_ARGUMENT for a corrupt message (a reference
  // outside the region, a bad oneof case, nesting past the limit).
  Expected<std::span<const std::byte>> encode_wire(ConstRegion source, uint64_t offset,
                                                   std::span<std::byte> out,
                                                   const CodecLimits& limits,
                                                   uint64_t* needed = nullptr) const;

  // The same encoding scattered over `buffers` (e.g. a transport's fixed-size send buffers), as
  // if they were one output of their total size: the bytes fill it from the END of the last buffer
  // backwards, so they lie in buffers[first_buffer] from first_offset to its end, then in every
  // later buffer whole (see ScatteredWire::pieces). OUT_OF_RANGE if the buffers are too small
  // (`*needed` says how much is needed); other errors as above. Writes that cross a buffer edge
  // take a slower path; the rest costs what the one-buffer encoder does.
  Expected<ScatteredWire> encode_wire(ConstRegion source, uint64_t offset,
                                      std::span<const std::span<std::byte>> buffers,
                                      const CodecLimits& limits, uint64_t* needed = nullptr) const;

  // Decodes protobuf wire bytes into one new block of `destination` (allocated with
  // `allocator`); returns the root body's offset, which is also the block's start: one
  // allocator.free(root) releases the whole message. INVALID_ARGUMENT for malformed input (what
  // and at which byte), RESOURCE_EXHAUSTED past max_message_bytes or when the region is full.
  Expected<uint64_t> decode_wire(std::span<const std::byte> bytes, MutableRegion destination,
                                 RegionAllocator& allocator, const CodecLimits& limits) const;

  // Native encoding: appends to `spans` the pieces of the message (its bodies, strings and
  // arrays in a fixed walk order, each padded to 8 bytes) without copying them. The receiver
  // needs only their concatenation. Returns the total bytes.
  Expected<uint64_t> encode_native(ConstRegion source, uint64_t offset,
                                   std::vector<NativeSpan>& spans, const CodecLimits& limits) const;

  // Copies a native encoding into one new block of `destination` and rewrites its references to
  // their new places; checks every count and case against the bytes received. Returns the root
  // offset (= the block; one free releases it).
  Expected<uint64_t> decode_native(std::span<const std::byte> bytes, MutableRegion destination,
                                   RegionAllocator& allocator, const CodecLimits& limits) const;

 private:
  friend class CompiledSchema;
  friend class CodecCompiler;
  Expected<uint64_t> run_wire_encoder(WireEncoder& encoder, ConstRegion source, uint64_t offset,
                                      const CodecLimits& limits) const;
  using WireEncodeFn = int32_t (*)(void*, const void*, int32_t);
  using WireDecodeFn = int32_t (*)(void*, void*, void*, int32_t);
  using NativeEncodeFn = int32_t (*)(void*, const void*, int32_t);
  using NativeDecodeFn = int32_t (*)(void*, void*, int32_t);
  // Installs code (at compile, and again at the tier swap). Release stores: a caller that loads a
  // pointer (acquire) sees the code the JIT wrote behind it.
  void install(void* const* functions);
  const MessageLayout* layout_ = nullptr;
  std::atomic<WireEncodeFn> wire_encode_{nullptr};
  std::atomic<WireDecodeFn> wire_decode_{nullptr};
  std::atomic<NativeEncodeFn> native_encode_{nullptr};
  std::atomic<NativeDecodeFn> native_decode_{nullptr};
};

// The codecs of every message type reachable from the types a schema was compiled for. Its JIT
// must outlive it (the destructor unloads the module from that JIT).
class CompiledSchema {
 public:
  ~CompiledSchema();
  CompiledSchema(const CompiledSchema&) = delete;
  CompiledSchema& operator=(const CompiledSchema&) = delete;

  // The codec of a message type by full name ("hotel.Hotel"), or null.
  const MessageCodec* find(std::string_view full_name) const;
  // What the codecs depend on: the layouts' canonical text plus every field's protobuf type and
  // packing, hashed (FNV-1a 64). Equal keys compile to interchangeable code.
  uint64_t key() const { return key_; }
  // Wall time of IR generation and of optimization + machine code generation + linking, for the
  // first tier (what the caller of compile() waited for).
  uint64_t generate_nanoseconds() const { return generate_ns_; }
  uint64_t compile_nanoseconds() const { return compile_ns_; }
  // Where the first tier's compile went (the JIT's breakdown) and the linking of its object (the
  // first lookup of its functions).
  const jit::ModuleTimes& module_times() const { return module_times_; }
  uint64_t link_nanoseconds() const { return link_ns_; }
  // The tier whose code the codecs run now: the tier compile() was asked for, then kOptimized once
  // tier_up() has swapped the optimized code in.
  jit::CodegenTier tier() const;
  // Wall time of the tier-up (generate nothing: the module was generated with the first one;
  // optimize + machine code + link), 0 before it.
  uint64_t tier_up_nanoseconds() const;
  // The size of the generated module: functions (four per message type) and IR instructions
  // before optimization (what the compile budget counts).
  uint64_t functions() const { return functions_; }
  uint64_t instructions() const { return instructions_; }

 private:
  friend class CodecCompiler;
  CompiledSchema();
  struct State;
  std::unique_ptr<State> state_;
  uint64_t key_ = 0;
  uint64_t generate_ns_ = 0;
  uint64_t compile_ns_ = 0;
  uint64_t link_ns_ = 0;
  jit::ModuleTimes module_times_;
  uint64_t functions_ = 0;
  uint64_t instructions_ = 0;
};

// Compiles schemas with one JIT. Registers the codec runtime's functions with the JIT, so one
// CodecCompiler per Jit. Thread-safe (the JIT serializes loading).
class CodecCompiler {
 public:
  // ALREADY_EXISTS if the JIT already has the codec runtime (another CodecCompiler).
  static Expected<std::unique_ptr<CodecCompiler>> create(jit::Jit& jit,
                                                         const CodecCompileLimits& limits = {});

  // The codecs of `roots` and every type they reach, compiled at `tier`. The descriptors need to
  // live only during the call. INVALID_ARGUMENT for a schema the codecs do not support (proto2
  // groups); RESOURCE_EXHAUSTED past the compile budget (CodecCompileLimits), before LLVM
  // optimizes. At kFast the module is generated twice (a second copy, with its own function
  // names, kept unloaded for tier_up: ~0.1-0.5 ms and the memory of the unoptimized IR until then).
  Expected<std::shared_ptr<const CompiledSchema>> compile(
      const std::vector<const google::protobuf::Descriptor*>& roots,
      jit::CodegenTier tier = jit::CodegenTier::kOptimized);

  // Compiles `schema`'s codecs optimized and swaps them in (see the top of this file). Runs on the
  // calling thread (the JIT's optimized tier, not its lock, is held meanwhile); the schema's codecs
  // may be in use on other threads throughout. OK at once if `schema` is optimized already (or
  // another thread is tiering it up: this call then waits for it). One attempt per schema: if it
  // fails (the JIT's error), the schema keeps its fast code and every later call returns that
  // error. `schema` must come from this compiler.
  Status tier_up(const CompiledSchema& schema);

  // The cache key compile() would give these roots, without compiling (see CompiledSchema::key).
  static uint64_t key_of(const std::vector<const google::protobuf::Descriptor*>& roots);

 private:
  CodecCompiler(jit::Jit& jit, const CodecCompileLimits& limits)
      : jit_(jit), compile_limits_(limits) {}
  jit::Jit& jit_;
  const CodecCompileLimits compile_limits_;
  std::mutex mutex_;
  std::map<uint64_t, uint64_t> compiles_of_key_;  // module names are unique per JIT
};

}  // namespace mrpc::codec
