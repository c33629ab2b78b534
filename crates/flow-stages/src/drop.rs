//! `drop`: consumes items and does nothing with them.

use flow_core::{
    BuildContext, ConfigError, Output, Stage, StageError, StageKind, StageOptions, StageType,
    Transform, Value,
};
use schemars::JsonSchema;
use serde::Deserialize;

/// Consumes items and does nothing with them (they are not counted as
/// `dropped`, which is for failed items). Takes no options.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DropOptions {}

struct Discard;

impl Transform for Discard {
    fn interruptible(&self) -> bool {
        true
    }

    fn apply(&mut self, _input: &Value, _out: &mut Output) -> Result<(), StageError> {
        Ok(())
    }
}

impl StageOptions for DropOptions {
    fn build(self, _ctx: &BuildContext) -> Result<Stage, ConfigError> {
        Ok(Stage::transform(|| Discard))
    }
}

flow_core::inventory::submit! {
    StageType::new::<DropOptions>(
        "drop",
        StageKind::Sink,
        "Consumes items and does nothing with them.",
        "- name: discard\n  type: drop\n",
    )
}
