#!/usr/bin/env bash
# Builds shoal and runs its main job: a single-node cluster (manager and worker in one daemon,
# embedded store) with its API on /run/shoal/shoal.sock and its state in /var/lib/shoal.
# Talk to it from another shell: target/release/shoal node ls, shoal service create ...
# Flags pass through (e.g. --data-dir /tmp/shoal --api-socket /tmp/shoal.sock).
set -euo pipefail
cd "$(dirname "$0")/.."
# The oci driver needs runc (and busybox-static makes a test image without a registry); the
# process driver needs nothing. Install them when missing and we are root on Debian.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    missing=()
    for p in runc busybox-static; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi
cargo build --release --locked -p shoal
exec target/release/shoal dev "$@"
