//! Text formats shared by the sources and sinks that read and write files.

use std::io::{self, Write};

use flow_core::Value;
use flow_core::value::{to_text, write_json};
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
}

impl WriteFormat {
    /// Writes one item followed by a newline.
    pub fn write_line(self, w: &mut impl Write, value: &Value) -> io::Result<()> {
        match self {
            WriteFormat::Jsonl => write_json(w, value)?,
            WriteFormat::Lines => w.write_all(to_text(value).as_bytes())?,
        }
        w.write_all(b"\n")
    }
}

/// A file (or stdout) that every worker of a sink writes to, opened when
/// the first worker starts (not when the pipeline is validated).
pub struct Destination {
    path: std::path::PathBuf,
    append: bool,
    opened: std::sync::Mutex<Option<SharedWriter>>,
}

pub type SharedWriter = std::sync::Arc<std::sync::Mutex<io::BufWriter<Box<dyn Write + Send>>>>;

impl Destination {
    /// `path` is `-` for stdout; parent directories are created.
    pub fn new(path: std::path::PathBuf, append: bool) -> Self {
        Destination {
            path,
            append,
            opened: std::sync::Mutex::new(None),
        }
    }

    /// The writer, opening the file on the first call.
    pub fn open(&self) -> io::Result<SharedWriter> {
        let mut opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = opened.as_ref() {
            return Ok(w.clone());
        }
        let sink: Box<dyn Write + Send> = if self.path.as_os_str() == "-" {
            Box::new(io::stdout())
        } else {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .append(self.append)
                .truncate(!self.append)
                .open(&self.path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))?;
            Box::new(file)
        };
        let w = std::sync::Arc::new(std::sync::Mutex::new(io::BufWriter::with_capacity(
            1 << 16,
            sink,
        )));
        *opened = Some(w.clone());
        Ok(w)
    }
}

/// The sink worker of `write` and `stdout`: one line per item.
pub struct LineSink {
    pub out: SharedWriter,
    pub format: WriteFormat,
}

impl flow_core::Transform for LineSink {
    fn apply(
        &mut self,
        input: &Value,
        _out: &mut flow_core::Output,
    ) -> Result<(), flow_core::StageError> {
        let mut w = self.out.lock().unwrap_or_else(|e| e.into_inner());
        self.format.write_line(&mut *w, input)?;
        Ok(())
    }

    fn finish(&mut self, _out: &mut flow_core::Output) -> Result<(), flow_core::StageError> {
        let mut w = self.out.lock().unwrap_or_else(|e| e.into_inner());
        w.flush()?;
        Ok(())
    }
}

/// A sink stage writing lines to `dest`.
pub fn line_sink(dest: Destination, format: WriteFormat) -> flow_core::Stage {
    flow_core::Stage::Workers(Box::new(move |_| {
        let out = dest.open()?;
        Ok(flow_core::Worker::Transform(Box::new(LineSink {
            out,
            format,
        })))
    }))
}
