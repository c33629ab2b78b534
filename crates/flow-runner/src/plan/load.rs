//! Reading a pipeline file: its bytes (within [`MAX_FILE_BYTES`]), the
//! YAML document, `${VAR}` interpolation, unknown keys, and the typed
//! [`PipelineSpec`], with a problem for each thing wrong.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;

use super::teach;
use crate::error::{Problem, Problems};
use crate::spec::{MAX_LIMITS, MAX_STAGES, PipelineSpec};
use crate::suggest::{did_you_mean, hint};
use crate::yaml::{self, Doc, Pos};

/// The largest pipeline file: 16 MiB.
pub const MAX_FILE_BYTES: usize = 16 << 20;

/// The text of the pipeline file at `path`: at most [`MAX_FILE_BYTES`],
/// UTF-8.
pub(super) fn read(path: &Path) -> Result<String, Problems> {
    let file = path.display().to_string();
    let problem = |pos, message: String| {
        Problems(vec![Problem {
            file: file.clone(),
            pos,
            stage: None,
            message,
        }])
    };
    // Never more than the limit and a byte: a huge file, or /dev/zero, is
    // not read whole.
    let read = || -> std::io::Result<Option<Vec<u8>>> {
        let f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        if len > MAX_FILE_BYTES as u64 {
            return Ok(None);
        }
        let mut bytes = Vec::with_capacity(len as usize + 1);
        f.take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes)?;
        Ok((bytes.len() <= MAX_FILE_BYTES).then_some(bytes))
    };
    let bytes = match read() {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Err(problem(None, too_big())),
        Err(e) => return Err(problem(None, format!("cannot read the pipeline file: {e}"))),
    };
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let text = String::from_utf8_lossy(&e.as_bytes()[..valid]);
        problem(
            Some(pos_of_offset(&text, valid)),
            "the file is not UTF-8 text (an invalid byte here)".into(),
        )
    })
}

fn too_big() -> String {
    format!(
        "the file is larger than {} MiB, the most a pipeline file may be",
        MAX_FILE_BYTES >> 20
    )
}

/// A pipeline file as read: the document (for positions), its typed form
/// and the problems found on the way that did not stop the reading.
pub(super) struct Parsed<'t> {
    pub doc: Doc<'t>,
    pub spec: PipelineSpec,
    pub problems: Vec<Problem>,
}

/// Parses `text` (the file `file`), within the bounds of [`crate::yaml`];
/// replaces `${VAR}` references inside scalar values, with `env` giving
/// the variables (see [`crate::interpolate`]); reports and hides unknown
/// keys; reads the typed form. Time and memory are linear in the text's
/// length.
pub(super) fn parse<'t>(
    text: &'t str,
    file: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Parsed<'t>, Problems> {
    let problem = |pos, message: String| {
        Problems(vec![Problem {
            file: file.to_string(),
            pos,
            stage: None,
            message,
        }])
    };
    if text.len() > MAX_FILE_BYTES {
        return Err(problem(None, too_big()));
    }
    let mut doc = Doc::read(text);
    // A problem at a node: its stage, and its key within the stage.
    let at_node = |doc: &Doc, pos: Pos, path: Option<&str>, message: String, short: bool| {
        let (stage, key) = match path {
            Some(path) => stage_of_path(doc, path),
            None => (None, String::new()),
        };
        let mut key = key.split('[').next().unwrap_or_default();
        if short {
            // At most two levels: a path 64 levels deep says nothing more.
            key = match key.match_indices('.').nth(1) {
                Some((i, _)) => &key[..i],
                None => key,
            };
        }
        let message = match key {
            "" => message,
            key => format!("{key}: {message}"),
        };
        Problem {
            file: file.to_string(),
            pos: Some(pos),
            stage,
            message,
        }
    };
    if let Some(f) = doc.failure() {
        let p = at_node(&doc, f.pos, f.path.as_deref(), f.message.clone(), true);
        return Err(Problems(vec![p]));
    }
    let duplicates = doc.duplicates();
    if !duplicates.is_empty() {
        let problems = duplicates
            .into_iter()
            .map(|(pos, map, key, first)| {
                let message = format!("duplicate key \"{key}\" (first at line {first})");
                at_node(&doc, pos, Some(&map), message, false)
            })
            .collect();
        return Err(Problems(problems));
    }
    let failed = doc.interpolate(env);
    if !failed.is_empty() {
        let problems = failed
            .into_iter()
            .map(|f| at_node(&doc, f.pos, f.path.as_deref(), f.message, false))
            .collect();
        return Err(Problems(problems));
    }
    // Before anything costs per stage.
    for (key, most) in [("stages", MAX_STAGES), ("limits", MAX_LIMITS)] {
        if let Some(n) = doc.len(key).filter(|&n| n > most) {
            let pos = doc.key(key);
            let message = format!("{key}: {n} {key}; a pipeline may have at most {most}");
            return Err(problem(pos, message));
        }
    }
    // Unknown keys are reported, every one, and skipped, so that the rest
    // of the file is still read and checked.
    let (mut early, hidden_in) = unknown_keys(&mut doc, file);
    // A bad value of an optional key of a stage or of `defaults:` is
    // reported, and the key hidden so the rest is read and checked too;
    // the reading is repeated for that, within a budget of values read, so
    // that validation stays linear in the file's size.
    let mut budget = REREAD_BUDGET;
    let spec: PipelineSpec = loop {
        let e = match yaml::parse(&doc) {
            Ok(spec) => break spec,
            Err(e) => e,
        };
        // A key missing from a map with an unknown key is most likely that
        // key misspelt: reported already.
        if e.message.starts_with("missing field") && hidden_in.contains(&e.path) {
            early.sort_by_key(|p| p.pos.map(|p| (p.line, p.column)));
            return Err(Problems(early));
        }
        let (stage, key) = stage_of_path(&doc, &e.path);
        let message = friendly(&e.message);
        let message = teach::parse_problem(&key, &e.message, message, doc.quoted(&e.path));
        let unknown = e.message.starts_with("unknown field");
        // An unknown key is named by the message; its parent map (none for
        // a stage's own keys, the stage being named) leads.
        let lead = if unknown {
            key.rsplit_once('.').map_or("", |(parent, _)| parent)
        } else {
            key.as_str()
        };
        let message = match lead {
            "" => message,
            lead => format!("{}: {message}", in_test(&doc, lead)),
        };
        let pos = if unknown {
            doc.key(&e.path)
        } else {
            doc.value(&e.path)
        };
        early.push(Problem {
            file: file.to_string(),
            pos: pos.or(e.pos),
            stage,
            message,
        });
        budget = budget.saturating_sub(doc.size().max(1));
        let hidden =
            budget > 0 && optional_entry(&e.path).is_some_and(|(map, key)| doc.hide(&map, &key));
        if !hidden {
            early.sort_by_key(|p| p.pos.map(|p| (p.line, p.column)));
            return Err(Problems(early));
        }
    };
    Ok(Parsed {
        doc,
        spec,
        problems: early,
    })
}

/// Values the typed reading may read again, in all, after hiding a key
/// with a bad value (see [`parse`]).
const REREAD_BUDGET: u64 = 1 << 20;

/// For a typed reading's error at `path`, the entry to hide so that the
/// rest can be read: an optional key of a stage (`stages[2].workers`,
/// `stages[2].retry.backoff` hides `retry`) or of `defaults:`. None for a
/// stage's name or type, or anything else.
fn optional_entry(path: &str) -> Option<(String, String)> {
    let first = |rest: &str| {
        rest.split(['.', '['])
            .next()
            .filter(|k| !k.is_empty())
            .map(str::to_string)
    };
    if let Some(rest) = path.strip_prefix("defaults.") {
        return first(rest).map(|k| ("defaults".to_string(), k));
    }
    let rest = path.strip_prefix("stages[")?;
    let (n, rest) = rest.split_once("].")?;
    let key = first(rest)?;
    if key == "name" || key == "type" || !crate::spec::STAGE_KEYS.contains(&key.as_str()) {
        return None;
    }
    Some((format!("stages[{n}]"), key))
}

/// Every key of the file's runner-owned maps (the top level, `defaults:`,
/// each stage, each `retry:`) that is not one of theirs, reported and then
/// hidden from the typed reading. A stage key that is an option of the
/// stage's type is said to belong under `with:`.
fn unknown_keys(doc: &mut Doc, file: &str) -> (Vec<Problem>, HashSet<String>) {
    use crate::spec::{DEFAULTS_KEYS, PIPELINE_KEYS, RETRY_KEYS, STAGE_KEYS};
    // (the map's path, the key, the stage, the message)
    let mut found = Vec::new();
    // A misspelt required key is read as the key it was meant to be, so
    // that its absence does not stop the reading.
    const REQUIRED: [&str; 4] = ["name", "type", "stages", "attempts"];
    type Found = Vec<(String, String, Option<String>, String, Option<&'static str>)>;
    let look = |found: &mut Found,
                doc: &Doc,
                map: &str,
                keys: &[&'static str],
                stage: Option<&str>,
                lead: &str| {
        let present = doc.keys(map);
        // The required keys the map has, or one misspelt key was read as:
        // found once, so a map of many keys costs no more per key.
        let mut taken: Vec<&str> = REQUIRED
            .into_iter()
            .filter(|r| present.contains(r))
            .collect();
        for &key in &present {
            if keys.contains(&key) {
                continue;
            }
            let rename = did_you_mean(key, keys.iter().copied())
                .filter(|s| REQUIRED.contains(s) && !taken.contains(s));
            taken.extend(rename);
            let listed: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
            let serde = format!(
                "unknown field `{key}`, expected one of {}",
                listed.join(", ")
            );
            let message = match lead {
                "" => friendly(&serde),
                lead => format!("{lead}: {}", friendly(&serde)),
            };
            found.push((
                map.to_string(),
                key.to_string(),
                stage.map(str::to_string),
                message,
                rename,
            ));
        }
    };
    look(&mut found, doc, "", &PIPELINE_KEYS, None, "");
    look(
        &mut found,
        doc,
        "defaults",
        &DEFAULTS_KEYS,
        None,
        "defaults",
    );
    look(
        &mut found,
        doc,
        "defaults.retry",
        &RETRY_KEYS,
        None,
        "defaults.retry",
    );
    let stages = if doc.keys("").contains(&"stages") {
        doc.len("stages").unwrap_or(0)
    } else {
        0
    };
    // The options of each stage type met, by name.
    let mut options: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..stages {
        let path = format!("stages[{i}]");
        let name = doc.text(&format!("{path}.name"));
        let before = found.len();
        look(&mut found, doc, &path, &STAGE_KEYS, name, "");
        look(
            &mut found,
            doc,
            &format!("{path}.retry"),
            &RETRY_KEYS,
            name,
            "retry",
        );
        let Some(type_name) = doc.text(&format!("{path}.type")) else {
            continue;
        };
        for (map, key, _, message, _) in &mut found[before..] {
            if *map != path {
                continue;
            }
            let of_type = options.entry(type_name.to_string()).or_insert_with(|| {
                flow_core::stage_type(type_name).map_or_else(Vec::new, |t| {
                    t.options_schema()
                        .get("properties")
                        .and_then(|p| p.as_object())
                        .map_or_else(Vec::new, |p| p.keys().cloned().collect())
                })
            });
            if of_type.contains(key) {
                *message = format!(
                    "unknown key \"{key}\": it is an option of type {type_name}; put it under with:"
                );
            }
        }
    }
    let maps = found.iter().map(|(map, ..)| map.clone()).collect();
    let problems = found
        .into_iter()
        .map(|(map, key, stage, message, rename)| {
            let at = if map.is_empty() {
                key.clone()
            } else {
                format!("{map}.{key}")
            };
            let pos = doc.key(&at);
            match rename {
                Some(to) => doc.rename(&map, &key, to),
                None => {
                    doc.hide(&map, &key);
                }
            }
            Problem {
                file: file.to_string(),
                pos,
                stage,
                message,
            }
        })
        .collect();
    (problems, maps)
}

/// Rewrites serde's messages in the user's words, with "did you mean".
pub(super) fn friendly(message: &str) -> String {
    let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let rest = quoted.get(1..).unwrap_or_default();
    if let Some(field) = message.strip_prefix("unknown field `").and(quoted.first()) {
        if message.contains("there are no fields") {
            return format!("unknown key \"{field}\"; this stage type takes no options");
        }
        let suggestion = hint(field, rest.iter().copied());
        return if suggestion.is_empty() {
            format!(
                "unknown key \"{field}\"; expected one of: {}",
                rest.join(", ")
            )
        } else {
            format!("unknown key \"{field}\"{suggestion}")
        };
    }
    if let Some(value) = message
        .strip_prefix("unknown variant `")
        .and(quoted.first())
    {
        let suggestion = hint(value, rest.iter().copied());
        return format!(
            "unknown value \"{value}\"{suggestion}; expected one of: {}",
            rest.join(", ")
        );
    }
    if let Some(field) = message.strip_prefix("missing field `").and(quoted.first()) {
        return format!("missing key \"{field}\"");
    }
    rust_types_in_words(message)
}

/// `expected usize` and `expected struct RetrySpec` say what the user
/// should write instead.
fn rust_types_in_words(message: &str) -> String {
    let Some((head, tail)) = message.split_once("expected ") else {
        return message.to_string();
    };
    let (expected, rest) = tail.split_at(tail.find([',', ' ', ')']).unwrap_or(tail.len()));
    let words = match expected {
        "usize" | "u8" | "u16" | "u32" | "u64" => "a whole number, 0 or more",
        "isize" | "i8" | "i16" | "i32" | "i64" => "a whole number",
        "f32" | "f64" => "a number",
        "struct" => {
            let after = rest.trim_start();
            let name_len = after
                .find(|c: char| !c.is_alphanumeric() && c != '_')
                .unwrap_or(after.len());
            return format!("{head}expected a map{}", &after[name_len..]);
        }
        _ => return message.to_string(),
    };
    format!("{head}expected {words}{rest}")
}

/// For a path inside `stages[N]`, the stage's name (its text as written,
/// whatever its type) and the rest of the path.
fn stage_of_path(doc: &Doc, path: &str) -> (Option<String>, String) {
    let Some(rest) = path.strip_prefix("stages[") else {
        return (None, path.to_string());
    };
    let Some((n, key)) = rest.split_once(']') else {
        return (None, path.to_string());
    };
    let key = key.strip_prefix('.').unwrap_or(key).to_string();
    let name = doc.text(&format!("stages[{n}].name")).map(str::to_string);
    (name, key)
}

/// A path inside `tests[N]` as the user knows it: `test "name": expect[1]`.
pub(super) fn in_test(doc: &Doc, path: &str) -> String {
    let Some((n, rest)) = path
        .strip_prefix("tests[")
        .and_then(|rest| rest.split_once(']'))
    else {
        return path.to_string();
    };
    let Some(name) = doc.text(&format!("tests[{n}].name")) else {
        return path.to_string();
    };
    match rest.strip_prefix('.').unwrap_or(rest) {
        "" => format!("test \"{name}\""),
        rest => format!("test \"{name}\": {rest}"),
    }
}

fn pos_of_offset(text: &str, offset: usize) -> Pos {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Pos { line, column }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_become_suggestions() {
        let m = friendly("unknown field `wokers`, expected one of `name`, `type`, `workers`");
        assert_eq!(m, "unknown key \"wokers\" (did you mean \"workers\"?)");
        let m = friendly("unknown field `zzz`, expected `expr`");
        assert_eq!(m, "unknown key \"zzz\"; expected one of: expr");
        let m = friendly("unknown variant `lifoo`, expected one of `fifo`, `lifo`, `priority`");
        assert!(
            m.starts_with("unknown value \"lifoo\" (did you mean \"lifo\"?)"),
            "{m}"
        );
        assert_eq!(friendly("missing field `expr`"), "missing key \"expr\"");
    }

    #[test]
    fn rust_type_names_become_words() {
        assert_eq!(
            friendly("invalid type: string \"many\", expected usize"),
            "invalid type: string \"many\", expected a whole number, 0 or more"
        );
        assert_eq!(
            friendly("invalid type: integer `3`, expected struct GenerateOptions"),
            "invalid type: integer `3`, expected a map"
        );
        assert_eq!(friendly("expected a sequence"), "expected a sequence");
    }

    #[test]
    fn offsets_become_lines_and_columns() {
        assert_eq!(pos_of_offset("ab\ncd", 4), Pos { line: 2, column: 2 });
        assert_eq!(pos_of_offset("ab", 0), Pos { line: 1, column: 1 });
    }
}
