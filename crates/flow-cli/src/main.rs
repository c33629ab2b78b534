//! The `flow` binary: the CLI with the built-in stages.

flow_cli::flow_main!();
