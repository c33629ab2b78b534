//! flow's runner: from a pipeline file to a finished run.
//!
//! * [`plan`]: reads a pipeline file ([`yaml`], [`interpolate`], [`spec`]),
//!   checks everything (with `file:line:column` for each problem) and builds
//!   every stage: a [`plan::Plan`].
//! * [`run`]: executes a plan: bounded [`queue`]s, a task per source,
//!   worker pools (`worker.rs`: the layers around each stage call), the
//!   path out of a stage (`outlet.rs`: ports, `on_error`, counts,
//!   outcomes), stopping (`stop.rs`), orderly completion.
//! * [`stats`]: live counters and the end-of-run [`stats::Report`].
//!
//! The runner knows no stage type: stages come from the registry in
//! `flow-core`, filled by whatever crates the binary links.

pub mod control;
pub mod error;
pub mod interpolate;
mod outlet;
pub mod panics;
pub mod plan;
pub mod queue;
pub mod rate;
pub mod run;
pub mod spec;
pub mod stats;
mod stop;
pub mod suggest;
mod worker;
pub mod yaml;

pub use error::{Problem, Problems};
pub use plan::{Plan, load, load_str};
pub use run::{Monitor, RunControl, Running, run};
pub use stats::{Report, Status};
