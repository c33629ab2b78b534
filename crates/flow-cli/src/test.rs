//! `flow test`: runs the tests of pipeline files (and of `NAME.test.yaml`
//! files), each in a run of its own, and prints the results as `cargo
//! test` does: a line per test, then the failures, then `N passed, M
//! failed`. Exit 0 when every test passed, 1 when one failed, 2 when a
//! file is broken.

use std::path::{Path, PathBuf};

use crate::{exit, pipeline_files};

/// Runs the tests of `paths` (files, or directories: every `*.yaml` and
/// `*.yml` directly in one), those whose `FILE::NAME` contains `filter`.
pub(crate) fn run(paths: &[PathBuf], filter: Option<&str>) -> u8 {
    let mut broken = false;
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            match pipeline_files(path) {
                Ok(found) if found.is_empty() => {
                    eprintln!(
                        "{}: no pipeline files (*.yaml, *.yml) in this directory",
                        path.display()
                    );
                    broken = true;
                }
                Ok(found) => files.extend(found.into_iter().map(|f| (f, false))),
                Err(e) => {
                    eprintln!("{}: cannot read the directory: {e}", path.display());
                    broken = true;
                }
            }
        } else {
            files.push((path.clone(), true));
        }
    }
    let (mut passed, mut failed, mut filtered) = (0usize, 0usize, 0usize);
    let mut failures: Vec<(String, Vec<String>)> = Vec::new();
    let mut out = String::new();
    for (file, named) in files {
        let suite = match flow_runner::testing::load_suite(&file) {
            Ok(suite) => suite,
            Err(problems) => {
                flush(&mut out);
                eprintln!("{problems}");
                broken = true;
                continue;
            }
        };
        if suite.tests.is_empty() {
            if named {
                flush(&mut out);
                eprintln!("{}: no tests", file.display());
            }
            continue;
        }
        let shown = short_name(&file);
        for (k, test) in suite.tests.iter().enumerate() {
            let full = format!("{shown}::{}", test.name);
            if filter.is_some_and(|f| !full.contains(f)) {
                filtered += 1;
                continue;
            }
            match flow_runner::testing::run_test(&suite, k) {
                Ok(Ok(())) => {
                    passed += 1;
                    out.push_str(&format!("test {full} ... ok\n"));
                }
                Ok(Err(why)) => {
                    failed += 1;
                    out.push_str(&format!("test {full} ... FAILED\n"));
                    failures.push((full, why));
                }
                Err(problems) => {
                    // The pipeline changed or broke under the test.
                    flush(&mut out);
                    eprintln!("{problems}");
                    broken = true;
                    break;
                }
            }
            flush(&mut out);
        }
    }
    if !failures.is_empty() {
        out.push_str("\nfailures:\n");
        for (name, why) in &failures {
            out.push_str(&format!("\n---- {name} ----\n"));
            for w in why {
                out.push_str(w);
                out.push('\n');
            }
        }
    }
    // A run of nothing but broken files has only their problems to say.
    if !(broken && passed + failed == 0) {
        out.push_str(&format!("\n{passed} passed, {failed} failed"));
        if filtered > 0 {
            out.push_str(&format!(", {filtered} filtered out"));
        }
        out.push('\n');
        flush(&mut out);
    }
    if broken {
        exit::BAD_INPUT
    } else if failed > 0 {
        exit::FAILED
    } else {
        exit::OK
    }
}

/// Prints what is pending, so results appear as tests finish.
fn flush(out: &mut String) {
    crate::print_out(out);
    out.clear();
}

/// A file as tests name it: its file name.
fn short_name(file: &Path) -> String {
    file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
