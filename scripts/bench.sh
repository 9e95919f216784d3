#!/usr/bin/env bash
# Builds and runs the echo benchmark: mrpc beside raw TCP, gRPC and gRPC behind an nginx sidecar.
# Installs nginx-light (comparison only) if missing. Arguments go to echo_bench (--calls, --window).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${MRPC_BUILD_DIR:-$root/build}"
"$root/scripts/build.sh"
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nginx-light >/dev/null
fi
exec "$build/bench/echo_bench" "$@"
