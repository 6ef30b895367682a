#!/usr/bin/env bash
# The docker CLI against Shoal's Docker Engine API and against Docker Swarm mode, on this
# machine's one dockerd, same image, same commands (as root): `docker service create -d
# --replicas N` until N tasks run, and `docker stack deploy` of a 10-service stack until every
# service runs. Only DOCKER_HOST differs between the two.
# Usage: scripts/bench-docker-cli.sh [N]   (default 100)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100}
bash scripts/install-deps.sh
cargo build --release --locked -q -p shoal --bin shoal
BIN=$PWD/target/release/shoal
D=$(mktemp -d)
cleanup() {
    DOCKER_HOST= docker service rm bench >/dev/null 2>&1 || true
    DOCKER_HOST= docker stack rm bench10 >/dev/null 2>&1 || true
    DOCKER_HOST= docker swarm leave --force >/dev/null 2>&1 || true
    [ -n "${DAEMON:-}" ] && kill "$DAEMON" 2>/dev/null || true
    pkill -9 -f "$D/" 2>/dev/null || true
}
trap cleanup EXIT

mkdir -p "$D/rootfs/bin"
cp /bin/busybox "$D/rootfs/bin/"
for l in sh sleep; do ln -s busybox "$D/rootfs/bin/$l"; done
tar -C "$D/rootfs" -cf "$D/rootfs.tar" .
docker import "$D/rootfs.tar" shoal-bench:latest >/dev/null

{
    echo "services:"
    for i in $(seq 1 10); do
        printf '  s%s:\n    image: shoal-bench:latest\n    command: ["sleep", "3600"]\n' "$i"
    done
} >"$D/stack10.yml"

ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
running() { docker service ps "$1" --filter desired-state=running --format '{{.CurrentState}}' | grep -c '^Running' || true; }
stack_running() { docker stack services bench10 --format '{{.Replicas}}' | grep -c '^1/1' || true; }

# The same measurements, against whatever DOCKER_HOST names.
measure() {
    local who=$1 t0
    t0=$(date +%s%N)
    docker service create -d --no-resolve-image --name bench --replicas "$N" shoal-bench:latest sleep 3600 >/dev/null
    until [ "$(running bench)" -ge "$N" ]; do sleep 0.2; done
    echo "$who: docker service create -d --replicas $N -> $N running: $(ms "$t0") ms"
    docker service rm bench >/dev/null
    for _ in $(seq 1 600); do [ -z "$(DOCKER_HOST= docker ps -q --filter ancestor=shoal-bench:latest)" ] && break; sleep 0.2; done
    t0=$(date +%s%N)
    docker stack deploy --detach=true -c "$D/stack10.yml" bench10 >/dev/null
    until [ "$(stack_running)" -ge 10 ]; do sleep 0.2; done
    echo "$who: docker stack deploy (10 services) -> all running: $(ms "$t0") ms"
    docker stack rm bench10 >/dev/null
    for _ in $(seq 1 600); do [ -z "$(DOCKER_HOST= docker ps -q --filter ancestor=shoal-bench:latest)" ] && break; sleep 0.2; done
}

echo "== Shoal (release build, shoal dev, one node, its Docker API; tasks on the docker driver)"
"$BIN" dev --data-dir "$D/data" --api-socket "$D/s.sock" --docker-socket "$D/docker.sock" \
    --listen-addr 127.0.0.1:46224 --ui-addr 127.0.0.1:46225 >"$D/log" 2>&1 &
DAEMON=$!
for _ in $(seq 1 200); do [ -S "$D/docker.sock" ] && DOCKER_HOST="unix://$D/docker.sock" docker node ls >/dev/null 2>&1 && break; sleep 0.05; done
export DOCKER_HOST="unix://$D/docker.sock"
measure shoal
unset DOCKER_HOST
kill "$DAEMON"; DAEMON=

echo "== Docker Swarm mode ($(docker version --format '{{.Server.Version}}'), one node)"
docker swarm leave --force >/dev/null 2>&1 || true
docker swarm init --advertise-addr 127.0.0.1 >/dev/null
measure swarm
