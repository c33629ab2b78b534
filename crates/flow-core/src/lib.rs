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

pub mod children;
pub mod expr;
pub mod interrupt;
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

/// The longest duration an option may have: 365 days. Longer waits are
/// mistakes (`10000000y`), and would overflow the clock's arithmetic.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// Parses a duration written the humantime way (`250ms`, `1m 30s`), at
/// most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let d =
        humantime::parse_duration(text).map_err(|e| format!("invalid duration {text:?}: {e}"))?;
    if d > MAX_DURATION {
        return Err(format!(
            "duration {text:?} is too long: durations are limited to 365 days"
        ));
    }
    Ok(d)
}

/// Deserialises a duration option written the humantime way (`250ms`,
/// `1m 30s`, at most 365 days): use with
/// `#[serde(deserialize_with = "flow_core::duration")]` and
/// `#[schemars(with = "String")]`.
pub fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// [`duration`] for an optional duration.
pub fn optional_duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::time::Duration>, D::Error> {
    duration(d).map(Some)
}
