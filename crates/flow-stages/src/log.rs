//! `log`: passes items through and logs each one.

use flow_core::value::to_json;
use flow_core::{
    BuildContext, ConfigError, Output, Stage, StageError, StageKind, StageOptions, StageType,
    Transform, Value,
};
use schemars::JsonSchema;
use serde::Deserialize;

/// Passes every item through unchanged and logs it (at info level, so it
/// shows with `-v` and always with `level: warn`), for looking at what moves
/// between two stages.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogOptions {
    /// `info` (shown with `-v`) or `warn` (always shown). Default: `info`.
    #[serde(default)]
    pub level: Level,
    /// Text put before each item in the log line. Default: the stage's name.
    pub prefix: Option<String>,
}

/// How loud `log` is.
#[derive(Clone, Copy, Debug, Default, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Info,
    Warn,
}

struct Log {
    level: Level,
    prefix: String,
}

impl Transform for Log {
    fn interruptible(&self) -> bool {
        true
    }

    fn apply(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError> {
        match self.level {
            Level::Info => tracing::info!("{}: {}", self.prefix, to_json(input)),
            Level::Warn => tracing::warn!("{}: {}", self.prefix, to_json(input)),
        }
        out.emit(input.clone());
        Ok(())
    }
}

impl StageOptions for LogOptions {
    fn build(self, ctx: &BuildContext) -> Result<Stage, ConfigError> {
        let prefix = self.prefix.unwrap_or_else(|| ctx.stage.clone());
        let level = self.level;
        Ok(Stage::transform(move || Log {
            level,
            prefix: prefix.clone(),
        }))
    }
}

flow_core::inventory::submit! {
    StageType::new::<LogOptions>(
        "log",
        StageKind::Processor,
        "Passes items through and logs each one.",
        "- name: peek\n  type: log\n  with: { level: info }\n",
    )
}
