#!/usr/bin/env bash
# Does a rate limit hold over a long run? For each rate, push enough items
# through a limited stage (benches/rate.yaml) to last SECONDS (default 10),
# and compare the achieved rate with the configured one. The first token is
# free (the bucket starts full), so N items take (N - 1) / rate seconds.
#
#   benches/rate.sh                 # 10/s 100/s 1000/s 5000/s, 10 s each
#   SECONDS_PER_RUN=5 RATES="50 500" benches/rate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_SECONDS=${SECONDS_PER_RUN:-10}
RATES=${RATES:-"10 100 1000 5000"}

cargo build --release --quiet -p flow-cli
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

printf '%10s %8s %10s %12s %9s\n' "configured" "items" "elapsed_s" "achieved/s" "error"
for rate in $RATES; do
  count=$((rate * RUN_SECONDS + 1))
  COUNT=$count RATE="$rate/s" target/release/flow run benches/rate.yaml --quiet --stats-json "$tmp/stats.json"
  python3 - "$tmp/stats.json" "$rate" "$count" <<'PY'
import json, sys
stats = json.load(open(sys.argv[1]))
rate, count = float(sys.argv[2]), int(sys.argv[3])
elapsed = stats["elapsed_s"]
achieved = (count - 1) / elapsed
print(f"{rate:>8.0f}/s {count:>8} {elapsed:>10.3f} {achieved:>12.2f} {100 * (achieved / rate - 1):>+8.2f}%")
PY
done
