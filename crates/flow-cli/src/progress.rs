//! Progress while a run goes: live lines on a terminal, plain periodic
//! lines otherwise. (Being written.)

use std::time::Duration;

use flow_runner::Monitor;

pub struct Progress;

impl Progress {
    /// Starts showing progress of the run `monitor` reports on (nothing
    /// when `quiet`).
    pub fn start(_monitor: Monitor, _interval: Duration, _quiet: bool) -> Self {
        Progress
    }

    /// Stops and clears the display, before the final report.
    pub fn finish(self) {}
}
