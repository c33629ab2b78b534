//! Record handling through the real binary: reading and writing CSV, JSON
//! arrays and binary files, globs and stdin, `batch`, `unbatch` and
//! `dedupe`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use flow_tests::{flow, read_jsonl, run, stage, stats, write_pipeline};
use serde_json::{Value, json};

/// Runs `yaml` from `dir`, expecting exit code `code`; returns the stats.
fn run_in(dir: &Path, yaml: &str, code: i32) -> Value {
    let file = write_pipeline(dir, "p.yaml", yaml);
    let stats_file = dir.join("stats.json");
    run(flow()
        .arg("run")
        .arg(&file)
        .arg("--stats-json")
        .arg(&stats_file))
    .expect_code(code);
    stats(&stats_file)
}

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?} is not JSON ({e}):\n{text}"))
}

const PEOPLE: &str = "\
id,name,score,note
1,Ada,90,\"likes commas, and \"\"quotes\"\"\"
2,Bob,40,
3,Cy,75,007
4,Di,10,x
";

#[test]
fn csv_filtered_to_a_json_array_and_back_to_csv_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "people.csv", PEOPLE);
    let stats = run_in(
        dir.path(),
        "stages:
  - {name: people, type: read, with: {path: people.csv, format: csv}}
  - {name: good, type: filter, with: {expr: '(.score | tonumber) >= 50'}}
  - {name: save, type: write, with: {path: out/good.json, format: json}}
",
        0,
    );
    let good = read_json(&dir.path().join("out/good.json"));
    // Fields stay the strings they were: `007` is not a number.
    assert_eq!(
        good,
        json!([
            {"id": "1", "name": "Ada", "score": "90", "note": "likes commas, and \"quotes\""},
            {"id": "3", "name": "Cy", "score": "75", "note": "007"},
        ])
    );
    assert_eq!(stage(&stats, "good")["items_in"], 4);
    assert_eq!(stage(&stats, "good")["items_out"], 2);

    run_in(
        dir.path(),
        "stages:
  - {name: good, type: read, with: {path: out/good.json, format: json}}
  - {name: save, type: write, with: {path: out/good.csv, format: csv}}
",
        0,
    );
    let back = std::fs::read_to_string(dir.path().join("out/good.csv")).unwrap();
    let want: Vec<&str> = PEOPLE
        .lines()
        .enumerate()
        .filter(|(i, _)| [0, 1, 3].contains(i))
        .map(|(_, l)| l)
        .collect();
    assert_eq!(back, want.join("\n") + "\n");
}

#[test]
fn a_glob_reads_every_matching_file_in_sorted_order() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "data/2024-02.csv", "day,n\n1,3\n2,4\n");
    write(dir.path(), "data/2024-01.csv", "day,n\n1,1\n2,2\n");
    write(dir.path(), "data/notes.txt", "not read\n");
    run_in(
        dir.path(),
        "stages:
  - {name: months, type: read, with: {path: 'data/*.csv', format: csv}}
  - {name: save, type: write, with: {path: all.jsonl}}
",
        0,
    );
    let ns: Vec<Value> = read_jsonl(&dir.path().join("all.jsonl"))
        .iter()
        .map(|r| r["n"].clone())
        .collect();
    assert_eq!(ns, ["1", "2", "3", "4"]);
}

#[test]
fn a_glob_that_matches_nothing_stops_the_run_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        dir.path(),
        "p.yaml",
        "stages:
  - {name: r, type: read, with: {path: 'nothing/*.json', format: json}}
  - {name: out, type: drop}
",
    );
    let out = run(flow().arg("run").arg(&file)).expect_code(1);
    assert!(out.stderr.contains("no file matches"), "{}", out.stderr);
    assert!(out.stderr.contains("nothing/*.json"), "{}", out.stderr);
}

#[test]
fn a_bad_csv_row_stops_the_run_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "bad.csv", "a,b\n1,2\n3,4,5\n6,7\n");
    let file = write_pipeline(
        dir.path(),
        "p.yaml",
        "stages:
  - {name: r, type: read, with: {path: bad.csv, format: csv}}
  - {name: save, type: write, with: {path: out.jsonl}}
",
    );
    let out = run(flow().arg("run").arg(&file)).expect_code(1);
    assert!(
        out.stderr
            .contains("bad.csv:3: the row has 3 fields, the header has 2"),
        "{}",
        out.stderr
    );
    // The rows before it were handled.
    assert_eq!(
        read_jsonl(&dir.path().join("out.jsonl")),
        [json!({"a": "1", "b": "2"})]
    );
}

#[test]
fn json_and_csv_with_no_items_are_an_empty_array_and_an_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    run_in(
        dir.path(),
        "stages:
  - {name: none, type: generate, with: {count: 0}}
  - {name: j, type: write, with: {path: none.json, format: json}}
  - {name: c, type: write, inputs: [none], with: {path: none.csv, format: csv}}
",
        0,
    );
    assert_eq!(read_json(&dir.path().join("none.json")), json!([]));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("none.csv")).unwrap(),
        ""
    );
}

#[test]
fn a_json_array_written_by_several_workers_holds_every_item() {
    let dir = tempfile::tempdir().unwrap();
    run_in(
        dir.path(),
        "stages:
  - {name: n, type: generate, with: {count: 2000, value: '{i: $i}'}}
  - {name: save, type: write, workers: 4, with: {path: all.json, format: json}}
",
        0,
    );
    let all = read_json(&dir.path().join("all.json"));
    let mut got: Vec<i64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["i"].as_i64().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, (0..2000).collect::<Vec<_>>());
}

#[test]
fn csv_fails_an_item_whose_keys_the_header_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let stats = run_in(
        dir.path(),
        "stages:
  - name: rows
    type: list
    with: {items: [{id: 1, tags: [a, b]}, {id: 2, extra: x}, {tags: {k: v}}]}
  - {name: save, type: write, on_error: dead, with: {path: rows.csv, format: csv}}
  - {name: dead, type: write, inputs: [], with: {path: dead.jsonl}}
",
        3,
    );
    let csv = std::fs::read_to_string(dir.path().join("rows.csv")).unwrap();
    assert_eq!(
        csv,
        "id,tags\n1,\"[\"\"a\"\",\"\"b\"\"]\"\n,\"{\"\"k\"\":\"\"v\"\"}\"\n"
    );
    let dead = read_jsonl(&dir.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["item"], json!({"id": 2, "extra": "x"}));
    assert_eq!(
        dead[0]["error"]["message"],
        "csv: fields not in the header (id, tags): extra"
    );
    assert_eq!(stage(&stats, "save")["dead_lettered"], 1);
}

#[test]
fn stdin_csv_to_stdout_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        dir.path(),
        "p.yaml",
        "stages:
  - {name: r, type: read, with: {path: '-', format: csv}}
  - {name: print, type: stdout, with: {format: json}}
",
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
        .write_all(b"a,b\n1,x\n2,y\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, json!([{"a": "1", "b": "x"}, {"a": "2", "b": "y"}]));
}

#[test]
fn bytes_gives_each_file_as_one_binary_item() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "img/b.png",
        [0x89, b'P', b'N', b'G', 0xff, 0x00],
    );
    write(dir.path(), "img/a.png", b"tiny");
    write(dir.path(), "img/c.txt", b"not matched");
    run_in(
        dir.path(),
        "stages:
  - {name: files, type: read, with: {path: 'img/*.png', format: bytes}}
  - {name: sizes, type: map, with: {expr: '{name, size: (.body | length), dir: (.path | split(\"/\") | .[-2])}'}}
  - {name: save, type: write, with: {path: sizes.jsonl}}
",
        0,
    );
    assert_eq!(
        read_jsonl(&dir.path().join("sizes.jsonl")),
        [
            json!({"name": "a.png", "size": 4, "dir": "img"}),
            json!({"name": "b.png", "size": 6, "dir": "img"}),
        ]
    );
}

#[test]
fn batch_emits_full_batches_then_the_partial_one_when_input_ends() {
    let dir = tempfile::tempdir().unwrap();
    let stats = run_in(
        dir.path(),
        "stages:
  - {name: n, type: generate, with: {count: 10}}
  - {name: group, type: batch, with: {size: 4}}
  - {name: save, type: write, with: {path: batches.jsonl}}
",
        0,
    );
    assert_eq!(
        read_jsonl(&dir.path().join("batches.jsonl")),
        [json!([0, 1, 2, 3]), json!([4, 5, 6, 7]), json!([8, 9])]
    );
    let group = stage(&stats, "group");
    assert_eq!(
        (&group["items_in"], &group["items_out"]),
        (&json!(10), &json!(3))
    );
}

/// Items arrive on stdin, which stays open: only the timeout can emit
/// their batch. The test waits for the batch to be logged before it sends
/// the last line and closes stdin, so no timing is assumed.
#[test]
fn batch_emits_a_partial_batch_once_its_oldest_item_has_waited_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        dir.path(),
        "p.yaml",
        "stages:
  - {name: lines, type: read, with: {path: '-'}}
  - {name: group, type: batch, with: {size: 100, timeout: 50ms}}
  - {name: seen, type: log, with: {level: warn, prefix: batch}}
  - {name: save, type: write, with: {path: batches.jsonl}}
",
    );
    let mut child = flow()
        .arg("run")
        .arg(&file)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, logged) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            let _ = tx.send(line.clone());
        }
    });
    stdin.write_all(b"a\nb\nc\n").unwrap();
    stdin.flush().unwrap();
    let want = r#"batch: ["a","b","c"]"#;
    // A guard against a hang, not a timing assumption.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = logged
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no batch logged while stdin was open"));
        if line.contains(want) {
            break;
        }
    }
    stdin.write_all(b"d\n").unwrap();
    drop(stdin);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    reader.join().unwrap();
    assert_eq!(
        read_jsonl(&dir.path().join("batches.jsonl")),
        [json!(["a", "b", "c"]), json!(["d"])]
    );
}

#[test]
fn unbatch_restores_the_batched_items_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let stats = run_in(
        dir.path(),
        "stages:
  - {name: n, type: generate, with: {count: 10, value: '{id: $i}'}}
  - {name: group, type: batch, with: {size: 3}}
  - {name: ungroup, type: unbatch}
  - {name: save, type: write, with: {path: items.jsonl}}
",
        0,
    );
    let want: Vec<Value> = (0..10).map(|i| json!({"id": i})).collect();
    assert_eq!(read_jsonl(&dir.path().join("items.jsonl")), want);
    let ungroup = stage(&stats, "ungroup");
    assert_eq!(
        (&ungroup["items_in"], &ungroup["items_out"]),
        (&json!(4), &json!(10))
    );
}

#[test]
fn unbatch_fails_an_item_that_is_not_an_array() {
    let dir = tempfile::tempdir().unwrap();
    let stats = run_in(
        dir.path(),
        "stages:
  - {name: mixed, type: list, with: {items: [[1, 2], 3, []]}}
  - {name: ungroup, type: unbatch}
  - {name: save, type: write, with: {path: items.jsonl}}
",
        3,
    );
    assert_eq!(
        read_jsonl(&dir.path().join("items.jsonl")),
        [json!(1), json!(2)]
    );
    let ungroup = stage(&stats, "ungroup");
    assert_eq!(ungroup["dropped"], 1);
    assert_eq!(
        stats["errors"][0]["message"],
        "unbatch: expected an array, got a number"
    );
}

#[test]
fn dedupe_passes_each_key_once_across_workers() {
    let dir = tempfile::tempdir().unwrap();
    let stats = run_in(
        dir.path(),
        "stages:
  - {name: n, type: generate, with: {count: 1000, value: '{k: ($i % 7), i: $i}'}}
  - {name: unique, type: dedupe, workers: 3, with: {key: .k}}
  - {name: save, type: write, with: {path: unique.jsonl}}
",
        0,
    );
    let mut keys: Vec<i64> = read_jsonl(&dir.path().join("unique.jsonl"))
        .iter()
        .map(|v| v["k"].as_i64().unwrap())
        .collect();
    keys.sort();
    assert_eq!(keys, (0..7).collect::<Vec<_>>());
    let unique = stage(&stats, "unique");
    let (i, o) = (
        unique["items_in"].as_u64().unwrap(),
        unique["items_out"].as_u64().unwrap(),
    );
    assert_eq!((i, o), (1000, 7));
    assert_eq!(i - o, 993, "items in - items out = the duplicates");
}

#[test]
fn dedupe_of_whole_items_treats_equal_json_as_equal() {
    let dir = tempfile::tempdir().unwrap();
    run_in(
        dir.path(),
        "stages:
  - {name: l, type: list, with: {items: [{a: 1, b: 2}, {b: 2, a: 1}, 1, 1.0, 'x', 'x']}}
  - {name: unique, type: dedupe}
  - {name: save, type: write, with: {path: unique.jsonl}}
",
        0,
    );
    assert_eq!(
        read_jsonl(&dir.path().join("unique.jsonl")),
        [json!({"a": 1, "b": 2}), json!(1), json!("x")]
    );
}
