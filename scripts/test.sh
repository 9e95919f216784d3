#!/usr/bin/env bash
# The whole default test suite (what .ci/run runs). Installs what is missing, then three stages:
#   1. build/       the plain build: every test, the soaks included (issue 6's 1,000,000 abandoned
#                   and 10,000,000 finished calls: about 4 minutes on 2 cores).
#   2. build-asan/  every target under ASan+UBSan (-DMRPC_SANITIZE=address,undefined): the unit,
#                   daemon and integration tests of stage 1, except the .mpol front end's
#                   (tests/dsl, tests/compiler, tests/stdlib-policies: ANTLR-heavy, minutes under
#                   ASan, and not on the daemon's datapath; they run in stage 1).
#   3. build-tsan/  the tests labelled `multishard` (mrpc_add_test ... LABELS multishard) under
#                   TSan, building only their executables; skipped, saying so, while no test has
#                   that label.
# Every sanitizer finding fails the run: halt_on_error, UBSan without recovery, and each report
# (also one from a daemon or app process a test started) is written to <build>/sanitizer-logs/
# and printed at the end. Builds use ccache, so a rerun compiles only what changed.
#
#   scripts/test.sh -LE soak     arguments go to ctest of the plain build; sanitizer stages skipped
#   MRPC_SANITIZER_STAGES="asan" which sanitizer stages run (default "asan tsan"; "" for none)
#   MRPC_JOBS=N                  build and test jobs (default 2)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${MRPC_BUILD_DIR:-$root/build}"
jobs="${MRPC_JOBS:-2}"
stages="${MRPC_SANITIZER_STAGES-asan tsan}"
if [ $# -gt 0 ]; then
  stages=""
fi

started=$SECONDS
say() { echo "== test.sh [$((SECONDS - started))s]: $*"; }

# ---- 1. plain build ----
say "plain build in $build"
"$root/scripts/build.sh"
say "ctest $* (plain build)"
(cd "$build" && ctest --output-on-failure -j "$jobs" "$@")

# Builds the given targets in a sanitizer build folder, then runs ctest there with the given
# arguments; fails if any process wrote a sanitizer report.
sanitizer_stage() {
  local name="$1" dir="$2" sanitize="$3" targets="$4"
  shift 4
  say "$name: configure $dir (-DMRPC_SANITIZE=$sanitize)"
  cmake -S "$root" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_C_FLAGS_DEBUG="-g -O1" -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" \
    -DMRPC_SANITIZE="$sanitize" -DMRPC_BUILD_BENCH=OFF >/dev/null
  say "$name: build $targets"
  # shellcheck disable=SC2086
  cmake --build "$dir" -j "$jobs" --target $targets
  local logs="$dir/sanitizer-logs"
  rm -rf "$logs" && mkdir -p "$logs"
  say "$name: ctest $*"
  local status=0
  (cd "$dir" &&
    ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:log_path=$logs/asan" \
      UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$logs/ubsan" \
      TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:log_path=$logs/tsan" \
      ctest --output-on-failure -j "$jobs" "$@") || status=$?
  if compgen -G "$logs/*" >/dev/null; then
    for report in "$logs"/*; do
      echo "---- $name report: $report"
      cat "$report"
    done
    say "$name: FAILED, sanitizer reports above"
    return 1
  fi
  if [ $status -ne 0 ]; then
    say "$name: FAILED (ctest exit $status)"
    return $status
  fi
  say "$name: passed"
}

for stage in $stages; do
  case "$stage" in
    asan)
      # Soak executables are not built here: skip their placeholder tests too (*_NOT_BUILT*).
      sanitizer_stage asan "$root/build-asan" address,undefined mrpc_tests -LE soak -E _NOT_BUILT
      ;;
    tsan)
      # The plain build's configuration already knows which executables carry the label.
      if [ ! -s "$build/tests/labels/multishard.txt" ]; then
        say "tsan: skipped: no test is labelled multishard (mrpc_add_test ... LABELS multishard)"
        continue
      fi
      sanitizer_stage tsan "$root/build-tsan" thread mrpc_tests_multishard -L multishard
      ;;
    *)
      echo "test.sh: unknown sanitizer stage '$stage' (MRPC_SANITIZER_STAGES: asan, tsan)" >&2
      exit 2
      ;;
  esac
done
say "all stages passed"
