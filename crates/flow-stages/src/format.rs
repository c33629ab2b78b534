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

/// A file (or stdout) that every worker of a sink writes to, opened when
/// the first worker starts (not when the pipeline is validated).
pub struct Destination {
    path: PathBuf,
    append: bool,
    format: WriteFormat,
    /// How many workers will call `finish`: the last one closes the document.
    workers: usize,
    opened: Mutex<Option<Arc<Mutex<Document>>>>,
}

impl Destination {
    /// `path` is `-` for stdout; parent directories are created.
    pub fn new(path: PathBuf, append: bool, format: WriteFormat, workers: usize) -> Self {
        Destination {
            path,
            append,
            format,
            workers: workers.max(1),
            opened: Mutex::new(None),
        }
    }

    /// The shared document, opening the file on the first call.
    fn open(&self) -> io::Result<Arc<Mutex<Document>>> {
        let mut opened = lock(&self.opened);
        if let Some(doc) = opened.as_ref() {
            return Ok(doc.clone());
        }
        let mut header = None;
        let sink: Box<dyn Write + Send> = if self.path.as_os_str() == "-" {
            // Above the live progress lines, when they are drawn.
            Box::new(flow_core::terminal::stdout())
        } else {
            let named =
                |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", self.path.display()));
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(named)?;
            }
            if self.append && self.format == WriteFormat::Csv {
                header = csv_header(&self.path).map_err(named)?;
            }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .append(self.append)
                .truncate(!self.append)
                .open(&self.path)
                .map_err(named)?;
            Box::new(file)
        };
        let doc = Arc::new(Mutex::new(Document::new(
            sink,
            self.format,
            self.workers,
            header,
        )));
        *opened = Some(doc.clone());
        Ok(doc)
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

/// A sink stage writing `dest`: each worker writes whole items to the one
/// shared document, so items never interleave.
pub fn file_sink(dest: Destination) -> Stage {
    Stage::Workers(Box::new(move |_| {
        let doc = dest.open()?;
        Ok(Worker::Transform(Box::new(FileSink { doc })))
    }))
}

struct FileSink {
    doc: Arc<Mutex<Document>>,
}

impl Transform for FileSink {
    fn apply(&mut self, input: &Value, _out: &mut Output) -> Result<(), StageError> {
        lock(&self.doc).write(input)
    }

    fn flush(&mut self, _out: &mut Output) -> Result<(), StageError> {
        lock(&self.doc).flush()?;
        Ok(())
    }

    fn finish(&mut self, _out: &mut Output) -> Result<(), StageError> {
        lock(&self.doc).finish_worker()?;
        Ok(())
    }
}

/// What a sink has written so far, and what it still owes the file.
///
/// The last worker's `finish` closes it (for `json`, the closing bracket);
/// if the run ends without that (it stopped on an error), dropping it
/// closes it, so a `json` file is a valid array of what was written.
struct Document {
    out: Out,
    format: WriteFormat,
    written: u64,
    workers_left: usize,
    closed: bool,
    /// For `csv`, the header once known: the keys of the first object
    /// written, or the header row of the file appended to.
    columns: Option<Vec<Value>>,
    header_written: bool,
}

/// The buffered file: CSV goes through the `csv` writer, which quotes.
enum Out {
    Text(io::BufWriter<Box<dyn Write + Send>>),
    Csv(Box<csv::Writer<Box<dyn Write + Send>>>),
}

impl Document {
    /// `header`: the header row already in the file (appending to a CSV).
    fn new(
        sink: Box<dyn Write + Send>,
        format: WriteFormat,
        workers: usize,
        header: Option<Vec<Value>>,
    ) -> Self {
        let out = match format {
            WriteFormat::Csv => Out::Csv(Box::new(
                csv::WriterBuilder::new()
                    .buffer_capacity(1 << 16)
                    .from_writer(sink),
            )),
            _ => Out::Text(io::BufWriter::with_capacity(1 << 16, sink)),
        };
        Document {
            out,
            format,
            written: 0,
            workers_left: workers,
            closed: false,
            header_written: header.is_some(),
            columns: header,
        }
    }

    fn write(&mut self, value: &Value) -> Result<(), StageError> {
        let first = self.written == 0;
        match (&mut self.out, self.format) {
            (Out::Text(out), WriteFormat::Lines) => {
                out.write_all(to_text(value).as_bytes())?;
                out.write_all(b"\n")?;
            }
            (Out::Text(out), WriteFormat::Json) => {
                out.write_all(if first { b"[\n" } else { b",\n" })?;
                write_json(out, value)?;
            }
            (Out::Text(out), _) => {
                write_json(out, value)?;
                out.write_all(b"\n")?;
            }
            (Out::Csv(_), _) => self.write_row(value)?,
        }
        self.written += 1;
        Ok(())
    }

    /// One CSV row. Checked before anything is written, so a failed item
    /// leaves no partial row.
    fn write_row(&mut self, value: &Value) -> Result<(), StageError> {
        let Value::Obj(fields) = value else {
            return Err(StageError::permanent(format!(
                "csv: a row must be an object, not {}",
                kind(value)
            )));
        };
        let columns = self
            .columns
            .get_or_insert_with(|| fields.keys().cloned().collect());
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
        if found < fields.len() {
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
        let Out::Csv(out) = &mut self.out else {
            unreachable!("a csv document writes through the csv writer")
        };
        if !self.header_written {
            let header: Vec<String> = columns.iter().map(to_text).collect();
            out.write_record(&header).map_err(csv_error)?;
            self.header_written = true;
        }
        out.write_record(&cells).map_err(csv_error)?;
        Ok(())
    }

    /// A worker is done: flush, and close after the last one.
    fn finish_worker(&mut self) -> io::Result<()> {
        self.workers_left = self.workers_left.saturating_sub(1);
        if self.workers_left == 0 {
            self.close()
        } else {
            self.flush()
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.out {
            Out::Text(out) => out.flush(),
            Out::Csv(out) => out.flush(),
        }
    }

    fn close(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        if let (Out::Text(out), WriteFormat::Json) = (&mut self.out, self.format) {
            let end: &[u8] = if self.written == 0 { b"[]\n" } else { b"\n]\n" };
            out.write_all(end)?;
        }
        self.flush()
    }
}

impl Drop for Document {
    fn drop(&mut self) {
        let _ = self.close();
    }
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

    /// The workers of a sink writing `format` to `file` in a temp dir.
    fn sink(path: &Path, format: WriteFormat, append: bool, workers: usize) -> Vec<FileSink> {
        let dest = Destination::new(path.to_path_buf(), append, format, workers);
        (0..workers)
            .map(|_| FileSink {
                doc: dest.open().unwrap(),
            })
            .collect()
    }

    fn write(w: &mut FileSink, json: &str) -> Result<(), StageError> {
        w.apply(&parse_json(json.as_bytes()).unwrap(), &mut Output::new())
    }

    fn finish(w: &mut FileSink) {
        w.finish(&mut Output::new()).unwrap();
    }

    #[test]
    fn json_with_no_items_is_an_empty_array() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        let mut workers = sink(&path, WriteFormat::Json, false, 1);
        finish(&mut workers[0]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[]\n");
    }

    #[test]
    fn json_is_one_array_with_an_item_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        let mut workers = sink(&path, WriteFormat::Json, false, 1);
        for item in [r#"{"a":1}"#, "2", r#""x""#] {
            write(&mut workers[0], item).unwrap();
        }
        finish(&mut workers[0]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "[\n{\"a\":1},\n2,\n\"x\"\n]\n");
    }

    #[test]
    fn json_is_closed_by_the_last_worker_to_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        let mut workers = sink(&path, WriteFormat::Json, false, 2);
        write(&mut workers[0], "1").unwrap();
        finish(&mut workers[0]);
        // The other worker still writes after the first one finished.
        write(&mut workers[1], "2").unwrap();
        finish(&mut workers[1]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[\n1,\n2\n]\n");
    }

    #[test]
    fn json_is_closed_when_the_run_stops_before_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        let mut workers = sink(&path, WriteFormat::Json, false, 1);
        write(&mut workers[0], "1").unwrap();
        drop(workers);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[\n1\n]\n");
    }

    #[test]
    fn csv_header_is_the_first_items_keys_and_cells_are_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let mut workers = sink(&path, WriteFormat::Csv, false, 1);
        let w = &mut workers[0];
        write(
            w,
            r#"{"id":1,"title":"Hello, \"World\"","tags":["a","b"],"ok":true}"#,
        )
        .unwrap();
        write(w, r#"{"title":"no id","id":null}"#).unwrap();
        write(w, r#"{"id":3}"#).unwrap();
        finish(w);
        let text = std::fs::read_to_string(&path).unwrap();
        let want = "id,title,tags,ok\n\
                    1,\"Hello, \"\"World\"\"\",\"[\"\"a\"\",\"\"b\"\"]\",true\n\
                    ,no id,,\n\
                    3,,,\n";
        assert_eq!(text, want);
    }

    #[test]
    fn csv_fails_an_item_with_a_key_not_in_the_header_and_writes_nothing_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let mut workers = sink(&path, WriteFormat::Csv, false, 1);
        let w = &mut workers[0];
        write(w, r#"{"a":1}"#).unwrap();
        let err = write(w, r#"{"a":2,"b":3,"c":4}"#).unwrap_err();
        assert!(!err.is_retryable());
        assert_eq!(err.message(), "csv: fields not in the header (a): b, c");
        let err = write(w, "[1,2]").unwrap_err();
        assert_eq!(err.message(), "csv: a row must be an object, not an array");
        finish(w);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\n1\n");
    }

    #[test]
    fn csv_appended_to_keeps_the_files_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        std::fs::write(&path, "b,a\n1,2\n").unwrap();
        let mut workers = sink(&path, WriteFormat::Csv, true, 1);
        write(&mut workers[0], r#"{"a":"x","b":"y"}"#).unwrap();
        finish(&mut workers[0]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b,a\n1,2\ny,x\n");
    }

    #[test]
    fn jsonl_and_lines_write_one_line_per_item() {
        let dir = tempfile::tempdir().unwrap();
        for (format, want) in [
            (WriteFormat::Jsonl, "{\"a\":\"x\"}\n\"s\"\n"),
            (WriteFormat::Lines, "{\"a\":\"x\"}\ns\n"),
        ] {
            let path = dir.path().join("out.txt");
            let mut workers = sink(&path, format, false, 1);
            write(&mut workers[0], r#"{"a":"x"}"#).unwrap();
            write(&mut workers[0], r#""s""#).unwrap();
            finish(&mut workers[0]);
            assert_eq!(std::fs::read_to_string(&path).unwrap(), want, "{format:?}");
        }
    }
}
