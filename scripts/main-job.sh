#!/usr/bin/env bash
# The main job: installs what is missing, builds, then on this host starts mrpcd, the echo and
# nested server apps, runs the client apps against them and prints what happened. Everything it
# starts is stopped on exit.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${MRPC_BUILD_DIR:-$root/build}"
"$root/scripts/build.sh"

run_dir="$(mktemp -d /tmp/mrpc-main-job-XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run_dir"
}
trap cleanup EXIT
export MRPC_SOCKET="$run_dir/app.sock"

step() { printf '\n== %s\n' "$*"; }

# Two runtime threads (shards): the apps are placed on both, so calls cross between them.
step "starting mrpcd (app socket $MRPC_SOCKET, 2 runtime threads)"
"$build/daemon/mrpcd" --app-socket "$MRPC_SOCKET" --control-socket "$run_dir/control.sock" \
  --runtime-threads 2 >"$run_dir/mrpcd.log" 2>&1 &
pids+=($!)
# mrpcd makes the socket appear only once it accepts connections.
for _ in $(seq 1 1000); do [ -S "$MRPC_SOCKET" ] && break; sleep 0.01; done
[ -S "$MRPC_SOCKET" ] || { echo "mrpcd did not start:"; cat "$run_dir/mrpcd.log"; exit 1; }

step "starting the server apps"
"$build/examples/echo/echo_server" >"$run_dir/echo_server.log" 2>&1 &
pids+=($!)
"$build/examples/nested/nested_server" >"$run_dir/nested_server.log" 2>&1 &
pids+=($!)
for log in echo_server nested_server; do
  for _ in $(seq 1 1000); do grep -q serving "$run_dir/$log.log" && break; sleep 0.01; done
  cat "$run_dir/$log.log"
  grep -q serving "$run_dir/$log.log" || { echo "$log did not start"; exit 1; }
done

step "echo: 1,000 blocking calls (one in flight), 64 B payload"
"$build/examples/echo/echo_client" --calls 1000 --in-flight 1
step "echo: 100,000 calls, 64 in flight"
"$build/examples/echo/echo_client" --calls 100000 --in-flight 64
step "nested: a document with nested, repeated, oneof and map fields, there and back"
"$build/examples/nested/nested_client"

step "policies: the stdlib acl attached to the running daemon, then detached (mrpc-polc)"
polc=("$build/tools/mrpc-polc/mrpc-polc" --socket "$run_dir/control.sock")
# A client that keeps calling across the attach and the detach: its summary shows both effects.
"$build/examples/echo/echo_client" --calls 400000 --in-flight 16 >"$run_dir/client_during_policy.log" 2>&1 &
background_client=$!
sleep 0.2
"${polc[@]}" attach "$root/stdlib-policies/acl.mpol" 'deny_callers={"echo_client"}'
"${polc[@]}" list
echo "-- with the acl attached, 1,000 calls from echo_client (each should be PERMISSION_DENIED):"
"$build/examples/echo/echo_client" --calls 1000 --in-flight 16 || true
"${polc[@]}" show acl -j | python3 -c 'import json,sys; j=json.load(sys.stdin); print("acl state:", j["state"], "calls:", [(c["caller"], c["outcome"], c["count"]) for c in j["calls"]])'
echo "-- Prometheus text from the control socket (mrpc-polc metrics):"
"${polc[@]}" metrics | grep -v '^#'
"${polc[@]}" detach acl
echo "-- after the detach, 1,000 calls again (each should be answered):"
"$build/examples/echo/echo_client" --calls 1000 --in-flight 16
"${polc[@]}" list
wait "$background_client" || true
echo "-- the client that called through the attach and the detach:"
cat "$run_dir/client_during_policy.log"

step "what the daemon saw (control socket: stats)"
python3 - "$run_dir/control.sock" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1]); s.sendall(b"stats\n")
print(b"".join(iter(lambda: s.recv(65536), b"")).decode())
PY
step "daemon log"
cat "$run_dir/mrpcd.log"
