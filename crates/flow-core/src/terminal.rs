//! Writing to a terminal that live progress lines share.
//!
//! While the `flow` command draws its live progress lines on the terminal,
//! anything else written there must land above them, not through them. The
//! front end registers how (with `set_guard`); a stage that writes to
//! standard output writes through [`stdout`], which runs each write under
//! that guard (the lines are cleared, the write goes out, they are drawn
//! again below it). With no guard set, [`stdout`] is plain
//! [`std::io::stdout`].

use std::io::{self, Write};
use std::sync::{Arc, RwLock};

/// Runner use: runs the write it is given with the live lines set aside.
#[doc(hidden)]
pub type Guard = Arc<dyn Fn(&mut dyn FnMut()) + Send + Sync>;

static GUARD: RwLock<Option<Guard>> = RwLock::new(None);

/// Runner use: sets the guard of every later write through [`stdout`];
/// `None` removes it. Called by the front end, not by stages.
#[doc(hidden)]
pub fn set_guard(guard: Option<Guard>) {
    *GUARD.write().unwrap_or_else(|e| e.into_inner()) = guard;
}

/// Runs `write` under the guard, if one is set.
pub fn guarded<R>(write: impl FnOnce() -> R) -> R {
    let guard = GUARD.read().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(guard) = guard else {
        return write();
    };
    let (mut write, mut result) = (Some(write), None);
    guard(&mut || result = write.take().map(|w| w()));
    // A guard that did not run the write: run it anyway.
    result.unwrap_or_else(|| (write.take().expect("runs once"))())
}

/// Standard output for a stage: each write (and flush) runs under the
/// guard, so printed records never break the live progress lines. Buffer
/// in front of it (a `BufWriter`), as for any output.
pub fn stdout() -> Stdout {
    Stdout
}

/// See [`stdout`].
pub struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        guarded(|| io::stdout().write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        guarded(|| io::stdout().flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn writes_run_under_the_guard_while_one_is_set() {
        static AROUND: AtomicUsize = AtomicUsize::new(0);
        assert_eq!(guarded(|| 1), 1);
        set_guard(Some(Arc::new(|write: &mut dyn FnMut()| {
            AROUND.fetch_add(1, Ordering::SeqCst);
            write();
        })));
        assert_eq!(guarded(|| 2), 2);
        assert_eq!(AROUND.load(Ordering::SeqCst), 1);
        set_guard(None);
        assert_eq!(guarded(|| 3), 3);
        assert_eq!(AROUND.load(Ordering::SeqCst), 1);
    }
}
