// libFuzzer target: schema registration (Schema::from_file_descriptor_set and every layout and
// fingerprint) over random bytes (fuzz/message_inputs.h). Built only with -DMRPC_BUILD_FUZZERS=ON
// and clang (docs/fuzzing.md).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "message_inputs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mrpc::fuzz::register_schema(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
