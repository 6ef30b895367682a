#!/usr/bin/env bash
# Long runs of the chaos suite (crates/shoal/tests/chaos.rs): real managers on simulated hosts
# under kill -9, SIGSTOP, partitions (symmetric and asymmetric), a full disk and a slow disk (fsync
# delayed 200-500 ms), clients writing and reading through random managers, every history checked
# for linearizability.
#
#   scripts/chaos.sh                        # 100 cycles on 3 managers, then on 5
#   CYCLES=300 MANAGERS=3 SEEDS="1 2" scripts/chaos.sh
#
# Writes each run's report and history to target/chaos/ and the figures to RELIABILITY.md
# (between its markers). Needs root (namespaces, nftables, tmpfs), like the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
CYCLES=${CYCLES:-100}
MANAGERS=${MANAGERS:-"3 5"}
SEEDS=${SEEDS:-"1"}
out="$PWD/target/chaos"
mkdir -p "$out"
cargo build -q -p shoal --tests
for m in $MANAGERS; do
  for s in $SEEDS; do
    echo "chaos: $m managers, $CYCLES cycles, seed $s" >&2
    SHOAL_CHAOS_MANAGERS=$m SHOAL_CHAOS_CYCLES=$CYCLES SHOAL_CHAOS_SEED=$s \
      SHOAL_CHAOS_REPORT="$out/report-$m-$s.json" SHOAL_CHAOS_HISTORY="$out/history-$m-$s.json" \
      cargo nextest run -p shoal --test chaos --no-capture >"$out/run-$m-$s.log" 2>&1 ||
      echo "chaos: the run with $m managers and seed $s FAILED (see $out/run-$m-$s.log)" >&2
  done
done
python3 - "$out" "$CYCLES" <<'EOF'
import glob, json, os, re, sys
out, cycles = sys.argv[1], sys.argv[2]
rows = []
for f in sorted(glob.glob(os.path.join(out, "report-*.json"))):
    r = json.load(open(f))
    kinds = {}
    for line in r["faults"]:
        m = re.match(r"\d+: (\w+)", line)
        if m and "restarted" not in line:
            kinds[m.group(1)] = kinds.get(m.group(1), 0) + 1
    rows.append(
        f"| {r['managers']} | {r['seed']} | {r['cycles']} | {r['operations']} | {r['ok']} | {r['ambiguous']} "
        f"| {r['violations']} | {r['services_acknowledged']} | {r['services_missing']} | {r['phantom_services']} "
        f"| {r['duplicate_slots']} | {r['seconds']:.0f} | "
        + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
        + " |"
    )
table = "\n".join(
    [
        "| managers | seed | cycles | operations | acknowledged | ambiguous | violations | services created (acknowledged) | lost | phantom | duplicate slots | seconds | faults |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    + rows
)
path = "RELIABILITY.md"
text = open(path).read()
begin, end = "<!-- chaos:begin -->", "<!-- chaos:end -->"
new = f"{begin}\n{table}\n{end}"
text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: new, text, flags=re.S)
open(path, "w").write(text)
print(table)
EOF
