#!/usr/bin/env bash
# mrpc-polc's command line: exit codes (0 ok, 1 errors in input), text and JSON diagnostics,
# warnings (exit 0, or 1 under --warnings-as-errors), `fmt` output that is a fixed point,
# several files per run.
# Usage: polc_cli_test.sh MRPC_POLC SOURCE_DIR
set -euo pipefail
polc=$1
src=$2
protos=(--proto-path "$src/examples/protos" --proto-path "$src/tests/dsl/protos")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$polc" check "$src/tests/dsl/cases/valid/for_loops.mpol" "${protos[@]}" || fail "valid file: exit $?"

set +e
"$polc" check "$src/tests/dsl/cases/errors/unknown_field_did_you_mean.mpol" "${protos[@]}" 2> "$work/err.txt"
code=$?
set -e
[[ $code -eq 1 ]] || fail "wrong file: exit $code, want 1"
grep -q "unknown_field_did_you_mean.mpol:6:12: error: no field 'customer_nam' in message 'hotel.ReservationRequest'" "$work/err.txt" || fail "text diagnostic"
grep -q "^             ^~~~~~~~~~~~$" "$work/err.txt" || fail "caret line"
grep -q "help: did you mean 'customer_name'?" "$work/err.txt" || fail "help line"

set +e
"$polc" check --json "$src/tests/dsl/cases/errors/unknown_name.mpol" "$src/tests/dsl/cases/errors/unknown_type.mpol" > "$work/out.json"
code=$?
set -e
[[ $code -eq 1 ]] || fail "json: exit $code"
python3 - "$work/out.json" <<'PY' || fail "json content"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["error_count"] == 2, j
assert [d["line"] for d in j["diagnostics"]] == [5, 3], j
PY

unreachable="$src/tests/dsl/cases/errors/unreachable_after_reject.mpol"
"$polc" check "$unreachable" 2> "$work/warn.txt" || fail "warnings only: exit $?, want 0"
grep -q "unreachable_after_reject.mpol:6:7: warning: unreachable statement" "$work/warn.txt" || fail "warning text"
grep -q "^2 warnings generated.$" "$work/warn.txt" || fail "warning count"
"$polc" check --json "$unreachable" > "$work/warn.json" || fail "json warnings: exit $?"
python3 - "$work/warn.json" <<'PY' || fail "json warnings content"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["error_count"] == 0 and j["warning_count"] == 2, j
assert [d["severity"] for d in j["diagnostics"]] == ["warning", "warning"], j
PY
set +e
"$polc" check --warnings-as-errors "$unreachable" 2> "$work/werror.txt"
code=$?
set -e
[[ $code -eq 1 ]] || fail "--warnings-as-errors: exit $code, want 1"
grep -q "unreachable_after_reject.mpol:6:7: error: unreachable statement" "$work/werror.txt" || fail "warning as error text"
grep -q "^2 errors generated.$" "$work/werror.txt" || fail "warning as error count"

set +e
"$polc" check "$work/missing.mpol" 2> /dev/null
code=$?
set -e
[[ $code -eq 1 ]] || fail "missing file: exit $code"

"$polc" fmt "$src/stdlib-policies/rate_limit.mpol" > "$work/once.mpol"
"$polc" fmt "$work/once.mpol" > "$work/twice.mpol"
cmp "$work/once.mpol" "$work/twice.mpol" || fail "fmt is not a fixed point"
# build --emit=ir: the golden dump on stdout; a verifier error exits 1; --emit=llvm prints each
# policy's module (its handler functions), --emit=asm the host's assembly.
"$polc" build "$src/tests/compiler/ir/wildcard_offsets.mpol" -I "$src/tests/dsl/protos" --emit=ir \
  > "$work/ir.txt" || fail "build --emit=ir: exit $?"
cmp "$work/ir.txt" "$src/tests/compiler/ir/wildcard_offsets.ir" || fail "build --emit=ir output"
set +e
"$polc" build "$src/tests/compiler/verify/nested_range_loops.mpol" 2> "$work/verify.txt" > /dev/null
code=$?
"$polc" build "$src/tests/compiler/ir/rpc_context.mpol" --emit=llvm 2> /dev/null > "$work/llvm.txt"
llvm_code=$?
"$polc" build "$src/tests/compiler/ir/rpc_context.mpol" --emit=asm 2> /dev/null > "$work/asm.txt"
asm_code=$?
set -e
[[ $code -eq 1 ]] || fail "verifier error: exit $code, want 1"
grep -q "nested_range_loops.mpol:6:5: error: .*(limits::kMaxHandlerWork)" "$work/verify.txt" || fail "verifier error text"
[[ $llvm_code -eq 0 ]] || fail "--emit=llvm: exit $llvm_code"
grep -q "^define void @mpol_[0-9a-f]*_h0(ptr" "$work/llvm.txt" || fail "--emit=llvm: no handler function"
[[ $asm_code -eq 0 ]] || fail "--emit=asm: exit $asm_code"
grep -q "^mpol_[0-9a-f]*_h0:" "$work/asm.txt" || fail "--emit=asm: no handler label"
echo "ok"
