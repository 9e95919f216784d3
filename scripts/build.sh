#!/usr/bin/env bash
# Configures and builds mrpc into ${MRPC_BUILD_DIR:-build} with two jobs (the machines have 2 cores).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${MRPC_BUILD_DIR:-$root/build}"
"$root/scripts/install-deps.sh"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE="${MRPC_BUILD_TYPE:-RelWithDebInfo}" "$@" >/dev/null
cmake --build "$build" -j "${MRPC_JOBS:-2}"
