//! The end-of-run report as a table for people.
//!
//! The table fits the terminal: by default it shows the columns that
//! matter most (stage, type, workers, items in and out, errors, busy,
//! latency p50 and p99, queue), leaves out those with nothing to say (all
//! zero or empty), and drops the least important ones rather than wrap
//! when the terminal is narrow. `--wide` shows every column, whatever the
//! width.
//!
//! Error messages and sample items quote item data: every text in the
//! report goes through [`flow_core::text::for_display`] (control
//! characters escaped, credentials redacted), so a record cannot paint
//! over the table, retitle the terminal or leave a password in a CI log.

use flow_core::text::for_display;

use flow_runner::stats::{Report, StageReport, Status};

/// How the table is laid out.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// The terminal's width, in columns.
    pub width: usize,
    /// Every column, however wide the table gets.
    pub wide: bool,
}

impl Layout {
    /// The compact table, as wide as the terminal stderr is on.
    pub fn for_stderr(wide: bool) -> Self {
        Layout {
            width: width(),
            wide,
        }
    }
}

/// The width the report is laid out for: `COLUMNS` when set to a number,
/// else the width of the terminal stderr is on, else 80.
pub fn width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c > 0)
        .or_else(stderr_columns)
        .unwrap_or(80)
}

/// The width of the terminal on stderr, when it is one and says.
fn stderr_columns() -> Option<usize> {
    // SAFETY: TIOCGWINSZ writes a `winsize` through the pointer, which
    // points to one; on any failure (not a terminal) it returns -1.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let done = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) };
    (done == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// One column of the table.
struct Column {
    header: &'static str,
    /// Numbers are right-aligned, names left.
    right: bool,
    /// Dropped first when the compact table is too wide: the lower, the
    /// sooner. `None`: never dropped.
    keep: Option<u8>,
    /// Shown in the compact table (when not empty everywhere).
    compact: bool,
    cell: fn(&StageReport) -> String,
}

/// Every column, in the order they are shown.
const COLUMNS: &[Column] = &[
    Column {
        header: "stage",
        right: false,
        keep: None,
        compact: true,
        cell: |s| for_display(&s.name).into_owned(),
    },
    Column {
        header: "type",
        right: false,
        keep: Some(0),
        compact: true,
        cell: |s| for_display(&s.type_name).into_owned(),
    },
    Column {
        header: "workers",
        right: true,
        keep: Some(1),
        compact: true,
        cell: |s| s.workers.to_string(),
    },
    Column {
        header: "in",
        right: true,
        keep: None,
        compact: true,
        cell: |s| count(s.items_in),
    },
    Column {
        header: "out",
        right: true,
        keep: None,
        compact: true,
        cell: |s| count(s.items_out),
    },
    Column {
        header: "errors",
        right: true,
        keep: None,
        compact: true,
        cell: |s| count(s.errors),
    },
    Column {
        header: "retries",
        right: true,
        keep: Some(2),
        compact: false,
        cell: |s| count(s.retries),
    },
    Column {
        header: "dropped",
        right: true,
        keep: Some(9),
        compact: true,
        cell: |s| count(s.dropped),
    },
    Column {
        header: "dead",
        right: true,
        keep: Some(8),
        compact: true,
        cell: |s| count(s.dead_lettered),
    },
    Column {
        header: "abandoned",
        right: true,
        keep: Some(4),
        compact: true,
        cell: |s| count(s.abandoned),
    },
    Column {
        header: "busy",
        right: true,
        keep: Some(7),
        compact: true,
        cell: |s| format!("{:.0}%", s.busy_pct),
    },
    Column {
        header: "p50",
        right: true,
        keep: Some(3),
        compact: true,
        cell: |s| latency(s.latency_ms.p50),
    },
    Column {
        header: "p90",
        right: true,
        keep: Some(2),
        compact: false,
        cell: |s| latency(s.latency_ms.p90),
    },
    Column {
        header: "p99",
        right: true,
        keep: Some(6),
        compact: true,
        cell: |s| latency(s.latency_ms.p99),
    },
    Column {
        header: "max",
        right: true,
        keep: Some(2),
        compact: false,
        cell: |s| latency(s.latency_ms.max),
    },
    Column {
        header: "queue",
        right: true,
        keep: Some(5),
        compact: true,
        cell: |s| {
            s.queue
                .map_or_else(|| "-".into(), |q| format!("{}/{}", q.peak, q.capacity))
        },
    },
    Column {
        header: "full",
        right: true,
        keep: Some(2),
        compact: false,
        cell: |s| {
            s.queue
                .map_or_else(|| "-".into(), |q| format!("{:.0}%", q.full_pct))
        },
    },
    Column {
        header: "rate wait*",
        right: true,
        keep: Some(2),
        compact: false,
        cell: |s| duration(s.wait_s.rate_limit),
    },
    Column {
        header: "bp wait*",
        right: true,
        keep: Some(2),
        compact: false,
        cell: |s| duration(s.wait_s.backpressure),
    },
];

/// The footnote of the columns marked `*`.
const SUMMED: &str = "* waits are summed over the stage's workers";

/// Cells that say nothing: a column of only these is left out of the
/// compact table.
fn is_empty_cell(cell: &str) -> bool {
    matches!(cell, "" | "0" | "-" | "0%")
}

/// The report: a run that failed before any stage handled anything is its
/// one error; any other run is the stats table, the most frequent errors
/// and the bottleneck line.
pub fn render(report: &Report, layout: Layout) -> String {
    if failed_at_start(report) {
        let failure = report.failure.as_deref().unwrap_or("the run failed");
        return format!("flow: {}\n", for_display(failure));
    }
    let mut out = table(&report.stages, layout);
    let width = layout.width.max(40);
    // Stages with named ports: what each port was given.
    for s in report.stages.iter().filter(|s| !s.outputs.is_empty()) {
        let ports: Vec<String> = s
            .outputs
            .iter()
            .map(|(port, n)| format!("{} {}", for_display(port), count(*n)))
            .collect();
        out += &wrap(
            &format!("{} → {}", for_display(&s.name), ports.join(" · ")),
            width,
        );
    }
    let status = match report.status {
        Status::Partial | Status::Ok if report.items_failed > 0 => {
            format!("finished, {}", plural(report.items_failed, "item", "items")) + " failed"
        }
        Status::Ok | Status::Partial => "ok".into(),
        Status::Running => "running".into(),
        Status::Failed => "FAILED".into(),
        Status::Interrupted => "interrupted".into(),
    };
    out += &wrap(
        &format!(
            "pipeline {}: {status} in {}, {} items/s",
            for_display(&report.pipeline),
            elapsed(report.elapsed_s),
            rate(report.items_per_s)
        ),
        width,
    );
    if let Some(d) = report
        .durable
        .as_ref()
        .filter(|d| d.resumed || d.replayed > 0)
    {
        let mut line = if d.resumed {
            format!(
                "resumed from checkpoint: {} already done, {} replayed",
                plural(d.items_done_before, "item", "items"),
                count(d.replayed)
            )
        } else {
            format!(
                "started over: the interrupted run before saved no checkpoint; {} replayed",
                count(d.replayed)
            )
        };
        if !d.calls_replayed.is_empty() {
            let calls: Vec<String> = d
                .calls_replayed
                .iter()
                .map(|(stage, n)| format!("{} {}", for_display(stage), count(*n)))
                .collect();
            line += &format!("; calls made again: {}", calls.join(", "));
        }
        out += &wrap(&line, width);
    }
    if let Some(failure) = &report.failure {
        out += &wrap(&format!("stopped by: {}", for_display(failure)), width);
    }
    let fit = |line: String| cut(&line, width) + "\n";
    if !report.errors.is_empty() {
        out += "errors:\n";
        for e in &report.errors {
            out += &fit(format!(
                "  {:>7}× {}: {}",
                e.count,
                for_display(&e.stage),
                for_display(e.template.as_ref().unwrap_or(&e.message))
            ));
            if e.template.is_some() {
                out += &fit(format!("           first: {}", for_display(&e.message)));
            }
            if !e.sample.is_empty() {
                out += &fit(format!("           e.g. {}", for_display(&e.sample)));
            }
        }
    }
    let left = report.errors_left_out;
    if left.errors > 0 {
        out += &format!(
            "  …and {} more {} ({})\n",
            left.groups,
            if left.groups == 1 { "group" } else { "groups" },
            plural(left.errors, "error", "errors")
        );
    }
    if let Some(b) = &report.bottleneck {
        out += &wrap(
            &format!(
                "bottleneck: {}: {}",
                for_display(&b.stage),
                for_display(&b.reason)
            ),
            width,
        );
    }
    out
}

/// A run that stopped before any stage handled or emitted anything (a
/// source that could not open its file): its error says it all.
fn failed_at_start(report: &Report) -> bool {
    report.status == Status::Failed
        && report.failure.is_some()
        && report.errors.is_empty()
        && report
            .stages
            .iter()
            .all(|s| s.items_in == 0 && s.items_out == 0 && s.errors == 0)
}

/// The stats table: a header row, a rule, a row per stage, aligned in
/// columns.
fn table(stages: &[StageReport], layout: Layout) -> String {
    let mut shown: Vec<(&Column, Vec<String>)> = COLUMNS
        .iter()
        .filter(|c| layout.wide || c.compact)
        .map(|c| (c, stages.iter().map(c.cell).collect::<Vec<_>>()))
        .filter(|(c, cells)| {
            layout.wide || c.header == "stage" || !cells.iter().all(|x| is_empty_cell(x))
        })
        .collect();
    let widths = |shown: &[(&Column, Vec<String>)]| -> Vec<usize> {
        shown
            .iter()
            .map(|(c, cells)| {
                cells
                    .iter()
                    .map(|x| x.chars().count())
                    .chain([c.header.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    };
    // Columns two spaces apart; one when that makes the table fit.
    let mut gap = 2;
    let total = |w: &[usize], gap: usize| w.iter().sum::<usize>() + gap * w.len().saturating_sub(1);
    if !layout.wide {
        if total(&widths(&shown), 2) > layout.width {
            gap = 1;
        }
        // Still too wide: the least important column goes, until it fits
        // or only the essential ones are left.
        while total(&widths(&shown), gap) > layout.width {
            let Some(least) = shown
                .iter()
                .enumerate()
                .filter_map(|(i, (c, _))| c.keep.map(|k| (k, i)))
                .min()
            else {
                break;
            };
            shown.remove(least.1);
        }
    }
    let w = widths(&shown);
    let row = |cells: Vec<&str>| {
        let mut line = String::new();
        for (k, ((c, _), cell)) in shown.iter().zip(cells).enumerate() {
            if k > 0 {
                line += &" ".repeat(gap);
            }
            let pad = w[k].saturating_sub(cell.chars().count());
            if c.right {
                line += &" ".repeat(pad);
                line += cell;
            } else {
                line += cell;
                line += &" ".repeat(pad);
            }
        }
        line.truncate(line.trim_end().len());
        line + "\n"
    };
    let mut out = row(shown.iter().map(|(c, _)| c.header).collect());
    out += &"─".repeat(total(&w, gap));
    out += "\n";
    for i in 0..stages.len() {
        out += &row(shown.iter().map(|(_, cells)| cells[i].as_str()).collect());
    }
    if shown.iter().any(|(c, _)| c.header.ends_with('*')) {
        out += SUMMED;
        out += "\n";
    }
    out
}

/// `1 item`, `2 items`.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn count(n: u64) -> String {
    n.to_string()
}

/// A latency in milliseconds, in a readable unit; `-` when none.
fn latency(ms: f64) -> String {
    duration(ms / 1000.0)
}

/// A duration in seconds, in a readable unit with two or three
/// significant digits: `850ns`, `763µs`, `1.2ms`, `45ms`, `3.4s`, `2m05s`,
/// `1h02m`; `-` for none.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs <= 0.0 {
        return "-".into();
    }
    // Each unit while the value, rounded as shown, stays below 1000 of it
    // (or 60 seconds).
    let scaled = |factor: f64, unit: &str| -> Option<String> {
        let x = secs * factor;
        let text = if x < 9.95 {
            format!("{x:.1}")
        } else {
            format!("{x:.0}")
        };
        let shown: f64 = text.parse().unwrap_or(x);
        let text = text.strip_suffix(".0").map_or(text.clone(), str::to_string);
        (shown < 1000.0).then(|| format!("{text}{unit}"))
    };
    if secs < 1e-6 {
        return format!("{:.0}ns", (secs * 1e9).max(1.0));
    }
    if secs < 1e-3
        && let Some(t) = scaled(1e6, "µs")
    {
        return t;
    }
    if secs < 1.0
        && let Some(t) = scaled(1e3, "ms")
    {
        return t;
    }
    if secs < 59.95 {
        return format!("{secs:.1}s");
    }
    let s = secs.round() as u64;
    if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    }
}

/// The run's length: `0.42s`, `12.3s`, `2m05s`.
fn elapsed(secs: f64) -> String {
    if secs < 10.0 {
        format!("{secs:.2}s")
    } else {
        duration(secs)
    }
}

/// Items per second: `0.5`, `812`, `12,345`.
fn rate(per_s: f64) -> String {
    if per_s < 10.0 {
        return format!("{per_s:.1}");
    }
    let n = per_s.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// `text` as lines of at most `width` characters, broken between words;
/// the lines after the first indented by two spaces. A word longer than a
/// line stays whole.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    // Nothing but the indent on the line yet.
    let mut fresh = true;
    for word in text.split(' ') {
        let needed = line.chars().count() + usize::from(!fresh) + word.chars().count();
        if !fresh && needed > width {
            out += &line;
            out += "\n";
            line = "  ".into();
            fresh = true;
        }
        if !fresh {
            line.push(' ');
        }
        line += word;
        fresh = false;
    }
    out + &line + "\n"
}

/// `line` cut to `width` characters, ending in `…` when cut.
fn cut(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_string();
    }
    let mut out: String = line.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_runner::stats::{Bottleneck, ErrorReport, LatencyReport, QueueReport, WaitReport};

    const NARROW: Layout = Layout {
        width: 80,
        wide: false,
    };

    fn bare(status: Status) -> Report {
        Report {
            pipeline: "p".into(),
            status,
            exit: Some(flow_runner::stats::status_exit_code(status)),
            items_failed: 0,
            failure: None,
            elapsed_s: 1.0,
            items_per_s: 1.0,
            stages: Vec::new(),
            errors: Vec::new(),
            errors_left_out: Default::default(),
            bottleneck: None,
            durable: None,
        }
    }

    fn stage(name: &str, type_name: &str, kind: &str, workers: usize, n: u64) -> StageReport {
        StageReport {
            name: name.into(),
            type_name: type_name.into(),
            kind: kind.into(),
            workers,
            items_in: if kind == "source" { 0 } else { n },
            items_out: n,
            errors: 0,
            retries: 0,
            dropped: 0,
            dead_lettered: 0,
            abandoned: 0,
            busy_pct: 0.0,
            latency_ms: LatencyReport::default(),
            queue: (kind != "source").then_some(QueueReport {
                capacity: 64,
                peak: 0,
                full_pct: 0.0,
                depth: 0,
            }),
            wait_s: WaitReport::default(),
            inputs: Vec::new(),
            on_error: "fail".into(),
            total: None,
            done: true,
            outputs: Vec::new(),
            resumed: 0,
            counts: Default::default(),
        }
    }

    /// A typical run: a source, four stages with work, failed items.
    fn typical() -> Report {
        let mut read = stage("read-urls", "read", "source", 1, 10_000);
        read.busy_pct = 3.0;
        read.wait_s.backpressure = 9.25;
        let mut parse = stage("parse", "map", "processor", 2, 10_000);
        parse.busy_pct = 12.0;
        parse.latency_ms = LatencyReport {
            p50: 0.763,
            p90: 2.1,
            p99: 12.3,
            max: 150.0,
        };
        parse.queue = parse.queue.map(|q| QueueReport { peak: 40, ..q });
        let mut fetch = stage("fetch-pages", "http", "processor", 16, 10_000);
        fetch.items_out = 9_870;
        fetch.errors = 130;
        fetch.retries = 41;
        fetch.dropped = 130;
        fetch.busy_pct = 97.0;
        fetch.latency_ms = LatencyReport {
            p50: 1.234,
            p90: 240.0,
            p99: 3400.0,
            max: 12_345.6,
        };
        fetch.queue = fetch.queue.map(|q| QueueReport {
            peak: 64,
            full_pct: 81.0,
            ..q
        });
        fetch.wait_s.rate_limit = 9.2;
        let mut extract = stage("extract", "jq", "processor", 4, 9_870);
        extract.busy_pct = 20.0;
        extract.latency_ms = LatencyReport {
            p50: 0.045,
            p90: 0.09,
            p99: 0.4,
            max: 2.0,
        };
        extract.queue = extract.queue.map(|q| QueueReport { peak: 12, ..q });
        let mut save = stage("save", "write", "sink", 1, 9_870);
        save.busy_pct = 5.0;
        save.latency_ms = LatencyReport {
            p50: 0.0021,
            p90: 0.003,
            p99: 0.0045,
            max: 0.9,
        };
        save.queue = save.queue.map(|q| QueueReport { peak: 7, ..q });
        Report {
            pipeline: "scrape".into(),
            status: Status::Partial,
            exit: Some(3),
            items_failed: 130,
            elapsed_s: 2.8,
            items_per_s: 3571.4,
            stages: vec![read, parse, fetch, extract, save],
            errors: vec![ErrorReport {
                stage: "fetch-pages".into(),
                message: "GET https://example.com/p/1: 404".into(),
                template: Some("GET https://example.com/…: N".into()),
                examples: Vec::new(),
                count: 130,
                sample: String::new(),
            }],
            bottleneck: Some(Bottleneck {
                stage: "fetch-pages".into(),
                reason: "16 workers busy 97%, input queue full 81% of the time; raise workers or its rate".into(),
            }),
            ..bare(Status::Partial)
        }
    }

    /// Each line of `text` at most `width` characters.
    fn assert_fits(text: &str, width: usize) {
        for line in text.lines() {
            assert!(
                line.chars().count() <= width,
                "wider than {width}: {line:?}"
            );
        }
    }

    /// A resumed run's line: what was done before, what is done again.
    #[test]
    fn a_durable_run_says_what_it_resumed_from_and_does_again() {
        let line = |durable: flow_runner::stats::DurableReport| {
            let mut report = bare(Status::Ok);
            report.durable = Some(durable);
            let text = render(&report, NARROW);
            text.lines()
                .find(|l| l.starts_with("resumed") || l.starts_with("started over"))
                .map(str::to_string)
        };
        let mut d = flow_runner::stats::DurableReport::default();
        assert_eq!(line(d.clone()), None, "a first run says nothing");
        d.resumed = true;
        d.items_done_before = 51_200;
        d.replayed = 312;
        assert_eq!(
            line(d.clone()).unwrap(),
            "resumed from checkpoint: 51200 items already done, 312 replayed"
        );
        d.calls_replayed = [("fetch".to_string(), 37), ("notify".to_string(), 1)].into();
        assert_eq!(
            line(d.clone()).unwrap(),
            "resumed from checkpoint: 51200 items already done, 312 replayed; calls made"
        );
        d.resumed = false;
        d.items_done_before = 0;
        assert_eq!(
            line(d).unwrap(),
            "started over: the interrupted run before saved no checkpoint; 312 replayed;"
        );
    }

    #[test]
    fn the_compact_table_fits_80_columns() {
        let text = render(&typical(), NARROW);
        assert_eq!(
            text,
            "\
stage       type  workers    in   out errors dropped busy   p50   p99 queue
───────────────────────────────────────────────────────────────────────────
read-urls   read        1     0 10000      0       0   3%     -     -     -
parse       map         2 10000 10000      0       0  12% 763µs  12ms 40/64
fetch-pages http       16 10000  9870    130     130  97% 1.2ms  3.4s 64/64
extract     jq          4  9870  9870      0       0  20%  45µs 400µs 12/64
save        write       1  9870  9870      0       0   5% 2.1µs 4.5µs  7/64
pipeline scrape: finished, 130 items failed in 2.80s, 3,571 items/s
errors:
      130× fetch-pages: GET https://example.com/…: N
           first: GET https://example.com/p/1: 404
bottleneck: fetch-pages: 16 workers busy 97%, input queue full 81% of the time;
  raise workers or its rate
"
        );
        assert_fits(&text, 80);
    }

    #[test]
    fn the_compact_table_at_120_columns_spaces_its_columns_out() {
        let text = render(
            &typical(),
            Layout {
                width: 120,
                wide: false,
            },
        );
        assert_eq!(
            text,
            "\
stage        type   workers     in    out  errors  dropped  busy    p50    p99  queue
─────────────────────────────────────────────────────────────────────────────────────
read-urls    read         1      0  10000       0        0    3%      -      -      -
parse        map          2  10000  10000       0        0   12%  763µs   12ms  40/64
fetch-pages  http        16  10000   9870     130      130   97%  1.2ms   3.4s  64/64
extract      jq           4   9870   9870       0        0   20%   45µs  400µs  12/64
save         write        1   9870   9870       0        0    5%  2.1µs  4.5µs   7/64
pipeline scrape: finished, 130 items failed in 2.80s, 3,571 items/s
errors:
      130× fetch-pages: GET https://example.com/…: N
           first: GET https://example.com/p/1: 404
bottleneck: fetch-pages: 16 workers busy 97%, input queue full 81% of the time; raise workers or its rate
"
        );
        assert_fits(&text, 120);
    }

    #[test]
    fn a_narrow_terminal_loses_the_least_important_columns_first() {
        let text = render(
            &typical(),
            Layout {
                width: 60,
                wide: false,
            },
        );
        let header = text.lines().next().unwrap();
        assert_eq!(
            header,
            "stage          in   out errors dropped busy   p99 queue"
        );
        assert_fits(&text, 60);
        // The essentials stay even when nothing else is left.
        let text = render(
            &typical(),
            Layout {
                width: 20,
                wide: false,
            },
        );
        assert_eq!(
            text.lines().next().unwrap(),
            "stage          in   out errors"
        );
    }

    #[test]
    fn the_wide_table_shows_every_column_and_says_waits_are_summed() {
        let text = render(
            &typical(),
            Layout {
                width: 200,
                wide: true,
            },
        );
        assert_eq!(
            text,
            "\
stage        type   workers     in    out  errors  retries  dropped  dead  abandoned  busy    p50    p90    p99    max  queue  full  rate wait*  bp wait*
─────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────
read-urls    read         1      0  10000       0        0        0     0          0    3%      -      -      -      -      -     -           -      9.2s
parse        map          2  10000  10000       0        0        0     0          0   12%  763µs  2.1ms   12ms  150ms  40/64    0%           -         -
fetch-pages  http        16  10000   9870     130       41      130     0          0   97%  1.2ms  240ms   3.4s  12.3s  64/64   81%        9.2s         -
extract      jq           4   9870   9870       0        0        0     0          0   20%   45µs   90µs  400µs    2ms  12/64    0%           -         -
save         write        1   9870   9870       0        0        0     0          0    5%  2.1µs    3µs  4.5µs  900µs   7/64    0%           -         -
* waits are summed over the stage's workers
pipeline scrape: finished, 130 items failed in 2.80s, 3,571 items/s
errors:
      130× fetch-pages: GET https://example.com/…: N
           first: GET https://example.com/p/1: 404
bottleneck: fetch-pages: 16 workers busy 97%, input queue full 81% of the time; raise workers or its rate
"
        );
    }

    #[test]
    fn plural_forms_read_right() {
        let mut one = bare(Status::Partial);
        one.items_failed = 1;
        assert!(
            render(&one, NARROW)
                .contains("pipeline p: finished, 1 item failed in 1.00s, 1.0 items/s\n")
        );
        one.items_failed = 2;
        assert!(render(&one, NARROW).contains("finished, 2 items failed in"));
        let mut left = bare(Status::Ok);
        left.errors_left_out = flow_runner::stats::LeftOut {
            groups: 1,
            errors: 1,
        };
        assert!(render(&left, NARROW).contains("  …and 1 more group (1 error)\n"));
        assert!(render(&bare(Status::Ok), NARROW).contains("pipeline p: ok in 1.00s"));
    }

    #[test]
    fn durations_read_in_their_unit() {
        for (secs, want) in [
            (0.0, "-"),
            (0.000_000_4, "400ns"),
            (0.000_000_999, "999ns"),
            (0.000_001_2, "1.2µs"),
            (0.000_763, "763µs"),
            (0.000_999_7, "1ms"),
            (0.001_234, "1.2ms"),
            (0.009_96, "10ms"),
            (0.045, "45ms"),
            (0.999_6, "1.0s"),
            (3.4, "3.4s"),
            (9.2, "9.2s"),
            (125.0, "2m05s"),
            (3720.0, "1h02m"),
        ] {
            assert_eq!(duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn a_run_that_failed_at_start_is_its_one_error() {
        let mut report = bare(Status::Failed);
        report.failure = Some("stage \"r\": source failed: missing.jsonl: No such file".into());
        report.stages = vec![
            stage("r", "read", "source", 1, 0),
            stage("w", "write", "sink", 1, 0),
        ];
        assert_eq!(
            render(&report, NARROW),
            "flow: stage \"r\": source failed: missing.jsonl: No such file\n"
        );
    }

    #[test]
    fn item_data_in_the_report_is_escaped_and_redacted() {
        let report = Report {
            failure: Some("stage \"x\": item failed: \x1b[2J\x1b[H".into()),
            errors: vec![ErrorReport {
                stage: "fetch".into(),
                message: "GET https://u:hunter2@h/: 404\r\x1b[32mok".into(),
                template: None,
                examples: Vec::new(),
                count: 2,
                sample: "\"\u{9b}31m https://u:hunter2@h/\"".into(),
            }],
            ..bare(Status::Failed)
        };
        let text = render(&report, NARROW);
        assert!(!text.contains('\x1b') && !text.contains('\r'), "{text:?}");
        assert!(
            !text.contains('\u{9b}') && !text.contains("hunter2"),
            "{text:?}"
        );
        assert!(text.contains("stopped by: stage \"x\": item failed: \\x1b[2J\\x1b[H\n"));
        assert!(text.contains("2× fetch: GET https://***@h/: 404\\r\\x1b[32mok\n"));
        assert!(text.contains("e.g. \"\\u{9b}31m https://***@h/\"\n"));
    }

    #[test]
    fn varied_groups_show_their_template_and_the_rest_is_counted() {
        let report = Report {
            errors: vec![ErrorReport {
                stage: "fetch".into(),
                message: "GET https://h/p/1: 404".into(),
                template: Some("GET https://h/…: N".into()),
                examples: Vec::new(),
                count: 900,
                sample: String::new(),
            }],
            errors_left_out: flow_runner::stats::LeftOut {
                groups: 3,
                errors: 7,
            },
            ..bare(Status::Ok)
        };
        let text = render(&report, NARROW);
        assert!(
            text.contains(
                "    900× fetch: GET https://h/…: N\n           first: GET https://h/p/1: 404\n"
            ),
            "{text}"
        );
        assert!(text.contains("  …and 3 more groups (7 errors)\n"), "{text}");
    }
}
