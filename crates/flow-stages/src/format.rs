//! The file formats of the sinks that write text (`write`, `stdout`): a
//! [`Destination`] that every worker of the sink shares, and the
//! [`Document`] written to it, which knows what goes before the first item,
//! between two items and after the last one.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use flow_core::value::{to_text, write_json};
use flow_core::{Output, Stage, StageError, Transform, Value, Worker};
use schemars::JsonSchema;
use serde::Deserialize;

/// How items are written as text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WriteFormat {
    /// One JSON document per line.
    #[default]
    Jsonl,
    /// One line per item: strings as they are, anything else as JSON.
    Lines,
    /// One JSON array holding every item, one item per line.
    Json,
    /// A header row, then one row per item (items are objects).
    Csv,
}

/// A file (or stdout) that every worker of a sink writes to.
///
/// Nothing touches the file until there is something to write: a run that
/// fails before its first item leaves the previous file as it was. Then
/// each worker formats its items into a buffer of its own and, after each
/// batch, the buffer goes to the file in one write; the items count as
/// written only once that write succeeded. A write that fails (a full
/// disk) is undone: the file is cut back to its last whole item, so the
/// file always holds exactly the items counted as written, and a `json`
/// file is a valid array after every batch.
pub struct Destination {
    shared: Arc<Mutex<Document>>,
}

impl Destination {
    /// `path` is `-` for stdout; parent directories are created when the
    /// file is first written. `columns`: the CSV header, when given.
    pub fn new(
        path: PathBuf,
        append: bool,
        format: WriteFormat,
        workers: usize,
        columns: Option<Vec<String>>,
    ) -> Self {
        let fixed = columns.is_some();
        Destination {
            shared: Arc::new(Mutex::new(Document {
                path,
                append,
                format,
                file: None,
                len: 0,
                written: 0,
                workers_left: workers.max(1),
                closed: false,
                columns: columns
                    .map(|c| Arc::new(c.into_iter().map(flow_core::value::string).collect())),
                fixed_columns: fixed,
                header_written: false,
            })),
        }
    }
}

impl Destination {
    /// The state a durable run saves for this file (not for stdout, whose
    /// output cannot be taken back).
    pub fn durable(&self) -> Option<Arc<dyn flow_core::Durable>> {
        let is_stdout = lock(&self.shared).path.as_os_str() == "-";
        (!is_stdout)
            .then(|| Arc::new(DurableFile(self.shared.clone())) as Arc<dyn flow_core::Durable>)
    }
}

/// A file sink's state across the runs of a durable run: how much of the
/// file holds whole items, and what the format needs to go on after them.
struct DurableFile(Arc<Mutex<Document>>);

impl flow_core::Durable for DurableFile {
    fn snapshot(&self) -> Result<serde_json::Value, StageError> {
        let doc = lock(&self.0);
        let columns = doc
            .columns
            .as_ref()
            .map(|c| c.iter().map(to_text).collect::<Vec<_>>());
        Ok(serde_json::json!({
            "path": doc.path.display().to_string(),
            "opened": doc.file.is_some(),
            "len": doc.len,
            "written": doc.written,
            "header_written": doc.header_written,
            "columns": columns,
        }))
    }

    fn restore(&self, state: serde_json::Value) -> Result<(), StageError> {
        let mut doc = lock(&self.0);
        if state["opened"] != serde_json::Value::Bool(true) {
            // Nothing was written before the checkpoint: the first write
            // replaces whatever a later, interrupted run left.
            return Ok(());
        }
        let len = state["len"].as_u64().unwrap_or(0);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&doc.path)
            .map_err(|e| sink_error(doc.named(e)))?;
        let on_disk = file.metadata().map_err(|e| sink_error(doc.named(e)))?.len();
        if on_disk < len {
            return Err(StageError::permanent(format!(
                "{}: {on_disk} bytes, shorter than the {len} the checkpoint counts as written: the file was changed since",
                doc.path.display()
            )));
        }
        // What a run wrote after the checkpoint is written again on resume.
        file.set_len(len).map_err(|e| sink_error(doc.named(e)))?;
        doc.file = Some(Target::File(file));
        doc.len = len;
        doc.written = state["written"].as_u64().unwrap_or(0);
        doc.header_written = state["header_written"] == serde_json::Value::Bool(true);
        if let Some(columns) = state["columns"].as_array() {
            let columns = columns
                .iter()
                .filter_map(|c| c.as_str())
                .map(flow_core::value::string)
                .collect();
            doc.columns = Some(Arc::new(columns));
        }
        Ok(())
    }
}

/// A sink stage writing `dest`: each worker formats whole items into its
/// own buffer and writes it to the one shared file after each batch, so
/// items never interleave.
pub fn file_sink(dest: Destination) -> Stage {
    Stage::Workers(Box::new(move |_| {
        Ok(Worker::Transform(Box::new(FileSink {
            doc: dest.shared.clone(),
            buf: Vec::new(),
            items: 0,
            columns: None,
        })))
    }))
}

struct FileSink {
    doc: Arc<Mutex<Document>>,
    /// Items formatted since the last commit, and how many.
    buf: Vec<u8>,
    items: u64,
    /// The CSV header, once known (a copy of the document's).
    columns: Option<Arc<Vec<Value>>>,
}

impl Transform for FileSink {
    fn apply(&mut self, input: &Value, _out: &mut Output) -> Result<(), StageError> {
        let mark = self.buf.len();
        let format = lock(&self.doc).format;
        let formatted = match format {
            WriteFormat::Jsonl => {
                write_json(&mut self.buf, input)?;
                self.buf.push(b'\n');
                Ok(())
            }
            WriteFormat::Lines => {
                let text = to_text(input);
                if text.contains(['\n', '\r']) {
                    Err(StageError::permanent(
                        "lines: the string holds a line break, which would split it into several lines; use format jsonl to keep it whole",
                    ))
                } else {
                    self.buf.extend_from_slice(text.as_bytes());
                    self.buf.push(b'\n');
                    Ok(())
                }
            }
            WriteFormat::Json => {
                // Every item is preceded by its separator; the first one of
                // the file drops it (see `Document::append`).
                self.buf.extend_from_slice(b",\n");
                write_json(&mut self.buf, input)?;
                Ok(())
            }
            WriteFormat::Csv => self.csv_row(input),
        };
        match formatted {
            Ok(()) => {
                self.items += 1;
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(mark);
                Err(e)
            }
        }
    }

    fn commit(&mut self) -> Result<(), StageError> {
        if self.items == 0 {
            return Ok(());
        }
        let result = lock(&self.doc).append(&self.buf, self.items);
        self.buf.clear();
        self.items = 0;
        result.map_err(sink_error)
    }

    fn finish(&mut self, out: &mut Output) -> Result<(), StageError> {
        self.commit()?;
        lock(&self.doc)
            .finish_worker(out.run_stopping())
            .map_err(sink_error)?;
        Ok(())
    }
}

impl FileSink {
    /// One CSV row into the buffer. Checked before anything is written, so
    /// a failed item leaves no partial row.
    fn csv_row(&mut self, value: &Value) -> Result<(), StageError> {
        let Value::Obj(fields) = value else {
            return Err(StageError::permanent(format!(
                "csv: a row must be an object, not {}",
                kind(value)
            )));
        };
        let columns = match &self.columns {
            Some(c) => c.clone(),
            None => {
                let mut doc = lock(&self.doc);
                if doc.columns.is_none() && doc.append {
                    // The header of the file appended to, if it has one
                    // (opening to append changes nothing in the file).
                    doc.open()?;
                }
                if doc.columns.is_none() {
                    if fields.is_empty() {
                        return Err(StageError::permanent(
                            "csv: an empty object before the first row with fields gives no columns; set `columns` to write it as a row of empty cells",
                        ));
                    }
                    doc.columns = Some(Arc::new(fields.keys().cloned().collect()));
                }
                let c = doc.columns.clone().expect("set above");
                self.columns = Some(c.clone());
                c
            }
        };
        let fixed = lock(&self.doc).fixed_columns;
        let mut found = 0;
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match fields.get(c) {
                Some(v) => {
                    found += 1;
                    cell(v)
                }
                None => String::new(),
            })
            .collect();
        if found < fields.len() && !fixed {
            let extra: Vec<String> = fields
                .keys()
                .filter(|k| !columns.contains(k))
                .map(to_text)
                .collect();
            return Err(StageError::permanent(format!(
                "csv: fields not in the header ({}): {}",
                columns.iter().map(to_text).collect::<Vec<_>>().join(", "),
                extra.join(", ")
            )));
        }
        csv_line(&mut self.buf, &cells)
    }
}

/// A failed write as a stage error: a closed pipe (`flow run | head` has
/// read enough) is [`StageError::output_closed`], which ends the run
/// normally; anything else fails the items.
fn sink_error(e: io::Error) -> StageError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        StageError::output_closed(e)
    } else {
        StageError::from(e)
    }
}

/// One CSV record, quoted as needed, onto `buf`.
fn csv_line(buf: &mut Vec<u8>, cells: &[String]) -> Result<(), StageError> {
    let mut w = csv::WriterBuilder::new()
        .buffer_capacity(256)
        .from_writer(buf);
    w.write_record(cells).map_err(csv_error)?;
    w.flush()?;
    Ok(())
}

/// The destination every worker of a sink shares: the file once opened,
/// and what it holds.
struct Document {
    path: PathBuf,
    append: bool,
    format: WriteFormat,
    file: Option<Target>,
    /// Bytes of the file that hold whole items (and, for `json`, the
    /// brackets around them): where the next write goes, and what a failed
    /// write is cut back to.
    len: u64,
    /// Items written.
    written: u64,
    /// How many workers will call `finish`: the last one closes the document.
    workers_left: usize,
    closed: bool,
    /// For `csv`, the header once known: `columns`, the keys of the first
    /// object with any, or the header row of the file appended to.
    columns: Option<Arc<Vec<Value>>>,
    /// The header was given (`columns`): fields beyond it are left out.
    fixed_columns: bool,
    header_written: bool,
}

enum Target {
    File(std::fs::File),
    Stdout(flow_core::terminal::Stdout),
}

impl Document {
    fn named(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("{}: {e}", self.path.display()))
    }

    /// Opens the file for the first write: created, or replaced, or (with
    /// `append`) added to after whatever whole lines it holds.
    fn open(&mut self) -> io::Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        if self.path.as_os_str() == "-" {
            // Above the live progress lines, when they are drawn.
            self.file = Some(Target::Stdout(flow_core::terminal::stdout()));
            return Ok(());
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| self.named(e))?;
        }
        if self.append
            && self.format == WriteFormat::Csv
            && let Some(header) = csv_header(&self.path).map_err(|e| self.named(e))?
        {
            if self.fixed_columns && self.columns.as_deref() != Some(&header) {
                let names = |c: &[Value]| c.iter().map(to_text).collect::<Vec<_>>().join(", ");
                return Err(self.named(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the file's header ({}) is not `columns` ({})",
                        names(&header),
                        names(self.columns.as_deref().map_or(&[], |c| c))
                    ),
                )));
            }
            self.columns = Some(Arc::new(header));
            self.header_written = true;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(!self.append)
            .open(&self.path)
            .map_err(|e| self.named(e))?;
        self.len = file.metadata().map_err(|e| self.named(e))?.len();
        if self.append && self.len > 0 {
            use std::os::unix::fs::FileExt;
            let mut last = [0u8];
            file.read_exact_at(&mut last, self.len - 1)
                .map_err(|e| self.named(e))?;
            if last[0] != b'\n' {
                // A run killed mid-write left half a line: the new lines
                // start after it instead of being glued to it.
                tracing::warn!(
                    "{}: the file ends in an unfinished line (a run stopped mid-write?); it is kept, and new lines start after it",
                    flow_core::text::for_display(&self.path.display().to_string())
                );
                file.write_all_at(b"\n", self.len)
                    .map_err(|e| self.named(e))?;
                self.len += 1;
            }
        }
        self.file = Some(Target::File(file));
        Ok(())
    }

    /// Writes `items` formatted items (`bytes`) after those written so far,
    /// all or none: a failed write is cut back off the file.
    fn append(&mut self, bytes: &[u8], items: u64) -> io::Result<()> {
        self.open()?;
        let mut chunk = Vec::new();
        let chunk: &[u8] = match self.format {
            WriteFormat::Json => {
                // The file always ends `\n]\n`: the items go over it, and it
                // is written again after them.
                let body = if self.written == 0 {
                    &bytes[2..]
                } else {
                    bytes
                };
                chunk.extend_from_slice(if self.written == 0 { b"[\n" } else { b"" });
                chunk.extend_from_slice(body);
                chunk.extend_from_slice(b"\n]\n");
                &chunk
            }
            WriteFormat::Csv if !self.header_written => {
                let header: Vec<String> = self
                    .columns
                    .as_ref()
                    .map(|c| c.iter().map(to_text).collect())
                    .unwrap_or_default();
                csv_line(&mut chunk, &header)
                    .map_err(|e| io::Error::other(e.message().to_string()))?;
                chunk.extend_from_slice(bytes);
                &chunk
            }
            _ => bytes,
        };
        let at = if self.format == WriteFormat::Json && self.written > 0 {
            self.len - 3
        } else {
            self.len
        };
        let result = match self.file.as_mut().expect("opened above") {
            Target::File(f) => {
                use std::os::unix::fs::FileExt;
                match f.write_all_at(chunk, at) {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        // Undo: back to the whole items written before.
                        let _ = f.set_len(self.len);
                        if self.format == WriteFormat::Json && self.written > 0 {
                            let _ = f.write_all_at(b"\n]\n", self.len - 3);
                        }
                        Err(e)
                    }
                }
            }
            Target::Stdout(out) => out.write_all(chunk).and_then(|()| out.flush()),
        };
        result.map_err(|e| self.named(e))?;
        self.len = at + chunk.len() as u64;
        self.written += items;
        if self.format == WriteFormat::Csv {
            self.header_written = true;
        }
        Ok(())
    }

    /// A worker is done; after the last one the document is closed.
    fn finish_worker(&mut self, stopping: bool) -> io::Result<()> {
        self.workers_left = self.workers_left.saturating_sub(1);
        if self.workers_left > 0 || self.closed {
            return Ok(());
        }
        self.closed = true;
        if self.file.is_some() || stopping {
            // Written as it went; or a run that stopped before its first
            // item, which leaves an earlier file as it was.
            return Ok(());
        }
        // A run that had nothing to write still leaves its (empty) result.
        self.open()?;
        if self.format == WriteFormat::Json {
            match self.file.as_mut().expect("opened above") {
                Target::File(f) => {
                    use std::os::unix::fs::FileExt;
                    f.write_all_at(b"[]\n", 0).map_err(|e| self.named(e))?;
                }
                Target::Stdout(out) => out.write_all(b"[]\n")?,
            }
        }
        Ok(())
    }
}

/// The header row of an existing, non-empty CSV file.
fn csv_header(path: &Path) -> io::Result<Option<Vec<Value>>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if file.metadata()?.len() == 0 {
        return Ok(None);
    }
    let mut reader = csv::ReaderBuilder::new().from_reader(file);
    let header = reader
        .headers()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Some(header.iter().map(flow_core::value::string).collect()))
}

/// `columns` is for `csv` only, and names each column once.
pub fn check_columns(
    format: WriteFormat,
    columns: Option<&[String]>,
) -> Result<(), flow_core::ConfigError> {
    let Some(columns) = columns else {
        return Ok(());
    };
    if format != WriteFormat::Csv {
        return Err(flow_core::ConfigError::new(
            "columns",
            "only applies to format `csv`",
        ));
    }
    if columns.is_empty() {
        return Err(flow_core::ConfigError::new(
            "columns",
            "must name at least one column",
        ));
    }
    for (i, c) in columns.iter().enumerate() {
        if columns[..i].contains(c) {
            return Err(flow_core::ConfigError::new(
                "columns",
                format!("names \"{c}\" twice"),
            ));
        }
    }
    Ok(())
}

/// A CSV cell: strings as they are, null empty, anything else as JSON.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        other => to_text(other),
    }
}

/// The jq `type` of a value, for error messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Num(_) => "a number",
        Value::TStr(_) | Value::BStr(_) => "a string",
        Value::Arr(_) => "an array",
        Value::Obj(_) => "an object",
    }
}

fn csv_error(e: csv::Error) -> StageError {
    StageError::permanent(format!("csv: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use flow_core::value::parse_json;

    use super::*;

    /// The workers of a sink writing `format` to `path`.
    fn sink(
        path: &Path,
        format: WriteFormat,
        append: bool,
        workers: usize,
        columns: Option<&[&str]>,
    ) -> Vec<Box<dyn Transform>> {
        let columns = columns.map(|c| c.iter().map(|s| s.to_string()).collect());
        let Stage::Workers(make) = file_sink(Destination::new(
            path.to_path_buf(),
            append,
            format,
            workers,
            columns,
        )) else {
            unreachable!()
        };
        (0..workers)
            .map(|i| match make(i).unwrap() {
                Worker::Transform(t) => t,
                Worker::Processor(_) => unreachable!(),
            })
            .collect()
    }

    /// One item as a batch of its own: applied, then committed.
    fn write(w: &mut Box<dyn Transform>, json: &str) -> Result<(), StageError> {
        w.apply(&parse_json(json.as_bytes()).unwrap(), &mut Output::new())?;
        w.commit()
    }

    fn finish(w: &mut Box<dyn Transform>) {
        w.finish(&mut Output::new()).unwrap();
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn json_with_no_items_is_an_empty_array() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        let mut workers = sink(&path, WriteFormat::Json, false, 1, None);
        finish(&mut workers[0]);
        assert_eq!(read(&path), "[]\n");
    }

    #[test]
    fn json_is_one_array_with_an_item_per_line_valid_after_every_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        let mut workers = sink(&path, WriteFormat::Json, false, 1, None);
        write(&mut workers[0], r#"{"a":1}"#).unwrap();
        assert_eq!(read(&path), "[\n{\"a\":1}\n]\n");
        write(&mut workers[0], "2").unwrap();
        write(&mut workers[0], r#""x""#).unwrap();
        assert_eq!(read(&path), "[\n{\"a\":1},\n2,\n\"x\"\n]\n");
        finish(&mut workers[0]);
        assert_eq!(read(&path), "[\n{\"a\":1},\n2,\n\"x\"\n]\n");
    }

    #[test]
    fn several_workers_share_the_array() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        let mut workers = sink(&path, WriteFormat::Json, false, 2, None);
        write(&mut workers[0], "1").unwrap();
        finish(&mut workers[0]);
        write(&mut workers[1], "2").unwrap();
        finish(&mut workers[1]);
        assert_eq!(read(&path), "[\n1,\n2\n]\n");
    }

    #[test]
    fn nothing_written_leaves_the_old_file_when_the_run_stops_and_replaces_it_when_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "old\n").unwrap();
        let mut workers = sink(&path, WriteFormat::Jsonl, false, 1, None);
        let mut out = Output::new();
        out.set_run_stopping(true);
        workers[0].finish(&mut out).unwrap();
        assert_eq!(read(&path), "old\n");
        // Dropped without a finish (abandoned): untouched too.
        drop(sink(&path, WriteFormat::Jsonl, false, 1, None));
        assert_eq!(read(&path), "old\n");
        let mut workers = sink(&path, WriteFormat::Jsonl, false, 1, None);
        finish(&mut workers[0]);
        assert_eq!(read(&path), "");
    }

    #[test]
    fn the_file_is_replaced_at_the_first_write_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "old\n").unwrap();
        let mut workers = sink(&path, WriteFormat::Jsonl, false, 1, None);
        let w = &mut workers[0];
        w.apply(&parse_json(b"1").unwrap(), &mut Output::new())
            .unwrap();
        assert_eq!(read(&path), "old\n");
        w.commit().unwrap();
        assert_eq!(read(&path), "1\n");
    }

    #[test]
    fn csv_header_is_the_first_items_keys_and_cells_are_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let mut workers = sink(&path, WriteFormat::Csv, false, 1, None);
        let w = &mut workers[0];
        write(
            w,
            r#"{"id":1,"title":"Hello, \"World\"","tags":["a","b"],"ok":true}"#,
        )
        .unwrap();
        write(w, r#"{"title":"no id","id":null}"#).unwrap();
        write(w, r#"{"id":3}"#).unwrap();
        finish(w);
        let want = "id,title,tags,ok\n\
                    1,\"Hello, \"\"World\"\"\",\"[\"\"a\"\",\"\"b\"\"]\",true\n\
                    ,no id,,\n\
                    3,,,\n";
        assert_eq!(read(&path), want);
    }

    #[test]
    fn csv_takes_its_header_from_the_first_object_with_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let mut workers = sink(&path, WriteFormat::Csv, false, 1, None);
        let w = &mut workers[0];
        let err = write(w, "{}").unwrap_err();
        assert!(
            err.message()
                .contains("an empty object before the first row"),
            "{err}"
        );
        write(w, r#"{"a":1,"b":2}"#).unwrap();
        write(w, "{}").unwrap();
        write(w, r#"{"b":3}"#).unwrap();
        finish(w);
        assert_eq!(read(&path), "a,b\n1,2\n,\n,3\n");
    }

    #[test]
    fn csv_columns_choose_and_order_the_cells() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let mut workers = sink(&path, WriteFormat::Csv, false, 1, Some(&["b", "a"]));
        let w = &mut workers[0];
        write(w, "{}").unwrap();
        write(w, r#"{"a":1,"b":2,"c":3}"#).unwrap();
        finish(w);
        assert_eq!(read(&path), "b,a\n,\n2,1\n");
    }

    #[test]
    fn csv_fails_an_item_with_a_key_not_in_the_header_and_writes_nothing_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let mut workers = sink(&path, WriteFormat::Csv, false, 1, None);
        let w = &mut workers[0];
        write(w, r#"{"a":1}"#).unwrap();
        let err = write(w, r#"{"a":2,"b":3,"c":4}"#).unwrap_err();
        assert!(!err.is_retryable());
        assert_eq!(err.message(), "csv: fields not in the header (a): b, c");
        let err = write(w, "[1,2]").unwrap_err();
        assert_eq!(err.message(), "csv: a row must be an object, not an array");
        finish(w);
        assert_eq!(read(&path), "a\n1\n");
    }

    #[test]
    fn csv_appended_to_keeps_the_files_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        std::fs::write(&path, "b,a\n1,2\n").unwrap();
        let mut workers = sink(&path, WriteFormat::Csv, true, 1, None);
        write(&mut workers[0], r#"{"a":"x","b":"y"}"#).unwrap();
        finish(&mut workers[0]);
        assert_eq!(read(&path), "b,a\n1,2\ny,x\n");
        let mut workers = sink(&path, WriteFormat::Csv, true, 1, Some(&["a", "b"]));
        let err = write(&mut workers[0], r#"{"a":"x"}"#).unwrap_err();
        assert!(
            err.message()
                .ends_with("the file's header (b, a) is not `columns` (a, b)"),
            "{err}"
        );
    }

    #[test]
    fn appending_after_a_torn_line_starts_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "{\"a\":1}\n{\"a\":").unwrap();
        let mut workers = sink(&path, WriteFormat::Jsonl, true, 1, None);
        write(&mut workers[0], r#"{"a":3}"#).unwrap();
        finish(&mut workers[0]);
        assert_eq!(read(&path), "{\"a\":1}\n{\"a\":\n{\"a\":3}\n");
    }

    #[test]
    fn jsonl_and_lines_write_one_line_per_item() {
        let dir = tempfile::tempdir().unwrap();
        for (format, want) in [
            (WriteFormat::Jsonl, "{\"a\":\"x\"}\n\"s\"\n"),
            (WriteFormat::Lines, "{\"a\":\"x\"}\ns\n"),
        ] {
            let path = dir.path().join("out.txt");
            let mut workers = sink(&path, format, false, 1, None);
            write(&mut workers[0], r#"{"a":"x"}"#).unwrap();
            write(&mut workers[0], r#""s""#).unwrap();
            finish(&mut workers[0]);
            assert_eq!(read(&path), want, "{format:?}");
        }
    }

    #[test]
    fn lines_fails_a_string_with_a_line_break_and_writes_nothing_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        let mut workers = sink(&path, WriteFormat::Lines, false, 1, None);
        let w = &mut workers[0];
        write(w, r#""one""#).unwrap();
        for bad in [r#""two\nlines""#, r#""a\rb""#] {
            let err = write(w, bad).unwrap_err();
            assert!(!err.is_retryable());
            assert!(
                err.message()
                    .starts_with("lines: the string holds a line break"),
                "{err}"
            );
        }
        write(w, r#"{"k":"a\nb"}"#).unwrap();
        finish(w);
        assert_eq!(read(&path), "one\n{\"k\":\"a\\nb\"}\n");
    }

    #[test]
    fn a_failed_write_is_cut_back_to_the_last_whole_item() {
        // /dev/full fails every write with ENOSPC, as a full disk does.
        let path = Path::new("/dev/full");
        if !path.exists() {
            eprintln!("SKIPPED: no /dev/full on this machine");
            return;
        }
        let mut workers = sink(path, WriteFormat::Jsonl, true, 1, None);
        let err = write(&mut workers[0], "1").unwrap_err();
        assert!(err.message().contains("No space left on device"), "{err}");
    }
}
