#!/usr/bin/env bash
# Installs what the benchmarks compare mrpc with and the build does not need: nginx (Debian's
# nginx-light, with the HTTP/2 and gRPC proxy modules) for the gRPC sidecar rows. Idempotent;
# needs root (or sudo) only when something is missing. Not part of scripts/install-deps.sh: the
# build and the tests never use nginx.
set -euo pipefail
if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
echo "install-bench-deps: installing nginx-light"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
