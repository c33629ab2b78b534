//! Running a [`Plan`]: one task per source, `workers` tasks per processor
//! or sink, bounded queues between them, and orderly completion.
//!
//! The path of an item: a source task calls `Source::next`, which fills an
//! `Output`; the task passes the batch to the consumers of each port it
//! was emitted to (`outlet.rs`: a copy each for fan-out; the push waits
//! while a queue is full). A worker of the next stage (`worker.rs`) takes
//! up to a batch (a `Transform`) or one item (a `Processor`), calls the
//! stage once per item with the lineage set, and passes what was emitted
//! on in turn. Failed items go to the error port (`on_error`). When every
//! producer of a queue has closed and it is drained, the workers call
//! `finish`, the last one closes the stage's outputs, and so the end
//! travels down the graph until every sink has flushed. Then every outcome
//! is known, and each source's `close` runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flow_core::{Next, Output, Source, Stage, StageKind};
use tokio::task::JoinSet;

use crate::outlet::{self, Failed, Finished, Outlet, Pipeline, Reorder, StageRun};
use crate::plan::{EdgeKind, OnError, Plan};
use crate::queue::Queue;
use crate::stats::{self, Report, StageCounters, StageInfo, Status};
use crate::stop::{Halt, Stops};
use crate::worker::{self, Factory};

/// Error groups a report lists; the rest are counted in `errors_left_out`.
const REPORTED_ERRORS: usize = 10;

/// Lets the caller stop a run from outside (Ctrl-C, a drain that takes too
/// long). Cheap to clone; every method may be called from any thread, also
/// while every worker of the runtime is busy.
#[derive(Clone, Default)]
pub struct RunControl {
    inner: Arc<Stops>,
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
        self.inner.abandon();
    }
}

/// A run in progress.
pub struct Running {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
    task_stage: Vec<(tokio::task::Id, usize)>,
}

/// The run as its reports see it.
struct Shared {
    pipeline: Arc<Pipeline>,
    /// A durable run's sinks that keep state.
    durable_sinks: Vec<(String, Arc<dyn flow_core::Durable>)>,
    /// Set once every task has ended: reports are final from then on.
    finished: AtomicBool,
    name: String,
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
            .pipeline
            .stages
            .iter()
            .map(|s| s.counters.latency_buckets(bounds))
            .collect()
    }
}

impl Running {
    /// Wires the queues and spawns every task. Call from within a tokio
    /// runtime.
    pub fn start(mut plan: Plan, control: RunControl) -> Running {
        crate::panics::install_hook();
        let queues: Vec<Option<Arc<Queue>>> = plan
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (s.kind != StageKind::Source).then(|| {
                    Arc::new(Queue::with_config(
                        &s.name,
                        s.queue.clone(),
                        plan.producers(i).len(),
                    ))
                })
            })
            .collect();
        // Each stage's outlets: main, error, then its named ports.
        let mut outlets: Vec<Vec<Outlet>> = plan
            .stages
            .iter()
            .map(|s| {
                let names = ["", "_error"].into_iter().map(String::from);
                names
                    .chain(s.ports.names.iter().cloned())
                    .map(|name| Outlet {
                        name,
                        queues: Vec::new(),
                        emitted: AtomicU64::new(0),
                    })
                    .collect()
            })
            .collect();
        for e in plan.edges() {
            let port = match e.kind {
                EdgeKind::Output => outlet::MAIN,
                EdgeKind::Error => outlet::ERROR,
                EdgeKind::Port(p) => outlet::named(flow_core::Port(p)),
            };
            if let Some(q) = &queues[e.to] {
                outlets[e.from][port].queues.push(q.clone());
            }
        }
        let names: Vec<String> = plan.stages.iter().map(|s| s.name.clone()).collect();
        let port_names: Vec<Vec<String>> =
            plan.stages.iter().map(|s| s.ports.names.clone()).collect();
        let durable_sinks = crate::durable::sinks_of(&plan);
        let (durability, hash) = (plan.durability.take(), plan.hash.clone());
        let tap = plan.tap.take();
        let mut factories = Vec::new();
        let mut stages = Vec::new();
        let mut halts: Vec<Halt> = queues.iter().flatten().cloned().map(Halt::Queue).collect();
        for ((i, s), outlets) in plan.stages.into_iter().enumerate().zip(outlets) {
            // Tickets waiting for an earlier one: enough to keep every
            // worker busy past one slow item, and no more.
            let reorder = (s.control.ordered && s.kind != StageKind::Source)
                .then(|| Reorder::new((2 * s.workers).max(s.queue.capacity)));
            if let Some(r) = &reorder {
                let r = r.clone();
                halts.push(Halt::Hook(Box::new(move || r.halt())));
            }
            let on_error_name = match s.on_error {
                OnError::Drop => "drop".to_string(),
                OnError::Fail => "fail".to_string(),
                OnError::DeadLetter(k) => names[k].clone(),
            };
            let inputs = s
                .inputs
                .iter()
                .zip(&s.input_ports)
                .map(|(&k, port)| match port {
                    None => names[k].clone(),
                    Some(p) => format!("{}.{}", names[k], port_names[k][*p as usize]),
                })
                .collect();
            stages.push(StageRun {
                inputs,
                on_error_name,
                name: s.name,
                type_name: s.type_name,
                kind: s.kind,
                workers: s.workers,
                on_error: s.on_error,
                control: s.control,
                reorder,
                input: queues[i].clone(),
                outlets,
                live: AtomicUsize::new(if s.kind == StageKind::Source {
                    1
                } else {
                    s.workers
                }),
                finishing: AtomicUsize::new(s.workers),
                counters: StageCounters::new(),
            });
            factories.push(s.stage);
        }
        let sources = stages
            .iter()
            .filter(|s| s.kind == StageKind::Source)
            .count();
        let checkpoints = durability.map(|d| {
            let names = stages.iter().map(|s| s.name.clone()).collect();
            crate::durable::Checkpoints::new(d, hash.clone(), sources, names)
        });
        let live_workers = stages
            .iter()
            .filter(|s| s.kind != StageKind::Source)
            .map(|s| s.workers)
            .sum();
        let pipeline = Arc::new(Pipeline {
            stages,
            stops: control.inner.clone(),
            drained: Default::default(),
            live_workers: AtomicUsize::new(live_workers),
            checkpoints,
            tap,
        });
        if live_workers == 0 {
            pipeline.drained.raise();
        }
        control.inner.register(halts);
        let shared = Arc::new(Shared {
            durable_sinks: durable_sinks.clone(),
            pipeline: pipeline.clone(),
            finished: AtomicBool::new(false),
            name: plan.name,
            started: Instant::now(),
        });
        let mut tasks = JoinSet::new();
        let mut task_stage = Vec::new();
        if let Some(cp) = pipeline.checkpoints.clone() {
            let pipeline = pipeline.clone();
            tasks.spawn(async move { checkpointer(&pipeline, &cp, &durable_sinks).await });
        }
        for (i, stage) in factories.into_iter().enumerate() {
            match stage {
                Stage::Source(source) => {
                    let pipeline = pipeline.clone();
                    let h = tasks.spawn(async move { run_source(&pipeline, i, source).await });
                    task_stage.push((h.id(), i));
                }
                Stage::Workers(factory) => {
                    let factory: Arc<Factory> = Arc::from(factory);
                    for w in 0..pipeline.stages[i].workers {
                        let (pipeline, factory) = (pipeline.clone(), factory.clone());
                        let h =
                            tasks.spawn(async move { run_worker(pipeline, i, w, &*factory).await });
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
        let pipeline = &self.shared.pipeline;
        while let Some(done) = self.tasks.join_next_with_id().await {
            if let Err(e) = done {
                let stage = self
                    .task_stage
                    .iter()
                    .find(|(id, _)| *id == e.id())
                    .map_or("?", |&(_, i)| pipeline.stages[i].name.as_str());
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
                fail(
                    pipeline,
                    format!("stage \"{stage}\": worker panicked: {why}"),
                );
            }
        }
        for st in &pipeline.stages {
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
        let report = self.shared.report();
        if let Some(cp) = &pipeline.checkpoints {
            let dir = &cp.durability.dir;
            match report.status {
                // Done: the next run starts fresh.
                Status::Ok | Status::Partial => crate::durable::remove(dir),
                // A clean drain saves where it stopped; otherwise the last
                // checkpoint stands.
                _ => {
                    cp.save_final(&self.shared.durable_sinks, source_counts(pipeline));
                }
            }
        }
        report
    }
}

/// Runs a plan to the end.
pub async fn run(plan: Plan, control: RunControl) -> Report {
    Running::start(plan, control).finish().await
}

/// Runs worker `w` of stage `i` until its input is finished.
async fn run_worker(pipeline: Arc<Pipeline>, i: usize, w: usize, factory: &Factory) {
    let st = &pipeline.stages[i];
    let _done = Finished {
        pipeline: &pipeline,
        stage: st,
    };
    if let Err(message) = worker::run(&pipeline, i, w, factory).await {
        fail(&pipeline, message);
    }
}

/// Stops the run on an error: it ends as failed, and everything still
/// queued or in flight is abandoned (counted, never delivered).
fn fail(pipeline: &Pipeline, message: String) {
    fail_after_drain(pipeline, message);
    pipeline.stops.abandon();
}

/// Records an error that fails the run once the pipeline has drained:
/// the sources stop, the items already emitted are still handled.
fn fail_after_drain(pipeline: &Pipeline, message: String) {
    let message = flow_core::text::redact(&message).into_owned();
    // A run that fails before any stage did anything (a missing input
    // file) ends at once, and its report is this one error: logging it
    // as well would say it twice.
    let started = pipeline.stages.iter().any(|s| {
        let c = &s.counters;
        c.items_in.load(Ordering::Relaxed) + c.items_out.load(Ordering::Relaxed) > 0
    });
    if started {
        tracing::error!("{message}");
    } else {
        tracing::debug!("{message}");
    }
    pipeline.stops.fail_after_drain(message);
}

/// The task of source `i`: calls `next` until it is done or the run stops,
/// then waits until every outcome is known and calls `close`.
async fn run_source(pipeline: &Pipeline, i: usize, mut source: Box<dyn Source>) {
    let st = &pipeline.stages[i];
    {
        let _done = Finished {
            pipeline,
            stage: st,
        };
        read_source(pipeline, st, &mut *source).await;
    }
    // Every processor and sink has ended: every item this source emitted
    // has its outcome, and its hooks have run.
    pipeline.drained.wait().await;
    match crate::panics::CatchUnwind(source.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => fail_after_drain(
            pipeline,
            format!("stage \"{}\": close failed: {e}", st.name),
        ),
        Err(panic) => fail_after_drain(pipeline, format!("stage \"{}\": close {panic}", st.name)),
    }
}

async fn read_source(pipeline: &Pipeline, st: &StageRun, source: &mut dyn Source) {
    let mut out = Output::new();
    let stop = &pipeline.stops.stop;
    let checkpoints = pipeline.checkpoints.as_ref();
    while !stop.is_raised() {
        if let Some(cp) = checkpoints.filter(|cp| cp.pause_asked()) {
            let position = source.position();
            cp.park(&st.name, position, stop).await;
            if stop.is_raised() {
                break;
            }
        }
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
        let mut failed: Vec<Failed> = out
            .take_failed()
            .into_iter()
            .map(|(item, error)| Failed {
                item,
                error,
                attempts: 1,
            })
            .collect();
        if let Some(cp) = checkpoints {
            track_batch(cp, &mut out, &mut failed);
        }
        match &st.control.rate {
            None => {
                StageCounters::add(&st.counters.items_out, out.len() as u64);
                // A stop abandons what is not yet sent: the drain after
                // it handles only what is already in the pipeline.
                let (main, routed) = out.outputs_mut();
                pipeline.send_until(st, main, routed, Some(stop)).await;
            }
            Some(_) => send_paced(pipeline, st, &mut out).await,
        }
        if let Err(message) = pipeline.fail_items(st, &mut failed).await {
            // `on_error: fail`: what was emitted before the bad record
            // still drains; the run then fails.
            fail_after_drain(pipeline, message);
            break;
        }
        match next {
            Ok(Next::More) => {}
            Ok(Next::Done) => break,
            Err(e) => {
                // What the source emitted before it failed still
                // drains through the pipeline; the run then fails.
                fail_after_drain(
                    pipeline,
                    format!("stage \"{}\": source failed: {e}", st.name),
                );
                break;
            }
        }
    }
    // Emitted but never sent (the call was dropped mid-way).
    let (main, routed) = out.outputs_mut();
    let routed = routed.drain(..).map(|(_, item)| item);
    outlet::abandon_items(&st.counters, main.drain(..).chain(routed));
    if let Some(cp) = checkpoints {
        cp.finished(&st.name, source.position());
    }
}

/// A durable run: gives every item of a source's call one lineage more,
/// counted in flight until all of them have their outcome.
fn track_batch(cp: &Arc<crate::durable::Checkpoints>, out: &mut Output, failed: &mut [Failed]) {
    let n = out.len() + failed.len();
    if n == 0 {
        return;
    }
    let batch = cp.batch(n);
    let (main, routed) = out.outputs_mut();
    let items = main
        .iter_mut()
        .chain(routed.iter_mut().map(|(_, item)| item))
        .chain(failed.iter_mut().map(|f| &mut f.item));
    for item in items {
        item.lineage = if item.lineage.is_none() {
            batch.clone()
        } else {
            flow_core::Lineage::merge([std::mem::take(&mut item.lineage), batch.clone()])
        };
    }
}

/// A durable run's checkpointer: a checkpoint at least every interval
/// until the sources are done or the run stops.
async fn checkpointer(
    pipeline: &Pipeline,
    cp: &crate::durable::Checkpoints,
    sinks: &[(String, Arc<dyn flow_core::Durable>)],
) {
    let stop = &pipeline.stops.stop;
    // After a pause that did not drain (a stage holds items: a `batch`
    // filling, a `reduce` until its window ends), wait twice as long
    // before the next, up to a minute, rather than park the sources again
    // and again.
    let mut wait = cp.durability.interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait() => return,
            _ = pipeline.drained.wait() => return,
        }
        wait = if cp.take(sinks, || source_counts(pipeline)).await {
            cp.durability.interval
        } else {
            (wait * 2).min(Duration::from_secs(60).max(cp.durability.interval))
        };
    }
}

/// Each source's items emitted in this run, by stage name.
fn source_counts(pipeline: &Pipeline) -> std::collections::BTreeMap<String, u64> {
    pipeline
        .stages
        .iter()
        .filter(|s| s.kind == StageKind::Source)
        .map(|s| (s.name.clone(), s.counters.items_out.load(Ordering::Relaxed)))
        .collect()
}

/// A rate-limited source: each item waits for its token, then goes on.
/// Items still waiting when the run stops were never emitted: they are
/// counted as the source's abandoned items.
async fn send_paced(pipeline: &Pipeline, st: &StageRun, out: &mut Output) {
    let Some(limiter) = &st.control.rate else {
        return;
    };
    let stop = &pipeline.stops.stop;
    let (main, routed) = out.outputs_mut();
    let pending = std::mem::take(main)
        .into_iter()
        .map(|item| (None, item))
        .chain(
            std::mem::take(routed)
                .into_iter()
                .map(|(p, item)| (Some(p), item)),
        );
    let mut pending = pending.collect::<Vec<_>>().into_iter();
    for (port, item) in pending.by_ref() {
        let key = st.control.rate_key_of(&item.value);
        let waited = tokio::select! {
            biased;
            _ = stop.wait() => {
                outlet::abandon_items(&st.counters, std::iter::once(item));
                break;
            }
            waited = limiter.acquire(key.as_deref()) => waited,
        };
        StageCounters::add_time(&st.counters.rate_limit_ns, waited);
        StageCounters::add(&st.counters.items_out, 1);
        let (mut main, mut routed) = match port {
            None => (vec![item], Vec::new()),
            Some(p) => (Vec::new(), vec![(p, item)]),
        };
        pipeline
            .send_until(st, &mut main, &mut routed, Some(stop))
            .await;
    }
    outlet::abandon_items(&st.counters, pending.map(|(_, item)| item));
}

impl Shared {
    fn report(&self) -> Report {
        let pipeline = &self.pipeline;
        let elapsed = self.started.elapsed();
        let failure = pipeline.stops.failure();
        let finished = self.finished.load(Ordering::SeqCst);
        let interrupted = pipeline.stops.interrupted.load(Ordering::SeqCst);
        let stages: Vec<_> = pipeline
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
                    outputs: s.port_counts(),
                    resumed: pipeline.checkpoints.as_ref().map_or(0, |cp| {
                        let before = &cp.durability.source_items_before;
                        before.get(&s.name).copied().unwrap_or(0)
                    }),
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
        for s in &pipeline.stages {
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
            pipeline: self.name.clone(),
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
            durable: pipeline
                .checkpoints
                .as_ref()
                .map(|cp| stats::DurableReport {
                    resumed: cp.durability.resumed(),
                    items_done_before: cp.durability.items_done_before,
                    items_total: cp.durability.items_done_before + emitted,
                    checkpoints: cp.saved.load(Ordering::Relaxed),
                    replayed: cp.durability.replayed,
                    replayed_total: cp.durability.replayed_total,
                    calls_replayed: cp.durability.calls_replayed.clone(),
                    calls_replayed_total: cp.durability.calls_replayed_total.clone(),
                }),
            stages,
            errors,
            errors_left_out,
        }
    }
}
