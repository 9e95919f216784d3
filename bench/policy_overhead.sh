#!/usr/bin/env bash
# Per-RPC overhead of policies attached in a running mrpcd, end to end on the echo workload:
# echo_client calls/s and latency with no policy, then with each policy attached through
# mrpc-polc (a no-op, the stdlib acl that denies nobody, an acl on a string field of the request,
# the stdlib rate limit set high enough to never limit). Rounds alternate the configurations so
# load from other processes on the machine spreads over all of them.
# Usage: bench/policy_overhead.sh [CALLS] [ROUNDS]   (after building mrpcd, mrpc-polc, echo_*)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
calls=${1:-100000}
rounds=${2:-3}
bench_init mrpc-policy-bench
export MRPC_SOCKET="$run_dir/app.sock"
start_mrpcd "$run_dir"
start_echo_server "$run_dir/server.log"
polc=("$build/tools/mrpc-polc/mrpc-polc" --socket "$run_dir/control.sock")

"${polc[@]}" load "$root/bench/policies/noop.mpol" >/dev/null
"${polc[@]}" load "$root/stdlib-policies/acl.mpol" >/dev/null
"${polc[@]}" load "$root/bench/policies/field_acl.mpol" -I "$root/examples/echo" >/dev/null
"${polc[@]}" load "$root/stdlib-policies/rate_limit.mpol" >/dev/null

run() {  # run CONFIG: one echo_client run, prints "CONFIG calls/s p50"
  local line
  line=$("$build/examples/echo/echo_client" --calls "$calls" --in-flight 64 | head -1)
  echo "$1 $(sed -E 's/.*p50 ([0-9.]+) us, p99 ([0-9.]+) us, ([0-9]+) calls\/s.*/\3 \1 \2/' <<<"$line")"
}
results="$run_dir/results"
for round in $(seq 1 "$rounds"); do
  run none >>"$results"
  for policy in noop acl field_acl rate_limit; do
    case $policy in
      rate_limit) "${polc[@]}" attach rate_limit rate=1e12 burst=1e12 >/dev/null ;;
      *) "${polc[@]}" attach "$policy" >/dev/null ;;
    esac
    run "$policy" >>"$results"
    "${polc[@]}" detach "$policy" >/dev/null
  done
done
python3 - "$results" "$calls" "$rounds" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
by = {}
for name, rate, p50, p99 in rows:
    by.setdefault(name, []).append((float(rate), float(p50), float(p99)))
base = statistics.median(r[0] for r in by["none"])
print(f"echo, {sys.argv[2]} calls x 64 in flight, median of {sys.argv[3]} rounds (policy at callee, JIT-compiled):")
print(f"{'policy':<12}{'calls/s':>10}{'vs none':>9}{'p50 us':>9}{'p99 us':>9}{'ns/call added':>15}")
for name in ["none", "noop", "acl", "field_acl", "rate_limit"]:
    rate = statistics.median(r[0] for r in by[name])
    p50 = statistics.median(r[1] for r in by[name])
    p99 = statistics.median(r[2] for r in by[name])
    added = (1e9 / rate - 1e9 / base)
    print(f"{name:<12}{rate:>10.0f}{rate / base:>9.2f}{p50:>9.1f}{p99:>9.1f}{added:>15.0f}")
PY
