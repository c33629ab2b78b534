#!/usr/bin/env bash
# Redis Streams throughput, against Debian's redis-server started here on a
# free port of loopback, in a temporary directory (stopped at the end):
#
#  1. the sink's raw rate: `generate` N items -> `redis_write`, with 1 and
#     with 2 workers (items/s);
#  2. the source's raw rate: `redis_read` of those N entries -> `drop`
#     (items/s);
#  3. an I/O-bound worker: `redis_read` -> `sleep 5ms` on 16 workers ->
#     `drop`, IO_N entries shared by one process, then by two processes of
#     the same group (items/s, and the ratio of two to one).
#
# The reading runs end with `stop_when_idle: 200ms`; their rate counts the
# run's time without those 200 ms. Each measure is taken ROUNDS times
# (default 3); the medians are printed, with the ratios.
#
#   benches/redis.sh
#   N=1000000 IO_N=40000 ROUNDS=5 benches/redis.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200000}
IO_N=${IO_N:-20000}
ROUNDS=${ROUNDS:-3}
IDLE_MS=200

command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
cargo build --release --quiet -p flow-cli
flow=${CARGO_TARGET_DIR:-$PWD/target}/release/flow
tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" \
  --logfile "$tmp/redis.log" &
server=$!
trap 'kill "$server" 2>/dev/null; rm -rf "$tmp"' EXIT
url="redis://127.0.0.1:$port"
for _ in $(seq 100); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.05
done
cd "$tmp"

cat >sink.yaml <<YAML
name: bench-sink
stages:
  - { name: items, type: generate, with: { count: \${N}, value: '{id: \$i, url: "https://example.org/page/\(\$i)"}' } }
  - { name: add, type: redis_write, workers: \${WORKERS}, with: { url: '$url', stream: '\${STREAM}' } }
YAML
cat >source.yaml <<YAML
name: bench-source
stages:
  - { name: jobs, type: redis_read, with: { url: '$url', stream: '\${STREAM}', group: g, consumer: '\${CONSUMER:-c}', stop_when_idle: ${IDLE_MS}ms } }
  - { name: work, type: sleep, workers: 16, with: { duration: '\${WORK:-0ms}' } }
  - { name: out, type: drop }
YAML
cat >raw-source.yaml <<YAML
name: bench-raw-source
stages:
  - { name: jobs, type: redis_read, with: { url: '$url', stream: '\${STREAM}', group: g, stop_when_idle: ${IDLE_MS}ms } }
  - { name: out, type: drop }
YAML

# The items/s of runs whose stats files are given, together: n items over
# the longest run's time, less the idle tail when `idle` is 1.
rate() {
  python3 - "$@" <<'PY'
import json, sys
n, idle, files = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3:]
runs = [json.load(open(f)) for f in files]
for r in runs:
    if r["status"] != "ok":
        sys.exit(f"a run failed: {r.get('failure')}")
elapsed = max(r["elapsed_s"] for r in runs) - (0.2 if idle else 0)
print(f"{n / elapsed:.0f}")
PY
}

: >results
for round in $(seq "$ROUNDS"); do
  line=""
  for workers in 1 2; do
    N=$N WORKERS=$workers STREAM="raw-$round-$workers" \
      "$flow" run sink.yaml --quiet --stats-json "sink$workers.json"
    line+="$(rate "$N" 0 "sink$workers.json") "
  done
  STREAM="raw-$round-1" "$flow" run raw-source.yaml --quiet --stats-json source.json
  len=$(python3 -c 'import json,sys; print(next(s for s in json.load(open("source.json"))["stages"] if s["name"] == "jobs")["items_out"])')
  [ "$len" = "$N" ] || { echo "the source read $len of $N entries" >&2; exit 1; }
  line+="$(rate "$N" 1 source.json) "
  for procs in 1 2; do
    stream="io-$round-$procs"
    N=$IO_N WORKERS=1 STREAM=$stream "$flow" run sink.yaml --quiet
    pids=()
    for p in $(seq "$procs"); do
      STREAM=$stream CONSUMER="w$p" WORK=5ms \
        "$flow" run source.yaml --quiet --stats-json "io$p.json" &
      pids+=($!)
    done
    wait "${pids[@]}"
    files=()
    for p in $(seq "$procs"); do files+=("io$p.json"); done
    line+="$(rate "$IO_N" 1 "${files[@]}") "
    pending=$(redis-cli -p "$port" xpending "$stream" g | head -n 1)
    [ "$pending" = "0" ] || { echo "$pending entries still pending on $stream" >&2; exit 1; }
  done
  read -r sink1 sink2 source io1 io2 <<<"$line"
  printf 'round %d: sink %s/s (1 worker), %s/s (2); source -> drop %s/s; sleep 5ms x16: 1 process %s/s, 2 processes %s/s\n' \
    "$round" "$sink1" "$sink2" "$source" "$io1" "$io2"
  echo "$line" >>results
done

python3 - results "$N" "$IO_N" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
med = [statistics.median(r[i] for r in rows) for i in range(5)]
sink1, sink2, source, io1, io2 = med
print(f"medians over {len(rows)} rounds ({sys.argv[2]} entries raw, {sys.argv[3]} I/O-bound):")
print(f"  generate -> redis_write, 1 worker : {sink1:>9,.0f} items/s")
print(f"  generate -> redis_write, 2 workers: {sink2:>9,.0f} items/s  ({sink2 / sink1:.2f}x)")
print(f"  redis_read -> drop                : {source:>9,.0f} items/s")
ideal = 16 / 0.005
print(f"  sleep 5ms x 16 workers, 1 process : {io1:>9,.0f} items/s  ({io1 / ideal:.0%} of its ideal {ideal:,.0f}/s)")
print(f"  sleep 5ms x 16 workers, 2 processes: {io2:>8,.0f} items/s  ({io2 / io1:.2f}x one process)")
PY
