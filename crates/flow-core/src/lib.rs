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
//! * [`serde`] and [`schemars`]: re-exported, so a plugin derives its
//!   options with the very versions flow-core uses (see [`registry`]).
//!
//! Everything around a stage (queues, workers, rate limits, retries,
//! timeouts, `on_error`, stats) belongs to the runner; a stage never
//! reimplements it. Items the runner alone calls are public but hidden
//! from this documentation: a stage does not use them.

#![warn(missing_docs)]

pub mod children;
pub mod expr;
mod fast;
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
pub use item::{Held, Item, Lineage, Outcome};
pub use registry::{
    BuildContext, Built, ConfigError, Durable, Ports, StageKind, StageOptions, StageType,
    stage_type, stage_types,
};
/// The schemars flow-core uses, for a plugin's options:
/// `#[derive(flow_core::schemars::JsonSchema)]` with
/// `#[schemars(crate = "flow_core::schemars")]`.
pub use schemars;
/// The serde flow-core uses, for a plugin's options:
/// `#[derive(flow_core::serde::Deserialize)]` with
/// `#[serde(crate = "flow_core::serde")]`.
pub use serde;
pub use stage::{
    BATCH, Mark, Next, Output, Port, Processor, Source, Stage, StageError, Transform, Worker,
};
pub use value::Value;

/// The longest duration an option may have: 365 days. Longer waits are
/// mistakes (`10000000y`), and would overflow the clock's arithmetic.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// Parses a duration written the humantime way (`250ms`, `1m 30s`), at
/// most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| {
        // A bare number is the usual slip: say which units there are.
        if text.trim().parse::<f64>().is_ok() {
            let n = text.trim();
            format!("invalid duration {text:?}: a duration needs a unit: {n}s, {n}ms, {n}m or {n}h")
        } else {
            format!("invalid duration {text:?}: {e}")
        }
    })?;
    if d > MAX_DURATION {
        return Err(format!(
            "duration {text:?} is too long: durations are limited to 365 days"
        ));
    }
    Ok(d)
}

/// Parses a size in bytes: `4096`, `64KiB`, `16MiB`, `1.5GB` (units `B`,
/// `KB`, `MB`, `GB`, `TB` of 1000 and `KiB`, `MiB`, `GiB`, `TiB` of 1024; a
/// space before the unit is allowed; case does not matter). At least one
/// byte; a number too large for 64 bits is an error, not an overflow.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || format!("invalid size {text:?}: write a number of bytes, or 64KiB, 16MiB, 1GB");
    if number.is_empty() {
        return Err(bad());
    }
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "tb" | "t" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "invalid size {text:?}: unknown unit {other:?} (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            ));
        }
    };
    let bytes = match number.parse::<u64>() {
        Ok(n) => n.checked_mul(scale),
        Err(_) => {
            let x: f64 = number.parse().map_err(|_| bad())?;
            let b = x * scale as f64;
            // 2^63 and more would not convert back exactly.
            (b.is_finite() && b < 9.2e18).then_some(b as u64)
        }
    };
    match bytes {
        None => Err(format!("invalid size {text:?}: too large")),
        Some(0) => Err(format!("invalid size {text:?}: must be at least one byte")),
        Some(n) => Ok(n),
    }
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
