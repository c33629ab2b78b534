//! A source's `on_error`: a bad record (`Output::fail`) is dropped, stops
//! the run, or goes to a dead-letter stage, as the file says; a source's
//! default is `fail`, and `defaults.on_error` does not reach it.

mod common;

use common::{records, run_pipeline, stage};
use flow_core::value::{int, object};
use flow_core::{
    BuildContext, ConfigError, Next, Output, Source, Stage, StageError, StageKind, StageOptions,
    StageType, async_trait,
};
use flow_runner::Status;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

/// `count` records `{"i": n}`; every record whose `i` is odd is bad.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct BadOddOptions {
    count: i64,
}

struct BadOdd {
    count: i64,
}

#[async_trait]
impl Source for BadOdd {
    async fn next(&mut self, out: &mut Output) -> Result<Next, StageError> {
        for i in 0..self.count {
            let record = object([("i", int(i))]);
            if i % 2 == 1 {
                out.fail(record, StageError::permanent(format!("record {i} is odd")));
            } else {
                out.emit(record);
            }
        }
        Ok(Next::Done)
    }
}

impl StageOptions for BadOddOptions {
    fn build(self, _ctx: &BuildContext) -> Result<Stage, ConfigError> {
        Ok(Stage::source(BadOdd { count: self.count }))
    }
}

flow_core::inventory::submit! {
    StageType::new::<BadOddOptions>("t_bad_odd", StageKind::Source,
        "Test source: numbered records, the odd ones bad.",
        "- name: src\n  type: t_bad_odd\n  with: { count: 3 }\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sources_bad_records_go_to_its_dead_letter_stage() {
    let id = "source-errors-dead-letter";
    let report = run_pipeline(
        id,
        r#"
defaults:
  on_error: drop
stages:
  - name: src
    type: t_bad_odd
    on_error: failed
    with: { count: 6 }
  - name: out
    type: t_sink
    with: { id: $ID }
  - name: failed
    type: t_sink
    inputs: []
    with: { id: $ID }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Partial, "{report:?}");
    let good: Vec<i64> = records(id, "out")
        .iter()
        .map(|v| v["i"].as_i64().unwrap())
        .collect();
    assert_eq!(good, [0, 2, 4]);
    let letters = records(id, "failed");
    assert_eq!(letters.len(), 3, "{letters:?}");
    assert_eq!(letters[0]["item"], json!({"i": 1}));
    assert_eq!(
        letters[0]["error"],
        json!({"stage": "src", "message": "record 1 is odd", "attempts": 1})
    );
    assert_eq!(stage(&report, "src").dead_lettered, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sources_bad_records_are_dropped_when_it_says_drop() {
    let id = "source-errors-drop";
    let report = run_pipeline(
        id,
        r#"
stages:
  - name: src
    type: t_bad_odd
    on_error: drop
    with: { count: 6 }
  - name: out
    type: t_sink
    with: { id: $ID }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Partial, "{report:?}");
    assert_eq!(records(id, "out").len(), 3);
    assert_eq!(stage(&report, "src").dropped, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sources_bad_record_stops_the_run_by_default_whatever_the_defaults_say() {
    let id = "source-errors-default";
    let report = run_pipeline(
        id,
        r#"
defaults:
  on_error: drop
stages:
  - name: src
    type: t_bad_odd
    with: { count: 6 }
  - name: out
    type: t_sink
    with: { id: $ID }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Failed, "{report:?}");
    assert_eq!(
        report.failure.as_deref(),
        Some("stage \"src\": a record failed (on_error: fail): record 1 is odd")
    );
}
