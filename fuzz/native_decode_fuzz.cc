// libFuzzer target for the compiled native decoder: arbitrary bytes into a receive region (first
// byte: which schema). Built only with -DMRPC_BUILD_FUZZERS=ON and clang (docs/fuzzing.md); the
// default suite replays tests/codec/corpus/native/ and fixed mutations of it.
#include <cstddef>
#include <cstdint>

#include "codec_decode_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static mrpc::codec_fuzz::DecodeTarget target;
  target.run(mrpc::codec_fuzz::Decoder::kNative, data, size);
  return 0;
}
