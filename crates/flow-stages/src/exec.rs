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
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Runs a program written in any language as a stage. Each worker starts
/// one long-lived process when the run starts and talks to it over its
/// standard streams, one line per item.
///
/// In: flow writes each input item to the process's stdin as one line of
/// compact JSON (binary strings as text).
///
/// Out: the process answers each line with exactly one line of JSON on
/// stdout, and flushes it: that line is the output item. The answer `null`
/// means no output, which filters the item out. Read a whole line before
/// answering, and keep everything else (logs, debugging) off stdout.
///
/// Log: whatever the process writes to stderr goes to flow's log, line by
/// line, as warnings prefixed with the stage name and the process id.
///
/// Failures: an answer that is not JSON, or a process that exits before
/// answering, fails the item with a retryable error, and the worker starts a
/// fresh process for its next item. So does a `timeout`, since the old
/// process could still answer the abandoned item. Retries and timeouts are
/// the stage's `retry:` and `timeout:` settings.
///
/// End: when the input ends, flow closes each process's stdin; the process
/// should then exit, and is killed if it is still running after
/// `stop_timeout`. Processes run in a process group of their own, so Ctrl-C
/// in a terminal reaches flow alone, which drains the queues before closing
/// their input.
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
}

const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

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

/// A running process and its pipes.
struct Process {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    logger: JoinHandle<()>,
}

/// Why an exchange with the process got no answer line.
enum Broken {
    /// It closed stdout (exited, most likely) before a whole line.
    Closed,
    /// Writing the item failed.
    Write(std::io::Error),
    /// Reading the answer failed.
    Read(std::io::Error),
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
        self.request.clear();
        flow_core::value::write_json(&mut self.request, input)?;
        self.request.push(b'\n');
        self.answer.clear();
        let process = self.process.as_mut().expect("started above");
        self.in_call = true;
        let exchanged = process.exchange(&self.request, &mut self.answer).await;
        self.in_call = false;
        if let Err(broken) = exchanged {
            return Err(self.reap_broken(broken).await);
        }
        match flow_core::value::parse_json(trim_newline(&self.answer)) {
            Ok(Value::Null) => Ok(()),
            Ok(value) => {
                out.emit(value);
                Ok(())
            }
            Err(e) => {
                let quote = quote(trim_newline(&self.answer));
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
        if let Some(process) = self.process.take() {
            let who = process.who(&self.program);
            let Process {
                mut child,
                stdin,
                stdout,
                logger,
                ..
            } = process;
            drop(stdin);
            match tokio::time::timeout(stop_timeout, child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => tracing::warn!("{who}: ended with {status}"),
                Ok(Err(e)) => tracing::warn!("{who}: cannot wait for the process: {e}"),
                Err(_) => {
                    tracing::warn!(
                        "{who}: still running {} after its input closed; killing it",
                        humantime::format_duration(stop_timeout)
                    );
                    let _ = child.kill().await;
                }
            }
            drop(stdout);
            self.loggers.push(logger);
        }
        // A logger ends when its process's stderr closes: at its exit,
        // unless a process it started still holds the pipe.
        let deadline = Instant::now() + stop_timeout;
        for logger in self.loggers.drain(..) {
            let abort = logger.abort_handle();
            if tokio::time::timeout_at(deadline, logger).await.is_err() {
                abort.abort();
            }
        }
        Ok(())
    }
}

impl Exec {
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

    /// Kills the process (if any) and waits for it; the next item starts a
    /// fresh one.
    async fn kill(&mut self, why: &str) {
        self.in_call = false;
        if let Some(mut process) = self.process.take() {
            tracing::debug!("{}: killed: {why}", process.who(&self.program));
            let _ = process.child.kill().await;
            self.retire(process.logger);
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
                    let _ = process.child.kill().await;
                    None
                }
            };
        self.retire(process.logger);
        StageError::retryable(match (status, broken) {
            (Some(status), _) => format!("the process ended before answering ({status})"),
            (None, Broken::Closed) => "the process closed its stdout before answering".into(),
            (None, Broken::Write(e)) => format!("cannot write to the process: {e}"),
            (None, Broken::Read(e)) => format!("cannot read from the process: {e}"),
        })
    }

    fn retire(&mut self, logger: JoinHandle<()>) {
        self.loggers.retain(|l| !l.is_finished());
        self.loggers.push(logger);
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
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let logger = tokio::spawn(log_lines(stderr, format!("{}[{pid}]", program.stage)));
        Ok(Process {
            child,
            pid,
            stdin,
            stdout,
            logger,
        })
    }

    /// Writes one request line and reads one answer line (with its newline)
    /// into `answer`.
    async fn exchange(&mut self, request: &[u8], answer: &mut Vec<u8>) -> Result<(), Broken> {
        self.stdin.write_all(request).await.map_err(Broken::Write)?;
        self.stdin.flush().await.map_err(Broken::Write)?;
        self.stdout
            .read_until(b'\n', answer)
            .await
            .map_err(Broken::Read)?;
        if answer.ends_with(b"\n") {
            Ok(())
        } else {
            Err(Broken::Closed)
        }
    }

    /// How the log names this process: `stage[pid]`.
    fn who(&self, program: &Program) -> String {
        format!("{}[{}]", program.stage, self.pid)
    }
}

/// Logs each line of a process's stderr as a warning, prefixed with `who`.
async fn log_lines(stderr: ChildStderr, who: String) {
    let mut stderr = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match stderr.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => tracing::warn!("{who}: {}", String::from_utf8_lossy(trim_newline(&line))),
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
        });
        if !program.cwd.is_dir() {
            let message = format!("{} is not a directory", program.cwd.display());
            return Err(ConfigError::new("cwd", message));
        }
        Ok(Stage::processor(move |_| Exec::start(program.clone())))
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
