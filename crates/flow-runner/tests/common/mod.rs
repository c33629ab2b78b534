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
//!   on chosen items; for the flow-control layers it can also fail the
//!   first attempts at an item (retryably), sleep or block on chosen items,
//!   and record every attempt with its time on tokio's clock;
//! * `t_sink` records every value it consumes and what it had seen when
//!   `finish` ran.
//!
//! Every option set names a test `id`, and every recorder is keyed by it,
//! so tests running in parallel never see each other's items.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use flow_core::value::{as_f64, as_str, bytes, get, int, object, string, to_json};
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
/// Attempts of `t_pass` stages that name a test `id`, by `"<id>/<stage>"`.
static ATTEMPTS: LazyLock<Mutex<HashMap<String, Vec<Attempt>>>> = LazyLock::new(Default::default);
/// Sleeping attempts whose future was dropped before the sleep ended, by
/// `"<id>/<stage>"`.
static CANCELLED: LazyLock<Mutex<HashMap<String, Vec<Cancelled>>>> =
    LazyLock::new(Default::default);
/// Per test id: whether the gate that `t_pass`'s `block` items wait at is
/// open, and how many attempts entered and left it.
static GATES: LazyLock<Mutex<HashMap<String, Gate>>> = LazyLock::new(Default::default);
static GATE_OPENED: Condvar = Condvar::new();
/// Numbers every `t_pass` instance, so a test can see a worker replaced.
static INSTANCES: AtomicU64 = AtomicU64::new(0);

/// A sleeping attempt cancelled: `(i, attempt)`.
pub type Cancelled = (i64, u32);

/// One attempt of a `t_pass` stage at an item.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The item's index and copy tag (`c`, 0 when untagged).
    pub i: i64,
    pub c: i64,
    /// 1 for the first attempt at this item, 2 for its first retry...
    pub n: u32,
    /// When it started, on tokio's clock (paused in most tests).
    pub at: tokio::time::Instant,
    /// The worker index and the instance (a fresh one after a panic or an
    /// abandoned attempt).
    pub worker: usize,
    pub instance: u64,
}

/// The gate of one test.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gate {
    pub open: bool,
    /// Attempts that reached the gate, and that got past it.
    pub entered: usize,
    pub left: usize,
    /// Attempts that gave up waiting (the gate was never opened).
    pub gave_up: usize,
}

/// How long a blocked attempt waits for its gate before giving up, so a
/// runner that waited for abandoned work still ends (and the test fails).
const GATE_GUARD: Duration = Duration::from_secs(10);

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

/// Every attempt of `t_pass` stage `stage` of test `id`, in the order they
/// started.
pub fn attempts(id: &str, stage: &str) -> Vec<Attempt> {
    lock(&ATTEMPTS)
        .get(&key(id, stage))
        .cloned()
        .unwrap_or_default()
}

/// Start times of the attempts at item `i` (copy 0) of `stage`, in ms
/// after `t0`.
pub fn attempt_times(id: &str, stage: &str, i: i64, t0: tokio::time::Instant) -> Vec<u128> {
    attempts(id, stage)
        .iter()
        .filter(|a| a.i == i && a.c == 0)
        .map(|a| (a.at - t0).as_millis())
        .collect()
}

/// Start times of every attempt of `stage`, in ms after `t0`, in order.
pub fn all_attempt_times(id: &str, stage: &str, t0: tokio::time::Instant) -> Vec<u128> {
    attempts(id, stage)
        .iter()
        .map(|a| (a.at - t0).as_millis())
        .collect()
}

/// `(i, attempt)` of every sleeping attempt of `stage` whose future was
/// dropped (cancelled) before its sleep ended.
pub fn cancelled(id: &str, stage: &str) -> Vec<Cancelled> {
    lock(&CANCELLED)
        .get(&key(id, stage))
        .cloned()
        .unwrap_or_default()
}

/// The gate of test `id`, as it is now.
pub fn gate(id: &str) -> Gate {
    lock(&GATES).get(id).copied().unwrap_or_default()
}

/// Opens the gate of test `id`: blocked attempts go on.
pub fn release(id: &str) {
    lock(&GATES).entry(id.to_string()).or_default().open = true;
    GATE_OPENED.notify_all();
}

/// Interrupts the run of test `id`, as Ctrl-C would.
pub fn interrupt(id: &str) {
    lock(&CONTROLS)
        .get(id)
        .expect("run_pipeline registered the control")
        .interrupt();
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
    /// Give every item a `"data"` field of this many binary bytes.
    payload: Option<usize>,
}

/// What a source saw when its `close` ran: how many of its items' hooks
/// were registered, and how many had fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    pub emitted: usize,
    pub reported: usize,
}

/// `close` calls of each source, by `"<id>/<stage>"`.
static CLOSES: LazyLock<Mutex<HashMap<String, Vec<Closed>>>> = LazyLock::new(Default::default);

/// The `close` calls of source `stage` of test `id`.
pub fn closes(id: &str, stage: &str) -> Vec<Closed> {
    lock(&CLOSES)
        .get(&key(id, stage))
        .cloned()
        .unwrap_or_default()
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
            let mut fields = vec![("src", string(&self.name)), ("i", int(i))];
            if let Some(n) = o.payload {
                fields.push(("data", bytes(vec![b'x'; n])));
            }
            let value = object(fields);
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

    async fn close(&mut self) -> Result<(), StageError> {
        let id = &self.options.id;
        let (emitted, reported) = lock(&HOOKS).get(id).map_or((0, 0), |items| {
            let mine = items.iter().filter(|((src, _), _)| *src == self.name);
            mine.fold((0, 0), |(e, r), (_, o)| {
                (e + 1, r + usize::from(!o.is_empty()))
            })
        });
        lock(&CLOSES)
            .entry(key(id, &self.name))
            .or_default()
            .push(Closed { emitted, reported });
        Ok(())
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

/// Passes each item on, or copies, filters, fails or panics on it; for the
/// flow-control tests it also fails first attempts, sleeps or blocks.
#[derive(Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PassOptions {
    #[serde(default)]
    worker: Kind,
    /// The test's id: with it, every attempt is recorded (see
    /// [`attempts`]) and `block` items wait at the test's gate.
    id: Option<String>,
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
    /// Item index → how many of the first attempts at it (at each copy of
    /// it) fail, with a retryable error `item <i> attempt <n> fails`.
    #[serde(default)]
    fail_first: BTreeMap<i64, u32>,
    /// The `fail_first` errors ask for this wait, in ms (`retry_after`).
    retry_after_ms: Option<u64>,
    /// Item index → ms each attempt at it sleeps before handling it: on
    /// tokio's clock in a processor (a cancelled sleep is recorded, see
    /// [`cancelled`]), with `std::thread::sleep` in a transform.
    #[serde(default)]
    sleep_ms: BTreeMap<i64, u64>,
    /// Every item sleeps this long (ms) unless `sleep_ms` names it.
    sleep_all_ms: Option<u64>,
    /// Item index → how many of the first attempts at it sleep (absent:
    /// every attempt).
    #[serde(default)]
    sleep_first: BTreeMap<i64, u32>,
    /// Items whose attempts block their thread at the test's gate until
    /// the test calls [`release`] (or `GATE_GUARD` passes).
    #[serde(default)]
    block: Vec<i64>,
}

struct Pass {
    options: Arc<PassOptions>,
    name: String,
    worker: usize,
    instance: u64,
    /// Attempts so far at each `(i, c)`, shared by the stage's workers and
    /// their replacements.
    tries: Arc<Mutex<HashMap<(i64, i64), u32>>>,
}

impl Pass {
    /// Counts and records an attempt at `input`; returns its index, copy
    /// tag and attempt number.
    fn begin(&self, input: &Value) -> (i64, i64, u32) {
        let (i, c) = (field(input, "i"), field(input, "c"));
        let n = {
            let mut tries = lock(&self.tries);
            let n = tries.entry((i, c)).or_insert(0);
            *n += 1;
            *n
        };
        if let Some(id) = &self.options.id {
            let attempt = Attempt {
                i,
                c,
                n,
                at: tokio::time::Instant::now(),
                worker: self.worker,
                instance: self.instance,
            };
            lock(&ATTEMPTS)
                .entry(key(id, &self.name))
                .or_default()
                .push(attempt);
        }
        (i, c, n)
    }

    /// How long attempt `n` at item `i` sleeps.
    fn sleep_of(&self, i: i64, n: u32) -> Option<Duration> {
        let o = &self.options;
        let ms = o.sleep_ms.get(&i).copied().or(o.sleep_all_ms)?;
        let sleeps = o.sleep_first.get(&i).is_none_or(|&first| n <= first);
        sleeps.then(|| Duration::from_millis(ms))
    }

    /// Blocks the thread at the test's gate when `i` is a `block` item.
    fn block_if_chosen(&self, i: i64) {
        if !self.options.block.contains(&i) {
            return;
        }
        let id = self
            .options
            .id
            .as_deref()
            .expect("`block` needs the test id");
        let mut gates = lock(&GATES);
        gates.entry(id.to_string()).or_default().entered += 1;
        let (mut gates, waited) = GATE_OPENED
            .wait_timeout_while(gates, GATE_GUARD, |g| !g.get(id).is_some_and(|g| g.open))
            .unwrap_or_else(|e| e.into_inner());
        let gate = gates.get_mut(id).expect("entered above");
        gate.left += 1;
        if waited.timed_out() {
            gate.gave_up += 1;
        }
    }

    fn handle(&mut self, input: &Value, out: &mut Output, n: u32) -> Result<(), StageError> {
        let o = &self.options;
        let src = get(input, "src").cloned().unwrap_or(Value::Null);
        let i = field(input, "i");
        if o.panic_at == Some(i) {
            panic!("t_pass {}: panic on item {i}", self.name);
        }
        if o.fail_first.get(&i).is_some_and(|&first| n <= first) {
            let error = StageError::retryable(format!("item {i} attempt {n} fails"));
            return Err(match o.retry_after_ms {
                Some(ms) => error.with_retry_after(Duration::from_millis(ms)),
                None => error,
            });
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
        let (i, _, n) = self.begin(input);
        if let Some(d) = self.sleep_of(i, n) {
            std::thread::sleep(d);
        }
        self.block_if_chosen(i);
        self.handle(input, out, n)
    }

    fn finish(&mut self, out: &mut Output) -> Result<(), StageError> {
        Pass::finish(self, out);
        Ok(())
    }
}

/// Records a sleeping attempt whose future is dropped before it wakes.
struct Sleeping<'a> {
    pass: &'a Pass,
    i: i64,
    n: u32,
    woke: bool,
}

impl Drop for Sleeping<'_> {
    fn drop(&mut self) {
        if let (false, Some(id)) = (self.woke, &self.pass.options.id) {
            lock(&CANCELLED)
                .entry(key(id, &self.pass.name))
                .or_default()
                .push((self.i, self.n));
        }
    }
}

#[async_trait]
impl Processor for Pass {
    async fn process(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError> {
        let (i, _, n) = self.begin(input);
        if let Some(d) = self.sleep_of(i, n) {
            let mut sleeping = Sleeping {
                pass: self,
                i,
                n,
                woke: false,
            };
            tokio::time::sleep(d).await;
            sleeping.woke = true;
        }
        self.block_if_chosen(i);
        // Let other workers run between items, so they interleave.
        tokio::task::yield_now().await;
        self.handle(input, out, n)
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
        let options = Arc::new(self);
        let tries = Arc::new(Mutex::new(HashMap::new()));
        let make = move |worker| Pass {
            options: options.clone(),
            name: name.clone(),
            worker,
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
            tries: tries.clone(),
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

// ---- t_buffer ---------------------------------------------------------------

/// A sink that buffers: it records items as `t_sink` does, but holds their
/// lineages until it "writes" every `flush_every` items, and at `finish`
/// (where `lose_at_finish` makes that last write fail). When it writes, it
/// checks that no hook of what it held has fired yet (see [`early`]).
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BufferOptions {
    id: String,
    flush_every: usize,
    #[serde(default)]
    lose_at_finish: bool,
}

struct Buffer {
    sink: Sink,
    held: flow_core::Held,
    tags: Vec<Tag>,
    flush_every: usize,
    lose_at_finish: bool,
}

impl Buffer {
    fn write(&mut self) {
        let hooks = lock(&HOOKS);
        for tag in self.tags.drain(..) {
            let fired = hooks
                .get(&self.sink.id)
                .and_then(|items| items.get(&tag))
                .is_some_and(|outcomes| !outcomes.is_empty());
            if fired {
                lock(&EARLY)
                    .entry(self.sink.id.clone())
                    .or_default()
                    .push(format!(
                        "{}: {tag:?} reported before it was written",
                        self.sink.key
                    ));
            }
        }
        drop(hooks);
        self.held.delivered();
    }
}

impl Transform for Buffer {
    fn apply(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError> {
        self.sink.consume(input);
        self.held.hold(out.lineage());
        if let Some(src) = get(input, "src").and_then(as_str) {
            self.tags.push((src.to_string(), field(input, "i")));
        }
        if self.held.len() >= self.flush_every {
            self.write();
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Output) -> Result<(), StageError> {
        if self.lose_at_finish {
            self.held.failed();
        } else {
            self.write();
        }
        self.sink.finish();
        Ok(())
    }
}

impl StageOptions for BufferOptions {
    fn build(self, ctx: &BuildContext) -> Result<Stage, ConfigError> {
        let sink_key = key(&self.id, &ctx.stage);
        Ok(Stage::Workers(Box::new(move |worker| {
            Ok(flow_core::Worker::Transform(Box::new(Buffer {
                sink: Sink {
                    id: self.id.clone(),
                    key: sink_key.clone(),
                    worker,
                    seen: 0,
                    panic_at: None,
                },
                held: flow_core::Held::new(),
                tags: Vec::new(),
                flush_every: self.flush_every.max(1),
                lose_at_finish: self.lose_at_finish,
            })))
        })))
    }
}

flow_core::inventory::submit! {
    StageType::new::<BufferOptions>("t_buffer", StageKind::Sink,
        "Test sink: buffers, holding lineages until it writes.",
        "- name: out\n  type: t_buffer\n  with: { id: x, flush_every: 10 }\n")
}

// ---- t_ports ----------------------------------------------------------------

/// Sends item `i` to its port `ports[i % ports.len()]`, and also to its
/// main output when `main` is set.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortsOptions {
    ports: Vec<String>,
    #[serde(default)]
    main: bool,
    /// Ports that may be left unread.
    #[serde(default)]
    optional: Vec<String>,
}

struct Ports {
    ports: u32,
    main: bool,
}

impl Transform for Ports {
    fn apply(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError> {
        let i = field(input, "i");
        out.emit_to(flow_core::Port((i as u32) % self.ports), input.clone());
        if self.main {
            out.emit(input.clone());
        }
        Ok(())
    }
}

impl StageOptions for PortsOptions {
    fn ports(&self) -> flow_core::Ports {
        flow_core::Ports {
            names: self.ports.clone(),
            optional: self.optional.clone(),
            main: self.main,
        }
    }

    fn build(self, _ctx: &BuildContext) -> Result<Stage, ConfigError> {
        let (ports, main) = (self.ports.len().max(1) as u32, self.main);
        Ok(Stage::transform(move || Ports { ports, main }))
    }
}

flow_core::inventory::submit! {
    StageType::new::<PortsOptions>("t_ports", StageKind::Processor,
        "Test processor: item i goes to port i % ports.",
        "- name: split\n  type: t_ports\n  with: { ports: [a, b] }\n")
}
