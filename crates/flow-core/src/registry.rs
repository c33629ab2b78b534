//! Stage registration: how a stage type makes itself known to flow.
//!
//! A stage type is an options struct (serde + schemars, its doc comments are
//! the user's documentation) that implements [`StageOptions`], registered
//! with [`inventory::submit!`]. The derives come from flow-core's
//! re-exports ([`crate::serde`], [`crate::schemars`]), so the plugin uses
//! the very versions flow does; the `crate` attributes point the derived
//! code at them:
//!
//! ```
//! use flow_core::schemars::JsonSchema;
//! use flow_core::serde::Deserialize;
//! use flow_core::{BuildContext, ConfigError, Output, Stage, StageError, StageKind,
//!                 StageOptions, StageType, Transform, Value};
//!
//! /// Adds one to a number.
//! #[derive(Deserialize, JsonSchema)]
//! #[serde(crate = "flow_core::serde", deny_unknown_fields)]
//! #[schemars(crate = "flow_core::schemars")]
//! struct Increment {
//!     /// How much to add.
//!     #[serde(default = "one")]
//!     by: i64,
//! }
//! fn one() -> i64 { 1 }
//!
//! struct Add(i64);
//! impl Transform for Add {
//!     fn apply(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError> {
//!         let n = flow_core::value::as_f64(input).ok_or_else(|| StageError::permanent("not a number"))?;
//!         out.emit(flow_core::value::int(n as i64 + self.0));
//!         Ok(())
//!     }
//! }
//!
//! impl StageOptions for Increment {
//!     fn build(self, _ctx: &BuildContext) -> Result<Stage, ConfigError> {
//!         Ok(Stage::transform(move || Add(self.by)))
//!     }
//! }
//!
//! flow_core::inventory::submit! {
//!     StageType::new::<Increment>("increment", StageKind::Processor,
//!         "Adds a constant to numbers.",
//!         "- name: plus2\n  type: increment\n  with: { by: 2 }")
//! }
//! ```
//!
//! The binary must link the crate (`use my_plugin as _;`), or the linker
//! drops the registration.
//!
//! # Building has no side effects
//!
//! [`StageOptions::build`] only checks the options and prepares the stage:
//! it must create no file, open no connection, start no thread or process.
//! `flow validate` builds every stage to check its options and then drops
//! them, and `flow run` builds every stage before the run starts (a later
//! stage's bad options mean nothing runs). Do such work when the stage runs:
//! in the worker factory, or in the first call of the source or worker.

use std::fmt;
use std::path::{Path, PathBuf};

use schemars::{JsonSchema, Schema};
use serde::de::DeserializeOwned;

use crate::{Stage, StageError};

/// What a stage type does in a graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageKind {
    /// Makes items; has no inputs.
    Source,
    /// Turns each input into zero or more outputs.
    Processor,
    /// Consumes items; nothing reads from it.
    Sink,
}

impl StageKind {
    /// The kind as `flow stages` shows it: `source`, `processor` or `sink`.
    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Source => "source",
            StageKind::Processor => "processor",
            StageKind::Sink => "sink",
        }
    }
}

impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stage type's options (`with:` in the pipeline file) and how to build a
/// stage from them.
///
/// Derive `Deserialize` with `#[serde(deny_unknown_fields)]` and
/// `JsonSchema` (through [`crate::serde`] and [`crate::schemars`], as the
/// [module example](crate::registry) does); the doc comments on the
/// struct's fields are what `flow stages TYPE` and `flow schema` show.
///
/// [`StageOptions::build`] must have no side effects: see
/// [the module documentation](crate::registry#building-has-no-side-effects).
pub trait StageOptions: DeserializeOwned + JsonSchema + Sized {
    /// Checks the options and builds the stage. Compile expressions here,
    /// once, and report a bad one as a [`ConfigError`] naming its key.
    ///
    /// No side effects: no file created, no connection opened, no thread or
    /// process started. `flow validate` builds every stage to check its
    /// options and runs none, and `flow run` builds every stage before the
    /// run starts. Such work belongs in the worker factory or the stage's
    /// first call.
    fn build(self, ctx: &BuildContext) -> Result<Stage, ConfigError>;

    /// The stage's named output ports, fixed or derived from the options
    /// (`route` has one per route): the stage emits to them with
    /// [`crate::Output::emit_to`], `Port(k)` being the `k`-th name here,
    /// and other stages read them as `inputs: [stage.port]`. Called before
    /// [`StageOptions::build`]. The default: no ports, only the main
    /// output.
    fn ports(&self) -> Ports {
        Ports::default()
    }

    /// [`StageOptions::build`], for a sink that keeps state across runs
    /// of a durable run (`--state`): the stage, and the handle the runner
    /// saves its state through. The default builds with `build` and keeps
    /// no state (the stage's effects are then at least once on resume).
    fn build_durable(
        self,
        ctx: &BuildContext,
    ) -> Result<(Stage, Option<std::sync::Arc<dyn Durable>>), ConfigError> {
        Ok((self.build(ctx)?, None))
    }
}

/// The state of a sink that a durable run (`--state`) saves in its
/// checkpoints and restores on resume: a `write` sink's file length.
pub trait Durable: Send + Sync {
    /// The state now. Called when every item handed to the stage so far
    /// has its outcome (nothing is in flight), so it describes exactly
    /// what is done.
    fn snapshot(&self) -> Result<serde_json::Value, StageError>;

    /// Before the run starts: continue from `state`, a value
    /// [`Durable::snapshot`] gave in an earlier run (a file sink cuts its
    /// file back to the saved length and appends after it).
    fn restore(&self, state: serde_json::Value) -> Result<(), StageError>;
}

/// The outputs of a stage besides its error route: the main output
/// (`inputs: [stage]`) and named ports (`inputs: [stage.port]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ports {
    /// The named ports, in the order `Port(0)`, `Port(1)`, ….
    pub names: Vec<String>,
    /// Ports that may be left unread, their items counted and discarded
    /// (`route`'s `_unmatched`); every other port must be read.
    pub optional: Vec<String>,
    /// Whether the stage emits to its main output at all. A stage that
    /// emits only to ports says `false`, so `inputs: [stage]` is refused.
    pub main: bool,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            names: Vec::new(),
            optional: Vec::new(),
            main: true,
        }
    }
}

/// A stage built from its options, with its ports.
pub struct Built {
    /// The stage, ready to run.
    pub stage: Stage,
    /// Its outputs.
    pub ports: Ports,
    /// Its state across the runs of a durable run, if it keeps one.
    pub durable: Option<std::sync::Arc<dyn Durable>>,
}

/// A registered stage type.
pub struct StageType {
    /// The `type:` name in pipeline files.
    pub name: &'static str,
    /// Whether it is a source, a processor or a sink.
    pub kind: StageKind,
    /// One line for `flow stages`.
    pub summary: &'static str,
    /// A YAML stage entry using this type; a conformance test runs it
    /// through validation.
    pub example: &'static str,
    schema: fn() -> Schema,
    build: fn(&serde_json::Value, &BuildContext) -> Result<Built, ConfigError>,
    ports: fn(&serde_json::Value) -> Option<Ports>,
}

inventory::collect!(StageType);

impl StageType {
    /// Describes the stage type whose options are `O`, for
    /// [`inventory::submit!`]: its `type:` name, kind, one-line summary and
    /// an example stage entry (YAML).
    pub const fn new<O: StageOptions>(
        name: &'static str,
        kind: StageKind,
        summary: &'static str,
        example: &'static str,
    ) -> Self {
        StageType {
            name,
            kind,
            summary,
            example,
            schema: schema_of::<O>,
            build: build_from::<O>,
            ports: ports_from::<O>,
        }
    }

    /// The JSON Schema of the options, with their documentation.
    pub fn options_schema(&self) -> Schema {
        (self.schema)()
    }

    /// The ports a stage of this type with the options `with` has; `None`
    /// when the options do not deserialise (building reports why).
    pub fn ports(&self, with: &serde_json::Value) -> Option<Ports> {
        (self.ports)(with)
    }

    /// Deserialises `with` into the options (unknown keys rejected, the
    /// failing key's path in the error) and builds the stage with
    /// [`StageOptions::build`], which has no side effects: `flow validate`
    /// calls this for every stage, and `flow run` calls it for every stage
    /// before the run starts.
    pub fn build(
        &self,
        with: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Built, ConfigError> {
        (self.build)(with, ctx)
    }
}

fn ports_from<O: StageOptions>(with: &serde_json::Value) -> Option<Ports> {
    O::deserialize(with).ok().map(|options| options.ports())
}

fn schema_of<O: StageOptions>() -> Schema {
    schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<O>()
}

fn build_from<O: StageOptions>(
    with: &serde_json::Value,
    ctx: &BuildContext,
) -> Result<Built, ConfigError> {
    let options: O = serde_path_to_error::deserialize(with).map_err(|e| {
        let key = match e.path().to_string().as_str() {
            "." => String::new(),
            path => path.to_string(),
        };
        ConfigError::new(key, e.into_inner().to_string())
    })?;
    let ports = options.ports();
    let (stage, durable) = options.build_durable(ctx)?;
    Ok(Built {
        stage,
        ports,
        durable,
    })
}

/// Every registered stage type, sorted by name.
pub fn stage_types() -> Vec<&'static StageType> {
    let mut types: Vec<_> = inventory::iter::<StageType>.into_iter().collect();
    types.sort_by_key(|t| t.name);
    types
}

/// The registered stage type called `name`.
pub fn stage_type(name: &str) -> Option<&'static StageType> {
    inventory::iter::<StageType>
        .into_iter()
        .find(|t| t.name == name)
}

/// What a stage type knows about the stage it builds.
#[derive(Clone, Debug)]
pub struct BuildContext {
    /// The stage's name in the pipeline.
    pub stage: String,
    /// How many workers the runner will ask the factory for.
    pub workers: usize,
    /// The pipeline file's directory: relative paths are resolved against it.
    pub base_dir: PathBuf,
    /// The stage's `timeout:`, the runner's limit on one attempt, if set: a
    /// stage with waits of its own (a request, a subprocess) can size them
    /// to it, and pick a finite default of its own when it is `None`.
    pub timeout: Option<std::time::Duration>,
}

impl BuildContext {
    /// Resolves a path from the pipeline file: relative to the file's
    /// directory; `-` (stdin/stdout) and absolute paths are left alone.
    pub fn resolve_path(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if path == "-" || p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

/// A bad stage option: the key (a path under `with`, like `retry.backoff`,
/// empty for `with` itself) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The option's path under `with` (`retry.backoff`), or empty for
    /// `with` itself.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
    /// For an error inside the option's text (an expression), the byte
    /// offset in it, so the error can point at the column.
    pub offset: Option<usize>,
    /// For an expression that does not compile, jq's error (`message` is
    /// then that error in a sentence), so the runner can show the
    /// expression with the error marked.
    pub expr: Option<crate::ExprError>,
}

impl ConfigError {
    /// An error about the option at `key` (empty: `with` as a whole).
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
            offset: None,
            expr: None,
        }
    }

    /// A jq expression under `key` that does not compile.
    pub fn expr(key: impl Into<String>, error: crate::ExprError) -> Self {
        ConfigError {
            key: key.into(),
            offset: Some(error.offset),
            message: format!("invalid expression: {error}"),
            expr: Some(error),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}
