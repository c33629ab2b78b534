//! Durable runs (`--state DIR`): checkpoints that a run resumes from after
//! a crash, `kill -9` or Ctrl-C, with file outputs exactly once.
//!
//! **The mechanism: a short pause.** At least every `checkpoint_interval`,
//! the checkpointer asks the sources to pause between two `next` calls.
//! Each records its position as it parks. The items already in the
//! pipeline go on; when the last of them has its outcome (every batch a
//! source emitted carries a hook that counts it in flight), nothing is in
//! flight: every sink has written what it was given and nothing more. The
//! checkpointer then takes each file sink's state, saves the positions and
//! the states together in one file (written to a temporary file, fsynced,
//! renamed over the last checkpoint, the directory fsynced), and lets the
//! sources go on. What the sinks hold is then exactly what the positions
//! say is done. A pause costs the time the items in flight take to drain,
//! bounded by the queues; one that does not drain within
//! [`MAX_PAUSE`] (a stage holding items, such as a `batch` waiting to fill)
//! is given up, and the next is tried after twice the wait (up to a minute).
//!
//! On resume, each source continues after its saved position (`read`
//! checks that its files did not change), and each file sink cuts its file
//! back to the saved length and appends: whatever an interrupted run wrote
//! after its last checkpoint is written again, once. A run that finishes
//! (exit 0 or 3) removes the checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flow_core::{Lineage, Outcome, Stage, StageKind};
use serde::{Deserialize, Serialize};

use crate::plan::Plan;

/// The version of the checkpoint file's format.
const VERSION: u32 = 1;
/// The checkpoint's name in the state directory.
const FILE: &str = "checkpoint.json";
/// The marks' name in the state directory (see [`Marks`]).
const MARKS: &str = "marks";
/// What the resumed runs of a job replayed so far (see [`Replays`]).
const REPLAYS: &str = "replays.json";

/// What the resumed runs of a job replayed, summed, and which marks were
/// counted in it: a run counts the marks an interrupted run left once,
/// even when it is itself killed before it could start marks of its own.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Replays {
    items: u64,
    calls: BTreeMap<String, u64>,
    /// The run mark (see [`Marks`]) of the marks last counted.
    counted: u64,
}

/// The longest a checkpoint waits for the items in flight to drain.
pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(5);

/// What a checkpoint file holds.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    version: u32,
    /// The pipeline it was made by (see [`Plan::hash`]).
    pipeline: String,
    /// Each source's position, by stage name.
    sources: BTreeMap<String, serde_json::Value>,
    /// Each durable sink's state, by stage name.
    sinks: BTreeMap<String, serde_json::Value>,
    /// Items the sources had emitted and the pipeline had handled, over
    /// every run so far.
    items_done: u64,
    /// Runs that added to it.
    runs: u32,
    /// Each source's items done, over every run so far, by stage name.
    #[serde(default)]
    source_items: BTreeMap<String, u64>,
    /// The calls each stage with effects had made, over every run so far,
    /// by stage name (see [`Calls`]).
    #[serde(default)]
    calls: BTreeMap<String, u64>,
}

/// A durable run's settings and what it resumed from.
#[derive(Debug)]
pub struct Durability {
    pub(crate) dir: PathBuf,
    pub(crate) interval: Duration,
    /// Items done by earlier runs.
    pub items_done_before: u64,
    /// Earlier runs that added to the checkpoint.
    pub(crate) runs_before: u32,
    /// Each source's items done by earlier runs, by stage name.
    pub(crate) source_items_before: BTreeMap<String, u64>,
    /// Items an interrupted run had emitted after its last checkpoint:
    /// this run handles them again (their effects other than files are at
    /// least once).
    pub replayed: u64,
    /// Items replayed by every resumed run of this job, this one included.
    pub replayed_total: u64,
    /// The calls each stage with effects had made by the checkpoint this
    /// run resumed from, by stage name.
    pub(crate) calls_before: BTreeMap<String, u64>,
    /// Calls the interrupted run before made after its last checkpoint,
    /// by stage: this run makes them again.
    pub calls_replayed: BTreeMap<String, u64>,
    /// The same, summed over every resumed run of this job.
    pub calls_replayed_total: BTreeMap<String, u64>,
}

impl Durability {
    /// Whether this run resumed from a checkpoint.
    pub fn resumed(&self) -> bool {
        self.runs_before > 0
    }
}

/// Makes `plan` durable with its state in `dir`: finds a checkpoint there
/// and, unless `fresh`, resumes every source and durable sink from it
/// (checked against the pipeline and its inputs). The error says why the
/// run cannot start (exit 2).
pub fn prepare(plan: &mut Plan, dir: &Path, fresh: bool) -> Result<(), String> {
    for s in &plan.stages {
        if let Stage::Source(source) = &s.stage
            && source.position().is_none()
        {
            return Err(format!(
                "stage \"{}\": a durable run (--state) needs sources it can resume, and this one cannot (type {}{})",
                s.name,
                s.type_name,
                if s.type_name == "read" {
                    ", reading standard input, which cannot be read again"
                } else {
                    ""
                }
            ));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        format!(
            "--state {}: cannot create the directory: {e}",
            dir.display()
        )
    })?;
    let path = dir.join(FILE);
    if fresh {
        let _ = std::fs::remove_file(dir.join(MARKS));
        let _ = std::fs::remove_file(dir.join(REPLAYS));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: cannot remove: {e}", path.display())),
        }
    }
    let mut durability = Durability {
        dir: dir.to_path_buf(),
        interval: plan.checkpoint_interval.max(Duration::from_millis(10)),
        items_done_before: 0,
        runs_before: 0,
        source_items_before: BTreeMap::new(),
        replayed: 0,
        replayed_total: 0,
        calls_before: BTreeMap::new(),
        calls_replayed: BTreeMap::new(),
        calls_replayed_total: BTreeMap::new(),
    };
    let marks = Marks::read(&dir.join(MARKS), plan.stages.len());
    if let Some(cp) = read(&path)? {
        let refuse = |why: String| {
            format!(
                "{}: {why}; run with --fresh to discard it and start over",
                path.display()
            )
        };
        if cp.version > VERSION {
            return Err(refuse(format!(
                "the checkpoint was written by a newer flow (format {}, this flow reads {VERSION})",
                cp.version
            )));
        }
        if cp.pipeline != plan.hash {
            return Err(refuse(
                "the checkpoint was made by a different pipeline (the file or its ${VAR} values changed)"
                    .into(),
            ));
        }
        for s in &mut plan.stages {
            let name = s.name.clone();
            if let Stage::Source(source) = &mut s.stage {
                let position =
                    cp.sources.get(&name).cloned().ok_or_else(|| {
                        refuse(format!("it has no position for source \"{name}\""))
                    })?;
                source
                    .resume(position)
                    .map_err(|e| refuse(format!("stage \"{name}\": {e}")))?;
            }
            if let (Some(d), Some(state)) = (&s.durable, cp.sinks.get(&name)) {
                d.restore(state.clone())
                    .map_err(|e| refuse(format!("stage \"{name}\": {e}")))?;
            }
        }
        durability.items_done_before = cp.items_done;
        durability.runs_before = cp.runs;
        durability.source_items_before = cp.source_items;
        durability.calls_before = cp.calls;
    }
    // What an interrupted run did after the checkpoint (or, killed before
    // its first, at all), this run does again.
    let mut replays: Replays = std::fs::read(dir.join(REPLAYS))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if let Some(marks) = marks {
        durability.replayed = marks.emitted.saturating_sub(durability.items_done_before);
        for (s, made) in plan.stages.iter().zip(marks.calls) {
            let again =
                made.saturating_sub(durability.calls_before.get(&s.name).copied().unwrap_or(0));
            if again > 0 {
                durability.calls_replayed.insert(s.name.clone(), again);
            }
        }
        if marks.run != replays.counted {
            replays.items += durability.replayed;
            for (name, again) in &durability.calls_replayed {
                *replays.calls.entry(name.clone()).or_default() += again;
            }
            replays.counted = marks.run;
            let bytes = serde_json::to_vec(&replays).expect("counts serialize");
            write_atomic(dir, REPLAYS, &bytes)
                .map_err(|e| format!("{}: cannot write: {e}", dir.join(REPLAYS).display()))?;
        }
    }
    durability.replayed_total = replays.items;
    durability.calls_replayed_total = replays.calls;
    plan.durability = Some(durability);
    Ok(())
}

/// The checkpoint in `path`, if there is one. A temporary file left by a
/// crash mid-write is never read: only the renamed, complete file is.
fn read(path: &Path) -> Result<Option<Checkpoint>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "{}: cannot read the checkpoint: {e}",
                path.display()
            ));
        }
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        format!(
            "{}: not a checkpoint ({e}); run with --fresh to discard it",
            path.display()
        )
    })
}

/// Saves `cp` in `dir` atomically: a temporary file, fsynced, renamed
/// over the last checkpoint, then the directory fsynced.
fn write(dir: &Path, cp: &Checkpoint) -> std::io::Result<()> {
    write_atomic(
        dir,
        FILE,
        &serde_json::to_vec(cp).map_err(std::io::Error::other)?,
    )
}

/// Replaces `dir/name` with `bytes` atomically: a reader (the next run)
/// finds the old file or the new one, whole, whenever the process or the
/// machine stops.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Removes the checkpoint of a finished run.
pub(crate) fn remove(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(FILE));
    let _ = std::fs::remove_file(dir.join(MARKS));
    let _ = std::fs::remove_file(dir.join(REPLAYS));
}

/// High-water marks, so that a resumed run knows what it does again:
/// how many items the sources had emitted, and how many calls each stage
/// whose workers have effects (a [`flow_core::Processor`]: `http`, `exec`,
/// `files`, a plugin's) had made, over every run of the job. Each is
/// written to `DIR/marks` before the batch goes on or the call is made
/// (one small write, not synced: a killed process loses no written byte,
/// a power cut may, and then the replay counts are low), so a run killed
/// at any moment leaves marks no lower than what it did. The next run
/// subtracts what its checkpoint counts as done.
///
/// The file: the run's mark (a random number, so that marks are counted
/// once), the items emitted, then one count of calls per stage in plan
/// order; 8 bytes each, little-endian.
pub(crate) struct Marks {
    /// The run's mark, the items emitted, the calls per stage.
    values: Mutex<Vec<u64>>,
    file: Option<std::fs::File>,
}

/// What a marks file says.
struct MarksRead {
    run: u64,
    emitted: u64,
    calls: Vec<u64>,
}

impl Marks {
    /// The marks of this run: it starts where its checkpoint stands
    /// (written at once, so what an earlier run marked past it is not
    /// counted twice).
    fn start(durability: &Durability, names: &[String]) -> Marks {
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        let calls = names
            .iter()
            .map(|n| durability.calls_before.get(n).copied().unwrap_or(0));
        let values: Vec<u64> = [run, durability.items_done_before]
            .into_iter()
            .chain(calls)
            .collect();
        let bytes: Vec<u8> = values.iter().flat_map(|c| c.to_le_bytes()).collect();
        let path = durability.dir.join(MARKS);
        let file = std::fs::write(&path, bytes)
            .and_then(|()| std::fs::OpenOptions::new().write(true).open(&path))
            .inspect_err(|e| tracing::debug!("cannot write the marks: {e}"))
            .ok();
        Marks {
            values: Mutex::new(values),
            file,
        }
    }

    /// The marks a file holds, for a plan of `stages` stages.
    fn read(path: &Path, stages: usize) -> Option<MarksRead> {
        let bytes = std::fs::read(path).ok()?;
        let mut values = bytes
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        Some(MarksRead {
            run: values.next()?,
            emitted: values.next()?,
            calls: values.take(stages).collect(),
        })
    }

    /// Sets value `at` (1: items emitted, 2 + i: calls of stage i) to
    /// what `f` makes of it, and writes it through.
    fn update(&self, at: usize, f: impl FnOnce(u64) -> u64) {
        use std::os::unix::fs::FileExt;
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        values[at] = f(values[at]);
        if let Some(file) = &self.file
            && let Err(e) = file.write_all_at(&values[at].to_le_bytes(), 8 * at as u64)
        {
            tracing::debug!("cannot write the marks: {e}");
        }
    }

    /// Stage `i` is about to make a call.
    pub(crate) fn call(&self, i: usize) {
        self.update(2 + i, |n| n + 1);
    }

    /// The calls made so far by the stages that made any, by name.
    fn calls(&self, names: &[String]) -> BTreeMap<String, u64> {
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        names
            .iter()
            .zip(&values[2..])
            .filter(|(_, c)| **c > 0)
            .map(|(n, c)| (n.clone(), *c))
            .collect()
    }
}

/// What the sources and the checkpointer share during a durable run.
pub(crate) struct Checkpoints {
    pub(crate) durability: Durability,
    pipeline_hash: String,
    /// Asks the sources to park.
    pause: AtomicBool,
    resume: tokio::sync::Notify,
    /// Sources parked or finished.
    parked: AtomicUsize,
    sources: usize,
    /// Batches emitted whose items do not all have their outcome yet.
    in_flight: AtomicU64,
    /// A batch was abandoned: nothing after it can be checkpointed.
    abandoned: AtomicBool,
    /// Items the sources emitted in this run.
    emitted: AtomicU64,
    /// Each source's position as it parked or finished, by stage name.
    positions: Mutex<BTreeMap<String, serde_json::Value>>,
    /// Checkpoints saved in this run.
    pub(crate) saved: AtomicU64,
    /// What this run emitted and called, written through.
    pub(crate) marks: Marks,
    /// The stages' names, in plan order.
    names: Vec<String>,
}

impl Checkpoints {
    /// `stages`: the names of the run's stages, in plan order.
    pub(crate) fn new(
        durability: Durability,
        hash: String,
        sources: usize,
        stages: Vec<String>,
    ) -> Arc<Self> {
        let marks = Marks::start(&durability, &stages);
        Arc::new(Checkpoints {
            marks,
            names: stages,
            pipeline_hash: hash,
            pause: AtomicBool::new(false),
            resume: tokio::sync::Notify::new(),
            parked: AtomicUsize::new(0),
            sources,
            in_flight: AtomicU64::new(0),
            abandoned: AtomicBool::new(false),
            emitted: AtomicU64::new(0),
            positions: Mutex::new(BTreeMap::new()),
            saved: AtomicU64::new(0),
            durability,
        })
    }

    /// The lineage of a batch of `n` items a source just emitted: counted
    /// in flight until all of them have their outcome.
    pub(crate) fn batch(self: &Arc<Self>, n: usize) -> Lineage {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let emitted = self.emitted.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        let total = self.durability.items_done_before + emitted;
        self.marks.update(1, |old| old.max(total));
        let me = self.clone();
        Lineage::with_hook(move |outcome| {
            if outcome == Outcome::Abandoned {
                me.abandoned.store(true, Ordering::SeqCst);
            }
            me.in_flight.fetch_sub(1, Ordering::SeqCst);
        })
    }

    /// Whether a checkpoint asks the sources to park.
    pub(crate) fn pause_asked(&self) -> bool {
        self.pause.load(Ordering::SeqCst)
    }

    /// Between two `next` calls of source `name`, at `position`: parks it
    /// while a checkpoint is being taken. Returns when the checkpoint is
    /// done, or the run stops.
    pub(crate) async fn park(
        &self,
        name: &str,
        position: Option<serde_json::Value>,
        stop: &crate::stop::Flag,
    ) {
        let resumed = self.resume.notified();
        let mut resumed = std::pin::pin!(resumed);
        resumed.as_mut().enable();
        self.record(name, position);
        self.parked.fetch_add(1, Ordering::SeqCst);
        if self.pause.load(Ordering::SeqCst) {
            tokio::select! {
                _ = resumed => {}
                _ = stop.wait() => {}
            }
        }
        self.parked.fetch_sub(1, Ordering::SeqCst);
    }

    /// A source that finished: its last position, parked for good.
    pub(crate) fn finished(&self, name: &str, position: Option<serde_json::Value>) {
        self.record(name, position);
        self.parked.fetch_add(1, Ordering::SeqCst);
    }

    fn record(&self, name: &str, position: Option<serde_json::Value>) {
        if let Some(p) = position {
            self.positions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.to_string(), p);
        }
    }

    /// Whether what the sinks hold is exactly what the positions say.
    fn quiet(&self) -> bool {
        self.parked.load(Ordering::SeqCst) == self.sources
            && self.in_flight.load(Ordering::SeqCst) == 0
            && !self.abandoned.load(Ordering::SeqCst)
    }

    /// Takes one checkpoint: pauses the sources, waits for quiet (at most
    /// [`MAX_PAUSE`]), saves, lets the sources go on. Returns whether it
    /// saved one.
    pub(crate) async fn take(
        &self,
        sinks: &[(String, Arc<dyn flow_core::Durable>)],
        counts: impl Fn() -> BTreeMap<String, u64>,
    ) -> bool {
        self.pause.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + MAX_PAUSE;
        let mut saved = false;
        loop {
            if self.quiet() {
                saved = self.save(sinks, counts());
                break;
            }
            if tokio::time::Instant::now() >= deadline || self.abandoned.load(Ordering::SeqCst) {
                tracing::debug!("checkpoint skipped: the items in flight did not drain in time");
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.pause.store(false, Ordering::SeqCst);
        self.resume.notify_waiters();
        saved
    }

    /// At the end of a run that did not finish: a last checkpoint, if
    /// everything the sources emitted was handled (a clean drain).
    pub(crate) fn save_final(
        &self,
        sinks: &[(String, Arc<dyn flow_core::Durable>)],
        counts: BTreeMap<String, u64>,
    ) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
            && !self.abandoned.load(Ordering::SeqCst)
            && self.save(sinks, counts)
    }

    /// `counts`: each source's items emitted in this run.
    fn save(
        &self,
        sinks: &[(String, Arc<dyn flow_core::Durable>)],
        counts: BTreeMap<String, u64>,
    ) -> bool {
        let sources = self
            .positions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if sources.len() < self.sources {
            return false;
        }
        let mut states = BTreeMap::new();
        for (name, d) in sinks {
            match d.snapshot() {
                Ok(state) => {
                    states.insert(name.clone(), state);
                }
                Err(e) => {
                    tracing::warn!(stage = %name, "checkpoint skipped: {e}");
                    return false;
                }
            }
        }
        let cp = Checkpoint {
            version: VERSION,
            pipeline: self.pipeline_hash.clone(),
            sources,
            sinks: states,
            items_done: self.durability.items_done_before + self.emitted.load(Ordering::SeqCst),
            runs: self.durability.runs_before + 1,
            source_items: counts
                .into_iter()
                .map(|(name, n)| {
                    let before = self.durability.source_items_before.get(&name).copied();
                    (name, before.unwrap_or(0) + n)
                })
                .collect(),
            calls: self.marks.calls(&self.names),
        };
        match write(&self.durability.dir, &cp) {
            Ok(()) => {
                self.saved.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::warn!(
                    "cannot save the checkpoint in {}: {e}",
                    self.durability.dir.display()
                );
                false
            }
        }
    }
}

/// The durable sinks of a plan's stages, by name.
pub(crate) fn sinks_of(plan: &Plan) -> Vec<(String, Arc<dyn flow_core::Durable>)> {
    plan.stages
        .iter()
        .filter(|s| s.kind != StageKind::Source)
        .filter_map(|s| s.durable.clone().map(|d| (s.name.clone(), d)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(runs: u32) -> Checkpoint {
        Checkpoint {
            version: VERSION,
            pipeline: "p".into(),
            sources: BTreeMap::new(),
            sinks: BTreeMap::new(),
            items_done: 7,
            runs,
            source_items: BTreeMap::new(),
            calls: BTreeMap::new(),
        }
    }

    #[test]
    fn a_torn_temp_file_is_ignored_for_the_last_good_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &checkpoint(1)).unwrap();
        // A crash while the next one was being written: half a file.
        std::fs::write(
            dir.path().join(format!("{FILE}.tmp")),
            b"{\"version\":1,\"pipel",
        )
        .unwrap();
        let cp = read(&dir.path().join(FILE)).unwrap().unwrap();
        assert_eq!((cp.runs, cp.items_done), (1, 7));
        // The next save replaces the torn temp file.
        write(dir.path(), &checkpoint(2)).unwrap();
        assert_eq!(read(&dir.path().join(FILE)).unwrap().unwrap().runs, 2);
    }

    #[test]
    fn a_checkpoint_that_is_not_one_is_an_error_that_says_how_to_go_on() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"garbage").unwrap();
        let err = read(&dir.path().join(FILE)).unwrap_err();
        assert!(
            err.contains("not a checkpoint") && err.contains("--fresh"),
            "{err}"
        );
    }
}
