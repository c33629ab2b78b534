//! The custom binary lists the plugin's stage type and runs a pipeline
//! that uses it.

use std::path::Path;
use std::process::Command;

fn flow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flow-example-plugin"))
}

#[test]
fn custom_binary_lists_the_plugin_type_beside_the_built_ins() {
    let out = flow().arg("stages").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(names.contains(&"slugify"), "{text}");
    assert!(names.contains(&"map") && names.contains(&"write"), "{text}");
}

#[test]
fn custom_binary_documents_the_plugin_options() {
    let out = flow().args(["stages", "slugify"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("field: string (optional)"), "{text}");
    assert!(text.contains("The object field holding the text"), "{text}");
    assert!(
        text.contains("max: integer (optional, default 64)"),
        "{text}"
    );
}

#[test]
fn custom_binary_runs_a_pipeline_with_the_plugin_stage() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("example.yaml");
    let out = flow()
        .arg("run")
        .arg(&pipeline)
        .arg("--quiet")
        .env("OUT", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(dir.path().join("slugs.jsonl")).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(
        lines,
        [
            r#"{"title":"Hello, World!","slug":"hello-world"}"#,
            r#"{"title":"Flow: pipelines, declared","slug":"flow-pipelines-declared"}"#,
            r#"{"title":"Rust 2024 -- edition","slug":"rust-2024-edition"}"#,
        ]
    );
}

#[test]
fn custom_binary_validates_a_pipeline_using_the_plugin_type() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(
        &file,
        "stages:\n  - {name: a, type: list, with: {items: [x]}}\n  - {name: b, type: slugify}\n  - {name: c, type: drop}\n",
    )
    .unwrap();
    let out = flow().arg("validate").arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_buffering_sink_writes_every_item_in_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(
        &file,
        "stages:\n  - {name: n, type: generate, with: {count: 250}}\n  - {name: save, type: blocks, with: {path: out.jsonl, block: 100}}\n",
    )
    .unwrap();
    let out = flow()
        .arg("run")
        .arg(&file)
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let numbers: Vec<i64> = written.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(numbers, (0..250).collect::<Vec<_>>());
}
