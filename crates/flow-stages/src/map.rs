//! `map`: each output of a jq expression becomes an item.

use flow_core::{
    BuildContext, ConfigError, Expr, Output, Stage, StageError, StageKind, StageOptions, StageType,
    Transform, Value,
};
use schemars::JsonSchema;
use serde::Deserialize;

/// Turns each item into the outputs of a jq expression: one output is one
/// item, several are several, none filters the item out.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MapOptions {
    /// The jq expression, run on each item, e.g. `{id, v: (.v * .v)}`.
    pub expr: String,
}

struct Map(Expr);

impl Transform for Map {
    fn interruptible(&self) -> bool {
        true
    }

    fn apply(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError> {
        self.apply_mut(&mut input.clone(), out)
    }

    /// The expression may change the input in place (`.n = 1` sets a
    /// field of this object instead of a copy of it).
    fn apply_mut(&mut self, input: &mut Value, out: &mut Output) -> Result<(), StageError> {
        self.0.run_taking(input, |v| {
            out.emit(v);
            !out.is_full()
        })?;
        if out.is_full() {
            return Err(StageError::permanent(format!(
                "expression `{}`: more than {} outputs for one item held at once (an `ordered` stage, or one under a `timeout:`, holds an item's outputs until it is done)",
                self.0.code(),
                flow_core::stage::MAX_HELD
            )));
        }
        Ok(())
    }
}

impl StageOptions for MapOptions {
    fn build(self, _ctx: &BuildContext) -> Result<Stage, ConfigError> {
        let expr = Expr::compile(&self.expr).map_err(|e| ConfigError::expr("expr", e))?;
        Ok(Stage::transform(move || Map(expr.clone())))
    }
}

flow_core::inventory::submit! {
    StageType::new::<MapOptions>(
        "map",
        StageKind::Processor,
        "Turns each item into the outputs of a jq expression.",
        "- name: square\n  type: map\n  with: { expr: '.square = .value * .value' }\n",
    )
}
