//! `redis_write`: appends items to a Redis stream (`XADD`), a batch per
//! round trip.
//!
//! A sink whose items count as written when Redis has answered: `apply`
//! only adds the item's `XADD` to the worker's pipeline, and `commit`, which
//! the runner calls after each batch it took (up to 256 items), sends the
//! pipeline as one transaction (`MULTI` … `EXEC`) and waits for the reply.
//! The runner counts an item as handled, and its source hears "delivered",
//! only once `commit` returned; a failed `commit` fails every item of the
//! batch, none of which is in the stream (the transaction runs whole or
//! not at all). The connection is a blocking one, called without holding
//! up the runtime's other tasks (`block_in_place`); each worker has its
//! own, opened at the first batch and again after an error.

use std::sync::Arc;
use std::time::Duration;

use flow_core::{
    BuildContext, ConfigError, Output, Stage, StageError, StageKind, StageOptions, StageType,
    Transform, Value,
};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::redis_common::{CONNECT_TIMEOUT, Server, blocking, describe, is_transient};

/// Appends each item to a Redis stream, as an entry with one field, `body`,
/// holding the item as JSON (so `redis_read` gives it back as `.body`). The
/// entries of a batch (up to 256 items) go in one round trip, as one
/// transaction, and count as written once Redis has answered: an item is
/// delivered (and its source may acknowledge it) only then. A batch that
/// fails (Redis down, the key holds something other than a stream) fails
/// each of its items, none of which was added; the error is retryable when
/// the connection failed, and `retry:` on the stage tries again (one
/// round trip per item then). An item whose JSON is larger than Redis
/// takes in one value (512 MiB) fails alone.
///
/// With `max_len`, each `XADD` trims the stream to about that many entries
/// (`MAXLEN ~`): the oldest go first, and Redis keeps a few more (up to a
/// hundred or so) so that it trims whole blocks, cheaply.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisWriteOptions {
    /// The Redis server: `redis://HOST:PORT/DB` (`redis://localhost:6379/0`;
    /// a password as `redis://:PASSWORD@HOST:6379`, shown as `***` in
    /// messages), or `unix:///path/to/redis.sock`. TLS (`rediss://`) is not
    /// supported. Use `${REDIS_URL}` to take it from the environment.
    pub url: String,
    /// The stream's key (created by the first entry).
    pub stream: String,
    /// Keep the stream at about this many entries, dropping the oldest
    /// (approximate trimming, `MAXLEN ~`). Absent: the stream grows until
    /// something else trims it.
    pub max_len: Option<u64>,
}

/// The largest value Redis takes by default (`proto-max-bulk-len`).
const MAX_VALUE: usize = 512 << 20;

/// How long one batch's reply may take before it counts as failed.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where every worker of the stage writes.
#[derive(Debug)]
struct Target {
    server: Server,
    stream: String,
    max_len: Option<u64>,
}

/// One worker: its connection and the batch being built.
struct RedisWrite {
    target: Arc<Target>,
    conn: Option<redis::Connection>,
    pipe: redis::Pipeline,
    buffered: usize,
}

impl RedisWrite {
    fn new(target: Arc<Target>) -> Self {
        RedisWrite {
            target,
            conn: None,
            pipe: transaction(),
            buffered: 0,
        }
    }

    /// Sends the batch and waits for Redis's answer.
    fn send(&mut self, pipe: &redis::Pipeline) -> Result<(), redis::RedisError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            slot => {
                let conn = self
                    .target
                    .server
                    .client
                    .get_connection_with_timeout(CONNECT_TIMEOUT)?;
                conn.set_read_timeout(Some(REPLY_TIMEOUT))?;
                conn.set_write_timeout(Some(REPLY_TIMEOUT))?;
                slot.insert(conn)
            }
        };
        pipe.query::<()>(conn)
    }
}

fn transaction() -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe
}

impl Transform for RedisWrite {
    fn apply(&mut self, input: &Value, _out: &mut Output) -> Result<(), StageError> {
        let body = flow_core::value::to_json(input);
        if body.len() > MAX_VALUE {
            return Err(StageError::permanent(format!(
                "the item is {} bytes as JSON, more than Redis takes in one value (512 MiB)",
                body.len()
            )));
        }
        let t = &*self.target;
        let add = self.pipe.cmd("XADD").arg(&t.stream);
        if let Some(n) = t.max_len {
            add.arg("MAXLEN").arg("~").arg(n);
        }
        add.arg("*").arg("body").arg(body).ignore();
        self.buffered += 1;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StageError> {
        if self.buffered == 0 {
            return Ok(());
        }
        let pipe = std::mem::replace(&mut self.pipe, transaction());
        self.buffered = 0;
        match blocking(|| self.send(&pipe)) {
            Ok(()) => Ok(()),
            Err(e) => {
                let transient = is_transient(&e);
                if transient || e.is_unrecoverable_error() {
                    // The connection may be half-way through a reply.
                    self.conn = None;
                }
                let t = &*self.target;
                let message = format!(
                    "XADD to stream {:?} at {}: {}",
                    flow_core::text::for_display(&t.stream),
                    t.server.shown,
                    describe(&e)
                );
                Err(if transient {
                    StageError::retryable(message)
                } else {
                    StageError::permanent(message)
                })
            }
        }
    }
}

impl StageOptions for RedisWriteOptions {
    fn build(self, _ctx: &BuildContext) -> Result<Stage, ConfigError> {
        let server = Server::parse(&self.url)?;
        if self.stream.is_empty() {
            return Err(ConfigError::new("stream", "must not be empty"));
        }
        if self.max_len == Some(0) {
            return Err(ConfigError::new(
                "max_len",
                "must be at least 1 (leave it out to keep every entry)",
            ));
        }
        let target = Arc::new(Target {
            server,
            stream: self.stream,
            max_len: self.max_len,
        });
        Ok(Stage::transform(move || RedisWrite::new(target.clone())))
    }
}

flow_core::inventory::submit! {
    StageType::new::<RedisWriteOptions>(
        "redis_write",
        StageKind::Sink,
        "Appends items to a Redis stream (XADD), a batch per round trip.",
        "- name: enqueue\n  type: redis_write\n  with: { url: 'redis://127.0.0.1:6379', stream: jobs, max_len: 1000000 }\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> BuildContext {
        BuildContext {
            stage: "enqueue".into(),
            workers: 1,
            base_dir: ".".into(),
            timeout: None,
        }
    }

    #[test]
    fn options_are_checked_naming_the_key() {
        let t = flow_core::stage_type("redis_write").unwrap();
        let ok = serde_json::json!({"url": "redis://localhost:6379", "stream": "s"});
        assert!(t.build(&ok, &ctx()).is_ok());
        for (with, key, says) in [
            (
                serde_json::json!({"url": "ftp://x", "stream": "s"}),
                "url",
                "not a Redis URL",
            ),
            (
                serde_json::json!({"url": "redis://x", "stream": ""}),
                "stream",
                "must not be empty",
            ),
            (
                serde_json::json!({"url": "redis://x", "stream": "s", "max_len": 0}),
                "max_len",
                "at least 1",
            ),
        ] {
            let err = match t.build(&with, &ctx()) {
                Ok(_) => panic!("{with}: accepted"),
                Err(e) => e,
            };
            assert!(
                err.to_string().starts_with(key) && err.to_string().contains(says),
                "{err}"
            );
        }
    }

    #[test]
    fn a_batch_that_cannot_reach_redis_fails_retryably_naming_the_stream() {
        // A port nothing listens on: bind one, then let it go.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target = Arc::new(Target {
            server: Server::parse(&format!("redis://:pw@127.0.0.1:{port}")).unwrap(),
            stream: "jobs".into(),
            max_len: None,
        });
        let mut sink = RedisWrite::new(target);
        let mut out = Output::new();
        sink.apply(&flow_core::value::int(1), &mut out).unwrap();
        let err = sink.commit().unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(err.message().contains("XADD to stream \"jobs\""), "{err}");
        assert!(!err.message().contains("pw"), "{err}");
        // The failed batch is gone: the next commit has nothing to send.
        assert!(sink.commit().is_ok());
    }
}
