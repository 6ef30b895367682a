#!/usr/bin/env bash
# Leader failover on loopback: a 3-manager cluster of real `shoal` daemons; kill -9 the leader and
# time until the first write succeeds through a surviving manager (the CLI retries every ~20 ms).
# Prints each trial and the median. Usage: scripts/bench-failover.sh [TRIALS]
# SIGNAL=STOP pauses the leader (SIGSTOP) instead of killing it; DAEMON_ARGS adds daemon flags
# (e.g. DAEMON_ARGS="--election-timeout 1s --heartbeat-interval 100ms").
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=${1:-20}
SIGNAL=${SIGNAL:-KILL}
read -r -a extra <<<"${DAEMON_ARGS:-}"
if [ -z "${SHOAL_BIN:-}" ]; then
    cargo build --release --locked -q -p shoal
fi
BIN=${SHOAL_BIN:-$PWD/target/release/shoal}
results=()
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
for t in $(seq 1 "$TRIALS"); do
    D=$(mktemp -d)
    pids=()
    base=$((20000 + (t % 50) * 10))
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
    cli 1 service create -d --name warmup --driver process true >/dev/null
    leader=$(cli 0 cluster inspect --format json | json 'd["raft"]["leader_node"]["node_id"]')
    li=0
    for i in 0 1 2; do
        id=$(cli "$i" cluster inspect --format json | json 'd["raft"]["node_id"]')
        [ "$id" = "$leader" ] && li=$i
    done
    survivor=$(( (li + 1) % 3 ))
    start=$(date +%s%N)
    kill -s "$SIGNAL" "${pids[$li]}"
    until cli "$survivor" service create -d --name "after-$t" --driver process true >/dev/null 2>&1; do sleep 0.02; done
    end=$(date +%s%N)
    ms=$(( (end - start) / 1000000 ))
    echo "trial $t: ${ms} ms"
    results+=("$ms")
    kill -CONT "${pids[@]}" 2>/dev/null || true
    kill -9 "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$D"
done
printf '%s\n' "${results[@]}" | sort -n | python3 -c "
import sys; v=[int(x) for x in sys.stdin]; n=len(v)
m = v[n//2] if n % 2 else (v[n//2-1]+v[n//2])/2
print(f'median {m} ms, min {v[0]} ms, max {v[-1]} ms over {n} trials')"
