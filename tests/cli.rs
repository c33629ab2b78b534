//! The command line: subcommands, exit codes, `--stats-json`, `--quiet`,
//! stdin and stdout.

use std::io::Write;
use std::process::Stdio;

use flow_tests::{flow, read_jsonl, run, stats, write_pipeline};

const BUILT_IN: [&str; 9] = [
    "drop", "filter", "generate", "list", "map", "read", "sleep", "stdout", "write",
];

#[test]
fn stages_lists_the_built_in_types_with_their_kind() {
    let out = run(flow().arg("stages")).expect_code(0);
    for name in BUILT_IN {
        let line = out
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing from:\n{}", out.stdout));
        let kind = line.split_whitespace().nth(1).unwrap();
        assert!(["source", "processor", "sink"].contains(&kind), "{line}");
    }
}

#[test]
fn stages_type_shows_its_options_and_an_example() {
    let out = run(flow().args(["stages", "map"])).expect_code(0);
    assert!(
        out.stdout.contains("expr: string (required)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("The jq expression"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("example:\n  - name: square\n    type: map"),
        "{}",
        out.stdout
    );
    for name in BUILT_IN {
        let page = run(flow().args(["stages", name])).expect_code(0);
        assert!(
            page.stdout.starts_with(&format!("{name} (")),
            "{}",
            page.stdout
        );
    }
}

#[test]
fn stages_with_an_unknown_type_suggests_one_and_exits_2() {
    let out = run(flow().args(["stages", "mpa"])).expect_code(2);
    assert!(
        out.stderr
            .contains("unknown stage type \"mpa\" (did you mean \"map\"?)"),
        "{}",
        out.stderr
    );
}

#[test]
fn usage_errors_exit_2() {
    run(flow().arg("nosuchcommand")).expect_code(2);
    run(flow().arg("run")).expect_code(2);
    run(flow().args(["run", "p.yaml", "--no-such-flag"])).expect_code(2);
}

fn items_with_one_failure(on_error: &str) -> String {
    format!(
        "stages:\n  - {{name: n, type: generate, with: {{count: 6}}}}\n  - name: check\n    type: map\n    on_error: {on_error}\n    with: {{expr: 'if . == 3 then error(\"three is bad\") else . end'}}\n  - {{name: out, type: write, with: {{path: out.jsonl}}}}\n"
    )
}

#[test]
fn a_run_with_dropped_items_exits_3_and_reports_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), "p.yaml", &items_with_one_failure("drop"));
    let stats_file = dir.path().join("stats.json");
    let out = run(flow()
        .arg("run")
        .arg(&file)
        .arg("--stats-json")
        .arg(&stats_file))
    .expect_code(3);
    assert_eq!(read_jsonl(&dir.path().join("out.jsonl")), [0, 1, 2, 4, 5]);
    let stats = stats(&stats_file);
    let check = flow_tests::stage(&stats, "check");
    assert_eq!(check["errors"], 1);
    assert_eq!(check["dropped"], 1);
    // The status agrees with the exit code, and says how many failed.
    assert_eq!(stats["status"], "partial");
    assert_eq!(stats["exit_code"], 3);
    assert_eq!(stats["items_failed"], 1);
    assert!(
        out.stderr.contains("finished, 1 item failed in "),
        "{}",
        out.stderr
    );
    assert_eq!(
        stats["errors"][0]["message"],
        "expression `if . == 3 then error(\"three i…`: three is bad"
    );
    assert_eq!(stats["errors"][0]["sample"], "3");
    assert!(
        out.stderr.contains("1× check: expression"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_run_stopped_by_on_error_fail_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), "p.yaml", &items_with_one_failure("fail"));
    let stats_file = dir.path().join("stats.json");
    let out = run(flow()
        .arg("run")
        .arg(&file)
        .arg("--stats-json")
        .arg(&stats_file))
    .expect_code(1);
    assert!(out.stderr.contains("three is bad"), "{}", out.stderr);
    let stats = stats(&stats_file);
    assert_eq!(stats["status"], "failed");
    assert_eq!(stats["exit_code"], 1);
    assert!(
        stats["failure"]
            .as_str()
            .unwrap()
            .contains("on_error: fail"),
        "{stats}"
    );
}

#[test]
fn a_clean_run_exits_0_and_writes_the_stats_contract() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        dir.path(),
        "p.yaml",
        "name: contract\nstages:\n  - {name: n, type: generate, with: {count: 10}}\n  - {name: keep, type: filter, with: {expr: '. < 4'}}\n  - {name: out, type: drop}\n",
    );
    let stats_file = dir.path().join("stats.json");
    run(flow()
        .arg("run")
        .arg(&file)
        .arg("--stats-json")
        .arg(&stats_file)
        .arg("--quiet"))
    .expect_code(0);
    let stats = stats(&stats_file);
    assert_eq!(stats["pipeline"], "contract");
    assert_eq!(stats["status"], "ok");
    assert_eq!(stats["exit_code"], 0);
    assert_eq!(stats["items_failed"], 0);
    assert!(stats["elapsed_s"].is_number() && stats["items_per_s"].is_number());
    let keep = flow_tests::stage(&stats, "keep");
    for field in [
        "name",
        "type",
        "workers",
        "items_in",
        "items_out",
        "errors",
        "retries",
        "dropped",
        "dead_lettered",
        "busy_pct",
    ] {
        assert!(!keep[field].is_null(), "missing {field}: {keep}");
    }
    for p in ["p50", "p90", "p99", "max"] {
        assert!(keep["latency_ms"][p].is_number(), "{keep}");
    }
    for q in ["capacity", "peak", "full_pct"] {
        assert!(keep["queue"][q].is_number(), "{keep}");
    }
    for w in ["rate_limit", "backpressure"] {
        assert!(keep["wait_s"][w].is_number(), "{keep}");
    }
    // A filter's items in minus items out are the items it filtered out.
    assert_eq!(keep["items_in"], 10);
    assert_eq!(keep["items_out"], 4);
    assert!(stats["bottleneck"]["stage"].is_string() && stats["bottleneck"]["reason"].is_string());
}

#[test]
fn quiet_prints_no_table_and_the_table_goes_to_stderr_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        dir.path(),
        "p.yaml",
        "stages:\n  - {name: n, type: generate, with: {count: 2}}\n  - {name: out, type: stdout}\n",
    );
    let quiet = run(flow().arg("run").arg(&file).arg("--quiet")).expect_code(0);
    assert_eq!(quiet.stdout, "0\n1\n");
    assert_eq!(quiet.stderr, "");
    let loud = run(flow().arg("run").arg(&file)).expect_code(0);
    assert_eq!(loud.stdout, "0\n1\n");
    assert!(loud.stderr.contains("bottleneck:"), "{}", loud.stderr);
}

#[test]
fn read_takes_stdin_with_a_dash() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        dir.path(),
        "p.yaml",
        "stages:\n  - {name: in, type: read, with: {path: '-', format: jsonl}}\n  - {name: twice, type: map, with: {expr: '.n * 2'}}\n  - {name: out, type: stdout}\n",
    );
    let mut child = flow()
        .arg("run")
        .arg(&file)
        .arg("--quiet")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"n\": 1}\n\n{\"n\": 21}\n")
        .unwrap();
    let out: flow_tests::Run = child.wait_with_output().unwrap().into();
    let out = out.expect_code(0);
    assert_eq!(out.stdout, "2\n42\n");
}

#[test]
fn a_bad_json_line_stops_the_run_naming_the_line_after_handling_the_lines_before() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"n\": 1}\n{\"n\": 2}\n{not json}\n{\"n\": 4}\n",
    )
    .unwrap();
    let file = write_pipeline(
        dir.path(),
        "p.yaml",
        "stages:\n  - {name: in, type: read, with: {path: in.jsonl, format: jsonl}}\n  - {name: out, type: write, with: {path: out.jsonl}}\n",
    );
    let out = run(flow().arg("run").arg(&file)).expect_code(1);
    assert!(
        out.stderr.contains("in.jsonl:3: invalid JSON"),
        "{}",
        out.stderr
    );
    assert_eq!(
        read_jsonl(&dir.path().join("out.jsonl")),
        [serde_json::json!({"n": 1}), serde_json::json!({"n": 2})]
    );
}

#[test]
fn a_missing_input_file_stops_the_run_with_exit_1_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        dir.path(),
        "p.yaml",
        "stages:\n  - {name: in, type: read, with: {path: nowhere.txt}}\n  - {name: out, type: drop}\n",
    );
    let out = run(flow().arg("run").arg(&file)).expect_code(1);
    assert!(
        out.stderr.contains("cannot open") && out.stderr.contains("nowhere.txt"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_plain_binary_does_not_know_plugin_types() {
    // Registration is by linking: `slugify` lives in the example plugin.
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        dir.path(),
        "p.yaml",
        "stages:\n  - {name: a, type: list, with: {items: [x]}}\n  - {name: b, type: slugify}\n  - {name: c, type: drop}\n",
    );
    let out = run(flow().arg("validate").arg(&file).current_dir(dir.path())).expect_code(2);
    assert!(
        out.stderr.contains(
            "unknown stage type \"slugify\" (`flow stages` lists the known ones); if it comes from a plugin crate, the flow binary must link it (in its main.rs: use my_plugin as _;)"
        ),
        "{}",
        out.stderr
    );
}

mod signals {
    use std::io::{BufRead, BufReader};
    use std::path::Path;
    use std::process::{Child, ChildStderr, Command, Stdio};
    use std::time::{Duration, Instant};

    use flow_tests::{flow, stage, stats, write_pipeline};

    fn send(child: &Child, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Polls `ready` (a file growing, a log line) until it holds; panics
    /// after `limit` so a broken run fails instead of hanging the suite.
    fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ready() {
            assert!(start.elapsed() < limit, "timed out waiting for the run");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn exit_code_within(child: &mut Child, limit: Duration) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status
                    .code()
                    .expect("flow exits, it is not killed by the signal");
            }
            if start.elapsed() > limit {
                child.kill().unwrap();
                panic!("flow did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn lines(path: &Path) -> u64 {
        std::fs::read_to_string(path).map_or(0, |t| t.lines().count() as u64)
    }

    #[test]
    fn ctrl_c_sigterm_or_sighup_drains_the_pipeline_and_exits_130() {
        for signal in ["-INT", "-TERM", "-HUP"] {
            let dir = tempfile::tempdir().unwrap();
            let file = write_pipeline(
                dir.path(),
                "p.yaml",
                "stages:\n  - {name: gen, type: generate, with: {value: '{n: $i}'}}\n  - {name: twice, type: map, workers: 2, with: {expr: '.n * 2'}}\n  - {name: out, type: write, with: {path: out.jsonl}}\n",
            );
            let stats_file = dir.path().join("stats.json");
            let out = dir.path().join("out.jsonl");
            let mut child = flow()
                .arg("run")
                .arg(&file)
                .arg("--stats-json")
                .arg(&stats_file)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            // The endless source is running once output reaches the file.
            wait_until(Duration::from_secs(30), || {
                std::fs::metadata(&out).is_ok_and(|m| m.len() > 100_000)
            });
            send(&child, signal);
            assert_eq!(
                exit_code_within(&mut child, Duration::from_secs(30)),
                130,
                "{signal}"
            );
            let stats = stats(&stats_file);
            assert_eq!(stats["status"], "interrupted");
            assert_eq!(stats["exit_code"], 130);
            let emitted = stage(&stats, "gen")["items_out"].as_u64().unwrap();
            assert!(emitted > 0);
            // Nothing vanished: every item the source emitted is in the file
            // or counted as abandoned (what the source had read but not yet
            // sent when the signal came).
            let count = |name: &str, key: &str| stage(&stats, name)[key].as_u64().unwrap();
            let abandoned: u64 = ["gen", "twice", "out"]
                .iter()
                .map(|s| count(s, "abandoned"))
                .sum();
            assert_eq!(lines(&out), count("out", "items_out"), "{signal}");
            assert_eq!(lines(&out) + abandoned, emitted, "{signal}: {stats}");
            for name in ["twice", "out"] {
                assert_eq!(count(name, "items_in"), count(name, "items_out"), "{name}");
            }
        }
    }

    fn read_until(stderr: &mut BufReader<ChildStderr>, needle: &str) {
        let mut line = String::new();
        loop {
            line.clear();
            let n = stderr.read_line(&mut line).unwrap();
            assert!(n > 0, "flow ended before logging {needle:?}");
            if line.contains(needle) {
                return;
            }
        }
    }

    #[test]
    fn a_second_ctrl_c_aborts_at_once() {
        let dir = tempfile::tempdir().unwrap();
        // Draining would take over a minute: 64 queued items, one second each.
        let file = write_pipeline(
            dir.path(),
            "p.yaml",
            "stages:\n  - {name: gen, type: generate}\n  - {name: slow, type: sleep, with: {duration: 1s}}\n  - {name: out, type: drop}\n",
        );
        let stats_file = dir.path().join("stats.json");
        let mut child = flow()
            .arg("run")
            .arg(&file)
            .arg("-v")
            .arg("--stats-json")
            .arg(&stats_file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        read_until(&mut stderr, "input queue full");
        send(&child, "-INT");
        read_until(&mut stderr, "interrupted");
        send(&child, "-INT");
        assert_eq!(exit_code_within(&mut child, Duration::from_secs(10)), 130);
        assert!(!stats_file.exists(), "an abort writes no stats");
    }
}

#[test]
fn a_slow_stream_reaches_stdout_as_it_arrives() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        dir.path(),
        "p.yaml",
        "stages:\n  - {name: in, type: read, with: {path: '-', format: jsonl}}\n  - {name: out, type: stdout}\n",
    );
    let mut child = flow()
        .arg("run")
        .arg(&file)
        .arg("--quiet")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    // Each line must come out while the input is still open: nothing
    // waits for a buffer to fill or for the end of input.
    for n in 1..=3 {
        writeln!(stdin, "{{\"n\": {n}}}").unwrap();
        stdin.flush().unwrap();
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the item reached stdout while the stream was open");
        assert_eq!(line, format!("{{\"n\":{n}}}"));
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

mod bottleneck {
    use flow_tests::{flow, run, stats, write_pipeline};

    /// `slow` takes 20 ms an item, `steady` 5 ms; `slow`'s workers vary.
    fn bottleneck_with_slow_workers(workers: u32) -> serde_json::Value {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "stages:
  - {{name: jobs, type: generate, with: {{count: 120}}}}
  - {{name: slow, type: sleep, workers: {workers}, with: {{duration: 20ms}}}}
  - {{name: steady, type: sleep, with: {{duration: 5ms}}}}
  - {{name: out, type: drop}}
"
        );
        let file = write_pipeline(dir.path(), "p.yaml", &yaml);
        let stats_file = dir.path().join("stats.json");
        let out = run(flow()
            .arg("run")
            .arg(&file)
            .arg("--stats-json")
            .arg(&stats_file))
        .expect_code(0);
        let stats = stats(&stats_file);
        let line = format!(
            "bottleneck: {}: {}",
            stats["bottleneck"]["stage"].as_str().unwrap(),
            stats["bottleneck"]["reason"].as_str().unwrap()
        );
        // The report wraps long lines to the width, indenting the rest.
        let unwrapped = out.stderr.replace("\n  ", " ");
        assert!(unwrapped.contains(&line), "{}", out.stderr);
        stats
    }

    #[test]
    fn the_report_names_the_slow_stage_then_the_next_one_once_it_has_workers() {
        // One worker at 20 ms an item: `slow` holds everything back.
        let stats = bottleneck_with_slow_workers(1);
        assert_eq!(stats["bottleneck"]["stage"], "slow", "{stats}");
        let reason = stats["bottleneck"]["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("1 worker busy") && reason.ends_with("raise workers"),
            "{reason}"
        );
        // Eight workers handle 400 items/s: now `steady` (200/s) is the limit,
        // and `slow` only waits on it.
        let stats = bottleneck_with_slow_workers(8);
        assert_eq!(stats["bottleneck"]["stage"], "steady", "{stats}");
    }

    #[test]
    fn a_source_on_an_interval_sets_the_pace_however_busy_the_next_stage() {
        // `work` is busy about 60% of the time, but never behind: the
        // interval decides how fast the run goes.
        let dir = tempfile::tempdir().unwrap();
        let file = write_pipeline(
            dir.path(),
            "p.yaml",
            "stages:
  - {name: tick, type: generate, with: {count: 25, interval: 25ms}}
  - {name: work, type: sleep, with: {duration: 15ms}}
  - {name: out, type: drop}
",
        );
        let stats_file = dir.path().join("stats.json");
        run(flow()
            .arg("run")
            .arg(&file)
            .arg("--quiet")
            .arg("--stats-json")
            .arg(&stats_file))
        .expect_code(0);
        let stats = stats(&stats_file);
        assert_eq!(stats["bottleneck"]["stage"], "tick", "{stats}");
        let reason = stats["bottleneck"]["reason"].as_str().unwrap();
        assert!(reason.starts_with("the source sets the pace"), "{reason}");
    }
}

#[test]
fn a_flood_of_failures_is_logged_a_few_times_a_second_and_counted_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        dir.path(),
        "p.yaml",
        "stages:\n  - {name: n, type: generate, with: {count: 20000}}\n  - {name: bad, type: map, with: {expr: 'error(\"always\")'}}\n  - {name: out, type: drop}\n",
    );
    let stats_file = dir.path().join("stats.json");
    let out = run(flow()
        .arg("run")
        .arg(&file)
        .arg("--stats-json")
        .arg(&stats_file))
    .expect_code(3);
    let stats = stats(&stats_file);
    let elapsed = stats["elapsed_s"].as_f64().unwrap();
    let logged = out
        .stderr
        .lines()
        .filter(|l| l.contains("item dropped"))
        .count();
    // Five a second per stage, and the first second's five.
    assert!(
        logged as f64 <= 5.0 * (elapsed.ceil() + 1.0),
        "{logged} lines in {elapsed}s"
    );
    assert!(logged >= 1);
    assert!(
        out.stderr.contains("more failed items were not logged"),
        "{}",
        out.stderr
    );
    assert_eq!(flow_tests::stage(&stats, "bad")["dropped"], 20000);
    assert_eq!(stats["errors"][0]["count"], 20000);
}

/// The end-of-run report as a terminal of a given width shows it, and
/// `flow run … | head`.
mod report_and_pipes {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    use flow_tests::{flow, run, stats, write_pipeline};

    /// Five stages with names up to 12 characters, a drop on the way.
    const TYPICAL: &str = "name: typical
stages:
  - {name: numbers, type: generate, with: {count: 3000}}
  - {name: square-them, type: map, workers: 2, with: {expr: '. * .'}}
  - {name: odd-only, type: filter, with: {expr: '. % 2 == 1'}}
  - name: check-value
    type: map
    on_error: drop
    with: {expr: 'if . == 9 then error(\"nine\") else . end'}
  - {name: save-results, type: write, with: {path: out.jsonl}}
";

    fn report_at(columns: &str, extra: &[&str]) -> (String, serde_json::Value) {
        let dir = tempfile::tempdir().unwrap();
        let file = write_pipeline(dir.path(), "p.yaml", TYPICAL);
        let stats_file = dir.path().join("stats.json");
        let out = run(flow()
            .arg("run")
            .arg(&file)
            .args(extra)
            .arg("--stats-json")
            .arg(&stats_file)
            .env("COLUMNS", columns)
            // Only the report: the warning about the dropped item is a
            // log line, as long as it needs to be.
            .env("RUST_LOG", "error"))
        .expect_code(3);
        (out.stderr, stats(&stats_file))
    }

    #[test]
    fn the_report_fits_80_and_120_columns() {
        for width in [80, 120] {
            let (stderr, stats) = report_at(&width.to_string(), &[]);
            for line in stderr.lines() {
                assert!(
                    line.chars().count() <= width,
                    "wider than {width}: {line:?}\n{stderr}"
                );
            }
            let header = stderr.lines().next().unwrap();
            for column in ["stage", "type", "workers", "in", "out", "errors", "dropped"] {
                assert!(
                    header.split_whitespace().any(|c| c == column),
                    "no {column} at {width}: {header}"
                );
            }
            assert!(
                stderr.contains("pipeline typical: finished, 1 item failed in "),
                "{stderr}"
            );
            assert_eq!(stats["items_failed"], 1);
        }
    }

    #[test]
    fn wide_shows_every_column_and_says_the_waits_are_summed() {
        let (stderr, _) = report_at("80", &["--wide"]);
        let header = stderr.lines().next().unwrap();
        for column in ["retries", "p90", "max", "full", "rate", "bp"] {
            assert!(
                header.split_whitespace().any(|c| c == column),
                "no {column}: {header}"
            );
        }
        assert!(
            stderr.contains("\n* waits are summed over the stage's workers\n"),
            "{stderr}"
        );
    }

    #[test]
    fn a_run_that_fails_at_start_prints_its_one_error_and_still_writes_the_stats() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_pipeline(
            dir.path(),
            "p.yaml",
            "stages:\n  - {name: r, type: read, with: {path: missing.jsonl}}\n  - {name: w, type: drop}\n",
        );
        let stats_file = dir.path().join("stats.json");
        let out = run(flow()
            .arg("run")
            .arg(&file)
            .arg("--stats-json")
            .arg(&stats_file))
        .expect_code(1);
        // One line: the error, once.
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert!(
            lines.len() == 1
                && lines[0].starts_with("flow: stage \"r\": source failed: cannot open ")
                && lines[0].contains("missing.jsonl"),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("stage  "), "a table: {}", out.stderr);
        assert!(!out.stderr.contains("pipeline "), "{}", out.stderr);
        let stats = stats(&stats_file);
        assert_eq!(stats["status"], "failed");
        assert_eq!(stats["exit_code"], 1);
        assert_eq!(stats["items_failed"], 0);
    }

    /// Runs `yaml` with stdout piped, reads three lines, closes the pipe
    /// and waits: the exit code, stderr and the stats.
    fn read_three_lines_then_close(yaml: &str) -> (i32, Vec<String>, String, serde_json::Value) {
        let dir = tempfile::tempdir().unwrap();
        let file = write_pipeline(dir.path(), "p.yaml", yaml);
        let stats_file = dir.path().join("stats.json");
        let mut child = flow()
            .arg("run")
            .arg(&file)
            .arg("--stats-json")
            .arg(&stats_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("flow starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first: Vec<String> = lines.by_ref().take(3).map(Result::unwrap).collect();
        // `head` has what it wants: the pipe closes.
        drop(lines);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (
            out.status.code().unwrap_or(-1),
            first,
            stderr,
            stats(&stats_file),
        )
    }

    #[test]
    fn piping_into_head_ends_the_run_as_a_success() {
        for sink in [
            "{name: out, type: stdout}",
            "{name: out, type: write, with: {path: '-', format: json}}",
        ] {
            // Far more than a pipe holds: the run goes on until the reader
            // closes the pipe.
            let yaml = format!(
                "name: endless\nstages:\n  - {{name: n, type: generate, with: {{count: 100000000}}}}\n  - {{name: twice, type: map, with: {{expr: '. * 2'}}}}\n  - {sink}\n"
            );
            let (code, first, stderr, stats) = read_three_lines_then_close(&yaml);
            assert_eq!(code, 0, "{sink}:\n{stderr}");
            assert!(first.len() == 3, "{first:?}");
            assert_eq!(stats["status"], "ok", "{stats}");
            assert_eq!(stats["exit_code"], 0);
            assert_eq!(stats["items_failed"], 0);
            let out = flow_tests::stage(&stats, "out");
            assert_eq!(out["errors"], 0, "{out}");
            assert!(out["abandoned"].as_u64().unwrap() > 0, "{out}");
            for word in ["FAILED", "rror", "roken pipe", "failed"] {
                assert!(!stderr.contains(word), "{word} in:\n{stderr}");
            }
            assert!(stderr.contains("pipeline endless: ok in "), "{stderr}");
        }
    }
}

#[test]
fn printing_commands_end_quietly_when_their_reader_stops_early() {
    use std::io::Read;
    // The schema is more than a pipe holds (64 KiB): its write meets the
    // closed pipe. The others may fit; they must end cleanly either way.
    for args in [&["schema"][..], &["stages"], &["stages", "map"]] {
        let mut child = flow()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 1];
        child.stdout.take().unwrap().read_exact(&mut first).unwrap();
        // The pipe is closed here, before the rest is read.
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?}");
    }
}

#[test]
fn validate_of_many_files_ends_quietly_when_its_reader_stops_early_and_keeps_its_verdict() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let good = write_pipeline(
        dir.path(),
        "a-pipeline-file-with-a-long-name-so-its-line-is-long.yaml",
        "name: p\nstages:\n  - { name: numbers, type: generate, with: { count: 1 } }\n  - { name: print, type: stdout }\n",
    );
    let bad = write_pipeline(dir.path(), "bad.yaml", "name: p\nstages: []\nextra: 1\n");
    // 2,000 lines of about 130 bytes: more than a pipe holds, so a write
    // meets the closed pipe. The bad file comes last, after the reader left.
    for (last, code) in [(&good, 0), (&bad, 2)] {
        let mut args = vec![good.as_os_str(); 2_000];
        args.push(last.as_os_str());
        let mut child = flow()
            .arg("validate")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 1];
        child.stdout.take().unwrap().read_exact(&mut first).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        if code == 0 {
            assert_eq!(stderr, "");
        } else {
            assert!(
                stderr.starts_with(&format!("{}:", bad.display())),
                "{stderr}"
            );
        }
    }
}
