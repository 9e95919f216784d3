#!/usr/bin/env bash
# Instructions per call libmrpc costs the calling app (callgrind, so the figure does not depend on
# the machine's load): mrpcd and echo_server run normally, echo_client runs under callgrind
# (every thread of it counted: the app's call, libmrpc's completion thread, the generated stubs)
# for CALLS and 2*CALLS echo calls with IN_FLIGHT calls in flight, all spin budgets 0 (a spinning
# thread's instructions would count its waiting); the difference divided by CALLS is printed.
# MRPC_BUILD_DIR picks the build whose mrpcd, echo_server and echo_client run (for before/after).
# Usage: bench/client_callgrind.sh [CALLS] [IN_FLIGHT]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
calls=${1:-2000}
in_flight=${2:-1}
bench_init client-cg
export MRPC_SOCKET=$run_dir/app.sock
export MRPC_SPIN_BUDGET_US=0
start_mrpcd "$run_dir" --spin-budget-us 0
start_echo_server "$run_dir/server.log" --threads 0
"$build/examples/echo/echo_client" --calls 100 --in-flight "$in_flight" >/dev/null  # registered, codecs compiled
count() {
  valgrind --tool=callgrind --callgrind-out-file="$run_dir/cg.$1" \
    "$build/examples/echo/echo_client" --calls "$1" --in-flight "$in_flight" >/dev/null 2>&1
  sed -n 's/^totals: //p' "$run_dir/cg.$1"
}
a=$(count "$calls")
b=$(count $((2 * calls)))
echo "client: $(((b - a) / calls)) instructions per call ($calls vs $((2 * calls)) calls, $in_flight in flight, $build)"
