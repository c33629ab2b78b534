#!/usr/bin/env bash
# flow against hand-written tokio code (benches/tokio-baseline) on the four
# workloads users meet first, alternating the programs ROUNDS times in one
# run (the machines are noisy: only ratios measured side by side mean
# something). Prints each run, then the medians, the ratios and flow's peak
# RSS.
#
#   W1   generate N -> map '.' -> drop                 vs passthrough N (typed structs)
#   W1d  generate N -> map '{id: ., v: (. * 2)}' -> drop
#                                                      vs passthrough N --dynamic (serde_json::Value)
#   W2   generate 2000 -> sleep 10ms, 64 workers -> drop
#                                                      vs io-bound 2000 (ideal 0.3125 s)
#   W4   read M JSON lines -> filter '.score >= 50' -> map '.bucket = (.score / 10 | floor)'
#        -> write                                      vs json-lines --dynamic, and --dynamic --batch 256
#
# Rates are items (or records read) per second of wall time, process start
# to exit, for every program alike.
#
#   benches/compare.sh                          # N=5000000 M=1000000 ROUNDS=3
#   N=1000000 M=200000 ROUNDS=1 benches/compare.sh   # a quick look
#   FLOW_BEFORE=/path/to/older/flow benches/compare.sh
#                                               # an older build too, in the same rounds
#   ONLY="W4" benches/compare.sh                # some workloads only
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-5000000}
M=${M:-1000000}
ROUNDS=${ROUNDS:-3}
ONLY=${ONLY:-W1 W1d W2 W4}

cargo build --release --quiet -p flow-cli
cargo build --release --quiet --manifest-path benches/tokio-baseline/Cargo.toml --target-dir target/baseline
flow=$PWD/target/release/flow
tokio=$PWD/target/baseline/release/tokio-baseline
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cat >"$tmp/w1.yaml" <<'EOF'
name: w1
stages:
  - { name: src, type: generate, with: { count: ${N} } }
  - { name: map, type: map, with: { expr: '.' } }
  - { name: out, type: drop }
EOF
cat >"$tmp/w1d.yaml" <<'EOF'
name: w1d
stages:
  - { name: src, type: generate, with: { count: ${N} } }
  - { name: map, type: map, with: { expr: '{id: ., v: (. * 2)}' } }
  - { name: out, type: drop }
EOF
cat >"$tmp/w2.yaml" <<'EOF'
name: w2
stages:
  - { name: src, type: generate, with: { count: 2000 } }
  - { name: nap, type: sleep, workers: 64, with: { duration: 10ms } }
  - { name: out, type: drop }
EOF
cat >"$tmp/w4.yaml" <<'EOF'
name: w4
stages:
  - { name: in, type: read, with: { path: in.jsonl, format: jsonl } }
  - { name: keep, type: filter, with: { expr: '.score >= 50' } }
  - { name: bucket, type: map, with: { expr: '.bucket = (.score / 10 | floor)' } }
  - { name: out, type: write, with: { path: out.jsonl } }
EOF
if [[ " $ONLY " == *" W4 "* ]]; then
  python3 - "$tmp/in.jsonl" "$M" <<'PY'
import json, random, sys
random.seed(7)
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write(json.dumps({"id": i, "name": f"user-{i}", "score": random.randrange(100)}) + "\n")
PY
fi

# wall SECONDS of a command (stdout discarded); peak RSS KiB in $tmp/rss.
wall() {
  local start=$EPOCHREALTIME
  /usr/bin/time -f "%M" -o "$tmp/rss" "$@" >/dev/null
  awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }'
}
flow_run() { # flow_run WORKLOAD [FLOW]: wall seconds, RSS in $tmp/rss
  local bin=${2:-$flow}
  (cd "$tmp" && N=$N wall "$bin" run "$1.yaml" --quiet)
}

: >"$tmp/results"
record() { echo "$1 $2 $3 $4" >>"$tmp/results"; printf '  %-4s %-22s %8.3fs  %8s KiB\n' "$1" "$2" "$3" "$4"; }
for round in $(seq "$ROUNDS"); do
  echo "round $round"
  for w in $ONLY; do
    case $w in
      W1) t=$(wall "$tokio" passthrough "$N"); record W1 tokio "$t" "$(cat "$tmp/rss")" ;;
      W1d) t=$(wall "$tokio" passthrough "$N" --dynamic); record W1d tokio "$t" "$(cat "$tmp/rss")" ;;
      W2) t=$(wall "$tokio" io-bound 2000); record W2 tokio "$t" "$(cat "$tmp/rss")" ;;
      W4)
        t=$(wall "$tokio" json-lines "$tmp/in.jsonl" "$tmp/base.jsonl" --dynamic)
        record W4 tokio "$t" "$(cat "$tmp/rss")"
        t=$(wall "$tokio" json-lines "$tmp/in.jsonl" "$tmp/base.jsonl" --dynamic --batch 256)
        record W4 tokio-batched "$t" "$(cat "$tmp/rss")"
        ;;
    esac
    lower=$(echo "$w" | tr 'A-Z' 'a-z')
    t=$(flow_run "$lower"); record "$w" flow "$t" "$(cat "$tmp/rss")"
    if [ "$w" = W4 ] && ! cmp -s "$tmp/out.jsonl" "$tmp/base.jsonl"; then
      echo "W4: flow's output differs from the baseline's" >&2
      exit 1
    fi
    if [ -n "${FLOW_BEFORE:-}" ]; then
      t=$(flow_run "$lower" "$FLOW_BEFORE"); record "$w" before "$t" "$(cat "$tmp/rss")"
    fi
  done
done

python3 - "$tmp/results" "$N" "$M" <<'PY'
import statistics, sys
from collections import defaultdict
n, m = int(sys.argv[2]), int(sys.argv[3])
walls, rss = defaultdict(list), defaultdict(list)
for line in open(sys.argv[1]):
    w, who, t, k = line.split()
    walls[w, who].append(float(t))
    rss[w, who].append(int(k))
items = {"W1": n, "W1d": n, "W2": 2000, "W4": m}
print(f"\nmedians over the rounds (N={n}, M={m}):")
print(f"  {'workload':<9}{'program':<15}{'items/s':>12}{'wall':>9}{'peak RSS':>11}  ratio flow/this")
for w in ["W1", "W1d", "W2", "W4"]:
    if (w, "flow") not in walls:
        continue
    flow = statistics.median(walls[w, "flow"])
    for who in ["flow", "tokio", "tokio-batched", "before"]:
        if (w, who) not in walls:
            continue
        t = statistics.median(walls[w, who])
        ratio = "" if who == "flow" else f"{t / flow:.2f}"
        mib = max(rss[w, who]) / 1024
        print(f"  {w:<9}{who:<15}{items[w] / t:12,.0f}{t:8.3f}s{mib:8.1f} MiB  {ratio}")
if ("W2", "flow") in walls:
    print(f"  W2 flow / ideal (0.3125 s): {statistics.median(walls['W2', 'flow']) / 0.3125:.2f}")
PY
