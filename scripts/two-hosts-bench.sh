#!/usr/bin/env bash
# The two-host benchmark (docs/tcp-transport.md, "Benchmark"): builds two_hosts_bench (and the
# daemon and echo server it starts), installs nginx for the sidecar rows if missing, and runs it.
# Needs root for the network namespaces (else it runs on 127.0.0.1/127.0.0.2 and says so).
# Arguments go to two_hosts_bench (--calls N, --big-calls N, --window W, --big-window W,
# --runtime-threads N). MRPC_BUILD_DIR: an existing build folder (default build/).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${MRPC_BUILD_DIR:-$root/build}"
"$root/scripts/install-deps.sh"
"$root/scripts/install-bench-deps.sh"
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE="${MRPC_BUILD_TYPE:-RelWithDebInfo}" >/dev/null
fi
cmake --build "$build" -j "${MRPC_JOBS:-2}" --target two_hosts_bench mrpcd echo_server
exec "$build/bench/two_hosts_bench" "$@"
