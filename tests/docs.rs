//! The documentation stays true: every pipeline shown in the README and in
//! `docs/` validates, the copies of files in `pipelines/` are exact, links
//! between the pages lead somewhere and stay inside the repository.

use std::path::PathBuf;

use flow_tests::{flow, repo_root, run, write_pipeline};

/// The README and every page under `docs/`, with their paths.
fn pages() -> Vec<(PathBuf, String)> {
    let root = repo_root();
    let mut paths = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    paths.extend(docs);
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

#[test]
fn every_pipeline_in_the_docs_validates() {
    let mut checked = 0;
    for (page, text) in pages() {
        let blocks = text
            .split("```yaml\n")
            .skip(1)
            .filter_map(|b| b.split("```").next())
            .filter(|b| b.contains("stages:"));
        for (i, yaml) in blocks.enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let file = write_pipeline(dir.path(), &format!("doc-{i}.yaml"), yaml);
            let out = run(flow().arg("validate").arg(&file));
            assert_eq!(
                out.code,
                0,
                "{} pipeline {i} does not validate:\n{yaml}\n{}",
                page.display(),
                out.stderr
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "found {checked} pipelines in the docs");
}

#[test]
fn pipelines_shown_in_the_docs_are_exact_copies_of_their_files() {
    let root = repo_root();
    let mut shown = 0;
    for (page, text) in pages() {
        for part in text.split("<!-- file: ").skip(1) {
            let (file, rest) = part
                .split_once(" -->\n```yaml\n")
                .expect("a yaml block follows the marker");
            let block = rest.split("```\n").next().unwrap();
            let copy = std::fs::read_to_string(root.join(file)).unwrap();
            assert_eq!(
                block,
                copy,
                "{}'s copy of {file} differs from the file",
                page.display()
            );
            shown += 1;
        }
    }
    assert!(shown >= 2, "found {shown} marked copies");
}

/// Every path a page links to exists inside the repository: a reader of a
/// clone has nothing else.
#[test]
fn links_lead_to_files_inside_the_repository() {
    let root = repo_root().canonicalize().unwrap();
    for (page, text) in pages() {
        let dir = page.parent().unwrap();
        for part in text.split("](").skip(1) {
            let target = part.split(')').next().unwrap();
            if target.starts_with("http") || target.starts_with('#') || target.contains(' ') {
                continue;
            }
            let path = dir.join(target.split('#').next().unwrap());
            let resolved = path.canonicalize().unwrap_or_else(|_| {
                panic!("{} links to {target}, which does not exist", page.display())
            });
            assert!(
                resolved.starts_with(&root),
                "{} links to {target}, outside the repository",
                page.display()
            );
        }
    }
}

#[test]
fn the_inputs_the_cookbook_reads_by_default_ship_with_it() {
    let dir = repo_root().join("pipelines");
    let mut found = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // `read` inputs are written `path: '${VAR:-default}', format: …`.
        for part in text.split("path: '${").skip(1) {
            let (var, rest) = part.split_once(":-").unwrap_or(("", ""));
            let default = rest.split('}').next().unwrap_or("");
            if var == "OUT" || !rest.split('}').nth(1).unwrap_or("").contains("format:") {
                continue;
            }
            let input = dir.join(default);
            let lines = std::fs::read_to_string(&input).unwrap_or_else(|e| {
                panic!(
                    "{} reads {} by default: {e}",
                    path.display(),
                    input.display()
                )
            });
            let mut records = lines
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'));
            if default.ends_with(".jsonl") {
                assert!(
                    records.all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
                    "{} holds something else than JSON lines",
                    input.display()
                );
            } else {
                assert!(
                    records.all(|l| l.starts_with("https://")),
                    "{} holds something else than URLs",
                    input.display()
                );
            }
            found += 1;
        }
    }
    assert!(found >= 2, "found {found} default inputs");
}
