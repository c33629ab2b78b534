//! Stopping an evaluation from outside (a patch carried by flow).
//!
//! An embedding program registers one hook with [`set_hook`]. The
//! evaluator calls it each time it starts evaluating a term, computing
//! paths or updates, and for every output of a native filter; when the
//! hook returns `true`, that evaluation step fails with an uncatchable
//! exception (a halt with [`HALT_CODE`]), which ends the whole evaluation
//! through `try`, `label` and `reduce` alike. The embedder decides why
//! (a deadline passed, the program is shutting down, the stack is nearly
//! exhausted) and remembers it, so it can tell that halt from a user's
//! `halt`.
//!
//! Without a hook (or without the `std` feature) the check is one atomic
//! load.

/// The exit code of the halt an interrupted evaluation ends with.
pub const HALT_CODE: i32 = i32::MIN + 0x1f10;

#[cfg(feature = "std")]
static HOOK: std::sync::OnceLock<fn() -> bool> = std::sync::OnceLock::new();

/// Registers the interrupt hook; only the first registration counts.
#[cfg(feature = "std")]
pub fn set_hook(hook: fn() -> bool) {
    let _ = HOOK.set(hook);
}

/// Whether the evaluation should stop now.
#[inline]
pub(crate) fn interrupted() -> bool {
    #[cfg(feature = "std")]
    if let Some(hook) = HOOK.get() {
        return hook();
    }
    false
}
