//! Checks of the runner-owned flow-control keys (rate limits, retries,
//! timeouts, queue order and bounds, output order), from the stage or from
//! `defaults:`, resolved into a [`FlowControl`] and a [`QueueConfig`].

use std::collections::BTreeMap;
use std::sync::Arc;

use flow_core::Expr;

use super::checks::Checker;
use crate::control::{DEFAULT_BACKOFF, FlowControl, RetryPolicy, parse_bytes};
use crate::queue::QueueConfig;
use crate::rate::{Limiter, Rate};
use crate::spec::{MAX_ATTEMPTS, MAX_BURST, Order, PipelineSpec, StageSpec};
use crate::suggest::hint;

/// A setting as found: the stage's own, or the default's.
struct Found<'a, T> {
    value: &'a T,
    /// The YAML path of the value used.
    path: String,
    /// Whether the stage set it itself.
    own: bool,
}

impl<T> Found<'_, T> {
    /// The key as a message names it: `rate`, or `defaults.rate`.
    fn key(&self, key: &str) -> String {
        if self.own {
            key.to_string()
        } else {
            format!("defaults.{key}")
        }
    }
}

/// What is wrong with a bucket size, if anything.
fn burst_problem(burst: u32) -> Option<String> {
    match burst {
        0 => Some("must be at least 1".into()),
        b if b > MAX_BURST => Some(format!("must be at most {MAX_BURST}")),
        _ => None,
    }
}

/// The stage's own setting or, for processors and sinks, the default.
fn pick<'a, T>(
    i: usize,
    key: &str,
    own: &'a Option<T>,
    default: &'a Option<T>,
    source: bool,
) -> Option<Found<'a, T>> {
    match (own, default) {
        (Some(value), _) => Some(Found {
            value,
            path: format!("stages[{i}].{key}"),
            own: true,
        }),
        (None, Some(value)) if !source => Some(Found {
            value,
            path: format!("defaults.{key}"),
            own: false,
        }),
        _ => None,
    }
}

impl Checker<'_> {
    /// Builds the named limits of `limits:`: one bucket each, shared by
    /// every stage that names it. A limit with a bad value is reported here
    /// and kept as `None`, so the stages naming it are not told it is
    /// unknown.
    pub(super) fn resolve_limits(
        &mut self,
        spec: &PipelineSpec,
    ) -> BTreeMap<String, Option<Arc<Limiter>>> {
        let mut limits = BTreeMap::new();
        for (name, limit) in &spec.limits {
            let path = format!("limits.{name}");
            let rate = match limit.rate().parse::<Rate>() {
                Ok(rate) => rate,
                Err(e) => {
                    let at = match limit {
                        crate::spec::LimitSpec::Rate(_) => path.clone(),
                        crate::spec::LimitSpec::Full(_) => format!("{path}.rate"),
                    };
                    let pos = self.positions.value(&at);
                    self.report(None, pos, format!("{at}: {e}"));
                    limits.insert(name.clone(), None);
                    continue;
                }
            };
            let burst = limit.burst().unwrap_or(1);
            if let Some(why) = burst_problem(burst) {
                let pos = self.positions.value(&format!("{path}.burst"));
                self.report(None, pos, format!("{path}.burst: {why}"));
                limits.insert(name.clone(), None);
                continue;
            }
            limits.insert(name.clone(), Some(Arc::new(Limiter::new(rate, burst))));
        }
        limits
    }

    /// Checks stage `i`'s flow-control keys and resolves them.
    pub(super) fn resolve_control(
        &mut self,
        i: usize,
        s: &StageSpec,
        spec: &PipelineSpec,
        source: bool,
        capacity: usize,
        limits: &BTreeMap<String, Option<Arc<Limiter>>>,
    ) -> (FlowControl, QueueConfig) {
        let d = &spec.defaults;
        let mut control = FlowControl::default();
        let mut queue = QueueConfig::fifo(capacity);
        let name = s.name.as_str();

        // Keys about an input queue or about retrying items mean nothing to
        // a source: a bad record goes to its `on_error`, and its own
        // failure stops the run.
        if source {
            let inapplicable = [
                (
                    "retry",
                    s.retry.is_some(),
                    "a source is never retried (a bad record goes to its on_error); retries are for processors and sinks",
                ),
                (
                    "timeout",
                    s.timeout.is_some(),
                    "a source has no timeout per item; timeouts are for processors and sinks",
                ),
                ("order", s.order.is_some(), "a source has no input queue"),
                (
                    "priority",
                    s.priority.is_some(),
                    "a source has no input queue",
                ),
                (
                    "queue_bytes",
                    s.queue_bytes.is_some(),
                    "a source has no input queue",
                ),
                (
                    "ordered",
                    s.ordered.is_some(),
                    "a source emits in its own order",
                ),
            ];
            for (key, set, why) in inapplicable {
                if set {
                    let pos = self.positions.key(&format!("stages[{i}].{key}"));
                    self.report(Some(name), pos, format!("{key}: {why}"));
                }
            }
        }

        // Rate limit: a named limit, or an inline rate with its own bucket.
        let burst = pick(i, "burst", &s.burst, &d.burst, source);
        if let Some(b) = &burst
            && let Some(why) = burst_problem(*b.value)
        {
            let pos = self.positions.value(&b.path);
            let stage = b.own.then_some(name);
            self.report(stage, pos, format!("{}: {why}", b.key("burst")));
        }
        let rate = pick(i, "rate", &s.rate, &d.rate, source);
        let rated = rate.is_some();
        match rate {
            None => {
                if let Some(b) = burst.as_ref().filter(|b| b.own) {
                    let pos = self.positions.key(&b.path);
                    self.report(Some(name), pos, "burst: needs a `rate`");
                }
            }
            Some(rate) => {
                let stage = rate.own.then_some(name);
                let pos = self.positions.value(&rate.path);
                if let Some(limiter) = limits.get(rate.value.as_str()) {
                    // A stage's burst, or a default one beside a default
                    // rate, would be ignored: the shared bucket has its own.
                    if let Some(b) = burst.as_ref().filter(|b| b.own || !rate.own) {
                        let pos = self.positions.key(&b.path);
                        let message = format!(
                            "{}: \"{}\" is a shared limit; set its burst under `limits:`",
                            b.key("burst"),
                            rate.value
                        );
                        self.report(b.own.then_some(name), pos, message);
                    }
                    control.rate = limiter.clone();
                    if let Some(limit) = spec.limits.get(rate.value.as_str()) {
                        let text = format!("{} ({})", rate.value, limit.rate().trim());
                        control.rate_text = Some(text);
                    }
                } else if rate.value.contains('/') {
                    match rate.value.parse::<Rate>() {
                        Ok(r) => {
                            let b = burst.as_ref().map_or(1, |b| *b.value);
                            let b = b.clamp(1, MAX_BURST);
                            control.rate = Some(Arc::new(Limiter::new(r, b)));
                            control.rate_text = Some(rate.value.trim().to_string());
                        }
                        Err(e) => self.report(stage, pos, format!("{}: {e}", rate.key("rate"))),
                    }
                } else {
                    // The names are sorted (a map ordered by key), so a tie
                    // between two near names is always broken the same way.
                    let names = limits.keys().map(String::as_str);
                    let hint = if self.may_hint() {
                        hint(rate.value, names)
                    } else {
                        String::new()
                    };
                    let message = format!(
                        "{}: \"{}\" is neither a rate like 5/s nor a limit under `limits:`{hint}",
                        rate.key("rate"),
                        rate.value,
                    );
                    self.report(stage, pos, message);
                }
            }
        }
        if let Some(code) = &s.rate_key {
            let path = format!("stages[{i}].rate_key");
            if !rated {
                let pos = self.positions.key(&path);
                self.report(Some(name), pos, "rate_key: needs a `rate`");
            }
            control.rate_key = self.expression(i, name, "rate_key", code);
        }

        // Retries.
        if let Some(retry) = pick(i, "retry", &s.retry, &d.retry, source) {
            let stage = retry.own.then_some(name);
            let key = retry.key("retry");
            let r = retry.value;
            let why = match r.attempts {
                0 => Some("must be at least 1 (the first try counts)".to_string()),
                n if n > MAX_ATTEMPTS => Some(format!("must be at most {MAX_ATTEMPTS}")),
                _ => None,
            };
            if let Some(why) = why {
                let pos = self.positions.value(&format!("{}.attempts", retry.path));
                self.report(stage, pos, format!("{key}.attempts: {why}"));
            }
            let backoff = r.backoff.unwrap_or(DEFAULT_BACKOFF);
            if let Some(max) = r.max_backoff.filter(|m| *m < backoff) {
                let pos = self.positions.value(&format!("{}.max_backoff", retry.path));
                let message = format!(
                    "{key}.max_backoff: {} is less than the backoff ({}{})",
                    humantime::format_duration(max),
                    humantime::format_duration(backoff),
                    if r.backoff.is_none() {
                        ", the default"
                    } else {
                        ""
                    }
                );
                self.report(stage, pos, message);
            }
            control.retry = RetryPolicy {
                attempts: r.attempts.clamp(1, MAX_ATTEMPTS),
                backoff,
                max_backoff: r.max_backoff,
                jitter: r.jitter,
            };
        }

        // Timeout of one attempt.
        if let Some(timeout) = pick(i, "timeout", &s.timeout, &d.timeout, source) {
            if timeout.value.is_zero() {
                let pos = self.positions.value(&timeout.path);
                let stage = timeout.own.then_some(name);
                self.report(
                    stage,
                    pos,
                    format!("{}: must be longer than zero", timeout.key("timeout")),
                );
            } else {
                control.timeout = Some(*timeout.value);
            }
        }

        // Output order.
        if let Some(ordered) = pick(i, "ordered", &s.ordered, &d.ordered, source) {
            control.ordered = *ordered.value;
        }

        // Queue order and size bound.
        let order = pick(i, "order", &s.order, &d.order, source);
        if let Some(order) = &order {
            queue.order = *order.value;
        }
        match (&s.priority, queue.order) {
            (Some(code), Order::Priority) => {
                queue.priority = self.expression(i, name, "priority", code);
            }
            // A source's priority was reported above.
            (Some(_), _) if !source => {
                let pos = self.positions.key(&format!("stages[{i}].priority"));
                self.report(Some(name), pos, "priority: needs `order: priority`");
            }
            (None, Order::Priority) if !source => {
                // From `defaults:`, the stage is what lacks the expression.
                let (path, key) = match order.filter(|o| !o.own) {
                    None => (format!("stages[{i}].order"), "order"),
                    Some(_) => (format!("stages[{i}]"), "defaults.order"),
                };
                let pos = self.positions.value(&path);
                let message = format!(
                    "{key}: priority needs a `priority` expression (lower comes out first)"
                );
                self.report(Some(name), pos, message);
            }
            _ => {}
        }
        if let Some(bytes) = pick(i, "queue_bytes", &s.queue_bytes, &d.queue_bytes, source) {
            match parse_bytes(bytes.value) {
                Ok(n) => queue.max_bytes = Some(n),
                Err(e) => {
                    let pos = self.positions.value(&bytes.path);
                    let stage = bytes.own.then_some(name);
                    self.report(stage, pos, format!("{}: {e}", bytes.key("queue_bytes")));
                }
            }
        }
        (control, queue)
    }

    /// Compiles a runner-owned expression, reporting an error at the column
    /// inside it.
    fn expression(&mut self, i: usize, stage: &str, key: &str, code: &str) -> Option<Expr> {
        // The same text in many stages is compiled once.
        if let Some(e) = self.expressions.get(code) {
            return Some(e.clone());
        }
        match Expr::compile(code) {
            Ok(e) => {
                self.expressions.insert(code.to_string(), e.clone());
                Some(e)
            }
            Err(e) => {
                let pos = self
                    .positions
                    .inside(&format!("stages[{i}].{key}"), e.offset);
                let message = super::teach::expression_problem(key, code, &e);
                self.report(Some(stage), pos, message);
                None
            }
        }
    }
}
