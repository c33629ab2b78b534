//! jq expressions, compiled once per stage and run per item.
//!
//! Every expression in a pipeline (`map`, `filter`, `priority`, `rate_key`,
//! an http `url`, a file name, a dedupe key) is jq, run by jaq with its
//! standard library.

use std::fmt;
use std::sync::Arc;

use jaq_core::box_iter::box_once;
use jaq_core::load::{Arena, File, Loader, lex, parse};
use jaq_core::{Ctx, Error, Exn, Vars, compile, data, native};

use crate::fast::Fast;
use crate::interrupt::{Evaluation, Stop};
use crate::value::to_text;
use crate::{StageError, Value};

type Filter = jaq_core::Filter<data::JustLut<Value>>;

/// A compiled jq expression. Cheap to clone and shared by all workers.
#[derive(Clone)]
pub struct Expr {
    code: Arc<str>,
    filter: Arc<Filter>,
    vars: usize,
    /// The native form, when the expression has one (see [`crate::fast`]).
    fast: Option<Arc<Fast>>,
}

/// Why an expression does not compile, with the byte offset in its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExprError {
    /// What is wrong, without the position (`expected …, found …`).
    pub message: String,
    /// Where in the expression's text the problem is, in bytes from 0.
    pub offset: usize,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at character {})", self.message, self.offset + 1)
    }
}

impl std::error::Error for ExprError {}

/// The longest expression text flow compiles: 100,000 bytes.
pub const MAX_EXPR_LEN: usize = 100_000;

/// The deepest nesting of brackets (and of prefix `-`) flow compiles: the
/// constructs that cost the parser a level of recursion per character.
pub const MAX_NESTING: usize = 1000;

/// How deeply `code` nests brackets, string interpolations and prefix
/// minus signs, by a scan that needs no parser (and so cannot recurse).
fn nesting(code: &str) -> usize {
    let bytes = code.as_bytes();
    // Open brackets; `"` for a string, `\\` for an interpolation in one.
    let mut open: Vec<u8> = Vec::new();
    let (mut deepest, mut minus_run, mut i) = (0, 0, 0);
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        if open.last() == Some(&b'"') {
            match b {
                b'\\' if bytes.get(i) == Some(&b'(') => {
                    open.push(b'\\');
                    i += 1;
                }
                b'\\' => i += 1,
                b'"' => {
                    open.pop();
                }
                _ => {}
            }
        } else {
            match b {
                b'"' | b'(' | b'[' | b'{' => open.push(b),
                b')' | b']' | b'}' => {
                    open.pop();
                }
                b'#' => {
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                }
                _ => {}
            }
            match b {
                b'-' => minus_run += 1,
                b' ' | b'\t' | b'\n' | b'\r' => {}
                _ => minus_run = 0,
            }
        }
        deepest = deepest.max(open.len()).max(minus_run);
    }
    deepest
}

/// The stack the compiler gets: jaq's parser recurses once per level of
/// nesting, and an expression of [`MAX_EXPR_LEN`] bytes nested all the way
/// down must not overflow (the memory is only touched as deep as it goes).
/// (Unoptimised builds use frames several times larger.)
const COMPILE_STACK: usize = if cfg!(debug_assertions) {
    2 << 30
} else {
    256 << 20
};

impl Expr {
    /// Compiles `code`, which may use no variables.
    pub fn compile(code: &str) -> Result<Self, ExprError> {
        Self::compile_with_vars(code, &[])
    }

    /// Compiles `code`, which may use the global variables `vars` (named
    /// with their `$`); [`Expr::run_with`] gives their values in that order.
    pub fn compile_with_vars(code: &str, vars: &[&str]) -> Result<Self, ExprError> {
        if code.len() > MAX_EXPR_LEN {
            return Err(ExprError {
                message: format!(
                    "the expression is {} bytes long; the limit is {MAX_EXPR_LEN}",
                    code.len()
                ),
                offset: 0,
            });
        }
        let depth = nesting(code);
        if depth > MAX_NESTING {
            return Err(ExprError {
                message: format!(
                    "the expression nests {depth} levels deep; the limit is {MAX_NESTING}"
                ),
                offset: 0,
            });
        }
        // On a stack of its own, sized for the deepest nesting the limits
        // allow, so no expression can overflow the caller's.
        stacker::grow(COMPILE_STACK, || compile(code, vars))
    }

    /// The expression's text.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// Runs the expression on `input`, calling `each` with every output.
    /// The first error stops it.
    pub fn run(&self, input: Value, each: impl FnMut(Value)) -> Result<(), StageError> {
        self.run_with(input, &[], each)
    }

    /// Like [`Expr::run`], with values for the variables named at compile
    /// time.
    ///
    /// The evaluation stops (see [`crate::interrupt`]) when the thread's
    /// deadline passes (a retryable `timed out after …`), when it is
    /// cancelled, or when it recurses to the end of the stack; an output
    /// nested deeper than [`crate::json::MAX_DEPTH`] levels is an error.
    pub fn run_with(
        &self,
        input: Value,
        vars: &[Value],
        mut each: impl FnMut(Value),
    ) -> Result<(), StageError> {
        self.eval(input, vars, |v| {
            each(v);
            true
        })
    }

    /// Like [`Expr::run`], stopping the evaluation as soon as `each`
    /// returns false.
    pub fn run_while(
        &self,
        input: Value,
        each: impl FnMut(Value) -> bool,
    ) -> Result<(), StageError> {
        self.eval(input, &[], each)
    }

    /// [`Expr::run_while`] on an input the caller lends for good: an
    /// expression that changes its input (`.n = 1`) changes it in place
    /// rather than a copy, and may leave `null` in its place when it
    /// succeeds. On an error the input is as it was (except when the error
    /// is an output nested deeper than the limit, made from the input).
    pub fn run_taking(
        &self,
        input: &mut Value,
        each: impl FnMut(Value) -> bool,
    ) -> Result<(), StageError> {
        if let Some(fast) = &self.fast {
            match fast.run(std::mem::take(input), &[]) {
                Ok(out) => {
                    return self.fast_output(out, each).map_err(|(e, deep)| {
                        crate::json::drop_value(deep);
                        e
                    });
                }
                Err(given_back) => *input = given_back,
            }
        }
        self.jaq(input.clone(), &[], each)
    }

    /// Whether the expression's first output is true (neither `false` nor
    /// `null`); false when it has none.
    pub fn test(&self, input: &Value) -> Result<bool, StageError> {
        if let Some(fast) = &self.fast
            && let Ok(out) = fast.eval(input, &[])
        {
            return Ok(out.is_some_and(|v| !matches!(v, Value::Null | Value::Bool(false))));
        }
        let mut first = None;
        self.jaq(input.clone(), &[], |v| {
            first = Some(v);
            false
        })?;
        Ok(first.is_some_and(|v| !matches!(v, Value::Null | Value::Bool(false))))
    }

    /// The expression's first output (`None` when it has none); the
    /// evaluation stops there.
    pub fn first(&self, input: Value) -> Result<Option<Value>, StageError> {
        self.first_with(input, &[])
    }

    /// [`Expr::first`] with variables.
    pub fn first_with(&self, input: Value, vars: &[Value]) -> Result<Option<Value>, StageError> {
        let mut first = None;
        self.eval(input, vars, |v| {
            first = Some(v);
            false
        })?;
        Ok(first)
    }

    /// Runs the expression, giving each output to `each` until it returns
    /// false.
    fn eval(
        &self,
        input: Value,
        vars: &[Value],
        each: impl FnMut(Value) -> bool,
    ) -> Result<(), StageError> {
        debug_assert_eq!(vars.len(), self.vars, "one value per compiled variable");
        let input = match &self.fast {
            Some(fast) => match fast.run(input, vars) {
                Ok(out) => {
                    return self.fast_output(out, each).map_err(|(e, deep)| {
                        crate::json::drop_value(deep);
                        e
                    });
                }
                Err(input) => input,
            },
            None => input,
        };
        self.jaq(input, vars, each)
    }

    /// Runs the expression with jaq.
    fn jaq(
        &self,
        input: Value,
        vars: &[Value],
        mut each: impl FnMut(Value) -> bool,
    ) -> Result<(), StageError> {
        let evaluation = Evaluation::enter();
        let ctx =
            Ctx::<data::JustLut<Value>>::new(&self.filter.lut, Vars::new(vars.iter().cloned()));
        for out in self.filter.id.run((ctx, input)) {
            match out {
                Ok(v)
                    if matches!(v, Value::Arr(_) | Value::Obj(_))
                        && crate::json::deeper_than(&v, crate::json::MAX_DEPTH) =>
                {
                    crate::json::drop_value(v);
                    return Err(self.error(format!(
                        "gave a value nested deeper than {} levels",
                        crate::json::MAX_DEPTH
                    )));
                }
                Ok(v) => {
                    if !each(v) {
                        return Ok(());
                    }
                }
                Err(exn) => return Err(self.exception(exn, &evaluation)),
            }
        }
        Ok(())
    }

    /// The output of the native evaluation, held to the same depth limit
    /// as jaq's outputs.
    fn fast_output(
        &self,
        out: Option<Value>,
        mut each: impl FnMut(Value) -> bool,
    ) -> Result<(), (StageError, Value)> {
        match out {
            Some(v)
                if matches!(v, Value::Arr(_) | Value::Obj(_))
                    && crate::json::deeper_than(&v, crate::json::MAX_DEPTH) =>
            {
                let error = self.error(format!(
                    "gave a value nested deeper than {} levels",
                    crate::json::MAX_DEPTH
                ));
                Err((error, v))
            }
            Some(v) => {
                each(v);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// The same expression, always run by jaq (to check the native
    /// evaluation against).
    #[cfg(test)]
    pub(crate) fn jaq_only(&self) -> Expr {
        Expr {
            fast: None,
            ..self.clone()
        }
    }

    /// Whether the expression has a native form.
    #[cfg(test)]
    pub(crate) fn is_fast(&self) -> bool {
        self.fast.is_some()
    }

    fn error(&self, message: impl fmt::Display) -> StageError {
        StageError::permanent(format!("expression `{}`: {message}", self.short()))
    }

    /// The expression as error messages name it: whole when short, else
    /// its start. The message goes into every failed item's log line,
    /// error group and dead letter; a long expression repeated there
    /// hides the message, and the stage's name already says which
    /// expression it was.
    fn short(&self) -> std::borrow::Cow<'_, str> {
        const MAX: usize = 30;
        let code = self.code.trim();
        let first_line = code.lines().next().unwrap_or("").trim_end();
        if first_line.len() == code.len() && code.chars().count() <= MAX {
            return code.into();
        }
        let start: String = first_line.chars().take(MAX - 1).collect();
        format!("{}…", start.trim_end()).into()
    }

    /// The stage error for an exception that ended an evaluation: a jq
    /// error, a stop by the interrupt hook, or a `halt`.
    fn exception(&self, exn: Exn<'_, Value>, evaluation: &Evaluation) -> StageError {
        let exn = match exn.get_err() {
            Ok(e) => return self.error(to_text(&e.into_val())),
            Err(exn) => exn,
        };
        match (evaluation.stopped(), exn.get_halt()) {
            (Some(Stop::TimedOut(limit)), _) => StageError::retryable(format!(
                "timed out after {}",
                humantime::format_duration(limit)
            )),
            (Some(Stop::Cancelled), _) => {
                StageError::retryable("stopped: the run abandoned the item")
            }
            (Some(Stop::TooDeep), _) => self.error(
                "recursed too deeply (the evaluation reached the end of the stack it may use)",
            ),
            (None, Ok(code)) => {
                let said = LAST_STDERR
                    .take()
                    .map(|t| format!(": {t}"))
                    .unwrap_or_default();
                self.error(format!("halt({code}) stops the expression, not flow{said}"))
            }
            (None, Err(_)) => self.error("ended with an unexpected exception"),
        }
    }
}

fn compile(code: &str, vars: &[&str]) -> Result<Expr, ExprError> {
    let offset = |s: &str| (s.as_ptr() as usize).saturating_sub(code.as_ptr() as usize);
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let loader = Loader::new(defs);
    let arena = Arena::default();
    let modules = loader
        .load(&arena, File { code, path: () })
        .map_err(|errs| {
            let (_, err) = errs.into_iter().next().expect("an error per failure");
            match err {
                jaq_core::load::Error::Lex(es) => {
                    let (expect, at) = es.into_iter().next().expect("a lex error");
                    ExprError {
                        message: format!("expected {}", lex_expectation(&expect)),
                        offset: offset(at),
                    }
                }
                jaq_core::load::Error::Parse(es) => {
                    let (expect, at) = es.into_iter().next().expect("a parse error");
                    let found = if at.is_empty() {
                        "the end".to_string()
                    } else {
                        format!("{:?}", first_token(at))
                    };
                    ExprError {
                        message: format!("expected {}, found {found}", parse_expectation(&expect)),
                        offset: offset(at),
                    }
                }
                jaq_core::load::Error::Io(es) => ExprError {
                    message: es
                        .into_iter()
                        .next()
                        .map_or_else(|| "cannot load module".into(), |(_, e)| e),
                    offset: 0,
                },
            }
        })?;
    let funs = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs())
        .filter(|(name, ..)| !OWN_FUNS.contains(name))
        .chain(own_funs());
    let filter = compile::Compiler::default()
        .with_funs(funs)
        .with_global_vars(vars.iter().copied())
        .compile(modules)
        .map_err(|errs| {
            let (_, es) = errs.into_iter().next().expect("an error per failure");
            let (name, undefined) = es.into_iter().next().expect("a compile error");
            ExprError {
                message: format!("undefined {} {name}", undefined.as_str()),
                offset: offset(name),
            }
        })?;
    Ok(Expr {
        code: code.into(),
        filter: Arc::new(filter),
        vars: vars.len(),
        fast: Fast::compile(code, vars).map(Arc::new),
    })
}

/// jq's filters that flow defines itself: `fromjson` parses with flow's
/// strict, depth-limited reader; `debug` and `stderr` (behind `debug_empty`
/// and `stderr_empty`) write to flow's log, escaped and throttled, instead
/// of raw to the terminal or nowhere.
const OWN_FUNS: [&str; 3] = ["fromjson", "debug_empty", "stderr_empty"];

fn own_funs<D: for<'a> jaq_core::DataT<V<'a> = Value>>() -> impl Iterator<Item = native::Fun<D>> {
    own_filters().into_vec().into_iter().map(native::run)
}

fn own_filters<D: for<'a> jaq_core::DataT<V<'a> = Value>>()
-> Box<[native::Filter<jaq_core::RunPtr<D>>]> {
    Box::new([
        ("fromjson", native::v(0), |cv| {
            box_once(match &cv.1 {
                Value::TStr(b) | Value::BStr(b) => crate::json::parse(b, crate::json::Utf8::Strict)
                    .map_err(|e| Exn::from(Error::str(format!("fromjson: {e}")))),
                other => Err(Exn::from(Error::typ(other.clone(), "string"))),
            })
        }),
        ("debug_empty", native::v(0), |cv| {
            jq_log("debug", &crate::json::to_string(&cv.1));
            Box::new(std::iter::empty())
        }),
        ("stderr_empty", native::v(0), |cv| {
            let text = to_text(&cv.1);
            jq_log("stderr", &text);
            LAST_STDERR.set(Some(crate::text::sanitize(&text).into_owned()));
            Box::new(std::iter::empty())
        }),
    ])
}

thread_local! {
    /// What `stderr` printed last: `halt_error` prints its message, then
    /// halts, and the item's error quotes it.
    static LAST_STDERR: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Logs what jq's `debug` or `stderr` printed: escaped for a terminal, and
/// at most a few lines a second (then a count of what was held back).
fn jq_log(what: &str, text: &str) {
    use std::sync::Mutex;
    use std::time::Instant;
    static WINDOW: Mutex<Option<(Instant, u32, u64)>> = Mutex::new(None);
    const PER_SECOND: u32 = 5;
    let mut w = WINDOW.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let (start, shown, held) = w.get_or_insert((now, 0, 0));
    if now.duration_since(*start).as_secs() >= 1 {
        if *held > 0 {
            tracing::info!("jq: {held} more debug/stderr lines not shown");
        }
        (*start, *shown, *held) = (now, 0, 0);
    }
    if *shown < PER_SECOND {
        *shown += 1;
        tracing::info!("jq {what}: {}", crate::text::sanitize(text));
    } else {
        *held += 1;
    }
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expr({:?})", self.code)
    }
}

fn lex_expectation(e: &lex::Expect<&str>) -> &'static str {
    match e {
        lex::Expect::Delim("(") => "closing parenthesis",
        lex::Expect::Delim("[") => "closing bracket",
        lex::Expect::Delim("{") => "closing brace",
        lex::Expect::Delim(_) => "closing quote",
        other => other.as_str(),
    }
}

fn parse_expectation<'a>(e: &parse::Expect<&'a str>) -> &'a str {
    match e {
        // jaq's "expected nothing": more text after a whole expression.
        parse::Expect::Nothing => "the end of the expression",
        e => e.as_str(),
    }
}

fn first_token(s: &str) -> &str {
    let end = s
        .char_indices()
        .find(|(i, c)| *i > 0 && (c.is_whitespace() || "()[]{}|,;".contains(*c)))
        .map_or(s.len(), |(i, _)| i);
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{int, string, to_json};

    fn outputs(code: &str, input: &str) -> Vec<String> {
        let e = Expr::compile(code).unwrap();
        let mut out = Vec::new();
        e.run(crate::value::parse_json(input.as_bytes()).unwrap(), |v| {
            out.push(to_json(&v))
        })
        .unwrap();
        out
    }

    #[test]
    fn runs_jq_with_its_standard_library() {
        assert_eq!(outputs(".a * .a", r#"{"a":3}"#), ["9"]);
        assert_eq!(outputs(".[] | select(. > 1)", "[1,2,3]"), ["2", "3"]);
        assert_eq!(outputs("map(. + 1) | last", "[1,2]"), ["3"]);
        assert_eq!(outputs(r#""x" | tonumber? // 0"#, "null"), ["0"]);
        assert_eq!(outputs(r#""id-\(.id)""#, r#"{"id":7}"#), [r#""id-7""#]);
    }

    #[test]
    fn global_variables_are_passed_in_order() {
        let e = Expr::compile_with_vars("$i * 10", &["$i"]).unwrap();
        let got = e.first_with(Value::Null, &[int(4)]).unwrap().unwrap();
        assert_eq!(to_json(&got), "40");
    }

    #[test]
    fn syntax_errors_point_into_the_text() {
        let err = Expr::compile(".a | | .b").unwrap_err();
        assert_eq!(err.offset, 5, "{err}");
        let err = Expr::compile("nosuchfn(1)").unwrap_err();
        assert!(err.message.contains("undefined filter nosuchfn"), "{err}");
        assert_eq!(err.offset, 0);
        assert!(Expr::compile("\"abc").is_err());
        assert!(Expr::compile("(.a").is_err());
    }

    #[test]
    fn runtime_errors_are_permanent_and_unquoted() {
        let e = Expr::compile(r#"error("bad input")"#).unwrap();
        let err = e.run(Value::Null, |_| {}).unwrap_err();
        assert!(!err.is_retryable());
        assert_eq!(
            err.message(),
            "expression `error(\"bad input\")`: bad input"
        );
    }

    #[test]
    fn a_long_expression_is_named_by_its_start_in_errors() {
        let long = r#"if (.qty // 0) > 0 then . else error("bad quantity") end"#;
        let err = Expr::compile(long)
            .unwrap()
            .run(Value::Null, |_| {})
            .unwrap_err();
        assert_eq!(
            err.message(),
            "expression `if (.qty // 0) > 0 then . els…`: bad quantity"
        );
        let multi = "if . == null\nthen error(\"none\")\nelse . end";
        let err = Expr::compile(multi)
            .unwrap()
            .run(Value::Null, |_| {})
            .unwrap_err();
        assert_eq!(err.message(), "expression `if . == null…`: none");
    }

    fn run_limited(
        code: &str,
        limits: &crate::interrupt::Limits,
    ) -> Result<Vec<String>, StageError> {
        let e = Expr::compile(code).unwrap();
        let mut out = Vec::new();
        crate::interrupt::within(limits, || e.run(Value::Null, |v| out.push(to_json(&v))))?;
        Ok(out)
    }

    #[test]
    fn a_runaway_evaluation_stops_at_its_deadline_and_try_cannot_catch_it() {
        let limits = crate::interrupt::Limits::timeout(std::time::Duration::from_millis(50));
        for code in [
            "last(range(1e18))",
            "def f: f; f",
            "[range(1e12)] | length",
            "[repeat(1)]",
            "try last(range(1e18)) catch \"caught\"",
            "label $out | repeat(1) | empty",
            "reduce range(1e18) as $i (0; . + 1)",
            "until(false; .)",
        ] {
            let err = run_limited(code, &limits).unwrap_err();
            assert_eq!(err.message(), "timed out after 50ms", "{code}");
            assert!(err.is_retryable(), "{code}");
        }
    }

    #[test]
    fn a_cancelled_evaluation_stops() {
        use std::sync::atomic::AtomicBool;
        let cancel = AtomicBool::new(true);
        let limits = crate::interrupt::Limits::cancelled_by(&cancel);
        let err = run_limited("last(range(1e18))", &limits).unwrap_err();
        assert_eq!(err.message(), "stopped: the run abandoned the item");
    }

    #[test]
    fn unbounded_recursion_is_an_error_not_a_stack_overflow() {
        // A thread with a small stack, as plugins' threads may have.
        let got = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(|| {
                ["def f: [f]; f", "def f: 1 + f; f", "def f: (1 | f) + 1; f"].map(|code| {
                    run_limited(code, &Default::default())
                        .unwrap_err()
                        .message()
                        .to_string()
                })
            })
            .unwrap()
            .join()
            .unwrap();
        for message in got {
            assert!(
                message.ends_with(
                    "recursed too deeply (the evaluation reached the end of the stack it may use)"
                ),
                "{message}"
            );
        }
    }

    #[test]
    fn an_output_nested_too_deeply_is_an_error_and_is_dropped_safely() {
        for n in [300, 100_000] {
            let code = format!("reduce range({n}) as $i (null; [.])");
            let err = run_limited(&code, &Default::default()).unwrap_err();
            assert!(
                err.message()
                    .ends_with("gave a value nested deeper than 256 levels"),
                "{err}"
            );
        }
        assert!(
            run_limited(
                "reduce range(255) as $i (null; [.]) | length",
                &Default::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn fromjson_is_strict_and_bounded() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        for text in [deep.as_str(), "NaN", "{1: 2}", "[1] // c"] {
            let e = Expr::compile("fromjson").unwrap();
            let err = e.run(string(text), |_| {}).unwrap_err();
            assert!(
                err.message()
                    .starts_with("expression `fromjson`: fromjson: "),
                "{err}"
            );
        }
        assert_eq!(
            outputs("fromjson", r#""[1, {\"a\": 2.50}]""#),
            [r#"[1,{"a":2.50}]"#]
        );
    }

    #[test]
    fn halt_fails_the_item_instead_of_exiting() {
        let e = Expr::compile("halt").unwrap();
        let err = e.run(Value::Null, |_| {}).unwrap_err();
        assert_eq!(
            err.message(),
            "expression `halt`: halt(0) stops the expression, not flow"
        );
        let e = Expr::compile(r#""bad \u001b[2J record" | halt_error"#).unwrap();
        let err = e.run(Value::Null, |_| {}).unwrap_err();
        assert!(
            err.message()
                .ends_with(r#"halt(5) stops the expression, not flow: bad \x1b[2J record"#),
            "{err}"
        );
    }

    #[test]
    fn first_stops_at_the_first_output() {
        let e = Expr::compile("range(1e18)").unwrap();
        assert_eq!(e.first(Value::Null).unwrap(), Some(int(0)));
    }

    #[test]
    fn deep_or_huge_expressions_are_errors_not_crashes() {
        let nest =
            |open: &str, close: &str, n: usize| format!("{}1{}", open.repeat(n), close.repeat(n));
        for code in [
            nest("(", ")", 1001),
            nest("[", "]", 1001),
            nest("{a:", "}", 1001),
            nest("- ", "", 1001),
            nest("\"\\(", ")\"", 1001),
        ] {
            let message = Expr::compile(&code).unwrap_err().message;
            assert!(
                message.starts_with("the expression nests ")
                    && message.ends_with(" levels deep; the limit is 1000"),
                "{message}"
            );
        }
        assert_eq!(
            Expr::compile(&nest("(", ")", 1001)).unwrap_err().message,
            "the expression nests 1001 levels deep; the limit is 1000"
        );
        assert!(Expr::compile(&nest("(", ")", 1000)).is_ok());
        // Other constructs take several characters a level: the longest
        // expression nested all the way still compiles on its own stack.
        for code in [
            vec!["."; MAX_EXPR_LEN / 2].join("|"),
            format!("{}1", "try ".repeat(MAX_EXPR_LEN / 4)),
            format!(
                "{}1{}",
                "if . then ".repeat(MAX_EXPR_LEN / 20),
                " end".repeat(MAX_EXPR_LEN / 20)
            ),
            format!("{}1", "1 + ".repeat(MAX_EXPR_LEN / 4)),
            format!("{}1", ".a as $x | ".repeat(MAX_EXPR_LEN / 11)),
        ] {
            let _ = Expr::compile(&code);
        }
        let long = format!("{} 1", " ".repeat(MAX_EXPR_LEN));
        let err = Expr::compile(&long).unwrap_err();
        assert_eq!(
            err.message,
            format!(
                "the expression is {} bytes long; the limit is 100000",
                MAX_EXPR_LEN + 2
            )
        );
    }

    #[test]
    fn expressions_can_be_shared_between_threads() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        send_sync(&Expr::compile(".").unwrap());
    }
}
