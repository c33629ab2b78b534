//! `write`: writes items to a file (or stdout) as JSON lines, lines, one
//! JSON array or CSV.

use flow_core::{BuildContext, ConfigError, Stage, StageKind, StageOptions, StageType};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::format::{Destination, WriteFormat, file_sink};

/// Writes items to a file. The file is replaced unless `append` is set; its
/// directory is created if missing. Several workers share the one file and
/// never interleave within an item; output is written as items arrive, a
/// `json` array too.
///
/// With `format: csv` each item is an object and becomes a row. The header
/// is the first item's keys, in their order. A later item without one of
/// those keys gets an empty cell; an item with a key the header lacks fails
/// (a permanent error, so `on_error` decides), since the header is already
/// written. Strings are written as they are, null as an empty cell,
/// anything else (numbers, booleans, nested arrays and objects) as JSON
/// text. To choose the columns and their order, put a `map` like
/// `{id, title, score}` before it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteOptions {
    /// The file, relative to the pipeline file's directory, or `-` for stdout.
    pub path: String,
    /// `jsonl`: one JSON document per line (the default). `lines`: strings
    /// as they are, anything else as JSON, one per line. `json`: one JSON
    /// array of every item, one item per line; `[]` when there are none, and
    /// still a valid array when the run stops on an error. `csv`: a header
    /// row, then one row per object (see above).
    #[serde(default)]
    pub format: WriteFormat,
    /// Add to the end of the file instead of replacing it. With `csv`, an
    /// existing file's header row gives the columns and is not written
    /// again. Not allowed with `json` (two arrays in one file are not JSON).
    #[serde(default)]
    pub append: bool,
}

impl StageOptions for WriteOptions {
    fn build(self, ctx: &BuildContext) -> Result<Stage, ConfigError> {
        if self.path.is_empty() {
            return Err(ConfigError::new("path", "must not be empty"));
        }
        if self.append && self.format == WriteFormat::Json {
            return Err(ConfigError::new(
                "append",
                "cannot append to a JSON array; use format `jsonl` to append",
            ));
        }
        let path = ctx.resolve_path(&self.path);
        let dest = Destination::new(path, self.append, self.format, ctx.workers);
        Ok(file_sink(dest))
    }
}

flow_core::inventory::submit! {
    StageType::new::<WriteOptions>(
        "write",
        StageKind::Sink,
        "Writes items to a file (or stdout): JSON lines, lines, a JSON array or CSV.",
        "- name: save\n  type: write\n  with: { path: out.csv, format: csv }\n",
    )
}
