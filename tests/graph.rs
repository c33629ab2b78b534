//! Inspecting a pipeline without running it: `flow graph` (Mermaid and
//! Graphviz dot), `flow schema` (a JSON Schema of pipeline files, checked
//! with a validator against every file in pipelines/), and the log format
//! (`--log-format json`).

use std::path::Path;

use serde_json::Value;

use flow_tests::{example_plugin, flow, pipeline, repo_root, run, write_pipeline};

fn graph(file: &Path, format: &[&str]) -> String {
    run(flow().arg("graph").arg(file).args(format))
        .expect_code(0)
        .stdout
}

#[test]
fn mermaid_graph_of_fan_out_has_stage_names_as_ids_and_an_edge_per_input() {
    let text = graph(&pipeline("fan-out.yaml"), &[]);
    assert_eq!(
        text,
        r#"flowchart LR
    numbers(["numbers<br/>generate · 1 worker"])
    evens["evens<br/>filter · 1 worker"]
    tag-even["tag-even<br/>map · 1 worker"]
    tag-all["tag-all<br/>map · 1 worker"]
    report[("report<br/>write · 1 worker")]
    numbers --> evens
    evens --> tag-even
    numbers --> tag-all
    tag-even --> report
    tag-all --> report
"#
    );
    // `--format mermaid` is the default spelled out.
    assert_eq!(
        graph(&pipeline("fan-out.yaml"), &["--format", "mermaid"]),
        text
    );
}

#[test]
fn mermaid_graph_of_scraper_labels_workers_and_rate_and_dashes_the_dead_letter_route() {
    let text = graph(&pipeline("scraper.yaml"), &[]);
    assert_eq!(
        text,
        r#"flowchart LR
    urls(["urls<br/>read · 1 worker"])
    clean["clean<br/>map · 1 worker"]
    fetch["fetch<br/>http · 8 workers · 20/s per key"]
    pages[("pages<br/>write · 1 worker")]
    failed[("failed<br/>write · 1 worker")]
    urls --> clean
    clean --> fetch
    fetch --> pages
    fetch -. on_error .-> failed
"#
    );
}

#[test]
fn dot_graph_of_fan_out_quotes_ids_and_breaks_labels_in_two() {
    let text = graph(&pipeline("fan-out.yaml"), &["--format", "dot"]);
    assert_eq!(
        text,
        r#"digraph "fan-out" {
    rankdir=LR;
    node [shape=box];
    "numbers" [shape=box, style=rounded, label="numbers\ngenerate · 1 worker"];
    "evens" [label="evens\nfilter · 1 worker"];
    "tag-even" [label="tag-even\nmap · 1 worker"];
    "tag-all" [label="tag-all\nmap · 1 worker"];
    "report" [shape=cylinder, label="report\nwrite · 1 worker"];
    "numbers" -> "evens";
    "evens" -> "tag-even";
    "numbers" -> "tag-all";
    "tag-even" -> "report";
    "tag-all" -> "report";
}
"#
    );
}

#[test]
fn dot_graph_of_scraper_dashes_the_on_error_edge() {
    let text = graph(&pipeline("scraper.yaml"), &["--format", "dot"]);
    assert!(
        text.contains(r#""fetch" [label="fetch\nhttp · 8 workers · 20/s per key"];"#),
        "{text}"
    );
    assert!(text.contains(r#""fetch" -> "pages";"#), "{text}");
    assert!(
        text.contains(r#""fetch" -> "failed" [style=dashed, label="on_error"];"#),
        "{text}"
    );
    assert_eq!(text.matches(" -> ").count(), 4, "{text}");
}

#[test]
fn graph_shows_a_shared_limit_by_name_and_rate_and_escapes_ids_mermaid_would_misread() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        dir.path(),
        "p.yaml",
        r#"limits:
  polite: { rate: 10/s, burst: 2 }
stages:
  - { name: end, type: generate, with: { count: 3 } }
  - { name: a--b, type: sleep, workers: 3, rate: polite, with: { duration: 1ms } }
  - { name: style, type: drop }
"#,
    );
    let text = graph(&file, &[]);
    assert!(
        text.contains(r#"    end_(["end<br/>generate · 1 worker"])"#),
        "{text}"
    );
    assert!(
        text.contains(r#"    a__b["a--b<br/>sleep · 3 workers · polite (10/s)"]"#),
        "{text}"
    );
    assert!(
        text.contains("    end_ --> a__b\n    a__b --> style_\n"),
        "{text}"
    );
    let dot = graph(&file, &["--format", "dot"]);
    assert!(dot.contains(r#""end" -> "a--b";"#), "{dot}");
}

#[test]
fn graph_of_a_bad_file_prints_its_problems_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        dir.path(),
        "bad.yaml",
        "stages:\n  - {name: nums, type: generate, with: {count: 3}}\n  - {name: out, type: stdot}\n",
    );
    for format in ["mermaid", "dot"] {
        let out = run(flow().arg("graph").arg(&file).args(["--format", format])).expect_code(2);
        assert!(out.stdout.is_empty(), "{}", out.stdout);
        assert!(
            out.stderr.contains("bad.yaml:3:")
                && out
                    .stderr
                    .contains("unknown stage type \"stdot\" (did you mean \"stdout\"?)"),
            "{}",
            out.stderr
        );
    }
}

mod schema {
    use super::*;

    fn schema_of(cmd: &mut std::process::Command) -> Value {
        let out = run(cmd.arg("schema")).expect_code(0);
        serde_json::from_str(&out.stdout).expect("flow schema prints JSON")
    }

    fn schema() -> Value {
        schema_of(&mut flow())
    }

    fn validator(schema: &Value) -> jsonschema::Validator {
        jsonschema::draft7::meta::validate(schema).expect("a valid draft-07 schema");
        jsonschema::draft7::new(schema).expect("the schema compiles")
    }

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).expect("the pipeline is YAML")
    }

    /// The validator's complaints about `doc`, one a line.
    fn errors(validator: &jsonschema::Validator, doc: &Value) -> String {
        validator
            .iter_errors(doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn every_pipeline_file_validates_against_the_schema() {
        let validator = validator(&schema());
        let mut checked = 0;
        for entry in std::fs::read_dir(repo_root().join("pipelines")).unwrap() {
            let path = entry.unwrap().path();
            // NAME.test.yaml files are tests of a pipeline, not pipelines.
            let tests = path.to_string_lossy().ends_with(".test.yaml");
            if path.extension().is_some_and(|e| e == "yaml") && !tests {
                let doc = yaml(&std::fs::read_to_string(&path).unwrap());
                let errors = errors(&validator, &doc);
                assert!(errors.is_empty(), "{}:\n{errors}", path.display());
                checked += 1;
            }
        }
        assert!(checked >= 10, "checked {checked} pipelines");
    }

    #[test]
    fn the_schema_rejects_what_flow_validate_rejects() {
        let validator = validator(&schema());
        let good = std::fs::read_to_string(pipeline("scraper.yaml")).unwrap();
        assert!(errors(&validator, &yaml(&good)).is_empty());
        let broken = [
            ("a misspelt stage key", "    workers: 8", "    wokers: 8"),
            ("a wrong option type", "as: text }", "as: 3 }"),
            ("an unknown option value", "as: text }", "as: txt }"),
            ("an unknown option key", "with: { url: .,", "with: { ur: .,"),
            ("an unknown stage type", "type: http", "type: htp"),
            ("zero workers", "workers: 8", "workers: 0"),
            ("a wrong retry key", "attempts: 3", "tries: 3"),
            ("a misspelt top-level key", "stages:", "stage:"),
            (
                "a stage without the options its type requires",
                "    with: { url: ., as: text }\n",
                "    with: { url: ., as: text }\n  - name: odd\n    type: filter\n    inputs: []\n",
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (what, from, to) in broken {
            assert!(
                good.contains(from),
                "{what}: {from:?} is not in scraper.yaml"
            );
            let text = good.replacen(from, to, 1);
            assert!(
                !validator.is_valid(&yaml(&text)),
                "the schema accepts {what}:\n{text}"
            );
            // The schema is no stricter than flow: flow rejects it too.
            let file = write_pipeline(dir.path(), "broken.yaml", &text);
            run(flow().arg("validate").arg(&file)).expect_code(2);
        }
    }

    #[test]
    fn variables_may_stand_for_numbers_and_words_but_not_for_nonsense() {
        let validator = validator(&schema());
        let doc = |count: &str, format: &str| {
            yaml(&format!(
                "stages:\n  - {{name: n, type: generate, workers: 1, with: {{count: {count}}}}}\n  - {{name: out, type: stdout, with: {{format: {format}}}}}\n"
            ))
        };
        assert!(validator.is_valid(&doc("3", "lines")));
        assert!(validator.is_valid(&doc("'${COUNT:-3}'", "'${FORMAT:-lines}'")));
        assert!(!validator.is_valid(&doc("many", "lines")));
        assert!(!validator.is_valid(&doc("3", "line")));
    }

    #[test]
    fn the_schema_documents_every_runner_owned_key_and_lists_the_stage_types() {
        let schema = schema();
        assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
        let stage = &schema["definitions"]["stage"];
        assert_eq!(stage["additionalProperties"], false);
        let keys = [
            "name",
            "type",
            "inputs",
            "workers",
            "queue",
            "queue_bytes",
            "order",
            "ordered",
            "priority",
            "rate",
            "burst",
            "rate_key",
            "retry",
            "timeout",
            "on_error",
            "with",
        ];
        let properties = stage["properties"].as_object().unwrap();
        assert_eq!(properties.keys().collect::<Vec<_>>(), keys);
        for key in keys {
            let description = properties[key]["description"].as_str().unwrap_or_default();
            assert!(description.len() > 20, "{key}: {description:?}");
        }
        // The types `flow stages` lists, each with its options under `with`.
        let listed = run(flow().arg("stages")).expect_code(0).stdout;
        let types = stage["properties"]["type"]["enum"].as_array().unwrap();
        for line in listed.lines().take_while(|l| !l.is_empty()) {
            let name = line.split_whitespace().next().unwrap();
            assert!(types.contains(&Value::from(name)), "{name} missing");
            let options = &schema["definitions"][format!("options.{name}")];
            assert_eq!(options["type"], "object", "{name}: {options}");
        }
        assert_eq!(types.len(), stage["allOf"].as_array().unwrap().len());
        // An option's documentation is the one `flow stages TYPE` prints.
        let expr = &schema["definitions"]["options.map"]["properties"]["expr"];
        let described = run(flow().args(["stages", "map"])).expect_code(0).stdout;
        let first_words: String = expr["description"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .take(5)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            described
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .contains(&first_words),
            "{first_words:?} not in:\n{described}"
        );
    }

    #[test]
    fn a_plugin_binary_s_schema_includes_its_stage_type() {
        let plugin_schema = schema_of(&mut example_plugin());
        let example =
            std::fs::read_to_string(repo_root().join("crates/flow-example-plugin/example.yaml"))
                .unwrap();
        let plugin = validator(&plugin_schema);
        let complaints = errors(&plugin, &yaml(&example));
        assert!(complaints.is_empty(), "{complaints}");
        assert!(!plugin.is_valid(&yaml(&example.replace("field: title", "field: 3"))));
        // The plain binary does not know the plugin's type.
        assert!(!validator(&schema()).is_valid(&yaml(&example)));
    }
}

mod logs {
    use super::*;

    /// A pipeline that logs each of 3 items at warn and drops one.
    fn logging_pipeline(dir: &Path) -> std::path::PathBuf {
        write_pipeline(
            dir,
            "logs.yaml",
            r#"stages:
  - { name: nums, type: generate, with: { count: 3 } }
  - { name: shout, type: log, with: { level: warn } }
  - { name: check, type: map, with: { expr: 'if . == 1 then error("one is odd") else . end' } }
  - { name: out, type: drop }
"#,
        )
    }

    fn json_lines(stderr: &str) -> Vec<Value> {
        stderr
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not a JSON line: {l:?}: {e}\n{stderr}"));
                assert!(v.is_object(), "{l}");
                v
            })
            .collect()
    }

    #[test]
    fn json_log_format_writes_one_object_per_line_with_level_and_message() {
        let dir = tempfile::tempdir().unwrap();
        let file = logging_pipeline(dir.path());
        let out = run(flow()
            .args(["run", "--quiet", "--log-format", "json"])
            .arg(&file))
        .expect_code(3);
        let lines = json_lines(&out.stderr);
        for line in &lines {
            assert!(
                line["level"].is_string() && line["message"].is_string(),
                "{line}"
            );
            assert!(line["timestamp"].is_string(), "{line}");
        }
        let messages: Vec<&str> = lines
            .iter()
            .map(|l| l["message"].as_str().unwrap())
            .collect();
        for n in 0..3 {
            assert!(
                messages.contains(&format!("shout: {n}").as_str()),
                "{messages:?}"
            );
        }
        let dropped = lines
            .iter()
            .find(|l| l["message"].as_str().unwrap().starts_with("item dropped"))
            .unwrap_or_else(|| panic!("no dropped item in {lines:?}"));
        assert_eq!(dropped["level"], "WARN");
        assert_eq!(dropped["stage"], "check", "fields are keys of their own");
        assert!(dropped["message"].as_str().unwrap().contains("one is odd"));
    }

    #[test]
    fn text_is_the_default_log_format() {
        let dir = tempfile::tempdir().unwrap();
        let file = logging_pipeline(dir.path());
        let out = run(flow().args(["run", "--quiet"]).arg(&file)).expect_code(3);
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains("shout: 0"))
            .unwrap_or_else(|| panic!("{}", out.stderr));
        assert!(line.contains("WARN") && !line.starts_with('{'), "{line}");
    }

    #[test]
    fn json_logs_follow_the_verbosity_and_rust_log() {
        // -v adds flow's debug lines: the queue's water marks.
        let out = run(flow()
            .args(["-v", "--log-format", "json", "run", "--quiet"])
            .arg(pipeline("backpressure.yaml"))
            .env("OUT", tempfile::tempdir().unwrap().path())
            .env_remove("RUST_LOG"))
        .expect_code(0);
        let lines = json_lines(&out.stderr);
        let full = lines
            .iter()
            .find(|l| {
                l["level"] == "DEBUG" && l["message"].as_str().unwrap().contains("high water")
            })
            .unwrap_or_else(|| panic!("no water mark in {lines:?}"));
        assert_eq!(full["stage"], "slow");
        assert_eq!(full["capacity"], 4);

        // RUST_LOG=error hides the warnings.
        let dir = tempfile::tempdir().unwrap();
        let file = logging_pipeline(dir.path());
        let out = run(flow()
            .args(["run", "--quiet", "--log-format", "json"])
            .arg(&file)
            .env("RUST_LOG", "error"))
        .expect_code(3);
        assert_eq!(out.stderr, "", "nothing at error level");
    }
}
