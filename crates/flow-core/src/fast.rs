//! Native evaluation of the expression shapes pipelines use most: a path
//! (`.user.id`), a comparison (`.score >= 50`), arithmetic (`. * 2`,
//! `.score / 10 | floor`), an object of those (`{id: ., v: (. * 2)}`), an
//! assignment or update of a path (`.bucket = …`, `.n += 1`), `select`,
//! `if`, `and`/`or`/`not`, `//`.
//!
//! jaq runs any jq; it pays for that generality on every item (a context,
//! boxed iterators, `{a: x, b: y}` built as `{a: x} + {b: y}`). These
//! shapes give at most one output and never loop, so a direct walk over the
//! value is much cheaper. The walk only ever takes the happy path: the
//! moment anything is unusual (a type error, a second output, a null where
//! an object is assigned into), it gives up and the expression is run by
//! jaq from the start, which decides what jq would do, errors included. The
//! expression is parsed by jaq's own parser, and every operation calls
//! jaq's own implementation (arithmetic, comparison, truthiness, rounding),
//! so the results are jaq's, number types included; a property test runs
//! both on random values and compares.

use jaq_core::ValT as _;
use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{BinaryOp, Term};
use jaq_core::ops::{Cmp, Math};
use jaq_core::path::{Opt, Part};

use crate::Value;
use crate::value::{Map, Num};

/// The deepest expression tree evaluated natively (deeper ones go to jaq,
/// which guards its own recursion).
const MAX_DEPTH: usize = 32;

/// An expression in the native subset.
#[derive(Debug)]
pub(crate) enum Fast {
    Id,
    Lit(Value),
    Var(usize),
    /// `base.k1.k2…`: object keys (strings) or array indices (integers).
    Path(Box<Fast>, Vec<(Value, Opt)>),
    Obj(Vec<(Value, Fast)>),
    Math(Box<Fast>, Math, Box<Fast>),
    Cmp(Box<Fast>, Cmp, Box<Fast>),
    And(Box<Fast>, Box<Fast>),
    Or(Box<Fast>, Box<Fast>),
    Alt(Box<Fast>, Box<Fast>),
    Neg(Box<Fast>),
    Not,
    Round(fn(f64) -> f64),
    Select(Box<Fast>),
    If(Vec<(Fast, Fast)>, Box<Fast>),
    Pipe(Box<Fast>, Box<Fast>),
    /// `.k1.k2… = rhs` (rhs run on the input).
    Assign(Vec<Value>, Box<Fast>),
    /// `.k1.k2… |= f` (f run on the value at the path).
    Update(Vec<Value>, Box<Fast>),
    /// `.k1.k2… op= rhs` (rhs run on the input).
    UpdateMath(Vec<Value>, Math, Box<Fast>),
}

/// The native walk gave up: jaq decides.
pub(crate) struct GiveUp;

type Out = Result<Option<Value>, GiveUp>;

impl Fast {
    /// The native form of `code` (with the global variables `vars`), if it
    /// is in the subset.
    pub(crate) fn compile(code: &str, vars: &[&str]) -> Option<Fast> {
        let term = jaq_core::load::parse(code, |p| p.term())?;
        from_term(&term, vars, 0)
    }

    /// Runs on an input the caller owns: an assignment at the top changes
    /// it in place instead of copying it. On [`GiveUp`] the input is given
    /// back untouched, for jaq.
    pub(crate) fn run(&self, input: Value, vars: &[Value]) -> Result<Option<Value>, Value> {
        match self {
            Fast::Id => Ok(Some(input)),
            Fast::Assign(keys, rhs) => match rhs.eval(&input, vars) {
                Ok(Some(v)) if assignable(&input, keys) => Ok(Some(set(input, keys, v))),
                Ok(None) => Ok(None),
                _ => Err(input),
            },
            Fast::Update(..) | Fast::UpdateMath(..) => match self.new_value(&input, vars) {
                Ok((keys, v)) => Ok(Some(set(input, keys, v))),
                Err(GiveUp) => Err(input),
            },
            _ => self.eval(&input, vars).map_err(|GiveUp| input),
        }
    }

    /// For an update: the path and the value to put there, once everything
    /// that can fail has been checked.
    fn new_value<'a>(&'a self, x: &Value, vars: &[Value]) -> Result<(&'a [Value], Value), GiveUp> {
        let (keys, v) = match self {
            Fast::Update(keys, f) => {
                let old = get(x, keys)?;
                (keys, f.eval(&old, vars)?.ok_or(GiveUp)?)
            }
            Fast::UpdateMath(keys, op, rhs) => {
                let r = rhs.eval(x, vars)?.ok_or(GiveUp)?;
                let old = get(x, keys)?;
                (keys, op.run(old, r).map_err(|_| GiveUp)?)
            }
            _ => return Err(GiveUp),
        };
        if assignable(x, keys) {
            Ok((keys, v))
        } else {
            Err(GiveUp)
        }
    }

    /// The output (`None`: none) for input `x`, which stays the caller's.
    pub(crate) fn eval(&self, x: &Value, vars: &[Value]) -> Out {
        Ok(Some(match self {
            Fast::Id => x.clone(),
            Fast::Lit(v) => v.clone(),
            Fast::Var(i) => vars.get(*i).ok_or(GiveUp)?.clone(),
            Fast::Path(base, keys) => {
                let Some(mut v) = base.eval(x, vars)? else {
                    return Ok(None);
                };
                for (key, opt) in keys {
                    v = match (index(&v, key), opt) {
                        (Ok(next), _) => next,
                        (Err(GiveUp), Opt::Optional) => return Ok(None),
                        (Err(GiveUp), Opt::Essential) => return Err(GiveUp),
                    };
                }
                v
            }
            Fast::Obj(fields) => {
                let mut map = Map::with_capacity_and_hasher(fields.len(), Default::default());
                for (k, f) in fields {
                    let Some(v) = f.eval(x, vars)? else {
                        return Ok(None);
                    };
                    map.insert(k.clone(), v);
                }
                Value::obj(map)
            }
            Fast::Math(l, op, r) => {
                let (Some(l), Some(r)) = (l.eval(x, vars)?, r.eval(x, vars)?) else {
                    return Ok(None);
                };
                op.run(l, r).map_err(|_| GiveUp)?
            }
            Fast::Cmp(l, op, r) => {
                let (Some(l), Some(r)) = (l.eval(x, vars)?, r.eval(x, vars)?) else {
                    return Ok(None);
                };
                Value::Bool(op.run(&l, &r))
            }
            Fast::And(l, r) | Fast::Or(l, r) => {
                let Some(l) = l.eval(x, vars)? else {
                    return Ok(None);
                };
                let decided = matches!(self, Fast::Or(..)) == l.as_bool();
                if decided {
                    Value::Bool(l.as_bool())
                } else {
                    let Some(r) = r.eval(x, vars)? else {
                        return Ok(None);
                    };
                    Value::Bool(r.as_bool())
                }
            }
            Fast::Alt(l, r) => match l.eval(x, vars)? {
                Some(v) if v.as_bool() => v,
                _ => return r.eval(x, vars),
            },
            Fast::Neg(t) => {
                let Some(v) = t.eval(x, vars)? else {
                    return Ok(None);
                };
                (-v).map_err(|_| GiveUp)?
            }
            Fast::Not => Value::Bool(!x.as_bool()),
            // As jaq rounds: an integer stays, a float becomes the
            // integer it rounds to (other cases go to jaq).
            Fast::Round(f) => match x {
                Value::Num(Num::Int(_)) => x.clone(),
                Value::Num(Num::Float(v)) => {
                    let r = f(*v);
                    if !(r.is_finite() && isize::MIN as f64 <= r && r <= isize::MAX as f64) {
                        return Err(GiveUp);
                    }
                    Value::from(r as isize)
                }
                _ => return Err(GiveUp),
            },
            Fast::Select(cond) => match cond.eval(x, vars)? {
                Some(c) if c.as_bool() => x.clone(),
                _ => return Ok(None),
            },
            Fast::If(branches, otherwise) => {
                for (cond, then) in branches {
                    let Some(c) = cond.eval(x, vars)? else {
                        return Ok(None);
                    };
                    if c.as_bool() {
                        return then.eval(x, vars);
                    }
                }
                return otherwise.eval(x, vars);
            }
            Fast::Pipe(a, b) => match a.eval(x, vars)? {
                Some(mid) => return b.eval(&mid, vars),
                None => return Ok(None),
            },
            Fast::Assign(keys, rhs) => {
                let Some(v) = rhs.eval(x, vars)? else {
                    return Ok(None);
                };
                if !assignable(x, keys) {
                    return Err(GiveUp);
                }
                set(x.clone(), keys, v)
            }
            Fast::Update(..) | Fast::UpdateMath(..) => {
                let (keys, v) = self.new_value(x, vars)?;
                set(x.clone(), keys, v)
            }
        }))
    }
}

/// `v[key]` where jaq gives a value without an error: an object's key (or
/// null when missing), a key of null (null), an array's index.
fn index(v: &Value, key: &Value) -> Result<Value, GiveUp> {
    match (v, key) {
        (Value::Obj(o), Value::TStr(_)) => Ok(o.get(key).cloned().unwrap_or(Value::Null)),
        (Value::Null, _) => Ok(Value::Null),
        (Value::Arr(_), Value::Num(_)) => v.clone().index(key).map_err(|_| GiveUp),
        _ => Err(GiveUp),
    }
}

/// The value at a path of object keys.
fn get(x: &Value, keys: &[Value]) -> Result<Value, GiveUp> {
    keys.iter().try_fold(x.clone(), |v, k| index(&v, k))
}

/// Whether `x` has objects all along `keys` (the last key may be missing):
/// then [`set`] cannot fail. Anything else (null, a missing object on the
/// way, an array) is left to jaq.
fn assignable(x: &Value, keys: &[Value]) -> bool {
    let mut v = x;
    for (i, k) in keys.iter().enumerate() {
        let Value::Obj(o) = v else {
            return false;
        };
        if i + 1 == keys.len() {
            return true;
        }
        match o.get(k) {
            Some(next) => v = next,
            None => return false,
        }
    }
    false
}

/// `x` with `v` at the path `keys`, checked by [`assignable`]: a key
/// already there keeps its place, a new one goes last (as jaq does).
fn set(mut x: Value, keys: &[Value], v: Value) -> Value {
    let mut at = &mut x;
    for (i, k) in keys.iter().enumerate() {
        let Value::Obj(o) = at else {
            unreachable!("checked by assignable")
        };
        let o = std::sync::Arc::make_mut(o);
        if i + 1 == keys.len() {
            o.insert(k.clone(), v);
            break;
        }
        at = o.get_mut(k).expect("checked by assignable");
    }
    x
}

fn boxed(t: &Term<&str>, vars: &[&str], depth: usize) -> Option<Box<Fast>> {
    from_term(t, vars, depth).map(Box::new)
}

/// The native form of a parsed term, if every part of it has one.
fn from_term(t: &Term<&str>, vars: &[&str], depth: usize) -> Option<Fast> {
    if depth > MAX_DEPTH {
        return None;
    }
    let d = depth + 1;
    Some(match t {
        Term::Id => Fast::Id,
        Term::Num(n) => Fast::Lit(Value::from_num(n).ok()?),
        Term::Str(None, _) => Fast::Lit(literal(t)?),
        Term::Var(name) => Fast::Var(vars.iter().position(|v| v == name)?),
        Term::Neg(t) => Fast::Neg(boxed(t, vars, d)?),
        Term::Path(base, path) => {
            let keys = path
                .0
                .iter()
                .map(|(part, opt)| match part {
                    Part::Index(k) => Some((key(k)?, *opt)),
                    Part::Range(..) => None,
                })
                .collect::<Option<_>>()?;
            Fast::Path(boxed(base, vars, d)?, keys)
        }
        Term::Obj(entries) => {
            let fields = entries
                .iter()
                .map(|(k, v)| {
                    let name = literal(k)?;
                    let value = match v {
                        Some(v) => from_term(v, vars, d)?,
                        // `{a}` is `{a: .a}`.
                        None => {
                            Fast::Path(Box::new(Fast::Id), vec![(name.clone(), Opt::Essential)])
                        }
                    };
                    Some((name, value))
                })
                .collect::<Option<_>>()?;
            Fast::Obj(fields)
        }
        Term::Call(name, args) => match (*name, &args[..]) {
            ("true", []) => Fast::Lit(Value::Bool(true)),
            ("false", []) => Fast::Lit(Value::Bool(false)),
            ("null", []) => Fast::Lit(Value::Null),
            ("not", []) => Fast::Not,
            ("floor", []) => Fast::Round(f64::floor),
            ("ceil", []) => Fast::Round(f64::ceil),
            ("round", []) => Fast::Round(f64::round),
            ("select", [cond]) => Fast::Select(boxed(cond, vars, d)?),
            _ => return None,
        },
        Term::IfThenElse(branches, otherwise) => {
            let branches = branches
                .iter()
                .map(|(c, t)| Some((from_term(c, vars, d)?, from_term(t, vars, d)?)))
                .collect::<Option<_>>()?;
            let otherwise = match otherwise {
                Some(e) => boxed(e, vars, d)?,
                None => Box::new(Fast::Id),
            };
            Fast::If(branches, otherwise)
        }
        Term::BinOp(l, op, r) => {
            let keys = || path_keys(l);
            match op {
                BinaryOp::Pipe(None) => Fast::Pipe(boxed(l, vars, d)?, boxed(r, vars, d)?),
                BinaryOp::Alt => Fast::Alt(boxed(l, vars, d)?, boxed(r, vars, d)?),
                BinaryOp::Or => Fast::Or(boxed(l, vars, d)?, boxed(r, vars, d)?),
                BinaryOp::And => Fast::And(boxed(l, vars, d)?, boxed(r, vars, d)?),
                BinaryOp::Math(m) => Fast::Math(boxed(l, vars, d)?, *m, boxed(r, vars, d)?),
                BinaryOp::Cmp(c) => Fast::Cmp(boxed(l, vars, d)?, *c, boxed(r, vars, d)?),
                BinaryOp::Assign => Fast::Assign(keys()?, boxed(r, vars, d)?),
                BinaryOp::Update => Fast::Update(keys()?, boxed(r, vars, d)?),
                BinaryOp::UpdateMath(m) => Fast::UpdateMath(keys()?, *m, boxed(r, vars, d)?),
                _ => return None,
            }
        }
        _ => return None,
    })
}

/// The keys of a path `.a.b` on the input, for an assignment.
fn path_keys(t: &Term<&str>) -> Option<Vec<Value>> {
    let Term::Path(base, path) = t else {
        return None;
    };
    if !matches!(**base, Term::Id) || path.0.is_empty() {
        return None;
    }
    path.0
        .iter()
        .map(|(part, opt)| match (part, opt) {
            (Part::Index(k), Opt::Essential) => match key(k)? {
                k @ Value::TStr(_) => Some(k),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// A path key: a literal string, or an integer.
fn key(t: &Term<&str>) -> Option<Value> {
    match t {
        Term::Num(n) if n.bytes().all(|b| b.is_ascii_digit()) && n.len() < 10 => {
            Value::from_num(n).ok()
        }
        _ => literal(t),
    }
}

/// A string literal without interpolation, as a value.
fn literal(t: &Term<&str>) -> Option<Value> {
    let Term::Str(None, parts) = t else {
        return None;
    };
    let mut s = String::new();
    for part in parts {
        match part {
            StrPart::Str(text) => s.push_str(text),
            StrPart::Char(c) => s.push(*c),
            StrPart::Term(_) => return None,
        }
    }
    Some(Value::from(s))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::Expr;
    use crate::value::{Value, to_json};

    /// What an expression does to an input: its outputs as JSON, or its
    /// error.
    fn outcome(e: &Expr, input: &Value, vars: &[Value]) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        e.run_with(input.clone(), vars, |v| out.push(to_json(&v)))
            .map(|()| out)
            .map_err(|e| e.to_string())
    }

    /// The shapes the native evaluation exists for, and neighbours of them.
    const SHAPES: &[&str] = &[
        ".",
        ".a",
        ".a.b",
        ".a?",
        ".a.b?",
        ".[0]",
        ".a[1]",
        ".[\"a\"]",
        ".score >= 50",
        ".a == .b",
        ".a != null",
        ". * 2",
        ".a + .b",
        ".a - 1",
        ".a / 10",
        ".a % 3",
        ".a / 10 | floor",
        "(.a / 3) | ceil",
        ".a | round",
        "-.a",
        "{id: ., v: (. * 2)}",
        "{a, b: .b, \"c d\": 1}",
        "{a: .a.b, n: $i}",
        ".bucket = (.score / 10 | floor)",
        ".a = 1",
        ".a.b = .c",
        ".a |= . + 1",
        ".a += 1",
        ".a.b -= .c",
        ".a // 0",
        ".a.b // \"none\"",
        "select(.a > 1)",
        "select(.a)",
        ".a and .b",
        ".a or .b",
        "not",
        "if .a then .b else .c end",
        "if .a > 1 then \"big\" elif .a > 0 then \"small\" end",
        "(.a | not) and true",
        ".a * .b % 5",
        "$i + .a",
        "null",
        "\"x\\ty\"",
        "1.5",
        "[.a]",
        ".a, .b",
    ];

    fn value() -> impl Strategy<Value = Value> {
        let key = prop::sample::select(vec!["a", "b", "c", "score", "c d"]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-20i64..20).prop_map(crate::value::int),
            any::<i64>().prop_map(crate::value::int),
            prop::sample::select(vec![0.5, -2.5, 1e300, -0.0, 3.75, 1e-9]).prop_map(Value::from),
            prop::sample::select(vec!["", "x", "50", "héllo"]).prop_map(crate::value::string),
        ];
        leaf.prop_recursive(4, 24, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|v| v.into_iter().collect()),
                prop::collection::vec((key.clone(), inner), 0..4).prop_map(crate::value::object),
            ]
        })
    }

    #[test]
    fn the_common_shapes_are_evaluated_natively() {
        for code in SHAPES {
            let e = Expr::compile_with_vars(code, &["$i"]).unwrap();
            let expected = !matches!(*code, "[.a]" | ".a, .b");
            assert_eq!(e.is_fast(), expected, "{code}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// On any value, each shape gives what jaq gives: the same
        /// outputs, as the same JSON text (so the same number types), or
        /// the same error.
        #[test]
        fn native_evaluation_equals_jaq(input in value(), i in any::<i64>(), which in 0..SHAPES.len()) {
            let code = SHAPES[which];
            let e = Expr::compile_with_vars(code, &["$i"]).unwrap();
            let vars = [crate::value::int(i)];
            prop_assert_eq!(outcome(&e, &input, &vars), outcome(&e.jaq_only(), &input, &vars), "{}", code);
        }

        /// `run_taking` gives the same outputs, and after an error the
        /// input lent is still the input (for the dead letter); `test`
        /// says whether the first output is true.
        #[test]
        fn a_lent_input_is_intact_after_an_error(input in value(), which in 0..SHAPES.len()) {
            let code = SHAPES[which];
            if code.contains('$') {
                return Ok(());
            }
            let e = Expr::compile(code).unwrap();
            let mut lent = input.clone();
            let mut out = Vec::new();
            let taken = e.run_taking(&mut lent, |v| { out.push(to_json(&v)); true });
            let expected = outcome(&e.jaq_only(), &input, &[]);
            match taken {
                Ok(()) => prop_assert_eq!(Ok(out), expected, "{}", code),
                Err(err) => {
                    prop_assert_eq!(Err(err.to_string()), expected, "{}", code);
                    prop_assert_eq!(to_json(&lent), to_json(&input), "{}", code);
                }
            }
            let first_true = match outcome(&e.jaq_only(), &input, &[]) {
                Ok(outs) => Ok(outs.first().is_some_and(|v| v != "null" && v != "false")),
                Err(err) => Err(err),
            };
            prop_assert_eq!(e.test(&input).map_err(|e| e.to_string()), first_true, "{}", code);
        }
    }
}
