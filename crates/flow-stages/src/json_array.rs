//! Splits a JSON array into the text of its elements as it streams by, in
//! bounded memory: `read`'s `json` format (which parses each element with
//! flow's strict parser) and its count ahead (which only counts them).
//!
//! The scan tracks strings and nesting, never values: an element is the
//! text between the array's top-level commas. An element longer than the
//! limit is reported as soon as it passes it and skipped to its end without
//! being kept, so no element, however long, and no nesting, however deep,
//! takes more than the limit. A broken element (`[1, 2}, 3]`) is one
//! element's error: the scan goes on at the next top-level comma.

use std::io::{self, BufRead};

/// A place in the input: line and column (in bytes), from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: u64,
    pub column: u64,
}

impl Pos {
    /// The place `offset` bytes into `text`, which starts here.
    pub(crate) fn advanced(self, text: &[u8], offset: usize) -> Pos {
        let before = &text[..offset.min(text.len())];
        match before.iter().rposition(|&b| b == b'\n') {
            None => Pos {
                line: self.line,
                column: self.column + before.len() as u64,
            },
            Some(nl) => Pos {
                line: self.line + before.iter().filter(|&&b| b == b'\n').count() as u64,
                column: (before.len() - nl) as u64,
            },
        }
    }
}

/// What the scan found in the array.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// An element's text, from its first byte (whitespace around it
    /// removed), at most the limit long; `at` is where it starts.
    Element { text: &'a [u8], at: Pos },
    /// An element longer than the limit: its first bytes (when kept).
    TooLong { head: &'a [u8], at: Pos },
    /// Nothing before a `,` or `]` (`[1,,2]`, `[1,]`).
    Missing { delimiter: u8, at: Pos },
    /// The input ended inside the array: what there was of its last
    /// element (perhaps nothing), and where it started (or where the input
    /// ended).
    Unterminated { text: &'a [u8], at: Pos },
}

/// Why the scan of an input stopped.
#[derive(Debug)]
pub(crate) enum ScanError<E> {
    Io(io::Error),
    /// The input does not start with `[`: what it starts with.
    NotArray {
        found: String,
        at: Pos,
    },
    /// Something other than whitespace after the array's `]`.
    Trailing {
        at: Pos,
    },
    /// The caller's handler failed.
    Stopped(E),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Array,
    After,
}

/// The element being scanned.
#[derive(Default)]
struct Element {
    started: bool,
    at: Option<Pos>,
    len: usize,
    depth: u64,
    in_string: bool,
    escaped: bool,
    over: bool,
    text: Vec<u8>,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn trim_end(text: &[u8]) -> &[u8] {
    let end = text.iter().rposition(|&b| !is_ws(b)).map_or(0, |i| i + 1);
    &text[..end]
}

/// What a JSON text that should be an array starts with instead.
fn describe(b: u8) -> String {
    match b {
        b'{' => "an object".into(),
        b'"' => "a string".into(),
        b'-' | b'0'..=b'9' => "a number".into(),
        b't' | b'f' => "a boolean".into(),
        b'n' => "null".into(),
        b if b.is_ascii_graphic() => format!("`{}`", b as char),
        b => format!("byte 0x{b:02x}"),
    }
}

/// Scans the JSON array in `input`, handing each element (or each
/// element's error) to `on`, in order. Keeps at most `max` bytes of an
/// element (none when `keep` is false: counting). A handler error stops
/// the scan.
pub(crate) fn scan<R: BufRead, E>(
    input: &mut R,
    max: usize,
    keep: bool,
    mut on: impl FnMut(Piece<'_>) -> Result<(), E>,
) -> Result<(), ScanError<E>> {
    let mut pos = Pos { line: 1, column: 1 };
    let mut state = State::Start;
    let mut any = false;
    let mut el = Element::default();
    loop {
        let chunk = input.fill_buf().map_err(ScanError::Io)?;
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len();
        // Where the element's bytes in this chunk begin.
        let mut seg = 0;
        for i in 0..n {
            let b = chunk[i];
            match state {
                State::Start if is_ws(b) => {}
                State::Start if b == b'[' => state = State::Array,
                State::Start => {
                    return Err(ScanError::NotArray {
                        found: describe(b),
                        at: pos,
                    });
                }
                State::After if is_ws(b) => {}
                State::After => return Err(ScanError::Trailing { at: pos }),
                State::Array if !el.started && is_ws(b) => {}
                State::Array if !el.started && b == b']' && !any => state = State::After,
                State::Array if !el.started && (b == b',' || b == b']') => {
                    any = true;
                    on(Piece::Missing {
                        delimiter: b,
                        at: pos,
                    })
                    .map_err(ScanError::Stopped)?;
                    if b == b']' {
                        state = State::After;
                    }
                }
                State::Array => {
                    if !el.started {
                        any = true;
                        el.started = true;
                        el.at = Some(pos);
                        seg = i;
                    }
                    let end = if el.in_string {
                        if el.escaped {
                            el.escaped = false;
                        } else if b == b'\\' {
                            el.escaped = true;
                        } else if b == b'"' {
                            el.in_string = false;
                        }
                        false
                    } else {
                        match b {
                            b',' | b']' if el.depth == 0 => true,
                            b'"' => {
                                el.in_string = true;
                                false
                            }
                            b'[' | b'{' => {
                                el.depth += 1;
                                false
                            }
                            // A stray `}` at the top is the element's error.
                            b']' | b'}' => {
                                el.depth = el.depth.saturating_sub(1);
                                false
                            }
                            _ => false,
                        }
                    };
                    if end {
                        if keep && !el.over {
                            el.text.extend_from_slice(&chunk[seg..i]);
                        }
                        let at = el.at.expect("a started element has a start");
                        if !el.over {
                            let text = trim_end(&el.text);
                            let piece = if text.len() > max {
                                Piece::TooLong {
                                    head: &text[..text.len().min(crate::limits::RECORD_QUOTE)],
                                    at,
                                }
                            } else {
                                Piece::Element { text, at }
                            };
                            on(piece).map_err(ScanError::Stopped)?;
                        }
                        el = Element {
                            text: std::mem::take(&mut el.text),
                            ..Element::default()
                        };
                        el.text.clear();
                        if b == b']' {
                            state = State::After;
                        }
                    } else {
                        el.len += 1;
                        if !el.over && el.len > max {
                            if keep {
                                el.text.extend_from_slice(&chunk[seg..=i]);
                            }
                            let head = &el.text[..el.text.len().min(crate::limits::RECORD_QUOTE)];
                            let at = el.at.expect("a started element has a start");
                            on(Piece::TooLong { head, at }).map_err(ScanError::Stopped)?;
                            el.over = true;
                            el.text = Vec::new();
                        }
                    }
                }
            }
            if b == b'\n' {
                pos.line += 1;
                pos.column = 1;
            } else {
                pos.column += 1;
            }
        }
        if keep && el.started && !el.over {
            el.text.extend_from_slice(&chunk[seg..n]);
        }
        input.consume(n);
    }
    match state {
        State::Start => Err(ScanError::NotArray {
            found: "the end of the file".into(),
            at: pos,
        }),
        State::Array if el.over => Ok(()),
        State::Array => {
            let at = el.at.unwrap_or(pos);
            on(Piece::Unterminated {
                text: trim_end(&el.text),
                at,
            })
            .map_err(ScanError::Stopped)
        }
        State::After => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pieces of `text` as strings: `E text @line:col`, `LONG head`,
    /// `MISSING ,`, `END text`; or the error.
    fn pieces(text: &str, max: usize) -> Result<Vec<String>, String> {
        let mut got = Vec::new();
        let mut input = io::BufReader::with_capacity(7, text.as_bytes());
        let result = scan(&mut input, max, true, |p| {
            let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            got.push(match p {
                Piece::Element { text, at } => format!("E {} @{}:{}", s(text), at.line, at.column),
                Piece::TooLong { head, at } => {
                    format!("LONG {}… @{}:{}", s(head), at.line, at.column)
                }
                Piece::Missing { delimiter, at } => {
                    format!("MISSING {} @{}:{}", delimiter as char, at.line, at.column)
                }
                Piece::Unterminated { text, at } => {
                    format!("END {} @{}:{}", s(text), at.line, at.column)
                }
            });
            Ok::<(), ()>(())
        });
        match result {
            Ok(()) => Ok(got),
            Err(ScanError::NotArray { found, at }) => {
                Err(format!("not an array: {found} @{}:{}", at.line, at.column))
            }
            Err(ScanError::Trailing { at }) => Err(format!("trailing @{}:{}", at.line, at.column)),
            Err(e) => Err(format!("{e:?}")),
        }
    }

    #[test]
    fn elements_are_split_at_top_level_commas_only() {
        let text = r#"[1, "a,]\"b", {"k": [2, 3]},
  [[]] ]"#;
        assert_eq!(
            pieces(text, 100).unwrap(),
            [
                "E 1 @1:2",
                r#"E "a,]\"b" @1:5"#,
                r#"E {"k": [2, 3]} @1:15"#,
                "E [[]] @2:3",
            ]
        );
        assert_eq!(pieces(" [ ] ", 100).unwrap(), Vec::<String>::new());
        assert_eq!(pieces("[]", 100).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn broken_elements_are_reported_one_at_a_time() {
        assert_eq!(
            pieces("[1,,2,]", 100).unwrap(),
            ["E 1 @1:2", "MISSING , @1:4", "E 2 @1:5", "MISSING ] @1:7"]
        );
        assert_eq!(
            pieces("[1, 2}, 3]", 100).unwrap(),
            ["E 1 @1:2", "E 2} @1:5", "E 3 @1:9"]
        );
        assert_eq!(
            pieces("[1,\n2,\n}", 100).unwrap(),
            ["E 1 @1:2", "E 2 @2:1", "END } @3:1"]
        );
        assert_eq!(pieces("[1, 2", 100).unwrap(), ["E 1 @1:2", "END 2 @1:5"]);
        assert_eq!(pieces("[1,", 100).unwrap(), ["E 1 @1:2", "END  @1:4"]);
    }

    #[test]
    fn an_element_past_the_limit_is_reported_and_skipped() {
        let text = format!("[1, \"{}\", [{}], 2]", "x".repeat(50), "[".repeat(30));
        assert_eq!(
            pieces(&text, 10).unwrap(),
            [
                "E 1 @1:2".to_string(),
                format!("LONG \"{}… @1:5", "x".repeat(10)),
                format!("LONG [{}… @1:59", "[".repeat(10)),
            ]
        );
        // The unclosed brackets swallow the rest: the array never ends.
    }

    #[test]
    fn what_is_not_an_array_is_named() {
        assert_eq!(
            pieces(r#"{"a": 1}"#, 10).unwrap_err(),
            "not an array: an object @1:1"
        );
        assert_eq!(
            pieces("  \n", 10).unwrap_err(),
            "not an array: the end of the file @2:1"
        );
        assert_eq!(pieces("[1] [2]", 10).unwrap_err(), "trailing @1:5");
    }

    #[test]
    fn positions_inside_an_element() {
        let at = Pos { line: 3, column: 5 };
        assert_eq!(at.advanced(b"abc", 2), Pos { line: 3, column: 7 });
        assert_eq!(at.advanced(b"a\nbc\nd", 6), Pos { line: 5, column: 2 });
        assert_eq!(at.advanced(b"a\nbc", 2), Pos { line: 4, column: 1 });
    }
}
