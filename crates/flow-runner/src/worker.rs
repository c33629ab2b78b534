//! One worker of a processor or sink stage, and the runner's layers around
//! each stage call: rate limit, retries with backoff, timeout, caught
//! panics, `on_error` and ordered output. Written once here, so no stage
//! reimplements any of them.
//!
//! Two paths:
//! * the fast path, for a [`Transform`] with no per-item layer: take a batch,
//!   call the stage on each item in a tight loop (no `.await`), pass the
//!   outputs on;
//! * the per-item path, for a [`Processor`] or any stage with a rate limit,
//!   retries or a timeout: take one item, and for each attempt take a token,
//!   call the stage under the timeout, and on a retryable error wait out the
//!   backoff and try again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flow_core::interrupt::{self, Limits};
use flow_core::{
    BATCH, Item, Lineage, Mark, Outcome, Output, Port, Processor, StageError, Transform, Value,
    Worker,
};
use tokio::time::Instant;

use crate::outlet::{self, Failed, Pipeline, StageRun};
use crate::panics::{CatchUnwind, catch};
use crate::stats::{Latency, StageCounters};

/// Makes the worker of index `i` of a stage.
pub(crate) type Factory = dyn Fn(usize) -> Result<Worker, StageError> + Send + Sync;

/// Runs worker `index` of stage `i` until its input is finished.
pub(crate) async fn run(
    pipeline: &Arc<Pipeline>,
    i: usize,
    index: usize,
    factory: &Factory,
) -> Result<(), String> {
    let st = &pipeline.stages[i];
    let slot = make(st, index, factory)?;
    let cancel = pipeline.stops.cancel.clone();
    let mut worker = WorkerLoop {
        pipeline,
        stage: i,
        st,
        index,
        factory,
        slot,
        held: InFlight::new(),
        latency: Latency::new(),
        latency_shared: Instant::now(),
        cancel: &cancel,
    };
    worker.held.out.set_spill(spill_to(pipeline, i));
    let result = worker.run().await;
    worker.abandon_held();
    st.counters
        .merge_latency(std::mem::take(&mut worker.latency));
    result
}

/// Passes a stage's outputs on while an input is still being handled
/// (`range(1e12)`), waiting on backpressure: the worker's thread blocks,
/// and the runtime moves its other tasks to another thread meanwhile.
/// Not for `ordered` stages (outputs wait for their turn) nor outside a
/// multi-threaded runtime, where the outputs are held instead.
fn spill_to(pipeline: &Arc<Pipeline>, i: usize) -> Option<flow_core::stage::Spill> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let handle = Handle::try_current().ok()?;
    if handle.runtime_flavor() != RuntimeFlavor::MultiThread || pipeline.stages[i].reorder.is_some()
    {
        return None;
    }
    let pipeline = pipeline.clone();
    Some(Box::new(
        move |main: &mut Vec<Item>, routed: &mut Vec<(Port, Item)>| {
            let st = &pipeline.stages[i];
            pipeline.account_unprompted(st, main.len() + routed.len());
            tokio::task::block_in_place(|| handle.block_on(pipeline.send(st, main, routed)));
        },
    ))
}

/// The stage's own worker, as the factory made it.
enum Slot {
    Transform(Box<dyn Transform>),
    Processor(Box<dyn Processor>),
    /// Lent to a blocking thread (a timed transform).
    Lent,
}

fn make(st: &StageRun, index: usize, factory: &Factory) -> Result<Slot, String> {
    match factory(index) {
        Ok(Worker::Transform(t)) => Ok(Slot::Transform(t)),
        Ok(Worker::Processor(p)) => Ok(Slot::Processor(p)),
        Err(e) => Err(format!(
            "stage \"{}\": cannot start worker {index}: {e}",
            st.name
        )),
    }
}

struct WorkerLoop<'a> {
    pipeline: &'a Pipeline,
    /// The stage's index in the plan.
    stage: usize,
    st: &'a StageRun,
    index: usize,
    factory: &'a Factory,
    slot: Slot,
    held: InFlight,
    latency: Latency,
    /// When `latency` was last handed to the stage.
    latency_shared: Instant,
    /// Set when the run abandons its work: stops the jq evaluations of
    /// this worker's calls.
    cancel: &'a AtomicBool,
}

impl WorkerLoop<'_> {
    async fn run(&mut self) -> Result<(), String> {
        let st = self.st;
        let queue = st.input.as_ref().expect("processors have an input queue");
        // The batched fast path, unless a layer must await per item: a rate
        // limit, retries, or a timeout that only a thread can enforce.
        let control = &st.control;
        let fast = match &self.slot {
            Slot::Transform(t) => {
                control.rate.is_none()
                    && control.retry.attempts <= 1
                    && (control.timeout.is_none() || t.interruptible())
            }
            _ => false,
        };
        let max = queue.take_limit(if fast { BATCH } else { 1 });
        loop {
            if let Some(reorder) = &st.reorder {
                reorder.wait_for_room().await;
            }
            let ticket = match self.deadline() {
                None => queue.take(max, &mut self.held.batch).await,
                Some(at) => tokio::select! {
                    ticket = queue.take(max, &mut self.held.batch) => ticket,
                    _ = tokio::time::sleep_until(at) => {
                        self.on_deadline().await?;
                        continue;
                    }
                },
            };
            let Some(ticket) = ticket else { break };
            if self.pipeline.stops.abandoned() {
                break;
            }
            let n = self.held.batch.len();
            let (handled, busy) = if fast {
                self.apply_batch()?
            } else {
                let mut busy = Duration::ZERO;
                let mut handled = 0;
                while handled < n {
                    let item = std::mem::take(&mut self.held.batch[handled]);
                    let lineage = item.lineage.clone();
                    let stops = &self.pipeline.stops;
                    let outcome = tokio::select! {
                        biased;
                        outcome = self.handle_one(item) => Some(outcome?),
                        _ = stops.abandon.wait() => None,
                    };
                    match outcome {
                        Some(took) => busy += took,
                        None => {
                            // Dropped mid-way: the item and whatever its
                            // attempts emitted never leave this worker.
                            self.held.batch[handled] = Item {
                                value: Value::Null,
                                lineage,
                            };
                            self.held.out.rewind(Mark::default());
                            self.held.out.set_lineage(Lineage::NONE);
                            break;
                        }
                    }
                    handled += 1;
                }
                (handled, busy)
            };
            // Items of the batch not handled (the run is abandoning its
            // work) stay in `held.batch`, for `abandon_held`.
            self.held.batch.drain(..handled);
            let (emitted, failed) = (self.held.out.len(), self.held.failed.len());
            self.pipeline.account(st, handled, emitted, failed, busy);
            self.pipeline.fail_items(st, &mut self.held.failed).await?;
            self.emit(Some(ticket)).await;
            if !self.held.batch.is_empty() {
                break;
            }
            if queue.depth() == 0 {
                self.flush().await?;
            }
            self.share_latency();
        }
        self.held
            .out
            .set_run_stopping(self.pipeline.stops.stopping());
        let mut finished = match &mut self.slot {
            Slot::Transform(t) => catch(|| t.finish(&mut self.held.out)),
            Slot::Processor(p) => CatchUnwind(p.finish(&mut self.held.out)).await,
            Slot::Lent => Ok(Ok(())),
        };
        // The last worker to finish finishes the stage.
        if matches!(finished, Ok(Ok(())))
            && st.finishing.fetch_sub(1, Ordering::AcqRel) == 1
            && let Slot::Transform(t) = &mut self.slot
        {
            finished = catch(|| t.finish_stage(&mut self.held.out));
        }
        self.count_unprompted();
        self.emit(None).await;
        match finished {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.is_output_closed() => {
                self.pipeline.output_closed(st);
                Ok(())
            }
            Ok(Err(e)) => Err(format!("stage \"{}\": {e}", st.name)),
            Err(panic) => Err(format!("stage \"{}\": finish {panic}", st.name)),
        }
    }

    /// Counts the items this worker took and will never handle (the run
    /// stopped, or the worker failed) as the stage's abandoned items.
    fn abandon_held(&mut self) {
        outlet::abandon_items(&self.st.counters, self.held.batch.drain(..));
    }

    /// The fast path: the whole batch through a transform, no `.await`.
    /// Returns how many items it handled (all, unless the run abandons its
    /// work) and the time it took.
    ///
    /// Panics are caught once per batch, not per item (a catch costs more
    /// than a cheap item): each item stays in the batch until it is
    /// handled, so the one that panicked is still there to be failed, and
    /// the loop resumes after it with a fresh worker.
    fn apply_batch(&mut self) -> Result<(usize, Duration), String> {
        let started = Instant::now();
        let n = self.held.batch.len();
        // An interruptible transform's `timeout:` is kept here, per item.
        let timeout = self.st.control.timeout;
        let cancel: &AtomicBool = self.cancel;
        // Every evaluation stops when the run abandons its work.
        let limits = Limits::cancelled_by(cancel);
        let mut k = 0;
        // Where item k's outputs begin, to discard them if it panics.
        let mut mark = Mark::default();
        // The items of the batch that failed (taken out of it).
        let mut failed_at: Vec<usize> = Vec::new();
        // A processor's transform may use its inputs up (nothing retries
        // them here); a sink's commit may fail and must report them.
        let owned = self.st.kind != flow_core::StageKind::Sink;
        while k < n {
            let Slot::Transform(t) = &mut self.slot else {
                unreachable!("the fast path runs transforms")
            };
            let held = &mut self.held;
            let ran = catch(|| {
                interrupt::within(&limits, || {
                    while k < n && !cancel.load(Ordering::Relaxed) {
                        let item = &mut held.batch[k];
                        mark = held.out.mark();
                        held.out.set_lineage(item.lineage.clone());
                        let mut apply = |out: &mut Output| {
                            if owned {
                                t.apply_mut(&mut item.value, out)
                            } else {
                                t.apply(&item.value, out)
                            }
                        };
                        let applied = match timeout {
                            // The batch's limits are in force already.
                            None => apply(&mut held.out),
                            Some(_) => interrupt::within(&limits.with_timeout(timeout), || {
                                apply(&mut held.out)
                            }),
                        };
                        if let Err(error) = applied {
                            held.out.rewind(mark);
                            if cancel.load(Ordering::Relaxed) {
                                // Stopped by the abandon, not failed.
                                break;
                            }
                            let item = std::mem::take(&mut held.batch[k]);
                            held.failed.push(Failed {
                                item,
                                error,
                                attempts: 1,
                            });
                            failed_at.push(k);
                        }
                        k += 1;
                    }
                })
            });
            if let Err(panic) = ran {
                // Item k panicked. Its worker's state is suspect: a fresh one.
                self.held.out.rewind(mark);
                let item = std::mem::take(&mut self.held.batch[k]);
                self.held.failed.push(Failed {
                    item,
                    error: StageError::permanent(panic),
                    attempts: 1,
                });
                failed_at.push(k);
                k += 1;
                self.slot = make(self.st, self.index, self.factory)?;
            }
            if cancel.load(Ordering::Relaxed) {
                break;
            }
        }
        self.commit_batch(k, &failed_at)?;
        self.held.out.set_lineage(Lineage::NONE);
        let took = started.elapsed();
        self.latency.record_batch(took, k);
        Ok((k, took))
    }

    /// Commits the first `handled` items of the batch (a sink writes what
    /// it buffered). If that fails, each of them that had not failed
    /// already fails with the commit's error: none reached its destination.
    fn commit_batch(&mut self, handled: usize, failed_at: &[usize]) -> Result<(), String> {
        let Slot::Transform(t) = &mut self.slot else {
            return Ok(());
        };
        let error = match catch(|| t.commit()) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => error,
            Err(panic) => {
                self.slot = make(self.st, self.index, self.factory)?;
                StageError::permanent(panic)
            }
        };
        let mut failed = failed_at.iter().peekable();
        for k in 0..handled {
            if failed.next_if_eq(&&k).is_some() {
                continue;
            }
            let item = std::mem::take(&mut self.held.batch[k]);
            self.held.failed.push(Failed {
                item,
                error: error.clone(),
                attempts: 1,
            });
        }
        Ok(())
    }

    /// The per-item path: every attempt takes a rate-limit token, runs
    /// under the timeout, and a retryable failure is tried again after the
    /// backoff. Returns the time spent in attempts (busy time).
    async fn handle_one(&mut self, item: Item) -> Result<Duration, String> {
        let (st, c) = (self.st, &self.st.counters);
        let control = &st.control;
        let started = Instant::now();
        let mut busy = Duration::ZERO;
        let mut limited = Duration::ZERO;
        self.held.out.set_lineage(item.lineage);
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            if let Some(limiter) = &control.rate {
                let key = control.rate_key_of(&item.value);
                let waited = limiter.acquire(key.as_deref()).await;
                limited += waited;
                StageCounters::add_time(&c.rate_limit_ns, waited);
            }
            let attempt_started = Instant::now();
            let spilled = self.held.out.spilled();
            let result = self.attempt(&item.value).await?;
            busy += attempt_started.elapsed();
            match result {
                Ok(()) => break Ok(()),
                Err(error) => {
                    self.held.out.rewind(Mark::default());
                    // Outputs already passed on cannot be taken back: an
                    // attempt that passed some on is not tried again.
                    let passed_on = self.held.out.spilled() > spilled;
                    if !error.is_retryable() || attempts >= control.retry.attempts || passed_on {
                        break Err(error);
                    }
                    StageCounters::add(&c.retries, 1);
                    let wait = control.retry.delay(attempts, error.retry_after());
                    tracing::debug!(
                        stage = %st.name,
                        "attempt {attempts} of {} failed: {error}; retrying in {}",
                        control.retry.attempts,
                        humantime::format_duration(wait)
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        };
        if let Err(error) = result {
            let lineage = self.held.out.take_lineage();
            self.held.failed.push(Failed {
                item: Item {
                    value: item.value,
                    lineage,
                },
                error,
                attempts,
            });
        }
        self.held.out.set_lineage(Lineage::NONE);
        // An item's latency: from its first attempt to its last, without
        // the rate-limit waits, which the stats report on their own.
        self.latency
            .record_batch(started.elapsed().saturating_sub(limited), 1);
        Ok(busy)
    }

    /// One attempt at an item, under the stage's timeout, with panics
    /// caught. The outer error is fatal (a replacement worker would not
    /// start); the inner one is the attempt's.
    async fn attempt(&mut self, value: &Value) -> Result<Result<(), StageError>, String> {
        let timeout = self.st.control.timeout;
        let cancel: &AtomicBool = self.cancel;
        let limits = Limits::cancelled_by(cancel);
        if let (Slot::Processor(_), Some(cp)) = (&self.slot, &self.pipeline.checkpoints) {
            // A durable run counts the calls that may have effects before
            // making them, so a resumed run knows how many it makes again.
            cp.marks.call(self.stage);
        }
        let outcome = match (&mut self.slot, timeout) {
            (Slot::Transform(t), None) => {
                catch(|| interrupt::within(&limits, || t.apply(value, &mut self.held.out)))
            }
            // Stopped in place when time is up: no thread, no copy.
            (Slot::Transform(t), Some(limit)) if t.interruptible() => catch(|| {
                interrupt::within(&limits.with_timeout(Some(limit)), || {
                    t.apply(value, &mut self.held.out)
                })
            }),
            (Slot::Transform(_), Some(limit)) => {
                return match self.attempt_on_thread(value, limit).await? {
                    Ok(()) => self.commit_one(),
                    failed => Ok(failed),
                };
            }
            (Slot::Processor(p), None) => CatchUnwind(p.process(value, &mut self.held.out)).await,
            (Slot::Processor(p), Some(limit)) => {
                let call = CatchUnwind(p.process(value, &mut self.held.out));
                match tokio::time::timeout(limit, call).await {
                    Ok(outcome) => outcome,
                    // The call's future is dropped: its async work is cancelled.
                    Err(_) => return Ok(Err(timed_out(limit))),
                }
            }
            (Slot::Lent, _) => unreachable!("a lent worker is replaced before the next attempt"),
        };
        let result = match outcome {
            Ok(result) => result,
            Err(panic) => {
                self.slot = make(self.st, self.index, self.factory)?;
                return Ok(Err(StageError::permanent(panic)));
            }
        };
        match result {
            Ok(()) => self.commit_one(),
            failed => Ok(failed),
        }
    }

    /// Commits one successful attempt of a transform: it counts once what
    /// it wrote is committed.
    fn commit_one(&mut self) -> Result<Result<(), StageError>, String> {
        let Slot::Transform(t) = &mut self.slot else {
            return Ok(Ok(()));
        };
        match catch(|| t.commit()) {
            Ok(committed) => Ok(committed),
            Err(panic) => {
                self.slot = make(self.st, self.index, self.factory)?;
                Ok(Err(StageError::permanent(panic)))
            }
        }
    }

    /// A synchronous transform under a timeout runs on a blocking thread,
    /// so that when time is up the worker can abandon it (with a fresh
    /// instance) without blocking the other workers.
    async fn attempt_on_thread(
        &mut self,
        value: &Value,
        limit: Duration,
    ) -> Result<Result<(), StageError>, String> {
        let Slot::Transform(mut t) = std::mem::replace(&mut self.slot, Slot::Lent) else {
            unreachable!("called for transforms")
        };
        let value = value.clone();
        let lineage = self.held.out.lineage().clone();
        let call = tokio::task::spawn_blocking(move || {
            let mut out = Output::new();
            out.set_lineage(lineage);
            let result = catch(|| t.apply(&value, &mut out));
            (t, out, result)
        });
        match tokio::time::timeout(limit, call).await {
            Ok(Ok((t, mut out, Ok(result)))) => {
                self.slot = Slot::Transform(t);
                let (main, routed) = out.outputs_mut();
                let (held_main, held_routed) = self.held.out.outputs_mut();
                held_main.append(main);
                held_routed.append(routed);
                Ok(result)
            }
            Ok(Ok((_, _, Err(panic)))) => {
                self.slot = make(self.st, self.index, self.factory)?;
                Ok(Err(StageError::permanent(panic)))
            }
            Ok(Err(join)) => {
                self.slot = make(self.st, self.index, self.factory)?;
                Ok(Err(StageError::permanent(format!(
                    "worker thread failed: {join}"
                ))))
            }
            Err(_) => {
                // The thread finishes on its own; its result is dropped.
                self.slot = make(self.st, self.index, self.factory)?;
                Ok(Err(timed_out(limit)))
            }
        }
    }

    /// Hands the latencies recorded so far to the stage about once a
    /// second, so live reports show them while the run goes.
    fn share_latency(&mut self) {
        if self.latency_shared.elapsed() >= Duration::from_secs(1) && !self.latency.is_empty() {
            self.st
                .counters
                .merge_latency(std::mem::take(&mut self.latency));
            self.latency_shared = Instant::now();
        }
    }

    /// The input ran dry: let a transform flush what it buffers.
    async fn flush(&mut self) -> Result<(), String> {
        let Slot::Transform(t) = &mut self.slot else {
            return Ok(());
        };
        let flushed = catch(|| t.flush(&mut self.held.out));
        self.emit(None).await;
        match flushed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("stage \"{}\": {e}", self.st.name)),
            Err(panic) => Err(format!("stage \"{}\": flush {panic}", self.st.name)),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match &self.slot {
            Slot::Processor(p) => p.deadline(),
            _ => None,
        }
    }

    async fn on_deadline(&mut self) -> Result<(), String> {
        let Slot::Processor(p) = &mut self.slot else {
            return Ok(());
        };
        let result = CatchUnwind(p.on_deadline(&mut self.held.out)).await;
        self.count_unprompted();
        self.emit(None).await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("stage \"{}\": {e}", self.st.name)),
            Err(panic) => Err(format!("stage \"{}\": on_deadline {panic}", self.st.name)),
        }
    }

    /// Counts what `on_deadline` or `finish` emitted (a batcher's
    /// timed-out or last batch), which came with no input.
    fn count_unprompted(&self) {
        self.pipeline
            .account_unprompted(self.st, self.held.out.len());
    }

    /// Passes the outputs on: in input order for an `ordered` stage (by the
    /// take's ticket), straight away otherwise.
    async fn emit(&mut self, ticket: Option<u64>) {
        self.st.counters.add_named(self.held.out.take_counts());
        let (main, routed) = self.held.out.outputs_mut();
        match (&self.st.reorder, ticket) {
            (Some(reorder), Some(ticket)) => {
                reorder
                    .complete(self.pipeline, self.st, ticket, main, routed)
                    .await
            }
            _ => self.pipeline.send(self.st, main, routed).await,
        }
    }
}

fn timed_out(limit: Duration) -> StageError {
    StageError::retryable(format!(
        "timed out after {}",
        humantime::format_duration(limit)
    ))
}

/// What a worker holds between taking items and passing them on: the
/// batch it took, the outputs it has not sent and the failed items it has
/// not disposed of. On a normal end it holds nothing. When the worker never
/// gets to them (the run stops on `on_error: fail`, the task is cancelled),
/// dropping it marks them failed, so no source counts an item done that
/// never reached a sink.
struct InFlight {
    batch: Vec<Item>,
    out: Output,
    failed: Vec<Failed>,
}

impl InFlight {
    fn new() -> Self {
        InFlight {
            batch: Vec::with_capacity(BATCH),
            out: Output::new(),
            failed: Vec::new(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The lineage of the input being handled when the worker stopped.
        self.out.lineage().mark(Outcome::Abandoned);
        let (main, routed) = self.out.outputs_mut();
        let failed = self.failed.iter().map(|f| &f.item);
        for item in self
            .batch
            .iter()
            .chain(main.iter())
            .chain(routed.iter().map(|(_, item)| item))
            .chain(failed)
        {
            item.lineage.mark(Outcome::Abandoned);
        }
    }
}
