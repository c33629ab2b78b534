//! `write`: writes items to a file (or stdout), one line each.

use flow_core::{BuildContext, ConfigError, Stage, StageKind, StageOptions, StageType};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::format::{Destination, WriteFormat, line_sink};

/// Writes items to a file, one line each. The file is replaced unless
/// `append` is set; its directory is created if missing. Several workers
/// share the one file and never interleave within a line.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteOptions {
    /// The file, relative to the pipeline file's directory, or `-` for stdout.
    pub path: String,
    /// `jsonl` (one JSON document per line, the default) or `lines`
    /// (strings as they are, anything else as JSON).
    #[serde(default)]
    pub format: WriteFormat,
    /// Add to the end of the file instead of replacing it.
    #[serde(default)]
    pub append: bool,
}

impl StageOptions for WriteOptions {
    fn build(self, ctx: &BuildContext) -> Result<Stage, ConfigError> {
        if self.path.is_empty() {
            return Err(ConfigError::new("path", "must not be empty"));
        }
        let dest = Destination::new(ctx.resolve_path(&self.path), self.append);
        Ok(line_sink(dest, self.format))
    }
}

flow_core::inventory::submit! {
    StageType::new::<WriteOptions>(
        "write",
        StageKind::Sink,
        "Writes items to a file (or stdout), one line each.",
        "- name: save\n  type: write\n  with: { path: out.jsonl, format: jsonl }\n",
    )
}
