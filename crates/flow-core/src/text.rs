//! Text that came from items, made safe to show: for a terminal (no
//! control characters or escape sequences) and for reports and logs (no
//! credentials).

use std::borrow::Cow;

/// `text` with every control character (C0 but tab, DEL, C1) written as a
/// visible escape (`\x1b`, `\r`, `\u{9b}`), so that item data shown on a
/// terminal can neither move the cursor nor change the screen.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    let bad = |c: char| c != '\t' && (c.is_control());
    if !text.chars().any(bad) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if bad(c) && (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if bad(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}
