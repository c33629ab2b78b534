//! The `flow` binary: the CLI with the built-in stages.

use flow_stages as _;

// Items are small, short-lived allocations made on one thread and freed on
// another; mimalloc handles that pattern far better than the system
// allocator (see benches/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    flow_cli::main()
}
