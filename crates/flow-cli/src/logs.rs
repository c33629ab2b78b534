//! Logs on stderr: `-v` levels, RUST_LOG, text or JSON lines.
//!
//! Log lines quote items (a failed item's error, a `log` stage's records,
//! an `exec` process's stderr), and items may carry anything. Every field
//! of a text line is written through [`flow_core::text::for_display`]:
//! control characters (ESC, CR, the C1 controls) as visible escapes, so a
//! record cannot retitle the terminal, clear it or overwrite a line, and
//! credentials as `***`. A JSON line escapes the control characters JSON
//! would leave raw (DEL, C1) and redacts credentials the same way (see
//! [`crate::progress::LogWriter`]).

use std::fmt::Write as _;

use tracing_subscriber::field::MakeExt as _;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Sets up the subscriber: `-v` shows flow's own debug lines (queue water
/// marks, retries) while libraries stay at warn until `-vv`. With
/// [`LogFormat::Json`] each line is one JSON object: `timestamp`, `level`,
/// `message`, the event's fields and `target`. `testing` (`flow test`):
/// the runs' own warnings (an item dropped, as the test meant) are shown
/// only from `-v` on; the test results say what went wrong.
pub fn init(verbose: u8, format: LogFormat, testing: bool) {
    use tracing_subscriber::EnvFilter;
    let flow = "flow_core={0},flow_runner={0},flow_stages={0},flow_cli={0}";
    let directives = match verbose {
        0 if testing => "off".to_string(),
        0 => "warn".to_string(),
        1 => format!("warn,{}", flow.replace("{0}", "debug")),
        2 => format!("info,{}", flow.replace("{0}", "trace")),
        _ => "trace".to_string(),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => subscriber
            // Progress hook: log lines print above the live progress lines.
            .with_writer(crate::progress::LogWriter::text())
            .fmt_fields(
                tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
                    write_field(w, field.name(), value)
                })
                .delimited(" "),
            )
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .init(),
        LogFormat::Json => subscriber
            .with_writer(crate::progress::LogWriter::json())
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .init(),
    }
}

/// One field of a text log line: the message as it is, others as
/// `name=value`, either way fit for a terminal.
fn write_field(
    w: &mut dyn std::fmt::Write,
    name: &str,
    value: &dyn std::fmt::Debug,
) -> std::fmt::Result {
    let mut text = String::new();
    let _ = write!(text, "{value:?}");
    let text = flow_core::text::for_display(&text);
    match name {
        "message" => w.write_str(&text),
        _ => write!(w, "{name}={text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, value: &dyn std::fmt::Debug) -> String {
        let mut out = String::new();
        write_field(&mut out, name, value).unwrap();
        out
    }

    #[test]
    fn fields_are_escaped_and_redacted() {
        let message = format_args!("item dropped: bad \x1b]0;owned\x07 at https://u:p@h/\r");
        assert_eq!(
            field("message", &message),
            "item dropped: bad \\x1b]0;owned\\x07 at https://***@h/\\r"
        );
        // A field recorded with `%`: its Display, escaped.
        let stage = tracing::field::display("a\u{9b}2J");
        assert_eq!(field("stage", &stage), "stage=a\\u{9b}2J");
        // With `?`: its Debug, already quoted.
        assert_eq!(field("n", &"x\ny"), "n=\"x\\ny\"");
    }
}
