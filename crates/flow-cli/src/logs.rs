//! Logs on stderr: `-v` levels, RUST_LOG, text or JSON lines.

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Sets up the subscriber: `-v` shows flow's own debug lines (queue water
/// marks, retries) while libraries stay at warn until `-vv`. With
/// [`LogFormat::Json`] each line is one JSON object: `timestamp`, `level`,
/// `message`, the event's fields and `target`.
pub fn init(verbose: u8, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let flow = "flow_core={0},flow_runner={0},flow_stages={0},flow_cli={0}";
    let directives = match verbose {
        0 => "warn".to_string(),
        1 => format!("warn,{}", flow.replace("{0}", "debug")),
        2 => format!("info,{}", flow.replace("{0}", "trace")),
        _ => "trace".to_string(),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Progress hook: log lines print above the live progress lines.
        .with_writer(crate::progress::LogWriter);
    match format {
        LogFormat::Text => subscriber
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .init(),
        LogFormat::Json => subscriber
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .init(),
    }
}
