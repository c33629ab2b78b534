//! Adversarial tests of the sinks, through the real binary: a full disk, a
//! run that fails before its first item, a run killed mid-write, appends
//! after a torn line, items that a format cannot hold. The stats must match
//! the files: every item counted as written is in the file, whole, and no
//! other.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flow_tests::{flow, read_jsonl, run, stage, stats, write_pipeline};

fn count(stats: &serde_json::Value, name: &str, key: &str) -> u64 {
    stage(stats, name)[key].as_u64().unwrap_or(0)
}

/// Runs `yaml` (written into `dir`) with a stats file; returns the exit
/// code, stderr and the stats.
fn run_in(dir: &Path, yaml: &str) -> (i32, String, serde_json::Value) {
    let file = write_pipeline(dir, "p.yaml", yaml);
    let stats_file = dir.join("stats.json");
    let done = run(flow()
        .arg("run")
        .arg(&file)
        .arg("--stats-json")
        .arg(&stats_file)
        .arg("--quiet"));
    (done.code, done.stderr, stats(&stats_file))
}

/// A small tmpfs, unmounted when dropped; None (after a loud note) where
/// the test cannot mount one (not root, or no tmpfs).
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "flow-test-full",
            ])
            .arg(dir.path())
            .stderr(Stdio::piped())
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(SmallDisk(dir)),
            Ok(out) => {
                eprintln!(
                    "SKIPPED: cannot mount a small tmpfs (run as root to test a full disk): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount ({e}); run as root to test a full disk");
                None
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// A pipeline of `n` items of about 120 bytes each into `path`.
fn fill(path: &Path, format: &str, on_error: &str) -> String {
    format!(
        r#"
stages:
  - name: items
    type: generate
    with: {{ count: 20000 }}
  - name: pad
    type: map
    with: {{ expr: '{{i: ., pad: ("x" * 100)}}' }}
  - name: save
    type: write
    on_error: {on_error}
    with: {{ path: "{}", format: {format} }}
"#,
        path.display()
    )
}

#[test]
fn on_a_full_disk_the_file_holds_exactly_the_items_counted_as_written() {
    let Some(disk) = SmallDisk::mount("256k") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for format in ["jsonl", "json", "csv"] {
        let out = disk.0.path().join(format!("out.{format}"));
        let (code, stderr, stats) = run_in(dir.path(), &fill(&out, format, "fail"));
        assert_eq!(code, 1, "{format}: {stderr}");
        assert!(
            stats["failure"]
                .as_str()
                .unwrap()
                .contains("No space left on device"),
            "{format}: {stats}"
        );
        let written = count(&stats, "save", "items_out");
        assert!(written > 100, "{format}: some items fit: {stats}");
        let text = std::fs::read_to_string(&out).unwrap();
        let items: Vec<serde_json::Value> = match format {
            "json" => serde_json::from_str::<Vec<_>>(&text)
                .unwrap_or_else(|e| panic!("the json file is a valid array: {e}")),
            "jsonl" => read_jsonl(&out),
            _ => {
                assert!(text.starts_with("i,pad\n"), "{}", &text[..20]);
                text.lines()
                    .skip(1)
                    .map(|l| serde_json::json!(l.split(',').next().unwrap()))
                    .collect()
            }
        };
        assert!(text.ends_with('\n'), "{format}: no torn last line");
        assert_eq!(items.len() as u64, written, "{format}: {stats}");
        // Written in order by one worker: items 0 .. written-1, each whole.
        if format == "jsonl" {
            for (k, item) in items.iter().enumerate() {
                assert_eq!(item["i"], k as u64);
                assert_eq!(item["pad"].as_str().unwrap().len(), 100);
            }
        }
        // Nothing vanished: what the sink took and did not write failed
        // (the batch the disk refused); the rest was abandoned on the way.
        let c = |s: &str, k: &str| count(&stats, s, k);
        assert_eq!(
            c("items", "items_out"),
            c("pad", "items_in") + c("pad", "abandoned")
        );
        assert_eq!(
            c("pad", "items_out"),
            c("save", "items_in") + c("save", "abandoned")
        );
        assert_eq!(
            c("save", "items_in"),
            written + c("save", "errors"),
            "{stats}"
        );
        assert!(c("save", "errors") > 0);
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn on_a_full_disk_dropped_batches_are_counted_and_the_run_goes_on() {
    let Some(disk) = SmallDisk::mount("128k") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = disk.0.path().join("out.jsonl");
    let (code, stderr, stats) = run_in(dir.path(), &fill(&out, "jsonl", "drop"));
    assert_eq!(code, 3, "{stderr}");
    let (written, dropped) = (
        count(&stats, "save", "items_out"),
        count(&stats, "save", "dropped"),
    );
    assert_eq!(written + dropped, 20000, "{stats}");
    assert!(dropped > 0 && written > 0, "{stats}");
    assert_eq!(read_jsonl(&out).len() as u64, written);
    let errors = stats["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "one group: {errors:?}");
    assert_eq!(errors[0]["count"], dropped);
}

#[test]
fn a_run_that_stops_before_its_first_item_leaves_the_previous_output() {
    let dir = tempfile::tempdir().unwrap();
    for (case, source) in [
        (
            "a missing input file",
            "{ name: r, type: read, with: { path: missing.jsonl } }",
        ),
        (
            "an item that fails with on_error: fail",
            "{ name: r, type: list, on_error: fail, with: { items: [1] } }\n  - { name: bad, type: map, on_error: fail, with: { expr: 'error(\"no\")' } }",
        ),
    ] {
        for (format, old) in [
            ("jsonl", "{\"old\":1}\n"),
            ("json", "[\n{\"old\":1}\n]\n"),
            ("csv", "old\n1\n"),
        ] {
            let out = dir.path().join(format!("out.{format}"));
            std::fs::write(&out, old).unwrap();
            let yaml = format!(
                "stages:\n  - {source}\n  - {{ name: save, type: write, with: {{ path: out.{format}, format: {format} }} }}\n"
            );
            let (code, stderr, _) = run_in(dir.path(), &yaml);
            assert_eq!(code, 1, "{case}: {stderr}");
            assert_eq!(
                std::fs::read_to_string(&out).unwrap(),
                old,
                "{case}, {format}"
            );
        }
    }
    // A run that ends with nothing to write does replace it: its result is
    // empty.
    let out = dir.path().join("out.json");
    let yaml = "stages:\n  - { name: r, type: list, with: { items: [1, 2] } }\n  - { name: none, type: filter, with: { expr: 'false' } }\n  - { name: save, type: write, with: { path: out.json, format: json } }\n";
    let (code, stderr, _) = run_in(dir.path(), yaml);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "[]\n");
}

#[test]
fn a_json_file_is_a_valid_array_even_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.json");
    let file = write_pipeline(
        dir.path(),
        "p.yaml",
        "stages:\n  - { name: items, type: generate }\n  - { name: save, type: write, with: { path: out.json, format: json } }\n",
    );
    let mut child = flow()
        .arg("run")
        .arg(&file)
        .arg("--quiet")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for a few batches to be written (a file, polled: there is no
    // other signal from outside the process), then kill it.
    let start = Instant::now();
    while std::fs::metadata(&out).map_or(0, |m| m.len()) < 200_000 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "flow wrote nothing"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let items: Vec<u64> = serde_json::from_str(&std::fs::read_to_string(&out).unwrap())
        .expect("the file is a valid JSON array");
    assert!(items.len() > 10_000);
    assert!(items.iter().enumerate().all(|(k, &v)| v == k as u64));
}

#[test]
fn appending_after_a_torn_line_starts_a_new_line_that_flow_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    // What kill -9 mid-write can leave: half a record, no newline.
    std::fs::write(&out, "{\"a\":1}\n{\"a\":").unwrap();
    let (code, stderr, _) = run_in(
        dir.path(),
        "stages:\n  - { name: r, type: list, with: { items: [{a: 3}, {a: 4}] } }\n  - { name: save, type: write, with: { path: out.jsonl, append: true } }\n",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("out.jsonl: the file ends in an unfinished line"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "{\"a\":1}\n{\"a\":\n{\"a\":3}\n{\"a\":4}\n"
    );
    // Read back: the torn line is one bad record, the rest are items.
    let (code, stderr, stats) = run_in(
        dir.path(),
        "stages:\n  - { name: r, type: read, on_error: drop, with: { path: out.jsonl, format: jsonl } }\n  - { name: save, type: write, with: { path: back.jsonl } }\n",
    );
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(
        read_jsonl(&dir.path().join("back.jsonl")),
        [
            serde_json::json!({"a": 1}),
            serde_json::json!({"a": 3}),
            serde_json::json!({"a": 4})
        ]
    );
    assert_eq!(count(&stats, "r", "dropped"), 1);
    let message = stats["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("out.jsonl:2: invalid JSON"), "{message}");
}

#[test]
fn items_a_format_cannot_hold_fail_alone_and_the_rest_is_written() {
    let dir = tempfile::tempdir().unwrap();
    for (format, items, columns, want, failed, message) in [
        (
            "lines",
            r#"["a", "b\nc", "d\re", "f", 7]"#,
            "",
            "a\nf\n7\n",
            2,
            "lines: the string holds a line break",
        ),
        (
            "csv",
            r#"[{}, {"a": 1, "b": 2}, {}, {"b": 3}, {"c": 4}]"#,
            "",
            "a,b\n1,2\n,\n,3\n",
            2,
            "csv:",
        ),
        (
            "csv",
            r#"[{}, {"a": 1, "b": 2}, {"c": 4, "b": 5}]"#,
            ", columns: [b, a]",
            "b,a\n,\n2,1\n5,\n",
            0,
            "",
        ),
    ] {
        let yaml = format!(
            "stages:\n  - {{ name: r, type: list, with: {{ items: {items} }} }}\n  - {{ name: save, type: write, with: {{ path: out.txt, format: {format}{columns} }} }}\n"
        );
        let (code, stderr, stats) = run_in(dir.path(), &yaml);
        assert_eq!(code, if failed > 0 { 3 } else { 0 }, "{stderr}");
        let text = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
        assert_eq!(text, want, "{format}{columns}");
        assert_eq!(count(&stats, "save", "dropped"), failed);
        assert_eq!(
            count(&stats, "save", "items_out"),
            count(&stats, "save", "items_in") - failed
        );
        for e in stats["errors"].as_array().unwrap() {
            assert!(e["message"].as_str().unwrap().starts_with(message), "{e}");
        }
    }
}
