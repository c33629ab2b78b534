//! The pipeline file as written: the typed form serde reads it into.
//!
//! Every struct rejects unknown keys. Values are checked and combined with
//! `defaults:` in [`crate::plan`], which knows their positions.
//!
//! The doc comments are user documentation: `flow schema` publishes them,
//! with each field's type, from the `JsonSchema` derives.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

/// A flow pipeline: stages joined by bounded queues, run by `flow run`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// The pipeline's name, shown in reports (default: the file's name).
    pub name: Option<String>,
    /// Named rate limits (`polite: 10/s`): one bucket, shared by every stage
    /// whose `rate` names it.
    #[serde(default)]
    pub limits: BTreeMap<String, LimitSpec>,
    /// Settings applied to every processor and sink that does not set them
    /// itself.
    #[serde(default)]
    pub defaults: Defaults,
    /// The stages, each reading from the one before it unless it names its
    /// `inputs`.
    pub stages: Vec<StageSpec>,
}

/// The runner-owned settings that `defaults:` may give every processor and
/// sink.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(rename = "defaults", title = "defaults")]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Concurrent workers taking from each stage's input queue (default 1).
    #[schemars(range(min = 1))]
    pub workers: Option<usize>,
    /// Input queue capacity in items (default 64).
    #[schemars(range(min = 1))]
    pub queue: Option<usize>,
    /// A second bound on each input queue, in bytes of item payload
    /// (`256MiB`).
    pub queue_bytes: Option<String>,
    /// The order input queues hand items out in (default fifo).
    pub order: Option<Order>,
    /// `true`: items leave each stage in the order they entered it.
    pub ordered: Option<bool>,
    /// A rate limit: inline (`5/s`, `100/min`, `20/10s`, a bucket per
    /// stage) or the name of a limit under `limits:`.
    pub rate: Option<String>,
    /// Tokens an inline rate's bucket may hold (default 1).
    #[schemars(range(min = 1))]
    pub burst: Option<u32>,
    /// Retries of a failed item.
    pub retry: Option<RetrySpec>,
    /// The limit on one attempt at one item (`10s`, `1m 30s`).
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    #[schemars(with = "String")]
    pub timeout: Option<Duration>,
    /// `drop` (count, log, go on), `fail` (stop the run) or the name of a
    /// dead-letter stage (default drop).
    pub on_error: Option<String>,
}

/// One stage: a registered stage type, the runner's settings around it, and
/// the type's own options under `with`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "stage", title = "stage")]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// The stage's name, unique in the pipeline: letters, digits, `_` and
    /// `-`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub name: String,
    /// A registered stage type (`flow stages` lists them).
    #[serde(rename = "type")]
    pub type_name: String,
    /// The stages this one reads from; several merge their items (fan-in).
    /// Default: the stage before it in the list (none for a source); `[]`
    /// for a stage fed only by `on_error` routes.
    pub inputs: Option<Vec<String>>,
    /// Concurrent workers taking from the input queue (default 1).
    #[schemars(range(min = 1))]
    pub workers: Option<usize>,
    /// Input queue capacity in items; a full queue makes producers wait
    /// (backpressure). Default 64.
    #[schemars(range(min = 1))]
    pub queue: Option<usize>,
    /// A second bound on the input queue, in bytes of item payload
    /// (`256MiB`), for large binary items.
    pub queue_bytes: Option<String>,
    /// The order the input queue hands items out in: `fifo` (default),
    /// `lifo`, or `priority` (with `priority`).
    pub order: Option<Order>,
    /// `true`: items leave the stage in the order they entered it, even with
    /// several workers.
    pub ordered: Option<bool>,
    /// With `order: priority`: an expression giving a number; lower comes
    /// out first.
    pub priority: Option<String>,
    /// A rate limit on every attempt at an item: inline (`5/s`, `100/min`,
    /// `20/10s`) or the name of a limit under `limits:`. On a source it
    /// paces the items it emits.
    pub rate: Option<String>,
    /// Tokens an inline rate's bucket may hold (default 1); a bucket starts
    /// full.
    #[schemars(range(min = 1))]
    pub burst: Option<u32>,
    /// An expression: one rate-limit bucket per value (e.g.
    /// `split("/")[2]`, the host of a URL).
    pub rate_key: Option<String>,
    /// Retries of a failed item (default: 1 attempt).
    pub retry: Option<RetrySpec>,
    /// The limit on one attempt at one item (`10s`, `1m 30s`).
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    #[schemars(with = "String")]
    pub timeout: Option<Duration>,
    /// What happens to an item that failed: `drop` (count it, log it, go
    /// on; the default), `fail` (stop the run) or the name of a stage that
    /// receives `{"item", "error": {"stage", "message", "attempts"}}`.
    pub on_error: Option<String>,
    /// The stage type's own options (`flow stages TYPE` lists them).
    #[schemars(with = "Option<serde_json::Value>")]
    pub with: Option<serde_yaml::Value>,
}

/// A named limit: `polite: 10/s`, or `polite: {rate: 10/s, burst: 5}`.
#[derive(Debug, JsonSchema)]
#[schemars(rename = "limit", title = "limit", untagged)]
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

/// A named limit with its bucket size.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "limit_options", title = "limit")]
#[serde(deny_unknown_fields)]
pub struct LimitOptions {
    /// `5/s`, `100/min`, `20/10s`.
    pub rate: String,
    /// Tokens the bucket may hold (default 1); it starts full.
    #[schemars(range(min = 1))]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[schemars(rename = "order", title = "order")]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Fifo,
    Lifo,
    Priority,
}

/// Retries of a failed item: waits double from `backoff` up to
/// `max_backoff`. Permanent errors (a 404, a jq error) are never retried.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(rename = "retry", title = "retry")]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Total tries, the first included.
    #[schemars(range(min = 1))]
    pub attempts: u32,
    /// The wait after the first failed attempt; it doubles each time
    /// (default 100ms).
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    #[schemars(with = "String")]
    pub backoff: Option<Duration>,
    /// The longest wait, also capping an HTTP `Retry-After`.
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    #[schemars(with = "String")]
    pub max_backoff: Option<Duration>,
    /// Draw each wait between half and all of it.
    #[serde(default)]
    pub jitter: bool,
}
