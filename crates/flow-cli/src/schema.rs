//! `flow schema`: a JSON Schema of pipeline files. (Being written.)

pub fn show() -> u8 {
    eprintln!("flow schema: not written yet");
    crate::exit::FAILED
}
