//! `flow graph`: the pipeline as a Mermaid flowchart or a Graphviz digraph.
//!
//! Stage names are the node ids; each node is labelled with the stage's
//! name, type, workers and rate. Solid edges carry items from `inputs`,
//! labelled with the port when they read a named one (`triage.valid`);
//! dashed edges labelled `on_error` are dead-letter routes.

use flow_core::StageKind;
use flow_runner::Plan;
use flow_runner::plan::{Edge, EdgeKind, PlannedStage};

/// The output format of `flow graph`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    Mermaid,
    Dot,
}

/// Prints the graph of the pipeline file at `path`; a bad file prints its
/// problems and exits 2, as `flow validate` does.
pub fn show(path: &std::path::Path, format: GraphFormat) -> u8 {
    match flow_runner::load(path) {
        Ok(plan) => {
            let text = match format {
                GraphFormat::Mermaid => mermaid(&plan),
                GraphFormat::Dot => dot(&plan),
            };
            crate::print_out(&text)
        }
        Err(problems) => {
            eprintln!("{problems}");
            crate::exit::BAD_INPUT
        }
    }
}

/// A Mermaid flowchart, left to right: sources are stadiums, sinks
/// cylinders, processors boxes.
pub fn mermaid(plan: &Plan) -> String {
    let ids = mermaid_ids(plan);
    let mut out = String::from("flowchart LR\n");
    for (stage, id) in plan.stages.iter().zip(&ids) {
        let label = mermaid_text(&stage.name) + "<br/>" + &mermaid_text(&summary(stage));
        let (open, close) = match stage.kind {
            StageKind::Source => ("([", "])"),
            StageKind::Processor => ("[", "]"),
            StageKind::Sink => ("[(", ")]"),
        };
        out += &format!("    {id}{open}\"{label}\"{close}\n");
    }
    let (items, errors) = edges(plan);
    for e in items {
        match port_of(plan, e) {
            None => out += &format!("    {} --> {}\n", ids[e.from], ids[e.to]),
            Some(port) => {
                let port = mermaid_text(port);
                out += &format!("    {} -- \"{port}\" --> {}\n", ids[e.from], ids[e.to]);
            }
        }
    }
    for e in errors {
        out += &format!("    {} -. on_error .-> {}\n", ids[e.from], ids[e.to]);
    }
    out
}

/// A Graphviz digraph, left to right, with the same shapes as [`mermaid`].
pub fn dot(plan: &Plan) -> String {
    let mut out = format!("digraph {} {{\n", dot_quote(&plan.name));
    out += "    rankdir=LR;\n    node [shape=box];\n";
    for stage in &plan.stages {
        let shape = match stage.kind {
            StageKind::Source => "shape=box, style=rounded, ",
            StageKind::Processor => "",
            StageKind::Sink => "shape=cylinder, ",
        };
        let label = format!("{}\n{}", stage.name, summary(stage));
        out += &format!(
            "    {} [{shape}label={}];\n",
            dot_quote(&stage.name),
            dot_quote(&label)
        );
    }
    let name = |i: usize| dot_quote(&plan.stages[i].name);
    let (items, errors) = edges(plan);
    for e in items {
        match port_of(plan, e) {
            None => out += &format!("    {} -> {};\n", name(e.from), name(e.to)),
            Some(port) => {
                out += &format!(
                    "    {} -> {} [label={}];\n",
                    name(e.from),
                    name(e.to),
                    dot_quote(port)
                )
            }
        }
    }
    for e in errors {
        out += &format!(
            "    {} -> {} [style=dashed, label=\"on_error\"];\n",
            name(e.from),
            name(e.to)
        );
    }
    out += "}\n";
    out
}

/// `http · 8 workers · 20/s per key`: the type, the workers and the rate.
fn summary(stage: &PlannedStage) -> String {
    let workers = match stage.workers {
        1 => "1 worker".to_string(),
        n => format!("{n} workers"),
    };
    let mut parts = vec![stage.type_name.clone(), workers];
    if let Some(rate) = &stage.control.rate_text {
        let per_key = if stage.control.rate_key.is_some() {
            " per key"
        } else {
            ""
        };
        parts.push(format!("{rate}{per_key}"));
    }
    parts.join(" · ")
}

/// The plan's edges, drawn in two groups: those that carry items (in file
/// order of the stage reading them), then the dead-letter routes (in file
/// order of the failing stage).
fn edges(plan: &Plan) -> (Vec<&Edge>, Vec<&Edge>) {
    let (errors, items) = plan.edges().iter().partition(|e| e.kind.is_error());
    (items, errors)
}

/// The name of the named port an edge carries, if it carries one.
fn port_of<'p>(plan: &'p Plan, e: &Edge) -> Option<&'p str> {
    match e.kind {
        EdgeKind::Port(k) => plan.stages[e.from]
            .ports
            .names
            .get(k as usize)
            .map(String::as_str),
        _ => None,
    }
}

/// Mermaid node ids: the stage names, except where Mermaid's grammar would
/// misread one (a keyword such as `end`, or a `--` that starts an arrow);
/// those get `_` for `-`, and `_` appended until the id is unique.
fn mermaid_ids(plan: &Plan) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for stage in &plan.stages {
        let mut id = stage.name.clone();
        if !mermaid_safe(&id) {
            id = id.replace('-', "_");
            while !mermaid_safe(&id)
                || plan.stages.iter().any(|s| s.name == id)
                || ids.contains(&id)
            {
                id.push('_');
            }
        }
        ids.push(id);
    }
    ids
}

/// Whether a stage name (letters, digits, `_`, `-`) reads as one Mermaid
/// node id. Mermaid's lexer takes a keyword (case-sensitive) followed by
/// `-` or nothing as the keyword, and `--` as the start of an arrow.
fn mermaid_safe(name: &str) -> bool {
    const KEYWORDS: [&str; 12] = [
        "end",
        "graph",
        "flowchart",
        "subgraph",
        "style",
        "linkStyle",
        "classDef",
        "class",
        "click",
        "call",
        "href",
        "interpolate",
    ];
    let word = name.split('-').next().unwrap_or_default();
    !name.contains("--") && !KEYWORDS.contains(&word)
}

/// Text inside a quoted Mermaid label: quotes and angle brackets as
/// Mermaid's entity codes, so only our `<br/>` is markup.
fn mermaid_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out += "#quot;",
            '#' => out += "#35;",
            '<' => out += "#lt;",
            '>' => out += "#gt;",
            c => out.push(c),
        }
    }
    out
}

/// A Graphviz quoted string; `\n` breaks a label's lines.
fn dot_quote(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mermaid_keywords_and_arrows_are_not_node_ids() {
        for name in [
            "fetch", "tag-even", "ends", "end_", "End", "x-o", "a-", "default",
        ] {
            assert!(mermaid_safe(name), "{name}");
        }
        for name in ["end", "end-x", "a--b", "b--", "style", "class-a", "graph-x"] {
            assert!(!mermaid_safe(name), "{name}");
        }
    }

    #[test]
    fn label_text_escapes_quotes_and_markup() {
        assert_eq!(mermaid_text(r#"a"b<c>#"#), "a#quot;b#lt;c#gt;#35;");
        assert_eq!(dot_quote("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
    }
}
