//! `flow schema`: a JSON Schema (draft 07) of pipeline files, for editor
//! completion and checking.
//!
//! The runner-owned keys come from the `JsonSchema` derives of
//! `flow_runner::spec` (their doc comments are the descriptions); each stage
//! type's options under `with` come from the registry, the same schemas
//! `flow stages TYPE` renders. A stage's `type` is an enum of the registered
//! types, and an `if`/`then` per type picks the schema of its `with`.

use serde_json::{Map, Value, json};

use flow_core::StageType;
use flow_runner::spec::PipelineSpec;

/// Where every schema of this document keeps its definitions.
const DEFINITIONS: &str = "definitions";

/// A string holding a `${VAR}`, replaced from the environment before the
/// file is parsed: it may stand where a number, a boolean or a word from a
/// list goes.
const VARIABLE: &str = r"\$\{";

pub fn show() -> u8 {
    let schema = pipeline_schema();
    crate::print_out(
        &(serde_json::to_string_pretty(&schema).expect("a JSON value serialises") + "\n"),
    )
}

/// The schema of a pipeline file, with every registered stage type.
pub fn pipeline_schema() -> Value {
    let mut root = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<PipelineSpec>()
        .to_value();
    root["title"] = json!("flow pipeline");
    let mut definitions = match root.get_mut(DEFINITIONS).map(Value::take) {
        Some(Value::Object(definitions)) => definitions,
        _ => Map::new(),
    };
    let types = flow_core::stage_types();
    let choices: Vec<Value> = types
        .iter()
        .map(|t| options_choice(t, &mut definitions))
        .collect();
    allow_variables(&mut root);
    definitions.values_mut().for_each(allow_variables);
    // After `allow_variables`: a stage's type must be one of these, as written.
    let stage = definitions
        .get_mut("stage")
        .expect("the stage schema is a definition of the pipeline's");
    let names: Vec<&str> = types.iter().map(|t| t.name).collect();
    stage["properties"]["type"]["enum"] = json!(names);
    stage["allOf"] = Value::Array(choices);
    root[DEFINITIONS] = Value::Object(definitions);
    tidy(&mut root);
    first(root, &["$schema", "title", "description"])
}

/// Adds the options schema of stage type `t`, and its own definitions, to
/// `definitions`; returns the `if`/`then` that applies it to the `with` of
/// a stage of that type.
fn options_choice(t: &StageType, definitions: &mut Map<String, Value>) -> Value {
    let name = format!("options.{}", t.name);
    let mut options = t.options_schema().to_value();
    hoist_definitions(&mut options, &name, definitions);
    let mut required = false;
    if let Some(fields) = options.as_object_mut() {
        fields.remove("$schema");
        // Not the Rust struct's name: editors show the title.
        fields.insert("title".into(), json!(format!("{} options", t.name)));
        fields
            .entry("description")
            .or_insert_with(|| json!(t.summary));
        required = fields
            .get("required")
            .and_then(Value::as_array)
            .is_some_and(|r| !r.is_empty());
    }
    definitions.insert(name.clone(), options);
    // `with:` with nothing after it is `{}`.
    let with = json!({"anyOf": [{"$ref": pointer(&name)}, {"type": "null"}]});
    let mut then = json!({"properties": {"with": with}});
    if required {
        then["required"] = json!(["with"]);
    }
    json!({
        "if": {"properties": {"type": {"const": t.name}}, "required": ["type"]},
        "then": then,
    })
}

/// `schema` with `keys` first, where a reader looks for them.
fn first(schema: Value, keys: &[&str]) -> Value {
    let Value::Object(mut fields) = schema else {
        return schema;
    };
    let mut ordered = Map::new();
    for key in keys {
        if let Some(value) = fields.remove(*key) {
            ordered.insert(key.to_string(), value);
        }
    }
    ordered.extend(fields);
    Value::Object(ordered)
}

/// Moves `schema`'s own definitions into `definitions` under `prefix.`, and
/// points its references (to them, or to `#`, itself) at their new places,
/// as the definition `prefix`.
fn hoist_definitions(schema: &mut Value, prefix: &str, definitions: &mut Map<String, Value>) {
    let mut own = Vec::new();
    if let Some(fields) = schema.as_object_mut() {
        for key in ["definitions", "$defs"] {
            if let Some(Value::Object(defs)) = fields.remove(key) {
                own.extend(defs);
            }
        }
    }
    retarget(schema, prefix);
    for (name, mut def) in own {
        retarget(&mut def, prefix);
        definitions.insert(format!("{prefix}.{name}"), def);
    }
}

/// Rewrites the local references in `schema` for its move to the
/// definition `prefix`.
fn retarget(schema: &mut Value, prefix: &str) {
    for_each_schema(schema, &mut |fields| {
        if let Some(Value::String(target)) = fields.get_mut("$ref")
            && let Some(new) = moved(target, prefix)
        {
            *target = new;
        }
    });
}

/// The new target of a reference: `#` is the options schema itself,
/// `#/definitions/X` (or `#/$defs/X`) its hoisted definition.
fn moved(target: &str, prefix: &str) -> Option<String> {
    if target == "#" {
        return Some(pointer(prefix));
    }
    let name = target
        .strip_prefix("#/definitions/")
        .or_else(|| target.strip_prefix("#/$defs/"))?;
    // `name` is escaped already, and a `.` needs no escaping.
    Some(format!("{}.{name}", pointer(prefix)))
}

/// A reference to the definition `name`, escaped as a JSON pointer.
fn pointer(name: &str) -> String {
    let escaped = name.replace('~', "~0").replace('/', "~1");
    format!("#/{DEFINITIONS}/{escaped}")
}

/// Lets a `${VAR}` string stand for any number, boolean or word from a
/// list in `schema`, as the runner replaces it before parsing. Editors
/// using the YAML language server say what was expected rather than
/// quoting the pattern (`patternErrorMessage`, a keyword of theirs).
fn allow_variables(schema: &mut Value) {
    for_each_schema(schema, &mut |fields| {
        let variable = json!({
            "type": "string",
            "pattern": VARIABLE,
            "patternErrorMessage": "Value is not accepted: not one of the values above, nor a ${VAR}.",
        });
        let types: Vec<&str> = match fields.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let scalar = types
            .iter()
            .any(|t| matches!(*t, "integer" | "number" | "boolean"));
        if scalar && !types.contains(&"string") {
            let mut widened: Vec<Value> = types.iter().map(|t| json!(t)).collect();
            widened.push(json!("string"));
            let expected = types
                .iter()
                .filter(|t| **t != "null")
                .copied()
                .collect::<Vec<_>>()
                .join(" or ");
            fields.insert("type".into(), Value::Array(widened));
            fields.insert("pattern".into(), json!(VARIABLE));
            let message =
                format!("Incorrect type. Expected {expected}, or a string with a ${{VAR}}.");
            fields.insert("patternErrorMessage".into(), json!(message));
        }
        if !fields.contains_key("anyOf")
            && let Some(words) = fields.remove("enum")
        {
            fields.insert("anyOf".into(), json!([{"enum": words}, variable]));
        } else if let Some(Value::Array(options)) = fields.get_mut("oneOf")
            && options.iter().all(|o| o.get("const").is_some())
        {
            options.push(variable);
        }
    });
}

/// Makes the schema read well in an editor's hover: doc-comment line breaks
/// inside a paragraph become spaces, and a `"default": null` (an absent
/// `Option`) goes.
fn tidy(schema: &mut Value) {
    for_each_schema(schema, &mut |fields| {
        if fields.get("default") == Some(&Value::Null) {
            fields.remove("default");
        }
        if let Some(Value::String(text)) = fields.get_mut("description") {
            *text = reflow(text);
        }
    });
}

/// Joins the lines of each paragraph; paragraphs stay apart.
fn reflow(text: &str) -> String {
    text.split("\n\n")
        .map(|p| p.lines().map(str::trim).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Calls `f` on every schema object in `schema`, inner ones first, so what
/// `f` adds is not visited. Values that are data (defaults, enums,
/// constants, examples) are not schemas and are left alone.
fn for_each_schema(schema: &mut Value, f: &mut impl FnMut(&mut Map<String, Value>)) {
    match schema {
        Value::Object(fields) => {
            for (key, value) in fields.iter_mut() {
                if !matches!(key.as_str(), "default" | "enum" | "const" | "examples") {
                    for_each_schema(value, f);
                }
            }
            f(fields);
        }
        Value::Array(items) => items.iter_mut().for_each(|v| for_each_schema(v, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_follow_hoisted_definitions() {
        let mut options = json!({
            "properties": {
                "format": {"$ref": "#/definitions/Format"},
                "nested": {"items": [{"$ref": "#/$defs/Inner"}, {"$ref": "#"}]},
            },
            "definitions": {"Format": {"enum": ["a"]}},
            "$defs": {"Inner": {"$ref": "#/definitions/Format"}},
        });
        let mut definitions = Map::new();
        hoist_definitions(&mut options, "options.x/y", &mut definitions);
        assert_eq!(
            options["properties"]["format"]["$ref"],
            "#/definitions/options.x~1y.Format"
        );
        assert_eq!(
            options["properties"]["nested"]["items"][0]["$ref"],
            "#/definitions/options.x~1y.Inner"
        );
        assert_eq!(
            options["properties"]["nested"]["items"][1]["$ref"],
            "#/definitions/options.x~1y"
        );
        assert!(options.get("definitions").is_none() && options.get("$defs").is_none());
        assert_eq!(
            definitions["options.x/y.Inner"]["$ref"],
            "#/definitions/options.x~1y.Format"
        );
        assert_eq!(definitions["options.x/y.Format"], json!({"enum": ["a"]}));
    }
}
