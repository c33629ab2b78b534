//! The runner-owned settings that shape how a stage handles each item:
//! rate limit, retries, timeout, queue order and bounds, output order.
//! [`crate::plan`] resolves them from the file; [`crate::worker`] applies
//! them around every stage call, so no stage implements any of them.

use std::sync::Arc;
use std::time::Duration;

use flow_core::Expr;

use crate::rate::Limiter;

/// How one stage's items are handled around the stage's own call.
#[derive(Clone, Default)]
pub struct FlowControl {
    /// Every attempt at an item takes a token first (retries too).
    pub rate: Option<Arc<Limiter>>,
    /// The rate as the file gives it, for display: `20/s`, or a named
    /// limit with its rate, `polite (10/s)`.
    pub rate_text: Option<String>,
    /// One bucket per value of this expression (e.g. the URL's host).
    pub rate_key: Option<Expr>,
    pub retry: RetryPolicy,
    /// The limit on one attempt.
    pub timeout: Option<Duration>,
    /// Items leave the stage in the order they entered it.
    pub ordered: bool,
}

impl FlowControl {
    /// True when items need handling one at a time (a layer awaits per
    /// item); otherwise cheap stages take the batched fast path.
    pub fn per_item(&self) -> bool {
        self.rate.is_some() || self.retry.attempts > 1 || self.timeout.is_some()
    }
}

impl FlowControl {
    /// The rate-limit bucket of an item: the text of `rate_key`'s first
    /// output (`None` without a `rate_key`).
    pub fn rate_key_of(&self, value: &flow_core::Value) -> Option<String> {
        let expr = self.rate_key.as_ref()?;
        let key = match expr.first(value.clone()) {
            Ok(key) => key
                .as_ref()
                .map(flow_core::value::to_text)
                .unwrap_or_default(),
            // An item the key expression fails on shares one bucket.
            Err(_) => String::new(),
        };
        Some(key)
    }
}

/// `retry:` of a stage: exponential backoff between attempts.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Total tries, the first included.
    pub attempts: u32,
    /// The wait after the first failed attempt; it doubles each time.
    pub backoff: Duration,
    pub max_backoff: Option<Duration>,
    /// Waits are drawn between half and all of the computed wait.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 1,
            backoff: DEFAULT_BACKOFF,
            max_backoff: None,
            jitter: false,
        }
    }
}

pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(100);

impl RetryPolicy {
    /// How long to wait after failed attempt number `attempt` (from 1). A
    /// `retry_after` from the error (an HTTP `Retry-After`) replaces the
    /// backoff; `max_backoff` caps both. Jitter applies to the capped
    /// backoff, so waits at the cap are spread too. No wait is longer than
    /// [`flow_core::MAX_DURATION`] (365 days), whatever a server asks.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let cap = |d: Duration| {
            self.max_backoff
                .map_or(d, |max| d.min(max))
                .min(flow_core::MAX_DURATION)
        };
        match retry_after {
            Some(d) => cap(d),
            None => {
                let doublings = attempt.saturating_sub(1).min(30);
                let d = cap(self.backoff.saturating_mul(1 << doublings));
                if self.jitter { jittered(d) } else { d }
            }
        }
    }
}

/// A wait drawn uniformly between half of `d` and `d` ("equal jitter"): it
/// spreads retries apart and never waits less than half the backoff.
fn jittered(d: Duration) -> Duration {
    use std::cell::Cell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static SEED: Cell<u64> = Cell::new(
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0x9e37_79b9, |t| t.as_nanos() as u64) | 1,
        );
    }
    // xorshift64*: plenty for spreading retries, no dependency.
    let r = SEED.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    });
    let unit = (r >> 11) as f64 / (1u64 << 53) as f64;
    d.mul_f64(0.5 + unit / 2.0)
}

/// The largest `queue_bytes`: 64 GiB.
pub const MAX_QUEUE_BYTES: u64 = 64 << 30;

/// Parses a size: `1024`, `64KB`, `256MiB`, `1.5GB`; at least one byte, at
/// most [`MAX_QUEUE_BYTES`].
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let too_large = || format!("invalid size {text:?}: must be at most 64GiB");
    let bytes = flow_core::parse_size(text).map_err(|e| {
        if e.ends_with("too large") {
            too_large()
        } else {
            e
        }
    })?;
    if bytes > MAX_QUEUE_BYTES {
        return Err(too_large());
    }
    Ok(usize::try_from(bytes).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(backoff_ms: u64, max_ms: Option<u64>) -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            backoff: Duration::from_millis(backoff_ms),
            max_backoff: max_ms.map(Duration::from_millis),
            jitter: false,
        }
    }

    #[test]
    fn backoff_doubles_after_each_failed_attempt_up_to_the_cap() {
        let p = policy(100, Some(500));
        let waits: Vec<u128> = (1..=5).map(|a| p.delay(a, None).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn retry_after_replaces_the_backoff_capped_by_max_backoff() {
        let p = policy(100, Some(2000));
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(30))),
            Duration::from_secs(2)
        );
        assert_eq!(
            policy(100, None).delay(1, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_backoff() {
        let p = RetryPolicy {
            jitter: true,
            ..policy(1000, None)
        };
        for _ in 0..1000 {
            let d = p.delay(1, None);
            assert!(
                d >= Duration::from_millis(500) && d <= Duration::from_millis(1000),
                "{d:?}"
            );
        }
    }

    #[test]
    fn jitter_spreads_waits_capped_by_max_backoff_too() {
        let p = RetryPolicy {
            jitter: true,
            ..policy(1000, Some(3000))
        };
        // The fifth wait would be 16 s: capped at 3 s, then drawn.
        let waits: Vec<Duration> = (0..1000).map(|_| p.delay(5, None)).collect();
        assert!(
            waits
                .iter()
                .all(|d| *d >= Duration::from_millis(1500) && *d <= Duration::from_secs(3))
        );
        assert!(
            waits.iter().any(|d| *d < Duration::from_millis(2900)),
            "capped waits are not jittered"
        );
    }

    #[test]
    fn sizes_parse_in_decimal_and_binary_units() {
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("64KB").unwrap(), 64_000);
        assert_eq!(parse_bytes("256MiB").unwrap(), 256 * 1024 * 1024);
        assert_eq!(parse_bytes("1.5 GB").unwrap(), 1_500_000_000);
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("0").is_err());
    }

    #[test]
    fn sizes_are_bounded_and_never_overflow() {
        assert_eq!(parse_bytes("64GiB").unwrap(), 64 << 30);
        assert_eq!(
            parse_bytes("65GiB").unwrap_err(),
            "invalid size \"65GiB\": must be at most 64GiB"
        );
        let huge = "9".repeat(400);
        assert!(
            parse_bytes(&huge)
                .unwrap_err()
                .ends_with("must be at most 64GiB")
        );
        assert!(parse_bytes("1.2.3").is_err());
        assert!(parse_bytes(".").is_err());
    }

    #[test]
    fn no_wait_is_longer_than_the_longest_duration() {
        let p = RetryPolicy {
            attempts: 1000,
            backoff: flow_core::MAX_DURATION,
            max_backoff: None,
            jitter: true,
        };
        assert!(p.delay(1000, None) <= flow_core::MAX_DURATION);
        assert_eq!(p.delay(1, Some(Duration::MAX)), flow_core::MAX_DURATION);
    }
}
