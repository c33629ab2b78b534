//! How a run stops: the flags every task watches, and why the run failed.
//!
//! Two levels: **stop** ends the sources (what is already in the pipeline
//! drains through it: Ctrl-C, a failed source, `on_error: fail` before the
//! drain, a closed stdout), **abandon** ends everything now (every queue is
//! halted and its items abandoned, every jq evaluation is cancelled, every
//! wait ends: a second Ctrl-C, a drain past its timeout, a failed worker).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::Notify;

use crate::queue::Queue;

/// A one-way switch that tasks can wait on.
#[derive(Default)]
pub(crate) struct Flag {
    raised: AtomicBool,
    notify: Notify,
}

impl Flag {
    pub(crate) fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub(crate) fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.is_raised() {
                return;
            }
            notified.await;
        }
    }
}

/// The flag that cancels jq evaluations, alone on its cache line: every
/// evaluation step of every worker reads it, so no counter written by
/// another thread may share the line (each write would make those reads
/// miss).
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct CancelFlag(AtomicBool);

impl std::ops::Deref for CancelFlag {
    type Target = AtomicBool;

    fn deref(&self) -> &AtomicBool {
        &self.0
    }
}

/// What stops a run, shared by the run's tasks and its [`crate::RunControl`].
#[derive(Default)]
pub(crate) struct Stops {
    /// The sources stop.
    pub(crate) stop: Flag,
    /// Everything stops: nothing more is handled.
    pub(crate) abandon: Flag,
    /// The same as `abandon`, for jq evaluations (`interrupt::Limits`).
    pub(crate) cancel: Arc<CancelFlag>,
    /// Stopped from outside (Ctrl-C), not by an error.
    pub(crate) interrupted: AtomicBool,
    /// Why the run failed: the first error that stopped it.
    failure: Mutex<Option<String>>,
    /// The run's queues and halt hooks, once started, so an abandon can
    /// halt them from any thread.
    halts: OnceLock<Vec<Halt>>,
}

/// Something an abandon must release at once.
pub(crate) enum Halt {
    /// A queue: its items are abandoned, its waiters released.
    Queue(Arc<Queue>),
    /// Another waiter (an `ordered` stage's reorder buffer).
    Hook(Box<dyn Fn() + Send + Sync>),
}

impl Stops {
    /// Registers what an abandon halts; if the run is abandoned already,
    /// halts it now.
    pub(crate) fn register(&self, halts: Vec<Halt>) {
        let _ = self.halts.set(halts);
        if self.abandon.is_raised() {
            self.halt();
        }
    }

    /// Stops everything now.
    pub(crate) fn abandon(&self) {
        self.stop.raise();
        self.cancel.store(true, Ordering::SeqCst);
        self.abandon.raise();
        self.halt();
    }

    fn halt(&self) {
        for h in self.halts.get().into_iter().flatten() {
            match h {
                Halt::Queue(q) => q.halt(),
                Halt::Hook(f) => f(),
            }
        }
    }

    /// Records `message` as why the run failed (the first one wins) and
    /// stops the sources; the items already emitted still drain.
    pub(crate) fn fail_after_drain(&self, message: String) {
        let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some(message);
        }
        drop(f);
        self.stop.raise();
    }

    /// Why the run failed, if it did.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// True once the run is ending early: it failed, was interrupted, or
    /// its output was closed.
    pub(crate) fn stopping(&self) -> bool {
        self.stop.is_raised()
    }

    /// Whether the run is abandoning its work.
    pub(crate) fn abandoned(&self) -> bool {
        self.abandon.is_raised()
    }
}
