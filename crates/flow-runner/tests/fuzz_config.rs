//! Fuzzing the pipeline-file loader: every pipeline of the repository and a
//! few hand-written files, mutated (bytes flipped, deleted, inserted; YAML
//! syntax and `${…}` references inserted; regions duplicated; deep nesting
//! wrapped in), must load or fail with problems, never panic, overflow the
//! stack of a thread with the usual 2 MiB, or hang.
//!
//! In CI it runs the default number of cases (256); for a longer run:
//!
//!     PROPTEST_CASES=100000 cargo test -p flow-runner --release --test fuzz_config
//!
//! Every crash a run found is a named regression test at the end.

mod common;

use std::path::{Path, PathBuf};

use proptest::prelude::*;

/// The repository's pipelines and benches, and hand-written files that use
/// the test stage types (so stages are built, not only parsed).
fn seeds() -> &'static [String] {
    static SEEDS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(read_seeds)
}

fn read_seeds() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files: Vec<PathBuf> = ["pipelines", "benches", "crates/flow-example-plugin"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(root.join(dir)).into_iter().flatten())
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut seeds: Vec<String> = files
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("a pipeline file reads"))
        .collect();
    assert!(
        seeds.len() >= 10,
        "the repository's pipelines were not found"
    );
    seeds.extend(HAND_WRITTEN.iter().map(|s| s.to_string()));
    seeds
}

const HAND_WRITTEN: [&str; 4] = [
    r#"
name: fuzz
limits:
  polite: { rate: 10/s, burst: 3 }
defaults:
  retry: { attempts: 2, backoff: 10ms, max_backoff: 1s }
  timeout: 5s
  queue: 8
stages:
  - name: src
    type: t_source
    rate: polite
    on_error: dead
    with: { id: fuzz, count: 3 }
  - name: work
    type: t_pass
    workers: ${N:-2}
    order: priority
    priority: '.i'
    ordered: ${FLAG:-true}
    rate: 5/s
    rate_key: '.src'
    queue_bytes: 1MiB
    on_error: dead
    with: { copies: 2 }
  - name: out
    type: t_sink
    with: { id: fuzz }
  - name: dead
    type: t_sink
    inputs: []
    with: { id: fuzz-dead }
"#,
    r#"
stages:
  - &src { name: a, type: t_source, with: &w { id: f2, count: 1 } }
  - { name: b, type: t_source, with: *w }
  - name: both
    type: t_pass
    inputs: [a, b]
  - name: out
    type: t_sink
    with: { id: '${ID:-f2}', note: "${V}" }
"#,
    "stages:\n  - name: s\n    type: t_source\n    with:\n      id: x\n      count: |\n        ${N}\n  - name: o\n    type: t_sink\n    with: { id: x }\n",
    "{stages: [{name: s, type: t_source, with: {id: y}}, {name: o, type: t_sink, with: {id: y}, workers: 3}]}\n",
];

/// YAML syntax and references to insert.
const SNIPPETS: [&str; 48] = [
    ":",
    ": ",
    "- ",
    "-",
    "{",
    "}",
    "[",
    "]",
    ",",
    "#",
    " #",
    "&a ",
    "*a",
    "*b",
    "!!str ",
    "!!int ",
    "!x ",
    "'",
    "\"",
    "|\n",
    ">-\n",
    "\n",
    "\n  ",
    "\n      ",
    "? ",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "\t",
    "\\",
    "~",
    "null",
    "1e999",
    "0x",
    "99999999999999999999999",
    "${",
    "$$",
    "${N}",
    "${V}",
    "${NL}",
    "${DEEP:-[[[}",
    "${UNSET}",
    "${BAD:?boom}",
    "${1x}",
    "\u{E000}",
    "\u{FEFF}",
    "\0",
    "é",
];

/// Values to put where a value was: edges of every bound, wrong types,
/// aliases, tags, references, nesting.
const VALUES: [&str; 40] = [
    "0",
    "1",
    "-1",
    "10000",
    "10001",
    "1000000",
    "4294967296",
    "99999999999999999999999",
    "1e999",
    "0x7fffffffffffffff",
    "1.5",
    "~",
    "",
    "[]",
    "{}",
    "'x'",
    "true",
    "5/s",
    "0/s",
    "1000001/s",
    "4294967295/1ns",
    "1/366d",
    "10000000y",
    "365d",
    "0s",
    "64GiB",
    "65GiB",
    "*a",
    "&a x",
    "!!int x",
    "${N}",
    "'${V}'",
    "${LONG}",
    "[[[[[[1]]]]]]",
    "{a: {b: {c: 1}}}",
    "priority",
    "lifo",
    "fail",
    "out",
    "{attempts: 1001, backoff: 400d}",
];

/// Keys to put where a key was: the runner's own, and a few options.
const KEYS: [&str; 28] = [
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
    "stages",
    "limits",
    "defaults",
    "attempts",
    "backoff",
    "max_backoff",
    "jitter",
    "count",
    "id",
    "copies",
    "<<",
    "? [a]",
];

/// The environment the mutants see: hostile values, a number, a flag.
fn env(name: &str) -> Option<String> {
    match name {
        "N" => Some("4".into()),
        "FLAG" => Some("true".into()),
        "V" => Some("x'\n  - name: evil\n    type: t_sink\n    with: {id: evil}\n".into()),
        "NL" => Some("\n".into()),
        "DEEP" => Some("[".repeat(1000)),
        "ID" => Some("${V}".into()),
        "LONG" => Some("a".repeat(100_000)),
        _ => None,
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Delete {
        at: usize,
        len: usize,
    },
    Insert {
        at: usize,
        snippet: usize,
    },
    Duplicate {
        at: usize,
        len: usize,
        to: usize,
    },
    /// Wraps the text at `at` in `depth` levels of one kind of nesting.
    Nest {
        at: usize,
        depth: usize,
        kind: u8,
    },
    /// Replaces the value after the next `: ` with one of [`VALUES`].
    Value {
        at: usize,
        value: usize,
    },
    /// Replaces the key of the line at `at` with one of [`KEYS`].
    Key {
        at: usize,
        key: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        1 => (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        2 => (any::<usize>(), 0..SNIPPETS.len()).prop_map(|(at, snippet)| Mutation::Insert {
            at,
            snippet
        }),
        1 => (any::<usize>(), 1usize..400, any::<usize>())
            .prop_map(|(at, len, to)| Mutation::Duplicate { at, len, to }),
        1 => (any::<usize>(), 1usize..300, 0u8..4).prop_map(|(at, depth, kind)| Mutation::Nest {
            at,
            depth,
            kind
        }),
        3 => (any::<usize>(), 0..VALUES.len())
            .prop_map(|(at, value)| Mutation::Value { at, value }),
        2 => (any::<usize>(), 0..KEYS.len()).prop_map(|(at, key)| Mutation::Key { at, key }),
    ]
}

/// Mutations that mostly keep the file YAML: values and keys replaced.
fn semantic_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), 0..VALUES.len())
            .prop_map(|(at, value)| Mutation::Value { at, value }),
        1 => (any::<usize>(), 0..KEYS.len()).prop_map(|(at, key)| Mutation::Key { at, key }),
    ]
}

fn apply(text: &str, mutations: &[Mutation]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for m in mutations {
        let n = bytes.len();
        let pos = |at: usize| at % (n + 1);
        match *m {
            Mutation::Flip { at, bit } if n > 0 => bytes[at % n] ^= 1 << bit,
            Mutation::Flip { .. } => {}
            Mutation::Delete { at, len } => {
                let at = pos(at);
                bytes.drain(at..(at + len).min(n));
            }
            Mutation::Insert { at, snippet } => {
                let at = pos(at);
                bytes.splice(at..at, SNIPPETS[snippet].bytes());
            }
            Mutation::Duplicate { at, len, to } => {
                let at = pos(at);
                let region = bytes[at..(at + len).min(n)].to_vec();
                let to = pos(to);
                bytes.splice(to..to, region);
            }
            Mutation::Nest { at, depth, kind } => {
                let at = pos(at);
                let (open, close) = match kind {
                    0 => ("[", "]"),
                    1 => ("{a: ", "}"),
                    2 => ("- ", ""),
                    _ => ("\n  a:", ""),
                };
                let end = bytes[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |i| at + i);
                bytes.splice(end..end, close.repeat(depth).bytes());
                bytes.splice(at..at, open.repeat(depth).bytes());
            }
            Mutation::Value { at, value } => {
                let at = pos(at);
                let Some(colon) = find(&bytes[at..], b": ").map(|i| at + i + 2) else {
                    continue;
                };
                let end = line_end(&bytes, colon);
                bytes.splice(colon..end, VALUES[value].bytes());
            }
            Mutation::Key { at, key } => {
                let at = pos(at);
                let start = bytes[..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let end = line_end(&bytes, start);
                let Some(colon) = find(&bytes[start..end], b":").map(|i| start + i) else {
                    continue;
                };
                // After the indentation and a `- `, if any.
                let mut key_start = start;
                while key_start < colon && matches!(bytes[key_start], b' ' | b'-') {
                    key_start += 1;
                }
                bytes.splice(key_start..colon, KEYS[key].bytes());
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn line_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |i| from + i)
}

/// Loads `text` on a thread with a 2 MiB stack; returns the panic message
/// if loading panicked.
fn load_panics(text: &str) -> Option<String> {
    let text = text.to_string();
    let thread = std::thread::Builder::new()
        .name("load".into())
        .stack_size(2 << 20)
        .spawn(move || {
            std::panic::catch_unwind(|| {
                // Problems or a plan: either is fine, nothing runs.
                let _ = flow_runner::load_str(&text, Path::new("fuzz.yaml"), env);
            })
        })
        .expect("a thread starts");
    match thread.join().expect("the thread ends") {
        Ok(()) => None,
        Err(payload) => Some(
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        ),
    }
}

#[test]
fn every_seed_loads_without_a_panic() {
    for seed in seeds() {
        assert_eq!(load_panics(seed), None, "{seed}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Mutants of the same few files: a failure is cheap to shrink.
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_mutated_pipeline_never_panics_the_loader(
        seed in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        let seeds = seeds();
        let text = apply(&seeds[seed.index(seeds.len())], &mutations);
        let panic = load_panics(&text);
        prop_assert!(panic.is_none(), "panicked: {:?}\n--- file:\n{}", panic, text);
    }

    #[test]
    fn a_pipeline_with_hostile_values_and_keys_never_panics_the_loader(
        seed in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(semantic_mutation(), 1..6),
    ) {
        let seeds = seeds();
        let text = apply(&seeds[seed.index(seeds.len())], &mutations);
        let panic = load_panics(&text);
        prop_assert!(panic.is_none(), "panicked: {:?}\n--- file:\n{}", panic, text);
    }
}

// Regressions. Long runs of both properties (2,000,000 cases each) found
// no panic in this loader; these are the files the review found taking
// the old one down, kept here with the shapes fuzzing stresses most.

#[test]
fn regression_deep_block_sequences_on_one_line() {
    // 80 KB of `- - - …` took 47 s and 8 GB with a path string per node.
    let text = format!(
        "stages:\n  - name: s\n    type: t_source\n    with:\n      id: {}x\n",
        "- ".repeat(40_000)
    );
    assert_eq!(load_panics(&text), None);
}

#[test]
fn regression_nesting_of_every_kind_past_the_limit() {
    for (open, close) in [("[", "]"), ("{a: ", "}"), ("[{a: ", "}]")] {
        let text = format!("stages: {}1{}\n", open.repeat(5_000), close.repeat(5_000));
        assert_eq!(load_panics(&text), None, "{open}");
    }
    let mut text = String::from("stages:\n");
    for depth in 0..500 {
        text += &format!("{}a:\n", " ".repeat(2 + depth));
    }
    assert_eq!(load_panics(&text), None);
}

#[test]
fn regression_aliases_that_never_end_or_explode() {
    assert_eq!(load_panics("stages: &s [*s]\n"), None);
    assert_eq!(load_panics("a: &a {b: *a}\nstages: []\n"), None);
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..20 {
        text += &format!(
            "a{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 10].join(", ")
        );
    }
    text += "stages: *a19\n";
    assert_eq!(load_panics(&text), None);
}

#[test]
fn regression_counts_rates_and_durations_beyond_every_integer() {
    let text = "limits:\n  l: { rate: 1/365d, burst: 4294967295 }\nstages:\n  - name: s\n    type: t_source\n    rate: 4294967295/1ns\n    burst: 99999999999999999999999999999999999999999\n    with: { id: r }\n  - name: p\n    type: t_pass\n    workers: 1e400\n    queue: -99999999999999999999999999999\n    queue_bytes: 1e400GiB\n    retry: { attempts: 4294967296, backoff: 10000000y }\n    timeout: 18446744073709551615s\n  - name: o\n    type: t_sink\n    rate: l\n    with: { id: r }\n";
    assert_eq!(load_panics(text), None);
}
