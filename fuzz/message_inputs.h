// The daemon's untrusted message inputs as fuzz entry points (docs/fuzzing.md): the copy of a
// message out of an app's heap and the registration of a schema. libFuzzer runs them in
// fuzz/message_copy_fuzz.cc and fuzz/schema_fuzz.cc; the default test suite replays their seed
// corpora and fixed mutations of them (tests/message/fuzz_replay_test.cc). Each returns normally
// for every input; a crash, a sanitizer report or a failed oracle (MRPC_ASSERT) is a finding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mrpc::fuzz {

// Input: byte 0 picks the message type, bytes 1-8 the root offset (little endian, taken modulo
// the heap size + 64), byte 9 the nesting limit; the rest is the heap's contents. The copy must
// succeed or fail cleanly; a copy that succeeds must copy again, from the daemon's side, to the
// same number of bytes, and free to nothing.
void copy_from_heap(std::string_view input);

// Input: a serialized FileDescriptorSet. Registration must succeed or fail cleanly; a schema
// that registers gets the same fingerprints when registered again.
void register_schema(std::string_view input);

// Seed inputs built from real messages and schemas (what tests/message/corpus/ holds).
std::vector<std::string> copy_seeds();
std::vector<std::string> schema_seeds();

}  // namespace mrpc::fuzz
