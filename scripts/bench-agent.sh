#!/usr/bin/env bash
# The agent's numbers for BENCHMARKS.md, in one run on this machine (as root):
#  1. task start latency per driver (prepare + start until running, what the agent does between
#     receiving an assignment and reporting `running`) next to the raw runtime, from
#     crates/shoal/examples/task_start.rs;
#  2. end to end: `service create --replicas N` until N tasks run, per driver;
#  3. memory: the daemon's RSS idle and with 100 process tasks, and the RSS of one shim.
# Usage: scripts/bench-agent.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-20}
bash scripts/install-deps.sh
cargo build --release --locked -q -p shoal --bins --example task_start
bash scripts/static-shim.sh release
BIN=$PWD/target/release/shoal
D=$(mktemp -d)
trap 'kill $DAEMON 2>/dev/null || true; rm -rf "$D"' EXIT

# A busybox image for docker and the oci store.
mkdir -p "$D/rootfs/bin"
cp /bin/busybox "$D/rootfs/bin/"
for l in sh sleep echo cat; do ln -s busybox "$D/rootfs/bin/$l"; done
tar -C "$D/rootfs" -cf "$D/rootfs.tar" .
docker import "$D/rootfs.tar" shoal-bench:latest >/dev/null

echo "== 1. start latency (median of $RUNS, sequential)"
SHOAL_BIN=$BIN SHOAL_BENCH_ROOTFS="$D/rootfs.tar" target/release/examples/task_start "$RUNS"

echo "== 2. end to end and memory"
"$BIN" dev --data-dir "$D/data" --api-socket "$D/s.sock" --listen-addr 127.0.0.1:46123 >"$D/log" 2>&1 &
DAEMON=$!
cli() { "$BIN" -H "unix://$D/s.sock" "$@"; }
for _ in $(seq 1 200); do cli node ls >/dev/null 2>&1 && break; sleep 0.05; done
"$BIN" image --data-dir "$D/data" import "$D/rootfs.tar" shoal-bench:latest >/dev/null 2>&1 || true
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# Let the daemon settle (registration, first controller passes) before reading idle memory.
for _ in $(seq 1 100); do cli node ls --format json | grep -q '"process"' && break; sleep 0.1; done
echo "daemon RSS idle: $(rss $DAEMON) KiB"
running() { cli service ps "$1" --format json | python3 -c "import json,sys; print(sum(1 for t in json.load(sys.stdin) if t['status']['state']=='running'))"; }
# After `service rm`, wait until the agent has stopped and cleaned up every task.
drained() { for _ in $(seq 1 600); do [ -z "$(ls -A "$D/data/agent/tasks" 2>/dev/null)" ] && return; sleep 0.1; done; echo "tasks left behind" >&2; }
converge() { # service N driver [image] command...
    local name=$1 n=$2 driver=$3; shift 3
    local t0; t0=$(date +%s%N)
    cli service create -d --name "$name" --replicas "$n" --driver "$driver" "$@" >/dev/null
    until [ "$(running "$name")" -ge "$n" ]; do sleep 0.05; done
    echo "$driver: create --replicas $n -> $n running: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}
converge p100 100 process sleep 600
echo "daemon RSS with 100 process tasks: $(rss $DAEMON) KiB"
# RSS counts the binary's text, which every shim shares; private memory is what each one costs.
shim=$(pgrep -f "shoal-shim shim $D" | head -1 || true)
if [ -n "$shim" ]; then
    awk '/^Rss/ {r=$2} /^Pss:/ {p=$2} /^Private_(Clean|Dirty)/ {v+=$2} END {print "one shim: RSS " r " KiB, PSS " p " KiB, private " v " KiB"}' "/proc/$shim/smaps_rollup"
fi
cli service rm p100 >/dev/null; drained
converge d20 20 docker shoal-bench:latest sleep 600
cli service rm d20 >/dev/null; drained
if cli node ls --format json | grep -q '"oci"'; then
    converge o20 20 oci shoal-bench:latest sleep 600
    cli service rm o20 >/dev/null; drained
fi
