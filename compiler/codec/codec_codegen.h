// Generates the LLVM IR of every codec of a set of message types (one module per schema). Private
// to compiler/codec: codecs.cc compiles the module with the JIT (at the tier it chooses) and looks
// the functions up.
//
// Per message type i of `types`, the module defines (names from codec_function_name):
//   i32 we_i(WireEncoder*, const u8* body, i32 depth_left)    protobuf wire, written backwards
//   i32 wd_i(WireDecoder*, u8* body, WireCursor*, i32 depth_left)
//   i32 ne_i(NativeEncoder*, const u8* body, i32 depth_left)  spans of the source region
//   i32 nd_i(NativeDecoder*, u8* body, i32 depth_left)        rebuilds references in place
// each returning a CodecError. Field offsets, presence, oneof cases, wire types and conversions are
// constants of the generated code; only byte movement is in the runtime (codec_runtime.h).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "mrpc/base/expected.h"
#include "mrpc/jit/jit.h"

namespace google::protobuf {
class Descriptor;
}  // namespace google::protobuf

namespace mrpc {
class MessageLayout;
}

namespace mrpc::codec {

struct CodecType {
  const MessageLayout* layout = nullptr;
  const google::protobuf::Descriptor* descriptor = nullptr;
};

enum class CodecFunction { kWireEncode, kWireDecode, kNativeEncode, kNativeDecode };

std::string codec_function_name(std::string_view prefix, CodecFunction function, size_t type);

// What generating a module took and made.
struct CodecModuleStats {
  uint64_t generate_nanoseconds = 0;  // building the IR
  uint64_t functions = 0;             // defined in the module
  uint64_t instructions = 0;          // IR instructions before optimization
};

// A generated module, not loaded yet (it owns its LLVM context and module; opaque here so that
// this header stays free of LLVM). May be loaded on another thread than the one that made it, one
// thread at a time.
struct GeneratedCodecModule;
struct GeneratedCodecModuleDeleter {
  void operator()(GeneratedCodecModule* module) const;
};
using GeneratedCodecModulePtr = std::unique_ptr<GeneratedCodecModule, GeneratedCodecModuleDeleter>;

// Generates the module of `types`, its functions named with `prefix`. Every sub-message type a
// field of `types` refers to must be in `types` too. INVALID_ARGUMENT for a field kind the codecs
// do not support (groups). RESOURCE_EXHAUSTED when the IR has more than `max_instructions`
// instructions (the compile budget: optimization and code generation time grow with it), before
// any optimization or machine code.
Expected<GeneratedCodecModulePtr> generate_codec_module(const std::vector<CodecType>& types,
                                                        std::string_view prefix,
                                                        uint64_t max_instructions,
                                                        CodecModuleStats* stats);

// Compiles `module` at `options.tier` and loads it into `jit` (see jit::Jit::add_module).
Expected<jit::ModuleId> load_codec_module(jit::Jit& jit, GeneratedCodecModulePtr module,
                                          const jit::ModuleOptions& options);

}  // namespace mrpc::codec
