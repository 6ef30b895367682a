#!/usr/bin/env bash
# Shoal next to Docker Swarm mode on this machine, same image and command, one run (as root):
# time for `service create --replicas N` until N tasks run, and for `scale N -> 2N`, on Shoal's
# oci driver, Shoal's docker driver (same engine as Swarm) and Swarm (`docker swarm init`).
# Usage: scripts/bench-swarm.sh [N]   (default 100)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100}
bash scripts/install-deps.sh
cargo build --release --locked -q -p shoal --bin shoal
BIN=$PWD/target/release/shoal
D=$(mktemp -d)
cleanup() {
    docker service rm swarm-bench >/dev/null 2>&1 || true
    docker swarm leave --force >/dev/null 2>&1 || true
    [ -n "${DAEMON:-}" ] && kill "$DAEMON" 2>/dev/null || true
}
trap cleanup EXIT

mkdir -p "$D/rootfs/bin"
cp /bin/busybox "$D/rootfs/bin/"
for l in sh sleep; do ln -s busybox "$D/rootfs/bin/$l"; done
tar -C "$D/rootfs" -cf "$D/rootfs.tar" .
docker import "$D/rootfs.tar" shoal-bench:latest >/dev/null

ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

echo "== Shoal (release build, shoal dev, one node)"
"$BIN" dev --data-dir "$D/data" --api-socket "$D/s.sock" --listen-addr 127.0.0.1:46223 >"$D/log" 2>&1 &
DAEMON=$!
cli() { "$BIN" -H "unix://$D/s.sock" "$@"; }
for _ in $(seq 1 200); do cli node ls >/dev/null 2>&1 && break; sleep 0.05; done
"$BIN" image --data-dir "$D/data" import "$D/rootfs.tar" shoal-bench:latest >/dev/null
for _ in $(seq 1 100); do cli node ls --format json | grep -q '"oci"' && break; sleep 0.1; done
running() { cli service ps "$1" --format json | python3 -c "import json,sys; print(sum(1 for t in json.load(sys.stdin) if t['status']['state']=='running' and t['desired_state']=='running'))"; }
wait_running() { until [ "$(running "$1")" -ge "$2" ]; do sleep 0.1; done; }
drained() { for _ in $(seq 1 1200); do [ -z "$(ls -A "$D/data/agent/tasks" 2>/dev/null)" ] && return; sleep 0.1; done; echo "tasks left behind" >&2; }
for driver in oci docker; do
    t0=$(date +%s%N)
    cli service create -d --name "b-$driver" --replicas "$N" --driver "$driver" shoal-bench:latest sleep 3600 >/dev/null
    wait_running "b-$driver" "$N"
    echo "shoal $driver: create --replicas $N -> running: $(ms "$t0") ms"
    t0=$(date +%s%N)
    cli service scale "b-$driver=$((2 * N))" -d >/dev/null
    wait_running "b-$driver" "$((2 * N))"
    echo "shoal $driver: scale $N -> $((2 * N)) running: $(ms "$t0") ms"
    cli service rm "b-$driver" >/dev/null
    drained
done
kill "$DAEMON"; DAEMON=

echo "== Docker Swarm mode ($(docker version --format '{{.Server.Version}}'), one node)"
docker swarm leave --force >/dev/null 2>&1 || true
docker swarm init --advertise-addr 127.0.0.1 >/dev/null
swarm_running() { docker service ps swarm-bench --filter desired-state=running --format '{{.CurrentState}}' | grep -c '^Running' || true; }
t0=$(date +%s%N)
docker service create -d --no-resolve-image --name swarm-bench --replicas "$N" shoal-bench:latest sleep 3600 >/dev/null
until [ "$(swarm_running)" -ge "$N" ]; do sleep 0.2; done
echo "swarm: create --replicas $N -> running: $(ms "$t0") ms"
t0=$(date +%s%N)
docker service scale -d swarm-bench="$((2 * N))" >/dev/null
until [ "$(swarm_running)" -ge "$((2 * N))" ]; do sleep 0.2; done
echo "swarm: scale $N -> $((2 * N)) running: $(ms "$t0") ms"
docker service rm swarm-bench >/dev/null
for _ in $(seq 1 600); do [ -z "$(docker ps -q --filter label=com.docker.swarm.service.name=swarm-bench)" ] && break; sleep 0.2; done
