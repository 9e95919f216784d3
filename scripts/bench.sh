#!/usr/bin/env bash
# Builds and runs the echo benchmark: mrpc beside raw TCP, gRPC and gRPC behind an nginx sidecar.
# Installs nginx-light (comparison only) if missing. Arguments go to echo_bench (--calls, --window).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${MRPC_BUILD_DIR:-$root/build}"
"$root/scripts/build.sh"
"$root/scripts/install-bench-deps.sh"
exec "$build/bench/echo_bench" "$@"
