//! How the runner wires stages and ends a run: default and explicit
//! `inputs`, fan-in and fan-out, per-stage counts, orderly completion,
//! `on_error`, worker pools, tiny queues, panics and interrupts.

mod common;

use std::collections::BTreeSet;

use common::{Finish, Tag, finishes, hooks, range, records, run_pipeline, stage, tags};
use flow_core::Outcome;
use flow_runner::Status;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_without_inputs_read_the_stage_before_them() {
    let id = "wiring-default-inputs";
    let report = run_pipeline(
        id,
        r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 1000 }
  - name: odd
    type: t_pass
    with: { filter_mod: 2 }
  - name: out
    type: t_sink
    with: { id: $ID }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Ok, "{report:?}");
    assert_eq!(report.exit_code(), 0);
    // `out` sees only what `odd` let through: it reads `odd`, not `src`.
    let odd: Vec<Tag> = range("src", 1000)
        .into_iter()
        .filter(|(_, i)| i % 2 == 1)
        .collect();
    assert_eq!(tags(id, "out"), odd);
    assert_eq!(stage(&report, "src").items_out, 1000);
    assert_eq!(stage(&report, "odd").items_in, 1000);
    assert_eq!(stage(&report, "odd").items_out, 500);
    assert_eq!(stage(&report, "out").items_in, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_with_several_inputs_merges_them() {
    let id = "wiring-fan-in";
    let report = run_pipeline(
        id,
        r#"
stages:
  - name: a
    type: t_source
    with: { id: $ID, count: 300, batch: 7 }
  - name: b
    type: t_source
    with: { id: $ID, count: 200 }
  - name: both
    type: t_pass
    inputs: [a, b]
    workers: 2
  - name: out
    type: t_sink
    with: { id: $ID }
  - name: direct
    type: t_sink
    inputs: [b, a]
    with: { id: $ID, worker: processor }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Ok, "{report:?}");
    let mut expected = range("a", 300);
    expected.extend(range("b", 200));
    assert_eq!(tags(id, "out"), expected);
    assert_eq!(tags(id, "direct"), expected);
    assert_eq!(stage(&report, "both").items_in, 500);
    assert_eq!(stage(&report, "direct").items_in, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_read_by_several_sends_every_item_to_each() {
    let id = "wiring-fan-out";
    let report = run_pipeline(
        id,
        r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 700 }
  - name: left
    type: t_sink
    inputs: [src]
    with: { id: $ID }
  - name: right
    type: t_sink
    inputs: [src]
    workers: 3
    with: { id: $ID, worker: processor }
  - name: mid
    type: t_pass
    inputs: [src]
  - name: far
    type: t_sink
    with: { id: $ID }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Ok, "{report:?}");
    for sink in ["left", "right", "far"] {
        assert_eq!(tags(id, sink), range("src", 700), "sink {sink}");
    }
    assert_eq!(stage(&report, "src").items_out, 700);
    assert_eq!(stage(&report, "mid").items_in, 700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_in_equal_items_out_plus_filtered_at_every_stage() {
    let id = "wiring-counts";
    let report = run_pipeline(
        id,
        r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 1000, batch: 33 }
  - name: thirds
    type: t_pass
    workers: 2
    with: { filter_mod: 3 }
  - name: halves
    type: t_pass
    with: { filter_mod: 2, worker: processor }
  - name: out
    type: t_sink
    workers: 2
    with: { id: $ID }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Ok, "{report:?}");
    let after_thirds: Vec<i64> = (0..1000).filter(|i| i % 3 != 0).collect();
    let after_halves: Vec<i64> = after_thirds
        .iter()
        .copied()
        .filter(|i| i % 2 != 0)
        .collect();
    let filtered = [
        ("thirds", 1000, 1000 - after_thirds.len() as u64),
        (
            "halves",
            after_thirds.len() as u64,
            (after_thirds.len() - after_halves.len()) as u64,
        ),
        ("out", after_halves.len() as u64, 0),
    ];
    for (name, items_in, filtered) in filtered {
        let s = stage(&report, name);
        assert_eq!(s.items_in, items_in, "{name}: items in");
        assert_eq!(
            s.items_in,
            s.items_out + filtered,
            "{name}: in = out + filtered"
        );
        assert_eq!((s.errors, s.dropped, s.dead_lettered), (0, 0, 0), "{name}");
    }
    let expected: Vec<Tag> = after_halves
        .into_iter()
        .map(|i| ("src".into(), i))
        .collect();
    assert_eq!(tags(id, "out"), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_finishes_once_after_every_item_reached_it() {
    for worker in ["transform", "processor"] {
        let id = format!("wiring-finish-one-{worker}");
        let yaml = r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 2000, batch: 7 }
  - name: pass
    type: t_pass
    workers: 3
  - name: out
    type: t_sink
    with: { id: $ID, worker: WORKER }
"#
        .replace("WORKER", worker);
        let report = run_pipeline(&id, &yaml).await;
        assert_eq!(report.status, Status::Ok, "{report:?}");
        let finish = Finish {
            worker: 0,
            by_worker: 2000,
            by_stage: 2000,
        };
        assert_eq!(finishes(&id, "out"), [finish], "{worker} sink");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sink_worker_finishes_once_after_its_last_item_and_upstream_flushes() {
    for worker in ["transform", "processor"] {
        let id = format!("wiring-finish-many-{worker}");
        let yaml = r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 2000, batch: 7 }
  - name: flush
    type: t_pass
    workers: 3
    with: { emit_on_finish: true, worker: WORKER }
  - name: out
    type: t_sink
    workers: 4
    with: { id: $ID, worker: WORKER }
"#
        .replace("WORKER", worker);
        let report = run_pipeline(&id, &yaml).await;
        assert_eq!(report.status, Status::Ok, "{report:?}");
        // What `flush` emitted from `finish` reached the sink too: the
        // stage's end travels down only after its last worker flushed.
        let mut expected = range("src", 2000);
        expected.extend(range("finish:flush", 3));
        expected.sort();
        assert_eq!(tags(&id, "out"), expected, "{worker}");
        let done = finishes(&id, "out");
        let workers: BTreeSet<usize> = done.iter().map(|f| f.worker).collect();
        assert_eq!(done.len(), 4, "one finish per worker: {done:?}");
        assert_eq!(workers, (0..4).collect(), "{done:?}");
        // Each worker finished after everything it consumed; the last to
        // finish did so after the whole stage had consumed every item.
        let total = expected.len();
        assert_eq!(done.iter().map(|f| f.by_worker).sum::<usize>(), total);
        assert_eq!(done.iter().map(|f| f.by_stage).max(), Some(total));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_drop_counts_dropped_and_the_run_exits_with_3() {
    let id = "wiring-drop";
    let report = run_pipeline(
        id,
        r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 100 }
  - name: fail
    type: t_fail
    workers: 2
    on_error: drop
    with: { fail_mod: 10, fail_rem: 3 }
  - name: out
    type: t_sink
    with: { id: $ID }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Partial, "{report:?}");
    assert_eq!(report.exit_code(), 3);
    let s = stage(&report, "fail");
    assert_eq!((s.items_in, s.items_out), (100, 90));
    assert_eq!((s.errors, s.dropped, s.dead_lettered), (10, 10, 0));
    let kept: Vec<Tag> = range("src", 100)
        .into_iter()
        .filter(|(_, i)| i % 10 != 3)
        .collect();
    assert_eq!(tags(id, "out"), kept);
    assert_eq!(report.errors.iter().map(|e| e.count).sum::<u64>(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_fail_stops_the_run_with_status_failed_and_exit_code_1() {
    for worker in ["transform", "processor"] {
        let id = format!("wiring-fail-{worker}");
        // The source is endless: only the failure can end this run.
        let yaml = r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID }
  - name: fail
    type: t_fail
    on_error: fail
    workers: 2
    with: { fail_mod: 100000, fail_rem: 5000, worker: WORKER }
  - name: out
    type: t_sink
    with: { id: $ID }
"#
        .replace("WORKER", worker);
        let report = run_pipeline(&id, &yaml).await;
        assert_eq!(report.status, Status::Failed, "{report:?}");
        assert_eq!(report.exit_code(), 1);
        let failure = report.failure.as_deref().unwrap_or_default();
        assert!(
            failure.contains("stage \"fail\"") && failure.contains("item 5000 fails"),
            "{failure}"
        );
        assert!(!tags(&id, "out").contains(&("src".into(), 5000)));
        // The sink still flushed.
        assert_eq!(finishes(&id, "out").len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_items_go_to_the_dead_letter_stage_with_their_error() {
    let id = "wiring-dead-letter";
    let report = run_pipeline(
        id,
        r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 50, batch: 4 }
  - name: threes
    type: t_fail
    workers: 3
    on_error: dlq
    with: { fail_mod: 10, fail_rem: 3 }
  - name: sevens
    type: t_fail
    on_error: dlq
    with: { fail_mod: 10, fail_rem: 7, worker: processor }
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
    assert_eq!(report.exit_code(), 3);
    let mut letters = records(id, "dlq");
    letters.sort_by_key(|l| l["item"]["i"].as_i64());
    let expected: Vec<serde_json::Value> = (0..50)
        .filter(|i| i % 10 == 3 || i % 10 == 7)
        .map(|i| {
            let stage = if i % 10 == 3 { "threes" } else { "sevens" };
            json!({
                "item": {"src": "src", "i": i},
                "error": {"stage": stage, "message": format!("item {i} fails"), "attempts": 1},
            })
        })
        .collect();
    assert_eq!(letters, expected);
    let kept: Vec<Tag> = range("src", 50)
        .into_iter()
        .filter(|(_, i)| i % 10 != 3 && i % 10 != 7)
        .collect();
    assert_eq!(tags(id, "out"), kept);
    for (name, failed) in [("threes", 5), ("sevens", 5)] {
        let s = stage(&report, name);
        assert_eq!((s.errors, s.dropped, s.dead_lettered), (failed, 0, failed));
    }
    assert_eq!(stage(&report, "dlq").items_in, 10);
    assert_eq!(finishes(id, "dlq").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_workers_on_one_stage_handle_each_item_exactly_once() {
    let id = "wiring-workers";
    let report = run_pipeline(
        id,
        r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 3000, batch: 50 }
  - name: slow
    type: t_pass
    workers: 4
    queue: 8
    with: { worker: processor }
  - name: fast
    type: t_pass
    workers: 3
    queue: 8
  - name: out
    type: t_sink
    workers: 4
    with: { id: $ID, worker: processor }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Ok, "{report:?}");
    assert_eq!(tags(id, "out"), range("src", 3000));
    for name in ["slow", "fast", "out"] {
        assert_eq!(stage(&report, name).items_in, 3000, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_of_capacity_one_still_move_every_item() {
    let id = "wiring-queue-one";
    let report = run_pipeline(
        id,
        r#"
defaults:
  queue: 1
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 1000 }
  - name: a
    type: t_pass
    workers: 2
  - name: b
    type: t_pass
    with: { worker: processor }
  - name: out
    type: t_sink
    with: { id: $ID }
  - name: side
    type: t_sink
    inputs: [a]
    workers: 2
    with: { id: $ID, worker: processor }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Ok, "{report:?}");
    assert_eq!(tags(id, "out"), range("src", 1000));
    assert_eq!(tags(id, "side"), range("src", 1000));
    for name in ["a", "b", "out", "side"] {
        let queue = stage(&report, name).queue.expect("a processor has a queue");
        assert_eq!(queue.capacity, 1, "{name}");
        assert!(queue.peak <= 1, "{name}: peak {}", queue.peak);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_stage_fails_only_that_item_and_the_run_goes_on() {
    for worker in ["transform", "processor"] {
        let id = format!("wiring-panic-{worker}");
        let yaml = r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 2000 }
  - name: boom
    type: t_fail
    workers: 2
    with: { panic_at: 1000, worker: WORKER }
  - name: out
    type: t_sink
    with: { id: $ID }
"#
        .replace("WORKER", worker);
        let report = run_pipeline(&id, &yaml).await;
        assert_eq!(report.status, Status::Partial, "{report:?}");
        assert_eq!(report.exit_code(), 3);
        let boom = stage(&report, "boom");
        assert_eq!(
            (boom.items_in, boom.items_out, boom.errors, boom.dropped),
            (2000, 1999, 1, 1)
        );
        assert!(
            report.errors[0]
                .message
                .starts_with("panicked: t_pass boom: panic on item 1000"),
            "{:?}",
            report.errors
        );
        let mut expected = range("src", 2000);
        expected.retain(|t| t.1 != 1000);
        let mut got = tags(&id, "out");
        got.sort();
        assert_eq!(got, expected, "{worker}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_under_on_error_fail_stops_the_run() {
    let id = "wiring-panic-fail";
    // An endless source and a second, healthy worker: only the panic can
    // end this run.
    let report = run_pipeline(
        id,
        r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID }
  - name: boom
    type: t_fail
    workers: 2
    on_error: fail
    with: { panic_at: 1000, worker: processor }
  - name: out
    type: t_sink
    with: { id: $ID }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Failed, "{report:?}");
    assert_eq!(report.exit_code(), 1);
    let failure = report.failure.as_deref().unwrap_or_default();
    assert!(
        failure.contains("stage \"boom\"") && failure.contains("panicked"),
        "{failure}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_sink_fails_only_that_item() {
    let id = "wiring-panic-sink";
    // The sink's only worker panics while the source waits on its full
    // queue; a fresh worker takes over.
    let report = run_pipeline(
        id,
        r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 50 }
  - name: out
    type: t_sink
    queue: 1
    with: { id: $ID, panic_at: 10 }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Partial, "{report:?}");
    let out = stage(&report, "out");
    assert_eq!((out.items_in, out.items_out, out.dropped), (50, 49, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_drains_what_is_in_the_pipeline_abandons_the_rest_and_exits_with_130() {
    let id = "wiring-interrupt";
    let report = run_pipeline(
        id,
        r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, hook: true, batch: 64, interrupt_at: 500 }
  - name: pass
    type: t_pass
    workers: 2
    queue: 4
  - name: out
    type: t_sink
    with: { id: $ID }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Interrupted, "{report:?}");
    assert_eq!(report.exit_code(), 130);
    // The source stopped right after the item that interrupted the run.
    // What it had emitted but not yet sent (the queue holds 4) is
    // abandoned, not drained: the drain handles only what is already in
    // the pipeline. Every item is either delivered or counted abandoned.
    assert_eq!(stage(&report, "src").items_out, 501);
    let delivered = tags(id, "out");
    let abandoned: u64 = report.stages.iter().map(|s| s.abandoned).sum();
    assert!(abandoned >= 49, "{report:?}");
    assert_eq!(delivered.len() as u64 + abandoned, 501, "{report:?}");
    assert!(delivered.iter().all(|t| range("src", 501).contains(t)));
    assert_eq!(finishes(id, "out").len(), 1);
    let hooks = hooks(id);
    assert_eq!(hooks.len(), 501);
    let done = hooks
        .values()
        .filter(|o| *o == &[Outcome::Delivered])
        .count();
    let failed = hooks
        .values()
        .filter(|o| *o == &[Outcome::Abandoned])
        .count();
    assert_eq!(
        (done, failed as u64),
        (delivered.len(), abandoned),
        "{hooks:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_reports_the_run_live_and_then_its_end() {
    let yaml = r#"
stages:
  - name: src
    type: t_source
    with: { id: wiring-monitor }
  - name: out
    type: t_sink
    with: { id: wiring-monitor }
"#;
    let plan = flow_runner::load_str(yaml, std::path::Path::new("test.yaml"), |_| None).unwrap();
    let control = flow_runner::RunControl::new();
    let running = flow_runner::Running::start(plan, control.clone());
    let monitor = running.monitor();
    // Poll until the sink has taken items: the source is endless, so the
    // run is certainly still going.
    let live = loop {
        let report = monitor.report();
        if stage(&report, "out").items_in > 0 {
            break report;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(live.status, Status::Running);
    assert!(!monitor.is_finished());
    assert_eq!(stage(&live, "out").inputs, ["src"]);
    assert!(!stage(&live, "src").done);
    control.interrupt();
    let end = running.finish().await;
    assert_eq!(end.status, Status::Interrupted);
    assert!(monitor.is_finished());
    assert_eq!(monitor.report().status, Status::Interrupted);
    assert!(stage(&end, "out").done && stage(&end, "src").done);
}
