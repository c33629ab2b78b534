//! flow's plugin API: the one crate a stage author reads.
//!
//! * [`Value`] and [`Item`]: what moves through a pipeline. A value is JSON
//!   plus binary strings; an item is a value with its [`Lineage`], which lets
//!   a source learn when the item and everything made from it is handled.
//! * [`Source`], [`Transform`], [`Processor`]: the stage traits, documented
//!   as a contract in [`stage`]: who calls what, in which order, from how
//!   many workers, and what an error does.
//! * [`StageOptions`], [`StageType`]: how a stage type registers itself
//!   (with `inventory`) and turns its `with:` options into a [`Stage`].
//! * [`Expr`]: jq expressions, for stages that take one.
//! * [`json`]: strict, bounded JSON reading and writing for records.
//! * [`terminal::stdout`]: standard output for a stage that prints, which
//!   keeps its lines clear of the live progress lines.
//!
//! Everything around a stage (queues, workers, rate limits, retries,
//! timeouts, `on_error`, stats) belongs to the runner; a stage never
//! reimplements it.

pub mod expr;
pub mod item;
pub mod json;
pub mod registry;
pub mod stage;
pub mod terminal;
pub mod text;
pub mod value;

pub use async_trait::async_trait;
pub use expr::{Expr, ExprError};
pub use inventory;
pub use item::{Item, Lineage, Outcome};
pub use registry::{
    BuildContext, ConfigError, StageKind, StageOptions, StageType, stage_type, stage_types,
};
pub use stage::{BATCH, Next, Output, Processor, Source, Stage, StageError, Transform, Worker};
pub use value::Value;

/// Deserialises a duration option written the humantime way (`250ms`,
/// `1m 30s`): use with `#[serde(deserialize_with = "flow_core::duration")]`
/// and `#[schemars(with = "String")]`.
pub fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
}

/// [`duration`] for an optional duration.
pub fn optional_duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::time::Duration>, D::Error> {
    duration(d).map(Some)
}
