//! `${VAR}` substitution inside the scalar values of a parsed pipeline file.
//!
//! The file is parsed first; then the text of every scalar value (never a
//! key) is searched for references, so whatever a variable holds (quotes,
//! newlines, `#`, `: `, `{`, `- `, another `${…}`) becomes literal text of
//! that one scalar: a value can never add a stage, a key or a line of YAML.
//! Comments vanish in parsing, so they are never interpolated.
//!
//! `${VAR}` is the variable's value (an error when unset), `${VAR:-text}`
//! falls back to `text` when it is unset or empty, `${VAR:?message}` fails
//! with `message` then; `$$` is a literal `$`, and a `$` not followed by `{`
//! is left alone, so jq's `$i` passes through. The result is never searched
//! again: a value holding `${OTHER}` stays `${OTHER}`.
//!
//! A plain (unquoted) scalar that is exactly one reference (`workers:
//! ${N}`, `ordered: ${FLAG:-false}`) is typed by the value, as if the value
//! had been written there: a number, a boolean or null. Every other scalar
//! holding a reference is a string.

/// A failed substitution: what went wrong and the byte offset of its `$` in
/// the scalar's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpolateError {
    pub offset: usize,
    pub message: String,
}

/// One `${…}` (or `$$`) replaced: where its replacement sits in the result,
/// and where the reference was written in the original text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Substitution {
    /// Byte range of the replacement in the result.
    pub start: usize,
    pub end: usize,
    /// Byte offset of the `$` in the original text, and the reference's
    /// length there.
    pub written: usize,
    pub written_len: usize,
}

/// A scalar's text after substitution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    pub text: String,
    /// In order; empty when the text had nothing to replace.
    pub substitutions: Vec<Substitution>,
    /// The original text was exactly one `${…}` reference.
    pub whole: bool,
}

/// The byte offset in the original text that byte `offset` of the
/// substituted text comes from: inside a replacement, the reference's `$`.
pub fn written_offset(substitutions: &[Substitution], offset: usize) -> usize {
    let mut shift: isize = 0;
    for s in substitutions {
        if offset < s.start {
            break;
        }
        if offset < s.end {
            return s.written;
        }
        shift = s.written as isize + s.written_len as isize - s.end as isize;
    }
    (offset as isize + shift).max(0) as usize
}

/// Replaces every `${…}` in `text`, the text of one scalar, looking
/// variables up with `env`. `None` when there is nothing to replace.
pub fn expand(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Expanded>, InterpolateError> {
    if !text.contains('$') {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len());
    let mut substitutions = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let at = text.len() - rest.len() + i;
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            let start = out.len();
            out.push('$');
            substitutions.push(Substitution {
                start,
                end: out.len(),
                written: at,
                written_len: 2,
            });
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let (value, len) = reference(body, at, &env)?;
            let start = out.len();
            out.push_str(&value);
            substitutions.push(Substitution {
                start,
                end: out.len(),
                written: at,
                written_len: 2 + len,
            });
            rest = &body[len..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if substitutions.is_empty() {
        return Ok(None);
    }
    let whole = matches!(
        substitutions.as_slice(),
        [s] if s.written == 0 && s.written_len == text.len() && text.starts_with("${")
    );
    Ok(Some(Expanded {
        text: out,
        substitutions,
        whole,
    }))
}

/// [`expand`], for the text alone.
#[cfg(test)]
pub fn interpolate(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    Ok(expand(text, env)?.map_or_else(|| text.to_string(), |e| e.text))
}

/// The value of the reference whose body (after `${`) starts `body`, and
/// the body's length up to and including its `}`.
fn reference(
    body: &str,
    offset: usize,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(String, usize), InterpolateError> {
    let fail = |message: String| InterpolateError { offset, message };
    let name_len = body
        .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .unwrap_or(body.len());
    let name = &body[..name_len];
    let after = &body[name_len..];
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !starts_well {
        return Err(fail(match body.find('}') {
            Some(end) => {
                let inner = &body[..end];
                let shown = inner
                    .find(":-")
                    .into_iter()
                    .chain(inner.find(":?"))
                    .min()
                    .map_or(inner, |i| &inner[..i]);
                format!(
                    "`${{{inner}}}`: {:?} is not a variable name (letters, digits and _)",
                    shown
                )
            }
            None => "unterminated `${`: expected `}`".to_string(),
        }));
    }
    if after.starts_with('}') {
        let value = env(name).ok_or_else(|| {
            fail(format!(
                "environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
            ))
        })?;
        return Ok((value, name_len + 1));
    }
    let op = [":-", ":?"].into_iter().find(|op| after.starts_with(op));
    let Some(op) = op else {
        let found = match after.chars().next() {
            None => "the end of the value".to_string(),
            Some('\n') => "a line break".to_string(),
            Some(c) => format!("`{c}`"),
        };
        return Err(fail(format!(
            "`${{{name}`: expected `}}` after the variable name, found {found}"
        )));
    };
    let text = &after[2..];
    let Some(end) = text.find('}') else {
        return Err(fail(format!(
            "unterminated `${{{name}{op}`: expected `}}` at the end of the {}",
            if op == ":-" { "default" } else { "message" }
        )));
    };
    let text = &text[..end];
    let len = name_len + 2 + end + 1;
    match (env(name).filter(|v| !v.is_empty()), op) {
        (Some(v), _) => Ok((v, len)),
        (None, ":-") => Ok((text.to_string(), len)),
        (None, _) => Err(fail(format!("{name}: {text}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME_DIR" => Some("/home/x".into()),
            "EMPTY" => Some(String::new()),
            "OTHER_REF" => Some("${HOME_DIR}".into()),
            _ => None,
        }
    }

    #[test]
    fn replaces_set_variables_and_defaults() {
        assert_eq!(interpolate("${HOME_DIR}/f", env).unwrap(), "/home/x/f");
        assert_eq!(interpolate("${NOPE:-urls.txt}", env).unwrap(), "urls.txt");
        assert_eq!(
            interpolate("a ${HOME_DIR} b ${NOPE:-c} d", env).unwrap(),
            "a /home/x b c d"
        );
    }

    #[test]
    fn empty_values_take_the_default() {
        assert_eq!(interpolate("${EMPTY:-d}", env).unwrap(), "d");
        assert_eq!(interpolate("${EMPTY}", env).unwrap(), "");
    }

    #[test]
    fn dollar_dollar_is_a_literal_and_jq_variables_pass_through() {
        assert_eq!(
            interpolate("$$HOME $i $$ x$", env).unwrap(),
            "$HOME $i $ x$"
        );
        assert_eq!(interpolate("$${HOME_DIR}", env).unwrap(), "${HOME_DIR}");
        assert_eq!(expand("{id: $i}", env).unwrap(), None);
        assert_eq!(expand("no dollar", env).unwrap(), None);
    }

    #[test]
    fn a_value_is_never_expanded_again() {
        assert_eq!(interpolate("${OTHER_REF}", env).unwrap(), "${HOME_DIR}");
    }

    #[test]
    fn only_a_lone_reference_is_whole() {
        let whole = |t: &str| expand(t, env).unwrap().map(|e| e.whole);
        assert_eq!(whole("${HOME_DIR}"), Some(true));
        assert_eq!(whole("${NOPE:-4}"), Some(true));
        assert_eq!(whole("${HOME_DIR}${HOME_DIR}"), Some(false));
        assert_eq!(whole("x${HOME_DIR}"), Some(false));
        assert_eq!(whole("${HOME_DIR} "), Some(false));
        assert_eq!(whole("$$"), Some(false));
        assert_eq!(whole("$i"), None);
    }

    #[test]
    fn offsets_in_the_result_map_back_to_the_written_text() {
        let e = expand("ab${HOME_DIR}cd$$e", env).unwrap().unwrap();
        assert_eq!(e.text, "ab/home/xcd$e");
        assert_eq!(written_offset(&e.substitutions, 1), 1);
        // Inside the value: its `$`.
        assert_eq!(written_offset(&e.substitutions, 4), 2);
        // `c` is byte 9 of the result, written at byte 13.
        assert_eq!(written_offset(&e.substitutions, 9), 13);
        // `$$` is one byte in the result; `e` after it.
        assert_eq!(written_offset(&e.substitutions, 11), 15);
        assert_eq!(written_offset(&e.substitutions, 12), 17);
    }

    #[test]
    fn unset_variable_names_itself_and_its_offset() {
        let err = interpolate("x ${MISSING}", env).unwrap_err();
        assert_eq!(err.offset, 2);
        assert_eq!(
            err.message,
            "environment variable MISSING is not set (write ${MISSING:-default} to give a default)"
        );
    }

    #[test]
    fn required_variable_fails_with_its_message() {
        let err = interpolate("${TOKEN:?set TOKEN to your API key}", env).unwrap_err();
        assert_eq!(err.message, "TOKEN: set TOKEN to your API key");
        assert_eq!(interpolate("${HOME_DIR:?unused}", env).unwrap(), "/home/x");
    }

    #[test]
    fn malformed_references_are_errors() {
        let message = |t: &str| interpolate(t, env).unwrap_err().message;
        assert_eq!(
            message("${NOPE"),
            "`${NOPE`: expected `}` after the variable name, found the end of the value"
        );
        assert_eq!(
            message("${1X}"),
            "`${1X}`: \"1X\" is not a variable name (letters, digits and _)"
        );
        assert_eq!(
            message("${}"),
            "`${}`: \"\" is not a variable name (letters, digits and _)"
        );
        assert_eq!(message("${"), "unterminated `${`: expected `}`");
        assert_eq!(
            message("${A:-x"),
            "unterminated `${A:-`: expected `}` at the end of the default"
        );
        assert_eq!(
            message("${A\n}"),
            "`${A`: expected `}` after the variable name, found a line break"
        );
    }

    #[test]
    fn a_missing_closing_brace_is_named_as_such() {
        let err = interpolate("a ${OOPS\" }", env).unwrap_err();
        assert_eq!(err.offset, 2);
        assert_eq!(
            err.message,
            "`${OOPS`: expected `}` after the variable name, found `\"`"
        );
    }
}
