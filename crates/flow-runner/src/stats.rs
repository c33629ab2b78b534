//! What every stage did: live counters while the run goes, and the
//! [`Report`] at the end (the table on stderr and `--stats-json`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Counters of one stage, updated by its workers once per batch and read
/// at any time (progress, metrics) without stopping them.
#[derive(Default)]
pub struct StageCounters {
    pub items_in: AtomicU64,
    pub items_out: AtomicU64,
    pub errors: AtomicU64,
    pub retries: AtomicU64,
    pub dropped: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Items the stage had taken (or a source had read) but never handled:
    /// the run stopped first.
    pub abandoned: AtomicU64,
    pub busy_ns: AtomicU64,
    pub backpressure_ns: AtomicU64,
    pub rate_limit_ns: AtomicU64,
    /// A source's known total, once it says.
    total: KnownTotal,
    latency: Mutex<Option<Histogram<u64>>>,
    /// Counts of the stage's own ([`flow_core::Output::count`]).
    named: Mutex<BTreeMap<&'static str, u64>>,
    errors_seen: Mutex<ErrorTally>,
    log_limit: Mutex<LogLimit>,
}

/// A source's total item count; `u64::MAX` (the default) until it is known,
/// so a fresh counter never claims a total of 0.
struct KnownTotal(AtomicU64);

impl Default for KnownTotal {
    fn default() -> Self {
        KnownTotal(AtomicU64::new(u64::MAX))
    }
}

/// Per-item latency of one worker, merged into its stage when it ends.
pub struct Latency(Histogram<u64>);

/// The precision latencies are kept to: 2 significant figures (within 1%),
/// which is what the report shows (`763µs` reads as 760µs to 770µs). Each
/// worker keeps a histogram; with 3 figures one spanning nanoseconds to
/// seconds takes about 190 KiB, with 2 about 25 KiB, and a stage of 64
/// workers would spend 12 MiB on them.
const LATENCY_FIGURES: u8 = 2;

impl Latency {
    pub fn new() -> Self {
        Latency(Histogram::new(LATENCY_FIGURES).expect("2 significant figures is valid"))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Records `n` items that took `total` together.
    pub fn record_batch(&mut self, total: Duration, n: usize) {
        if n > 0 {
            let each = (total.as_nanos() / n as u128).max(1) as u64;
            // Grows the histogram as needed; only a value beyond u64 fails.
            let _ = self.0.record_n(each, n as u64);
        }
    }
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl StageCounters {
    pub fn new() -> Self {
        StageCounters::default()
    }

    /// Records how many items a source will emit in all.
    pub fn set_total(&self, total: u64) {
        self.total.0.store(total, Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Relaxed);
        }
    }

    pub fn add_time(counter: &AtomicU64, d: Duration) {
        if !d.is_zero() {
            counter.fetch_add(d.as_nanos() as u64, Relaxed);
        }
    }

    /// Adds counts of the stage's own.
    pub fn add_named(&self, counts: Vec<(&'static str, u64)>) {
        if counts.is_empty() {
            return;
        }
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        for (name, n) in counts {
            *named.entry(name).or_default() += n;
        }
    }

    pub fn merge_latency(&self, worker: Latency) {
        let mut h = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        match h.as_mut() {
            Some(h) => h
                .add(&worker.0)
                .expect("histograms with the same bounds merge"),
            None => *h = Some(worker.0),
        }
    }

    /// Counts a failed item's message, keeping one sample item per message.
    pub fn record_error(&self, message: &str, sample: impl FnOnce() -> String) {
        let mut t = self.errors_seen.lock().unwrap_or_else(|e| e.into_inner());
        t.record(message, sample);
    }

    /// True when a failure may be logged now: at most a few lines a second
    /// per stage, so a million failures do not flood the terminal. Returns
    /// how many were held back since the last line.
    pub fn may_log(&self) -> Option<u64> {
        self.log_limit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow()
    }

    /// How many log lines were held back since the last one shown (the
    /// run's end reports them, so none go unmentioned).
    pub fn held_back(&self) -> u64 {
        std::mem::take(
            &mut self
                .log_limit
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .held,
        )
    }
}

const LOGS_PER_SECOND: u32 = 5;

#[derive(Default)]
struct LogLimit {
    window: Option<Instant>,
    in_window: u32,
    held: u64,
}

impl LogLimit {
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .window
            .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1))
        {
            self.window = Some(now);
            self.in_window = 0;
        }
        if self.in_window < LOGS_PER_SECOND {
            self.in_window += 1;
            Some(std::mem::take(&mut self.held))
        } else {
            self.held += 1;
            None
        }
    }
}

/// Error groups kept per stage, with a count, a message and a sample each.
const DISTINCT_ERRORS: usize = 100;
/// Groups beyond those that are still told apart, to say how many there
/// were; past this the count is a lower bound.
const GROUPS_COUNTED: usize = 100_000;
/// The longest template a group is keyed by (the rest is cut off).
const TEMPLATE_LEN: usize = 240;

/// Errors of one stage grouped by the template of their message, so that
/// messages quoting the item (a URL, a line number, a value) fall into one
/// group instead of one each.
#[derive(Default)]
struct ErrorTally {
    groups: HashMap<String, ErrorGroup>,
    /// Errors in groups beyond the first [`DISTINCT_ERRORS`].
    other: u64,
    /// Those groups, told apart by a hash of their template.
    other_groups: std::collections::HashSet<u64>,
}

struct ErrorGroup {
    count: u64,
    /// The group's first distinct messages, as they were (credentials
    /// redacted), at most [`EXAMPLES`].
    messages: Vec<String>,
    sample: String,
}

/// Distinct messages kept per error group.
const EXAMPLES: usize = 5;

impl ErrorTally {
    fn record(&mut self, message: &str, sample: impl FnOnce() -> String) {
        let message = flow_core::text::redact(message);
        let key = template(&message);
        if let Some(g) = self.groups.get_mut(&key) {
            g.count += 1;
            if g.messages.len() < EXAMPLES && !g.messages.iter().any(|m| *m == message) {
                g.messages.push(message.into_owned());
            }
        } else if self.groups.len() < DISTINCT_ERRORS {
            let sample = sample();
            let group = ErrorGroup {
                count: 1,
                messages: vec![message.into_owned()],
                sample: flow_core::text::redact(&sample).into_owned(),
            };
            self.groups.insert(key, group);
        } else {
            self.other += 1;
            if self.other_groups.len() < GROUPS_COUNTED {
                use std::hash::{BuildHasher, BuildHasherDefault};
                let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                    .hash_one(&key);
                self.other_groups.insert(h);
            }
        }
    }
}

/// The shape of an error message, with what varies from item to item taken
/// out: quoted text becomes `"…"`, bracketed values `{…}` and `[…]`, a URL
/// keeps its scheme and host (`https://host/…`), and a word with a digit in
/// it (a number, a line, an id) becomes `N`.
///
/// `http 404 for https://a.example/p/17` and `… /p/18` share the template
/// `http N for https://a.example/…`; `invalid JSON at line 3` and `… line
/// 9` share theirs.
pub(crate) fn template(message: &str) -> String {
    let chars: Vec<char> = message.chars().collect();
    let mut out = String::with_capacity(message.len().min(TEMPLATE_LEN));
    let mut i = 0;
    while i < chars.len() && out.len() < TEMPLATE_LEN {
        let c = chars[i];
        match c {
            '"' | '`' => {
                i = skip_quoted(&chars, i);
                out.push(c);
                out.push('…');
                out.push(c);
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                match skip_bracketed(&chars, i) {
                    Some(end) => {
                        i = end;
                        out.push(c);
                        out.push('…');
                        out.push(close);
                    }
                    None => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            c if c.is_alphanumeric() || c == '_' => {
                let start = i;
                while i < chars.len() && is_word(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if chars[i..].starts_with(&[':', '/', '/']) {
                    // scheme://host[:port] stays; the rest of the URL goes.
                    out.push_str(&word);
                    out.push_str("://");
                    i += 3;
                    // The URL runs to the next space, less the punctuation
                    // of the sentence around it.
                    let mut end = i;
                    while end < chars.len() && !chars[end].is_whitespace() {
                        end += 1;
                    }
                    while end > i
                        && matches!(chars[end - 1], ':' | ',' | '.' | ';' | ')' | '\'' | '"')
                    {
                        end -= 1;
                    }
                    while i < end && !matches!(chars[i], '/' | '?' | '#') {
                        out.push(chars[i]);
                        i += 1;
                    }
                    if i < end {
                        out.push_str("/…");
                        i = end;
                    }
                } else if word.chars().any(|c| c.is_ascii_digit()) {
                    out.push('N');
                } else {
                    out.push_str(&word);
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// A character of a word that may be an id: `a3f-9c_2.5`.
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// The index after the quoted text that starts at `start` (backslash
/// escapes honoured), or the end of the message when it is not closed.
fn skip_quoted(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    chars.len()
}

/// The index after the balanced brackets that open at `start`, quotes
/// inside honoured; None when they are not closed.
fn skip_bracketed(chars: &[char], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            '"' => {
                i = skip_quoted(chars, i);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// A stage's per-item latency as cumulative counts under fixed bounds:
/// the buckets of a Prometheus histogram.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencyBuckets {
    /// Items that took at most each bound, in the order of the bounds.
    pub cumulative: Vec<u64>,
    /// Items recorded in all.
    pub count: u64,
    /// Their latencies added up (to the histogram's precision).
    pub sum: Duration,
}

impl StageCounters {
    /// The latencies shared so far (workers share theirs about once a
    /// second), counted under each of `bounds` (ascending).
    pub fn latency_buckets(&self, bounds: &[Duration]) -> LatencyBuckets {
        let mut out = LatencyBuckets {
            cumulative: vec![0; bounds.len()],
            ..LatencyBuckets::default()
        };
        let h = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let Some(h) = h.as_ref() else { return out };
        let mut sum_ns: u128 = 0;
        for v in h.iter_recorded() {
            let (ns, n) = (v.value_iterated_to(), v.count_at_value());
            sum_ns += u128::from(ns) * u128::from(n);
            out.count += n;
            for (bound, c) in bounds.iter().zip(&mut out.cumulative) {
                if u128::from(ns) <= bound.as_nanos() {
                    *c += n;
                }
            }
        }
        out.sum = Duration::from_nanos(sum_ns.min(u128::from(u64::MAX)) as u64);
        out
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A live report of a run still going (progress, dashboard, metrics).
    Running,
    /// Every item was handled.
    Ok,
    /// The run finished, but some items failed (dropped or dead-lettered):
    /// exit code 3.
    Partial,
    Failed,
    Interrupted,
}

/// The end-of-run report; its JSON form is `--stats-json`, whose field names
/// are a contract (add fields, never rename them).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub pipeline: String,
    pub status: Status,
    /// The exit code `flow run` ends with for this outcome (see
    /// [`Report::exit_code`]); `null` while the run goes.
    #[serde(rename = "exit_code")]
    pub exit: Option<i32>,
    /// Items that failed in the whole run: dropped or dead-lettered, summed
    /// over the stages.
    pub items_failed: u64,
    /// Why a failed run stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub elapsed_s: f64,
    /// Items emitted by the sources, per second of the run.
    pub items_per_s: f64,
    pub stages: Vec<StageReport>,
    /// The most frequent error groups, most frequent first.
    pub errors: Vec<ErrorReport>,
    /// Error groups beyond those listed, and the errors in them.
    #[serde(skip_serializing_if = "LeftOut::is_empty")]
    pub errors_left_out: LeftOut,
    pub bottleneck: Option<Bottleneck>,
    /// A durable run (`--state`): what earlier runs did, and the
    /// checkpoints this one saved. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durable: Option<DurableReport>,
}

/// A durable run's part of the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DurableReport {
    /// Whether this run resumed from a checkpoint.
    pub resumed: bool,
    /// Items the sources emitted and the pipeline handled in earlier runs.
    pub items_done_before: u64,
    /// The sources' items over every run: earlier runs' and this one's.
    pub items_total: u64,
    /// Checkpoints this run saved.
    pub checkpoints: u64,
    /// Items the interrupted run before had emitted after its last
    /// checkpoint, handled again by this one: effects other than files
    /// (`http`, `exec`, `stdout`) may have happened twice for at most these.
    pub replayed: u64,
    /// The same, over every resumed run of this job (runs killed before
    /// they could report included).
    pub replayed_total: u64,
    /// Calls that stages with effects (`http`, `exec`, `files`, plugins'
    /// processors) had made after the last checkpoint of the interrupted
    /// run before, by stage: this run makes them again. At most one per
    /// worker of these was cut short by the interruption and never
    /// reached its destination.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub calls_replayed: BTreeMap<String, u64>,
    /// The same, summed over every resumed run of this job.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub calls_replayed_total: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StageReport {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub kind: String,
    pub workers: usize,
    pub items_in: u64,
    pub items_out: u64,
    pub errors: u64,
    pub retries: u64,
    pub dropped: u64,
    pub dead_lettered: u64,
    /// Items that reached the stage (its queue, its workers; for a source,
    /// read but not yet sent) and were never handled because the run
    /// stopped: a drain cut short, a failure. They are not done; a durable
    /// run or another consumer does them again.
    pub abandoned: u64,
    pub busy_pct: f64,
    pub latency_ms: LatencyReport,
    /// The input queue; `null` for a source, which has none.
    pub queue: Option<QueueReport>,
    pub wait_s: WaitReport,
    /// The stages this one reads from.
    pub inputs: Vec<String>,
    /// Where its failed items go: `drop`, `fail` or a stage's name.
    pub on_error: String,
    /// For a source that knows it: how many items it will emit in all.
    pub total: Option<u64>,
    /// Whether the stage has finished (every worker ended).
    pub done: bool,
    /// For a stage with named ports: items given to each, by port name
    /// (`{"valid": 10, "_unmatched": 2}`); absent otherwise.
    #[serde(serialize_with = "ports_as_map", skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<(String, u64)>,
    /// For a source of a resumed durable run (`--state`): the items earlier
    /// runs did; `items_out` counts this run's. Absent when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub resumed: u64,
    /// Counts of the stage's own (a `reduce`'s `evicted`); absent when
    /// it has none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Port counts as a JSON object, in declared order.
fn ports_as_map<S: serde::Serializer>(ports: &[(String, u64)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(ports.len()))?;
    for (name, n) in ports {
        map.serialize_entry(name, n)?;
    }
    map.end()
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct LatencyReport {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct QueueReport {
    pub capacity: usize,
    pub peak: usize,
    pub full_pct: f64,
    /// Items in the queue now (live reports; 0 once the run has ended).
    pub depth: usize,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct WaitReport {
    pub rate_limit: f64,
    pub backpressure: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ErrorReport {
    pub stage: String,
    /// The first message of the group, as it was.
    pub message: String,
    /// When the messages of the group differed: their shared shape, with
    /// what varied shown as `N`, `"…"`, `{…}` or a URL's `/…`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Then: the group's first distinct messages (a few), the first one
    /// included.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
    pub count: u64,
    /// One item that failed with this message, as JSON (shortened).
    pub sample: String,
}

/// Error groups not listed in a report, and how many errors they hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LeftOut {
    pub groups: u64,
    pub errors: u64,
}

impl LeftOut {
    pub fn is_empty(&self) -> bool {
        self.errors == 0
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Bottleneck {
    pub stage: String,
    pub reason: String,
}

impl Report {
    /// The process exit code of this outcome.
    pub fn exit_code(&self) -> i32 {
        status_exit_code(self.status)
    }

    /// Changes the outcome (a run given up on ends as interrupted), with
    /// its exit code.
    pub fn set_status(&mut self, status: Status) {
        self.status = status;
        self.exit = (status != Status::Running).then(|| status_exit_code(status));
    }
}

/// The process exit code of an outcome: 0 ok (and running), 1 failed, 3
/// some items failed, 130 interrupted.
pub fn status_exit_code(status: Status) -> i32 {
    match status {
        Status::Running | Status::Ok => 0,
        Status::Failed => 1,
        Status::Partial => 3,
        Status::Interrupted => 130,
    }
}

/// The identity and settings of a stage, for its report.
pub struct StageInfo<'a> {
    pub name: &'a str,
    /// Items abandoned in its input queue.
    pub abandoned: u64,
    pub type_name: &'a str,
    pub kind: flow_core::StageKind,
    pub workers: usize,
    pub queue: Option<crate::queue::QueueStats>,
    pub inputs: Vec<String>,
    pub on_error: String,
    pub done: bool,
    /// Items given to each named port, in declared order.
    pub outputs: Vec<(String, u64)>,
    /// For a source of a resumed durable run: items done by earlier runs.
    pub resumed: u64,
}

pub(crate) fn stage_report(
    info: StageInfo<'_>,
    c: &StageCounters,
    elapsed: Duration,
) -> StageReport {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let pct = |d: f64| (d / secs * 100.0 * 10.0).round() / 10.0;
    let ns = |a: &AtomicU64| Duration::from_nanos(a.load(Relaxed)).as_secs_f64();
    let latency = c
        .latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .filter(|h| !h.is_empty())
        .map(|h| {
            let ms = |v: u64| v as f64 / 1e6;
            LatencyReport {
                p50: ms(h.value_at_quantile(0.5)),
                p90: ms(h.value_at_quantile(0.9)),
                p99: ms(h.value_at_quantile(0.99)),
                max: ms(h.max()),
            }
        })
        .unwrap_or_default();
    StageReport {
        name: info.name.to_string(),
        type_name: info.type_name.to_string(),
        kind: info.kind.to_string(),
        workers: info.workers,
        items_in: c.items_in.load(Relaxed),
        items_out: c.items_out.load(Relaxed),
        errors: c.errors.load(Relaxed),
        retries: c.retries.load(Relaxed),
        dropped: c.dropped.load(Relaxed),
        dead_lettered: c.dead_lettered.load(Relaxed),
        abandoned: c.abandoned.load(Relaxed) + info.abandoned,
        busy_pct: pct(ns(&c.busy_ns) / info.workers as f64).min(100.0),
        latency_ms: latency,
        queue: info.queue.map(|q| QueueReport {
            capacity: q.capacity,
            peak: q.peak,
            full_pct: pct(q.full_for.as_secs_f64()).min(100.0),
            depth: q.depth,
        }),
        wait_s: WaitReport {
            rate_limit: round3(ns(&c.rate_limit_ns)),
            backpressure: round3(ns(&c.backpressure_ns)),
        },
        inputs: info.inputs,
        on_error: info.on_error,
        total: match c.total.0.load(Relaxed) {
            u64::MAX => None,
            n => Some(n),
        },
        done: info.done,
        outputs: info.outputs,
        resumed: info.resumed,
        counts: c
            .named
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
    }
}

/// A stage's error groups, and how many more groups (and errors in them)
/// it saw beyond those kept.
pub(crate) fn error_reports(stage: &str, c: &StageCounters) -> (Vec<ErrorReport>, LeftOut) {
    let t = c.errors_seen.lock().unwrap_or_else(|e| e.into_inner());
    let groups = t
        .groups
        .iter()
        .map(|(template, g)| ErrorReport {
            stage: stage.to_string(),
            message: g.messages[0].clone(),
            template: (g.messages.len() > 1).then(|| template.clone()),
            examples: if g.messages.len() > 1 {
                g.messages.clone()
            } else {
                Vec::new()
            },
            count: g.count,
            sample: g.sample.clone(),
        })
        .collect();
    let left_out = LeftOut {
        groups: t.other_groups.len() as u64,
        errors: t.other,
    };
    (groups, left_out)
}

/// The stage that held the run back, and why, reasoned from how busy each
/// stage's workers were, how often its input queue was full, how long it
/// waited on its rate limit and on the stages after it.
///
/// * A stage whose workers spent a large share of the run waiting for
///   rate-limit tokens is held back by its rate (a source with a `rate`
///   too: it sets the pace).
/// * A source that spent most of the run making items (an `interval`, a
///   slow input) or waiting on its rate, and little waiting on the stages
///   after it, sets the pace when no later stage's input queue was full
///   for long: those stages kept up, however busy they were.
/// * Otherwise the stage whose workers were busiest: a stage upstream of it
///   is busy less, since its workers wait on backpressure instead (and its
///   queue may be full too: that is the slow stage's doing, not its own).
/// * If no stage was busy more than half the time, the sources set the pace.
pub fn bottleneck(stages: &[StageReport], elapsed_s: f64) -> Option<Bottleneck> {
    let worked: Vec<&StageReport> = stages
        .iter()
        .filter(|s| s.items_in + s.items_out > 0)
        .collect();
    let share = |wait: f64, s: &StageReport| wait / (s.workers as f64 * elapsed_s.max(1e-9));
    let limited = |s: &StageReport| share(s.wait_s.rate_limit, s);
    if let Some(s) = worked
        .iter()
        .filter(|s| limited(s) >= 0.3)
        .max_by(|a, b| limited(a).total_cmp(&limited(b)))
    {
        let waited = (limited(s) * 100.0).min(100.0);
        let reason = match s.queue {
            None => format!(
                "the source's rate sets the pace: it waited on its rate limit {waited:.0}% of the time; raise its rate"
            ),
            Some(q) => format!(
                "waited on its rate limit {waited:.0}% of the time, input queue full {:.0}% of the time; raise its rate",
                q.full_pct
            ),
        };
        return Some(Bottleneck {
            stage: s.name.clone(),
            reason,
        });
    }
    let busiest = worked.iter().filter(|s| s.kind != "source").max_by(|a, b| {
        // Queue fullness only breaks ties between equally busy stages.
        let score = |s: &StageReport| s.busy_pct + s.queue.map_or(0.0, |q| q.full_pct) / 1000.0;
        score(a).total_cmp(&score(b))
    });
    // A source pacing the run: busy making items (or waiting on its rate)
    // most of the time, hardly ever held back by the stages after it,
    // whose queues were never full for long.
    let pacing = |s: &StageReport| {
        let making = s.busy_pct / 100.0 + limited(s);
        (s.kind == "source" && making >= 0.5 && share(s.wait_s.backpressure, s) < 0.1)
            .then_some(making)
    };
    let kept_up = worked
        .iter()
        .filter(|s| s.kind != "source")
        .all(|s| s.queue.is_none_or(|q| q.full_pct < 10.0));
    if kept_up
        && let Some(source) = worked
            .iter()
            .filter(|s| pacing(s).is_some())
            .max_by(|a, b| {
                pacing(a)
                    .unwrap_or(0.0)
                    .total_cmp(&pacing(b).unwrap_or(0.0))
            })
    {
        let busiest_pct = busiest.map_or(0.0, |s| s.busy_pct);
        return Some(Bottleneck {
            stage: source.name.clone(),
            reason: format!(
                "the source sets the pace (busy making items {:.0}% of the time: an interval, a rate or a slow input); the stages after it kept up (busiest {busiest_pct:.0}%, no input queue full)",
                (pacing(source).unwrap_or(0.0) * 100.0).min(100.0)
            ),
        });
    }
    if let Some(s) = busiest.filter(|s| s.busy_pct >= 50.0) {
        let full = s.queue.map_or(0.0, |q| q.full_pct);
        let workers = match s.workers {
            1 => "1 worker".to_string(),
            n => format!("{n} workers"),
        };
        let knob = if s.wait_s.rate_limit > 0.0 {
            "raise workers or its rate"
        } else {
            "raise workers"
        };
        return Some(Bottleneck {
            stage: s.name.clone(),
            reason: format!(
                "{workers} busy {:.0}%, input queue full {full:.0}% of the time; {knob}",
                s.busy_pct
            ),
        });
    }
    // No stage was saturated: the sources set the pace.
    let source = worked
        .iter()
        .filter(|s| s.kind == "source")
        .max_by(|a, b| a.busy_pct.total_cmp(&b.busy_pct))?;
    let busiest_pct = busiest.map_or(0.0, |s| s.busy_pct);
    Some(Bottleneck {
        stage: source.name.clone(),
        reason: format!(
            "the source sets the pace (busy {:.0}%); no later stage was busy more than {busiest_pct:.0}% of the time",
            source.busy_pct
        ),
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod bottleneck_tests {
    use super::*;

    fn stage(name: &str, kind: &str, workers: usize, busy_pct: f64) -> StageReport {
        StageReport {
            name: name.into(),
            type_name: "t".into(),
            kind: kind.into(),
            workers,
            items_in: 100,
            items_out: 100,
            errors: 0,
            retries: 0,
            dropped: 0,
            dead_lettered: 0,
            abandoned: 0,
            busy_pct,
            latency_ms: LatencyReport::default(),
            queue: (kind != "source").then_some(QueueReport {
                capacity: 64,
                peak: 1,
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
            counts: BTreeMap::new(),
        }
    }

    #[test]
    fn a_source_on_an_interval_sets_the_pace_of_a_busy_stage_that_keeps_up() {
        // `generate` with an interval: busy (asleep in its call) 98% of
        // the run, never waiting on `work`, busy 80% but never behind.
        let stages = [
            stage("tick", "source", 1, 98.0),
            stage("work", "processor", 1, 80.0),
        ];
        let b = bottleneck(&stages, 10.0).unwrap();
        assert_eq!(b.stage, "tick", "{b:?}");
        assert!(
            b.reason
                .starts_with("the source sets the pace (busy making items 98%"),
            "{b:?}"
        );
    }

    #[test]
    fn a_rate_limited_source_sets_the_pace() {
        let mut tick = stage("tick", "source", 1, 2.0);
        tick.wait_s.rate_limit = 9.0;
        let stages = [tick, stage("work", "processor", 1, 70.0)];
        let b = bottleneck(&stages, 10.0).unwrap();
        assert_eq!(b.stage, "tick", "{b:?}");
        assert_eq!(
            b.reason,
            "the source's rate sets the pace: it waited on its rate limit 90% of the time; raise its rate"
        );
    }

    #[test]
    fn a_stage_behind_its_source_is_the_bottleneck() {
        // The source waits on backpressure and the queue is full: `work`.
        let mut read = stage("read", "source", 1, 60.0);
        read.wait_s.backpressure = 4.0;
        let mut work = stage("work", "processor", 1, 95.0);
        work.queue = work.queue.map(|q| QueueReport {
            full_pct: 80.0,
            ..q
        });
        let b = bottleneck(&[read, work], 10.0).unwrap();
        assert_eq!(b.stage, "work", "{b:?}");
        assert!(b.reason.ends_with("raise workers"), "{b:?}");
    }
}

#[cfg(test)]
mod template_tests {
    use super::*;

    #[test]
    fn what_varies_per_item_leaves_the_template() {
        for (message, want) in [
            (
                "http 404 for https://a.example/p/17?x=1",
                "http N for https://a.example/…",
            ),
            (
                "deep.jsonl:2: invalid JSON: nested deeper than 256 levels",
                "deep.jsonl:N: invalid JSON: nested deeper than N levels",
            ),
            (
                r#"cannot index "x\"y" with {"a":[1,{"b":2}]}"#,
                r#"cannot index "…" with {…}"#,
            ),
            ("id a3f9-77c2 not found", "id N not found"),
            ("exit status 1", "exit status N"),
            ("plain words stay", "plain words stay"),
            ("unclosed \"quote", "unclosed \"…\""),
            ("unbalanced [ bracket", "unbalanced [ bracket"),
            ("", ""),
        ] {
            assert_eq!(template(message), want, "{message}");
        }
    }

    #[test]
    fn templates_are_bounded() {
        let long = "word ".repeat(10_000);
        assert!(template(&long).len() <= TEMPLATE_LEN + 8);
    }

    #[test]
    fn messages_quoting_items_fall_into_one_group() {
        let c = StageCounters::default();
        for i in 0..900 {
            c.record_error(&format!("GET https://u:pw@h/item/{i}: 404"), || {
                format!("{{\"i\":{i}}}")
            });
        }
        c.record_error("other failure", String::new);
        let (groups, left) = error_reports("fetch", &c);
        assert_eq!(left, LeftOut::default());
        let big = groups
            .iter()
            .find(|g| g.count == 900)
            .expect("one group of 900");
        assert_eq!(big.message, "GET https://***@h/item/0: 404");
        assert_eq!(big.template.as_deref(), Some("GET https://***@h/…: N"));
        assert_eq!(big.sample, "{\"i\":0}");
        assert_eq!(big.examples.len(), EXAMPLES);
        assert_eq!(big.examples[1], "GET https://***@h/item/1: 404");
        assert_eq!(groups.len(), 2);
    }

    #[test]
    fn groups_beyond_the_kept_ones_are_counted() {
        let c = StageCounters::default();
        for i in 0..DISTINCT_ERRORS + 5 {
            let word: String = (0..4)
                .map(|k| (b'a' + ((i >> (k * 4)) & 15) as u8) as char)
                .collect();
            c.record_error(&format!("failure {word}"), String::new);
            c.record_error(&format!("failure {word}"), String::new);
        }
        let (groups, left) = error_reports("s", &c);
        assert_eq!(groups.len(), DISTINCT_ERRORS);
        assert_eq!(
            left,
            LeftOut {
                groups: 5,
                errors: 10
            }
        );
    }
}
