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
/// Walks without recursion, so any depth is safe.
pub fn payload_size(value: &Value) -> usize {
    let mut size = 0;
    let mut stack: Vec<&Value> = Vec::new();
    let mut next = Some(value);
    while let Some(v) = next.take().or_else(|| stack.pop()) {
        size += match v {
            Value::Null | Value::Bool(_) => 1,
            Value::Num(_) => 8,
            Value::TStr(b) | Value::BStr(b) => b.len(),
            Value::Arr(a) => {
                stack.extend(a.iter());
                8
            }
            Value::Obj(o) => {
                for (k, v) in o.iter() {
                    stack.push(k);
                    stack.push(v);
                }
                8
            }
        };
    }
    size
}

/// Converts any serde value (an option from the pipeline file, a parsed
/// record) into a [`Value`].
pub fn from_serde<T: serde::Serialize>(x: &T) -> Result<Value, serde_json::Error> {
    use serde::Deserialize;
    Value::deserialize(serde_json::to_value(x)?)
}

/// Parses one JSON text, strictly (see [`crate::json`]): the error says
/// what is wrong and at which byte.
pub fn parse_json(text: &[u8]) -> Result<Value, String> {
    crate::json::parse(text, crate::json::Utf8::Strict).map_err(|e| e.to_string())
}

/// Writes `value` as one line of compact JSON (no newline); see
/// [`crate::json::write`].
pub fn write_json(w: &mut impl Write, value: &Value) -> io::Result<()> {
    crate::json::write(w, value)
}

/// `value` as compact JSON text.
pub fn to_json(value: &Value) -> String {
    crate::json::to_string(value)
}

/// `value` as a line of text: strings without quotes, anything else as JSON.
pub fn to_text(value: &Value) -> String {
    match value {
        Value::TStr(b) | Value::BStr(b) => String::from_utf8_lossy(b).into_owned(),
        other => to_json(other),
    }
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
