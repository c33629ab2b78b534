//! Every problem `flow validate` finds in a pipeline file, through the real
//! binary: exit code 2, nothing on stdout, and on stderr one line per
//! problem, `FILE:LINE:COLUMN: stage "NAME": KEY: message`, with the file as
//! named on the command line and "did you mean" where a name is near.
//! `flow run` does the same checks and runs nothing when one fails.
//!
//! Pipelines are written as lists of lines so that line numbers can be read
//! off the test; columns count from 1.

use std::path::PathBuf;
use std::process::Command;

use flow_tests::{Run, flow, run, write_pipeline};
use tempfile::TempDir;

/// Variables the interpolation tests rely on being unset.
const UNSET: [&str; 4] = [
    "FLOW_TEST_UNSET",
    "FLOW_TEST_INPUT",
    "FLOW_TEST_PREFIX",
    "FLOW_TEST_QUEUE",
];

/// A pipeline file `bad.yaml` in a fresh directory.
struct Pipeline {
    dir: TempDir,
}

impl Pipeline {
    fn new(lines: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        write_pipeline(dir.path(), "bad.yaml", &(lines.join("\n") + "\n"));
        Pipeline { dir }
    }

    /// `flow SUBCOMMAND bad.yaml`, run in the file's directory so the file
    /// is named `bad.yaml` in messages.
    fn command(&self, subcommand: &str) -> Command {
        let mut cmd = flow();
        cmd.arg(subcommand)
            .arg("bad.yaml")
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG");
        for name in UNSET {
            cmd.env_remove(name);
        }
        cmd
    }

    fn validate(&self) -> Run {
        run(&mut self.command("validate"))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The problem lines `flow validate` prints for `lines`, after checking that
/// it failed with exit code 2 and printed nothing else.
fn problems(lines: &[&str]) -> Vec<String> {
    problems_of(Pipeline::new(lines).validate())
}

fn problems_of(out: Run) -> Vec<String> {
    let out = out.expect_code(2);
    assert_eq!(out.stdout, "", "validation failed but printed on stdout");
    out.stderr.lines().map(str::to_string).collect()
}

/// Asserts that `flow validate` reports exactly `expected` for `lines`.
#[track_caller]
fn assert_problems(lines: &[&str], expected: &[&str]) {
    assert_eq!(problems(lines), expected, "for:\n{}", lines.join("\n"));
}

/// Asserts that `flow validate` accepts `lines`.
#[track_caller]
fn assert_valid(lines: &[&str]) -> Run {
    let out = Pipeline::new(lines).validate().expect_code(0);
    assert!(out.stdout.starts_with("bad.yaml: ok: "), "{}", out.stdout);
    out
}

/// The source most cases start with; `after_gen` adds the stages under test.
const GEN: [&str; 4] = [
    "stages:",
    "  - name: gen",
    "    type: generate",
    "    with: { count: 3 }",
];

/// `GEN` followed by `rest`.
fn after_gen<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    GEN.iter().chain(rest).copied().collect()
}

#[test]
fn the_base_pipeline_of_these_tests_is_valid() {
    let out = assert_valid(&after_gen(&[
        "  - name: square",
        "    type: map",
        "    with: { expr: '. * .' }",
        "  - name: out",
        "    type: drop",
    ]));
    assert_eq!(out.stdout, "bad.yaml: ok: 3 stages (gen, square, out)\n");
}

// Unknown names.

#[test]
fn unknown_stage_type_suggests_the_nearest_name() {
    assert_problems(
        &after_gen(&["  - name: out", "    type: dorp"]),
        &[r#"bad.yaml:6:11: stage "out": unknown stage type "dorp" (did you mean "drop"?)"#],
    );
    assert_problems(
        &[
            "stages:",
            "  - name: gen",
            "    type: gnerate",
            "  - name: out",
            "    type: drop",
        ],
        &[r#"bad.yaml:3:11: stage "gen": unknown stage type "gnerate" (did you mean "generate"?)"#],
    );
}

#[test]
fn unknown_stage_type_counts_a_swap_of_two_letters_as_one_edit() {
    assert_problems(
        &after_gen(&[
            "  - name: square",
            "    type: mpa",
            "    with: { expr: '.' }",
            "  - name: out",
            "    type: drop",
        ]),
        &[r#"bad.yaml:6:11: stage "square": unknown stage type "mpa" (did you mean "map"?)"#],
    );
    assert_problems(
        &[
            "stages:",
            "  - name: gen",
            "    type: genreate",
            "  - name: out",
            "    type: drop",
        ],
        &[
            r#"bad.yaml:3:11: stage "gen": unknown stage type "genreate" (did you mean "generate"?)"#,
        ],
    );
    // Two swaps are two edits, close enough for a six-letter name; counted
    // as insertions and deletions they would be four.
    assert_problems(
        &after_gen(&[
            "  - name: odd",
            "    type: fitlre",
            "    with: { expr: '. % 2 == 1' }",
            "  - name: out",
            "    type: drop",
        ]),
        &[r#"bad.yaml:6:11: stage "odd": unknown stage type "fitlre" (did you mean "filter"?)"#],
    );
}

#[test]
fn unknown_stage_type_far_from_every_name_says_how_plugins_are_linked() {
    assert_problems(
        &after_gen(&["  - name: out", "    type: kafka"]),
        &[
            r#"bad.yaml:6:11: stage "out": unknown stage type "kafka" (`flow stages` lists the known ones); if it comes from a plugin crate, the flow binary must link it (in its main.rs: use my_plugin as _;)"#,
        ],
    );
}

#[test]
fn unknown_stage_key_suggests_the_runner_key() {
    assert_problems(
        &after_gen(&[
            "  - name: square",
            "    type: map",
            "    wokers: 4",
            "    with: { expr: '.' }",
            "  - name: out",
            "    type: drop",
        ]),
        &[r#"bad.yaml:7:5: stage "square": unknown key "wokers" (did you mean "workers"?)"#],
    );
}

#[test]
fn unknown_top_level_key_suggests_the_nearest() {
    let mut lines = vec!["name: demo", "stags: []"];
    lines.extend(after_gen(&["  - name: out", "    type: drop"]));
    assert_problems(
        &lines,
        &[r#"bad.yaml:2:1: unknown key "stags" (did you mean "stages"?)"#],
    );
}

#[test]
fn unknown_key_under_defaults_names_defaults() {
    let mut lines = vec!["defaults:", "  queu: 8"];
    lines.extend(after_gen(&["  - name: out", "    type: drop"]));
    assert_problems(
        &lines,
        &[r#"bad.yaml:2:3: defaults: unknown key "queu" (did you mean "queue"?)"#],
    );
}

#[test]
fn unknown_key_under_retry_names_the_stage_and_retry() {
    assert_problems(
        &after_gen(&[
            "  - name: square",
            "    type: map",
            "    retry: { attemps: 3 }",
            "    with: { expr: '.' }",
            "  - name: out",
            "    type: drop",
        ]),
        &[
            r#"bad.yaml:7:14: stage "square": retry: unknown key "attemps" (did you mean "attempts"?)"#,
        ],
    );
}

#[test]
fn unknown_option_under_with_suggests_the_stage_types_option() {
    assert_problems(
        &after_gen(&[
            "  - name: square",
            "    type: map",
            "    with: { exp: '.' }",
            "  - name: out",
            "    type: drop",
        ]),
        &[r#"bad.yaml:7:13: stage "square": with: unknown key "exp" (did you mean "expr"?)"#],
    );
}

#[test]
fn unknown_option_far_from_every_option_lists_them() {
    assert_problems(
        &[
            "stages:",
            "  - name: gen",
            "    type: generate",
            "    with: { count: 3, pace: 1s }",
            "  - name: out",
            "    type: drop",
        ],
        &[
            r#"bad.yaml:4:23: stage "gen": with: unknown key "pace"; expected one of: count, value, interval"#,
        ],
    );
}

#[test]
fn options_for_a_stage_type_that_takes_none_are_rejected() {
    assert_problems(
        &after_gen(&["  - name: out", "    type: drop", "    with: { path: x }"]),
        &[
            r#"bad.yaml:7:13: stage "out": with: unknown key "path"; this stage type takes no options"#,
        ],
    );
}

// Values of the wrong kind.

#[test]
fn workers_that_is_not_a_number_is_rejected() {
    assert_problems(
        &after_gen(&[
            "  - name: square",
            "    type: map",
            "    workers: many",
            "    with: { expr: '.' }",
            "  - name: out",
            "    type: drop",
        ]),
        &[
            r#"bad.yaml:7:14: stage "square": workers: invalid type: string "many", expected a whole number, 0 or more"#,
        ],
    );
}

#[test]
fn workers_of_zero_is_rejected() {
    assert_problems(
        &after_gen(&[
            "  - name: square",
            "    type: map",
            "    workers: 0",
            "    with: { expr: '.' }",
            "  - name: out",
            "    type: drop",
        ]),
        &[r#"bad.yaml:7:14: stage "square": workers: must be at least 1"#],
    );
}

#[test]
fn queue_of_zero_is_rejected() {
    assert_problems(
        &after_gen(&["  - name: out", "    type: drop", "    queue: 0"]),
        &[r#"bad.yaml:7:12: stage "out": queue: must be at least 1"#],
    );
}

#[test]
fn a_zero_in_defaults_is_reported_once_at_the_default() {
    let mut lines = vec!["defaults:", "  queue: 0"];
    lines.extend(after_gen(&[
        "  - name: square",
        "    type: map",
        "    with: { expr: '.' }",
        "  - name: out",
        "    type: drop",
    ]));
    assert_problems(
        &lines,
        &["bad.yaml:2:10: defaults.queue: must be at least 1"],
    );
}

#[test]
fn a_source_has_no_queue_and_one_worker() {
    assert_problems(
        &[
            "stages:",
            "  - name: gen",
            "    type: generate",
            "    workers: 4",
            "    queue: 8",
            "  - name: out",
            "    type: drop",
        ],
        &[
            r#"bad.yaml:4:5: stage "gen": workers: a source runs as one task"#,
            r#"bad.yaml:5:5: stage "gen": queue: a source has no input queue"#,
        ],
    );
}

#[test]
fn a_bad_duration_in_options_is_rejected() {
    assert_problems(
        &after_gen(&[
            "  - name: nap",
            "    type: sleep",
            "    with: { duration: soon }",
            "  - name: out",
            "    type: drop",
        ]),
        &[
            r#"bad.yaml:7:23: stage "nap": with.duration: invalid duration "soon": expected number at 0"#,
        ],
    );
}

#[test]
fn a_bad_duration_for_a_runner_key_is_rejected() {
    assert_problems(
        &after_gen(&["  - name: out", "    type: drop", "    timeout: soon"]),
        &[r#"bad.yaml:7:14: stage "out": timeout: invalid duration "soon": expected number at 0"#],
    );
}

#[test]
fn options_that_are_not_a_map_are_rejected() {
    assert_problems(
        &[
            "stages:",
            "  - name: gen",
            "    type: generate",
            "    with: 3",
            "  - name: out",
            "    type: drop",
        ],
        &[
            r#"bad.yaml:4:11: stage "gen": with: invalid type: integer `3`, expected a map: the options of type generate go in a map under with: (`flow stages generate` lists them)"#,
        ],
    );
}

#[test]
fn inputs_that_are_not_a_list_are_rejected() {
    assert_problems(
        &after_gen(&["  - name: out", "    type: drop", "    inputs: gen"]),
        &[
            r#"bad.yaml:7:13: stage "out": inputs: invalid type: string "gen", expected a sequence; inputs is a list of stage names: write inputs: [gen]"#,
        ],
    );
}

#[test]
fn an_unknown_order_suggests_the_nearest() {
    assert_problems(
        &after_gen(&["  - name: out", "    type: drop", "    order: lifoo"]),
        &[
            r#"bad.yaml:7:12: stage "out": order: unknown value "lifoo" (did you mean "lifo"?); expected one of: fifo, lifo, priority"#,
        ],
    );
}

// Flow control: rate limits, retries, timeouts, queue order and bounds.

#[test]
fn every_flow_control_key_validates() {
    // The source is rate-limited too; `defaults:` reaches only the other
    // stages, so none of its queue or retry settings is a source's problem.
    let out = assert_valid(&[
        "limits:",
        "  polite: 10/s",
        "  api: { rate: 100/min, burst: 5 }",
        "defaults:",
        "  rate: 20/10s",
        "  burst: 2",
        "  retry: { attempts: 2 }",
        "  timeout: 30s",
        "  order: lifo",
        "  ordered: false",
        "  queue_bytes: 64MiB",
        "stages:",
        "  - name: gen",
        "    type: generate",
        "    rate: 5/s",
        "    burst: 3",
        "    with: { count: 3 }",
        "  - name: fetch",
        "    type: map",
        "    workers: 4",
        "    queue: 16",
        "    queue_bytes: 256MiB",
        "    order: priority",
        "    priority: '. % 3'",
        "    ordered: true",
        "    rate: polite",
        "    rate_key: tostring",
        "    retry: { attempts: 3, backoff: 200ms, max_backoff: 5s, jitter: true }",
        "    timeout: 10s",
        "    with: { expr: '. * .' }",
        "  - name: newest",
        "    type: map",
        "    rate_key: '. % 2'",
        "    with: { expr: '.' }",
        "  - name: out",
        "    type: drop",
        "    order: fifo",
        "    rate: api",
    ]);
    assert_eq!(
        out.stdout,
        "bad.yaml: ok: 4 stages (gen, fetch, newest, out)\n"
    );
}

#[test]
fn an_inline_rate_that_does_not_parse_says_how_to_write_one() {
    let rate = |value: &str| {
        let line = format!("    rate: {value}");
        problems(&after_gen(&["  - name: out", "    type: drop", &line]))
    };
    assert_eq!(
        rate("5/fortnight"),
        [
            r#"bad.yaml:7:11: stage "out": rate: invalid rate "5/fortnight": unknown period; write COUNT/PERIOD, like 5/s, 100/min or 20/10s"#
        ]
    );
    assert_eq!(
        rate("0/s"),
        [
            r#"bad.yaml:7:11: stage "out": rate: invalid rate "0/s": the count must be at least 1; write COUNT/PERIOD, like 5/s, 100/min or 20/10s"#
        ]
    );
    assert_eq!(
        rate("1.5/s"),
        [
            r#"bad.yaml:7:11: stage "out": rate: invalid rate "1.5/s": the count is not a whole number; write COUNT/PERIOD, like 5/s, 100/min or 20/10s"#
        ]
    );
    assert_eq!(
        rate("5/0s"),
        [
            r#"bad.yaml:7:11: stage "out": rate: invalid rate "5/0s": the period must be longer than zero; write COUNT/PERIOD, like 5/s, 100/min or 20/10s"#
        ]
    );
}

#[test]
fn a_rate_without_a_period_is_neither_a_rate_nor_a_limit() {
    assert_problems(
        &after_gen(&["  - name: out", "    type: drop", "    rate: 5"]),
        &[
            r#"bad.yaml:7:11: stage "out": rate: "5" is neither a rate like 5/s nor a limit under `limits:`"#,
        ],
    );
}

#[test]
fn a_rate_naming_an_unknown_limit_suggests_the_nearest_limit() {
    let mut lines = vec!["limits:", "  polite: 10/s", "  api: 100/min"];
    lines.extend(after_gen(&[
        "  - name: out",
        "    type: drop",
        "    rate: polit",
    ]));
    assert_problems(
        &lines,
        &[
            r#"bad.yaml:10:11: stage "out": rate: "polit" is neither a rate like 5/s nor a limit under `limits:` (did you mean "polite"?)"#,
        ],
    );
    // Stage names are no limits: "gen" is not suggested for "ge".
    lines[9] = "    rate: ge";
    assert_problems(
        &lines,
        &[
            r#"bad.yaml:10:11: stage "out": rate: "ge" is neither a rate like 5/s nor a limit under `limits:`"#,
        ],
    );
}

#[test]
fn a_bad_rate_under_limits_is_reported_once_at_the_limit() {
    // The stages naming the limits are not told that they are unknown.
    let mut lines = vec![
        "limits:",
        "  polite: 10/fortnight",
        "  api: { rate: 0/min, burst: 5 }",
    ];
    lines.extend(after_gen(&[
        "  - name: square",
        "    type: map",
        "    rate: polite",
        "    with: { expr: '.' }",
        "  - name: out",
        "    type: drop",
        "    rate: api",
    ]));
    assert_problems(
        &lines,
        &[
            r#"bad.yaml:2:11: limits.polite: invalid rate "10/fortnight": unknown period; write COUNT/PERIOD, like 5/s, 100/min or 20/10s"#,
            r#"bad.yaml:3:16: limits.api.rate: invalid rate "0/min": the count must be at least 1; write COUNT/PERIOD, like 5/s, 100/min or 20/10s"#,
        ],
    );
}

#[test]
fn a_limit_that_is_neither_a_rate_nor_a_map_is_rejected() {
    let mut lines = vec!["limits:", "  polite: 10"];
    lines.extend(after_gen(&["  - name: out", "    type: drop"]));
    assert_problems(
        &lines,
        &[
            "bad.yaml:2:11: limits.polite: invalid type: integer `10`, expected a rate like 10/s, or a map like {rate: 10/s, burst: 5}",
        ],
    );
}

#[test]
fn an_unknown_key_in_a_limit_suggests_the_nearest() {
    let mut lines = vec!["limits:", "  polite: { rate: 10/s, burts: 5 }"];
    lines.extend(after_gen(&["  - name: out", "    type: drop"]));
    assert_problems(
        &lines,
        &[r#"bad.yaml:2:25: limits.polite: unknown key "burts" (did you mean "burst"?)"#],
    );
}

#[test]
fn a_limit_without_a_rate_is_rejected() {
    let mut lines = vec!["limits:", "  polite: { burst: 5 }"];
    lines.extend(after_gen(&["  - name: out", "    type: drop"]));
    assert_problems(
        &lines,
        &[r#"bad.yaml:2:11: limits.polite: missing key "rate""#],
    );
}

#[test]
fn a_burst_of_zero_is_rejected() {
    assert_problems(
        &after_gen(&[
            "  - name: out",
            "    type: drop",
            "    rate: 5/s",
            "    burst: 0",
        ]),
        &[r#"bad.yaml:8:12: stage "out": burst: must be at least 1"#],
    );
    let mut lines = vec!["limits:", "  polite: { rate: 10/s, burst: 0 }"];
    lines.extend(after_gen(&[
        "  - name: out",
        "    type: drop",
        "    rate: polite",
    ]));
    assert_problems(
        &lines,
        &["bad.yaml:2:32: limits.polite.burst: must be at least 1"],
    );
}

#[test]
fn a_burst_without_a_rate_is_rejected() {
    assert_problems(
        &after_gen(&["  - name: out", "    type: drop", "    burst: 5"]),
        &[r#"bad.yaml:7:5: stage "out": burst: needs a `rate`"#],
    );
}

#[test]
fn a_burst_beside_a_named_limit_belongs_under_limits() {
    let mut lines = vec!["limits:", "  polite: 10/s"];
    lines.extend(after_gen(&[
        "  - name: out",
        "    type: drop",
        "    rate: polite",
        "    burst: 5",
    ]));
    assert_problems(
        &lines,
        &[
            r#"bad.yaml:10:5: stage "out": burst: "polite" is a shared limit; set its burst under `limits:`"#,
        ],
    );
}

#[test]
fn a_rate_key_without_a_rate_is_rejected() {
    assert_problems(
        &after_gen(&["  - name: out", "    type: drop", "    rate_key: .host"]),
        &[r#"bad.yaml:7:5: stage "out": rate_key: needs a `rate`"#],
    );
}

#[test]
fn a_rate_key_on_a_source_needs_the_sources_own_rate() {
    // `defaults:` does not reach a source, so its rate is not the source's.
    assert_problems(
        &[
            "defaults:",
            "  rate: 5/s",
            "stages:",
            "  - name: gen",
            "    type: generate",
            "    rate_key: '. % 2'",
            "  - name: out",
            "    type: drop",
        ],
        &[r#"bad.yaml:6:5: stage "gen": rate_key: needs a `rate`"#],
    );
}

#[test]
fn an_invalid_rate_key_points_inside_the_expression() {
    // `    rate_key: '.a | | .b'`: the text starts at column 16, the second
    // `|` is its sixth character.
    assert_problems(
        &after_gen(&[
            "  - name: out",
            "    type: drop",
            "    rate: 5/s",
            "    rate_key: '.a | | .b'",
        ]),
        &[
            r#"bad.yaml:8:21: stage "out": rate_key: invalid jq expression: expected term, found "|""#,
            "    .a | | .b",
            "         ^",
        ],
    );
}

#[test]
fn an_invalid_priority_points_inside_the_expression() {
    // `    priority: 1 + nosuch(.)`: the text starts at column 15, `nosuch`
    // at its fifth character.
    assert_problems(
        &after_gen(&[
            "  - name: out",
            "    type: drop",
            "    order: priority",
            "    priority: 1 + nosuch(.)",
        ]),
        &[
            r#"bad.yaml:8:19: stage "out": priority: invalid jq expression: undefined filter nosuch"#,
            "    1 + nosuch(.)",
            "        ^",
        ],
    );
}

#[test]
fn retry_attempts_of_zero_is_rejected() {
    assert_problems(
        &after_gen(&[
            "  - name: out",
            "    type: drop",
            "    retry: { attempts: 0 }",
        ]),
        &[
            r#"bad.yaml:7:24: stage "out": retry.attempts: must be at least 1 (the first try counts)"#,
        ],
    );
}

#[test]
fn retry_without_attempts_is_rejected() {
    assert_problems(
        &after_gen(&[
            "  - name: out",
            "    type: drop",
            "    retry: { backoff: 1s }",
        ]),
        &[r#"bad.yaml:7:12: stage "out": retry: missing key "attempts""#],
    );
}

#[test]
fn a_max_backoff_below_the_backoff_is_rejected() {
    assert_problems(
        &after_gen(&[
            "  - name: out",
            "    type: drop",
            "    retry:",
            "      attempts: 3",
            "      backoff: 1s",
            "      max_backoff: 500ms",
        ]),
        &[r#"bad.yaml:10:20: stage "out": retry.max_backoff: 500ms is less than the backoff (1s)"#],
    );
    // Without a `backoff`, the default one is meant.
    assert_problems(
        &after_gen(&[
            "  - name: out",
            "    type: drop",
            "    retry: { attempts: 3, max_backoff: 50ms }",
        ]),
        &[
            r#"bad.yaml:7:40: stage "out": retry.max_backoff: 50ms is less than the backoff (100ms, the default)"#,
        ],
    );
}

#[test]
fn a_timeout_of_zero_is_rejected() {
    assert_problems(
        &after_gen(&["  - name: out", "    type: drop", "    timeout: 0s"]),
        &[r#"bad.yaml:7:14: stage "out": timeout: must be longer than zero"#],
    );
}

#[test]
fn order_priority_without_a_priority_is_rejected() {
    assert_problems(
        &after_gen(&["  - name: out", "    type: drop", "    order: priority"]),
        &[
            r#"bad.yaml:7:12: stage "out": order: priority needs a `priority` expression (lower comes out first)"#,
        ],
    );
}

#[test]
fn order_priority_from_defaults_needs_a_priority_on_each_stage() {
    // `defaults:` cannot hold the expression, so each stage lacks its own;
    // the stage that has one, and the source, are fine.
    let mut lines = vec!["defaults:", "  order: priority"];
    lines.extend(after_gen(&[
        "  - name: square",
        "    type: map",
        "    priority: .",
        "    with: { expr: '.' }",
        "  - name: out",
        "    type: drop",
    ]));
    assert_problems(
        &lines,
        &[
            r#"bad.yaml:11:5: stage "out": defaults.order: priority needs a `priority` expression (lower comes out first)"#,
        ],
    );
}

#[test]
fn a_priority_without_order_priority_is_rejected() {
    assert_problems(
        &after_gen(&["  - name: out", "    type: drop", "    priority: ."]),
        &[r#"bad.yaml:7:5: stage "out": priority: needs `order: priority`"#],
    );
    assert_problems(
        &after_gen(&[
            "  - name: out",
            "    type: drop",
            "    order: lifo",
            "    priority: .",
        ]),
        &[r#"bad.yaml:8:5: stage "out": priority: needs `order: priority`"#],
    );
}

#[test]
fn a_queue_bytes_that_is_not_a_size_is_rejected() {
    assert_problems(
        &after_gen(&[
            "  - name: out",
            "    type: drop",
            "    queue_bytes: 12 parsecs",
        ]),
        &[
            r#"bad.yaml:7:18: stage "out": queue_bytes: invalid size "12 parsecs": unknown unit "parsecs" (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"#,
        ],
    );
    assert_problems(
        &after_gen(&["  - name: out", "    type: drop", "    queue_bytes: 0"]),
        &[
            r#"bad.yaml:7:18: stage "out": queue_bytes: invalid size "0": must be at least one byte"#,
        ],
    );
}

#[test]
fn flow_control_keys_about_input_queues_and_retries_do_not_apply_to_a_source() {
    // Each is reported once, at its key.
    assert_problems(
        &[
            "stages:",
            "  - name: gen",
            "    type: generate",
            "    retry: { attempts: 3 }",
            "    timeout: 5s",
            "    order: lifo",
            "    priority: .",
            "    queue_bytes: 1MiB",
            "    ordered: true",
            "    queue: 8",
            "  - name: out",
            "    type: drop",
        ],
        &[
            r#"bad.yaml:4:5: stage "gen": retry: a source is never retried (a bad record goes to its on_error); retries are for processors and sinks"#,
            r#"bad.yaml:5:5: stage "gen": timeout: a source has no timeout per item; timeouts are for processors and sinks"#,
            r#"bad.yaml:6:5: stage "gen": order: a source has no input queue"#,
            r#"bad.yaml:7:5: stage "gen": priority: a source has no input queue"#,
            r#"bad.yaml:8:5: stage "gen": queue_bytes: a source has no input queue"#,
            r#"bad.yaml:9:5: stage "gen": ordered: a source emits in its own order"#,
            r#"bad.yaml:10:5: stage "gen": queue: a source has no input queue"#,
        ],
    );
}

#[test]
fn bad_flow_control_values_in_defaults_are_reported_once_at_the_default() {
    // Two stages inherit every value; a burst of 0 is wrong even where no
    // stage has a rate of its own.
    let mut lines = vec![
        "defaults:",
        "  rate: 5/fortnight",
        "  burst: 0",
        "  retry: { attempts: 0, backoff: 1s, max_backoff: 10ms }",
        "  timeout: 0s",
        "  queue_bytes: 12 parsecs",
    ];
    lines.extend(after_gen(&[
        "  - name: square",
        "    type: map",
        "    with: { expr: '.' }",
        "  - name: out",
        "    type: drop",
    ]));
    assert_problems(
        &lines,
        &[
            r#"bad.yaml:2:9: defaults.rate: invalid rate "5/fortnight": unknown period; write COUNT/PERIOD, like 5/s, 100/min or 20/10s"#,
            "bad.yaml:3:10: defaults.burst: must be at least 1",
            "bad.yaml:4:22: defaults.retry.attempts: must be at least 1 (the first try counts)",
            "bad.yaml:4:51: defaults.retry.max_backoff: 10ms is less than the backoff (1s)",
            "bad.yaml:5:12: defaults.timeout: must be longer than zero",
            r#"bad.yaml:6:16: defaults.queue_bytes: invalid size "12 parsecs": unknown unit "parsecs" (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"#,
        ],
    );
}

#[test]
fn a_default_rate_naming_an_unknown_limit_suggests_the_nearest_limit() {
    let mut lines = vec!["limits:", "  polite: 10/s", "defaults:", "  rate: polit"];
    lines.extend(after_gen(&[
        "  - name: square",
        "    type: map",
        "    with: { expr: '.' }",
        "  - name: out",
        "    type: drop",
    ]));
    assert_problems(
        &lines,
        &[
            r#"bad.yaml:4:9: defaults.rate: "polit" is neither a rate like 5/s nor a limit under `limits:` (did you mean "polite"?)"#,
        ],
    );
}

#[test]
fn a_default_burst_beside_a_default_named_limit_belongs_under_limits() {
    // A stage's own inline rate would take the default burst; the shared
    // limit cannot.
    let mut lines = vec![
        "limits:",
        "  polite: 10/s",
        "defaults:",
        "  rate: polite",
        "  burst: 5",
    ];
    lines.extend(after_gen(&[
        "  - name: square",
        "    type: map",
        "    rate: 2/s",
        "    with: { expr: '.' }",
        "  - name: out",
        "    type: drop",
    ]));
    assert_problems(
        &lines,
        &[
            r#"bad.yaml:5:3: defaults.burst: "polite" is a shared limit; set its burst under `limits:`"#,
        ],
    );
}

// Missing keys.

#[test]
fn a_stage_without_a_type_is_rejected() {
    assert_problems(
        &after_gen(&["  - name: out", "    inputs: [gen]"]),
        &[
            r#"bad.yaml:5:5: stage "out": missing key "type": every stage needs a type (`flow stages` lists them)"#,
        ],
    );
}

#[test]
fn a_stage_without_a_name_is_rejected() {
    assert_problems(
        &after_gen(&["  - type: drop"]),
        &[r#"bad.yaml:5:5: missing key "name": every stage needs a name, unique in the pipeline"#],
    );
}

#[test]
fn a_file_without_stages_is_rejected() {
    assert_problems(&["name: demo"], &[r#"bad.yaml:1:1: missing key "stages""#]);
    assert_problems(
        &["name: demo", "stages: []"],
        &["bad.yaml:2:1: stages: no stages; a pipeline needs a source and a sink"],
    );
}

#[test]
fn map_without_expr_is_rejected() {
    assert_problems(
        &after_gen(&[
            "  - name: square",
            "    type: map",
            "  - name: out",
            "    type: drop",
        ]),
        &[r#"bad.yaml:5:5: stage "square": with: missing key "expr""#],
    );
    assert_problems(
        &after_gen(&[
            "  - name: square",
            "    type: map",
            "    with: {}",
            "  - name: out",
            "    type: drop",
        ]),
        &[r#"bad.yaml:7:11: stage "square": with: missing key "expr""#],
    );
}

// Inputs.

#[test]
fn unknown_input_suggests_the_nearest_stage() {
    // Only the typo is reported: "square" being unread follows from it.
    assert_problems(
        &after_gen(&[
            "  - name: square",
            "    type: map",
            "    with: { expr: '. * .' }",
            "  - name: out",
            "    type: drop",
            "    inputs: [sqaure]",
        ]),
        &[
            r#"bad.yaml:10:14: stage "out": inputs: unknown stage "sqaure" (did you mean "square"?)"#,
        ],
    );
}

#[test]
fn a_stage_cannot_read_its_own_output() {
    assert_problems(
        &after_gen(&[
            "  - name: square",
            "    type: map",
            "    inputs: [gen, square]",
            "    with: { expr: '.' }",
            "  - name: out",
            "    type: drop",
        ]),
        &[r#"bad.yaml:7:19: stage "square": inputs: a stage cannot read its own output"#],
    );
}

#[test]
fn a_sink_cannot_be_an_input() {
    assert_problems(
        &after_gen(&[
            "  - name: out",
            "    type: drop",
            "  - name: square",
            "    type: map",
            "    inputs: [out]",
            "    with: { expr: '.' }",
            "  - name: out2",
            "    type: drop",
        ]),
        &[r#"bad.yaml:9:14: stage "square": inputs: "out" is a sink; nothing comes out of it"#],
    );
}

#[test]
fn an_input_listed_twice_is_rejected() {
    assert_problems(
        &after_gen(&["  - name: out", "    type: drop", "    inputs: [gen, gen]"]),
        &[r#"bad.yaml:7:19: stage "out": inputs: "gen" is listed twice"#],
    );
}

#[test]
fn a_stage_after_a_sink_needs_its_inputs_named() {
    assert_problems(
        &after_gen(&[
            "  - name: out",
            "    type: drop",
            "  - name: square",
            "    type: map",
            "    with: { expr: '.' }",
            "  - name: out2",
            "    type: drop",
        ]),
        &[
            r#"bad.yaml:7:5: stage "square": no `inputs:`, and the stage before it, "out", is a sink with no output; name this stage's inputs, or write `inputs: []` for a dead-letter stage"#,
        ],
    );
}

#[test]
fn a_source_takes_no_inputs() {
    assert_problems(
        &[
            "stages:",
            "  - name: gen",
            "    type: generate",
            "  - name: more",
            "    type: generate",
            "    inputs: [gen]",
            "  - name: out",
            "    type: drop",
            "    inputs: [gen, more]",
        ],
        &[
            r#"bad.yaml:6:5: stage "more": inputs: a source takes no inputs ("generate" is a source type)"#,
        ],
    );
}

// Names.

#[test]
fn duplicate_stage_names_name_the_first_ones_line() {
    assert_problems(
        &after_gen(&[
            "  - name: square",
            "    type: map",
            "    with: { expr: '.' }",
            "  - name: square",
            "    type: drop",
        ]),
        &[r#"bad.yaml:8:11: stage "square": name: duplicate stage name (first at line 5)"#],
    );
}

#[test]
fn stage_names_with_other_characters_are_rejected() {
    assert_problems(
        &after_gen(&["  - name: 'my out!'", "    type: drop"]),
        &[r#"bad.yaml:5:11: stage "my out!": name: use only letters, digits, `_` and `-`"#],
    );
}

// The graph.

#[test]
fn a_cycle_of_inputs_is_rejected_and_listed() {
    assert_problems(
        &after_gen(&[
            "  - name: a",
            "    type: map",
            "    inputs: [gen, b]",
            "    with: { expr: '.' }",
            "  - name: b",
            "    type: map",
            "    inputs: [a]",
            "    with: { expr: '.' }",
            "  - name: out",
            "    type: drop",
            "    inputs: [b]",
        ]),
        &[r#"bad.yaml:7:5: stage "a": inputs: the stages form a cycle: a -> b -> a"#],
    );
}

#[test]
fn a_stage_with_empty_inputs_that_no_error_route_names_is_unfed() {
    assert_problems(
        &after_gen(&[
            "  - name: out",
            "    type: drop",
            "  - name: failed",
            "    type: drop",
            "    inputs: []",
        ]),
        &[
            r#"bad.yaml:9:5: stage "failed": nothing feeds this sink: it has `inputs: []` and no stage's on_error names it"#,
        ],
    );
}

#[test]
fn a_first_stage_that_is_not_a_source_is_unfed() {
    assert_problems(
        &[
            "stages:",
            "  - name: square",
            "    type: map",
            "    with: { expr: '.' }",
            "  - name: out",
            "    type: drop",
        ],
        &[
            r#"bad.yaml:2:5: stage "square": nothing feeds this processor: it is the first stage and is not a source"#,
        ],
    );
}

#[test]
fn a_dead_letter_stage_fed_only_by_on_error_validates() {
    let out = assert_valid(&after_gen(&[
        "  - name: square",
        "    type: map",
        "    on_error: failed",
        "    with: { expr: '. * .' }",
        "  - name: out",
        "    type: drop",
        "  - name: failed",
        "    type: drop",
        "    inputs: []",
    ]));
    assert_eq!(
        out.stdout,
        "bad.yaml: ok: 4 stages (gen, square, out, failed)\n"
    );
}

#[test]
fn a_processor_whose_output_nothing_reads_is_rejected() {
    assert_problems(
        &after_gen(&[
            "  - name: square",
            "    type: map",
            "    with: { expr: '.' }",
            "  - name: out",
            "    type: drop",
            "    inputs: [gen]",
        ]),
        &[
            r#"bad.yaml:5:5: stage "square": nothing reads this stage's output; add a sink after it (type: drop to discard)"#,
        ],
    );
}

#[test]
fn a_source_nothing_reads_is_rejected() {
    assert_problems(
        &after_gen(&[
            "  - name: more",
            "    type: generate",
            "  - name: out",
            "    type: drop",
        ]),
        &[r#"bad.yaml:2:5: stage "gen": nothing reads from this source; add a stage after it"#],
    );
}

// on_error.

#[test]
fn on_error_naming_an_unknown_stage_suggests_the_nearest() {
    // Only the typo is reported: "failed" being unfed follows from it.
    assert_problems(
        &after_gen(&[
            "  - name: square",
            "    type: map",
            "    on_error: faled",
            "    with: { expr: '.' }",
            "  - name: out",
            "    type: drop",
            "  - name: failed",
            "    type: drop",
            "    inputs: []",
        ]),
        &[
            r#"bad.yaml:7:15: stage "square": on_error: "faled" is not drop, fail or a stage name (did you mean the stage "failed"?)"#,
        ],
    );
}

#[test]
fn on_error_suggests_drop_or_fail() {
    assert_problems(
        &after_gen(&["  - name: out", "    type: drop", "    on_error: fial"]),
        &[
            r#"bad.yaml:7:15: stage "out": on_error: "fial" is not drop, fail or a stage name (did you mean "fail"?)"#,
        ],
    );
}

#[test]
fn on_error_cannot_name_a_source() {
    assert_problems(
        &after_gen(&["  - name: out", "    type: drop", "    on_error: gen"]),
        &[r#"bad.yaml:7:15: stage "out": on_error: "gen" is a source; it takes no items"#],
    );
}

#[test]
fn on_error_cannot_name_its_own_stage() {
    assert_problems(
        &after_gen(&["  - name: out", "    type: drop", "    on_error: out"]),
        &[r#"bad.yaml:7:15: stage "out": on_error: a stage cannot take its own failed items"#],
    );
}

#[test]
fn a_bad_on_error_in_defaults_is_reported_once_at_the_default() {
    let mut lines = vec!["defaults:", "  on_error: faled"];
    lines.extend(after_gen(&[
        "  - name: out",
        "    type: drop",
        "  - name: failed",
        "    type: drop",
        "    inputs: []",
    ]));
    assert_problems(
        &lines,
        &[
            r#"bad.yaml:2:13: defaults.on_error: "faled" is not drop, fail or a stage name (did you mean the stage "failed"?)"#,
        ],
    );
}

// Expressions.

#[test]
fn an_invalid_expression_points_at_the_offending_token() {
    // `      expr: '.a | | .b'`: the text starts at column 14, the second
    // `|` is its sixth character.
    assert_problems(
        &after_gen(&[
            "  - name: square",
            "    type: map",
            "    with:",
            "      expr: '.a | | .b'",
            "  - name: out",
            "    type: drop",
        ]),
        &[
            r#"bad.yaml:8:19: stage "square": with.expr: invalid jq expression: expected term, found "|""#,
            "    .a | | .b",
            "         ^",
        ],
    );
    // Unquoted, the text starts where the value does.
    assert_problems(
        &after_gen(&[
            "  - name: square",
            "    type: map",
            "    with:",
            "      expr: .a | | .b",
            "  - name: out",
            "    type: drop",
        ]),
        &[
            r#"bad.yaml:8:18: stage "square": with.expr: invalid jq expression: expected term, found "|""#,
            "    .a | | .b",
            "         ^",
        ],
    );
}

#[test]
fn an_invalid_expression_column_counts_escapes_and_letters_as_written() {
    // `\"é\" | | .b` is the text `"é" | | .b`: the second `|` is its
    // seventh character, written at column 28.
    let problems = problems(&after_gen(&[
        "  - name: square",
        "    type: map",
        r#"    with: { expr: "\"é\" | | .b" }"#,
        "  - name: out",
        "    type: drop",
    ]));
    assert_eq!(
        problems,
        [
            r#"bad.yaml:7:28: stage "square": with.expr: invalid jq expression: expected term, found "|""#,
            r#"    "é" | | .b"#,
            "          ^",
        ]
    );
}

#[test]
fn an_invalid_expression_in_a_literal_block_points_at_its_line() {
    assert_problems(
        &after_gen(&[
            "  - name: square",
            "    type: map",
            "    with:",
            "      expr: |",
            "        {id: .id,",
            "         v: .v | | .b}",
            "  - name: out",
            "    type: drop",
        ]),
        &[
            r#"bad.yaml:10:18: stage "square": with.expr: invalid jq expression: expected term, found "|""#,
            "     v: .v | | .b}",
            "             ^",
        ],
    );
}

#[test]
fn an_undefined_function_in_an_expression_is_rejected() {
    assert_problems(
        &after_gen(&[
            "  - name: square",
            "    type: map",
            "    with: { expr: '1 + nosuch(1)' }",
            "  - name: out",
            "    type: drop",
        ]),
        &[
            r#"bad.yaml:7:24: stage "square": with.expr: invalid jq expression: undefined filter nosuch"#,
            "    1 + nosuch(1)",
            "        ^",
        ],
    );
}

#[test]
fn an_undefined_variable_in_an_expression_is_rejected() {
    assert_problems(
        &[
            "stages:",
            "  - name: gen",
            "    type: generate",
            "    with: { count: 3, value: '{id: $j}' }",
            "  - name: out",
            "    type: drop",
        ],
        &[
            r#"bad.yaml:4:36: stage "gen": with.value: invalid jq expression: undefined variable $j"#,
            "    {id: $j}",
            "         ^",
        ],
    );
}

// `${VAR}` interpolation.

#[test]
fn an_unset_variable_is_named_at_its_dollar() {
    assert_problems(
        &[
            "stages:",
            "  - name: lines",
            "    type: read",
            r#"    with: { path: "${FLOW_TEST_UNSET}", format: lines }"#,
            "  - name: out",
            "    type: drop",
        ],
        &[
            r#"bad.yaml:4:20: stage "lines": with.path: environment variable FLOW_TEST_UNSET is not set (write ${FLOW_TEST_UNSET:-default} to give a default)"#,
        ],
    );
}

#[test]
fn a_required_variable_fails_with_its_message() {
    assert_problems(
        &[
            "stages:",
            "  - name: lines",
            "    type: read",
            r#"    with: { path: "${FLOW_TEST_INPUT:?set FLOW_TEST_INPUT to the input file}" }"#,
            "  - name: out",
            "    type: drop",
        ],
        &[
            r#"bad.yaml:4:20: stage "lines": with.path: FLOW_TEST_INPUT: set FLOW_TEST_INPUT to the input file"#,
        ],
    );
}

#[test]
fn a_variable_with_a_default_or_set_in_the_environment_validates() {
    let lines = [
        "stages:",
        "  - name: gen",
        "    type: generate",
        r#"    with: { count: 3, value: "${FLOW_TEST_PREFIX:-.}" }"#,
        "  - name: out",
        "    type: drop",
        r#"    queue: ${FLOW_TEST_QUEUE}"#,
    ];
    let pipeline = Pipeline::new(&lines);
    let unset = problems_of(pipeline.validate());
    assert_eq!(
        unset,
        [
            "bad.yaml:7:12: stage \"out\": queue: environment variable FLOW_TEST_QUEUE is not set (write ${FLOW_TEST_QUEUE:-default} to give a default)"
        ]
    );
    let out = run(pipeline.command("validate").env("FLOW_TEST_QUEUE", "8")).expect_code(0);
    assert_eq!(out.stdout, "bad.yaml: ok: 2 stages (gen, out)\n");
}

#[test]
fn columns_after_a_variable_are_as_written() {
    assert_problems(
        &[
            "stages:",
            "  - name: gen",
            "    type: generate",
            r#"    with: { value: "${FLOW_TEST_PREFIX:-.}", count: 3, intervall: 1s }"#,
            "  - name: out",
            "    type: drop",
        ],
        &[
            r#"bad.yaml:4:56: stage "gen": with: unknown key "intervall" (did you mean "interval"?)"#,
        ],
    );
}

#[test]
fn a_variable_missing_its_closing_brace_is_reported() {
    assert_problems(
        &[
            "stages:",
            "  - name: lines",
            "    type: read",
            r#"    with: { path: "${FLOW_TEST_INPUT", format: lines }"#,
            "  - name: out",
            "    type: drop",
        ],
        &[
            r#"bad.yaml:4:20: stage "lines": with.path: `${FLOW_TEST_INPUT`: expected `}` after the variable name, found the end of the value"#,
        ],
    );
}

#[test]
fn a_variable_in_a_whole_line_comment_is_left_alone() {
    assert_valid(&after_gen(&[
        "  # - name: ${FLOW_TEST_UNSET}",
        "  - name: out",
        "    type: drop",
    ]));
}

// The file itself.

#[test]
fn invalid_yaml_is_reported_where_the_parser_stopped() {
    assert_problems(
        &[
            "stages:",
            "  - name: gen",
            "    type: generate",
            "    with: { count: [1, 2 }",
            "  - name: out",
            "    type: drop",
        ],
        &["bad.yaml:4:26: invalid YAML: while parsing a flow sequence, expected ',' or ']'"],
    );
}

#[test]
fn invalid_yaml_is_reported_rather_than_a_wrong_value_before_it() {
    assert_problems(
        &[
            "name: [demo",
            "stages:",
            "  - name: gen",
            "    type: generate",
        ],
        &["bad.yaml:2:7: invalid YAML: illegal placement of ':' indicator"],
    );
}

#[test]
fn several_problems_are_all_reported_in_file_order() {
    assert_problems(
        &[
            "stages:",
            "  - name: gen",
            "    type: generat",
            "  - name: square",
            "    type: map",
            "    workers: 0",
            "    on_error: nowhere",
            "    with: { expr: '.a | | .b' }",
            "  - name: out",
            "    type: drop",
            "    inputs: [square, missing]",
        ],
        &[
            r#"bad.yaml:3:11: stage "gen": unknown stage type "generat" (did you mean "generate"?)"#,
            r#"bad.yaml:6:14: stage "square": workers: must be at least 1"#,
            r#"bad.yaml:7:15: stage "square": on_error: "nowhere" is not drop, fail or a stage name"#,
            r#"bad.yaml:8:25: stage "square": with.expr: invalid jq expression: expected term, found "|""#,
            "    .a | | .b",
            "         ^",
            r#"bad.yaml:11:22: stage "out": inputs: unknown stage "missing""#,
        ],
    );
}

#[test]
fn a_missing_pipeline_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(flow()
        .args(["validate", "nowhere.yaml"])
        .current_dir(dir.path()))
    .expect_code(2);
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr
            .starts_with("nowhere.yaml: cannot read the pipeline file: "),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

// `flow run` checks the same way, and runs nothing.

/// A pipeline writing `out.jsonl`, with `square`'s `type:` line given.
fn writing_pipeline(square_type: &str) -> Pipeline {
    Pipeline::new(&after_gen(&[
        "  - name: square",
        square_type,
        "    with: { expr: '. * .' }",
        "  - name: save",
        "    type: write",
        "    with: { path: out.jsonl }",
    ]))
}

#[test]
fn run_refuses_an_invalid_pipeline_and_runs_nothing() {
    let bad = writing_pipeline("    type: mpa");
    let out = run(&mut bad.command("run")).expect_code(2);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "bad.yaml:6:11: stage \"square\": unknown stage type \"mpa\" (did you mean \"map\"?)\n"
    );
    assert!(!bad.path("out.jsonl").exists(), "the sink ran");

    // The same pipeline, fixed, does write the file.
    let good = writing_pipeline("    type: map");
    run(&mut good.command("run")).expect_code(0);
    assert!(good.path("out.jsonl").exists());
}

#[test]
fn run_reports_every_problem_like_validate() {
    let pipeline = Pipeline::new(&after_gen(&[
        "  - name: save",
        "    type: write",
        "    workers: 0",
        "    on_error: gen",
        "    with: { path: out.jsonl }",
    ]));
    let out = run(&mut pipeline.command("run")).expect_code(2);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr.lines().collect::<Vec<_>>(),
        [
            r#"bad.yaml:7:14: stage "save": workers: must be at least 1"#,
            r#"bad.yaml:8:15: stage "save": on_error: "gen" is a source; it takes no items"#,
        ]
    );
    assert_eq!(out.stderr, pipeline.validate().stderr);
    assert!(!pipeline.path("out.jsonl").exists(), "the sink ran");
}

#[test]
fn run_reports_an_unset_variable_and_runs_nothing() {
    let pipeline = Pipeline::new(&[
        "stages:",
        "  - name: gen",
        "    type: generate",
        "    with: { count: 3 }",
        "  - name: save",
        "    type: write",
        r#"    with: { path: "${FLOW_TEST_UNSET}.jsonl" }"#,
    ]);
    let out = run(&mut pipeline.command("run")).expect_code(2);
    assert_eq!(
        out.stderr,
        "bad.yaml:7:20: stage \"save\": with.path: environment variable FLOW_TEST_UNSET is not set (write ${FLOW_TEST_UNSET:-default} to give a default)\n"
    );
    assert!(!pipeline.path(".jsonl").exists(), "the sink ran");
}

#[test]
fn run_reports_a_missing_pipeline_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(flow().args(["run", "nowhere.yaml"]).current_dir(dir.path())).expect_code(2);
    assert!(
        out.stderr
            .starts_with("nowhere.yaml: cannot read the pipeline file: "),
        "{}",
        out.stderr
    );
}

// Errors that teach.

#[test]
fn a_url_written_as_a_literal_is_shown_quoted() {
    assert_problems(
        &after_gen(&[
            "  - name: fetch",
            "    type: http",
            "    with:",
            "      url: http://example.com/x",
            "  - name: out",
            "    type: drop",
        ]),
        &[
            r#"bad.yaml:8:16: stage "fetch": with.url: this option takes a jq expression, and this text is not valid jq (expected the end of the expression, found ":"); for the literal string, write '"http://example.com/x"'"#,
            "    http://example.com/x",
            "        ^",
        ],
    );
}

#[test]
fn a_bare_word_is_shown_as_a_string_and_as_a_field() {
    assert_problems(
        &[
            "stages:",
            "  - name: gen",
            "    type: generate",
            "    with: { count: 3, value: hello }",
            "  - name: out",
            "    type: drop",
        ],
        &[
            r#"bad.yaml:4:30: stage "gen": with.value: this option takes a jq expression, and this text is not valid jq (undefined filter hello); for the literal string, write '"hello"'; for the field "hello" of the input, write .hello"#,
            "    hello",
            "    ^",
        ],
    );
}

#[test]
fn a_file_name_written_as_a_literal_is_shown_quoted() {
    // The single quote is doubled, as YAML's single-quoted strings want.
    assert_problems(
        &after_gen(&[
            "  - name: out",
            "    type: files",
            "    with: { dir: out, name: bob's notes.txt }",
        ]),
        &[
            r#"bad.yaml:7:32: stage "out": with.name: this option takes a jq expression, and this text is not valid jq (expected token); for the literal string, write '"bob''s notes.txt"'"#,
            "    bob's notes.txt",
            "       ^",
        ],
    );
}

#[test]
fn a_runner_expression_written_as_a_literal_is_shown_quoted() {
    assert_problems(
        &after_gen(&[
            "  - name: out",
            "    type: drop",
            "    rate: 5/s",
            "    rate_key: host",
        ]),
        &[
            r#"bad.yaml:8:15: stage "out": rate_key: this option takes a jq expression, and this text is not valid jq (undefined filter host); for the literal string, write '"host"'; for the field "host" of the input, write .host"#,
            "    host",
            "    ^",
        ],
    );
}

#[test]
fn an_error_at_the_end_of_an_expression_gets_a_caret_after_it() {
    assert_problems(
        &after_gen(&[
            "  - name: square",
            "    type: map",
            "    with: { expr: '.a |' }",
            "  - name: out",
            "    type: drop",
        ]),
        &[
            r#"bad.yaml:7:24: stage "square": with.expr: invalid jq expression: expected term, found the end"#,
            "    .a |",
            "        ^",
        ],
    );
}

#[test]
fn an_option_beside_with_is_said_to_belong_under_it() {
    assert_problems(
        &after_gen(&[
            "  - name: square",
            "    type: map",
            "    expr: '. * .'",
            "  - name: out",
            "    type: drop",
        ]),
        &[
            r#"bad.yaml:7:5: stage "square": unknown key "expr": it is an option of type map; put it under with:"#,
        ],
    );
}

#[test]
fn every_unknown_key_is_reported_and_the_rest_still_checked() {
    assert_problems(
        &[
            "name: demo",
            "stags_note: x",
            "defaults:",
            "  queu: 8",
            "  retry: { atempts: 2 }",
            "stages:",
            "  - name: gen",
            "    type: generate",
            "    count: 3",
            "    wokers: 2",
            "  - name: square",
            "    type: map",
            "    colour: red",
            "    workers: 0",
            "    retry: { attempts: 2, jiter: true }",
            "    with: { expr: '.a | | .b' }",
            "  - name: out",
            "    type: drop",
            "    inputs: [sqare]",
        ],
        &[
            r#"bad.yaml:2:1: unknown key "stags_note"; expected one of: name, limits, defaults, state, checkpoint_interval, stages, tests"#,
            r#"bad.yaml:4:3: defaults: unknown key "queu" (did you mean "queue"?)"#,
            r#"bad.yaml:5:12: defaults.retry: unknown key "atempts" (did you mean "attempts"?)"#,
            r#"bad.yaml:9:5: stage "gen": unknown key "count": it is an option of type generate; put it under with:"#,
            r#"bad.yaml:10:5: stage "gen": unknown key "wokers" (did you mean "workers"?)"#,
            r#"bad.yaml:13:5: stage "square": unknown key "colour"; expected one of: name, type, inputs, workers, queue, queue_bytes, order, ordered, priority, rate, burst, rate_key, retry, timeout, on_error, with"#,
            r#"bad.yaml:14:14: stage "square": workers: must be at least 1"#,
            r#"bad.yaml:15:27: stage "square": retry: unknown key "jiter" (did you mean "jitter"?)"#,
            r#"bad.yaml:16:25: stage "square": with.expr: invalid jq expression: expected term, found "|""#,
            "    .a | | .b",
            "         ^",
            r#"bad.yaml:19:14: stage "out": inputs: unknown stage "sqare" (did you mean "square"?)"#,
        ],
    );
}

#[test]
fn on_error_prefers_a_stage_name_to_a_keyword_as_near() {
    assert_problems(
        &after_gen(&[
            "  - name: out",
            "    type: drop",
            "    on_error: faild",
            "  - name: failed",
            "    type: drop",
            "    inputs: []",
        ]),
        &[
            r#"bad.yaml:7:15: stage "out": on_error: "faild" is not drop, fail or a stage name (did you mean the stage "failed"?)"#,
        ],
    );
}

#[test]
fn a_misspelt_required_key_is_read_as_meant_and_the_rest_checked() {
    assert_problems(
        &after_gen(&[
            "  - name: square",
            "    tpye: map",
            "    retry: { atempts: 0 }",
            "    with: { expr: '.' }",
            "  - name: out",
            "    type: drop",
            "    on_error: nowhere",
        ]),
        &[
            r#"bad.yaml:6:5: stage "square": unknown key "tpye" (did you mean "type"?)"#,
            r#"bad.yaml:7:14: stage "square": retry: unknown key "atempts" (did you mean "attempts"?)"#,
            r#"bad.yaml:7:23: stage "square": retry.attempts: must be at least 1 (the first try counts)"#,
            r#"bad.yaml:11:15: stage "out": on_error: "nowhere" is not drop, fail or a stage name"#,
        ],
    );
}

// Several files.

const GOOD: &str = "stages:\n  - name: gen\n    type: generate\n    with: { count: 3 }\n  - name: out\n    type: drop\n";
const BAD: &str =
    "stages:\n  - name: gen\n    type: generate\n    wokers: 2\n  - name: out\n    type: drop\n";

/// `flow validate ARGS…` run in `dir`.
fn validate_in(dir: &std::path::Path, args: &[&str]) -> Run {
    run(flow()
        .arg("validate")
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG"))
}

#[test]
fn several_files_are_each_validated_and_any_bad_one_fails() {
    let dir = tempfile::tempdir().expect("a temp dir");
    write_pipeline(dir.path(), "a.yaml", GOOD);
    write_pipeline(dir.path(), "b.yaml", BAD);
    write_pipeline(dir.path(), "c.yml", GOOD);
    let out = validate_in(dir.path(), &["c.yml", "b.yaml", "a.yaml"]).expect_code(2);
    assert_eq!(
        out.stdout,
        "c.yml: ok: 2 stages (gen, out)\na.yaml: ok: 2 stages (gen, out)\n"
    );
    assert_eq!(
        out.stderr,
        "b.yaml:4:5: stage \"gen\": unknown key \"wokers\" (did you mean \"workers\"?)\n"
    );
    let out = validate_in(dir.path(), &["a.yaml", "c.yml"]).expect_code(0);
    assert_eq!(
        out.stdout,
        "a.yaml: ok: 2 stages (gen, out)\nc.yml: ok: 2 stages (gen, out)\n"
    );
    assert_eq!(out.stderr, "");
}

#[test]
fn a_directory_means_its_yaml_files_in_name_order_not_its_subdirectories() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir_all(pipelines.join("old")).expect("a subdirectory");
    write_pipeline(&pipelines, "b.yml", GOOD);
    write_pipeline(&pipelines, "a.yaml", GOOD);
    write_pipeline(&pipelines, "notes.txt", "not a pipeline");
    write_pipeline(&pipelines.join("old"), "bad.yaml", BAD);
    let out = validate_in(dir.path(), &["pipelines"]).expect_code(0);
    assert_eq!(
        out.stdout,
        "pipelines/a.yaml: ok: 2 stages (gen, out)\npipelines/b.yml: ok: 2 stages (gen, out)\n"
    );
    write_pipeline(&pipelines, "c.yaml", BAD);
    let out = validate_in(dir.path(), &["pipelines"]).expect_code(2);
    assert_eq!(
        out.stdout,
        "pipelines/a.yaml: ok: 2 stages (gen, out)\npipelines/b.yml: ok: 2 stages (gen, out)\n"
    );
    assert_eq!(
        out.stderr,
        "pipelines/c.yaml:4:5: stage \"gen\": unknown key \"wokers\" (did you mean \"workers\"?)\n"
    );
}

#[test]
fn a_directory_without_pipeline_files_is_an_error() {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::create_dir(dir.path().join("empty")).expect("a directory");
    let out = validate_in(dir.path(), &["empty"]).expect_code(2);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "empty: no pipeline files (*.yaml, *.yml) in this directory\n"
    );
}

#[test]
fn a_quoted_number_is_said_to_be_text() {
    assert_problems(
        &after_gen(&["  - name: out", "    type: drop", "    workers: \"4\""]),
        &[
            r#"bad.yaml:7:14: stage "out": workers: invalid type: string "4", expected a whole number, 0 or more; a number in quotes is text: write 4 without quotes"#,
        ],
    );
}

#[test]
fn a_duration_without_a_unit_is_told_the_units() {
    assert_problems(
        &after_gen(&["  - name: out", "    type: drop", "    timeout: 10"]),
        &[
            r#"bad.yaml:7:14: stage "out": timeout: invalid duration "10": a duration needs a unit: 10s, 10ms, 10m or 10h"#,
        ],
    );
}

#[test]
fn yes_for_a_boolean_is_told_true_or_false() {
    assert_problems(
        &after_gen(&["  - name: out", "    type: drop", "    ordered: yes"]),
        &[
            r#"bad.yaml:7:14: stage "out": ordered: invalid type: string "yes", expected a boolean: write true or false (YAML 1.2 reads yes, no, on and off as text)"#,
        ],
    );
}

#[test]
fn a_jq_builtin_that_jaq_lacks_says_what_to_use_instead() {
    assert_problems(
        &after_gen(&[
            "  - name: a",
            "    type: map",
            "    with: { expr: 'input' }",
            "  - name: b",
            "    type: map",
            "    with: { expr: '$ENV.HOME' }",
            "  - name: c",
            "    type: map",
            "    with: { expr: '[.a, .b] | @csv' }",
            "  - name: out",
            "    type: drop",
        ]),
        &[
            r#"bad.yaml:7:20: stage "a": with.expr: invalid jq expression: undefined filter input; flow's jq (jaq) has no input stream: each item is the expression's input, `.` (to take several items together, put a batch stage before)"#,
            "    input",
            "    ^",
            r#"bad.yaml:10:20: stage "b": with.expr: invalid jq expression: undefined variable $ENV; flow's jq (jaq) has no $ENV: use env (env.HOME), or ${HOME} in the file"#,
            "    $ENV.HOME",
            "    ^",
            r#"bad.yaml:13:31: stage "c": with.expr: invalid jq expression: undefined filter @csv; flow's jq (jaq) has no @csv or @tsv: write CSV with the stdout or write stage (format: csv)"#,
            "    [.a, .b] | @csv",
            "               ^",
        ],
    );
}

#[test]
fn a_bad_value_of_a_stage_or_default_key_does_not_stop_the_other_checks() {
    assert_problems(
        &[
            "stages:",
            "  - name: a",
            "    type: list",
            "    with: {items: [1]}",
            "  - name: b",
            "    type: drop",
            "    retry: {attempts: x, backoff: 1s}",
            "    queue: -1",
            "    ordered: 3",
            "    rate_key: [1]",
            "    on_error: nowhere",
            "defaults:",
            "  workers: many",
        ],
        &[
            r#"bad.yaml:7:23: stage "b": retry.attempts: invalid type: string "x", expected a whole number, 0 or more"#,
            r#"bad.yaml:8:12: stage "b": queue: invalid type: integer `-1`, expected a whole number, 0 or more"#,
            r#"bad.yaml:9:14: stage "b": ordered: invalid type: integer `3`, expected a boolean"#,
            r#"bad.yaml:10:15: stage "b": rate_key: invalid type: sequence, expected a string"#,
            r#"bad.yaml:11:15: stage "b": on_error: "nowhere" is not drop, fail or a stage name"#,
            r#"bad.yaml:13:12: defaults.workers: invalid type: string "many", expected a whole number, 0 or more"#,
        ],
    );
}
