//! From a pipeline file to a checked, built [`Plan`]: every check runs, and
//! every stage is built from its options, before anything runs.
//!
//! Problems are collected, not stopped at, so one `flow validate` shows all
//! of them, each with `file:line:column`, the stage and the key.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use flow_core::{BuildContext, ConfigError, Stage, StageKind, StageType};

mod control;
mod teach;

use crate::control::FlowControl;
use crate::error::{Problem, Problems};
use crate::queue::QueueConfig;
use crate::spec::{
    MAX_LIMITS, MAX_NAME, MAX_QUEUE, MAX_STAGES, MAX_TOTAL_WORKERS, MAX_WORKERS, PipelineSpec,
    StageSpec,
};
use crate::suggest::{did_you_mean, hint};
use crate::yaml::{self, Doc, Pos};

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
    /// For each of `inputs`, the port it reads: `None` for the main
    /// output, else the index in that stage's `ports.names`.
    pub input_ports: Vec<Option<u32>>,
    /// Its named output ports.
    pub ports: flow_core::Ports,
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
    let file = path.display().to_string();
    let problem = |pos, message: String| {
        Problems(vec![Problem {
            file: file.clone(),
            pos,
            stage: None,
            message,
        }])
    };
    // Never more than the limit and a byte: a huge file, or /dev/zero, is
    // not read whole.
    let read = || -> std::io::Result<Option<Vec<u8>>> {
        let f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        if len > MAX_FILE_BYTES as u64 {
            return Ok(None);
        }
        let mut bytes = Vec::with_capacity(len as usize + 1);
        f.take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes)?;
        Ok((bytes.len() <= MAX_FILE_BYTES).then_some(bytes))
    };
    let bytes = match read() {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Err(problem(None, too_big())),
        Err(e) => return Err(problem(None, format!("cannot read the pipeline file: {e}"))),
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let text = String::from_utf8_lossy(&e.as_bytes()[..valid]);
        problem(
            Some(pos_of_offset(&text, valid)),
            "the file is not UTF-8 text (an invalid byte here)".into(),
        )
    })?;
    load_str(&text, path, |name| std::env::var(name).ok())
}

fn too_big() -> String {
    format!(
        "the file is larger than {} MiB, the most a pipeline file may be",
        MAX_FILE_BYTES >> 20
    )
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
    let problem = |pos, message: String| {
        Problems(vec![Problem {
            file: file.clone(),
            pos,
            stage: None,
            message,
        }])
    };
    if text.len() > MAX_FILE_BYTES {
        return Err(problem(None, too_big()));
    }
    let mut doc = Doc::read(text);
    // A problem at a node: its stage, and its key within the stage.
    let at_node = |doc: &Doc, pos: Pos, path: Option<&str>, message: String, short: bool| {
        let (stage, key) = match path {
            Some(path) => stage_of_path(doc, path),
            None => (None, String::new()),
        };
        let mut key = key.split('[').next().unwrap_or_default();
        if short {
            // At most two levels: a path 64 levels deep says nothing more.
            key = match key.match_indices('.').nth(1) {
                Some((i, _)) => &key[..i],
                None => key,
            };
        }
        let message = match key {
            "" => message,
            key => format!("{key}: {message}"),
        };
        Problem {
            file: file.clone(),
            pos: Some(pos),
            stage,
            message,
        }
    };
    if let Some(f) = doc.failure() {
        let p = at_node(&doc, f.pos, f.path.as_deref(), f.message.clone(), true);
        return Err(Problems(vec![p]));
    }
    let duplicates = doc.duplicates();
    if !duplicates.is_empty() {
        let problems = duplicates
            .into_iter()
            .map(|(pos, map, key, first)| {
                let message = format!("duplicate key \"{key}\" (first at line {first})");
                at_node(&doc, pos, Some(&map), message, false)
            })
            .collect();
        return Err(Problems(problems));
    }
    let failed = doc.interpolate(env);
    if !failed.is_empty() {
        let problems = failed
            .into_iter()
            .map(|f| at_node(&doc, f.pos, f.path.as_deref(), f.message, false))
            .collect();
        return Err(Problems(problems));
    }
    // Before anything costs per stage.
    for (key, most) in [("stages", MAX_STAGES), ("limits", MAX_LIMITS)] {
        if let Some(n) = doc.len(key).filter(|&n| n > most) {
            let pos = doc.key(key);
            let message = format!("{key}: {n} {key}; a pipeline may have at most {most}");
            return Err(problem(pos, message));
        }
    }
    // Unknown keys are reported, every one, and skipped, so that the rest
    // of the file is still read and checked.
    let (mut early, hidden_in) = unknown_keys(&mut doc, &file);
    // A bad value of an optional key of a stage or of `defaults:` is
    // reported, and the key hidden so the rest is read and checked too;
    // the reading is repeated for that, within a budget of values read, so
    // that validation stays linear in the file's size.
    let mut budget = REREAD_BUDGET;
    let spec: PipelineSpec = loop {
        let e = match yaml::parse(&doc) {
            Ok(spec) => break spec,
            Err(e) => e,
        };
        // A key missing from a map with an unknown key is most likely that
        // key misspelt: reported already.
        if e.message.starts_with("missing field") && hidden_in.contains(&e.path) {
            early.sort_by_key(|p| p.pos.map(|p| (p.line, p.column)));
            return Err(Problems(early));
        }
        let (stage, key) = stage_of_path(&doc, &e.path);
        let message = friendly(&e.message);
        let message = teach::parse_problem(&key, &e.message, message, doc.quoted(&e.path));
        let unknown = e.message.starts_with("unknown field");
        // An unknown key is named by the message; its parent map (none for
        // a stage's own keys, the stage being named) leads.
        let lead = if unknown {
            key.rsplit_once('.').map_or("", |(parent, _)| parent)
        } else {
            key.as_str()
        };
        let message = match lead {
            "" => message,
            lead => format!("{lead}: {message}"),
        };
        let pos = if unknown {
            doc.key(&e.path)
        } else {
            doc.value(&e.path)
        };
        early.push(Problem {
            file: file.clone(),
            pos: pos.or(e.pos),
            stage,
            message,
        });
        budget = budget.saturating_sub(doc.size().max(1));
        let hidden =
            budget > 0 && optional_entry(&e.path).is_some_and(|(map, key)| doc.hide(&map, &key));
        if !hidden {
            early.sort_by_key(|p| p.pos.map(|p| (p.line, p.column)));
            return Err(Problems(early));
        }
    };
    let base_dir = std::path::absolute(path.parent().unwrap_or(Path::new(".")))
        .unwrap_or_else(|_| PathBuf::from("."));
    Checker {
        file,
        positions: &doc,
        seen: early.iter().cloned().collect(),
        problems: early,
        suggested: HashSet::new(),
        hints_left: MAX_HINTS,
        expressions: HashMap::new(),
    }
    .check(spec, path, &base_dir)
}

/// Values the typed reading may read again, in all, after hiding a key
/// with a bad value (see [`load_str`]).
const REREAD_BUDGET: u64 = 1 << 20;

/// For a typed reading's error at `path`, the entry to hide so that the
/// rest can be read: an optional key of a stage (`stages[2].workers`,
/// `stages[2].retry.backoff` hides `retry`) or of `defaults:`. None for a
/// stage's name or type, or anything else.
fn optional_entry(path: &str) -> Option<(String, String)> {
    let first = |rest: &str| {
        rest.split(['.', '['])
            .next()
            .filter(|k| !k.is_empty())
            .map(str::to_string)
    };
    if let Some(rest) = path.strip_prefix("defaults.") {
        return first(rest).map(|k| ("defaults".to_string(), k));
    }
    let rest = path.strip_prefix("stages[")?;
    let (n, rest) = rest.split_once("].")?;
    let key = first(rest)?;
    if key == "name" || key == "type" || !crate::spec::STAGE_KEYS.contains(&key.as_str()) {
        return None;
    }
    Some((format!("stages[{n}]"), key))
}

/// Every key of the file's runner-owned maps (the top level, `defaults:`,
/// each stage, each `retry:`) that is not one of theirs, reported and then
/// hidden from the typed reading. A stage key that is an option of the
/// stage's type is said to belong under `with:`.
fn unknown_keys(doc: &mut Doc, file: &str) -> (Vec<Problem>, HashSet<String>) {
    use crate::spec::{DEFAULTS_KEYS, PIPELINE_KEYS, RETRY_KEYS, STAGE_KEYS};
    // (the map's path, the key, the stage, the message)
    let mut found = Vec::new();
    // A misspelt required key is read as the key it was meant to be, so
    // that its absence does not stop the reading.
    const REQUIRED: [&str; 4] = ["name", "type", "stages", "attempts"];
    type Found = Vec<(String, String, Option<String>, String, Option<&'static str>)>;
    let look = |found: &mut Found,
                doc: &Doc,
                map: &str,
                keys: &[&'static str],
                stage: Option<&str>,
                lead: &str| {
        let present = doc.keys(map);
        // The required keys the map has, or one misspelt key was read as:
        // found once, so a map of many keys costs no more per key.
        let mut taken: Vec<&str> = REQUIRED
            .into_iter()
            .filter(|r| present.contains(r))
            .collect();
        for &key in &present {
            if keys.contains(&key) {
                continue;
            }
            let rename = did_you_mean(key, keys.iter().copied())
                .filter(|s| REQUIRED.contains(s) && !taken.contains(s));
            taken.extend(rename);
            let listed: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
            let serde = format!(
                "unknown field `{key}`, expected one of {}",
                listed.join(", ")
            );
            let message = match lead {
                "" => friendly(&serde),
                lead => format!("{lead}: {}", friendly(&serde)),
            };
            found.push((
                map.to_string(),
                key.to_string(),
                stage.map(str::to_string),
                message,
                rename,
            ));
        }
    };
    look(&mut found, doc, "", &PIPELINE_KEYS, None, "");
    look(
        &mut found,
        doc,
        "defaults",
        &DEFAULTS_KEYS,
        None,
        "defaults",
    );
    look(
        &mut found,
        doc,
        "defaults.retry",
        &RETRY_KEYS,
        None,
        "defaults.retry",
    );
    let stages = if doc.keys("").contains(&"stages") {
        doc.len("stages").unwrap_or(0)
    } else {
        0
    };
    // The options of each stage type met, by name.
    let mut options: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..stages {
        let path = format!("stages[{i}]");
        let name = doc.text(&format!("{path}.name"));
        let before = found.len();
        look(&mut found, doc, &path, &STAGE_KEYS, name, "");
        look(
            &mut found,
            doc,
            &format!("{path}.retry"),
            &RETRY_KEYS,
            name,
            "retry",
        );
        let Some(type_name) = doc.text(&format!("{path}.type")) else {
            continue;
        };
        for (map, key, _, message, _) in &mut found[before..] {
            if *map != path {
                continue;
            }
            let of_type = options.entry(type_name.to_string()).or_insert_with(|| {
                flow_core::stage_type(type_name).map_or_else(Vec::new, |t| {
                    t.options_schema()
                        .get("properties")
                        .and_then(|p| p.as_object())
                        .map_or_else(Vec::new, |p| p.keys().cloned().collect())
                })
            });
            if of_type.contains(key) {
                *message = format!(
                    "unknown key \"{key}\": it is an option of type {type_name}; put it under with:"
                );
            }
        }
    }
    let maps = found.iter().map(|(map, ..)| map.clone()).collect();
    let problems = found
        .into_iter()
        .map(|(map, key, stage, message, rename)| {
            let at = if map.is_empty() {
                key.clone()
            } else {
                format!("{map}.{key}")
            };
            let pos = doc.key(&at);
            match rename {
                Some(to) => doc.rename(&map, &key, to),
                None => {
                    doc.hide(&map, &key);
                }
            }
            Problem {
                file: file.to_string(),
                pos,
                stage,
                message,
            }
        })
        .collect();
    (problems, maps)
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
                Ok(built) => planned.push(PlannedStage {
                    name: s.name.clone(),
                    type_name: s.type_name.clone(),
                    kind: stage_type.kind,
                    input_ports: vec![None; inputs[i].len()],
                    inputs: inputs[i].clone(),
                    ports: built.ports,
                    workers,
                    queue,
                    control,
                    on_error: on_error[i],
                    stage: built.stage,
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

/// Rewrites serde's messages in the user's words, with "did you mean".
fn friendly(message: &str) -> String {
    let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let rest = quoted.get(1..).unwrap_or_default();
    if let Some(field) = message.strip_prefix("unknown field `").and(quoted.first()) {
        if message.contains("there are no fields") {
            return format!("unknown key \"{field}\"; this stage type takes no options");
        }
        let suggestion = hint(field, rest.iter().copied());
        return if suggestion.is_empty() {
            format!(
                "unknown key \"{field}\"; expected one of: {}",
                rest.join(", ")
            )
        } else {
            format!("unknown key \"{field}\"{suggestion}")
        };
    }
    if let Some(value) = message
        .strip_prefix("unknown variant `")
        .and(quoted.first())
    {
        let suggestion = hint(value, rest.iter().copied());
        return format!(
            "unknown value \"{value}\"{suggestion}; expected one of: {}",
            rest.join(", ")
        );
    }
    if let Some(field) = message.strip_prefix("missing field `").and(quoted.first()) {
        return format!("missing key \"{field}\"");
    }
    rust_types_in_words(message)
}

/// `expected usize` and `expected struct RetrySpec` say what the user
/// should write instead.
fn rust_types_in_words(message: &str) -> String {
    let Some((head, tail)) = message.split_once("expected ") else {
        return message.to_string();
    };
    let (expected, rest) = tail.split_at(tail.find([',', ' ', ')']).unwrap_or(tail.len()));
    let words = match expected {
        "usize" | "u8" | "u16" | "u32" | "u64" => "a whole number, 0 or more",
        "isize" | "i8" | "i16" | "i32" | "i64" => "a whole number",
        "f32" | "f64" => "a number",
        "struct" => {
            let after = rest.trim_start();
            let name_len = after
                .find(|c: char| !c.is_alphanumeric() && c != '_')
                .unwrap_or(after.len());
            return format!("{head}expected a map{}", &after[name_len..]);
        }
        _ => return message.to_string(),
    };
    format!("{head}expected {words}{rest}")
}

/// For a path inside `stages[N]`, the stage's name (its text as written,
/// whatever its type) and the rest of the path.
fn stage_of_path(doc: &Doc, path: &str) -> (Option<String>, String) {
    let Some(rest) = path.strip_prefix("stages[") else {
        return (None, path.to_string());
    };
    let Some((n, key)) = rest.split_once(']') else {
        return (None, path.to_string());
    };
    let key = key.strip_prefix('.').unwrap_or(key).to_string();
    let name = doc.text(&format!("stages[{n}].name")).map(str::to_string);
    (name, key)
}

fn pos_of_offset(text: &str, offset: usize) -> Pos {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Pos { line, column }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_become_suggestions() {
        let m = friendly("unknown field `wokers`, expected one of `name`, `type`, `workers`");
        assert_eq!(m, "unknown key \"wokers\" (did you mean \"workers\"?)");
        let m = friendly("unknown field `zzz`, expected `expr`");
        assert_eq!(m, "unknown key \"zzz\"; expected one of: expr");
        let m = friendly("unknown variant `lifoo`, expected one of `fifo`, `lifo`, `priority`");
        assert!(
            m.starts_with("unknown value \"lifoo\" (did you mean \"lifo\"?)"),
            "{m}"
        );
        assert_eq!(friendly("missing field `expr`"), "missing key \"expr\"");
    }

    #[test]
    fn rust_type_names_become_words() {
        assert_eq!(
            friendly("invalid type: string \"many\", expected usize"),
            "invalid type: string \"many\", expected a whole number, 0 or more"
        );
        assert_eq!(
            friendly("invalid type: integer `3`, expected struct GenerateOptions"),
            "invalid type: integer `3`, expected a map"
        );
        assert_eq!(friendly("expected a sequence"), "expected a sequence");
    }

    #[test]
    fn offsets_become_lines_and_columns() {
        assert_eq!(pos_of_offset("ab\ncd", 4), Pos { line: 2, column: 2 });
        assert_eq!(pos_of_offset("ab", 0), Pos { line: 1, column: 1 });
    }
}
