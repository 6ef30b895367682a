#!/usr/bin/env bash
# Longer fuzzing than the test suite does: every fuzz target (the proptest targets named fuzz_*
# and the fuzz modules of the API crates) run ROUNDS times, each with a fresh random seed, so
# each round explores inputs the suite's fixed seed never generates. A failure prints the seed:
# `PROPTEST_RNG_SEED=<seed> cargo nextest run --workspace -E '<filter>'` replays it, and proptest
# writes the shrunk case to the target's .proptest-regressions file, which the suite then replays.
#
#   scripts/fuzz.sh [ROUNDS]        (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-20}"
filter='binary(/^fuzz_/) | test(/fuzz/)'
export CARGO_INCREMENTAL=0
cargo nextest run --workspace --locked --no-run
for round in $(seq 1 "$rounds"); do
    seed=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')
    echo "==> round $round/$rounds, PROPTEST_RNG_SEED=$seed"
    if ! PROPTEST_RNG_SEED="$seed" cargo nextest run --workspace --locked --no-fail-fast \
        --status-level fail --final-status-level fail -E "$filter"; then
        echo "fuzz failure with PROPTEST_RNG_SEED=$seed (filter: $filter)" >&2
        exit 1
    fi
done
echo "==> $rounds rounds, no failure"
