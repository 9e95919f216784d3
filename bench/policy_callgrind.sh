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
source "$(dirname "$0")/lib.sh"
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
bench_init splice-cg
export MRPC_SOCKET=$run_dir/app.sock
mrpcd_wrapper=(valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$run_dir/cg.out"
  --toggle-collect="${TOGGLE:-mrpc::PolicyOperator::on_*}")
start_mrpcd "$run_dir" --spin-budget-us 0
dpid=$mrpcd_pid
start_echo_server_patiently "$run_dir/server.log"
attach_bench_policy "$run_dir" "$policy"
summary=$($build/examples/echo/echo_client --calls $calls --in-flight ${IN_FLIGHT:-16} | head -1)
echo "$summary" >&2
grep -q " 0 errors" <<<"$summary" || { echo "calls failed: $summary" >&2; exit 1; }
# SIGTERM lets callgrind write its counts before the cleanup's kill.
kill "$server_pid"; sleep 0.2; kill -TERM "$dpid"; wait "$dpid" || true
grep -E "^(summary|totals):" $run_dir/cg.out
if [[ -n "${KEEP_CALLGRIND:-}" ]]; then cp $run_dir/cg.out "$KEEP_CALLGRIND"; fi
