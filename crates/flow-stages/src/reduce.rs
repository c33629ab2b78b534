//! `reduce`: folds items per key into accumulators, in bounded memory,
//! emitted at the end, per window, or every N items of a key.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flow_core::value::{int, object};
use flow_core::{
    BuildContext, ConfigError, Expr, Held, Lineage, Output, Stage, StageError, StageKind,
    StageOptions, StageType, Transform, Value,
};
use schemars::JsonSchema;
use serde::Deserialize;

/// Folds items per key into an accumulator with jq, and emits the
/// accumulators: at the end of the input (the default), per tumbling
/// `window`, or `every` N items of a key.
///
/// The general form: `key` (default: one group for all items), `init` (run
/// on a key's first item, gives the starting accumulator), `update` (run
/// on the accumulator with `$item` bound to each item, the first one
/// included, gives the new accumulator), and `result` (run on the
/// accumulator when it is emitted, with `$key` and, in a window,
/// `$window` = `{start, end}` in seconds since 1970; default `.`).
///
/// The shorthands compile to the same stage and emit `{key, count}`,
/// `{key, sum}`, `{key, min}`, `{key, max}` or `{key, avg}` (plus `window`
/// in a window): `count_by: .service`; `sum: .bytes` (with `by: .service`
/// for one per key), and likewise `min`, `max`, `avg`.
///
/// Windows: `window: 10s` alone is wall-clock time: an item goes in the
/// window it arrives in, and a window is emitted once an item arrives
/// after it (or the input is idle, or ends). With `time: .ts` (a number of
/// seconds since 1970, or an RFC 3339 text), an item goes in the window of
/// its own time; a window is emitted once an item at least
/// `allowed_lateness` past its end has been seen, and an item for a window
/// already emitted fails (`late item …`), through `on_error`.
///
/// Memory: at most `max_keys` accumulators (default 100,000) are kept;
/// past it the least recently updated is emitted early and a later item of
/// its key starts a new one (counted as `evicted` in the stage's stats,
/// and logged at the end). Workers share one
/// accumulator per key. An item whose `key`, `init` or `update` fails is
/// that item's error; its key's accumulator is unchanged. An emitted
/// accumulator carries the items folded into it: a source hears they were
/// delivered when it was (an accumulator whose `result` fails is dropped,
/// with a warning in the log naming its key and the error). A run that stops early (Ctrl-C, a failure)
/// emits nothing it has not emitted already: its accumulators' items are
/// abandoned, and a durable run does them again on resume.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReduceOptions {
    /// A jq expression giving each item's key; default: one group.
    #[serde(default)]
    pub key: Option<String>,
    /// A jq expression run on a key's first item: the starting accumulator.
    #[serde(default)]
    pub init: Option<String>,
    /// A jq expression run on the accumulator, `$item` the new item: the
    /// new accumulator.
    #[serde(default)]
    pub update: Option<String>,
    /// A jq expression run on the accumulator when it is emitted (`$key`,
    /// `$window`); default `.`.
    #[serde(default)]
    pub result: Option<String>,
    /// Shorthand: counts items per key (this jq expression); emits
    /// `{key, count}`.
    #[serde(default)]
    pub count_by: Option<String>,
    /// Shorthand: sums this jq value; emits `{key, sum}`.
    #[serde(default)]
    pub sum: Option<String>,
    /// Shorthand: the least of this jq value; emits `{key, min}`.
    #[serde(default)]
    pub min: Option<String>,
    /// Shorthand: the greatest of this jq value; emits `{key, max}`.
    #[serde(default)]
    pub max: Option<String>,
    /// Shorthand: the mean of this jq value; emits `{key, avg}`.
    #[serde(default)]
    pub avg: Option<String>,
    /// With `sum`, `min`, `max` or `avg`: the key (a jq expression).
    #[serde(default)]
    pub by: Option<String>,
    /// Emit every accumulator and start over at the end of each window of
    /// this length (`10s`, `1m`).
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    #[schemars(with = "Option<String>")]
    pub window: Option<Duration>,
    /// A jq expression giving an item's time (seconds since 1970, or RFC
    /// 3339 text): windows of event time instead of arrival time.
    #[serde(default)]
    pub time: Option<String>,
    /// With `time`: how long after a window's end its late items are
    /// still taken (default `0s`).
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    #[schemars(with = "Option<String>")]
    pub allowed_lateness: Option<Duration>,
    /// Emit a key's accumulator (and start over) after this many items of
    /// the key.
    #[serde(default)]
    pub every: Option<u64>,
    /// The most accumulators kept at once (default 100,000).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_max_keys() -> usize {
    100_000
}

/// The compiled expressions and settings, shared by the workers.
struct Config {
    key: Option<Expr>,
    init: Expr,
    update: Expr,
    result: Option<Expr>,
    window: Option<Duration>,
    time: Option<Expr>,
    lateness: Duration,
    every: Option<u64>,
    max_keys: usize,
}

/// One accumulator.
struct Slot {
    acc: Value,
    held: Held,
    count: u64,
    /// Its place in the order of updates (see [`State::order`]).
    tick: u64,
}

/// A key in its window (`None`: no windows).
type Key = (Option<i64>, Value);

#[derive(Default)]
struct State {
    slots: HashMap<Key, Slot>,
    /// The keys by their last update, oldest first: whom `max_keys`
    /// evicts.
    order: BTreeMap<u64, Key>,
    tick: u64,
    /// The open windows, with how many accumulators each holds.
    windows: BTreeMap<i64, usize>,
    /// Event time: the latest item time seen, in milliseconds.
    latest: Option<i64>,
    /// Windows before this one were emitted.
    closed_before: Option<i64>,
    evicted: u64,
}

struct Reduce {
    config: Arc<Config>,
    state: Arc<Mutex<State>>,
}

impl Reduce {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn first(expr: &Expr, input: Value, vars: &[Value], what: &str) -> Result<Value, StageError> {
    expr.first_with(input, vars)?
        .ok_or_else(|| StageError::permanent(format!("`{what}` gave no value")))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// An item time as milliseconds since 1970: a number of seconds, or RFC
/// 3339 text.
fn time_ms(v: &Value) -> Result<i64, StageError> {
    let bad = || {
        StageError::permanent(format!(
            "`time` gave {}, not seconds since 1970 or an RFC 3339 time",
            flow_core::value::to_json(v)
        ))
    };
    if let Some(secs) = flow_core::value::as_f64(v) {
        return if secs.is_finite() && secs.abs() < 1e15 {
            Ok((secs * 1000.0).floor() as i64)
        } else {
            Err(bad())
        };
    }
    let text = flow_core::value::as_str(v).ok_or_else(bad)?;
    let t = humantime::parse_rfc3339_weak(text).map_err(|_| bad())?;
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Ok(d.as_millis() as i64),
        Err(e) => Ok(-(e.duration().as_millis() as i64)),
    }
}

/// Seconds as a number value: whole seconds as an integer.
fn seconds(ms: i64) -> Value {
    if ms % 1000 == 0 {
        int(ms / 1000)
    } else {
        Value::from(ms as f64 / 1000.0)
    }
}

impl Reduce {
    fn window_ms(&self) -> Option<i64> {
        self.config.window.map(|w| (w.as_millis() as i64).max(1))
    }

    /// The accumulator of `slot`, as emitted.
    fn result(&self, key: &Key, acc: Value) -> Result<Value, StageError> {
        let Some(result) = &self.config.result else {
            return Ok(acc);
        };
        let window = match (key.0, self.window_ms()) {
            (Some(i), Some(w)) => {
                object([("start", seconds(i * w)), ("end", seconds((i + 1) * w))])
            }
            _ => Value::Null,
        };
        first(result, acc, &[key.1.clone(), window], "result")
    }

    fn emit(&self, out: &mut Output, key: &Key, mut slot: Slot) {
        let lineage: Lineage = slot.held.take();
        match self.result(key, slot.acc) {
            Ok(v) => out.emit_with(v, lineage),
            Err(e) => {
                // No item of its own to fail: the accumulator is dropped,
                // said in the log, and its items' sources hear it.
                tracing::warn!(
                    "`result` failed on the accumulator of key {}; its {} items are dropped: {e}",
                    flow_core::value::to_json(&key.1),
                    slot.count
                );
                lineage.mark(flow_core::Outcome::Dropped);
            }
        }
    }

    /// Takes `key`'s slot out of the state.
    fn remove(state: &mut State, key: &Key) -> Option<Slot> {
        let slot = state.slots.remove(key)?;
        state.order.remove(&slot.tick);
        if let Some(w) = key.0
            && let Some(n) = state.windows.get_mut(&w)
        {
            *n -= 1;
            if *n == 0 {
                state.windows.remove(&w);
            }
        }
        Some(slot)
    }

    /// Emits every window that ends before `before` (an index), its
    /// accumulators in the order they were last updated. A window closes
    /// once, so a walk over every accumulator (at most `max_keys`) is cheap.
    fn close_windows(&self, state: &mut State, before: i64, out: &mut Output) {
        let due: Vec<Key> = state
            .order
            .values()
            .filter(|(w, _)| w.is_some_and(|w| w < before))
            .cloned()
            .collect();
        for key in due {
            if let Some(slot) = Reduce::remove(state, &key) {
                self.emit(out, &key, slot);
            }
        }
        state.closed_before = Some(state.closed_before.map_or(before, |c| c.max(before)));
    }

    /// Emits the windows that are over: by the clock, or by event time.
    fn close_due(&self, state: &mut State, out: &mut Output) {
        let Some(w) = self.window_ms() else {
            return;
        };
        let before = if self.config.time.is_some() {
            match state.latest {
                // A window [i·w, (i+1)·w) closes once an item at least
                // the lateness past its end was seen.
                Some(latest) => {
                    let lateness = self.config.lateness.as_millis() as i64;
                    (latest - lateness).div_euclid(w)
                }
                None => return,
            }
        } else {
            now_ms().div_euclid(w)
        };
        if state
            .windows
            .first_key_value()
            .is_some_and(|(&f, _)| f < before)
        {
            self.close_windows(state, before, out);
        }
    }
}

impl Transform for Reduce {
    fn interruptible(&self) -> bool {
        true
    }

    fn apply(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError> {
        let config = &*self.config;
        let key = match &config.key {
            Some(k) => first(k, input.clone(), &[], "key")?,
            None => Value::Null,
        };
        let item_ms = match &config.time {
            Some(t) => Some(time_ms(&first(t, input.clone(), &[], "time")?)?),
            None => None,
        };
        let window = self
            .window_ms()
            .map(|w| item_ms.unwrap_or_else(now_ms).div_euclid(w));
        let mut state = self.state();
        if let (Some(w), Some(closed)) = (window, state.closed_before)
            && w < closed
        {
            let wms = self.window_ms().unwrap_or(1);
            return Err(StageError::permanent(format!(
                "late item: its window [{}, {}) was already emitted (allowed_lateness {})",
                w * wms / 1000,
                (w + 1) * wms / 1000,
                humantime::format_duration(config.lateness)
            )));
        }
        let full_key: Key = (window, key);
        let old = state.slots.get(&full_key).map(|slot| slot.acc.clone());
        let is_new = old.is_none();
        let acc = match old {
            Some(acc) => acc,
            None => first(&config.init, input.clone(), &[], "init")?,
        };
        let acc = first(&config.update, acc, std::slice::from_ref(input), "update")?;
        state.tick += 1;
        let tick = state.tick;
        if is_new {
            if state.slots.len() >= config.max_keys
                && let Some(oldest) = state.order.values().next().cloned()
                && let Some(slot) = Reduce::remove(&mut state, &oldest)
            {
                // Make room: the least recently updated accumulator goes now.
                state.evicted += 1;
                out.count("evicted", 1);
                self.emit(out, &oldest, slot);
            }
            if let Some(w) = window {
                *state.windows.entry(w).or_default() += 1;
            }
            let slot = Slot {
                acc: Value::Null,
                held: Held::new(),
                count: 0,
                tick,
            };
            state.slots.insert(full_key.clone(), slot);
        }
        let slot = state.slots.get_mut(&full_key).expect("inserted above");
        let old_tick = std::mem::replace(&mut slot.tick, tick);
        slot.acc = acc;
        slot.count += 1;
        slot.held.hold(out.lineage());
        let count = slot.count;
        state.order.remove(&old_tick);
        state.order.insert(tick, full_key.clone());
        if config.every.is_some_and(|n| count >= n)
            && let Some(slot) = Reduce::remove(&mut state, &full_key)
        {
            self.emit(out, &full_key, slot);
        }
        if let Some(ms) = item_ms {
            state.latest = Some(state.latest.map_or(ms, |l| l.max(ms)));
        }
        self.close_due(&mut state, out);
        Ok(())
    }

    fn flush(&mut self, out: &mut Output) -> Result<(), StageError> {
        if self.config.window.is_some() && self.config.time.is_none() {
            let mut state = self.state();
            self.close_due(&mut state, out);
        }
        Ok(())
    }

    fn finish_stage(&mut self, out: &mut Output) -> Result<(), StageError> {
        let mut state = self.state();
        if state.evicted > 0 {
            tracing::warn!(
                "{} accumulators were emitted early to stay within max_keys ({})",
                state.evicted,
                self.config.max_keys
            );
        }
        if out.run_stopping() {
            // Dropped with their items abandoned: a partial result emitted
            // now would be counted twice by a run that resumes.
            return Ok(());
        }
        let order = std::mem::take(&mut state.order);
        for (_, key) in order {
            if let Some(slot) = state.slots.remove(&key) {
                self.emit(out, &key, slot);
            }
        }
        state.windows.clear();
        Ok(())
    }
}

impl ReduceOptions {
    /// The key, init, update and result of the form used: the general one,
    /// or a shorthand's.
    fn forms(&self) -> Result<[Option<String>; 4], ConfigError> {
        let shorthands = [
            ("count_by", &self.count_by),
            ("sum", &self.sum),
            ("min", &self.min),
            ("max", &self.max),
            ("avg", &self.avg),
        ];
        let given: Vec<&str> = shorthands
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| *k)
            .collect();
        let window = if self.window.is_some() {
            " + {window: $window}"
        } else {
            ""
        };
        let Some(&which) = given.first() else {
            if self.by.is_some() {
                return Err(ConfigError::new("by", "goes with sum, min, max or avg"));
            }
            let need = |k: &str, v: &Option<String>| {
                v.clone().ok_or_else(|| {
                    ConfigError::new(
                        k,
                        "is required (or use a shorthand: count_by, sum, min, max, avg)",
                    )
                })
            };
            return Ok([
                self.key.clone(),
                Some(need("init", &self.init)?),
                Some(need("update", &self.update)?),
                self.result.clone(),
            ]);
        };
        if given.len() > 1 {
            return Err(ConfigError::new(
                given[1],
                format!("one shorthand per stage; {} is given too", given[0]),
            ));
        }
        for (k, v) in [
            ("key", &self.key),
            ("init", &self.init),
            ("update", &self.update),
            ("result", &self.result),
        ] {
            if v.is_some() {
                return Err(ConfigError::new(
                    k,
                    format!("not with the shorthand {which}, which sets it"),
                ));
            }
        }
        if which == "count_by" {
            if self.by.is_some() {
                return Err(ConfigError::new("by", "count_by names the key itself"));
            }
            return Ok([
                self.count_by.clone(),
                Some("0".into()),
                Some(". + 1".into()),
                Some(format!("{{key: $key, count: .}}{window}")),
            ]);
        }
        let v = shorthands
            .iter()
            .find(|(k, _)| *k == which)
            .and_then(|(_, v)| v.as_deref())
            .unwrap_or(".");
        let item = format!("($item | ({v}))");
        let (init, update, result) = match which {
            "sum" => (
                "0".to_string(),
                format!(". + {item}"),
                "{key: $key, sum: .}",
            ),
            "min" => (
                format!("({v})"),
                format!("[., {item}] | min"),
                "{key: $key, min: .}",
            ),
            "max" => (
                format!("({v})"),
                format!("[., {item}] | max"),
                "{key: $key, max: .}",
            ),
            _ => (
                "{sum: 0, n: 0}".to_string(),
                format!("{{sum: (.sum + {item}), n: (.n + 1)}}"),
                "{key: $key, avg: (.sum / .n)}",
            ),
        };
        Ok([
            self.by.clone(),
            Some(init),
            Some(update),
            Some(format!("{result}{window}")),
        ])
    }
}

impl StageOptions for ReduceOptions {
    fn build(self, _ctx: &BuildContext) -> Result<Stage, ConfigError> {
        let Reduce { config, state } = self.reduce()?;
        Ok(Stage::transform(move || Reduce {
            config: config.clone(),
            state: state.clone(),
        }))
    }
}

impl ReduceOptions {
    /// The stage's first worker; the others share its state.
    fn reduce(self) -> Result<Reduce, ConfigError> {
        let [key, init, update, result] = self.forms()?;
        let compile = |name: &str, code: &str, vars: &[&str]| {
            Expr::compile_with_vars(code, vars).map_err(|e| ConfigError::expr(name, e))
        };
        // A shorthand's expressions are built from its value: an error
        // names the shorthand's key.
        let shorthand = ["count_by", "sum", "min", "max", "avg"]
            .into_iter()
            .zip([&self.count_by, &self.sum, &self.min, &self.max, &self.avg])
            .find(|(_, v)| v.is_some())
            .map(|(k, _)| k);
        let at = |own: &'static str| shorthand.unwrap_or(own);
        let key_at = match shorthand {
            Some("count_by") => "count_by",
            Some(_) => "by",
            None => "key",
        };
        if self.time.is_some() && self.window.is_none() {
            return Err(ConfigError::new(
                "time",
                "goes with window (event-time windows)",
            ));
        }
        if self.allowed_lateness.is_some() && self.time.is_none() {
            return Err(ConfigError::new(
                "allowed_lateness",
                "goes with time (late items exist only in event time)",
            ));
        }
        if self.every == Some(0) {
            return Err(ConfigError::new("every", "must be at least 1"));
        }
        if self.max_keys == 0 {
            return Err(ConfigError::new("max_keys", "must be at least 1"));
        }
        if self.window.is_some_and(|w| w.is_zero()) {
            return Err(ConfigError::new("window", "must be longer than 0s"));
        }
        let config = Arc::new(Config {
            key: key.map(|k| compile(key_at, &k, &[])).transpose()?,
            init: compile(at("init"), &init.unwrap_or_default(), &[])?,
            update: compile(at("update"), &update.unwrap_or_default(), &["$item"])?,
            result: result
                .map(|r| compile(at("result"), &r, &["$key", "$window"]))
                .transpose()?,
            window: self.window,
            time: self
                .time
                .as_deref()
                .map(|t| compile("time", t, &[]))
                .transpose()?,
            lateness: self.allowed_lateness.unwrap_or_default(),
            every: self.every,
            max_keys: self.max_keys,
        });
        Ok(Reduce {
            config,
            state: Arc::new(Mutex::new(State::default())),
        })
    }
}

flow_core::inventory::submit! {
    StageType::new::<ReduceOptions>(
        "reduce",
        StageKind::Processor,
        "Folds items per key (counts, sums, groups) in bounded memory: at the end, per window, or every N.",
        "- name: per-service\n  type: reduce\n  with: { count_by: .service }\n",
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use flow_core::{Lineage, Outcome};

    use super::*;

    fn stage(with: serde_json::Value) -> Reduce {
        let options: ReduceOptions = serde_json::from_value(with).unwrap();
        options.reduce().unwrap()
    }

    /// Items with hooks that record their outcome.
    fn hooked(outcomes: &Arc<StdMutex<Vec<Outcome>>>) -> Lineage {
        let outcomes = outcomes.clone();
        Lineage::with_hook(move |o| outcomes.lock().unwrap().push(o))
    }

    #[test]
    fn items_folded_in_are_delivered_when_their_accumulator_is() {
        let outcomes = Arc::new(StdMutex::new(Vec::new()));
        let mut r = stage(serde_json::json!({ "count_by": "." }));
        let mut out = Output::new();
        for v in [1, 2, 1] {
            out.set_lineage(hooked(&outcomes));
            r.apply(&int(v), &mut out).unwrap();
        }
        out.set_lineage(Lineage::NONE);
        assert!(
            outcomes.lock().unwrap().is_empty(),
            "held by the accumulators"
        );
        r.finish_stage(&mut out).unwrap();
        let emitted: Vec<_> = out.items_mut().drain(..).collect();
        assert_eq!(emitted.len(), 2);
        assert!(outcomes.lock().unwrap().is_empty(), "held by the outputs");
        drop(emitted);
        assert_eq!(*outcomes.lock().unwrap(), vec![Outcome::Delivered; 3]);
    }

    #[test]
    fn a_run_that_stops_early_emits_nothing_and_abandons_what_was_folded_in() {
        let outcomes = Arc::new(StdMutex::new(Vec::new()));
        let mut r = stage(serde_json::json!({ "count_by": "." }));
        let mut out = Output::new();
        out.set_lineage(hooked(&outcomes));
        r.apply(&int(1), &mut out).unwrap();
        out.set_lineage(Lineage::NONE);
        out.set_run_stopping(true);
        r.finish_stage(&mut out).unwrap();
        assert!(out.items_mut().is_empty());
        drop(r);
        assert_eq!(*outcomes.lock().unwrap(), vec![Outcome::Abandoned]);
    }
}
