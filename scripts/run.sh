#!/usr/bin/env bash
# Builds shoal and runs its main job: a single-node cluster (manager and worker in one daemon,
# embedded store) with its API on /run/shoal/shoal.sock and its state in /var/lib/shoal.
# Talk to it from another shell: target/release/shoal node ls, shoal service create ...
# Flags pass through (e.g. --data-dir /tmp/shoal --api-socket /tmp/shoal.sock).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p shoal
exec target/release/shoal dev "$@"
