#!/usr/bin/env bash
# What the live progress display costs: the runner-overhead benchmark
# (benches/passthrough.yaml: generate N -> map '.' -> drop) with stdout and
# stderr on a pseudo-terminal, so the live lines really draw, against the
# same run with --quiet, alternating the two ROUNDS times. Compares flow's CPU
# time (user + sys of the flow process alone, from wait4; the pty is drained
# by this script, outside what is measured): wall time on a shared machine is
# too noisy to see 2%, and so is CPU time while other jobs share the cores:
# it also reads the CPU time of flow's progress thread itself (its
# schedstat under /proc), the display's own cost. Prints every run, the
# medians and the overhead.
#
#   benches/progress.sh                 # N=10000000 ROUNDS=20
#   N=50000000 ROUNDS=6 benches/progress.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000000}
ROUNDS=${ROUNDS:-20}

cargo build --release --quiet -p flow-cli

COUNT=$N python3 - "$ROUNDS" "$N" target/release/flow <<'PY'
import fcntl, os, select, statistics, struct, sys, termios

rounds, n, flow = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
env = dict(os.environ, TERM="xterm-256color")


def display_thread_ns(pid):
    """CPU time of flow's progress thread so far (its schedstat), or None."""
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() == "flow-progress":
                    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                        return int(f.read().split()[0])
    except OSError:
        pass
    return None


def run(*args):
    """Runs flow on a fresh 80x24 pty: (user + sys seconds, bytes it drew,
    CPU seconds of its progress thread as last seen)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    pid = os.fork()
    if pid == 0:
        os.dup2(slave, 1)
        os.dup2(slave, 2)
        os.close(master)
        os.close(slave)
        os.execve(flow, [flow, "run", "benches/passthrough.yaml", *args], env)
    os.close(slave)
    screen = bytearray()
    thread_ns = 0
    while True:
        # Sample the progress thread's CPU time between reads: it ends
        # before the process does.
        thread_ns = display_thread_ns(pid) or thread_ns
        if not select.select([master], [], [], 0.02)[0]:
            continue
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # EIO: the last writer closed the pty
            break
        if not data:
            break
        screen += data
    _, status, usage = os.wait4(pid, 0)
    os.close(master)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"flow failed:\n{screen.decode(errors='replace')}")
    return usage.ru_utime + usage.ru_stime, bytes(screen), thread_ns / 1e9


run("--quiet")  # warm-up: page cache, CPU frequency
shown, quiet, thread = [], [], []
for r in range(1, rounds + 1):
    # Alternate which goes first, so a drift in the machine's load hits both.
    order = [("progress", ()), ("quiet", ("--quiet",))]
    if r % 2 == 0:
        order.reverse()
    line = []
    for name, args in order:
        cpu, screen, thread_s = run(*args)
        if name == "progress":
            # The live lines drew: cursor movement and a stage's queue.
            frames = screen.count(b"\x1b[2A")
            if frames == 0 or b"queue " not in screen:
                sys.exit("the live progress did not draw:\n" + screen.decode(errors="replace"))
            shown.append(cpu)
            thread.append(thread_s)
            line.append(f"progress {cpu:6.3f}s cpu (display thread {thread_s * 1e3:5.2f} ms)")
        else:
            if b"\x1b[" in screen or b"queue " in screen:
                sys.exit("--quiet drew progress:\n" + screen.decode(errors="replace"))
            quiet.append(cpu)
            line.append(f"quiet {cpu:6.3f}s cpu")
    print(f"round {r:2d}: " + "   ".join(line), flush=True)

p, q = statistics.median(shown), statistics.median(quiet)
mp, mq = statistics.mean(shown), statistics.mean(quiet)
print(f"{n:,} items, {rounds} rounds, CPU time (user + sys) of flow:")
print(f"  progress on a terminal: median {p:.3f}s  mean {mp:.3f}s  min {min(shown):.3f}s")
print(f"  --quiet               : median {q:.3f}s  mean {mq:.3f}s  min {min(quiet):.3f}s")
# Paired by round, so a change in the machine's load between rounds cancels.
paired = statistics.median((a - b) / b * 100 for a, b in zip(shown, quiet))
t = statistics.median(thread)
print(f"  the display thread itself: median {t * 1e3:.2f} ms = {t / q * 100:.2f}% of the quiet run's CPU time")
print(f"  overhead: median of the rounds' differences {paired:+.2f}%   of the medians {(p - q) / q * 100:+.2f}%"
      f"   of the means {(mp - mq) / mq * 100:+.2f}%   of the minimums {(min(shown) - min(quiet)) / min(quiet) * 100:+.2f}%"
      "   (target: under 2%)")
PY
