//! Items and their lineage: how a source learns that an item it emitted,
//! and everything made from it, has been fully handled.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// How a source item's handling ended, passed to its completion hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every item made from it reached a sink or was filtered out.
    Done,
    /// At least one item made from it failed (was dropped or dead-lettered).
    Failed,
}

/// The source items an item was made from, each with its completion hook.
///
/// A source that needs to know when an item is fully handled (to commit a
/// checkpoint or acknowledge a message) attaches a hook with
/// [`Lineage::with_hook`]. Every item made from that item (fan-out copies,
/// the several outputs of a `map`, retries) holds a clone; the hook runs
/// exactly once, when the last of them is dropped: after the sink consumed
/// it, a filter dropped it, or `on_error` disposed of it. A stage that keeps
/// items across calls (a batcher) keeps their lineages too and gives its
/// output [`Lineage::merge`] of them, so each hook waits for the batch.
///
/// The hook runs on whichever thread drops the last clone: keep it short
/// (send on a channel, bump a counter). `Lineage::NONE` costs nothing.
#[derive(Clone, Default)]
pub struct Lineage(Option<Arc<Node>>);

type Hook = Box<dyn FnOnce(Outcome) + Send>;

struct Node {
    hook: Mutex<Option<Hook>>,
    failed: AtomicBool,
    parents: Vec<Lineage>,
}

impl Lineage {
    /// No source to tell: the common case, free to clone and drop.
    pub const NONE: Lineage = Lineage(None);

    /// A lineage whose hook runs once every item holding it is gone.
    pub fn with_hook(hook: impl FnOnce(Outcome) + Send + 'static) -> Self {
        Lineage(Some(Arc::new(Node {
            hook: Mutex::new(Some(Box::new(hook))),
            failed: AtomicBool::new(false),
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
                failed: AtomicBool::new(false),
                parents,
            }))),
        }
    }

    /// Records that an item of this lineage failed: the hooks will report
    /// [`Outcome::Failed`]. Runner use.
    #[doc(hidden)]
    pub fn mark_failed(&self) {
        if let Some(node) = &self.0 {
            node.failed.store(true, Ordering::Relaxed);
            node.parents.iter().for_each(Lineage::mark_failed);
        }
    }

    /// True when no hook waits on this lineage.
    pub fn is_none(&self) -> bool {
        self.0.is_none()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let hook = self.hook.get_mut().map(Option::take).unwrap_or(None);
        if let Some(hook) = hook {
            let failed = self.failed.load(Ordering::Relaxed);
            hook(if failed {
                Outcome::Failed
            } else {
                Outcome::Done
            });
        }
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
        batch.mark_failed();
        drop(batch);
        assert_eq!(count_a.load(Ordering::SeqCst), 1);
        assert_eq!(count_b.load(Ordering::SeqCst), 1);
        assert_eq!(*outcomes_b.lock().unwrap(), vec![Outcome::Failed]);
    }

    #[test]
    fn untouched_lineage_reports_done() {
        let (a, _, outcomes) = counting();
        drop(a);
        assert_eq!(*outcomes.lock().unwrap(), vec![Outcome::Done]);
    }
}
