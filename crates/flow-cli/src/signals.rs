//! Ctrl-C and SIGTERM: the first stops the sources and lets the pipeline
//! drain; the second exits at once.

use flow_runner::RunControl;

/// Registers for the signals now (before the run starts, so an early
/// Ctrl-C is not lost to the default handler) and handles them in a task.
pub fn listen(control: RunControl) -> tokio::task::JoinHandle<()> {
    let signals = Signals::new();
    tokio::spawn(async move {
        match signals {
            Ok(signals) => interrupt_on_signal(signals, control).await,
            Err(e) => tracing::warn!("cannot listen for Ctrl-C: {e}"),
        }
    })
}

async fn interrupt_on_signal(mut signals: Signals, control: RunControl) {
    signals.next().await;
    tracing::warn!(
        "interrupted: stopping the sources and draining the queues (press Ctrl-C again to abort)"
    );
    control.interrupt();
    signals.next().await;
    eprintln!("flow: aborted");
    std::process::exit(i32::from(crate::exit::INTERRUPTED));
}

#[cfg(unix)]
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Signals)
    }

    async fn next(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
