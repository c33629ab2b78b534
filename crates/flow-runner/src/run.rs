//! Running a [`Plan`]: one task per source, `workers` tasks per processor
//! or sink, bounded queues between them, and orderly completion.
//!
//! The path of an item: a source task calls `Source::next`, which fills an
//! `Output`; the task pushes the batch into the input queue of every
//! consumer (a copy each for fan-out; the push waits while a queue is full).
//! A worker of the next stage takes up to a batch (a `Transform`) or one
//! item (a `Processor`), calls the stage once per item with the lineage
//! set, and pushes what was emitted on in turn. Failed items go to
//! `on_error`. When every producer of a queue has closed and it is drained,
//! the workers call `finish`, the last one closes the stage's outputs, and
//! so the end travels down the graph until every sink has flushed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use flow_core::value::{int, object, string, to_json};
use flow_core::{Item, Next, Output, Source, Stage, StageKind};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::control::FlowControl;
use crate::plan::{OnError, Plan};
use crate::queue::Queue;
use crate::stats::{self, Report, StageCounters, StageInfo, Status};
use crate::worker::{self, Factory, Failed, Reorder};

/// Error groups a report lists; the rest are counted in `errors_left_out`.
const REPORTED_ERRORS: usize = 10;

/// Lets the caller stop a run from outside (Ctrl-C, a drain that takes too
/// long). Cheap to clone; every method may be called from any thread, also
/// while every worker of the runtime is busy.
#[derive(Clone, Default)]
pub struct RunControl {
    inner: Arc<Control>,
}

impl RunControl {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops the sources at once: what they had read but not yet sent is
    /// abandoned, everything already in the pipeline drains through it, the
    /// sinks flush, and the run ends as interrupted.
    pub fn interrupt(&self) {
        self.inner.interrupted.store(true, Ordering::SeqCst);
        self.inner.stop.raise();
    }

    /// Stops everything now: the sources, every queue (its items are
    /// abandoned and counted), every call in flight (a jq evaluation stops
    /// at its next step, an async call is dropped, a retry or rate-limit
    /// wait ends); the workers flush what they wrote and end. For a drain
    /// that must not wait any longer.
    pub fn abandon(&self) {
        self.inner.interrupted.store(true, Ordering::SeqCst);
        if let Some(shared) = self.inner.shared.get().and_then(Weak::upgrade) {
            shared.abandon();
        } else {
            self.inner.stop.raise();
            self.inner.cancel.store(true, Ordering::SeqCst);
            self.inner.abandon.raise();
        }
    }
}

/// What a [`RunControl`] and the run share.
#[derive(Default)]
struct Control {
    /// The sources stop.
    stop: Flag,
    /// Everything stops: nothing more is handled.
    abandon: Flag,
    /// The same as `abandon`, for jq evaluations (`interrupt::Limits`).
    cancel: Arc<CancelFlag>,
    interrupted: AtomicBool,
    /// The run, once started, so `abandon` can halt its queues.
    shared: std::sync::OnceLock<Weak<Shared>>,
}

/// The flag that cancels jq evaluations, alone on its cache line: every
/// evaluation step of every worker reads it, so no counter written by
/// another thread may share the line (each write would make those reads
/// miss).
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct CancelFlag(AtomicBool);

impl std::ops::Deref for CancelFlag {
    type Target = AtomicBool;

    fn deref(&self) -> &AtomicBool {
        &self.0
    }
}

/// A one-way switch that tasks can wait on.
#[derive(Default)]
struct Flag {
    raised: AtomicBool,
    notify: Notify,
}

impl Flag {
    fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.is_raised() {
                return;
            }
            notified.await;
        }
    }
}

/// A run in progress.
pub struct Running {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
    task_stage: Vec<(tokio::task::Id, usize)>,
}

/// A stage as the executor sees it.
pub(crate) struct StageRun {
    pub(crate) name: String,
    type_name: String,
    kind: StageKind,
    workers: usize,
    on_error: OnError,
    pub(crate) control: FlowControl,
    /// For `ordered: true`: holds outputs back until earlier ones went.
    pub(crate) reorder: Option<Arc<Reorder>>,
    pub(crate) input: Option<Arc<Queue>>,
    /// The input queues of the stages that read from this one.
    outputs: Vec<Arc<Queue>>,
    dead_letter: Option<Arc<Queue>>,
    /// Workers (or the source task) still running; the last one closes
    /// the stage's outputs.
    live: AtomicUsize,
    pub(crate) counters: StageCounters,
    /// For reports: the names of its inputs and its `on_error`.
    inputs: Vec<String>,
    on_error_name: String,
}

pub(crate) struct Shared {
    /// Set once every task has ended: reports are final from then on.
    finished: AtomicBool,
    pipeline: String,
    pub(crate) stages: Vec<StageRun>,
    ctl: Arc<Control>,
    failure: Mutex<Option<String>>,
    started: Instant,
}

/// Reports on a run while it goes: the same [`Report`] as at the end,
/// with status `running` until every task has ended.
#[derive(Clone)]
pub struct Monitor(Arc<Shared>);

impl Monitor {
    /// The report as of now.
    pub fn report(&self) -> Report {
        self.0.report()
    }

    /// Whether every task of the run has ended.
    pub fn is_finished(&self) -> bool {
        self.0.finished.load(Ordering::SeqCst)
    }

    /// Each stage's latency histogram under `bounds` (ascending), in the
    /// order of the report's stages.
    pub fn latency_buckets(&self, bounds: &[Duration]) -> Vec<stats::LatencyBuckets> {
        self.0
            .stages
            .iter()
            .map(|s| s.counters.latency_buckets(bounds))
            .collect()
    }
}

impl Running {
    /// Wires the queues and spawns every task. Call from within a tokio
    /// runtime.
    pub fn start(plan: Plan, control: RunControl) -> Running {
        crate::panics::install_hook();
        let n = plan.stages.len();
        // Producers of each queue: distinct stages feeding it, by input or
        // by dead-letter route.
        let feeders: Vec<Vec<usize>> = (0..n).map(|i| plan.producers(i).to_vec()).collect();
        let queues: Vec<Option<Arc<Queue>>> = plan
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (s.kind != StageKind::Source).then(|| {
                    Arc::new(Queue::with_config(
                        &s.name,
                        s.queue.clone(),
                        feeders[i].len(),
                    ))
                })
            })
            .collect();
        let consumers: Vec<Vec<usize>> = (0..n).map(|i| plan.consumers(i).to_vec()).collect();
        let names: Vec<String> = plan.stages.iter().map(|s| s.name.clone()).collect();
        let mut factories = Vec::new();
        let mut stages = Vec::new();
        for (i, s) in plan.stages.into_iter().enumerate() {
            let dead_letter = match s.on_error {
                OnError::DeadLetter(k) => queues[k].clone(),
                _ => None,
            };
            // Tickets waiting for an earlier one: enough to keep every
            // worker busy past one slow item, and no more.
            let reorder = (s.control.ordered && s.kind != StageKind::Source)
                .then(|| Reorder::new((2 * s.workers).max(s.queue.capacity)));
            let on_error_name = match s.on_error {
                OnError::Drop => "drop".to_string(),
                OnError::Fail => "fail".to_string(),
                OnError::DeadLetter(k) => names[k].clone(),
            };
            stages.push(StageRun {
                inputs: s.inputs.iter().map(|&k| names[k].clone()).collect(),
                on_error_name,
                name: s.name,
                type_name: s.type_name,
                kind: s.kind,
                workers: s.workers,
                on_error: s.on_error,
                control: s.control,
                reorder,
                input: queues[i].clone(),
                outputs: consumers[i]
                    .iter()
                    .filter_map(|&k| queues[k].clone())
                    .collect(),
                dead_letter,
                live: AtomicUsize::new(if s.kind == StageKind::Source {
                    1
                } else {
                    s.workers
                }),
                counters: StageCounters::new(),
            });
            factories.push(s.stage);
        }
        let shared = Arc::new(Shared {
            finished: AtomicBool::new(false),
            pipeline: plan.name,
            stages,
            ctl: control.inner.clone(),
            failure: Mutex::new(None),
            started: Instant::now(),
        });
        let _ = control.inner.shared.set(Arc::downgrade(&shared));
        if control.inner.abandon.is_raised() {
            shared.abandon();
        }
        let mut tasks = JoinSet::new();
        let mut task_stage = Vec::new();
        for (i, stage) in factories.into_iter().enumerate() {
            match stage {
                Stage::Source(source) => {
                    let shared = shared.clone();
                    let h = tasks.spawn(async move { shared.run_source(i, source).await });
                    task_stage.push((h.id(), i));
                }
                Stage::Workers(factory) => {
                    let factory: Arc<Factory> = Arc::from(factory);
                    for w in 0..shared.stages[i].workers {
                        let (shared, factory) = (shared.clone(), factory.clone());
                        let h =
                            tasks.spawn(async move { run_worker(shared, i, w, &*factory).await });
                        task_stage.push((h.id(), i));
                    }
                }
            }
        }
        Running {
            shared,
            tasks,
            task_stage,
        }
    }

    /// A handle that reports on the run while it goes (progress,
    /// dashboard, metrics); it outlives [`Running::finish`].
    pub fn monitor(&self) -> Monitor {
        Monitor(self.shared.clone())
    }

    /// Waits for every task and reports the run.
    pub async fn finish(mut self) -> Report {
        while let Some(done) = self.tasks.join_next_with_id().await {
            if let Err(e) = done {
                let stage = self
                    .task_stage
                    .iter()
                    .find(|(id, _)| *id == e.id())
                    .map_or("?", |&(_, i)| self.shared.stages[i].name.as_str());
                let why = if e.is_panic() {
                    let payload = e.into_panic();
                    payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "a panic".into())
                } else {
                    "cancelled".into()
                };
                self.shared
                    .fail(format!("stage \"{stage}\": worker panicked: {why}"));
            }
        }
        for st in &self.shared.stages {
            let held = st.counters.held_back();
            if held > 0 {
                tracing::warn!(
                    stage = %st.name,
                    "{} not logged; the report counts them all",
                    if held == 1 { "1 more failed item was".to_string() } else { format!("{held} more failed items were") }
                );
            }
        }
        self.shared.finished.store(true, Ordering::SeqCst);
        self.shared.report()
    }
}

/// Runs a plan to the end.
pub async fn run(plan: Plan, control: RunControl) -> Report {
    Running::start(plan, control).finish().await
}

/// Runs worker `w` of stage `i` until its input is finished.
async fn run_worker(shared: Arc<Shared>, i: usize, w: usize, factory: &Factory) {
    let st = &shared.stages[i];
    let _done = Finished(st);
    if let Err(message) = worker::run(&shared, i, w, factory).await {
        shared.fail(message);
    }
}

impl Shared {
    /// Stops the run on an error: it ends as failed, and everything still
    /// queued or in flight is abandoned (counted, never reported done).
    pub(crate) fn fail(&self, message: String) {
        self.fail_after_drain(message);
        self.abandon();
    }

    /// Records an error that fails the run once the pipeline has drained:
    /// the sources stop, the items already emitted are still handled.
    fn fail_after_drain(&self, message: String) {
        let message = flow_core::text::redact(&message).into_owned();
        // A run that fails before any stage did anything (a missing input
        // file) ends at once, and its report is this one error: logging it
        // as well would say it twice.
        let started = self.stages.iter().any(|s| {
            let c = &s.counters;
            c.items_in.load(Ordering::Relaxed) + c.items_out.load(Ordering::Relaxed) > 0
        });
        if started {
            tracing::error!("{message}");
        } else {
            tracing::debug!("{message}");
        }
        let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some(message);
        }
        drop(f);
        self.ctl.stop.raise();
    }

    /// A sink's output was closed by its reader (`flow run | head`): nobody
    /// wants more, so the run ends, as a success. The sources stop, what is
    /// already in the pipeline drains (other sinks still write theirs), and
    /// what this sink can no longer write is counted as its abandoned items,
    /// not as failures.
    pub(crate) fn output_closed(&self, st: &StageRun) {
        if !self.ctl.stop.is_raised() {
            tracing::debug!(stage = %st.name, "the output was closed by its reader; stopping the sources");
        }
        self.ctl.stop.raise();
    }

    /// Stops everything now (see [`RunControl::abandon`]).
    pub(crate) fn abandon(&self) {
        self.ctl.stop.raise();
        self.ctl.cancel.store(true, Ordering::SeqCst);
        self.ctl.abandon.raise();
        for s in &self.stages {
            if let Some(q) = &s.input {
                q.halt();
            }
            if let Some(r) = &s.reorder {
                r.halt();
            }
        }
    }

    /// Whether the run is abandoning its work.
    /// True once the run is ending early: it failed, or was interrupted.
    pub(crate) fn stopping(&self) -> bool {
        self.ctl.stop.is_raised()
    }

    pub(crate) fn abandoned(&self) -> bool {
        self.ctl.abandon.is_raised()
    }

    /// Resolves when the run starts abandoning its work.
    pub(crate) async fn until_abandoned(&self) {
        self.ctl.abandon.wait().await
    }

    /// The flag that stops jq evaluations when the run abandons its work.
    pub(crate) fn cancel_flag(&self) -> Arc<CancelFlag> {
        self.ctl.cancel.clone()
    }

    async fn run_source(&self, i: usize, mut source: Box<dyn Source>) {
        let st = &self.stages[i];
        let _done = Finished(st);
        let mut out = Output::new();
        let stop = &self.ctl.stop;
        while !stop.is_raised() {
            let started = Instant::now();
            let next = tokio::select! {
                biased;
                // Stopped during a call: the call is dropped; what it had
                // emitted is abandoned below.
                _ = stop.wait() => Ok(Next::Done),
                next = source.next(&mut out) => next,
            };
            StageCounters::add_time(&st.counters.busy_ns, started.elapsed());
            if let Some(total) = source.total() {
                st.counters.set_total(total);
            }
            match &st.control.rate {
                None => {
                    StageCounters::add(&st.counters.items_out, out.len() as u64);
                    // A stop abandons what is not yet sent: the drain after
                    // it handles only what is already in the pipeline.
                    self.send_until(st, out.items_mut(), Some(stop)).await;
                }
                Some(_) => self.send_paced(st, out.items_mut()).await,
            }
            let mut failed: Vec<Failed> = out
                .take_failed()
                .into_iter()
                .map(|(item, error)| Failed {
                    item,
                    error,
                    attempts: 1,
                })
                .collect();
            if let Err(message) = self.fail_items(st, &mut failed).await {
                // `on_error: fail`: what was emitted before the bad record
                // still drains; the run then fails.
                self.fail_after_drain(message);
                break;
            }
            match next {
                Ok(Next::More) => {}
                Ok(Next::Done) => break,
                Err(e) => {
                    // What the source emitted before it failed still
                    // drains through the pipeline; the run then fails.
                    self.fail_after_drain(format!("stage \"{}\": source failed: {e}", st.name));
                    break;
                }
            }
        }
    }

    /// A rate-limited source: each item waits for its token, then goes on.
    /// Items still waiting when the run stops were never emitted: they are
    /// counted as the source's abandoned items and their hooks report
    /// failure.
    async fn send_paced(&self, st: &StageRun, items: &mut Vec<Item>) {
        let Some(limiter) = &st.control.rate else {
            return;
        };
        let stop = &self.ctl.stop;
        let mut pending = std::mem::take(items).into_iter();
        for item in pending.by_ref() {
            let key = st.control.rate_key_of(&item.value);
            let waited = tokio::select! {
                biased;
                _ = stop.wait() => {
                    abandon_items(&st.counters, std::iter::once(item));
                    break;
                }
                waited = limiter.acquire(key.as_deref()) => waited,
            };
            StageCounters::add_time(&st.counters.rate_limit_ns, waited);
            StageCounters::add(&st.counters.items_out, 1);
            self.send_until(st, &mut vec![item], Some(stop)).await;
        }
        abandon_items(&st.counters, pending);
    }

    /// Counts a handled batch: `n` in, `emitted` out (for a sink: those
    /// consumed without error), `failed` of them failed.
    pub(crate) fn account(
        &self,
        st: &StageRun,
        n: usize,
        emitted: usize,
        failed: usize,
        busy: Duration,
    ) {
        let c = &st.counters;
        StageCounters::add(&c.items_in, n as u64);
        let out = if st.kind == StageKind::Sink {
            n - failed
        } else {
            emitted
        };
        StageCounters::add(&c.items_out, out as u64);
        StageCounters::add_time(&c.busy_ns, busy);
    }

    /// Counts items emitted with no input (from `on_deadline` or
    /// `finish`) as items out: `account` never sees them.
    pub(crate) fn account_unprompted(&self, st: &StageRun, emitted: usize) {
        if st.kind != StageKind::Sink {
            StageCounters::add(&st.counters.items_out, emitted as u64);
        }
    }

    /// Applies `on_error` to items whose last attempt failed.
    pub(crate) async fn fail_items(
        &self,
        st: &StageRun,
        failed: &mut Vec<Failed>,
    ) -> Result<(), String> {
        if failed.is_empty() {
            return Ok(());
        }
        if failed.iter().any(|f| f.error.is_output_closed()) {
            // The sink's reader is gone: its items are not failures; the
            // run ends (see `output_closed`).
            let (closed, rest): (Vec<Failed>, Vec<Failed>) =
                failed.drain(..).partition(|f| f.error.is_output_closed());
            *failed = rest;
            abandon_items(&st.counters, closed.into_iter().map(|f| f.item));
            self.output_closed(st);
            if failed.is_empty() {
                return Ok(());
            }
        }
        let c = &st.counters;
        StageCounters::add(&c.errors, failed.len() as u64);
        let mut letters = Vec::new();
        let mut failed = failed.drain(..);
        while let Some(Failed {
            item,
            error,
            attempts,
        }) = failed.next()
        {
            c.record_error(error.message(), || shorten(&to_json(&item.value)));
            item.lineage.mark_failed();
            let tries = match attempts {
                1 => String::new(),
                n => format!(" (after {n} attempts)"),
            };
            match st.on_error {
                OnError::Fail => {
                    // The run stops: the other failed items go nowhere.
                    failed.for_each(|f| f.item.lineage.mark_failed());
                    let what = if st.kind == StageKind::Source {
                        "a record failed"
                    } else {
                        "item failed"
                    };
                    return Err(format!(
                        "stage \"{}\": {what}{tries} (on_error: fail): {error}",
                        st.name
                    ));
                }
                OnError::Drop => {
                    StageCounters::add(&c.dropped, 1);
                    if let Some(held) = c.may_log() {
                        let held = match held {
                            0 => String::new(),
                            n => format!(" ({n} more not shown)"),
                        };
                        tracing::warn!(stage = %st.name, "item dropped{tries}: {error}{held}");
                    }
                }
                OnError::DeadLetter(_) => {
                    StageCounters::add(&c.dead_lettered, 1);
                    let error = object([
                        ("stage", string(st.name.clone())),
                        ("message", string(error.message())),
                        ("attempts", int(i64::from(attempts))),
                    ]);
                    let value = object([("item", item.value), ("error", error)]);
                    letters.push(Item {
                        value,
                        lineage: item.lineage,
                    });
                }
            }
        }
        if let Some(q) = &st.dead_letter {
            q.push(&mut letters).await;
        }
        Ok(())
    }

    /// Moves emitted items into every consumer's queue (a copy each but
    /// the last), counting the time spent waiting as backpressure.
    pub(crate) async fn send(&self, st: &StageRun, items: &mut Vec<Item>) {
        self.send_until(st, items, None).await
    }

    /// [`Shared::send`], giving up when `until` is raised: what a queue did
    /// not take is abandoned, counted as that consumer's.
    async fn send_until(&self, st: &StageRun, items: &mut Vec<Item>, until: Option<&Flag>) {
        if items.is_empty() {
            return;
        }
        let Some((last, rest)) = st.outputs.split_last() else {
            items.clear();
            return;
        };
        let mut waited = Duration::ZERO;
        let mut push = async |q: &Queue, batch: &mut Vec<Item>| {
            let pushed = match until {
                None => Some(q.push(batch).await),
                Some(flag) => tokio::select! {
                    biased;
                    waited = q.push(batch) => Some(waited),
                    _ = flag.wait() => None,
                },
            };
            match pushed {
                Some(w) => waited += w,
                None => q.abandon(batch.drain(..)),
            }
        };
        for q in rest {
            push(q, &mut items.clone()).await;
        }
        push(last, items).await;
        StageCounters::add_time(&st.counters.backpressure_ns, waited);
    }

    fn report(&self) -> Report {
        let elapsed = self.started.elapsed();
        let failure = self
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let finished = self.finished.load(Ordering::SeqCst);
        let interrupted = self.ctl.interrupted.load(Ordering::SeqCst);
        let stages: Vec<_> = self
            .stages
            .iter()
            .map(|s| {
                let info = StageInfo {
                    abandoned: s.input.as_ref().map_or(0, |q| q.abandoned()),
                    name: &s.name,
                    type_name: &s.type_name,
                    kind: s.kind,
                    workers: s.workers,
                    queue: s.input.as_ref().map(|q| q.stats()),
                    inputs: s.inputs.clone(),
                    on_error: s.on_error_name.clone(),
                    done: s.live.load(Ordering::SeqCst) == 0,
                };
                stats::stage_report(info, &s.counters, elapsed)
            })
            .collect();
        let items_failed: u64 = stages.iter().map(|s| s.dropped + s.dead_lettered).sum();
        let status = match (&failure, interrupted) {
            _ if !finished => Status::Running,
            (Some(_), _) => Status::Failed,
            (None, true) => Status::Interrupted,
            (None, false) if items_failed > 0 => Status::Partial,
            (None, false) => Status::Ok,
        };
        let mut errors = Vec::new();
        let mut errors_left_out = stats::LeftOut::default();
        for s in &self.stages {
            let (groups, left_out) = stats::error_reports(&s.name, &s.counters);
            errors.extend(groups);
            errors_left_out.groups += left_out.groups;
            errors_left_out.errors += left_out.errors;
        }
        errors.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.message.cmp(&b.message))
        });
        for e in errors.drain(REPORTED_ERRORS.min(errors.len())..) {
            errors_left_out.groups += 1;
            errors_left_out.errors += e.count;
        }
        let emitted: u64 = stages
            .iter()
            .filter(|s| s.kind == "source")
            .map(|s| s.items_out)
            .sum();
        let secs = elapsed.as_secs_f64();
        Report {
            pipeline: self.pipeline.clone(),
            status,
            exit: (status != Status::Running).then(|| stats::status_exit_code(status)),
            items_failed,
            failure,
            elapsed_s: (secs * 1000.0).round() / 1000.0,
            items_per_s: if secs > 0.0 {
                (emitted as f64 / secs * 10.0).round() / 10.0
            } else {
                0.0
            },
            bottleneck: stats::bottleneck(&stages, secs),
            stages,
            errors,
            errors_left_out,
        }
    }
}

/// Marks one worker (or a source) of a stage as ended, however it ends
/// (panics included); the last one closes the stage's outputs, so the end
/// of input always travels downstream.
struct Finished<'a>(&'a StageRun);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        let st = self.0;
        if st.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            let mut closed: Vec<*const Queue> = Vec::new();
            for q in st.outputs.iter().chain(st.dead_letter.iter()) {
                let ptr = Arc::as_ptr(q);
                if !closed.contains(&ptr) {
                    closed.push(ptr);
                    q.close_producer();
                }
            }
        }
    }
}

/// Items a stage had but will never handle (the run stopped): counted as
/// its abandoned items; their sources learn they failed.
pub(crate) fn abandon_items(c: &StageCounters, items: impl Iterator<Item = Item>) {
    let mut n = 0;
    for item in items {
        item.lineage.mark_failed();
        n += 1;
    }
    StageCounters::add(&c.abandoned, n);
}

fn shorten(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}
