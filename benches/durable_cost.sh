#!/usr/bin/env bash
# The cost of a durable run (--state): `read` N jsonl records -> `filter` ->
# `map` -> `write`, with and without --state, alternating ROUNDS times in
# one run. Prints every run, the medians, the ratio, the checkpoints saved
# per second, and the time from a `kill -9` to the resumed run's first
# written item.
#
#   benches/durable_cost.sh              # N=1000000 ROUNDS=3 INTERVAL=1s
#   INTERVAL=100ms benches/durable_cost.sh   # checkpoints ten times as often
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000000}
ROUNDS=${ROUNDS:-3}
INTERVAL=${INTERVAL:-1s}
cargo build --release --quiet -p flow-cli
flow=$PWD/target/release/flow
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp/in.jsonl" "$N" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write('{"id": %d, "score": %d, "name": "item %d"}\n' % (i, i % 100, i))
PY
cat >"$tmp/p.yaml" <<'YAML'
name: durable-cost
checkpoint_interval: INTERVAL
stages:
  - { name: src, type: read, with: { path: in.jsonl, format: jsonl } }
  - { name: keep, type: filter, with: { expr: '.score >= 50' } }
  - { name: bucket, type: map, with: { expr: '.bucket = (.score / 10 | floor)' } }
  - { name: out, type: write, with: { path: out.jsonl } }
YAML
sed -i "s/INTERVAL/$INTERVAL/" "$tmp/p.yaml"
cd "$tmp"
wall() { local start=$EPOCHREALTIME; "$@"; awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }'; }
: >results
for round in $(seq "$ROUNDS"); do
  plain=$(wall "$flow" run p.yaml --quiet)
  durable=$(wall "$flow" run p.yaml --quiet --state st --fresh --stats-json stats.json 2>/dev/null)
  checkpoints=$(python3 -c 'import json; print(json.load(open("stats.json"))["durable"]["checkpoints"])')
  printf 'round %d: plain %.3fs   --state %.3fs (%s checkpoints)\n' "$round" "$plain" "$durable" "$checkpoints"
  echo "$plain $durable $checkpoints" >>results
done
python3 - results "$N" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
med = lambda i: statistics.median(r[i] for r in rows)
plain, durable, cps = med(0), med(1), med(2)
print(f"medians over {len(rows)} rounds, {sys.argv[2]} records:")
print(f"  plain   : {plain:.3f}s")
print(f"  --state : {durable:.3f}s   ({cps / durable:.1f} checkpoints/s)")
print(f"  ratio --state/plain (time): {durable / plain:.2f}")
PY

# From kill -9 to the resumed run's first written item.
rm -rf st out.jsonl
"$flow" run p.yaml --quiet --state st &
pid=$!
while [ ! -s st/checkpoint.json ]; do sleep 0.01; done
sleep 0.3
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
len=$(python3 -c 'import json; print(json.load(open("st/checkpoint.json"))["sinks"]["out"]["len"])')
start=$EPOCHREALTIME
"$flow" run p.yaml --quiet --state st &
pid=$!
# The resumed run first cuts the file back to the checkpoint's length.
while [ "$(stat -c %s out.jsonl)" -gt "$len" ]; do sleep 0.001; done
while [ "$(stat -c %s out.jsonl)" -le "$len" ]; do sleep 0.001; done
awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "kill -9 -> first item written by the resumed run: %.3fs\n", b - a }'
wait "$pid" || true
