//! `stdout`: prints items to standard output.

use flow_core::{BuildContext, ConfigError, Stage, StageKind, StageOptions, StageType};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::format::{Destination, WriteFormat, file_sink};

/// Prints items to standard output. Progress and the stats go to standard
/// error, so the output can be piped.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdoutOptions {
    /// `jsonl` (one JSON document per line, the default), `lines` (strings
    /// as they are, anything else as JSON), `json` (one JSON array of every
    /// item) or `csv` (a header row, then a row per object), as for `write`.
    #[serde(default)]
    pub format: WriteFormat,
    /// With `csv`: the header, in order. Each item's fields of those names
    /// become its row (missing ones empty, others left out). By default the
    /// header is the keys of the first object that has any.
    pub columns: Option<Vec<String>>,
}

impl StageOptions for StdoutOptions {
    fn build(self, ctx: &BuildContext) -> Result<Stage, ConfigError> {
        crate::format::check_columns(self.format, self.columns.as_deref())?;
        let dest = Destination::new("-".into(), false, self.format, ctx.workers, self.columns);
        Ok(file_sink(dest))
    }
}

flow_core::inventory::submit! {
    StageType::new::<StdoutOptions>(
        "stdout",
        StageKind::Sink,
        "Prints items to standard output: JSON lines, lines, a JSON array or CSV.",
        "- name: print\n  type: stdout\n  with: { format: lines }\n",
    )
}
