//! From a pipeline file to a checked, built [`Plan`]: every check runs, and
//! every stage is built from its options, before anything runs.
//!
//! Problems are collected, not stopped at, so one `flow validate` shows all
//! of them, each with `file:line:column`, the stage and the key.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use flow_core::{BuildContext, ConfigError, Stage, StageKind, StageType};

mod control;
mod load;
mod teach;

use crate::control::FlowControl;
use crate::error::{Problem, Problems};
use crate::queue::QueueConfig;
use crate::spec::{MAX_NAME, MAX_QUEUE, MAX_TOTAL_WORKERS, MAX_WORKERS, PipelineSpec, StageSpec};
use crate::suggest::{did_you_mean, hint};
use crate::yaml::{Doc, Pos};
use load::friendly;

/// A validated pipeline whose stages are built and wired, ready to run.
pub struct Plan {
    pub name: String,
    pub file: PathBuf,
    /// In file order.
    pub stages: Vec<PlannedStage>,
}

/// One stage of a [`Plan`].
pub struct PlannedStage {
    pub name: String,
    pub type_name: String,
    pub kind: StageKind,
    /// Indices of the stages this one reads from.
    pub inputs: Vec<usize>,
    pub workers: usize,
    /// The input queue: capacity, order, byte bound (unused by sources).
    pub queue: QueueConfig,
    /// Rate limit, retries, timeout, output order.
    pub control: FlowControl,
    pub on_error: OnError,
    pub stage: Stage,
}

/// What happens to an item whose processing failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Count it as dropped, log it, go on.
    Drop,
    /// Stop the run (exit code 1).
    Fail,
    /// Send `{"item", "error"}` to this stage.
    DeadLetter(usize),
}

impl Plan {
    /// The stages that read from stage `i`.
    pub fn consumers(&self, i: usize) -> Vec<usize> {
        (0..self.stages.len())
            .filter(|&j| self.stages[j].inputs.contains(&i))
            .collect()
    }
}

/// The largest pipeline file: 16 MiB.
pub const MAX_FILE_BYTES: usize = 16 << 20;

/// Reads (at most [`MAX_FILE_BYTES`]), parses, interpolates (from the
/// process environment), checks and builds the pipeline file at `path`.
pub fn load(path: &Path) -> Result<Plan, Problems> {
    let text = load::read(path)?;
    load_str(&text, path, |name| std::env::var(name).ok())
}

/// [`load`] for a file's text, with `env` giving the variables.
///
/// The text is parsed first, within the bounds of [`crate::yaml`]; then
/// `${VAR}` references are replaced inside scalar values (see
/// [`crate::interpolate`]); then the typed form is read and every check
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
    Checker {
        file,
        positions: &doc,
        seen: problems.iter().cloned().collect(),
        problems,
        suggested: HashSet::new(),
        hints_left: MAX_HINTS,
        expressions: HashMap::new(),
    }
    .check(spec, path, &base_dir)
}

/// "Did you mean" is looked for this many times per file at most: each
/// look compares a name with every stage's.
const MAX_HINTS: usize = 100;

struct Checker<'a> {
    file: String,
    positions: &'a Doc<'a>,
    problems: Vec<Problem>,
    /// The problems recorded, so that one found again is not.
    seen: HashSet<Problem>,
    /// Stages that a "did you mean" suggested for a misspelt reference: the
    /// reference was probably meant for them, so their being unread or
    /// unfed is not reported on top.
    suggested: HashSet<usize>,
    /// Looks for "did you mean" left (see [`MAX_HINTS`]).
    hints_left: usize,
    /// Runner-owned expressions compiled so far, by their text.
    expressions: HashMap<String, flow_core::Expr>,
}

impl Checker<'_> {
    /// Records a problem; one found again (a bad `defaults:` value met by
    /// every stage) is recorded once.
    fn report(&mut self, stage: Option<&str>, pos: Option<Pos>, message: impl Into<String>) {
        let problem = Problem {
            file: self.file.clone(),
            pos,
            stage: stage.map(str::to_string),
            message: message.into(),
        };
        if self.seen.insert(problem.clone()) {
            self.problems.push(problem);
        }
    }

    /// Whether another "did you mean" may be looked for.
    fn may_hint(&mut self) -> bool {
        let may = self.hints_left > 0;
        self.hints_left = self.hints_left.saturating_sub(1);
        may
    }

    /// ` (did you mean "x"?)` for `word` among `words` and the stage
    /// `names` but `own` (the stage whose reference it is); remembers a
    /// suggested stage.
    fn hint_stage(
        &mut self,
        word: &str,
        own: Option<usize>,
        names: &[&str],
        words: &[&str],
    ) -> String {
        if !self.may_hint() {
            return String::new();
        }
        let others = names
            .iter()
            .enumerate()
            .filter(|&(k, _)| Some(k) != own)
            .map(|(_, n)| *n);
        // Stage names first: a tie (`faild` is as near `fail` as a stage
        // `failed`) goes to the stage the file has.
        let Some(suggestion) = did_you_mean(word, others.chain(words.iter().copied())) else {
            return String::new();
        };
        if !words.contains(&suggestion)
            && let Some(k) = names.iter().position(|n| *n == suggestion)
        {
            self.suggested.insert(k);
            // Beside keywords, say which it is.
            if !words.is_empty() {
                return format!(" (did you mean the stage \"{suggestion}\"?)");
            }
        }
        format!(" (did you mean \"{suggestion}\"?)")
    }

    fn check(mut self, spec: PipelineSpec, path: &Path, base_dir: &Path) -> Result<Plan, Problems> {
        let stages = &spec.stages;
        if stages.is_empty() {
            let pos = self.positions.key("stages");
            self.report(
                None,
                pos,
                "stages: no stages; a pipeline needs a source and a sink",
            );
        }
        let limits = self.resolve_limits(&spec);
        let index = self.check_names(stages);
        let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
        let types: Vec<Option<&'static StageType>> = stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let found = flow_core::stage_type(&s.type_name);
                if found.is_none() {
                    let known = flow_core::stage_types();
                    let near = hint(&s.type_name, known.iter().map(|t| t.name));
                    // Not a typo: perhaps a plugin's type, in a binary that
                    // does not link the plugin.
                    let message = if near.is_empty() {
                        format!(
                            "unknown stage type \"{}\" (`flow stages` lists the known ones); if it comes from a plugin crate, the flow binary must link it (in its main.rs: use my_plugin as _;)",
                            s.type_name
                        )
                    } else {
                        format!("unknown stage type \"{}\"{near}", s.type_name)
                    };
                    let pos = self.positions.value(&format!("stages[{i}].type"));
                    self.report(Some(&s.name), pos, message);
                }
                found
            })
            .collect();
        let kinds: Vec<Option<StageKind>> = types.iter().map(|t| t.map(|t| t.kind)).collect();

        let inputs: Vec<Vec<usize>> = (0..stages.len())
            .map(|i| self.resolve_inputs(i, stages, &kinds, &index, &names))
            .collect();
        let on_error: Vec<OnError> = (0..stages.len())
            .map(|i| self.resolve_on_error(i, &spec, &kinds, &index, &names))
            .collect();
        self.check_wiring(stages, &kinds, &inputs, &on_error);
        if self.problems.is_empty() {
            self.check_cycles(stages, &inputs, &on_error);
        }

        let mut planned = Vec::new();
        let mut total_workers = 0usize;
        let no_options = serde_json::Value::Object(Default::default());
        crate::panics::install_hook();
        for (i, s) in stages.iter().enumerate() {
            let source = kinds[i] == Some(StageKind::Source);
            let workers = self.positive(
                i,
                s,
                ("workers", MAX_WORKERS),
                (s.workers, spec.defaults.workers),
                1,
                source,
            );
            let capacity = self.positive(
                i,
                s,
                ("queue", MAX_QUEUE),
                (s.queue, spec.defaults.queue),
                64,
                source,
            );
            total_workers += workers;
            let (control, queue) = self.resolve_control(i, s, &spec, source, capacity, &limits);
            let Some(stage_type) = types[i] else { continue };
            let ctx = BuildContext {
                stage: s.name.clone(),
                workers,
                base_dir: base_dir.to_path_buf(),
                timeout: control.timeout,
            };
            let with = s
                .with
                .as_ref()
                .filter(|w| !w.is_null())
                .unwrap_or(&no_options);
            // A stage type's own checks must not take validation down.
            let built =
                crate::panics::catch(|| stage_type.build(with, &ctx)).unwrap_or_else(|panic| {
                    Err(ConfigError::new(
                        "",
                        format!("the stage type failed while checking its options: {panic}"),
                    ))
                });
            match built {
                Ok(stage) => planned.push(PlannedStage {
                    name: s.name.clone(),
                    type_name: s.type_name.clone(),
                    kind: stage_type.kind,
                    inputs: inputs[i].clone(),
                    workers,
                    queue,
                    control,
                    on_error: on_error[i],
                    stage,
                }),
                Err(e) => self.report_option(i, s, e),
            }
        }
        if total_workers > MAX_TOTAL_WORKERS {
            let pos = self.positions.key("stages");
            let message = format!(
                "stages: the stages' workers add up to {total_workers}; a pipeline may have at most {MAX_TOTAL_WORKERS} in all"
            );
            self.report(None, pos, message);
        }
        for p in &planned {
            let built_source = matches!(p.stage, Stage::Source(_));
            if built_source != (p.kind == StageKind::Source) {
                let message = format!(
                    "stage type \"{}\" is registered as a {} but built a {}",
                    p.type_name,
                    p.kind,
                    if built_source { "source" } else { "processor" }
                );
                self.problems.push(Problem {
                    file: self.file.clone(),
                    pos: None,
                    stage: Some(p.name.clone()),
                    message,
                });
            }
        }
        if !self.problems.is_empty() {
            self.problems
                .sort_by_key(|p| p.pos.map(|p| (p.line, p.column)));
            return Err(Problems(self.problems));
        }
        let name = spec.name.unwrap_or_else(|| {
            path.file_stem()
                .map_or_else(|| "pipeline".into(), |s| s.to_string_lossy().into_owned())
        });
        Ok(Plan {
            name,
            file: path.to_path_buf(),
            stages: planned,
        })
    }

    fn check_names<'s>(&mut self, stages: &'s [StageSpec]) -> HashMap<&'s str, usize> {
        let mut index = HashMap::new();
        for (i, s) in stages.iter().enumerate() {
            let pos = self.positions.value(&format!("stages[{i}].name"));
            let valid = !s.name.is_empty()
                && s.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                self.report(
                    Some(&s.name),
                    pos,
                    "name: use only letters, digits, `_` and `-`",
                );
            } else if s.name.len() > MAX_NAME {
                let message = format!(
                    "name: {} characters; a name may have at most {MAX_NAME}",
                    s.name.len()
                );
                self.report(Some(&s.name), pos, message);
            }
            if let Some(&first) = index.get(s.name.as_str()) {
                let line = self
                    .positions
                    .value(&format!("stages[{first}].name"))
                    .map_or(String::new(), |p| format!(" (first at line {})", p.line));
                self.report(
                    Some(&s.name),
                    pos,
                    format!("name: duplicate stage name{line}"),
                );
            } else {
                index.insert(s.name.as_str(), i);
            }
        }
        index
    }

    fn resolve_inputs(
        &mut self,
        i: usize,
        stages: &[StageSpec],
        kinds: &[Option<StageKind>],
        index: &HashMap<&str, usize>,
        names: &[&str],
    ) -> Vec<usize> {
        let s = &stages[i];
        let name = Some(s.name.as_str());
        let is_source = kinds[i] == Some(StageKind::Source);
        let Some(list) = &s.inputs else {
            if is_source || i == 0 {
                return Vec::new();
            }
            if kinds[i - 1] == Some(StageKind::Sink) {
                let pos = self.positions.value(&format!("stages[{i}]"));
                let message = format!(
                    "no `inputs:`, and the stage before it, \"{}\", is a sink with no output; \
                     name this stage's inputs, or write `inputs: []` for a dead-letter stage",
                    stages[i - 1].name
                );
                self.report(name, pos, message);
                return Vec::new();
            }
            return vec![i - 1];
        };
        if is_source && !list.is_empty() {
            let pos = self.positions.key(&format!("stages[{i}].inputs"));
            let message = format!(
                "inputs: a source takes no inputs (\"{}\" is a source type)",
                s.type_name
            );
            self.report(name, pos, message);
            return Vec::new();
        }
        let mut resolved = Vec::new();
        let mut listed = HashSet::new();
        for (j, input) in list.iter().enumerate() {
            let pos = self.positions.value(&format!("stages[{i}].inputs[{j}]"));
            match index.get(input.as_str()) {
                None => {
                    let hint = self.hint_stage(input, Some(i), names, &[]);
                    let message = format!("inputs: unknown stage \"{input}\"{hint}");
                    self.report(name, pos, message);
                }
                Some(&k) if k == i => {
                    self.report(name, pos, "inputs: a stage cannot read its own output")
                }
                Some(&k) if kinds[k] == Some(StageKind::Sink) => {
                    let message = format!("inputs: \"{input}\" is a sink; nothing comes out of it");
                    self.report(name, pos, message);
                }
                Some(&k) if !listed.insert(k) => {
                    self.report(name, pos, format!("inputs: \"{input}\" is listed twice"));
                }
                Some(&k) => resolved.push(k),
            }
        }
        resolved
    }

    fn resolve_on_error(
        &mut self,
        i: usize,
        spec: &PipelineSpec,
        kinds: &[Option<StageKind>],
        index: &HashMap<&str, usize>,
        names: &[&str],
    ) -> OnError {
        let s = &spec.stages[i];
        // A source's bad record stops the run unless the source says
        // otherwise: `defaults:` are for processors and sinks.
        let source = kinds[i] == Some(StageKind::Source);
        let (value, path) = match (&s.on_error, &spec.defaults.on_error) {
            (Some(v), _) => (v, format!("stages[{i}].on_error")),
            (None, _) if source => return OnError::Fail,
            (None, Some(v)) => (v, "defaults.on_error".to_string()),
            (None, None) => return OnError::Drop,
        };
        let pos = self.positions.value(&path);
        // A bad default is the defaults' problem, not each stage's.
        let (name, key) = match s.on_error {
            Some(_) => (Some(s.name.as_str()), "on_error"),
            None => (None, "defaults.on_error"),
        };
        match value.as_str() {
            "drop" => OnError::Drop,
            "fail" => OnError::Fail,
            target => match index.get(target) {
                // A default dead-letter route does not apply to the
                // dead-letter stage itself.
                Some(&k) if k == i && s.on_error.is_none() => OnError::Drop,
                Some(&k) if k == i => {
                    self.report(
                        name,
                        pos,
                        "on_error: a stage cannot take its own failed items",
                    );
                    OnError::Drop
                }
                Some(&k) if kinds[k] == Some(StageKind::Source) => {
                    let message = format!("{key}: \"{target}\" is a source; it takes no items");
                    self.report(name, pos, message);
                    OnError::Drop
                }
                Some(&k) => OnError::DeadLetter(k),
                None => {
                    let own = s.on_error.is_some().then_some(i);
                    let hint = self.hint_stage(target, own, names, &["drop", "fail"]);
                    let message =
                        format!("{key}: \"{target}\" is not drop, fail or a stage name{hint}");
                    self.report(name, pos, message);
                    OnError::Drop
                }
            },
        }
    }

    fn check_wiring(
        &mut self,
        stages: &[StageSpec],
        kinds: &[Option<StageKind>],
        inputs: &[Vec<usize>],
        on_error: &[OnError],
    ) {
        let routed: HashSet<usize> = on_error
            .iter()
            .filter_map(|o| match o {
                OnError::DeadLetter(k) => Some(*k),
                _ => None,
            })
            .collect();
        let mut read = vec![false; stages.len()];
        for &k in inputs.iter().flatten() {
            read[k] = true;
        }
        for (i, s) in stages.iter().enumerate() {
            let Some(kind) = kinds[i] else { continue };
            if self.suggested.contains(&i) {
                continue;
            }
            let name = Some(s.name.as_str());
            let stage_pos = self.positions.value(&format!("stages[{i}]"));
            if kind != StageKind::Source && inputs[i].is_empty() && !routed.contains(&i) {
                // Problems with the named inputs, or with a default input
                // that is a sink, were reported already.
                let why = match &s.inputs {
                    Some(l) if l.is_empty() => Some((
                        self.positions.key(&format!("stages[{i}].inputs")),
                        "it has `inputs: []` and no stage's on_error names it",
                    )),
                    None if i == 0 => {
                        Some((stage_pos, "it is the first stage and is not a source"))
                    }
                    _ => None,
                };
                if let Some((pos, why)) = why {
                    self.report(name, pos, format!("nothing feeds this {kind}: {why}"));
                }
            }
            if kind != StageKind::Sink && !read[i] {
                let message = match kind {
                    StageKind::Source => "nothing reads from this source; add a stage after it",
                    _ => {
                        "nothing reads this stage's output; add a sink after it (type: drop to discard)"
                    }
                };
                self.report(name, stage_pos, message);
            }
        }
    }

    fn check_cycles(&mut self, stages: &[StageSpec], inputs: &[Vec<usize>], on_error: &[OnError]) {
        // Edges run from producer to consumer, dead-letter routes included.
        let n = stages.len();
        let mut next: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, ins) in inputs.iter().enumerate() {
            for &k in ins {
                next[k].push(i);
            }
            if let OnError::DeadLetter(k) = on_error[i] {
                next[i].push(k);
            }
        }
        // Depth-first search with colours; a grey node seen again closes a cycle.
        let mut colour = vec![0u8; n];
        let mut path = Vec::new();
        for start in 0..n {
            if colour[start] == 0
                && let Some(cycle) = find_cycle(start, &next, &mut colour, &mut path)
            {
                let i = cycle[0];
                let names: Vec<&str> = cycle.iter().map(|&k| stages[k].name.as_str()).collect();
                let pos = self
                    .positions
                    .key(&format!("stages[{i}].inputs"))
                    .or_else(|| self.positions.value(&format!("stages[{i}]")));
                let message = format!(
                    "inputs: the stages form a cycle: {} -> {}",
                    names.join(" -> "),
                    names[0]
                );
                self.report(Some(&stages[i].name), pos, message);
                return;
            }
        }
    }

    /// A positive count setting (`workers`, `queue`), from the stage or the
    /// defaults, at most `most`. Sources have no input queue or worker
    /// pool. A bad value gives `fallback`, so nothing is sized by it.
    fn positive(
        &mut self,
        i: usize,
        s: &StageSpec,
        (key, most): (&str, usize),
        (own, default): (Option<usize>, Option<usize>),
        fallback: usize,
        source: bool,
    ) -> usize {
        let path = format!("stages[{i}].{key}");
        if source {
            if own.is_some_and(|v| v != 1 || key == "queue") {
                let pos = self.positions.key(&path);
                let why = if key == "queue" {
                    "a source has no input queue"
                } else {
                    "a source runs as one task"
                };
                self.report(Some(&s.name), pos, format!("{key}: {why}"));
            }
            return 1;
        }
        let (value, path, stage, key) = match (own, default) {
            (Some(v), _) => (v, path, Some(s.name.as_str()), key.to_string()),
            // A bad default is the defaults' problem, not each stage's.
            (None, Some(v)) => (
                v,
                format!("defaults.{key}"),
                None,
                format!("defaults.{key}"),
            ),
            (None, None) => return fallback,
        };
        let why = match value {
            0 => "must be at least 1".to_string(),
            v if v > most => format!("must be at most {most}"),
            _ => return value,
        };
        let pos = self.positions.value(&path);
        self.report(stage, pos, format!("{key}: {why}"));
        fallback
    }

    fn report_option(&mut self, i: usize, s: &StageSpec, e: ConfigError) {
        // An option written beside `with:` instead of under it was
        // reported as such already.
        if let Some(key) = e
            .message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            && !crate::spec::STAGE_KEYS.contains(&key)
            && self.positions.key(&format!("stages[{i}].{key}")).is_some()
        {
            return;
        }
        let with = format!("stages[{i}].with");
        let path = if e.key.is_empty() {
            with.clone()
        } else {
            format!("{with}.{}", e.key)
        };
        let unknown = e.message.starts_with("unknown field");
        let pos = match e.offset {
            Some(offset) => self.positions.inside(&path, offset),
            None if unknown => self.positions.key(&path),
            None => self.positions.value(&path),
        }
        .or_else(|| self.positions.key(&with))
        .or_else(|| self.positions.value(&format!("stages[{i}]")));
        let code = e.expr.as_ref().zip(self.positions.text(&path));
        let message = if let Some((error, code)) = code {
            teach::expression_problem(&format!("with.{}", e.key), code, error)
        } else if e.key.is_empty() && friendly(&e.message).ends_with("expected a map") {
            format!(
                "with: {}: the options of type {} go in a map under with: (`flow stages {}` lists them)",
                friendly(&e.message),
                s.type_name,
                s.type_name
            )
        } else if unknown || e.key.is_empty() {
            format!("with: {}", friendly(&e.message))
        } else {
            format!("with.{}: {}", e.key, friendly(&e.message))
        };
        self.report(Some(&s.name), pos, message);
    }
}

/// A cycle reachable from `start`, by a depth-first search with colours
/// (0 unseen, 1 on the path, 2 done), without recursion: a chain of every
/// stage is as deep as it goes.
fn find_cycle(
    start: usize,
    next: &[Vec<usize>],
    colour: &mut [u8],
    path: &mut Vec<usize>,
) -> Option<Vec<usize>> {
    // The path, each node with the index of its next edge to follow.
    let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
    colour[start] = 1;
    path.push(start);
    while let Some(&mut (at, ref mut edge)) = stack.last_mut() {
        match next[at].get(*edge) {
            Some(&to) => {
                *edge += 1;
                match colour[to] {
                    1 => {
                        let first = path
                            .iter()
                            .position(|&k| k == to)
                            .expect("grey nodes are on the path");
                        return Some(path[first..].to_vec());
                    }
                    0 => {
                        colour[to] = 1;
                        path.push(to);
                        stack.push((to, 0));
                    }
                    _ => {}
                }
            }
            None => {
                colour[at] = 2;
                path.pop();
                stack.pop();
            }
        }
    }
    None
}
