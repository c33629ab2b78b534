//! Progress while a run goes, one line per stage: items done (of the total,
//! with an ETA, for a source that knows its count), items per second over
//! the last few seconds, input queue depth against capacity, errors.
//!
//! On a terminal the lines are redrawn in place (indicatif) and cleared
//! before the final report; log lines go above them through [`LogWriter`].
//! Elsewhere (CI logs, pipes) a plain block of lines is printed every
//! `--progress-interval`, so a log shows that the run is alive.
//!
//! A thread of its own polls [`Monitor::report`] (atomic reads and a short
//! lock per queue): the stages never wait on the display.

use std::collections::VecDeque;
use std::io::{self, IsTerminal as _, Write as _};
use std::sync::Mutex;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flow_runner::Monitor;
use flow_runner::stats::{Report, StageReport};
use indicatif::{HumanCount, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The progress display of one run; [`Progress::finish`] stops it.
pub struct Progress {
    running: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

/// How often the live lines are redrawn on a terminal.
const REDRAW: Duration = Duration::from_millis(200);

/// Items per second are measured over about this much of the recent past.
const RATE_WINDOW: Duration = Duration::from_secs(5);

impl Progress {
    /// Starts showing progress of the run `monitor` reports on: live lines
    /// when stderr is a terminal, a plain block every `interval` otherwise,
    /// nothing when `quiet`.
    pub fn start(monitor: Monitor, interval: Duration, quiet: bool) -> Self {
        if quiet {
            return Progress { running: None };
        }
        let live = io::stderr().is_terminal() && !console_is_dumb();
        let (stop, stopped) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("flow-progress".into())
            .spawn(move || {
                if live {
                    show(monitor, REDRAW, stopped, Live::new());
                } else {
                    show(monitor, interval, stopped, Plain);
                }
            });
        match spawned {
            Ok(thread) => Progress {
                running: Some((stop, thread)),
            },
            Err(e) => {
                tracing::warn!("cannot show progress: {e}");
                Progress { running: None }
            }
        }
    }

    /// Stops the display and clears the live lines, before the final report.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where the lines go: a terminal, redrawn in place, or a log.
trait Display {
    fn show(&mut self, report: &Report, lines: &[StageLine]);
    fn clear(&mut self);
}

/// Polls the monitor every `period` until told to stop or the run ends.
fn show(monitor: Monitor, period: Duration, stop: mpsc::Receiver<()>, mut display: impl Display) {
    let mut rates: Vec<Rate> = Vec::new();
    loop {
        match stop.recv_timeout(period) {
            Err(RecvTimeoutError::Timeout) if !monitor.is_finished() => {}
            _ => break,
        }
        let report = monitor.report();
        let now = Instant::now();
        // Until a second sample, the rate is the average since the start.
        let started = now.checked_sub(Duration::from_secs_f64(report.elapsed_s));
        rates.resize_with(report.stages.len(), || Rate::since(started));
        let lines: Vec<StageLine> = report
            .stages
            .iter()
            .zip(&mut rates)
            .map(|(stage, rate)| StageLine::new(stage, rate, now))
            .collect();
        display.show(&report, &lines);
    }
    display.clear();
}

/// What one stage's line says.
struct StageLine {
    name: String,
    done: u64,
    total: Option<u64>,
    per_s: f64,
    /// Input queue depth and capacity; `None` for a source.
    queue: Option<(usize, usize)>,
    errors: u64,
    finished: bool,
}

impl StageLine {
    fn new(stage: &StageReport, rate: &mut Rate, now: Instant) -> Self {
        // A source's work is what it emitted; any other stage's, the items
        // it has handled.
        let done = if stage.kind == "source" {
            // Over the whole job: a resumed run's earlier items count.
            stage.items_out + stage.resumed
        } else {
            stage.items_in
        };
        StageLine {
            // Names come from the pipeline file, not from items; still,
            // nothing reaches the terminal unescaped.
            name: flow_core::text::sanitize(&stage.name).into_owned(),
            done,
            total: stage.total,
            per_s: rate.update(now, done),
            queue: stage.queue.map(|q| (q.depth, q.capacity)),
            errors: stage.errors,
            finished: stage.done,
        }
    }

    /// Seconds left at the recent rate.
    fn eta(&self) -> Option<Duration> {
        let left = self.total?.saturating_sub(self.done);
        (self.per_s > 0.0).then(|| Duration::from_secs_f64(left as f64 / self.per_s))
    }

    /// The columns after the name: done (of total), rate, then the queue
    /// and errors for a stage with an input.
    fn columns(&self) -> [String; 4] {
        let done = match self.total {
            Some(total) => format!("{}/{}", HumanCount(self.done), HumanCount(total)),
            None => HumanCount(self.done).to_string(),
        };
        let (queue, errors) = match self.queue {
            Some((depth, capacity)) => (
                format!("queue {depth}/{capacity}"),
                format!("errors {}", HumanCount(self.errors)),
            ),
            None => (String::new(), String::new()),
        };
        [done, per_second(self.per_s), queue, errors]
    }

    /// The ending of a source's line: percent done and time left.
    fn outlook(&self) -> String {
        if self.finished {
            return "done".into();
        }
        let Some(total) = self.total else {
            return String::new();
        };
        // Rounded down: 100% only when every item is out.
        let pct = if total == 0 {
            100.0
        } else {
            (self.done as f64 / total as f64 * 100.0).floor()
        };
        match self.eta() {
            Some(eta) if self.done < total => format!("{pct:.0}% eta {}", short_duration(eta)),
            _ => format!("{pct:.0}%"),
        }
    }
}

/// Lays the lines out in aligned columns: the name, then the columns of
/// [`StageLine::columns`] (each display adds the outlook its own way).
fn layout(lines: &[StageLine]) -> Vec<String> {
    let cells: Vec<[String; 4]> = lines.iter().map(StageLine::columns).collect();
    let name_w = lines
        .iter()
        .map(|l| l.name.chars().count())
        .max()
        .unwrap_or(0);
    let width = |i: usize| {
        cells
            .iter()
            .map(|c| c[i].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (done_w, rate_w, queue_w) = (width(0), width(1), width(2));
    lines
        .iter()
        .zip(&cells)
        .map(|(line, [done, rate, queue, errors])| {
            let mut text = format!("{:<name_w$}  {done:>done_w$}  {rate:>rate_w$}", line.name);
            if line.queue.is_some() {
                text += &format!("  {queue:<queue_w$}  {errors}");
            }
            text
        })
        .collect()
}

/// Items per second of one stage over the last [`RATE_WINDOW`].
#[derive(Default)]
struct Rate {
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    /// A rate measured from `started` (at 0 items), when known.
    fn since(started: Option<Instant>) -> Self {
        Rate {
            samples: started.map(|t| (t, 0)).into_iter().collect(),
        }
    }

    fn update(&mut self, now: Instant, done: u64) -> f64 {
        self.samples.push_back((now, done));
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|&(t, _)| now.duration_since(t) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let (t0, n0) = self.samples[0];
        let secs = now.duration_since(t0).as_secs_f64();
        if secs > 0.0 {
            done.saturating_sub(n0) as f64 / secs
        } else {
            0.0
        }
    }
}

/// The live lines on a terminal.
struct Live {
    multi: MultiProgress,
    bars: Vec<ProgressBar>,
    with_total: ProgressStyle,
    without_total: ProgressStyle,
}

/// The live display while it is drawn, for [`above_live_lines`]. Held
/// while a log line or a stage's output is written and while the display
/// is cleared, so a write never redraws cleared lines.
static LIVE: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Runs `write` (to the terminal) with the live lines set aside: they are
/// cleared, the write goes out, they are drawn again below it.
fn above_live_lines<R>(write: impl FnOnce() -> R) -> R {
    let live = lock_live();
    match live.as_ref() {
        Some(multi) => multi.suspend(write),
        None => write(),
    }
}

impl Live {
    fn new() -> Self {
        // Each tick updates every bar and then draws once (`force_draw`):
        // the rate limit only keeps the single updates from drawing.
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(1));
        *lock_live() = Some(multi.clone());
        // Records a `stdout` sink prints to the same terminal go above too.
        if io::stdout().is_terminal() {
            flow_core::terminal::set_guard(Some(std::sync::Arc::new(|write| {
                above_live_lines(write)
            })));
        }
        let style = |template| {
            ProgressStyle::with_template(template)
                .expect("the template is valid")
                .progress_chars("━╸─")
        };
        Live {
            multi,
            bars: Vec::new(),
            with_total: style("{prefix}  {bar:24.cyan/blue} {msg}"),
            without_total: style("{prefix}"),
        }
    }
}

impl Display for Live {
    fn show(&mut self, _report: &Report, lines: &[StageLine]) {
        while self.bars.len() < lines.len() {
            let bar = ProgressBar::hidden().with_style(self.without_total.clone());
            self.bars.push(self.multi.add(bar));
        }
        // Each change may draw (rate-limited): change only what changed.
        for ((line, text), bar) in lines.iter().zip(layout(lines)).zip(&self.bars) {
            let text = match line.total {
                None if line.finished => format!("{text}  done"),
                _ => text,
            };
            if bar.prefix() != text {
                bar.set_prefix(text);
            }
            if let Some(total) = line.total {
                let outlook = line.outlook();
                if bar.message() != outlook {
                    bar.set_message(outlook);
                }
                bar.set_position(line.done.min(total));
                if bar.length() != Some(total) {
                    bar.set_length(total);
                    bar.set_style(self.with_total.clone());
                }
            }
        }
        // Updates between two draws wait for the next one: draw them all
        // now, at once.
        if let Some(last) = self.bars.last() {
            last.force_draw();
        }
    }

    fn clear(&mut self) {
        flow_core::terminal::set_guard(None);
        let mut live = lock_live();
        let _ = self.multi.clear();
        // Finished bars would draw themselves once more: not any longer.
        self.multi.set_draw_target(ProgressDrawTarget::hidden());
        self.bars.clear();
        *live = None;
    }
}

fn lock_live() -> std::sync::MutexGuard<'static, Option<MultiProgress>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Plain blocks of lines for a log: `[12.0s] stage  done  rate  queue …`.
struct Plain;

impl Display for Plain {
    fn show(&mut self, report: &Report, lines: &[StageLine]) {
        let mut block = String::new();
        for (line, text) in lines.iter().zip(layout(lines)) {
            let outlook = line.outlook();
            let sep = if outlook.is_empty() { "" } else { "  " };
            block += &format!("[{:.1}s] {text}{sep}{outlook}\n", report.elapsed_s);
        }
        // One write, so a log line cannot land inside the block.
        let _ = io::stderr().lock().write_all(block.as_bytes());
    }

    fn clear(&mut self) {}
}

/// The writer of log lines (a `tracing_subscriber` `MakeWriter`): stderr,
/// above the live progress lines while they are drawn.
///
/// A text line's fields are made safe by the formatter (see
/// [`crate::logs`]); a JSON line is made safe here, whole: credentials
/// redacted and the control characters JSON leaves raw escaped.
#[derive(Clone, Copy, Default)]
pub struct LogWriter {
    json: bool,
}

impl LogWriter {
    /// For text lines, whose fields the formatter has made safe.
    pub fn text() -> Self {
        LogWriter { json: false }
    }

    /// For JSON lines.
    pub fn json() -> Self {
        LogWriter { json: true }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine {
            line: Vec::new(),
            json: self.json,
        }
    }
}

/// One log line, written whole when flushed or dropped.
pub struct LogLine {
    line: Vec<u8>,
    json: bool,
}

impl io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.line.is_empty() {
            return Ok(());
        }
        let mut line = std::mem::take(&mut self.line);
        if self.json {
            line = safe_json_line(line);
        }
        above_live_lines(|| io::stderr().write_all(&line))
    }
}

/// A JSON log line with credentials redacted and every character a
/// terminal acts on escaped; still the same JSON otherwise.
fn safe_json_line(line: Vec<u8>) -> Vec<u8> {
    use flow_core::text::{escape_json_controls, redact};
    use std::borrow::Cow::Borrowed;
    let changed = {
        let text = String::from_utf8_lossy(&line);
        let redacted = redact(&text);
        match escape_json_controls(&redacted) {
            Borrowed(_) if matches!((&text, &redacted), (Borrowed(_), Borrowed(_))) => None,
            safe => Some(safe.into_owned()),
        }
    };
    changed.map_or(line, String::into_bytes)
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// `TERM=dumb` (or no TERM): no cursor movement, so no live lines.
fn console_is_dumb() -> bool {
    std::env::var("TERM").map_or(true, |t| t == "dumb")
}

/// `0.5/s`, `812/s`, `12.3k/s`, `4.1M/s`.
fn per_second(rate: f64) -> String {
    match rate {
        r if r >= 1e6 => format!("{:.1}M/s", r / 1e6),
        r if r >= 1e3 => format!("{:.1}k/s", r / 1e3),
        r if r >= 10.0 => format!("{r:.0}/s"),
        r => format!("{r:.1}/s"),
    }
}

/// `42s`, `3m05s`, `2h07m`.
fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "<1s".into(),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, done: u64, total: Option<u64>, queue: Option<(usize, usize)>) -> StageLine {
        StageLine {
            name: name.into(),
            done,
            total,
            per_s: 12_345.0,
            queue,
            errors: 2,
            finished: false,
        }
    }

    #[test]
    fn rate_counts_only_the_recent_window() {
        let mut rate = Rate::default();
        let t0 = Instant::now();
        assert_eq!(rate.update(t0, 0), 0.0);
        // 1000/s for 10 s, then 100/s: the rate follows the recent pace.
        let mut done = 0;
        for s in 1..=10 {
            done += 1000;
            rate.update(t0 + Duration::from_secs(s), done);
        }
        for s in 11..=20 {
            done += 100;
            rate.update(t0 + Duration::from_secs(s), done);
        }
        let now = rate.update(t0 + Duration::from_secs(21), done + 100);
        assert!((now - 100.0).abs() < 1.0, "{now}");
    }

    #[test]
    fn lines_align_their_columns_and_sources_show_their_total() {
        let lines = [
            line("numbers", 45_312, Some(100_000), None),
            line("square", 45_100, None, Some((64, 64))),
            line("save", 9, None, Some((3, 64))),
        ];
        let text = layout(&lines);
        assert_eq!(text[0], "numbers  45,312/100,000  12.3k/s");
        assert_eq!(
            text[1],
            "square           45,100  12.3k/s  queue 64/64  errors 2"
        );
        assert_eq!(
            text[2],
            "save                  9  12.3k/s  queue 3/64   errors 2"
        );
        assert_eq!(lines[0].outlook(), "45% eta 4s");
        assert_eq!(lines[1].outlook(), "");
    }

    #[test]
    fn json_log_lines_are_redacted_and_escaped_and_stay_json() {
        let line = "{\"message\":\"item dropped: GET https://u:p@h/ \u{9b}2J\\u001b\"}\n";
        let safe = String::from_utf8(safe_json_line(line.as_bytes().to_vec())).unwrap();
        assert_eq!(
            safe,
            "{\"message\":\"item dropped: GET https://***@h/ \\u009b2J\\u001b\"}\n"
        );
        let parsed: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(
            parsed["message"],
            "item dropped: GET https://***@h/ \u{9b}2J\u{1b}"
        );
        let plain = b"{\"message\":\"ok\"}\n".to_vec();
        assert_eq!(safe_json_line(plain.clone()), plain);
    }

    #[test]
    fn durations_and_rates_read_short() {
        assert_eq!(short_duration(Duration::from_secs(42)), "42s");
        assert_eq!(short_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(short_duration(Duration::from_secs(7620)), "2h07m");
        assert_eq!(per_second(4_100_000.0), "4.1M/s");
        assert_eq!(per_second(812.4), "812/s");
        assert_eq!(per_second(0.5), "0.5/s");
    }
}
