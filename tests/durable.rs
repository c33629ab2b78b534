//! Durable runs through the binary: a run killed (SIGKILL), interrupted
//! (SIGINT) or stopped (SIGTERM) at random moments and resumed each time
//! with the same command ends with exactly the output of one uninterrupted
//! run: nothing lost, nothing doubled. And the refusals: a checkpoint over
//! another pipeline, changed input, stdin, a newer format.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use flow_tests::{flow, run, write_pipeline};

/// 20,000 records through a slow stage of 8 workers: about 3 s, so that a
/// kill lands mid-run. Every 97th record fails and is dead-lettered.
const PIPELINE: &str = "name: durable
checkpoint_interval: 200ms
stages:
  - { name: src, type: read, with: { path: in.jsonl, format: jsonl } }
  - name: check
    type: map
    on_error: rejected
    with: { expr: 'if .n % 97 == 0 then error(\"bad \\(.n)\") else .m = .n * 2 end' }
  - { name: slow, type: sleep, workers: 8, ORDERED with: { duration: 1ms } }
  - { name: out, type: write, inputs: [slow], with: { path: out.jsonl } }
  - { name: rejected, type: write, inputs: [], with: { path: rejected.jsonl } }
";

const RECORDS: usize = 20_000;

/// A directory with the pipeline and its input.
fn setup(ordered: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let yaml = PIPELINE.replace("ORDERED ", if ordered { "ordered: true," } else { "" });
    write_pipeline(dir.path(), "p.yaml", &yaml);
    let input: String = (0..RECORDS).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    std::fs::write(dir.path().join("in.jsonl"), input).unwrap();
    dir
}

fn start(dir: &Path) -> Child {
    flow()
        .current_dir(dir)
        .args(["run", "p.yaml", "--state", "state", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flow starts")
}

/// A small seeded generator: the moments are the same on every run of the
/// test, and printed.
struct Moments(u64);

impl Moments {
    /// The next moment, between 150 and 1,500 ms.
    fn next(&mut self) -> Duration {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        Duration::from_millis(150 + (self.0 >> 33) % 1350)
    }
}

/// Runs the pipeline in `dir`, sending `signal` at `kills` seeded moments
/// and running the same command again after each, until a run ends by
/// itself. Returns the exit codes of the interrupted runs.
fn run_with_interruptions(dir: &Path, signal: i32, kills: usize, seed: u64) -> Vec<i32> {
    let mut moments = Moments(seed);
    let mut codes = Vec::new();
    for k in 0..kills {
        let at = moments.next();
        let mut child = start(dir);
        let started = Instant::now();
        while started.elapsed() < at {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.try_wait().unwrap().is_some() {
            // It finished before the moment came: nothing left to interrupt.
            println!("interruption {k}: the run had finished");
            return codes;
        }
        println!("interruption {k}: signal {signal} after {at:?}");
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = child.wait_with_output().unwrap();
        codes.push(out.status.code().unwrap_or(-1));
    }
    let out = start(dir).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "the last run: {stderr}");
    codes
}

fn sorted_lines(path: PathBuf) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

/// The output of one uninterrupted run.
fn reference(ordered: bool) -> (String, String) {
    let dir = setup(ordered);
    let out = start(dir.path()).wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.path().join("state/checkpoint.json").exists(),
        "a finished run keeps no checkpoint"
    );
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    (read("out.jsonl"), read("rejected.jsonl"))
}

fn interrupted_runs_equal_one_run(signal: i32, seed: u64) {
    let (out, rejected) = reference(false);
    assert_eq!(out.lines().count(), RECORDS - RECORDS.div_ceil(97));
    let dir = setup(false);
    let codes = run_with_interruptions(dir.path(), signal, 5, seed);
    println!("exit codes of the interrupted runs: {codes:?}");
    let mut want: Vec<&str> = out.lines().collect();
    want.sort();
    assert_eq!(
        sorted_lines(dir.path().join("out.jsonl")),
        want,
        "out.jsonl"
    );
    let mut want: Vec<&str> = rejected.lines().collect();
    want.sort();
    assert_eq!(
        sorted_lines(dir.path().join("rejected.jsonl")),
        want,
        "rejected.jsonl"
    );
}

#[test]
fn killed_five_times_and_resumed_the_output_is_one_runs() {
    interrupted_runs_equal_one_run(libc::SIGKILL, 1);
}

#[test]
fn interrupted_by_sigint_and_resumed_the_output_is_one_runs() {
    interrupted_runs_equal_one_run(libc::SIGINT, 2);
}

#[test]
fn stopped_by_sigterm_and_resumed_the_output_is_one_runs() {
    interrupted_runs_equal_one_run(libc::SIGTERM, 3);
}

#[test]
fn ordered_output_is_byte_identical_after_kills() {
    let (out, _) = reference(true);
    let dir = setup(true);
    run_with_interruptions(dir.path(), libc::SIGKILL, 5, 4);
    let got = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    assert!(got == out, "out.jsonl differs from the uninterrupted run's");
}

/// A checkpoint left by a killed run in `dir`.
fn killed_midway(dir: &Path) {
    let mut child = start(dir);
    let checkpoint = dir.join("state/checkpoint.json");
    let started = Instant::now();
    while !checkpoint.exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "no checkpoint");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

fn refused(dir: &Path) -> String {
    let out = run(flow()
        .current_dir(dir)
        .args(["run", "p.yaml", "--state", "state", "--quiet"]))
    .expect_code(2);
    out.stderr
}

#[test]
fn a_checkpoint_over_another_pipeline_or_changed_input_is_refused_and_fresh_starts_over() {
    let dir = setup(false);
    killed_midway(dir.path());
    // Another pipeline.
    let yaml = std::fs::read_to_string(dir.path().join("p.yaml")).unwrap();
    std::fs::write(dir.path().join("p.yaml"), yaml.replace("1ms", "2ms")).unwrap();
    let err = refused(dir.path());
    assert!(
        err.contains("the checkpoint was made by a different pipeline") && err.contains("--fresh"),
        "{err}"
    );
    std::fs::write(dir.path().join("p.yaml"), &yaml).unwrap();
    // A changed input: a line more, then a line less.
    let input = std::fs::read_to_string(dir.path().join("in.jsonl")).unwrap();
    std::fs::write(dir.path().join("in.jsonl"), input.clone() + "{\"n\": -1}\n").unwrap();
    let err = refused(dir.path());
    assert!(
        err.contains("stage \"src\": the input changed since the checkpoint: ./in.jsonl was"),
        "{err}"
    );
    let truncated: String = input.lines().take(10).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("in.jsonl"), truncated).unwrap();
    let err = refused(dir.path());
    assert!(
        err.contains("the input changed since the checkpoint"),
        "{err}"
    );
    std::fs::write(dir.path().join("in.jsonl"), &input).unwrap();
    // A checkpoint from a newer flow.
    let path = dir.path().join("state/checkpoint.json");
    let checkpoint = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        checkpoint.replacen("\"version\":1", "\"version\":99", 1),
    )
    .unwrap();
    let err = refused(dir.path());
    assert!(err.contains("written by a newer flow (format 99"), "{err}");
    // --fresh discards it: the run starts over and finishes.
    run(flow()
        .current_dir(dir.path())
        .args(["run", "p.yaml", "--state", "state", "--quiet", "--fresh"]))
    .expect_code(3);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.jsonl"))
            .unwrap()
            .lines()
            .count(),
        RECORDS - RECORDS.div_ceil(97)
    );
}

#[test]
fn standard_input_cannot_be_resumed() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(
        dir.path(),
        "p.yaml",
        "stages:\n  - { name: src, type: read, with: { path: '-' } }\n  - { name: out, type: drop }\n",
    );
    let out = run(flow()
        .current_dir(dir.path())
        .args(["run", "p.yaml", "--state", "state"]))
    .expect_code(2);
    assert!(
        out.stderr
            .contains("stage \"src\": a durable run (--state) needs sources it can resume")
            && out.stderr.contains("standard input"),
        "{}",
        out.stderr
    );
}

#[test]
fn validate_refuses_state_with_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        dir.path(),
        "p.yaml",
        "state: st\nstages:\n  - { name: src, type: read, with: { path: '-' } }\n  - { name: out, type: drop }\n",
    );
    let out = run(flow().arg("validate").arg(&file)).expect_code(2);
    assert_eq!(
        out.stderr.trim_end(),
        format!(
            "{}:3:5: stage \"src\": state: a durable run cannot resume a read of standard input (`-`), whose data cannot be read again; read a file, or remove `state:`",
            file.display()
        )
    );
}

#[test]
fn a_resumed_run_says_so_and_counts_the_items_done_before() {
    let dir = setup(false);
    killed_midway(dir.path());
    let stats = dir.path().join("stats.json");
    let out = run(flow()
        .current_dir(dir.path())
        .args(["run", "p.yaml", "--state", "state", "--stats-json"])
        .arg(&stats)
        .env("COLUMNS", "100"))
    .expect_code(3);
    let stats = flow_tests::stats(&stats);
    let before = stats["durable"]["items_done_before"].as_u64().unwrap();
    assert!(before > 0, "{stats}");
    assert!(
        out.stderr.contains(&format!(
            "resumed from checkpoint: {before} items already done"
        )),
        "{}",
        out.stderr
    );
    // This run's work, and the total over both runs.
    let src = flow_tests::stage(&stats, "src");
    assert_eq!(src["items_out"].as_u64().unwrap() + before, RECORDS as u64);
    // Progress and the dashboard count the whole job.
    assert_eq!(src["resumed"].as_u64(), Some(before), "{src}");
    assert_eq!(stats["durable"]["items_total"], RECORDS as u64);
    assert_eq!(stats["durable"]["resumed"], true);
}

/// An `exec` stage that records every call in `calls.txt` (one line per
/// item it was given, appended at once) before answering.
const COUNTING: &str = "import json, sys
with open('calls.txt', 'a', buffering=1) as calls:
    for line in sys.stdin:
        item = json.loads(line)
        calls.write(str(item['n']) + '\\n')
        print(json.dumps(item), flush=True)
";

#[test]
fn an_exec_stage_sees_every_item_at_least_once_and_the_reports_count_its_calls_made_again() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("count.py"), COUNTING).unwrap();
    write_pipeline(
        dir.path(),
        "p.yaml",
        "name: counted
checkpoint_interval: 200ms
stages:
  - { name: src, type: generate, with: { count: 6000, value: '{n: $i}' } }
  - { name: slow, type: sleep, workers: 8, with: { duration: 1ms } }
  - { name: count, type: exec, workers: 2, with: { command: [python3, count.py] } }
  - { name: out, type: write, with: { path: out.jsonl } }
",
    );
    let mut moments = Moments(5);
    let (replayed, calls_again);
    let mut runs = 0;
    let mut kills = 0;
    loop {
        runs += 1;
        let stats = dir.path().join(format!("stats-{runs}.json"));
        let mut child = flow()
            .current_dir(dir.path())
            .args([
                "run",
                "p.yaml",
                "--state",
                "state",
                "--quiet",
                "--stats-json",
            ])
            .arg(&stats)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let at = moments.next();
        let started = Instant::now();
        while started.elapsed() < at && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let finished = runs > 5 || child.try_wait().unwrap().is_some();
        if !finished {
            child.kill().unwrap();
            kills += 1;
        }
        let status = child.wait().unwrap();
        if finished {
            assert_eq!(status.code(), Some(0), "the last run");
            // Killed runs write no stats: the last run reports the replays
            // of every resumed run.
            let stats = flow_tests::stats(&stats);
            replayed = stats["durable"]["replayed_total"].as_u64().unwrap();
            calls_again = stats["durable"]["calls_replayed_total"]["count"]
                .as_u64()
                .unwrap_or(0);
            break;
        }
    }
    let calls: Vec<usize> = std::fs::read_to_string(dir.path().join("calls.txt"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let mut seen = vec![0u32; 6000];
    for &n in &calls {
        seen[n] += 1;
    }
    assert!(seen.iter().all(|&c| c >= 1), "an item was never handled");
    let extra = calls.len() - 6000;
    println!(
        "{runs} runs ({kills} killed), {} calls, {extra} extra; the reports: {calls_again} calls \
         of `count` made again, {replayed} items replayed",
        calls.len()
    );
    // Every call is counted before it is made, so the reports count every
    // extra call. A call counted when the kill came may not have reached
    // the program yet: at most one per worker (2) per kill.
    let extra = extra as u64;
    assert!(
        extra <= calls_again && calls_again <= extra + 2 * kills,
        "{extra} extra calls, the reports counted {calls_again} after {kills} kills"
    );
    assert!(
        calls_again <= replayed,
        "calls again {calls_again}, items {replayed}"
    );
    // The output file is still exactly one run's.
    assert_eq!(
        sorted_lines(dir.path().join("out.jsonl")).len(),
        6000,
        "out.jsonl"
    );
}
