//! `dedupe`: passes the first item of each key, drops the rest.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, Mutex};

use flow_core::{
    BuildContext, ConfigError, Expr, Output, Stage, StageError, StageKind, StageOptions, StageType,
    Transform, Value,
};
use schemars::JsonSchema;
use serde::Deserialize;

/// Passes the first item of each key and filters out the later ones (they
/// count as items in, not out: `items_in - items_out` is the number of
/// duplicates). Keys are equal when jq's `==` says so: `1` and `1.0` are
/// the same key, and so are two objects with the same fields in another
/// order.
///
/// Every worker of the stage shares one set of the keys seen, so a key
/// passes once however many workers there are. The set keeps a 128-bit
/// hash of each key, not the key itself: memory grows by about 20 to 40
/// bytes per distinct key, whatever the key's size (10 million distinct
/// keys take about 200 to 400 MB, and half as much again for a moment
/// while the set grows), and is not freed until the run ends; duplicates
/// cost nothing. Two different keys share a hash with odds of
/// about n²/2¹²⁹ for n keys: never, in practice.
///
/// A key is remembered when its first item passes this stage, even if that
/// item later fails downstream: its duplicates are still filtered.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DedupeOptions {
    /// A jq expression giving an item's key, e.g. `.url` or `[.user, .day]`
    /// for a key of several fields; its first output is the key. Default:
    /// `.`, the whole item. An expression that fails or gives no output on
    /// an item fails that item (a permanent error).
    #[serde(default = "whole_item")]
    pub key: String,
}

fn whole_item() -> String {
    ".".into()
}

/// The keys seen by every worker of one stage.
struct Seen {
    /// Two independently keyed hashers, for the two halves of a key's hash.
    halves: (RandomState, RandomState),
    keys: Mutex<HashSet<u128, BuildHasherDefault<AlreadyHashed>>>,
}

impl Seen {
    fn new() -> Self {
        Seen {
            halves: (RandomState::new(), RandomState::new()),
            keys: Mutex::new(HashSet::default()),
        }
    }

    /// Records `key`; true the first time it is seen.
    fn first(&self, key: &Value) -> bool {
        let high = self.halves.0.hash_one(key);
        let low = self.halves.1.hash_one(key);
        let hash = (u128::from(high) << 64) | u128::from(low);
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.insert(hash)
    }
}

/// The set's own hasher: its keys are already hashes, so it passes them on.
#[derive(Default)]
struct AlreadyHashed(u64);

impl Hasher for AlreadyHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is used; fold anything else in anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

struct Dedupe {
    /// `None` for `.`, the whole item: no expression to run.
    key: Option<Expr>,
    seen: Arc<Seen>,
}

impl Transform for Dedupe {
    fn interruptible(&self) -> bool {
        true
    }

    fn apply(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError> {
        let first = match &self.key {
            None => self.seen.first(input),
            Some(expr) => {
                let key = expr.first(input.clone())?.ok_or_else(|| {
                    StageError::permanent(format!("key `{}` gave no output", expr.code()))
                })?;
                self.seen.first(&key)
            }
        };
        if first {
            out.emit(input.clone());
        }
        Ok(())
    }
}

impl StageOptions for DedupeOptions {
    fn build(self, _ctx: &BuildContext) -> Result<Stage, ConfigError> {
        let key = match self.key.trim() {
            "." => None,
            code => Some(Expr::compile(code).map_err(|e| ConfigError::expr("key", e))?),
        };
        let seen = Arc::new(Seen::new());
        Ok(Stage::transform(move || Dedupe {
            key: key.clone(),
            seen: seen.clone(),
        }))
    }
}

flow_core::inventory::submit! {
    StageType::new::<DedupeOptions>(
        "dedupe",
        StageKind::Processor,
        "Passes the first item of each key and filters out the rest.",
        "- name: unique\n  type: dedupe\n  with: { key: .url }\n",
    )
}

#[cfg(test)]
mod tests {
    use flow_core::value::{parse_json, to_json};
    use flow_core::{Transform, Worker};

    use super::*;

    fn ctx() -> BuildContext {
        BuildContext {
            stage: "d".into(),
            workers: 2,
            base_dir: ".".into(),
            timeout: None,
        }
    }

    /// The stage as the runner builds it: a factory of workers.
    fn workers(key: &str) -> impl Fn() -> Box<dyn Transform> {
        let options = DedupeOptions { key: key.into() };
        let Stage::Workers(factory) = options.build(&ctx()).unwrap() else {
            panic!("dedupe has workers")
        };
        move || match factory(0) {
            Ok(Worker::Transform(t)) => t,
            _ => panic!("dedupe workers are transforms"),
        }
    }

    fn passed(d: &mut Box<dyn Transform>, inputs: &[&str]) -> Vec<String> {
        let mut out = Output::new();
        for input in inputs {
            d.apply(&parse_json(input.as_bytes()).unwrap(), &mut out)
                .unwrap();
        }
        out.items_mut().iter().map(|i| to_json(&i.value)).collect()
    }

    #[test]
    fn the_first_item_of_each_key_passes() {
        let mut d = workers(".url")();
        let got = passed(
            &mut d,
            &[
                r#"{"url":"a","n":1}"#,
                r#"{"url":"b","n":2}"#,
                r#"{"url":"a","n":3}"#,
                r#"{"url":"b","n":4}"#,
                r#"{"url":"c","n":5}"#,
            ],
        );
        let want = [
            r#"{"url":"a","n":1}"#,
            r#"{"url":"b","n":2}"#,
            r#"{"url":"c","n":5}"#,
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn keys_are_equal_as_jq_compares_them() {
        let mut d = workers(".")();
        let got = passed(
            &mut d,
            &["1", "1.0", r#"{"a":1,"b":2}"#, r#"{"b":2,"a":1}"#],
        );
        assert_eq!(got, ["1", r#"{"a":1,"b":2}"#]);
        let got = passed(&mut d, &[r#""1""#, "[1]", "null", "null"]);
        assert_eq!(got, [r#""1""#, "[1]", "null"], "different types differ");
    }

    #[test]
    fn workers_of_one_stage_share_the_keys_seen() {
        let make = workers(".");
        let (mut a, mut b) = (make(), make());
        assert_eq!(passed(&mut a, &["1", "2"]), ["1", "2"]);
        assert_eq!(passed(&mut b, &["2", "3"]), ["3"]);
        let mut other_stage = workers(".")();
        assert_eq!(passed(&mut other_stage, &["1"]), ["1"]);
    }

    #[test]
    fn a_key_with_no_output_fails_the_item() {
        let mut d = workers(".tags[]")();
        let err = d
            .apply(&parse_json(br#"{"tags":[]}"#).unwrap(), &mut Output::new())
            .unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.message().contains("gave no output"), "{err}");
    }

    #[test]
    fn a_bad_key_expression_is_a_config_error_on_key() {
        let options = DedupeOptions { key: ".a |".into() };
        assert_eq!(options.build(&ctx()).err().unwrap().key, "key");
    }
}
