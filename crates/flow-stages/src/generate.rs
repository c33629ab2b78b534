//! `generate`: emits numbered items, as fast as they are taken or at an
//! interval.

use std::time::Duration;

use flow_core::value::int;
use flow_core::{
    BATCH, BuildContext, ConfigError, Expr, Next, Output, Source, Stage, StageError, StageKind,
    StageOptions, StageType, async_trait,
};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::time::Instant;

/// Emits items numbered from 0: `count` of them, or endlessly (stop with
/// Ctrl-C). Without an `interval` it emits as fast as the next stage takes
/// them.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateOptions {
    /// How many items to emit; absent: endless.
    pub count: Option<u64>,
    /// A jq expression over `$i`, the item's index, giving the item; each
    /// output is an item. Default: `$i` (the numbers 0, 1, 2, …).
    #[serde(default = "index")]
    pub value: String,
    /// The pause between items (`100ms`, `1s`); absent: no pause.
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    #[schemars(with = "String")]
    pub interval: Option<Duration>,
}

fn index() -> String {
    "$i".into()
}

struct Generate {
    count: Option<u64>,
    /// `None` for the plain index, which needs no expression.
    value: Option<Expr>,
    interval: Option<Duration>,
    next: u64,
    /// The index of the first item of this run (after a resume, not 0).
    first: u64,
    started: Option<Instant>,
}

impl Generate {
    fn emit(&self, i: u64, out: &mut Output) -> Result<(), StageError> {
        match &self.value {
            None => {
                out.emit(int(i as i64));
                Ok(())
            }
            Some(expr) => expr.run_with(flow_core::Value::Null, &[int(i as i64)], |v| out.emit(v)),
        }
    }
}

#[async_trait]
impl Source for Generate {
    async fn next(&mut self, out: &mut Output) -> Result<Next, StageError> {
        let end = self.count.unwrap_or(u64::MAX);
        match self.interval {
            Some(interval) => {
                // Each item has its own deadline from the start, so timer
                // lateness does not add up over a long run.
                let started = *self.started.get_or_insert_with(Instant::now);
                if self.next > self.first {
                    let since = (self.next - self.first).min(u32::MAX as u64) as u32;
                    let at = interval.saturating_mul(since);
                    tokio::time::sleep_until(started + at).await;
                }
                if self.next < end {
                    self.emit(self.next, out)?;
                    self.next += 1;
                }
            }
            None => {
                let stop = end.min(self.next.saturating_add(BATCH as u64));
                while self.next < stop {
                    self.emit(self.next, out)?;
                    self.next += 1;
                }
            }
        }
        Ok(if self.next >= end {
            Next::Done
        } else {
            Next::More
        })
    }

    fn total(&self) -> Option<u64> {
        self.count
    }

    fn position(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "next": self.next }))
    }

    fn resume(&mut self, position: serde_json::Value) -> Result<(), StageError> {
        let next = position["next"]
            .as_u64()
            .ok_or_else(|| StageError::permanent("the checkpoint has no position for generate"))?;
        // The pace of `interval` counts from the resume.
        (self.next, self.first) = (next, next);
        Ok(())
    }
}

impl StageOptions for GenerateOptions {
    fn build(self, _ctx: &BuildContext) -> Result<Stage, ConfigError> {
        let value = match self.value.trim() {
            "$i" => None,
            code => Some(
                Expr::compile_with_vars(code, &["$i"])
                    .map_err(|e| ConfigError::expr("value", e))?,
            ),
        };
        Ok(Stage::source(Generate {
            count: self.count,
            value,
            interval: self.interval,
            next: 0,
            first: 0,
            started: None,
        }))
    }
}

flow_core::inventory::submit! {
    StageType::new::<GenerateOptions>(
        "generate",
        StageKind::Source,
        "Emits numbered items, as fast as they are taken or at an interval.",
        "- name: numbers\n  type: generate\n  with: { count: 5, value: '{id: $i}', interval: 10ms }\n",
    )
}
