#!/usr/bin/env bash
# What `timeout:` costs a cheap stage: benches/passthrough.yaml (generate N ->
# map '.' -> drop) against the same with `timeout: 10s` on the map
# (benches/timeout.yaml), alternating ROUNDS times in one run. A timeout on
# an expression stage is kept in place, per item (one clock reading each),
# without a thread per call.
#
#   benches/timeout_cost.sh             # N=5000000 ROUNDS=7
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-5000000}
ROUNDS=${ROUNDS:-7}
cargo build --release --quiet -p flow-cli
flow=target/release/flow
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rate() { COUNT=$N "$flow" run "$1" --quiet --stats-json "$tmp/s.json" >/dev/null
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["items_per_s"])' "$tmp/s.json"; }
: >"$tmp/results"
for round in $(seq "$ROUNDS"); do
  plain=$(rate benches/passthrough.yaml)
  timed=$(rate benches/timeout.yaml)
  printf 'round %d: no timeout %12.0f items/s   timeout: 10s %12.0f items/s\n' "$round" "$plain" "$timed"
  echo "$plain $timed" >>"$tmp/results"
done
python3 - "$tmp/results" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
plain = statistics.median(r[0] for r in rows)
timed = statistics.median(r[1] for r in rows)
print(f"medians: no timeout {plain:,.0f} items/s, timeout: 10s {timed:,.0f} items/s; ratio {timed / plain:.2f}")
PY
