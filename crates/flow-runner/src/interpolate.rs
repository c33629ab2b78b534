//! `${VAR}` substitution in pipeline files, before they are parsed.
//!
//! `${VAR}` is the variable's value (an error when unset), `${VAR:-text}`
//! falls back to `text` when it is unset or empty, `${VAR:?message}` fails
//! with `message` then; `$$` is a literal `$`, and a `$` not followed by `{`
//! is left alone, so jq's `$i` passes through. Whole-line comments are left
//! as they are, so a commented-out stage cannot fail the file.

/// A failed substitution: what went wrong and the byte offset of its `$`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpolateError {
    pub offset: usize,
    pub message: String,
}

/// Replaces every `${…}` in `text`, looking variables up with `env`.
pub fn interpolate(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(text.len());
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
        } else {
            interpolate_line(line, line_start, &env, &mut out)?;
        }
        line_start += line.len();
    }
    Ok(out)
}

fn interpolate_line(
    line: &str,
    base: usize,
    env: &impl Fn(&str) -> Option<String>,
    out: &mut String,
) -> Result<(), InterpolateError> {
    let mut rest = line;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let at = base + (line.len() - rest.len()) + i;
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err(InterpolateError {
                    offset: at,
                    message: "unterminated `${`: expected `}`".into(),
                });
            };
            out.push_str(&substitute(&body[..end], at, env)?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(())
}

fn substitute(
    body: &str,
    offset: usize,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    let fail = |message: String| InterpolateError { offset, message };
    let (name, op) = match body.find(":-").into_iter().chain(body.find(":?")).min() {
        Some(i) => (&body[..i], Some((&body[i..i + 2], &body[i + 2..]))),
        None => (body, None),
    };
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let bad = name.find(|c: char| !c.is_ascii_alphanumeric() && c != '_');
    match bad {
        // `"${NAME" }`: the `}` found is not the one that was meant.
        Some(i) if starts_well => {
            let found = name[i..].chars().next().unwrap_or_default();
            return Err(fail(format!(
                "`${{{}`: expected `}}` after the variable name, found `{found}`",
                &name[..i]
            )));
        }
        _ if !starts_well => {
            return Err(fail(format!(
                "`${{{body}}}`: {name:?} is not a variable name (letters, digits and _)"
            )));
        }
        _ => {}
    }
    let value = env(name).filter(|v| !v.is_empty() || op.is_none());
    match (value, op) {
        (Some(v), _) => Ok(v),
        (None, Some((":-", default))) => Ok(default.to_string()),
        (None, Some((_, message))) => Err(fail(format!("{name}: {message}"))),
        (None, None) => Err(fail(format!(
            "environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME_DIR" => Some("/home/x".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_set_variables_and_defaults() {
        let got = interpolate("a: ${HOME_DIR}/f\nb: ${NOPE:-urls.txt}\n", env).unwrap();
        assert_eq!(got, "a: /home/x/f\nb: urls.txt\n");
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
    }

    #[test]
    fn unset_variable_names_itself_and_its_offset() {
        let err = interpolate("x: 1\ny: ${MISSING}\n", env).unwrap_err();
        assert_eq!(err.offset, 8);
        assert!(
            err.message.contains("MISSING is not set"),
            "{}",
            err.message
        );
    }

    #[test]
    fn required_variable_fails_with_its_message() {
        let err = interpolate("${TOKEN:?set TOKEN to your API key}", env).unwrap_err();
        assert_eq!(err.message, "TOKEN: set TOKEN to your API key");
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(interpolate("${NOPE", env).is_err());
        assert!(interpolate("${1X}", env).is_err());
        assert!(interpolate("${}", env).is_err());
    }

    #[test]
    fn a_missing_closing_brace_is_named_as_such() {
        let err = interpolate("value: \"${OOPS\" }", env).unwrap_err();
        assert_eq!(err.offset, 8);
        assert_eq!(
            err.message,
            "`${OOPS`: expected `}` after the variable name, found `\"`"
        );
    }

    #[test]
    fn whole_line_comments_are_not_interpolated() {
        let text = "  # input: ${UNSET_IN_COMMENT}\nx: 1\n";
        assert_eq!(interpolate(text, env).unwrap(), text);
    }
}
