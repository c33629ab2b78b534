#!/usr/bin/env bash
# Runner overhead: flow's `generate N -> map '.' -> drop` (benches/passthrough.yaml)
# against the hand-written tokio pipeline in benches/tokio-baseline
# (`passthrough N`: typed items, per-item sends, two hops), alternating the two
# ROUNDS times in one run. Prints every run, the medians, the ratio, and
# flow's peak RSS at N/10 and N items (queues are bounded: it must stay flat).
#
#   benches/passthrough.sh              # N=10000000 ROUNDS=5
#   N=1000000 ROUNDS=3 benches/passthrough.sh
#   FLOW_BEFORE=/path/to/older/flow benches/passthrough.sh
#                                       # also an older build, in the same rounds
#                                       # (a change's cost, measured side by side)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000000}
ROUNDS=${ROUNDS:-5}
BASELINE=${BASELINE:-benches/tokio-baseline}

cargo build --release --quiet -p flow-cli
cargo build --release --quiet --manifest-path "$BASELINE/Cargo.toml" --target-dir target/baseline
flow=target/release/flow
tokio=target/baseline/release/tokio-baseline
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

wall() { # prints the wall seconds of a command, its stdout to $tmp/out
  local start=$EPOCHREALTIME
  "$@" >"$tmp/out"
  awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }'
}

: >"$tmp/results"
for round in $(seq "$ROUNDS"); do
  t=$(wall "$tokio" passthrough "$N")
  tokio_rate=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["items_per_s"])' "$tmp/out")
  f=$(COUNT=$N wall "$flow" run benches/passthrough.yaml --quiet --stats-json "$tmp/stats.json")
  flow_rate=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["items_per_s"])' "$tmp/stats.json")
  printf 'round %d: tokio %12.0f items/s (wall %.3fs)   flow %12.0f items/s (wall %.3fs)\n' \
    "$round" "$tokio_rate" "$t" "$flow_rate" "$f"
  if [ -n "${FLOW_BEFORE:-}" ]; then
    b=$(COUNT=$N wall "$FLOW_BEFORE" run benches/passthrough.yaml --quiet --stats-json "$tmp/stats.json")
    before_rate=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["items_per_s"])' "$tmp/stats.json")
    printf '         before %12.0f items/s (wall %.3fs)\n' "$before_rate" "$b"
    echo "$tokio_rate $t $flow_rate $f $before_rate $b" >>"$tmp/results"
  else
    echo "$tokio_rate $t $flow_rate $f" >>"$tmp/results"
  fi
done

python3 - "$tmp/results" "$N" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
n = int(sys.argv[2])
med = lambda i: statistics.median(r[i] for r in rows)
tokio, tokio_wall, flow, flow_wall = med(0), med(1), med(2), med(3)
print(f"medians over {len(rows)} rounds, {n} items:")
print(f"  tokio baseline : {tokio:14,.0f} items/s   wall {tokio_wall:.3f}s")
print(f"  flow           : {flow:14,.0f} items/s   wall {flow_wall:.3f}s")
print(f"  ratio flow/tokio (items/s): {flow / tokio:.2f}   (wall, process start to exit): {tokio_wall / flow_wall:.2f}")
if len(rows[0]) > 4:
    before, before_wall = med(4), med(5)
    print(f"  before         : {before:14,.0f} items/s   wall {before_wall:.3f}s")
    print(f"  ratio before/tokio (items/s): {before / tokio:.2f}   (wall): {tokio_wall / before_wall:.2f}")
    print(f"  ratio flow/before (items/s): {flow / before:.2f}")
PY

for count in $((N / 10)) "$N"; do
  COUNT=$count /usr/bin/time -f "%M" -o "$tmp/rss" "$flow" run benches/passthrough.yaml --quiet
  echo "flow peak RSS at $count items: $(cat "$tmp/rss") KiB"
done
