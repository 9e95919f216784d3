#!/usr/bin/env bash
# Per-RPC overhead of policies attached in a running mrpcd, end to end on the echo workload:
# echo_client calls/s and latency with no policy, then with each policy attached through
# mrpc-polc (a no-op, the stdlib acl that denies nobody, an acl on a string field of the request,
# the stdlib rate limit set high enough to never limit). Rounds alternate the configurations so
# load from other processes on the machine spreads over all of them.
# Usage: bench/policy_overhead.sh [CALLS] [ROUNDS]   (after building mrpcd, mrpc-polc, echo_*)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${MRPC_BUILD_DIR:-$root/build}"
calls=${1:-100000}
rounds=${2:-3}
run_dir="$(mktemp -d /tmp/mrpc-policy-bench-XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run_dir"
}
trap cleanup EXIT
export MRPC_SOCKET="$run_dir/app.sock"
"$build/daemon/mrpcd" --app-socket "$MRPC_SOCKET" --control-socket "$run_dir/control.sock" \
  --log-level warn >"$run_dir/mrpcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 1000); do [ -S "$MRPC_SOCKET" ] && break; sleep 0.01; done
"$build/examples/echo/echo_server" >"$run_dir/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 1000); do grep -q serving "$run_dir/server.log" && break; sleep 0.01; done
polc=("$build/tools/mrpc-polc/mrpc-polc" --socket "$run_dir/control.sock")

cat >"$run_dir/noop.mpol" <<'MPOL'
policy noop {
  applies to * at callee;
  on request { pass; }
}
MPOL
cat >"$run_dir/field_acl.mpol" <<'MPOL'
import proto "echo.proto";
policy field_acl {
  applies to echo.EchoService.Echo at callee;
  param deny: set<string> = {"secret", "classified"};
  on request {
    if req.text in deny { reject(PERMISSION_DENIED, "denied"); }
  }
}
MPOL
"${polc[@]}" load "$run_dir/noop.mpol" >/dev/null
"${polc[@]}" load "$root/stdlib-policies/acl.mpol" >/dev/null
"${polc[@]}" load "$run_dir/field_acl.mpol" -I "$root/examples/echo" >/dev/null
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
