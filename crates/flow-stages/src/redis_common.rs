//! What `redis_read` and `redis_write` share: the server a URL names
//! (checked when the pipeline is built, without connecting, and shown
//! without its password), what a Redis error means for the run, and
//! stream entry IDs.

use std::fmt;
use std::time::Duration;

use flow_core::ConfigError;

/// How long opening a connection may take before it counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The first wait after a connection failed; it doubles with each further
/// failure, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait between two attempts to reach Redis.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The schemes the `redis` crate reaches without TLS.
const SCHEMES: [&str; 5] = ["redis", "valkey", "unix", "redis+unix", "valkey+unix"];

/// A Redis server, as a stage's `url` names it.
#[derive(Clone)]
pub struct Server {
    pub client: redis::Client,
    /// The URL without its password, for messages.
    pub shown: String,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Server {
    /// Checks `url` (the option `url`) without connecting.
    pub fn parse(url: &str) -> Result<Server, ConfigError> {
        let shown = flow_core::text::for_display(url).into_owned();
        let scheme = url
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        match scheme.as_deref() {
            Some(s) if SCHEMES.contains(&s) => {}
            Some("rediss" | "valkeys") => {
                return Err(ConfigError::new(
                    "url",
                    format!(
                        "{shown}: TLS (rediss://) is not supported by this build of flow; \
                         reach Redis through a TLS tunnel (stunnel, ssh -L) with a redis:// URL"
                    ),
                ));
            }
            _ => {
                return Err(ConfigError::new(
                    "url",
                    format!(
                        "{shown:?} is not a Redis URL: write redis://HOST:PORT/DB \
                         (redis://localhost:6379/0) or unix:///path/to/redis.sock"
                    ),
                ));
            }
        }
        let client = redis::Client::open(url).map_err(|e| {
            ConfigError::new(
                "url",
                format!("{shown}: {}", flow_core::text::for_display(&e.to_string())),
            )
        })?;
        Ok(Server { client, shown })
    }
}

/// Whether an error may pass once Redis is back: the connection failed,
/// dropped or timed out, or Redis asked to be tried again (still loading
/// its data after a restart, a failover under way). A wrong password, a
/// key of another type or a command Redis refuses are not.
pub fn is_transient(e: &redis::RedisError) -> bool {
    use redis::ErrorKind;
    match e.kind() {
        ErrorKind::Io | ErrorKind::Parse => true,
        _ => matches!(
            e.code(),
            Some("LOADING" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN" | "READONLY" | "BUSY")
        ),
    }
}

/// An error Redis answered with, by its code: `BUSYGROUP`, `NOGROUP`.
pub fn has_code(e: &redis::RedisError, code: &str) -> bool {
    e.code() == Some(code)
}

/// A Redis error as text fit for a report (no credentials, no control
/// characters).
pub fn describe(e: &redis::RedisError) -> String {
    // A failed pipeline lists every command that failed: say the first,
    // and how many failed.
    let text = match e.clone().into_server_errors() {
        Some(errors) if errors.len() > 1 => {
            let (_, first) = &errors[0];
            format!("{} ({} commands failed)", server_error(first), errors.len())
        }
        Some(errors) if errors.len() == 1 => server_error(&errors[0].1),
        _ => e.to_string(),
    };
    let hint = if text.starts_with("WRONGTYPE") || has_code(e, "WRONGTYPE") {
        " (the key holds something other than a stream)"
    } else {
        ""
    };
    format!("{}{hint}", flow_core::text::for_display(&text))
}

/// `WRONGTYPE: Operation against a key holding the wrong kind of value`.
fn server_error(e: &redis::ServerError) -> String {
    match e.details() {
        Some(details) => format!("{}: {details}", e.code()),
        None => e.code().to_string(),
    }
}

/// The wait before attempt `failures + 1`, after `failures` failures in a
/// row (at least one): 100 ms, 200 ms, 400 ms, … up to [`MAX_BACKOFF`].
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// Runs `f`, which blocks on the network, without holding up the other
/// tasks of a multi-threaded runtime's worker (they move to another
/// thread meanwhile). Elsewhere (a test's single thread, no runtime) it
/// just runs.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A stream entry's ID, `<milliseconds>-<sequence>`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl EntryId {
    /// `0-0`: before every entry, and the end of an `XAUTOCLAIM` scan.
    pub const ZERO: EntryId = EntryId { ms: 0, seq: 0 };

    /// Parses `1700000000000-0`.
    pub fn parse(text: &[u8]) -> Option<EntryId> {
        let text = std::str::from_utf8(text).ok()?;
        let (ms, seq) = text.split_once('-')?;
        Some(EntryId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_are_checked_and_shown_without_their_password() {
        for ok in [
            "redis://localhost:6379/0",
            "redis://:secret@10.0.0.1:7000",
            "unix:///run/redis.sock",
            "REDIS://host",
        ] {
            assert!(Server::parse(ok).is_ok(), "{ok}");
        }
        let server = Server::parse("redis://user:secret@host:6379/2").unwrap();
        assert!(!server.shown.contains("secret"), "{}", server.shown);
        for (bad, says) in [
            ("http://localhost:6379", "is not a Redis URL"),
            ("localhost:6379", "is not a Redis URL"),
            ("", "is not a Redis URL"),
            ("rediss://host:6380", "TLS"),
            ("redis://host:notaport", "redis://host:notaport"),
        ] {
            let err = Server::parse(bad).unwrap_err();
            assert_eq!(err.key, "url");
            assert!(err.message.contains(says), "{bad}: {err}");
        }
        let err = Server::parse("https://u:hunter2@host/").unwrap_err();
        assert!(!err.message.contains("hunter2"), "{err}");
    }

    #[test]
    fn entry_ids_parse_print_and_order() {
        let id = EntryId::parse(b"1700000000000-12").unwrap();
        assert_eq!(id.to_string(), "1700000000000-12");
        assert!(EntryId::parse(b"1-2").unwrap() < EntryId::parse(b"1-10").unwrap());
        assert!(EntryId::parse(b"2-0").unwrap() > EntryId::parse(b"1-99").unwrap());
        for bad in [&b""[..], b"12", b"a-b", b"1-", b"-1", b"1-2-3", b"\xff-1"] {
            assert_eq!(EntryId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(100), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
