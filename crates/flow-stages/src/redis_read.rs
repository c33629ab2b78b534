//! `redis_read`: a Redis Streams consumer group as a source, at least once.
//!
//! Several `flow` processes (on one machine or many) that name the same
//! `stream` and `group` share its entries: Redis hands each new entry to one
//! of them (`XREADGROUP … >`), and keeps it in the group's pending list
//! until it is acknowledged (`XACK`). The source acknowledges an entry only
//! when its outcome is final (delivered, dead-lettered or dropped): an
//! abandoned one, or one whose process died, stays pending and is done
//! again, by the same consumer when it restarts (it re-reads its own
//! pending entries first, ID `0`) or by another once it has been idle
//! longer than `claim_idle` (`XAUTOCLAIM`).
//!
//! Three connections per source: the blocking read (a `BLOCK` monopolises
//! a connection, and needs a response timeout longer than itself), the
//! other commands of the read loop (group creation, claims, delivery
//! counts), and the acknowledgements, sent by a task of their own in
//! batches as the outcomes come in. That task also keeps the entries this
//! process holds from looking idle (`XCLAIM … JUSTID` every third of
//! `claim_idle`, at most every 10 s), so a healthy consumer's slow work is
//! not claimed by another: only a consumer that stopped lets its entries
//! go idle.
//!
//! Lost connections (Redis restarted, the network cut) are retried with
//! backoff (100 ms doubling to 5 s) for as long as the run goes, with a
//! warning at each failure; so is a Redis that is down when the run starts.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flow_core::json::{self, Utf8};
use flow_core::value::{bytes, object, string};
use flow_core::{
    BuildContext, ConfigError, Lineage, Next, Outcome, Output, Source, Stage, StageError,
    StageKind, StageOptions, StageType, Value, async_trait,
};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError, RedisResult, Value as Reply};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::limits::{Size, quote_record};
use crate::redis_common::{
    CONNECT_TIMEOUT, EntryId, Server, backoff, describe, has_code, is_transient,
};

/// Reads a Redis stream through a consumer group: each entry becomes an
/// item, the object of its fields (a `body` field is parsed as JSON, so an
/// entry written by `redis_write` gives `{"body": <the item>}`). Run the
/// same pipeline on several machines, with the same `stream` and `group`,
/// and they share the entries.
///
/// At least once: an entry is acknowledged (`XACK`) only when its outcome
/// is final (delivered by every sink, dead-lettered or dropped); an entry
/// abandoned by a stop, or held by a process that died, stays pending and
/// is done again: by this consumer when it starts again (its own pending
/// entries come first), or by another consumer of the group once it has
/// been idle longer than `claim_idle`. An entry may so be handled twice,
/// never lost. An entry delivered more than `max_deliveries` times (a
/// poison entry that kills or stops every worker that takes it) is not
/// handled again but failed, and the stage's `on_error` decides (a
/// dead-letter stage receives `{"item": …, "error": …}`); once that
/// outcome is final it is acknowledged. So is an entry whose `body` is
/// not JSON, or that is larger than `max_entry`.
///
/// The group is created if missing, reading the stream from its start
/// (`XGROUP CREATE … 0 MKSTREAM`, which also creates a missing stream). A
/// Redis that cannot be reached, at the start or later, is tried again
/// with backoff (100 ms doubling to 5 s), with a warning each time, until
/// it answers or the run is stopped; a wrong password or a key that is
/// not a stream stops the run. The run ends when stopped (Ctrl-C), or,
/// with `stop_when_idle`, once the stream has had nothing new nor pending
/// for that long (a batch job). `--state` is not needed (and refused):
/// the group is where the progress is kept. Needs Redis 6.2 or later
/// (`XAUTOCLAIM`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisReadOptions {
    /// The Redis server: `redis://HOST:PORT/DB` (`redis://localhost:6379/0`;
    /// a password as `redis://:PASSWORD@HOST:6379`, shown as `***` in
    /// messages), or `unix:///path/to/redis.sock`. TLS (`rediss://`) is not
    /// supported. Use `${REDIS_URL}` to take it from the environment.
    pub url: String,
    /// The stream's key.
    pub stream: String,
    /// The consumer group: every process reading with the same group
    /// shares the stream's entries (each goes to one of them).
    pub group: String,
    /// This process's name in the group; it must stay the same across
    /// restarts, so that a restarted process finishes its own pending
    /// entries first. Default: the host name and a number, the first one
    /// no other `flow` on this host is using for this stream and group
    /// (`web1-0`, then `web1-1` for a second process on the same host).
    pub consumer: Option<String>,
    /// The most entries one read takes (default 256).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// How long one read waits for new entries before it looks at pending
    /// ones again (default `2s`).
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    #[schemars(with = "String")]
    pub block: Option<Duration>,
    /// Entries of other consumers pending longer than this are taken over
    /// (`XAUTOCLAIM`): their consumer is taken to be dead (default `30s`).
    /// A live consumer keeps its own entries from looking idle while it
    /// works on them (every third of its `claim_idle`, at most every
    /// 10 s), so give every consumer of a group the same `claim_idle`, not
    /// below a few seconds.
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    #[schemars(with = "String")]
    pub claim_idle: Option<Duration>,
    /// An entry delivered more times than this (default 10) is failed
    /// instead of handled again (see above), then acknowledged.
    #[serde(default = "default_max_deliveries")]
    pub max_deliveries: u64,
    /// End the run once the stream has had no new entry, and no entry
    /// pending on another consumer, for this long (`10s`): a batch job
    /// that stops when the work is done. Absent: run until stopped.
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    #[schemars(with = "String")]
    pub stop_when_idle: Option<Duration>,
    /// The largest entry, its field names and values together (`16MiB`
    /// by default; a size like `64KiB`, `1GiB` or a number of bytes). A
    /// larger entry fails (its fields cut to 4 KiB each in the record). It
    /// was read whole by then: one read holds up to `batch` entries, so
    /// lower `batch` when entries are large.
    #[serde(default = "default_max_entry")]
    #[schemars(with = "String")]
    pub max_entry: Size,
    /// Put the entry's ID (`1700000000000-0`) in the item under this key:
    /// a name for an idempotent effect (a file named by it). Absent: not
    /// in the item.
    pub id_field: Option<String>,
}

fn default_batch() -> usize {
    256
}

fn default_block() -> Duration {
    Duration::from_secs(2)
}

fn default_claim_idle() -> Duration {
    Duration::from_secs(30)
}

fn default_max_deliveries() -> u64 {
    10
}

fn default_max_entry() -> Size {
    Size::mib(16)
}

/// The most entries one read may take.
const MAX_BATCH: usize = 100_000;

/// The shortest `claim_idle`: below it, entries a live consumer just
/// received would be taken from it.
const MIN_CLAIM_IDLE: Duration = Duration::from_millis(100);

/// How long the commands other than the blocking read may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `close` keeps trying to send the last acknowledgements to a
/// Redis that does not answer.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The most IDs in one `XACK` or `XCLAIM`.
const IDS_PER_COMMAND: usize = 1000;

/// The options, checked, shared by the source and its acknowledging task.
#[derive(Debug)]
struct Config {
    stage: String,
    server: Server,
    stream: String,
    group: String,
    consumer: Option<String>,
    batch: usize,
    block: Duration,
    claim_idle: Duration,
    max_deliveries: u64,
    stop_when_idle: Option<Duration>,
    max_entry: Size,
    id_field: Option<String>,
}

impl Config {
    /// How to name an entry in a message.
    fn entry(&self, id: EntryId) -> String {
        format!(
            "entry {id} of stream {:?}",
            flow_core::text::for_display(&self.stream)
        )
    }

    /// How often to look for idle entries to claim: twice per
    /// `claim_idle`, so one is taken at most 1.5 × `claim_idle` after its
    /// consumer stopped.
    fn claim_every(&self) -> Duration {
        (self.claim_idle / 2).clamp(Duration::from_millis(50), Duration::from_secs(30))
    }

    /// How often the entries this process holds are marked as worked on.
    fn refresh_every(&self) -> Duration {
        (self.claim_idle / 3).clamp(Duration::from_millis(30), Duration::from_secs(10))
    }
}

/// The source: nothing happens until the first `next` (building has no
/// side effects).
struct RedisRead {
    config: Arc<Config>,
    run: Option<Running>,
}

/// What the source holds while it runs.
struct Running {
    consumer: String,
    /// Holds this process's consumer number while it runs (see
    /// [`default_consumer`]).
    _slot: Option<std::fs::File>,
    /// The connection of the blocking read.
    reader: Option<MultiplexedConnection>,
    /// The connection of the other commands of the read loop.
    control: Option<MultiplexedConnection>,
    acks: Acks,
    /// Whether the group is known to exist (created or found).
    group_ready: bool,
    phase: Phase,
    /// Where the `XAUTOCLAIM` scan goes on from; `0-0` starts one.
    claim_cursor: EntryId,
    next_claim: Instant,
    /// When the stream last had something for this process (or pending
    /// on another): `stop_when_idle` counts from here.
    last_seen: Instant,
    /// Failures to reach Redis in a row.
    failures: u32,
}

/// Which entries the next read asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// This consumer's own pending entries, after this ID: at the start,
    /// and after a lost connection (a read whose reply was lost left its
    /// entries pending here).
    Own(EntryId),
    /// New entries (and claims of idle ones).
    New,
}

#[async_trait]
impl Source for RedisRead {
    async fn next(&mut self, out: &mut Output) -> Result<Next, StageError> {
        let config = self.config.clone();
        let run = self
            .run
            .get_or_insert_with(|| Running::start(config.clone()));
        match run.step(&config, out).await {
            Ok(next) => {
                run.failures = 0;
                Ok(next)
            }
            Err(e) if has_code(&e, "NOGROUP") => {
                // The stream or its group was deleted (or Redis restarted
                // without its data): make them again.
                tracing::warn!(
                    stage = %config.stage,
                    "the group {:?} of stream {:?} is gone; creating it again",
                    config.group,
                    config.stream
                );
                run.group_ready = false;
                Ok(Next::More)
            }
            Err(e) if is_transient(&e) => {
                run.failures += 1;
                run.reader = None;
                run.control = None;
                run.group_ready = false;
                run.phase = Phase::Own(EntryId::ZERO);
                run.claim_cursor = EntryId::ZERO;
                run.last_seen = Instant::now();
                let wait = backoff(run.failures);
                tracing::warn!(
                    stage = %config.stage,
                    "cannot reach Redis at {}: {}; trying again in {}",
                    config.server.shown,
                    describe(&e),
                    humantime::format_duration(wait)
                );
                tokio::time::sleep(wait).await;
                Ok(Next::More)
            }
            Err(e) => Err(StageError::permanent(format!(
                "stream {:?}, group {:?} at {}: {}",
                config.stream,
                config.group,
                config.server.shown,
                describe(&e)
            ))),
        }
    }

    async fn close(&mut self) -> Result<(), StageError> {
        let Some(run) = self.run.take() else {
            return Ok(());
        };
        let (tx, rx) = oneshot::channel();
        let unacked = match run.acks.tx.send(AckMsg::Close(tx)) {
            Ok(()) => rx.await.unwrap_or(0),
            Err(_) => 0,
        };
        if unacked > 0 {
            tracing::warn!(
                stage = %self.config.stage,
                "{unacked} entries were handled but could not be acknowledged (Redis at {} did \
                 not answer): they stay pending, and will be handled again",
                self.config.server.shown
            );
        }
        Ok(())
    }
}

impl Running {
    fn start(config: Arc<Config>) -> Running {
        let (consumer, slot) = match &config.consumer {
            Some(name) => (name.clone(), None),
            None => default_consumer(&config),
        };
        tracing::debug!(stage = %config.stage, "reading as consumer {consumer:?}");
        let acks = Acks::start(config.clone(), consumer.clone());
        let now = Instant::now();
        Running {
            consumer,
            _slot: slot,
            reader: None,
            control: None,
            acks,
            group_ready: false,
            phase: Phase::Own(EntryId::ZERO),
            claim_cursor: EntryId::ZERO,
            next_claim: now,
            last_seen: now,
            failures: 0,
        }
    }

    /// One read: this consumer's pending entries, or entries to claim, or
    /// new ones (waiting up to `block` for them).
    async fn step(&mut self, c: &Config, out: &mut Output) -> RedisResult<Next> {
        if !self.group_ready {
            self.create_group(c).await?;
            self.group_ready = true;
        }
        if let Phase::Own(after) = self.phase {
            let mut read = redis::cmd("XREADGROUP");
            read.arg("GROUP").arg(&c.group).arg(&self.consumer);
            read.arg("COUNT").arg(c.batch);
            read.arg("STREAMS").arg(&c.stream).arg(after.to_string());
            let reply: Reply = read
                .query_async(control(&mut self.control, c).await?)
                .await?;
            let entries = parse_read(reply)?;
            match entries.last() {
                None => self.phase = Phase::New,
                Some(last) => {
                    self.phase = Phase::Own(last.id);
                    self.last_seen = Instant::now();
                    let counts = self.deliveries(c, &entries).await?;
                    self.emit(c, entries, Some(&counts), out);
                }
            }
            return Ok(Next::More);
        }

        let now = Instant::now();
        if now >= self.next_claim {
            let mut claim = redis::cmd("XAUTOCLAIM");
            claim.arg(&c.stream).arg(&c.group).arg(&self.consumer);
            claim.arg(c.claim_idle.as_millis() as u64);
            claim.arg(self.claim_cursor.to_string());
            claim.arg("COUNT").arg(c.batch);
            let reply: Reply = claim
                .query_async(control(&mut self.control, c).await?)
                .await?;
            let (cursor, entries) = parse_autoclaim(reply)?;
            self.claim_cursor = cursor;
            if cursor == EntryId::ZERO {
                self.next_claim = now + c.claim_every();
            }
            if !entries.is_empty() {
                self.last_seen = now;
                let counts = self.deliveries(c, &entries).await?;
                self.emit(c, entries, Some(&counts), out);
                return Ok(Next::More);
            }
            if cursor != EntryId::ZERO {
                // A scan looks at 10 × COUNT pending entries per call: an
                // empty page does not mean it is over.
                return Ok(Next::More);
            }
        }

        let mut wait = c.block.min(self.next_claim.saturating_duration_since(now));
        if let Some(idle) = c.stop_when_idle {
            wait = wait.min((self.last_seen + idle).saturating_duration_since(now));
        }
        // `BLOCK 0` would wait forever.
        let wait_ms = (wait.as_millis() as u64).max(1);
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP").arg(&c.group).arg(&self.consumer);
        read.arg("COUNT").arg(c.batch).arg("BLOCK").arg(wait_ms);
        read.arg("STREAMS").arg(&c.stream).arg(">");
        let reader = match &mut self.reader {
            Some(conn) => conn,
            slot => slot.insert(connect(&c.server, c.block + RESPONSE_TIMEOUT).await?),
        };
        let reply: Reply = read.query_async(reader).await?;
        let entries = parse_read(reply)?;
        if !entries.is_empty() {
            self.last_seen = Instant::now();
            self.emit(c, entries, None, out);
            return Ok(Next::More);
        }
        if let Some(idle) = c.stop_when_idle {
            if self.pending_elsewhere(c).await? > 0 {
                self.last_seen = Instant::now();
            } else if self.last_seen.elapsed() >= idle {
                return Ok(Next::Done);
            }
        }
        Ok(Next::More)
    }

    /// `XGROUP CREATE stream group 0 MKSTREAM`; a group that exists is fine.
    async fn create_group(&mut self, c: &Config) -> RedisResult<()> {
        let mut create = redis::cmd("XGROUP");
        create.arg("CREATE").arg(&c.stream).arg(&c.group).arg("0");
        create.arg("MKSTREAM");
        let conn = control(&mut self.control, c).await?;
        match create.query_async::<Reply>(conn).await {
            Ok(_) => Ok(()),
            Err(e) if has_code(&e, "BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// How many times each of `entries` has been delivered, this time
    /// included (for entries read again or claimed: new ones have 1).
    async fn deliveries(
        &mut self,
        c: &Config,
        entries: &[Entry],
    ) -> RedisResult<HashMap<EntryId, u64>> {
        let mut pipe = redis::pipe();
        for entry in entries {
            let id = entry.id.to_string();
            pipe.cmd("XPENDING")
                .arg(&c.stream)
                .arg(&c.group)
                .arg(&id)
                .arg(&id)
                .arg(1);
        }
        let replies: Vec<Reply> = pipe
            .query_async(control(&mut self.control, c).await?)
            .await?;
        Ok(replies.into_iter().filter_map(parse_pending_one).collect())
    }

    /// How many entries other consumers of the group have pending.
    async fn pending_elsewhere(&mut self, c: &Config) -> RedisResult<u64> {
        let mut summary = redis::cmd("XPENDING");
        summary.arg(&c.stream).arg(&c.group);
        let reply: Reply = summary
            .query_async(control(&mut self.control, c).await?)
            .await?;
        Ok(pending_of_others(&reply, &self.consumer))
    }

    /// Emits `entries` as items, each with a hook that acknowledges it
    /// once its outcome is final. Entries already in flight in this run
    /// (read again after a lost connection) are skipped; deleted ones
    /// (no fields) are only acknowledged.
    fn emit(
        &mut self,
        c: &Config,
        entries: Vec<Entry>,
        deliveries: Option<&HashMap<EntryId, u64>>,
        out: &mut Output,
    ) {
        let mut in_flight = self
            .acks
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for Entry { id, fields } in entries {
            if !in_flight.insert(id) {
                continue;
            }
            let Some(fields) = fields else {
                let _ = self.acks.tx.send(AckMsg::Deleted(id));
                continue;
            };
            let tx = self.acks.tx.clone();
            let lineage = Lineage::with_hook(move |outcome| {
                let _ = tx.send(AckMsg::Done(id, outcome));
            });
            let count = deliveries.and_then(|d| d.get(&id)).copied().unwrap_or(1);
            let item = item_of(c, id, fields);
            if count > c.max_deliveries {
                let record = item.unwrap_or_else(|(record, _)| record);
                let why = format!(
                    "{}: delivered {count} times, more than max_deliveries ({})",
                    c.entry(id),
                    c.max_deliveries
                );
                out.fail_with(record, lineage, StageError::permanent(why));
                continue;
            }
            match item {
                Ok(value) => out.emit_with(value, lineage),
                Err((record, why)) => out.fail_with(record, lineage, StageError::permanent(why)),
            }
        }
    }
}

/// The connection for commands other than the blocking read, opened if
/// needed.
async fn control<'a>(
    slot: &'a mut Option<MultiplexedConnection>,
    c: &Config,
) -> RedisResult<&'a mut MultiplexedConnection> {
    Ok(match slot {
        Some(conn) => conn,
        slot => slot.insert(connect(&c.server, RESPONSE_TIMEOUT).await?),
    })
}

/// Opens a connection whose replies may take up to `response`.
async fn connect(server: &Server, response: Duration) -> RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(response));
    server
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// A stream entry's fields as an item: a `body` field parsed as JSON,
/// other values as text (binary when not UTF-8). On error, the record a
/// dead letter carries (the fields, each cut to 4 KiB) and why.
fn item_of(
    c: &Config,
    id: EntryId,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<Value, (Value, String)> {
    let size: u64 = fields.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
    if size > c.max_entry.bytes() {
        let why = format!(
            "{}: {size} bytes, more than max_entry ({})",
            c.entry(id),
            c.max_entry
        );
        return Err((quoted(c, id, &fields), why));
    }
    let body = match fields.iter().rev().find(|(k, _)| k == b"body") {
        None => None,
        Some((_, text)) => match json::parse(text, Utf8::Strict) {
            Ok(v) => Some(v),
            Err(e) => {
                let why = format!("{}: the body field is not JSON: {e}", c.entry(id));
                return Err((quoted(c, id, &fields), why));
            }
        },
    };
    let mut pairs: Vec<(String, Value)> = Vec::with_capacity(fields.len() + 1);
    for (name, value) in fields {
        let value = match (&body, name.as_slice()) {
            (Some(body), b"body") => body.clone(),
            _ => text_or_bytes(value),
        };
        pairs.push((name_of(name), value));
    }
    if let Some(key) = &c.id_field {
        pairs.push((key.clone(), string(id.to_string())));
    }
    Ok(object(pairs))
}

/// An entry's fields for a dead letter: each value's first 4 KiB as text.
fn quoted(c: &Config, id: EntryId, fields: &[(Vec<u8>, Vec<u8>)]) -> Value {
    let mut pairs: Vec<(String, Value)> = fields
        .iter()
        .map(|(k, v)| (name_of(k.clone()), string(quote_record(v))))
        .collect();
    if let Some(key) = &c.id_field {
        pairs.push((key.clone(), string(id.to_string())));
    }
    object(pairs)
}

fn name_of(name: Vec<u8>) -> String {
    String::from_utf8(name).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn text_or_bytes(value: Vec<u8>) -> Value {
    match String::from_utf8(value) {
        Ok(text) => string(text),
        Err(e) => bytes(e.into_bytes()),
    }
}

/// The default consumer name: the host name and the first number that no
/// other `flow` on this host holds for the same server, stream and group.
/// The number is held by a lock on a file in the temporary directory for
/// as long as the run goes; the operating system releases it when the
/// process ends, however it ends, so a restarted process gets its number
/// (and its pending entries) back, and a second process at the same time
/// gets the next one.
fn default_consumer(c: &Config) -> (String, Option<std::fs::File>) {
    let host = host_name();
    let key = format!("{}\n{}\n{}", c.server.shown, c.stream, c.group);
    let hash = flow_core::text::fnv1a(key.as_bytes());
    let dir = std::env::temp_dir();
    for slot in 0..1024 {
        let path = dir.join(format!("flow-redis-{hash:016x}-{slot}.lock"));
        match lock(&path) {
            Ok(Some(file)) => return (format!("{host}-{slot}"), Some(file)),
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(
                    stage = %c.stage,
                    "cannot lock {} to pick a consumer name ({e}); reading as {host}-0: \
                     give each process on this host its own `consumer`",
                    path.display()
                );
                break;
            }
        }
    }
    (format!("{host}-0"), None)
}

/// Takes an exclusive lock on `path` without waiting: `None` when another
/// process holds it.
#[cfg(unix)]
fn lock(path: &std::path::Path) -> std::io::Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    // SAFETY: flock on a descriptor this function owns; no memory is shared.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked == 0 {
        return Ok(Some(file));
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        Ok(None)
    } else {
        Err(e)
    }
}

#[cfg(not(unix))]
fn lock(path: &std::path::Path) -> std::io::Result<Option<std::fs::File>> {
    let _ = path;
    Err(std::io::Error::other("file locks are not supported here"))
}

/// This machine's name (`localhost` when it has none).
fn host_name() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname writes
        // at most that many bytes.
        let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if r == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
            if !name.is_empty() {
                return name;
            }
        }
    }
    "localhost".into()
}

/// The acknowledging task's side of the source: where hooks report
/// outcomes, and the entries this process holds.
struct Acks {
    tx: mpsc::UnboundedSender<AckMsg>,
    /// Entries emitted in this run and not yet acknowledged: not emitted
    /// again when read again, and kept from looking idle.
    in_flight: Arc<Mutex<HashSet<EntryId>>>,
}

enum AckMsg {
    /// An entry's outcome, from its hook.
    Done(EntryId, Outcome),
    /// An entry deleted from the stream while it was pending: nothing to
    /// do but acknowledge it.
    Deleted(EntryId),
    /// `close`: send what is left, then answer how many could not be.
    Close(oneshot::Sender<usize>),
}

impl Acks {
    fn start(config: Arc<Config>, consumer: String) -> Acks {
        let (tx, rx) = mpsc::unbounded_channel();
        let in_flight = Arc::new(Mutex::new(HashSet::new()));
        let task = AckTask {
            config,
            consumer,
            in_flight: in_flight.clone(),
            conn: None,
            done: Vec::new(),
            failures: 0,
            retry_at: None,
        };
        tokio::spawn(task.run(rx));
        Acks { tx, in_flight }
    }
}

/// Sends the acknowledgements, in batches: every outcome that came in
/// while the last `XACK` was on its way goes in the next one.
struct AckTask {
    config: Arc<Config>,
    consumer: String,
    in_flight: Arc<Mutex<HashSet<EntryId>>>,
    conn: Option<MultiplexedConnection>,
    /// Entries whose outcome is final, to acknowledge.
    done: Vec<EntryId>,
    failures: u32,
    /// After a failure: when to try again.
    retry_at: Option<Instant>,
}

impl AckTask {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<AckMsg>) {
        let refresh_every = self.config.refresh_every();
        let mut next_refresh = Instant::now() + refresh_every;
        let mut closing: Option<Option<oneshot::Sender<usize>>> = None;
        let mut give_up_at = None;
        loop {
            if closing.is_none() {
                let wake = match self.retry_at.filter(|_| !self.done.is_empty()) {
                    Some(at) => at.min(next_refresh),
                    None => next_refresh,
                };
                tokio::select! {
                    msg = rx.recv() => self.take(msg, &mut closing),
                    _ = tokio::time::sleep_until(wake) => {}
                }
                while closing.is_none() {
                    match rx.try_recv() {
                        Ok(msg) => self.take(Some(msg), &mut closing),
                        Err(_) => break,
                    }
                }
            }
            let now = Instant::now();
            if !self.done.is_empty() && self.retry_at.is_none_or(|at| now >= at) {
                self.acknowledge().await;
            }
            if closing.is_none() && now >= next_refresh {
                self.refresh().await;
                next_refresh = Instant::now() + refresh_every;
            }
            if let Some(reply) = &mut closing {
                let give_up = *give_up_at.get_or_insert(now + CLOSE_GRACE);
                if self.done.is_empty() || now >= give_up {
                    if let Some(reply) = reply.take() {
                        let _ = reply.send(self.done.len());
                    }
                    return;
                }
                if let Some(at) = self.retry_at {
                    tokio::time::sleep_until(at.min(give_up)).await;
                }
            }
        }
    }

    /// Takes in a message (`None`: the source is gone, as good as a close
    /// nobody waits for).
    fn take(&mut self, msg: Option<AckMsg>, closing: &mut Option<Option<oneshot::Sender<usize>>>) {
        match msg {
            Some(AckMsg::Done(id, outcome)) if outcome.is_final() => self.done.push(id),
            // Abandoned: it stays pending, for the next run or another
            // consumer, and in flight, so this run does not take it again.
            Some(AckMsg::Done(..)) => {}
            Some(AckMsg::Deleted(id)) => self.done.push(id),
            Some(AckMsg::Close(reply)) => *closing = Some(Some(reply)),
            None => *closing = Some(None),
        }
    }

    /// `XACK`s every entry done so far; on failure, keeps them for the next
    /// try, after a backoff.
    async fn acknowledge(&mut self) {
        let c = &*self.config;
        let sent = async {
            let conn = control(&mut self.conn, c).await?;
            let mut pipe = redis::pipe();
            for ids in self.done.chunks(IDS_PER_COMMAND) {
                let ack = pipe.cmd("XACK").arg(&c.stream).arg(&c.group);
                for id in ids {
                    ack.arg(id.to_string());
                }
                ack.ignore();
            }
            pipe.query_async::<()>(conn).await
        };
        match sent.await {
            Ok(()) => {
                let mut in_flight = self
                    .in_flight
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                for id in self.done.drain(..) {
                    in_flight.remove(&id);
                }
                self.failures = 0;
                self.retry_at = None;
            }
            Err(e) => self.failed("acknowledge", &e),
        }
    }

    /// Marks the entries this process holds as worked on (`XCLAIM …
    /// JUSTID` to itself: their idle time starts again, their delivery
    /// count stays), so other consumers do not claim them.
    async fn refresh(&mut self) {
        let ids: Vec<EntryId> = {
            let in_flight = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            in_flight.iter().copied().collect()
        };
        if ids.is_empty() {
            return;
        }
        let c = &*self.config;
        // Not an entry that another consumer claimed a moment ago.
        let min_idle = (c.refresh_every() / 2).as_millis() as u64;
        let sent = async {
            let conn = control(&mut self.conn, c).await?;
            let mut pipe = redis::pipe();
            for ids in ids.chunks(IDS_PER_COMMAND) {
                let claim = pipe.cmd("XCLAIM").arg(&c.stream).arg(&c.group);
                claim.arg(&self.consumer).arg(min_idle);
                for id in ids {
                    claim.arg(id.to_string());
                }
                claim.arg("JUSTID").ignore();
            }
            pipe.query_async::<()>(conn).await
        };
        if let Err(e) = sent.await {
            self.failed("mark as worked on", &e);
        }
    }

    fn failed(&mut self, what: &str, e: &RedisError) {
        self.conn = None;
        self.failures += 1;
        let wait = backoff(self.failures);
        self.retry_at = Some(Instant::now() + wait);
        tracing::warn!(
            stage = %self.config.stage,
            "cannot {what} entries at {}: {}; trying again in {}",
            self.config.server.shown,
            describe(e),
            humantime::format_duration(wait)
        );
    }
}

/// A stream entry as Redis gave it: its fields are `None` when it was
/// deleted while pending.
#[derive(Debug, PartialEq)]
struct Entry {
    id: EntryId,
    fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

fn unexpected(what: &str, reply: &Reply) -> RedisError {
    let shown = format!("{reply:?}");
    let shown: String = shown.chars().take(200).collect();
    RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply",
        format!("{what}: {shown}"),
    ))
}

/// An `XREADGROUP` reply: the entries of the one stream read (none when
/// the `BLOCK` ran out).
fn parse_read(reply: Reply) -> RedisResult<Vec<Entry>> {
    let streams = match reply {
        Reply::Nil => return Ok(Vec::new()),
        Reply::Array(streams) => streams,
        Reply::Map(streams) => streams
            .into_iter()
            .map(|(k, v)| Reply::Array(vec![k, v]))
            .collect(),
        other => return Err(unexpected("XREADGROUP", &other)),
    };
    let mut entries = Vec::new();
    for stream in streams {
        match stream {
            Reply::Array(mut pair) if pair.len() == 2 => {
                entries.extend(parse_entries(pair.pop().unwrap_or(Reply::Nil))?)
            }
            other => return Err(unexpected("XREADGROUP", &other)),
        }
    }
    Ok(entries)
}

/// A list of entries, `[[id, [field, value, …]], …]`.
fn parse_entries(reply: Reply) -> RedisResult<Vec<Entry>> {
    let items = match reply {
        Reply::Nil => return Ok(Vec::new()),
        Reply::Array(items) => items,
        other => return Err(unexpected("stream entries", &other)),
    };
    items.into_iter().map(parse_entry).collect()
}

fn parse_entry(reply: Reply) -> RedisResult<Entry> {
    let Reply::Array(mut parts) = reply else {
        return Err(unexpected("a stream entry", &reply));
    };
    if parts.len() != 2 {
        return Err(unexpected("a stream entry", &Reply::Array(parts)));
    }
    let fields = parts.pop().unwrap_or(Reply::Nil);
    let id = parts.pop().unwrap_or(Reply::Nil);
    let id = id_of(&id).ok_or_else(|| unexpected("an entry ID", &id))?;
    let fields = match fields {
        Reply::Nil => None,
        Reply::Array(flat) if flat.len() % 2 == 0 => {
            let mut pairs = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                pairs.push((bytes_of(k)?, bytes_of(v)?));
            }
            Some(pairs)
        }
        Reply::Map(map) => Some(
            map.into_iter()
                .map(|(k, v)| Ok((bytes_of(k)?, bytes_of(v)?)))
                .collect::<RedisResult<_>>()?,
        ),
        other => return Err(unexpected("an entry's fields", &other)),
    };
    Ok(Entry { id, fields })
}

fn bytes_of(reply: Reply) -> RedisResult<Vec<u8>> {
    match reply {
        Reply::BulkString(b) => Ok(b),
        Reply::SimpleString(s) => Ok(s.into_bytes()),
        Reply::Int(i) => Ok(i.to_string().into_bytes()),
        other => Err(unexpected("a field", &other)),
    }
}

fn id_of(reply: &Reply) -> Option<EntryId> {
    match reply {
        Reply::BulkString(b) => EntryId::parse(b),
        Reply::SimpleString(s) => EntryId::parse(s.as_bytes()),
        _ => None,
    }
}

/// An `XAUTOCLAIM` reply: where the scan goes on, and the entries claimed
/// (the third part, the IDs of deleted entries Redis dropped from the
/// pending list, needs nothing more).
fn parse_autoclaim(reply: Reply) -> RedisResult<(EntryId, Vec<Entry>)> {
    let Reply::Array(mut parts) = reply else {
        return Err(unexpected("XAUTOCLAIM", &reply));
    };
    if parts.len() < 2 {
        return Err(unexpected("XAUTOCLAIM", &Reply::Array(parts)));
    }
    let entries = parse_entries(parts.swap_remove(1))?;
    let cursor = id_of(&parts[0]).ok_or_else(|| unexpected("an XAUTOCLAIM cursor", &parts[0]))?;
    Ok((cursor, entries))
}

/// One entry of an `XPENDING stream group id id 1` reply: its ID and its
/// delivery count.
fn parse_pending_one(reply: Reply) -> Option<(EntryId, u64)> {
    let Reply::Array(mut rows) = reply else {
        return None;
    };
    let Reply::Array(row) = rows.pop()? else {
        return None;
    };
    match row.as_slice() {
        [id, _consumer, _idle, Reply::Int(count)] => {
            Some((id_of(id)?, u64::try_from(*count).ok()?))
        }
        _ => None,
    }
}

/// From an `XPENDING stream group` summary: the entries pending on
/// consumers other than `me`.
fn pending_of_others(reply: &Reply, me: &str) -> u64 {
    let Reply::Array(parts) = reply else {
        return 0;
    };
    let Some(Reply::Array(consumers)) = parts.get(3) else {
        return 0;
    };
    consumers
        .iter()
        .filter_map(|row| match row {
            Reply::Array(pair) if pair.len() == 2 => {
                let name = bytes_of(pair[0].clone()).ok()?;
                let count = bytes_of(pair[1].clone()).ok()?;
                let count: u64 = std::str::from_utf8(&count).ok()?.parse().ok()?;
                (name != me.as_bytes()).then_some(count)
            }
            _ => None,
        })
        .sum()
}

impl StageOptions for RedisReadOptions {
    fn build(self, ctx: &BuildContext) -> Result<Stage, ConfigError> {
        let server = Server::parse(&self.url)?;
        for (key, value) in [("stream", &self.stream), ("group", &self.group)] {
            if value.is_empty() {
                return Err(ConfigError::new(key, "must not be empty"));
            }
        }
        if self.consumer.as_deref() == Some("") {
            return Err(ConfigError::new("consumer", "must not be empty"));
        }
        if self.id_field.as_deref() == Some("") {
            return Err(ConfigError::new("id_field", "must not be empty"));
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return Err(ConfigError::new(
                "batch",
                format!("must be from 1 to {MAX_BATCH}, not {}", self.batch),
            ));
        }
        let block = self.block.unwrap_or_else(default_block);
        let claim_idle = self.claim_idle.unwrap_or_else(default_claim_idle);
        if block < Duration::from_millis(1) {
            return Err(ConfigError::new("block", "must be at least 1ms"));
        }
        if claim_idle < MIN_CLAIM_IDLE {
            return Err(ConfigError::new(
                "claim_idle",
                "must be at least 100ms: a shorter one would take entries from consumers at work",
            ));
        }
        if self.max_deliveries == 0 {
            return Err(ConfigError::new("max_deliveries", "must be at least 1"));
        }
        if self.stop_when_idle.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new("stop_when_idle", "must be more than 0s"));
        }
        let config = Config {
            stage: ctx.stage.clone(),
            server,
            stream: self.stream,
            group: self.group,
            consumer: self.consumer,
            batch: self.batch,
            block,
            claim_idle,
            max_deliveries: self.max_deliveries,
            stop_when_idle: self.stop_when_idle,
            max_entry: self.max_entry,
            id_field: self.id_field,
        };
        Ok(Stage::source(RedisRead {
            config: Arc::new(config),
            run: None,
        }))
    }
}

flow_core::inventory::submit! {
    StageType::new::<RedisReadOptions>(
        "redis_read",
        StageKind::Source,
        "Reads a Redis stream through a consumer group, shared by many processes, at least once.",
        "- name: jobs\n  type: redis_read\n  with: { url: 'redis://127.0.0.1:6379', stream: jobs, group: workers, stop_when_idle: 1s }\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            stage: "jobs".into(),
            server: Server::parse("redis://127.0.0.1:6379").unwrap(),
            stream: "s".into(),
            group: "g".into(),
            consumer: None,
            batch: 256,
            block: default_block(),
            claim_idle: default_claim_idle(),
            max_deliveries: 3,
            stop_when_idle: None,
            max_entry: Size(64),
            id_field: None,
        }
    }

    fn bulk(s: &[u8]) -> Reply {
        Reply::BulkString(s.to_vec())
    }

    fn fields(pairs: &[(&str, &[u8])]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
            .collect()
    }

    #[test]
    fn an_entry_becomes_the_object_of_its_fields_with_the_body_parsed() {
        let c = config();
        let id = EntryId { ms: 5, seq: 1 };
        let item = item_of(
            &c,
            id,
            fields(&[("body", br#"{"n":[1,2]}"#), ("kind", b"x")]),
        );
        let json = flow_core::value::to_json(&item.unwrap());
        assert_eq!(json, r#"{"body":{"n":[1,2]},"kind":"x"}"#);
        // A value that is not UTF-8 stays binary; no body is fine.
        let item = item_of(&c, id, fields(&[("raw", b"\xff\xfe")])).unwrap();
        assert!(matches!(
            flow_core::value::get(&item, "raw"),
            Some(Value::BStr(_))
        ));
        let with_id = Config {
            id_field: Some("_id".into()),
            ..config()
        };
        let item = item_of(&with_id, id, fields(&[("body", b"1")])).unwrap();
        assert_eq!(
            flow_core::value::to_json(&item),
            r#"{"body":1,"_id":"5-1"}"#
        );
    }

    #[test]
    fn a_body_that_is_not_json_or_an_entry_too_large_is_that_entrys_error() {
        let c = config();
        let id = EntryId { ms: 7, seq: 0 };
        let (record, why) = item_of(&c, id, fields(&[("body", b"not json")])).unwrap_err();
        assert!(
            why.starts_with("entry 7-0 of stream \"s\": the body field is not JSON"),
            "{why}"
        );
        assert_eq!(flow_core::value::to_json(&record), r#"{"body":"not json"}"#);
        let deep = "[".repeat(300) + &"]".repeat(300);
        let big = Config {
            max_entry: Size::mib(1),
            ..config()
        };
        assert!(item_of(&big, id, fields(&[("body", deep.as_bytes())])).is_err());
        let huge = vec![b'x'; 100];
        let (record, why) = item_of(&c, id, fields(&[("body", &huge)])).unwrap_err();
        assert!(
            why.contains("104 bytes, more than max_entry (64 bytes)"),
            "{why}"
        );
        assert!(flow_core::value::get(&record, "body").is_some());
    }

    #[test]
    fn replies_parse_including_deleted_entries_and_resp3_maps() {
        let entry = |id: &[u8], f: Reply| Reply::Array(vec![bulk(id), f]);
        let reply = Reply::Array(vec![Reply::Array(vec![
            bulk(b"s"),
            Reply::Array(vec![
                entry(b"1-1", Reply::Array(vec![bulk(b"a"), bulk(b"1")])),
                entry(b"2-1", Reply::Nil),
            ]),
        ])]);
        let entries = parse_read(reply).unwrap();
        assert_eq!(
            entries,
            [
                Entry {
                    id: EntryId { ms: 1, seq: 1 },
                    fields: Some(fields(&[("a", b"1")])),
                },
                Entry {
                    id: EntryId { ms: 2, seq: 1 },
                    fields: None,
                },
            ]
        );
        assert_eq!(parse_read(Reply::Nil).unwrap(), []);
        let map = Reply::Map(vec![(bulk(b"s"), Reply::Array(vec![]))]);
        assert_eq!(parse_read(map).unwrap(), []);
        for bad in [
            Reply::Int(3),
            Reply::Array(vec![Reply::Int(1)]),
            Reply::Array(vec![Reply::Array(vec![
                bulk(b"s"),
                Reply::Array(vec![entry(b"nope", Reply::Nil)]),
            ])]),
            Reply::Array(vec![Reply::Array(vec![
                bulk(b"s"),
                Reply::Array(vec![entry(b"1-1", Reply::Array(vec![bulk(b"odd")]))]),
            ])]),
        ] {
            assert!(parse_read(bad).is_err());
        }

        let claimed = Reply::Array(vec![
            bulk(b"0-0"),
            Reply::Array(vec![entry(b"3-0", Reply::Array(vec![]))]),
            Reply::Array(vec![bulk(b"2-1")]),
        ]);
        let (cursor, entries) = parse_autoclaim(claimed).unwrap();
        assert_eq!(cursor, EntryId::ZERO);
        assert_eq!(entries.len(), 1);

        let pending = Reply::Array(vec![Reply::Array(vec![
            bulk(b"3-0"),
            bulk(b"c1"),
            Reply::Int(10),
            Reply::Int(4),
        ])]);
        assert_eq!(
            parse_pending_one(pending),
            Some((EntryId { ms: 3, seq: 0 }, 4))
        );
        assert_eq!(parse_pending_one(Reply::Array(vec![])), None);

        let summary = Reply::Array(vec![
            Reply::Int(5),
            bulk(b"1-0"),
            bulk(b"9-0"),
            Reply::Array(vec![
                Reply::Array(vec![bulk(b"me"), bulk(b"2")]),
                Reply::Array(vec![bulk(b"other"), bulk(b"3")]),
            ]),
        ]);
        assert_eq!(pending_of_others(&summary, "me"), 3);
        let none = Reply::Array(vec![Reply::Int(0), Reply::Nil, Reply::Nil, Reply::Nil]);
        assert_eq!(pending_of_others(&none, "me"), 0);
    }

    #[test]
    fn options_are_checked_naming_the_key() {
        let ctx = BuildContext {
            stage: "jobs".into(),
            workers: 1,
            base_dir: ".".into(),
            timeout: None,
        };
        let t = flow_core::stage_type("redis_read").unwrap();
        let base = serde_json::json!({"url": "redis://localhost", "stream": "s", "group": "g"});
        assert!(t.build(&base, &ctx).is_ok());
        for (key, value, says) in [
            (
                "url",
                serde_json::json!("http://localhost"),
                "not a Redis URL",
            ),
            ("stream", serde_json::json!(""), "must not be empty"),
            ("group", serde_json::json!(""), "must not be empty"),
            ("consumer", serde_json::json!(""), "must not be empty"),
            ("batch", serde_json::json!(0), "from 1 to"),
            ("claim_idle", serde_json::json!("10ms"), "at least 100ms"),
            ("max_deliveries", serde_json::json!(0), "at least 1"),
            ("stop_when_idle", serde_json::json!("0s"), "more than 0s"),
            ("block", serde_json::json!("0s"), "at least 1ms"),
        ] {
            let mut with = base.clone();
            with[key] = value;
            let err = match t.build(&with, &ctx) {
                Ok(_) => panic!("{key}: accepted"),
                Err(e) => e,
            };
            assert!(
                err.to_string().contains(key) && err.to_string().contains(says),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn the_default_consumer_is_the_host_and_the_first_free_number() {
        let c = Config {
            stream: format!("consumer-test-{}", std::process::id()),
            ..config()
        };
        let (first, slot) = default_consumer(&c);
        let (second, slot2) = default_consumer(&c);
        assert!(first.ends_with("-0"), "{first}");
        assert!(second.ends_with("-1"), "{second}");
        drop(slot);
        // Released (as when the process ends): the number is free again.
        let (again, _slot) = default_consumer(&c);
        assert_eq!(again, first);
        drop(slot2);
    }
}
