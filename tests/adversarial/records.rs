//! Adversarial tests of the record sources and their per-record limits: `read`, `exec`, `files`. Huge, endless, malformed and hostile records end as per-record errors with a clear message, never a crash, a hang or silent loss.
//!
//! Every input is generated here, into a temp dir. Memory is measured as
//! the peak resident set of the `flow` process (`ru_maxrss` from `wait4`
//! through a small Python wrapper: the largest of flow and the processes
//! it ran and waited for): with `max_record: 1MiB` (or `max_answer:
//! 1MiB`), a 200 MB line, a 30 MB CSV field or JSON element, an endless
//! answer or a 20 MB stderr line keep it under [`RSS_BOUND_KIB`] (100 MB;
//! a debug build of flow measured 40 to 53 MB).

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use flow_tests::{Run, flow, read_jsonl, run, stage, stats, write_pipeline};
use serde_json::{Value, json};

/// The peak memory flow may reach on the huge inputs below: 100 MB.
const RSS_BOUND_KIB: u64 = 100 * 1024;

/// Runs `flow` with `args`, recording the peak RSS of the flow process
/// (in KiB) into a file: `wait4` reports it for that one child.
const MEASURE: &str = "import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
child.returncode = 0
open(sys.argv[1], 'w').write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
";

/// A pipeline run in a temp dir: its output, stats and peak memory.
struct Case {
    dir: tempfile::TempDir,
}

struct Ran {
    run: Run,
    stats: Value,
    /// Peak RSS of flow, in KiB.
    rss_kib: u64,
}

impl Case {
    fn new() -> Self {
        Case {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `name` as flow's messages show it.
    fn shown(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) {
        let path = self.path(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    /// Writes `name` from parts, each repeated: a big file without a big
    /// buffer.
    fn write_parts(&self, name: &str, parts: &[(&[u8], usize)]) {
        let file = std::fs::File::create(self.path(name)).unwrap();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        for (bytes, times) in parts {
            if bytes.len() == 1 {
                let block = vec![bytes[0]; 1 << 20];
                let mut left = *times;
                while left > 0 {
                    let n = left.min(block.len());
                    out.write_all(&block[..n]).unwrap();
                    left -= n;
                }
            } else {
                for _ in 0..*times {
                    out.write_all(bytes).unwrap();
                }
            }
        }
        out.flush().unwrap();
    }

    fn jsonl(&self, name: &str) -> Vec<Value> {
        read_jsonl(&self.path(name))
    }

    /// Runs `yaml` with `--stats-json`, measuring flow's peak memory, and
    /// expects exit code `code`.
    fn run(&self, yaml: &str, code: i32) -> Ran {
        let file = write_pipeline(self.dir.path(), "p.yaml", yaml);
        let stats_file = self.path("stats.json");
        let rss_file = self.path("rss");
        let flow_bin = flow().get_program().to_owned();
        let out = run(Command::new("python3")
            .args(["-c", MEASURE])
            .arg(&rss_file)
            .arg(flow_bin)
            .arg("run")
            .arg(&file)
            .arg("--stats-json")
            .arg(&stats_file))
        .expect_code(code);
        let rss_kib = std::fs::read_to_string(&rss_file).unwrap().parse().unwrap();
        Ran {
            stats: stats(&stats_file),
            run: out,
            rss_kib,
        }
    }
}

impl Ran {
    fn stage(&self, name: &str) -> &Value {
        stage(&self.stats, name)
    }

    /// `[items_in, items_out, errors, dropped, dead_lettered]` of a stage.
    fn counts(&self, name: &str) -> [u64; 5] {
        let s = self.stage(name);
        [
            "items_in",
            "items_out",
            "errors",
            "dropped",
            "dead_lettered",
        ]
        .map(|k| {
            s[k].as_u64()
                .unwrap_or_else(|| panic!("{k} of {name}: {s}"))
        })
    }

    /// The distinct messages of the stats' errors, sorted: each group's
    /// examples (a few of its messages) or its one message.
    fn errors(&self) -> Vec<String> {
        let mut errors: Vec<String> = self.stats["errors"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|e| match e["examples"].as_array() {
                Some(examples) => examples.clone(),
                None => vec![e["message"].clone()],
            })
            .map(|m| m.as_str().unwrap().to_string())
            .collect();
        errors.sort();
        errors
    }

    fn assert_rss_below(&self, kib: u64) {
        eprintln!("peak RSS of flow: {} KiB", self.rss_kib);
        assert!(
            self.rss_kib < kib,
            "flow peaked at {} MiB, over the bound of {} MiB",
            self.rss_kib / 1024,
            kib / 1024
        );
    }
}

// ---------------------------------------------------------------- read

#[test]
fn a_200_mb_line_without_a_newline_is_one_error_in_bounded_memory() {
    let c = Case::new();
    c.write_parts("data.txt", &[(b"first\n", 1), (b"x", 200 << 20)]);
    let r = c.run(
        "stages:
  - {name: r, type: read, on_error: drop, with: {path: data.txt, max_record: 1MiB}}
  - {name: save, type: write, with: {path: out.jsonl}}
",
        3,
    );
    assert_eq!(c.jsonl("out.jsonl"), [json!("first")]);
    assert_eq!(r.counts("r"), [0, 1, 1, 1, 0]);
    assert_eq!(r.counts("save"), [1, 1, 0, 0, 0]);
    let message = format!(
        "{}:2: record longer than 1 MiB (max_record)",
        c.shown("data.txt")
    );
    assert_eq!(r.errors(), [message]);
    // Counted ahead and read: two records, one failed.
    assert_eq!(r.stage("r")["total"], 2);
    r.assert_rss_below(RSS_BOUND_KIB);
}

#[test]
fn a_long_line_stops_the_run_by_default_after_the_lines_before_it() {
    let c = Case::new();
    c.write_parts(
        "data.txt",
        &[(b"first\n", 1), (b"x", 5 << 20), (b"\nlast\n", 1)],
    );
    let r = c.run(
        "stages:
  - {name: r, type: read, with: {path: data.txt, max_record: 1MiB}}
  - {name: save, type: write, with: {path: out.jsonl}}
",
        1,
    );
    let failure = format!(
        "stage \"r\": a record failed (on_error: fail): {}:2: record longer than 1 MiB (max_record)",
        c.shown("data.txt")
    );
    assert_eq!(r.stats["status"], "failed");
    assert_eq!(r.stats["failure"], failure.as_str());
    assert!(r.run.stderr.contains(&failure), "{}", r.run.stderr);
    assert_eq!(c.jsonl("out.jsonl"), [json!("first")]);
    assert_eq!(r.counts("r"), [0, 1, 1, 0, 0]);
    assert_eq!(r.counts("save"), [1, 1, 0, 0, 0]);
}

#[test]
fn a_long_line_goes_to_the_dead_letter_stage_and_reading_goes_on() {
    let c = Case::new();
    c.write_parts(
        "data.txt",
        &[(b"first\n", 1), (b"x", 5 << 20), (b"\nlast\n", 1)],
    );
    let r = c.run(
        "stages:
  - {name: r, type: read, on_error: dead, with: {path: data.txt, max_record: 1MiB}}
  - {name: save, type: write, with: {path: out.jsonl}}
  - {name: dead, type: write, inputs: [], with: {path: dead.jsonl}}
",
        3,
    );
    assert_eq!(c.jsonl("out.jsonl"), [json!("first"), json!("last")]);
    let message = format!(
        "{}:2: record longer than 1 MiB (max_record)",
        c.shown("data.txt")
    );
    assert_eq!(
        c.jsonl("dead.jsonl"),
        [json!({
            "item": format!("{}…", "x".repeat(4096)),
            "error": {"stage": "r", "message": message, "attempts": 1},
        })]
    );
    assert_eq!(r.counts("r"), [0, 2, 1, 0, 1]);
    assert_eq!(r.counts("save"), [2, 2, 0, 0, 0]);
    assert_eq!(r.counts("dead"), [1, 1, 0, 0, 0]);
}

#[test]
fn a_huge_csv_field_fails_its_row_alone_in_bounded_memory() {
    let c = Case::new();
    c.write_parts(
        "data.csv",
        &[
            (b"id,text\n1,short\n2,\"", 1),
            (b"y\n", 15 << 20),
            (b"\"\n3,end\n4,", 1),
            (b"z", 30 << 20),
        ],
    );
    let r = c.run(
        "stages:
  - {name: r, type: read, on_error: drop, with: {path: data.csv, format: csv, max_record: 1MiB}}
  - {name: save, type: write, with: {path: out.jsonl}}
",
        3,
    );
    assert_eq!(
        c.jsonl("out.jsonl"),
        [
            json!({"id": "1", "text": "short"}),
            json!({"id": "3", "text": "end"})
        ]
    );
    let f = c.shown("data.csv");
    // The quoted field holds 15 Mi newlines; then `3,end`, then row 4.
    let rows_after = 3 + (15 << 20) + 2;
    let mut want = [
        format!("{f}:3: record longer than 1 MiB (max_record)"),
        format!("{f}:{rows_after}: record longer than 1 MiB (max_record)"),
    ];
    want.sort();
    assert_eq!(r.errors(), want);
    assert_eq!(r.counts("r"), [0, 2, 2, 2, 0]);
    assert_eq!(r.stage("r")["total"], 4);
    r.assert_rss_below(RSS_BOUND_KIB);
}

#[test]
fn a_huge_or_deep_json_element_fails_alone_in_bounded_memory() {
    let c = Case::new();
    c.write_parts(
        "data.json",
        &[
            (b"[1, \"", 1),
            (b"w", 30 << 20),
            (b"\", 2, ", 1),
            (b"[", 10_000),
            (b"]", 10_000),
            (b", {\"k\": NaN}, 3]", 1),
        ],
    );
    let r = c.run(
        "stages:
  - {name: r, type: read, on_error: drop, with: {path: data.json, format: json, max_record: 1MiB}}
  - {name: save, type: write, with: {path: out.jsonl}}
",
        3,
    );
    assert_eq!(c.jsonl("out.jsonl"), [json!(1), json!(2), json!(3)]);
    let f = c.shown("data.json");
    // The deep element starts after `[1, "` + 30 MiB + `", 2, `; the
    // 257th `[` is one too many.
    let deep = 5 + (30 << 20) + 7;
    let nan = deep + 20_000 + 2;
    let mut want = vec![
        format!("{f}:1:5: record longer than 1 MiB (max_record)"),
        format!(
            "{f}:1:{}: invalid JSON: nested deeper than 256 levels",
            deep + 256
        ),
        format!(
            "{f}:1:{}: invalid JSON: expected a JSON value, found `N`",
            nan + 6
        ),
    ];
    want.sort();
    assert_eq!(r.errors(), want);
    assert_eq!(r.counts("r"), [0, 3, 3, 3, 0]);
    assert_eq!(r.stage("r")["total"], 6);
    r.assert_rss_below(RSS_BOUND_KIB);
}

#[test]
fn jsonl_is_strict_and_blank_lines_are_skipped() {
    let c = Case::new();
    c.write(
        "data.jsonl",
        "{\"id\": 1}\n\n   \nNaN\n{\"a\": 1} // note\n{1: 2}\n[1, 2,]\n\t\r\n{\"id\": 2}\n",
    );
    let r = c.run(
        "stages:
  - {name: r, type: read, on_error: drop, with: {path: data.jsonl, format: jsonl}}
  - {name: save, type: write, with: {path: out.jsonl}}
",
        3,
    );
    assert_eq!(c.jsonl("out.jsonl"), [json!({"id": 1}), json!({"id": 2})]);
    let f = c.shown("data.jsonl");
    let mut want = vec![
        format!("{f}:4: invalid JSON: expected a JSON value, found `N` (at byte 1)"),
        format!("{f}:5: invalid JSON: trailing characters after the JSON value (at byte 10)"),
        format!("{f}:6: invalid JSON: expected a string key in an object, found `1` (at byte 2)"),
        format!("{f}:7: invalid JSON: expected a JSON value, found `]` (at byte 7)"),
    ];
    want.sort();
    assert_eq!(r.errors(), want);
    assert_eq!(r.counts("r"), [0, 2, 4, 4, 0]);
    assert_eq!(r.counts("save"), [2, 2, 0, 0, 0]);
    // Blank lines are no records: six counted ahead, six read.
    assert_eq!(r.stage("r")["total"], 6);
}

#[test]
fn invalid_utf8_is_an_error_by_default_and_replaced_when_asked() {
    let c = Case::new();
    c.write("data.txt", b"ok\nbad \xff line\n");
    c.write("data.csv", b"k,v\n1,ok\n2,bad \xc3\n");
    let cases = [
        (
            "data.txt",
            "lines",
            "2: invalid UTF-8 at byte 5 of the line",
            json!("bad \u{fffd} line"),
        ),
        (
            "data.csv",
            "csv",
            "3: invalid UTF-8 in field 2",
            json!({"k": "2", "v": "bad \u{fffd}"}),
        ),
    ];
    for (file, format, error, replaced) in cases {
        let r = c.run(
            &format!(
                "stages:
  - {{name: r, type: read, with: {{path: {file}, format: {format}}}}}
  - {{name: save, type: write, with: {{path: out.jsonl}}}}
"
            ),
            1,
        );
        let message = format!("{}:{error} (invalid_utf8: error)", c.shown(file));
        assert_eq!(r.errors(), std::slice::from_ref(&message), "{file}");
        assert!(r.run.stderr.contains(&message), "{}", r.run.stderr);
        assert_eq!(
            c.jsonl("out.jsonl").len(),
            1,
            "{file}: the record before it"
        );
        let r = c.run(
            &format!(
                "stages:
  - {{name: r, type: read, with: {{path: {file}, format: {format}, invalid_utf8: replace}}}}
  - {{name: save, type: write, with: {{path: out.jsonl}}}}
"
            ),
            0,
        );
        assert_eq!(r.counts("r"), [0, 2, 0, 0, 0], "{file}");
        assert_eq!(c.jsonl("out.jsonl")[1], replaced, "{file}");
    }
}

/// An `exec` script that changes `data.txt` when it sees the first item,
/// then echoes every item: the reader is held back by the queues until
/// then, far from the file's end.
fn changing_script(change: &str) -> String {
    format!(
        "import os, sys
first = True
for line in sys.stdin:
    if first:
        first = False
{change}
    sys.stdout.write(line)
    sys.stdout.flush()
"
    )
}

const CHANGING: &str = "stages:
  - {name: r, type: read, with: {path: data.txt}}
  - {name: change, type: exec, with: {command: [python3, change.py]}}
  - {name: save, type: write, with: {path: out.jsonl}}
";

fn numbered_lines(c: &Case, n: usize) -> u64 {
    let text: String = (0..n).map(|i| format!("{i}\n")).collect();
    c.write("data.txt", &text);
    text.len() as u64
}

#[test]
fn a_file_truncated_while_it_is_read_fails_the_run() {
    let c = Case::new();
    let size = numbered_lines(&c, 100_000);
    c.write(
        "change.py",
        changing_script("        open('data.txt', 'r+').truncate(10)"),
    );
    let r = c.run(CHANGING, 1);
    let failure = format!(
        "stage \"r\": source failed: {}: the file was truncated while it was read: {size} bytes \
         when it was opened, its end came after ",
        c.shown("data.txt")
    );
    let got = r.stats["failure"].as_str().unwrap();
    assert!(got.starts_with(&failure), "{got}");
    assert!(got.ends_with("; its records may be incomplete"), "{got}");
    let read = r.counts("r")[1];
    assert!(read < 100_000, "{read} records read");
    // What was read went through.
    assert_eq!(c.jsonl("out.jsonl").len() as u64, read);
    assert_eq!(r.counts("save")[1], read);
}

#[test]
fn a_file_replaced_while_it_is_read_fails_the_run_at_its_end() {
    let c = Case::new();
    numbered_lines(&c, 100_000);
    c.write(
        "change.py",
        changing_script(
            "        open('new.txt', 'w').write('other\\n')\n        os.replace('new.txt', 'data.txt')",
        ),
    );
    let r = c.run(CHANGING, 1);
    assert_eq!(
        r.stats["failure"],
        format!(
            "stage \"r\": source failed: {}: the file was replaced while it was read: its name \
             leads to another file now; its records may be incomplete",
            c.shown("data.txt")
        )
    );
    // The file it opened was read to its end.
    assert_eq!(r.counts("r")[1], 100_000);
    assert_eq!(c.jsonl("out.jsonl").len(), 100_000);
}

#[cfg(unix)]
#[test]
fn a_glob_reads_each_file_once_through_link_loops() {
    use std::os::unix::fs::symlink;
    let c = Case::new();
    c.write("data/a.jsonl", "1\n");
    c.write("data/sub/b.jsonl", "2\n");
    // Links back up the tree, twice over, a link to a directory and to a
    // file, and a hard link.
    symlink("..", c.path("data/sub/up")).unwrap();
    symlink(".", c.path("data/sub/here")).unwrap();
    symlink("sub", c.path("data/again")).unwrap();
    symlink("a.jsonl", c.path("data/link.jsonl")).unwrap();
    std::fs::hard_link(c.path("data/a.jsonl"), c.path("data/hard.jsonl")).unwrap();
    let r = c.run(
        "stages:
  - {name: r, type: read, with: {path: 'data/**/*.jsonl', format: jsonl}}
  - {name: save, type: write, with: {path: out.jsonl}}
",
        0,
    );
    assert_eq!(c.jsonl("out.jsonl"), [json!(1), json!(2)]);
    assert_eq!(r.counts("r"), [0, 2, 0, 0, 0]);
    assert_eq!(r.stage("r")["total"], 2);
}

#[test]
fn a_file_past_max_file_fails_that_file_alone() {
    let c = Case::new();
    c.write("img/a.bin", [1u8; 10]);
    c.write("img/b.bin", [2u8; 2000]);
    c.write("img/c.bin", [3u8; 1024]);
    let r = c.run(
        "stages:
  - {name: r, type: read, on_error: dead, with: {path: 'img/*.bin', format: bytes, max_file: 1KiB}}
  - {name: sizes, type: map, with: {expr: '{name, size: (.body | length)}'}}
  - {name: save, type: write, with: {path: out.jsonl}}
  - {name: dead, type: write, inputs: [], with: {path: dead.jsonl}}
",
        3,
    );
    assert_eq!(
        c.jsonl("out.jsonl"),
        [
            json!({"name": "a.bin", "size": 10}),
            json!({"name": "c.bin", "size": 1024})
        ]
    );
    let b = c.shown("img/b.bin");
    assert_eq!(
        c.jsonl("dead.jsonl"),
        [json!({
            "item": {"path": b, "name": "b.bin"},
            "error": {"stage": "r", "message": format!("{b}: the file is larger than 1 KiB (max_file)"), "attempts": 1},
        })]
    );
    assert_eq!(r.counts("r"), [0, 2, 1, 0, 1]);
}

// ---------------------------------------------------------------- files

#[cfg(unix)]
#[test]
fn files_never_writes_through_a_link_under_dir() {
    use std::os::unix::fs::symlink;
    let c = Case::new();
    c.write("outside/keep.txt", "keep");
    std::fs::create_dir_all(c.path("out/real")).unwrap();
    symlink("../outside", c.path("out/link")).unwrap();
    symlink("../../outside", c.path("out/real/deep")).unwrap();
    symlink("../outside/keep.txt", c.path("out/target.txt")).unwrap();
    let r = c.run(
        "stages:
  - name: items
    type: list
    with:
      items:
        - {name: ok.txt, body: fine}
        - {name: link/x.txt, body: escaped}
        - {name: link/new/y.txt, body: escaped}
        - {name: real/deep/z.txt, body: escaped}
        - {name: target.txt, body: replaced}
  - {name: save, type: files, on_error: dead, with: {dir: out, name: .name}}
  - {name: dead, type: write, inputs: [], with: {path: dead.jsonl}}
",
        3,
    );
    let letters: Vec<(Value, Value)> = c
        .jsonl("dead.jsonl")
        .into_iter()
        .map(|l| (l["item"]["name"].clone(), l["error"]["message"].clone()))
        .collect();
    let refused = |name: &str, link: &str| {
        (
            json!(name),
            json!(format!(
                "cannot write {name:?}: {link:?} under `dir` is a symbolic link; names may not pass through links"
            )),
        )
    };
    assert_eq!(
        letters,
        [
            refused("link/x.txt", "link"),
            refused("link/new/y.txt", "link"),
            refused("real/deep/z.txt", "real/deep"),
        ]
    );
    assert_eq!(r.counts("save"), [5, 2, 3, 0, 3]);
    let mut outside: Vec<_> = std::fs::read_dir(c.path("outside"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    outside.sort();
    assert_eq!(outside, ["keep.txt"], "nothing written outside dir");
    assert_eq!(
        std::fs::read_to_string(c.path("outside/keep.txt")).unwrap(),
        "keep"
    );
    // The link named by an item was replaced by the file, not written through.
    assert!(
        std::fs::symlink_metadata(c.path("out/target.txt"))
            .unwrap()
            .is_file()
    );
    assert_eq!(
        std::fs::read_to_string(c.path("out/target.txt")).unwrap(),
        "replaced"
    );
    assert_eq!(
        std::fs::read_to_string(c.path("out/ok.txt")).unwrap(),
        "fine"
    );
}

#[test]
fn a_second_item_naming_a_written_file_fails_unless_duplicates_replace() {
    let c = Case::new();
    c.write("out/old.txt", "from before the run");
    let items = "[{name: a.txt, body: '1'}, {name: a.txt, body: '2'}, {name: ./a.txt, body: '3'},
              {name: b.txt, body: '4'}, {name: old.txt, body: '5'}]";
    let r = c.run(
        &format!(
            "stages:
  - {{name: items, type: list, with: {{items: {items}}}}}
  - {{name: save, type: files, with: {{dir: out, name: .name}}}}
"
        ),
        3,
    );
    let read = |name: &str| std::fs::read_to_string(c.path("out").join(name)).unwrap();
    assert_eq!(
        (read("a.txt"), read("b.txt"), read("old.txt")),
        ("1".into(), "4".into(), "5".into())
    );
    assert_eq!(r.counts("save"), [5, 3, 2, 2, 0]);
    assert_eq!(
        r.errors(),
        [
            "file name \"./a.txt\" was already written by an earlier item of this run (duplicates: fail)",
            "file name \"a.txt\" was already written by an earlier item of this run (duplicates: fail)",
        ]
    );
    let r = c.run(
        &format!(
            "stages:
  - {{name: items, type: list, with: {{items: {items}}}}}
  - {{name: save, type: files, with: {{dir: out, name: .name, duplicates: replace}}}}
"
        ),
        0,
    );
    assert_eq!(read("a.txt"), "3");
    assert_eq!(r.counts("save"), [5, 5, 0, 0, 0]);
}

#[test]
fn files_writes_names_up_to_255_bytes_a_part() {
    let c = Case::new();
    let longest = "n".repeat(255);
    let long_dir = "d".repeat(255);
    let too_long = "m".repeat(256);
    let r = c.run(
        &format!(
            "stages:
  - {{name: items, type: list, with: {{items: ['{longest}', '{long_dir}/{longest}', 'ok/{too_long}']}}}}
  - {{name: save, type: files, with: {{dir: out, name: ., field: x}}}}
"
        ),
        3,
    );
    assert_eq!(r.counts("save"), [3, 2, 1, 1, 0]);
    assert_eq!(
        r.errors(),
        [format!(
            "file name \"ok/{}…\" has a part of 256 bytes (\"{}\"…); a file or directory name may have at most 255",
            "m".repeat(197),
            "m".repeat(40)
        )]
    );
    assert_eq!(
        std::fs::read_to_string(c.path("out").join(&longest)).unwrap(),
        longest
    );
    let nested = c.path("out").join(&long_dir).join(&longest);
    assert_eq!(
        std::fs::read_to_string(nested).unwrap(),
        format!("{long_dir}/{longest}")
    );
}

// ---------------------------------------------------------------- exec

/// The pids an `exec` script reported with `started pid N` on stderr.
fn started_pids(log: &str) -> Vec<u32> {
    log.lines()
        .filter_map(|l| l.split("started pid ").nth(1))
        .map(|pid| pid.trim().parse().unwrap())
        .collect()
}

const STARTED: &str = "import json, os, sys
print(f'started pid {os.getpid()}', file=sys.stderr, flush=True)
";

#[test]
fn items_of_megabytes_go_through_cat_without_a_deadlock() {
    let c = Case::new();
    let items = [
        json!({"i": 0, "text": "x".repeat(1 << 20)}),
        json!({"i": 1, "text": "y".repeat(5 << 20)}),
        json!({"i": 2, "text": "z"}),
    ];
    let text: String = items.iter().map(|i| format!("{i}\n")).collect();
    c.write("items.jsonl", text);
    let r = c.run(
        "stages:
  - {name: r, type: read, with: {path: items.jsonl, format: jsonl}}
  - {name: echo, type: exec, with: {command: [cat]}}
  - {name: save, type: write, with: {path: out.jsonl}}
",
        0,
    );
    assert_eq!(c.jsonl("out.jsonl"), items);
    assert_eq!(r.counts("echo"), [3, 3, 0, 0, 0]);
}

#[test]
fn an_answer_past_max_answer_fails_its_item_in_bounded_memory() {
    let c = Case::new();
    c.write(
        "big.py",
        format!(
            "{STARTED}for line in sys.stdin:
    item = json.loads(line)
    if item == 1:
        sys.stdout.write('\"' + 'a' * (2 << 20) + '\"\\n')
    elif item == 2:
        while True:
            sys.stdout.write('b' * 65536)
    else:
        sys.stdout.write(line)
    sys.stdout.flush()
"
        ),
    );
    let r = c.run(
        "stages:
  - {name: n, type: generate, with: {count: 4}}
  - {name: big, type: exec, on_error: dead, with: {command: [python3, big.py], max_answer: 1MiB}}
  - {name: save, type: write, with: {path: out.jsonl}}
  - {name: dead, type: write, inputs: [], with: {path: dead.jsonl}}
",
        3,
    );
    assert_eq!(c.jsonl("out.jsonl"), [json!(0), json!(3)]);
    let message = "the answer is longer than 1 MiB (max_answer); the process is restarted";
    let letters: Vec<(Value, Value)> = c
        .jsonl("dead.jsonl")
        .into_iter()
        .map(|l| (l["item"].clone(), l["error"]["message"].clone()))
        .collect();
    assert_eq!(
        letters,
        [(json!(1), json!(message)), (json!(2), json!(message))]
    );
    assert_eq!(r.counts("big"), [4, 2, 2, 0, 2]);
    // One process per failure, and one to start with.
    assert_eq!(started_pids(&r.run.stderr).len(), 3, "{}", r.run.stderr);
    r.assert_rss_below(RSS_BOUND_KIB);
}

#[test]
fn a_20_mb_stderr_line_is_logged_cut_in_bounded_memory() {
    let c = Case::new();
    c.write(
        "loud.py",
        format!(
            "{STARTED}for line in sys.stdin:
    sys.stderr.write('e' * 20_000_000 + '\\n')
    sys.stderr.flush()
    sys.stdout.write(line)
    sys.stdout.flush()
"
        ),
    );
    let r = c.run(
        "stages:
  - {name: n, type: generate, with: {count: 1}}
  - {name: loud, type: exec, with: {command: [python3, loud.py]}}
  - {name: save, type: write, with: {path: out.jsonl}}
",
        0,
    );
    let [pid] = started_pids(&r.run.stderr)[..] else {
        panic!("{}", r.run.stderr)
    };
    let line = format!(
        "loud[{pid}]: {}… [line cut: {} more bytes]",
        "e".repeat(4096),
        20_000_000 - 4096
    );
    assert!(r.run.stderr.contains(&line), "no cut line in the log");
    assert_eq!(c.jsonl("out.jsonl"), [json!(0)]);
    r.assert_rss_below(RSS_BOUND_KIB);
}

#[test]
fn a_flood_of_stderr_lines_is_throttled_and_counted() {
    let c = Case::new();
    c.write(
        "flood.py",
        format!(
            "{STARTED}for line in sys.stdin:
    for i in range(20_000):
        print(f'noise {{i}}', file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.write(line)
    sys.stdout.flush()
"
        ),
    );
    let r = c.run(
        "stages:
  - {name: n, type: generate, with: {count: 1}}
  - {name: flood, type: exec, with: {command: [python3, flood.py], log_lines_per_second: 10}}
  - {name: save, type: write, with: {path: out.jsonl}}
",
        0,
    );
    let [pid] = started_pids(&r.run.stderr)[..] else {
        panic!("{}", r.run.stderr)
    };
    let prefix = format!("flood[{pid}]: ");
    let shown = r
        .run
        .stderr
        .lines()
        .filter(|l| l.contains(&format!("{prefix}noise ")))
        .count() as u64;
    // The last line counts what was held back of the 20,001 lines (the
    // `started` line included).
    let summary = r
        .run
        .stderr
        .lines()
        .find_map(|l| {
            let rest = l.split(&prefix).nth(1)?;
            rest.strip_suffix(" of its 20001 stderr lines were not shown")
        })
        .unwrap_or_else(|| panic!("no summary line"));
    let held: u64 = summary.parse().unwrap();
    assert_eq!(shown + 1 + held, 20_001);
    assert!(held > 0);
    assert_eq!(c.jsonl("out.jsonl"), [json!(0)]);
}

/// A script that answers item 3 with an extra line, written in the same
/// `write` as the answer, so both are there when the answer is read.
fn extra_line_script() -> String {
    format!(
        "{STARTED}for line in sys.stdin:
    item = json.loads(line)
    answer = json.dumps({{'item': item, 'pid': os.getpid()}}) + '\\n'
    if item == 3:
        answer += '\"extra\"\\n'
    sys.stdout.write(answer)
    sys.stdout.flush()
"
    )
}

#[test]
fn an_extra_line_fails_the_next_item_which_a_fresh_process_answers_on_retry() {
    let c = Case::new();
    c.write("extra.py", extra_line_script());
    let r = c.run(
        "stages:
  - {name: n, type: generate, with: {count: 6}}
  - {name: work, type: exec, retry: {attempts: 2, backoff: 10ms}, with: {command: [python3, extra.py]}}
  - {name: save, type: write, with: {path: out.jsonl}}
",
        0,
    );
    let [first, second] = started_pids(&r.run.stderr)[..] else {
        panic!("{}", r.run.stderr)
    };
    let answers: Vec<(i64, u32)> = c
        .jsonl("out.jsonl")
        .iter()
        .map(|a| {
            (
                a["item"].as_i64().unwrap(),
                a["pid"].as_u64().unwrap() as u32,
            )
        })
        .collect();
    let want: Vec<(i64, u32)> = (0..6)
        .map(|i| (i, if i < 4 { first } else { second }))
        .collect();
    assert_eq!(answers, want, "every answer on its own item");
    assert_eq!(r.counts("work"), [6, 6, 0, 0, 0]);
    assert_eq!(r.stage("work")["retries"], 1);
}

#[test]
fn an_extra_line_is_an_item_error_naming_the_protocol() {
    let c = Case::new();
    c.write("extra.py", extra_line_script());
    let r = c.run(
        "stages:
  - {name: n, type: generate, with: {count: 6}}
  - {name: work, type: exec, with: {command: [python3, extra.py]}}
  - {name: save, type: write, with: {path: out.jsonl}}
",
        3,
    );
    assert_eq!(
        r.errors(),
        [
            r#"the process wrote more than one line for an item: "\"extra\"\n" was unread when the next item was due; the process is restarted"#
        ]
    );
    assert_eq!(r.counts("work"), [6, 5, 1, 1, 0]);
    let items: Vec<Value> = c
        .jsonl("out.jsonl")
        .iter()
        .map(|a| a["item"].clone())
        .collect();
    assert_eq!(items, [json!(0), json!(1), json!(2), json!(3), json!(5)]);
}

#[test]
fn an_extra_line_after_the_last_answer_fails_the_run() {
    let c = Case::new();
    c.write("extra.py", extra_line_script());
    let r = c.run(
        "stages:
  - {name: n, type: generate, with: {count: 4}}
  - {name: work, type: exec, with: {command: [python3, extra.py]}}
  - {name: save, type: write, with: {path: out.jsonl}}
",
        1,
    );
    let [pid] = started_pids(&r.run.stderr)[..] else {
        panic!("{}", r.run.stderr)
    };
    let failure = r.stats["failure"].as_str().unwrap();
    let want = format!(
        "work[{pid}]: the process wrote more than one line for an item: \"\\\"extra\\\"\\n\" was left \
         unread after its last answer, so answers may have gone to the wrong items"
    );
    assert!(failure.ends_with(&want), "{failure}");
    assert_eq!(c.jsonl("out.jsonl").len(), 4);
}

#[test]
fn an_answer_nested_10000_deep_is_an_item_error() {
    let c = Case::new();
    c.write(
        "deep.py",
        "import json, sys
for line in sys.stdin:
    item = json.loads(line)
    print('[' * 10000 + ']' * 10000 if item == 1 else line.strip(), flush=True)
",
    );
    let r = c.run(
        "stages:
  - {name: n, type: generate, with: {count: 3}}
  - {name: deep, type: exec, with: {command: [python3, deep.py]}}
  - {name: save, type: write, with: {path: out.jsonl}}
",
        3,
    );
    assert_eq!(c.jsonl("out.jsonl"), [json!(0), json!(2)]);
    assert_eq!(
        r.errors(),
        [format!(
            "the process answered with invalid JSON (nested deeper than 256 levels (at byte 257)): \"{}…\"",
            "[".repeat(80)
        )]
    );
    assert_eq!(r.counts("deep"), [3, 2, 1, 1, 0]);
}

/// Waits (up to 30 s, a guard against a hang) until the process `pid`
/// has exited; false if it still runs.
fn exits(pid: u32) -> bool {
    let wait = format!(
        "import os, select, sys
try:
    fd = os.pidfd_open({pid})
except ProcessLookupError:
    sys.exit(0)
ready, _, _ = select.select([fd], [], [], 30)
sys.exit(0 if ready else 1)
"
    );
    Command::new("python3")
        .args(["-c", &wait])
        .status()
        .unwrap()
        .success()
}

#[test]
fn what_a_process_leaves_running_in_its_group_dies_with_it() {
    let c = Case::new();
    c.write(
        "spawn.py",
        format!(
            "{STARTED}import subprocess
for line in sys.stdin:
    child = subprocess.Popen(['sleep', '600'])
    print(f'sleeper pid {{child.pid}}', file=sys.stderr, flush=True)
    sys.stdout.write(line)
    sys.stdout.flush()
"
        ),
    );
    let r = c.run(
        "stages:
  - {name: n, type: generate, with: {count: 2}}
  - {name: spawn, type: exec, with: {command: [python3, spawn.py]}}
  - {name: save, type: write, with: {path: out.jsonl}}
",
        0,
    );
    let sleepers: Vec<u32> = r
        .run
        .stderr
        .lines()
        .filter_map(|l| l.split("sleeper pid ").nth(1))
        .map(|p| p.trim().parse().unwrap())
        .collect();
    assert_eq!(sleepers.len(), 2, "{}", r.run.stderr);
    for pid in sleepers {
        assert!(exits(pid), "sleeper {pid} outlived the run");
    }
}
