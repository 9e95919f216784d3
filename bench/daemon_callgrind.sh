#!/usr/bin/env bash
# Instructions per call of the whole daemon process (every thread; user space only: callgrind does
# not count the kernel) at one call in flight: mrpcd runs under callgrind with spin budget SPIN us
# (default 0), echo_server serves, and after a warm-up (and the codecs' tier-up) the counters are
# zeroed (callgrind_control -z), echo_client makes CALLS calls (default 2000) at one in flight, and
# the counters are dumped (callgrind_control -d). Prints instructions per call. KEEP_CALLGRIND=FILE
# keeps the dump; a dump taken after callgrind_control -z attributes every cost to the threads'
# entry (clone), so it gives the total, not a per-function profile (for one, run mrpcd under
# callgrind with --toggle-collect as bench/policy_callgrind.sh does).
# POLICY=NAME attaches one of the benches' policies at callee first (bench/lib.sh,
# attach_bench_policy), so the difference from POLICY=none is what the policy costs the whole
# daemon per call (its operator, and whatever it changes elsewhere).
# Usage: SPIN=0 CALLS=2000 POLICY=none bench/daemon_callgrind.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
spin=${SPIN:-0}
calls=${CALLS:-2000}
bench_init mrpc-daemon-cg
export MRPC_SOCKET=$run_dir/app.sock
mrpcd_wrapper=(valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$run_dir/cg.out.%p")
start_mrpcd "$run_dir" --spin-budget-us "$spin"
dpid=$mrpcd_pid
start_echo_server_patiently "$run_dir/server.log"
attach_bench_policy "$run_dir" "${POLICY:-none}"
"$build/examples/echo/echo_client" --calls 500 --in-flight 1 >/dev/null
callgrind_control -z "$dpid" >/dev/null
summary=$("$build/examples/echo/echo_client" --calls "$calls" --in-flight 1 | head -1)
callgrind_control -d "$dpid" >/dev/null
grep -q " 0 errors" <<<"$summary" || { echo "calls failed: $summary" >&2; exit 1; }
dump=$(ls -t "$run_dir"/cg.out.* | head -1)
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
[[ -n "${KEEP_CALLGRIND:-}" ]] && cp "$dump" "$KEEP_CALLGRIND"
echo "daemon: $((total / calls)) instructions per call (spin $spin us, $calls calls at 1 in flight, policy ${POLICY:-none})"
