#!/usr/bin/env bash
# Instructions per call a policy costs in mrpcd (callgrind, so the figures do not depend on the
# machine's load): mrpcd runs under callgrind counting only inside the function TOGGLE names
# (default: the policy operator's on_requests/on_replies, evaluator included; TOGGLE=
# 'mrpc::compiler::PolicyInstance::run*' counts the evaluator alone), while echo_client makes
# CALLS calls with POLICY attached at callee (none, noop, acl, field_acl, rate_limit).
# Prints callgrind's total. Per call: run it for CALLS and 2*CALLS and divide the difference by
# CALLS (bench/policy_callgrind.sh all does that for every policy).
# Usage: bench/policy_callgrind.sh POLICY CALLS | bench/policy_callgrind.sh all [CALLS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${MRPC_BUILD_DIR:-$root/build}"
if [[ "${1:-all}" == all ]]; then
  n=${2:-2000}
  for p in noop acl field_acl rate_limit; do
    a=$("$0" $p $n | sed -n 's/^totals: //p')
    b=$("$0" $p $((2 * n)) | sed -n 's/^totals: //p')
    echo "$p: $(( (b - a) / n )) instructions per call (${TOGGLE:-mrpc::PolicyOperator::on_*})"
  done
  exit 0
fi
policy=$1; calls=$2
run_dir=$(mktemp -d /tmp/splice-cg-XXXXXX)
export MRPC_SOCKET=$run_dir/app.sock
valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file=$run_dir/cg.out --toggle-collect="${TOGGLE:-mrpc::PolicyOperator::on_*}" \
  $build/daemon/mrpcd --app-socket $MRPC_SOCKET --control-socket $run_dir/control.sock --spin-budget-us 0 --log-level warn > $run_dir/mrpcd.log 2>&1 &
dpid=$!
for _ in $(seq 1 3000); do [ -S "$MRPC_SOCKET" ] && break; sleep 0.01; done
# Under valgrind the daemon compiles the echo schema's codecs in about 8 s, past the time an app
# waits for its RegisterService answer (limits::kAppControlReplyTimeout): the first echo_server
# gives up ("mrpcd did not answer RegisterService in time") and every call then failed
# UNAVAILABLE. The daemon finishes the compile anyway and keeps the codecs, so a second
# echo_server registers at once: start it again until it serves.
wait_codecs_settled() {
  python3 - "$run_dir/control.sock" <<'PY'
import json, socket, sys, time
def find(o, key):
    if isinstance(o, dict):
        if key in o: return o[key]
        for v in o.values():
            r = find(v, key)
            if r is not None: return r
    return None
deadline = time.time() + 300
while time.time() < deadline:
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(sys.argv[1])
        s.sendall(b"stats\n")
        stats = json.loads(b"".join(iter(lambda: s.recv(65536), b"")))
        if find(stats, "tier_ups") and not find(stats, "tier_ups_pending") \
                and not find(stats, "registrations_pending"):
            sys.exit(0)
    except (OSError, ValueError):
        pass
    time.sleep(1)
sys.exit("the daemon's codec compiles did not settle in 300 s")
PY
}
spid=
for attempt in 1 2 3 4 5; do
  $build/examples/echo/echo_server > $run_dir/server.log 2>&1 &
  spid=$!
  for _ in $(seq 1 3000); do
    grep -q serving $run_dir/server.log && break
    kill -0 $spid 2>/dev/null || break
    sleep 0.01
  done
  # The daemon then compiles the optimized tier of those codecs (16 s under valgrind here),
  # during which it answers apps too slowly: wait until its stats say the tier-up is done.
  wait_codecs_settled
  grep -q serving $run_dir/server.log && break
  echo "echo_server attempt $attempt: $(cat $run_dir/server.log)" >&2
done
grep -q serving $run_dir/server.log || { echo "echo_server never served" >&2; exit 1; }
polc=($build/tools/mrpc-polc/mrpc-polc --socket $run_dir/control.sock)
cat > $run_dir/noop.mpol <<'M'
policy noop {
  applies to * at callee;
  on request { pass; }
}
M
cat > $run_dir/field_acl.mpol <<'M'
import proto "echo.proto";
policy field_acl {
  applies to echo.EchoService.Echo at callee;
  param deny: set<string> = {"secret", "classified"};
  on request {
    if req.text in deny { reject(PERMISSION_DENIED, "denied"); }
  }
}
M
case $policy in
  none) ;;
  noop) "${polc[@]}" attach $run_dir/noop.mpol > /dev/null ;;
  acl) "${polc[@]}" attach $root/stdlib-policies/acl.mpol > /dev/null ;;
  field_acl) "${polc[@]}" attach $run_dir/field_acl.mpol -I $root/examples/echo > /dev/null ;;
  rate_limit) "${polc[@]}" attach $root/stdlib-policies/rate_limit.mpol rate=1e12 burst=1e12 > /dev/null ;;
esac
summary=$($build/examples/echo/echo_client --calls $calls --in-flight 16 | head -1)
echo "$summary" >&2
grep -q " 0 errors" <<<"$summary" || { echo "calls failed: $summary" >&2; kill $spid; kill -TERM $dpid; exit 1; }
kill $spid; sleep 0.2; kill -TERM $dpid; wait $dpid || true
grep -E "^(summary|totals):" $run_dir/cg.out
[[ -n "${KEEP_CALLGRIND:-}" ]] && cp $run_dir/cg.out "$KEEP_CALLGRIND"
rm -rf $run_dir
