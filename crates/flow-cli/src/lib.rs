//! The `flow` command line: `run`, `validate`, `test`, `stages`, `graph`,
//! `schema`.
//!
//! A custom binary with extra stage types is two lines: a `use my_plugin as
//! _;` that links the plugin's registrations, and [`flow_main!`], which
//! gives it everything the stock `flow` has (the built-in stages, the
//! allocator, this command line).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand};
use flow_stages as _;

mod graph;
mod logs;

/// The `main` of a `flow` binary: the built-in stages, the allocator the
/// stock `flow` uses (mimalloc: items are small allocations made on one
/// thread and freed on another), and the command line. A binary with a
/// plugin's stage types:
///
/// ```ignore
/// use my_plugin as _; // links the plugin's stage types
/// flow_cli::flow_main!();
/// ```
#[macro_export]
macro_rules! flow_main {
    () => {
        #[global_allocator]
        static FLOW_ALLOCATOR: $crate::__private::mimalloc::MiMalloc =
            $crate::__private::mimalloc::MiMalloc;

        fn main() {
            $crate::main()
        }
    };
}

#[doc(hidden)]
pub mod __private {
    pub use mimalloc;
}
mod progress;
mod report;
mod schema;
mod serve;
mod signals;
mod stages;
mod test;

/// Declarative pipelines: bounded queues, worker pools and per-stage stats.
#[derive(Parser)]
#[command(name = "flow", version, about)]
struct Cli {
    /// More log output: -v for flow's debug lines (queue water marks,
    /// retries), -vv for trace, -vvv for every library (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log lines as `text` for people or `json` for machines.
    #[arg(long, value_enum, default_value_t = logs::LogFormat::Text, global = true)]
    log_format: logs::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline: stats on stderr at the end.
    Run {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Also write the stats as JSON to this file.
        #[arg(long, value_name = "FILE")]
        stats_json: Option<PathBuf>,
        /// No progress and no stats table (errors are still printed).
        #[arg(short, long)]
        quiet: bool,
        /// Every column in the stats table (retries, p90, max, queue full,
        /// waits), however wide; by default the table fits the terminal.
        #[arg(long)]
        wide: bool,
        /// How often to print a progress line when stderr is not a terminal.
        #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
        progress_interval: std::time::Duration,
        /// Serve Prometheus metrics at http://ADDR/metrics while the run
        /// lasts. ADDR is `host:port` (`127.0.0.1:9090`, `localhost:9090`,
        /// `[::1]:9090`) or `:port` for loopback.
        #[arg(long, value_name = "ADDR", value_parser = parse_address)]
        metrics: Option<std::net::SocketAddr>,
        /// Serve a live status page at http://ADDR/ while the run lasts (the
        /// same address as --metrics may be given); ADDR as for --metrics.
        #[arg(long, value_name = "ADDR", value_parser = parse_address)]
        dashboard: Option<std::net::SocketAddr>,
        /// After Ctrl-C, SIGTERM or SIGHUP: how long the items already in the
        /// pipeline may take to drain before the rest is abandoned (counted
        /// in the report) and the run ends.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = flow_core::parse_duration)]
        drain_timeout: std::time::Duration,
        /// Make the run durable: save checkpoints in this directory, and
        /// resume from the last one when the same command runs again after
        /// a crash, `kill -9` or Ctrl-C (overrides `state:` in the file).
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
        /// With a durable run: discard the checkpoint and start over.
        #[arg(long)]
        fresh: bool,
        /// The token every request to --dashboard and --metrics must carry
        /// (`?token=` or `Authorization: Bearer`), also taken from
        /// FLOW_DASHBOARD_TOKEN. Beyond loopback one is required: flow makes
        /// one up and prints it when none is given.
        #[arg(long, value_name = "TOKEN")]
        dashboard_token: Option<String>,
        /// Show a sample item (item data) with each error on the dashboard;
        /// by default only the messages and counts are served.
        #[arg(long)]
        dashboard_items: bool,
        /// Another name the Host header may give (`name` or `name:port`),
        /// e.g. behind a proxy; repeat for more. By default only the
        /// address served, `localhost` and loopback addresses are answered.
        #[arg(long, value_name = "HOST")]
        dashboard_allow_host: Vec<String>,
    },
    /// Check pipeline files without running them: exit 2 if any is bad.
    Validate {
        /// Pipeline files, or directories: every `*.yaml` and `*.yml` file
        /// directly in one (not in its subdirectories), in name order.
        #[arg(required = true)]
        pipelines: Vec<PathBuf>,
    },
    /// Run the tests of pipeline files (their `tests:`, or a NAME.test.yaml
    /// naming its pipeline), offline: exit 1 if one fails, 2 if a file is bad.
    Test {
        /// Pipeline or test files, or directories: every `*.yaml` and
        /// `*.yml` file directly in one, in name order.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Only the tests whose `FILE::NAME` contains this text.
        #[arg(long, value_name = "NAME")]
        filter: Option<String>,
    },
    /// Print the pipeline's graph: Mermaid, or Graphviz dot.
    Graph {
        /// The pipeline file.
        pipeline: PathBuf,
        #[arg(long, value_enum, default_value_t = graph::GraphFormat::Mermaid)]
        format: graph::GraphFormat,
    },
    /// Print a JSON Schema of pipeline files, every stage type's options included.
    Schema,
    /// List the stage types, or describe one.
    Stages {
        /// A stage type: show its options and an example.
        #[arg(value_name = "TYPE")]
        type_name: Option<String>,
    },
}

/// An address to serve on: `ip:port`, `host:port` (the name resolved;
/// an IPv4 address preferred, `localhost` is loopback) or `:port`, which
/// is loopback (127.0.0.1): nothing is served beyond this machine unless
/// an address says so.
fn parse_address(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs as _};
    let bad_port = || format!("invalid port in {text:?}: expected a number from 0 to 65535");
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| bad_port())?;
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':').filter(|(h, _)| !h.is_empty()) else {
        return Err(format!(
            "invalid address {text:?}: expected host:port (127.0.0.1:8080, localhost:8080) or :port"
        ));
    };
    let port: u16 = port.parse().map_err(|_| bad_port())?;
    let found: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| format!("cannot resolve {host:?}: no address"))
}

/// Prints `text` to stdout for a command that prints and ends (`schema`,
/// `stages`, `graph`, `validate`): a reader that closed the pipe early (`| head`) is
/// no error; any other failed write is (exit 1). Never panics, unlike
/// `println!`.
fn print_out(text: &str) -> u8 {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => exit::OK,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("flow: cannot write to stdout: {e}");
            exit::FAILED
        }
    }
}

/// The exit codes of `flow`.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const BAD_INPUT: u8 = 2;
    pub const ITEMS_FAILED: u8 = 3;
    pub const INTERRUPTED: u8 = 130;
}

/// Parses the arguments, runs the command and exits with its code.
pub fn main() -> ! {
    let code = run_cli();
    std::process::exit(i32::from(code))
}

fn run_cli() -> u8 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::BAD_INPUT
            } else {
                exit::OK
            };
        }
    };
    let testing = matches!(cli.command, Command::Test { .. });
    logs::init(cli.verbose, cli.log_format, testing);
    match cli.command {
        Command::Run {
            pipeline,
            stats_json,
            quiet,
            wide,
            progress_interval,
            metrics,
            dashboard,
            drain_timeout,
            state,
            fresh,
            dashboard_token,
            dashboard_items,
            dashboard_allow_host,
        } => run(
            &pipeline,
            RunOptions {
                stats_json,
                quiet,
                wide,
                progress_interval,
                metrics,
                dashboard,
                drain_timeout,
                state,
                fresh,
                access: serve::Access {
                    token: dashboard_token.or_else(|| {
                        std::env::var(serve::TOKEN_ENV)
                            .ok()
                            .filter(|t| !t.is_empty())
                    }),
                    items: dashboard_items,
                    allowed_hosts: dashboard_allow_host,
                },
            },
        ),
        Command::Validate { pipelines } => validate_all(&pipelines),
        Command::Test { paths, filter } => test::run(&paths, filter.as_deref()),
        Command::Graph { pipeline, format } => graph::show(&pipeline, format),
        Command::Schema => schema::show(),
        Command::Stages { type_name } => stages::show(type_name.as_deref()),
    }
}

/// Validates every file named, and every pipeline file directly in each
/// directory named: one block of output per file; exit 2 if any is bad.
fn validate_all(paths: &[PathBuf]) -> u8 {
    let mut code = exit::OK;
    for path in paths {
        let files = if path.is_dir() {
            match pipeline_files(path) {
                Ok(files) if files.is_empty() => {
                    eprintln!(
                        "{}: no pipeline files (*.yaml, *.yml) in this directory",
                        path.display()
                    );
                    code = exit::BAD_INPUT;
                    continue;
                }
                Ok(files) => files,
                Err(e) => {
                    eprintln!("{}: cannot read the directory: {e}", path.display());
                    code = exit::BAD_INPUT;
                    continue;
                }
            }
        } else {
            vec![path.clone()]
        };
        for file in files {
            if validate(&file) != exit::OK {
                code = exit::BAD_INPUT;
            }
        }
    }
    code
}

/// The `*.yaml` and `*.yml` files directly in `dir`, sorted by name.
fn pipeline_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn validate(path: &std::path::Path) -> u8 {
    if flow_runner::testing::is_test_file(path) {
        return match flow_runner::testing::load_suite(path) {
            Ok(suite) => print_out(&format!(
                "{}: ok: {} tests of {}\n",
                path.display(),
                suite.tests.len(),
                suite.pipeline.display()
            )),
            Err(problems) => {
                eprintln!("{problems}");
                exit::BAD_INPUT
            }
        };
    }
    match flow_runner::load(path) {
        Ok(plan) => {
            let names: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
            // A reader that stopped reading (`| head`) does not change
            // the verdict: the exit code still says whether every file
            // is valid.
            let tests = match plan.tests.len() {
                0 => String::new(),
                1 => ", 1 test".to_string(),
                n => format!(", {n} tests"),
            };
            print_out(&format!(
                "{}: ok: {} stages ({}){tests}\n",
                path.display(),
                names.len(),
                names.join(", ")
            ));
            exit::OK
        }
        Err(problems) => {
            eprintln!("{problems}");
            exit::BAD_INPUT
        }
    }
}

/// What `flow run` was asked for beyond the pipeline.
struct RunOptions {
    stats_json: Option<PathBuf>,
    quiet: bool,
    /// Every column in the stats table.
    wide: bool,
    progress_interval: std::time::Duration,
    metrics: Option<std::net::SocketAddr>,
    dashboard: Option<std::net::SocketAddr>,
    drain_timeout: std::time::Duration,
    /// `--state`: the directory of a durable run.
    state: Option<PathBuf>,
    /// `--fresh`: discard a durable run's checkpoint.
    fresh: bool,
    /// Who may see --dashboard and --metrics, and how much.
    access: serve::Access,
}

/// The stack of every runtime thread: jq recursion stops well before the
/// end of it (flow_core::interrupt), and the room is only reserved, not
/// used, unless an expression goes that deep.
const THREAD_STACK: usize = 32 << 20;

fn run(path: &std::path::Path, options: RunOptions) -> u8 {
    let mut plan = match flow_runner::load(path) {
        Ok(plan) => plan,
        Err(problems) => {
            eprintln!("{problems}");
            return exit::BAD_INPUT;
        }
    };
    if let Some(dir) = options.state.clone().or_else(|| plan.state.clone()) {
        if let Err(why) = flow_runner::durable::prepare(&mut plan, &dir, options.fresh) {
            eprintln!("flow: {why}");
            return exit::BAD_INPUT;
        }
    } else if options.fresh {
        eprintln!(
            "flow: --fresh discards a durable run's checkpoint: give --state DIR (or state: in the file)"
        );
        return exit::BAD_INPUT;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(THREAD_STACK)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flow: cannot start the runtime: {e}");
            return exit::FAILED;
        }
    };
    let quiet = options.quiet;
    let wide = options.wide;
    let control = flow_runner::RunControl::new();
    // Set once the run starts: what a stuck run's last report is read from.
    let live: Arc<Mutex<Option<flow_runner::Monitor>>> = Arc::default();
    let on_stuck = {
        let (live, stats_json) = (live.clone(), options.stats_json.clone());
        Box::new(move || {
            let monitor = live.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(monitor) = monitor {
                let mut report = monitor.report();
                report.set_status(flow_runner::Status::Interrupted);
                finish_report(&report, quiet, wide, stats_json.as_deref());
            }
        })
    };
    let signals = signals::watch(control.clone(), options.drain_timeout, on_stuck);
    let result = runtime.block_on(async {
        // Bound first: an address in use stops flow before any work.
        let bound = serve::bind(options.metrics, options.dashboard, options.access).await?;
        let running = flow_runner::Running::start(plan, control.clone());
        let monitor = running.monitor();
        *live.lock().unwrap_or_else(|e| e.into_inner()) = Some(monitor.clone());
        let server = match bound.serve(monitor.clone()) {
            Ok(server) => server,
            Err(e) => {
                control.abandon();
                let _ = running.finish().await;
                return Err(e);
            }
        };
        let progress = progress::Progress::start(monitor, options.progress_interval, quiet);
        let report = running.finish().await;
        progress.finish();
        server.stop().await;
        Ok(report)
    });
    signals.finish();
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            eprintln!("flow: {e}");
            runtime.shutdown_background();
            return exit::BAD_INPUT;
        }
    };
    if !finish_report(&report, quiet, wide, options.stats_json.as_deref()) {
        runtime.shutdown_background();
        return exit::FAILED;
    }
    if let Some(failure) = report.failure.as_ref().filter(|_| quiet) {
        eprintln!(
            "flow: run failed: {}",
            flow_core::text::for_display(failure)
        );
    }
    // Drop the runtime without waiting for threads blocked on input.
    runtime.shutdown_background();
    report.exit_code() as u8
}

/// Prints the report (unless quiet; every column when `wide`) and writes
/// the stats file; false when the stats file cannot be written.
fn finish_report(
    report: &flow_runner::Report,
    quiet: bool,
    wide: bool,
    stats_json: Option<&Path>,
) -> bool {
    if !quiet {
        // The terminal's width as the run ends (it may have been resized).
        eprint!(
            "{}",
            report::render(report, report::Layout::for_stderr(wide))
        );
    }
    if let Some(file) = stats_json {
        let json = serde_json::to_string_pretty(report).expect("reports serialise");
        if let Err(e) = std::fs::write(file, json + "\n") {
            eprintln!("flow: cannot write {}: {e}", file.display());
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_take_a_host_name_or_just_a_port() {
        let addr = |t: &str| parse_address(t).map(|a| a.to_string());
        assert_eq!(addr(":8080").unwrap(), "127.0.0.1:8080");
        assert_eq!(addr("localhost:8080").unwrap(), "127.0.0.1:8080");
        assert_eq!(addr("0.0.0.0:9090").unwrap(), "0.0.0.0:9090");
        assert_eq!(addr("[::1]:9090").unwrap(), "[::1]:9090");
        assert!(addr(":http").unwrap_err().contains("invalid port"));
        assert!(
            addr("localhost:99999")
                .unwrap_err()
                .contains("invalid port")
        );
        assert!(addr("8080").unwrap_err().contains("expected host:port"));
    }
}
