#!/usr/bin/env bash
# The scraper at full speed: N URLs (default 5000) through `http` with
# WORKERS workers (default 64) and no rate limit (benches/scraper.yaml),
# against flow-bench-server (tests/bin/bench_server.rs), a Rust server on
# loopback that answers every request after LATENCY_MS (default 10).
# The ideal is N x LATENCY_MS / WORKERS (5000 x 10 ms / 64 = 0.78 s); the
# pipeline should come within 1.5x of it. Runs ROUNDS times (default 3),
# prints each run and the median, and checks every page was saved.
#
#   benches/scraper.sh
#   N=20000 WORKERS=128 LATENCY_MS=20 ROUNDS=5 benches/scraper.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-5000}
WORKERS=${WORKERS:-64}
LATENCY_MS=${LATENCY_MS:-10}
ROUNDS=${ROUNDS:-3}

cargo build --release --quiet -p flow-cli
cargo build --release --quiet -p flow-tests --bin flow-bench-server
tmp=$(mktemp -d)
target/release/flow-bench-server --latency-ms "$LATENCY_MS" >"$tmp/server" &
server=$!
trap 'kill "$server" 2>/dev/null; rm -rf "$tmp"' EXIT

# The server prints its base URL once it accepts connections.
for _ in $(seq 100); do
  [ -s "$tmp/server" ] && break
  sleep 0.05
done
base=$(head -n 1 "$tmp/server")
[ -n "$base" ] || { echo "flow-bench-server did not start" >&2; exit 1; }
seq 0 $((N - 1)) | sed "s|^|$base/page/|" >"$tmp/urls.txt"

printf 'N=%d workers=%d latency=%dms, ideal %.3fs\n' "$N" "$WORKERS" "$LATENCY_MS" \
  "$(awk -v n="$N" -v l="$LATENCY_MS" -v w="$WORKERS" 'BEGIN { print n * l / 1000 / w }')"
: >"$tmp/results"
for round in $(seq "$ROUNDS"); do
  mkdir -p "$tmp/out"
  start=$EPOCHREALTIME
  URLS="$tmp/urls.txt" OUT="$tmp/out" WORKERS="$WORKERS" \
    target/release/flow run benches/scraper.yaml --quiet --stats-json "$tmp/stats.json"
  end=$EPOCHREALTIME
  python3 - "$tmp/stats.json" "$tmp/out" "$N" "$LATENCY_MS" "$WORKERS" "$start" "$end" "$round" \
    >>"$tmp/results" <<'PY'
import json, sys
stats_file, out, n, latency_ms, workers, start, end, round_ = sys.argv[1:]
n, latency_ms, workers = int(n), float(latency_ms), int(workers)
stats = json.load(open(stats_file))
saved = sum(1 for _ in open(f"{out}/pages.jsonl"))
failed = sum(1 for _ in open(f"{out}/failed.jsonl"))
if saved != n or failed:
    sys.exit(f"round {round_}: {saved} of {n} pages saved, {failed} failed")
ideal = n * latency_ms / 1000 / workers
elapsed, wall = stats["elapsed_s"], float(end) - float(start)
fetch = next(s for s in stats["stages"] if s["name"] == "fetch")
lat = fetch['latency_ms']
print(f"{elapsed:.3f} {wall:.3f} {elapsed / ideal:.3f} {lat['p50']:.1f} {lat['p99']:.1f} {fetch['busy_pct']:.0f}")
PY
  read -r elapsed wall ratio p50 p99 busy < <(tail -n 1 "$tmp/results")
  printf 'round %d: run %.3fs (%.2fx ideal), process wall %.3fs, fetch p50 %sms p99 %sms busy %s%%\n' \
    "$round" "$elapsed" "$ratio" "$wall" "$p50" "$p99" "$busy"
done

python3 - "$tmp/results" "$N" "$LATENCY_MS" "$WORKERS" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
n, latency_ms, workers = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
ideal = n * latency_ms / 1000 / workers
elapsed = statistics.median(r[0] for r in rows)
wall = statistics.median(r[1] for r in rows)
print(f"median over {len(rows)} rounds: run {elapsed:.3f}s = {elapsed / ideal:.2f}x ideal {ideal:.3f}s "
      f"({n / elapsed:,.0f} pages/s); process wall {wall:.3f}s = {wall / ideal:.2f}x")
verdict = "within" if elapsed <= 1.5 * ideal else "NOT within"
print(f"{verdict} 1.5x of ideal")
sys.exit(0 if elapsed <= 1.5 * ideal else 1)
PY
