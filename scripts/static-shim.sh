#!/usr/bin/env bash
# Builds the task shim (`shoal-shim`) as a static executable: linked against glibc's static
# archive, it maps no dynamic loader and no shared libc, so each task's shim holds ~1.7 MiB
# resident instead of ~2.4 (BENCHMARKS.md, "The lean shim"). Only the shim's own crate is
# compiled again (`cargo rustc` passes the flag to the final link alone); the daemon stays
# dynamically linked (glibc's NSS for names and host lookups).
#
# Usage: scripts/static-shim.sh [release|debug]
#   release (default): replaces target/release/shoal-shim, the one scripts/run.sh and
#                      scripts/install.sh use (build target/release/shoal first).
#   debug: writes target/debug/shoal-shim-static for the tests (crates/shoal/tests/static_shim.rs);
#          cargo's own target/debug/shoal-shim stays dynamic.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-release}
args=(-p shoal --bin shoal-shim --locked)
case "$profile" in
    release) args+=(--release) ;;
    debug) ;;
    *) echo "usage: $0 [release|debug]" >&2; exit 2 ;;
esac
cargo rustc -q "${args[@]}" -- -C target-feature=+crt-static
shim=target/$profile/shoal-shim
if readelf --program-headers "$shim" | grep -q INTERP; then
    echo "$shim is still dynamically linked" >&2
    exit 1
fi
if [ "$profile" = debug ]; then
    cp "$shim" target/debug/shoal-shim-static.tmp
    mv target/debug/shoal-shim-static.tmp target/debug/shoal-shim-static
fi
echo "static shim: $shim$([ "$profile" = debug ] && echo " -> target/debug/shoal-shim-static")"
