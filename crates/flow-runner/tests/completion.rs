//! Completion hooks: a source item's hook fires exactly once, only after
//! every item made from it (fan-out copies, a processor's several outputs)
//! was consumed by a sink, filtered out or failed, and it reports whether
//! any of them failed.

mod common;

use std::collections::HashMap;

use common::{Tag, early, hooks, records, run_pipeline, stage};
use flow_core::Outcome;
use flow_runner::Status;

/// `(i, c)` of every item sink `name` consumed, sorted.
fn copies_at(id: &str, name: &str) -> Vec<(i64, i64)> {
    let mut got: Vec<(i64, i64)> = records(id, name)
        .iter()
        .map(|v| (v["i"].as_i64().unwrap(), v["c"].as_i64().unwrap_or(0)))
        .collect();
    got.sort();
    got
}

/// Every hook fired exactly once; returns the outcome of each.
fn fired_once(id: &str) -> HashMap<Tag, Outcome> {
    let hooks = hooks(id);
    for (tag, outcomes) in &hooks {
        assert_eq!(outcomes.len(), 1, "hook of {tag:?} fired {outcomes:?}");
    }
    hooks.into_iter().map(|(tag, o)| (tag, o[0])).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hook_fires_once_after_everything_made_from_its_item_is_handled() {
    let id = "completion-copies";
    let report = run_pipeline(
        id,
        r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 600, hook: true, batch: 50 }
  - name: whole
    type: t_pass
    with: { filter_mod: 11 }
  - name: copy
    type: t_pass
    workers: 3
    queue: 4
    with: { copies: 3, worker: processor }
  - name: part
    type: t_pass
    with: { filter_mod: 4 }
  - name: fail
    type: t_fail
    workers: 2
    on_error: drop
    with: { fail_mod: 7, fail_rem: 3 }
  - name: a
    type: t_sink
    inputs: [fail]
    with: { id: $ID }
  - name: b
    type: t_sink
    inputs: [fail]
    workers: 2
    with: { id: $ID, worker: processor }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Partial, "{report:?}");
    assert_eq!(report.exit_code(), 3);

    // `whole` filters out every item i % 11 == 0 (no copy is made); `part`
    // filters out the copy c with (i + c) % 4 == 0, when there is one;
    // `fail` fails (and drops) every copy of i % 7 == 3.
    let made: Vec<(i64, i64)> = (0..600)
        .filter(|i| i % 11 != 0)
        .flat_map(|i| (0..3).map(move |c| (i, c)))
        .filter(|(i, c)| (i + c) % 4 != 0)
        .collect();
    let (failed, kept): (Vec<_>, Vec<_>) = made.into_iter().partition(|(i, _)| i % 7 == 3);
    assert_eq!(copies_at(id, "a"), kept);
    assert_eq!(copies_at(id, "b"), kept);
    assert_eq!(stage(&report, "fail").dropped, failed.len() as u64);

    // No sink consumed an item whose source item's hook had fired.
    assert_eq!(early(id), Vec::<String>::new());
    let outcomes = fired_once(id);
    assert_eq!(outcomes.len(), 600);
    for i in 0..600 {
        let expected = if i % 11 != 0 && i % 7 == 3 {
            Outcome::Dropped
        } else {
            Outcome::Delivered
        };
        assert_eq!(outcomes[&("src".to_string(), i)], expected, "item {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_item_reports_dead_lettered_after_the_dead_letter_stage_took_it() {
    let id = "completion-dead-letter";
    let report = run_pipeline(
        id,
        r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 200, hook: true, batch: 9 }
  - name: fail
    type: t_fail
    workers: 2
    on_error: dlq
    with: { fail_mod: 5, worker: processor }
  - name: out
    type: t_sink
    with: { id: $ID }
  - name: dlq
    type: t_sink
    inputs: []
    with: { id: $ID }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Partial, "{report:?}");
    assert_eq!(records(id, "dlq").len(), 40);
    // The dead-letter sink checks each letter's item too.
    assert_eq!(early(id), Vec::<String>::new());
    let outcomes = fired_once(id);
    assert_eq!(outcomes.len(), 200);
    for i in 0..200 {
        let expected = match i % 5 {
            0 => Outcome::DeadLettered,
            _ => Outcome::Delivered,
        };
        assert_eq!(outcomes[&("src".to_string(), i)], expected, "item {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_run_only_items_that_reached_every_sink_report_done() {
    for worker in ["transform", "processor"] {
        let id = format!("completion-failed-run-{worker}");
        let yaml = r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 3000, hook: true, batch: 100 }
  - name: copy
    type: t_pass
    workers: 2
    with: { copies: 2 }
  - name: fail
    type: t_fail
    workers: 2
    on_error: fail
    with: { fail_mod: 100000, fail_rem: 1550, worker: WORKER }
  - name: a
    type: t_sink
    inputs: [fail]
    with: { id: $ID }
  - name: b
    type: t_sink
    inputs: [fail]
    with: { id: $ID }
"#
        .replace("WORKER", worker);
        let report = run_pipeline(&id, &yaml).await;
        assert_eq!(report.status, Status::Failed, "{report:?}");
        assert_eq!(early(&id), Vec::<String>::new());
        // Every item the source emitted is accounted for once; one that
        // reports done had both its copies reach both sinks.
        let outcomes = fired_once(&id);
        assert_eq!(outcomes.len() as u64, stage(&report, "src").items_out);
        let a = copies_at(&id, "a");
        let b = copies_at(&id, "b");
        for ((_, i), outcome) in outcomes {
            if outcome == Outcome::Delivered {
                for c in 0..2 {
                    assert!(
                        a.binary_search(&(i, c)).is_ok() && b.binary_search(&(i, c)).is_ok(),
                        "{worker}: item {i} reports done, but copy {c} did not reach every sink"
                    );
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_panic_only_items_that_reached_the_sink_report_done() {
    for (worker, on_error) in [
        ("transform", "drop"),
        ("processor", "drop"),
        ("transform", "fail"),
        ("processor", "fail"),
    ] {
        let id = format!("completion-panic-{worker}-{on_error}");
        let yaml = r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 3000, hook: true, batch: 100 }
  - name: copy
    type: t_pass
    with: { copies: 2 }
  - name: boom
    type: t_fail
    workers: 2
    on_error: ON_ERROR
    with: { panic_at: 1550, worker: WORKER }
  - name: out
    type: t_sink
    with: { id: $ID }
"#
        .replace("WORKER", worker)
        .replace("ON_ERROR", on_error);
        let report = run_pipeline(&id, &yaml).await;
        let expected = if on_error == "fail" {
            Status::Failed
        } else {
            Status::Partial
        };
        assert_eq!(report.status, expected, "{report:?}");
        assert_eq!(early(&id), Vec::<String>::new());
        let outcomes = fired_once(&id);
        assert_eq!(outcomes.len() as u64, stage(&report, "src").items_out);
        let got = copies_at(&id, "out");
        for ((_, i), outcome) in outcomes {
            if i == 1550 {
                let expected = if on_error == "fail" {
                    Outcome::Abandoned
                } else {
                    Outcome::Dropped
                };
                assert_eq!(outcome, expected, "{worker}/{on_error}: the panicked item");
            }
            if outcome == Outcome::Delivered {
                for c in 0..2 {
                    assert!(
                        got.binary_search(&(i, c)).is_ok(),
                        "{worker}/{on_error}: item {i} reports done, but copy {c} did not reach the sink"
                    );
                }
            } else if on_error == "drop" {
                assert_eq!(i, 1550, "{worker}: only the panicked item fails");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_emitted_by_a_source_call_that_an_interrupt_cancels_still_reach_the_sink() {
    let id = "completion-interrupt-pending";
    // The third `next` call emits 20..=25, interrupts the run and never
    // returns: the runner drops it, holding those six items.
    let report = run_pipeline(
        id,
        r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, hook: true, batch: 10, interrupt_at: 25, then_hang: true }
  - name: out
    type: t_sink
    with: { id: $ID }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Interrupted, "{report:?}");
    assert_eq!(stage(&report, "src").items_out, 26);
    let got: Vec<i64> = copies_at(id, "out").into_iter().map(|(i, _)| i).collect();
    assert_eq!(got, (0..26).collect::<Vec<_>>());
    let outcomes = fired_once(id);
    assert_eq!(outcomes.len(), 26);
    assert!(
        outcomes.values().all(|o| *o == Outcome::Delivered),
        "{outcomes:?}"
    );
}
