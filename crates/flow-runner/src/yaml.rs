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
#[derive(Clone, Debug)]
struct Node {
    key: Option<Pos>,
    value: Pos,
    scalar: Option<Scalar>,
}

/// A scalar as written, so an offset into its text (an error inside an
/// expression) can be mapped back to the line and column in the file.
#[derive(Clone, Debug)]
struct Scalar {
    style: ScalarStyle,
    text: String,
    one_line: bool,
}

/// The positions of every value in a YAML document, by path.
#[derive(Debug, Default)]
pub struct Positions {
    nodes: HashMap<String, Node>,
    lines: Vec<String>,
    /// Where and why the document stopped being YAML, if it did.
    error: Option<(Pos, String)>,
}

impl Positions {
    /// Reads the positions from `text`; a document that does not parse
    /// yields what was read before the error.
    pub fn read(text: &str) -> Self {
        let mut nodes = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut error = None;
        for event in Parser::new_from_str(text) {
            let (event, span) = match event {
                Ok(event) => event,
                Err(e) => {
                    let at = Pos {
                        line: e.marker().line(),
                        column: e.marker().col() + 1,
                    };
                    error = Some((at, e.info().to_string()));
                    break;
                }
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
                let scalar = match &event {
                    Event::Scalar(text, style, ..) => Some(Scalar {
                        style: *style,
                        text: text.to_string(),
                        one_line: span.start.line() == span.end.line(),
                    }),
                    _ => None,
                };
                nodes.insert(
                    path.clone(),
                    Node {
                        key: *key,
                        value: pos,
                        scalar,
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
        Positions {
            nodes,
            lines: text.lines().map(str::to_string).collect(),
            error,
        }
    }

    /// True when the whole document was read without a syntax error.
    pub fn is_complete(&self) -> bool {
        self.error.is_none()
    }

    /// Where the document stopped being YAML, and why.
    pub fn syntax_error(&self) -> Option<(Pos, &str)> {
        self.error.as_ref().map(|(pos, why)| (*pos, why.as_str()))
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

    /// Where the character at byte `offset` of the text of the scalar at
    /// `path` sits in the file (an error inside an expression): exact for a
    /// one-line plain or quoted scalar, escapes counted as written, and for
    /// a literal (`|`) block; else the value's position.
    pub fn inside(&self, path: &str, offset: usize) -> Option<Pos> {
        let node = self.nodes.get(path)?;
        let at = node.scalar.as_ref().and_then(|scalar| {
            let mut offset = offset.min(scalar.text.len());
            while !scalar.text.is_char_boundary(offset) {
                offset -= 1;
            }
            let before = &scalar.text[..offset];
            match scalar.style {
                ScalarStyle::Plain if scalar.one_line => Some(Pos {
                    line: node.value.line,
                    column: node.value.column + before.chars().count(),
                }),
                ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted if scalar.one_line => {
                    self.inside_quotes(node.value, scalar.style, before.chars().count())
                }
                ScalarStyle::Literal => Some(inside_literal(node.value, &scalar.text, before)),
                _ => None,
            }
        });
        Some(at.unwrap_or(node.value))
    }

    /// The path of the scalar value that the text at `pos` belongs to (a
    /// `${VAR}` found before parsing), if it is one.
    pub fn path_at(&self, pos: Pos) -> Option<&str> {
        let (path, node) = self
            .nodes
            .iter()
            .filter(|(_, n)| (n.value.line, n.value.column) <= (pos.line, pos.column))
            .max_by_key(|(path, n)| (n.value.line, n.value.column, path.len()))?;
        let scalar = node.scalar.as_ref()?;
        (node.value.line == pos.line || !scalar.one_line).then_some(path.as_str())
    }

    /// The column of the `chars`-th character of a quoted scalar's text
    /// starting at `start` (its opening quote), counting each escape
    /// (`''`, `\"`, `\u00e9`) as the characters written.
    fn inside_quotes(&self, start: Pos, style: ScalarStyle, chars: usize) -> Option<Pos> {
        let line = self.lines.get(start.line - 1)?;
        let mut written = line.chars().skip(start.column);
        let mut column = start.column + 1;
        for _ in 0..chars {
            let width = match (style, written.next()?) {
                (ScalarStyle::SingleQuoted, '\'') => 2,
                (ScalarStyle::DoubleQuoted, '\\') => match written.clone().next()? {
                    'x' => 4,
                    'u' => 6,
                    'U' => 10,
                    _ => 2,
                },
                _ => 1,
            };
            for _ in 1..width {
                written.next();
            }
            column += width;
        }
        Some(Pos {
            line: start.line,
            column,
        })
    }
}

/// In a literal block, whose text starts at `start` (its first non-empty
/// line), the position of the end of `before`: every line keeps the block's
/// indentation, and the text's leading newlines are the empty lines above
/// `start`.
fn inside_literal(start: Pos, text: &str, before: &str) -> Pos {
    let leading = text.len() - text.trim_start_matches('\n').len();
    let newlines = before.matches('\n').count();
    if newlines < leading {
        return start;
    }
    let last = before.rsplit('\n').next().unwrap_or_default();
    Pos {
        line: start.line + newlines - leading,
        column: start.column + last.chars().count(),
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
            // At the end of the message, or before a syntax error's
            // context ("…, while parsing a flow sequence at …").
            let at = format!(" at line {} column {}", p.line, p.column);
            message = message.replacen(&at, "", 1);
        }
        // serde_yaml starts with its own path, which is the map holding an
        // unknown key rather than the key itself.
        if let Some(stripped) =
            ancestors(&path).find_map(|p| message.strip_prefix(&format!("{p}: ")))
        {
            message = stripped.to_string();
        }
        ParseError { path, message, pos }
    })
}

/// `stages[1].retry.attempts`, `stages[1].retry`, `stages[1]`, `stages`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(path).filter(|p| !p.is_empty()), |p| {
        p.rfind(['.', '['])
            .map(|i| &p[..i])
            .filter(|p| !p.is_empty())
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
    fn offsets_count_escapes_and_letters_as_written() {
        // The text is `"é" | | .b`; its second `|` (byte 7, character 6)
        // is written at column 23.
        let p = Positions::read("e: \"\\\"\u{e9}\\\" | | .b\"\ns: 'it''s | x'\n");
        assert_eq!(
            p.inside("e", 7),
            Some(Pos {
                line: 1,
                column: 13
            })
        );
        assert_eq!(p.inside("s", 3), Some(Pos { line: 2, column: 9 }));
    }

    #[test]
    fn offsets_inside_a_literal_block_map_to_its_lines() {
        let p = Positions::read("e: |\n\n  {a: 1,\n   b: | }\nx: 1\n");
        // The text is "\n{a: 1,\n b: | }\n"; the `|` is at byte 12.
        assert_eq!(p.inside("e", 12), Some(Pos { line: 4, column: 7 }));
    }

    #[test]
    fn a_position_inside_a_scalar_gives_its_path() {
        let p = Positions::read(DOC);
        assert_eq!(
            p.path_at(Pos {
                line: 9,
                column: 19
            }),
            Some("stages[1].with.expr")
        );
        assert_eq!(p.path_at(Pos { line: 8, column: 5 }), None);
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

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Docs {
        docs: Vec<Doc>,
    }

    #[test]
    fn nested_parse_errors_lose_serde_yamls_own_path_too() {
        let err = parse::<Docs>("docs:\n  - name: x\n    cuont: 1\n").unwrap_err();
        assert_eq!(err.path, "docs[0].cuont");
        assert!(
            err.message.starts_with("unknown field `cuont`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_syntax_error_is_kept_with_its_position() {
        let p = Positions::read("stages: [\n  - name: gen\n");
        assert!(!p.is_complete());
        assert_eq!(
            p.syntax_error(),
            Some((
                Pos { line: 2, column: 3 },
                "\"-\" is only valid inside a block"
            ))
        );
        assert_eq!(Positions::read("a: 1\n").syntax_error(), None);
    }
}
