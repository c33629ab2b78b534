//! JSON text to values and back: strict, bounded, and without recursion.
//!
//! Every JSON record flow reads (a `jsonl` line, a `json` array element, an
//! `http` body with `as: json`, an `exec` answer, jq's `fromjson`) goes
//! through [`parse`], and every value flow writes as JSON through [`write()`].
//! Neither recurses, so no input can exhaust the stack while it is read or
//! written, and [`parse`] refuses values nested deeper than
//! [`MAX_DEPTH`]: a value that got in can be compared, copied and dropped
//! by code that does recurse (jq's) without risk.
//!
//! The grammar is RFC 8259 and nothing more: no comments, no `NaN` or
//! `Infinity`, no trailing commas, object keys are strings, control
//! characters in strings must be escaped. Text that is not valid UTF-8 is
//! an error unless the caller asks for [`Utf8::Lossy`], which replaces it
//! with U+FFFD. Numbers keep the text they were written with (`1.10` is
//! written back as `1.10`), as jq does.

use std::fmt;
use std::io::{self, Write};

use jaq_json::{Map, Num, Rc};

use crate::Value;

/// How deeply arrays and objects may nest in an item: 256 levels. Real
/// records rarely pass 20; a document nested thousands deep is an attack
/// or a bug, and is refused as that record's error.
pub const MAX_DEPTH: usize = 256;

/// What to do with text that is not valid UTF-8.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Utf8 {
    /// An error naming where it is (the default everywhere).
    #[default]
    Strict,
    /// Replaced with U+FFFD, the Unicode replacement character.
    Lossy,
}

/// Why a text is not one JSON value, and where: `offset` counts bytes from
/// the start of the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonError {
    /// Where the problem is, in bytes from the start of the text (0-based).
    pub offset: usize,
    /// What is wrong there.
    pub message: String,
}

impl JsonError {
    /// The line and column (from 1) of the error in `text`, the text
    /// parsed.
    pub fn line_column(&self, text: &[u8]) -> (usize, usize) {
        let before = &text[..self.offset.min(text.len())];
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let column = 1 + String::from_utf8_lossy(&before[start..]).chars().count();
        (line, column)
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.offset + 1)
    }
}

impl std::error::Error for JsonError {}

/// Parses `text` as exactly one JSON value, with whitespace around it.
pub fn parse(text: &[u8], utf8: Utf8) -> Result<Value, JsonError> {
    let mut p = Parser {
        text,
        at: 0,
        utf8,
        max_depth: MAX_DEPTH,
    };
    let value = p.value()?;
    p.skip_ws();
    if p.at < text.len() {
        return Err(p.error("trailing characters after the JSON value"));
    }
    Ok(value)
}

/// Parses the JSON value that starts `text` (after whitespace) and returns
/// it with the number of bytes it took: for a stream of values, such as
/// the elements of an array read one at a time.
pub fn parse_prefix(text: &[u8], utf8: Utf8) -> Result<(Value, usize), JsonError> {
    let mut p = Parser {
        text,
        at: 0,
        utf8,
        max_depth: MAX_DEPTH,
    };
    let value = p.value()?;
    Ok((value, p.at))
}

/// How many object keys a thread keeps (see [`KEYS`]).
const KEY_SLOTS: usize = 64;
/// The longest key kept, in bytes.
const KEY_MAX: usize = 64;

thread_local! {
    /// Object keys parsed lately on this thread, by a hash of their text.
    /// JSON lines repeat the same keys on every line: a key found here is
    /// shared (one small allocation) instead of copied and checked again.
    static KEYS: std::cell::RefCell<[Option<Value>; KEY_SLOTS]> =
        const { std::cell::RefCell::new([const { None }; KEY_SLOTS]) };
}

/// A container being filled while its contents are parsed.
enum Open {
    Arr(Vec<Value>),
    /// An object and the key whose value is being parsed.
    Obj(Map, Value),
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
    utf8: Utf8,
    max_depth: usize,
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> JsonError {
        JsonError {
            offset: self.at,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn found(&self) -> String {
        match self.peek() {
            None => "the end of the text".into(),
            Some(b) if b.is_ascii_graphic() => format!("`{}`", b as char),
            Some(b) => format!("byte 0x{b:02x}"),
        }
    }

    /// One whole value, containers filled in a loop with an explicit stack.
    fn value(&mut self) -> Result<Value, JsonError> {
        let mut stack: Vec<Open> = Vec::new();
        'value: loop {
            self.skip_ws();
            let mut done = match self.peek() {
                Some(b'[') | Some(b'{') if stack.len() >= self.max_depth => {
                    return Err(self.error(format!("nested deeper than {} levels", self.max_depth)));
                }
                Some(b'[') => {
                    self.at += 1;
                    self.skip_ws();
                    if self.peek() == Some(b']') {
                        self.at += 1;
                        Value::Arr(Rc::new(Vec::new()))
                    } else {
                        stack.push(Open::Arr(Vec::new()));
                        continue 'value;
                    }
                }
                Some(b'{') => {
                    self.at += 1;
                    self.skip_ws();
                    if self.peek() == Some(b'}') {
                        self.at += 1;
                        Value::obj(Map::default())
                    } else {
                        let key = self.key()?;
                        stack.push(Open::Obj(Map::default(), key));
                        continue 'value;
                    }
                }
                Some(b'"') => self.string()?,
                Some(b't') => self.literal(b"true", Value::Bool(true))?,
                Some(b'f') => self.literal(b"false", Value::Bool(false))?,
                Some(b'n') => self.literal(b"null", Value::Null)?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                _ => {
                    return Err(
                        self.error(format!("expected a JSON value, found {}", self.found()))
                    );
                }
            };
            // A value is complete: put it in its container, and close every
            // container that ends here.
            loop {
                match stack.last_mut() {
                    None => return Ok(done),
                    Some(Open::Arr(items)) => {
                        items.push(done);
                        self.skip_ws();
                        match self.peek() {
                            Some(b',') => {
                                self.at += 1;
                                continue 'value;
                            }
                            Some(b']') => {
                                self.at += 1;
                                let Some(Open::Arr(items)) = stack.pop() else {
                                    unreachable!("the top is this array")
                                };
                                done = Value::Arr(Rc::new(items));
                            }
                            _ => {
                                return Err(self.error(format!(
                                    "expected `,` or `]` in an array, found {}",
                                    self.found()
                                )));
                            }
                        }
                    }
                    Some(Open::Obj(map, key)) => {
                        map.insert(std::mem::take(key), done);
                        self.skip_ws();
                        match self.peek() {
                            Some(b',') => {
                                self.at += 1;
                                self.skip_ws();
                                *key = self.key()?;
                                continue 'value;
                            }
                            Some(b'}') => {
                                self.at += 1;
                                let Some(Open::Obj(map, _)) = stack.pop() else {
                                    unreachable!("the top is this object")
                                };
                                done = Value::obj(map);
                            }
                            _ => {
                                return Err(self.error(format!(
                                    "expected `,` or `}}` in an object, found {}",
                                    self.found()
                                )));
                            }
                        }
                    }
                }
            }
        }
    }

    /// An object key and its `:`.
    fn key(&mut self) -> Result<Value, JsonError> {
        if self.peek() != Some(b'"') {
            return Err(self.error(format!(
                "expected a string key in an object, found {}",
                self.found()
            )));
        }
        let key = match self.cached_key() {
            Some(key) => key,
            None => self.string()?,
        };
        self.skip_ws();
        if self.peek() != Some(b':') {
            return Err(self.error(format!(
                "expected `:` after an object key, found {}",
                self.found()
            )));
        }
        self.at += 1;
        Ok(key)
    }

    /// A short key without escapes, from the thread's cache of keys (see
    /// [`KEYS`]); `None` for any other key, which is parsed as a string.
    fn cached_key(&mut self) -> Option<Value> {
        let start = self.at + 1;
        let rest = self.text.get(start..)?;
        let len = rest
            .iter()
            .take(KEY_MAX + 1)
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if rest[len] != b'"' {
            return None;
        }
        let raw = &rest[..len];
        let slot = crate::text::fnv1a(raw) as usize % KEY_SLOTS;
        let key = KEYS.with_borrow_mut(|keys| match &keys[slot] {
            Some(key @ Value::TStr(b)) if b.as_ref() == raw => Some(key.clone()),
            _ => {
                std::str::from_utf8(raw).ok()?;
                let key = Value::utf8_str(raw.to_vec());
                keys[slot] = Some(key.clone());
                Some(key)
            }
        })?;
        self.at = start + len + 1;
        Some(key)
    }

    fn literal(&mut self, word: &[u8], value: Value) -> Result<Value, JsonError> {
        if self.text[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(self.error(format!("expected a JSON value, found {}", self.found())))
        }
    }

    fn number(&mut self) -> Result<Value, JsonError> {
        let start = self.at;
        let digits = |p: &mut Self| {
            let from = p.at;
            while let Some(b'0'..=b'9') = p.peek() {
                p.at += 1;
            }
            p.at - from
        };
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let int_start = self.at;
        match digits(self) {
            0 => return Err(self.error("expected a digit in a number")),
            n if n > 1 && self.text[int_start] == b'0' => {
                self.at = int_start;
                return Err(self.error("a number may not start with 0"));
            }
            _ => {}
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.at += 1;
            integer = false;
            if digits(self) == 0 {
                return Err(self.error("expected a digit after `.` in a number"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if digits(self) == 0 {
                return Err(self.error("expected a digit in a number's exponent"));
            }
        }
        let text = std::str::from_utf8(&self.text[start..self.at]).expect("ASCII digits");
        let num = if integer {
            Num::from_str_radix(text, 10).unwrap_or_else(|| Num::Dec(Rc::new(text.to_string())))
        } else {
            Num::Dec(Rc::new(text.to_string()))
        };
        Ok(Value::Num(num))
    }

    /// A string, the opening quote at `at`.
    fn string(&mut self) -> Result<Value, JsonError> {
        self.at += 1;
        let start = self.at;
        // The common case: no escapes, valid UTF-8, taken in one slice.
        while let Some(&b) = self.text.get(self.at) {
            match b {
                b'"' => {
                    let raw = &self.text[start..self.at];
                    self.at += 1;
                    return self.text_value(raw.to_vec(), start);
                }
                b'\\' => break,
                0..=0x1f => return Err(self.control_error(b)),
                _ => self.at += 1,
            }
        }
        let mut out = self.text[start..self.at].to_vec();
        loop {
            let Some(&b) = self.text.get(self.at) else {
                return Err(self.error("unterminated string"));
            };
            self.at += 1;
            match b {
                b'"' => return self.text_value(out, start),
                b'\\' => self.escape(&mut out)?,
                0..=0x1f => {
                    self.at -= 1;
                    return Err(self.control_error(b));
                }
                _ => out.push(b),
            }
        }
    }

    fn control_error(&self, b: u8) -> JsonError {
        if self.at >= self.text.len() {
            return self.error("unterminated string");
        }
        self.error(format!(
            "control character 0x{b:02x} in a string must be escaped"
        ))
    }

    /// The escape after a `\`, appended to `out` as UTF-8.
    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), JsonError> {
        let Some(&b) = self.text.get(self.at) else {
            return Err(self.error("unterminated string"));
        };
        self.at += 1;
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                let code = if (0xd800..0xdc00).contains(&first) {
                    if !self.text[self.at..].starts_with(b"\\u") {
                        return self.lone_surrogate(out);
                    }
                    self.at += 2;
                    let second = self.hex4()?;
                    if !(0xdc00..0xe000).contains(&second) {
                        return self.lone_surrogate(out);
                    }
                    0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00)
                } else if (0xdc00..0xe000).contains(&first) {
                    return self.lone_surrogate(out);
                } else {
                    first
                };
                char::from_u32(code).expect("a valid scalar value")
            }
            _ => {
                self.at -= 1;
                return Err(self.error(format!("invalid escape `\\{}` in a string", b as char)));
            }
        };
        let mut buf = [0; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        Ok(())
    }

    /// A `\u` escape of half a surrogate pair: not a character.
    fn lone_surrogate(&mut self, out: &mut Vec<u8>) -> Result<(), JsonError> {
        match self.utf8 {
            Utf8::Strict => Err(self.error("a `\\u` escape names half a surrogate pair")),
            Utf8::Lossy => {
                out.extend_from_slice("\u{fffd}".as_bytes());
                Ok(())
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self
            .text
            .get(self.at..self.at + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| {
                u32::from_str_radix(h, 16)
                    .ok()
                    .filter(|_| h.bytes().all(|b| b.is_ascii_hexdigit()))
            });
        match digits {
            Some(code) => {
                self.at += 4;
                Ok(code)
            }
            None => Err(self.error("expected 4 hex digits after `\\u`")),
        }
    }

    /// A string's bytes as a text value, checked for UTF-8 as asked.
    fn text_value(&self, bytes: Vec<u8>, start: usize) -> Result<Value, JsonError> {
        match std::str::from_utf8(&bytes) {
            Ok(_) => Ok(Value::utf8_str(bytes)),
            Err(e) => match self.utf8 {
                Utf8::Strict => Err(JsonError {
                    offset: start + e.valid_up_to(),
                    message: "invalid UTF-8 in a string".into(),
                }),
                Utf8::Lossy => Ok(Value::utf8_str(
                    String::from_utf8_lossy(&bytes).into_owned().into_bytes(),
                )),
            },
        }
    }
}

/// Writes `value` as compact JSON (no newline), without recursion.
///
/// Binary strings are written as text (invalid UTF-8 replaced), numbers
/// that JSON cannot hold (NaN, infinities) as `null`, non-string object keys
/// as their JSON text, so the output is always valid JSON.
pub fn write(w: &mut impl Write, value: &Value) -> io::Result<()> {
    /// A container being written, and the index of its next element.
    enum Open<'a> {
        Arr(&'a [Value], usize),
        Obj(&'a Map, usize),
    }
    let mut stack: Vec<Open> = Vec::new();
    let mut next = Some(value);
    loop {
        if let Some(v) = next.take() {
            match v {
                Value::Null => w.write_all(b"null")?,
                Value::Bool(b) => w.write_all(if *b { b"true" } else { b"false" })?,
                Value::Num(n) => write_num(w, n)?,
                Value::TStr(b) | Value::BStr(b) => write_str(w, b)?,
                Value::Arr(a) => {
                    w.write_all(b"[")?;
                    stack.push(Open::Arr(a, 0));
                }
                Value::Obj(o) => {
                    w.write_all(b"{")?;
                    stack.push(Open::Obj(o, 0));
                }
            }
        }
        match stack.last_mut() {
            None => return Ok(()),
            Some(Open::Arr(items, i)) => match items.get(*i) {
                Some(item) => {
                    if *i > 0 {
                        w.write_all(b",")?;
                    }
                    *i += 1;
                    next = Some(item);
                }
                None => {
                    w.write_all(b"]")?;
                    stack.pop();
                }
            },
            Some(Open::Obj(map, i)) => match map.get_index(*i) {
                Some((k, v)) => {
                    if *i > 0 {
                        w.write_all(b",")?;
                    }
                    *i += 1;
                    match k {
                        Value::TStr(b) | Value::BStr(b) => write_str(w, b)?,
                        other => write_str(w, to_string(other).as_bytes())?,
                    }
                    w.write_all(b":")?;
                    next = Some(v);
                }
                None => {
                    w.write_all(b"}")?;
                    stack.pop();
                }
            },
        }
    }
}

/// `value` as compact JSON text.
pub fn to_string(value: &Value) -> String {
    let mut buf = Vec::new();
    write(&mut buf, value).expect("writing to a Vec cannot fail");
    String::from_utf8(buf).expect("JSON is written as UTF-8")
}

fn write_num(w: &mut impl Write, n: &Num) -> io::Result<()> {
    match n {
        Num::Float(f) if !f.is_finite() => w.write_all(b"null"),
        other => write!(w, "{other}"),
    }
}

/// A JSON string: quotes, escapes for `"`, `\` and control characters,
/// invalid UTF-8 replaced.
fn write_str(w: &mut impl Write, b: &[u8]) -> io::Result<()> {
    // Valid UTF-8 (the common case) is checked by the faster validator.
    let text = match std::str::from_utf8(b) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(b),
    };
    let bytes = text.as_bytes();
    w.write_all(b"\"")?;
    let mut from = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let escaped: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            // U+0080..U+009F (C1 controls, which some terminals obey) are
            // 0xc2 0x80..0x9f in UTF-8.
            0xc2 if matches!(bytes.get(i + 1), Some(0x80..=0x9f)) => b"",
            _ => continue,
        };
        if i < from {
            continue;
        }
        w.write_all(&bytes[from..i])?;
        if escaped.is_empty() && c == 0xc2 {
            write!(w, "\\u{:04x}", bytes[i + 1])?;
            from = i + 2;
            continue;
        } else if escaped.is_empty() {
            write!(w, "\\u{c:04x}")?;
        } else {
            w.write_all(escaped)?;
        }
        from = i + 1;
    }
    w.write_all(&bytes[from..])?;
    w.write_all(b"\"")
}

/// Whether `value` nests arrays and objects more than `limit` levels deep
/// (a scalar is depth 0, `[1]` depth 1). Walks without recursion and stops
/// at the first path past the limit.
pub fn deeper_than(value: &Value, limit: usize) -> bool {
    fn nested(c: &&Value) -> bool {
        matches!(c, Value::Arr(_) | Value::Obj(_))
    }
    if !nested(&value) {
        // A scalar: the common output, checked at no cost.
        return false;
    }
    // Only nested containers are stacked: a flat record allocates nothing.
    let mut stack: Vec<(&Value, usize)> = Vec::new();
    let (mut v, mut depth) = (value, 0);
    loop {
        match v {
            Value::Arr(_) | Value::Obj(_) if depth >= limit => return true,
            Value::Arr(a) => stack.extend(a.iter().filter(nested).map(|c| (c, depth + 1))),
            Value::Obj(o) => stack.extend(o.values().filter(nested).map(|c| (c, depth + 1))),
            _ => {}
        }
        match stack.pop() {
            Some((c, d)) => (v, depth) = (c, d),
            None => return false,
        }
    }
}

/// Drops a value of any depth without recursion: containers this is the
/// last owner of are taken apart on a heap stack instead of the call stack.
pub fn drop_value(value: Value) {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Arr(a) => {
                if let Ok(items) = Rc::try_unwrap(a) {
                    stack.extend(items);
                }
            }
            Value::Obj(o) => {
                if let Ok(map) = Rc::try_unwrap(o) {
                    stack.extend(map.into_values());
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> String {
        to_string(&parse(text.as_bytes(), Utf8::Strict).unwrap())
    }

    fn err(text: &[u8]) -> String {
        parse(text, Utf8::Strict).unwrap_err().message
    }

    #[test]
    fn parses_and_writes_back_every_kind_of_value() {
        let text = r#"{"a":[1,-2.5,1e3,"x\"y\\",null,true,false],"b":{"c":{}},"d":[]}"#;
        assert_eq!(ok(text), text);
        assert_eq!(ok(" \t\r\n[ 1 , 2 ]\n"), "[1,2]");
    }

    #[test]
    fn numbers_keep_the_text_they_were_written_with() {
        assert_eq!(
            ok("[1.10, 100000000000000000000000, -0, 2E-3]"),
            "[1.10,100000000000000000000000,0,2E-3]"
        );
    }

    #[test]
    fn escapes_decode_to_utf8_including_surrogate_pairs() {
        let v = parse(br#""\u00e9\ud83d\ude00\n\/""#, Utf8::Strict).unwrap();
        assert_eq!(crate::value::as_str(&v), Some("é😀\n/"));
    }

    #[test]
    fn what_jq_accepts_but_json_does_not_is_refused() {
        assert!(err(b"NaN").starts_with("expected a JSON value"));
        assert!(err(b"[1, Infinity]").starts_with("expected a JSON value"));
        assert!(err(b"{1: 2}").starts_with("expected a string key"));
        assert!(err(b"[1] // comment").starts_with("trailing characters"));
        assert!(err(b"/* c */ 1").starts_with("expected a JSON value"));
        assert!(err(b"[1,]").starts_with("expected a JSON value"));
        assert!(err(b"01").starts_with("a number may not start with 0"));
        assert!(err(b"\"a\tb\"").starts_with("control character 0x09"));
        assert!(err(b"\"\\ud800\"").contains("surrogate"));
        assert!(err(b"'x'").starts_with("expected a JSON value"));
        assert_eq!(err(b""), "expected a JSON value, found the end of the text");
        assert_eq!(err(b"\"abc"), "unterminated string");
    }

    #[test]
    fn invalid_utf8_is_an_error_or_replaced_as_asked() {
        let text = b"[\"a\xffb\"]";
        let e = parse(text, Utf8::Strict).unwrap_err();
        assert_eq!(e.message, "invalid UTF-8 in a string");
        assert_eq!(e.offset, 3);
        let v = parse(text, Utf8::Lossy).unwrap();
        assert_eq!(to_string(&v), "[\"a\u{fffd}b\"]");
    }

    #[test]
    fn nesting_is_bounded_and_a_deep_document_is_an_error_not_a_crash() {
        let ok_depth = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(ok_depth.as_bytes(), Utf8::Strict).is_ok());
        for deep in [MAX_DEPTH + 1, 10_000, 1_000_000] {
            let text = format!("{}{}", "[".repeat(deep), "]".repeat(deep));
            let e = parse(text.as_bytes(), Utf8::Strict).unwrap_err();
            assert_eq!(e.message, format!("nested deeper than {MAX_DEPTH} levels"));
            assert_eq!(e.offset, MAX_DEPTH);
        }
        let objects = "{\"a\":".repeat(100_000);
        assert!(parse(objects.as_bytes(), Utf8::Strict).is_err());
    }

    #[test]
    fn deep_values_are_measured_written_and_dropped_without_recursion() {
        let mut v = Value::Null;
        for _ in 0..1_000_000 {
            v = Value::Arr(Rc::new(vec![v]));
        }
        assert!(deeper_than(&v, MAX_DEPTH));
        let mut out = Vec::new();
        write(&mut out, &v).unwrap();
        assert_eq!(out.len(), 2_000_004);
        drop_value(v);
        let flat = parse(br#"{"a":[1,{"b":[2]}]}"#, Utf8::Strict).unwrap();
        assert!(!deeper_than(&flat, 4));
        assert!(deeper_than(&flat, 3));
        assert!(!deeper_than(&Value::Null, 0));
    }

    #[test]
    fn errors_know_their_line_and_column() {
        let text = b"[1,\n 2,\n }";
        let e = parse(text, Utf8::Strict).unwrap_err();
        assert_eq!(e.line_column(text), (3, 2));
    }

    #[test]
    fn strings_escape_control_characters_when_written() {
        let v = Value::utf8_str("a\x1b[2Jb\x07\"\u{9b}c\u{a0}".as_bytes().to_vec());
        assert_eq!(to_string(&v), "\"a\\u001b[2Jb\\u0007\\\"\\u009bc\u{a0}\"");
    }
}
