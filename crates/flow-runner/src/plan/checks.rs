//! The checks of a pipeline's stages: names, types, inputs, `on_error`,
//! stages that nothing feeds or nothing reads, cycles. A [`Checker`]
//! collects the problems, each with its position, rather than stopping at
//! the first, so one `flow validate` shows all of them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use flow_core::{Ports, StageKind, StageType};

use super::graph::{self, Edge, EdgeKind, OnError, Wiring, find_cycle};
use crate::error::{Problem, Problems};
use crate::rate::Limiter;
use crate::spec::{MAX_NAME, PipelineSpec, StageSpec};
use crate::suggest::{did_you_mean, hint};
use crate::yaml::{Doc, Pos};

/// "Did you mean" is looked for this many times per file at most: each
/// look compares a name with every stage's.
const MAX_HINTS: usize = 100;

/// Checks a pipeline and collects its problems.
pub(super) struct Checker<'a> {
    pub(super) file: String,
    pub(super) positions: &'a Doc<'a>,
    pub(super) problems: Vec<Problem>,
    /// The problems recorded, so that one found again is not.
    seen: HashSet<Problem>,
    /// Stages that a "did you mean" suggested for a misspelt reference: the
    /// reference was probably meant for them, so their being unread or
    /// unfed is not reported on top.
    suggested: HashSet<usize>,
    /// Stages that an input named with a port they do not have (or read
    /// without one, when they have only ports): a port of theirs left
    /// unread is most likely the one meant, so it is not reported on top.
    misread: HashSet<usize>,
    /// Looks for "did you mean" left (see [`MAX_HINTS`]).
    hints_left: usize,
    /// Runner-owned expressions compiled so far, by their text.
    pub(super) expressions: HashMap<String, flow_core::Expr>,
}

/// What the checks resolved, for building the stages.
pub(super) struct Checked {
    /// The named limits of `limits:` (see [`Checker::resolve_limits`]).
    pub limits: BTreeMap<String, Option<Arc<Limiter>>>,
    /// Each stage's type, when it is a known one.
    pub types: Vec<Option<&'static StageType>>,
    /// Each stage's inputs and `on_error`.
    pub wiring: Vec<Resolved>,
}

/// A stage's inputs and `on_error`, resolved to stage indices.
pub(super) struct Resolved {
    pub inputs: Vec<usize>,
    /// For each of `inputs`, the index of the named port it reads.
    pub input_ports: Vec<Option<u32>>,
    pub on_error: OnError,
}

impl Wiring for Resolved {
    fn inputs(&self) -> &[usize] {
        &self.inputs
    }

    fn input_ports(&self) -> &[Option<u32>] {
        &self.input_ports
    }

    fn on_error(&self) -> OnError {
        self.on_error
    }
}

impl<'a> Checker<'a> {
    /// A checker of the file `file`, whose document gives the positions,
    /// with the problems found while reading it.
    pub(super) fn new(file: String, positions: &'a Doc<'a>, problems: Vec<Problem>) -> Self {
        Checker {
            file,
            positions,
            seen: problems.iter().cloned().collect(),
            problems,
            suggested: HashSet::new(),
            misread: HashSet::new(),
            hints_left: MAX_HINTS,
            expressions: HashMap::new(),
        }
    }
}

impl Checker<'_> {
    /// Records a problem; one found again (a bad `defaults:` value met by
    /// every stage) is recorded once.
    pub(super) fn report(
        &mut self,
        stage: Option<&str>,
        pos: Option<Pos>,
        message: impl Into<String>,
    ) {
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
    pub(super) fn may_hint(&mut self) -> bool {
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

    /// Checks the stages and their wiring: names, types, inputs,
    /// `on_error`, stages nothing feeds or nothing reads and, when nothing
    /// else is wrong, cycles.
    pub(super) fn check(&mut self, spec: &PipelineSpec) -> Checked {
        let stages = &spec.stages;
        if stages.is_empty() {
            let pos = self.positions.key("stages");
            self.report(
                None,
                pos,
                "stages: no stages; a pipeline needs a source and a sink",
            );
        }
        let limits = self.resolve_limits(spec);
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
        // Each stage's named ports, where its options can tell (otherwise
        // building the stage reports what is wrong with them).
        let no_options = serde_json::Value::Object(Default::default());
        let ports: Vec<Option<Ports>> = stages
            .iter()
            .zip(&types)
            .map(|(s, t)| {
                let with = s
                    .with
                    .as_ref()
                    .filter(|w| !w.is_null())
                    .unwrap_or(&no_options);
                t.and_then(|t| crate::panics::catch(|| t.ports(with)).ok().flatten())
            })
            .collect();

        let inputs: Vec<(Vec<usize>, Vec<Option<u32>>)> = (0..stages.len())
            .map(|i| self.resolve_inputs(i, stages, &kinds, &ports, &index, &names))
            .collect();
        let on_error: Vec<OnError> = (0..stages.len())
            .map(|i| self.resolve_on_error(i, spec, &kinds, &index, &names))
            .collect();
        let wiring: Vec<Resolved> = inputs
            .into_iter()
            .zip(on_error)
            .map(|((inputs, input_ports), on_error)| Resolved {
                inputs,
                input_ports,
                on_error,
            })
            .collect();
        let edges = graph::edges(&wiring);
        self.check_wiring(stages, &kinds, &edges);
        self.check_ports_read(stages, &ports, &edges);
        if self.problems.is_empty() {
            self.check_cycles(stages, &edges);
        }
        Checked {
            limits,
            types,
            wiring,
        }
    }

    /// The problems found, in the order of their positions, if any.
    pub(super) fn finish(mut self) -> Result<(), Problems> {
        if self.problems.is_empty() {
            return Ok(());
        }
        self.problems
            .sort_by_key(|p| p.pos.map(|p| (p.line, p.column)));
        Err(Problems(self.problems))
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

    /// Stage `i`'s inputs: each a stage (`name`, its main output) or one
    /// of a stage's named ports (`name.port`), as indices.
    fn resolve_inputs(
        &mut self,
        i: usize,
        stages: &[StageSpec],
        kinds: &[Option<StageKind>],
        ports: &[Option<Ports>],
        index: &HashMap<&str, usize>,
        names: &[&str],
    ) -> (Vec<usize>, Vec<Option<u32>>) {
        let s = &stages[i];
        let name = Some(s.name.as_str());
        let is_source = kinds[i] == Some(StageKind::Source);
        let Some(list) = &s.inputs else {
            if is_source || i == 0 {
                return (Vec::new(), Vec::new());
            }
            if kinds[i - 1] == Some(StageKind::Sink) {
                let pos = self.positions.value(&format!("stages[{i}]"));
                let message = format!(
                    "no `inputs:`, and the stage before it, \"{}\", is a sink with no output; \
                     name this stage's inputs, or write `inputs: []` for a dead-letter stage",
                    stages[i - 1].name
                );
                self.report(name, pos, message);
                return (Vec::new(), Vec::new());
            }
            if let Some(p) = ports[i - 1].as_ref().filter(|p| !p.main) {
                let pos = self.positions.value(&format!("stages[{i}]"));
                let message = format!(
                    "no `inputs:`, and the stage before it, \"{}\", sends its items to named ports only; read one of them: inputs: [{}]",
                    stages[i - 1].name,
                    port_list(&stages[i - 1].name, p)
                );
                self.report(name, pos, message);
                return (Vec::new(), Vec::new());
            }
            return (vec![i - 1], vec![None]);
        };
        if is_source && !list.is_empty() {
            let pos = self.positions.key(&format!("stages[{i}].inputs"));
            let message = format!(
                "inputs: a source takes no inputs (\"{}\" is a source type)",
                s.type_name
            );
            self.report(name, pos, message);
            return (Vec::new(), Vec::new());
        }
        let mut resolved = Vec::new();
        let mut resolved_ports = Vec::new();
        let mut listed = HashSet::new();
        for (j, input) in list.iter().enumerate() {
            let pos = self.positions.value(&format!("stages[{i}].inputs[{j}]"));
            // Stage names have no `.`: what follows one names a port.
            let (input, port) = match input.split_once('.') {
                Some((stage, port)) => (stage, Some(port)),
                None => (input.as_str(), None),
            };
            match index.get(input) {
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
                Some(&k) => {
                    let Some(port) = self.resolve_port(name, pos, input, port, ports[k].as_ref())
                    else {
                        self.misread.insert(k);
                        continue;
                    };
                    if !listed.insert((k, port)) {
                        let listed = list[j].as_str();
                        self.report(name, pos, format!("inputs: \"{listed}\" is listed twice"));
                        continue;
                    }
                    resolved.push(k);
                    resolved_ports.push(port);
                }
            }
        }
        (resolved, resolved_ports)
    }

    /// The port an input names on stage `input`: `Some(None)` for its main
    /// output, `Some(Some(k))` for its named port `k`, `None` (reported)
    /// when it has no such output. `ports` is `None` when the stage's
    /// options could not tell (reported when it is built).
    fn resolve_port(
        &mut self,
        name: Option<&str>,
        pos: Option<Pos>,
        input: &str,
        port: Option<&str>,
        ports: Option<&Ports>,
    ) -> Option<Option<u32>> {
        let Some(ports) = ports else {
            return Some(None);
        };
        let Some(port) = port else {
            if !ports.main {
                let message = format!(
                    "inputs: \"{input}\" sends its items to named ports only; read one of them: {}",
                    port_list(input, ports)
                );
                self.report(name, pos, message);
                return None;
            }
            return Some(None);
        };
        if let Some(k) = ports.names.iter().position(|p| p == port) {
            return Some(Some(k as u32));
        }
        let message = if ports.names.is_empty() {
            format!("inputs: \"{input}\" has no named ports; read its output as \"{input}\"")
        } else {
            let near = hint(port, ports.names.iter().map(String::as_str));
            let near = if near.is_empty() {
                format!("; its ports: {}", port_list(input, ports))
            } else {
                near
            };
            format!("inputs: \"{input}\" has no port \"{port}\"{near}")
        };
        self.report(name, pos, message);
        None
    }

    /// Every port a stage declared must be read, except those its type
    /// says may be left unread (their items are filtered out).
    fn check_ports_read(&mut self, stages: &[StageSpec], ports: &[Option<Ports>], edges: &[Edge]) {
        for (i, (s, p)) in stages.iter().zip(ports).enumerate() {
            let Some(p) = p.as_ref().filter(|_| !self.misread.contains(&i)) else {
                continue;
            };
            for (k, port) in p.names.iter().enumerate() {
                let read = edges
                    .iter()
                    .any(|e| e.from == i && e.kind == EdgeKind::Port(k as u32));
                if !read && !p.optional.contains(port) {
                    let pos = self.positions.value(&format!("stages[{i}]"));
                    let message = format!(
                        "port \"{port}\" is read by no stage; read it (inputs: [{}.{port}]) or remove it",
                        s.name
                    );
                    self.report(Some(&s.name), pos, message);
                }
            }
        }
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

    fn check_wiring(&mut self, stages: &[StageSpec], kinds: &[Option<StageKind>], edges: &[Edge]) {
        // Fed: an edge leads into it (an input, or a dead-letter route).
        // Read: an edge carries its output on.
        let mut fed = vec![false; stages.len()];
        let mut read = vec![false; stages.len()];
        for e in edges {
            fed[e.to] = true;
            if !e.kind.is_error() {
                read[e.from] = true;
            }
        }
        for (i, s) in stages.iter().enumerate() {
            let Some(kind) = kinds[i] else { continue };
            if self.suggested.contains(&i) {
                continue;
            }
            let name = Some(s.name.as_str());
            let stage_pos = self.positions.value(&format!("stages[{i}]"));
            if kind != StageKind::Source && !fed[i] {
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

    /// Reports the first cycle found, dead-letter routes included.
    fn check_cycles(&mut self, stages: &[StageSpec], edges: &[Edge]) {
        if let Some(cycle) = find_cycle(stages.len(), edges) {
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
        }
    }
}

/// A stage's named ports as inputs would name them: `triage.valid, triage.big`.
fn port_list(stage: &str, ports: &Ports) -> String {
    let names: Vec<String> = ports.names.iter().map(|p| format!("{stage}.{p}")).collect();
    names.join(", ")
}
