//! `unbatch`: turns an array into its elements.

use flow_core::{
    BuildContext, ConfigError, Output, Stage, StageError, StageKind, StageOptions, StageType,
    Transform, Value,
};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::format::kind;

/// Turns each array item into its elements, one item each, in order (the
/// reverse of `batch`); an empty array gives no items. An item that is not
/// an array fails (a permanent error, so `on_error` decides what happens to
/// it): passing it through would hide a mistake upstream. To split an
/// array held in a field, `map` with `.field[]` does it.
///
/// The elements of a batch all carry the batch's lineage: the source items
/// of a batch count as handled once every element is.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnbatchOptions {}

struct Unbatch;

impl Transform for Unbatch {
    fn interruptible(&self) -> bool {
        true
    }

    fn apply(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError> {
        match input {
            Value::Arr(items) => {
                items.iter().for_each(|v| out.emit(v.clone()));
                Ok(())
            }
            other => Err(StageError::permanent(format!(
                "unbatch: expected an array, got {}",
                kind(other)
            ))),
        }
    }
}

impl StageOptions for UnbatchOptions {
    fn build(self, _ctx: &BuildContext) -> Result<Stage, ConfigError> {
        Ok(Stage::transform(|| Unbatch))
    }
}

flow_core::inventory::submit! {
    StageType::new::<UnbatchOptions>(
        "unbatch",
        StageKind::Processor,
        "Turns each array into its elements, one item each (the reverse of `batch`).",
        "- name: group\n  type: batch\n  with: { size: 10 }\n- name: ungroup\n  type: unbatch\n",
    )
}

#[cfg(test)]
mod tests {
    use flow_core::value::{parse_json, to_json};

    use super::*;

    fn apply(input: &str) -> Result<Vec<String>, StageError> {
        let mut out = Output::new();
        Unbatch.apply(&parse_json(input.as_bytes()).unwrap(), &mut out)?;
        Ok(out.items_mut().iter().map(|i| to_json(&i.value)).collect())
    }

    #[test]
    fn an_array_becomes_its_elements_in_order() {
        assert_eq!(
            apply(r#"[1,{"a":2},[3]]"#).unwrap(),
            ["1", r#"{"a":2}"#, "[3]"]
        );
    }

    #[test]
    fn an_empty_array_gives_nothing() {
        assert!(apply("[]").unwrap().is_empty());
    }

    #[test]
    fn anything_else_fails_permanently_naming_what_it_got() {
        let err = apply(r#"{"a":1}"#).unwrap_err();
        assert!(!err.is_retryable());
        assert_eq!(err.message(), "unbatch: expected an array, got an object");
    }
}
