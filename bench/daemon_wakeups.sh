#!/usr/bin/env bash
# Where one call at one in flight costs the daemon: mrpcd (as a process, spin budget SPIN us,
# default 0) and echo_server run, echo_client makes CALLS calls (default 20000) with one in flight
# after a warm-up, and this prints per call:
#   - the daemon's own counters (stats over the control socket): runtime sleeps (= wake-ups),
#     rounds, epoll_wait calls, timerfd arms, and the TCP transport's syscalls when it has links;
#   - CPU (utime + stime from /proc) of the daemon(s), the server and the client;
#   - with STRACE=1 (one more pass per daemon, slower), each daemon's syscalls by name
#     (strace -c -f -p: counts, not times).
# TWO_HOSTS=1: two daemons on 127.0.0.1 (the caller's, "a") and 127.0.0.2 (the server's, "b",
# behind TCP; the caller's daemon has the service in its remote table): the call crosses both.
# Usage: SPIN=0 CALLS=20000 STRACE=1 TWO_HOSTS=0 bench/daemon_wakeups.sh
# MRPC_BUILD_DIR: an existing build folder (default build/) with mrpcd, echo_server, echo_client.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
spin=${SPIN:-0}
calls=${CALLS:-20000}
two_hosts=${TWO_HOSTS:-0}
bench_init mrpc-wakeups
declare -A dpid
start_daemon() {  # name, extra args...
  start_mrpcd "$run_dir/$1" --spin-budget-us "$spin" "${@:2}"
  dpid[$1]=$mrpcd_pid
}
port=$((20000 + ($$ * 7) % 30000))
if [[ "$two_hosts" == 1 ]]; then
  start_daemon b --tcp-listen "127.0.0.2:$port" --host-name b
  cat >"$run_dir/a.toml" <<T
host = "a"
[remote."echo.EchoService"]
endpoints = ["127.0.0.2:$port"]
T
  start_daemon a -c "$run_dir/a.toml"
  daemons=(a b)
  server_socket=$run_dir/b/app.sock
else
  start_daemon a
  daemons=(a)
  server_socket=$run_dir/a/app.sock
fi
MRPC_SOCKET=$server_socket start_echo_server "$run_dir/server.log"
spid=$server_pid
export MRPC_SOCKET=$run_dir/a/app.sock
for _ in $(seq 1 3000); do
  "$build/examples/echo/echo_client" --calls 1 >/dev/null 2>&1 && break
  sleep 0.01
done
# Warm-up: codecs tiered up, the schema handshake done, pools and tables at their steady size.
"$build/examples/echo/echo_client" --calls 5000 --in-flight 1 >/dev/null

stats() {  # daemon name
  control "$run_dir/$1/control.sock" stats
}
cpu_ticks() {  # utime + stime of a process, in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}
user_ticks() {  # utime alone
  awk '{print $14}' "/proc/$1/stat"
}
declare -A u0 u1
declare -A before after c0 c1
for d in "${daemons[@]}"; do
  before[$d]=$(stats "$d")
  c0[$d]=$(cpu_ticks "${dpid[$d]}")
  u0[$d]=$(user_ticks "${dpid[$d]}")
done
s0=$(cpu_ticks "$spid")
start=$(date +%s.%N)
/usr/bin/time -f "%U %S" -o "$run_dir/client.time" \
  "$build/examples/echo/echo_client" --calls "$calls" --in-flight 1 >"$run_dir/client.out"
end=$(date +%s.%N)
for d in "${daemons[@]}"; do
  after[$d]=$(stats "$d")
  c1[$d]=$(cpu_ticks "${dpid[$d]}")
  u1[$d]=$(user_ticks "${dpid[$d]}")
done
s1=$(cpu_ticks "$spid")
hz=$(getconf CLK_TCK)
head -1 "$run_dir/client.out"
cu_cs=$(tail -1 "$run_dir/client.time")
awk -v n="$calls" -v t="$(echo "$end - $start" | bc)" -v spin="$spin" -v hz="$hz" \
  -v s="$((s1 - s0))" -v c="$cu_cs" 'BEGIN {
    split(c, cc, " ");
    printf "spin %s us, %d calls at 1 in flight: %.1f us per call (wall); CPU us per call: server %.2f, client %.2f\n",
      spin, n, 1e6 * t / n, 1e6 * s / hz / n, 1e6 * (cc[1] + cc[2]) / n }'
for d in "${daemons[@]}"; do
  python3 - "$d" "$calls" "$hz" "${c0[$d]}" "${c1[$d]}" "${before[$d]}" "${after[$d]}" \
    "$((u1[$d] - u0[$d]))" <<'PY'
import json, sys
name, calls, hz, t0, t1 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
before, after = json.loads(sys.argv[6]), json.loads(sys.argv[7])
user = int(sys.argv[8])
out = [f"daemon {name}: CPU {1e6 * (t1 - t0) / hz / calls:.2f} us per call "
       f"(user {1e6 * user / hz / calls:.2f})"]
for key in ("runtime_sleeps", "runtime_rounds", "runtime_event_checks", "runtime_timer_arms"):
    if key in after:
        out.append(f"{key.removeprefix('runtime_')} {(after[key] - before[key]) / calls:.3f}")
tcp_a, tcp_b = after.get("tcp", {}), before.get("tcp", {})
for key in ("send_syscalls", "recv_syscalls"):
    if key in tcp_a:
        out.append(f"tcp.{key} {(tcp_a[key] - tcp_b.get(key, 0)) / calls:.3f}")
print("; ".join(out) + " (per call)")
PY
done

if [[ "${STRACE:-0}" == 1 ]]; then
  for d in "${daemons[@]}"; do
    strace -c -f -p "${dpid[$d]}" -o "$run_dir/strace.$d" 2>/dev/null &
    tpid=$!
    sleep 1
    "$build/examples/echo/echo_client" --calls "$calls" --in-flight 1 >/dev/null
    kill -INT "$tpid"
    wait "$tpid" 2>/dev/null || true
    echo "daemon $d syscalls per call (strace -c -f -p over $calls calls):"
    awk -v n="$calls" '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" {
        printf "  %-16s %.3f\n", $NF, $4 / n; sum += $4 }
      END { printf "  %-16s %.3f\n", "total", sum / n }' "$run_dir/strace.$d"
  done
fi
