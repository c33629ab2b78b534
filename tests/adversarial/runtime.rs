//! Adversarial tests of the runner, through the real binary: values nested
//! to crash a recursive walk, expressions that never end or recurse without
//! bound, outputs without end, signals while every worker is busy, drains
//! that would take a minute, waits of years. Each asserts the exact
//! behaviour: a per-item error with its message, the exit code, the counts,
//! and the process's own peak memory (`wait4`'s `ru_maxrss`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flow_tests::{flow, stage, stats, write_pipeline};

/// What a finished `flow` did, and its peak resident memory.
struct Measured {
    code: i32,
    stderr: String,
    peak_mib: f64,
}

/// Runs `cmd` to the end and measures the child's own peak RSS (not the
/// test process's, nor other tests' children).
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4, which also reports its peak memory"
)]
fn measured(cmd: &mut Command) -> Measured {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flow starts");
    let mut err = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let (code, peak_mib) = wait4(child.id());
    eprintln!("peak RSS of flow: {peak_mib:.0} MiB");
    Measured {
        code,
        stderr: reader.join().expect("the reader ends"),
        peak_mib,
    }
}

/// Reaps `pid` with wait4(2): its exit code (128 + the signal that killed
/// it) and its peak RSS in MiB.
fn wait4(pid: u32) -> (i32, f64) {
    let mut status = 0;
    // SAFETY: rusage is plain data, filled in by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, with valid pointers.
    let r = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    assert_eq!(r, pid as i32, "wait4 failed");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    (code, usage.ru_maxrss as f64 / 1024.0)
}

fn run_file(dir: &Path, yaml: &str, extra: &[&str]) -> (Measured, serde_json::Value) {
    let file = write_pipeline(dir, "p.yaml", yaml);
    let stats_file = dir.join("stats.json");
    let m = measured(
        flow()
            .arg("run")
            .arg(&file)
            .arg("--stats-json")
            .arg(&stats_file)
            .args(extra),
    );
    let s = if stats_file.exists() {
        stats(&stats_file)
    } else {
        panic!("no stats (exit {}):\n{}", m.code, m.stderr)
    };
    (m, s)
}

fn count(stats: &serde_json::Value, name: &str, key: &str) -> u64 {
    stage(stats, name)[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{name}.{key} in {stats}"))
}

/// The messages of the report's error summary.
fn messages(stats: &serde_json::Value) -> Vec<String> {
    stats["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

// ---- class 1: bounded resources -------------------------------------------

#[test]
fn values_nested_ten_thousand_deep_are_per_item_errors_from_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    std::fs::write(dir.path().join("deep.txt"), format!("{deep}\n[1]\n")).unwrap();
    // Through fromjson, and built by an expression and then written: each
    // a per-item error; the item after it still goes through.
    let yaml = r#"
stages:
  - name: text
    type: read
    with: { path: deep.txt, format: lines }
  - name: parse
    type: map
    with: { expr: 'fromjson' }
  - name: build
    type: map
    with: { expr: 'if . == [1] then reduce range(20000) as $i (.; [.]) else . end' }
  - name: save
    type: write
    with: { path: out.jsonl }
"#;
    let (m, stats) = run_file(dir.path(), yaml, &[]);
    assert_eq!(m.code, 3, "{}", m.stderr);
    assert_eq!(
        (
            count(&stats, "parse", "errors"),
            count(&stats, "parse", "items_out")
        ),
        (1, 1)
    );
    assert_eq!(
        (
            count(&stats, "build", "errors"),
            count(&stats, "build", "items_out")
        ),
        (1, 0)
    );
    let messages = messages(&stats);
    assert!(
        messages.contains(
            &"expression `fromjson`: fromjson: nested deeper than 256 levels (at byte 257)"
                .to_string()
        ),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.ends_with("gave a value nested deeper than 256 levels")),
        "{messages:?}"
    );
    // Read as JSON lines, the deep line is the source's record error.
    std::fs::write(dir.path().join("deep.jsonl"), format!("[1]\n{deep}\n[2]\n")).unwrap();
    let yaml = "stages:\n  - {name: r, type: read, with: {path: deep.jsonl, format: jsonl}}\n  - {name: save, type: write, with: {path: out2.jsonl}}\n";
    let (m, stats) = run_file(dir.path(), yaml, &[]);
    assert_eq!(m.code, 1, "{}", m.stderr);
    assert!(
        stats["failure"]
            .as_str()
            .unwrap()
            .contains("deep.jsonl:2: invalid JSON: nested deeper than 256 levels"),
        "{stats}"
    );
    assert_eq!(lines(&dir.path().join("out2.jsonl")), 1);
}

#[test]
fn one_item_with_endless_outputs_streams_under_backpressure_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    // A million outputs of one input reach the file; memory stays flat
    // because they are passed on while the input is still being handled.
    let yaml = r#"
stages:
  - name: one
    type: list
    with: { items: [1] }
  - name: many
    type: map
    with: { expr: 'range(1000000) | {i: ., pad: "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}' }
  - name: save
    type: write
    with: { path: out.jsonl }
"#;
    let (m, stats) = run_file(dir.path(), yaml, &[]);
    assert_eq!(m.code, 0, "{}", m.stderr);
    assert_eq!(count(&stats, "many", "items_out"), 1_000_000);
    assert_eq!(count(&stats, "save", "items_in"), 1_000_000);
    assert_eq!(lines(&dir.path().join("out.jsonl")), 1_000_000);
    // Held whole, 1M objects would take about 300 MiB.
    assert!(m.peak_mib < 120.0, "peak RSS {:.0} MiB", m.peak_mib);
}

#[test]
fn a_timed_out_evaluation_stops_using_cpu_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    // Thirty items, each an evaluation that would allocate without end;
    // each is stopped at its deadline instead of running on, abandoned.
    let yaml = r#"
stages:
  - name: items
    type: generate
    with: { count: 30 }
  - name: runaway
    type: map
    workers: 2
    timeout: 100ms
    with: { expr: '[range(1e12)] | length' }
  - name: save
    type: write
    with: { path: out.jsonl }
"#;
    let started = Instant::now();
    let (m, stats) = run_file(dir.path(), yaml, &[]);
    assert_eq!(m.code, 3, "{}", m.stderr);
    assert_eq!(count(&stats, "runaway", "errors"), 30);
    assert_eq!(messages(&stats), ["timed out after 100ms"]);
    assert!(m.peak_mib < 400.0, "peak RSS {:.0} MiB", m.peak_mib);
    // Not a timing assertion of flow's speed: an evaluation left running
    // would never let the process end at all.
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn recursion_without_bound_and_halt_are_item_errors_not_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"
stages:
  - name: items
    type: list
    with: { items: [1, 2, 3, 4] }
  - name: weird
    type: map
    with: { expr: 'if . == 1 then (def f: [f]; f) elif . == 2 then (def g: 1 + g; g) elif . == 3 then halt else . end' }
  - name: save
    type: write
    with: { path: out.jsonl }
"#;
    let (m, stats) = run_file(dir.path(), yaml, &[]);
    assert_eq!(m.code, 3, "{}", m.stderr);
    assert_eq!(count(&stats, "weird", "errors"), 3);
    assert_eq!(count(&stats, "save", "items_in"), 1);
    let deep = stats["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["message"].as_str().unwrap().ends_with(
                "recursed too deeply (the evaluation reached the end of the stack it may use)",
            )
        })
        .unwrap_or_else(|| panic!("{stats}"));
    assert_eq!(deep["count"], 2);
    let messages = messages(&stats);
    assert!(
        messages
            .iter()
            .any(|m| m.ends_with("halt(0) stops the expression, not flow")),
        "{messages:?}"
    );
}

// ---- class 2: signals always work -------------------------------------------

/// A running `flow` whose stderr is read on a thread (so a full pipe never
/// blocks it), line by line.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

fn spawn_run(dir: &Path, yaml: &str, extra: &[&str]) -> (Running, PathBuf) {
    use std::io::{BufRead, BufReader};
    let file = write_pipeline(dir, "p.yaml", yaml);
    let stats_file = dir.join("stats.json");
    let mut child = flow()
        .arg("run")
        .arg(&file)
        .arg("--stats-json")
        .arg(&stats_file)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().expect("piped");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (Running { child, lines }, stats_file)
}

/// Waits until a line of the run's stderr contains `needle` (the run has
/// reached that point); returns the lines read up to it.
fn read_until(run: &mut Running, needle: &str) -> String {
    let mut seen = String::new();
    loop {
        match run.lines.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(needle) {
                    return seen;
                }
            }
            Err(_) => panic!("flow never logged {needle:?}:\n{seen}"),
        }
    }
}

fn signal(run: &Running, sig: i32) {
    // SAFETY: signals our own child.
    assert_eq!(unsafe { libc::kill(run.child.id() as i32, sig) }, 0);
}

/// The child's exit code, reaped within `limit` or the test fails (and the
/// child is killed).
fn exit_within(run: &mut Running, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            return status.code().expect("flow exits on its own");
        }
        if start.elapsed() > limit {
            run.child.kill().unwrap();
            panic!("flow did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_is_honoured_while_every_worker_runs_a_runaway_expression() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let dir = tempfile::tempdir().unwrap();
        // Both cores busy for ever: no timeout, an evaluation without end
        // on every worker. `log` shows when the first item has reached it.
        let yaml = r#"
stages:
  - name: items
    type: generate
    with: { count: 1000 }
  - name: seen
    type: log
    with: { level: warn }
  - name: spin
    type: map
    workers: 4
    with: { expr: 'last(range(1e18))' }
  - name: save
    type: write
    with: { path: out.jsonl }
"#;
        let (mut child, stats_file) = spawn_run(dir.path(), yaml, &["--drain-timeout", "500ms"]);
        read_until(&mut child, "seen: 0");
        signal(&child, sig);
        assert_eq!(
            exit_within(&mut child, Duration::from_secs(20)),
            130,
            "signal {sig}"
        );
        let stats = stats(&stats_file);
        assert_eq!(stats["status"], "interrupted");
        // The four items in the workers' hands and whatever was queued are
        // abandoned and counted; none was written.
        let spin = count(&stats, "spin", "abandoned");
        assert!(spin >= 4, "{stats}");
        assert_eq!(count(&stats, "spin", "items_out"), 0);
        let emitted = count(&stats, "items", "items_out");
        let abandoned: u64 = ["items", "seen", "spin", "save"]
            .iter()
            .map(|s| count(&stats, s, "abandoned"))
            .sum();
        assert_eq!(
            count(&stats, "seen", "items_in") + count(&stats, "seen", "abandoned"),
            emitted
        );
        assert_eq!(
            count(&stats, "spin", "items_in") + spin,
            count(&stats, "seen", "items_out")
        );
        assert!(abandoned >= spin);
    }
}

#[test]
fn a_drain_is_bounded_by_the_drain_timeout_and_counts_what_it_abandons() {
    let dir = tempfile::tempdir().unwrap();
    // A signal 8 items into a one-second stage: draining its queue of 64
    // would take a minute. The source's batch in hand is not drained at all.
    let yaml = r#"
stages:
  - name: items
    type: generate
  - name: seen
    type: log
    with: { level: warn }
  - name: slow
    type: sleep
    with: { duration: 1s }
  - name: out
    type: write
    with: { path: out.jsonl }
"#;
    let (mut child, stats_file) = spawn_run(dir.path(), yaml, &["--drain-timeout", "1s"]);
    read_until(&mut child, "seen: 7");
    let signalled = Instant::now();
    signal(&child, libc::SIGTERM);
    assert_eq!(exit_within(&mut child, Duration::from_secs(20)), 130);
    // Within the drain timeout and the 2 s allowed to end after it.
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "{:?}",
        signalled.elapsed()
    );
    let stats = stats(&stats_file);
    let written = lines(&dir.path().join("out.jsonl")) as u64;
    assert_eq!(count(&stats, "out", "items_out"), written);
    let abandoned: u64 = ["items", "seen", "slow", "out"]
        .iter()
        .map(|s| count(&stats, s, "abandoned"))
        .sum();
    assert!(count(&stats, "slow", "abandoned") > 0, "{stats}");
    assert_eq!(
        written + abandoned,
        count(&stats, "items", "items_out"),
        "{stats}"
    );
}

#[test]
fn a_second_signal_exits_at_once_and_takes_child_processes_along() {
    let dir = tempfile::tempdir().unwrap();
    // Each worker's process writes its pid, then ignores its input for ever.
    std::fs::write(
        dir.path().join("stuck.py"),
        "import os, sys, time\nprint(f'pid {os.getpid()}', file=sys.stderr, flush=True)\nwhile True: time.sleep(1)\n",
    )
    .unwrap();
    let yaml = r#"
stages:
  - name: items
    type: generate
  - name: stuck
    type: exec
    workers: 2
    with: { command: [python3, stuck.py] }
  - name: out
    type: drop
"#;
    let (mut child, stats_file) = spawn_run(dir.path(), yaml, &["--drain-timeout", "60s"]);
    let mut log = read_until(&mut child, "pid ");
    log.push_str(&read_until(&mut child, "pid "));
    let pids: Vec<i32> = log
        .lines()
        .filter_map(|l| l.rsplit("pid ").next().and_then(|p| p.trim().parse().ok()))
        .collect();
    assert_eq!(pids.len(), 2, "{log}");
    signal(&child, libc::SIGINT);
    read_until(&mut child, "interrupted");
    signal(&child, libc::SIGINT);
    assert_eq!(exit_within(&mut child, Duration::from_secs(10)), 130);
    assert!(!stats_file.exists(), "an abort writes no stats");
    // The processes are gone (killed with their process groups).
    let deadline = Instant::now() + Duration::from_secs(10);
    for pid in pids {
        // SAFETY: kill with signal 0 only checks that the process exists.
        while unsafe { libc::kill(pid, 0) } == 0 {
            assert!(Instant::now() < deadline, "process {pid} outlived flow");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

// ---- class 3: nothing hangs on a silent peer --------------------------------

#[test]
fn a_retry_wait_of_years_ends_with_the_run() {
    use std::io::Write;
    use std::net::TcpListener;
    // A server that answers every request 503 with a Retry-After of 31
    // years.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 977616000\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
stages:
  - name: urls
    type: list
    with: {{ items: ["http://127.0.0.1:{port}/a"] }}
  - name: seen
    type: log
    with: {{ level: warn }}
  - name: fetch
    type: http
    retry: {{ attempts: 3 }}
  - name: out
    type: drop
"#
    );
    let (mut child, stats_file) = spawn_run(dir.path(), &yaml, &["--drain-timeout", "1s", "-v"]);
    read_until(&mut child, "retrying in");
    signal(&child, libc::SIGINT);
    assert_eq!(exit_within(&mut child, Duration::from_secs(20)), 130);
    let stats = stats(&stats_file);
    assert_eq!(count(&stats, "fetch", "abandoned"), 1, "{stats}");
}

// ---- class 1: what a config may ask for ------------------------------------

#[test]
fn a_source_that_fails_one_record_can_skip_or_dead_letter_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"a\":1}\nNaN\n{\"a\":2}\n{1: 2}\n",
    )
    .unwrap();
    let yaml = r#"
stages:
  - name: r
    type: read
    on_error: bad
    with: { path: in.jsonl, format: jsonl }
  - name: save
    type: write
    with: { path: out.jsonl }
  - name: bad
    type: write
    inputs: []
    with: { path: bad.jsonl }
"#;
    let (m, stats) = run_file(dir.path(), yaml, &[]);
    assert_eq!(m.code, 3, "{}", m.stderr);
    assert_eq!(lines(&dir.path().join("out.jsonl")), 2);
    assert_eq!(lines(&dir.path().join("bad.jsonl")), 2);
    assert_eq!(count(&stats, "r", "dead_lettered"), 2);
    assert_eq!(count(&stats, "r", "items_out"), 2);
}
