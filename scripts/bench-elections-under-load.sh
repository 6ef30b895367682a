#!/usr/bin/env bash
# Spurious elections under load: a 3-manager cluster of real `shoal` daemons on loopback while
# 2×nproc busy loops keep every core at 100% and a client writes through a follower without
# pause. Counts Raft term changes (every candidacy raises the term, so even a failed election
# shows) and leader changes over DURATION seconds, and the writes that went through.
# Usage: scripts/bench-elections-under-load.sh [DURATION_SECS]   (SHOAL_BIN, DAEMON_ARGS as in
# scripts/bench-failover.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-600}
if [ -z "${SHOAL_BIN:-}" ]; then
    cargo build --release --locked -q -p shoal
fi
BIN=${SHOAL_BIN:-$PWD/target/release/shoal}
read -r -a extra <<<"${DAEMON_ARGS:-}"
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
D=$(mktemp -d)
pids=()
burners=()
cleanup() {
    kill "${burners[@]}" 2>/dev/null || true
    kill -9 "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$D"
}
trap cleanup EXIT
base=21700
for i in 0 1 2; do
    mode=daemon; [ "$i" = 0 ] && mode=dev
    "$BIN" "$mode" --data-dir "$D/n$i" --api-socket "$D/n$i.sock" --listen-addr "127.0.0.1:$((base + i))" \
        --ui-addr off --etcd-addr off --hostname "n$i" "${extra[@]}" >"$D/n$i.log" 2>&1 &
    pids+=($!)
done
cli() { "$BIN" -H "unix://$D/n$1.sock" "${@:2}"; }
for _ in $(seq 1 200); do [ -S "$D/n0.sock" ] && cli 0 cluster inspect >/dev/null 2>&1 && break; sleep 0.05; done
for _ in $(seq 1 200); do [ -S "$D/n1.sock" ] && [ -S "$D/n2.sock" ] && break; sleep 0.05; done
token=$(cli 0 cluster join-token manager -q)
cli 1 cluster join --token "$token" "127.0.0.1:$base" >/dev/null
cli 2 cluster join --token "$token" "127.0.0.1:$base" >/dev/null
term() { cli 0 cluster inspect --format json | json 'd["raft"]["term"]'; }
leader() { cli 0 cluster inspect --format json | json 'd["raft"]["leader_node"]["node_id"]'; }
t0=$(term); l0=$(leader)
for _ in $(seq 1 $(( $(nproc) * 2 ))); do
    (while :; do :; done) &
    burners+=($!)
done
start=$(date +%s)
writes=0; failed=0; changes=0; last=$l0
while [ $(( $(date +%s) - start )) -lt "$DURATION" ]; do
    if cli 1 node update --label-add "load=$writes" n0 >/dev/null 2>&1; then
        writes=$((writes + 1))
    else
        failed=$((failed + 1))
    fi
    if [ $((writes % 20)) = 0 ]; then
        l=$(leader 2>/dev/null || echo none)
        [ "$l" != "$last" ] && changes=$((changes + 1)) && last=$l
    fi
done
kill "${burners[@]}" 2>/dev/null || true
t1=$(term)
echo "load: $(( $(nproc) * 2 )) busy loops on $(nproc) cores for ${DURATION}s, extra daemon flags: ${DAEMON_ARGS:-none}"
echo "writes through a follower: $writes ok, $failed failed"
echo "term: $t0 -> $t1 ($((t1 - t0)) elections started), leader changes seen: $changes"
grep -h "election timeout passed\|vote granted\|elected\|became leader" "$D"/n*.log | head -5 || true
