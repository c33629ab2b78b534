//! The path an item takes out of a stage, in one place: to the consumers
//! of the port it was emitted to (a copy each for fan-out, in input order
//! for an `ordered` stage), to the error port when it failed (`on_error`),
//! the counts on the way, and the outcome its source item gets.
//!
//! Every stage has numbered outputs ([`PortId`]): `MAIN`, the error port
//! `ERROR` (where `on_error: <stage>` sends dead letters: the same
//! mechanism as any port), then its named ports in declared order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use flow_core::value::{int, object, string, to_json};
use flow_core::{Item, Outcome, Port, StageError, StageKind, Value};
use tokio::sync::Notify;

use crate::control::FlowControl;
use crate::plan::OnError;
use crate::queue::Queue;
use crate::stats::StageCounters;
use crate::stop::{Flag, Stops};

/// An output of a stage, by number: [`MAIN`], [`ERROR`], then `2 + k` for
/// the named port `k`.
pub(crate) type PortId = usize;
/// The main output: `inputs: [stage]`.
pub(crate) const MAIN: PortId = 0;
/// The error port: `on_error: <stage>`.
pub(crate) const ERROR: PortId = 1;

/// The named port `port` of a stage.
pub(crate) fn named(port: Port) -> PortId {
    2 + port.0 as usize
}

/// One output of a stage: the queues of the stages that read it, and how
/// many items were emitted to it.
pub(crate) struct Outlet {
    /// The port's name (`""` for the main output, `_error` for the error
    /// port).
    pub(crate) name: String,
    pub(crate) queues: Vec<Arc<Queue>>,
    pub(crate) emitted: AtomicU64,
}

/// A stage as the executor sees it.
pub(crate) struct StageRun {
    pub(crate) name: String,
    pub(crate) type_name: String,
    pub(crate) kind: StageKind,
    pub(crate) workers: usize,
    pub(crate) on_error: OnError,
    pub(crate) control: FlowControl,
    /// For `ordered: true`: holds outputs back until earlier ones went.
    pub(crate) reorder: Option<Arc<Reorder>>,
    pub(crate) input: Option<Arc<Queue>>,
    /// Its outputs by [`PortId`].
    pub(crate) outlets: Vec<Outlet>,
    /// Workers (or the source task) still running; the last one closes
    /// the stage's outputs.
    pub(crate) live: AtomicUsize,
    /// Workers yet to finish their input: the last one calls the stage's
    /// [`flow_core::Transform::finish_stage`].
    pub(crate) finishing: AtomicUsize,
    pub(crate) counters: StageCounters,
    /// For reports: the names of its inputs (`stage` or `stage.port`) and
    /// its `on_error`.
    pub(crate) inputs: Vec<String>,
    pub(crate) on_error_name: String,
}

impl StageRun {
    /// The named ports and how many items each was given, for reports.
    pub(crate) fn port_counts(&self) -> Vec<(String, u64)> {
        self.outlets[2..]
            .iter()
            .map(|o| (o.name.clone(), o.emitted.load(Ordering::Relaxed)))
            .collect()
    }
}

/// A failed item whose last attempt failed, waiting for `on_error`.
pub(crate) struct Failed {
    pub item: Item,
    pub error: StageError,
    pub attempts: u32,
}

/// What a call of an `ordered` stage emitted, waiting for its turn: to
/// its main output and to named ports.
#[derive(Default)]
struct Emitted {
    main: Vec<Item>,
    routed: Vec<(Port, Item)>,
}

impl Drop for Emitted {
    /// Outputs never sent (the run stopped before their turn) are
    /// abandoned.
    fn drop(&mut self) {
        let routed = self.routed.drain(..).map(|(_, item)| item);
        for item in self.main.drain(..).chain(routed) {
            item.lineage.mark(Outcome::Abandoned);
        }
    }
}

/// Every stage of a run and what stops it: what workers and sources share.
pub(crate) struct Pipeline {
    pub(crate) stages: Vec<StageRun>,
    pub(crate) stops: Arc<Stops>,
    /// Raised when every worker of every processor and sink has ended:
    /// every outcome is known, and the sources may close.
    pub(crate) drained: Flag,
    /// Processors' and sinks' workers still running.
    pub(crate) live_workers: AtomicUsize,
    /// A durable run's checkpoints.
    pub(crate) checkpoints: Option<Arc<crate::durable::Checkpoints>>,
    /// A test's run (`flow test`): records what leaves each stage.
    pub(crate) tap: Option<Arc<crate::testing::Tap>>,
}

impl Pipeline {
    /// A sink's output was closed by its reader (`flow run | head`): nobody
    /// wants more, so the run ends, as a success. The sources stop, what is
    /// already in the pipeline drains (other sinks still write theirs), and
    /// what this sink can no longer write is counted as its abandoned items,
    /// not as failures.
    pub(crate) fn output_closed(&self, st: &StageRun) {
        if !self.stops.stopping() {
            tracing::debug!(stage = %st.name, "the output was closed by its reader; stopping the sources");
        }
        self.stops.stop.raise();
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

    /// Applies `on_error` to items whose last attempt failed: each is
    /// dropped, sent to the error port as a dead letter, or (`fail`) stops
    /// the run, which the `Err` message says.
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
            let letter = |item: Value| {
                let error = object([
                    ("stage", string(st.name.clone())),
                    ("message", string(error.message())),
                    ("attempts", int(i64::from(attempts))),
                ]);
                object([("item", item), ("error", error)])
            };
            if let Some(tap) = &self.tap {
                let value = letter(item.value.clone());
                tap.record(&st.name, ERROR, std::iter::once(&value));
            }
            let tries = match attempts {
                1 => String::new(),
                n => format!(" (after {n} attempts)"),
            };
            match st.on_error {
                OnError::Fail => {
                    // The run stops: this item and the other failed ones
                    // are not handled.
                    item.lineage.mark(Outcome::Abandoned);
                    failed.for_each(|f| f.item.lineage.mark(Outcome::Abandoned));
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
                    item.lineage.mark(Outcome::Dropped);
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
                    // Dead-lettered once its letter is delivered; a letter
                    // that is not (the run stops) makes it abandoned.
                    item.lineage.mark(Outcome::DeadLettered);
                    StageCounters::add(&c.dead_lettered, 1);
                    letters.push(Item {
                        value: letter(item.value),
                        lineage: item.lineage,
                    });
                }
            }
        }
        self.send_port(st, ERROR, &mut letters, None).await;
        Ok(())
    }

    /// Passes a call's outputs on: each to the consumers of its port.
    pub(crate) async fn send(
        &self,
        st: &StageRun,
        main: &mut Vec<Item>,
        routed: &mut Vec<(Port, Item)>,
    ) {
        self.send_until(st, main, routed, None).await
    }

    /// [`Pipeline::send`], giving up when `until` is raised: what a queue
    /// did not take is abandoned, counted as that consumer's.
    pub(crate) async fn send_until(
        &self,
        st: &StageRun,
        main: &mut Vec<Item>,
        routed: &mut Vec<(Port, Item)>,
        until: Option<&Flag>,
    ) {
        if !main.is_empty() {
            self.send_port(st, MAIN, main, until).await;
        }
        if !routed.is_empty() {
            self.send_routed(st, routed, until).await;
        }
    }

    /// Items emitted to named ports, grouped by port (in emitted order
    /// within each).
    async fn send_routed(
        &self,
        st: &StageRun,
        routed: &mut Vec<(Port, Item)>,
        until: Option<&Flag>,
    ) {
        for port in 2..st.outlets.len() {
            let mut batch: Vec<Item> = routed
                .extract_if(.., |(p, _)| named(*p) == port)
                .map(|(_, item)| item)
                .collect();
            if !batch.is_empty() {
                self.send_port(st, port, &mut batch, until).await;
            }
        }
        // A port the stage did not declare: nothing reads it.
        for (port, item) in routed.drain(..) {
            debug_assert!(false, "stage {} emitted to undeclared {port:?}", st.name);
            drop(item);
        }
    }

    /// Moves `items` into every queue reading port `port` of `st` (a copy
    /// each but the last), counting the time spent waiting as
    /// backpressure. A port nothing reads discards them: filtered out.
    async fn send_port(
        &self,
        st: &StageRun,
        port: PortId,
        items: &mut Vec<Item>,
        until: Option<&Flag>,
    ) {
        if items.is_empty() {
            return;
        }
        let outlet = &st.outlets[port];
        // Failed items were recorded as they failed, whatever `on_error`.
        if let Some(tap) = self.tap.as_ref().filter(|_| port != ERROR) {
            tap.record(&st.name, port, items.iter().map(|i| &i.value));
        }
        if port >= 2 {
            StageCounters::add(&outlet.emitted, items.len() as u64);
        }
        let Some((last, rest)) = outlet.queues.split_last() else {
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
}

/// Marks one worker (or a source) of a stage as ended, however it ends
/// (panics included); the last one closes the stage's outputs, so the end
/// of input always travels downstream, and releases what its input still
/// holds (nothing will take it).
pub(crate) struct Finished<'a> {
    pub(crate) pipeline: &'a Pipeline,
    pub(crate) stage: &'a StageRun,
}

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        let st = self.stage;
        if st.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            let mut closed: Vec<*const Queue> = Vec::new();
            for q in st.outlets.iter().flat_map(|o| &o.queues) {
                let ptr = Arc::as_ptr(q);
                if !closed.contains(&ptr) {
                    closed.push(ptr);
                    q.close_producer();
                }
            }
            if let Some(q) = &st.input {
                // Normally empty; after a failure its items are abandoned,
                // and producers no longer wait for room.
                q.halt();
            }
            if let Some(r) = &st.reorder {
                r.halt();
                r.release();
            }
        }
        if st.kind != StageKind::Source
            && self.pipeline.live_workers.fetch_sub(1, Ordering::AcqRel) == 1
        {
            self.pipeline.drained.raise();
        }
    }
}

/// Items a stage had but will never handle (the run stopped): counted as
/// its abandoned items, and abandoned for their sources.
pub(crate) fn abandon_items(c: &StageCounters, items: impl Iterator<Item = Item>) {
    let mut n = 0;
    for item in items {
        item.lineage.mark(Outcome::Abandoned);
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

/// Keeps an `ordered: true` stage's outputs in input order: each take has a
/// ticket (takes are numbered in queue order); outputs wait here until every
/// earlier ticket's have gone, then go to their ports. Workers stop taking
/// while `limit` tickets wait, so one slow item cannot make the buffer grow
/// without bound.
pub(crate) struct Reorder {
    state: tokio::sync::Mutex<ReorderState>,
    waiting: AtomicUsize,
    room: Notify,
    limit: usize,
    /// The run is stopping on an error: an earlier ticket may never
    /// complete, so no worker waits for room any more.
    halted: AtomicBool,
}

struct ReorderState {
    next: u64,
    /// Outputs held; dropping them abandons them (see [`Emitted`]).
    done: BTreeMap<u64, Emitted>,
}

impl Reorder {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Reorder {
            state: tokio::sync::Mutex::new(ReorderState {
                next: 0,
                done: BTreeMap::new(),
            }),
            waiting: AtomicUsize::new(0),
            room: Notify::new(),
            limit: limit.max(1),
            halted: AtomicBool::new(false),
        })
    }

    pub(crate) async fn wait_for_room(&self) {
        loop {
            let notified = self.room.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.halted.load(Ordering::Acquire)
                || self.waiting.load(Ordering::Acquire) < self.limit
            {
                return;
            }
            notified.await;
        }
    }

    /// The run is stopping on an error (the input queue is halted too):
    /// releases the workers waiting for room, which then find no input.
    pub(crate) fn halt(&self) {
        self.halted.store(true, Ordering::Release);
        self.room.notify_waiters();
    }

    /// Abandons the outputs still held (the stage's last worker ended, so
    /// an earlier ticket will never complete).
    fn release(&self) {
        if let Ok(mut s) = self.state.try_lock() {
            s.done.clear();
        }
    }

    /// Files ticket `ticket`'s outputs and sends every ticket now due, in
    /// order. Sending under the lock keeps two workers' sends in order.
    pub(crate) async fn complete(
        &self,
        pipeline: &Pipeline,
        st: &StageRun,
        ticket: u64,
        main: &mut Vec<Item>,
        routed: &mut Vec<(Port, Item)>,
    ) {
        let mut s = self.state.lock().await;
        s.done.insert(
            ticket,
            Emitted {
                main: std::mem::take(main),
                routed: std::mem::take(routed),
            },
        );
        self.waiting.store(s.done.len(), Ordering::Release);
        loop {
            let next = s.next;
            let Some(mut due) = s.done.remove(&next) else {
                break;
            };
            s.next += 1;
            self.waiting.store(s.done.len(), Ordering::Release);
            pipeline.send(st, &mut due.main, &mut due.routed).await;
        }
        self.room.notify_waiters();
    }
}
