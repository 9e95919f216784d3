#!/usr/bin/env bash
# Builds tests/package as an outside project and runs one call through a real mrpcd.
#   run_package_test.sh installed    <mrpc build dir> <mrpc source dir> <work dir>
#   run_package_test.sh subdirectory <mrpc build dir> <mrpc source dir> <work dir>
# installed: `cmake --install` of the build into <work dir>/prefix, then find_package(mrpc CONFIG).
# subdirectory: add_subdirectory(<mrpc source dir>) (the app-only configuration).
# Either way the project's compile and link lines must not mention antlr4, LLVM, doctest or
# CLI11, and its CMake cache must not have looked for them.
set -euo pipefail
mode=$1 build=$2 source=$3 work=$4
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work" && mkdir -p "$work"
cleanup() { [[ -n "${daemon_pid:-}" ]] && kill "$daemon_pid" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

configure=(cmake -S "$here" -B "$work/app" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
           -DCMAKE_EXPORT_COMPILE_COMMANDS=ON)
if [[ $mode == installed ]]; then
  cmake --install "$build" --prefix "$work/prefix" --component app >/dev/null
  cmake --install "$build" --prefix "$work/prefix" --component daemon >/dev/null
  configure+=(-DCMAKE_PREFIX_PATH="$work/prefix")
  mrpcd="$work/prefix/bin/mrpcd"
  # pkg-config sees the same library.
  libs=$(PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig" pkg-config --libs mrpc)
  [[ $libs == *-lmrpc* ]] || { echo "pkg-config --libs mrpc: '$libs'"; exit 1; }
elif [[ $mode == subdirectory ]]; then
  configure+=(-DMRPC_SOURCE_DIR="$source")
  mrpcd="$build/daemon/mrpcd"
else
  echo "unknown mode $mode"; exit 2
fi
"${configure[@]}" >"$work/configure.log" 2>&1 || { cat "$work/configure.log"; exit 1; }
nice -n 10 cmake --build "$work/app" -j1 >"$work/build.log" 2>&1 || { tail -50 "$work/build.log"; exit 1; }

# What the app's build used: compile lines, link lines, and the packages CMake looked for.
lines=$(cat "$work/app/compile_commands.json"
        grep -hE '^ +(LINK_LIBRARIES|LINK_FLAGS|INCLUDES|FLAGS|DEFINES) =' "$work/app/build.ninja")
if grep -Eio 'antlr|llvm|doctest|cli11' <<<"$lines" | sort -u | grep -q .; then
  echo "the app's build mentions a dependency it does not need:"
  grep -Eio '[^ ]*(antlr|llvm|doctest|cli11)[^ ]*' <<<"$lines" | sort -u | head
  exit 1
fi
if grep -Ei '^(antlr4|LLVM|doctest|CLI11)[-_a-z]*_DIR:' "$work/app/CMakeCache.txt"; then
  echo "the app's configuration looked for a dependency it does not need"; exit 1
fi

"$mrpcd" --app-socket "$work/app.sock" --control-socket "$work/control.sock" --log-level warn &
daemon_pid=$!
for _ in $(seq 100); do [[ -S "$work/app.sock" ]] && break; sleep 0.05; done
"$work/app/kv_app" "$work/app.sock"
