//! `batch`: gathers items into arrays of up to `size`, emitted when full,
//! when the oldest has waited `timeout`, or when the input ends.

use std::time::Duration;

use flow_core::{
    BuildContext, ConfigError, Lineage, Outcome, Output, Processor, Stage, StageError, StageKind,
    StageOptions, StageType, Value, async_trait,
};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::time::Instant;

/// Gathers items into arrays of up to `size` items, in the order they
/// arrive. A batch is emitted when it is full, when its oldest item has
/// waited `timeout`, or when the input ends (the last, partial batch).
///
/// Each worker gathers its own batches: with `workers: 4` there may be four
/// partial batches at once, and the items of one batch all went through
/// the same worker. One worker (the default) gives the fullest batches.
///
/// A batch counts as one item out. The source items of a batch are handled
/// when the batch is: a completion hook of a batched item (an
/// at-least-once source's acknowledgement) fires once the batch, and
/// everything made from it, is done; if the batch fails, all of them
/// report failure. `unbatch` turns a batch back into its items.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchOptions {
    /// The most items in one batch (at least 1).
    pub size: usize,
    /// Emit a batch that is not full once its oldest item has waited this
    /// long (`500ms`, `2s`); absent: only full batches, and the last one
    /// when the input ends.
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    #[schemars(with = "String")]
    pub timeout: Option<Duration>,
}

/// One worker's batch being gathered.
struct Batcher {
    size: usize,
    timeout: Option<Duration>,
    values: Vec<Value>,
    lineages: Vec<Lineage>,
    /// When the oldest held item arrived.
    oldest: Option<Instant>,
}

impl Batcher {
    fn new(size: usize, timeout: Option<Duration>) -> Self {
        Batcher {
            size,
            timeout,
            values: Vec::with_capacity(size.min(1024)),
            lineages: Vec::new(),
            oldest: None,
        }
    }

    /// Emits the held items as one array, with the lineage of them all.
    fn flush(&mut self, out: &mut Output) {
        if self.values.is_empty() {
            return;
        }
        let values = std::mem::replace(&mut self.values, Vec::with_capacity(self.size.min(1024)));
        let lineage = Lineage::merge(std::mem::take(&mut self.lineages));
        out.emit_with(values.into_iter().collect(), lineage);
        self.oldest = None;
    }
}

#[async_trait]
impl Processor for Batcher {
    async fn process(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError> {
        if self.values.is_empty() {
            self.oldest = Some(Instant::now());
        }
        self.values.push(input.clone());
        self.lineages.push(out.lineage().clone());
        if self.values.len() >= self.size {
            self.flush(out);
        }
        Ok(())
    }

    fn deadline(&self) -> Option<Instant> {
        Some(self.oldest? + self.timeout?)
    }

    async fn on_deadline(&mut self, out: &mut Output) -> Result<(), StageError> {
        self.flush(out);
        Ok(())
    }

    async fn finish(&mut self, out: &mut Output) -> Result<(), StageError> {
        self.flush(out);
        Ok(())
    }
}

impl Drop for Batcher {
    /// Items still held were never emitted (the run stopped on an error, or
    /// a panic replaced this worker): their sources must not count them done.
    fn drop(&mut self) {
        self.lineages
            .iter()
            .for_each(|l| l.mark(Outcome::Abandoned));
    }
}

impl StageOptions for BatchOptions {
    fn build(self, _ctx: &BuildContext) -> Result<Stage, ConfigError> {
        if self.size == 0 {
            return Err(ConfigError::new("size", "must be at least 1"));
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(ConfigError::new("timeout", "must be more than 0"));
        }
        let (size, timeout) = (self.size, self.timeout);
        Ok(Stage::processor(move |_| Ok(Batcher::new(size, timeout))))
    }
}

flow_core::inventory::submit! {
    StageType::new::<BatchOptions>(
        "batch",
        StageKind::Processor,
        "Gathers items into arrays of up to `size`, emitted when full, after `timeout`, or at the end.",
        "- name: group\n  type: batch\n  with: { size: 100, timeout: 1s }\n",
    )
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use flow_core::Outcome;
    use flow_core::value::{int, to_json};

    use super::*;

    fn emitted(out: &mut Output) -> Vec<String> {
        out.items_mut()
            .drain(..)
            .map(|i| to_json(&i.value))
            .collect()
    }

    #[tokio::test]
    async fn a_full_batch_is_emitted_at_once() {
        let mut b = Batcher::new(3, None);
        let mut out = Output::new();
        for i in 0..7 {
            b.process(&int(i), &mut out).await.unwrap();
        }
        assert_eq!(emitted(&mut out), ["[0,1,2]", "[3,4,5]"]);
        b.finish(&mut out).await.unwrap();
        assert_eq!(emitted(&mut out), ["[6]"]);
        b.finish(&mut out).await.unwrap();
        assert!(out.is_empty(), "nothing held, nothing emitted");
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_is_the_oldest_item_plus_the_timeout() {
        let mut b = Batcher::new(10, Some(Duration::from_secs(2)));
        let mut out = Output::new();
        assert_eq!(b.deadline(), None, "no deadline while empty");
        let t0 = Instant::now();
        b.process(&int(1), &mut out).await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        b.process(&int(2), &mut out).await.unwrap();
        assert_eq!(b.deadline(), Some(t0 + Duration::from_secs(2)));
        b.on_deadline(&mut out).await.unwrap();
        assert_eq!(emitted(&mut out), ["[1,2]"]);
        assert_eq!(b.deadline(), None);
    }

    #[tokio::test]
    async fn without_a_timeout_there_is_no_deadline() {
        let mut b = Batcher::new(10, None);
        let mut out = Output::new();
        b.process(&int(1), &mut out).await.unwrap();
        assert_eq!(b.deadline(), None);
    }

    #[tokio::test]
    async fn the_batch_holds_the_lineage_of_each_item() {
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let mut b = Batcher::new(2, None);
        let mut out = Output::new();
        for i in 0..2 {
            let o = outcomes.clone();
            out.set_lineage(Lineage::with_hook(move |r| o.lock().unwrap().push((i, r))));
            b.process(&int(i), &mut out).await.unwrap();
            out.set_lineage(Lineage::NONE);
        }
        assert!(outcomes.lock().unwrap().is_empty(), "held by the batch");
        let batch = out.items_mut().pop().expect("a full batch");
        drop(batch);
        let mut got = outcomes.lock().unwrap().clone();
        got.sort_by_key(|(i, _)| *i);
        assert_eq!(got, [(0, Outcome::Delivered), (1, Outcome::Delivered)]);
    }

    #[tokio::test]
    async fn items_held_when_the_worker_is_dropped_are_abandoned() {
        let outcome = Arc::new(Mutex::new(None));
        let mut b = Batcher::new(5, None);
        let mut out = Output::new();
        let o = outcome.clone();
        out.set_lineage(Lineage::with_hook(move |r| *o.lock().unwrap() = Some(r)));
        b.process(&int(1), &mut out).await.unwrap();
        out.set_lineage(Lineage::NONE);
        drop(b);
        assert_eq!(*outcome.lock().unwrap(), Some(Outcome::Abandoned));
    }

    #[test]
    fn size_zero_and_a_zero_timeout_are_rejected() {
        let ctx = BuildContext {
            stage: "b".into(),
            workers: 1,
            base_dir: ".".into(),
            timeout: None,
        };
        let zero = BatchOptions {
            size: 0,
            timeout: None,
        };
        assert_eq!(zero.build(&ctx).err().unwrap().key, "size");
        let instant = BatchOptions {
            size: 1,
            timeout: Some(Duration::ZERO),
        };
        assert_eq!(instant.build(&ctx).err().unwrap().key, "timeout");
    }
}
