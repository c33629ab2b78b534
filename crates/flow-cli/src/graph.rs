//! `flow graph`: the pipeline as Mermaid or Graphviz dot. (Being written.)

/// The output format of `flow graph`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    Mermaid,
    Dot,
}

pub fn show(_pipeline: &std::path::Path, _format: GraphFormat) -> u8 {
    eprintln!("flow graph: not written yet");
    crate::exit::FAILED
}
