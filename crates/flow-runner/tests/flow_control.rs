//! The runner's flow-control layers, run through whole pipelines: retries
//! and their backoff schedule, timeouts (async work cancelled, synchronous
//! work abandoned), rate limits, queue orders and byte bounds, ordered
//! output, dead letters, completion hooks and per-stage accounting under
//! failure.
//!
//! Every schedule runs on tokio's paused clock (`start_paused`), where the
//! runner's sleeps, timeouts and rate limiter advance virtual time exactly:
//! the tests assert the schedule to the millisecond and never depend on how
//! fast the machine is. Four tests run in real time and assert no duration:
//! the two of abandoned synchronous work (a blocked thread stops a paused
//! clock) check what was handled while the work was still blocked; one
//! checks the order of batched synchronous work; one that a queue held
//! back by its byte bound was full for some of the (wall-clock) run.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::{
    Tag, all_attempt_times, attempt_times, attempts, cancelled, early, gate, hooks, interrupt,
    range, records, release, run_pipeline, stage, tags,
};
use flow_core::Outcome;
use flow_runner::{Report, Status};
use serde_json::json;
use tokio::time::Instant;

/// A YAML flow map `{k: v, ...}` of item indices, for `t_pass` options.
fn map<V: std::fmt::Display>(pairs: impl IntoIterator<Item = (i64, V)>) -> String {
    let body: Vec<String> = pairs
        .into_iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    format!("{{{}}}", body.join(", "))
}

/// The indices of the values a sink consumed, in the order it consumed them.
fn order(id: &str, sink: &str) -> Vec<i64> {
    records(id, sink)
        .iter()
        .map(|v| v["i"].as_i64().expect("a test item has an index"))
        .collect()
}

/// Gaps between consecutive times.
fn gaps(times: &[u128]) -> Vec<u128> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Each hook fired exactly once; the outcome of each.
fn fired_once(id: &str) -> HashMap<Tag, Outcome> {
    let hooks = hooks(id);
    for (tag, outcomes) in &hooks {
        assert_eq!(outcomes.len(), 1, "hook of {tag:?} fired {outcomes:?}");
    }
    hooks.into_iter().map(|(tag, o)| (tag, o[0])).collect()
}

/// Every stage that emits one item or none per input took in what it
/// passed on, filtered, dropped or dead-lettered; `filtered` gives the
/// stages expected to filter (all others filter nothing), `many` the
/// stages that emit several items per input. Failed items are counted as
/// errors.
fn assert_accounted(report: &Report, filtered: &[(&str, u64)], many: &[&str]) {
    for s in &report.stages {
        if s.kind == "source" || many.contains(&s.name.as_str()) {
            continue;
        }
        let expected = filtered
            .iter()
            .find(|(n, _)| *n == s.name)
            .map_or(0, |(_, f)| *f);
        assert_eq!(
            s.items_in,
            s.items_out + expected + s.dropped + s.dead_lettered,
            "stage {}: in {} != out {} + filtered {expected} + dropped {} + dead-lettered {}",
            s.name,
            s.items_in,
            s.items_out,
            s.dropped,
            s.dead_lettered
        );
        assert_eq!(
            s.errors,
            s.dropped + s.dead_lettered,
            "stage {}: errors",
            s.name
        );
    }
}

/// Opens the test's gate however the test ends, so that a failing test
/// does not leave threads blocked until the gate gives up.
struct OpenOnDrop(&'static str);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        release(self.0);
    }
}

/// Runs `src` (`count` items) → `stage` (a `t_pass` with the given
/// runner keys and options) → `out`, and returns the report with the
/// run's start on tokio's clock.
async fn run_one_stage(id: &str, count: i64, keys: &str, with: &str) -> (Report, Instant) {
    let yaml = format!(
        r#"
stages:
  - name: src
    type: t_source
    with: {{ id: $ID, count: {count} }}
  - name: stage
    type: t_pass
    {keys}
    with: {{ id: $ID, {with} }}
  - name: out
    type: t_sink
    with: {{ id: $ID }}
"#
    );
    let t0 = Instant::now();
    (run_pipeline(id, &yaml).await, t0)
}

// ---- retries ----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn retries_back_off_doubling_from_backoff_up_to_max_backoff() {
    for worker in ["transform", "processor"] {
        let id = format!("fc-backoff-{worker}");
        let (report, t0) = run_one_stage(
            &id,
            1,
            "retry: { attempts: 5, backoff: 100ms, max_backoff: 300ms }",
            &format!("worker: {worker}, fail_first: {{0: 100}}"),
        )
        .await;
        assert_eq!(report.status, Status::Partial, "{report:?}");
        // Waits of 100, 200, then 400 capped at 300, and 300 again.
        assert_eq!(
            attempt_times(&id, "stage", 0, t0),
            [0, 100, 300, 600, 900],
            "{worker}"
        );
        let s = stage(&report, "stage");
        assert_eq!(
            (s.retries, s.errors, s.dropped, s.items_out),
            (4, 1, 1, 0),
            "{worker}"
        );
        assert_eq!(
            report.errors[0].message, "item 0 attempt 5 fails",
            "{worker}"
        );
        assert_eq!(report.exit_code(), 3);
    }
}

#[tokio::test(start_paused = true)]
async fn an_item_that_succeeds_on_its_third_attempt_reaches_the_sink_with_two_retries() {
    let id = "fc-third-attempt";
    let (report, t0) = run_one_stage(
        id,
        3,
        "retry: { attempts: 3, backoff: 10ms }",
        "worker: processor, fail_first: {1: 2}",
    )
    .await;
    assert_eq!(report.status, Status::Ok, "{report:?}");
    assert_eq!(report.exit_code(), 0);
    assert_eq!(tags(id, "out"), range("src", 3));
    assert_eq!(attempt_times(id, "stage", 1, t0), [0, 10, 30]);
    let s = stage(&report, "stage");
    assert_eq!((s.retries, s.errors, s.dropped, s.items_out), (2, 0, 0, 3));
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_are_attempted_once_however_many_attempts_are_allowed() {
    let id = "fc-permanent";
    let (report, _) = run_one_stage(
        id,
        10,
        "retry: { attempts: 5, backoff: 10ms }",
        "worker: processor, fail_mod: 3",
    )
    .await;
    assert_eq!(report.status, Status::Partial, "{report:?}");
    let tried: Vec<(i64, u32)> = attempts(id, "stage").iter().map(|a| (a.i, a.n)).collect();
    assert_eq!(tried, (0..10).map(|i| (i, 1)).collect::<Vec<_>>());
    let s = stage(&report, "stage");
    assert_eq!((s.retries, s.errors, s.dropped), (0, 4, 4));
    assert_eq!(order(id, "out"), [1, 2, 4, 5, 7, 8]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_replaces_the_backoff_and_is_capped_by_max_backoff() {
    let cases = [
        // (retry keys, retry_after, expected waits)
        ("retry: { attempts: 3, backoff: 100ms }", 250, [250, 250]),
        (
            "retry: { attempts: 3, backoff: 100ms, max_backoff: 1s }",
            5000,
            [1000, 1000],
        ),
        // A retry_after shorter than the backoff still replaces it.
        ("retry: { attempts: 3, backoff: 2s }", 30, [30, 30]),
    ];
    for (k, (keys, after, waits)) in cases.into_iter().enumerate() {
        let id = format!("fc-retry-after-{k}");
        let with = format!("worker: processor, fail_first: {{0: 100}}, retry_after_ms: {after}");
        let (report, t0) = run_one_stage(&id, 1, keys, &with).await;
        assert_eq!(stage(&report, "stage").retries, 2, "{keys}");
        assert_eq!(
            gaps(&attempt_times(&id, "stage", 0, t0)),
            waits,
            "{keys}, retry_after {after}ms"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn jitter_keeps_every_wait_between_half_and_all_of_the_backoff_at_the_cap_too() {
    let id = "fc-jitter";
    let (report, t0) = run_one_stage(
        id,
        20,
        "workers: 4\n    retry: { attempts: 4, backoff: 100ms, max_backoff: 200ms, jitter: true }",
        &format!(
            "worker: processor, fail_first: {}",
            map((0..20).map(|i| (i, 3)))
        ),
    )
    .await;
    assert_eq!(tags(id, "out"), range("src", 20), "{report:?}");
    assert_eq!(stage(&report, "stage").retries, 60);
    // Unjittered: 100, 200, then 400 capped at 200.
    let full = [100, 200, 200];
    let mut below_full = [0; 3];
    for i in 0..20 {
        let waits = gaps(&attempt_times(id, "stage", i, t0));
        assert_eq!(waits.len(), 3, "item {i}");
        for (k, wait) in waits.iter().enumerate() {
            // Timers tick in whole milliseconds: a drawn wait may end up
            // to 1 ms later.
            let full = full[k];
            assert!(
                (full / 2..=full + 1).contains(wait),
                "item {i}: waited {wait} ms of {full}: {waits:?}"
            );
            below_full[k] += usize::from(*wait < full);
        }
    }
    // Twenty draws at each step, each below the full wait with probability
    // about 0.99: every step is jittered, the capped one included.
    assert!(
        below_full.iter().all(|&n| n > 0),
        "waits below the full backoff, by step: {below_full:?}"
    );
}

// ---- timeouts ---------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn an_async_attempt_past_its_timeout_fails_as_timed_out_and_its_future_is_dropped() {
    let id = "fc-timeout-async";
    let report = run_pipeline(
        id,
        r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 2 }
  - name: slow
    type: t_pass
    timeout: 50ms
    retry: { attempts: 3, backoff: 100ms }
    on_error: dlq
    with: { id: $ID, worker: processor, sleep_ms: {0: 1000, 1: 40} }
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
    // Tries at 0, 50 + 100, 200 + 200; each cancelled at its timeout.
    let t0 = attempts(id, "slow")[0].at;
    assert_eq!(attempt_times(id, "slow", 0, t0), [0, 150, 400]);
    assert_eq!(cancelled(id, "slow"), [(0, 1), (0, 2), (0, 3)]);
    assert_eq!(
        records(id, "dlq"),
        [json!({"item": {"src": "src", "i": 0},
                "error": {"stage": "slow", "message": "timed out after 50ms", "attempts": 3}})]
    );
    // An attempt within its timeout is not touched.
    assert_eq!(order(id, "out"), [1]);
    let s = stage(&report, "slow");
    assert_eq!((s.retries, s.errors, s.dead_lettered), (2, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_attempt_is_retried_and_the_retry_may_succeed() {
    let id = "fc-timeout-retried";
    let (report, t0) = run_one_stage(
        id,
        3,
        "timeout: 2s\n    retry: { attempts: 2, backoff: 500ms }",
        "worker: processor, sleep_ms: {1: 60000}, sleep_first: {1: 1}",
    )
    .await;
    assert_eq!(report.status, Status::Ok, "{report:?}");
    assert_eq!(report.exit_code(), 0);
    assert_eq!(tags(id, "out"), range("src", 3));
    assert_eq!(attempt_times(id, "stage", 1, t0), [0, 2500]);
    assert_eq!(cancelled(id, "stage"), [(1, 1)]);
    let s = stage(&report, "stage");
    assert_eq!((s.retries, s.errors, s.dropped), (1, 0, 0));
}

/// Real time: a blocked thread stops tokio's paused clock. The gate holds
/// item 0's attempts until the test opens it, so the assertions are about
/// what happened while they were still blocked.
#[tokio::test]
async fn a_blocked_synchronous_transform_is_abandoned_and_its_worker_goes_on() {
    let id = "fc-timeout-sync-abandoned";
    let _open = OpenOnDrop(id);
    let report = run_pipeline(
        id,
        r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 20, hook: true }
  - name: blocking
    type: t_pass
    timeout: 1s
    retry: { attempts: 2, backoff: 10ms }
    on_error: dlq
    with: { id: $ID, worker: transform, block: [0] }
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
    // The run ended with both attempts at item 0 still blocked: they were
    // abandoned, not waited for.
    let g = gate(id);
    assert_eq!((g.entered, g.left), (2, 0), "{g:?}");
    assert_eq!(report.status, Status::Partial, "{report:?}");
    // The one worker went on with the other items meanwhile, on a fresh
    // instance after each abandoned attempt.
    assert_eq!(tags(id, "out"), range("src", 20)[1..].to_vec());
    assert_eq!(
        records(id, "dlq"),
        [json!({"item": {"src": "src", "i": 0},
                "error": {"stage": "blocking", "message": "timed out after 1s", "attempts": 2}})]
    );
    let tried = attempts(id, "blocking");
    assert!(tried.iter().all(|a| a.worker == 0));
    let on_item_0: Vec<u64> = tried
        .iter()
        .filter(|a| a.i == 0)
        .map(|a| a.instance)
        .collect();
    assert_eq!(on_item_0.len(), 2);
    assert_ne!(
        on_item_0[0], on_item_0[1],
        "the retry ran on a fresh instance"
    );
    let later: BTreeSet<u64> = tried
        .iter()
        .filter(|a| a.i > 0)
        .map(|a| a.instance)
        .collect();
    assert!(later.iter().all(|i| !on_item_0.contains(i)), "{tried:?}");

    // The abandoned attempts hold item 0 until their threads end; then its
    // hook reports it failed.
    let item_0 = ("src".to_string(), 0);
    assert_eq!(hooks(id)[&item_0], []);
    release(id);
    let guard = std::time::Instant::now();
    while hooks(id)[&item_0].is_empty() {
        assert!(
            guard.elapsed() < Duration::from_secs(30),
            "the blocked attempts never ended"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(gate(id).gave_up, 0);
    let outcomes = fired_once(id);
    assert_eq!(outcomes.len(), 20);
    for (tag, outcome) in outcomes {
        let expected = if tag.1 == 0 {
            Outcome::DeadLettered
        } else {
            Outcome::Delivered
        };
        assert_eq!(outcome, expected, "{tag:?}");
    }
    assert_eq!(early(id), Vec::<String>::new());
}

/// Real time, on a single-threaded runtime: were the blocked transform run
/// on the runtime's thread, nothing else could move until its gate gave up.
#[tokio::test]
async fn a_synchronous_transform_under_a_timeout_blocks_no_other_worker() {
    let id = "fc-timeout-sync-other-workers";
    let _open = OpenOnDrop(id);
    let run = run_pipeline(
        id,
        r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 20 }
  - name: blocking
    type: t_pass
    workers: 2
    timeout: 1h
    with: { id: $ID, worker: transform, block: [0] }
  - name: out
    type: t_sink
    with: { id: $ID }
"#,
    );
    let watch = async {
        let guard = std::time::Instant::now();
        while records(id, "out").len() < 19 {
            assert!(
                guard.elapsed() < Duration::from_secs(30),
                "the other items were not handled"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Items 1..20 went through while item 0 was blocked.
        assert_eq!(tags(id, "out"), range("src", 20)[1..]);
        assert_eq!(gate(id).left, 0, "{:?}", gate(id));
        release(id);
    };
    let (report, ()) = tokio::join!(run, watch);
    assert_eq!(report.status, Status::Ok, "{report:?}");
    assert_eq!(gate(id).gave_up, 0);
    assert_eq!(tags(id, "out"), range("src", 20));
}

// ---- rate limits --------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_rate_of_four_per_second_spaces_attempts_250ms_apart_and_reports_the_wait() {
    let id = "fc-rate";
    let (report, t0) = run_one_stage(id, 5, "rate: 4/s", "worker: processor").await;
    assert_eq!(tags(id, "out"), range("src", 5), "{report:?}");
    assert_eq!(all_attempt_times(id, "stage", t0), [0, 250, 500, 750, 1000]);
    // Four waits of 250 ms.
    assert_eq!(stage(&report, "stage").wait_s.rate_limit, 1.0);
    assert_eq!(stage(&report, "out").wait_s.rate_limit, 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_rate_limits_a_synchronous_transform_too() {
    let id = "fc-rate-transform";
    let (report, t0) =
        run_one_stage(id, 3, "rate: 10/s\n    workers: 2", "worker: transform").await;
    assert_eq!(tags(id, "out"), range("src", 3), "{report:?}");
    assert_eq!(all_attempt_times(id, "stage", t0), [0, 100, 200]);
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_three_lets_the_first_three_through_at_once() {
    let id = "fc-burst";
    let (report, t0) = run_one_stage(id, 5, "rate: 4/s\n    burst: 3", "worker: processor").await;
    assert_eq!(tags(id, "out"), range("src", 5), "{report:?}");
    assert_eq!(all_attempt_times(id, "stage", t0), [0, 0, 0, 250, 500]);
}

#[tokio::test(start_paused = true)]
async fn retries_take_rate_limit_tokens_too() {
    let id = "fc-rate-retries";
    let (report, t0) = run_one_stage(
        id,
        3,
        "rate: 4/s\n    retry: { attempts: 2, backoff: 10ms }",
        "worker: processor, fail_first: {0: 1}",
    )
    .await;
    assert_eq!(tags(id, "out"), range("src", 3), "{report:?}");
    let tried: Vec<(i64, u32, u128)> = attempts(id, "stage")
        .iter()
        .map(|a| (a.i, a.n, (a.at - t0).as_millis()))
        .collect();
    // The retry of item 0 waits for the second token, not just its 10 ms.
    assert_eq!(tried, [(0, 1, 0), (0, 2, 250), (1, 1, 500), (2, 1, 750)]);
}

#[tokio::test(start_paused = true)]
async fn a_named_limit_is_one_bucket_shared_by_every_stage_that_names_it() {
    let id = "fc-named-limit";
    let t0 = Instant::now();
    let report = run_pipeline(
        id,
        r#"
limits:
  shared: 4/s
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 4 }
  - name: a
    type: t_pass
    inputs: [src]
    rate: shared
    with: { id: $ID, worker: processor }
  - name: b
    type: t_pass
    inputs: [src]
    rate: shared
    with: { id: $ID, worker: processor }
  - name: out
    type: t_sink
    inputs: [a, b]
    with: { id: $ID }
"#,
    )
    .await;
    assert_eq!(tags(id, "out").len(), 8, "{report:?}");
    // Eight attempts between the two stages, one token every 250 ms.
    let mut times = all_attempt_times(id, "a", t0);
    times.extend(all_attempt_times(id, "b", t0));
    times.sort();
    assert_eq!(times, [0, 250, 500, 750, 1000, 1250, 1500, 1750]);
}

#[tokio::test(start_paused = true)]
async fn inline_rates_give_each_stage_its_own_bucket() {
    let id = "fc-inline-rates";
    let t0 = Instant::now();
    let report = run_pipeline(
        id,
        r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 4 }
  - name: a
    type: t_pass
    inputs: [src]
    rate: 4/s
    with: { id: $ID, worker: processor }
  - name: b
    type: t_pass
    inputs: [src]
    rate: 4/s
    with: { id: $ID, worker: processor }
  - name: out
    type: t_sink
    inputs: [a, b]
    with: { id: $ID }
"#,
    )
    .await;
    assert_eq!(tags(id, "out").len(), 8, "{report:?}");
    assert_eq!(all_attempt_times(id, "a", t0), [0, 250, 500, 750]);
    assert_eq!(all_attempt_times(id, "b", t0), [0, 250, 500, 750]);
}

#[tokio::test(start_paused = true)]
async fn rate_key_gives_each_key_its_own_bucket() {
    let id = "fc-rate-key";
    let (report, t0) = run_one_stage(
        id,
        6,
        "rate: 1/s\n    rate_key: '.i % 2'",
        "worker: processor",
    )
    .await;
    assert_eq!(tags(id, "out"), range("src", 6), "{report:?}");
    // Keys 0 1 0 1 0 1: each key's bucket gives one token a second.
    assert_eq!(
        all_attempt_times(id, "stage", t0),
        [0, 0, 1000, 1000, 2000, 2000]
    );
}

#[tokio::test(start_paused = true)]
async fn a_rate_on_a_source_paces_its_items() {
    let id = "fc-source-rate";
    let t0 = Instant::now();
    let report = run_pipeline(
        id,
        r#"
stages:
  - name: src
    type: t_source
    rate: 4/s
    with: { id: $ID, count: 5 }
  - name: seen
    type: t_pass
    with: { id: $ID, worker: processor }
  - name: out
    type: t_sink
    with: { id: $ID }
"#,
    )
    .await;
    assert_eq!(order(id, "out"), [0, 1, 2, 3, 4], "{report:?}");
    assert_eq!(all_attempt_times(id, "seen", t0), [0, 250, 500, 750, 1000]);
    assert_eq!(stage(&report, "src").wait_s.rate_limit, 1.0);
    assert_eq!(stage(&report, "src").items_out, 5);
}

#[tokio::test(start_paused = true)]
async fn an_interrupt_stops_a_paced_source_and_drains_what_it_emitted() {
    let id = "fc-source-rate-interrupt";
    let run = run_pipeline(
        id,
        r#"
stages:
  - name: src
    type: t_source
    rate: 4/s
    with: { id: $ID, count: 20, hook: true }
  - name: slow
    type: t_pass
    rate: 2/s
    retry: { attempts: 2, backoff: 10ms }
    with: { id: $ID, worker: processor, fail_first: {3: 1} }
  - name: out
    type: t_sink
    with: { id: $ID }
"#,
    );
    let t0 = Instant::now();
    let ctrl_c = async {
        // Items 0..5 have gone by 1000 ms; item 5's token is due at 1250.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        interrupt(id);
    };
    let (report, ()) = tokio::join!(run, ctrl_c);
    assert_eq!(report.status, Status::Interrupted, "{report:?}");
    assert_eq!(report.exit_code(), 130);
    // What the source emitted drained through the slower stage after the
    // interrupt, at its rate and with a retry of item 3; the items still
    // waiting for a token were never emitted.
    assert_eq!(stage(&report, "src").items_out, 5);
    assert_eq!(order(id, "out"), [0, 1, 2, 3, 4]);
    assert_eq!(
        all_attempt_times(id, "slow", t0),
        [0, 500, 1000, 1500, 2000, 2500]
    );
    assert_eq!(stage(&report, "slow").retries, 1);
    assert_accounted(&report, &[], &[]);
    let outcomes = fired_once(id);
    assert_eq!(outcomes.len(), 20);
    for ((_, i), outcome) in outcomes {
        let expected = if i < 5 {
            Outcome::Delivered
        } else {
            Outcome::Abandoned
        };
        assert_eq!(outcome, expected, "item {i}");
    }
}

// ---- queue orders and bounds ----------------------------------------------------

/// `src` emits `count` items in one batch into a slow single-worker stage
/// with the given queue keys; returns the order the stage handled them in.
async fn handled_order(id: &str, count: i64, keys: &str) -> Vec<i64> {
    let (report, _) = run_one_stage(id, count, keys, "worker: processor, sleep_all_ms: 10").await;
    assert_eq!(report.status, Status::Ok, "{report:?}");
    assert_eq!(tags(id, "out"), range("src", count));
    order(id, "out")
}

#[tokio::test(start_paused = true)]
async fn a_lifo_queue_hands_a_slow_worker_the_newest_item_first() {
    let got = handled_order("fc-lifo", 10, "order: lifo").await;
    assert_eq!(got, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
}

#[tokio::test(start_paused = true)]
async fn a_priority_queue_hands_out_the_lowest_priority_first_and_fifo_among_equals() {
    let got = handled_order("fc-priority", 10, "order: priority\n    priority: '.i % 3'").await;
    assert_eq!(got, [0, 3, 6, 9, 1, 4, 7, 2, 5, 8]);
}

#[tokio::test(start_paused = true)]
async fn a_fifo_queue_keeps_arrival_order() {
    let got = handled_order("fc-fifo", 10, "order: fifo").await;
    assert_eq!(got, (0..10).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn queue_bytes_bounds_a_queue_of_large_binary_items() {
    let id = "fc-queue-bytes";
    // Each item carries 4000 bytes: two fit in 10 KB, a third does not,
    // though the queue would take 64 items.
    let report = run_pipeline(
        id,
        r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 20, payload: 4000 }
  - name: slow
    type: t_pass
    queue_bytes: 10KB
    with: { id: $ID, worker: processor, sleep_all_ms: 10 }
  - name: out
    type: t_sink
    with: { id: $ID }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Ok, "{report:?}");
    assert_eq!(tags(id, "out"), range("src", 20));
    assert_eq!(
        records(id, "out")[0]["data"].as_str().map(str::len),
        Some(4000)
    );
    let q = stage(&report, "slow")
        .queue
        .expect("a processor has a queue");
    assert_eq!((q.capacity, q.peak), (64, 2), "{q:?}");
    // Without the byte bound the whole batch waits in the queue.
    let (report, _) = run_one_stage(
        "fc-queue-bytes-unbounded",
        20,
        "",
        "worker: processor, sleep_all_ms: 10",
    )
    .await;
    assert_eq!(stage(&report, "stage").queue.unwrap().peak, 20);
}

/// Real time: the share of time full is measured on the wall clock. The
/// source is held back by bytes for most of the run, never by count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_held_back_by_queue_bytes_counts_as_full_in_the_stats() {
    let id = "fc-queue-bytes-full";
    let report = run_pipeline(
        id,
        r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 8, payload: 4000 }
  - name: slow
    type: t_pass
    queue_bytes: 10KB
    with: { id: $ID, worker: processor, sleep_all_ms: 20 }
  - name: out
    type: t_sink
    with: { id: $ID }
"#,
    )
    .await;
    assert_eq!(tags(id, "out"), range("src", 8), "{report:?}");
    let q = stage(&report, "slow").queue.unwrap();
    assert_eq!(q.peak, 2);
    assert!(q.full_pct > 0.0, "{q:?}");
    assert!(stage(&report, "src").wait_s.backpressure > 0.0);
}

// ---- ordered output -------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn an_ordered_stage_emits_in_input_order_with_several_workers() {
    let id = "fc-ordered";
    // Later items are quicker, so without `ordered` they would overtake.
    let sleeps = map((0..40).map(|i| (i, 10 + (40 - i) * 7 % 50)));
    let (report, _) = run_one_stage(
        id,
        40,
        "workers: 4\n    ordered: true",
        &format!("worker: processor, sleep_ms: {sleeps}"),
    )
    .await;
    assert_eq!(report.status, Status::Ok, "{report:?}");
    assert_eq!(order(id, "out"), (0..40).collect::<Vec<_>>());
    let workers: BTreeSet<usize> = attempts(id, "stage").iter().map(|a| a.worker).collect();
    assert_eq!(workers.len(), 4, "the items were spread over the workers");
}

#[tokio::test(start_paused = true)]
async fn an_ordered_stage_keeps_input_order_through_retries_and_failures() {
    let id = "fc-ordered-retries";
    let fail_first = map((0..30)
        .filter(|i| i % 4 == 1)
        .map(|i| (i, if i % 8 == 1 { 2 } else { 9 })));
    let sleeps = map((0..30).map(|i| (i, (30 - i) * 3)));
    let (report, _) = run_one_stage(
        id,
        30,
        "workers: 3\n    ordered: true\n    retry: { attempts: 3, backoff: 20ms }",
        &format!("worker: processor, fail_first: {fail_first}, sleep_ms: {sleeps}"),
    )
    .await;
    assert_eq!(report.status, Status::Partial, "{report:?}");
    // Items 1, 9, 17, 25 succeed on their third attempt; 5, 13, 21, 29
    // never do and are dropped.
    let expected: Vec<i64> = (0..30).filter(|i| i % 8 != 5).collect();
    assert_eq!(order(id, "out"), expected);
    assert_eq!(stage(&report, "stage").dropped, 4);
}

/// Real time on two threads, with synchronous transforms that take whole
/// batches: the order holds whatever the timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_transform_stage_emits_batches_in_input_order() {
    let id = "fc-ordered-transform";
    let sleeps = map((0..200).filter(|i| i % 17 == 0).map(|i| (i, 3)));
    let report = run_pipeline(
        id,
        &format!(
            r#"
stages:
  - name: src
    type: t_source
    with: {{ id: $ID, count: 2000, batch: 37 }}
  - name: stage
    type: t_pass
    workers: 4
    queue: 8
    ordered: true
    with: {{ id: $ID, worker: transform, filter_mod: 9, sleep_ms: {sleeps} }}
  - name: out
    type: t_sink
    with: {{ id: $ID }}
"#
        ),
    )
    .await;
    assert_eq!(report.status, Status::Ok, "{report:?}");
    let expected: Vec<i64> = (0..2000).filter(|i| i % 9 != 0).collect();
    assert_eq!(order(id, "out"), expected);
}

/// A worker of an ordered stage that stops the run leaves its ticket
/// incomplete: the other workers must not wait for it (with a small queue
/// they filled the reorder buffer), and outputs held behind it never
/// reached a sink, so their hooks report failure.
#[tokio::test(start_paused = true)]
async fn an_ordered_stage_that_stops_the_run_neither_hangs_nor_reports_held_items_done() {
    for queue in [4, 64] {
        let id = format!("fc-ordered-fail-{queue}");
        let yaml = format!(
            r#"
stages:
  - name: src
    type: t_source
    with: {{ id: $ID, count: 40, hook: true }}
  - name: stage
    type: t_fail
    workers: 2
    queue: {queue}
    ordered: true
    on_error: fail
    with: {{ id: $ID, worker: processor, sleep_ms: {{0: 100}}, fail_mod: 1000 }}
  - name: out
    type: t_sink
    with: {{ id: $ID }}
"#
        );
        let report = run_pipeline(&id, &yaml).await;
        assert_eq!(report.status, Status::Failed, "queue {queue}: {report:?}");
        // Item 0 came first and failed: nothing may leave after it.
        assert_eq!(
            records(&id, "out"),
            Vec::<serde_json::Value>::new(),
            "queue {queue}"
        );
        assert_eq!(early(&id), Vec::<String>::new());
        let outcomes = fired_once(&id);
        assert_eq!(outcomes.len(), 40);
        let done: Vec<&Tag> = outcomes
            .iter()
            .filter(|(_, o)| **o == Outcome::Delivered)
            .map(|(t, _)| t)
            .collect();
        assert!(
            done.is_empty(),
            "queue {queue}: reported done, never consumed: {done:?}"
        );
    }
}

// ---- dead letters -----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_dead_letter_carries_the_item_and_its_error_with_the_real_number_of_attempts() {
    let id = "fc-dead-letters";
    let report = run_pipeline(
        id,
        r#"
stages:
  - name: src
    type: t_source
    with: { id: $ID, count: 6 }
  - name: flaky
    type: t_pass
    timeout: 50ms
    retry: { attempts: 3, backoff: 10ms }
    on_error: dlq
    with:
      id: $ID
      worker: processor
      fail_first: {0: 10, 4: 1}
      fail_mod: 100
      fail_rem: 1
      sleep_ms: {2: 1000}
      panic_at: 3
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
    assert_eq!(order(id, "out"), [4, 5]);
    let mut letters = records(id, "dlq");
    letters.sort_by_key(|l| l["item"]["i"].as_i64());
    let letter = |i: i64, message: &str, attempts: u32| {
        json!({"item": {"src": "src", "i": i},
               "error": {"stage": "flaky", "message": message, "attempts": attempts}})
    };
    assert_eq!(letters.len(), 4, "{letters:?}");
    // Retryable until the attempts ran out; permanent at once; timed out
    // each time.
    assert_eq!(letters[0], letter(0, "item 0 attempt 3 fails", 3));
    assert_eq!(letters[1], letter(1, "item 1 fails", 1));
    assert_eq!(letters[2], letter(2, "timed out after 50ms", 3));
    // A panic fails its item for good (no retry).
    let panicked = letters[3]["error"]["message"].as_str().unwrap();
    assert!(
        panicked.starts_with("panicked: t_pass flaky: panic on item 3"),
        "{panicked}"
    );
    assert_eq!(letters[3]["error"]["attempts"], 1);
    assert_eq!(letters[3]["item"], json!({"src": "src", "i": 3}));
    let s = stage(&report, "flaky");
    assert_eq!(
        (s.errors, s.dead_lettered, s.dropped, s.retries),
        (4, 4, 0, 2 + 2 + 1)
    );
    assert_eq!(stage(&report, "dlq").items_in, 4);
}

#[tokio::test(start_paused = true)]
async fn a_panic_fails_only_its_item_and_a_fresh_worker_takes_the_next() {
    let id = "fc-panic";
    let (report, _) = run_one_stage(
        id,
        6,
        "retry: { attempts: 3, backoff: 10ms }",
        "worker: processor, panic_at: 2",
    )
    .await;
    assert_eq!(report.status, Status::Partial, "{report:?}");
    assert_eq!(order(id, "out"), [0, 1, 3, 4, 5]);
    let tried = attempts(id, "stage");
    assert_eq!(
        tried.iter().filter(|a| a.i == 2).count(),
        1,
        "a panic is not retried"
    );
    let before = tried.iter().find(|a| a.i == 2).unwrap().instance;
    let after = tried.iter().find(|a| a.i == 3).unwrap().instance;
    assert_ne!(before, after, "the worker that panicked was replaced");
    let s = stage(&report, "stage");
    assert_eq!((s.errors, s.dropped, s.retries), (1, 1, 0));
    assert!(
        report.errors[0].message.starts_with("panicked: "),
        "{:?}",
        report.errors
    );
}

// ---- completion hooks and accounting under failure ---------------------------------

#[tokio::test(start_paused = true)]
async fn completion_hooks_fire_once_under_retries_drops_dead_letters_and_timeouts() {
    let id = "fc-completion";
    let n = 120;
    // In `flaky` (3 attempts, 50 ms timeout), by i % 6: 0 succeeds on its
    // third attempt; 1 fails every attempt (dead letter); 2 times out once,
    // then succeeds; 3 times out every attempt (dead letter); 4 fails
    // permanently (dead letter); 5 passes. `copy` makes two of each; in
    // `drop`, both copies of i % 10 == 5 fail twice (dropped), and of
    // i % 10 == 8 once (retried).
    let fail_first = map((0..n).filter_map(|i| match i % 6 {
        0 => Some((i, 2)),
        1 => Some((i, 9)),
        _ => None,
    }));
    let sleeps = map((0..n)
        .filter(|i| i % 6 == 2 || i % 6 == 3)
        .map(|i| (i, 1000)));
    let sleep_first = map((0..n).filter(|i| i % 6 == 2).map(|i| (i, 1)));
    let drop_first = map((0..n).filter_map(|i| match i % 10 {
        5 => Some((i, 2)),
        8 => Some((i, 1)),
        _ => None,
    }));
    let yaml = format!(
        r#"
stages:
  - name: src
    type: t_source
    with: {{ id: $ID, count: {n}, hook: true, batch: 7 }}
  - name: flaky
    type: t_pass
    workers: 3
    queue: 4
    timeout: 50ms
    retry: {{ attempts: 3, backoff: 10ms }}
    on_error: dlq
    with:
      worker: processor
      fail_first: {fail_first}
      sleep_ms: {sleeps}
      sleep_first: {sleep_first}
      fail_mod: 6
      fail_rem: 4
  - name: copy
    type: t_pass
    with: {{ copies: 2 }}
  - name: drop
    type: t_pass
    workers: 2
    retry: {{ attempts: 2, backoff: 5ms }}
    with: {{ worker: processor, fail_first: {drop_first} }}
  - name: out
    type: t_sink
    workers: 2
    with: {{ id: $ID }}
  - name: dlq
    type: t_sink
    inputs: []
    with: {{ id: $ID }}
"#
    );
    let report = run_pipeline(id, &yaml).await;
    assert_eq!(report.status, Status::Partial, "{report:?}");
    let dead_lettered = |i: i64| matches!(i % 6, 1 | 3 | 4);
    let dropped = |i: i64| !dead_lettered(i) && i % 10 == 5;
    let kept: Vec<Tag> = range("src", n)
        .into_iter()
        .filter(|(_, i)| !dead_lettered(*i) && !dropped(*i))
        .flat_map(|t| [t.clone(), t])
        .collect();
    assert_eq!(tags(id, "out"), kept);
    let letters: Vec<Tag> = range("src", n)
        .into_iter()
        .filter(|(_, i)| dead_lettered(*i))
        .collect();
    let mut got: Vec<Tag> = records(id, "dlq")
        .iter()
        .map(|l| common::tag_of_json(&l["item"]))
        .collect();
    got.sort();
    assert_eq!(got, letters);

    // No item reached a sink after its source item's hook had fired.
    assert_eq!(early(id), Vec::<String>::new());
    let outcomes = fired_once(id);
    assert_eq!(outcomes.len(), n as usize);
    for i in 0..n {
        let expected = if dead_lettered(i) {
            Outcome::DeadLettered
        } else if dropped(i) {
            Outcome::Dropped
        } else {
            Outcome::Delivered
        };
        assert_eq!(outcomes[&("src".to_string(), i)], expected, "item {i}");
    }
    let (flaky, drop) = (stage(&report, "flaky"), stage(&report, "drop"));
    // Retries in flaky: 2 for each i % 6 in 0, 1, 3 and 1 for i % 6 == 2.
    assert_eq!(flaky.retries, 20 * (2 + 2 + 2 + 1));
    assert_eq!(flaky.dead_lettered, 60);
    let to_drop = (0..n).filter(|&i| dropped(i)).count() as u64;
    let to_retry = (0..n).filter(|&i| !dead_lettered(i) && i % 10 == 8).count() as u64;
    assert_eq!(drop.dropped, 2 * to_drop);
    assert_eq!(drop.retries, 2 * (to_drop + to_retry));
    assert_accounted(&report, &[], &["copy"]);
    assert_eq!(
        stage(&report, "copy").items_out,
        2 * stage(&report, "copy").items_in
    );
}

#[tokio::test(start_paused = true)]
async fn every_stage_accounts_for_each_item_it_took_under_failure() {
    let id = "fc-accounting";
    let n = 300;
    let flaky_first = map((0..n).filter(|i| i % 7 == 0).map(|i| (i, 1 + i % 3)));
    let sleeps = map((0..n).filter(|i| i % 11 == 0).map(|i| (i, 80)));
    let yaml = format!(
        r#"
stages:
  - name: src
    type: t_source
    with: {{ id: $ID, count: {n}, batch: 13 }}
  - name: filter
    type: t_pass
    workers: 2
    with: {{ filter_mod: 5 }}
  - name: flaky
    type: t_pass
    workers: 3
    queue: 5
    retry: {{ attempts: 2, backoff: 10ms }}
    with: {{ worker: processor, fail_first: {flaky_first} }}
  - name: slow
    type: t_pass
    workers: 2
    timeout: 50ms
    on_error: dlq
    ordered: true
    with: {{ worker: processor, sleep_ms: {sleeps} }}
  - name: perm
    type: t_fail
    with: {{ fail_mod: 13 }}
  - name: out
    type: t_sink
    with: {{ id: $ID, panic_at: 298 }}
  - name: dlq
    type: t_sink
    inputs: []
    with: {{ id: $ID }}
"#
    );
    let report = run_pipeline(id, &yaml).await;
    assert_eq!(report.status, Status::Partial, "{report:?}");
    let passed = |i: &i64| i % 5 != 0;
    let flaky_ok = |i: &i64| passed(i) && !(i % 7 == 0 && 1 + i % 3 >= 2);
    let slow_ok = |i: &i64| flaky_ok(i) && i % 11 != 0;
    let perm_ok = |i: &i64| slow_ok(i) && i % 13 != 0;
    let count = |f: &dyn Fn(&i64) -> bool| (0..n).filter(|i| f(i)).count() as u64;
    assert_accounted(&report, &[("filter", n as u64 - count(&passed))], &[]);
    assert_eq!(stage(&report, "flaky").items_in, count(&passed));
    assert_eq!(stage(&report, "slow").items_in, count(&flaky_ok));
    assert_eq!(
        stage(&report, "slow").dead_lettered,
        count(&flaky_ok) - count(&slow_ok)
    );
    assert_eq!(stage(&report, "perm").items_in, count(&slow_ok));
    assert_eq!(
        stage(&report, "dlq").items_in,
        stage(&report, "slow").dead_lettered
    );
    // The sink's one panic is its only failure.
    let out = stage(&report, "out");
    assert_eq!(out.items_in, count(&perm_ok));
    assert_eq!((out.errors, out.dropped), (1, 1));
    let expected: Vec<Tag> = range("src", n)
        .into_iter()
        .filter(|(_, i)| perm_ok(i) && *i != 298)
        .collect();
    assert_eq!(tags(id, "out"), expected);
}
