//! `exec`: the any-language plugin. Each worker keeps one long-lived
//! subprocess that answers every JSON line it reads with one JSON line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use flow_core::{
    BuildContext, ConfigError, Output, Processor, Stage, StageError, StageKind, StageOptions,
    StageType, Value, async_trait,
};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::limits::{InvalidUtf8, Size};

/// Runs a program written in any language as a stage. Each worker starts
/// one long-lived process when the run starts and talks to it over its
/// standard streams, one line per item.
///
/// In: flow writes each input item to the process's stdin as one line of
/// compact JSON (binary strings as text), while it reads the answer, so an
/// item of any size goes through a program that answers as it reads.
///
/// Out: the process answers each line with exactly one line of JSON on
/// stdout, and flushes it: that line is the output item. The answer `null`
/// means no output, which filters the item out. Read a whole line before
/// answering, write nothing else to stdout (logs, debugging, a banner at
/// startup) and nothing before the first item arrives. Answers are strict
/// JSON (RFC 8259), nested at most 256 deep, at most `max_answer` long.
///
/// A program that writes more than one line for an item breaks the
/// protocol: every later answer would belong to the item before. Before it
/// sends each item, flow checks (without waiting) whether the process has
/// already written something unread; if so, that item fails (retryable)
/// with `the process wrote more than one line for an item: …` and the
/// process is restarted. Output left unread when the input ends (after the
/// process exited) fails the run: answers may have gone to the wrong
/// items. The check sees only what has arrived when the next item is due:
/// an extra line written later (after flow sent the next item) is taken
/// for that item's answer, and each later answer is one item late until a
/// check finds the answer it missed waiting, at the latest when the input
/// ends. Only a program that tags its answers (echoes an id) is safe from
/// every shift.
///
/// Log: whatever the process writes to stderr goes to flow's log, line by
/// line, as warnings prefixed with the stage name and the process id. A
/// line longer than `max_log_line` is cut (`… [line cut: N more bytes]`);
/// at most `log_lines_per_second` lines a second are logged per process,
/// then one line says how many were not shown, and when the process ends a
/// last line counts all those held back. Stderr is always read, so a
/// chatty process never blocks on it.
///
/// Failures: an answer that is not JSON, an answer longer than
/// `max_answer`, no answer within `answer_timeout`, a broken protocol, or a
/// process that exits before answering, fails the item with a retryable
/// error, and the worker starts a fresh process for its next item. So does a `timeout`, since the old
/// process could still answer the abandoned item. Retries and timeouts are
/// the stage's `retry:` and `timeout:` settings.
///
/// End: when the input ends, flow closes each process's stdin; the process
/// should then exit, and is killed if it is still running after
/// `stop_timeout`. Processes run in a process group of their own, so Ctrl-C
/// in a terminal reaches flow alone, which drains the queues before closing
/// their input; each group is registered so that a forced exit of flow
/// kills it, and whatever a process leaves running in its group is killed
/// when it ends.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecOptions {
    /// The program and its arguments, e.g. `[python3, enrich.py]`. A program
    /// path containing a `/` is relative to the pipeline file's directory; a
    /// bare name is looked up on `PATH`.
    pub command: Vec<String>,
    /// Environment variables for the process, added to flow's own.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The directory the process runs in, relative to the pipeline file's
    /// directory. Default: that directory, so `[python3, enrich.py]` finds
    /// a script kept next to the pipeline file wherever flow runs from.
    pub cwd: Option<String>,
    /// How long a process may take to exit once its stdin is closed at the
    /// end of the run before it is killed (default `5s`).
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    #[schemars(with = "String")]
    pub stop_timeout: Option<Duration>,
    /// How long one item may take, from being sent to being answered,
    /// before it fails (retryable: `the process did not answer within 10m
    /// (answer_timeout)`) and the process is restarted, so a program that
    /// never answers cannot hang the run. Default: none of its own when the
    /// stage has a `timeout:` (which then bounds each attempt), else `10m`.
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    #[schemars(with = "String")]
    pub answer_timeout: Option<Duration>,
    /// The longest answer line, in bytes (`16MiB`; a size like `64KiB`,
    /// `1GiB`, or a number of bytes). A longer answer fails the item
    /// (retryable: `the answer is longer than 16 MiB (max_answer)`) and
    /// restarts the process; no more of it is read.
    #[serde(default = "default_max_answer")]
    #[schemars(with = "String")]
    pub max_answer: Size,
    /// The longest stderr line logged, in bytes (`4KiB`): the rest of a
    /// longer line is skipped, never held, and the logged line says how
    /// many bytes were cut.
    #[serde(default = "default_max_log_line")]
    #[schemars(with = "String")]
    pub max_log_line: Size,
    /// How many stderr lines a second each process may put in the log
    /// (`100`); the lines past it are counted, not logged.
    #[serde(default = "default_log_lines_per_second")]
    pub log_lines_per_second: u32,
    /// An answer whose strings are not valid UTF-8: `error` (the default:
    /// the item fails like any invalid answer) or `replace` (each invalid
    /// sequence becomes U+FFFD).
    #[serde(default)]
    pub invalid_utf8: InvalidUtf8,
}

fn default_max_answer() -> Size {
    Size::mib(16)
}

fn default_max_log_line() -> Size {
    Size::kib(4)
}

fn default_log_lines_per_second() -> u32 {
    100
}

const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an item waits for its answer when neither `answer_timeout`
/// nor the stage's `timeout:` says.
const DEFAULT_ANSWER_TIMEOUT: Duration = Duration::from_secs(600);

/// How much of a bad answer an error message quotes.
const QUOTE_LIMIT: usize = 80;

/// How to start the stage's processes: one per worker, and again after each
/// failure.
#[derive(Debug)]
struct Program {
    stage: String,
    argv: Vec<String>,
    program: PathBuf,
    env: BTreeMap<String, String>,
    cwd: PathBuf,
    stop_timeout: Duration,
    answer_timeout: Option<Duration>,
    max_answer: Size,
    log: LogLimits,
    utf8: InvalidUtf8,
}

/// How much of a process's stderr reaches the log.
#[derive(Clone, Copy, Debug)]
struct LogLimits {
    max_line: usize,
    per_second: u32,
}

/// One worker: its process, started in the factory and restarted after a
/// failure.
struct Exec {
    program: Arc<Program>,
    process: Option<Process>,
    /// Set before an item is written, cleared once its answer is read. Still
    /// set when the next call begins, it means the previous call was dropped
    /// mid-way (a timeout): the process may yet answer that item, so it must
    /// not be asked another.
    in_call: bool,
    /// The stderr loggers of replaced processes, joined by `finish` so
    /// their last lines (a crash's traceback) reach the log before the run
    /// ends.
    loggers: Vec<JoinHandle<()>>,
    request: Vec<u8>,
    answer: Vec<u8>,
}

/// A running process and its pipes. Dropped before it was ended (a worker
/// dropped mid-item), it kills its process group, the process included.
struct Process {
    child: Child,
    pid: u32,
    /// `None` once closed, at the end of the input.
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// `None` once handed to the worker's loggers to join.
    logger: Option<JoinHandle<()>>,
    /// The process group, registered so a forced exit of flow kills it;
    /// dropped once the process is reaped and its group killed.
    group: Option<flow_core::children::Registered>,
}

/// Why an exchange with the process got no answer line.
enum Broken {
    /// It closed stdout (exited, most likely) before a whole line.
    Closed,
    /// Writing the item failed.
    Write(std::io::Error),
    /// Reading the answer failed.
    Read(std::io::Error),
    /// The answer passed `max_answer` before its end.
    TooLong,
}

/// How reading one line ended.
enum Line {
    /// The line, with its newline, is in the buffer.
    Complete,
    /// The stream ended first.
    Closed,
    /// The line passed the limit; the rest is left unread.
    TooLong,
}

#[async_trait]
impl Processor for Exec {
    async fn process(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError> {
        if self.in_call {
            self.kill("its previous item was abandoned (timed out)")
                .await;
        }
        if self.process.is_none() {
            self.process = Some(Process::start(&self.program)?);
        }
        let process = self.process.as_mut().expect("started above");
        if let Some(unread) = process.unread().await {
            self.kill("it wrote more than one line for an item").await;
            return Err(StageError::retryable(format!(
                "the process wrote more than one line for an item: {} was unread when the next \
                 item was due; the process is restarted",
                quote(&unread)
            )));
        }
        // Buffers grown by a large item are not kept for the small ones.
        for buf in [&mut self.request, &mut self.answer] {
            if buf.capacity() > 1 << 20 {
                *buf = Vec::new();
            }
        }
        self.request.clear();
        flow_core::value::write_json(&mut self.request, input)?;
        self.request.push(b'\n');
        self.answer.clear();
        let max = self.program.max_answer.as_usize();
        self.in_call = true;
        let exchange = process.exchange(&self.request, &mut self.answer, max);
        let exchanged = match self.program.answer_timeout {
            None => Some(exchange.await),
            Some(limit) => tokio::time::timeout(limit, exchange).await.ok(),
        };
        self.in_call = false;
        match exchanged {
            Some(Ok(())) => {}
            None => {
                self.kill("it did not answer in time").await;
                let limit = self.program.answer_timeout.unwrap_or_default();
                return Err(StageError::retryable(format!(
                    "the process did not answer within {} (answer_timeout); the process is \
                     restarted",
                    humantime::format_duration(limit)
                )));
            }
            Some(Err(Broken::TooLong)) => {
                self.kill("its answer was too long").await;
                return Err(StageError::retryable(format!(
                    "the answer is longer than {} (max_answer); the process is restarted",
                    self.program.max_answer
                )));
            }
            Some(Err(broken)) => return Err(self.reap_broken(broken).await),
        }
        let answer = trim_newline(&self.answer);
        match flow_core::json::parse(answer, self.program.utf8.json()) {
            Ok(Value::Null) => Ok(()),
            Ok(value) => {
                out.emit(value);
                Ok(())
            }
            Err(e) => {
                let quote = quote(answer);
                self.kill("it answered with invalid JSON").await;
                Err(StageError::retryable(format!(
                    "the process answered with invalid JSON ({e}): {quote}"
                )))
            }
        }
    }

    async fn finish(&mut self, _out: &mut Output) -> Result<(), StageError> {
        let stop_timeout = self.program.stop_timeout;
        if self.in_call {
            self.kill("its last item was abandoned (timed out)").await;
        }
        if let Some(mut process) = self.process.take() {
            let who = process.who(&self.program);
            drop(process.stdin.take());
            match tokio::time::timeout(stop_timeout, process.child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => tracing::warn!("{who}: ended with {status}"),
                Ok(Err(e)) => tracing::warn!("{who}: cannot wait for the process: {e}"),
                Err(_) => {
                    tracing::warn!(
                        "{who}: still running {} after its input closed; killing it",
                        humantime::format_duration(stop_timeout)
                    );
                    kill_group(process.pid);
                    let _ = process.child.kill().await;
                }
            }
            // What it left running in its group goes with it.
            process.ended();
            let left = tokio::time::timeout(stop_timeout, left_over(&mut process.stdout)).await;
            self.loggers.extend(process.logger.take());
            drop(process);
            if let Ok(Some(unread)) = left {
                self.join_loggers().await;
                return Err(StageError::permanent(format!(
                    "{who}: the process wrote more than one line for an item: {} was left \
                     unread after its last answer, so answers may have gone to the wrong items",
                    quote(&unread)
                )));
            }
        }
        self.join_loggers().await;
        Ok(())
    }
}

impl Exec {
    /// Waits for the stderr loggers to log their last lines.
    async fn join_loggers(&mut self) {
        let stop_timeout = self.program.stop_timeout;
        // A logger ends when its process's stderr closes: at its exit,
        // unless a process it started still holds the pipe.
        let deadline = Instant::now() + stop_timeout;
        for logger in self.loggers.drain(..) {
            let abort = logger.abort_handle();
            if tokio::time::timeout_at(deadline, logger).await.is_err() {
                abort.abort();
            }
        }
    }

    fn start(program: Arc<Program>) -> Result<Self, StageError> {
        let process = Process::start(&program)?;
        Ok(Exec {
            program,
            process: Some(process),
            in_call: false,
            loggers: Vec::new(),
            request: Vec::new(),
            answer: Vec::new(),
        })
    }

    /// Kills the process (if any) and its group, and waits for it; the
    /// next item starts a fresh one.
    async fn kill(&mut self, why: &str) {
        self.in_call = false;
        if let Some(mut process) = self.process.take() {
            tracing::debug!("{}: killed: {why}", process.who(&self.program));
            kill_group(process.pid);
            let _ = process.child.kill().await;
            process.ended();
            self.retire(process.logger.take());
        }
    }

    /// After an exchange broke: waits (within `stop_timeout`) for the
    /// process to exit, so the error can say how it ended, and kills it if
    /// it does not (it closed stdout but lives on).
    async fn reap_broken(&mut self, broken: Broken) -> StageError {
        let mut process = self
            .process
            .take()
            .expect("the broken exchange had a process");
        let status =
            match tokio::time::timeout(self.program.stop_timeout, process.child.wait()).await {
                Ok(Ok(status)) => Some(status),
                _ => {
                    kill_group(process.pid);
                    let _ = process.child.kill().await;
                    None
                }
            };
        process.ended();
        self.retire(process.logger.take());
        StageError::retryable(match (status, broken) {
            (Some(status), _) => format!("the process ended before answering ({status})"),
            (None, Broken::Closed) => "the process closed its stdout before answering".into(),
            (None, Broken::Write(e)) => format!("cannot write to the process: {e}"),
            (None, Broken::Read(e)) => format!("cannot read from the process: {e}"),
            (None, Broken::TooLong) => unreachable!("a long answer is handled before"),
        })
    }

    fn retire(&mut self, logger: Option<JoinHandle<()>>) {
        self.loggers.retain(|l| !l.is_finished());
        self.loggers.extend(logger);
    }
}

/// Kills every process left in the process group `pgid` (the group a
/// process started with `process_group(0)` leads).
fn kill_group(pgid: u32) {
    #[cfg(unix)]
    if let Ok(pgid) = i32::try_from(pgid)
        && pgid > 0
    {
        // SAFETY: kill(2) with a negative pid signals a process group; it
        // touches no memory of ours.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

impl Process {
    fn start(program: &Program) -> Result<Self, StageError> {
        let mut command = Command::new(&program.program);
        command
            .args(&program.argv[1..])
            .envs(&program.env)
            .current_dir(&program.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // Ctrl-C in a terminal goes to flow alone, which drains the queues
        // through these processes before closing their input.
        #[cfg(unix)]
        command.process_group(0);
        let mut child = command.spawn().map_err(|e| {
            let message = format!("cannot start {}: {e}", program.argv[0]);
            match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    StageError::permanent(message)
                }
                _ => StageError::retryable(message),
            }
        })?;
        let pid = child.id().unwrap_or_default();
        let group = (cfg!(unix) && pid > 0).then(|| flow_core::children::register(pid));
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let who = format!("{}[{pid}]", program.stage);
        let logger = tokio::spawn(log_lines(stderr, who, program.log));
        Ok(Process {
            child,
            pid,
            stdin: Some(stdin),
            stdout,
            logger: Some(logger),
            group,
        })
    }

    /// The process has been reaped: kills what it left in its group, and
    /// forgets the group.
    fn ended(&mut self) {
        if self.group.take().is_some() {
            kill_group(self.pid);
        }
    }

    /// Writes one request line while it reads one answer line (with its
    /// newline) into `answer`, at most `max` bytes of it: a program that
    /// answers as it reads never waits on flow, whatever the sizes.
    async fn exchange(
        &mut self,
        request: &[u8],
        answer: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), Broken> {
        let stdin = &mut self.stdin;
        let write = async {
            let stdin = stdin
                .as_mut()
                .ok_or_else(|| std::io::Error::other("stdin is closed"))?;
            stdin.write_all(request).await?;
            stdin.flush().await
        };
        let read = read_line(&mut self.stdout, answer, max);
        tokio::pin!(write, read);
        let mut written = None;
        loop {
            tokio::select! {
                w = &mut write, if written.is_none() => written = Some(w),
                line = &mut read => {
                    return match line {
                        Ok(Line::Complete) => {
                            // An answer before the whole item was taken:
                            // the rest must still go, for the next line.
                            let w = match written {
                                Some(w) => w,
                                None => write.await,
                            };
                            w.map_err(Broken::Write)
                        }
                        // The item's rest, if any, is abandoned with the
                        // process.
                        Ok(Line::Closed) => Err(match written {
                            Some(Err(e)) => Broken::Write(e),
                            _ => Broken::Closed,
                        }),
                        Ok(Line::TooLong) => Err(Broken::TooLong),
                        Err(e) => Err(Broken::Read(e)),
                    };
                }
            }
        }
    }

    /// What the process wrote to stdout that no item asked for yet: what
    /// is buffered, or waiting in the pipe (checked without waiting).
    async fn unread(&mut self) -> Option<Vec<u8>> {
        if self.stdout.buffer().is_empty() && !pipe_has_data(self.stdout.get_ref()) {
            return None;
        }
        // Data is there: this returns at once.
        let buf = self.stdout.fill_buf().await.ok()?;
        (!buf.is_empty()).then(|| buf[..buf.len().min(QUOTE_LIMIT + 1)].to_vec())
    }

    /// How the log names this process: `stage[pid]`.
    fn who(&self, program: &Program) -> String {
        format!("{}[{}]", program.stage, self.pid)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Not ended: the worker was dropped with its process running (the
        // child itself is also killed by `kill_on_drop`).
        if self.group.is_some() {
            kill_group(self.pid);
        }
    }
}

/// Whether bytes wait in a pipe to be read, asked without reading them.
fn pipe_has_data(stdout: &ChildStdout) -> bool {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int, the bytes readable, into `n`.
        let asked = unsafe { libc::ioctl(stdout.as_raw_fd(), libc::FIONREAD, &mut n) };
        asked == 0 && n > 0
    }
    #[cfg(not(unix))]
    {
        let _ = stdout;
        false
    }
}

/// What is left on a process's stdout once it has ended (its start).
async fn left_over(stdout: &mut BufReader<ChildStdout>) -> Option<Vec<u8>> {
    let buf = stdout.fill_buf().await.ok()?;
    (!buf.is_empty()).then(|| buf[..buf.len().min(QUOTE_LIMIT + 1)].to_vec())
}

/// Reads one line into `line` (newline included), keeping at most `max`
/// bytes of it besides its line ending.
async fn read_line(
    input: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    loop {
        let buf = input.fill_buf().await?;
        if buf.is_empty() {
            return Ok(Line::Closed);
        }
        let (chunk, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        // Room for the line, then `\r\n`.
        if line.len() + chunk.len() > max.saturating_add(2) {
            return Ok(Line::TooLong);
        }
        line.extend_from_slice(chunk);
        let n = chunk.len();
        input.consume(n);
        if complete {
            return Ok(if trim_newline(line).len() > max {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

/// Logs each line of a process's stderr as a warning, prefixed with `who`:
/// each line cut at `max_line` bytes, at most `per_second` lines a second.
async fn log_lines(stderr: ChildStderr, who: String, limits: LogLimits) {
    let mut stderr = BufReader::with_capacity(1 << 13, stderr);
    let mut log = Throttle::new(who, limits.per_second);
    let mut line = Vec::new();
    let mut cut = 0u64;
    while let Ok(buf) = stderr.fill_buf().await {
        if buf.is_empty() {
            if !line.is_empty() || cut > 0 {
                log.line(&line, cut);
            }
            break;
        }
        let (chunk, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], true),
            None => (buf, false),
        };
        let room = limits.max_line.saturating_sub(line.len());
        let kept = chunk.len().min(room);
        line.extend_from_slice(&chunk[..kept]);
        cut += (chunk.len() - kept) as u64;
        let n = chunk.len() + usize::from(complete);
        stderr.consume(n);
        if complete {
            log.line(&line, cut);
            line.clear();
            cut = 0;
        }
    }
    log.end();
}

/// At most `per_second` log lines in each second, per process.
struct Throttle {
    who: String,
    per_second: u32,
    window: Instant,
    shown: u32,
    held: u64,
    held_in_all: u64,
    lines: u64,
}

impl Throttle {
    fn new(who: String, per_second: u32) -> Self {
        Throttle {
            who,
            per_second,
            window: Instant::now(),
            shown: 0,
            held: 0,
            held_in_all: 0,
            lines: 0,
        }
    }

    fn line(&mut self, line: &[u8], cut: u64) {
        self.lines += 1;
        let now = Instant::now();
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.report_held();
            self.window = now;
            self.shown = 0;
        }
        if self.shown >= self.per_second {
            self.held += 1;
            self.held_in_all += 1;
            return;
        }
        self.shown += 1;
        let text = String::from_utf8_lossy(trim_newline(line));
        match cut {
            0 => tracing::warn!("{}: {text}", self.who),
            n => tracing::warn!("{}: {text}… [line cut: {n} more bytes]", self.who),
        }
    }

    fn report_held(&mut self) {
        if self.held > 0 {
            tracing::warn!(
                "{}: {} more stderr lines not shown (at most {} a second are logged)",
                self.who,
                self.held,
                self.per_second
            );
            self.held = 0;
        }
    }

    fn end(&mut self) {
        self.report_held();
        if self.held_in_all > 0 {
            tracing::warn!(
                "{}: {} of its {} stderr lines were not shown",
                self.who,
                self.held_in_all,
                self.lines
            );
        }
    }
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The start of a bad answer, for an error message.
fn quote(answer: &[u8]) -> String {
    let text = String::from_utf8_lossy(answer);
    let mut cut: String = text.chars().take(QUOTE_LIMIT).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

impl StageOptions for ExecOptions {
    fn build(self, ctx: &BuildContext) -> Result<Stage, ConfigError> {
        let Some(name) = self.command.first() else {
            return Err(ConfigError::new("command", "must name a program"));
        };
        if self.log_lines_per_second == 0 {
            return Err(ConfigError::new(
                "log_lines_per_second",
                "must be at least 1",
            ));
        }
        let program = Arc::new(Program {
            stage: ctx.stage.clone(),
            program: find_program(name, ctx, &self.env)?,
            argv: self.command,
            cwd: match &self.cwd {
                Some(dir) => ctx.resolve_path(dir),
                None => ctx.base_dir.clone(),
            },
            env: self.env,
            stop_timeout: self.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT),
            answer_timeout: answer_timeout(self.answer_timeout, ctx.timeout),
            max_answer: self.max_answer,
            log: LogLimits {
                max_line: self.max_log_line.as_usize(),
                per_second: self.log_lines_per_second,
            },
            utf8: self.invalid_utf8,
        });
        if !program.cwd.is_dir() {
            let message = format!("{} is not a directory", program.cwd.display());
            return Err(ConfigError::new("cwd", message));
        }
        Ok(Stage::processor(move |_| Exec::start(program.clone())))
    }
}

/// The limit on one answer: `answer_timeout` if set; none of its own if
/// the stage has a `timeout:` (the runner's bounds each attempt); else
/// [`DEFAULT_ANSWER_TIMEOUT`].
fn answer_timeout(set: Option<Duration>, stage_timeout: Option<Duration>) -> Option<Duration> {
    match (set, stage_timeout) {
        (Some(limit), _) => Some(limit),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_ANSWER_TIMEOUT),
    }
}

/// Checks at validation that the program can be found: a path with a `/`
/// (relative to the pipeline file) must be an executable file; a bare name,
/// an executable on `PATH` (the one in `env`, if set there), and is left for
/// the system to look up.
fn find_program(
    name: &str,
    ctx: &BuildContext,
    env: &BTreeMap<String, String>,
) -> Result<PathBuf, ConfigError> {
    if name.contains('/') {
        let path = ctx.resolve_path(name);
        return if is_executable(&path) {
            Ok(path)
        } else {
            let message = format!("{} is not an executable file", path.display());
            Err(ConfigError::new("command", message))
        };
    }
    let search = env
        .get("PATH")
        .map(Into::into)
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_default();
    if cfg!(unix) && !std::env::split_paths(&search).any(|dir| is_executable(&dir.join(name))) {
        let message = format!("program {name:?} not found on PATH");
        return Err(ConfigError::new("command", message));
    }
    Ok(PathBuf::from(name))
}

fn is_executable(path: &Path) -> bool {
    let Ok(meta) = path.metadata() else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    meta.is_file()
}

flow_core::inventory::submit! {
    StageType::new::<ExecOptions>(
        "exec",
        StageKind::Processor,
        "Runs a program in any language: one JSON line in, one JSON line out, per item.",
        r#"- name: enrich
  type: exec
  workers: 2
  timeout: 10s
  retry: { attempts: 3, backoff: 100ms }
  with:
    command:
      - python3
      - -c
      - |
        import json, sys
        for line in sys.stdin:
            item = json.loads(line)
            item["words"] = len(item["title"].split())
            print(json.dumps(item), flush=True)
"#,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_core::Worker;
    use flow_core::value::{get, int, object, to_json};

    /// A worker of an `exec` stage built from `with` in `dir`.
    fn worker_in(dir: &Path, with: serde_json::Value) -> Box<dyn Processor> {
        let options: ExecOptions = serde_json::from_value(with).unwrap();
        let ctx = BuildContext {
            stage: "test".into(),
            workers: 1,
            base_dir: dir.to_path_buf(),
            timeout: None,
        };
        let Ok(Stage::Workers(factory)) = options.build(&ctx) else {
            panic!("exec builds a worker stage")
        };
        match factory(0) {
            Ok(Worker::Processor(p)) => p,
            _ => panic!("exec workers are processors that start"),
        }
    }

    /// A worker running a Python script.
    fn python(script: &str) -> Box<dyn Processor> {
        worker_in(
            Path::new("."),
            serde_json::json!({ "command": ["python3", "-c", script] }),
        )
    }

    /// Echoes each item as `{item, pid}`; `{"crash": N}` exits with N, `"bad"`
    /// answers with text, `"late"` answers only after the next line arrives.
    const ECHO: &str = r#"
import json, os, sys
for line in sys.stdin:
    item = json.loads(line)
    if isinstance(item, dict) and "crash" in item:
        sys.exit(item["crash"])
    if item == "bad":
        print("this is not json", flush=True)
        continue
    if item == "late":
        sys.stdin.readline()
    if item == "skip":
        print("null", flush=True)
        continue
    print(json.dumps({"item": item, "pid": os.getpid()}), flush=True)
"#;

    async fn call(worker: &mut dyn Processor, input: Value) -> Result<Vec<Value>, StageError> {
        let mut out = Output::new();
        worker.process(&input, &mut out).await?;
        Ok(out.items_mut().drain(..).map(|i| i.value).collect())
    }

    /// The one output of a call, and the pid of the process that answered.
    async fn answer(worker: &mut dyn Processor, input: Value) -> (Value, u32) {
        let mut outputs = call(worker, input).await.expect("the call succeeds");
        assert_eq!(outputs.len(), 1, "one answer per item");
        let answer = outputs.remove(0);
        let pid = flow_core::value::as_f64(get(&answer, "pid").unwrap()).unwrap() as u32;
        (get(&answer, "item").unwrap().clone(), pid)
    }

    #[cfg(target_os = "linux")]
    fn is_running(pid: u32) -> bool {
        Path::new("/proc").join(pid.to_string()).exists()
    }

    #[tokio::test]
    async fn each_item_is_answered_by_the_same_long_lived_process() {
        let mut w = python(ECHO);
        let (first, pid) = answer(&mut *w, object([("id", int(1))])).await;
        assert_eq!(to_json(&first), r#"{"id":1}"#);
        for i in 2..5 {
            let (item, again) = answer(&mut *w, int(i)).await;
            assert_eq!(to_json(&item), i.to_string());
            assert_eq!(again, pid);
        }
    }

    #[tokio::test]
    async fn a_null_answer_filters_the_item_out() {
        let mut w = python(ECHO);
        assert!(
            call(&mut *w, flow_core::value::string("skip"))
                .await
                .unwrap()
                .is_empty()
        );
        answer(&mut *w, int(1)).await;
    }

    #[tokio::test]
    async fn a_crash_fails_the_item_retryably_and_the_next_item_gets_a_new_process() {
        let mut w = python(ECHO);
        let (_, before) = answer(&mut *w, int(1)).await;
        let err = call(&mut *w, object([("crash", int(3))]))
            .await
            .unwrap_err();
        assert!(err.is_retryable());
        assert!(err.message().contains("exit status: 3"), "{err}");
        let (item, after) = answer(&mut *w, int(2)).await;
        assert_eq!(to_json(&item), "2");
        assert_ne!(before, after);
    }

    #[tokio::test]
    async fn invalid_output_fails_the_item_retryably_and_restarts_the_process() {
        let mut w = python(ECHO);
        let (_, before) = answer(&mut *w, int(1)).await;
        let err = call(&mut *w, flow_core::value::string("bad"))
            .await
            .unwrap_err();
        assert!(err.is_retryable());
        assert!(err.message().contains("\"this is not json\""), "{err}");
        let (_, after) = answer(&mut *w, int(2)).await;
        assert_ne!(before, after);
    }

    #[tokio::test]
    async fn an_abandoned_call_restarts_the_process_so_its_late_answer_never_leaks() {
        let mut w = python(ECHO);
        let (_, before) = answer(&mut *w, int(1)).await;
        // "late" is answered only once another line arrives: a worker that
        // reused the process would read that answer for the next item.
        let late = flow_core::value::string("late");
        let mut out = Output::new();
        let call = w.process(&late, &mut out);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), call)
                .await
                .is_err()
        );
        let (item, after) = answer(&mut *w, int(2)).await;
        assert_eq!(to_json(&item), "2");
        assert_ne!(before, after);
        #[cfg(target_os = "linux")]
        assert!(!is_running(before), "the abandoned process was reaped");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn finish_closes_stdin_and_reaps_the_process() {
        let mut w = python(ECHO);
        let (_, pid) = answer(&mut *w, int(1)).await;
        w.finish(&mut Output::new()).await.unwrap();
        assert!(!is_running(pid));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_process_that_outlives_its_input_is_killed_after_stop_timeout() {
        let script = "import json, os, sys, time
for line in sys.stdin:
    print(json.dumps({'item': json.loads(line), 'pid': os.getpid()}), flush=True)
time.sleep(600)
";
        let with = serde_json::json!({
            "command": ["python3", "-c", script],
            "stop_timeout": "100ms",
        });
        let mut w = worker_in(Path::new("."), with);
        let (_, pid) = answer(&mut *w, int(1)).await;
        w.finish(&mut Output::new()).await.unwrap();
        assert!(!is_running(pid));
    }

    #[tokio::test]
    async fn the_process_runs_in_the_pipeline_directory_with_env_added() {
        let dir = tempfile::tempdir().unwrap();
        let script = "import json, os, sys
for line in sys.stdin:
    print(json.dumps([os.getcwd(), os.environ['GREETING'], 'PATH' in os.environ]), flush=True)
";
        let with = serde_json::json!({
            "command": ["python3", "-c", script],
            "env": { "GREETING": "hello" },
        });
        let mut w = worker_in(dir.path(), with);
        let outputs = call(&mut *w, Value::Null).await.unwrap();
        let cwd = dir.path().canonicalize().unwrap();
        let expected = serde_json::json!([cwd, "hello", true]).to_string();
        assert_eq!(to_json(&outputs[0]), expected);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_program_path_is_relative_to_the_pipeline_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        let script = dir.path().join("bin/echo.sh");
        std::fs::write(&script, "#!/bin/sh\nexec cat\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut w = worker_in(
            dir.path(),
            serde_json::json!({ "command": ["bin/echo.sh"] }),
        );
        let input = object([("id", int(7))]);
        let outputs = call(&mut *w, input.clone()).await.unwrap();
        assert_eq!(outputs, [input]);
    }

    /// A worker running `cat`: it echoes each item back as it reads it.
    fn cat() -> Box<dyn Processor> {
        worker_in(Path::new("."), serde_json::json!({ "command": ["cat"] }))
    }

    #[tokio::test]
    async fn an_item_larger_than_the_pipes_goes_through_cat_whole() {
        let mut w = cat();
        for size in [1 << 20, 5 << 20] {
            let item = object([("text", flow_core::value::string("x".repeat(size)))]);
            let outputs = call(&mut *w, item.clone()).await.unwrap();
            assert_eq!(outputs, [item], "{size} bytes");
        }
        answer_of_cat(&mut *w).await;
    }

    /// `cat` still answers a small item.
    async fn answer_of_cat(w: &mut dyn Processor) {
        let outputs = call(w, int(42)).await.unwrap();
        assert_eq!(outputs, [int(42)]);
    }

    #[tokio::test]
    async fn no_answer_within_answer_timeout_fails_the_item_and_restarts_the_process() {
        // A shell echo (quick to start: the limit also covers the start of
        // the first answer) that never answers "never".
        let script =
            r#"while read -r l; do case "$l" in '"never"') sleep 600;; *) echo "$l";; esac; done"#;
        let with = serde_json::json!({ "command": ["sh", "-c", script], "answer_timeout": "2s" });
        let mut w = worker_in(Path::new("."), with);
        assert_eq!(call(&mut *w, int(1)).await.unwrap(), [int(1)]);
        let err = call(&mut *w, flow_core::value::string("never"))
            .await
            .unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(
            err.message(),
            "the process did not answer within 2s (answer_timeout); the process is restarted"
        );
        assert_eq!(call(&mut *w, int(2)).await.unwrap(), [int(2)]);
    }

    #[test]
    fn the_answer_timeout_defaults_to_ten_minutes_unless_the_stage_has_a_timeout() {
        let (minute, hour) = (Duration::from_secs(60), Duration::from_secs(3600));
        assert_eq!(answer_timeout(None, None), Some(Duration::from_secs(600)));
        assert_eq!(answer_timeout(None, Some(minute)), None);
        assert_eq!(answer_timeout(Some(hour), Some(minute)), Some(hour));
        assert_eq!(answer_timeout(Some(minute), None), Some(minute));
    }

    #[tokio::test]
    async fn an_answer_past_max_answer_fails_the_item_and_restarts_the_process() {
        let script = "import json, os, sys
for line in sys.stdin:
    n = json.loads(line)
    sys.stdout.write(json.dumps({'pid': os.getpid(), 'item': 'y' * n}) + '\\n')
    sys.stdout.flush()
";
        let with =
            serde_json::json!({ "command": ["python3", "-c", script], "max_answer": "1KiB" });
        let mut w = worker_in(Path::new("."), with);
        let (_, before) = answer(&mut *w, int(10)).await;
        for n in [2000, 1 << 20] {
            let err = call(&mut *w, int(n)).await.unwrap_err();
            assert!(err.is_retryable());
            assert_eq!(
                err.message(),
                "the answer is longer than 1 KiB (max_answer); the process is restarted"
            );
        }
        let (_, after) = answer(&mut *w, int(10)).await;
        assert_ne!(before, after);
    }

    /// Calls `w` with items 0, 1, … until one fails (at most `n`), then
    /// finishes it if none did: the first error met.
    async fn first_error(w: &mut dyn Processor, n: i64) -> String {
        for i in 0..n {
            if let Err(e) = call(w, int(i)).await {
                assert!(e.is_retryable(), "{e}");
                return e.to_string();
            }
        }
        w.finish(&mut Output::new()).await.unwrap_err().to_string()
    }

    #[tokio::test]
    async fn an_extra_line_fails_the_next_item_and_restarts_the_process() {
        let script = "import json, os, sys
for line in sys.stdin:
    item = json.loads(line)
    print(json.dumps({'item': item, 'pid': os.getpid()}), flush=True)
    if item == 'twice':
        print('\"an extra line\"', flush=True)
";
        let mut w = python(script);
        let (_, first) = answer(&mut *w, int(1)).await;
        let (item, same) = answer(&mut *w, flow_core::value::string("twice")).await;
        assert_eq!((to_json(&item), same), (r#""twice""#.to_string(), first));
        // Caught by the check before an item is sent, or, if it always
        // came too late for that, when the input ends.
        let err = first_error(&mut *w, 5).await;
        assert!(
            err.contains("the process wrote more than one line for an item: "),
            "{err}"
        );
        if err.ends_with(" was unread when the next item was due; the process is restarted") {
            let (item, after) = answer(&mut *w, int(3)).await;
            assert_eq!(to_json(&item), "3");
            assert_ne!(after, first);
        } else {
            assert!(
                err.ends_with("so answers may have gone to the wrong items"),
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn output_before_the_first_item_is_caught() {
        // A banner written at startup: read as the first item's answer
        // unless the check sees it first; either way an error says so.
        let script = "import json, os, sys
print('\"ready\"', flush=True)
for line in sys.stdin:
    print(line, end='', flush=True)
";
        let mut w = python(script);
        let err = first_error(&mut *w, 5).await;
        assert!(
            err.contains("the process wrote more than one line for an item: "),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_answer_nested_10000_deep_fails_the_item() {
        let script = "import os, sys
for line in sys.stdin:
    print('[' * 10000 + ']' * 10000, flush=True)
";
        let mut w = python(script);
        let err = call(&mut *w, int(1)).await.unwrap_err();
        assert!(err.is_retryable());
        assert!(
            err.message().starts_with(
                "the process answered with invalid JSON (nested deeper than 256 levels (at byte 257)): \"[[[["
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn invalid_utf8_in_an_answer_fails_unless_replaced() {
        let script = "import sys
for line in sys.stdin:
    sys.stdout.buffer.write(b'\"caf\\xe9\"\\n')
    sys.stdout.flush()
";
        let mut w = python(script);
        let err = call(&mut *w, int(1)).await.unwrap_err();
        assert!(err.message().contains("invalid UTF-8 in a string"), "{err}");
        let with = serde_json::json!({
            "command": ["python3", "-c", script],
            "invalid_utf8": "replace",
        });
        let mut w = worker_in(Path::new("."), with);
        let outputs = call(&mut *w, int(1)).await.unwrap();
        assert_eq!(outputs, [flow_core::value::string("caf\u{fffd}")]);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn processes_are_registered_while_they_live_and_their_group_dies_with_them() {
        // The process leaves a child behind in its group when its input ends.
        let script = "import json, os, subprocess, sys
for line in sys.stdin:
    child = subprocess.Popen(['sleep', '600'])
    print(json.dumps({'item': child.pid, 'pid': os.getpid()}), flush=True)
";
        let mut w = python(script);
        let (sleeper, pid) = answer(&mut *w, int(1)).await;
        let sleeper = flow_core::value::as_f64(&sleeper).unwrap() as i32;
        assert!(flow_core::children::registered().contains(&pid));
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, sleeper, 0) } as i32;
        assert!(pidfd >= 0, "the sleeper runs");
        w.finish(&mut Output::new()).await.unwrap();
        assert!(!flow_core::children::registered().contains(&pid));
        assert!(!is_running(pid));
        // The sleeper was killed: its pidfd turns readable when it exits.
        let mut poll = libc::pollfd {
            fd: pidfd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ready = unsafe { libc::poll(&mut poll, 1, 30_000) };
        unsafe { libc::close(pidfd) };
        assert_eq!(ready, 1, "the process left in the group was killed");

        // A worker dropped while its process runs takes the group with it.
        let mut w = python(script);
        let (sleeper, pid) = answer(&mut *w, int(1)).await;
        let sleeper = flow_core::value::as_f64(&sleeper).unwrap() as i32;
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, sleeper, 0) } as i32;
        assert!(pidfd >= 0, "the sleeper runs");
        drop(w);
        assert!(!flow_core::children::registered().contains(&pid));
        let mut poll = libc::pollfd {
            fd: pidfd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ready = unsafe { libc::poll(&mut poll, 1, 30_000) };
        unsafe { libc::close(pidfd) };
        assert_eq!(ready, 1, "the group of a dropped worker was killed");
    }

    fn build_error(with: serde_json::Value) -> ConfigError {
        let options: ExecOptions = serde_json::from_value(with).unwrap();
        let ctx = BuildContext {
            stage: "test".into(),
            workers: 1,
            base_dir: ".".into(),
            timeout: None,
        };
        match options.build(&ctx) {
            Ok(_) => panic!("the options were accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_missing_program_is_a_config_error() {
        let e = build_error(serde_json::json!({ "command": ["surely-no-such-program"] }));
        assert_eq!(e.key, "command");
        assert!(e.message.contains("not found on PATH"), "{e}");
        let e = build_error(serde_json::json!({ "command": ["./no/such/script.py"] }));
        assert_eq!(e.key, "command");
        assert!(e.message.contains("not an executable file"), "{e}");
        let e = build_error(serde_json::json!({ "command": [] }));
        assert_eq!(e.key, "command");
    }

    #[test]
    fn a_missing_cwd_is_a_config_error() {
        let e = build_error(serde_json::json!({ "command": ["python3"], "cwd": "no/such/dir" }));
        assert_eq!(e.key, "cwd");
    }
}
