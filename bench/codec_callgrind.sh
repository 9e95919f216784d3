#!/usr/bin/env bash
# Instructions per message of the compiled codecs (optimized tier) and of protoc-generated C++,
# counted by callgrind inside codec_bench's measured_loop: stable on a loaded machine, unlike time.
#   bench/codec_callgrind.sh [build-dir]      (needs valgrind)
set -euo pipefail
build=${1:-build}
bench=$build/bench/codec_bench
out=$(mktemp -d /tmp/codec-callgrind-XXXXXX)
trap 'rm -rf "$out"' EXIT
printf '%-6s %-14s %14s %14s %10s\n' row op "JIT instr" "protoc instr" "protoc/JIT"
for row in small hotel blob; do
  runs=2000
  [ "$row" = blob ] && runs=20
  for op in encode decode; do
    declare -A ir
    for impl in jit protoc; do
      valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/$impl.out" \
        --toggle-collect='*measured_loop*' "$bench" --count "$impl-$op" "$row" "$runs" \
        >"$out/$impl.log" 2>&1 || { cat "$out/$impl.log"; exit 1; }
      total=$(grep -E '^(summary|totals):' "$out/$impl.out" | head -1 | awk '{print $2}')
      ir[$impl]=$((total / runs))
    done
    printf '%-6s %-14s %14d %14d %10.2f\n' "$row" "$op" "${ir[jit]}" "${ir[protoc]}" \
      "$(echo "${ir[protoc]} / ${ir[jit]}" | bc -l)"
  done
done
