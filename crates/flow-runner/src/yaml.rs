//! The one place that knows the YAML parsers: typed parsing of the pipeline
//! file (serde_yaml) and a map from each value's path (`stages[2].with.expr`)
//! to its line and column (saphyr's marked events), for errors found after
//! parsing.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle};
use serde::de::DeserializeOwned;

/// A line and column, both counted from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Where a value sits in the file, and its key when it is a map entry.
#[derive(Clone, Copy, Debug)]
struct Node {
    key: Option<Pos>,
    value: Pos,
    /// For a scalar written on one line: the column of its first character
    /// inside the quotes, so an offset into the text maps to a column.
    text_column: Option<usize>,
}

/// The positions of every value in a YAML document, by path.
#[derive(Debug, Default)]
pub struct Positions {
    nodes: HashMap<String, Node>,
    complete: bool,
}

impl Positions {
    /// Reads the positions from `text`; a document that does not parse
    /// yields what was read before the error.
    pub fn read(text: &str) -> Self {
        let mut nodes = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut complete = true;
        for event in Parser::new_from_str(text) {
            let Ok((event, span)) = event else {
                complete = false;
                break;
            };
            let pos = Pos {
                line: span.start.line(),
                column: span.start.col() + 1,
            };
            let (opens, is_node) = match &event {
                Event::MappingStart(..) => (Some(true), true),
                Event::SequenceStart(..) => (Some(false), true),
                Event::Scalar(..) | Event::Alias(..) => (None, true),
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                    continue;
                }
                _ => continue,
            };
            if !is_node {
                continue;
            }
            let path = match stack.last_mut() {
                None => Some((String::new(), None)),
                Some(Frame::Seq { path, next }) => {
                    let p = format!("{path}[{next}]");
                    *next += 1;
                    Some((p, None))
                }
                Some(Frame::Map { path, key }) => match key.take() {
                    Some((k, key_pos)) => Some((join(path, &k), Some(key_pos))),
                    None => {
                        // This node is a key. Complex keys get no path.
                        let k = match &event {
                            Event::Scalar(v, ..) => v.to_string(),
                            _ => "?".to_string(),
                        };
                        *key = Some((k, pos));
                        None
                    }
                },
            };
            if let Some((path, key)) = &path {
                let text_column = match &event {
                    Event::Scalar(_, style, ..) if span.start.line() == span.end.line() => {
                        match style {
                            ScalarStyle::Plain => Some(pos.column),
                            ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => {
                                Some(pos.column + 1)
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                };
                nodes.insert(
                    path.clone(),
                    Node {
                        key: *key,
                        value: pos,
                        text_column,
                    },
                );
            }
            match opens {
                Some(true) => stack.push(Frame::Map {
                    path: path.map(|(p, _)| p).unwrap_or_else(|| "?".into()),
                    key: None,
                }),
                Some(false) => stack.push(Frame::Seq {
                    path: path.map(|(p, _)| p).unwrap_or_else(|| "?".into()),
                    next: 0,
                }),
                None => {}
            }
        }
        Positions { nodes, complete }
    }

    /// True when the whole document was read without a syntax error.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Where the value at `path` starts.
    pub fn value(&self, path: &str) -> Option<Pos> {
        self.nodes.get(path).map(|n| n.value)
    }

    /// Where the key of the map entry at `path` starts (the value's
    /// position for a list element).
    pub fn key(&self, path: &str) -> Option<Pos> {
        self.nodes.get(path).map(|n| n.key.unwrap_or(n.value))
    }

    /// The position of the `offset`-th character of the one-line scalar at
    /// `path` (an error inside an expression), else the value's position.
    pub fn inside(&self, path: &str, offset: usize) -> Option<Pos> {
        let node = self.nodes.get(path)?;
        Some(match node.text_column {
            Some(col) => Pos {
                line: node.value.line,
                column: col + offset,
            },
            None => node.value,
        })
    }
}

enum Frame {
    Map {
        path: String,
        key: Option<(String, Pos)>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A parse failure: the path serde was at (`stages[0].workers`), the message
/// without serde_yaml's own path and position, and the position it gave.
#[derive(Debug)]
pub struct ParseError {
    pub path: String,
    pub message: String,
    pub pos: Option<Pos>,
}

/// Deserialises a whole document into `T`.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, ParseError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = match e.path().to_string() {
            p if p == "." => String::new(),
            p => p,
        };
        let inner = e.into_inner();
        let pos = inner.location().map(|l| Pos {
            line: l.line(),
            column: l.column(),
        });
        let mut message = inner.to_string();
        if let Some(p) = pos {
            let suffix = format!(" at line {} column {}", p.line, p.column);
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_string();
            }
        }
        if let Some(stripped) = message.strip_prefix(&format!("{path}: ")) {
            message = stripped.to_string();
        }
        ParseError { path, message, pos }
    })
}

/// Converts a YAML value (a stage's `with:`) to JSON for the stage type.
pub fn to_json(value: &serde_yaml::Value) -> Result<serde_json::Value, String> {
    serde_json::to_value(value).map_err(|e| e.to_string())
}

pub type Value = serde_yaml::Value;

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "name: demo\nstages:\n  - name: gen\n    type: generate\n    with: { count: 3 }\n  - name: sq\n    type: map\n    with:\n      expr: '.a | | .b'\n";

    #[test]
    fn finds_keys_and_values_by_path() {
        let p = Positions::read(DOC);
        assert_eq!(p.value("name"), Some(Pos { line: 1, column: 7 }));
        assert_eq!(p.value("stages[0]"), Some(Pos { line: 3, column: 5 }));
        assert_eq!(p.key("stages[1].type"), Some(Pos { line: 7, column: 5 }));
        assert_eq!(
            p.value("stages[1].type"),
            Some(Pos {
                line: 7,
                column: 11
            })
        );
        assert_eq!(
            p.value("stages[0].with.count"),
            Some(Pos {
                line: 5,
                column: 20
            })
        );
    }

    #[test]
    fn offsets_inside_a_quoted_scalar_map_to_columns() {
        let p = Positions::read(DOC);
        // `'.a | | .b'` starts at column 13; its text at 14; offset 5 is the second `|`.
        assert_eq!(
            p.inside("stages[1].with.expr", 5),
            Some(Pos {
                line: 9,
                column: 19
            })
        );
    }

    #[test]
    fn a_broken_document_still_gives_what_came_before() {
        let p = Positions::read("a: 1\nb: [\n");
        assert_eq!(p.value("a"), Some(Pos { line: 1, column: 4 }));
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        name: String,
        count: Option<u32>,
    }

    #[test]
    fn parse_errors_carry_the_path_and_a_clean_message() {
        let err = parse::<Doc>("name: x\ncount: many\n").unwrap_err();
        assert_eq!(err.path, "count");
        assert_eq!(err.pos, Some(Pos { line: 2, column: 8 }));
        assert!(
            err.message.starts_with("invalid type: string \"many\""),
            "{}",
            err.message
        );
        let err = parse::<Doc>("name: x\ncuont: 1\n").unwrap_err();
        assert_eq!(err.path, "cuont");
        assert!(
            err.message.starts_with("unknown field `cuont`"),
            "{}",
            err.message
        );
    }
}
