// libFuzzer target for the daemon-to-daemon frame parser (transports/tcp/frame.h): arbitrary
// bytes as a peer's stream, fed in pieces (first byte: piece size). Built only with
// -DMRPC_BUILD_FUZZERS=ON and clang (docs/fuzzing.md); the default suite replays
// tests/transports/corpus/tcp_frame/ and fixed mutations of it
// (tests/transports/tcp_frame_test.cc).
#include <cstddef>
#include <cstdint>

#include "tcp_frame_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)mrpc::tcp_fuzz::run(data, size);
  return 0;
}
