//! jq expressions, compiled once per stage and run per item.
//!
//! Every expression in a pipeline (`map`, `filter`, `priority`, `rate_key`,
//! an http `url`, a file name, a dedupe key) is jq, run by jaq with its
//! standard library.

use std::fmt;
use std::sync::Arc;

use jaq_core::load::{Arena, File, Loader, lex, parse};
use jaq_core::{Ctx, Vars, compile, data, unwrap_valr};

use crate::value::to_text;
use crate::{StageError, Value};

type Filter = jaq_core::Filter<data::JustLut<Value>>;

/// A compiled jq expression. Cheap to clone and shared by all workers.
#[derive(Clone)]
pub struct Expr {
    code: Arc<str>,
    filter: Arc<Filter>,
    vars: usize,
}

/// Why an expression does not compile, with the byte offset in its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExprError {
    pub message: String,
    pub offset: usize,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at character {})", self.message, self.offset + 1)
    }
}

impl std::error::Error for ExprError {}

impl Expr {
    /// Compiles `code`, which may use no variables.
    pub fn compile(code: &str) -> Result<Self, ExprError> {
        Self::compile_with_vars(code, &[])
    }

    /// Compiles `code`, which may use the global variables `vars` (named
    /// with their `$`); [`Expr::run_with`] gives their values in that order.
    pub fn compile_with_vars(code: &str, vars: &[&str]) -> Result<Self, ExprError> {
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
                            message: format!(
                                "expected {}, found {found}",
                                parse_expectation(&expect)
                            ),
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
            .chain(jaq_json::funs());
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
        })
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
    pub fn run_with(
        &self,
        input: Value,
        vars: &[Value],
        mut each: impl FnMut(Value),
    ) -> Result<(), StageError> {
        debug_assert_eq!(vars.len(), self.vars, "one value per compiled variable");
        let ctx =
            Ctx::<data::JustLut<Value>>::new(&self.filter.lut, Vars::new(vars.iter().cloned()));
        for out in self.filter.id.run((ctx, input)).map(unwrap_valr) {
            match out {
                Ok(v) => each(v),
                Err(e) => {
                    return Err(StageError::permanent(format!(
                        "expression `{}`: {}",
                        self.code,
                        to_text(&e.into_val())
                    )));
                }
            }
        }
        Ok(())
    }

    /// The expression's first output (`None` when it has none).
    pub fn first(&self, input: Value) -> Result<Option<Value>, StageError> {
        self.first_with(input, &[])
    }

    /// [`Expr::first`] with variables.
    pub fn first_with(&self, input: Value, vars: &[Value]) -> Result<Option<Value>, StageError> {
        let mut first = None;
        self.run_with(input, vars, |v| {
            first.get_or_insert(v);
        })?;
        Ok(first)
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
    e.as_str()
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
    use crate::value::{int, to_json};

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
    fn expressions_can_be_shared_between_threads() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        send_sync(&Expr::compile(".").unwrap());
    }
}
