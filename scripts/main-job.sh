#!/usr/bin/env bash
# The main job: installs what is missing, builds, starts mrpcd, an echo server app and a client
# app, makes calls and prints what happened. Everything it starts is stopped on exit.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${MRPC_BUILD_DIR:-$root/build}"
"$root/scripts/build.sh"
if [ ! -x "$build/examples/echo/echo_demo" ]; then
  echo "main-job: the echo demo is not built yet (the daemon and app library are in progress)" >&2
  exit 1
fi
exec "$build/examples/echo/echo_demo" --build-dir "$build"
