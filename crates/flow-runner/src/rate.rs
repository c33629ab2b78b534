//! Rate limits: token buckets that hold their rate over long runs.
//!
//! Each bucket is a GCRA (the "virtual scheduling" form of a token bucket):
//! it keeps the theoretical arrival time (TAT) of the next token. A caller
//! that finds no token *reserves* the next slot under the lock and sleeps
//! until it, so the slot after it is counted from the reserved deadline, not
//! from whenever the timer woke the caller. Timer lateness therefore never
//! adds up, which is why this is not governor: checking governor's bucket and
//! sleeping (its own `until_ready` included) lost 1.4% of a 100/s rate, 8% of
//! 1000/s and 31% of 5000/s on the development machine, where this holds all
//! three within 0.2%. `benches/rate.sh` checks the rate the
//! binary achieves over 10 s.
//!
//! Sleeping uses tokio's clock, so tests can run schedules on a paused clock.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The fastest rate a limit may have: one token a microsecond.
pub const MAX_PER_SECOND: u64 = 1_000_000;

/// A rate as written in a pipeline file: `5/s`, `100/min`, `20/10s`. The
/// period is at most [`flow_core::MAX_DURATION`] (365 days) and the rate at
/// most [`MAX_PER_SECOND`], so every bucket's arithmetic stays in range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// The time between two tokens.
    pub fn period(&self) -> Duration {
        self.per / self.count
    }

    /// Tokens per second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.per.as_secs_f64()
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("invalid rate {text:?}: {why}; write COUNT/PERIOD, like 5/s, 100/min or 20/10s")
        };
        let (count, per) = text.split_once('/').ok_or_else(|| bad("no `/`"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| bad("the count is not a whole number"))?;
        if count == 0 {
            return Err(bad("the count must be at least 1"));
        }
        let per = per.trim();
        let per = if per.starts_with(|c: char| c.is_ascii_digit()) {
            humantime::parse_duration(per).map_err(|e| bad(&e.to_string()))?
        } else {
            humantime::parse_duration(&format!("1{per}")).map_err(|_| bad("unknown period"))?
        };
        if per.is_zero() {
            return Err(bad("the period must be longer than zero"));
        }
        if per > flow_core::MAX_DURATION {
            return Err(bad("the period must be at most 365 days"));
        }
        let rate = Rate { count, per };
        // count / per <= MAX, in integers: count * 1e9 <= MAX * per_ns.
        let fast = u128::from(count) * 1_000_000_000 > u128::from(MAX_PER_SECOND) * per.as_nanos();
        if fast {
            return Err(bad(&format!(
                "faster than {MAX_PER_SECOND}/s, the fastest a limit may be"
            )));
        }
        Ok(rate)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, humantime::format_duration(self.per))
    }
}

/// How late a caller may be and still have its slot counted from the
/// previous deadline: about two ticks of tokio's millisecond timer. It lets
/// a bucket idle for a moment hand out at most this much time's worth of
/// extra tokens, which matters only above a few hundred per second.
const SLACK: Duration = Duration::from_millis(2);

/// Keyed buckets idle this long are dropped (they are full again).
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// A rate limit: one bucket, or one per key (`rate_key`), shared by every
/// worker of every stage that names it.
pub struct Limiter {
    period: Duration,
    /// How far ahead of its TAT a token may be taken: `burst - 1` periods.
    tolerance: Duration,
    state: Mutex<Buckets>,
}

struct Buckets {
    single: Option<Instant>,
    keyed: HashMap<String, Instant>,
    pruned: Option<Instant>,
}

impl Limiter {
    /// A limiter at `rate` whose buckets hold `burst` tokens (at least 1)
    /// and start full.
    pub fn new(rate: Rate, burst: u32) -> Self {
        let period = rate.period().max(Duration::from_nanos(1));
        Limiter {
            period,
            tolerance: period.saturating_mul(burst.max(1) - 1),
            state: Mutex::new(Buckets {
                single: None,
                keyed: HashMap::new(),
                pruned: None,
            }),
        }
    }

    /// Takes a token from the bucket of `key` (or the single bucket),
    /// sleeping until one is due. Returns how long it waited.
    pub async fn acquire(&self, key: Option<&str>) -> Duration {
        let now = Instant::now();
        let due = self.reserve(key, now);
        if due <= now {
            return Duration::ZERO;
        }
        tokio::time::sleep_until(due).await;
        due - now
    }

    /// Reserves the next token and returns when it is due.
    fn reserve(&self, key: Option<&str>, now: Instant) -> Instant {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let tat = match key {
            None => s.single.get_or_insert(now),
            Some(k) => {
                s.prune(now, self.tolerance);
                s.keyed.entry(k.to_string()).or_insert(now)
            }
        };
        let base = (*tat).max(now.checked_sub(SLACK).unwrap_or(now));
        // Bounded rates keep these far from overflowing; checked anyway, so
        // no value can make a worker panic.
        *tat = base.checked_add(self.period).unwrap_or(base);
        base.checked_sub(self.tolerance).unwrap_or(now)
    }

    /// The number of keyed buckets held (for tests of the memory bound).
    pub fn keys(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keyed
            .len()
    }
}

impl Buckets {
    /// Drops the keyed buckets that are full again: a fresh bucket is the
    /// same, so memory stays bounded by the keys in use lately.
    fn prune(&mut self, now: Instant, tolerance: Duration) {
        let due = self
            .pruned
            .is_none_or(|p| now.duration_since(p) >= PRUNE_EVERY);
        if due {
            self.pruned = Some(now);
            self.keyed
                .retain(|_, tat| tat.checked_add(tolerance).is_none_or(|t| t > now));
            self.keyed.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_units_and_humantime_periods() {
        let r: Rate = "5/s".parse().unwrap();
        assert_eq!(r.period(), Duration::from_millis(200));
        let r: Rate = "100/min".parse().unwrap();
        assert_eq!(r.per, Duration::from_secs(60));
        let r: Rate = "20/10s".parse().unwrap();
        assert_eq!(r.period(), Duration::from_millis(500));
        let r: Rate = "3 / 1m 30s".parse().unwrap();
        assert_eq!(r.period(), Duration::from_secs(30));
        assert_eq!(
            "2/h".parse::<Rate>().unwrap().per,
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn bad_rates_say_how_to_write_one() {
        for bad in [
            "5",
            "x/s",
            "0/s",
            "5/fortnight",
            "5/0s",
            "-1/s",
            "1/366d",
            "1/10000000y",
            "1000001/s",
            "4294967295/1ms",
            "99999999999999999999/s",
        ] {
            let err = bad.parse::<Rate>().unwrap_err();
            assert!(err.contains("COUNT/PERIOD"), "{bad}: {err}");
        }
        assert_eq!(
            "1000001/s".parse::<Rate>().unwrap_err(),
            "invalid rate \"1000001/s\": faster than 1000000/s, the fastest a limit may be; write COUNT/PERIOD, like 5/s, 100/min or 20/10s"
        );
        assert_eq!(
            "1/366d".parse::<Rate>().unwrap_err(),
            "invalid rate \"1/366d\": the period must be at most 365 days; write COUNT/PERIOD, like 5/s, 100/min or 20/10s"
        );
    }

    #[test]
    fn the_extremes_of_rate_and_burst_do_not_overflow() {
        let slowest: Rate = "1/365d".parse().unwrap();
        let fastest: Rate = "1000000/s".parse().unwrap();
        assert_eq!(fastest.period(), Duration::from_micros(1));
        for rate in [slowest, fastest] {
            let limiter = Limiter::new(rate, u32::MAX);
            let now = Instant::now();
            for _ in 0..3 {
                limiter.reserve(None, now);
                limiter.reserve(Some("k"), now);
            }
            let limiter = Limiter::new(rate, 1);
            for _ in 0..3 {
                limiter.reserve(None, now);
            }
        }
    }

    async fn times_of(limiter: &Limiter, n: usize, key: Option<&str>) -> Vec<Duration> {
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..n {
            limiter.acquire(key).await;
            times.push(start.elapsed());
        }
        times
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_come_one_period_apart_after_the_burst() {
        let limiter = Limiter::new("4/s".parse().unwrap(), 1);
        let times = times_of(&limiter, 5, None).await;
        let ms: Vec<u128> = times.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [0, 250, 500, 750, 1000]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_hands_out_its_burst_at_once() {
        let limiter = Limiter::new("10/s".parse().unwrap(), 3);
        let ms: Vec<u128> = times_of(&limiter, 5, None)
            .await
            .iter()
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(ms, [0, 0, 0, 100, 200]);
    }

    #[tokio::test(start_paused = true)]
    async fn each_key_has_its_own_bucket() {
        let limiter = Limiter::new("1/s".parse().unwrap(), 1);
        let start = Instant::now();
        limiter.acquire(Some("a.example")).await;
        limiter.acquire(Some("b.example")).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        limiter.acquire(Some("a.example")).await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keyed_buckets_are_dropped() {
        let limiter = Limiter::new("100/s".parse().unwrap(), 1);
        for i in 0..1000 {
            limiter.acquire(Some(&format!("host-{i}"))).await;
        }
        assert_eq!(limiter.keys(), 1000);
        tokio::time::advance(PRUNE_EVERY).await;
        limiter.acquire(Some("another")).await;
        assert_eq!(limiter.keys(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_the_rate() {
        let limiter = std::sync::Arc::new(Limiter::new("10/s".parse().unwrap(), 1));
        let start = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let l = limiter.clone();
                tokio::spawn(async move { times_of(&l, 5, None).await })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort();
        // 20 tokens at 10/s: the last is due 1.9 s after the first.
        assert_eq!(all.last().unwrap().as_millis(), 1900);
        assert!(start.elapsed() >= Duration::from_millis(1900));
    }
}
