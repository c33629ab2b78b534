#!/usr/bin/env bash
# reduce keeps at most `max_keys` accumulators: peak RSS must stay flat when
# the distinct keys exceed it tenfold and a hundredfold. Runs
# `generate N -> reduce count_by (every item its own key) -> drop` with
# max_keys K for N = K, 10 K and 100 K, and prints flow's peak RSS and the
# accumulators emitted early.
#
#   benches/reduce_memory.sh            # K=10000
#   K=100000 benches/reduce_memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
K=${K:-10000}
cargo build --release --quiet -p flow-cli
flow=$PWD/target/release/flow
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/p.yaml" <<YAML
name: reduce-memory
stages:
  - { name: src, type: generate, with: { count: \${N}, value: '{k: \$i, pad: "some text to hold"}' } }
  - { name: count, type: reduce, workers: 2, with: { count_by: .k, max_keys: $K } }
  - { name: out, type: drop }
YAML
for n in "$K" $((K * 10)) $((K * 100)); do
  N=$n /usr/bin/time -f "%M %e" -o "$tmp/rss" "$flow" run "$tmp/p.yaml" --quiet --stats-json "$tmp/s.json" 2>"$tmp/log"
  read -r rss secs <"$tmp/rss"
  out=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print([s for s in d["stages"] if s["name"]=="out"][0]["items_in"])' "$tmp/s.json")
  printf 'distinct keys %9d (%4dx max_keys): peak RSS %6.1f MiB, %5.2fs, %d accumulators emitted\n' \
    "$n" $((n / K)) "$(echo "$rss / 1024" | bc -l)" "$secs" "$out"
done
