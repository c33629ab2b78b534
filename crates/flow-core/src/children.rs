//! Child processes that stages start, registered so that flow can take
//! them down with it when it has to exit at once (a second Ctrl-C): a
//! stage that starts a process in a process group of its own registers the
//! group for as long as the process lives.

use std::sync::Mutex;

static GROUPS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Keeps a process group registered until dropped.
#[derive(Debug)]
pub struct Registered(u32);

/// Registers the process group `pgid` (the child's pid, for a child started
/// with `process_group(0)`).
pub fn register(pgid: u32) -> Registered {
    lock().push(pgid);
    Registered(pgid)
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut groups = lock();
        if let Some(i) = groups.iter().position(|&g| g == self.0) {
            groups.swap_remove(i);
        }
    }
}

/// Runner use: kills every registered process group at once (SIGKILL),
/// for an exit that cannot wait for stages to stop their processes.
#[doc(hidden)]
pub fn kill_all() {
    for &pgid in lock().iter() {
        #[cfg(unix)]
        if let Ok(pgid) = i32::try_from(pgid)
            && pgid > 0
        {
            // SAFETY: kill(2) with a negative pid signals a process group;
            // it touches no memory of ours.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// The registered groups, for tests.
pub fn registered() -> Vec<u32> {
    lock().clone()
}

fn lock() -> std::sync::MutexGuard<'static, Vec<u32>> {
    GROUPS.lock().unwrap_or_else(|e| e.into_inner())
}
