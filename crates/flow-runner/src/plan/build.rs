//! Building each stage through the registry, from its options and the
//! settings it has or takes from `defaults:`, into the [`PlannedStage`]s
//! of a [`Plan`](super::Plan).

use std::path::Path;

use flow_core::{BuildContext, ConfigError, Stage, StageKind};

use super::checks::{Checked, Checker};
use super::graph::{self, OnError};
use super::load::friendly;
use super::teach;
use crate::control::FlowControl;
use crate::error::Problem;
use crate::queue::QueueConfig;
use crate::spec::{MAX_QUEUE, MAX_TOTAL_WORKERS, MAX_WORKERS, PipelineSpec, StageSpec};

impl Checker<'_> {
    /// Builds every stage whose type is known, with what the checks
    /// resolved; a stage whose options its type rejects is reported
    /// instead.
    pub(super) fn build(
        &mut self,
        spec: &PipelineSpec,
        checked: &Checked,
        base_dir: &Path,
    ) -> Vec<PlannedStage> {
        let Checked {
            limits,
            types,
            wiring,
        } = checked;
        let stages = &spec.stages;
        let kinds: Vec<Option<StageKind>> = types.iter().map(|t| t.map(|t| t.kind)).collect();
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
            let (control, queue) = self.resolve_control(i, s, spec, source, capacity, limits);
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
                    inputs: wiring[i].inputs.clone(),
                    input_ports: wiring[i].input_ports.clone(),
                    ports: built.ports,
                    durable: built.durable,
                    workers,
                    queue,
                    control,
                    on_error: wiring[i].on_error,
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
        if spec.state.is_some() {
            // A durable run resumes every source: one that keeps no
            // position (stdin) cannot be part of it.
            for p in &planned {
                if let Stage::Source(source) = &p.stage
                    && source.position().is_none()
                {
                    let i = spec.stages.iter().position(|s| s.name == p.name);
                    let pos = i.and_then(|i| self.positions.value(&format!("stages[{i}]")));
                    let message = if p.type_name == "read" {
                        "state: a durable run cannot resume a read of standard input (`-`), whose data cannot be read again; read a file, or remove `state:`".to_string()
                    } else {
                        format!(
                            "state: a durable run needs sources it can resume, and type {} keeps no position",
                            p.type_name
                        )
                    };
                    self.report(Some(&p.name), pos, message);
                }
            }
        }
        planned
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

/// One stage of a [`Plan`](crate::Plan).
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
    /// For a sink that keeps state across the runs of a durable run: its
    /// handle.
    pub durable: Option<std::sync::Arc<dyn flow_core::Durable>>,
    pub workers: usize,
    /// The input queue: capacity, order, byte bound (unused by sources).
    pub queue: QueueConfig,
    /// Rate limit, retries, timeout, output order.
    pub control: FlowControl,
    pub on_error: OnError,
    pub stage: Stage,
}

impl graph::Wiring for PlannedStage {
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
