//! The `flow` command line: `run`, `validate`, `stages`.
//!
//! A custom binary with extra stage types is this crate's [`main`] plus a
//! `use my_plugin as _;` that links the plugin's registrations.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use flow_stages as _;

mod report;
mod signals;
mod stages;

/// Declarative pipelines: bounded queues, worker pools and per-stage stats.
#[derive(Parser)]
#[command(name = "flow", version, about)]
struct Cli {
    /// More log output: -v for flow's debug lines (queue water marks,
    /// retries), -vv for trace, -vvv for every library (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
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
        /// Print no stats table (errors are still printed).
        #[arg(short, long)]
        quiet: bool,
    },
    /// Check a pipeline file without running it.
    Validate {
        /// The pipeline file.
        pipeline: PathBuf,
    },
    /// List the stage types, or describe one.
    Stages {
        /// A stage type: show its options and an example.
        #[arg(value_name = "TYPE")]
        type_name: Option<String>,
    },
}

/// Exit codes, as DESIGN.md gives them.
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
    init_logs(cli.verbose);
    match cli.command {
        Command::Run {
            pipeline,
            stats_json,
            quiet,
        } => run(&pipeline, stats_json, quiet),
        Command::Validate { pipeline } => validate(&pipeline),
        Command::Stages { type_name } => stages::show(type_name.as_deref()),
    }
}

fn init_logs(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    // -v shows flow's own debug lines (queue water marks, retries); the
    // libraries it uses stay at warn until -vv.
    let flow = "flow_core={0},flow_runner={0},flow_stages={0},flow_cli={0}";
    let directives = match verbose {
        0 => "warn".to_string(),
        1 => format!("warn,{}", flow.replace("{0}", "debug")),
        2 => format!("info,{}", flow.replace("{0}", "trace")),
        _ => "trace".to_string(),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn validate(path: &std::path::Path) -> u8 {
    match flow_runner::load(path) {
        Ok(plan) => {
            let names: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
            println!(
                "{}: ok: {} stages ({})",
                path.display(),
                names.len(),
                names.join(", ")
            );
            exit::OK
        }
        Err(problems) => {
            eprintln!("{problems}");
            exit::BAD_INPUT
        }
    }
}

fn run(path: &std::path::Path, stats_json: Option<PathBuf>, quiet: bool) -> u8 {
    let plan = match flow_runner::load(path) {
        Ok(plan) => plan,
        Err(problems) => {
            eprintln!("{problems}");
            return exit::BAD_INPUT;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flow: cannot start the runtime: {e}");
            return exit::FAILED;
        }
    };
    let report = runtime.block_on(async {
        let control = flow_runner::RunControl::new();
        let signals = signals::listen(control.clone());
        let running = flow_runner::Running::start(plan, control);
        let report = running.finish().await;
        signals.abort();
        report
    });
    if !quiet {
        eprint!("{}", report::render(&report));
    }
    if let Some(file) = stats_json {
        let json = serde_json::to_string_pretty(&report).expect("reports serialise");
        if let Err(e) = std::fs::write(&file, json + "\n") {
            eprintln!("flow: cannot write {}: {e}", file.display());
            return exit::FAILED;
        }
    }
    if let Some(failure) = report.failure.as_ref().filter(|_| quiet) {
        eprintln!("flow: run failed: {failure}");
    }
    // Drop the runtime without waiting for threads blocked on input.
    runtime.shutdown_background();
    report.exit_code() as u8
}
