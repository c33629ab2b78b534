//! Stopping jq evaluations that run too long, must be abandoned, or recurse
//! towards the end of the stack.
//!
//! A jq evaluation runs on the calling thread and may never end on its own
//! (`last(range(1e18))`, `def f: f; f`) or recurse until the thread's stack
//! overflows (`def f: [f]; f`), which would abort the whole process. Dropping
//! the future or abandoning the thread does not stop it: it keeps its core
//! and its memory. So every evaluation [`crate::Expr`] runs is watched: jaq
//! (flow's copy carries an interrupt hook) asks [`check`] at each step, and
//! the evaluation ends, with an error `try` cannot catch, when
//!
//! * the thread's [`Limits::deadline`] has passed (the stage's `timeout:`),
//! * the [`Limits::cancel`] flag is set (the run is abandoning its work),
//! * or the stack is within a reserve of its end.
//!
//! The runner sets the limits around each stage call with [`within`]; code
//! that loops for long outside jq can call [`check`] itself. Reading the
//! clock costs about 25 ns, so it is read every [`CHECK_EVERY`] steps; the
//! other checks are a thread-local read and a comparison.

use std::cell::Cell;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Steps between two readings of the clock.
pub const CHECK_EVERY: u32 = 64;

/// Stack kept free below the deepest point an evaluation may reach: room for
/// what jq does without asking the hook (comparing, printing or dropping a
/// value of up to 256 levels) and for flow's own frames.
pub const STACK_RESERVE: usize = 256 * 1024;

/// Why an evaluation was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The deadline passed: `timed out after <limit>`.
    TimedOut(Duration),
    /// The cancel flag was set: the run abandons what is in flight.
    Cancelled,
    /// The evaluation recursed to the end of the stack it may use.
    TooDeep,
}

/// The limits on the evaluations run on one thread inside [`within`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits<'a> {
    /// When evaluations must stop, and the limit that set it (for the
    /// message).
    pub deadline: Option<(Instant, Duration)>,
    /// A time limit whose clock starts at the evaluation's first check (a
    /// few microseconds in, after [`CHECK_EVERY`] steps at most), so that
    /// an evaluation shorter than that never reads the clock: what makes a
    /// `timeout:` almost free on cheap expressions.
    pub timeout: Option<Duration>,
    /// Set by another thread to stop the evaluations at once.
    pub cancel: Option<&'a AtomicBool>,
}

impl<'a> Limits<'a> {
    /// A deadline `limit` from now.
    pub fn timeout(limit: Duration) -> Self {
        Limits {
            deadline: Some((Instant::now() + limit, limit)),
            timeout: None,
            cancel: None,
        }
    }

    /// No time limit; evaluations stop when `cancel` is set.
    pub fn cancelled_by(cancel: &'a AtomicBool) -> Self {
        Limits {
            cancel: Some(cancel),
            ..Limits::default()
        }
    }

    /// These limits with a time limit of `limit` (none: unchanged), its
    /// clock started at the first check (see [`Limits::timeout`]).
    pub fn with_timeout(self, limit: Option<Duration>) -> Self {
        match limit {
            Some(limit) => Limits {
                deadline: None,
                timeout: Some(limit),
                ..self
            },
            None => self,
        }
    }
}

thread_local! {
    static DEADLINE: Cell<Option<(Instant, Duration)>> = const { Cell::new(None) };
    /// A time limit whose clock starts at the next check.
    static PENDING: Cell<Option<Duration>> = const { Cell::new(None) };
    static CANCEL: Cell<*const AtomicBool> = const { Cell::new(std::ptr::null()) };
    /// The lowest stack address the running evaluation may reach; 0 when
    /// none runs.
    static FLOOR: Cell<usize> = const { Cell::new(0) };
    /// This thread's floor, once known (0 until then).
    static THREAD_FLOOR: Cell<usize> = const { Cell::new(0) };
    static COUNTDOWN: Cell<u32> = const { Cell::new(CHECK_EVERY) };
    static STOPPED: Cell<Option<Stop>> = const { Cell::new(None) };
}

/// Runs `f` with `limits` on the evaluations it makes on this thread; the
/// limits in force before are restored after.
pub fn within<R>(limits: &Limits, f: impl FnOnce() -> R) -> R {
    struct Restore(
        Option<(Instant, Duration)>,
        Option<Duration>,
        *const AtomicBool,
    );
    impl Drop for Restore {
        fn drop(&mut self) {
            DEADLINE.set(self.0);
            PENDING.set(self.1);
            CANCEL.set(self.2);
        }
    }
    let cancel = limits
        .cancel
        .map_or(std::ptr::null(), |c| c as *const AtomicBool);
    let _restore = Restore(
        DEADLINE.replace(limits.deadline),
        PENDING.replace(limits.timeout),
        CANCEL.replace(cancel),
    );
    // The flag is borrowed for longer than this call.
    f()
}

/// Whether the code running now should stop, and why: the deadline or the
/// cancel flag of the innermost [`within`]. For long loops outside jq.
pub fn check() -> Option<Stop> {
    let cancel = CANCEL.get();
    // SAFETY: the pointer comes from a reference that outlives the
    // `within` call that set it, which resets it before returning.
    if !cancel.is_null() && unsafe { (*cancel).load(Ordering::Relaxed) } {
        return Some(Stop::Cancelled);
    }
    match deadline() {
        Some((at, limit)) if Instant::now() >= at => Some(Stop::TimedOut(limit)),
        _ => None,
    }
}

/// The deadline in force, its clock started now if it was pending.
fn deadline() -> Option<(Instant, Duration)> {
    if let Some(d) = DEADLINE.get() {
        return Some(d);
    }
    let limit = PENDING.take()?;
    let d = (Instant::now() + limit, limit);
    DEADLINE.set(Some(d));
    Some(d)
}

/// An evaluation in progress: sets the stack floor for the hook, and
/// restores the previous one (an evaluation inside another) when dropped.
pub(crate) struct Evaluation {
    floor: usize,
}

impl Evaluation {
    pub(crate) fn enter() -> Self {
        let mut floor = THREAD_FLOOR.get();
        if floor == 0 {
            // Once per thread: the lowest address an evaluation may reach is
            // the end of the thread's stack (as its bounds say; 1 MiB below
            // here when they are unknown, as no thread runs on less) plus
            // the reserve, wherever on the stack the evaluation starts.
            // Evaluations run on the thread's own stack (compiling, which
            // runs on a grown one, evaluates nothing).
            install_hook();
            let here = stack_pointer();
            let room = stacker::remaining_stack().unwrap_or(1 << 20);
            floor = here.saturating_sub(room) + STACK_RESERVE;
            THREAD_FLOOR.set(floor);
        }
        STOPPED.set(None);
        Evaluation {
            floor: FLOOR.replace(floor),
        }
    }

    /// Why the hook stopped the evaluation, if it did (cleared by reading).
    pub(crate) fn stopped(&self) -> Option<Stop> {
        STOPPED.take()
    }
}

impl Drop for Evaluation {
    fn drop(&mut self) {
        FLOOR.set(self.floor);
    }
}

fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| jaq_core::interrupt::set_hook(hook));
}

/// jaq's interrupt hook: called at every evaluation step.
fn hook() -> bool {
    let floor = FLOOR.get();
    if floor == 0 {
        return false;
    }
    if stack_pointer() < floor {
        STOPPED.set(Some(Stop::TooDeep));
        return true;
    }
    // The flag and the clock, every CHECK_EVERY steps: a few microseconds
    // of work apart, and nothing shared read on every step.
    let n = COUNTDOWN.get();
    if n > 0 {
        COUNTDOWN.set(n - 1);
        return false;
    }
    COUNTDOWN.set(CHECK_EVERY);
    let cancel = CANCEL.get();
    // SAFETY: as in `check`.
    if !cancel.is_null() && unsafe { (*cancel).load(Ordering::Relaxed) } {
        STOPPED.set(Some(Stop::Cancelled));
        return true;
    }
    match deadline() {
        Some((at, limit)) if Instant::now() >= at => {
            STOPPED.set(Some(Stop::TimedOut(limit)));
            true
        }
        _ => false,
    }
}

/// An address in the current stack frame.
#[inline(always)]
fn stack_pointer() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_sees_the_deadline_and_the_cancel_flag_of_the_innermost_scope() {
        assert_eq!(check(), None);
        let cancel = AtomicBool::new(false);
        let limits = Limits {
            deadline: Some((
                Instant::now() - Duration::from_millis(1),
                Duration::from_secs(2),
            )),
            timeout: None,
            cancel: Some(&cancel),
        };
        within(&limits, || {
            assert_eq!(check(), Some(Stop::TimedOut(Duration::from_secs(2))));
            cancel.store(true, Ordering::Relaxed);
            assert_eq!(check(), Some(Stop::Cancelled));
            within(&Limits::default(), || assert_eq!(check(), None));
            assert_eq!(check(), Some(Stop::Cancelled));
        });
        assert_eq!(check(), None);
    }

    #[test]
    fn a_pending_timeout_starts_at_the_first_check() {
        let limits = Limits::default().with_timeout(Some(Duration::from_millis(30)));
        within(&limits, || {
            assert_eq!(DEADLINE.get(), None, "no clock read before a check");
            assert_eq!(check(), None);
            let (at, limit) = DEADLINE.get().expect("started by the check");
            assert_eq!(limit, Duration::from_millis(30));
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            assert_eq!(check(), Some(Stop::TimedOut(limit)));
        });
        assert_eq!((DEADLINE.get(), PENDING.get()), (None, None), "restored");
    }
}
