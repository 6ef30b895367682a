#!/usr/bin/env bash
# Live migration on loopback: a manager and a worker (release build, real runc and CRIU), an oci
# task holding N MB of touched memory and printing a counter every 10 ms, moved with
# `shoal task migrate`. Reports the downtime seen in the task's own output (last line before the
# freeze → first line after the restore, from the log timestamps), the manager's downtime and
# total, and the archive size. Run as root: scripts/bench-migrate.sh [MB ...] (default 10 100 500).
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
((${#sizes[@]})) || sizes=(10 100 500)
bash scripts/install-deps.sh >/dev/null
cargo build --release -q -p shoal
BIN=$PWD/target/release/shoal
D=$(mktemp -d /var/tmp/shoal-bench-migrate.XXXX)
cleanup() {
    # Tasks outlive their daemons: remove them (and wait for the agents) before the daemons go.
    for s in $(cli m service ls -q 2>/dev/null); do cli m service rm "$s" >/dev/null 2>&1 || true; done
    for _ in $(seq 1 100); do
        [ -z "$(ls -A "$D/m/agent/tasks" "$D/w/agent/tasks" 2>/dev/null)" ] && break
        sleep 0.1
    done
    pkill -f "$D/" 2>/dev/null || true
    sleep 0.5
    rm -rf "$D"
}
trap cleanup EXIT

cli() { "$BIN" -H "unix://$D/$1.sock" "${@:2}"; }
# The last value of a field the daemons logged (the source's freeze, the target's fetch and restore).
field() { cat "$D/m.log" "$D/w.log" | sed 's/\x1b\[[0-9;]*m//g' | grep -o "$1=[0-9]*" | tail -1 | cut -d= -f2; }
"$BIN" dev --data-dir "$D/m" --api-socket "$D/m.sock" --listen-addr 127.0.0.1:46301 --ui-addr off \
    --hostname bench-m >"$D/m.log" 2>&1 &
"$BIN" daemon --data-dir "$D/w" --api-socket "$D/w.sock" --listen-addr 127.0.0.1:46302 --ui-addr off \
    --hostname bench-w >"$D/w.log" 2>&1 &
for _ in $(seq 1 200); do [ -S "$D/m.sock" ] && [ -S "$D/w.sock" ] && cli m node ls >/dev/null 2>&1 && break; sleep 0.05; done
cli w cluster join --token "$(cli m cluster join-token worker -q)" 127.0.0.1:46301 >/dev/null
mkdir -p "$D/rootfs/bin"
cp /bin/busybox "$D/rootfs/bin/"
for l in sh dd head sleep; do ln -sf busybox "$D/rootfs/bin/$l"; done
tar -C "$D/rootfs" -cf "$D/rootfs.tar" .
for n in m w; do "$BIN" image --data-dir "$D/$n" import "$D/rootfs.tar" bench-mem:1 >/dev/null; done

echo "| memory | downtime in the task's output | downtime (manager) | total | archive | freeze | fetch + verify + unpack | restore |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for mb in "${sizes[@]}"; do
    svc="mem$mb"
    # dd keeps one block of $mb MB of random data while it waits to write it into the pipe.
    cli m service create -q -d --name "$svc" --driver oci bench-mem:1 sh -c \
        "dd if=/dev/urandom bs=${mb}M count=1 2>/dev/null | { head -c 1 >/dev/null; i=0; while true; do i=\$((i+1)); echo \$i; sleep 0.01; done; }" >/dev/null
    task=""
    for _ in $(seq 1 600); do
        task=$(cli m service ps "$svc" --format json | python3 -c '
import json,sys
t=[t for t in json.load(sys.stdin) if t["status"]["state"]=="running"]
print(t[0]["id"] if t else "")')
        [ -n "$task" ] && [ "$(cli m service logs "$svc" 2>/dev/null | wc -l)" -gt 50 ] && break
        sleep 0.1
    done
    out=$(cli m task migrate "$task" --format json)
    new=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["task"])')
    for _ in $(seq 1 100); do
        [ "$(cli m service logs "$svc" 2>/dev/null | grep -c "${new:0:12}")" -gt 5 ] && break
        sleep 0.1
    done
    cli m service logs -t "$svc" >"$D/logs-$mb.txt"
    [ -n "${DEBUG:-}" ] && head -3 "$D/logs-$mb.txt" && grep -m3 "${new:0:12}" "$D/logs-$mb.txt"
    gap=$(python3 -c '
import sys, datetime
old, new = sys.argv[1][:12], sys.argv[2][:12]
def ts(s):
    s = s.rstrip("Z")
    base, frac = (s.split(".") + ["0"])[:2]
    return datetime.datetime.fromisoformat(base).timestamp() + float("0." + frac)
last_old = first_new = None
for line in sys.stdin:
    if " | " not in line:
        continue
    # `service logs -t`: "TIMESTAMP TASK@NODE | line", as docker prints it.
    stamp, src = (line.split(" | ", 1)[0].split() + [""])[:2]
    t = ts(stamp)
    if old in src:
        last_old = max(last_old or t, t)
    elif new in src:
        first_new = min(first_new or t, t)
print("%.0f ms" % ((first_new - last_old) * 1000) if last_old and first_new else "n/a")
' "$task" "$new" <"$D/logs-$mb.txt")
    echo "$out" | python3 -c '
import json,sys
r=json.load(sys.stdin)
print("| %s MB | %s | %d ms | %d ms | %.1f MB | %s ms | %s ms | %s ms |" % (sys.argv[1], sys.argv[2], r["downtime_ms"], r["total_ms"], r["archive_bytes"]/1e6, *sys.argv[3:6]))' \
        "$mb" "$gap" "$(field freeze_ms)" "$(field fetch_ms)" "$(field restore_ms)"
    cli m service rm "$svc" >/dev/null
done
