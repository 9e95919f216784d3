// libFuzzer target: the entries an app writes into its submission ring, against a daemon engine
// in this process (fuzz/daemon_inputs.h). Built only with -DMRPC_BUILD_FUZZERS=ON and clang
// (docs/fuzzing.md).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "daemon_inputs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mrpc::fuzz::ring_entries(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
