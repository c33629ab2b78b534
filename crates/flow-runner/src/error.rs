//! Problems in a pipeline file, reported as `file:line:column: stage "x": …`.

use std::fmt;

use crate::yaml::Pos;

/// One thing wrong with a pipeline file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Problem {
    /// The file as the user named it.
    pub file: String,
    pub pos: Option<Pos>,
    /// The stage it concerns, when it concerns one.
    pub stage: Option<String>,
    /// What is wrong; starts with the key when it concerns a key.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(p) = self.pos {
            write!(f, ":{}:{}", p.line, p.column)?;
        }
        f.write_str(": ")?;
        if let Some(stage) = &self.stage {
            write!(f, "stage \"{stage}\": ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a pipeline file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}
