//! flow's runner: from a pipeline file to a finished run.
//!
//! * [`plan`]: reads a pipeline file (`yaml.rs`, `interpolate.rs`, [`spec`]),
//!   checks everything (with `file:line:column` for each problem) and builds
//!   every stage: a [`plan::Plan`].
//! * [`mod@run`]: executes a plan: bounded queues (`queue.rs`), a task per source,
//!   worker pools (`worker.rs`: the layers around each stage call), the
//!   path out of a stage (`outlet.rs`: ports, `on_error`, counts,
//!   outcomes), stopping (`stop.rs`), orderly completion.
//! * [`stats`]: live counters and the end-of-run [`stats::Report`].
//! * [`testing`]: `flow test`, a pipeline's unit tests, each a run of its
//!   own with its sources fed, its sinks captured and its clock paused.
//!
//! Only what the command line and tests need is public: loading
//! ([`load`]), running ([`run()`], [`Running`], [`RunControl`],
//! [`Monitor`]), the plan and its graph (for `flow graph`), the spec (for
//! `flow schema`) and the stats.
//!
//! The runner knows no stage type: stages come from the registry in
//! `flow-core`, filled by whatever crates the binary links.

mod control;
pub mod durable;
mod error;
mod interpolate;
mod outlet;
mod panics;
pub mod plan;
mod queue;
mod rate;
pub mod run;
pub mod spec;
pub mod stats;
mod stop;
pub mod suggest;
pub mod testing;
mod worker;
mod yaml;

pub use error::{Problem, Problems};
pub use plan::{Plan, load, load_str};
pub use run::{Monitor, RunControl, Running, run};
pub use stats::{Report, Status};
