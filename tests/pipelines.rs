//! Every file in `pipelines/` is run here, through the real binary, and
//! its output checked.

use flow_tests::{flow, pipeline, read_jsonl, run, stage, stats};

/// The pipelines these tests run; a file in `pipelines/` missing here
/// fails `every_pipeline_file_is_tested`.
const TESTED: [&str; 10] = [
    "hello.yaml",
    "errors-per-service.yaml",
    "multi-consumer.yaml",
    "data-pipeline.yaml",
    "fan-out.yaml",
    "rate-limited.yaml",
    "priority.yaml",
    "lifo.yaml",
    "backpressure.yaml",
    "dead-letter.yaml",
];

#[test]
fn every_pipeline_file_is_tested() {
    // A pipeline counts as tested when a test file names it; the ones this
    // file runs are in TESTED, others (scraper, images, exec) have files
    // of their own.
    let root = flow_tests::repo_root();
    let mut sources = String::new();
    for dir in [
        "tests",
        "crates/flow-stages/tests",
        "crates/flow-runner/tests",
    ] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs")
                && path.file_name().is_some_and(|n| n != "pipelines.rs")
            {
                sources += &std::fs::read_to_string(&path).unwrap();
            }
        }
    }
    // Files in folders (`distributed-scraper/worker.yaml`) are named with
    // their folder.
    let mut dirs = vec![root.join("pipelines")];
    let mut checked = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let name = path.strip_prefix(root.join("pipelines")).unwrap();
            let name = name.to_str().unwrap();
            // A `NAME.test.yaml` is itself tests: tests/flow_test.rs runs
            // every one with `flow test`.
            if name.ends_with(".test.yaml") {
                continue;
            }
            if name.ends_with(".yaml") || name.ends_with(".yml") {
                let tested = TESTED.contains(&name) || sources.contains(&format!("\"{name}\""));
                assert!(tested, "pipelines/{name} is run by no test");
                checked += 1;
            }
        }
    }
    assert!(checked > TESTED.len(), "found {checked} pipeline files");
}

#[test]
fn every_pipeline_file_validates() {
    for name in TESTED {
        run(flow().arg("validate").arg(pipeline(name))).expect_code(0);
    }
}

#[test]
fn hello_prints_its_greetings_in_order() {
    let out = run(flow().arg("run").arg(pipeline("hello.yaml"))).expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        ["hello 0", "hello 1", "hello 2", "hello 3", "hello 4"]
    );
    // The stats table goes to stderr, never into the data on stdout.
    assert!(out.stderr.contains("pipeline hello: ok"), "{}", out.stderr);
}

#[test]
fn multi_consumer_handles_every_job_once_with_three_workers_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let stats_file = dir.path().join("stats.json");
    run(flow()
        .arg("run")
        .arg(pipeline("multi-consumer.yaml"))
        .arg("--stats-json")
        .arg(&stats_file)
        .env("OUT", dir.path()))
    .expect_code(0);
    let mut jobs: Vec<i64> = read_jsonl(&dir.path().join("multi-consumer.jsonl"))
        .iter()
        .map(|v| v["job"].as_i64().unwrap())
        .collect();
    jobs.sort();
    assert_eq!(jobs, (0..30).collect::<Vec<_>>());
    let stats = stats(&stats_file);
    let work = stage(&stats, "work");
    assert_eq!(work["workers"], 3);
    assert_eq!(work["items_in"], 30);
    // Busy is the share of the three workers' time spent on items: one
    // worker at a time could keep it at a third at most.
    let busy = work["busy_pct"].as_f64().unwrap();
    assert!(busy > 50.0, "the workers did not overlap: busy {busy}%");
    assert_eq!(work["queue"]["capacity"], 10);
    assert!(work["queue"]["peak"].as_u64().unwrap() <= 10);
}

#[test]
fn data_pipeline_squares_every_value_and_reports_stats() {
    let dir = tempfile::tempdir().unwrap();
    let stats_file = dir.path().join("stats.json");
    let out = run(flow()
        .arg("run")
        .arg(pipeline("data-pipeline.yaml"))
        .arg("--stats-json")
        .arg(&stats_file)
        .env("OUT", dir.path()))
    .expect_code(0);
    let rows = read_jsonl(&dir.path().join("squares.jsonl"));
    assert_eq!(rows.len(), 100_000);
    let mut ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    for r in &rows {
        let v = r["value"].as_i64().unwrap();
        assert_eq!(v, r["id"].as_i64().unwrap() % 1000);
        assert_eq!(r["square"].as_i64().unwrap(), v * v);
    }
    ids.sort();
    assert_eq!(ids, (0..100_000).collect::<Vec<_>>());
    let stats = stats(&stats_file);
    assert_eq!(stats["pipeline"], "data-pipeline");
    assert_eq!(stats["status"], "ok");
    assert_eq!(stage(&stats, "numbers")["items_out"], 100_000);
    assert_eq!(stage(&stats, "square")["items_in"], 100_000);
    assert_eq!(stage(&stats, "square")["items_out"], 100_000);
    assert_eq!(stage(&stats, "save")["items_out"], 100_000);
    // The table on stderr names every stage.
    for name in ["numbers", "square", "save"] {
        assert!(out.stderr.contains(name), "{}", out.stderr);
    }
}

#[test]
fn fan_out_sends_every_item_to_each_branch_and_fan_in_merges_them() {
    let dir = tempfile::tempdir().unwrap();
    run(flow()
        .arg("run")
        .arg(pipeline("fan-out.yaml"))
        .env("OUT", dir.path()))
    .expect_code(0);
    let rows = read_jsonl(&dir.path().join("fan-out.jsonl"));
    let mut any: Vec<i64> = rows
        .iter()
        .filter(|r| r["kind"] == "any")
        .map(|r| r["n"].as_i64().unwrap())
        .collect();
    let mut even: Vec<i64> = rows
        .iter()
        .filter(|r| r["kind"] == "even")
        .map(|r| r["n"].as_i64().unwrap())
        .collect();
    any.sort();
    even.sort();
    assert_eq!(any, (0..20).collect::<Vec<_>>());
    assert_eq!(even, (0..20).step_by(2).collect::<Vec<_>>());
    assert_eq!(rows.len(), 30);
}

#[test]
fn pipelines_run_the_same_from_any_working_directory() {
    // Relative paths resolve against the pipeline file's directory.
    let dir = tempfile::tempdir().unwrap();
    let out = flow_tests::write_pipeline(
        dir.path(),
        "p.yaml",
        "stages:\n  - {name: n, type: generate, with: {count: 3}}\n  - {name: w, type: write, with: {path: sub/out.jsonl}}\n",
    );
    let elsewhere = tempfile::tempdir().unwrap();
    run(flow().arg("run").arg(&out).current_dir(elsewhere.path())).expect_code(0);
    let rows = read_jsonl(&dir.path().join("sub/out.jsonl"));
    assert_eq!(rows, [0, 1, 2]);
}

/// Runs `pipelines/NAME` with `OUT` in a temp dir; returns the dir, the
/// stats and the run.
fn run_in_temp(
    name: &str,
    extra: &[&str],
    code: i32,
) -> (tempfile::TempDir, serde_json::Value, flow_tests::Run) {
    let dir = tempfile::tempdir().unwrap();
    let stats_file = dir.path().join("stats.json");
    let out = run(flow()
        .arg("run")
        .arg(pipeline(name))
        .arg("--stats-json")
        .arg(&stats_file)
        .args(extra)
        .env("OUT", dir.path()))
    .expect_code(code);
    let stats = stats(&stats_file);
    (dir, stats, out)
}

#[test]
fn rate_limited_emits_ten_items_no_faster_than_three_a_second() {
    let (dir, stats, _) = run_in_temp("rate-limited.yaml", &[], 0);
    let rows = read_jsonl(&dir.path().join("rate-limited.jsonl"));
    let ns: Vec<i64> = rows.iter().map(|r| r["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, (0..10).collect::<Vec<_>>());
    // Each token is due a third of a second after the one before: the
    // limiter never lets items through faster (a slow machine may only be
    // slower). `at` is stamped by the next stage as each item passes.
    let at: Vec<f64> = rows.iter().map(|r| r["at"].as_f64().unwrap()).collect();
    let span = at[9] - at[0];
    assert!(
        span >= 9.0 / 3.0 - 0.02,
        "10 items in {span:.3}s: faster than 3/s"
    );
    let ticks = stage(&stats, "ticks");
    assert_eq!(ticks["items_out"], 10);
    assert!(
        ticks["wait_s"]["rate_limit"].as_f64().unwrap() > 2.5,
        "{ticks}"
    );
}

#[test]
fn priority_hands_out_the_most_urgent_job_first() {
    let (dir, stats, _) = run_in_temp("priority.yaml", &[], 0);
    let jobs: Vec<String> = read_jsonl(&dir.path().join("priority.jsonl"))
        .iter()
        .map(|r| r["job"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        jobs,
        [
            "page-oncall",
            "fix-outage",
            "rotate-logs",
            "backup",
            "send-newsletter"
        ]
    );
    assert_eq!(stage(&stats, "work")["items_out"], 5);
}

#[test]
fn lifo_visits_the_newest_page_first() {
    let (dir, _, _) = run_in_temp("lifo.yaml", &[], 0);
    let pages: Vec<i64> = read_jsonl(&dir.path().join("lifo.jsonl"))
        .iter()
        .map(|r| r["page"].as_i64().unwrap())
        .collect();
    assert_eq!(pages, [5, 4, 3, 2, 1, 0]);
}

#[test]
fn backpressure_keeps_the_queue_small_and_logs_its_water_marks() {
    let (dir, stats, out) = run_in_temp("backpressure.yaml", &["-v"], 0);
    let mut got: Vec<i64> = read_jsonl(&dir.path().join("backpressure.jsonl"))
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, (0..40).collect::<Vec<_>>());
    let slow = stage(&stats, "slow");
    assert_eq!(slow["queue"]["capacity"], 4);
    assert_eq!(slow["queue"]["peak"], 4);
    assert!(slow["queue"]["full_pct"].as_f64().unwrap() > 50.0, "{slow}");
    // The producer spent most of the run waiting for room.
    let waited = stage(&stats, "fast")["wait_s"]["backpressure"]
        .as_f64()
        .unwrap();
    assert!(waited > 0.3, "{waited}");
    assert!(
        out.stderr.contains("input queue full (high water mark)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("input queue below half (low water mark)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("stage=slow"), "{}", out.stderr);
}

#[test]
fn dead_letter_sends_failed_orders_with_their_error_and_exits_3() {
    let (dir, stats, _) = run_in_temp("dead-letter.yaml", &[], 3);
    let accepted: Vec<i64> = read_jsonl(&dir.path().join("accepted.jsonl"))
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(accepted, [1, 3]);
    let rejected = read_jsonl(&dir.path().join("rejected.jsonl"));
    // A long expression is named by its start.
    let expr = r#"if (.qty // 0) > 0 then . els…"#;
    let letter = |item: serde_json::Value| {
        serde_json::json!({
            "item": item,
            "error": {"stage": "check", "message": format!("expression `{expr}`: bad quantity"), "attempts": 1}
        })
    };
    assert_eq!(
        rejected,
        [
            letter(serde_json::json!({"id": 2, "qty": -1})),
            letter(serde_json::json!({"id": 4}))
        ]
    );
    let check = stage(&stats, "check");
    assert_eq!(
        (check["items_in"].as_u64(), check["items_out"].as_u64()),
        (Some(4), Some(2))
    );
    assert_eq!(check["dead_lettered"], 2);
    assert_eq!(stage(&stats, "rejected")["items_in"], 2);
}

#[test]
fn errors_per_service_counts_each_services_errors_per_ten_second_window() {
    let (dir, stats, _) = run_in_temp("errors-per-service.yaml", &[], 0);
    // The same count, computed here from the log file.
    let mut expected = std::collections::BTreeMap::new();
    for line in read_jsonl(&flow_tests::repo_root().join("pipelines/logs.jsonl")) {
        if line["level"] == "error" {
            let start = (line["ts"].as_f64().unwrap() / 10.0).floor() as i64 * 10;
            let key = (start, line["service"].as_str().unwrap().to_string());
            *expected.entry(key).or_insert(0u64) += 1;
        }
    }
    let mut got = std::collections::BTreeMap::new();
    for out in read_jsonl(&dir.path().join("errors-per-service.jsonl")) {
        let start = out["window"]["start"].as_i64().unwrap();
        assert_eq!(out["window"]["end"].as_i64().unwrap(), start + 10, "{out}");
        let key = (start, out["key"].as_str().unwrap().to_string());
        let count = out["count"].as_u64().unwrap();
        assert!(
            got.insert(key, count).is_none(),
            "a window and service twice: {out}"
        );
    }
    assert!(expected.len() > 5, "the log has errors in several windows");
    assert_eq!(got, expected);
    let errors = stage(&stats, "errors")["items_out"].as_u64().unwrap();
    assert_eq!(expected.values().sum::<u64>(), errors);
}
