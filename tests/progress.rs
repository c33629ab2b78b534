//! Live progress through the real binary: redrawn per-stage lines in a
//! pseudo-terminal (util-linux `script`, part of every Debian install),
//! plain periodic lines when stderr is a pipe, nothing with `--quiet`.
//!
//! The pipelines are data-pipeline.yaml's shape with a `sleep` stage that
//! paces the run to a few seconds, far longer than the 200 ms between two
//! redraws (or two plain blocks): the assertions count frames, never time.

use std::path::{Path, PathBuf};
use std::process::Command;

use flow_tests::{Run, flow, run, write_pipeline};

/// generate → map → sleep 5 ms → write: 400 items, about two seconds.
const PACED: &str = "
name: paced
stages:
  - name: numbers
    type: generate
    with: { count: 400, value: '{id: $i, value: ($i % 1000)}' }
  - name: square
    type: map
    workers: 2
    with: { expr: '.square = .value * .value' }
  - name: pace
    type: sleep
    with: { duration: 5ms }
  - name: save
    type: write
    with: { path: out/squares.jsonl }
";

/// Writes `yaml` into a fresh temp dir; the dir lives as long as the value.
fn pipeline(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), "p.yaml", yaml);
    (dir, file)
}

/// Runs `flow run FILE ARGS…` in a pseudo-terminal and returns everything
/// the terminal received (stdout and stderr, with the escape sequences).
fn run_in_terminal(file: &Path, args: &[&str]) -> Run {
    let flow = flow();
    let mut command = vec![
        quote(Path::new(flow.get_program())),
        "run".into(),
        quote(file),
    ];
    command.extend(args.iter().map(|a| a.to_string()));
    let out = Command::new("script")
        .args(["-qfec", &command.join(" "), "/dev/null"])
        .env("TERM", "xterm-256color")
        .output()
        .expect("`script` (util-linux, Debian's bsdutils) runs: the terminal tests need it");
    out.into()
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// The numbers that follow `"{stage} "` (after spaces) in `text`, in order:
/// a stage's done count in each frame or line that shows it.
fn counts_after(text: &str, stage: &str) -> Vec<u64> {
    text.match_indices(&format!("{stage} "))
        .filter_map(|(i, m)| {
            let rest = text[i + m.len()..].trim_start_matches(' ');
            let digits: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == ',')
                .filter(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect()
}

/// The final stats table's header row.
const TABLE: &str = "stage  ";

#[test]
fn a_terminal_shows_live_per_stage_lines_redrawn_in_place_then_the_table() {
    let (_dir, file) = pipeline(PACED);
    let out = run_in_terminal(&file, &[]).expect_code(0);
    let screen = out.stdout;
    // Every stage has its line: the source with its total and a bar, the
    // others with their input queue against its capacity and their errors.
    assert!(screen.contains("/400"), "no total in:\n{screen}");
    assert!(screen.contains("━"), "no bar in:\n{screen}");
    for stage in ["square", "pace", "save"] {
        let line = format!("{stage} ");
        let shown = screen.match_indices(&line).any(|(i, _)| {
            screen[i..]
                .lines()
                .next()
                .unwrap()
                .contains("/64  errors 0")
        });
        assert!(shown, "no live line for {stage} in:\n{screen}");
    }
    // Redrawn in place: the cursor goes back up over the lines and clears
    // them, and the counts grow from frame to frame.
    assert!(
        screen.contains("\x1b[2A"),
        "no cursor movement in:\n{screen}"
    );
    assert!(screen.contains("\x1b[2K"), "no line clearing in:\n{screen}");
    let pace = counts_after(&screen, "pace");
    assert!(
        pace.windows(2).any(|w| w[1] > w[0]),
        "pace's count never grew across frames: {pace:?}\n{screen}"
    );
    // Cleared before the final report, which follows the last frame.
    let table = screen.find(TABLE).expect("the stats table");
    let last_frame = screen.rfind("errors 0").unwrap();
    assert!(last_frame < table, "a live line after the table:\n{screen}");
    assert!(
        screen[last_frame..table].contains("\x1b[2K"),
        "the live lines were not cleared before the table:\n{screen}"
    );
    assert!(screen[table..].contains("pipeline paced: ok"), "{screen}");
}

#[test]
fn log_lines_print_above_the_live_lines() {
    // One item in 50 fails: dropped, and logged as a warning while the
    // live lines are drawn.
    let yaml = PACED.replace(
        ".square = .value * .value",
        r#"if .id % 50 == 49 then error("bad item") else .square = .value * .value end"#,
    );
    let (_dir, file) = pipeline(&yaml);
    let screen = run_in_terminal(&file, &[]).expect_code(3).stdout;
    assert_printed_above_the_live_lines(&screen, "item dropped");
}

#[test]
fn printed_records_go_above_the_live_lines() {
    let yaml = "
stages:
  - {name: numbers, type: generate, with: {count: 30, value: '\"record \\($i)\"'}}
  - {name: pace, type: sleep, with: {duration: 60ms}}
  - {name: print, type: stdout, with: {format: lines}}
";
    let (_dir, file) = pipeline(yaml);
    let screen = run_in_terminal(&file, &[]).expect_code(0).stdout;
    assert_printed_above_the_live_lines(&screen, "record ");
    for i in 0..30 {
        assert!(
            screen.contains(&format!("record {i}\r\n")),
            "record {i}:\n{screen}"
        );
    }
}

/// Every `text` printed while the live lines are drawn starts a line of its
/// own, on lines cleared of progress: never in the middle of a live line.
fn assert_printed_above_the_live_lines(screen: &str, text: &str) {
    let first_frame = screen.find("errors ").expect("live lines");
    let printed: Vec<usize> = screen.match_indices(text).map(|(i, _)| i).collect();
    let during: Vec<usize> = printed.into_iter().filter(|&at| at > first_frame).collect();
    assert!(
        during.len() >= 2,
        "{text:?} not printed during the live lines:\n{screen}"
    );
    for at in during {
        // Before it on its line: at most escape sequences and the log
        // line's own start (timestamp, level), no progress text.
        let line_start = screen[..at].rfind(['\n', '\r']).map_or(0, |i| i + 1);
        let cleared = screen[..at]
            .rfind("\x1b[2K")
            .is_some_and(|c| c + 8 >= line_start);
        assert!(
            !screen[line_start..at].contains("queue ") && cleared,
            "{text:?} printed through the live lines: {:?}",
            &screen[at.saturating_sub(300)..at + 40]
        );
    }
    let table = screen.find(TABLE).expect("the stats table");
    assert!(screen.rfind(text).unwrap() < table, "{screen}");
}

#[test]
fn a_pipe_gets_plain_lines_per_stage_every_interval() {
    let (_dir, file) = pipeline(PACED);
    let out = run(flow()
        .arg("run")
        .arg(&file)
        .args(["--progress-interval", "200ms"]))
    .expect_code(0);
    let log = out.stderr;
    assert!(!log.contains('\x1b'), "escape sequences in a pipe:\n{log}");
    let progress: Vec<&str> = log.lines().filter(|l| l.starts_with('[')).collect();
    // One line per stage per block, each stage in pipeline order.
    for stage in ["numbers", "square", "pace", "save"] {
        let lines = progress
            .iter()
            .filter(|l| l.split_whitespace().nth(1) == Some(stage))
            .count();
        assert!(lines >= 2, "{lines} lines for {stage} in:\n{log}");
    }
    let first: Vec<&str> = progress[..4]
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(first, ["numbers", "square", "pace", "save"], "{log}");
    assert!(progress[0].contains("/400"), "no total: {}", progress[0]);
    assert!(
        progress
            .iter()
            .any(|l| l.contains(" pace ") && l.contains("queue ") && l.contains("/64")),
        "{log}"
    );
    let pace = counts_after(&progress.join("\n"), "pace");
    assert!(pace.windows(2).any(|w| w[1] > w[0]), "{pace:?}\n{log}");
    // The table comes after the last block.
    let table = log.find(TABLE).expect("the stats table");
    assert!(log.rfind("] save").unwrap() < table, "{log}");
}

#[test]
fn quiet_prints_no_progress_on_a_terminal_or_a_pipe() {
    let (_dir, file) = pipeline(PACED);
    let piped = run(flow()
        .arg("run")
        .arg(&file)
        .args(["--quiet", "--progress-interval", "200ms"]))
    .expect_code(0);
    assert_eq!(piped.stderr, "", "--quiet printed to a pipe");
    let screen = run_in_terminal(&file, &["--quiet"]).expect_code(0).stdout;
    assert_eq!(screen, "", "--quiet printed to a terminal");
}

#[test]
fn a_run_shorter_than_the_interval_prints_no_progress_line() {
    let (_dir, file) = pipeline(&PACED.replace("count: 400", "count: 3"));
    let out = run(flow().arg("run").arg(&file)).expect_code(0);
    assert!(
        !out.stderr.lines().any(|l| l.starts_with('[')),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(TABLE), "{}", out.stderr);
}

/// The acceptance run itself: `pipelines/data-pipeline.yaml` (100 000
/// items, about two seconds in the test profile).
#[test]
fn data_pipeline_shows_live_progress_in_a_terminal_and_plain_lines_in_a_pipe() {
    let out_dir = tempfile::tempdir().unwrap();
    let file = flow_tests::pipeline("data-pipeline.yaml");
    let flow_bin = flow();
    let command = format!(
        "OUT={} {} run {}",
        quote(out_dir.path()),
        quote(Path::new(flow_bin.get_program())),
        quote(&file)
    );
    let out: Run = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("TERM", "xterm-256color")
        .output()
        .expect("`script` runs")
        .into();
    let screen = out.expect_code(0).stdout;
    assert!(screen.contains("/100,000"), "no live total in:\n{screen}");
    for stage in ["numbers", "square", "save"] {
        assert!(
            !counts_after(&screen, stage).is_empty(),
            "no live line for {stage}:\n{screen}"
        );
    }
    assert!(
        screen.contains("\x1b[2K"),
        "not redrawn in place:\n{screen}"
    );
    assert!(screen.contains("pipeline data-pipeline: ok"), "{screen}");

    // The same run piped: plain lines, several per stage.
    let piped = flow_tests::run(
        flow()
            .arg("run")
            .arg(&file)
            .args(["--progress-interval", "100ms"])
            .env("OUT", out_dir.path()),
    )
    .expect_code(0);
    for stage in ["numbers", "square", "save"] {
        let lines = piped
            .stderr
            .lines()
            .filter(|l| l.starts_with('[') && l.contains(&format!("] {stage} ")))
            .count();
        assert!(
            lines >= 2,
            "{lines} plain lines for {stage}:\n{}",
            piped.stderr
        );
    }
    assert!(
        !piped.stderr.contains('\x1b'),
        "escape codes in a pipe:\n{}",
        piped.stderr
    );
}

/// Runs `shell` (a command line with `FLOW` standing for the binary) in a
/// pseudo-terminal: everything the terminal received.
fn shell_in_terminal(shell: &str) -> Run {
    let flow = flow();
    let command = shell.replace("FLOW", &quote(Path::new(flow.get_program())));
    Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("TERM", "xterm-256color")
        .env_remove("COLUMNS")
        .output()
        .expect("`script` runs")
        .into()
}

#[test]
fn records_piped_from_a_run_on_a_terminal_go_straight_to_the_pipe() {
    let yaml = PACED.replace(
        "type: write\n    with: { path: out/squares.jsonl }",
        "type: stdout",
    );
    let (dir, file) = pipeline(&yaml);
    let out_file = dir.path().join("piped.jsonl");
    // stderr (progress, the table) is the terminal; stdout a pipe.
    let screen = shell_in_terminal(&format!(
        "FLOW run {} | cat > {}",
        quote(&file),
        quote(&out_file)
    ))
    .expect_code(0)
    .stdout;
    assert!(screen.contains("\x1b[2K"), "no live lines:\n{screen}");
    assert!(
        !screen.contains("\"square\""),
        "records on the terminal:\n{screen}"
    );
    let piped = std::fs::read_to_string(&out_file).unwrap();
    assert!(
        !piped.contains('\x1b'),
        "escape codes in the pipe: {piped:?}"
    );
    let records: Vec<serde_json::Value> = piped
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(records.len(), 400);
    assert!(screen.contains("pipeline paced: ok"), "{screen}");
}

#[test]
fn the_report_fits_the_width_of_the_terminal() {
    let (_dir, file) = pipeline(&PACED.replace("count: 400", "count: 20"));
    for cols in [80, 120] {
        let screen = shell_in_terminal(&format!("stty cols {cols}; FLOW run {}", quote(&file)))
            .expect_code(0)
            .stdout;
        let table = screen.find(TABLE).expect("the stats table");
        for line in screen[table..].lines() {
            let line = line.trim_end_matches('\r');
            assert!(
                line.chars().count() <= cols,
                "wider than {cols}: {line:?}\n{screen}"
            );
        }
        let header = screen[table..].lines().next().unwrap();
        assert!(
            header.contains(" type ") && header.contains(" queue"),
            "{header}"
        );
    }
}
