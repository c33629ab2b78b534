//! `flow stages [TYPE]`: the registered stage types and their options,
//! rendered from each options struct's JSON Schema (its doc comments).

use serde_json::Value;

pub fn show(type_name: Option<&str>) -> u8 {
    match type_name {
        None => {
            let types = flow_core::stage_types();
            let width = types.iter().map(|t| t.name.len()).max().unwrap_or(0);
            let mut text = String::new();
            for t in types {
                text += &format!("{:width$}  {:9}  {}\n", t.name, t.kind.as_str(), t.summary);
            }
            text += "\n`flow stages TYPE` shows a type's options and an example.\n";
            crate::print_out(&text)
        }
        Some(name) => match flow_core::stage_type(name) {
            Some(t) => crate::print_out(&describe(t)),
            None => {
                let names: Vec<&str> = flow_core::stage_types().iter().map(|t| t.name).collect();
                let hint = flow_runner::suggest::hint(name, names.iter().copied());
                eprintln!("flow: unknown stage type \"{name}\"{hint}; `flow stages` lists them");
                crate::exit::BAD_INPUT
            }
        },
    }
}

/// A stage type's page: summary, description, options, example.
pub fn describe(t: &flow_core::StageType) -> String {
    let schema = t.options_schema();
    let schema = schema.as_value();
    let mut out = format!("{} ({})\n\n", t.name, t.kind);
    let about = schema
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or(t.summary);
    out += &wrap(about, "", 78);
    out += "\n";
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let props = schema.get("properties").and_then(Value::as_object);
    match props {
        Some(props) if !props.is_empty() => {
            out += "options (under `with:`):\n";
            for (name, prop) in props {
                let need = if required.contains(&name.as_str()) {
                    "required"
                } else {
                    "optional"
                };
                let default = match resolve(prop, schema)
                    .get("default")
                    .or_else(|| prop.get("default"))
                {
                    Some(Value::Null) | None => String::new(),
                    Some(d) => format!(", default {d}"),
                };
                out += &format!("  {name}: {} ({need}{default})\n", type_of(prop, schema));
                if let Some(d) = description(prop, schema) {
                    out += &wrap(d, "      ", 78);
                }
            }
        }
        _ => out += "options: none\n",
    }
    out += "\nexample:\n";
    for line in t.example.lines() {
        out += &format!("  {line}\n");
    }
    out
}

/// Reflows doc-comment text: lines of a paragraph are joined, paragraphs
/// are kept, and each line is at most `width` wide after `indent`.
fn wrap(text: &str, indent: &str, width: usize) -> String {
    let mut out = String::new();
    for (i, paragraph) in text.split("\n\n").enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && indent.len() + line.len() + 1 + word.len() > width {
                out += &format!("{indent}{line}\n");
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line += word;
        }
        if !line.is_empty() {
            out += &format!("{indent}{line}\n");
        }
    }
    out
}

fn resolve<'a>(prop: &'a Value, root: &'a Value) -> &'a Value {
    if let Some(inner) = prop
        .get("allOf")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 1)
    {
        return resolve(&inner[0], root);
    }
    match prop.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix("#/")
            .map(|p| {
                p.split('/')
                    .fold(root, |v, k| v.get(k).unwrap_or(&Value::Null))
            })
            .unwrap_or(prop),
        None => prop,
    }
}

fn description<'a>(prop: &'a Value, root: &'a Value) -> Option<&'a str> {
    prop.get("description")
        .or_else(|| resolve(prop, root).get("description"))
        .and_then(Value::as_str)
}

/// A short type name: `string`, `integer`, `one of: lines, jsonl`, `list`.
fn type_of(prop: &Value, root: &Value) -> String {
    let prop = resolve(prop, root);
    if let Some(values) = prop.get("enum").and_then(Value::as_array) {
        let names: Vec<String> = values
            .iter()
            .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
            .collect();
        return format!("one of: {}", names.join(", "));
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = prop.get(key).and_then(Value::as_array) {
            let consts: Vec<String> = options
                .iter()
                .filter_map(|o| o.get("const").and_then(Value::as_str).map(str::to_string))
                .collect();
            if !consts.is_empty() {
                return format!("one of: {}", consts.join(", "));
            }
            let types: Vec<String> = options
                .iter()
                .filter(|o| o.get("type").and_then(Value::as_str) != Some("null"))
                .map(|o| type_of(o, root))
                .collect();
            return types.join(" or ");
        }
    }
    match prop.get("type") {
        Some(Value::String(t)) => name_of(t).to_string(),
        Some(Value::Array(ts)) => {
            let names: Vec<&str> = ts
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .map(name_of)
                .collect();
            names.join(" or ")
        }
        _ => "any value".into(),
    }
}

fn name_of(t: &str) -> &str {
    match t {
        "array" => "list",
        "object" => "map",
        other => other,
    }
}
