//! `write`: writes items to a file (or stdout) as JSON lines, lines, one
//! JSON array or CSV.

use flow_core::{BuildContext, ConfigError, Stage, StageKind, StageOptions, StageType};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::format::{Destination, WriteFormat, file_sink};

/// Writes items to a file. The file is replaced unless `append` is set, and
/// only when the first item is written: a run that stops before that leaves
/// the previous file alone (a run that ends with nothing to write leaves an
/// empty one). Its directory is created if missing. Several workers share
/// the one file and never interleave within an item; each batch of items is
/// written as it is handled, and counts as written once it is in the file.
/// A write that fails (a full disk) is cut back off the file, so the file
/// holds exactly the items counted as written, whole, and a `json` file is
/// a valid array after every batch. Appending to a file whose last line was
/// cut off (a run killed mid-write) starts on a new line, with a warning.
///
/// With `format: csv` each item is an object and becomes a row. The header
/// is `columns` if given, else the keys of the first object that has any,
/// in their order (an empty object before that fails: it has no columns).
/// A later item without one of those keys gets an empty cell; an item with
/// a key the header lacks fails (a permanent error, so `on_error` decides)
/// unless `columns` was given, which picks the cells. Strings are written
/// as they are, null as an empty cell, anything else (numbers, booleans,
/// nested arrays and objects) as JSON text. With `format: lines`, a string
/// holding a line break fails (it would become several lines).
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
    /// With `csv`: the header, in order. Each item's fields of those names
    /// become its row (missing ones empty, others left out). By default the
    /// header is the keys of the first object that has any.
    pub columns: Option<Vec<String>>,
}

impl StageOptions for WriteOptions {
    fn build(self, ctx: &BuildContext) -> Result<Stage, ConfigError> {
        Ok(self.build_durable(ctx)?.0)
    }

    fn build_durable(
        self,
        ctx: &BuildContext,
    ) -> Result<(Stage, Option<std::sync::Arc<dyn flow_core::Durable>>), ConfigError> {
        if self.path.is_empty() {
            return Err(ConfigError::new("path", "must not be empty"));
        }
        if self.append && self.format == WriteFormat::Json {
            return Err(ConfigError::new(
                "append",
                "cannot append to a JSON array; use format `jsonl` to append",
            ));
        }
        crate::format::check_columns(self.format, self.columns.as_deref())?;
        let path = ctx.resolve_path(&self.path);
        let dest = Destination::new(path, self.append, self.format, ctx.workers, self.columns);
        let durable = dest.durable();
        Ok((file_sink(dest), durable))
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
