//! `sleep`: waits, then passes the item on (simulated work).

use std::time::Duration;

use flow_core::{
    BuildContext, ConfigError, Output, Processor, Stage, StageError, StageKind, StageOptions,
    StageType, Value, async_trait,
};
use schemars::JsonSchema;
use serde::Deserialize;

/// Waits for a while on each item, then passes it on unchanged: simulated
/// work, for trying out workers, queues and backpressure. Each worker waits
/// on its own item, so `workers: 8` handles eight items at once.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SleepOptions {
    /// How long to wait per item (`250ms`, `1s`).
    #[serde(deserialize_with = "flow_core::duration")]
    #[schemars(with = "String")]
    pub duration: Duration,
}

struct Sleep(Duration);

#[async_trait]
impl Processor for Sleep {
    async fn process(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError> {
        tokio::time::sleep(self.0).await;
        out.emit(input.clone());
        Ok(())
    }
}

impl StageOptions for SleepOptions {
    fn build(self, _ctx: &BuildContext) -> Result<Stage, ConfigError> {
        let d = self.duration;
        Ok(Stage::processor(move |_| Ok(Sleep(d))))
    }
}

flow_core::inventory::submit! {
    StageType::new::<SleepOptions>(
        "sleep",
        StageKind::Processor,
        "Waits on each item, then passes it on (simulated work).",
        "- name: work\n  type: sleep\n  workers: 4\n  with: { duration: 100ms }\n",
    )
}
