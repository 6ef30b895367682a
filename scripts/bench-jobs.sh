#!/usr/bin/env bash
# Scheduled jobs on a 3-manager loopback cluster of real `shoal daemon`s (release build):
#  1. precision: JOBS jobs (default 1000) firing every minute (`* * * * *`, process driver: the
#     task appends the time it started to its job's file) for MINUTES minutes (default 3): per
#     run, decided − scheduled (the leader recorded the run with its task), started − scheduled
#     (the task's process began) and finished − scheduled (its exit was reported); p50/p99/max.
#  2. a 100-job DAG: a root started by `job run` and 9 layers of 11 jobs, each after two jobs of the
#     layer above (`sleep 0.2` each): end to end (root started → last run finished) against the
#     critical path (the longest chain of the runs' own durations).
# Usage: [JOBS=1000] [MINUTES=3] [BUILD=0] scripts/bench-jobs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-1000}
MINUTES=${MINUTES:-3}
if [ "${BUILD:-1}" = 1 ]; then cargo build --release --locked -q -p shoal; fi
BIN=${BIN:-$PWD/target/release/shoal}
D=$(mktemp -d)
pids=()
cleanup() { kill -9 "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
base=$((21000 + RANDOM % 500 * 4))
for i in 0 1 2; do
    "$BIN" daemon --data-dir "$D/n$i" --api-socket "$D/n$i.sock" --listen-addr "127.0.0.1:$((base + i))" \
        --ui-addr off --etcd-addr off --hostname "n$i" >"$D/n$i.log" 2>&1 &
    pids+=($!)
done
cli() { "$BIN" -H "unix://$D/n$1.sock" "${@:2}"; }
for i in 0 1 2; do for _ in $(seq 1 200); do [ -S "$D/n$i.sock" ] && break; sleep 0.05; done; done
cli 0 cluster init >/dev/null
token=$(cli 0 cluster join-token manager -q)
cli 1 cluster join --token "$token" "127.0.0.1:$base" >/dev/null
cli 2 cluster join --token "$token" "127.0.0.1:$base" >/dev/null
until [ "$(cli 0 node ls -q 2>/dev/null | wc -l)" = 3 ]; do sleep 0.2; done
echo "==> 3 managers up; creating $JOBS jobs (* * * * *)"
export -f cli; export BIN D
mkdir -p "$D/starts"
seq 1 "$JOBS" | xargs -P 4 -I{} "$BIN" -H "unix://$D/n1.sock" job create --name "tick-{}" --schedule "* * * * *" \
    --history 20 --driver process sh -c "date +%s.%N >> $D/starts/tick-{}" >/dev/null
created=$(date +%s)
# Whole minutes after creation, plus time for the last runs to finish.
wait_until=$(( (created / 60 + MINUTES + 1) * 60 + 20 ))
echo "==> waiting until $(date -u -d "@$wait_until" +%T) for $MINUTES minutes of runs"
while [ "$(date +%s)" -lt "$wait_until" ]; do sleep 5; done
cli 2 job ls --format json >"$D/jobs.json"
python3 - "$D/jobs.json" "$D/starts" <<'EOF'
import json, os, sys
from datetime import datetime
def t(s): return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
jobs = json.load(open(sys.argv[1]))
decided, finished, states = [], [], {}
for j in jobs:
    for r in j.get("job", {}).get("runs", []):
        states[r["state"]] = states.get(r["state"], 0) + 1
        if r["cause"] != "schedule" or "scheduled_at" not in r or r["state"] == "skipped":
            continue
        decided.append(t(r["started_at"]) - t(r["scheduled_at"]))
        if r.get("finished_at"):
            finished.append(t(r["finished_at"]) - t(r["scheduled_at"]))
# A run starts within its minute: its occurrence is the whole minute before the start.
started = []
for f in os.listdir(sys.argv[2]):
    for line in open(os.path.join(sys.argv[2], f)):
        t0 = float(line)
        started.append(t0 - int(t0 // 60) * 60)
def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(len(v) * p))] * 1000
print(f"jobs {len(jobs)}, runs {states}")
for name, v in [("decided - scheduled", decided), ("started - scheduled", started), ("finished - scheduled", finished)]:
    if v:
        print(f"{name}: p50 {pct(v, .5):.0f} ms, p99 {pct(v, .99):.0f} ms, max {max(v)*1000:.0f} ms over {len(v)} runs")
EOF
echo "managers' RSS after $MINUTES minutes: $(for p in "${pids[@]}"; do ps -o rss= -p "$p" | awk '{printf "%d MB ", $1/1024}'; done)"
echo "==> removing the tick jobs"
cli 1 job ls -q | xargs -P 4 -n 50 "$BIN" -H "unix://$D/n1.sock" service rm >/dev/null

echo "==> a 100-job DAG"
cli 1 job create --name dag-root --schedule "R/2099-01-01T00:00:00Z/P1D" --driver process sleep 0.2 >/dev/null
prev=(dag-root)
for l in $(seq 1 9); do
    cur=()
    for i in $(seq 0 10); do
        n=${#prev[@]}
        a=${prev[$((i % n))]}; b=${prev[$(((i + 1) % n))]}
        parents=$a; [ "$a" != "$b" ] && parents="$a,$b"
        cli 1 job create --name "dag-$l-$i" --after "$parents" --driver process sleep 0.2 >/dev/null
        cur+=("dag-$l-$i")
    done
    prev=("${cur[@]}")
done
cli 1 job run dag-root >/dev/null
for _ in $(seq 1 600); do
    done_count=$(cli 1 job ls --format json | python3 -c 'import json,sys; print(sum(1 for j in json.load(sys.stdin) if any(r["state"]=="succeeded" for r in j.get("job",{}).get("runs",[]))))')
    [ "$done_count" = 100 ] && break
    sleep 0.5
done
cli 1 job ls --format json >"$D/dag.json"
python3 - "$D/dag.json" <<'EOF'
import json, sys
from datetime import datetime
def t(s): return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
jobs = {j["spec"]["name"]: j for j in json.load(open(sys.argv[1])) if j["spec"]["name"].startswith("dag")}
run = {n: next(r for r in j["job"]["runs"] if r["state"] == "succeeded") for n, j in jobs.items()}
parents = {n: j["spec"]["mode"]["scheduled"].get("after", []) for n, j in jobs.items()}
dur = {n: t(r["finished_at"]) - t(r["started_at"]) for n, r in run.items()}
memo = {}
def path(n):
    if n not in memo:
        memo[n] = dur[n] + max([path(p) for p in parents[n]] or [0])
    return memo[n]
crit = max(path(n) for n in jobs)
e2e = max(t(r["finished_at"]) for r in run.values()) - t(run["dag-root"]["started_at"])
depth = 10
print(f"DAG of {len(jobs)} jobs, depth {depth}: end to end {e2e*1000:.0f} ms, critical path {crit*1000:.0f} ms "
      f"(sum of the runs' own durations), scheduling overhead {(e2e-crit)*1000/ (depth-1):.0f} ms per edge")
EOF
