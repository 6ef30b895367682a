#!/usr/bin/env bash
# Builds shoal and runs its main job: a single-node cluster (manager and worker in one daemon,
# embedded store) with its API on /run/shoal/shoal.sock and its state in /var/lib/shoal — the
# operator's way: `shoal daemon`, then `shoal cluster init` unless it is in a cluster already.
# Talk to it from another shell: target/release/shoal node ls, shoal service create ...
# Flags pass through (e.g. --data-dir /tmp/shoal --api-socket /tmp/shoal.sock).
set -euo pipefail
cd "$(dirname "$0")/.."
# The oci driver needs runc (and busybox-static makes a test image without a registry); the
# process driver needs nothing; overlay networks need iproute2, nftables and conntrack. Install
# them when missing and we are root on Debian.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    missing=()
    for p in runc busybox-static iproute2 nftables conntrack; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi
cargo build --release --locked -p shoal --bin shoal
# The task shim, static (about 1.7 MiB resident per task instead of 2.4): it runs beside every task.
bash scripts/static-shim.sh release
bin=target/release/shoal
sock=/run/shoal/shoal.sock
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --api-socket) sock="${args[i + 1]:-$sock}" ;;
        --api-socket=*) sock="${args[i]#--api-socket=}" ;;
    esac
done
"$bin" daemon "$@" &
daemon=$!
trap 'kill -TERM "$daemon" 2>/dev/null; wait "$daemon"; exit' INT TERM
# Wait until the daemon answers (it fails fast, e.g. when another daemon serves that socket); a
# daemon in no cluster yet becomes the first manager of a new one.
state=""
while [ -z "$state" ]; do
    kill -0 "$daemon" 2>/dev/null || { wait "$daemon"; exit $?; }
    if [ -S "$sock" ]; then
        if out=$("$bin" -H "unix://$sock" cluster inspect 2>&1); then
            state=member
        elif grep -q "not in a cluster" <<<"$out"; then
            state=new
        fi
    fi
    [ -n "$state" ] || sleep 0.2
done
if [ "$state" = new ]; then
    "$bin" -H "unix://$sock" cluster init
fi
wait "$daemon"
