//! Flow control through the real binary: timeouts, retries, dead letters,
//! shared rate limits, ordered output and byte-bounded queues.

use flow_tests::{flow, read_jsonl, run, stage, stats, write_pipeline};

fn run_pipeline(yaml: &str, code: i32) -> (tempfile::TempDir, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), "p.yaml", yaml);
    let stats_file = dir.path().join("stats.json");
    run(flow()
        .arg("run")
        .arg(&file)
        .arg("--stats-json")
        .arg(&stats_file))
    .expect_code(code);
    let stats = stats(&stats_file);
    (dir, stats)
}

#[test]
fn a_timed_out_attempt_is_retried_then_dead_lettered_with_its_attempts() {
    let (dir, stats) = run_pipeline(
        "stages:
  - {name: jobs, type: generate, with: {count: 3}}
  - name: slow
    type: sleep
    timeout: 20ms
    retry: {attempts: 3, backoff: 5ms}
    on_error: dead
    with: {duration: 1s}
  - {name: done, type: write, with: {path: done.jsonl}}
  - {name: dead, type: write, inputs: [], with: {path: dead.jsonl}}
",
        3,
    );
    let letters = read_jsonl(&dir.path().join("dead.jsonl"));
    assert_eq!(letters.len(), 3);
    for l in &letters {
        assert_eq!(l["error"]["message"], "timed out after 20ms");
        assert_eq!(l["error"]["attempts"], 3);
        assert_eq!(l["error"]["stage"], "slow");
    }
    let slow = stage(&stats, "slow");
    assert_eq!(slow["retries"], 6);
    assert_eq!(slow["errors"], 3);
    assert_eq!(slow["dead_lettered"], 3);
    assert_eq!(slow["items_in"], 3);
    assert_eq!(slow["items_out"], 0);
    assert!(read_jsonl(&dir.path().join("done.jsonl")).is_empty());
}

#[test]
fn permanent_errors_are_never_retried() {
    let (_, stats) = run_pipeline(
        "stages:
  - {name: n, type: generate, with: {count: 10}}
  - name: check
    type: map
    retry: {attempts: 5, backoff: 1ms}
    with: {expr: 'if . % 2 == 0 then error(\"even\") else . end'}
  - {name: out, type: drop}
",
        3,
    );
    let check = stage(&stats, "check");
    assert_eq!(check["retries"], 0);
    assert_eq!(check["errors"], 5);
    assert_eq!(check["dropped"], 5);
}

#[test]
fn a_named_limit_is_one_bucket_shared_by_the_stages_naming_it() {
    // Two stages of 6 items each share 10/s: 12 tokens, the first free,
    // so at least 1.1 s however the two interleave.
    let (dir, stats) = run_pipeline(
        "limits:
  shared: 10/s
stages:
  - {name: a, type: generate, with: {count: 6}}
  - {name: a-call, type: map, rate: shared, with: {expr: '{s: \"a\", at: now}'}}
  - {name: b, type: generate, with: {count: 6}}
  - {name: b-call, type: map, rate: shared, with: {expr: '{s: \"b\", at: now}'}}
  - {name: out, type: write, inputs: [a-call, b-call], with: {path: out.jsonl}}
",
        0,
    );
    let mut at: Vec<f64> = read_jsonl(&dir.path().join("out.jsonl"))
        .iter()
        .map(|r| r["at"].as_f64().unwrap())
        .collect();
    assert_eq!(at.len(), 12);
    at.sort_by(f64::total_cmp);
    let span = at[11] - at[0];
    assert!(
        span >= 1.1 - 0.02,
        "12 tokens of a 10/s limit in {span:.3}s"
    );
    let waited = stage(&stats, "a-call")["wait_s"]["rate_limit"]
        .as_f64()
        .unwrap()
        + stage(&stats, "b-call")["wait_s"]["rate_limit"]
            .as_f64()
            .unwrap();
    assert!(waited > 1.0, "{waited}");
}

#[test]
fn ordered_output_keeps_input_order_across_workers() {
    let (dir, _) = run_pipeline(
        "stages:
  - {name: n, type: generate, with: {count: 3000}}
  - {name: work, type: map, workers: 4, ordered: true, queue: 8, with: {expr: '{n: .}'}}
  - {name: slowish, type: sleep, workers: 3, ordered: true, with: {duration: 1ms}}
  - {name: out, type: write, with: {path: out.jsonl}}
",
        0,
    );
    let ns: Vec<i64> = read_jsonl(&dir.path().join("out.jsonl"))
        .iter()
        .map(|r| r["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, (0..3000).collect::<Vec<_>>());
}

#[test]
fn queue_bytes_bounds_a_queue_of_large_items() {
    // Items of 10 000 bytes, a 50 KB bound: at most 5 fit, whatever `queue` says.
    let (dir, stats) = run_pipeline(
        "stages:
  - {name: big, type: generate, with: {count: 40, value: '\"x\" * 10000'}}
  - {name: slow, type: sleep, queue: 64, queue_bytes: 50KB, with: {duration: 5ms}}
  - {name: out, type: write, with: {path: out.jsonl}}
",
        0,
    );
    let slow = stage(&stats, "slow");
    let peak = slow["queue"]["peak"].as_u64().unwrap();
    assert!((1..=5).contains(&peak), "peak {peak}");
    assert_eq!(read_jsonl(&dir.path().join("out.jsonl")).len(), 40);
}

#[test]
fn rate_key_gives_each_key_its_own_bucket() {
    // Two hosts, 4 URLs each, 5/s per host. One bucket for both would need
    // 7 periods (1.4 s); per host, each host's 4th token is due after 0.6 s.
    // Only the lower bound is asserted (a loaded machine may be slower);
    // the per-key buckets themselves are pinned by the runner's unit tests
    // on a paused clock.
    let (dir, stats) = run_pipeline(
        "stages:
  - name: urls
    type: list
    with: {items: [a/1, b/1, a/2, b/2, a/3, b/3, a/4, b/4]}
  - name: fetch
    type: map
    rate: 5/s
    rate_key: 'split(\"/\")[0]'
    workers: 2
    with: {expr: '{url: ., at: now}'}
  - {name: out, type: write, with: {path: out.jsonl}}
",
        0,
    );
    let rows = read_jsonl(&dir.path().join("out.jsonl"));
    for host in ["a", "b"] {
        let mut at: Vec<f64> = rows
            .iter()
            .filter(|r| r["url"].as_str().unwrap().starts_with(host))
            .map(|r| r["at"].as_f64().unwrap())
            .collect();
        at.sort_by(f64::total_cmp);
        assert_eq!(at.len(), 4);
        assert!(at[3] - at[0] >= 0.6 - 0.02, "{host}: {at:?}");
    }
    assert_eq!(stage(&stats, "fetch")["items_out"], 8);
}
