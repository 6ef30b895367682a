#!/usr/bin/env bash
# Control-plane load test: one real manager (`shoal daemon` + `cluster init`, drained so that
# no task runs on it) and NODES simulated nodes from `shoal-loadtest` (real joins, real agents,
# mutual TLS to the dispatcher; tasks "run" at once). Times:
#   join      all NODES nodes ready in `node ls`
#   create    `service create --replicas TASKS` until the nodes run TASKS tasks
#   update    a rolling update of every task (`--update-parallelism TASKS`: all at once)
#   scale     down to TASKS/2 and back up
# and prints the manager's CPU seconds and RSS after each phase, and its raft.redb size.
# Usage: scripts/bench-scale.sh [NODES] [TASKS]      (default 100 nodes, 1000 tasks)
# Env: BUILD=0 uses the binaries in target/release; TIMEOUT (seconds per phase, default 600).
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${1:-100}
TASKS=${2:-1000}
TIMEOUT=${TIMEOUT:-600}
if [ "${BUILD:-1}" = 1 ]; then
    cargo build --release --locked -q -p shoal -p shoal-loadtest
fi
BIN=$PWD/target/release/shoal
LOAD=$PWD/target/release/shoal-loadtest
ulimit -n "$(ulimit -Hn)"
D=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $D"; else rm -rf "$D"; fi
}
trap cleanup EXIT
cli() { "$BIN" -H "unix://$D/m.sock" "$@"; }
now() { date +%s%N; }
elapsed() { python3 -c "import sys; print(f'{(int(sys.argv[2]) - int(sys.argv[1])) / 1e9:.2f}')" "$1" "$2"; }
manager() {
    local pid=${pids[0]}
    python3 - "$pid" "$D/m/raft/raft.redb" <<'EOF'
import os, sys
pid = sys.argv[1]
f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
tick = os.sysconf("SC_CLK_TCK")
cpu = (int(f[11]) + int(f[12])) / tick
rss = next(l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")).split()[1]
size = os.path.getsize(sys.argv[2]) if os.path.exists(sys.argv[2]) else 0
print(f"manager cpu {cpu:.1f} s, rss {int(rss) / 1024:.0f} MiB, raft.redb {size / 1048576:.0f} MiB")
EOF
}
# Waits until the nodes run exactly $1 tasks, all of round $2 (their ROUND variable).
wait_running() {
    local want=$1 round=$2 deadline=$(($(date +%s) + TIMEOUT))
    while :; do
        local last
        last=$(tail -n 1 "$D/load.out" 2>/dev/null || true)
        if [ -n "$last" ] && python3 -c "
import json, sys; d = json.loads(sys.argv[1]); n = int(sys.argv[2])
sys.exit(0 if d['running'] == n and d['running_by_round'].get(sys.argv[3], 0) == n else 1)" "$last" "$want" "$round"; then
            return 0
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "timed out waiting for $want tasks of round $round (last: $last)" >&2
            return 1
        fi
        sleep 0.2
    done
}
# Tasks stopped so far by the simulated nodes (churn: a phase that only adds should stop none).
stopped() { tail -n 1 "$D/load.out" | python3 -c "import json,sys; print(json.load(sys.stdin)['stopped'])"; }
# Nodes that are not ready now.
not_ready() { cli node ls --format json | python3 -c "import json,sys; print(sum(1 for n in json.load(sys.stdin) if n.get('status', {}).get('state') != 'ready'))"; }
phase() { echo "$1 in $(elapsed "$2" "$3") s; tasks stopped since start $(stopped), nodes not ready $(not_ready); $(manager)"; }

"$BIN" daemon --data-dir "$D/m" --api-socket "$D/m.sock" --listen-addr 127.0.0.1:24242 --ui-addr off \
    --etcd-addr off --hostname manager >"$D/m.log" 2>&1 &
pids+=($!)
until [ -S "$D/m.sock" ] && cli cluster init >/dev/null 2>&1; do sleep 0.05; done
until cli node update --availability drain manager >/dev/null 2>&1; do sleep 0.05; done
cli cluster join-token worker -q >"$D/token"
echo "nodes $NODES, tasks $TASKS"

s=$(now)
"$LOAD" --managers 127.0.0.1:24242 --token-file "$D/token" --nodes "$NODES" --dir "$D/nodes" \
    >"$D/load.out" 2>"$D/load.err" &
pids+=($!)
until [ "$(cli node ls --format json | python3 -c "import json,sys; print(sum(1 for n in json.load(sys.stdin) if n.get('status', {}).get('state') == 'ready'))")" -ge $((NODES + 1)) ]; do
    sleep 0.2
done
e=$(now)
phase "join: $NODES nodes ready" "$s" "$e"

s=$(now)
cli service create -d --name load --replicas "$TASKS" --driver process --env ROUND=1 sleep 1d >/dev/null
wait_running "$TASKS" 1
e=$(now)
phase "create: $TASKS tasks running" "$s" "$e"

s=$(now)
cli service update -d --env-add ROUND=2 --update-parallelism "$TASKS" load >/dev/null
wait_running "$TASKS" 2
e=$(now)
phase "update: $TASKS tasks replaced" "$s" "$e"

s=$(now)
cli service scale -d load=$((TASKS / 2)) >/dev/null
wait_running $((TASKS / 2)) 2
cli service scale -d load="$TASKS" >/dev/null
wait_running "$TASKS" 2
e=$(now)
phase "scale: to $((TASKS / 2)) and back to $TASKS" "$s" "$e"
