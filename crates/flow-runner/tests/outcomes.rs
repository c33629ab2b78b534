//! The exact outcome each source item's hook reports, once: delivered,
//! dead-lettered, dropped or abandoned. Runs on tokio's paused clock.

mod common;

use std::collections::HashMap;

use common::{Closed, Tag, closes, early, hooks, records, run_pipeline, stage, tags};
use flow_core::Outcome::{self, Abandoned, DeadLettered, Delivered, Dropped};
use flow_runner::Status;

/// Each source item's one outcome; fails if a hook fired twice or never.
fn outcomes(id: &str) -> HashMap<Tag, Outcome> {
    hooks(id)
        .into_iter()
        .map(|(tag, o)| {
            assert_eq!(o.len(), 1, "the hook of {tag:?} reported {o:?}");
            (tag, o[0])
        })
        .collect()
}

fn outcome_of(id: &str, i: i64) -> Outcome {
    outcomes(id)[&("src".to_string(), i)]
}

#[tokio::test(start_paused = true)]
async fn a_filtered_item_is_delivered() {
    let id = "outcomes-filtered";
    let report = run_pipeline(
        id,
        r#"
stages:
  - { name: src, type: t_source, with: { id: $ID, count: 6, hook: true } }
  - { name: keep, type: t_pass, with: { filter_mod: 3 } }
  - { name: out, type: t_sink, with: { id: $ID } }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Ok);
    assert_eq!(stage(&report, "out").items_in, 4, "0 and 3 filtered out");
    for i in 0..6 {
        assert_eq!(outcome_of(id, i), Delivered, "item {i}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_item_with_three_outputs_is_delivered_once_all_three_are() {
    let id = "outcomes-three";
    let report = run_pipeline(
        id,
        r#"
stages:
  - { name: src, type: t_source, with: { id: $ID, count: 4, hook: true } }
  - { name: three, type: t_pass, with: { copies: 3, filter_mod: 5 } }
  - name: check
    type: t_fail
    on_error: drop
    with: { fail_mod: 4, fail_rem: 3 }
  - { name: out, type: t_sink, with: { id: $ID } }
"#,
    )
    .await;
    // Copies (i, c) with i + c a multiple of 5 are filtered: (0, 0) and
    // (3, 2); item 3's other two copies fail.
    assert_eq!(report.status, Status::Partial);
    assert_eq!(stage(&report, "out").items_in, 8);
    assert_eq!(stage(&report, "check").dropped, 2);
    assert_eq!(early(id), Vec::<String>::new());
    let got: Vec<Outcome> = (0..4).map(|i| outcome_of(id, i)).collect();
    assert_eq!(got, [Delivered, Delivered, Delivered, Dropped]);
}

#[tokio::test(start_paused = true)]
async fn fan_out_where_one_branch_dead_letters_is_dead_lettered() {
    let id = "outcomes-fan-out";
    let report = run_pipeline(
        id,
        r#"
stages:
  - { name: src, type: t_source, with: { id: $ID, count: 6, hook: true } }
  - { name: a, type: t_sink, inputs: [src], with: { id: $ID } }
  - name: check
    type: t_fail
    inputs: [src]
    on_error: dlq
    with: { fail_mod: 3 }
  - { name: b, type: t_sink, with: { id: $ID } }
  - { name: dlq, type: t_sink, inputs: [], with: { id: $ID } }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Partial);
    assert_eq!(tags(id, "a").len(), 6);
    assert_eq!(records(id, "dlq").len(), 2);
    assert_eq!(early(id), Vec::<String>::new());
    for i in 0..6 {
        let expected = if i % 3 == 0 { DeadLettered } else { Delivered };
        assert_eq!(outcome_of(id, i), expected, "item {i}");
    }
}

#[tokio::test(start_paused = true)]
async fn dropped_and_dead_lettered_items_say_which() {
    for (on_error, failed) in [("drop", Dropped), ("dlq", DeadLettered)] {
        let id = format!("outcomes-on-error-{on_error}");
        let report = run_pipeline(
            &id,
            &r#"
stages:
  - { name: src, type: t_source, with: { id: $ID, count: 10, hook: true } }
  - { name: check, type: t_fail, on_error: ON_ERROR, with: { fail_mod: 4, worker: processor } }
  - { name: out, type: t_sink, with: { id: $ID } }
DLQ"#
                .replace("ON_ERROR", on_error)
                .replace(
                    "DLQ",
                    if on_error == "dlq" {
                        "  - { name: dlq, type: t_sink, inputs: [], with: { id: $ID } }\n"
                    } else {
                        ""
                    },
                ),
        )
        .await;
        assert_eq!(report.status, Status::Partial);
        for i in 0..10 {
            let expected = if i % 4 == 0 { failed } else { Delivered };
            assert_eq!(outcome_of(&id, i), expected, "{on_error}: item {i}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_buffering_sink_delivers_only_what_it_wrote() {
    for lose_at_finish in [false, true] {
        let id = format!("outcomes-buffer-{lose_at_finish}");
        let report = run_pipeline(
            &id,
            &format!(
                r#"
stages:
  - {{ name: src, type: t_source, with: {{ id: $ID, count: 25, hook: true, batch: 3 }} }}
  - {{ name: out, type: t_buffer, with: {{ id: $ID, flush_every: 10, lose_at_finish: {lose_at_finish} }} }}
"#
            ),
        )
        .await;
        assert_eq!(report.status, Status::Ok);
        // Nothing was reported while the sink still held it.
        assert_eq!(early(&id), Vec::<String>::new());
        for i in 0..25 {
            // Items 20..25 were still buffered at the end: lost when the
            // last write failed.
            let expected = if lose_at_finish && i >= 20 {
                Abandoned
            } else {
                Delivered
            };
            assert_eq!(outcome_of(&id, i), expected, "item {i}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_stopped_mid_way_abandons_what_it_did_not_handle_and_reports_each_once() {
    let id = "outcomes-stopped";
    let report = run_pipeline(
        id,
        r#"
stages:
  - { name: src, type: t_source, with: { id: $ID, hook: true, batch: 10, interrupt_at: 44, then_hang: true } }
  - { name: pass, type: t_pass, queue: 4, with: { worker: processor, sleep_all_ms: 1 } }
  - { name: out, type: t_buffer, with: { id: $ID, flush_every: 25 } }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Interrupted);
    let all = outcomes(id);
    let delivered: Vec<i64> = all
        .iter()
        .filter(|(_, o)| **o == Delivered)
        .map(|((_, i), _)| *i)
        .collect();
    let abandoned = all.values().filter(|o| **o == Abandoned).count();
    assert_eq!(delivered.len() + abandoned, all.len(), "{all:?}");
    assert!(abandoned > 0, "{all:?}");
    assert!(
        delivered
            .iter()
            .all(|i| tags(id, "out").contains(&("src".into(), *i))),
        "delivered but never reached the sink"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_closes_once_after_every_outcome_whatever_ends_the_run() {
    for (end, status) in [
        ("finished", Status::Partial),
        ("interrupted", Status::Interrupted),
        ("failed", Status::Failed),
    ] {
        let id = format!("outcomes-close-{end}");
        let source = match end {
            "interrupted" => "{ id: $ID, hook: true, batch: 7, interrupt_at: 300 }",
            _ => "{ id: $ID, count: 500, hook: true, batch: 7 }",
        };
        let on_error = if end == "failed" { "fail" } else { "drop" };
        let yaml = format!(
            r#"
stages:
  - {{ name: src, type: t_source, with: {source} }}
  - {{ name: pass, type: t_fail, workers: 3, queue: 8, on_error: {on_error}, with: {{ worker: processor, fail_mod: 1000, fail_rem: 400 }} }}
  - {{ name: out, type: t_buffer, with: {{ id: $ID, flush_every: 50 }} }}
"#
        );
        let report = run_pipeline(&id, &yaml).await;
        assert_eq!(report.status, status, "{end}: {report:?}");
        let closed = closes(&id, "src");
        assert_eq!(closed.len(), 1, "{end}: {closed:?}");
        let Closed { emitted, reported } = closed[0];
        assert!(emitted > 0, "{end}");
        assert_eq!(reported, emitted, "{end}: close ran before every outcome");
        // And each outcome was reported once.
        let _ = outcomes(&id);
    }
}
