//! The stage traits: the contract between a stage and the runner.
//!
//! # Execution model
//!
//! A pipeline is a graph of stages joined by bounded queues. The runner owns
//! everything around a stage: its input queue, its pool of `workers`, rate
//! limits, retries, timeouts, `on_error`, stats and completion hooks. A stage
//! only turns values into values.
//!
//! * A **source** ([`Source`]) runs as one task. The runner calls
//!   [`Source::next`] in a loop; each call emits a few items into an
//!   [`Output`], and the runner moves them downstream (waiting while the
//!   downstream queues are full: backpressure). The loop ends when `next`
//!   returns [`Next::Done`], when the run is interrupted (the runner stops
//!   calling, or drops a pending `next` future), or on an error, which stops
//!   the run (exit code 1).
//! * A **processor or sink** runs as `workers` concurrent workers on one
//!   input queue. Each worker owns an instance made by the stage's worker
//!   factory, so it owns its state (a connection, a subprocess); share
//!   state between workers through an `Arc` captured by the factory. A
//!   worker is either a [`Transform`] (synchronous: the cheap path, called
//!   on batches of items with no `.await` and no allocation of its own) or a
//!   [`Processor`] (asynchronous, for I/O).
//!
//! # The worker factory
//!
//! The factory ([`Stage::Workers`], [`Stage::transform`],
//! [`Stage::processor`]) is called when each worker starts, with the
//! worker's index, and **again, with the same index, whenever the runner
//! replaces that worker's instance**:
//!
//! * after a call on the instance panicked (`apply`, `commit` or
//!   `process`): its state is suspect. The item (for `commit`, every item
//!   it was committing) fails with the panic's message, not retried, and
//!   the next item goes to a fresh instance;
//! * after a [`Transform`] under a `timeout:` that is not
//!   [`Transform::interruptible`] ran out of time on its blocking thread
//!   (or that thread failed): the runner abandons the instance, whose call
//!   continues on its thread until it returns; its outputs are then
//!   dropped, and so is the instance.
//!
//! So a factory may be called any number of times over a run, and an
//! abandoned instance may still be running while its replacement (same
//! index) works: keep what must exist once per stage in the `Arc` the
//! factory captures, not in an instance. A replaced instance is dropped
//! without its `finish` being called, so what it buffered is lost. A
//! factory error when the worker starts or when it is replaced stops the
//! run. A [`Processor`] whose `process` ran out of time is not replaced:
//! its future is dropped and the same instance gets the next item.
//!
//! For every input item the runner calls `apply` / `process` once per
//! attempt, with the item's value borrowed: the runner keeps it for a retry
//! or a dead letter, and a stage that passes it on clones it (cheap: values
//! share their contents). What the call emits into the [`Output`] goes to
//! every consumer of the stage. If the call returns an error, whatever it
//! emitted during that attempt is discarded; the runner then retries
//! (retryable errors, up to `retry.attempts`) or applies `on_error`.
//!
//! When the input queue is finished (every upstream stage finished and the
//! queue is drained) each worker's `finish` is called once, then the stage
//! finishes and its consumers learn it. An error from `finish` stops the run.
//! A sink is a processor whose outputs go nowhere: it emits nothing.
//!
//! # Outputs and ports
//!
//! [`Output::emit`] sends to the stage's main output, read as
//! `inputs: [stage]`. A stage type that declares named ports
//! ([`crate::StageOptions::ports`]) also sends with [`Output::emit_to`],
//! read as `inputs: [stage.port]`. Failed items leave by the error port,
//! which `on_error: <stage>` reads. Each output goes to every stage that
//! reads it (a copy each); an output nothing reads discards its items
//! (they count as filtered).
//!
//! # The order of calls: a contract
//!
//! For one run, the runner guarantees this order:
//!
//! 1. Every stage is built ([`crate::StageOptions::build`]); nothing has
//!    run yet. Building has no side effects (see its documentation).
//! 2. Each source's [`Source::next`] is called from one task, never
//!    concurrently, until it returns [`Next::Done`] or an error, or the
//!    run stops (then a pending call may be dropped: the items it emitted
//!    are abandoned if they could not be sent).
//! 3. Meanwhile each processor or sink worker is made by its factory, then
//!    gets `apply` / `process` once per attempt per item (with `commit`
//!    after each successful batch or attempt of a [`Transform`], `flush`
//!    when its input runs dry, `on_deadline` when its deadline passes), in
//!    the order it takes items from its queue.
//! 4. When its input is finished, each worker's `finish` runs once (with
//!    [`Output::run_stopping`] telling whether the run is ending early),
//!    then the worker is dropped.
//! 5. Each source item's completion hook ([`crate::Lineage::with_hook`])
//!    runs exactly once, with its [`crate::Outcome`], when the last item
//!    made from it is gone: written by a sink, filtered out, dropped,
//!    dead-lettered, or abandoned by a stop. Hooks run on the runner's
//!    threads, in no particular order, while the run goes.
//! 6. Once every processor and sink worker has ended (so every hook of
//!    every item has run), each source's [`Source::close`] is awaited. This
//!    happens on every end: finished, failed or interrupted; only a second
//!    Ctrl-C, which exits at once, skips it. One exception to "every hook
//!    has run": a call the runner gave up on while it ran on a blocking
//!    thread (a [`Transform`] that is not interruptible, under a
//!    `timeout:`) holds its item until it returns, so that item's hook
//!    (reporting it failed) may run later, or never if the process exits
//!    first; a source must treat an item it heard nothing of as abandoned.
//! 7. The report is made and the process exits.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::{Item, Lineage, Value};

/// How many items the runner moves between stages at a time: the size a
/// source should aim for in one [`Source::next`] call.
pub const BATCH: usize = 256;

/// What a source call says about the items still to come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// More items may follow: call `next` again.
    More,
    /// The source is exhausted.
    Done,
}

/// A stage that makes items: a file reader, a generator, a queue consumer.
///
/// Called from one task, never concurrently. Emit up to about [`BATCH`]
/// items per call and return; do not hold back items you already have while
/// awaiting something slow, since nothing moves downstream until `next`
/// returns.
#[async_trait]
pub trait Source: Send + 'static {
    /// Emits the next items into `out`.
    async fn next(&mut self, out: &mut Output) -> Result<Next, StageError>;

    /// How many items the source emits in all, when it knows (for progress
    /// and ETA).
    fn total(&self) -> Option<u64> {
        None
    }

    /// Called once, last: after `next` was called for the last time,
    /// every processor and sink of the run has ended, and the completion
    /// hook of every item this source emitted has run (see the call order
    /// in the module's documentation). The place to commit what those
    /// outcomes said (acknowledge messages, write a checkpoint) and to
    /// close connections. It is awaited before the process exits, also
    /// when the run was interrupted or failed; an error fails the run.
    async fn close(&mut self) -> Result<(), StageError> {
        Ok(())
    }

    /// For a durable run (`--state`): where the source stands, as an
    /// opaque value the runner saves in the checkpoint and hands back to
    /// [`Source::resume`] in the next run. Called between two `next`
    /// calls, when every item emitted so far has its outcome: the position
    /// must say "everything before it is done". `None` (the default): this
    /// source cannot be resumed, and `--state` refuses it.
    fn position(&self) -> Option<serde_json::Value> {
        None
    }

    /// Before the first `next` of a resumed run: continue after
    /// `position`, a value [`Source::position`] gave in an earlier run.
    /// An error (the input changed since) refuses the resume.
    fn resume(&mut self, _position: serde_json::Value) -> Result<(), StageError> {
        Err(StageError::permanent("this source cannot resume"))
    }
}

/// A synchronous, cheap per-item worker: a `map`, a `filter`, a file sink.
///
/// The runner calls it on a batch of input items in a tight loop, with no
/// `.await` between items. It must not block for long: slow or blocking work
/// belongs in a [`Processor`].
///
/// Under a `timeout:`, a transform that is not
/// [`interruptible`](Transform::interruptible) is called on a blocking
/// thread, one item at a time, and may be **abandoned mid-call**: when
/// time is up the attempt fails with a (retryable) timeout error, the call
/// continues on its thread until it returns, its result and outputs are
/// dropped, and the worker goes on with a fresh instance from the factory
/// (see the [module documentation](crate::stage#the-worker-factory)). Such
/// a transform must tolerate being left mid-call, with a replacement
/// running beside it.
pub trait Transform: Send + 'static {
    /// Handles one input value, emitting zero or more outputs.
    fn apply(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError>;

    /// [`Transform::apply`], with the input value lent for good: a
    /// transform that can reuse its memory (a `map` that sets one field of
    /// an object changes it in place instead of copying it) overrides this
    /// and may take the value (`std::mem::take`) once it knows the call
    /// succeeds. On an error, or a panic, the input must be as it was: it
    /// goes into the dead letter. The runner calls this instead of `apply`
    /// for the transforms of processor stages on its batched path (where
    /// nothing retries the item), never for sinks, whose failed commits
    /// report their items. The default calls `apply`.
    fn apply_mut(&mut self, input: &mut Value, out: &mut Output) -> Result<(), StageError> {
        self.apply(input, out)
    }

    /// Whether every long computation of this transform can be stopped by
    /// flow's interrupt checks: jq expressions run by [`crate::Expr`] can,
    /// and a loop of the stage's own can call [`crate::interrupt::check`].
    /// Under a `timeout:` such a transform runs in place on its worker, at
    /// almost no cost, and stops when time is up.
    ///
    /// Any other transform under a `timeout:` runs on a blocking thread
    /// and may be abandoned mid-call when time is up: the call continues on
    /// its thread until it returns, its result is dropped, and the runner
    /// makes a fresh instance with the factory for the next item. Returning
    /// `true` for a computation that does not check would let it overrun the
    /// timeout and hold its worker. The default is `false`.
    fn interruptible(&self) -> bool {
        false
    }

    /// Called when the worker's input queue has run empty after a batch:
    /// a good moment to flush buffered output, so a slow stream shows up
    /// at once without a write per item. An error stops the run.
    fn flush(&mut self, _out: &mut Output) -> Result<(), StageError> {
        Ok(())
    }

    /// Called after the items of a batch were applied (on the per-item
    /// path, after each successful attempt), before they are counted as
    /// handled: a sink that buffers writes them out here. An error fails
    /// every item applied since the last successful commit, so the sink
    /// must have undone whatever part of them it wrote. The default does
    /// nothing.
    fn commit(&mut self) -> Result<(), StageError> {
        Ok(())
    }

    /// Called once when the input is finished: emit or write what is held.
    /// [`Output::run_stopping`] tells whether the run is ending early.
    fn finish(&mut self, _out: &mut Output) -> Result<(), StageError> {
        Ok(())
    }

    /// Called once for the whole stage, on the instance of the worker
    /// that finished last, after every worker's [`Transform::finish`]:
    /// the place to emit what the workers gathered together (state they
    /// share, such as an `Arc<Mutex<…>>`), with no counting of workers of
    /// your own. An output emitted here has no lineage unless given one
    /// ([`Output::emit_with`]): give it the lineages of the items it was
    /// made from ([`crate::Held::take`]), so that their sources hear they
    /// were delivered only when it was. Not called when a worker failed.
    fn finish_stage(&mut self, _out: &mut Output) -> Result<(), StageError> {
        Ok(())
    }
}

/// An asynchronous worker: HTTP calls, subprocesses, timers.
///
/// One instance per worker at a time (the factory makes another if a call
/// panics: see the [module documentation](crate::stage#the-worker-factory));
/// `process` is never called concurrently on one instance, and a worker
/// takes one item at a time from the input queue. A pending `process`
/// future may be dropped (timeout, abort): leave the instance usable for
/// the next call, or fail the next call.
#[async_trait]
pub trait Processor: Send + 'static {
    /// Handles one input value, emitting zero or more outputs.
    async fn process(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError>;

    /// When this worker wants [`Processor::on_deadline`] called even if no
    /// input arrives (a batcher's timeout). Checked after every call.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// Called once the [`Processor::deadline`] has passed.
    async fn on_deadline(&mut self, _out: &mut Output) -> Result<(), StageError> {
        Ok(())
    }

    /// Called once when the input is finished: emit or write what is held.
    async fn finish(&mut self, _out: &mut Output) -> Result<(), StageError> {
        Ok(())
    }
}

/// One worker of a processor or sink stage, as the factory makes it.
pub enum Worker {
    /// A synchronous worker.
    Transform(Box<dyn Transform>),
    /// An asynchronous worker.
    Processor(Box<dyn Processor>),
}

type WorkerFactory = dyn Fn(usize) -> Result<Worker, StageError> + Send + Sync;

/// A stage as its type builds it from the options: ready to run.
pub enum Stage {
    /// A source: one instance.
    Source(Box<dyn Source>),
    /// A processor or sink: a factory that makes a worker's instance, given
    /// the worker's index (0-based). Called when each worker starts and
    /// again to replace an instance after a panic or an abandoned timed-out
    /// call (see the [module documentation](crate::stage#the-worker-factory)), so
    /// possibly many times per index. An error stops the run.
    Workers(Box<WorkerFactory>),
}

impl Stage {
    /// A source stage.
    pub fn source(source: impl Source) -> Self {
        Stage::Source(Box::new(source))
    }

    /// A stage whose workers are transforms made by `make`: called when each
    /// worker starts and again whenever an instance is replaced (after a
    /// panic, or after a timed-out call on a blocking thread was
    /// abandoned; see the [module documentation](crate::stage#the-worker-factory)).
    pub fn transform<T: Transform>(make: impl Fn() -> T + Send + Sync + 'static) -> Self {
        Stage::Workers(Box::new(move |_| Ok(Worker::Transform(Box::new(make())))))
    }

    /// A stage whose workers are processors made by `make`, given the
    /// worker's index: called when each worker starts and again, with the
    /// same index, whenever an instance is replaced after a panic (see the
    /// [module documentation](crate::stage#the-worker-factory)). It may fail, e.g.
    /// when a subprocess does not start; that stops the run.
    pub fn processor<P: Processor>(
        make: impl Fn(usize) -> Result<P, StageError> + Send + Sync + 'static,
    ) -> Self {
        Stage::Workers(Box::new(move |i| Ok(Worker::Processor(Box::new(make(i)?)))))
    }
}

/// Outputs held before they are passed on while a stage is still handling
/// an input: past this many, the runner sends them on at once (see
/// [`Output::emit`]).
pub const SPILL_AT: usize = 1024;

/// The most outputs one input may have held at once where they cannot be
/// passed on before the input is done (an `ordered` stage, a stage under a
/// `timeout:` on a thread of its own): past it, [`Output::is_full`].
pub const MAX_HELD: usize = 100_000;

/// Runner use: how an [`Output`] passes outputs on early.
#[doc(hidden)]
pub type Spill = Box<dyn FnMut(&mut Vec<Item>, &mut Vec<(Port, Item)>) + Send>;

/// One of a stage's named output ports, by its place in the list its
/// options declared ([`crate::StageOptions::ports`]): the first is
/// `Port(0)`. Items emitted with [`Output::emit`] go to the stage's main
/// output instead; `inputs: [stage.port]` reads a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Port(pub u32);

/// Where an [`Output`] stood, to go back to ([`Output::rewind`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mark {
    items: usize,
    routed: usize,
}

/// Where a stage puts the items it makes.
///
/// [`Output::emit`] gives the new item the lineage of the input being
/// handled, so completion hooks follow items without the stage's help.
///
/// An input may have any number of outputs (`range(1e12)`): once
/// [`SPILL_AT`] are held, the runner passes them on at once, waiting
/// while the next queue is full (backpressure), so memory stays bounded.
/// Outputs passed on that way are final: if the input then fails, they
/// have gone already, and the failure is not retried. Where outputs cannot
/// be passed on early, at most [`MAX_HELD`] are held and a stage should stop
/// emitting when [`Output::is_full`] (the jq stages fail the item then).
#[derive(Default)]
pub struct Output {
    items: Vec<Item>,
    /// Items emitted to a named port ([`Output::emit_to`]), with the port.
    routed: Vec<(Port, Item)>,
    current: Lineage,
    failed: Vec<(Item, StageError)>,
    spill: Option<Spill>,
    spilled: u64,
    stopping: bool,
    /// Counts of the stage's own, not yet handed to the runner.
    counts: Vec<(&'static str, u64)>,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Output")
            .field("items", &self.items.len())
            .field("routed", &self.routed.len())
            .field("failed", &self.failed.len())
            .field("spilled", &self.spilled)
            .finish()
    }
}

impl Output {
    /// An empty output: the runner makes one per worker; a stage's own
    /// tests make one to call `apply` or `process` with.
    pub fn new() -> Self {
        Output {
            items: Vec::with_capacity(BATCH),
            ..Output::default()
        }
    }

    /// Emits a value made from the current input.
    #[inline]
    pub fn emit(&mut self, value: Value) {
        let lineage = self.current.clone();
        self.push(Item { value, lineage });
    }

    /// Adds `n` to a count of the stage's own, shown with its stats
    /// (`"counts": {"evicted": 12}` in the stats JSON): what users of the
    /// stage should be able to see, such as accumulators a `reduce`
    /// emitted early to stay within its `max_keys`.
    pub fn count(&mut self, name: &'static str, n: u64) {
        match self.counts.iter_mut().find(|(k, _)| *k == name) {
            Some((_, total)) => *total += n,
            None => self.counts.push((name, n)),
        }
    }

    /// Runner use: the counts added since the last call.
    #[doc(hidden)]
    pub fn take_counts(&mut self) -> Vec<(&'static str, u64)> {
        std::mem::take(&mut self.counts)
    }

    /// Emits a value with an explicit lineage: a source attaching a
    /// completion hook, or a batcher emitting [`Lineage::merge`] of the
    /// items it held.
    pub fn emit_with(&mut self, value: Value, lineage: Lineage) {
        self.push(Item { value, lineage });
    }

    /// Emits a value made from the current input to the named output
    /// `port` (see [`Port`]) instead of the main output. An item may go to
    /// several ports: emit it to each.
    pub fn emit_to(&mut self, port: Port, value: Value) {
        let lineage = self.current.clone();
        self.routed.push((port, Item { value, lineage }));
        self.spill_if_due();
    }

    #[inline]
    fn push(&mut self, item: Item) {
        self.items.push(item);
        self.spill_if_due();
    }

    #[inline]
    fn spill_if_due(&mut self) {
        if self.items.len() + self.routed.len() >= SPILL_AT && self.spill.is_some() {
            self.spill_now();
        }
    }

    #[cold]
    #[inline(never)]
    fn spill_now(&mut self) {
        if let Some(spill) = &mut self.spill {
            self.spilled += (self.items.len() + self.routed.len()) as u64;
            spill(&mut self.items, &mut self.routed);
            self.items.clear();
            self.routed.clear();
        }
    }

    /// True when no more outputs should be emitted for this input: [`MAX_HELD`]
    /// are held and cannot be passed on yet.
    pub fn is_full(&self) -> bool {
        self.items.len() + self.routed.len() >= MAX_HELD
    }

    /// Runner use: passes held outputs on early through `spill` once
    /// [`SPILL_AT`] are held (`None`: hold them all).
    #[doc(hidden)]
    pub fn set_spill(&mut self, spill: Option<Spill>) {
        self.spill = spill;
    }

    /// Runner use: how many outputs were passed on early, in all.
    #[doc(hidden)]
    pub fn spilled(&self) -> u64 {
        self.spilled
    }

    /// A source: a record it read but could not turn into an item (a line
    /// that is not JSON, a CSV row with too many fields). `record` is what
    /// it has of it (the raw text, say) and `error` says why, naming the
    /// file and line. The runner applies the source's `on_error`: `fail`
    /// (the default for sources) stops the run after the items emitted
    /// before it; `drop` counts and logs it; a dead-letter stage receives
    /// `{"item": record, "error": {…}}`. The source goes on either way.
    pub fn fail(&mut self, record: Value, error: StageError) {
        let lineage = self.current.clone();
        self.failed.push((
            Item {
                value: record,
                lineage,
            },
            error,
        ));
    }

    /// [`Output::fail`] with an explicit lineage: a source whose records
    /// carry a completion hook (a message it acknowledges once its outcome
    /// is final) fails a record with that hook, so it hears whether the
    /// record was dead-lettered, dropped or abandoned.
    pub fn fail_with(&mut self, record: Value, lineage: Lineage, error: StageError) {
        self.failed.push((
            Item {
                value: record,
                lineage,
            },
            error,
        ));
    }

    /// Runner use: the records failed with [`Output::fail`].
    #[doc(hidden)]
    pub fn take_failed(&mut self) -> Vec<(Item, StageError)> {
        std::mem::take(&mut self.failed)
    }

    /// True in a `finish` when the run is ending early (it failed or was
    /// interrupted) rather than because every input was handled: a sink
    /// that has written nothing then leaves its destination as it was.
    pub fn run_stopping(&self) -> bool {
        self.stopping
    }

    /// Runner use: set before it calls `finish`.
    #[doc(hidden)]
    pub fn set_run_stopping(&mut self, stopping: bool) {
        self.stopping = stopping;
    }

    /// The lineage of the input being handled, for a stage that keeps items
    /// across calls.
    pub fn lineage(&self) -> &Lineage {
        &self.current
    }

    /// Items emitted (to any output) and not yet taken by the runner.
    pub fn len(&self) -> usize {
        self.items.len() + self.routed.len()
    }

    /// True when no item was emitted and not yet taken by the runner.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.routed.is_empty()
    }

    /// Runner use: sets the lineage that [`Output::emit`] gives outputs.
    #[doc(hidden)]
    pub fn set_lineage(&mut self, lineage: Lineage) {
        self.current = lineage;
    }

    /// Runner use: takes back the current lineage (a failed input's).
    #[doc(hidden)]
    pub fn take_lineage(&mut self) -> Lineage {
        std::mem::take(&mut self.current)
    }

    /// Runner use: the items emitted to the main output.
    #[doc(hidden)]
    pub fn items_mut(&mut self) -> &mut Vec<Item> {
        &mut self.items
    }

    /// Runner use: the items emitted to the main output and to named ports.
    #[doc(hidden)]
    pub fn outputs_mut(&mut self) -> (&mut Vec<Item>, &mut Vec<(Port, Item)>) {
        (&mut self.items, &mut self.routed)
    }

    /// Runner use: where the outputs stand now.
    #[doc(hidden)]
    pub fn mark(&self) -> Mark {
        Mark {
            items: self.items.len(),
            routed: self.routed.len(),
        }
    }

    /// Runner use: forgets what was emitted after `mark` (a failed
    /// attempt's outputs).
    #[doc(hidden)]
    pub fn rewind(&mut self, mark: Mark) {
        self.items.truncate(mark.items);
        self.routed.truncate(mark.routed);
    }
}

/// An error handling one item (or, from a source, the error that stops it).
///
/// Retryable errors (a timeout, a 503, a dead subprocess) are tried again
/// when the stage has `retry`; permanent ones (a 404, an expression that
/// fails on this input) never are.
///
/// One more kind, [`StageError::output_closed`], is not about the item: a
/// sink's reader has gone (`flow run p.yaml | head` closed the pipe). The
/// runner then ends the run as a success: the sources stop, what is in the
/// pipeline drains, and the items that sink could not write are counted as
/// abandoned, not failed.
#[derive(Clone, Debug, PartialEq)]
pub struct StageError {
    message: String,
    retryable: bool,
    retry_after: Option<Duration>,
    output_closed: bool,
}

impl StageError {
    /// An error that another attempt cannot fix.
    pub fn permanent(message: impl fmt::Display) -> Self {
        StageError {
            message: message.to_string(),
            retryable: false,
            retry_after: None,
            output_closed: false,
        }
    }

    /// A sink's destination has stopped reading (a closed pipe: `EPIPE`):
    /// nobody wants more output. Returned from [`Transform::commit`] (or
    /// `apply`, `process`, `finish`) it stops the run normally instead of
    /// failing items: see the type's documentation.
    pub fn output_closed(message: impl fmt::Display) -> Self {
        StageError {
            output_closed: true,
            ..StageError::permanent(message)
        }
    }

    /// Whether this is [`StageError::output_closed`].
    pub fn is_output_closed(&self) -> bool {
        self.output_closed
    }

    /// An error that another attempt may not have.
    pub fn retryable(message: impl fmt::Display) -> Self {
        StageError {
            retryable: true,
            ..StageError::permanent(message)
        }
    }

    /// Asks the retry layer to wait this long before the next attempt
    /// instead of its backoff (an HTTP `Retry-After`).
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// What went wrong, as given when the error was made.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether another attempt may succeed ([`StageError::retryable`]).
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The wait asked for with [`StageError::with_retry_after`], if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StageError {}

impl From<std::io::Error> for StageError {
    /// I/O errors are retryable unless they say the thing is missing or not
    /// allowed.
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match e.kind() {
            NotFound | PermissionDenied | InvalidInput | InvalidData => StageError::permanent(e),
            _ => StageError::retryable(e),
        }
    }
}
