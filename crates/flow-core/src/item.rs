//! Items and their lineage: how a source learns that an item it emitted,
//! and everything made from it, has been fully handled.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use crate::Value;

/// One unit of data moving through a pipeline: a [`Value`] and its
/// [`Lineage`].
///
/// Stages see only values; the runner carries the lineage from each input to
/// the outputs a stage makes from it, so no stage has to.
#[derive(Clone, Debug, Default)]
pub struct Item {
    /// The data.
    pub value: Value,
    /// The source items it was made from, with their completion hooks.
    pub lineage: Lineage,
}

impl Item {
    /// An item with no completion hook (most sources emit these).
    pub fn new(value: Value) -> Self {
        Item {
            value,
            lineage: Lineage::NONE,
        }
    }
}

/// How a source item's handling ended, passed to its completion hook
/// exactly once.
///
/// The first three are final: the item must not be handled again. An
/// abandoned item was not handled, and a source that can (a durable run, a
/// message queue) gives it to the next run or another consumer. When the
/// copies of one item end differently (fan-out, a `map` with several
/// outputs), the outcome is the worst of theirs, in the order
/// `Delivered` < `DeadLettered` < `Dropped` < `Abandoned`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Every item made from it was written by a sink (handed to the OS,
    /// not merely buffered) or filtered out on purpose.
    Delivered,
    /// It failed, and its dead letter was delivered.
    DeadLettered,
    /// It failed, and `on_error: drop` dropped it.
    Dropped,
    /// The run stopped before it was handled (Ctrl-C, `on_error: fail`, a
    /// failed sink, a dead letter that was itself not delivered).
    Abandoned,
}

impl Outcome {
    /// Whether the item is done with for good (everything but
    /// [`Outcome::Abandoned`]): a source may acknowledge it.
    pub fn is_final(self) -> bool {
        self != Outcome::Abandoned
    }

    /// The outcome's name in reports: `delivered`, `dead_lettered`,
    /// `dropped` or `abandoned`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Dropped => "dropped",
            Outcome::Abandoned => "abandoned",
        }
    }

    fn from_u8(n: u8) -> Self {
        match n {
            0 => Outcome::Delivered,
            1 => Outcome::DeadLettered,
            2 => Outcome::Dropped,
            _ => Outcome::Abandoned,
        }
    }
}

/// The source items an item was made from, each with its completion hook.
///
/// A source that needs to know when an item is fully handled (to commit a
/// checkpoint or acknowledge a message) attaches a hook with
/// [`Lineage::with_hook`]. Every item made from that item (fan-out copies,
/// the several outputs of a `map`, retries, its dead letter) holds a clone;
/// the hook runs exactly once, when the last of them is dropped: after the
/// sink wrote it, a filter dropped it, or `on_error` disposed of it. The
/// runner marks what happened on the way ([`Lineage::mark`]), and the hook
/// gets the worst of it.
///
/// A stage that keeps items across calls (a batcher) keeps their lineages
/// too and gives its output [`Lineage::merge`] of them, so each hook waits
/// for the batch. A sink that buffers across calls keeps the lineages of
/// what it buffered in a [`Held`] until its bytes reached the OS.
///
/// The hook runs on whichever thread drops the last clone: keep it short
/// (send on a channel, bump a counter). `Lineage::NONE` costs nothing.
#[derive(Clone, Default)]
pub struct Lineage(Option<Arc<Node>>);

type Hook = Box<dyn FnOnce(Outcome) + Send>;

struct Node {
    hook: Mutex<Option<Hook>>,
    /// The worst [`Outcome`] marked so far, as its `u8`.
    outcome: AtomicU8,
    parents: Vec<Lineage>,
}

impl Lineage {
    /// No source to tell: the common case, free to clone and drop.
    pub const NONE: Lineage = Lineage(None);

    /// A lineage whose hook runs once every item holding it is gone.
    pub fn with_hook(hook: impl FnOnce(Outcome) + Send + 'static) -> Self {
        Lineage(Some(Arc::new(Node {
            hook: Mutex::new(Some(Box::new(hook))),
            outcome: AtomicU8::new(Outcome::Delivered as u8),
            parents: Vec::new(),
        })))
    }

    /// The lineage of an item made from several (a batch): it holds each of
    /// them until it is itself dropped.
    pub fn merge(parents: impl IntoIterator<Item = Lineage>) -> Self {
        let parents: Vec<Lineage> = parents.into_iter().filter(|l| l.0.is_some()).collect();
        match parents.len() {
            0 => Lineage::NONE,
            1 => parents.into_iter().next().expect("one parent"),
            _ => Lineage(Some(Arc::new(Node {
                hook: Mutex::new(None),
                outcome: AtomicU8::new(Outcome::Delivered as u8),
                parents,
            }))),
        }
    }

    /// Records what happened to an item of this lineage: the hooks report
    /// the worst outcome marked (see [`Outcome`]). The runner marks
    /// failures and stops; a stage that holds items across calls marks
    /// those it never passes on [`Outcome::Abandoned`].
    pub fn mark(&self, outcome: Outcome) {
        if let Some(node) = &self.0 {
            node.outcome.fetch_max(outcome as u8, Ordering::Relaxed);
            node.parents.iter().for_each(|p| p.mark(outcome));
        }
    }

    /// True when no hook waits on this lineage.
    pub fn is_none(&self) -> bool {
        self.0.is_none()
    }

    /// Whether both are the same lineage (clones of one).
    pub fn same(&self, other: &Lineage) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let hook = self.hook.get_mut().map(Option::take).unwrap_or(None);
        if let Some(hook) = hook {
            hook(Outcome::from_u8(*self.outcome.get_mut()));
        }
    }
}

/// The lineages of what a sink has buffered and not yet written: a sink
/// that holds output across calls (a file written in large blocks, a
/// database insert per thousand rows) keeps each input's lineage here, so
/// no source hears "delivered" before the data reached its destination.
///
/// [`Held::hold`] the input's lineage ([`crate::Output::lineage`]) when
/// buffering it; [`Held::delivered`] once the buffer was written. Lineages
/// still held when the `Held` is dropped (the run stopped before the sink
/// flushed, the worker panicked) are reported abandoned, never delivered.
#[derive(Debug, Default)]
pub struct Held(Vec<Lineage>);

impl Held {
    /// Nothing held.
    pub fn new() -> Self {
        Held(Vec::new())
    }

    /// Keeps `lineage` until [`Held::delivered`], [`Held::failed`] or
    /// [`Held::take`]. The same lineage held twice in a row is kept once
    /// (the items of one source batch often share one).
    pub fn hold(&mut self, lineage: &Lineage) {
        if lineage.is_none() || self.0.last().is_some_and(|l| l.same(lineage)) {
            return;
        }
        self.0.push(lineage.clone());
    }

    /// Everything held, as the lineage of one output made from it (an
    /// aggregate): its items' outcome is that output's.
    pub fn take(&mut self) -> Lineage {
        Lineage::merge(std::mem::take(&mut self.0))
    }

    /// Everything held was written: its items count as delivered.
    pub fn delivered(&mut self) {
        self.0.clear();
    }

    /// Everything held was lost (the write failed and will not be
    /// retried): its items count as abandoned.
    pub fn failed(&mut self) {
        for lineage in self.0.drain(..) {
            lineage.mark(Outcome::Abandoned);
        }
    }

    /// How many lineages are held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.failed();
    }
}

impl fmt::Debug for Lineage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("Lineage::NONE"),
            Some(node) => write!(f, "Lineage({} parents)", node.parents.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn counting() -> (Lineage, Arc<AtomicUsize>, Arc<Mutex<Vec<Outcome>>>) {
        let count = Arc::new(AtomicUsize::new(0));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let (c, o) = (count.clone(), outcomes.clone());
        let lineage = Lineage::with_hook(move |outcome| {
            c.fetch_add(1, Ordering::SeqCst);
            o.lock().unwrap().push(outcome);
        });
        (lineage, count, outcomes)
    }

    #[test]
    fn hook_fires_once_after_the_last_copy_is_dropped() {
        let (lineage, count, _) = counting();
        let copies: Vec<Lineage> = (0..3).map(|_| lineage.clone()).collect();
        drop(lineage);
        assert_eq!(count.load(Ordering::SeqCst), 0);
        drop(copies);
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn merged_lineage_holds_its_parents_until_dropped() {
        let (a, count_a, _) = counting();
        let (b, count_b, outcomes_b) = counting();
        let batch = Lineage::merge([a, b]);
        assert_eq!(count_a.load(Ordering::SeqCst), 0);
        batch.mark(Outcome::Dropped);
        drop(batch);
        assert_eq!(count_a.load(Ordering::SeqCst), 1);
        assert_eq!(count_b.load(Ordering::SeqCst), 1);
        assert_eq!(*outcomes_b.lock().unwrap(), vec![Outcome::Dropped]);
    }

    #[test]
    fn untouched_lineage_reports_delivered() {
        let (a, _, outcomes) = counting();
        drop(a);
        assert_eq!(*outcomes.lock().unwrap(), vec![Outcome::Delivered]);
    }

    #[test]
    fn the_worst_outcome_marked_wins_whatever_the_order() {
        for marks in [
            [Outcome::Dropped, Outcome::DeadLettered],
            [Outcome::DeadLettered, Outcome::Dropped],
        ] {
            let (a, _, outcomes) = counting();
            let copy = a.clone();
            a.mark(marks[0]);
            copy.mark(marks[1]);
            drop((a, copy));
            assert_eq!(*outcomes.lock().unwrap(), vec![Outcome::Dropped]);
        }
        let (a, _, outcomes) = counting();
        a.mark(Outcome::DeadLettered);
        a.clone().mark(Outcome::Abandoned);
        drop(a);
        assert_eq!(*outcomes.lock().unwrap(), vec![Outcome::Abandoned]);
    }

    #[test]
    fn held_lineages_wait_for_delivery_and_are_abandoned_when_dropped() {
        let (a, count, outcomes) = counting();
        let mut held = Held::new();
        held.hold(&a);
        drop(a);
        assert_eq!(count.load(Ordering::SeqCst), 0, "held: not yet reported");
        held.delivered();
        assert_eq!(*outcomes.lock().unwrap(), vec![Outcome::Delivered]);

        let (b, count, outcomes) = counting();
        let mut held = Held::new();
        held.hold(&b);
        drop(b);
        drop(held);
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert_eq!(*outcomes.lock().unwrap(), vec![Outcome::Abandoned]);
    }
}
