//! What every stage did: live counters while the run goes, and the
//! [`Report`] at the end (the table on stderr and `--stats-json`).

use std::collections::HashMap;
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

impl Latency {
    pub fn new() -> Self {
        Latency(Histogram::new(3).expect("3 significant figures is valid"))
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

const DISTINCT_ERRORS: usize = 100;

#[derive(Default)]
struct ErrorTally {
    by_message: HashMap<String, (u64, String)>,
    other: u64,
}

impl ErrorTally {
    fn record(&mut self, message: &str, sample: impl FnOnce() -> String) {
        if let Some((count, _)) = self.by_message.get_mut(message) {
            *count += 1;
        } else if self.by_message.len() < DISTINCT_ERRORS {
            self.by_message.insert(message.to_string(), (1, sample()));
        } else {
            self.other += 1;
        }
    }
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
    Ok,
    Failed,
    Interrupted,
}

/// The end-of-run report; its JSON form is `--stats-json`, whose field names
/// are a contract (add fields, never rename them).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub pipeline: String,
    pub status: Status,
    /// Why a failed run stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub elapsed_s: f64,
    /// Items emitted by the sources, per second of the run.
    pub items_per_s: f64,
    pub stages: Vec<StageReport>,
    /// The most frequent error messages, most frequent first.
    pub errors: Vec<ErrorReport>,
    pub bottleneck: Option<Bottleneck>,
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
    pub message: String,
    pub count: u64,
    /// One item that failed with this message, as JSON (shortened).
    pub sample: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Bottleneck {
    pub stage: String,
    pub reason: String,
}

impl Report {
    /// The process exit code DESIGN.md gives this outcome.
    pub fn exit_code(&self) -> i32 {
        match self.status {
            Status::Running => 0,
            Status::Failed => 1,
            Status::Interrupted => 130,
            Status::Ok if self.stages.iter().any(|s| s.dropped + s.dead_lettered > 0) => 3,
            Status::Ok => 0,
        }
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
    }
}

pub(crate) fn error_reports(stage: &str, c: &StageCounters) -> Vec<ErrorReport> {
    let t = c.errors_seen.lock().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<ErrorReport> = t
        .by_message
        .iter()
        .map(|(message, (count, sample))| ErrorReport {
            stage: stage.to_string(),
            message: message.clone(),
            count: *count,
            sample: sample.clone(),
        })
        .collect();
    if t.other > 0 {
        out.push(ErrorReport {
            stage: stage.to_string(),
            message: format!("(other messages, beyond the first {DISTINCT_ERRORS})"),
            count: t.other,
            sample: String::new(),
        });
    }
    out
}

/// The stage that held the run back, and why, reasoned from how busy each
/// stage's workers were, how often its input queue was full, how long it
/// waited on its rate limit and on the stages after it.
///
/// * A stage whose workers spent a large share of the run waiting for
///   rate-limit tokens is held back by its rate.
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
        let full = s.queue.map_or(0.0, |q| q.full_pct);
        return Some(Bottleneck {
            stage: s.name.clone(),
            reason: format!(
                "waited on its rate limit {:.0}% of the time, input queue full {full:.0}% of the time; raise its rate",
                (limited(s) * 100.0).min(100.0)
            ),
        });
    }
    let busiest = worked.iter().filter(|s| s.kind != "source").max_by(|a, b| {
        // Queue fullness only breaks ties between equally busy stages.
        let score = |s: &StageReport| s.busy_pct + s.queue.map_or(0.0, |q| q.full_pct) / 1000.0;
        score(a).total_cmp(&score(b))
    });
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
