#!/usr/bin/env bash
# The release binary as shipped: its size with and without debug information (scripts/install.sh
# strips it into a separate file) and its start-up times, each the median of TRIALS runs:
#   cli       `shoal --version` (exec, argument parsing, exit)
#   first     a fresh `shoal daemon` until `cluster init` has answered (keys, CA, Raft, first write)
#   restart   an initialized daemon (killed -9) started again until the API answers a
#             linearizable read (`node ls`): store opened, log replayed, leader elected
# Usage: scripts/bench-startup.sh [TRIALS]     (SHOAL_BIN: a binary to measure instead)
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=${1:-20}
if [ -z "${SHOAL_BIN:-}" ]; then
    cargo build --release --locked -q -p shoal
fi
BIN=${SHOAL_BIN:-$PWD/target/release/shoal}
W=$(mktemp -d)
trap 'pkill -9 -f "$W/" 2>/dev/null || true; rm -rf "$W"' EXIT
objcopy --only-keep-debug "$BIN" "$W/shoal.debug"
objcopy --strip-debug --add-gnu-debuglink="$W/shoal.debug" "$BIN" "$W/shoal"
mib() { python3 -c "import os,sys; print(f'{os.path.getsize(sys.argv[1])/1048576:.1f} MiB')" "$1"; }
echo "size: built $(mib "$BIN"), shipped (debug info stripped) $(mib "$W/shoal"), debug file $(mib "$W/shoal.debug")"

now() { date +%s%N; }
median() {
    sort -n | python3 -c "
import sys; v=[int(x) for x in sys.stdin]; n=len(v)
m = v[n//2] if n % 2 else (v[n//2-1]+v[n//2])/2
print(f'median {m/1000:.2f} ms, min {v[0]/1000:.2f} ms, max {v[-1]/1000:.2f} ms over {n} runs')"
}
for b in "$BIN" "$W/shoal"; do
    for t in $(seq 1 "$TRIALS"); do
        s=$(now); "$b" --version >/dev/null; e=$(now); echo $(((e - s) / 1000))
    done | { printf 'cli (%s): ' "$([ "$b" = "$BIN" ] && echo built || echo shipped)"; median; }
done

B="$W/shoal"
first=() restart=()
for t in $(seq 1 "$TRIALS"); do
    D="$W/t$t"
    mkdir -p "$D"
    port=$((21000 + t))
    cli() { "$B" -H "unix://$D/s.sock" "$@"; }
    start() {
        "$B" daemon --data-dir "$D/data" --api-socket "$D/s.sock" --listen-addr "127.0.0.1:$port" \
            --ui-addr off --etcd-addr off --hostname "n$t" >>"$D/log" 2>&1 &
        pid=$!
    }
    s=$(now)
    start
    until [ -S "$D/s.sock" ] && cli cluster init >/dev/null 2>&1; do sleep 0.005; done
    e=$(now)
    first+=($(((e - s) / 1000)))
    cli service create -d --name w --driver process true >/dev/null
    kill -9 "$pid"
    wait "$pid" 2>/dev/null || true
    s=$(now)
    start
    until [ -S "$D/s.sock" ] && cli node ls -q >/dev/null 2>&1; do sleep 0.005; done
    e=$(now)
    restart+=($(((e - s) / 1000)))
    kill -9 "$pid"
    wait "$pid" 2>/dev/null || true
done
printf '%s\n' "${first[@]}" | { printf 'first start to cluster init answered: '; median; }
printf '%s\n' "${restart[@]}" | { printf 'restart to a linearizable read: '; median; }
