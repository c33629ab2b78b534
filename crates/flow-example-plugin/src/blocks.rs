//! The `blocks` sink: a sink that buffers, the example to copy for one.
//!
//! It appends items to a file as JSON lines, a block of `block` items at a
//! time, in one write. Until a block is written its items are not
//! delivered: the sink holds their lineages in a [`Held`] and releases them
//! only after the write returned. If the run stops first, or the write
//! fails, they are reported abandoned, so a source that acknowledges
//! delivered items (a queue, a checkpoint) never acknowledges one that is
//! not in the file.

use std::io::Write as _;
use std::path::PathBuf;

use flow_core::schemars::JsonSchema;
use flow_core::serde::Deserialize;
use flow_core::value::to_json;
use flow_core::{
    BuildContext, ConfigError, Held, Output, Stage, StageError, StageKind, StageOptions, StageType,
    Transform, Value,
};

/// Appends items to a file as JSON lines, `block` at a time, each block in
/// one write (an example plugin of a sink that buffers). An item counts as
/// delivered only once its block is in the file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(crate = "flow_core::serde", deny_unknown_fields)]
#[schemars(crate = "flow_core::schemars")]
pub struct BlocksOptions {
    /// The file to append to (created if missing), relative to the
    /// pipeline file.
    pub path: String,
    /// Items per write. Default: 100.
    #[serde(default = "default_block")]
    pub block: usize,
}

fn default_block() -> usize {
    100
}

/// One worker: its buffer and the lineages of what is in it.
struct Blocks {
    path: PathBuf,
    block: usize,
    buffer: Vec<u8>,
    buffered: usize,
    held: Held,
}

impl Blocks {
    /// Writes the buffer in one call; only then are its items delivered.
    fn write(&mut self) -> Result<(), StageError> {
        if self.buffered == 0 {
            return Ok(());
        }
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(&self.buffer));
        self.buffer.clear();
        self.buffered = 0;
        match written {
            Ok(()) => {
                self.held.delivered();
                Ok(())
            }
            Err(e) => {
                // The block is lost: its items must be done again.
                self.held.failed();
                Err(StageError::permanent(format!(
                    "cannot write {}: {e}",
                    self.path.display()
                )))
            }
        }
    }
}

impl Transform for Blocks {
    fn apply(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError> {
        self.buffer.extend_from_slice(to_json(input).as_bytes());
        self.buffer.push(b'\n');
        self.buffered += 1;
        // Keep the item's lineage until its block is written.
        self.held.hold(out.lineage());
        if self.buffered >= self.block {
            self.write()?;
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Output) -> Result<(), StageError> {
        self.write()
    }
}

impl StageOptions for BlocksOptions {
    fn build(self, ctx: &BuildContext) -> Result<Stage, ConfigError> {
        // No side effects here: the file is opened when a block is written.
        if self.block == 0 {
            return Err(ConfigError::new("block", "must be at least 1"));
        }
        let path = ctx.resolve_path(&self.path);
        let block = self.block;
        Ok(Stage::transform(move || Blocks {
            path: path.clone(),
            block,
            buffer: Vec::new(),
            buffered: 0,
            held: Held::new(),
        }))
    }
}

flow_core::inventory::submit! {
    StageType::new::<BlocksOptions>(
        "blocks",
        StageKind::Sink,
        "Appends JSON lines to a file, a block at a time (an example plugin of a buffering sink).",
        "- name: save\n  type: blocks\n  with: { path: out.jsonl, block: 100 }\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_core::value::int;
    use flow_core::{Lineage, Outcome};
    use std::sync::{Arc, Mutex};

    /// A lineage whose hook records its outcome in `log` under `i`.
    fn hooked(log: &Arc<Mutex<Vec<(i64, Outcome)>>>, i: i64) -> Lineage {
        let log = log.clone();
        Lineage::with_hook(move |o| log.lock().unwrap().push((i, o)))
    }

    fn sink(path: PathBuf, block: usize) -> Blocks {
        Blocks {
            path,
            block,
            buffer: Vec::new(),
            buffered: 0,
            held: Held::new(),
        }
    }

    /// Applies item `i` the way the runner does: with its lineage set,
    /// dropped after the call.
    fn apply(s: &mut Blocks, out: &mut Output, log: &Arc<Mutex<Vec<(i64, Outcome)>>>, i: i64) {
        out.set_lineage(hooked(log, i));
        s.apply(&int(i), out).unwrap();
        out.set_lineage(Lineage::NONE);
    }

    #[test]
    fn items_are_delivered_when_their_block_is_written_and_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut s = sink(path.clone(), 3);
        let mut out = Output::new();
        for i in 0..2 {
            apply(&mut s, &mut out, &log, i);
        }
        assert_eq!(*log.lock().unwrap(), [], "buffered: not delivered yet");
        assert!(!path.exists());
        apply(&mut s, &mut out, &log, 2);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0\n1\n2\n");
        let delivered: Vec<_> = (0..3).map(|i| (i, Outcome::Delivered)).collect();
        assert_eq!(*log.lock().unwrap(), delivered);
        apply(&mut s, &mut out, &log, 3);
        s.finish(&mut out).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0\n1\n2\n3\n");
        assert_eq!(log.lock().unwrap().last(), Some(&(3, Outcome::Delivered)));
    }

    #[test]
    fn what_was_never_written_is_abandoned() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        // The run stopped before `finish`: the worker is dropped.
        let mut s = sink(dir.path().join("out.jsonl"), 10);
        let mut out = Output::new();
        apply(&mut s, &mut out, &log, 0);
        drop(s);
        assert_eq!(*log.lock().unwrap(), [(0, Outcome::Abandoned)]);
        // The write failed (the directory does not exist).
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut s = sink(dir.path().join("missing/out.jsonl"), 1);
        out.set_lineage(hooked(&log, 1));
        assert!(s.apply(&int(1), &mut out).is_err());
        out.set_lineage(Lineage::NONE);
        assert_eq!(*log.lock().unwrap(), [(1, Outcome::Abandoned)]);
    }
}
