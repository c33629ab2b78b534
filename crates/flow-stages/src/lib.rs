//! flow's built-in stage types, one module per type. Each module holds the
//! options struct (whose doc comments are the user's documentation), the
//! stage itself, its registration and its tests.
//!
//! A binary must link this crate (`use flow_stages as _;`) for the types to
//! register.

pub mod batch;
pub mod dedupe;
pub mod drop;
pub mod exec;
pub mod files;
pub mod filter;
pub mod generate;
pub mod http;
pub mod image;
pub mod list;
pub mod log;
pub mod map;
pub mod read;
pub mod redis_read;
pub mod redis_write;
pub mod reduce;
pub mod route;
pub mod sleep;
pub mod stdout;
pub mod unbatch;
pub mod write;

mod csv_rows;
mod format;
mod glob_walk;
mod json_array;
mod limits;
mod redis_common;

/// The names of the stage types this crate registers.
pub const TYPES: [&str; 19] = [
    "batch",
    "dedupe",
    "drop",
    "exec",
    "files",
    "filter",
    "generate",
    "http",
    "image",
    "list",
    "log",
    "map",
    "read",
    "redis_read",
    "redis_write",
    "sleep",
    "stdout",
    "unbatch",
    "write",
];
