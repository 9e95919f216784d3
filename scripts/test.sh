#!/usr/bin/env bash
# The whole default test suite: installs what is missing, builds, runs every test but the soaks.
# Soaks: scripts/test.sh -L soak   (arguments go to ctest)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${MRPC_BUILD_DIR:-$root/build}"
"$root/scripts/build.sh"
cd "$build"
if [ $# -eq 0 ]; then
  set -- -LE soak
fi
ctest --output-on-failure -j "${MRPC_JOBS:-2}" "$@"
