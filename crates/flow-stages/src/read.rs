//! `read`: emits the records of files, or of stdin: lines, JSON lines, the
//! elements of a JSON array, CSV rows, or whole files as binary items.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use flow_core::value::{bytes, object, parse_json, string};
use flow_core::{
    BATCH, BuildContext, ConfigError, Next, Output, Source, Stage, StageError, StageKind,
    StageOptions, StageType, Value, async_trait,
};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::sync::mpsc;

/// Reads files, or standard input, and emits their records as items.
/// Reading runs on its own thread, so a slow disk or an idle stdin never
/// holds up the other stages; items read from a pipe are passed on as soon
/// as the reader would wait for more, not held for a full batch.
///
/// A file that cannot be read, or a record that cannot be parsed, stops the
/// run (exit code 1) with the file and line in the message, after the
/// records before it are handled.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadOptions {
    /// The file, relative to the pipeline file's directory; `-` for
    /// standard input; or a glob (a path with `*`, `?` or `[`, like
    /// `data/*.csv` or `logs/**/*.jsonl`): every matching file is read, in
    /// sorted order, as if they were one input. A glob that matches no file
    /// stops the run. Write `[*]` for a literal `*` in a name.
    pub path: String,
    /// `lines`: each line is a string item (the default). `jsonl`: each
    /// non-blank line is a JSON document. `json`: the file holds one JSON
    /// array, each element is an item (read incrementally: a large array is
    /// never held whole). `csv`: the first row is the header; each further
    /// row is an object from the header's names to the row's fields, all
    /// strings, as written: numbers are not guessed (`"007"` stays
    /// `"007"`), convert with a `map` like `.score |= tonumber`; a row with
    /// more or fewer fields than the header is an error. `bytes`: each file
    /// is one item `{path, name, body}`, with the file's path, its name
    /// without the directory, and its contents as binary in `body` (where
    /// `image` and `files` look by default).
    #[serde(default)]
    pub format: ReadFormat,
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

/// What `path` names.
#[derive(Clone, Debug)]
enum Input {
    Stdin,
    File(PathBuf),
    /// A glob pattern, the pipeline's directory already in front of a
    /// relative one (escaped, so its own `[` or `*` match literally).
    Glob(String),
}

type Batches = mpsc::Receiver<Result<Vec<Value>, StageError>>;

struct Read {
    input: Input,
    format: ReadFormat,
    batches: Option<Batches>,
    /// How many items a file input holds (`u64::MAX` until known): counted
    /// ahead of the reading by [`spawn_counter`], then set to the items
    /// emitted once every file has been read.
    total: Arc<AtomicU64>,
    emitted: u64,
}

#[async_trait]
impl Source for Read {
    async fn next(&mut self, out: &mut Output) -> Result<Next, StageError> {
        let batches = self.batches.get_or_insert_with(|| {
            spawn_counter(&self.input, self.format, Arc::downgrade(&self.total));
            spawn_reader(self.input.clone(), self.format)
        });
        match batches.recv().await {
            Some(Ok(values)) => {
                self.emitted += values.len() as u64;
                values.into_iter().for_each(|v| out.emit(v));
                Ok(Next::More)
            }
            Some(Err(e)) => Err(e),
            None => {
                if !matches!(self.input, Input::Stdin) {
                    self.total.store(self.emitted, Ordering::Relaxed);
                }
                Ok(Next::Done)
            }
        }
    }

    fn total(&self) -> Option<u64> {
        match self.total.load(Ordering::Relaxed) {
            u64::MAX => None,
            n => Some(n),
        }
    }
}

/// Counts the records of the input's files on a thread of its own, for
/// progress and ETA, while the reader reads them: a fast scan (newlines, or
/// CSV records, or JSON elements skipped unparsed) that stops when the
/// source is dropped. Only regular files are counted (a pipe read twice
/// would lose data); for stdin, or when a file cannot be counted, the total
/// stays unknown.
fn spawn_counter(input: &Input, format: ReadFormat, total: Weak<AtomicU64>) {
    let input = input.clone();
    let spawned = std::thread::Builder::new()
        .name("flow-read-count".into())
        .spawn(move || {
            let files = match input {
                Input::Stdin => return,
                Input::File(path) => vec![path],
                Input::Glob(pattern) => match expand(&pattern) {
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

/// The records `read` will emit from one regular file, as the reader would
/// split them; `None` if it is not a regular file, or unreadable, or the
/// source is gone.
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
    match format {
        ReadFormat::Lines => count_lines(read, false),
        ReadFormat::Jsonl => count_lines(read, true),
        ReadFormat::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .buffer_capacity(1 << 16)
                .from_reader(read);
            let mut record = csv::ByteRecord::new();
            let mut n = 0;
            while reader.read_byte_record(&mut record).ok()? {
                n += 1;
            }
            Some(n)
        }
        ReadFormat::Json => {
            use serde::Deserializer as _;
            let mut de =
                serde_json::Deserializer::from_reader(BufReader::with_capacity(1 << 16, read));
            de.deserialize_seq(CountElements).ok()
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

/// Counts the elements of a JSON array without building them.
struct CountElements;

impl<'de> serde::de::Visitor<'de> for CountElements {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut n = 0;
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(n)
    }
}

/// Reads on a plain thread (one blocked on stdin must not keep the runtime
/// from shutting down) and sends batches of items.
fn spawn_reader(input: Input, format: ReadFormat) -> Batches {
    let (tx, rx) = mpsc::channel(2);
    std::thread::spawn(move || {
        // Binary files are big: pass each on alone, so the channel holds few.
        let limit = if format == ReadFormat::Bytes {
            1
        } else {
            BATCH
        };
        let pending = Rc::new(RefCell::new(Pending {
            tx: tx.clone(),
            batch: Vec::new(),
            limit,
        }));
        let result = read_all(&input, format, &pending);
        // The items read before an error are handled before it stops the run.
        let flushed = pending.borrow_mut().flush();
        if let (Err(e), Ok(())) = (result, flushed) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}

/// Items read and not yet sent to the source task.
struct Pending {
    tx: mpsc::Sender<Result<Vec<Value>, StageError>>,
    batch: Vec<Value>,
    limit: usize,
}

/// The source task is gone: the run stopped reading.
#[derive(Debug)]
struct Stopped;

impl Pending {
    fn push(&mut self, value: Value) -> Result<(), Stopped> {
        self.batch.push(value);
        if self.batch.len() >= self.limit {
            self.flush()
        } else {
            Ok(())
        }
    }

    fn flush(&mut self) -> Result<(), Stopped> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(self.limit));
        self.tx.blocking_send(Ok(batch)).map_err(|_| Stopped)
    }
}

/// A reader that first sends the pending items whenever it is about to ask
/// the OS for more input, which may block (a pipe, stdin): a record read is
/// never held back waiting for the next.
struct FlushBeforeRead {
    inner: Box<dyn io::Read>,
    pending: Rc<RefCell<Pending>>,
}

impl io::Read for FlushBeforeRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.pending
            .borrow_mut()
            .flush()
            .map_err(|_| io::Error::other("the run stopped reading"))?;
        self.inner.read(buf)
    }
}

fn read_all(
    input: &Input,
    format: ReadFormat,
    pending: &Rc<RefCell<Pending>>,
) -> Result<(), StageError> {
    let files = match input {
        Input::Stdin => vec![None],
        Input::File(path) => vec![Some(path.clone())],
        Input::Glob(pattern) => expand(pattern)?.into_iter().map(Some).collect(),
    };
    for path in files {
        let name = path
            .as_ref()
            .map_or_else(|| "stdin".to_string(), |p| p.display().to_string());
        let inner: Box<dyn io::Read> = match &path {
            None => Box::new(io::stdin()),
            Some(p) => Box::new(
                File::open(p)
                    .map_err(|e| StageError::permanent(format!("cannot open {name}: {e}")))?,
            ),
        };
        let file = FileInput {
            name: &name,
            path: path.as_ref(),
            pending,
        };
        let read = FlushBeforeRead {
            inner,
            pending: pending.clone(),
        };
        let result = match format {
            ReadFormat::Lines | ReadFormat::Jsonl => file.lines(read, format),
            ReadFormat::Json => file.json_array(read),
            ReadFormat::Csv => file.csv(read),
            ReadFormat::Bytes => file.bytes(read),
        };
        match result {
            Ok(()) => {}
            Err(_) if pending.borrow().tx.is_closed() => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The files a glob matches, sorted; directories are skipped.
fn expand(pattern: &str) -> Result<Vec<PathBuf>, StageError> {
    let paths = glob::glob(pattern)
        .map_err(|e| StageError::permanent(format!("invalid glob {pattern:?}: {e}")))?;
    let mut files = Vec::new();
    for entry in paths {
        let path = entry.map_err(|e| StageError::permanent(format!("{pattern}: {e}")))?;
        if !path.is_dir() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(StageError::permanent(format!("no file matches {pattern}")));
    }
    files.sort();
    Ok(files)
}

/// One input being read: its name for messages, and where its items go.
struct FileInput<'a> {
    name: &'a str,
    /// `None` for stdin.
    path: Option<&'a PathBuf>,
    pending: &'a Rc<RefCell<Pending>>,
}

/// Pushing an item failed: the run stopped reading (the caller checks).
fn stopped(_: Stopped) -> StageError {
    StageError::permanent("the run stopped reading")
}

impl FileInput<'_> {
    fn push(&self, value: Value) -> Result<(), StageError> {
        self.pending.borrow_mut().push(value).map_err(stopped)
    }

    fn error(&self, line: u64, message: impl std::fmt::Display) -> StageError {
        StageError::permanent(format!("{}:{line}: {message}", self.name))
    }

    fn lines(&self, read: FlushBeforeRead, format: ReadFormat) -> Result<(), StageError> {
        let mut input = BufReader::with_capacity(1 << 16, read);
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            line.clear();
            let n = input
                .read_until(b'\n', &mut line)
                .map_err(|e| StageError::permanent(format!("{}: {e}", self.name)))?;
            if n == 0 {
                return Ok(());
            }
            number += 1;
            let text = trim_newline(&line);
            match format {
                ReadFormat::Jsonl if text.iter().all(u8::is_ascii_whitespace) => {}
                ReadFormat::Jsonl => {
                    let value = parse_json(text)
                        .map_err(|e| self.error(number, format!("invalid JSON: {e}")))?;
                    self.push(value)?;
                }
                _ => self.push(Value::utf8_str(text.to_vec()))?,
            }
        }
    }

    /// The elements of one JSON array, parsed one at a time.
    fn json_array(&self, read: FlushBeforeRead) -> Result<(), StageError> {
        use serde::Deserializer as _;
        let input = BufReader::with_capacity(1 << 16, read);
        let mut de = serde_json::Deserializer::from_reader(input);
        let parsed = de
            .deserialize_any(Elements(|v| self.push(v)))
            .and_then(|()| de.end());
        parsed.map_err(|e| {
            if e.is_io() {
                return StageError::permanent(format!("{}: {e}", self.name));
            }
            // serde_json puts the position last: put it first, as for the
            // other formats.
            let text = e.to_string();
            let message = text.rsplit_once(" at line ").map_or(&*text, |(m, _)| m);
            let at = format!("{}:{}", e.line(), e.column());
            StageError::permanent(format!("{}:{at}: {message}", self.name))
        })
    }

    fn csv(&self, read: FlushBeforeRead) -> Result<(), StageError> {
        let mut reader = csv::ReaderBuilder::new()
            .buffer_capacity(1 << 16)
            .from_reader(read);
        let header = reader.headers().map_err(|e| self.csv_error(e))?.clone();
        let mut names = Vec::with_capacity(header.len());
        for (i, name) in header.iter().enumerate() {
            if header.iter().take(i).any(|earlier| earlier == name) {
                let message = format!("the header names column {name:?} twice");
                return Err(self.error(1, message));
            }
            names.push(string(name));
        }
        let mut record = csv::StringRecord::new();
        while reader
            .read_record(&mut record)
            .map_err(|e| self.csv_error(e))?
        {
            let row = names
                .iter()
                .cloned()
                .zip(record.iter().map(string))
                .collect();
            self.push(Value::obj(row))?;
        }
        Ok(())
    }

    fn csv_error(&self, e: csv::Error) -> StageError {
        let line = e.position().map_or(0, |p| p.line());
        match e.kind() {
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => self.error(
                line,
                format!("the row has {len} fields, the header has {expected_len}"),
            ),
            csv::ErrorKind::Utf8 { err, .. } => {
                self.error(line, format!("invalid UTF-8 in field {}", err.field() + 1))
            }
            csv::ErrorKind::Io(io) => StageError::permanent(format!("{}: {io}", self.name)),
            _ => StageError::permanent(format!("{}: {e}", self.name)),
        }
    }

    /// The whole input as one item.
    fn bytes(&self, mut read: FlushBeforeRead) -> Result<(), StageError> {
        let mut body = Vec::new();
        read.read_to_end(&mut body)
            .map_err(|e| StageError::permanent(format!("{}: {e}", self.name)))?;
        let (path, name) = match self.path {
            Some(p) => {
                let name = p.file_name().unwrap_or(p.as_os_str());
                (p.display().to_string(), name.to_string_lossy().into_owned())
            }
            None => ("-".to_string(), "-".to_string()),
        };
        self.push(object([
            ("path", string(path)),
            ("name", string(name)),
            ("body", bytes(body)),
        ]))
    }
}

/// Visits a JSON array, handing each element on as it is parsed; any other
/// JSON value is an error that names what it is.
struct Elements<F>(F);

impl<F> Elements<F> {
    fn not_an_array<E: serde::de::Error>(found: &str) -> Result<(), E> {
        Err(E::custom(format!("expected a JSON array, found {found}")))
    }
}

impl<'de, F: FnMut(Value) -> Result<(), StageError>> serde::de::Visitor<'de> for Elements<F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(value) = seq.next_element::<Value>()? {
            (self.0)(value).map_err(serde::de::Error::custom)?;
        }
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Self::not_an_array("an object")
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Self::not_an_array("a string")
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Self::not_an_array("a boolean")
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Self::not_an_array("a number")
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Self::not_an_array("a number")
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Self::not_an_array("a number")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Self::not_an_array("null")
    }
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
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
            batches: None,
            total: Arc::new(AtomicU64::new(u64::MAX)),
            emitted: 0,
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

    /// Everything `read` emits for `path` in `dir`, as JSON, or the error
    /// that stopped it.
    async fn read(dir: &Path, path: &str, format: ReadFormat) -> Result<Vec<String>, String> {
        let ctx = BuildContext {
            stage: "r".into(),
            workers: 1,
            base_dir: dir.to_path_buf(),
            timeout: None,
        };
        let options = ReadOptions {
            path: path.into(),
            format,
        };
        let Stage::Source(mut source) = options.build(&ctx).map_err(|e| e.to_string())? else {
            panic!("read is a source")
        };
        let mut out = Output::new();
        loop {
            match source.next(&mut out).await {
                Ok(Next::More) => {}
                Ok(Next::Done) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(out.items_mut().iter().map(|i| to_json(&i.value)).collect())
    }

    fn files(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[tokio::test]
    async fn csv_rows_become_objects_of_the_strings_as_written() {
        let dir = files(&[(
            "a.csv",
            "\u{feff}id,title,zip\r\n1,\"Hello, World\",007\r\n2,\"say \"\"hi\"\"\",\r\n",
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
        let dir = files(&[("a.csv", "a,b\n1,2\n3\n")]);
        let err = read(dir.path(), "a.csv", ReadFormat::Csv)
            .await
            .unwrap_err();
        assert!(
            err.ends_with("a.csv:3: the row has 1 fields, the header has 2"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn csv_header_naming_a_column_twice_is_an_error() {
        let dir = files(&[("a.csv", "a,b,a\n1,2,3\n")]);
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
        let dir = files(&[("a.csv", ""), ("h.csv", "a,b\n"), ("a.json", " [ ] ")]);
        assert!(
            read(dir.path(), "a.csv", ReadFormat::Csv)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            read(dir.path(), "h.csv", ReadFormat::Csv)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            read(dir.path(), "a.json", ReadFormat::Json)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn json_array_elements_become_items() {
        let dir = files(&[("a.json", "[\n {\"a\": [1, 2.5]},\n \"x\",\n null\n]\n")]);
        let got = read(dir.path(), "a.json", ReadFormat::Json).await.unwrap();
        assert_eq!(got, [r#"{"a":[1,2.5]}"#, r#""x""#, "null"]);
    }

    #[tokio::test]
    async fn json_errors_name_file_line_and_column() {
        let dir = files(&[
            ("obj.json", "{\"a\": 1}"),
            ("bad.json", "[1,\n2,\n}"),
            ("two.json", "[1] [2]"),
        ]);
        let err = read(dir.path(), "obj.json", ReadFormat::Json)
            .await
            .unwrap_err();
        assert!(err.contains("obj.json:1:"), "{err}");
        assert!(
            err.ends_with("expected a JSON array, found an object"),
            "{err}"
        );
        let err = read(dir.path(), "bad.json", ReadFormat::Json)
            .await
            .unwrap_err();
        assert!(err.contains("bad.json:3:1: "), "{err}");
        let err = read(dir.path(), "two.json", ReadFormat::Json)
            .await
            .unwrap_err();
        assert!(err.contains("two.json:1:5: trailing characters"), "{err}");
    }

    #[tokio::test]
    async fn items_before_a_bad_record_are_still_emitted() {
        let dir = files(&[("a.jsonl", "1\n2\nnope\n4\n")]);
        let ctx = BuildContext {
            stage: "r".into(),
            workers: 1,
            base_dir: dir.path().to_path_buf(),
            timeout: None,
        };
        let options = ReadOptions {
            path: "a.jsonl".into(),
            format: ReadFormat::Jsonl,
        };
        let Stage::Source(mut source) = options.build(&ctx).unwrap() else {
            panic!("read is a source")
        };
        let mut out = Output::new();
        let mut error = None;
        while error.is_none() {
            match source.next(&mut out).await {
                Ok(Next::More) => {}
                Ok(Next::Done) => break,
                Err(e) => error = Some(e),
            }
        }
        assert_eq!(out.len(), 2);
        let error = error.expect("the bad line stops the source").to_string();
        assert!(error.contains("a.jsonl:3: invalid JSON: "), "{error}");
    }

    #[tokio::test]
    async fn a_glob_reads_every_matching_file_in_sorted_order() {
        let dir = files(&[
            ("data/b.csv", "n\n3\n4\n"),
            ("data/a.csv", "n\n1\n2\n"),
            ("data/c.txt", "not csv\n"),
            ("data/sub.csv/x", "a directory matching the glob is skipped"),
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

    #[tokio::test]
    async fn a_glob_under_a_directory_whose_name_has_wildcards_still_matches() {
        let dir = files(&[
            ("we[ir]d*dir/1.txt", "one\n"),
            ("we[ir]d*dir/2.txt", "two\n"),
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
        let dir = files(&[("img/b.bin", "BB"), ("img/a.bin", "A")]);
        let ctx = BuildContext {
            stage: "r".into(),
            workers: 1,
            base_dir: dir.path().to_path_buf(),
            timeout: None,
        };
        let options = ReadOptions {
            path: "img/*.bin".into(),
            format: ReadFormat::Bytes,
        };
        let Stage::Source(mut source) = options.build(&ctx).unwrap() else {
            panic!("read is a source")
        };
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
        let cases = [
            ("a.txt", ReadFormat::Lines, "a\nb\n\nc"),
            ("b.txt", ReadFormat::Lines, "a\r\nb\n"),
            ("empty.txt", ReadFormat::Lines, ""),
            ("a.jsonl", ReadFormat::Jsonl, "1\n\n {\"a\": 2}\r\n  \n3"),
            ("a.csv", ReadFormat::Csv, "a,b\n1,\"x\ny\"\n2,z\n"),
            ("a.json", ReadFormat::Json, "[1, {\"a\": [2, 3]}, \"x\"]"),
            ("a.bin", ReadFormat::Bytes, "anything"),
        ];
        let dir = files(&cases.map(|(name, _, text)| (name, text)));
        let alive = Arc::new(AtomicU64::new(u64::MAX));
        for (name, format, _) in cases {
            let read = read(dir.path(), name, format).await.unwrap();
            let counted = count_records(&dir.path().join(name), format, &Arc::downgrade(&alive));
            assert_eq!(counted, Some(read.len() as u64), "{name}");
        }
    }

    #[tokio::test]
    async fn a_plain_file_reports_its_total_before_it_is_read() {
        let text: String = (0..200_000).map(|i| format!("{i}\n")).collect();
        let dir = files(&[("big.txt", &text)]);
        let ctx = BuildContext {
            stage: "r".into(),
            workers: 1,
            base_dir: dir.path().to_path_buf(),
            timeout: None,
        };
        let options = ReadOptions {
            path: "big.txt".into(),
            format: ReadFormat::Lines,
        };
        let Stage::Source(mut source) = options.build(&ctx).unwrap() else {
            panic!("read is a source")
        };
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

    #[test]
    fn an_invalid_glob_is_a_config_error_on_path() {
        let ctx = BuildContext {
            stage: "r".into(),
            workers: 1,
            base_dir: ".".into(),
            timeout: None,
        };
        let options = ReadOptions {
            path: "data/[.csv".into(),
            format: ReadFormat::Csv,
        };
        assert_eq!(options.build(&ctx).err().unwrap().key, "path");
    }
}
