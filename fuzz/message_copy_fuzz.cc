// libFuzzer target: copy_message over random heap contents and roots (fuzz/message_inputs.h).
// Built only with -DMRPC_BUILD_FUZZERS=ON and clang (docs/fuzzing.md).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "message_inputs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mrpc::fuzz::copy_from_heap(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
