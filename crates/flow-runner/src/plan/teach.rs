//! Messages that teach: what a jq expression that does not compile was
//! probably meant to be, and where in it the error is.

use flow_core::ExprError;

/// The problem message for the expression `code` of the option `key`
/// (`with.url`, `rate_key`) that does not compile: `key: what is wrong`,
/// then the line of the expression holding the error with a caret under
/// it. A text that reads like a literal (a URL, a word) gets the quoted
/// form to write instead.
pub(crate) fn expression_problem(key: &str, code: &str, e: &ExprError) -> String {
    let first = if let Some(instead) = not_in_jaq(&e.message) {
        format!("{key}: invalid jq expression: {}; {instead}", e.message)
    } else if looks_literal(code) {
        let text = code.trim();
        // A jq string, inside a YAML single-quoted scalar.
        let quoted = serde_json::to_string(text)
            .unwrap_or_default()
            .replace('\'', "''");
        let field = if is_name(text) {
            format!("; for the field \"{text}\" of the input, write .{text}")
        } else {
            String::new()
        };
        format!(
            "{key}: this option takes a jq expression, and this text is not valid jq ({}); for the literal string, write '{quoted}'{field}",
            e.message
        )
    } else {
        format!("{key}: invalid jq expression: {}", e.message)
    };
    match caret(code, e.offset) {
        Some(shown) => format!("{first}\n{shown}"),
        None => first,
    }
}

/// A typed reading's problem (`message`, from serde's `raw`) at `key` (the
/// path in its stage: `workers`, `inputs`, `defaults.ordered`, empty for
/// the stage itself), with what to write instead when a new user's usual
/// slip explains it. `quoted`: the value was written in quotes.
pub(crate) fn parse_problem(key: &str, raw: &str, message: String, quoted: bool) -> String {
    let last = key.rsplit('.').next().unwrap_or_default();
    let text = raw
        .strip_prefix("invalid type: string \"")
        .and_then(|rest| rest.split_once("\", expected "));
    if let Some((text, expected)) = text {
        let number = text.trim().parse::<f64>().is_ok();
        if quoted && number && expected.contains("number") {
            return format!(
                "{message}; a number in quotes is text: write {} without quotes",
                text.trim()
            );
        }
        if expected == "a boolean" {
            return format!(
                "{message}: write true or false (YAML 1.2 reads yes, no, on and off as text)"
            );
        }
        if last == "inputs" && expected == "a sequence" {
            return format!("{message}; inputs is a list of stage names: write inputs: [{text}]");
        }
    }
    if key.is_empty() && raw == "missing field `type`" {
        return format!("{message}: every stage needs a type (`flow stages` lists them)");
    }
    if key.is_empty() && raw == "missing field `name`" {
        return format!("{message}: every stage needs a name, unique in the pipeline");
    }
    message
}

/// For a jq builtin that flow's jq (jaq) does not have, what to do
/// instead.
fn not_in_jaq(message: &str) -> Option<&'static str> {
    let name = message
        .strip_prefix("undefined filter ")
        .or_else(|| message.strip_prefix("undefined variable "))?;
    Some(match name {
        "input" | "inputs" => {
            "flow's jq (jaq) has no input stream: each item is the expression's input, `.` (to take several items together, put a batch stage before)"
        }
        "$ENV" => "flow's jq (jaq) has no $ENV: use env (env.HOME), or ${HOME} in the file",
        "@csv" | "@tsv" => {
            "flow's jq (jaq) has no @csv or @tsv: write CSV with the stdout or write stage (format: csv)"
        }
        "leaf_paths" => "flow's jq (jaq) has no leaf_paths: use paths(scalars)",
        "tostream" | "fromstream" | "truncate_stream" => {
            "flow's jq (jaq) has no streaming forms: use paths and getpath"
        }
        "IN"
        | "INDEX"
        | "ascii"
        | "toarray"
        | "@base32"
        | "@base32d"
        | "input_filename"
        | "input_line_number"
        | "$__loc__"
        | "$__prog_args"
        | "have_decnum"
        | "have_literal_numbers" => "it is a jq builtin that flow's jq (jaq) does not have",
        _ => return None,
    })
}

/// The most characters of the expression's line shown on each side of the
/// error.
const AROUND: usize = 40;

/// The line of `code` holding byte `offset`, indented, and a caret under
/// the character at `offset` (or just after the line's end): at most
/// [`AROUND`] characters each side, control characters shown as `?`.
/// Nothing for an empty or blank expression.
fn caret(code: &str, offset: usize) -> Option<String> {
    if code.trim().is_empty() {
        return None;
    }
    let mut offset = offset.min(code.len());
    while !code.is_char_boundary(offset) {
        offset -= 1;
    }
    let start = code[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = code[offset..].find('\n').map_or(code.len(), |i| offset + i);
    let before: Vec<char> = code[start..offset].chars().collect();
    let after: Vec<char> = code[offset..end].chars().collect();
    let (cut_before, before) = match before.len().checked_sub(AROUND) {
        Some(skip) if skip > 0 => (true, &before[skip..]),
        _ => (false, &before[..]),
    };
    let (cut_after, after) = if after.len() > AROUND {
        (true, &after[..AROUND])
    } else {
        (false, &after[..])
    };
    let shown = |c: &char| match c {
        '\t' => ' ',
        c if c.is_control() => '?',
        c => *c,
    };
    let lead = if cut_before { "..." } else { "" };
    let line: String = before.iter().chain(after).map(shown).collect();
    let tail = if cut_after { "..." } else { "" };
    let pad = " ".repeat(lead.len() + before.len());
    Some(format!("    {lead}{line}{tail}\n    {pad}^"))
}

/// Whether `code` reads as a value written without its quotes (a URL, a
/// word, a file name) rather than as jq: one line, and none of jq's
/// brackets, pipes, variables, strings or comparisons, and no path (`.`
/// starting a word).
fn looks_literal(code: &str) -> bool {
    let text = code.trim();
    if text.is_empty() || text.contains('\n') {
        return false;
    }
    if text.contains(['|', '(', ')', '[', ']', '{', '}', '$', '"', ';', '\\', '@']) {
        return false;
    }
    if ["==", "!=", "<=", ">=", " and ", " or ", " as "]
        .iter()
        .any(|op| text.contains(op))
    {
        return false;
    }
    let mut previous = ' ';
    for c in text.chars() {
        if c == '.' && (previous.is_whitespace() || "+-*/%<>=,".contains(previous)) {
            return false;
        }
        previous = c;
    }
    true
}

/// A bare jq name: `hello`, `user_id`.
fn is_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(message: &str, offset: usize) -> ExprError {
        ExprError {
            message: message.into(),
            offset,
        }
    }

    #[test]
    fn literals_are_told_apart_from_jq() {
        for literal in ["http://example.com/x", "hello", "out.txt", "hello world"] {
            assert!(looks_literal(literal), "{literal}");
        }
        for jq in [
            ". * . | | 1",
            ".a",
            "map(.x)",
            "$x",
            "\"a\"",
            ".a == 1",
            "a .b",
            "",
        ] {
            assert!(!looks_literal(jq), "{jq}");
        }
    }

    #[test]
    fn the_caret_points_at_the_offset() {
        assert_eq!(
            caret(". * . | | 1", 8).unwrap(),
            "    . * . | | 1\n            ^"
        );
        assert_eq!(caret(".a\n| |", 5).unwrap(), "    | |\n      ^");
        assert_eq!(caret(".a |", 4).unwrap(), "    .a |\n        ^");
        assert_eq!(caret("  ", 0), None);
        let long = format!("{}| |{}", "a".repeat(100), "b".repeat(100));
        let shown = caret(&long, 102).unwrap();
        let (line, mark) = shown.split_once('\n').unwrap();
        assert_eq!(line.len(), 4 + 3 + 80 + 3);
        assert_eq!(line.as_bytes()[mark.len() - 1], b'|');
        assert!(mark.ends_with('^'));
    }

    #[test]
    fn a_literal_gets_its_quoted_form() {
        let m = expression_problem(
            "with.url",
            "http://example.com/x",
            &error("expected the end of the expression, found \":\"", 4),
        );
        assert_eq!(
            m,
            "with.url: this option takes a jq expression, and this text is not valid jq (expected the end of the expression, found \":\"); for the literal string, write '\"http://example.com/x\"'\n    http://example.com/x\n        ^"
        );
        let m = expression_problem("with.value", "it's", &error("x", 2));
        assert!(m.contains(r#"write '"it''s"'"#), "{m}");
    }
}
