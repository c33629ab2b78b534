//! Every file in `pipelines/` is run here, through the real binary, and
//! its output checked.

use flow_tests::{flow, pipeline, read_jsonl, run, stage, stats};

/// The pipelines these tests run; a file in `pipelines/` missing here
/// fails `every_pipeline_file_is_tested`.
const TESTED: [&str; 4] = [
    "hello.yaml",
    "multi-consumer.yaml",
    "data-pipeline.yaml",
    "fan-out.yaml",
];

#[test]
fn every_pipeline_file_is_tested() {
    let dir = flow_tests::repo_root().join("pipelines");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            assert!(
                TESTED.contains(&name.as_str()),
                "pipelines/{name} is run by no test"
            );
        }
    }
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
