# Sourced by bench/'s scripts (not run on its own): the set-up they share. Sourcing sets $root
# (the repository) and $build (MRPC_BUILD_DIR, default build/), then offers:
#   bench_init NAME          $run_dir, a new folder /tmp/NAME-XXXXXX, and the array $pids; on
#                            exit every pid in $pids is killed and waited for, and the folder goes
#   start_mrpcd DIR ARGS...  mrpcd with DIR/app.sock and DIR/control.sock (DIR is created),
#                            --log-level warn and ARGS, logging to DIR/mrpcd.log; run under the
#                            command in the array $mrpcd_wrapper when set (valgrind). Its pid is
#                            $mrpcd_pid (also in $pids); returns once its app socket exists
#   start_echo_server LOG ARGS...  echo_server on $MRPC_SOCKET with ARGS, logging to LOG; its pid
#                            is $server_pid (also in $pids); returns once it serves, fails if it
#                            exits or takes longer than 30 s
#   start_echo_server_patiently LOG  the same for a daemon under valgrind: there the daemon
#                            compiles the echo schema's codecs slower than an app waits for its
#                            RegisterService answer (limits::kAppControlReplyTimeout), so the
#                            server is started again until it serves, then the daemon's codec
#                            tier-up is waited for (it answers apps slowly until then)
#   control SOCKET COMMAND   the daemon's answer to a control command (`stats`: JSON) on stdout
#   attach_bench_policy DIR NAME  attaches one of the benches' policies at callee to the daemon
#                            started in DIR: none (nothing), noop, acl (stdlib, denies nobody),
#                            field_acl (reads req.text), rate_limit (stdlib, never limits)
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${MRPC_BUILD_DIR:-$root/build}"
[[ -v mrpcd_wrapper ]] || mrpcd_wrapper=()

bench_init() {
  run_dir=$(mktemp -d "/tmp/$1-XXXXXX")
  pids=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run_dir"
}

start_mrpcd() {
  local dir=$1
  shift
  mkdir -p "$dir"
  "${mrpcd_wrapper[@]}" "$build/daemon/mrpcd" --app-socket "$dir/app.sock" \
    --control-socket "$dir/control.sock" --log-level warn "$@" >"$dir/mrpcd.log" 2>&1 &
  mrpcd_pid=$!
  pids+=("$mrpcd_pid")
  # 60 s: under valgrind the daemon takes seconds to start.
  for _ in $(seq 1 6000); do
    [ -S "$dir/app.sock" ] && return 0
    kill -0 "$mrpcd_pid" 2>/dev/null || break
    sleep 0.01
  done
  echo "mrpcd did not start listening on $dir/app.sock:" >&2
  cat "$dir/mrpcd.log" >&2
  return 1
}

# Waits until LOG says the server (pid $server_pid) serves; fails if it exits or after 30 s.
wait_serving() {
  for _ in $(seq 1 3000); do
    grep -q serving "$1" && return 0
    kill -0 "$server_pid" 2>/dev/null || return 1
    sleep 0.01
  done
  return 1
}

start_echo_server() {
  local log=$1
  shift
  "$build/examples/echo/echo_server" "$@" >"$log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  wait_serving "$log" || { echo "echo_server did not serve: $(cat "$log")" >&2; return 1; }
}

start_echo_server_patiently() {
  local log=$1 attempt
  for attempt in 1 2 3 4 5; do
    "$build/examples/echo/echo_server" >"$log" 2>&1 &
    server_pid=$!
    pids+=("$server_pid")
    wait_serving "$log" || true
    codecs_settled "$(dirname "$MRPC_SOCKET")/control.sock"
    grep -q serving "$log" && return 0
    echo "echo_server attempt $attempt: $(cat "$log")" >&2
  done
  echo "echo_server never served" >&2
  return 1
}

control() {
  python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
sys.stdout.write(b"".join(iter(lambda: s.recv(65536), b"")).decode())
PY
}

# Returns once the daemon at control SOCKET has tiered its codecs up and has no compile or
# registration pending; fails after 300 s.
codecs_settled() {
  python3 - "$1" <<'PY'
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

attach_bench_policy() {
  local polc=("$build/tools/mrpc-polc/mrpc-polc" --socket "$1/control.sock")
  case $2 in
    none) ;;
    noop) "${polc[@]}" attach "$root/bench/policies/noop.mpol" >/dev/null ;;
    acl) "${polc[@]}" attach "$root/stdlib-policies/acl.mpol" >/dev/null ;;
    field_acl)
      "${polc[@]}" attach "$root/bench/policies/field_acl.mpol" -I "$root/examples/echo" >/dev/null
      ;;
    rate_limit)
      "${polc[@]}" attach "$root/stdlib-policies/rate_limit.mpol" rate=1e12 burst=1e12 >/dev/null
      ;;
    *)
      echo "unknown bench policy '$2' (none, noop, acl, field_acl, rate_limit)" >&2
      return 1
      ;;
  esac
}
