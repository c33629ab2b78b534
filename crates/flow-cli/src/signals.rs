//! SIGINT (Ctrl-C), SIGTERM and SIGHUP, handled on a thread of their own,
//! so they are seen whatever the workers do: every core busy in a runaway
//! expression, a blocked runtime.
//!
//! * The first stops the sources and lets what is already in the pipeline
//!   drain, for at most `--drain-timeout`. Then the run abandons what is
//!   left (queued and in-flight items are counted as abandoned) and ends
//!   with its report.
//! * If the run has still not ended [`FORCE_AFTER`] later (a stage stuck in
//!   a call that cannot be stopped), flow prints the report as it stands
//!   and exits.
//! * The second signal exits at once, killing every child process the
//!   stages started.
//!
//! Every way out exits with 130 (interrupted).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flow_runner::RunControl;

/// How long an abandoned run may take to end before flow exits anyway.
pub const FORCE_AFTER: Duration = Duration::from_secs(2);

/// The signals flow stops on.
const SIGNALS: [i32; 3] = [
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGHUP,
];

/// The thread that watches for signals while a run goes; [`Watch::finish`]
/// ends it.
pub struct Watch {
    done: Arc<AtomicBool>,
    wake: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
    ids: Vec<signal_hook::SigId>,
}

/// What the signal thread does when an abandoned run does not end: print
/// the report as it stands (and write the stats file).
pub type OnStuck = Box<dyn FnOnce() + Send>;

/// Registers for the signals now (before the run starts, so an early
/// Ctrl-C is not lost to the default handler) and watches them on a thread.
pub fn watch(control: RunControl, drain_timeout: Duration, on_stuck: OnStuck) -> Watch {
    let done = Arc::new(AtomicBool::new(false));
    let mut watch = Watch {
        done: done.clone(),
        wake: None,
        thread: None,
        ids: Vec::new(),
    };
    let (mut read, write) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!("cannot listen for signals: {e}");
            return watch;
        }
    };
    for signal in SIGNALS {
        let registered = write
            .try_clone()
            .and_then(|w| signal_hook::low_level::pipe::register(signal, w));
        match registered {
            Ok(id) => watch.ids.push(id),
            Err(e) => tracing::warn!("cannot listen for signal {signal}: {e}"),
        }
    }
    watch.wake = Some(write);
    let thread = std::thread::Builder::new()
        .name("flow-signals".into())
        .spawn(move || {
            let mut wait = |until: Option<Instant>| -> Waited {
                wait_for_signal(&mut read, &done, until)
            };
            if wait(None) != Waited::Signal {
                return;
            }
            // Act first, then log: a log write may block (a full pipe, a
            // stopped terminal), and the stop must not wait for it.
            control.interrupt();
            tracing::warn!(
                "interrupted: stopping the sources and draining the queues for at most {} (press Ctrl-C again to abort)",
                humantime::format_duration(drain_timeout)
            );
            match wait(Some(Instant::now() + drain_timeout)) {
                Waited::Done => return,
                Waited::Signal => abort(),
                Waited::Timeout => {}
            }
            control.abandon();
            tracing::warn!(
                "the drain did not finish within {} (--drain-timeout): abandoned what was left",
                humantime::format_duration(drain_timeout)
            );
            match wait(Some(Instant::now() + FORCE_AFTER)) {
                Waited::Done => {}
                Waited::Signal => abort(),
                Waited::Timeout => {
                    flow_core::children::kill_all();
                    // The report goes out on a thread of its own: if stderr
                    // is blocked, flow exits anyway a second later.
                    let (tx, rx) = std::sync::mpsc::channel();
                    std::thread::spawn(move || {
                        tracing::error!(
                            "the run did not end {} after abandoning its work; exiting",
                            humantime::format_duration(FORCE_AFTER)
                        );
                        on_stuck();
                        let _ = tx.send(());
                    });
                    let _ = rx.recv_timeout(Duration::from_secs(1));
                    std::process::exit(i32::from(crate::exit::INTERRUPTED));
                }
            }
        });
    match thread {
        Ok(t) => watch.thread = Some(t),
        Err(e) => tracing::warn!("cannot start the signal thread: {e}"),
    }
    watch
}

impl Watch {
    /// The run has ended: stops watching (a signal from now on has the
    /// default effect again).
    pub fn finish(mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(mut w) = self.wake.take() {
            let _ = w.write_all(&[0]);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Waited {
    Signal,
    Done,
    Timeout,
}

/// Waits for a signal (a byte from the handler), the end of the run, or
/// `until`.
fn wait_for_signal(read: &mut UnixStream, done: &AtomicBool, until: Option<Instant>) -> Waited {
    let mut byte = [0u8; 1];
    loop {
        if done.load(Ordering::SeqCst) {
            return Waited::Done;
        }
        let left = match until {
            None => None,
            Some(at) => match at.checked_duration_since(Instant::now()) {
                Some(d) if !d.is_zero() => Some(d),
                _ => return Waited::Timeout,
            },
        };
        if read.set_read_timeout(left).is_err() {
            return Waited::Done;
        }
        match read.read(&mut byte) {
            Ok(1) if !done.load(Ordering::SeqCst) => return Waited::Signal,
            Ok(_) => return Waited::Done,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return Waited::Done,
        }
    }
}

/// The second signal: out at once, and the stages' processes with flow.
fn abort() -> ! {
    flow_core::children::kill_all();
    eprintln!("flow: aborted");
    std::process::exit(i32::from(crate::exit::INTERRUPTED))
}
