#!/usr/bin/env bash
# mrpc-polc against a real mrpcd process: load, attach (a file, with params), list, show, upgrade,
# metrics, detach; --dry-run; -j/--json; exit codes 0 ok, 1 user error (bad file, no such policy,
# no daemon at --socket).
# Usage: polc_daemon_cli_test.sh MRPCD MRPC_POLC SOURCE_DIR
set -euo pipefail
mrpcd=$1
polc=$2
src=$3
work=$(mktemp -d)
daemon_pid=
cleanup() {
  if [[ -n "$daemon_pid" ]]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; echo "--- mrpcd log:" >&2; cat "$work/mrpcd.log" >&2 || true; exit 1; }

"$mrpcd" --app-socket "$work/app.sock" --control-socket "$work/control.sock" > "$work/mrpcd.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 200); do [[ -S "$work/control.sock" ]] && break; sleep 0.05; done
[[ -S "$work/control.sock" ]] || fail "mrpcd did not start"
s=(--socket "$work/control.sock")
acl="$src/stdlib-policies/acl.mpol"

expect() {  # expect CODE command...: runs it, output in $work/out and $work/err
  local want=$1; shift
  set +e; "$@" > "$work/out" 2> "$work/err"; local code=$?; set -e
  [[ $code -eq $want ]] || fail "exit $code, want $want: $* (stdout: $(cat "$work/out"); stderr: $(cat "$work/err"))"
}

expect 0 "$polc" list "${s[@]}"
grep -q "(none)" "$work/out" || fail "empty list"

expect 0 "$polc" load "$acl" --dry-run "${s[@]}"
grep -q "checked (dry run)" "$work/out" || fail "dry-run load text"
expect 0 "$polc" list -j "${s[@]}"
python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["loaded"]==[], j' "$work/out" || fail "a dry-run load kept something"

expect 0 "$polc" load "$acl" "${s[@]}"
grep -qE "^hash [0-9a-f]{64}$" "$work/out" || fail "load prints the hash"
hash=$(sed -n 's/^hash //p' "$work/out")

expect 0 "$polc" attach "$acl" 'deny_callers={"intruder","mallory"}' --first -j "${s[@]}"
python3 - "$work/out" "$hash" <<'PY' || fail "attach json"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["ok"] and j["name"] == "acl" and j["hash"] == sys.argv[2] and j["side"] == "ingress", j
assert j["generation"] == 1, j
PY
expect 0 "$polc" list "${s[@]}"
grep -qE "^  acl  policy acl  ingress first  v1  hash ${hash:0:12}$" "$work/out" || fail "list text: $(cat "$work/out")"
expect 0 "$polc" show acl -j "${s[@]}"
python3 - "$work/out" <<'PY' || fail "show json"
import json, sys
j = json.load(open(sys.argv[1]))
assert sorted(j["params"]["deny_callers"]) == ["intruder", "mallory"], j
assert j["state"]["denied"] == "0", j
PY

expect 1 "$polc" attach acl "${s[@]}"
grep -q "ALREADY_EXISTS" "$work/err" || fail "attaching twice"
expect 1 "$polc" attach nope "${s[@]}"
grep -q "NOT_FOUND" "$work/err" || fail "unknown policy"
expect 1 "$polc" attach acl --as acl2 deny_callers=3 "${s[@]}"
grep -q "param 'deny_callers': expected a JSON array" "$work/err" || fail "bad param: $(cat "$work/err")"
printf 'policy broken {\n  applies to * at callee;\n  on request { reject(PERMISSION_DENIED, 1); }\n}\n' > "$work/broken.mpol"
expect 1 "$polc" load "$work/broken.mpol" "${s[@]}"
grep -q "broken.mpol:3" "$work/err" || fail "diagnostics of a bad file: $(cat "$work/err")"
expect 1 "$polc" load "$work/missing.mpol" "${s[@]}"

expect 0 "$polc" upgrade acl "$acl" -p 'deny_callers=["eve"]' "${s[@]}"
grep -q "generation 2" "$work/out" || fail "upgrade text: $(cat "$work/out")"
expect 0 "$polc" metrics "${s[@]}"
grep -q "^mrpc_policy_generation 2$" "$work/out" || fail "metrics"
grep -q '^mrpc_policy_counter{policy="acl",state="denied"} 0$' "$work/out" || fail "metrics counter"

expect 0 "$polc" detach acl "${s[@]}"
expect 1 "$polc" detach acl "${s[@]}"
grep -q "NOT_FOUND" "$work/err" || fail "detaching twice"
expect 1 "$polc" list --socket "$work/nobody.sock"
grep -q "cannot reach mrpcd's control socket" "$work/err" || fail "no daemon"
grep -q "policy 'acl' (acl of .*acl.mpol, hash $hash) attached" "$work/mrpcd.log" || fail "attach logged with hash"
echo "ok"
