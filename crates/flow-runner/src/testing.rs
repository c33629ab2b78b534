//! `flow test`: a pipeline's unit tests, each run by the real runner.
//!
//! A test is a run of the pipeline with four changes, made to its
//! [`Plan`] and nothing else, so that retries, timeouts, rate limits,
//! ports, `on_error` and ordering behave exactly as in `flow run`:
//!
//! * every source emits only the `input` items given to it (most emit
//!   none), and items given to another stage come from a source of their
//!   own added in front of it;
//! * every sink is replaced by one that keeps what it receives;
//! * a mocked stage is replaced by its mock (an expression, a list of
//!   outputs one per call, or an error);
//! * what leaves each stage, by port, and every failed item, is recorded
//!   on the way out (the [`Tap`] in `outlet.rs`).
//!
//! The run has a runtime of its own on tokio's paused clock: when every
//! task waits for a timer, the clock jumps to it, so a `retry` with
//! `backoff: 10s` or a `rate: 1/min` costs no real time. (The limiter in
//! `rate.rs` sleeps on tokio's clock, so it paces by the paused clock too.)
//! A stage that waits on the world (a real `http` or `exec` call) should be
//! mocked: while it waits, the clock may jump past its timeout.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use flow_core::value::to_json;
use flow_core::{
    Expr, Next, Output, Source, Stage, StageError, StageKind, Transform, Value, async_trait,
};

use crate::error::Problems;
use crate::outlet::{self, PortId};
use crate::plan::{OnError, Plan, PlannedStage};

/// The tests of one file, ready to run.
pub struct Suite {
    /// The file the tests are written in.
    pub file: PathBuf,
    /// The pipeline they test (the same file, or the one a
    /// `NAME.test.yaml` names).
    pub pipeline: PathBuf,
    pub tests: Vec<TestCase>,
}

/// One test, checked against its pipeline.
pub struct TestCase {
    pub name: String,
    pub(crate) inputs: Vec<(usize, Vec<Value>)>,
    pub(crate) mocks: Vec<(usize, Arc<Mock>)>,
    pub(crate) expects: Vec<Expect>,
}

/// What a mocked stage does.
pub(crate) enum Mock {
    Expr(Expr),
    /// One step per call; a call past the last is an error.
    Steps(Vec<Step>),
    Error(MockFailure),
}

pub(crate) enum Step {
    Expr(Expr),
    Error(MockFailure),
}

pub(crate) struct MockFailure {
    pub message: String,
    pub permanent: bool,
}

impl MockFailure {
    fn error(&self) -> StageError {
        if self.permanent {
            StageError::permanent(&self.message)
        } else {
            StageError::retryable(&self.message)
        }
    }
}

/// An expectation on one output of one stage.
pub(crate) struct Expect {
    /// As written: `stage`, `stage.port`, `stage.error`.
    pub target: String,
    pub stage: usize,
    pub port: PortId,
    pub checks: Vec<Check>,
}

pub(crate) enum Check {
    Items {
        items: Vec<serde_json::Value>,
        ordered: bool,
    },
    Count(usize),
    All(Expr),
    Any(Expr),
    None,
}

/// Loads the tests of `path`: a pipeline file with `tests:`, or a
/// `NAME.test.yaml` that names its pipeline with `pipeline:`.
pub fn load_suite(path: &Path) -> Result<Suite, Problems> {
    if is_test_file(path) {
        return crate::plan::load_test_file(path);
    }
    let plan = crate::load(path)?;
    Ok(Suite {
        file: path.to_path_buf(),
        pipeline: path.to_path_buf(),
        tests: plan.tests,
    })
}

/// Whether `path` is a file of tests (`NAME.test.yaml` or `.test.yml`)
/// rather than a pipeline.
pub fn is_test_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".test.yaml") || n.ends_with(".test.yml"))
}

/// Runs test `index` of `suite` in a run of its own: `Ok(())` when every
/// expectation holds, else what went wrong, one paragraph each.
pub fn run_test(suite: &Suite, index: usize) -> Result<Result<(), Vec<String>>, Problems> {
    let plan = crate::load(&suite.pipeline)?;
    let Some(case) = suite.tests.get(index) else {
        return Ok(Err(vec![format!("no test {index}")]));
    };
    // The file was read again: if it changed since its tests were
    // checked, their stages may be others.
    let n = plan.stages.len();
    let named = case.inputs.iter().map(|(i, _)| *i);
    let named = named.chain(case.mocks.iter().map(|(i, _)| *i));
    if named
        .chain(case.expects.iter().map(|e| e.stage))
        .any(|i| i >= n)
    {
        let message = "the pipeline file changed while its tests ran; run them again";
        return Ok(Err(vec![message.to_string()]));
    }
    // Its own thread: a stack as large as `flow run` gives jq, and a
    // runtime whose clock is its own.
    let outcome = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(32 << 20)
            .spawn_scoped(scope, || run_plan(plan, case))
            .map_err(|e| vec![format!("cannot start the test's thread: {e}")])
            .and_then(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(vec!["the test's run panicked".to_string()]))
            })
    });
    Ok(outcome)
}

/// The most real time one test's run may take.
const REAL_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The most items a test's run records, over all its stages: a test is
/// for a few items, and its memory stays bounded.
const MAX_RECORDED: usize = 1_000_000;

/// Outputs recorded during a test run, by stage name and port.
#[derive(Default)]
pub(crate) struct Tap {
    seen: Mutex<HashMap<(String, PortId), Vec<Value>>>,
    recorded: AtomicUsize,
    /// Raised when [`MAX_RECORDED`] was reached: the run is stopped.
    full: std::sync::atomic::AtomicBool,
    control: Mutex<Option<crate::RunControl>>,
}

impl Tap {
    pub(crate) fn record<'v>(
        &self,
        stage: &str,
        port: PortId,
        items: impl Iterator<Item = &'v Value>,
    ) {
        if self.full.load(Ordering::Relaxed) {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let list = seen.entry((stage.to_string(), port)).or_default();
        let before = list.len();
        list.extend(items.cloned());
        let added = list.len() - before;
        if self.recorded.fetch_add(added, Ordering::Relaxed) + added > MAX_RECORDED {
            self.full.store(true, Ordering::Relaxed);
            if let Some(control) = &*self.control.lock().unwrap_or_else(|e| e.into_inner()) {
                control.abandon();
            }
        }
    }

    fn take(&self, stage: &str, port: PortId) -> Vec<Value> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.remove(&(stage.to_string(), port)).unwrap_or_default()
    }
}

fn run_plan(mut plan: Plan, case: &TestCase) -> Result<(), Vec<String>> {
    let tap = Arc::new(Tap::default());
    let mut stages = std::mem::take(&mut plan.stages);
    let names: Vec<String> = stages.iter().map(|s| s.name.clone()).collect();
    let mut given: HashMap<usize, Vec<Value>> = HashMap::new();
    for (i, items) in &case.inputs {
        given.entry(*i).or_default().extend(items.iter().cloned());
    }
    let mocks: HashMap<usize, Arc<Mock>> = case.mocks.iter().cloned().collect();
    for (i, s) in stages.iter_mut().enumerate() {
        s.durable = None;
        match s.kind {
            StageKind::Source => {
                let items = given.remove(&i).unwrap_or_default();
                s.stage = Stage::source(Items(items.into_iter()));
            }
            StageKind::Sink => {
                let (tap, name) = (tap.clone(), s.name.clone());
                // One count of calls for all the workers: a list is used
                // one entry per call of the stage.
                let mock = mocks
                    .get(&i)
                    .map(|m| (m.clone(), Arc::new(AtomicUsize::new(0))));
                s.stage = Stage::transform(move || Capture {
                    tap: tap.clone(),
                    name: name.clone(),
                    mock: mock.clone(),
                });
            }
            StageKind::Processor => {
                if let Some(mock) = mocks.get(&i) {
                    let (mock, calls) = (mock.clone(), Arc::new(AtomicUsize::new(0)));
                    s.stage = Stage::transform(move || Mocked {
                        mock: mock.clone(),
                        calls: calls.clone(),
                    });
                }
            }
        }
    }
    // Items for the other stages come from a source of their own each,
    // added after the pipeline's stages and read by that stage alone.
    let mut fed: Vec<(usize, Vec<Value>)> = given.into_iter().collect();
    fed.sort_by_key(|(i, _)| *i);
    for (i, items) in fed {
        let k = stages.len();
        stages.push(PlannedStage {
            name: format!("input of {}", names[i]),
            type_name: "test input".into(),
            kind: StageKind::Source,
            inputs: Vec::new(),
            input_ports: Vec::new(),
            ports: flow_core::Ports::default(),
            durable: None,
            workers: 1,
            queue: crate::queue::QueueConfig::fifo(64),
            control: Default::default(),
            on_error: OnError::Fail,
            stage: Stage::source(Items(items.into_iter())),
        });
        stages[i].inputs.push(k);
        stages[i].input_ports.push(None);
    }
    let mut plan = plan.with_stages(stages);
    plan.tap = Some(tap.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| vec![format!("cannot start the runtime: {e}")])?;
    // A stage that waits on the world forever (an unmocked call with no
    // timeout) must not hang `flow test`: after a real minute the run is
    // abandoned.
    let control = crate::RunControl::new();
    *tap.control.lock().unwrap_or_else(|e| e.into_inner()) = Some(control.clone());
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = {
        let control = control.clone();
        std::thread::spawn(move || {
            let waited = finished.recv_timeout(REAL_TIME_LIMIT);
            let late = matches!(waited, Err(std::sync::mpsc::RecvTimeoutError::Timeout));
            if late {
                control.abandon();
            }
            late
        })
    };
    let report = runtime.block_on(crate::run(plan, control));
    let _ = done.send(());
    let late = watchdog.join().unwrap_or(false);
    let mut failures = Vec::new();
    let full = tap.full.load(Ordering::Relaxed);
    if full {
        failures.push(format!(
            "more than {MAX_RECORDED} items came out of the stages, and the run was stopped; a test is for a few items"
        ));
    }
    if late {
        failures.push(format!(
            "the test's run did not end within {}s of real time and was stopped; mock the stages that wait on the world (http, exec)",
            REAL_TIME_LIMIT.as_secs()
        ));
    }
    if let Some(failure) = report.failure.as_ref().filter(|_| !late && !full) {
        failures.push(format!(
            "the run failed: {}",
            flow_core::text::for_display(failure)
        ));
    }
    for expect in &case.expects {
        let stage = &names[expect.stage];
        let got = tap.take(stage, expect.port);
        tap.record(stage, expect.port, got.iter());
        for check in &expect.checks {
            if let Err(why) = check.holds(&got) {
                failures.push(format!("expect stage \"{}\": {why}", expect.target));
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// A source emitting the test's items.
struct Items(std::vec::IntoIter<Value>);

#[async_trait]
impl Source for Items {
    async fn next(&mut self, out: &mut Output) -> Result<Next, StageError> {
        for value in self.0.by_ref().take(flow_core::BATCH) {
            out.emit(value);
        }
        Ok(if self.0.len() == 0 {
            Next::Done
        } else {
            Next::More
        })
    }
}

/// A mocked processor.
struct Mocked {
    mock: Arc<Mock>,
    calls: Arc<AtomicUsize>,
}

impl Transform for Mocked {
    fn interruptible(&self) -> bool {
        true
    }

    fn apply(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError> {
        call(&self.mock, &self.calls, input, |v| {
            out.emit(v);
            !out.is_full()
        })?;
        if out.is_full() {
            return Err(StageError::permanent(format!(
                "mock: more than {} outputs for one item",
                flow_core::stage::MAX_HELD
            )));
        }
        Ok(())
    }
}

/// One call of a mock: its outputs (until `emit` says no more), or its
/// error.
fn call(
    mock: &Mock,
    calls: &AtomicUsize,
    input: &Value,
    emit: impl FnMut(Value) -> bool,
) -> Result<(), StageError> {
    let n = calls.fetch_add(1, Ordering::Relaxed);
    match mock {
        Mock::Expr(expr) => expr.run_while(input.clone(), emit),
        Mock::Error(failure) => Err(failure.error()),
        Mock::Steps(steps) => match steps.get(n) {
            Some(Step::Expr(expr)) => expr.run_while(input.clone(), emit),
            Some(Step::Error(failure)) => Err(failure.error()),
            None => Err(StageError::permanent(format!(
                "mock called {} times; its list has {}",
                n + 1,
                match steps.len() {
                    1 => "1 entry".to_string(),
                    n => format!("{n} entries"),
                }
            ))),
        },
    }
}

/// A sink replaced for a test: keeps what it receives (after its mock, if
/// it has one, accepted it).
struct Capture {
    tap: Arc<Tap>,
    name: String,
    mock: Option<(Arc<Mock>, Arc<AtomicUsize>)>,
}

impl Transform for Capture {
    fn interruptible(&self) -> bool {
        true
    }

    fn apply(&mut self, input: &Value, _out: &mut Output) -> Result<(), StageError> {
        // A sink's mock says only whether the item is taken: its first
        // output is enough.
        if let Some((mock, calls)) = &self.mock {
            call(mock, calls, input, |_| false)?;
        }
        self.tap
            .record(&self.name, outlet::MAIN, std::iter::once(input));
        Ok(())
    }
}

impl Check {
    /// Whether the items that came satisfy the check; if not, why, with
    /// the items concerned.
    fn holds(&self, got: &[Value]) -> Result<(), String> {
        match self {
            Check::Count(n) if got.len() == *n => Ok(()),
            Check::Count(n) => Err(format!(
                "expected {}, {} came{}",
                items(*n),
                got.len(),
                listing(got)
            )),
            Check::None if got.is_empty() => Ok(()),
            Check::None => Err(format!(
                "expected no items, {} came{}",
                got.len(),
                listing(got)
            )),
            Check::All(expr) => {
                if got.is_empty() {
                    return Err(format!(
                        "expected items that all satisfy `{}`, none came",
                        expr.code()
                    ));
                }
                let failing: Vec<Value> = got
                    .iter()
                    .filter(|v| !matches!(expr.test(v), Ok(true)))
                    .cloned()
                    .collect();
                if failing.is_empty() {
                    return Ok(());
                }
                Err(format!(
                    "{} of {} do not satisfy `{}`{}",
                    failing.len(),
                    items(got.len()),
                    expr.code(),
                    listing(&failing)
                ))
            }
            Check::Any(expr) => {
                if got.iter().any(|v| matches!(expr.test(v), Ok(true))) {
                    return Ok(());
                }
                Err(format!(
                    "no item satisfies `{}` ({} came){}",
                    expr.code(),
                    got.len(),
                    listing(got)
                ))
            }
            Check::Items { items, ordered } => compare(items, got, *ordered),
        }
    }
}

/// `1 item`, `3 items`.
fn items(n: usize) -> String {
    if n == 1 {
        "1 item".into()
    } else {
        format!("{n} items")
    }
}

/// The items, one a line, at most ten.
fn listing(values: &[Value]) -> String {
    const SHOWN: usize = 10;
    let mut text = String::new();
    for v in values.iter().take(SHOWN) {
        text.push_str("\n      ");
        text.push_str(&show(&to_json(v)));
    }
    if values.len() > SHOWN {
        text.push_str(&format!("\n      … and {} more", values.len() - SHOWN));
    }
    text
}

/// An item's JSON as shown: at most 300 characters, nothing that moves the
/// terminal.
fn show(json: &str) -> String {
    const MAX: usize = 300;
    let text = flow_core::text::for_display(json);
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.into_owned(),
    }
}

fn compare(expected: &[serde_json::Value], got: &[Value], ordered: bool) -> Result<(), String> {
    let got: Vec<(String, serde_json::Value)> = got
        .iter()
        .map(|v| {
            let text = to_json(v);
            let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
            (text, json)
        })
        .collect();
    let text = |v: &serde_json::Value| serde_json::to_string(v).unwrap_or_default();
    if ordered {
        let equal =
            expected.len() == got.len() && expected.iter().zip(&got).all(|(e, (_, g))| same(e, g));
        if equal {
            return Ok(());
        }
        let mut lines = vec![format!(
            "the items differ (in order): {} expected, {} came",
            expected.len(),
            got.len()
        )];
        for k in 0..expected.len().max(got.len()) {
            match (expected.get(k), got.get(k)) {
                (Some(e), Some((_, g))) if same(e, g) => {}
                (Some(e), Some((g, _))) => {
                    lines.push(format!("    item {}: expected {}", k + 1, show(&text(e))));
                    lines.push(format!(
                        "    {:w$}  came     {}",
                        "",
                        show(g),
                        w = digits(k + 1) + 5
                    ));
                }
                (Some(e), None) => {
                    lines.push(format!(
                        "    item {}: expected {}, but no item came",
                        k + 1,
                        show(&text(e))
                    ));
                }
                (None, Some((g, _))) => {
                    lines.push(format!(
                        "    item {}: came     {}, not expected",
                        k + 1,
                        show(g)
                    ));
                }
                (None, None) => {}
            }
        }
        return Err(lines.join("\n"));
    }
    let mut unmatched: Vec<bool> = vec![true; got.len()];
    let mut missing = Vec::new();
    for e in expected {
        match (0..got.len()).find(|&k| unmatched[k] && same(e, &got[k].1)) {
            Some(k) => unmatched[k] = false,
            None => missing.push(e),
        }
    }
    let extra: Vec<&String> = got
        .iter()
        .zip(&unmatched)
        .filter(|(_, u)| **u)
        .map(|((t, _), _)| t)
        .collect();
    if missing.is_empty() && extra.is_empty() {
        return Ok(());
    }
    let mut lines = vec![format!(
        "the items differ (in any order): {} expected, {} came",
        expected.len(),
        got.len()
    )];
    for e in missing {
        lines.push(format!("    - expected {}", show(&text(e))));
    }
    for g in extra {
        lines.push(format!("    + came     {}", show(g)));
    }
    Err(lines.join("\n"))
}

fn digits(n: usize) -> usize {
    n.to_string().len()
}

/// JSON equality with numbers compared by value (`1` is `1.0`).
fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_by_value() {
        assert!(same(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
        assert!(!same(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!same(&json!("1"), &json!(1)));
    }
}
