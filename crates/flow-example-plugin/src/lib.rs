//! An example plugin: the `slugify` stage type, in its own crate.
//!
//! A stage type is an options struct (serde + schemars; its doc comments
//! are what `flow stages slugify` prints), a worker that implements one of
//! flow-core's stage traits, and an `inventory::submit!` that registers
//! them. serde and schemars come from flow-core's re-exports, so the crate
//! depends on flow-core (and flow-cli, for its binary) alone. The package's
//! binary (`src/main.rs`) is a complete custom `flow` with this type added.
//!
//! A second type, [`blocks`], is a sink that buffers: the example to copy
//! for one, since a buffering sink must hold its items' lineages until its
//! write is done.

pub mod blocks;

use flow_core::schemars::JsonSchema;
use flow_core::serde::Deserialize;
use flow_core::value::{as_str, get, string};
use flow_core::{
    BuildContext, ConfigError, Output, Stage, StageError, StageKind, StageOptions, StageType,
    Transform, Value,
};

/// Turns text into a URL slug: lowercase ASCII letters and digits joined by
/// `-` ("Hello, World!" becomes "hello-world").
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(crate = "flow_core::serde", deny_unknown_fields)]
#[schemars(crate = "flow_core::schemars")]
pub struct SlugifyOptions {
    /// The object field holding the text; the slug is written to `slug`.
    /// Absent: the item itself is the text, and the output is the slug.
    pub field: Option<String>,
    /// The longest slug to make, in characters. Default: 64.
    #[serde(default = "default_max")]
    pub max: usize,
}

fn default_max() -> usize {
    64
}

/// Made by the factory for each worker (and again if one is replaced after
/// a panic or an abandoned timed-out call); it needs no state beyond the
/// options.
struct Slugify {
    field: Option<String>,
    max: usize,
}

impl Transform for Slugify {
    fn apply(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError> {
        let text = match &self.field {
            None => input,
            Some(f) => {
                get(input, f).ok_or_else(|| StageError::permanent(format!("no field {f:?}")))?
            }
        };
        let text = as_str(text).ok_or_else(|| StageError::permanent("not a text string"))?;
        let slug = string(slug(text, self.max));
        match (&self.field, input) {
            (None, _) => out.emit(slug),
            (Some(_), Value::Obj(o)) => {
                let mut o = (**o).clone();
                o.insert(string("slug"), slug);
                out.emit(Value::obj(o));
            }
            (Some(_), _) => return Err(StageError::permanent("not an object")),
        }
        Ok(())
    }
}

/// The slug of `text`, at most `max` characters.
pub fn slug(text: &str, max: usize) -> String {
    let mut out = String::new();
    for word in text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push('-');
        }
        out.extend(word.chars().map(|c| c.to_ascii_lowercase()));
    }
    out.chars()
        .take(max)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

impl StageOptions for SlugifyOptions {
    fn build(self, _ctx: &BuildContext) -> Result<Stage, ConfigError> {
        if self.max == 0 {
            return Err(ConfigError::new("max", "must be at least 1"));
        }
        Ok(Stage::transform(move || Slugify {
            field: self.field.clone(),
            max: self.max,
        }))
    }
}

flow_core::inventory::submit! {
    StageType::new::<SlugifyOptions>(
        "slugify",
        StageKind::Processor,
        "Turns text into a URL slug (an example plugin).",
        "- name: slugs\n  type: slugify\n  with: { field: title }\n",
    )
}

#[cfg(test)]
mod tests {
    use super::slug;

    #[test]
    fn slug_keeps_words_lowercased_and_joined() {
        assert_eq!(slug("Hello, World!", 64), "hello-world");
        assert_eq!(slug("  Rust 2024 -- edition ", 64), "rust-2024-edition");
        assert_eq!(slug("abc def", 4), "abc");
        assert_eq!(slug("¿¡!", 64), "");
    }
}
