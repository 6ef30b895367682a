#!/usr/bin/env bash
# The etcd v3 API side by side: a real etcd 3.4 (Debian's etcd-server) and Shoal's `--etcd-addr`,
# 1 member / 1 manager, then 3 members / 3 managers, all on loopback, measured with the same
# client (crates/shoal-etcd/examples/kvbench.rs, tonic): closed-loop puts at 1, 16 and 256 in
# flight, then watch latency (put sent -> event received, one put at a time). Prints a table.
#
# Usage: scripts/bench-etcd.sh [SIZES]   SIZES: cluster sizes, default "1 3"
# Env: SECS (per run, default 10), VALUE (bytes, default 1024), IN_FLIGHT (default "1 16 256"),
# BUILD=0 to skip the release builds, SYSTEMS (default "etcd shoal") to run only one side.
# Connections: 1 for up to 16 in flight, 4 for more; they go round-robin over the members,
# first member first (etcd: whichever member leads; Shoal: the `cluster init` manager leads).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${1:-"1 3"}
SECS=${SECS:-10}
VALUE=${VALUE:-1024}
IN_FLIGHT=${IN_FLIGHT:-"1 16 256"}
SYSTEMS=${SYSTEMS:-"etcd shoal"}
command -v etcd >/dev/null || { echo "etcd is not installed (apt-get install etcd-server)" >&2; exit 1; }
if [ "${BUILD:-1}" = 1 ]; then # BUILD=0: use the binaries already in target/release
    CARGO_INCREMENTAL=0 cargo build --release -q -p shoal
    CARGO_INCREMENTAL=0 cargo build --release -q -p shoal-etcd --example kvbench
fi
BIN=$PWD/target/release/shoal
BENCH=$PWD/target/release/examples/kvbench
D=$(mktemp -d)
pids=()
stop() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
trap 'stop; rm -rf "$D"' EXIT
rows=()
field() { tr ' ' '\n' | sed -n "s/^$1=//p"; }

# Runs the benchmark against ENDPOINTS and records rows for SYSTEM with N members.
bench() {
    local system=$1 n=$2 endpoints=$3 out conns
    for f in $IN_FLIGHT; do
        conns=1
        [ "$f" -gt 16 ] && conns=4
        out=$("$BENCH" put "$endpoints" "$conns" "$f" "$SECS" "$VALUE")
        echo "$system x$n: $out" >&2
        rows+=("| $system | $n | put, $f in flight ($conns conn) | $(echo "$out" | field puts_per_s) | $(echo "$out" | field mean_ms) | $(echo "$out" | field p50_ms) | $(echo "$out" | field p99_ms) |")
    done
    out=$("$BENCH" watch "$endpoints" "$SECS" "$VALUE")
    echo "$system x$n: $out" >&2
    rows+=("| $system | $n | watch (put -> event) | $(echo "$out" | field events) events | $(echo "$out" | field mean_ms) | $(echo "$out" | field p50_ms) | $(echo "$out" | field p99_ms) |")
}

wait_healthy() {
    local ep
    for ep in ${1//,/ }; do
        for _ in $(seq 1 300); do
            ETCDCTL_API=3 etcdctl --endpoints "$ep" --dial-timeout=1s --command-timeout=2s endpoint health \
                >/dev/null 2>&1 && break
            sleep 0.1
        done
        ETCDCTL_API=3 etcdctl --endpoints "$ep" --command-timeout=5s endpoint health >/dev/null 2>&1 ||
            { echo "$ep is not healthy" >&2; exit 1; }
    done
}

for n in $SIZES; do
  if [[ " $SYSTEMS " == *" etcd "* ]]; then
    # A real etcd, n members.
    cluster="" endpoints=""
    for i in $(seq 1 "$n"); do
        cluster+="${cluster:+,}e$i=http://127.0.0.1:$((23880 + i))"
        endpoints+="${endpoints:+,}127.0.0.1:$((23780 + i))"
    done
    for i in $(seq 1 "$n"); do
        etcd --name "e$i" --data-dir "$D/etcd-$n-$i" \
            --listen-client-urls "http://127.0.0.1:$((23780 + i))" --advertise-client-urls "http://127.0.0.1:$((23780 + i))" \
            --listen-peer-urls "http://127.0.0.1:$((23880 + i))" --initial-advertise-peer-urls "http://127.0.0.1:$((23880 + i))" \
            --initial-cluster "$cluster" --initial-cluster-state new >"$D/etcd-$n-$i.log" 2>&1 &
        pids+=($!)
    done
    wait_healthy "$endpoints"
    bench etcd "$n" "$endpoints"
    stop
  fi

  if [[ " $SYSTEMS " == *" shoal "* ]]; then
    # Shoal, n managers: `shoal daemon` each, `cluster init` on the first, the others join.
    endpoints=""
    for i in $(seq 1 "$n"); do
        endpoints+="${endpoints:+,}127.0.0.1:$((24780 + i))"
        "$BIN" daemon --data-dir "$D/shoal-$n-$i" --api-socket "$D/shoal-$n-$i.sock" \
            --listen-addr "127.0.0.1:$((24680 + i))" --ui-addr off --etcd-addr "127.0.0.1:$((24780 + i))" \
            --hostname "m$i" >"$D/shoal-$n-$i.log" 2>&1 &
        pids+=($!)
    done
    cli() { "$BIN" -H "unix://$D/shoal-$n-$1.sock" "${@:2}"; }
    for i in $(seq 1 "$n"); do
        for _ in $(seq 1 200); do [ -S "$D/shoal-$n-$i.sock" ] && break; sleep 0.05; done
    done
    cli 1 cluster init >/dev/null
    if [ "$n" -gt 1 ]; then
        token=$(cli 1 cluster join-token manager -q)
        for i in $(seq 2 "$n"); do cli "$i" cluster join --token "$token" "127.0.0.1:24681" >/dev/null; done
    fi
    wait_healthy "$endpoints"
    bench shoal "$n" "$endpoints"
    stop
  fi
done

echo
echo "$(date -u +%F), $(nproc) CPUs, ${SECS} s per run, ${VALUE}-byte values"
echo "| system | members | load | puts/s | mean ms | p50 ms | p99 ms |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
