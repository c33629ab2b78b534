//! Helpers for the end-to-end tests of the `flow` binary: build it once,
//! run it, read what it wrote.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub mod pages;
pub mod redis_server;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// A file under `pipelines/`.
pub fn pipeline(name: &str) -> PathBuf {
    repo_root().join("pipelines").join(name)
}

/// A command running the `flow` binary (built once per test process, in the
/// profile the tests were built in).
pub fn flow() -> Command {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    Command::new(BIN.get_or_init(|| build_binary("flow-cli", "flow")))
}

/// A command running the example plugin's custom `flow` binary.
pub fn example_plugin() -> Command {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    Command::new(BIN.get_or_init(|| build_binary("flow-example-plugin", "flow-example-plugin")))
}

fn build_binary(package: &str, bin: &str) -> PathBuf {
    // target/<profile>/deps/<test binary>
    let mut dir = std::env::current_exe().expect("the test binary has a path");
    dir.pop();
    dir.pop();
    let release = dir.file_name().is_some_and(|n| n == "release");
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["build", "--quiet", "-p", package, "--bin", bin]);
    if release {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("cargo runs");
    assert!(status.success(), "building {bin} failed");
    dir.join(bin)
}

/// What a finished command did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with the whole output unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "expected exit code {code}, got {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `cmd` to the end, capturing its output.
pub fn run(cmd: &mut Command) -> Run {
    cmd.output().expect("the command starts").into()
}

/// Writes a pipeline file `name` with `yaml` into `dir` and returns its path.
pub fn write_pipeline(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("the temp dir is writable");
    path
}

/// Reads a `--stats-json` file.
pub fn stats(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("the stats file exists");
    serde_json::from_str(&text).expect("the stats file is JSON")
}

/// The stats of the stage called `name`.
pub fn stage<'a>(stats: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    stats["stages"]
        .as_array()
        .expect("stats have stages")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {stats}"))
}

/// The lines of a JSON-lines file, parsed.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}
