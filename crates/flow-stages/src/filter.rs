//! `filter`: keeps the items for which a jq expression is true.

use flow_core::{
    BuildContext, ConfigError, Expr, Output, Stage, StageError, StageKind, StageOptions, StageType,
    Transform, Value,
};
use schemars::JsonSchema;
use serde::Deserialize;

/// Keeps an item when the jq expression's first output is true (anything
/// but `false` and `null`); drops it otherwise, or when there is no output.
/// Filtered items count as items in but not out.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterOptions {
    /// The condition, a jq expression, e.g. `.score >= 50`.
    pub expr: String,
}

struct Filter(Expr);

impl Transform for Filter {
    fn interruptible(&self) -> bool {
        true
    }

    fn apply(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError> {
        if self.0.test(input)? {
            out.emit(input.clone());
        }
        Ok(())
    }

    fn apply_mut(&mut self, input: &mut Value, out: &mut Output) -> Result<(), StageError> {
        if self.0.test(input)? {
            out.emit(std::mem::take(input));
        }
        Ok(())
    }
}

impl StageOptions for FilterOptions {
    fn build(self, _ctx: &BuildContext) -> Result<Stage, ConfigError> {
        let expr = Expr::compile(&self.expr).map_err(|e| ConfigError::expr("expr", e))?;
        Ok(Stage::transform(move || Filter(expr.clone())))
    }
}

flow_core::inventory::submit! {
    StageType::new::<FilterOptions>(
        "filter",
        StageKind::Processor,
        "Keeps the items for which a jq expression is true.",
        "- name: passing\n  type: filter\n  with: { expr: '.score >= 50' }\n",
    )
}
