#!/usr/bin/env bash
# etcd 3.4's leader failover measured the way scripts/bench-failover.sh measures Shoal's: a
# 3-member etcd cluster on loopback, `kill -9` (or SIGNAL=STOP) of the leader, then the time
# until a `etcdctl put` through a surviving member is acknowledged.
# Usage: scripts/bench-failover-etcd.sh [TRIALS]   ETCD_ARGS adds flags to every member
# (e.g. ETCD_ARGS="--heartbeat-interval 50 --election-timeout 350 --pre-vote").
set -euo pipefail
TRIALS=${1:-20}
SIGNAL=${SIGNAL:-KILL}
read -r -a extra <<<"${ETCD_ARGS:-}"
export ETCDCTL_API=3
results=()
for t in $(seq 1 "$TRIALS"); do
    D=$(mktemp -d)
    base=$((22000 + (t % 50) * 10))
    cluster="e0=http://127.0.0.1:$((base + 1)),e1=http://127.0.0.1:$((base + 3)),e2=http://127.0.0.1:$((base + 5))"
    pids=()
    for i in 0 1 2; do
        peer=$((base + 1 + 2 * i)); client=$((base + 2 + 2 * i))
        etcd --name "e$i" --data-dir "$D/e$i" --listen-peer-urls "http://127.0.0.1:$peer" \
            --initial-advertise-peer-urls "http://127.0.0.1:$peer" --listen-client-urls "http://127.0.0.1:$client" \
            --advertise-client-urls "http://127.0.0.1:$client" --initial-cluster "$cluster" \
            --initial-cluster-state new --initial-cluster-token "bench-$t" "${extra[@]}" >"$D/e$i.log" 2>&1 &
        pids+=($!)
    done
    ep() { echo "127.0.0.1:$((base + 2 + 2 * $1))"; }
    for _ in $(seq 1 400); do etcdctl --endpoints "$(ep 0)" put warmup 1 >/dev/null 2>&1 && break; sleep 0.05; done
    li=-1
    for i in 0 1 2; do
        if etcdctl --endpoints "$(ep "$i")" endpoint status -w json | python3 -c "
import json,sys; s=json.load(sys.stdin)[0]['Status']; sys.exit(0 if s['leader']==s['header']['member_id'] else 1)"; then
            li=$i
        fi
    done
    [ "$li" -ge 0 ] || { echo "no leader found" >&2; exit 1; }
    survivor=$(( (li + 1) % 3 ))
    start=$(date +%s%N)
    kill -s "$SIGNAL" "${pids[$li]}"
    # A put sent while there is no leader waits out its whole timeout in etcd (the proposal is
    # dropped, the client is not told), so a fresh etcdctl starts every 20 ms and the first
    # acknowledgement counts: the earliest moment the cluster takes a write again.
    n=0
    until ls "$D"/done.* >/dev/null 2>&1; do
        (etcdctl --endpoints "$(ep "$survivor")" --command-timeout=5s put "after-$t" "$n" >/dev/null 2>&1 &&
            date +%s%N >"$D/done.$n") &
        n=$((n + 1))
        sleep 0.02
    done
    end=$(cat "$D"/done.* | sort -n | head -1)
    ms=$(( (end - start) / 1000000 ))
    echo "trial $t: ${ms} ms"
    results+=("$ms")
    kill -CONT "${pids[@]}" 2>/dev/null || true
    kill -9 "${pids[@]}" 2>/dev/null || true
    pkill -f "after-$t" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$D"
done
printf '%s\n' "${results[@]}" | sort -n | python3 -c "
import sys; v=[int(x) for x in sys.stdin]; n=len(v)
m = v[n//2] if n % 2 else (v[n//2-1]+v[n//2])/2
print(f'median {m} ms, min {v[0]} ms, max {v[-1]} ms over {n} trials')"
