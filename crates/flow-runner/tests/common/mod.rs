//! Test-only stage types and the recorders they write to, shared by the
//! runner's integration tests.
//!
//! The built-in stages are not linked here, so these are the only types a
//! pipeline in these tests can name:
//!
//! * `t_source` emits `{"src": <its stage name>, "i": <index>}`, `count`
//!   of them (absent: endless), optionally each with a completion hook;
//! * `t_pass` (and its alias `t_fail`, for readability) passes items on,
//!   optionally as `copies` tagged `"c"`, filtering, failing or panicking
//!   on chosen items;
//! * `t_sink` records every value it consumes and what it had seen when
//!   `finish` ran.
//!
//! Every option set names a test `id`, and every recorder is keyed by it,
//! so tests running in parallel never see each other's items.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use flow_core::value::{as_f64, as_str, get, int, object, string, to_json};
use flow_core::{
    BATCH, BuildContext, ConfigError, Lineage, Next, Outcome, Output, Processor, Source, Stage,
    StageError, StageKind, StageOptions, StageType, Transform, Value, async_trait,
};
use flow_runner::stats::StageReport;
use flow_runner::{Report, RunControl};
use schemars::JsonSchema;
use serde::Deserialize;

/// The source item a value was made from: its source stage and index.
pub type Tag = (String, i64);

/// The outcomes each source item's hook reported (empty until it fires).
pub type Outcomes = HashMap<Tag, Vec<Outcome>>;

/// What a sink worker had seen when its `finish` ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finish {
    pub worker: usize,
    /// Items this worker consumed.
    pub by_worker: usize,
    /// Items the whole stage had consumed by then.
    pub by_stage: usize,
}

/// Values consumed by each sink, by `"<id>/<stage>"`.
static RECORDS: LazyLock<Mutex<HashMap<String, Vec<serde_json::Value>>>> =
    LazyLock::new(Default::default);
/// Sink `finish` calls, by `"<id>/<stage>"`.
static FINISHES: LazyLock<Mutex<HashMap<String, Vec<Finish>>>> = LazyLock::new(Default::default);
/// Per test id: every source item emitted with a hook, and the outcomes its
/// hook reported (empty until it fires).
static HOOKS: LazyLock<Mutex<HashMap<String, Outcomes>>> = LazyLock::new(Default::default);
/// Per test id: items a sink consumed after their source item's hook had
/// already fired.
static EARLY: LazyLock<Mutex<HashMap<String, Vec<String>>>> = LazyLock::new(Default::default);
/// Per test id: the control a source uses to interrupt its own run.
static CONTROLS: LazyLock<Mutex<HashMap<String, RunControl>>> = LazyLock::new(Default::default);

/// A test that fails may poison a recorder; the others still read it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn key(id: &str, stage: &str) -> String {
    format!("{id}/{stage}")
}

// ---- running pipelines -------------------------------------------------

/// A run that takes longer than this has hung: the guard turns a hang into
/// a test failure instead of a stuck test binary. It is no timing assertion;
/// every run here takes milliseconds.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// Loads `yaml`, with every `$ID` replaced by `id`, and runs it to the end.
/// A `t_source` with `interrupt_at` interrupts it as Ctrl-C would.
pub async fn run_pipeline(id: &str, yaml: &str) -> Report {
    let yaml = yaml.replace("$ID", id);
    let plan = flow_runner::load_str(&yaml, Path::new("test.yaml"), |_| None)
        .unwrap_or_else(|problems| panic!("the test pipeline is invalid:\n{problems}\n{yaml}"));
    let control = RunControl::new();
    lock(&CONTROLS).insert(id.to_string(), control.clone());
    match tokio::time::timeout(HANG_GUARD, flow_runner::run(plan, control)).await {
        Ok(report) => report,
        Err(_) => panic!("the run did not end: it hung\n{yaml}"),
    }
}

/// The report of the stage called `name`.
pub fn stage<'a>(report: &'a Report, name: &str) -> &'a StageReport {
    report
        .stages
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no stage {name} in {report:?}"))
}

// ---- reading the recorders ----------------------------------------------

/// Every value sink `stage` consumed, in the order it consumed them.
pub fn records(id: &str, stage: &str) -> Vec<serde_json::Value> {
    lock(&RECORDS)
        .get(&key(id, stage))
        .cloned()
        .unwrap_or_default()
}

/// The source items of the values sink `stage` consumed, sorted: a
/// multiset to compare.
pub fn tags(id: &str, stage: &str) -> Vec<Tag> {
    let mut tags: Vec<Tag> = records(id, stage).iter().map(tag_of_json).collect();
    tags.sort();
    tags
}

pub fn tag_of_json(v: &serde_json::Value) -> Tag {
    let src = v["src"]
        .as_str()
        .expect("a test item has a src")
        .to_string();
    let i = v["i"].as_i64().expect("a test item has an index");
    (src, i)
}

/// `(source, index)` for `count` items of `source`, sorted.
pub fn range(source: &str, count: i64) -> Vec<Tag> {
    (0..count).map(|i| (source.to_string(), i)).collect()
}

/// The `finish` calls of sink `stage`.
pub fn finishes(id: &str, stage: &str) -> Vec<Finish> {
    lock(&FINISHES)
        .get(&key(id, stage))
        .cloned()
        .unwrap_or_default()
}

/// Every source item emitted with a hook, and the outcomes its hook
/// reported.
pub fn hooks(id: &str) -> Outcomes {
    lock(&HOOKS).get(id).cloned().unwrap_or_default()
}

/// Items that reached a sink after their source item's hook had fired.
pub fn early(id: &str) -> Vec<String> {
    lock(&EARLY).get(id).cloned().unwrap_or_default()
}

// ---- t_source -------------------------------------------------------------

/// Emits `{"src": <stage name>, "i": <index>}`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceOptions {
    /// The test's id.
    id: String,
    /// How many items; absent: endless.
    count: Option<i64>,
    /// Attach a completion hook to every item.
    #[serde(default)]
    hook: bool,
    /// Items per `next` call.
    #[serde(default = "batch")]
    batch: usize,
    /// Interrupt the run (as Ctrl-C would) right after emitting this index.
    interrupt_at: Option<i64>,
    /// After interrupting, do not return: wait forever, so the runner
    /// drops the pending call with the items it emitted.
    #[serde(default)]
    then_hang: bool,
}

fn batch() -> usize {
    BATCH
}

struct TestSource {
    options: SourceOptions,
    name: String,
    next: i64,
}

#[async_trait]
impl Source for TestSource {
    async fn next(&mut self, out: &mut Output) -> Result<Next, StageError> {
        let o = &self.options;
        let end = o.count.unwrap_or(i64::MAX);
        let stop = end.min(self.next + o.batch as i64);
        while self.next < stop {
            let i = self.next;
            self.next += 1;
            let value = object([("src", string(&self.name)), ("i", int(i))]);
            if o.hook {
                out.emit_with(value, hook(&o.id, &self.name, i));
            } else {
                out.emit(value);
            }
            if o.interrupt_at == Some(i) {
                lock(&CONTROLS)
                    .get(&o.id)
                    .expect("run_pipeline registered the control")
                    .interrupt();
                if o.then_hang {
                    std::future::pending::<()>().await;
                }
                break;
            }
        }
        Ok(if self.next >= end {
            Next::Done
        } else {
            Next::More
        })
    }

    fn total(&self) -> Option<u64> {
        self.options.count.map(|c| c as u64)
    }
}

/// A lineage whose hook records its outcome under `(source, i)`.
fn hook(id: &str, source: &str, i: i64) -> Lineage {
    let tag: Tag = (source.to_string(), i);
    lock(&HOOKS)
        .entry(id.to_string())
        .or_default()
        .insert(tag.clone(), Vec::new());
    let id = id.to_string();
    Lineage::with_hook(move |outcome| {
        lock(&HOOKS)
            .get_mut(&id)
            .and_then(|items| items.get_mut(&tag))
            .expect("the item was registered when emitted")
            .push(outcome);
    })
}

impl StageOptions for SourceOptions {
    fn build(self, ctx: &BuildContext) -> Result<Stage, ConfigError> {
        if self.batch == 0 {
            return Err(ConfigError::new("batch", "must be at least 1"));
        }
        Ok(Stage::source(TestSource {
            options: self,
            name: ctx.stage.clone(),
            next: 0,
        }))
    }
}

flow_core::inventory::submit! {
    StageType::new::<SourceOptions>("t_source", StageKind::Source,
        "Test source: numbered items tagged with the stage name.",
        "- name: src\n  type: t_source\n  with: { id: x, count: 3 }\n")
}

// ---- t_pass / t_fail ------------------------------------------------------

/// Which worker trait a test stage implements.
#[derive(Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Synchronous, handed batches.
    #[default]
    Transform,
    /// Asynchronous, one item at a time; yields once per item.
    Processor,
}

/// Passes each item on, or copies, filters, fails or panics on it.
#[derive(Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PassOptions {
    #[serde(default)]
    worker: Kind,
    /// Emit this many copies of each item, tagged `"c": 0..copies`.
    copies: Option<i64>,
    /// Filter out items whose `i + c` is a multiple of this (`c` = 0 on
    /// untagged items).
    filter_mod: Option<i64>,
    /// Fail items whose `i % fail_mod == fail_rem`.
    fail_mod: Option<i64>,
    #[serde(default)]
    fail_rem: i64,
    /// Failures are retryable (default: permanent).
    #[serde(default)]
    retryable: bool,
    /// Panic on the item with this index.
    panic_at: Option<i64>,
    /// Emit `{"src": "finish:<stage>", "i": <worker>}` from `finish`.
    #[serde(default)]
    emit_on_finish: bool,
}

struct Pass {
    options: PassOptions,
    name: String,
    worker: usize,
}

impl Pass {
    fn handle(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError> {
        let o = &self.options;
        let src = get(input, "src").cloned().unwrap_or(Value::Null);
        let i = field(input, "i");
        if o.panic_at == Some(i) {
            panic!("t_pass {}: panic on item {i}", self.name);
        }
        if o.fail_mod.is_some_and(|m| i % m == o.fail_rem) {
            let message = format!("item {i} fails");
            return Err(if o.retryable {
                StageError::retryable(message)
            } else {
                StageError::permanent(message)
            });
        }
        let keep = |c: i64| o.filter_mod.is_none_or(|m| (i + c) % m != 0);
        match o.copies {
            None => {
                if keep(field(input, "c")) {
                    out.emit(input.clone());
                }
            }
            Some(k) => {
                for c in (0..k).filter(|&c| keep(c)) {
                    out.emit(object([("src", src.clone()), ("i", int(i)), ("c", int(c))]));
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Output) {
        if self.options.emit_on_finish {
            let src = string(format!("finish:{}", self.name));
            out.emit(object([("src", src), ("i", int(self.worker as i64))]));
        }
    }
}

/// An integer field of a test item; 0 when absent.
fn field(v: &Value, name: &str) -> i64 {
    get(v, name).and_then(as_f64).map_or(0, |x| x as i64)
}

impl Transform for Pass {
    fn apply(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError> {
        self.handle(input, out)
    }

    fn finish(&mut self, out: &mut Output) -> Result<(), StageError> {
        Pass::finish(self, out);
        Ok(())
    }
}

#[async_trait]
impl Processor for Pass {
    async fn process(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError> {
        // Let other workers run between items, so they interleave.
        tokio::task::yield_now().await;
        self.handle(input, out)
    }

    async fn finish(&mut self, out: &mut Output) -> Result<(), StageError> {
        Pass::finish(self, out);
        Ok(())
    }
}

impl StageOptions for PassOptions {
    fn build(self, ctx: &BuildContext) -> Result<Stage, ConfigError> {
        let name = ctx.stage.clone();
        let kind = self.worker;
        let make = move |worker| Pass {
            options: self.clone(),
            name: name.clone(),
            worker,
        };
        Ok(match kind {
            Kind::Transform => Stage::Workers(Box::new(move |w| {
                Ok(flow_core::Worker::Transform(Box::new(make(w))))
            })),
            Kind::Processor => Stage::processor(move |w| Ok(make(w))),
        })
    }
}

flow_core::inventory::submit! {
    StageType::new::<PassOptions>("t_pass", StageKind::Processor,
        "Test processor: passes, copies or filters items.",
        "- name: pass\n  type: t_pass\n  with: { copies: 2 }\n")
}

flow_core::inventory::submit! {
    StageType::new::<PassOptions>("t_fail", StageKind::Processor,
        "Test processor: t_pass, named for stages that fail or panic on items.",
        "- name: fail\n  type: t_fail\n  with: { fail_mod: 3 }\n")
}

// ---- t_sink ---------------------------------------------------------------

/// Records every value it consumes under `"<id>/<stage>"`.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SinkOptions {
    id: String,
    #[serde(default)]
    worker: Kind,
    /// Panic on the item with this index.
    panic_at: Option<i64>,
}

struct Sink {
    id: String,
    key: String,
    worker: usize,
    seen: usize,
    panic_at: Option<i64>,
}

impl Sink {
    fn consume(&mut self, input: &Value) {
        if self.panic_at.is_some() && self.panic_at == get(input, "i").map(|_| field(input, "i")) {
            panic!("t_sink {}: panic on item {:?}", self.key, self.panic_at);
        }
        self.seen += 1;
        // A dead letter (`{"item", "error"}`) carries its failed item.
        let item = get(input, "item").unwrap_or(input);
        if let Some(src) = get(item, "src").and_then(as_str) {
            let tag: Tag = (src.to_string(), field(item, "i"));
            let fired = lock(&HOOKS)
                .get(&self.id)
                .and_then(|items| items.get(&tag))
                .is_some_and(|outcomes| !outcomes.is_empty());
            if fired {
                lock(&EARLY)
                    .entry(self.id.clone())
                    .or_default()
                    .push(format!("{} consumed {tag:?}", self.key));
            }
        }
        let json = serde_json::from_str(&to_json(input)).expect("to_json writes JSON");
        lock(&RECORDS)
            .entry(self.key.clone())
            .or_default()
            .push(json);
    }

    fn finish(&mut self) {
        let by_stage = lock(&RECORDS).get(&self.key).map_or(0, Vec::len);
        lock(&FINISHES)
            .entry(self.key.clone())
            .or_default()
            .push(Finish {
                worker: self.worker,
                by_worker: self.seen,
                by_stage,
            });
    }
}

impl Transform for Sink {
    fn apply(&mut self, input: &Value, _out: &mut Output) -> Result<(), StageError> {
        self.consume(input);
        Ok(())
    }

    fn finish(&mut self, _out: &mut Output) -> Result<(), StageError> {
        Sink::finish(self);
        Ok(())
    }
}

#[async_trait]
impl Processor for Sink {
    async fn process(&mut self, input: &Value, _out: &mut Output) -> Result<(), StageError> {
        tokio::task::yield_now().await;
        self.consume(input);
        Ok(())
    }

    async fn finish(&mut self, _out: &mut Output) -> Result<(), StageError> {
        Sink::finish(self);
        Ok(())
    }
}

impl StageOptions for SinkOptions {
    fn build(self, ctx: &BuildContext) -> Result<Stage, ConfigError> {
        let sink_key = key(&self.id, &ctx.stage);
        let kind = self.worker;
        let make = move |worker| Sink {
            id: self.id.clone(),
            key: sink_key.clone(),
            worker,
            seen: 0,
            panic_at: self.panic_at,
        };
        Ok(match kind {
            Kind::Transform => Stage::Workers(Box::new(move |w| {
                Ok(flow_core::Worker::Transform(Box::new(make(w))))
            })),
            Kind::Processor => Stage::processor(move |w| Ok(make(w))),
        })
    }
}

flow_core::inventory::submit! {
    StageType::new::<SinkOptions>("t_sink", StageKind::Sink,
        "Test sink: records every value it consumes.",
        "- name: out\n  type: t_sink\n  with: { id: x }\n")
}
