//! Text that came from items, made safe to show: for a terminal (no
//! control characters or escape sequences) and for reports and logs (no
//! credentials).
//!
//! Item data reaches an operator's terminal and logs through error
//! messages (which quote items), error samples, log lines and stage
//! output. A record may carry anything: an escape sequence that retitles
//! the terminal, clears the screen or paints a fake `ok`, a carriage
//! return that overwrites a log line, a URL with a password in it.
//!
//! * [`sanitize`] makes text inert for a terminal: every control character
//!   is written as a visible escape (`\x1b`, `\r`, `\u{9b}`).
//! * [`redact`] removes credentials: the user and password of a URL
//!   (`https://***@host/`), `Authorization` values and bearer tokens, and
//!   the values of query parameters named like secrets (`?token=***`).
//! * [`for_display`] does both: for anything derived from items on its way
//!   to a terminal, a text log or a report.
//!
//! Data sinks (`stdout`, `write` to `-`) are data, not diagnostics: they
//! stay raw.

use std::borrow::Cow;
use std::fmt::Write as _;

/// What replaces a credential.
pub const REDACTED: &str = "***";

/// `text` with every character a terminal would act on written as a
/// visible escape: C0 controls (`\n`, `\r`, `\t`, and `\x1b` for ESC and
/// the others), DEL (`\x7f`), the C1 controls U+0080 to U+009F (`\u{9b}`,
/// which some terminals take as CSI) and the Unicode bidirectional
/// overrides and isolates (`\u{202e}`), which reorder what is shown.
/// Everything else, backslashes included, is left as it is. Borrows when
/// there is nothing to escape.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    let Some(first) = text.char_indices().find(|&(_, c)| needs_escape(c)) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 8);
    out.push_str(&text[..first.0]);
    for c in text[first.0..].chars() {
        if !needs_escape(c) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0'..='\u{1f}' | '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            _ => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

/// JSON text with the characters a terminal acts on but JSON leaves raw
/// (DEL, the C1 controls, the bidirectional overrides) written as `\uXXXX`
/// escapes: the same JSON value, safe to print. JSON escapes the C0
/// controls itself; a raw one (a line's final newline) is left alone.
pub fn escape_json_controls(json: &str) -> Cow<'_, str> {
    let raw = |c: char| needs_escape(c) && c > '\u{1f}';
    let Some(first) = json.find(raw) else {
        return Cow::Borrowed(json);
    };
    let mut out = String::with_capacity(json.len() + 8);
    out.push_str(&json[..first]);
    for c in json[first..].chars() {
        if raw(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Whether [`sanitize`] escapes `c`.
fn needs_escape(c: char) -> bool {
    matches!(
        c,
        '\0'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{061c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

/// `text` with credentials replaced by `***`:
///
/// * the user information of URLs, any scheme
///   (`https://user:pass@host/` becomes `https://***@host/`,
///   `postgres://u:p@db/x` becomes `postgres://***@db/x`);
/// * the value after `Authorization:` or `authorization=` (a scheme word
///   such as `Bearer` or `Basic` is kept: `Authorization: Bearer ***`),
///   and the token after `Bearer` anywhere;
/// * the values of URL query parameters whose name says secret (`token`,
///   `access_token`, `api_key`, `apikey`, `key`, `secret`, `password`,
///   `signature`, `sig`, `auth`, … : `?api_key=***&page=2`).
///
/// Borrows when there is nothing to redact. Text that only looks like a
/// credential is redacted too: a report loses a little detail rather than
/// leak a secret.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut spans = Vec::new();
    userinfo_spans(text, &mut spans);
    if text.len() >= 6 {
        let lower = text.to_ascii_lowercase();
        authorization_spans(&lower, &mut spans);
        bearer_spans(&lower, &mut spans);
        query_spans(&lower, &mut spans);
    }
    replace_spans(text, spans)
}

/// `text` with only the user information of URLs replaced
/// (`https://***@host/`): for a URL that is data (an item's `url`), whose
/// query must stay as it is.
pub fn redact_userinfo(text: &str) -> Cow<'_, str> {
    let mut spans = Vec::new();
    userinfo_spans(text, &mut spans);
    replace_spans(text, spans)
}

/// [`redact`], then [`sanitize`]: text derived from items, ready for a
/// terminal, a text log or a report.
pub fn for_display(text: &str) -> Cow<'_, str> {
    match redact(text) {
        Cow::Borrowed(text) => sanitize(text),
        Cow::Owned(text) => Cow::Owned(sanitize(&text).into_owned()),
    }
}

/// Replaces the byte ranges `spans` (at character boundaries, possibly
/// overlapping) of `text` with [`REDACTED`].
fn replace_spans(text: &str, mut spans: Vec<(usize, usize)>) -> Cow<'_, str> {
    spans.retain(|&(start, end)| start < end && &text[start..end] != REDACTED);
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in spans {
        if end <= at {
            continue;
        }
        if start >= at {
            out.push_str(&text[at..start]);
            out.push_str(REDACTED);
        }
        at = end;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

/// Where an authority, a token or a parameter value stops.
fn ends_value(b: u8) -> bool {
    b.is_ascii_whitespace()
        || b.is_ascii_control()
        || matches!(
            b,
            b'"' | b'\'' | b'<' | b'>' | b'`' | b'\\' | b'{' | b'}' | b'|' | b'^' | b'(' | b')'
        )
}

/// The user information of every `scheme://userinfo@host`.
fn userinfo_spans(text: &str, spans: &mut Vec<(usize, usize)>) {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let colon = from + found;
        let start = colon + 3;
        from = start;
        // A scheme before: letters, digits, `+`, `-` or `.`, ending in a
        // letter or digit.
        let schemed = colon > 0
            && bytes[colon - 1].is_ascii_alphanumeric()
            && bytes[..colon]
                .iter()
                .rev()
                .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
                .any(u8::is_ascii_alphabetic);
        if !schemed {
            continue;
        }
        let end = bytes[start..]
            .iter()
            .position(|&b| ends_value(b) || matches!(b, b'/' | b'?' | b'#'))
            .map_or(bytes.len(), |i| start + i);
        if let Some(at) = bytes[start..end].iter().rposition(|&b| b == b'@') {
            spans.push((start, start + at));
        }
    }
}

/// A token: base64, base64url and the usual token characters.
fn token_end(lower: &[u8], start: usize) -> usize {
    lower[start..]
        .iter()
        .position(|&b| {
            !(b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'='))
        })
        .map_or(lower.len(), |i| start + i)
}

/// The value after each `authorization` followed by `:` or `=`.
fn authorization_spans(lower: &str, spans: &mut Vec<(usize, usize)>) {
    let bytes = lower.as_bytes();
    let mut from = 0;
    while let Some(found) = lower[from..].find("authorization") {
        let mut i = from + found + "authorization".len();
        from = i;
        // `authorization: x`, `"authorization":"x"`, `authorization=x`.
        while i < bytes.len() && matches!(bytes[i], b'"' | b'\'') {
            i += 1;
        }
        if i >= bytes.len() || !matches!(bytes[i], b':' | b'=') {
            continue;
        }
        i += 1;
        while i < bytes.len() && (bytes[i] == b' ' || matches!(bytes[i], b'"' | b'\'')) {
            i += 1;
        }
        // A scheme word (`Bearer`, `Basic`, `Token`) stays.
        let word = bytes[i..]
            .iter()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        if word > 0 && bytes.get(i + word) == Some(&b' ') {
            i += word;
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
        }
        let end = bytes[i..]
            .iter()
            .position(|&b| ends_value(b) || matches!(b, b',' | b';' | b'&'))
            .map_or(bytes.len(), |n| i + n);
        spans.push((i, end));
    }
}

/// The token after each `bearer `.
fn bearer_spans(lower: &str, spans: &mut Vec<(usize, usize)>) {
    let bytes = lower.as_bytes();
    let mut from = 0;
    while let Some(found) = lower[from..].find("bearer") {
        let word_start = from + found;
        let mut i = word_start + "bearer".len();
        from = i;
        if word_start > 0 && bytes[word_start - 1].is_ascii_alphanumeric() {
            continue;
        }
        let spaces = bytes[i..].iter().take_while(|&&b| b == b' ').count();
        if spaces == 0 {
            continue;
        }
        i += spaces;
        let end = token_end(bytes, i);
        spans.push((i, end));
    }
}

/// Query parameter names whose values are secrets.
fn secret_name(name: &str) -> bool {
    const CONTAINS: [&str; 10] = [
        "token",
        "secret",
        "password",
        "passwd",
        "apikey",
        "api_key",
        "api-key",
        "signature",
        "credential",
        "session",
    ];
    const EXACT: [&str; 6] = ["key", "sig", "auth", "pwd", "pass", "access_key"];
    CONTAINS.iter().any(|c| name.contains(c)) || EXACT.contains(&name)
}

/// The value of each `?name=value` or `&name=value` whose name says secret.
fn query_spans(lower: &str, spans: &mut Vec<(usize, usize)>) {
    let bytes = lower.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'?' && b != b'&' {
            continue;
        }
        let name_start = i + 1;
        let Some(eq) = bytes[name_start..]
            .iter()
            .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')))
            .map(|n| name_start + n)
        else {
            continue;
        };
        if eq == name_start || bytes[eq] != b'=' || !secret_name(&lower[name_start..eq]) {
            continue;
        }
        let start = eq + 1;
        // A value ends the URL at whitespace, or at the `: ` of a message
        // that goes on after the URL.
        let end = (start..bytes.len())
            .find(|&n| {
                let b = bytes[n];
                ends_value(b)
                    || matches!(b, b'&' | b'#')
                    || (b == b':' && bytes.get(n + 1).is_none_or(u8::is_ascii_whitespace))
            })
            .unwrap_or(bytes.len());
        spans.push((start, end));
    }
}

/// The 64-bit FNV-1a hash of `bytes`: stable across builds and platforms,
/// for identities written to disk (a checkpoint's pipeline and files).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_escapes_every_control_character_visibly() {
        assert_eq!(sanitize("plain text: ok ✓"), "plain text: ok ✓");
        assert!(matches!(sanitize("plain"), Cow::Borrowed(_)));
        assert_eq!(sanitize("\x1b]0;pwned\x07"), "\\x1b]0;pwned\\x07");
        assert_eq!(sanitize("\x1b[2J\x1b[H"), "\\x1b[2J\\x1b[H");
        assert_eq!(sanitize("done\rok"), "done\\rok");
        assert_eq!(sanitize("a\nb\tc"), "a\\nb\\tc");
        assert_eq!(sanitize("\0\x7f"), "\\x00\\x7f");
        // C1: an 8-bit CSI, and the others of U+0080..U+009F.
        assert_eq!(sanitize("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(sanitize("\u{80}\u{9f}"), "\\u{80}\\u{9f}");
        // U+00A0 and beyond are text.
        assert_eq!(sanitize("\u{a0}é"), "\u{a0}é");
        // Bidirectional overrides would reorder what is shown.
        assert_eq!(sanitize("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(sanitize("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
        // Backslashes stay as they are.
        assert_eq!(sanitize(r"C:\dir\x1b"), r"C:\dir\x1b");
    }

    #[test]
    fn sanitized_text_has_no_control_characters_left() {
        let all: String = (0u32..0x300).filter_map(char::from_u32).collect();
        let clean = sanitize(&all);
        assert!(!clean.chars().any(needs_escape), "{clean}");
        assert!(!clean.chars().any(char::is_control), "{clean}");
    }

    #[test]
    fn json_keeps_its_value_with_the_raw_controls_escaped() {
        let json = "{\"m\":\"a\u{7f}b\u{9b}c\u{202e}d\\u001b\"}\n";
        let safe = escape_json_controls(json);
        assert_eq!(safe, "{\"m\":\"a\\u007fb\\u009bc\\u202ed\\u001b\"}\n");
        let a: serde_json::Value = serde_json::from_str(json).unwrap();
        let b: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(a, b);
        assert!(matches!(
            escape_json_controls("{\"a\":1}"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn redact_hides_the_user_and_password_of_urls() {
        assert_eq!(
            redact("GET https://user:pass@example.org/x: 404"),
            "GET https://***@example.org/x: 404"
        );
        assert_eq!(redact("http://token@h:8080"), "http://***@h:8080");
        assert_eq!(
            redact("postgres://app:s3cr%40t@db.internal:5432/prod"),
            "postgres://***@db.internal:5432/prod"
        );
        // An `@` in the password, written raw: up to the last `@` of the
        // authority.
        assert_eq!(redact("https://u:p@ss@host/p@th"), "https://***@host/p@th");
        // In JSON, in parentheses, twice.
        assert_eq!(
            redact(r#"{"url":"https://a:b@x.org","next":"ftp://c:d@y.org/f"}"#),
            r#"{"url":"https://***@x.org","next":"ftp://***@y.org/f"}"#
        );
        assert_eq!(redact("(see http://a:b@x)"), "(see http://***@x)");
        // Nothing to hide.
        for text in [
            "https://example.org/a@b",
            "mail bob@example.org",
            "https://example.org/?q=a@b",
            "://x@y",
            "https://***@h/",
        ] {
            assert!(matches!(redact(text), Cow::Borrowed(_)), "{text}");
        }
    }

    #[test]
    fn redact_hides_authorization_values_and_bearer_tokens() {
        assert_eq!(
            redact("Authorization: Bearer abc.def-ghi"),
            "Authorization: Bearer ***"
        );
        assert_eq!(
            redact("authorization: Basic dXNlcjpwYXNz, accept: */*"),
            "authorization: Basic ***, accept: */*"
        );
        assert_eq!(
            redact(r#"{"Authorization":"sk-12345"}"#),
            r#"{"Authorization":"***"}"#
        );
        assert_eq!(redact("authorization=xyz&a=1"), "authorization=***&a=1");
        assert_eq!(
            redact("sent bearer eyJhbGciOi.J9.x_y then"),
            "sent bearer *** then"
        );
        // Not a credential.
        assert_eq!(
            redact("the authorization failed"),
            "the authorization failed"
        );
        assert_eq!(redact("forbearer x"), "forbearer x");
    }

    #[test]
    fn redact_hides_secret_query_parameters() {
        assert_eq!(
            redact("GET https://api.example.org/v1?api_key=abc123&page=2: 500"),
            "GET https://api.example.org/v1?api_key=***&page=2: 500"
        );
        assert_eq!(
            redact("https://x.org/?a=1&access_token=t0k#frag"),
            "https://x.org/?a=1&access_token=***#frag"
        );
        assert_eq!(
            redact("https://s3/x?X-Amz-Signature=ff00&X-Amz-Credential=AK/1"),
            "https://s3/x?X-Amz-Signature=***&X-Amz-Credential=***"
        );
        assert_eq!(redact("?key=k&Password=p"), "?key=***&Password=***");
        assert_eq!(
            redact("GET https://x.org/?token=a:b: 404 Not Found"),
            "GET https://x.org/?token=***: 404 Not Found"
        );
        assert_eq!(
            redact("https://x.org/?page=2&keyword=rust"),
            "https://x.org/?page=2&keyword=rust"
        );
    }

    #[test]
    fn redact_userinfo_leaves_the_query_alone() {
        assert_eq!(
            redact_userinfo("https://u:p@x.org/?token=t"),
            "https://***@x.org/?token=t"
        );
    }

    #[test]
    fn for_display_redacts_then_sanitizes() {
        assert_eq!(
            for_display("\x1b[31mhttps://u:p@x.org/\r"),
            "\\x1b[31mhttps://***@x.org/\\r"
        );
        assert!(matches!(for_display("fine"), Cow::Borrowed(_)));
    }

    #[test]
    fn multibyte_text_around_credentials_stays_whole() {
        assert_eq!(
            redact("é https://ü:ß@höst/ ✓ ?token=ö"),
            "é https://***@höst/ ✓ ?token=***"
        );
    }
}
