#!/usr/bin/env bash
# Control-plane load test: real managers (`shoal daemon` + `cluster init`, MANAGERS of them
# joined with the manager token, all drained so that no task runs on them) and NODES simulated
# nodes from `shoal-loadtest` (real joins, real agents, mutual TLS to the dispatcher; tasks
# "run" at once). Times:
#   join      all NODES nodes ready in `node ls`
#   create    `service create --replicas TASKS` until the nodes run TASKS tasks
#   update    a rolling update of every task (`--update-parallelism TASKS`: all at once)
#   scale     down to TASKS/2 and back up
#   failover  (MANAGERS=3) another rolling update, the leader killed -9 right after it was
#             accepted: how long until a survivor takes a write, and until all tasks are new
#   lose      10% of the nodes killed -9 (a second loadtest process): how long until the
#             leader marks them down, and until the other nodes run all TASKS tasks again
# After each phase: tasks the nodes stopped so far (churn), nodes not ready, the API latency
# during the phase (`service inspect` through a manager, sampled in a loop, CLI start included),
# and the leader's CPU seconds, RSS, raft.redb and raft.snapshot sizes.
# Usage: scripts/bench-scale.sh [NODES] [TASKS]      (default 100 nodes, 1000 tasks)
# Env: MANAGERS (1 or 3, default 1); BUILD=0 uses the binaries in target/release; TIMEOUT
# (seconds per phase, default 600); KEEP=1 keeps the directory.
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${1:-100}
TASKS=${2:-1000}
MANAGERS=${MANAGERS:-1}
TIMEOUT=${TIMEOUT:-600}
if [ "$MANAGERS" != 1 ] && [ "$MANAGERS" != 3 ]; then
    echo "MANAGERS must be 1 or 3" >&2
    exit 2
fi
if [ "${BUILD:-1}" = 1 ]; then
    cargo build --release --locked -q -p shoal -p shoal-loadtest
fi
BIN=$PWD/target/release/shoal
LOAD=$PWD/target/release/shoal-loadtest
ulimit -n "$(ulimit -Hn)"
D=$(mktemp -d)
# The simulated nodes' directories (their task records, written with fsync) on a tmpfs: real
# nodes have disks of their own; here a thousand nodes' fsyncs would queue in front of the
# managers' Raft log on the one disk and measure the disk instead of the control plane.
N=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
declare -A mpid
pids=()
cleanup() {
    for p in "${pids[@]}" "${mpid[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$N"
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $D"; else rm -rf "$D"; fi
}
trap cleanup EXIT
# The manager the CLI talks to (a survivor after the failover phase).
SOCK=$D/m1.sock
cli() { "$BIN" -H "unix://$SOCK" "$@"; }
now() { date +%s%N; }
elapsed() { python3 -c "import sys; print(f'{(int(sys.argv[2]) - int(sys.argv[1])) / 1e9:.2f}')" "$1" "$2"; }
leader() { cli node ls --format json | python3 -c "
import json, sys
for n in json.load(sys.stdin):
    if n.get('status', {}).get('leader') or (n.get('manager_status') or {}).get('leader'):
        print(n['description']['hostname']); break"; }
# The leader's figures (the manager doing the work).
manager() {
    local m
    m=$(leader 2>/dev/null || true)
    m=${m:-m1}
    python3 - "${mpid[$m]}" "$D/$m/raft" "$m" <<'EOF'
import os, sys
pid, raft, name = sys.argv[1], sys.argv[2], sys.argv[3]
f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
tick = os.sysconf("SC_CLK_TCK")
cpu = (int(f[11]) + int(f[12])) / tick
rss = next(l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")).split()[1]
size = lambda p: os.path.getsize(p) / 1048576 if os.path.exists(p) else 0
print(f"leader {name}: cpu {cpu:.1f} s, rss {int(rss) / 1024:.0f} MiB, "
      f"raft.redb {size(raft + '/raft.redb'):.0f} MiB, raft.snapshot {size(raft + '/raft.snapshot'):.1f} MiB")
EOF
}
# The simulated nodes' last reports, summed (the lost part leaves the sum once killed).
OUTS=("$D/load.out")
report() {
    python3 - "${OUTS[@]}" <<'EOF'
import json, sys
total = {"running": 0, "stopped": 0, "started": 0, "running_by_round": {}}
for path in sys.argv[1:]:
    try:
        last = open(path).read().strip().splitlines()[-1]
    except (OSError, IndexError):
        continue
    d = json.loads(last)
    for k in ("running", "stopped", "started"):
        total[k] += d[k]
    for r, n in d["running_by_round"].items():
        total["running_by_round"][r] = total["running_by_round"].get(r, 0) + n
print(json.dumps(total))
EOF
}
# Waits until the nodes run exactly $1 tasks, all of round $2 (their ROUND variable).
wait_running() {
    local want=$1 round=$2 deadline=$(($(date +%s) + TIMEOUT))
    while :; do
        local last
        last=$(report)
        if python3 -c "
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
stopped() { report | python3 -c "import json,sys; print(json.load(sys.stdin)['stopped'])"; }
count_nodes() { cli node ls --format json | python3 -c "import json,sys; print(sum(1 for n in json.load(sys.stdin) if (n.get('status', {}).get('state') == 'ready') == (sys.argv[1] == 'ready')))" "$1"; }
# API latency: `service inspect` in a loop while a phase runs.
sampler=
sample_start() {
    : >"$D/lat"
    (
        while :; do
            a=$(now)
            if "$BIN" -H "unix://$SOCK" service inspect load >/dev/null 2>&1; then
                b=$(now)
                echo $(((b - a) / 1000000)) >>"$D/lat"
            fi
            sleep 0.1
        done
    ) &
    sampler=$!
}
sample_stop() {
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    python3 - "$D/lat" <<'EOF'
import sys
v = sorted(int(x) for x in open(sys.argv[1]) if x.strip())
if not v:
    print("api latency: no sample"); sys.exit()
q = lambda p: v[min(len(v) - 1, int(p * len(v)))]
print(f"api latency ({len(v)} inspects) p50 {q(0.5)} ms, p99 {q(0.99)} ms, max {v[-1]} ms")
EOF
}
phase() {
    echo "$1 in $(elapsed "$2" "$3") s; tasks stopped since start $(stopped), nodes not ready $(count_nodes not)"
    echo "    $(sample_stop); $(manager)"
}

start_manager() { # NAME PORT
    "$BIN" daemon --data-dir "$D/$1" --api-socket "$D/$1.sock" --listen-addr "127.0.0.1:$2" --ui-addr off \
        --etcd-addr off --hostname "$1" >"$D/$1.log" 2>&1 &
    mpid[$1]=$!
    until [ -S "$D/$1.sock" ]; do sleep 0.05; done
}
start_manager m1 24242
until cli cluster init >/dev/null 2>&1; do sleep 0.05; done
ADDRS=127.0.0.1:24242
if [ "$MANAGERS" = 3 ]; then
    mtoken=$(cli cluster join-token manager -q)
    for i in 2 3; do
        start_manager "m$i" $((24250 + i))
        until "$BIN" -H "unix://$D/m$i.sock" cluster join --token "$mtoken" 127.0.0.1:24242 >/dev/null 2>&1; do
            sleep 0.2
        done
        ADDRS="$ADDRS,127.0.0.1:$((24250 + i))"
    done
fi
for i in $(seq 1 "$MANAGERS"); do
    until cli node update --availability drain "m$i" >/dev/null 2>&1; do sleep 0.1; done
done
cli cluster join-token worker -q >"$D/token"
LOST=$((NODES / 10))
KEPT=$((NODES - LOST))
echo "managers $MANAGERS, nodes $NODES, tasks $TASKS"

s=$(now)
"$LOAD" --managers "$ADDRS" --token-file "$D/token" --nodes "$KEPT" --dir "$N" \
    >"$D/load.out" 2>"$D/load.err" &
pids+=($!)
if [ "$LOST" -gt 0 ]; then
    "$LOAD" --managers "$ADDRS" --token-file "$D/token" --nodes "$LOST" --first "$KEPT" --dir "$N" \
        >"$D/lost.out" 2>"$D/lost.err" &
    lost_pid=$!
    pids+=("$lost_pid")
    OUTS+=("$D/lost.out")
fi
until [ "$(count_nodes ready)" -ge $((NODES + MANAGERS)) ]; do sleep 0.2; done
e=$(now)
sample_start
phase "join: $NODES nodes ready" "$s" "$e"

sample_start
s=$(now)
cli service create -d --name load --replicas "$TASKS" --driver process --env ROUND=1 sleep 1d >/dev/null
wait_running "$TASKS" 1
e=$(now)
phase "create: $TASKS tasks running" "$s" "$e"

sample_start
s=$(now)
cli service update -d --env-add ROUND=2 --update-parallelism "$TASKS" load >/dev/null
wait_running "$TASKS" 2
e=$(now)
phase "update: $TASKS tasks replaced" "$s" "$e"

sample_start
s=$(now)
cli service scale -d load=$((TASKS / 2)) >/dev/null
wait_running $((TASKS / 2)) 2
cli service scale -d load="$TASKS" >/dev/null
wait_running "$TASKS" 2
e=$(now)
phase "scale: to $((TASKS / 2)) and back to $TASKS" "$s" "$e"

round=2
down_managers=0
if [ "$MANAGERS" = 3 ]; then
    old=$(leader)
    survivor=m2
    [ "$old" = m2 ] && survivor=m3
    round=3
    sample_start
    s=$(now)
    cli service update -d --env-add ROUND=3 --update-parallelism "$TASKS" load >/dev/null
    kill -9 "${mpid[$old]}"
    k=$(now)
    down_managers=1
    SOCK=$D/$survivor.sock
    # A write through a survivor: the label changes nothing the tasks see.
    n=0
    until cli service update -d --label-add "failover=$n" load >/dev/null 2>&1; do
        n=$((n + 1))
        sleep 0.05
    done
    w=$(now)
    wait_running "$TASKS" 3
    e=$(now)
    echo "failover: $old killed; a write through $survivor accepted $(elapsed "$k" "$w") s after the kill ($n refused first)"
    phase "failover: all $TASKS tasks of the update running" "$s" "$e"
fi

if [ "$LOST" -gt 0 ]; then
    sample_start
    s=$(now)
    kill -9 "$lost_pid"
    OUTS=("$D/load.out")
    until [ "$(count_nodes not)" -ge $((LOST + down_managers)) ]; do
        sleep 0.2
    done
    d=$(now)
    wait_running "$TASKS" "$round"
    e=$(now)
    echo "lose: $LOST nodes killed; all down in $(elapsed "$s" "$d") s"
    phase "lose: $TASKS tasks running on the other $KEPT nodes" "$s" "$e"
fi
