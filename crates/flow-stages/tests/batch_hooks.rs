//! `batch` inside a real run: the completion hooks of batched items fire
//! only once their batch is handled, and the timeout works on tokio's clock
//! (paused here, so the times are exact).
//!
//! Two test-only stages: `t_hooked`, a source whose items carry a
//! completion hook, and `t_watch`, a sink that records what it consumed,
//! when, and whether a hook of an item in it had already fired.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use flow_core::value::{as_f64, get, int, object, to_json};
use flow_core::{
    BuildContext, ConfigError, Lineage, Next, Outcome, Output, Source, Stage, StageError,
    StageKind, StageOptions, StageType, Transform, Value, async_trait,
};
use flow_runner::{Report, RunControl, Status};
use flow_stages as _;
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::time::Instant;

/// A recorder keyed by test id, so tests running in parallel never see
/// each other's items.
type ByTest<T> = LazyLock<Mutex<HashMap<String, T>>>;

/// Per test id: the outcomes each source item's hook reported.
static HOOKS: ByTest<HashMap<i64, Vec<Outcome>>> = LazyLock::new(Default::default);
/// Per test id: what `t_watch` consumed, with the time.
static SEEN: ByTest<Vec<(Instant, String)>> = LazyLock::new(Default::default);
/// Per test id: items consumed after their hook had fired.
static EARLY: ByTest<Vec<i64>> = LazyLock::new(Default::default);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Emits `{"i": 0}`, `{"i": 1}`, … each with a completion hook.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct HookedOptions {
    /// The test's id.
    id: String,
    /// How many items.
    count: i64,
    /// Emit item `i` at `i * interval_ms` after the start; absent: all at once.
    interval_ms: Option<u64>,
    /// The first item's `i` (items are `start..start + count`).
    #[serde(default)]
    start: i64,
    /// A file the items are written to: when an item's hook reports it
    /// delivered, its line must be in the file already (else it is
    /// recorded as early).
    check_file: Option<String>,
}

struct Hooked {
    options: HookedOptions,
    next: i64,
    started: Option<Instant>,
}

#[async_trait]
impl Source for Hooked {
    async fn next(&mut self, out: &mut Output) -> Result<Next, StageError> {
        let o = &self.options;
        let started = *self.started.get_or_insert_with(Instant::now);
        if let Some(ms) = o.interval_ms {
            tokio::time::sleep_until(started + Duration::from_millis(ms * self.next as u64)).await;
        }
        let batch = if o.interval_ms.is_some() { 1 } else { o.count };
        for _ in 0..batch.min(o.count - self.next) {
            let (i, id) = (o.start + self.next, o.id.clone());
            let check_file = o.check_file.clone();
            lock(&HOOKS)
                .entry(id.clone())
                .or_default()
                .insert(i, Vec::new());
            let hook = Lineage::with_hook(move |outcome| {
                if let Some(file) = &check_file
                    && outcome == Outcome::Delivered
                {
                    let line = format!("{{\"i\":{i}}}");
                    let written = std::fs::read_to_string(file).unwrap_or_default();
                    if !written.lines().any(|l| l == line) {
                        lock(&EARLY).entry(id.clone()).or_default().push(i);
                    }
                }
                lock(&HOOKS)
                    .get_mut(&id)
                    .unwrap()
                    .get_mut(&i)
                    .unwrap()
                    .push(outcome);
            });
            out.emit_with(object([("i", int(i))]), hook);
            self.next += 1;
        }
        Ok(if self.next >= o.count {
            Next::Done
        } else {
            Next::More
        })
    }
}

impl StageOptions for HookedOptions {
    fn build(self, _ctx: &BuildContext) -> Result<Stage, ConfigError> {
        Ok(Stage::source(Hooked {
            options: self,
            next: 0,
            started: None,
        }))
    }
}

flow_core::inventory::submit! {
    StageType::new::<HookedOptions>("t_hooked", StageKind::Source,
        "Test source: items with completion hooks.",
        "- name: src\n  type: t_hooked\n  with: { id: x, count: 3 }\n")
}

/// Records each value it consumes (an item or a batch of them) and checks
/// that no hook of an item in it has fired yet.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WatchOptions {
    /// The test's id.
    id: String,
}

struct Watch(String);

impl Transform for Watch {
    fn apply(&mut self, input: &Value, _out: &mut Output) -> Result<(), StageError> {
        let items = match input {
            Value::Arr(a) => a.iter().cloned().collect(),
            other => vec![other.clone()],
        };
        for item in items {
            let i = get(&item, "i").and_then(as_f64).expect("an item has i") as i64;
            let fired = lock(&HOOKS)
                .get(&self.0)
                .and_then(|h| h.get(&i))
                .is_some_and(|o| !o.is_empty());
            if fired {
                lock(&EARLY).entry(self.0.clone()).or_default().push(i);
            }
        }
        lock(&SEEN)
            .entry(self.0.clone())
            .or_default()
            .push((Instant::now(), to_json(input)));
        Ok(())
    }
}

impl StageOptions for WatchOptions {
    fn build(self, _ctx: &BuildContext) -> Result<Stage, ConfigError> {
        Ok(Stage::transform(move || Watch(self.id.clone())))
    }
}

flow_core::inventory::submit! {
    StageType::new::<WatchOptions>("t_watch", StageKind::Sink,
        "Test sink: records what it consumed and when.",
        "- name: out\n  type: t_watch\n  with: { id: x }\n")
}

async fn run(id: &str, yaml: &str) -> Report {
    let yaml = yaml.replace("$ID", id);
    let plan = flow_runner::load_str(&yaml, Path::new("test.yaml"), |_| None)
        .unwrap_or_else(|problems| panic!("invalid test pipeline:\n{problems}\n{yaml}"));
    flow_runner::run(plan, RunControl::new()).await
}

fn seen(id: &str) -> Vec<String> {
    lock(&SEEN)
        .get(id)
        .map(|s| s.iter().map(|(_, v)| v.clone()).collect())
        .unwrap_or_default()
}

/// Each source item's outcome; panics unless every hook fired exactly once.
fn outcomes(id: &str) -> Vec<Outcome> {
    let hooks = lock(&HOOKS).get(id).cloned().unwrap_or_default();
    let mut by_item: Vec<(i64, Vec<Outcome>)> = hooks.into_iter().collect();
    by_item.sort_by_key(|(i, _)| *i);
    by_item
        .into_iter()
        .map(|(i, o)| {
            assert_eq!(o.len(), 1, "the hook of item {i} fired {o:?}");
            o[0]
        })
        .collect()
}

fn stage<'a>(report: &'a Report, name: &str) -> &'a flow_runner::stats::StageReport {
    report.stages.iter().find(|s| s.name == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_of_batched_items_fire_once_the_batch_is_consumed() {
    let id = "batch-hooks-done";
    let report = run(
        id,
        r#"
stages:
  - name: src
    type: t_hooked
    with: { id: $ID, count: 10 }
  - name: group
    type: batch
    with: { size: 4 }
  - name: out
    type: t_watch
    with: { id: $ID }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Ok, "{report:?}");
    let i = |n: &[i64]| {
        let items: Vec<String> = n.iter().map(|i| format!(r#"{{"i":{i}}}"#)).collect();
        format!("[{}]", items.join(","))
    };
    assert_eq!(seen(id), [i(&[0, 1, 2, 3]), i(&[4, 5, 6, 7]), i(&[8, 9])]);
    assert_eq!(outcomes(id), vec![Outcome::Delivered; 10]);
    assert!(
        lock(&EARLY).get(id).is_none(),
        "a hook fired before its batch was consumed"
    );
    // The last, partial batch is emitted by `finish` and counted too.
    let group = stage(&report, "group");
    assert_eq!((group.items_in, group.items_out), (10, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_fails_the_hooks_of_all_its_items() {
    let id = "batch-hooks-failed";
    let report = run(
        id,
        r#"
stages:
  - name: src
    type: t_hooked
    with: { id: $ID, count: 9 }
  - name: group
    type: batch
    with: { size: 3 }
  - name: boom
    type: map
    on_error: drop
    with: { expr: 'if any(.[]; .i == 4) then error("batch with 4") else . end' }
  - name: out
    type: t_watch
    with: { id: $ID }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Partial, "{report:?}");
    assert_eq!(stage(&report, "boom").dropped, 1);
    use Outcome::{Delivered, Dropped};
    let want = [
        Delivered, Delivered, Delivered, Dropped, Dropped, Dropped, Delivered, Delivered, Delivered,
    ];
    assert_eq!(outcomes(id), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbatched_items_keep_their_batchs_hooks_until_all_are_consumed() {
    let id = "batch-hooks-unbatch";
    let report = run(
        id,
        r#"
stages:
  - name: src
    type: t_hooked
    with: { id: $ID, count: 7 }
  - name: group
    type: batch
    with: { size: 3 }
  - name: ungroup
    type: unbatch
  - name: out
    type: t_watch
    workers: 2
    with: { id: $ID }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Ok, "{report:?}");
    let mut got = seen(id);
    got.sort();
    let want: Vec<String> = (0..7).map(|i| format!(r#"{{"i":{i}}}"#)).collect();
    assert_eq!(got, want);
    assert_eq!(outcomes(id), vec![Outcome::Delivered; 7]);
    assert!(
        lock(&EARLY).get(id).is_none(),
        "a hook fired before its items were consumed"
    );
    let ungroup = stage(&report, "ungroup");
    assert_eq!((ungroup.items_in, ungroup.items_out), (3, 7));
}

#[tokio::test(start_paused = true)]
async fn a_batch_is_emitted_when_its_oldest_item_has_waited_the_timeout() {
    let id = "batch-timeout";
    let t0 = Instant::now();
    // Items at 0, 100, …, 600 ms; a batch closes 250 ms after its first.
    let report = run(
        id,
        r#"
stages:
  - name: src
    type: t_hooked
    with: { id: $ID, count: 7, interval_ms: 100 }
  - name: group
    type: batch
    with: { size: 10, timeout: 250ms }
  - name: out
    type: t_watch
    with: { id: $ID }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Ok, "{report:?}");
    let got: Vec<(u128, String)> = lock(&SEEN)[id]
        .iter()
        .map(|(at, v)| ((*at - t0).as_millis(), v.clone()))
        .collect();
    let want = [
        // Opened by item 0 at 0 ms: closed by the timeout at 250 ms.
        (250, r#"[{"i":0},{"i":1},{"i":2}]"#.to_string()),
        // Opened by item 3 at 300 ms: closed at 550 ms.
        (550, r#"[{"i":3},{"i":4},{"i":5}]"#.to_string()),
        // Item 6 at 600 ms is the last: the input ends, the batch goes.
        (600, r#"[{"i":6}]"#.to_string()),
    ];
    assert_eq!(got, want);
    assert_eq!(outcomes(id), vec![Outcome::Delivered; 7]);
    let group = stage(&report, "group");
    assert_eq!((group.items_in, group.items_out), (7, 3));
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_goes_before_its_timeout() {
    let id = "batch-full-first";
    let t0 = Instant::now();
    let report = run(
        id,
        r#"
stages:
  - name: src
    type: t_hooked
    with: { id: $ID, count: 4, interval_ms: 100 }
  - name: group
    type: batch
    with: { size: 2, timeout: 1s }
  - name: out
    type: t_watch
    with: { id: $ID }
"#,
    )
    .await;
    assert_eq!(report.status, Status::Ok, "{report:?}");
    let times: Vec<u128> = lock(&SEEN)[id]
        .iter()
        .map(|(at, _)| (*at - t0).as_millis())
        .collect();
    assert_eq!(times, [100, 300]);
}

#[tokio::test(start_paused = true)]
async fn a_batch_of_items_from_two_sources_gives_each_the_batchs_outcome() {
    let id = "batch-hooks-two-sources";
    let report = run(
        id,
        r#"
stages:
  - name: a
    type: t_hooked
    with: { id: $ID, count: 6, interval_ms: 10 }
  - name: b
    type: t_hooked
    with: { id: $ID, count: 6, interval_ms: 10, start: 100 }
  - name: group
    type: batch
    inputs: [a, b]
    with: { size: 4 }
  - name: boom
    type: map
    on_error: drop
    with: { expr: 'if any(.[]; .i == 4) then error("batch with 4") else . end' }
  - name: out
    type: t_watch
    with: { id: $ID }
"#,
    )
    .await;
    // Both sources emit at 0, 10, 20… ms: the batches are {0, 100, 1, 101},
    // {2, 102, 3, 103} and {4, 104, 5, 105}, in some order within each.
    assert_eq!(report.status, Status::Partial, "{report:?}");
    assert_eq!(stage(&report, "boom").dropped, 1);
    assert_eq!(seen(id).len(), 2, "{:?}", seen(id));
    use Outcome::{Delivered, Dropped};
    let per_source = [Delivered, Delivered, Delivered, Delivered, Dropped, Dropped];
    let want: Vec<Outcome> = per_source.iter().chain(&per_source).copied().collect();
    assert_eq!(outcomes(id), want, "items 0..6, then 100..106");
    assert_eq!(
        lock(&EARLY).get(id).cloned().unwrap_or_default(),
        Vec::<i64>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_reports_an_item_delivered_only_once_its_line_is_in_the_file() {
    let id = "batch-hooks-write";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.jsonl");
    let report = run(
        id,
        &r#"
stages:
  - name: src
    type: t_hooked
    with: { id: $ID, count: 3000, check_file: FILE }
  - name: out
    type: write
    workers: 2
    with: { path: FILE }
"#
        .replace("FILE", &file.display().to_string()),
    )
    .await;
    assert_eq!(report.status, Status::Ok, "{report:?}");
    assert_eq!(outcomes(id), vec![Outcome::Delivered; 3000]);
    assert_eq!(
        lock(&EARLY).get(id).cloned().unwrap_or_default(),
        Vec::<i64>::new(),
        "delivered before written"
    );
}
