//! The out-of-tree plugin in docs/plugins.md builds as written (its `path`
//! dependencies pointed at this repository) and its `flow` lists the
//! plugin's stage type next to the built-in ones, and runs it.

use std::path::Path;
use std::process::Command;

use flow_tests::{repo_root, run, write_pipeline};

/// The files the page shows, by their names.
fn plugin_files(page: &str) -> Vec<(String, String)> {
    page.split("<!-- plugin file: ")
        .skip(1)
        .map(|part| {
            let (name, rest) = part.split_once(" -->\n```").expect("a block follows");
            let body = rest.split_once('\n').expect("a language tag").1;
            let code = body.split("```\n").next().expect("the block ends");
            (name.to_string(), code.to_string())
        })
        .collect()
}

#[test]
fn the_plugin_from_the_guide_builds_and_runs() {
    let root = repo_root();
    let page = std::fs::read_to_string(root.join("docs/plugins.md")).unwrap();
    let files = plugin_files(&page);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Cargo.toml", "src/lib.rs", "src/main.rs"]);

    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path().join("my-plugin");
    for (name, code) in &files {
        // `../flow` is where the page puts a clone of flow: this repository.
        let code = code.replace("../flow/", &format!("{}/", root.display()));
        let path = krate.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, code).unwrap();
    }
    // The workspace's lock file keeps the versions (and the build) shared.
    std::fs::copy(root.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    // target/debug/deps/<this test> -> target/
    let target = std::env::current_exe().unwrap();
    let target = target
        .ancestors()
        .nth(3)
        .expect("under target/")
        .to_path_buf();
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--offline"])
        .env("CARGO_TARGET_DIR", target.join("out-of-tree"))
        .current_dir(&krate)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the guide's plugin does not build");
    let bin = target.join("out-of-tree/debug/my-plugin");

    let listed = run(Command::new(&bin).arg("stages"));
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    for ty in ["shout", "generate", "map", "write"] {
        assert!(
            listed.stdout.lines().any(|l| l.starts_with(ty)),
            "{ty} is not listed:\n{}",
            listed.stdout
        );
    }
    let file = write_pipeline(
        dir.path(),
        "p.yaml",
        "stages:\n  - {name: words, type: list, with: {items: [hi, there]}}\n  - {name: loud, type: shout, with: {suffix: '!'}}\n  - {name: out, type: stdout, with: {format: lines}}\n",
    );
    let out = run(Command::new(&bin).arg("run").arg(&file).arg("--quiet"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "HI!\nTHERE!\n");
    assert!(Path::new(&bin).exists());
}
