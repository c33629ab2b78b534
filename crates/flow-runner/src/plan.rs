//! From a pipeline file to a checked, built [`Plan`]: every check runs, and
//! every stage is built from its options, before anything runs.
//!
//! Problems are collected, not stopped at, so one `flow validate` shows all
//! of them, each with `file:line:column`, the stage and the key.
//!
//! By job: [`load()`] and [`load_str`] here run the steps in order;
//! `plan/load.rs` reads the file into its document and typed form (unknown
//! keys, interpolation); `plan/checks.rs` checks names, types, inputs,
//! `on_error` and the wiring; `plan/graph.rs` has the graph's edges and
//! the search for cycles; `plan/control.rs` checks the flow-control keys;
//! `plan/build.rs` builds each stage through the registry; `plan/teach.rs`
//! words the messages that teach. The submodules never import this file:
//! the types they share live in them (`OnError` in `graph.rs`,
//! `PlannedStage` in `build.rs`) and are re-exported here.

use std::path::{Path, PathBuf};

mod build;
mod checks;
mod control;
mod graph;
mod load;
mod suite;
mod teach;

use crate::error::Problems;
pub use build::PlannedStage;
use checks::Checker;
pub use graph::{Edge, EdgeKind, OnError};
pub use load::MAX_FILE_BYTES;
pub(crate) use suite::load_test_file;

/// A validated pipeline whose stages are built and wired, ready to run.
pub struct Plan {
    pub name: String,
    pub file: PathBuf,
    /// In file order.
    pub stages: Vec<PlannedStage>,
    /// `state:`: the directory of a durable run, resolved against the
    /// file's directory (the command line may set it instead).
    pub state: Option<PathBuf>,
    /// How often a durable run saves a checkpoint.
    pub checkpoint_interval: std::time::Duration,
    /// A hash of the pipeline as read (after `${VAR}`s were replaced): a
    /// checkpoint made by another pipeline is refused.
    pub hash: String,
    /// Set by [`crate::durable::prepare`]: the run saves checkpoints.
    pub durability: Option<crate::durable::Durability>,
    /// The graph of the stages, computed once, when the plan is built.
    edges: Vec<Edge>,
    /// For each stage, the stages that read its output.
    consumers: Vec<Vec<usize>>,
    /// For each stage, the stages whose items go to its input queue.
    producers: Vec<Vec<usize>>,
    /// The file's `tests:`, checked against the stages (`flow test`).
    pub tests: Vec<crate::testing::TestCase>,
    /// For a test's run: where what leaves each stage is recorded.
    pub(crate) tap: Option<std::sync::Arc<crate::testing::Tap>>,
}

impl Plan {
    /// A plan of `stages`, with their graph.
    fn new(name: String, file: PathBuf, stages: Vec<PlannedStage>, hash: String) -> Plan {
        let n = stages.len();
        let edges = graph::edges(&stages);
        let consumers = graph::successors(n, edges.iter().filter(|e| !e.kind.is_error()));
        let producers = graph::predecessors(n, &edges);
        Plan {
            name,
            file,
            stages,
            state: None,
            checkpoint_interval: std::time::Duration::from_secs(1),
            hash,
            durability: None,
            edges,
            consumers,
            producers,
            tests: Vec::new(),
            tap: None,
        }
    }

    /// The same plan with `stages` (wired differently, for a test), its
    /// graph computed again.
    pub(crate) fn with_stages(self, stages: Vec<PlannedStage>) -> Plan {
        let mut plan = Plan::new(self.name, self.file, stages, self.hash);
        plan.state = self.state;
        plan.checkpoint_interval = self.checkpoint_interval;
        plan
    }

    /// The edges of the pipeline's graph, by stage index: an edge from
    /// each of a stage's inputs, and one for each dead-letter route. Stage
    /// by stage in file order, each stage's inputs in the order listed,
    /// then its `on_error`.
    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    /// The stages that read stage `i`'s output: distinct, in file order.
    pub fn consumers(&self, i: usize) -> &[usize] {
        &self.consumers[i]
    }

    /// The stages whose items go to stage `i`'s input queue, as its inputs
    /// or by their `on_error`: distinct, in the order of [`Plan::edges`].
    pub fn producers(&self, i: usize) -> &[usize] {
        &self.producers[i]
    }
}

/// Reads (at most [`MAX_FILE_BYTES`]), parses, interpolates (from the
/// process environment), checks and builds the pipeline file at `path`.
pub fn load(path: &Path) -> Result<Plan, Problems> {
    let text = load::read(path)?;
    load_str(&text, path, |name| std::env::var(name).ok())
}

/// [`load()`] for a file's text, with `env` giving the variables.
///
/// The text is parsed first, within the bounds of `yaml.rs`; then
/// `${VAR}` references are replaced inside scalar values (see
/// `interpolate.rs`); then the typed form is read and every check
/// runs. Time and memory are linear in the text's length.
pub fn load_str(
    text: &str,
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Plan, Problems> {
    let file = path.display().to_string();
    let load::Parsed {
        doc,
        spec,
        problems,
    } = load::parse(text, &file, env)?;
    let base_dir = std::path::absolute(path.parent().unwrap_or(Path::new(".")))
        .unwrap_or_else(|_| PathBuf::from("."));
    let mut spec = spec;
    let tests = std::mem::take(&mut spec.tests);
    let mut checker = Checker::new(file, &doc, problems);
    let checked = checker.check(&spec);
    let stages = checker.build(&spec, &checked, &base_dir);
    // Tests name stages: checked once every stage is built.
    let tests = if stages.len() == spec.stages.len() {
        checker.check_tests(&tests, &stages)
    } else {
        Vec::new()
    };
    checker.finish()?;
    let name = spec.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map_or_else(|| "pipeline".into(), |s| s.to_string_lossy().into_owned())
    });
    // The spec holds every value as read, `${VAR}`s replaced: its text is
    // the pipeline's identity for checkpoints (its tests taken out: a new
    // test does not change what a run does).
    let hash = format!(
        "{:016x}",
        flow_core::text::fnv1a(format!("{spec:?}").as_bytes())
    );
    let mut plan = Plan::new(name, path.to_path_buf(), stages, hash);
    plan.tests = tests;
    plan.state = spec.state.as_deref().map(|dir| base_dir.join(dir));
    if let Some(interval) = spec.checkpoint_interval {
        plan.checkpoint_interval = interval;
    }
    Ok(plan)
}
