//! `read`: emits the lines or JSON lines of a file or of stdin.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::PathBuf;

use flow_core::{
    BATCH, BuildContext, ConfigError, Next, Output, Source, Stage, StageError, StageKind,
    StageOptions, StageType, Value, async_trait,
};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::sync::mpsc;

/// Reads a file, or standard input, and emits one item per line. Reading
/// runs on its own thread, so a slow disk or an idle stdin never holds up
/// the other stages.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadOptions {
    /// The file, relative to the pipeline file's directory, or `-` for
    /// standard input.
    pub path: String,
    /// `lines` (each line is a string item, the default) or `jsonl` (each
    /// non-blank line is a JSON document; a line that is not stops the run
    /// with its line number, after the lines before it are handled).
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
}

struct Read {
    path: PathBuf,
    format: ReadFormat,
    batches: Option<mpsc::Receiver<Result<Vec<Value>, StageError>>>,
}

#[async_trait]
impl Source for Read {
    async fn next(&mut self, out: &mut Output) -> Result<Next, StageError> {
        let (path, format) = (self.path.clone(), self.format);
        let batches = self
            .batches
            .get_or_insert_with(|| spawn_reader(path, format));
        match batches.recv().await {
            Some(Ok(values)) => {
                values.into_iter().for_each(|v| out.emit(v));
                Ok(Next::More)
            }
            Some(Err(e)) => Err(e),
            None => Ok(Next::Done),
        }
    }
}

/// Reads on a plain thread (one blocked on stdin must not keep the runtime
/// from shutting down) and sends batches of items.
fn spawn_reader(
    path: PathBuf,
    format: ReadFormat,
) -> mpsc::Receiver<Result<Vec<Value>, StageError>> {
    let (tx, rx) = mpsc::channel(2);
    std::thread::spawn(move || {
        if let Err(e) = read_all(&path, format, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}

fn read_all(
    path: &std::path::Path,
    format: ReadFormat,
    tx: &mpsc::Sender<Result<Vec<Value>, StageError>>,
) -> Result<(), StageError> {
    let name = if path.as_os_str() == "-" {
        "stdin".to_string()
    } else {
        path.display().to_string()
    };
    let mut input: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(BufReader::new(io::stdin()))
    } else {
        let file = File::open(path)
            .map_err(|e| StageError::permanent(format!("cannot open {name}: {e}")))?;
        Box::new(BufReader::with_capacity(1 << 16, file))
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| StageError::permanent(format!("{name}: {e}")))?;
        if n == 0 {
            break;
        }
        number += 1;
        let text = trim_newline(&line);
        match format {
            ReadFormat::Lines => batch.push(Value::utf8_str(text.to_vec())),
            ReadFormat::Jsonl if text.iter().all(u8::is_ascii_whitespace) => {}
            ReadFormat::Jsonl => match flow_core::value::parse_json(text) {
                Ok(v) => batch.push(v),
                Err(e) => {
                    // The lines before the bad one are still handled.
                    let _ = tx.blocking_send(Ok(std::mem::take(&mut batch)));
                    let message = format!("{name}:{number}: invalid JSON: {e}");
                    return Err(StageError::permanent(message));
                }
            },
        }
        if batch.len() >= BATCH && tx.blocking_send(Ok(std::mem::take(&mut batch))).is_err() {
            return Ok(()); // the run stopped reading
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(Ok(batch));
    }
    Ok(())
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl StageOptions for ReadOptions {
    fn build(self, ctx: &BuildContext) -> Result<Stage, ConfigError> {
        if self.path.is_empty() {
            return Err(ConfigError::new("path", "must not be empty"));
        }
        Ok(Stage::source(Read {
            path: ctx.resolve_path(&self.path),
            format: self.format,
            batches: None,
        }))
    }
}

flow_core::inventory::submit! {
    StageType::new::<ReadOptions>(
        "read",
        StageKind::Source,
        "Emits the lines or JSON lines of a file, or of stdin.",
        "- name: urls\n  type: read\n  with: { path: urls.txt, format: lines }\n",
    )
}
