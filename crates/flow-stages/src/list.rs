//! `list`: emits the items written in the pipeline file.

use flow_core::{
    BATCH, BuildContext, ConfigError, Next, Output, Source, Stage, StageError, StageKind,
    StageOptions, StageType, Value, async_trait,
};
use schemars::JsonSchema;
use serde::Deserialize;

/// Emits the items written inline, in order, then ends.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListOptions {
    /// The items: any values (strings, numbers, objects, lists).
    pub items: Vec<serde_json::Value>,
}

struct List {
    items: std::vec::IntoIter<Value>,
    total: u64,
}

#[async_trait]
impl Source for List {
    async fn next(&mut self, out: &mut Output) -> Result<Next, StageError> {
        for v in self.items.by_ref().take(BATCH) {
            out.emit(v);
        }
        Ok(if self.items.len() == 0 {
            Next::Done
        } else {
            Next::More
        })
    }

    fn total(&self) -> Option<u64> {
        Some(self.total)
    }

    fn position(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "next": self.total - self.items.len() as u64 }))
    }

    fn resume(&mut self, position: serde_json::Value) -> Result<(), StageError> {
        let next = position["next"]
            .as_u64()
            .filter(|&n| n <= self.total)
            .ok_or_else(|| {
                StageError::permanent("the checkpoint's position is not one of this list")
            })?;
        if next > 0 {
            // Skips `next` items: the ones done before.
            let _ = self.items.nth(next as usize - 1);
        }
        Ok(())
    }
}

impl StageOptions for ListOptions {
    fn build(self, _ctx: &BuildContext) -> Result<Stage, ConfigError> {
        let items = self
            .items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                flow_core::value::from_serde(v)
                    .map_err(|e| ConfigError::new(format!("items[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let total = items.len() as u64;
        Ok(Stage::source(List {
            items: items.into_iter(),
            total,
        }))
    }
}

flow_core::inventory::submit! {
    StageType::new::<ListOptions>(
        "list",
        StageKind::Source,
        "Emits the items written inline in the pipeline file.",
        "- name: urls\n  type: list\n  with:\n    items: [\"https://example.org/a\", \"https://example.org/b\"]\n",
    )
}
