//! `stdout`: prints items to standard output, one line each.

use flow_core::{BuildContext, ConfigError, Stage, StageKind, StageOptions, StageType};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::format::{Destination, WriteFormat, line_sink};

/// Prints items to standard output, one line each. Progress and the stats
/// go to standard error, so the output can be piped.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdoutOptions {
    /// `jsonl` (one JSON document per line, the default) or `lines`
    /// (strings as they are, anything else as JSON).
    #[serde(default)]
    pub format: WriteFormat,
}

impl StageOptions for StdoutOptions {
    fn build(self, _ctx: &BuildContext) -> Result<Stage, ConfigError> {
        Ok(line_sink(Destination::new("-".into(), false), self.format))
    }
}

flow_core::inventory::submit! {
    StageType::new::<StdoutOptions>(
        "stdout",
        StageKind::Sink,
        "Prints items to standard output, one line each.",
        "- name: print\n  type: stdout\n  with: { format: lines }\n",
    )
}
