#!/usr/bin/env bash
# Time to load (check + IR + verify + build the runner, measured inside mrpcd: compile_ms) and to
# splice (attach, upgrade, detach through the control socket, measured by the client: from the
# request to the answer, which comes once every graph has switched) each stdlib policy, in a
# running mrpcd with an echo server and a client connected. Median of ROUNDS.
# Usage: bench/policy_splice_times.sh [ROUNDS]   (after building mrpcd and echo_server)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rounds=${1:-5}
bench_init mrpc-splice-bench
export MRPC_SOCKET="$run_dir/app.sock"
start_mrpcd "$run_dir"
start_echo_server "$run_dir/server.log"
python3 - "$run_dir/control.sock" "$root" "$rounds" <<'PY'
import json, os, socket, statistics, sys, time
path, root, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
def call(verb, args):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    start = time.perf_counter()
    s.sendall((verb + " " + json.dumps(args) + "\n").encode())
    data = b"".join(iter(lambda: s.recv(65536), b""))
    elapsed = (time.perf_counter() - start) * 1000
    reply = json.loads(data)
    assert reply["ok"], reply
    return reply, elapsed
protos = [os.path.join(root, "examples/protos")]
print(f"{'policy':<34}{'load ms (in mrpcd)':>19}{'attach ms':>11}{'upgrade ms':>12}{'detach ms':>11}")
stdlib = os.path.join(root, "stdlib-policies")
for name in sorted(os.listdir(stdlib)):
    if not name.endswith(".mpol") or name == "marshalling.mpol":
        continue
    source = open(os.path.join(stdlib, name)).read()
    times = {"load": [], "attach": [], "upgrade": [], "detach": []}
    for r in range(rounds):
        reply, _ = call("load", {"source": source + f"\n// round {r}\n",
                                  "path": os.path.join(stdlib, name), "proto_paths": protos})
        times["load"].append(reply["compile_ms"])
        policy = reply["policies"][0]["name"]
        _, t = call("attach", {"policy": policy}); times["attach"].append(t)
        _, t = call("upgrade", {"name": policy}); times["upgrade"].append(t)
        _, t = call("detach", {"name": policy}); times["detach"].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{name:<34}{med['load']:>19.2f}{med['attach']:>11.2f}{med['upgrade']:>12.2f}{med['detach']:>11.2f}")
PY
