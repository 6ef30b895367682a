#!/usr/bin/env bash
# Issue 18's figures on a release build, two real daemons on loopback (a manager and a worker):
#  - an oci image of SIZE MB (busybox plus SIZE MB of random bytes in one layer) imported on the
#    manager only; a service constrained to the worker, which lacks it: the worker's agent fetches
#    it from the manager over mTLS, every blob verified. Printed: the fetch as the agent logs it,
#    and `service create -d` to the task running.
#  - `cluster backup` of a state with KEYS key-value keys of ~1 KB, and `cluster init --restore`
#    of that file on a fresh daemon.
# Usage: scripts/bench-images.sh            (SIZES="10 100 500" KEYS=2000 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/shoal}
SIZES=${SIZES:-"10 100 500"}
KEYS=${KEYS:-2000}
[ -x "$BIN" ] || cargo build --release --locked -p shoal
T=$(mktemp -d /tmp/shoal-bench-images.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    # Tasks outlive their daemon: kill what runs from under $T.
    for p in $(pgrep -f "$T/" || true); do kill -9 "$p" 2>/dev/null || true; done
    sleep 0.5
    umount -R "$T"/*/data/agent 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT

start() { # name port
    mkdir -p "$T/$1"
    "$BIN" daemon --data-dir "$T/$1/data" --api-socket "$T/$1/s.sock" --listen-addr "127.0.0.1:$2" \
        --ui-addr off --etcd-addr off --hostname "bench-$1" 2>"$T/$1/log" &
    PIDS+=($!)
    for _ in $(seq 1 200); do [ -S "$T/$1/s.sock" ] && return; sleep 0.05; done
    echo "daemon $1 did not start" >&2; cat "$T/$1/log" >&2; exit 1
}
c() { local n=$1; shift; "$BIN" -H "unix://$T/$n/s.sock" "$@"; }
now() { date +%s.%N; }
ms() { python3 -c "print(round(($2 - $1) * 1000))"; }

start m 47511
start w 47512
c m cluster init >/dev/null
c w cluster join --token "$(c m cluster join-token worker -q)" 127.0.0.1:47511 >/dev/null
until [ "$(c m node ls --format json | python3 -c 'import json,sys; print(sum(n["status"]["state"]=="ready" for n in json.load(sys.stdin)))')" = 2 ]; do
    sleep 0.1
done

echo "== oci image fetched from a peer (release build, loopback)"
printf '%-8s %-14s %-22s\n' "size" "fetch (agent)" "create -> running"
for size in $SIZES; do
    r="$T/img$size/rootfs"
    mkdir -p "$r/bin"
    cp /bin/busybox "$r/bin/busybox"
    for l in sh sleep; do ln -s busybox "$r/bin/$l"; done
    head -c "$((size * 1024 * 1024))" /dev/urandom >"$r/payload"
    tar -C "$r" -cf "$T/img$size/rootfs.tar" .
    "$BIN" image --data-dir "$T/m/data" import "$T/img$size/rootfs.tar" "bench:$size" >/dev/null
    # Once the manager reports it (nodes report their stores every 2 s; a task created sooner
    # waits for the report, up to 5 s, and this would measure that wait).
    until c m node inspect bench-m --format json | grep -q "\"bench:$size\""; do sleep 0.1; done
    t0=$(now)
    c m service create -d --name "b$size" --driver oci --constraint node.hostname==bench-w \
        "bench:$size" sleep 1000 >/dev/null 2>&1
    until c m service ps "b$size" --format json | grep -q '"state": "running"'; do sleep 0.02; done
    t1=$(now)
    took=$(grep "image fetched from a peer" "$T/w/log" | grep "bench:$size" | sed -E 's/.*took_ms=([0-9]+).*/\1/' | tail -1)
    printf '%-8s %-14s %-22s\n' "${size} MB" "${took:-?} ms" "$(ms "$t0" "$t1") ms"
    c m service rm "b$size" >/dev/null
done

echo "== backup and restore with $KEYS key-value keys of ~1 KB"
val=$(head -c 700 /dev/urandom | base64 -w0)
for i in $(seq 1 "$KEYS"); do echo "put bench/key-$i $val"; done >"$T/kv.txt"
while read -r _ k v; do c m kv put "$k" "$v" >/dev/null; done <"$T/kv.txt"
t0=$(now)
c m cluster backup -o "$T/backup" >/dev/null
t1=$(now)
echo "backup: $(stat -c %s "$T/backup") bytes in $(ms "$t0" "$t1") ms"
kill -9 "${PIDS[0]}"
start r 47513
t0=$(now)
c r cluster init --restore "$T/backup" >/dev/null
t1=$(now)
echo "restore on a fresh daemon: $(ms "$t0" "$t1") ms; keys back: $(c r kv get bench/ --prefix --keys-only 2>/dev/null | grep -c bench/ || true)"
