//! A custom `flow`: the built-in stages plus this crate's `slugify`.
//! `cargo run -p flow-example-plugin -- stages` lists it.

use flow_example_plugin as _;

flow_cli::flow_main!();
