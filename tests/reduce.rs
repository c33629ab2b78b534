//! `reduce` through the real binary, against counts computed here.

use std::collections::BTreeMap;
use std::path::Path;

use flow_tests::{flow, read_jsonl, run, stage, stats, write_pipeline};

/// Runs `yaml` in `dir`; returns the stats and the run.
fn go(dir: &Path, yaml: &str, code: i32) -> (serde_json::Value, flow_tests::Run) {
    write_pipeline(dir, "p.yaml", yaml);
    let out = run(flow().current_dir(dir).args([
        "run",
        "p.yaml",
        "--quiet",
        "--stats-json",
        "stats.json",
    ]))
    .expect_code(code);
    (stats(&dir.join("stats.json")), out)
}

/// `(key, field)` of each output line, summed per key.
fn per_key(path: &Path, field: &str) -> BTreeMap<i64, i64> {
    let mut got = BTreeMap::new();
    for line in read_jsonl(path) {
        *got.entry(line["key"].as_i64().unwrap()).or_default() += line[field].as_i64().unwrap();
    }
    got
}

#[test]
fn counts_per_key_over_a_million_items_with_four_workers() {
    let dir = tempfile::tempdir().unwrap();
    let (stats, _) = go(
        dir.path(),
        "stages:
  - { name: src, type: generate, with: { count: 1000000, value: '{k: (($i * 7919) % 1000)}' } }
  - { name: count, type: reduce, workers: 4, with: { count_by: .k } }
  - { name: out, type: write, with: { path: out.jsonl } }
",
        0,
    );
    let mut expected = BTreeMap::new();
    for i in 0..1_000_000i64 {
        *expected.entry((i * 7919) % 1000).or_default() += 1;
    }
    let lines = read_jsonl(&dir.path().join("out.jsonl"));
    assert_eq!(lines.len(), 1000, "one line per key");
    assert_eq!(per_key(&dir.path().join("out.jsonl"), "count"), expected);
    assert_eq!(stage(&stats, "count")["items_in"], 1_000_000);
}

#[test]
fn sums_per_key_and_every_n_emit_as_they_go() {
    let dir = tempfile::tempdir().unwrap();
    go(
        dir.path(),
        "stages:
  - { name: src, type: generate, with: { count: 1005, value: '{k: ($i % 5), v: $i}' } }
  - { name: sum, type: reduce, workers: 2, with: { sum: .v, by: .k, every: 50 } }
  - { name: out, type: write, with: { path: out.jsonl } }
",
        0,
    );
    let lines = read_jsonl(&dir.path().join("out.jsonl"));
    // 201 items per key: four emits of 50 during the run, then the last one.
    assert_eq!(lines.len(), 5 * 5, "{lines:?}");
    let mut expected = BTreeMap::new();
    for i in 0..1005i64 {
        *expected.entry(i % 5).or_default() += i;
    }
    assert_eq!(per_key(&dir.path().join("out.jsonl"), "sum"), expected);
}

#[test]
fn event_time_windows_take_late_items_within_the_lateness_and_fail_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    // Windows of 10 s; 5 s of lateness. The item at 8 comes after 12 (in
    // time): its window [0, 10) is still open. The item at 3 comes after 16:
    // [0, 10) closed once 15 was passed, so it is late.
    let items = [
        ("1", "a"),
        ("9.5", "a"),
        ("10", "b"),
        ("12", "a"),
        ("8", "a"),
        ("16", "b"),
        ("3", "a"),
        ("25", "a"),
    ];
    let list: Vec<String> = items
        .iter()
        .map(|(t, k)| format!("{{t: {t}, k: \"{k}\"}}"))
        .collect();
    go(
        dir.path(),
        &format!(
            "stages:
  - {{ name: src, type: list, with: {{ items: [{}] }} }}
  - name: w
    type: reduce
    on_error: late
    with: {{ count_by: .k, window: 10s, time: .t, allowed_lateness: 5s }}
  - {{ name: out, type: write, with: {{ path: out.jsonl }} }}
  - {{ name: late, type: write, inputs: [], with: {{ path: late.jsonl }} }}
",
            list.join(", ")
        ),
        3,
    );
    let got: Vec<(i64, String, u64)> = read_jsonl(&dir.path().join("out.jsonl"))
        .iter()
        .map(|l| {
            (
                l["window"]["start"].as_i64().unwrap(),
                l["key"].as_str().unwrap().to_string(),
                l["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![
            (0, "a".into(), 3),
            (10, "a".into(), 1),
            (10, "b".into(), 2),
            (20, "a".into(), 1)
        ]
    );
    // [0, 10) was emitted while the run went (when 16 was seen), before
    // the windows emitted at the end.
    assert_eq!(got[0], (0, "a".into(), 3));
    let late = read_jsonl(&dir.path().join("late.jsonl"));
    assert_eq!(late.len(), 1);
    assert_eq!(late[0]["item"]["t"], 3);
    assert!(
        late[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("late item: its window [0, 10) was already emitted"),
        "{}",
        late[0]
    );
}

#[test]
fn past_max_keys_the_least_recently_updated_key_is_emitted_early() {
    let dir = tempfile::tempdir().unwrap();
    // 100 keys, 10 kept: key k of item i is i % 100, so every key is
    // evicted before it comes back; the counts still add up per key.
    let (stats, _) = go(
        dir.path(),
        "stages:
  - { name: src, type: generate, with: { count: 1000, value: '{k: ($i % 100)}' } }
  - { name: count, type: reduce, with: { count_by: .k, max_keys: 10 } }
  - { name: out, type: write, with: { path: out.jsonl } }
",
        0,
    );
    let lines = read_jsonl(&dir.path().join("out.jsonl"));
    assert_eq!(
        lines.len(),
        1000,
        "each item's key was evicted before it came back"
    );
    let counts = per_key(&dir.path().join("out.jsonl"), "count");
    assert_eq!(counts.len(), 100);
    assert!(counts.values().all(|&c| c == 10), "{counts:?}");
    // Every item but the last 10 evicted a key, and the stats say so.
    assert_eq!(stage(&stats, "count")["counts"]["evicted"], 990);
    // With room for every key, one line each.
    let dir = tempfile::tempdir().unwrap();
    go(
        dir.path(),
        "stages:
  - { name: src, type: generate, with: { count: 1000, value: '{k: ($i % 100)}' } }
  - { name: count, type: reduce, with: { count_by: .k, max_keys: 100 } }
  - { name: out, type: write, with: { path: out.jsonl } }
",
        0,
    );
    assert_eq!(read_jsonl(&dir.path().join("out.jsonl")).len(), 100);
}

#[test]
fn an_update_that_fails_on_one_item_fails_that_item_only() {
    let dir = tempfile::tempdir().unwrap();
    let (stats, _) = go(
        dir.path(),
        "stages:
  - { name: src, type: list, with: { items: [{k: 1, v: 2}, {k: 1, v: \"x\"}, {k: 1, v: 3}, {k: 2, v: 5}] } }
  - name: total
    type: reduce
    on_error: bad
    with: { key: .k, init: '{k: .k, sum: 0}', update: '.sum += $item.v' }
  - { name: out, type: write, with: { path: out.jsonl } }
  - { name: bad, type: write, inputs: [], with: { path: bad.jsonl } }
",
        3,
    );
    let mut got = read_jsonl(&dir.path().join("out.jsonl"));
    got.sort_by_key(|l| l["k"].as_i64());
    assert_eq!(
        got,
        vec![
            serde_json::json!({"k": 1, "sum": 5}),
            serde_json::json!({"k": 2, "sum": 5})
        ]
    );
    let bad = read_jsonl(&dir.path().join("bad.jsonl"));
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0]["item"], serde_json::json!({"k": 1, "v": "x"}));
    assert_eq!(stage(&stats, "total")["dead_lettered"], 1);
}

#[test]
fn options_are_checked_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    for (with, says) in [
        ("{ key: .k }", "init"),
        ("{ count_by: .k, sum: .v }", "one shorthand per stage"),
        (
            "{ count_by: .k, init: '0' }",
            "not with the shorthand count_by",
        ),
        ("{ count_by: .k, time: .t }", "goes with window"),
        ("{ count_by: .k, every: 0 }", "at least 1"),
        ("{ sum: '.v +' }", "sum"),
    ] {
        let yaml = format!(
            "stages:
  - {{ name: src, type: generate, with: {{ count: 1 }} }}
  - {{ name: r, type: reduce, with: {with} }}
  - {{ name: out, type: drop }}
"
        );
        write_pipeline(dir.path(), "p.yaml", &yaml);
        let out = run(flow().current_dir(dir.path()).args(["validate", "p.yaml"])).expect_code(2);
        assert!(out.stderr.contains(says), "{with}: {}", out.stderr);
        assert!(out.stderr.contains("stage \"r\""), "{with}: {}", out.stderr);
    }
}

#[test]
fn a_result_that_fails_drops_that_accumulator_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (_, out) = go(
        dir.path(),
        "stages:
  - { name: src, type: generate, with: { count: 10, value: '{k: ($i % 2)}' } }
  - name: r
    type: reduce
    with: { key: .k, init: '0', update: '. + 1', result: 'if $key == 1 then error(\"no\") else {k: $key, n: .} end' }
  - { name: out, type: write, with: { path: out.jsonl } }
",
        0,
    );
    assert_eq!(
        read_jsonl(&dir.path().join("out.jsonl")),
        vec![serde_json::json!({"k": 0, "n": 5})]
    );
    assert!(
        out.stderr
            .contains("`result` failed on the accumulator of key 1; its 5 items are dropped"),
        "{}",
        out.stderr
    );
}
