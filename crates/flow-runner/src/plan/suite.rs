//! The checks of a pipeline's `tests:` (and of a `NAME.test.yaml`): every
//! stage, port and mock they name exists, every expression compiles,
//! every expectation says something. Problems have `file:line:column`
//! like the rest of the file, so `flow validate` reports them too.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use flow_core::{Expr, StageKind, Value};

use super::build::PlannedStage;
use super::checks::Checker;
use super::load::{self, friendly};
use super::teach;
use crate::error::{Problem, Problems};
use crate::outlet;
use crate::spec::{ExpectSpec, MockSpec, MockStep, TestFileSpec, TestInputs, TestSpec};
use crate::suggest::hint;
use crate::testing::{Check, Expect, Mock, MockFailure, Step, Suite, TestCase};
use crate::yaml::{self, Doc};

/// Reads a `NAME.test.yaml`: its `pipeline:` (relative to it) is loaded
/// and checked as `flow validate` would, and its `tests:` are checked
/// against that pipeline's stages.
pub(crate) fn load_test_file(path: &Path) -> Result<Suite, Problems> {
    let text = load::read(path)?;
    let file = path.display().to_string();
    let one = |pos, message: String| {
        Problems(vec![Problem {
            file: file.clone(),
            pos,
            stage: None,
            message,
        }])
    };
    let mut doc = Doc::read(&text);
    if let Some(f) = doc.failure() {
        return Err(one(Some(f.pos), f.message.clone()));
    }
    if let Some((pos, _, key, first)) = doc.duplicates().into_iter().next() {
        let message = format!("duplicate key \"{key}\" (first at line {first})");
        return Err(one(Some(pos), message));
    }
    if let Some(f) = doc
        .interpolate(|name| std::env::var(name).ok())
        .into_iter()
        .next()
    {
        return Err(one(Some(f.pos), f.message));
    }
    let spec: TestFileSpec = yaml::parse(&doc).map_err(|e| {
        let unknown = e.message.starts_with("unknown field");
        let (pos, lead) = if unknown {
            let parent = e.path.rsplit_once('.').map_or("", |(p, _)| p);
            (doc.key(&e.path), parent.to_string())
        } else {
            (doc.value(&e.path), e.path.clone())
        };
        let message = match lead.as_str() {
            "" => friendly(&e.message),
            lead => format!("{}: {}", load::in_test(&doc, lead), friendly(&e.message)),
        };
        one(pos.or(e.pos), message)
    })?;
    let pipeline = path.parent().unwrap_or(Path::new(".")).join(&spec.pipeline);
    if !pipeline.is_file() {
        let message = format!(
            "pipeline: no file {} (the path is relative to this file)",
            pipeline.display()
        );
        return Err(one(doc.value("pipeline"), message));
    }
    let plan = crate::load(&pipeline)?;
    let mut checker = Checker::new(file, &doc, Vec::new());
    let tests = checker.check_tests(&spec.tests, &plan.stages);
    checker.finish()?;
    Ok(Suite {
        file: path.to_path_buf(),
        pipeline,
        tests,
    })
}

impl Checker<'_> {
    /// Checks `tests:` against the built stages, reporting each problem
    /// at its position; the tests without problems, ready to run.
    pub(super) fn check_tests(
        &mut self,
        tests: &[TestSpec],
        stages: &[PlannedStage],
    ) -> Vec<TestCase> {
        let mut names = HashSet::new();
        let mut cases = Vec::new();
        for (t, test) in tests.iter().enumerate() {
            let at = format!("tests[{t}]");
            let before = self.problems.len();
            let label = format!("test \"{}\"", test.name);
            if test.name.trim().is_empty() {
                let pos = self.positions.value(&format!("{at}.name"));
                self.report(None, pos, format!("{at}.name: a test needs a name"));
            } else if !names.insert(test.name.as_str()) {
                let pos = self.positions.value(&format!("{at}.name"));
                self.report(None, pos, format!("{label}: another test has this name"));
            }
            let inputs = self.check_inputs(&at, &label, &test.input, stages);
            let mocks = self.check_mocks(&at, &label, test, stages);
            if test.expect.is_empty() {
                let pos = self
                    .positions
                    .key(&format!("{at}.expect"))
                    .or_else(|| self.positions.value(&at));
                let message = format!(
                    "{label}: no `expect:`; say what must come out of which stage (items, count, all, any or none)"
                );
                self.report(None, pos, message);
            }
            let expects: Vec<Expect> = test
                .expect
                .iter()
                .enumerate()
                .filter_map(|(j, e)| {
                    self.check_expect(&format!("{at}.expect[{j}]"), &label, e, stages)
                })
                .collect();
            if self.problems.len() == before {
                cases.push(TestCase {
                    name: test.name.clone(),
                    inputs,
                    mocks,
                    expects,
                });
            }
        }
        cases
    }

    /// The stage called `name`, or a problem at `path`.
    fn test_stage(
        &mut self,
        path: &str,
        label: &str,
        key: &str,
        name: &str,
        stages: &[PlannedStage],
        key_pos: bool,
    ) -> Option<usize> {
        if let Some(i) = stages.iter().position(|s| s.name == name) {
            return Some(i);
        }
        let near = if self.may_hint() {
            hint(name, stages.iter().map(|s| s.name.as_str()))
        } else {
            String::new()
        };
        let pos = if key_pos {
            self.positions.key(path)
        } else {
            self.positions.value(path)
        };
        self.report(
            None,
            pos,
            format!("{label}: {key}: unknown stage \"{name}\"{near}"),
        );
        None
    }

    fn check_inputs(
        &mut self,
        at: &str,
        label: &str,
        input: &TestInputs,
        stages: &[PlannedStage],
    ) -> Vec<(usize, Vec<Value>)> {
        let mut inputs = Vec::new();
        for (j, one) in input.list().iter().enumerate() {
            let path = match input {
                TestInputs::Many(_) => format!("{at}.input[{j}]"),
                _ => format!("{at}.input"),
            };
            let stage = self.test_stage(
                &format!("{path}.stage"),
                label,
                "input",
                &one.stage,
                stages,
                false,
            );
            let mut items = Vec::new();
            for (k, item) in one.items.iter().enumerate() {
                match flow_core::value::from_serde(item) {
                    Ok(v) => items.push(v),
                    Err(e) => {
                        let pos = self.positions.value(&format!("{path}.items[{k}]"));
                        self.report(None, pos, format!("{label}: input: item {}: {e}", k + 1));
                    }
                }
            }
            if let Some(i) = stage {
                inputs.push((i, items));
            }
        }
        inputs
    }

    fn check_mocks(
        &mut self,
        at: &str,
        label: &str,
        test: &TestSpec,
        stages: &[PlannedStage],
    ) -> Vec<(usize, Arc<Mock>)> {
        let mut mocks = Vec::new();
        for (name, spec) in &test.mocks {
            let path = format!("{at}.mocks.{name}");
            let Some(i) = self.test_stage(&path, label, "mocks", name, stages, true) else {
                continue;
            };
            if stages[i].kind == StageKind::Source {
                let pos = self.positions.key(&path);
                let message = format!(
                    "{label}: mocks: \"{name}\" is a source; give it items with `input: {{stage: {name}, items: [...]}}` instead"
                );
                self.report(None, pos, message);
                continue;
            }
            let compile = |this: &mut Self, code: &str, path: &str| -> Option<Expr> {
                match Expr::compile(code) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        let pos = this.positions.value(path);
                        let key = format!("mocks.{name}");
                        let message = teach::expression_problem(&key, code, &e);
                        this.report(None, pos, format!("{label}: {message}"));
                        None
                    }
                }
            };
            let failure = |e: &crate::spec::MockError| MockFailure {
                message: e.error.clone(),
                permanent: e.permanent,
            };
            let mock = match spec {
                MockSpec::Expr(code) => compile(self, code, &path).map(Mock::Expr),
                MockSpec::Error(e) => Some(Mock::Error(failure(e))),
                MockSpec::Steps(steps) => {
                    if steps.is_empty() {
                        let pos = self.positions.value(&path);
                        let message = format!(
                            "{label}: mocks.{name}: an empty list; give one output (or error) per call"
                        );
                        self.report(None, pos, message);
                    }
                    let mut out = Vec::new();
                    for (k, step) in steps.iter().enumerate() {
                        match step {
                            MockStep::Expr(code) => {
                                if let Some(e) = compile(self, code, &format!("{path}[{k}]")) {
                                    out.push(Step::Expr(e));
                                }
                            }
                            MockStep::Error(e) => out.push(Step::Error(failure(e))),
                        }
                    }
                    Some(Mock::Steps(out))
                }
            };
            if let Some(mock) = mock {
                mocks.push((i, Arc::new(mock)));
            }
        }
        mocks
    }

    fn check_expect(
        &mut self,
        path: &str,
        label: &str,
        e: &ExpectSpec,
        stages: &[PlannedStage],
    ) -> Option<Expect> {
        let stage_path = format!("{path}.stage");
        let (name, port) = match e.stage.split_once('.') {
            Some((name, port)) => (name, Some(port)),
            None => (e.stage.as_str(), None),
        };
        let i = self.test_stage(&stage_path, label, "expect", name, stages, false);
        let port = i.and_then(|i| self.expect_port(&stage_path, label, &stages[i], port));
        let mut checks = Vec::new();
        let compile = |this: &mut Self, key: &str, code: &str| -> Option<Expr> {
            match Expr::compile(code) {
                Ok(expr) => Some(expr),
                Err(err) => {
                    let pos = this.positions.value(&format!("{path}.{key}"));
                    let message = teach::expression_problem(&format!("expect.{key}"), code, &err);
                    this.report(None, pos, format!("{label}: {message}"));
                    None
                }
            }
        };
        if let Some(items) = &e.items {
            checks.push(Check::Items {
                items: items.clone(),
                ordered: e.ordered,
            });
        } else if e.ordered {
            let pos = self.positions.key(&format!("{path}.ordered"));
            self.report(
                None,
                pos,
                format!("{label}: expect.ordered: goes with `items:`, the items expected in order"),
            );
        }
        if let Some(n) = e.count {
            checks.push(Check::Count(n));
        }
        if let Some(code) = &e.all {
            checks.extend(compile(self, "all", code).map(Check::All));
        }
        if let Some(code) = &e.any {
            checks.extend(compile(self, "any", code).map(Check::Any));
        }
        match e.none {
            Some(true) => checks.push(Check::None),
            Some(false) => {
                let pos = self.positions.value(&format!("{path}.none"));
                self.report(
                    None,
                    pos,
                    format!(
                        "{label}: expect.none: `none: false` asks nothing; write `any:` or `count:`"
                    ),
                );
            }
            None => {}
        }
        let said = e.items.is_some()
            || e.count.is_some()
            || e.all.is_some()
            || e.any.is_some()
            || e.none.is_some();
        if !said {
            let pos = self.positions.value(path);
            let message = format!(
                "{label}: expect \"{}\": say what must come out: items, count, all, any or none",
                e.stage
            );
            self.report(None, pos, message);
        }
        Some(Expect {
            target: e.stage.clone(),
            stage: i?,
            port: port?,
            checks,
        })
    }

    /// The output an expectation names on stage `s`: its main output, a
    /// named port, or (`error`) its error port.
    fn expect_port(
        &mut self,
        path: &str,
        label: &str,
        s: &PlannedStage,
        port: Option<&str>,
    ) -> Option<usize> {
        let pos = self.positions.value(path);
        let names = &s.ports.names;
        match port {
            None if s.kind != StageKind::Sink && !s.ports.main => {
                let ports: Vec<String> = names.iter().map(|p| format!("{}.{p}", s.name)).collect();
                let message = format!(
                    "{label}: expect: \"{}\" sends its items to named ports only; name one: {}, or {}.error",
                    s.name,
                    ports.join(", "),
                    s.name
                );
                self.report(None, pos, message);
                None
            }
            None => Some(outlet::MAIN),
            Some(p) => {
                if let Some(k) = names.iter().position(|n| n == p) {
                    return Some(outlet::named(flow_core::Port(k as u32)));
                }
                if p == "error" {
                    return Some(outlet::ERROR);
                }
                let mut known: Vec<&str> = names.iter().map(String::as_str).collect();
                known.push("error");
                let near = hint(p, known.iter().copied());
                let list: Vec<String> = known.iter().map(|k| format!("{}.{k}", s.name)).collect();
                let message = format!(
                    "{label}: expect: \"{}\" has no port \"{p}\"{near}; its outputs: {}{}",
                    s.name,
                    if s.ports.main && s.kind != StageKind::Sink {
                        format!("{}, ", s.name)
                    } else {
                        String::new()
                    },
                    list.join(", ")
                );
                self.report(None, pos, message);
                None
            }
        }
    }
}
