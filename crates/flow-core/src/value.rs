//! The value an item carries: JSON plus binary strings.
//!
//! [`Value`] is jaq's value type, so jq expressions run on items without a
//! conversion. Cloning one is cheap: strings share their bytes, arrays and
//! objects are reference counted and copied only when changed.

use std::io::{self, Write};

pub use jaq_json::{Map, Num, Val as Value};

/// Builds a text string value.
pub fn string(s: impl Into<String>) -> Value {
    Value::from(s.into())
}

/// Builds a binary value (a downloaded image, a file's bytes).
pub fn bytes(b: impl Into<Vec<u8>>) -> Value {
    Value::byte_str(b.into())
}

/// Builds an integer value.
pub fn int(i: i64) -> Value {
    Value::Num(Num::from_integral(i))
}

/// Builds an object from `(key, value)` pairs, keeping their order.
pub fn object<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Value {
    Value::obj(pairs.into_iter().map(|(k, v)| (string(k), v)).collect())
}

/// Looks up `key` in an object; `None` for a missing key or a non-object.
pub fn get<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    match value {
        Value::Obj(o) => o.get(&Value::utf8_str(key.as_bytes().to_vec())),
        _ => None,
    }
}

/// The text of a string value (`None` for other values or invalid UTF-8).
pub fn as_str(value: &Value) -> Option<&str> {
    match value {
        Value::TStr(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

/// The number of a numeric value as `f64`.
pub fn as_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Num(n) => match n {
            Num::Int(i) => Some(*i as f64),
            Num::Float(f) => Some(*f),
            other => other.to_string().parse().ok(),
        },
        _ => None,
    }
}

/// Roughly how many bytes of memory a value's contents take: the length of
/// its strings and binary data plus a few bytes per scalar and container.
/// Bounds queues by size (`queue_bytes`), where binary items dominate.
pub fn payload_size(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) => 1,
        Value::Num(_) => 8,
        Value::TStr(b) | Value::BStr(b) => b.len(),
        Value::Arr(a) => 8 + a.iter().map(payload_size).sum::<usize>(),
        Value::Obj(o) => {
            8 + o
                .iter()
                .map(|(k, v)| payload_size(k) + payload_size(v))
                .sum::<usize>()
        }
    }
}

/// Converts any serde value (an option from the pipeline file, a parsed
/// record) into a [`Value`].
pub fn from_serde<T: serde::Serialize>(x: &T) -> Result<Value, serde_json::Error> {
    use serde::Deserialize;
    Value::deserialize(serde_json::to_value(x)?)
}

/// Parses one JSON text.
pub fn parse_json(text: &[u8]) -> Result<Value, String> {
    jaq_json::read::parse_single(text).map_err(|e| e.to_string())
}

/// Writes `value` as one line of compact JSON (no newline).
///
/// Binary strings are written as text (invalid UTF-8 replaced), numbers
/// that JSON cannot hold (NaN, infinities) as `null`, non-string object keys
/// as their JSON text, so the output is always valid JSON.
pub fn write_json(w: &mut impl Write, value: &Value) -> io::Result<()> {
    match value {
        Value::Null => w.write_all(b"null"),
        Value::Bool(b) => w.write_all(if *b { b"true" } else { b"false" }),
        Value::Num(n) => write_num(w, n),
        Value::TStr(b) | Value::BStr(b) => write_str(w, b),
        Value::Arr(a) => {
            w.write_all(b"[")?;
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    w.write_all(b",")?;
                }
                write_json(w, x)?;
            }
            w.write_all(b"]")
        }
        Value::Obj(o) => {
            w.write_all(b"{")?;
            for (i, (k, v)) in o.iter().enumerate() {
                if i > 0 {
                    w.write_all(b",")?;
                }
                match k {
                    Value::TStr(b) | Value::BStr(b) => write_str(w, b)?,
                    other => write_str(w, to_json(other).as_bytes())?,
                }
                w.write_all(b":")?;
                write_json(w, v)?;
            }
            w.write_all(b"}")
        }
    }
}

/// `value` as compact JSON text.
pub fn to_json(value: &Value) -> String {
    let mut buf = Vec::new();
    write_json(&mut buf, value).expect("writing to a Vec cannot fail");
    String::from_utf8(buf).expect("write_json writes UTF-8")
}

/// `value` as a line of text: strings without quotes, anything else as JSON.
pub fn to_text(value: &Value) -> String {
    match value {
        Value::TStr(b) | Value::BStr(b) => String::from_utf8_lossy(b).into_owned(),
        other => to_json(other),
    }
}

fn write_num(w: &mut impl Write, n: &Num) -> io::Result<()> {
    match n {
        Num::Float(f) if !f.is_finite() => w.write_all(b"null"),
        other => write!(w, "{other}"),
    }
}

fn write_str(w: &mut impl Write, b: &[u8]) -> io::Result<()> {
    let text = String::from_utf8_lossy(b);
    serde_json::to_writer(w, text.as_ref()).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_write_and_parse() {
        let text = r#"{"a":[1,2.5,"x\"y",null,true],"b":{"c":-3}}"#;
        let v = parse_json(text.as_bytes()).unwrap();
        assert_eq!(to_json(&v), text);
    }

    #[test]
    fn binary_and_nan_still_give_valid_json() {
        let v = object([
            ("img", bytes(vec![b'h', b'i'])),
            ("x", Value::from(f64::NAN)),
        ]);
        assert_eq!(to_json(&v), r#"{"img":"hi","x":null}"#);
    }

    #[test]
    fn text_of_a_string_has_no_quotes() {
        assert_eq!(to_text(&string("a b")), "a b");
        assert_eq!(to_text(&int(7)), "7");
    }

    #[test]
    fn payload_size_counts_bytes_of_strings_and_binary() {
        assert_eq!(payload_size(&bytes(vec![0; 1000])), 1000);
        let v = object([("k", string("abc"))]);
        assert_eq!(payload_size(&v), 8 + 1 + 3);
    }

    #[test]
    fn get_finds_object_fields() {
        let v = object([("k", int(1))]);
        assert_eq!(as_f64(get(&v, "k").unwrap()), Some(1.0));
        assert!(get(&v, "z").is_none());
        assert!(get(&int(1), "k").is_none());
    }
}
