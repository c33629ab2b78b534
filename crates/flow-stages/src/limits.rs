//! What `read`, `exec` and `files` share about limits: sizes written in
//! options (`16MiB`), the invalid UTF-8 policy, and how much of a bad record
//! an error keeps.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A size in bytes, written `4096`, `64KiB`, `16MiB`, `1.5GB` (units `B`,
/// `KB`, `MB`, `GB`, `TB` of 1000 and `KiB`, `MiB`, `GiB`, `TiB` of 1024; a
/// space before the unit is allowed; case does not matter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    pub const fn kib(n: u64) -> Self {
        Size(n << 10)
    }

    pub const fn mib(n: u64) -> Self {
        Size(n << 20)
    }

    pub const fn gib(n: u64) -> Self {
        Size(n << 30)
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    /// The size as a `usize`, for a buffer (capped on 32-bit targets).
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    /// Parses a size option (see [`flow_core::parse_size`]).
    pub fn parse(text: &str) -> Result<Size, String> {
        flow_core::parse_size(text).map(Size)
    }
}

/// Shown the way people write sizes: `16 MiB`, `1 GB`, `1000 bytes`.
impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, scale) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if n >= scale && n.is_multiple_of(scale) {
                return write!(f, "{} {unit}", n / scale);
            }
        }
        for (unit, scale) in [
            ("TB", 1_000_000_000_000u64),
            ("GB", 1_000_000_000),
            ("MB", 1_000_000),
            ("KB", 1_000),
        ] {
            if n >= scale && n.is_multiple_of(scale) {
                return write!(f, "{} {unit}", n / scale);
            }
        }
        match n {
            1 => f.write_str("1 byte"),
            n => write!(f, "{n} bytes"),
        }
    }
}

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string().replace(' ', ""))
    }
}

impl<'de> Deserialize<'de> for Size {
    /// A string with a unit, or a plain number of bytes.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Size;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 16MiB, or a number of bytes")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Size, E> {
                Size::parse(v).map_err(E::custom)
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Size, E> {
                match v {
                    0 => Err(E::custom("invalid size 0: must be at least one byte")),
                    n => Ok(Size(n)),
                }
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Size, E> {
                match u64::try_from(v) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!("invalid size {v}: must be positive"))),
                }
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Size, E> {
                Size::parse(&v.to_string()).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// What to do with text that is not valid UTF-8.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InvalidUtf8 {
    /// A per-record error naming where it is (the default).
    #[default]
    Error,
    /// Each invalid sequence becomes U+FFFD, the replacement character.
    Replace,
}

impl InvalidUtf8 {
    pub fn json(self) -> flow_core::json::Utf8 {
        match self {
            InvalidUtf8::Error => flow_core::json::Utf8::Strict,
            InvalidUtf8::Replace => flow_core::json::Utf8::Lossy,
        }
    }

    /// `bytes` as text under this policy; `Err(at)` gives the offset of
    /// the first invalid byte.
    pub fn decode(self, bytes: &[u8]) -> Result<std::borrow::Cow<'_, str>, usize> {
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(std::borrow::Cow::Borrowed(s)),
            Err(e) => match self {
                InvalidUtf8::Error => Err(e.valid_up_to()),
                InvalidUtf8::Replace => Ok(String::from_utf8_lossy(bytes)),
            },
        }
    }
}

/// How much of a failed record is kept as the value a dead letter carries:
/// its first 4 KiB.
pub const RECORD_QUOTE: usize = 4096;

/// The start of a record that could not be read, lossily decoded: at most
/// [`RECORD_QUOTE`] bytes, cut on a character boundary and ending in `…`
/// when cut.
pub fn quote_record(raw: &[u8]) -> String {
    if raw.len() <= RECORD_QUOTE {
        return String::from_utf8_lossy(raw).into_owned();
    }
    let mut cut = RECORD_QUOTE;
    // Back up over continuation bytes, to the start of a character.
    while cut > RECORD_QUOTE - 4 && raw[cut] & 0xc0 == 0x80 {
        cut -= 1;
    }
    let mut text = String::from_utf8_lossy(&raw[..cut]).into_owned();
    text.push('…');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_and_without_units() {
        let ok = [
            ("4096", 4096),
            ("64KiB", 64 << 10),
            ("16MiB", 16 << 20),
            ("16 mib", 16 << 20),
            ("1GiB", 1 << 30),
            ("1.5KiB", 1536),
            ("2MB", 2_000_000),
            ("10b", 10),
        ];
        for (text, want) in ok {
            assert_eq!(Size::parse(text), Ok(Size(want)), "{text}");
        }
        for bad in [
            "",
            "MiB",
            "0",
            "0.1",
            "12 parsecs",
            "-1",
            "1e3",
            "99999999999999999999TiB",
        ] {
            assert!(Size::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_show_in_the_largest_exact_unit() {
        assert_eq!(Size::mib(16).to_string(), "16 MiB");
        assert_eq!(Size::gib(1).to_string(), "1 GiB");
        assert_eq!(Size(1536).to_string(), "1536 bytes");
        assert_eq!(Size(1_000_000).to_string(), "1 MB");
        assert_eq!(Size(1).to_string(), "1 byte");
        assert_eq!(Size(1000 + 1).to_string(), "1001 bytes");
    }

    #[test]
    fn sizes_deserialise_from_strings_and_numbers() {
        let s: Size = serde_json::from_value(serde_json::json!("1MiB")).unwrap();
        assert_eq!(s, Size::mib(1));
        let s: Size = serde_json::from_value(serde_json::json!(1024)).unwrap();
        assert_eq!(s, Size::kib(1));
        assert!(serde_json::from_value::<Size>(serde_json::json!(0)).is_err());
        assert!(serde_json::from_value::<Size>(serde_json::json!(-5)).is_err());
        assert_eq!(serde_json::to_value(Size::mib(16)).unwrap(), "16MiB");
    }

    #[test]
    fn records_are_quoted_whole_or_cut_on_a_character() {
        assert_eq!(quote_record(b"short \xff"), "short \u{fffd}");
        let long = "é".repeat(3000);
        let q = quote_record(long.as_bytes());
        assert!(q.ends_with('…'));
        assert!(!q.contains('\u{fffd}'), "cut inside a character");
        assert!(q.len() <= RECORD_QUOTE + '…'.len_utf8());
    }
}
