// nginx as a gRPC sidecar proxy for the benchmarks: HTTP/2 (cleartext) on both legs, one worker
// process, `grpc_pass` to one upstream with kept-alive connections (TOOLCHAIN.md: without raising
// keepalive_requests long runs fail). nginx sends one call at a time per upstream connection, so
// the pool keeps 128 of them: enough for 64 calls in flight without a connection per call (with
// 16, 64 in flight cost twice the CPU per call and ran at half the rate). nginx comes from Debian
// (nginx-light, installed by scripts/install-bench-deps.sh for the comparison only).
#pragma once

#include <string>
#include <vector>

#include "mrpc/base/expected.h"
#include "mrpc/base/subprocess.h"

namespace mrpc::bench {

inline constexpr const char* kNginxPath = "/usr/sbin/nginx";

bool nginx_installed();

// Writes `directory`/nginx.conf (a proxy listening on `listen` "address:port" that passes every
// gRPC call to `upstream` "address:port") and starts nginx in the foreground under `prefix` (e.g.
// {"ip", "netns", "exec", NS}; the prefix must exec nginx so the pid is nginx's). Its output and
// error log go to `directory`.
Expected<Subprocess> start_nginx_grpc_proxy(const std::string& directory, const std::string& listen,
                                            const std::string& upstream,
                                            const std::vector<std::string>& prefix = {});

}  // namespace mrpc::bench
