//! `read`: emits the records of files, or of stdin: lines, JSON lines, the
//! elements of a JSON array, CSV rows, or whole files as binary items.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read as _, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use flow_core::value::{bytes, object, string};
use flow_core::{
    BATCH, BuildContext, ConfigError, Next, Output, Source, Stage, StageError, StageKind,
    StageOptions, StageType, Value, async_trait,
};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::csv_rows::{CsvRows, Row};
use crate::glob_walk::{expand as walk_glob, identity};
use crate::json_array::{self, Piece, Pos, ScanError};
use crate::limits::{InvalidUtf8, Size, quote_record};

/// Reads files, or standard input, and emits their records as items.
/// Reading runs on its own thread, so a slow disk or an idle stdin never
/// holds up the other stages; items read from a pipe are passed on as soon
/// as the reader would wait for more, not held for a full batch.
///
/// A record that cannot be read is that record's error, naming the file
/// and line: one longer than `max_record`, one that does not parse (a line
/// that is not JSON, a CSV row with the wrong number of fields), text that
/// is not UTF-8. The stage's `on_error` decides: `fail` (the default for a
/// source) stops the run (exit code 1) once the records before it are
/// handled; `drop` counts and logs it and reading goes on with the next
/// record; a stage name receives `{"item": "<the record's text, at most its
/// first 4 KiB>", "error": {…}}` and reading goes on. A file that cannot be
/// opened or read, or that is wrong as a whole (a `json` file that is not
/// an array, a CSV header naming a column twice), stops the run naming the
/// file; so does a regular file that shrinks or is replaced while it is
/// read (`data.jsonl: the file was truncated while it was read: …`), after
/// the records read from it before.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadOptions {
    /// The file, relative to the pipeline file's directory; `-` for
    /// standard input; or a glob (a path with `*`, `?` or `[`, like
    /// `data/*.csv` or `logs/**/*.jsonl`): every matching file is read, in
    /// sorted order, as if they were one input. A glob that matches no file
    /// stops the run. Write `[*]` for a literal `*` in a name. Each file is
    /// read once, even when the glob reaches it by several paths (links,
    /// hard links); `**` follows links to directories but enters each
    /// directory once, so a link loop ends.
    pub path: String,
    /// `lines`: each line is a string item (the default). `jsonl`: each
    /// non-blank line is a JSON document. `json`: the file holds one JSON
    /// array, each element is an item (read incrementally: a large array is
    /// never held whole). `csv`: the first row is the header; each further
    /// row is an object from the header's names to the row's fields, all
    /// strings, as written: numbers are not guessed (`"007"` stays
    /// `"007"`), convert with a `map` like `.score |= (tonumber? // null)`; a row with
    /// more or fewer fields than the header is an error. `bytes`: each file
    /// is one item `{path, name, body}`, with the file's path, its name
    /// without the directory, and its contents as binary in `body` (where
    /// `image` and `files` look by default). JSON is strict (RFC 8259: no
    /// comments, `NaN` or trailing commas) and nests at most 256 deep. A
    /// UTF-8 byte order mark at the start of a file is skipped.
    #[serde(default)]
    pub format: ReadFormat,
    /// The longest record, in bytes: a line (without its line ending), a
    /// CSV row, a JSON array element. A size like `64KiB`, `16MiB`, `1GB`,
    /// or a number of bytes. A longer record is that record's error
    /// (`data.jsonl:3: record longer than 16 MiB (max_record)`), raised as
    /// soon as the reader passes the limit; the rest of the record is
    /// skipped without being kept, so memory stays bounded even on an
    /// input that never ends a line (`/dev/zero`). While it is parsed, a
    /// record takes a small multiple of its size in memory.
    #[serde(default = "default_max_record")]
    #[schemars(with = "String")]
    pub max_record: Size,
    /// With `format: bytes`: the largest file, in bytes (`1GiB`; a size
    /// like `max_record`'s). A larger file is that file's error
    /// (`photo.png: the file is larger than 1 GiB (max_file)`), and is not
    /// read.
    #[serde(default = "default_max_file")]
    #[schemars(with = "String")]
    pub max_file: Size,
    /// What text that is not valid UTF-8 does, in `lines`, `jsonl`, `json`
    /// and `csv`: `error` (the default) makes it that record's error,
    /// naming the file, the line and where (`data.txt:3: invalid UTF-8 at
    /// byte 5 of the line (invalid_utf8: error)`); `replace` substitutes
    /// U+FFFD for each invalid sequence.
    #[serde(default)]
    pub invalid_utf8: InvalidUtf8,
}

fn default_max_record() -> Size {
    Size::mib(16)
}

fn default_max_file() -> Size {
    Size::gib(1)
}

/// How `read` splits its input into items.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReadFormat {
    #[default]
    Lines,
    Jsonl,
    Json,
    Csv,
    Bytes,
}

impl ReadFormat {
    /// Whether a resumed reading seeks to where it stood (see [`At`]).
    fn seeks(self) -> bool {
        matches!(
            self,
            ReadFormat::Lines | ReadFormat::Jsonl | ReadFormat::Bytes
        )
    }
}

/// What `path` names.
#[derive(Clone, Debug)]
enum Input {
    Stdin,
    File(PathBuf),
    /// A glob pattern, the pipeline's directory already in front of a
    /// relative one (escaped, so its own `[` or `*` match literally).
    Glob(String),
}

/// The limits a reader holds records to.
#[derive(Clone, Copy, Debug)]
struct Limits {
    max_record: Size,
    max_file: Size,
    utf8: InvalidUtf8,
}

/// What the reading thread sends the source task, in the order it read
/// them: items, a record that failed (so it keeps its place among the
/// items), and the end.
enum Chunk {
    /// Records read, and where the reading stands after the last of them.
    Items(Vec<Value>, Option<At>),
    Failed(Value, StageError, Option<At>),
    End,
}

/// Where the reading of the input stands after a record: in the file at
/// `file` (its index in the sorted list), `offset` bytes in, after `line`
/// lines. A resumed run seeks there instead of reading what is done again.
/// Known for lines, JSON lines and whole files; CSV and JSON arrays carry
/// parser state across records, and resume by skipping the records done.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct At {
    file: usize,
    offset: u64,
    line: u64,
}

impl At {
    fn to_json(self) -> serde_json::Value {
        serde_json::json!({ "file": self.file, "offset": self.offset, "line": self.line })
    }

    fn from_json(v: &serde_json::Value) -> Option<At> {
        let field = |k: &str| v.get(k)?.as_u64();
        Some(At {
            file: usize::try_from(field("file")?).ok()?,
            offset: field("offset")?,
            line: field("line")?,
        })
    }
}

type Batches = mpsc::Receiver<Result<Chunk, StageError>>;

/// How many bytes of records a batch holds at most before it is sent,
/// besides [`BATCH`] items: so that large records move a few at a time.
const BATCH_BYTES: usize = 1 << 20;

struct Read {
    input: Input,
    format: ReadFormat,
    limits: Limits,
    batches: Option<Batches>,
    /// How many records a file input holds (`u64::MAX` until known):
    /// counted ahead of the reading by [`spawn_counter`], then set to the
    /// records read (emitted or failed) once every file has been read.
    total: Arc<AtomicU64>,
    /// Records emitted or failed so far (with those skipped on resume).
    records: u64,
    /// On resume: records done by an earlier run, read again and skipped
    /// (for formats that cannot seek to `start`).
    skip: u64,
    /// On resume: where the reader starts, past the records done.
    start: Option<At>,
    /// Where the reading stands after the last record received, when the
    /// format knows (`None` after a record whose end is not known).
    at: Option<At>,
    /// The identity of the files read (see [`Source::position`]), taken
    /// once, before the reading starts: a file that changes while it is
    /// read stops the run anyway, so a checkpoint need not look again.
    identities: std::sync::OnceLock<Option<Vec<serde_json::Value>>>,
}

#[async_trait]
impl Source for Read {
    async fn next(&mut self, out: &mut Output) -> Result<Next, StageError> {
        let batches = self.batches.get_or_insert_with(|| {
            spawn_counter(&self.input, self.format, Arc::downgrade(&self.total));
            spawn_reader(self.input.clone(), self.format, self.limits, self.start)
        });
        match batches.recv().await {
            Some(Ok(Chunk::Items(values, at))) => {
                self.at = at;
                self.records += values.len() as u64;
                let done = self.skip.min(values.len() as u64);
                self.skip -= done;
                values
                    .into_iter()
                    .skip(done as usize)
                    .for_each(|v| out.emit(v));
                Ok(Next::More)
            }
            Some(Ok(Chunk::Failed(record, error, at))) => {
                self.at = at;
                self.records += 1;
                if self.skip > 0 {
                    self.skip -= 1;
                } else {
                    out.fail(record, error);
                }
                Ok(Next::More)
            }
            Some(Ok(Chunk::End)) => {
                if !matches!(self.input, Input::Stdin) {
                    let counted = self.total.swap(self.records, Ordering::Relaxed);
                    if counted != u64::MAX && counted > self.records {
                        tracing::warn!(
                            "{} records read, {counted} counted ahead: the input changed while \
                             it was read",
                            self.records
                        );
                    }
                }
                Ok(Next::Done)
            }
            Some(Err(e)) => Err(e),
            None => Err(StageError::permanent(
                "the reading thread ended without finishing the input",
            )),
        }
    }

    fn total(&self) -> Option<u64> {
        match self.total.load(Ordering::Relaxed) {
            u64::MAX => None,
            n => Some(n),
        }
    }

    /// How many records are done, where the next one starts (file, byte
    /// offset and line number, when the format allows a seek), and the
    /// identity of every file read (its path, size and a hash of its first
    /// 64 KiB), so that a resume over a changed, truncated or replaced file
    /// is refused. Standard input cannot be read again: no position.
    fn position(&self) -> Option<serde_json::Value> {
        let files = self.identities.get_or_init(|| {
            let files = match &self.input {
                Input::Stdin => return None,
                Input::File(path) => vec![path.clone()],
                Input::Glob(pattern) => walk_glob(pattern).ok()?,
            };
            Some(files.iter().map(|p| file_identity(p)).collect())
        });
        let mut position = serde_json::json!({ "records": self.records, "files": files.clone()? });
        if let Some(at) = self.at {
            position["at"] = at.to_json();
        }
        Some(position)
    }

    fn resume(&mut self, position: serde_json::Value) -> Result<(), StageError> {
        let Some(records) = self.position_check(&position)? else {
            return Err(StageError::permanent(
                "standard input cannot be read again: a run reading `-` cannot be resumed",
            ));
        };
        let at = At::from_json(&position["at"]).filter(|_| self.format.seeks());
        match at {
            Some(at) => {
                (self.start, self.at) = (Some(at), Some(at));
                (self.records, self.skip) = (records, 0);
            }
            None => (self.records, self.skip) = (0, records),
        }
        Ok(())
    }
}

impl Read {
    /// The records a checkpoint's `position` says are done, after checking
    /// that the files are the ones it was made over.
    fn position_check(&self, position: &serde_json::Value) -> Result<Option<u64>, StageError> {
        let Some(now) = self.position() else {
            return Ok(None);
        };
        let records = position["records"]
            .as_u64()
            .ok_or_else(|| StageError::permanent("the checkpoint has no position for read"))?;
        let (then, now) = (&position["files"], &now["files"]);
        if then != now {
            let what = changed_file(then, now);
            return Err(StageError::permanent(format!(
                "the input changed since the checkpoint: {what}"
            )));
        }
        Ok(Some(records))
    }
}

/// A file's identity for a checkpoint: path, size, and a hash of its head.
fn file_identity(path: &Path) -> serde_json::Value {
    let size = std::fs::metadata(path).map(|m| m.len()).ok();
    let mut head = vec![0u8; 64 << 10];
    let n = File::open(path)
        .and_then(|mut f| {
            let mut n = 0;
            loop {
                match io::Read::read(&mut f, &mut head[n..]) {
                    Ok(0) => return Ok(n),
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
                if n == head.len() {
                    return Ok(n);
                }
            }
        })
        .unwrap_or(0);
    serde_json::json!({
        "path": path.display().to_string(),
        "size": size,
        "head": format!("{:016x}", flow_core::text::fnv1a(&head[..n])),
    })
}

/// What differs between the files of a checkpoint and those now, in words.
fn changed_file(then: &serde_json::Value, now: &serde_json::Value) -> String {
    fn list(v: &serde_json::Value) -> &[serde_json::Value] {
        v.as_array().map_or(&[], Vec::as_slice)
    }
    let (then, now) = (list(then), list(now));
    for (a, b) in then.iter().zip(now) {
        if a["path"] != b["path"] {
            return format!("{} is no longer read (now {})", a["path"], b["path"]);
        }
        let path = a["path"].as_str().unwrap_or("?");
        if a["size"] != b["size"] {
            return format!("{path} was {} bytes, now {}", a["size"], b["size"]);
        }
        if a["head"] != b["head"] {
            return format!("{path} was rewritten (its first bytes differ)");
        }
    }
    format!("{} files were read, now {}", then.len(), now.len())
}

/// Counts the records of the input's files on a thread of its own, for
/// progress and ETA, while the reader reads them: a fast scan (newlines, or
/// CSV records, or JSON elements skipped unparsed, in bounded memory) that
/// stops when the source is dropped. Only regular files are counted (a
/// pipe read twice would lose data); for stdin, or when a file cannot be
/// counted, the total stays unknown.
fn spawn_counter(input: &Input, format: ReadFormat, total: Weak<AtomicU64>) {
    let input = input.clone();
    let spawned = std::thread::Builder::new()
        .name("flow-read-count".into())
        .spawn(move || {
            let files = match input {
                Input::Stdin => return,
                Input::File(path) => vec![path],
                Input::Glob(pattern) => match walk_glob(&pattern) {
                    Ok(files) => files,
                    Err(_) => return,
                },
            };
            let mut sum = 0;
            for path in &files {
                match count_records(path, format, &total) {
                    Some(n) => sum += n,
                    None => return,
                }
            }
            if let Some(total) = total.upgrade() {
                // The reader may have finished first and stored the exact count.
                let _ = total.compare_exchange(u64::MAX, sum, Ordering::Relaxed, Ordering::Relaxed);
            }
        });
    if let Err(e) = spawned {
        tracing::debug!("cannot count the records ahead: {e}");
    }
}

/// The records `read` will emit or fail from one regular file, as the
/// reader would split them; `None` if it is not a regular file, or
/// unreadable, or the source is gone.
fn count_records(path: &Path, format: ReadFormat, source: &Weak<AtomicU64>) -> Option<u64> {
    if !std::fs::metadata(path).ok()?.is_file() {
        return None;
    }
    if format == ReadFormat::Bytes {
        return Some(1);
    }
    let read = WhileWanted {
        inner: File::open(path).ok()?,
        source: source.clone(),
    };
    let mut input = BufReader::with_capacity(1 << 16, read);
    skip_bom(&mut input).ok()?;
    match format {
        ReadFormat::Lines => count_lines(input, false),
        ReadFormat::Jsonl => count_lines(input, true),
        ReadFormat::Csv => {
            let mut rows = CsvRows::new(usize::MAX, false);
            let mut n = 0u64;
            while rows.next(&mut input, usize::MAX).ok()?.is_some() {
                n += 1;
            }
            // The header is no record.
            Some(n.saturating_sub(1))
        }
        ReadFormat::Json => {
            let mut n = 0;
            json_array::scan(&mut input, usize::MAX, false, |_| {
                n += 1;
                Ok::<(), ()>(())
            })
            .ok()?;
            Some(n)
        }
        ReadFormat::Bytes => Some(1),
    }
}

/// Lines as `lines` splits them (an unterminated last line counts), or for
/// `jsonl` only those with something other than whitespace.
fn count_lines(mut read: impl io::Read, skip_blank: bool) -> Option<u64> {
    let mut buf = vec![0; 1 << 16];
    let (mut n, mut open, mut content) = (0u64, false, false);
    loop {
        let len = match read.read(&mut buf) {
            Ok(0) => break,
            Ok(len) => len,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        let chunk = &buf[..len];
        if skip_blank {
            let mut lines = chunk.split(|&b| b == b'\n');
            let last = lines.next_back().unwrap_or_default();
            for line in lines {
                if content || line.iter().any(|b| !b.is_ascii_whitespace()) {
                    n += 1;
                }
                content = false;
            }
            content |= last.iter().any(|b| !b.is_ascii_whitespace());
        } else {
            n += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
            open = chunk[len - 1] != b'\n';
        }
    }
    Some(n + u64::from(open || content))
}

/// A file read for counting, until the source that wants the count is gone.
struct WhileWanted {
    inner: File,
    source: Weak<AtomicU64>,
}

impl io::Read for WhileWanted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.source.strong_count() == 0 {
            return Err(io::Error::other("the source is gone"));
        }
        self.inner.read(buf)
    }
}

/// Skips a UTF-8 byte order mark at the start of an input; how many bytes
/// it skipped.
fn skip_bom(input: &mut impl BufRead) -> io::Result<u64> {
    if input.fill_buf()?.starts_with(b"\xef\xbb\xbf") {
        input.consume(3);
        return Ok(3);
    }
    Ok(0)
}

/// Reads on a plain thread (one blocked on stdin must not keep the runtime
/// from shutting down) and sends batches of items.
fn spawn_reader(input: Input, format: ReadFormat, limits: Limits, start: Option<At>) -> Batches {
    let (tx, rx) = mpsc::channel(2);
    let thread_tx = tx.clone();
    let spawned = std::thread::Builder::new()
        .name("flow-read".into())
        .spawn(move || {
            let tx = thread_tx;
            // Binary files are big: pass each on alone, so the channel holds few.
            let limit = if format == ReadFormat::Bytes {
                1
            } else {
                BATCH
            };
            let pending = Rc::new(RefCell::new(Pending {
                tx: tx.clone(),
                batch: Vec::new(),
                bytes: 0,
                limit,
                at: None,
            }));
            let result = read_all(&input, format, limits, start, &pending);
            // The items read before an error are handled before it stops the run.
            if pending.borrow_mut().flush().is_ok() {
                let _ = tx.blocking_send(result.map(|()| Chunk::End));
            }
        });
    if let Err(e) = spawned {
        let message = format!("cannot start the reading thread: {e}");
        let _ = tx.try_send(Err(StageError::retryable(message)));
    }
    rx
}

/// Items read and not yet sent to the source task.
struct Pending {
    tx: mpsc::Sender<Result<Chunk, StageError>>,
    batch: Vec<Value>,
    /// Roughly how many bytes of records `batch` holds.
    bytes: usize,
    limit: usize,
    /// Where the reading stands after the last record in `batch`.
    at: Option<At>,
}

/// The source task is gone: the run stopped reading.
#[derive(Debug)]
struct Stopped;

impl Pending {
    fn push(&mut self, value: Value, size: usize, at: Option<At>) -> Result<(), Stopped> {
        self.batch.push(value);
        self.bytes += size;
        self.at = at;
        if self.batch.len() >= self.limit || self.bytes >= BATCH_BYTES {
            self.flush()
        } else {
            Ok(())
        }
    }

    /// A record that failed goes after the items read before it.
    fn fail(&mut self, record: Value, error: StageError, at: Option<At>) -> Result<(), Stopped> {
        self.flush()?;
        self.tx
            .blocking_send(Ok(Chunk::Failed(record, error, at)))
            .map_err(|_| Stopped)
    }

    fn flush(&mut self) -> Result<(), Stopped> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.bytes = 0;
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(self.limit));
        self.tx
            .blocking_send(Ok(Chunk::Items(batch, self.at)))
            .map_err(|_| Stopped)
    }
}

/// A reader that first sends the pending items whenever it is about to ask
/// the OS for more input, which may block (a pipe, stdin): a record read is
/// never held back waiting for the next. It fails once the run stopped
/// reading, so a reader skipping an endless record (`/dev/zero`) ends with
/// the run, and it counts the bytes read.
struct FlushBeforeRead {
    inner: Box<dyn io::Read>,
    pending: Rc<RefCell<Pending>>,
    read: Rc<Cell<u64>>,
}

impl io::Read for FlushBeforeRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut pending = self.pending.borrow_mut();
        if pending.tx.is_closed() || pending.flush().is_err() {
            return Err(io::Error::other("the run stopped reading"));
        }
        drop(pending);
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// What a regular file was when it was opened, to tell at its end whether
/// it changed under the reader.
struct Snapshot {
    /// The open file (a second handle), for its size now.
    file: File,
    size: u64,
    id: Option<(u64, u64)>,
}

impl Snapshot {
    /// `None` for what is not a regular file (a pipe, a device, stdin).
    fn take(file: &File) -> Option<Snapshot> {
        let meta = file.metadata().ok()?;
        if !meta.is_file() {
            return None;
        }
        Some(Snapshot {
            file: file.try_clone().ok()?,
            size: meta.len(),
            id: identity(&meta),
        })
    }

    /// Checks, at the end of the file, that `read` bytes is all it held:
    /// it did not shrink while it was read, and its name still leads to
    /// it. (A file that grew was read to its new end.)
    fn check(&self, name: &str, path: &Path, read: u64) -> Result<(), StageError> {
        let changed = |what: String| {
            StageError::permanent(format!(
                "{name}: the file {what}; its records may be incomplete"
            ))
        };
        // A size of 0 says nothing: files in /proc and /sys, some FUSE
        // file systems, have content but no size.
        if self.size == 0 {
            return self.same_name(name, path);
        }
        if read < self.size {
            return Err(changed(format!(
                "was truncated while it was read: {} bytes when it was opened, its end came after {}",
                self.size, read
            )));
        }
        if let Ok(now) = self.file.metadata()
            && now.len() < read
        {
            return Err(changed(format!(
                "was truncated while it was read: {read} bytes read, {} bytes now",
                now.len()
            )));
        }
        self.same_name(name, path)
    }

    /// The file's name still leads to it (a removed file was read whole).
    fn same_name(&self, name: &str, path: &Path) -> Result<(), StageError> {
        match std::fs::metadata(path) {
            Ok(meta) if identity(&meta) != self.id => Err(StageError::permanent(format!(
                "{name}: the file was replaced while it was read: its name leads to another \
                 file now; its records may be incomplete"
            ))),
            _ => Ok(()),
        }
    }
}

fn read_all(
    input: &Input,
    format: ReadFormat,
    limits: Limits,
    start: Option<At>,
    pending: &Rc<RefCell<Pending>>,
) -> Result<(), StageError> {
    let start = start.unwrap_or_default();
    let files = match input {
        Input::Stdin => vec![None],
        Input::File(path) => vec![Some(path.clone())],
        Input::Glob(pattern) => expand(pattern)?.into_iter().map(Some).collect(),
    };
    for (index, path) in files.into_iter().enumerate().skip(start.file) {
        let from = if index == start.file {
            At {
                file: index,
                ..start
            }
        } else {
            At {
                file: index,
                offset: 0,
                line: 0,
            }
        };
        let name = path
            .as_ref()
            .map_or_else(|| "stdin".to_string(), |p| p.display().to_string());
        let (inner, snapshot): (Box<dyn io::Read>, _) = match &path {
            None => (Box::new(io::stdin()), None),
            Some(p) => {
                let mut file = File::open(p)
                    .map_err(|e| StageError::permanent(format!("cannot open {name}: {e}")))?;
                if from.offset > 0 {
                    file.seek(SeekFrom::Start(from.offset)).map_err(|e| {
                        StageError::permanent(format!("cannot seek in {name}: {e}"))
                    })?;
                }
                let snapshot = Snapshot::take(&file);
                (Box::new(file), snapshot)
            }
        };
        let read = Rc::new(Cell::new(from.offset));
        let file = FileInput {
            name: &name,
            from,
            next: Cell::new(None),
            path: path.as_deref(),
            pending,
            limits,
            snapshot: snapshot.as_ref(),
            read: &read,
        };
        let input = FlushBeforeRead {
            inner,
            pending: pending.clone(),
            read: read.clone(),
        };
        let result = match format {
            ReadFormat::Lines | ReadFormat::Jsonl => file.lines(input, format),
            ReadFormat::Json => file.json_array(input),
            ReadFormat::Csv => file.csv(input),
            ReadFormat::Bytes => file.bytes(input),
        };
        match result {
            Ok(()) => {}
            Err(_) if pending.borrow().tx.is_closed() => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The files a glob matches, sorted, each once; directories are skipped.
fn expand(pattern: &str) -> Result<Vec<PathBuf>, StageError> {
    let files = walk_glob(pattern).map_err(StageError::permanent)?;
    if files.is_empty() {
        return Err(StageError::permanent(format!("no file matches {pattern}")));
    }
    Ok(files)
}

/// One input being read: its name for messages, and where its items go.
struct FileInput<'a> {
    name: &'a str,
    /// Where the reading of this file starts.
    from: At,
    /// Where the reading stands after the record being pushed (see [`At`]).
    next: Cell<Option<At>>,
    /// `None` for stdin.
    path: Option<&'a Path>,
    pending: &'a Rc<RefCell<Pending>>,
    limits: Limits,
    snapshot: Option<&'a Snapshot>,
    /// Bytes read from the input so far.
    read: &'a Cell<u64>,
}

/// Pushing an item failed: the run stopped reading (the caller checks).
fn stopped(_: Stopped) -> StageError {
    StageError::permanent("the run stopped reading")
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Text as a string value.
fn text_value(text: std::borrow::Cow<'_, str>) -> Value {
    Value::utf8_str(text.into_owned().into_bytes())
}

impl FileInput<'_> {
    fn push(&self, value: Value, size: usize) -> Result<(), StageError> {
        let at = self.next.get();
        self.pending
            .borrow_mut()
            .push(value, size, at)
            .map_err(stopped)
    }

    /// The record at `line` failed: its error goes through `on_error`,
    /// with the start of its text as the record.
    fn fail(
        &self,
        line: u64,
        message: impl std::fmt::Display,
        raw: &[u8],
    ) -> Result<(), StageError> {
        self.fail_where(line, message, raw)
    }

    /// [`FileInput::fail`] at a line and column.
    fn fail_at(
        &self,
        at: Pos,
        message: impl std::fmt::Display,
        raw: &[u8],
    ) -> Result<(), StageError> {
        self.fail_where(format_args!("{}:{}", at.line, at.column), message, raw)
    }

    fn fail_where(
        &self,
        at: impl std::fmt::Display,
        message: impl std::fmt::Display,
        raw: &[u8],
    ) -> Result<(), StageError> {
        let error = StageError::permanent(format!("{}:{at}: {message}", self.name));
        self.pending
            .borrow_mut()
            .fail(string(quote_record(raw)), error, self.next.get())
            .map_err(stopped)
    }

    /// An error that stops the reading, at a line (or `line:column`).
    fn error(&self, at: impl std::fmt::Display, message: impl std::fmt::Display) -> StageError {
        StageError::permanent(format!("{}:{at}: {message}", self.name))
    }

    fn io_error(&self, e: io::Error) -> StageError {
        StageError::permanent(format!("{}: {e}", self.name))
    }

    fn too_long(&self) -> String {
        format!("record longer than {} (max_record)", self.limits.max_record)
    }

    /// At the end of the input: a regular file must not have changed.
    fn unchanged(&self) -> Result<(), StageError> {
        match (self.snapshot, self.path) {
            (Some(snapshot), Some(path)) => snapshot.check(self.name, path, self.read.get()),
            _ => Ok(()),
        }
    }

    fn lines(&self, read: FlushBeforeRead, format: ReadFormat) -> Result<(), StageError> {
        let mut input = BufReader::with_capacity(1 << 16, read);
        let At {
            file,
            mut offset,
            line: mut number,
        } = self.from;
        if offset == 0 {
            offset = skip_bom(&mut input).map_err(|e| self.io_error(e))?;
        }
        let max = self.limits.max_record.as_usize();
        // The longest line kept: the record, then `\r\n`.
        let keep = (max as u64).saturating_add(2);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = input
                .by_ref()
                .take(keep)
                .read_until(b'\n', &mut line)
                .map_err(|e| self.io_error(e))?;
            if n == 0 {
                return self.unchanged();
            }
            number += 1;
            offset += n as u64;
            if n as u64 == keep && !line.ends_with(b"\n") {
                // Too long, and not over yet: say so now, then skip the
                // rest without keeping it. Where it ends is not known yet:
                // a checkpoint now resumes by skipping records instead.
                self.next.set(None);
                self.fail(number, self.too_long(), &line)?;
                offset += input.skip_until(b'\n').map_err(|e| self.io_error(e))? as u64;
                continue;
            }
            self.next.set(Some(At {
                file,
                offset,
                line: number,
            }));
            let text = trim_newline(&line);
            if text.len() > max {
                self.fail(number, self.too_long(), text)?;
                continue;
            }
            match format {
                ReadFormat::Jsonl if text.iter().all(u8::is_ascii_whitespace) => {}
                ReadFormat::Jsonl => self.json_line(number, text)?,
                _ => match self.limits.utf8.decode(text) {
                    Ok(s) => self.push(text_value(s), text.len())?,
                    Err(at) => self.fail(
                        number,
                        format_args!(
                            "invalid UTF-8 at byte {} of the line (invalid_utf8: error)",
                            at + 1
                        ),
                        text,
                    )?,
                },
            }
            if line.capacity() > 1 << 20 {
                // After a long line, give its memory back.
                line = Vec::new();
            }
        }
    }

    fn json_line(&self, number: u64, text: &[u8]) -> Result<(), StageError> {
        if self.limits.utf8 == InvalidUtf8::Error
            && let Err(e) = std::str::from_utf8(text)
        {
            let at = e.valid_up_to() + 1;
            let message = format!("invalid UTF-8 at byte {at} of the line (invalid_utf8: error)");
            return self.fail(number, message, text);
        }
        match flow_core::json::parse(text, self.limits.utf8.json()) {
            Ok(value) => self.push(value, text.len()),
            Err(e) => self.fail(number, format_args!("invalid JSON: {e}"), text),
        }
    }

    /// The elements of one JSON array, split and parsed one at a time.
    fn json_array(&self, read: FlushBeforeRead) -> Result<(), StageError> {
        let mut input = BufReader::with_capacity(1 << 16, read);
        skip_bom(&mut input).map_err(|e| self.io_error(e))?;
        let max = self.limits.max_record.as_usize();
        match json_array::scan(&mut input, max, true, |piece| self.json_piece(piece)) {
            Ok(()) => self.unchanged(),
            Err(ScanError::Stopped(e)) => Err(e),
            Err(ScanError::Io(e)) => Err(self.io_error(e)),
            Err(ScanError::NotArray { found, at }) => Err(self.error(
                format_args!("{}:{}", at.line, at.column),
                format_args!("expected a JSON array, found {found}"),
            )),
            Err(ScanError::Trailing { at }) => Err(self.error(
                format_args!("{}:{}", at.line, at.column),
                "trailing characters after the JSON array",
            )),
        }
    }

    fn json_piece(&self, piece: Piece<'_>) -> Result<(), StageError> {
        match piece {
            Piece::Element { text, at } => {
                if self.limits.utf8 == InvalidUtf8::Error
                    && let Err(e) = std::str::from_utf8(text)
                {
                    let message = "invalid UTF-8 (invalid_utf8: error)";
                    return self.fail_at(at.advanced(text, e.valid_up_to()), message, text);
                }
                match flow_core::json::parse(text, self.limits.utf8.json()) {
                    Ok(value) => self.push(value, text.len()),
                    Err(e) => self.fail_at(
                        at.advanced(text, e.offset),
                        format_args!("invalid JSON: {}", e.message),
                        text,
                    ),
                }
            }
            Piece::TooLong { head, at } => self.fail_at(at, self.too_long(), head),
            Piece::Missing { delimiter, at } => self.fail_at(
                at,
                format_args!(
                    "invalid JSON: expected an array element before `{}`",
                    delimiter as char
                ),
                b"",
            ),
            Piece::Unterminated { text, at } => self.fail_at(
                at,
                "the file ends inside the JSON array (no closing `]`)",
                text,
            ),
        }
    }

    fn csv(&self, read: FlushBeforeRead) -> Result<(), StageError> {
        let mut input = BufReader::with_capacity(1 << 16, read);
        skip_bom(&mut input).map_err(|e| self.io_error(e))?;
        let mut rows = CsvRows::new(self.limits.max_record.as_usize(), true);
        let io = |e| self.io_error(e);
        let names = match rows.next(&mut input, usize::MAX).map_err(io)? {
            None => return self.unchanged(),
            Some(Row::Fields { line, fields, .. }) => self.header(line, &fields)?,
            Some(Row::TooLong { line, .. }) | Some(Row::TooManyFields { line, .. }) => {
                let message = format!(
                    "the header is longer than {} (max_record)",
                    self.limits.max_record
                );
                return Err(self.error(line, message));
            }
        };
        let width = names.len();
        while let Some(row) = rows.next(&mut input, width).map_err(io)? {
            match row {
                Row::Fields { line, fields, raw } if fields.len() != width => {
                    let message = format!(
                        "the row has {} fields, the header has {width}",
                        fields.len()
                    );
                    self.fail(line, message, raw)?;
                }
                Row::Fields { line, fields, raw } => {
                    let mut size = 0;
                    let mut row = Vec::with_capacity(width);
                    let mut bad = None;
                    for (i, (name, field)) in names.iter().zip(&fields).enumerate() {
                        match self.limits.utf8.decode(field) {
                            Ok(text) => {
                                size += field.len();
                                row.push((name.clone(), text_value(text)));
                            }
                            Err(_) => {
                                bad = Some(i + 1);
                                break;
                            }
                        }
                    }
                    match bad {
                        None => self.push(Value::obj(row.into_iter().collect()), size)?,
                        Some(field) => self.fail(
                            line,
                            format_args!("invalid UTF-8 in field {field} (invalid_utf8: error)"),
                            raw,
                        )?,
                    }
                }
                Row::TooLong { line, raw } => self.fail(line, self.too_long(), raw)?,
                Row::TooManyFields { line, count, raw } => {
                    let message = format!("the row has {count} fields, the header has {width}");
                    self.fail(line, message, raw)?;
                }
            }
        }
        self.unchanged()
    }

    /// The header's names as keys; a name twice, or not UTF-8, is an error
    /// that stops the reading (no row could be read right).
    fn header(&self, line: u64, fields: &[&[u8]]) -> Result<Vec<Value>, StageError> {
        let mut seen = HashSet::with_capacity(fields.len());
        let mut names = Vec::with_capacity(fields.len());
        for (i, field) in fields.iter().enumerate() {
            let name = self.limits.utf8.decode(field).map_err(|_| {
                let message = format!(
                    "invalid UTF-8 in the header, column {} (invalid_utf8: error)",
                    i + 1
                );
                self.error(line, message)
            })?;
            if !seen.insert(name.clone()) {
                let message = format!("the header names column {name:?} twice");
                return Err(self.error(line, message));
            }
            names.push(text_value(name));
        }
        Ok(names)
    }

    /// The whole input as one item, if it is at most `max_file`.
    fn bytes(&self, read: FlushBeforeRead) -> Result<(), StageError> {
        let max = self.limits.max_file;
        let (path, name) = match self.path {
            Some(p) => {
                let name = p.file_name().unwrap_or(p.as_os_str());
                (p.display().to_string(), name.to_string_lossy().into_owned())
            }
            None => ("-".to_string(), "-".to_string()),
        };
        let record = |body: Option<Vec<u8>>| {
            let mut fields = vec![
                ("path", string(path.clone())),
                ("name", string(name.clone())),
            ];
            fields.extend(body.map(|b| ("body", bytes(b))));
            object(fields)
        };
        let too_big = || {
            let error = StageError::permanent(format!(
                "{}: the file is larger than {max} (max_file)",
                self.name
            ));
            self.pending
                .borrow_mut()
                .fail(record(None), error, self.next.get())
                .map_err(stopped)
        };
        self.next.set(Some(At {
            file: self.from.file + 1,
            offset: 0,
            line: 0,
        }));
        let size = self.snapshot.map_or(0, |s| s.size);
        if size > max.bytes() {
            return too_big();
        }
        let mut body = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        read.take(max.bytes().saturating_add(1))
            .read_to_end(&mut body)
            .map_err(|e| self.io_error(e))?;
        if body.len() as u64 > max.bytes() {
            return too_big();
        }
        self.unchanged()?;
        let len = body.len();
        self.push(record(Some(body)), len)
    }
}

/// Whether a path is a glob: it has a character that `glob` treats as a
/// wildcard.
fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

impl StageOptions for ReadOptions {
    fn build(self, ctx: &BuildContext) -> Result<Stage, ConfigError> {
        if self.path.is_empty() {
            return Err(ConfigError::new("path", "must not be empty"));
        }
        let input = if self.path == "-" {
            Input::Stdin
        } else if is_glob(&self.path) {
            glob::Pattern::new(&self.path)
                .map_err(|e| ConfigError::new("path", format!("invalid glob: {e}")))?;
            let dir = ctx.base_dir.to_string_lossy();
            let pattern = if std::path::Path::new(&self.path).is_absolute() || dir.is_empty() {
                self.path.clone()
            } else {
                let dir = glob::Pattern::escape(&dir);
                format!("{}/{}", dir.trim_end_matches('/'), self.path)
            };
            Input::Glob(pattern)
        } else {
            Input::File(ctx.resolve_path(&self.path))
        };
        Ok(Stage::source(Read {
            input,
            format: self.format,
            limits: Limits {
                max_record: self.max_record,
                max_file: self.max_file,
                utf8: self.invalid_utf8,
            },
            batches: None,
            total: Arc::new(AtomicU64::new(u64::MAX)),
            records: 0,
            skip: 0,
            start: None,
            at: None,
            identities: std::sync::OnceLock::new(),
        }))
    }
}

flow_core::inventory::submit! {
    StageType::new::<ReadOptions>(
        "read",
        StageKind::Source,
        "Emits the records of files or stdin: lines, JSON lines, a JSON array, CSV rows, or whole files.",
        "- name: urls\n  type: read\n  with: { path: urls.txt, format: lines }\n",
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use flow_core::value::to_json;

    use super::*;

    fn ctx(dir: &Path) -> BuildContext {
        BuildContext {
            stage: "r".into(),
            workers: 1,
            base_dir: dir.to_path_buf(),
            timeout: None,
        }
    }

    fn source(dir: &Path, with: serde_json::Value) -> Box<dyn Source> {
        let options: ReadOptions = serde_json::from_value(with).unwrap();
        let Stage::Source(source) = options.build(&ctx(dir)).unwrap() else {
            panic!("read is a source")
        };
        source
    }

    /// Everything `read` with options `with` does in `dir`, in order: each
    /// item as its JSON, each failed record as `error: MESSAGE <RECORD>`;
    /// and the error that stopped it, if any.
    async fn run(dir: &Path, with: serde_json::Value) -> (Vec<String>, Option<String>) {
        let mut source = source(dir, with);
        let mut out = Output::new();
        let mut got = Vec::new();
        loop {
            let next = source.next(&mut out).await;
            got.extend(out.items_mut().drain(..).map(|i| to_json(&i.value)));
            for (item, error) in out.take_failed() {
                got.push(format!("error: {error} <{}>", value_text(&item.value)));
            }
            match next {
                Ok(Next::More) => {}
                Ok(Next::Done) => return (got, None),
                Err(e) => return (got, Some(e.to_string())),
            }
        }
    }

    fn value_text(v: &Value) -> String {
        flow_core::value::to_text(v)
    }

    /// The items `read` emits for `path` in `dir`, as JSON; or the first
    /// failed record's error, or the error that stopped it.
    async fn read(dir: &Path, path: &str, format: ReadFormat) -> Result<Vec<String>, String> {
        let with = serde_json::json!({ "path": path, "format": format });
        let (got, error) = run(dir, with).await;
        if let Some(failed) = got.iter().find(|g| g.starts_with("error: ")) {
            let (message, _record) = failed["error: ".len()..].rsplit_once(" <").unwrap();
            return Err(message.to_string());
        }
        match error {
            Some(e) => Err(e),
            None => Ok(got),
        }
    }

    fn files(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    /// `name` in `dir`, as the messages name it.
    fn named(dir: &tempfile::TempDir, name: &str) -> String {
        dir.path().join(name).display().to_string()
    }

    #[tokio::test]
    async fn csv_rows_become_objects_of_the_strings_as_written() {
        let dir = files(&[(
            "a.csv",
            "\u{feff}id,title,zip\r\n1,\"Hello, World\",007\r\n2,\"say \"\"hi\"\"\",\r\n"
                .as_bytes(),
        )]);
        let got = read(dir.path(), "a.csv", ReadFormat::Csv).await.unwrap();
        assert_eq!(
            got,
            [
                r#"{"id":"1","title":"Hello, World","zip":"007"}"#,
                r#"{"id":"2","title":"say \"hi\"","zip":""}"#,
            ]
        );
    }

    #[tokio::test]
    async fn csv_row_with_the_wrong_number_of_fields_names_file_and_line() {
        let dir = files(&[("a.csv", b"a,b\n1,2\n3\n4,5,6\n7,8\n")]);
        let (got, error) = run(
            dir.path(),
            serde_json::json!({"path": "a.csv", "format": "csv"}),
        )
        .await;
        let f = named(&dir, "a.csv");
        assert_eq!(
            got,
            [
                r#"{"a":"1","b":"2"}"#.to_string(),
                format!("error: {f}:3: the row has 1 fields, the header has 2 <3>"),
                format!("error: {f}:4: the row has 3 fields, the header has 2 <4,5,6>"),
                r#"{"a":"7","b":"8"}"#.to_string(),
            ]
        );
        assert_eq!(error, None);
    }

    #[tokio::test]
    async fn csv_header_naming_a_column_twice_is_an_error() {
        let dir = files(&[("a.csv", b"a,b,a\n1,2,3\n")]);
        let err = read(dir.path(), "a.csv", ReadFormat::Csv)
            .await
            .unwrap_err();
        assert!(
            err.ends_with(r#"a.csv:1: the header names column "a" twice"#),
            "{err}"
        );
    }

    #[tokio::test]
    async fn empty_csv_and_empty_json_array_give_no_items() {
        let dir = files(&[("a.csv", b""), ("h.csv", b"a,b\n"), ("a.json", b" [ ] ")]);
        for (name, format) in [
            ("a.csv", ReadFormat::Csv),
            ("h.csv", ReadFormat::Csv),
            ("a.json", ReadFormat::Json),
        ] {
            assert!(
                read(dir.path(), name, format).await.unwrap().is_empty(),
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn json_array_elements_become_items() {
        let dir = files(&[("a.json", b"[\n {\"a\": [1, 2.5]},\n \"x\",\n null\n]\n")]);
        let got = read(dir.path(), "a.json", ReadFormat::Json).await.unwrap();
        assert_eq!(got, [r#"{"a":[1,2.5]}"#, r#""x""#, "null"]);
    }

    #[tokio::test]
    async fn json_errors_name_file_line_and_column() {
        let dir = files(&[
            ("obj.json", b"{\"a\": 1}"),
            ("bad.json", b"[1,\n2,\n}"),
            ("two.json", b"[1] [2]"),
        ]);
        let err = read(dir.path(), "obj.json", ReadFormat::Json)
            .await
            .unwrap_err();
        assert!(
            err.ends_with("obj.json:1:1: expected a JSON array, found an object"),
            "{err}"
        );
        let err = read(dir.path(), "bad.json", ReadFormat::Json)
            .await
            .unwrap_err();
        assert!(
            err.ends_with("bad.json:3:1: the file ends inside the JSON array (no closing `]`)"),
            "{err}"
        );
        let err = read(dir.path(), "two.json", ReadFormat::Json)
            .await
            .unwrap_err();
        assert!(
            err.ends_with("two.json:1:5: trailing characters after the JSON array"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn bad_json_elements_fail_one_at_a_time_in_their_place() {
        let dir = files(&[(
            "a.json",
            b"[1, NaN, {\"a\": 2}, {1: 2},\n  [1,,], \"\xff\", 3, ]",
        )]);
        let f = named(&dir, "a.json");
        let (got, error) = run(
            dir.path(),
            serde_json::json!({"path": "a.json", "format": "json"}),
        )
        .await;
        assert_eq!(
            got,
            [
                "1".to_string(),
                format!("error: {f}:1:5: invalid JSON: expected a JSON value, found `N` <NaN>"),
                r#"{"a":2}"#.to_string(),
                format!(
                    "error: {f}:1:21: invalid JSON: expected a string key in an object, found `1` <{{1: 2}}>"
                ),
                format!("error: {f}:2:6: invalid JSON: expected a JSON value, found `,` <[1,,]>"),
                format!("error: {f}:2:11: invalid UTF-8 (invalid_utf8: error) <\"\u{fffd}\">"),
                "3".to_string(),
                format!("error: {f}:2:18: invalid JSON: expected an array element before `]` <>"),
            ]
        );
        assert_eq!(error, None);
    }

    #[tokio::test]
    async fn jsonl_is_strict_and_skips_blank_lines() {
        let dir = files(&[(
            "a.jsonl",
            b"1\n\n  \r\nNaN\n// a comment\n{1: 2}\n[1,]\n{\"a\": 1} {\"b\": 2}\n\"\xffx\"\n{\"ok\": true}\n",
        )]);
        let f = named(&dir, "a.jsonl");
        let (got, error) = run(
            dir.path(),
            serde_json::json!({"path": "a.jsonl", "format": "jsonl"}),
        )
        .await;
        assert_eq!(
            got,
            [
                "1".to_string(),
                format!(
                    "error: {f}:4: invalid JSON: expected a JSON value, found `N` (at byte 1) <NaN>"
                ),
                format!(
                    "error: {f}:5: invalid JSON: expected a JSON value, found `/` (at byte 1) <// a comment>"
                ),
                format!(
                    "error: {f}:6: invalid JSON: expected a string key in an object, found `1` (at byte 2) <{{1: 2}}>"
                ),
                format!(
                    "error: {f}:7: invalid JSON: expected a JSON value, found `]` (at byte 4) <[1,]>"
                ),
                format!(
                    "error: {f}:8: invalid JSON: trailing characters after the JSON value (at byte 10) <{{\"a\": 1}} {{\"b\": 2}}>"
                ),
                format!(
                    "error: {f}:9: invalid UTF-8 at byte 2 of the line (invalid_utf8: error) <\"\u{fffd}x\">"
                ),
                r#"{"ok":true}"#.to_string(),
            ]
        );
        assert_eq!(error, None);
    }

    #[tokio::test]
    async fn invalid_utf8_is_an_error_or_replaced_the_same_in_every_format() {
        let dir = files(&[
            ("a.txt", b"ok\nbad \xff\xfe here\n"),
            ("a.jsonl", b"\"ok\"\n\"bad \xff\"\n"),
            ("a.json", b"[\"ok\", \"bad \xff\"]"),
            ("a.csv", b"k,v\n1,ok\n2,bad \xff\n"),
            ("h.csv", b"k,\xff\n1,2\n"),
        ]);
        let r = '\u{fffd}';
        let cases = [
            (
                "a.txt",
                "lines",
                "2: invalid UTF-8 at byte 5 of the line",
                format!(r#""bad {r}{r} here""#),
            ),
            (
                "a.jsonl",
                "jsonl",
                "2: invalid UTF-8 at byte 6 of the line",
                format!(r#""bad {r}""#),
            ),
            (
                "a.json",
                "json",
                "1:13: invalid UTF-8",
                format!(r#""bad {r}""#),
            ),
            (
                "a.csv",
                "csv",
                "3: invalid UTF-8 in field 2",
                format!(r#"{{"k":"2","v":"bad {r}"}}"#),
            ),
        ];
        for (name, format, error, replaced) in cases {
            let with = serde_json::json!({"path": name, "format": format});
            let (got, stopped) = run(dir.path(), with).await;
            assert_eq!(stopped, None, "{name}");
            assert_eq!(got.len(), 2, "{name}: {got:?}");
            let error = format!(
                "error: {}:{error} (invalid_utf8: error) <",
                named(&dir, name)
            );
            assert!(got[1].starts_with(&error), "{name}: {got:?}");
            let with =
                serde_json::json!({"path": name, "format": format, "invalid_utf8": "replace"});
            let (got, stopped) = run(dir.path(), with).await;
            assert_eq!(stopped, None, "{name}");
            assert_eq!(got[1], replaced, "{name}");
        }
        let err = read(dir.path(), "h.csv", ReadFormat::Csv)
            .await
            .unwrap_err();
        assert!(
            err.ends_with("h.csv:1: invalid UTF-8 in the header, column 2 (invalid_utf8: error)"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_record_past_max_record_fails_alone_in_every_format() {
        let long = "x".repeat(100);
        let dir = files(&[
            ("a.txt", format!("a\n{long}\nb\n{long}").as_bytes()),
            ("a.jsonl", format!("1\n\"{long}\"\n2\n").as_bytes()),
            (
                "a.csv",
                format!("k\n1\n{long}\n\"{long}\n\"\n2\n").as_bytes(),
            ),
            (
                "a.json",
                format!("[1, \"{long}\", [{long:?}], 2]").as_bytes(),
            ),
        ]);
        let cases: [(&str, &str, &[&str]); 4] = [
            ("a.txt", "lines", &[r#""a""#, "2", r#""b""#, "4"]),
            ("a.jsonl", "jsonl", &["1", "2", "2"]),
            ("a.csv", "csv", &[r#"{"k":"1"}"#, "3", "4", r#"{"k":"2"}"#]),
            ("a.json", "json", &["1", "1:5", "1:109", "2"]),
        ];
        for (name, format, want) in cases {
            let with = serde_json::json!({"path": name, "format": format, "max_record": "64B"});
            let (got, stopped) = run(dir.path(), with).await;
            assert_eq!(stopped, None, "{name}");
            assert_eq!(got.len(), want.len(), "{name}: {got:?}");
            for (got, want) in got.iter().zip(want) {
                if got.starts_with("error: ") {
                    let prefix = format!(
                        "error: {}:{want}: record longer than 64 bytes (max_record) <",
                        named(&dir, name)
                    );
                    assert!(
                        got.starts_with(&prefix),
                        "{name}: {got} does not start with {prefix}"
                    );
                } else {
                    assert_eq!(got, want, "{name}");
                }
            }
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn an_endless_record_is_reported_as_soon_as_it_passes_the_limit() {
        for format in ["lines", "jsonl"] {
            let with =
                serde_json::json!({"path": "/dev/zero", "format": format, "max_record": "64KiB"});
            let mut source = source(Path::new("/"), with);
            let mut out = Output::new();
            assert_eq!(source.next(&mut out).await.unwrap(), Next::More);
            let failed = out.take_failed();
            assert_eq!(failed.len(), 1, "{format}");
            assert_eq!(
                failed[0].1.message(),
                "/dev/zero:1: record longer than 64 KiB (max_record)"
            );
            let record = value_text(&failed[0].0.value);
            assert_eq!(record, format!("{}…", "\0".repeat(4096)));
            // Dropping the source stops the reader, which would skip zeros
            // for ever otherwise.
        }
        let with = serde_json::json!({"path": "/dev/zero", "format": "csv", "max_record": "64KiB"});
        let (got, error) = run(Path::new("/"), with).await;
        assert!(got.is_empty());
        assert_eq!(
            error.as_deref(),
            Some("/dev/zero:1: the header is longer than 64 KiB (max_record)")
        );
        let with = serde_json::json!({"path": "/dev/zero", "format": "json"});
        let (_, error) = run(Path::new("/"), with).await;
        assert_eq!(
            error.as_deref(),
            Some("/dev/zero:1:1: expected a JSON array, found byte 0x00")
        );
    }

    #[tokio::test]
    async fn a_record_at_max_record_is_read() {
        let dir = files(&[("a.txt", b"0123456789\r\n0123456789")]);
        let with = serde_json::json!({"path": "a.txt", "max_record": 10});
        let (got, _) = run(dir.path(), with).await;
        assert_eq!(got, [r#""0123456789""#, r#""0123456789""#]);
    }

    #[tokio::test]
    async fn max_record_and_max_file_take_sizes() {
        for bad in [
            serde_json::json!("0"),
            serde_json::json!("lots"),
            serde_json::json!(-1),
        ] {
            let with = serde_json::json!({"path": "a", "max_record": bad});
            assert!(
                serde_json::from_value::<ReadOptions>(with).is_err(),
                "{bad}"
            );
        }
        let with = serde_json::json!({"path": "a", "max_record": "2 MiB", "max_file": 4096});
        let options: ReadOptions = serde_json::from_value(with).unwrap();
        assert_eq!(
            (options.max_record, options.max_file),
            (Size::mib(2), Size::kib(4))
        );
    }

    #[tokio::test]
    async fn bytes_past_max_file_fail_that_file_only() {
        let dir = files(&[
            ("b/a.bin", b"small"),
            ("b/b.bin", &[7; 100]),
            ("b/c.bin", b"also"),
        ]);
        let with = serde_json::json!({"path": "b/*.bin", "format": "bytes", "max_file": "10B"});
        let (got, error) = run(dir.path(), with).await;
        assert_eq!(error, None);
        assert_eq!(got.len(), 3);
        let b = named(&dir, "b/b.bin");
        assert_eq!(
            got[1],
            format!(
                "error: {b}: the file is larger than 10 bytes (max_file) <{{\"path\":\"{b}\",\"name\":\"b.bin\"}}>"
            )
        );
        assert!(got[2].contains(r#""body":"also""#), "{}", got[2]);
    }

    #[tokio::test]
    async fn records_keep_their_order_around_failures() {
        let text: String = (0..1000)
            .map(|i| {
                if i % 300 == 7 {
                    "oops\n".to_string()
                } else {
                    format!("{i}\n")
                }
            })
            .collect();
        let dir = files(&[("a.jsonl", text.as_bytes())]);
        let (got, error) = run(
            dir.path(),
            serde_json::json!({"path": "a.jsonl", "format": "jsonl"}),
        )
        .await;
        assert_eq!(error, None);
        let want: Vec<String> = (0..1000)
            .map(|i| {
                if i % 300 == 7 {
                    format!("error: {}:{}: invalid JSON: expected a JSON value, found `o` (at byte 1) <oops>", named(&dir, "a.jsonl"), i + 1)
                } else {
                    i.to_string()
                }
            })
            .collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn a_glob_reads_every_matching_file_in_sorted_order() {
        let dir = files(&[
            ("data/b.csv", b"n\n3\n4\n"),
            ("data/a.csv", b"n\n1\n2\n"),
            ("data/c.txt", b"not csv\n"),
            (
                "data/sub.csv/x",
                b"a directory matching the glob is skipped",
            ),
        ]);
        let got = read(dir.path(), "data/*.csv", ReadFormat::Csv)
            .await
            .unwrap();
        assert_eq!(
            got,
            [
                r#"{"n":"1"}"#,
                r#"{"n":"2"}"#,
                r#"{"n":"3"}"#,
                r#"{"n":"4"}"#
            ]
        );
        let got = read(dir.path(), "data/[ab].csv", ReadFormat::Csv)
            .await
            .unwrap();
        assert_eq!(got.len(), 4);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_glob_reads_each_file_once_through_any_links() {
        let dir = files(&[("data/a.jsonl", b"1\n"), ("data/sub/b.jsonl", b"2\n")]);
        let d = dir.path();
        std::os::unix::fs::symlink("..", d.join("data/sub/loop")).unwrap();
        std::os::unix::fs::symlink("a.jsonl", d.join("data/link.jsonl")).unwrap();
        let got = read(d, "data/**/*.jsonl", ReadFormat::Jsonl).await.unwrap();
        assert_eq!(got, ["1", "2"]);
    }

    #[tokio::test]
    async fn a_glob_under_a_directory_whose_name_has_wildcards_still_matches() {
        let dir = files(&[
            ("we[ir]d*dir/1.txt", b"one\n"),
            ("we[ir]d*dir/2.txt", b"two\n"),
        ]);
        let base = dir.path().join("we[ir]d*dir");
        let got = read(&base, "*.txt", ReadFormat::Lines).await.unwrap();
        assert_eq!(got, [r#""one""#, r#""two""#]);
    }

    #[tokio::test]
    async fn a_glob_matching_nothing_is_an_error() {
        let dir = files(&[]);
        let err = read(dir.path(), "*.csv", ReadFormat::Csv)
            .await
            .unwrap_err();
        assert!(err.starts_with("no file matches "), "{err}");
        assert!(err.ends_with("*.csv"), "{err}");
    }

    #[tokio::test]
    async fn bytes_gives_one_binary_item_per_file() {
        let dir = files(&[("img/b.bin", b"BB"), ("img/a.bin", b"A")]);
        let mut source = source(
            dir.path(),
            serde_json::json!({"path": "img/*.bin", "format": "bytes"}),
        );
        let mut out = Output::new();
        while source.next(&mut out).await.unwrap() == Next::More {}
        let items: Vec<Value> = out.items_mut().drain(..).map(|i| i.value).collect();
        assert_eq!(items.len(), 2);
        let field = |v: &Value, k: &str| flow_core::value::get(v, k).cloned().unwrap();
        assert_eq!(field(&items[0], "name"), string("a.bin"));
        assert_eq!(field(&items[1], "name"), string("b.bin"));
        assert!(matches!(field(&items[1], "body"), Value::BStr(_)));
        assert_eq!(field(&items[1], "body"), bytes(b"BB".to_vec()));
        let path = dir.path().join("img").join("a.bin");
        assert_eq!(field(&items[0], "path"), string(path.display().to_string()));
    }

    #[tokio::test]
    async fn a_missing_file_names_it() {
        let dir = files(&[]);
        let err = read(dir.path(), "nope.txt", ReadFormat::Lines)
            .await
            .unwrap_err();
        assert!(err.starts_with("cannot open "), "{err}");
        assert!(err.contains("nope.txt"), "{err}");
    }

    #[tokio::test]
    async fn the_count_ahead_matches_the_records_read_in_every_format() {
        let cases: [(&str, ReadFormat, &[u8]); 10] = [
            ("a.txt", ReadFormat::Lines, b"a\nb\n\nc"),
            ("b.txt", ReadFormat::Lines, b"a\r\nb\n"),
            ("empty.txt", ReadFormat::Lines, b""),
            ("a.jsonl", ReadFormat::Jsonl, b"1\n\n {\"a\": 2}\r\n  \n3"),
            ("bad.jsonl", ReadFormat::Jsonl, b"1\nnope\n3"),
            ("a.csv", ReadFormat::Csv, b"a,b\n1,\"x\ny\"\n2,z\n"),
            ("bad.csv", ReadFormat::Csv, b"a,b\n1\n\n2,z\n1,2,3"),
            ("a.json", ReadFormat::Json, b"[1, {\"a\": [2, 3]}, \"x\"]"),
            (
                "bad.json",
                ReadFormat::Json,
                b"[1, {\"a\": [2, 3]]}, x, , \"x\"",
            ),
            ("a.bin", ReadFormat::Bytes, b"anything"),
        ];
        let dir = files(&cases.map(|(name, _, text)| (name, text)));
        let alive = Arc::new(AtomicU64::new(u64::MAX));
        for (name, format, _) in cases {
            let with = serde_json::json!({"path": name, "format": format});
            let (read, _) = run(dir.path(), with).await;
            let counted = count_records(&dir.path().join(name), format, &Arc::downgrade(&alive));
            assert_eq!(counted, Some(read.len() as u64), "{name}: {read:?}");
        }
    }

    #[tokio::test]
    async fn a_plain_file_reports_its_total_before_it_is_read() {
        let text: String = (0..200_000).map(|i| format!("{i}\n")).collect();
        let dir = files(&[("big.txt", text.as_bytes())]);
        let mut source = source(dir.path(), serde_json::json!({"path": "big.txt"}));
        assert_eq!(source.total(), None);
        let mut out = Output::new();
        assert_eq!(source.next(&mut out).await.unwrap(), Next::More);
        let waited = std::time::Instant::now();
        while source.total().is_none() && waited.elapsed() < std::time::Duration::from_secs(20) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Known after one batch of 256, long before the reading is done.
        assert_eq!(source.total(), Some(200_000));
    }

    /// Reads one batch of a big file, lets `change` alter the file while
    /// the reader waits for that batch to be taken, then reads on: the
    /// source must fail, naming what happened.
    async fn changed_while_read(change: impl FnOnce(&Path)) -> (u64, String) {
        let text: String = (0..200_000).map(|i| format!("{i}\n")).collect();
        let dir = files(&[("big.txt", text.as_bytes())]);
        let mut source = source(dir.path(), serde_json::json!({"path": "big.txt"}));
        let mut out = Output::new();
        assert_eq!(source.next(&mut out).await.unwrap(), Next::More);
        // The reader is now blocked: two batches wait in the channel, far
        // from the file's end.
        change(&dir.path().join("big.txt"));
        let mut items = out.len() as u64;
        loop {
            out.items_mut().clear();
            match source.next(&mut out).await {
                Ok(Next::More) => items += out.len() as u64,
                Ok(Next::Done) => panic!("the change went unnoticed after {items} items"),
                Err(e) => return (items, e.to_string()),
            }
        }
    }

    #[tokio::test]
    async fn a_file_truncated_while_it_is_read_stops_the_source() {
        let (items, err) = changed_while_read(|path| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .unwrap()
                .set_len(10)
                .unwrap();
        })
        .await;
        assert!(items < 200_000);
        assert!(err.contains("big.txt: the file was truncated while it was read: 1288890 bytes when it was opened, its end came after "), "{err}");
    }

    #[tokio::test]
    async fn a_file_replaced_while_it_is_read_stops_the_source_at_its_end() {
        let (items, err) = changed_while_read(|path| {
            let other = path.with_file_name("other.txt");
            std::fs::write(&other, "new\n").unwrap();
            std::fs::rename(&other, path).unwrap();
        })
        .await;
        // The old file was read whole, then found replaced.
        assert_eq!(items, 200_000);
        assert!(err.ends_with("big.txt: the file was replaced while it was read: its name leads to another file now; its records may be incomplete"), "{err}");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_file_without_a_size_is_read_whole_without_a_false_alarm() {
        // /proc files say they are empty, then have content.
        let (got, error) = run(
            Path::new("/"),
            serde_json::json!({"path": "/proc/self/status"}),
        )
        .await;
        assert_eq!(error, None);
        assert!(got.iter().any(|l| l.starts_with(r#""Name:"#)), "{got:?}");
    }

    #[test]
    fn an_invalid_glob_is_a_config_error_on_path() {
        let options: ReadOptions =
            serde_json::from_value(serde_json::json!({"path": "data/[.csv", "format": "csv"}))
                .unwrap();
        assert_eq!(
            options.build(&ctx(Path::new("."))).err().unwrap().key,
            "path"
        );
    }

    /// Reads with `with` for `calls` calls of `next`, takes the position,
    /// and resumes a fresh source from it: what the two emit together is
    /// what one reading emits, and the position says where the first
    /// stopped.
    async fn resumed(dir: &Path, with: serde_json::Value, calls: usize) -> serde_json::Value {
        let (whole, error) = run(dir, with.clone()).await;
        assert_eq!(error, None);
        let mut first = source(dir, with.clone());
        let mut out = Output::new();
        let mut got = Vec::new();
        for _ in 0..calls {
            assert!(matches!(first.next(&mut out).await, Ok(Next::More)));
            got.extend(out.items_mut().drain(..).map(|i| to_json(&i.value)));
            for (item, error) in out.take_failed() {
                got.push(format!("error: {error} <{}>", value_text(&item.value)));
            }
        }
        let position = first.position().expect("a file has a position");
        assert_eq!(position["records"], got.len());
        drop(first);
        let mut second = source(dir, with);
        second.resume(position.clone()).unwrap();
        loop {
            let next = second.next(&mut out).await.unwrap();
            got.extend(out.items_mut().drain(..).map(|i| to_json(&i.value)));
            for (item, error) in out.take_failed() {
                got.push(format!("error: {error} <{}>", value_text(&item.value)));
            }
            if next == Next::Done {
                break;
            }
        }
        assert_eq!(got, whole, "first and resumed readings together");
        position
    }

    #[tokio::test]
    async fn a_resumed_reading_of_lines_seeks_past_the_lines_done() {
        let dir = tempfile::tempdir().unwrap();
        // Lines of different lengths, a bad one in each half, CRLF endings
        // and a byte order mark.
        let mut text = String::from("\u{feff}");
        for i in 0..2000 {
            match i {
                7 | 1500 => text.push_str("{oops\r\n"),
                _ => text.push_str(&format!(
                    "{{\"n\":{i},\"pad\":\"{}\"}}\r\n",
                    "x".repeat(i % 13)
                )),
            }
        }
        std::fs::write(dir.path().join("a.jsonl"), &text).unwrap();
        let with = serde_json::json!({ "path": "a.jsonl", "format": "jsonl" });
        let position = resumed(dir.path(), with, 4).await;
        let records = position["records"].as_u64().unwrap() as usize;
        let line_end = |n: usize| {
            text.split_inclusive('\n')
                .take(n)
                .map(str::len)
                .sum::<usize>()
        };
        assert_eq!(position["at"]["file"], 0);
        assert_eq!(position["at"]["line"], records);
        assert_eq!(position["at"]["offset"], line_end(records));
        assert!(records > 8 && records < 1500, "{position}");
    }

    #[tokio::test]
    async fn a_resumed_reading_of_files_and_lines_over_a_glob_starts_at_its_file() {
        let dir = tempfile::tempdir().unwrap();
        for f in 0..5 {
            let lines: String = (0..300).map(|i| format!("{f}-{i}\n")).collect();
            std::fs::write(dir.path().join(format!("{f}.txt")), lines).unwrap();
        }
        let with = serde_json::json!({ "path": "*.txt", "format": "lines" });
        let position = resumed(dir.path(), with, 3).await;
        assert!(position["at"]["file"].as_u64().unwrap() >= 1, "{position}");
        let with = serde_json::json!({ "path": "*.txt", "format": "bytes" });
        let position = resumed(dir.path(), with, 2).await;
        assert_eq!(
            position["at"],
            serde_json::json!({"file": 2, "offset": 0, "line": 0})
        );
    }

    #[tokio::test]
    async fn a_resumed_reading_of_csv_or_a_json_array_skips_the_records_done() {
        let dir = tempfile::tempdir().unwrap();
        let csv: String = std::iter::once("a,b\n".to_string())
            .chain((0..1000).map(|i| format!("{i},\"x\ny\"\n")))
            .collect();
        std::fs::write(dir.path().join("a.csv"), csv).unwrap();
        let with = serde_json::json!({ "path": "a.csv", "format": "csv" });
        let position = resumed(dir.path(), with, 2).await;
        assert!(position.get("at").is_none(), "{position}");
        let json = format!(
            "[{}]",
            (0..1000)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        std::fs::write(dir.path().join("a.json"), json).unwrap();
        let with = serde_json::json!({ "path": "a.json", "format": "json" });
        resumed(dir.path(), with, 2).await;
    }
}
