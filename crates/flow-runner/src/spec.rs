//! The pipeline file as written: the typed form serde reads it into.
//!
//! Every struct rejects unknown keys. Values are checked and combined with
//! `defaults:` in [`crate::plan`], which knows their positions.
//!
//! The doc comments are user documentation: `flow schema` publishes them,
//! with each field's type, from the `JsonSchema` derives.
//!
//! What a file may ask for is bounded, so that no file can make `flow
//! validate` or a run exhaust memory or overflow a clock: see the `MAX_`
//! constants here, `MAX_QUEUE_BYTES` (64 GiB),
//! `MAX_PER_SECOND` (1,000,000), [`flow_core::MAX_DURATION`] (365 days,
//! for every duration) and, for the file itself, [`crate::plan::MAX_FILE_BYTES`]
//! and the bounds in `yaml.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

/// The most stages a pipeline may have.
pub const MAX_STAGES: usize = 1_000;
/// The most named limits under `limits:`.
pub const MAX_LIMITS: usize = 1_000;
/// The most workers one stage may have.
pub const MAX_WORKERS: usize = 10_000;
/// The most workers all the stages of a pipeline may have together.
pub const MAX_TOTAL_WORKERS: usize = 100_000;
/// The largest input queue capacity, in items.
pub const MAX_QUEUE: usize = 1_000_000;
/// The most tokens a rate limit's bucket may hold.
pub const MAX_BURST: u32 = 1_000_000;
/// The most attempts `retry:` may make at one item.
pub const MAX_ATTEMPTS: u32 = 1_000;
/// The longest stage name, in characters.
pub const MAX_NAME: usize = 128;

/// The keys of a pipeline file's top level.
pub const PIPELINE_KEYS: [&str; 7] = [
    "name",
    "limits",
    "defaults",
    "state",
    "checkpoint_interval",
    "stages",
    "tests",
];
/// The keys of `defaults:`.
pub const DEFAULTS_KEYS: [&str; 10] = [
    "workers",
    "queue",
    "queue_bytes",
    "order",
    "ordered",
    "rate",
    "burst",
    "retry",
    "timeout",
    "on_error",
];
/// A stage's own keys (the runner's), `with` included.
pub const STAGE_KEYS: [&str; 16] = [
    "name",
    "type",
    "inputs",
    "workers",
    "queue",
    "queue_bytes",
    "order",
    "ordered",
    "priority",
    "rate",
    "burst",
    "rate_key",
    "retry",
    "timeout",
    "on_error",
    "with",
];
/// The keys of `retry:`.
pub const RETRY_KEYS: [&str; 4] = ["attempts", "backoff", "max_backoff", "jitter"];

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
    /// A directory that makes the run durable: checkpoints are saved there,
    /// and the same command after a crash, `kill -9` or Ctrl-C resumes from
    /// the last one (relative to the pipeline file; `flow run --state DIR`
    /// overrides it).
    pub state: Option<String>,
    /// How often a durable run saves a checkpoint, at least (default `1s`).
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    #[schemars(with = "String")]
    pub checkpoint_interval: Option<Duration>,
    /// The stages, each reading from the one before it unless it names its
    /// `inputs`.
    pub stages: Vec<StageSpec>,
    /// Unit tests of the pipeline, run by `flow test` (and checked by
    /// `flow validate`); `flow run` ignores them.
    #[serde(default)]
    pub tests: Vec<TestSpec>,
}

/// A file of tests for a pipeline kept elsewhere (`NAME.test.yaml`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestFileSpec {
    /// The pipeline file tested, relative to this file.
    pub pipeline: String,
    /// The tests, as under `tests:` in a pipeline file.
    pub tests: Vec<TestSpec>,
}

/// One unit test, run by `flow test` as a run of its own: the sources
/// emit only the `input` items given to them, the sinks write nothing
/// (what reaches them is captured), mocked stages are replaced, and the
/// clock does not wait (retry backoffs, rate limits and timeouts take no
/// real time).
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "test", title = "test")]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    /// The test's name, shown as `FILE::NAME`.
    pub name: String,
    /// Items fed into a stage's input (for a source, instead of what it
    /// would emit): one `{stage, items}`, or a list of them.
    #[serde(default)]
    pub input: TestInputs,
    /// Stages replaced for the test: by a jq expression run on each item,
    /// by a list of them used one per call (the last entry ends the list),
    /// or by `{error: MESSAGE}` (a failure that `retry` retries;
    /// `permanent: true` for one it does not), also as a list entry.
    #[serde(default)]
    pub mocks: BTreeMap<String, MockSpec>,
    /// What must come out: per stage (`name`), port (`name.port`) or error
    /// port (`name.error`: its failed items as
    /// `{item, error: {stage, message, attempts}}`).
    #[serde(default)]
    pub expect: Vec<ExpectSpec>,
}

/// Items fed into one stage.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "test_input", title = "test input")]
#[serde(deny_unknown_fields)]
pub struct TestInput {
    /// The stage whose input takes the items (a source emits them).
    pub stage: String,
    /// The items, in order.
    pub items: Vec<serde_json::Value>,
}

/// One `{stage, items}` or a list of them.
#[derive(Debug, Default, JsonSchema)]
#[schemars(rename = "test_inputs", title = "test inputs", untagged)]
pub enum TestInputs {
    #[default]
    None,
    One(TestInput),
    Many(Vec<TestInput>),
}

impl TestInputs {
    pub fn list(&self) -> &[TestInput] {
        match self {
            TestInputs::None => &[],
            TestInputs::One(one) => std::slice::from_ref(one),
            TestInputs::Many(many) => many,
        }
    }
}

// Not `#[serde(untagged)]`, whose one message for everything would hide
// which key is wrong.
impl<'de> Deserialize<'de> for TestInputs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InputsVisitor;

        impl<'de> serde::de::Visitor<'de> for InputsVisitor {
            type Value = TestInputs;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("{stage, items}, or a list of them")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<TestInputs, A::Error> {
                let seq = serde::de::value::SeqAccessDeserializer::new(seq);
                Vec::<TestInput>::deserialize(seq).map(TestInputs::Many)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<TestInputs, A::Error> {
                let map = serde::de::value::MapAccessDeserializer::new(map);
                TestInput::deserialize(map).map(TestInputs::One)
            }
        }

        deserializer.deserialize_any(InputsVisitor)
    }
}

/// What a mocked stage does instead of its work.
#[derive(Debug, JsonSchema)]
#[schemars(rename = "mock", title = "mock", untagged)]
pub enum MockSpec {
    /// A jq expression run on each item: its outputs are the stage's.
    Expr(String),
    /// One entry per call, in order: a jq expression or `{error: …}`.
    Steps(Vec<MockStep>),
    /// Every call fails.
    Error(MockError),
}

/// One call of a mocked stage.
#[derive(Debug, JsonSchema)]
#[schemars(rename = "mock_step", title = "mock step", untagged)]
pub enum MockStep {
    Expr(String),
    Error(MockError),
}

/// A failure a mocked stage gives.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "mock_error", title = "mock error")]
#[serde(deny_unknown_fields)]
pub struct MockError {
    /// The error message.
    pub error: String,
    /// `true`: not retried (like a 404); by default `retry` retries it
    /// (like a 503).
    #[serde(default)]
    pub permanent: bool,
}

impl<'de> Deserialize<'de> for MockSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MockVisitor;

        impl<'de> serde::de::Visitor<'de> for MockVisitor {
            type Value = MockSpec;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a jq expression, a list of them, or {error: MESSAGE}")
            }

            fn visit_str<E: serde::de::Error>(self, code: &str) -> Result<MockSpec, E> {
                Ok(MockSpec::Expr(code.to_string()))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<MockSpec, A::Error> {
                let seq = serde::de::value::SeqAccessDeserializer::new(seq);
                Vec::<MockStep>::deserialize(seq).map(MockSpec::Steps)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<MockSpec, A::Error> {
                let map = serde::de::value::MapAccessDeserializer::new(map);
                MockError::deserialize(map).map(MockSpec::Error)
            }
        }

        deserializer.deserialize_any(MockVisitor)
    }
}

impl<'de> Deserialize<'de> for MockStep {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StepVisitor;

        impl<'de> serde::de::Visitor<'de> for StepVisitor {
            type Value = MockStep;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a jq expression or {error: MESSAGE}")
            }

            fn visit_str<E: serde::de::Error>(self, code: &str) -> Result<MockStep, E> {
                Ok(MockStep::Expr(code.to_string()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<MockStep, A::Error> {
                let map = serde::de::value::MapAccessDeserializer::new(map);
                MockError::deserialize(map).map(MockStep::Error)
            }
        }

        deserializer.deserialize_any(StepVisitor)
    }
}

/// An expectation on what came out of a stage, a port or an error port
/// during a test. Several checks may be given; each must hold.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "expect", title = "expect")]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// `name` (a stage's output; for a sink, what it received), `name.port`
    /// (a named port) or `name.error` (the items that failed there, as
    /// `{item, error: {stage, message, attempts}}`, whatever its
    /// `on_error`; a port the stage itself calls `error` is that port).
    pub stage: String,
    /// Exactly these items, in any order unless `ordered: true`.
    pub items: Option<Vec<serde_json::Value>>,
    /// With `items`: in this order too.
    #[serde(default)]
    pub ordered: bool,
    /// Exactly this many items.
    #[serde(default, deserialize_with = "optional_usize")]
    pub count: Option<usize>,
    /// A jq condition every item satisfies (and at least one came).
    pub all: Option<String>,
    /// A jq condition at least one item satisfies.
    pub any: Option<String>,
    /// `true`: no item came.
    pub none: Option<bool>,
}

/// The runner-owned settings that `defaults:` may give every processor and
/// sink.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(rename = "defaults", title = "defaults")]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Concurrent workers taking from each stage's input queue (default 1,
    /// at most 10000).
    #[schemars(range(min = 1, max = 10000))]
    #[serde(default, deserialize_with = "optional_usize")]
    pub workers: Option<usize>,
    /// Input queue capacity in items (default 64, at most 1000000).
    #[schemars(range(min = 1, max = 1000000))]
    #[serde(default, deserialize_with = "optional_usize")]
    pub queue: Option<usize>,
    /// A second bound on each input queue, in bytes of item payload
    /// (`256MiB`, at most `64GiB`).
    pub queue_bytes: Option<String>,
    /// The order input queues hand items out in (default fifo).
    pub order: Option<Order>,
    /// `true`: items leave each stage in the order they entered it.
    pub ordered: Option<bool>,
    /// A rate limit: inline (`5/s`, `100/min`, `20/10s`, a bucket per
    /// stage; at most 1000000/s, a period of at most 365 days) or the name
    /// of a limit under `limits:`.
    pub rate: Option<String>,
    /// Tokens an inline rate's bucket may hold (default 1, at most
    /// 1000000).
    #[schemars(range(min = 1, max = 1000000))]
    #[serde(default, deserialize_with = "optional_u32")]
    pub burst: Option<u32>,
    /// Retries of a failed item.
    pub retry: Option<RetrySpec>,
    /// The limit on one attempt at one item (`10s`, `1m 30s`; at most 365
    /// days).
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
    /// `-`, at most 128 of them.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,128}$"))]
    pub name: String,
    /// A registered stage type (`flow stages` lists them).
    #[serde(rename = "type")]
    pub type_name: String,
    /// The stages this one reads from; several merge their items (fan-in).
    /// Default: the stage before it in the list (none for a source); `[]`
    /// for a stage fed only by `on_error` routes.
    pub inputs: Option<Vec<String>>,
    /// Concurrent workers taking from the input queue (default 1, at most
    /// 10000; all the stages together at most 100000).
    #[schemars(range(min = 1, max = 10000))]
    #[serde(default, deserialize_with = "optional_usize")]
    pub workers: Option<usize>,
    /// Input queue capacity in items; a full queue makes producers wait
    /// (backpressure). Default 64, at most 1000000.
    #[schemars(range(min = 1, max = 1000000))]
    #[serde(default, deserialize_with = "optional_usize")]
    pub queue: Option<usize>,
    /// A second bound on the input queue, in bytes of item payload
    /// (`256MiB`, at most `64GiB`), for large binary items.
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
    /// `20/10s`; at most 1000000/s, a period of at most 365 days) or the
    /// name of a limit under `limits:`. On a source it paces the items it
    /// emits.
    pub rate: Option<String>,
    /// Tokens an inline rate's bucket may hold (default 1, at most
    /// 1000000); a bucket starts full.
    #[schemars(range(min = 1, max = 1000000))]
    #[serde(default, deserialize_with = "optional_u32")]
    pub burst: Option<u32>,
    /// An expression: one rate-limit bucket per value (e.g.
    /// `split("/")[2]`, the host of a URL).
    pub rate_key: Option<String>,
    /// Retries of a failed item (default: 1 attempt). Not on a source.
    pub retry: Option<RetrySpec>,
    /// The limit on one attempt at one item (`10s`, `1m 30s`; at most 365
    /// days). Not on a source.
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    #[schemars(with = "String")]
    pub timeout: Option<Duration>,
    /// What happens to an item that failed: `drop` (count it, log it, go
    /// on; the default), `fail` (stop the run) or the name of a stage that
    /// receives `{"item", "error": {"stage", "message", "attempts"}}`. On a
    /// source it handles a bad record (default `fail`; `defaults:` do not
    /// apply to sources).
    pub on_error: Option<String>,
    /// The stage type's own options (`flow stages TYPE` lists them).
    pub with: Option<serde_json::Value>,
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
    /// `5/s`, `100/min`, `20/10s` (at most 1000000/s, a period of at most
    /// 365 days).
    pub rate: String,
    /// Tokens the bucket may hold (default 1, at most 1000000); it starts
    /// full.
    #[schemars(range(min = 1, max = 1000000))]
    #[serde(default, deserialize_with = "optional_u32")]
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
    /// Total tries, the first included (at most 1000).
    #[schemars(range(min = 1, max = 1000))]
    #[serde(deserialize_with = "required_u32")]
    pub attempts: u32,
    /// The wait after the first failed attempt; it doubles each time
    /// (default 100ms, at most 365 days).
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    #[schemars(with = "String")]
    pub backoff: Option<Duration>,
    /// The longest wait, also capping an HTTP `Retry-After` (at most 365
    /// days, the cap of every wait).
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    #[schemars(with = "String")]
    pub max_backoff: Option<Duration>,
    /// Draw each wait between half and all of it.
    #[serde(default)]
    pub jitter: bool,
}

/// A whole number as written: one beyond `u64` reads as `u64::MAX`, so the
/// checks say it is over its limit rather than that it is not a number.
struct Whole(u64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WholeVisitor;

        impl serde::de::Visitor<'_> for WholeVisitor {
            type Value = u64;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number, 0 or more")
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
                Ok(v)
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
                u64::try_from(v)
                    .map_err(|_| E::invalid_type(serde::de::Unexpected::Signed(v), &self))
            }

            fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<u64, E> {
                Ok(u64::try_from(v).unwrap_or(u64::MAX))
            }

            fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<u64, E> {
                match u128::try_from(v) {
                    Ok(v) => self.visit_u128(v),
                    Err(_) => Err(E::invalid_type(
                        serde::de::Unexpected::Other(&format!("integer `{v}`")),
                        &self,
                    )),
                }
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<u64, E> {
                // Digits too many for any integer type read as a float.
                if v.is_finite() && v.fract() == 0.0 && v >= u64::MAX as f64 {
                    Ok(u64::MAX)
                } else {
                    Err(E::invalid_type(serde::de::Unexpected::Float(v), &self))
                }
            }
        }

        deserializer.deserialize_any(WholeVisitor).map(Whole)
    }
}

fn optional_usize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let n = Option::<Whole>::deserialize(d)?;
    Ok(n.map(|Whole(n)| usize::try_from(n).unwrap_or(usize::MAX)))
}

fn optional_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let n = Option::<Whole>::deserialize(d)?;
    Ok(n.map(|Whole(n)| u32::try_from(n).unwrap_or(u32::MAX)))
}

fn required_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let Whole(n) = Whole::deserialize(d)?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys of a struct, from its schema.
    fn properties<T: JsonSchema>() -> Vec<String> {
        let schema = schemars::schema_for!(T);
        let mut keys: Vec<String> = schema
            .get("properties")
            .and_then(|p| p.as_object())
            .expect("a struct's schema has properties")
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    fn sorted(keys: &[&str]) -> Vec<String> {
        let mut keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        keys.sort();
        keys
    }

    #[test]
    fn the_key_lists_are_the_structs_fields() {
        assert_eq!(properties::<PipelineSpec>(), sorted(&PIPELINE_KEYS));
        assert_eq!(properties::<Defaults>(), sorted(&DEFAULTS_KEYS));
        assert_eq!(properties::<StageSpec>(), sorted(&STAGE_KEYS));
        assert_eq!(properties::<RetrySpec>(), sorted(&RETRY_KEYS));
    }
}
