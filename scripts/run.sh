#!/usr/bin/env bash
# Builds shoal and runs its main job. Until the daemon lands (control-plane issue) that is the
# scheduling brain on a simulated 1,000-node cluster; pass flags through, e.g. --nodes 10000.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p shoal
exec target/release/shoal simulate "$@"
