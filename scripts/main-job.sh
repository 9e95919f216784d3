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
namespaces=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
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

step "across hosts: a second daemon as host B (echo server behind it), calls from host A over TCP"
# Host A: a daemon whose configuration sends echo.EchoService to host B (no local echo server);
# host B: a daemon in a network namespace joined to A's by a veth pair where the machine allows
# it (root, ip netns), else on 127.0.0.2 (docs/tcp-transport.md).
a_dir="$run_dir/host-a"; b_dir="$run_dir/host-b"; mkdir -p "$a_dir" "$b_dir"
b_prefix=(); a_prefix=()
if [ "$(id -u)" -eq 0 ] && ip netns add "mrpc-main-a-$$" 2>/dev/null; then
  namespaces+=("mrpc-main-a-$$")
  ip netns add "mrpc-main-b-$$"; namespaces+=("mrpc-main-b-$$")
  ip link add "mja$$" type veth peer name "mjb$$"
  ip link set "mja$$" netns "mrpc-main-a-$$"; ip link set "mjb$$" netns "mrpc-main-b-$$"
  ip -n "mrpc-main-a-$$" addr add 10.78.0.1/24 dev "mja$$"; ip -n "mrpc-main-a-$$" link set "mja$$" up
  ip -n "mrpc-main-b-$$" addr add 10.78.0.2/24 dev "mjb$$"; ip -n "mrpc-main-b-$$" link set "mjb$$" up
  a_ip=10.78.0.1; b_ip=10.78.0.2; port=7100
  a_prefix=(ip netns exec "mrpc-main-a-$$"); b_prefix=(ip netns exec "mrpc-main-b-$$")
  echo "two network namespaces joined by a veth pair: host A $a_ip, host B $b_ip"
else
  a_ip=127.0.0.1; b_ip=127.0.0.2
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.2", 0)); print(s.getsockname()[1])')
  echo "no network namespaces here: host A on $a_ip, host B on $b_ip (port $port)"
fi
printf 'host = "host-b"\nlisten = "%s:%s"\n' "$b_ip" "$port" >"$b_dir/mrpcd.toml"
printf 'host = "host-a"\nlisten = "%s:%s"\n[remote."echo.EchoService"]\nendpoints = ["%s:%s"]\n' \
  "$a_ip" "$port" "$b_ip" "$port" >"$a_dir/mrpcd.toml"
"$build/daemon/mrpcd" --validate -c "$a_dir/mrpcd.toml"
for host in b a; do
  dir="$run_dir/host-$host"
  if [ "$host" = b ]; then prefix=("${b_prefix[@]}"); else prefix=("${a_prefix[@]}"); fi
  "${prefix[@]}" "$build/daemon/mrpcd" -c "$dir/mrpcd.toml" --app-socket "$dir/app.sock" \
    --control-socket "$dir/control.sock" --runtime-threads 2 >"$dir/mrpcd.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 1000); do [ -S "$dir/app.sock" ] && break; sleep 0.01; done
  [ -S "$dir/app.sock" ] || { echo "mrpcd (host $host) did not start:"; cat "$dir/mrpcd.log"; exit 1; }
done
MRPC_SOCKET="$b_dir/app.sock" "$build/examples/echo/echo_server" >"$b_dir/echo_server.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 1000); do grep -q serving "$b_dir/echo_server.log" && break; sleep 0.01; done
echo "-- echo_client at host A, 1,000 blocking calls answered by the server behind host B:"
MRPC_SOCKET="$a_dir/app.sock" "$build/examples/echo/echo_client" --calls 1000 --in-flight 1
echo "-- 20,000 calls, 64 in flight, across the hosts:"
MRPC_SOCKET="$a_dir/app.sock" "$build/examples/echo/echo_client" --calls 20000 --in-flight 64
for host in a b; do
  echo "-- host $host's daemon, stats.tcp:"
  python3 - "$run_dir/host-$host/control.sock" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1]); s.sendall(b"stats\n")
print(json.loads(b"".join(iter(lambda: s.recv(65536), b"")).decode())["tcp"])
PY
done
grep "tcp:" "$a_dir/mrpcd.log" "$b_dir/mrpcd.log" || true

step "what the daemon saw (control socket: stats)"
python3 - "$run_dir/control.sock" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1]); s.sendall(b"stats\n")
print(b"".join(iter(lambda: s.recv(65536), b"")).decode())
PY
step "daemon log"
cat "$run_dir/mrpcd.log"
