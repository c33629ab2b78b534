//! Adversarial tests of pipeline files: whatever a file holds, `flow validate` and `flow run` answer with an error that names the place, never a panic, an abort or a hang, in time and memory linear in its size.
//!
//! Through the real binary. Three classes:
//!
//! * `${VAR}` values land as the literal text of the one scalar they are
//!   written in, whatever they hold: they never add a stage, a key or a
//!   line of YAML.
//! * What a file may ask for is bounded (workers, queues, rates, bursts,
//!   retries, durations, stages, nesting, aliases, size), each with its
//!   `file:line:column: stage "x": key: message` line and exit code 2;
//!   huge, deep and alias-bomb files end with exit code 2 (or 0) in bounded
//!   memory, measured as the child's peak RSS from `wait4`.
//! * A source's `on_error` is validated like a processor's.
//!
//! Every input is generated here; nothing large is committed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use flow_tests::{Run, flow, read_jsonl, run, write_pipeline};
use tempfile::TempDir;

/// Variables these tests set; removed from every command first, so the
/// environment they run in does not matter.
const VARS: [&str; 6] = [
    "FLOW_ADV_V",
    "FLOW_ADV_OTHER",
    "FLOW_ADV_N",
    "FLOW_ADV_FLAG",
    "FLOW_ADV_K",
    "FLOW_ADV_UNSET",
];

/// A pipeline file `bad.yaml` in a fresh directory.
struct Pipeline {
    dir: TempDir,
}

impl Pipeline {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        write_pipeline(dir.path(), "bad.yaml", text);
        Pipeline { dir }
    }

    fn lines(lines: &[&str]) -> Self {
        Self::new(&(lines.join("\n") + "\n"))
    }

    /// `flow SUBCOMMAND bad.yaml` in the file's directory, with `env` set.
    fn command(&self, subcommand: &str, env: &[(&str, &str)]) -> Command {
        let mut cmd = flow();
        cmd.arg(subcommand)
            .arg("bad.yaml")
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG");
        for name in VARS {
            cmd.env_remove(name);
        }
        for (name, value) in env {
            cmd.env(name, value);
        }
        cmd
    }

    fn validate(&self, env: &[(&str, &str)]) -> Run {
        run(&mut self.command("validate", env))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The problem lines of a failed validation (exit code 2, nothing on
/// stdout).
fn problems_of(out: Run) -> Vec<String> {
    let out = out.expect_code(2);
    assert_eq!(out.stdout, "", "validation failed but printed on stdout");
    out.stderr.lines().map(str::to_string).collect()
}

#[track_caller]
fn assert_problems(lines: &[&str], expected: &[&str]) {
    let got = problems_of(Pipeline::lines(lines).validate(&[]));
    assert_eq!(got, expected, "for:\n{}", lines.join("\n"));
}

/// `gen -> out`, with `extra` lines added to `out`.
fn with_sink_lines<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut lines = vec![
        "stages:",
        "  - name: gen",
        "    type: generate",
        "    with: { count: 3 }",
        "  - name: out",
        "    type: drop",
    ];
    lines.extend(extra);
    lines
}

// 1. `${VAR}` becomes (part of) one scalar, never YAML.

/// Values that would have rewritten the file when substituted into its
/// text: each must come out as the literal text of its scalar.
fn hostile_values() -> Vec<(&'static str, String)> {
    vec![
        (
            "a newline and a new stage",
            "x'\n  - name: evil\n    type: exec\n    with: {command: [sh, -c, 'touch pwned']}\n  - name: y\n    type: drop\n".into(),
        ),
        ("a closing brace and bracket", "a'] }, {evil: 1}, ['b".into()),
        ("a single quote", "O'Brien.txt".into()),
        ("a double quote", "say \"hi\"".into()),
        ("both quotes and a backslash", r#"it's "x" \n \"#.into()),
        ("a comment", "value # not a comment".into()),
        ("a mapping", "key: value".into()),
        ("a flow mapping", "{a: 1, b: [2]}".into()),
        ("a list item", "- item".into()),
        ("an anchor and an alias", "&a x *a".into()),
        ("a document marker", "---\n...\n".into()),
        ("a reference", "${FLOW_ADV_OTHER}".into()),
        ("a dollar", "$$ and $i and ${".into()),
        ("a tab and trailing spaces", "\tx  ".into()),
        (
            "a long value",
            "line 'with' \"quotes\" # and: {more}\n".repeat(2_000),
        ),
    ]
}

/// A `list` source whose one item is the scalar `scalar` (in the style the
/// caller wrote it), run into `out.jsonl`; returns what was written.
fn run_one_item(scalar_lines: &[&str], value: &str) -> Vec<serde_json::Value> {
    let mut lines = vec![
        "stages:",
        "  - name: src",
        "    type: list",
        "    with:",
        "      items:",
    ];
    lines.extend(scalar_lines);
    lines.extend([
        "  - name: out",
        "    type: write",
        "    with: { path: out.jsonl }",
    ]);
    let pipeline = Pipeline::lines(&lines);
    let env = [("FLOW_ADV_V", value), ("FLOW_ADV_OTHER", "expanded again")];
    let out = pipeline.validate(&env).expect_code(0);
    assert_eq!(out.stdout, "bad.yaml: ok: 2 stages (src, out)\n");
    run(&mut pipeline.command("run", &env)).expect_code(0);
    assert!(!pipeline.path("pwned").exists());
    read_jsonl(&pipeline.path("out.jsonl"))
}

#[test]
fn a_value_is_the_literal_text_of_its_scalar_in_every_style() {
    let styles: [(&str, &[&str], &str, &str); 5] = [
        ("single-quoted", &["        - '${FLOW_ADV_V}'"], "", ""),
        (
            "double-quoted",
            &[r#"        - "<${FLOW_ADV_V}>""#],
            "<",
            ">",
        ),
        ("plain", &["        - ${FLOW_ADV_V}"], "", ""),
        (
            "plain in a flow list",
            &["        - [${FLOW_ADV_V}, z]"],
            "",
            "",
        ),
        (
            "literal block",
            &["        - |", "          v=${FLOW_ADV_V}"],
            "v=",
            "\n",
        ),
    ];
    for (what, value) in hostile_values() {
        for (style, lines, before, after) in styles {
            let items = run_one_item(lines, &value);
            let expected = format!("{before}{value}{after}");
            let got = match style {
                "plain in a flow list" => {
                    assert_eq!(items.len(), 1, "{what}, {style}: {items:?}");
                    assert_eq!(items[0][1], "z", "{what}, {style}");
                    items[0][0].clone()
                }
                _ => {
                    assert_eq!(items.len(), 1, "{what}, {style}: {items:?}");
                    items[0].clone()
                }
            };
            assert_eq!(got, expected, "{what}, {style}");
        }
    }
}

#[test]
fn a_value_cannot_add_a_stage_or_a_key() {
    // In the old text substitution, this value added an `exec` stage.
    let value =
        "out.jsonl\n  - name: evil\n    type: exec\n    with: {command: [sh, -c, 'touch pwned']}";
    let pipeline = Pipeline::lines(&[
        "stages:",
        "  - name: gen",
        "    type: generate",
        "    with: { count: 1 }",
        "  - name: out",
        "    type: write",
        "    with: { path: ${FLOW_ADV_V}, format: jsonl }",
    ]);
    let env = [("FLOW_ADV_V", value)];
    let out = pipeline.validate(&env).expect_code(0);
    assert_eq!(out.stdout, "bad.yaml: ok: 2 stages (gen, out)\n");
    run(&mut pipeline.command("run", &env)).expect_code(0);
    assert!(!pipeline.path("pwned").exists());
    // The whole value, newlines and all, is the file's name.
    let written: Vec<String> = std::fs::read_dir(pipeline.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "bad.yaml")
        .collect();
    assert_eq!(written, [value]);
}

#[test]
fn keys_are_never_interpolated() {
    let lines = [
        "stages:",
        "  - name: gen",
        "    type: generate",
        "    ${FLOW_ADV_K}: 4",
        "  - name: out",
        "    type: drop",
    ];
    let got = problems_of(Pipeline::lines(&lines).validate(&[("FLOW_ADV_K", "workers")]));
    assert_eq!(
        got,
        [
            r#"bad.yaml:4:5: stage "gen": unknown key "${FLOW_ADV_K}"; expected one of: name, type, inputs, workers, queue, queue_bytes, order, ordered, priority, rate, burst, rate_key, retry, timeout, on_error, with"#
        ]
    );
}

#[test]
fn comments_are_never_interpolated() {
    let lines = [
        "stages:   # ${FLOW_ADV_UNSET}",
        "  - name: gen",
        "    type: generate",
        "    # - name: ${FLOW_ADV_UNSET:?never read}",
        "  - name: out",
        "    type: drop # ${FLOW_ADV_UNSET}",
    ];
    Pipeline::lines(&lines).validate(&[]).expect_code(0);
}

#[test]
fn a_plain_lone_reference_takes_the_type_of_its_value() {
    let lines = with_sink_lines(&[
        "    workers: ${FLOW_ADV_N}",
        "    ordered: ${FLOW_ADV_FLAG}",
    ]);
    let pipeline = Pipeline::lines(&lines);
    pipeline
        .validate(&[("FLOW_ADV_N", "3"), ("FLOW_ADV_FLAG", "true")])
        .expect_code(0);
    pipeline
        .validate(&[("FLOW_ADV_N", "0x10"), ("FLOW_ADV_FLAG", "false")])
        .expect_code(0);
    assert_eq!(
        problems_of(pipeline.validate(&[("FLOW_ADV_N", "3"), ("FLOW_ADV_FLAG", "yes")])),
        [
            r#"bad.yaml:8:14: stage "out": ordered: invalid type: string "yes", expected a boolean: write true or false (YAML 1.2 reads yes, no, on and off as text)"#
        ]
    );
    // A value holding YAML stays one word.
    assert_eq!(
        problems_of(pipeline.validate(&[("FLOW_ADV_N", "[1]"), ("FLOW_ADV_FLAG", "true")])),
        [
            r#"bad.yaml:7:14: stage "out": workers: invalid type: string "[1]", expected a whole number, 0 or more"#
        ]
    );
}

#[test]
fn a_quoted_or_mixed_reference_stays_a_string() {
    let quoted = Pipeline::lines(&with_sink_lines(&["    workers: '${FLOW_ADV_N}'"]));
    assert_eq!(
        problems_of(quoted.validate(&[("FLOW_ADV_N", "3")])),
        [
            r#"bad.yaml:7:14: stage "out": workers: invalid type: string "3", expected a whole number, 0 or more; a number in quotes is text: write 3 without quotes"#
        ]
    );
    let mixed = Pipeline::lines(&with_sink_lines(&["    workers: ${FLOW_ADV_N}0"]));
    assert_eq!(
        problems_of(mixed.validate(&[("FLOW_ADV_N", "3")])),
        [
            r#"bad.yaml:7:14: stage "out": workers: invalid type: string "30", expected a whole number, 0 or more"#
        ]
    );
}

#[test]
fn every_bad_reference_is_reported_at_its_dollar() {
    let lines = [
        "stages:",
        "  - name: gen",
        "    type: generate",
        r#"    with: { count: 3, value: "'x' + ${FLOW_ADV_UNSET}" }"#,
        "  - name: out",
        "    type: write",
        "    with:",
        "      path: '${FLOW_ADV_UNSET:?set FLOW_ADV_UNSET to a path}'",
        "      format: ${FLOW_ADV_V",
    ];
    assert_eq!(
        problems_of(Pipeline::lines(&lines).validate(&[])),
        [
            r#"bad.yaml:4:37: stage "gen": with.value: environment variable FLOW_ADV_UNSET is not set (write ${FLOW_ADV_UNSET:-default} to give a default)"#,
            r#"bad.yaml:8:14: stage "out": with.path: FLOW_ADV_UNSET: set FLOW_ADV_UNSET to a path"#,
            r#"bad.yaml:9:15: stage "out": with.format: `${FLOW_ADV_V`: expected `}` after the variable name, found the end of the value"#,
        ]
    );
}

#[test]
fn an_error_in_a_substituted_expression_points_where_it_was_written() {
    let lines = [
        "stages:",
        "  - name: gen",
        "    type: generate",
        "    with: { count: 3 }",
        "  - name: square",
        "    type: map",
        "    with: { expr: '. * ${FLOW_ADV_V} | | .' }",
        "  - name: out",
        "    type: drop",
    ];
    let pipeline = Pipeline::lines(&lines);
    // After the value: the second `|` as written, at column 40.
    assert_eq!(
        problems_of(pipeline.validate(&[("FLOW_ADV_V", "2")])),
        [
            r#"bad.yaml:7:40: stage "square": with.expr: invalid jq expression: expected term, found "|""#,
            "    . * 2 | | .",
            "            ^",
        ]
    );
    // Inside the value: its `$`, at column 24.
    assert_eq!(
        problems_of(pipeline.validate(&[("FLOW_ADV_V", "(|)")])),
        [
            r#"bad.yaml:7:24: stage "square": with.expr: invalid jq expression: expected term, found "|""#,
            "    . * (|) | | .",
            "         ^",
        ]
    );
}

// 2. Bounded: every limit has its line.

#[test]
fn counts_over_their_limits_are_rejected_at_their_values() {
    let cases: [(&str, &str); 8] = [
        ("    workers: 100000000", "workers: must be at most 10000"),
        (
            "    workers: 99999999999999999999999999999999999999999",
            "workers: must be at most 10000",
        ),
        ("    queue: 1000001", "queue: must be at most 1000000"),
        (
            "    queue_bytes: 65GiB",
            r#"queue_bytes: invalid size "65GiB": must be at most 64GiB"#,
        ),
        (
            "    queue_bytes: 99999999999999999999999999999999999999999999999",
            r#"queue_bytes: invalid size "99999999999999999999999999999999999999999999999": must be at most 64GiB"#,
        ),
        (
            "    retry: {attempts: 1001}",
            "retry.attempts: must be at most 1000",
        ),
        (
            "    retry: {attempts: 4294967296}",
            "retry.attempts: must be at most 1000",
        ),
        (
            "    workers: -1",
            "workers: invalid type: integer `-1`, expected a whole number, 0 or more",
        ),
    ];
    for (line, message) in cases {
        let column = line.find(": ").unwrap() + 3;
        let column = if line.contains("attempts") {
            line.find("attempts: ").unwrap() + 11
        } else {
            column
        };
        assert_problems(
            &with_sink_lines(&[line]),
            &[&format!(r#"bad.yaml:7:{column}: stage "out": {message}"#)],
        );
    }
}

#[test]
fn bursts_and_rates_over_their_limits_are_rejected() {
    assert_problems(
        &with_sink_lines(&["    rate: 5/s", "    burst: 4294967296"]),
        &[r#"bad.yaml:8:12: stage "out": burst: must be at most 1000000"#],
    );
    assert_problems(
        &[
            "limits:",
            "  huge: { rate: 1000000/s, burst: 1000001 }",
            "stages:",
            "  - name: gen",
            "    type: generate",
            "  - name: out",
            "    type: drop",
            "    rate: huge",
        ],
        &["bad.yaml:2:35: limits.huge.burst: must be at most 1000000"],
    );
    let rate = |value: &str| {
        let line = format!("    rate: {value}");
        problems_of(Pipeline::lines(&with_sink_lines(&[&line])).validate(&[]))
    };
    let how = "write COUNT/PERIOD, like 5/s, 100/min or 20/10s";
    assert_eq!(
        rate("1000001/s"),
        [format!(
            r#"bad.yaml:7:11: stage "out": rate: invalid rate "1000001/s": faster than 1000000/s, the fastest a limit may be; {how}"#
        )]
    );
    assert_eq!(
        rate("4294967295/1ms"),
        [format!(
            r#"bad.yaml:7:11: stage "out": rate: invalid rate "4294967295/1ms": faster than 1000000/s, the fastest a limit may be; {how}"#
        )]
    );
    assert_eq!(
        rate("1/366d"),
        [format!(
            r#"bad.yaml:7:11: stage "out": rate: invalid rate "1/366d": the period must be at most 365 days; {how}"#
        )]
    );
    assert_eq!(
        rate("0/s"),
        [format!(
            r#"bad.yaml:7:11: stage "out": rate: invalid rate "0/s": the count must be at least 1; {how}"#
        )]
    );
    // The extremes that are allowed validate and run.
    let pipeline = Pipeline::lines(&[
        "stages:",
        "  - name: gen",
        "    type: generate",
        "    rate: 1000000/s",
        "    burst: 1000000",
        "    with: { count: 3 }",
        "  - name: out",
        "    type: drop",
        "    rate: 1/365d",
        "    burst: 1000000",
        "    retry: { attempts: 1000, backoff: 365d }",
        "    timeout: 365d",
    ]);
    run(&mut pipeline.command("run", &[])).expect_code(0);
}

#[test]
fn durations_over_365_days_are_rejected_for_every_runner_key() {
    let too_long =
        |d: &str| format!(r#"duration "{d}" is too long: durations are limited to 365 days"#);
    assert_problems(
        &with_sink_lines(&["    timeout: 10000000y"]),
        &[&format!(
            r#"bad.yaml:7:14: stage "out": timeout: {}"#,
            too_long("10000000y")
        )],
    );
    assert_problems(
        &with_sink_lines(&["    retry: { attempts: 2, backoff: 366d }"]),
        &[&format!(
            r#"bad.yaml:7:36: stage "out": retry.backoff: {}"#,
            too_long("366d")
        )],
    );
    assert_problems(
        &with_sink_lines(&["    retry: { attempts: 2, max_backoff: 9999999999999s }"]),
        &[&format!(
            r#"bad.yaml:7:40: stage "out": retry.max_backoff: {}"#,
            too_long("9999999999999s")
        )],
    );
    let mut lines = vec!["defaults:", "  timeout: 400d"];
    lines.extend(with_sink_lines(&[]));
    assert_problems(
        &lines,
        &[&format!(
            "bad.yaml:2:12: defaults.timeout: {}",
            too_long("400d")
        )],
    );
    // `flow run` says the same, with exit code 2, and runs nothing.
    let pipeline = Pipeline::lines(&with_sink_lines(&["    timeout: 10000000y"]));
    let out = run(&mut pipeline.command("run", &[])).expect_code(2);
    assert_eq!(
        out.stderr,
        format!(
            "bad.yaml:7:14: stage \"out\": timeout: {}\n",
            too_long("10000000y")
        )
    );
}

#[test]
fn the_workers_of_all_stages_together_are_bounded() {
    let mut lines = vec![
        "stages:".to_string(),
        "  - name: gen".into(),
        "    type: generate".into(),
    ];
    for i in 0..11 {
        lines.push(format!("  - name: s{i}"));
        lines.push("    type: log".into());
        lines.push("    workers: 10000".into());
    }
    lines.extend(["  - name: out".into(), "    type: drop".into()]);
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_problems(
        &lines,
        &[
            "bad.yaml:1:1: stages: the stages' workers add up to 110002; a pipeline may have at most 100000 in all",
        ],
    );
}

#[test]
fn too_many_stages_or_limits_are_rejected_before_any_is_built() {
    let mut text = String::from("stages:\n");
    for i in 0..1001 {
        text += &format!("  - {{name: s{i}, type: map, with: {{expr: .}}}}\n");
    }
    assert_eq!(
        problems_of(Pipeline::new(&text).validate(&[])),
        ["bad.yaml:1:1: stages: 1001 stages; a pipeline may have at most 1000"]
    );
    let mut text = String::from("name: x\nlimits:\n");
    for i in 0..1001 {
        text += &format!("  l{i}: 1/s\n");
    }
    text += "stages: []\n";
    assert_eq!(
        problems_of(Pipeline::new(&text).validate(&[])),
        ["bad.yaml:2:1: limits: 1001 limits; a pipeline may have at most 1000"]
    );
}

#[test]
fn a_long_stage_name_is_rejected() {
    let name = "n".repeat(129);
    let line = format!("  - name: {name}");
    assert_problems(
        &[
            "stages:",
            "  - name: gen",
            "    type: generate",
            &line,
            "    type: drop",
        ],
        &[&format!(
            r#"bad.yaml:4:11: stage "{name}": name: 129 characters; a name may have at most 128"#
        )],
    );
}

#[test]
fn nesting_deeper_than_64_levels_is_rejected_at_its_line() {
    // Block sequences on one line, flow collections, block mappings: the
    // error names the line and column of the first level too many.
    let block = format!("        - {}x", "- ".repeat(100));
    assert_problems(
        &[
            "stages:",
            "  - name: gen",
            "    type: list",
            "    with:",
            "      items:",
            &block,
            "  - name: out",
            "    type: drop",
        ],
        &[
            r#"bad.yaml:6:129: stage "gen": with.items: more than 64 levels of nesting; a pipeline file may nest at most 64"#,
        ],
    );
    let flow_style = format!("      items: [{}x{}]", "{a: [".repeat(40), "]}".repeat(40));
    assert_problems(
        &[
            "stages:",
            "  - name: gen",
            "    type: list",
            "    with:",
            &flow_style,
            "  - name: out",
            "    type: drop",
        ],
        &[
            r#"bad.yaml:5:164: stage "gen": with.items: more than 64 levels of nesting; a pipeline file may nest at most 64"#,
        ],
    );
    // `items:` holds the fifth level, on line 6; line 66 the 65th.
    let mut lines = vec![
        "stages:".to_string(),
        "  - name: gen".into(),
        "    type: list".into(),
        "    with:".into(),
        "      items:".into(),
    ];
    for depth in 0..70 {
        lines.push(format!("{}a:", " ".repeat(8 + depth)));
    }
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_problems(
        &lines,
        &[
            r#"bad.yaml:66:69: stage "gen": with.items: more than 64 levels of nesting; a pipeline file may nest at most 64"#,
        ],
    );
}

#[test]
fn alias_bombs_and_cyclic_aliases_are_rejected() {
    // Billion laughs: ten levels, each ten aliases of the one before. The
    // eighth alias of the fifth level passes the bound.
    let mut text = String::from("x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*x{}", i - 1); 10].join(", ");
        text += &format!("x{i}: &x{i} [{refs}]\n");
    }
    text += "stages: *x9\n";
    assert_eq!(
        problems_of(Pipeline::new(&text).validate(&[])),
        [
            "bad.yaml:5:45: x4: aliases repeat more than 100000 values in all; a pipeline file may repeat at most 100000"
        ]
    );
    // One big anchor (5001 values) repeated by many small aliases: the
    // twentieth passes the bound.
    let mut text = String::from("big: &big [");
    text += &vec!["v"; 5_000].join(", ");
    text += "]\nstages:\n";
    for _ in 0..25 {
        text += "  - *big\n";
    }
    assert_eq!(
        problems_of(Pipeline::new(&text).validate(&[])),
        [
            "bad.yaml:22:5: aliases repeat more than 100000 values in all; a pipeline file may repeat at most 100000"
        ]
    );
    assert_problems(
        &["stages: &s [*s]"],
        &["bad.yaml:1:13: an alias inside the value its anchor names (it would never end)"],
    );
    // Aliases within the bounds work.
    Pipeline::lines(&[
        "stages:",
        "  - name: gen",
        "    type: generate",
        "    with: &opts { count: 3 }",
        "  - name: more",
        "    type: generate",
        "    with: *opts",
        "  - name: out",
        "    type: drop",
        "    inputs: [gen, more]",
    ])
    .validate(&[])
    .expect_code(0);
}

#[test]
fn other_malformed_files_are_rejected_with_their_place() {
    assert_problems(
        &with_sink_lines(&["    type: log"]),
        &[r#"bad.yaml:7:5: stage "out": duplicate key "type" (first at line 6)"#],
    );
    assert_problems(
        &["stages: []", "---", "stages: []"],
        &["bad.yaml:2:1: a second YAML document starts here; a pipeline file holds one"],
    );
    assert_problems(
        &[
            "stages:",
            "  - name: gen",
            "    type: !!python/object:os.system generate",
        ],
        &["bad.yaml:3:11: stage \"gen\": type: unsupported tag `!!python/object:os.system`"],
    );
    assert_problems(
        &["stages:", "  - name: gen", "    type: !custom generate"],
        &[
            "bad.yaml:3:11: stage \"gen\": type: unsupported tag `!custom`; a pipeline file uses plain YAML (tags of the core schema only)",
        ],
    );
    assert_problems(&[""], &[r#"bad.yaml:1:1: missing key "stages""#]);
    // Not UTF-8: the line and column of the first bad byte.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), b"stages:\n  - name: g\xffen\n").unwrap();
    let out = run(flow()
        .args(["validate", "bad.yaml"])
        .current_dir(dir.path()))
    .expect_code(2);
    assert_eq!(
        out.stderr,
        "bad.yaml:2:12: the file is not UTF-8 text (an invalid byte here)\n"
    );
}

// Big, deep and hostile files: exit 0 or 2 in bounded memory.

/// Runs `cmd` to its end; returns what it did and its peak resident set
/// in MiB, from `wait4` (the child's own, whatever else runs).
// The child is reaped by `wait4` itself, which `Child::wait` cannot do
// with the resource usage.
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut Command) -> (Run, f64) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("flow starts");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        stderr.read_to_end(&mut s).map(|_| s)
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is valid; wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not reaped yet (`child` is never waited
    // on); the pointers are to live locals.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let run = Run {
        code,
        stdout: out.join().unwrap().unwrap(),
        stderr: String::from_utf8_lossy(&err.join().unwrap().unwrap()).into_owned(),
    };
    // ru_maxrss is in KiB on Linux.
    (run, usage.ru_maxrss as f64 / 1024.0)
}

/// The peak memory these files may take `flow validate`, in MiB: the
/// binary itself takes about 25.
const MEMORY_BOUND_MIB: f64 = 200.0;

/// Validates `text`; returns the first line of stderr, after checking that
/// it exited 0 or 2, printed no panic and stayed within `bound` MiB.
fn validate_bounded(text: &str, bound: f64) -> (i32, String) {
    let pipeline = Pipeline::new(text);
    let (out, peak) = run_measured(&mut pipeline.command("validate", &[]));
    assert!(
        out.code == 0 || out.code == 2,
        "exit code {}: {}",
        out.code,
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(
        peak < bound,
        "peak RSS {peak:.1} MiB, over {bound} MiB, for a file of {} bytes",
        text.len()
    );
    let first = out.stderr.lines().next().unwrap_or_default().to_string();
    eprintln!(
        "{} bytes: exit {}, peak RSS {peak:.1} MiB: {first}",
        text.len(),
        out.code
    );
    (out.code, first)
}

#[test]
fn twenty_thousand_stages_in_a_megabyte_are_rejected_in_bounded_memory() {
    let mut text = String::from("stages:\n  - name: gen\n    type: generate\n");
    for i in 0..20_000 {
        text += &format!("  - name: s{i}\n    type: map\n    with: {{ expr: '.' }}\n");
    }
    text += "  - name: out\n    type: drop\n";
    assert!(text.len() > 1_000_000);
    let (code, line) = validate_bounded(&text, MEMORY_BOUND_MIB);
    assert_eq!(code, 2);
    assert_eq!(
        line,
        "bad.yaml:1:1: stages: 20002 stages; a pipeline may have at most 1000"
    );
}

#[test]
fn a_thousand_stages_validate_in_bounded_memory() {
    // As many stages as a pipeline may have, with runner expressions that
    // repeat: each text is compiled once.
    let mut text = String::from("stages:\n  - name: gen\n    type: generate\n");
    for i in 0..998 {
        text +=
            &format!("  - name: s{i}\n    type: log\n    rate: 1000/s\n    rate_key: tostring\n");
    }
    text += "  - name: out\n    type: drop\n";
    let (code, line) = validate_bounded(&text, MEMORY_BOUND_MIB);
    assert_eq!((code, line.as_str()), (0, ""));
}

#[test]
fn deep_files_of_any_size_are_rejected_in_bounded_memory() {
    for kb in [10, 40, 160, 640] {
        let levels = kb * 1024 / 2;
        let block = format!(
            "stages:\n  - name: gen\n    type: list\n    with:\n      items:\n        - {}x\n",
            "- ".repeat(levels)
        );
        let (code, line) = validate_bounded(&block, MEMORY_BOUND_MIB);
        assert_eq!(code, 2);
        assert!(line.contains("more than 64 levels of nesting"), "{line}");
        let flow_style = format!("stages: [{}]\n", "[".repeat(levels * 2));
        let (code, line) = validate_bounded(&flow_style, MEMORY_BOUND_MIB);
        assert_eq!(code, 2);
        assert!(
            line.contains("more than 64 levels of nesting")
                || line.contains("invalid YAML: recursion limit exceeded"),
            "{line}"
        );
    }
}

#[test]
fn too_many_values_are_rejected_in_bounded_memory() {
    // Two bytes a value, a million and one of them.
    let text = format!("stages: [{}]\n", "1,".repeat(1_000_001));
    let (code, line) = validate_bounded(&text, MEMORY_BOUND_MIB);
    assert_eq!(code, 2);
    assert!(
        line.starts_with("bad.yaml:1:")
            && line.ends_with(
                ": stages: more than 1000000 values; a pipeline file may hold at most 1000000"
            ),
        "{line}"
    );
}

#[test]
fn the_largest_file_validates_and_a_larger_one_is_refused() {
    // 16 MiB of item text in a `list` source: within the bound.
    let item = format!("'{}'", "x".repeat(4094));
    let mut text =
        String::from("stages:\n  - name: gen\n    type: list\n    with:\n      items:\n");
    let tail = "  - name: out\n    type: drop\n";
    while text.len() + item.len() + 11 + tail.len() <= 16 << 20 {
        text += "        - ";
        text += &item;
        text += "\n";
    }
    text += tail;
    assert!(text.len() > (16 << 20) - 8192 && text.len() <= 16 << 20);
    let (code, line) = validate_bounded(&text, 300.0);
    assert_eq!((code, line.as_str()), (0, ""));
    text.insert_str(0, &" ".repeat((16 << 20) + 1 - text.len()));
    let (code, line) = validate_bounded(&text, MEMORY_BOUND_MIB);
    assert_eq!(code, 2);
    assert_eq!(
        line,
        "bad.yaml: the file is larger than 16 MiB, the most a pipeline file may be"
    );
}

#[test]
fn an_alias_bomb_is_rejected_in_bounded_memory() {
    let mut text = String::from(
        "a: &a [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n",
    );
    let mut prev = String::from("a");
    for i in 0..30 {
        let name = format!("{prev}{i}");
        let refs = vec![format!("*{prev}"); 10].join(",");
        text += &format!("{name}: &{name} [{refs}]\n");
        prev = name;
    }
    let (code, line) = validate_bounded(&text, MEMORY_BOUND_MIB);
    assert_eq!(code, 2);
    assert!(
        line.contains("aliases repeat more than 100000 values"),
        "{line}"
    );
}

// 3. A source's `on_error`.

#[test]
fn a_source_takes_drop_fail_or_a_dead_letter_stage() {
    for on_error in ["drop", "fail", "failed"] {
        let line = format!("    on_error: {on_error}");
        let out = Pipeline::lines(&[
            "stages:",
            "  - name: gen",
            "    type: generate",
            &line,
            "  - name: out",
            "    type: drop",
            "  - name: failed",
            "    type: drop",
            "    inputs: []",
        ])
        .validate(&[]);
        if on_error == "failed" {
            // The dead-letter stage is fed by the source's route only.
            let out = out.expect_code(0);
            assert_eq!(out.stdout, "bad.yaml: ok: 3 stages (gen, out, failed)\n");
        } else {
            assert_eq!(
                problems_of(out),
                [
                    r#"bad.yaml:9:5: stage "failed": nothing feeds this sink: it has `inputs: []` and no stage's on_error names it"#
                ]
            );
        }
    }
    assert_problems(
        &[
            "stages:",
            "  - name: gen",
            "    type: generate",
            "    on_error: failde",
            "  - name: out",
            "    type: drop",
            "  - name: failed",
            "    type: drop",
            "    inputs: []",
        ],
        &[
            r#"bad.yaml:4:15: stage "gen": on_error: "failde" is not drop, fail or a stage name (did you mean the stage "failed"?)"#,
        ],
    );
    // `defaults.on_error` does not reach a source; a processor's does.
    let out = Pipeline::lines(&[
        "defaults:",
        "  on_error: failed",
        "stages:",
        "  - name: gen",
        "    type: generate",
        "  - name: square",
        "    type: map",
        "    with: { expr: '. * .' }",
        "  - name: out",
        "    type: drop",
        "  - name: failed",
        "    type: drop",
        "    inputs: []",
    ])
    .validate(&[])
    .expect_code(0);
    assert_eq!(
        out.stdout,
        "bad.yaml: ok: 4 stages (gen, square, out, failed)\n"
    );
}

#[test]
fn a_file_that_is_no_pipeline_file_is_rejected_quickly() {
    // A directory (to validate, one without pipeline files), and a path
    // that is no file.
    let dir = tempfile::tempdir().unwrap();
    let out = run(flow().args(["validate", "."]).current_dir(dir.path())).expect_code(2);
    assert_eq!(
        out.stderr,
        ".: no pipeline files (*.yaml, *.yml) in this directory\n"
    );
    let out = run(flow().args(["graph", "."]).current_dir(dir.path())).expect_code(2);
    assert!(
        out.stderr.starts_with(".: cannot read the pipeline file: "),
        "{}",
        out.stderr
    );
    assert!(Path::new("/dev/zero").exists());
    let out = run(flow().args(["validate", "/dev/zero"])).expect_code(2);
    assert!(
        out.stderr
            .starts_with("/dev/zero: the file is larger than 16 MiB"),
        "{}",
        out.stderr
    );
}
