//! The pipeline file as written: the typed form serde reads it into.
//!
//! Every struct rejects unknown keys. Values are checked and combined with
//! `defaults:` in [`crate::plan`], which knows their positions.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// A whole pipeline file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Shown in reports; defaults to the file's name.
    pub name: Option<String>,
    /// Named rate limits shared by the stages that name them.
    #[serde(default)]
    pub limits: BTreeMap<String, LimitSpec>,
    /// Settings applied to every stage that does not set them itself.
    #[serde(default)]
    pub defaults: Defaults,
    pub stages: Vec<StageSpec>,
}

/// The runner-owned settings that `defaults:` may give every stage.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub workers: Option<usize>,
    pub queue: Option<usize>,
    pub queue_bytes: Option<String>,
    pub order: Option<Order>,
    pub ordered: Option<bool>,
    pub rate: Option<String>,
    pub burst: Option<u32>,
    pub retry: Option<RetrySpec>,
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    pub timeout: Option<Duration>,
    pub on_error: Option<String>,
}

/// One entry of `stages:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    /// Absent: the previous stage (none for a source).
    pub inputs: Option<Vec<String>>,
    pub workers: Option<usize>,
    pub queue: Option<usize>,
    pub queue_bytes: Option<String>,
    pub order: Option<Order>,
    pub ordered: Option<bool>,
    pub priority: Option<String>,
    pub rate: Option<String>,
    pub burst: Option<u32>,
    pub rate_key: Option<String>,
    pub retry: Option<RetrySpec>,
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    pub timeout: Option<Duration>,
    pub on_error: Option<String>,
    /// The stage type's own options.
    pub with: Option<serde_yaml::Value>,
}

/// A named limit: `polite: 10/s`, or `polite: {rate: 10/s, burst: 5}`.
#[derive(Debug)]
pub enum LimitSpec {
    Rate(String),
    Full(LimitOptions),
}

// Not `#[serde(untagged)]`, which replaces every error inside the map (a
// misspelt `burst`) with one message about the whole limit.
impl<'de> Deserialize<'de> for LimitSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LimitVisitor;

        impl<'de> serde::de::Visitor<'de> for LimitVisitor {
            type Value = LimitSpec;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a rate like 10/s, or a map like {rate: 10/s, burst: 5}")
            }

            fn visit_str<E: serde::de::Error>(self, rate: &str) -> Result<LimitSpec, E> {
                Ok(LimitSpec::Rate(rate.to_string()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<LimitSpec, A::Error> {
                let options = serde::de::value::MapAccessDeserializer::new(map);
                LimitOptions::deserialize(options).map(LimitSpec::Full)
            }
        }

        deserializer.deserialize_any(LimitVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOptions {
    pub rate: String,
    pub burst: Option<u32>,
}

impl LimitSpec {
    pub fn rate(&self) -> &str {
        match self {
            LimitSpec::Rate(r) => r,
            LimitSpec::Full(o) => &o.rate,
        }
    }

    pub fn burst(&self) -> Option<u32> {
        match self {
            LimitSpec::Rate(_) => None,
            LimitSpec::Full(o) => o.burst,
        }
    }
}

/// The order a stage's input queue hands items out in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Fifo,
    Lifo,
    Priority,
}

/// `retry:` of a stage.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Total tries, the first included.
    pub attempts: u32,
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    pub backoff: Option<Duration>,
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    pub max_backoff: Option<Duration>,
    #[serde(default)]
    pub jitter: bool,
}
