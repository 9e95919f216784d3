// The daemon's untrusted inputs from apps, beyond messages and schemas (fuzz/message_inputs.h), as
// fuzz entry points (docs/fuzzing.md): the frames an app writes on its socket, and the entries it
// writes into its submission ring. Both run against one daemon engine embedded in this process
// (started on first use, with an echo server registered), as a hostile app would reach it.
// libFuzzer runs them in fuzz/app_socket_fuzz.cc and fuzz/ring_fuzz.cc; the default test suite
// replays their seeds, the files of tests/daemon/corpus/<target>/ and fixed mutations
// (tests/daemon/daemon_fuzz_replay_test.cc). Each returns normally for every input; a crash, a
// sanitizer report or a failed oracle (MRPC_ASSERT: after the input the daemon's connection count
// is back where it was and its control socket answers) is a finding.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace mrpc::fuzz {

// Input: packets, each a 2-byte little-endian length and that many bytes (the last may be short),
// sent on a fresh app-socket connection, which is then closed.
void app_socket_frames(std::string_view input);

// Input: 64-byte ring entries (a short tail is dropped) written into the submission ring of a
// fresh app that registered to call the echo service and built one echo request. The kind byte
// is taken modulo the four app kinds; with bit 7 of flags set, the entry's service id and message
// offset become the registered id and the built request (so calls reach the server).
void ring_entries(std::string_view input);

std::vector<std::string> frame_seeds();
std::vector<std::string> ring_seeds();

}  // namespace mrpc::fuzz
