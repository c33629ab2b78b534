#!/usr/bin/env bash
# Does `flow validate` take time and memory linear in the pipeline file's
# size, whatever the file holds? Generates pipeline files of growing size
# and prints, for each, the exit code, the wall time and the peak RSS of
# `flow validate`:
#
#   nested   one chain of nested block sequences (`- - - … x`) under a
#            stage's options, 10 to 160 KB: the deepest a file gets per byte
#   flow     nested flow collections (`[{a: [{a: …}]}]`), 10 to 160 KB
#   deep-ok  as deep as a file may nest (64 levels), again and again: items
#            of a `list` source 59 levels deep each, 10 to 160 KB; valid
#   stages   `map` stages of about 55 bytes each, 0.25 to 1 MB
#            (4,500 to 18,000 stages)
#   capped   as many stages as a pipeline may have (at most 1,000), made
#            bigger to reach 0.25 to 1 MB: every one is built
#
# A run is stopped after TIMEOUT seconds (default 120) or when its RSS
# passes MAX_RSS_MB (default 4096), so the old quadratic behaviour cannot
# take the machine down; such a run shows `killed`.
#
#   benches/config_scaling.sh
#   FLOW=target/debug/flow NO_BUILD=1 benches/config_scaling.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FLOW=${FLOW:-target/release/flow}
if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release --quiet -p flow-cli
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

python3 - "$FLOW" "$tmp" "${TIMEOUT:-120}" "${MAX_RSS_MB:-4096}" <<'PY'
import os, signal, sys, time

flow, tmp, timeout, max_rss_mb = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])

HEAD = "stages:\n  - name: gen\n    type: list\n    with:\n      items:\n"
TAIL = "  - name: out\n    type: drop\n"

def nested(size):
    # `- - - x`: every `- ` opens one more sequence, on one line.
    levels = max(1, (size - len(HEAD) - len(TAIL) - 12) // 2)
    return HEAD + "        - " + "- " * levels + "x\n" + TAIL

def flow_nested(size):
    unit_open, unit_close = "[{a: ", "}]"
    levels = max(1, (size - len(HEAD) - len(TAIL) - 12) // (len(unit_open) + len(unit_close)))
    return HEAD + "        - " + unit_open * levels + "x" + unit_close * levels + "\n" + TAIL

def deep_ok(size):
    item = "        - " + "[" * 59 + "1" + "]" * 59 + "\n"
    count = max(1, (size - len(HEAD) - len(TAIL)) // len(item))
    return HEAD + item * count + TAIL

def stages(size):
    out = ["stages:\n  - name: gen\n    type: generate\n    with: { count: 3 }\n"]
    n, i = len(out[0]) + len(TAIL), 0
    while n < size:
        s = f"  - name: s{i}\n    type: map\n    with: {{ expr: '.' }}\n"
        out.append(s)
        n += len(s)
        i += 1
    out.append(TAIL)
    return "".join(out)

def capped(size, count=1000):
    # `count` stages, each padded with a long expression to reach `size`.
    head = "stages:\n  - name: gen\n    type: generate\n    with: { count: 3 }\n"
    per = max(60, (size - len(head) - len(TAIL)) // count)
    pad = max(0, per - 60)
    expr = "." + " " * pad
    body = "".join(
        f"  - name: s{i}\n    type: map\n    with: {{ expr: '{expr}' }}\n" for i in range(count - 2)
    )
    return head + body + TAIL

def measure(path):
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        err = os.open(path + ".err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(err, 2)
        os.execv(flow, [flow, "validate", path])
    killed = None
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        try:
            with open(f"/proc/{pid}/status") as f:
                rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        except (OSError, StopIteration):
            rss = 0
        if rss > max_rss_mb * 1024:
            killed = f"killed: RSS over {max_rss_mb} MB"
        elif time.monotonic() - start > timeout:
            killed = f"killed: over {timeout:.0f} s"
        if killed:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            break
        time.sleep(0.01)
    elapsed = time.monotonic() - start
    code = os.waitstatus_to_exitcode(status)
    with open(path + ".err", errors="replace") as f:
        first = f.readline().strip()
    return code, elapsed, usage.ru_maxrss / 1024, killed or first

print(f"{'kind':<7} {'size':>8} {'exit':>5} {'seconds':>8} {'peak MB':>8}  first line of stderr")
rows = [("nested", nested, [10, 20, 40, 80, 160]),
        ("flow", flow_nested, [10, 20, 40, 80, 160]),
        ("deep-ok", deep_ok, [10, 20, 40, 80, 160]),
        ("stages", stages, [256, 512, 1024]),
        ("capped", capped, [256, 512, 1024])]
for kind, make, sizes in rows:
    for kb in sizes:
        text = make(kb * 1024)
        path = os.path.join(tmp, f"{kind}-{kb}k.yaml")
        with open(path, "w") as f:
            f.write(text)
        code, elapsed, peak, line = measure(path)
        line = line.replace(path, os.path.basename(path))
        if len(line) > 110:
            line = line[:107] + "..."
        print(f"{kind:<7} {len(text) / 1024:>6.0f}KB {code:>5} {elapsed:>8.2f} {peak:>8.1f}  {line}", flush=True)
PY
