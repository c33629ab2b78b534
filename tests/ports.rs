//! Named output ports through the binary: `route` (first, all,
//! `_unmatched`), fan-out of one port, per-port stats, the graph's labels,
//! `/metrics`, and every validation error of ports with its exact line.

use flow_tests::{flow, pipeline, read_jsonl, run, stage, stats, write_pipeline};

/// Runs `yaml` (in a temp dir, `OUT` set to it) and returns the dir and
/// the stats.
fn run_yaml(yaml: &str, code: i32) -> (tempfile::TempDir, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), "p.yaml", yaml);
    let stats_file = dir.path().join("stats.json");
    run(flow()
        .arg("run")
        .arg(&file)
        .arg("--quiet")
        .arg("--stats-json")
        .arg(&stats_file))
    .expect_code(code);
    let stats = stats(&stats_file);
    (dir, stats)
}

fn ids(dir: &tempfile::TempDir, file: &str) -> Vec<i64> {
    let mut ids: Vec<i64> = read_jsonl(&dir.path().join(file))
        .iter()
        .map(|r| r["n"].as_i64().unwrap())
        .collect();
    ids.sort();
    ids
}

const NUMBERS: &str = "name: ports
stages:
  - { name: numbers, type: generate, with: { count: 30, value: '{n: $i}' } }
  - name: split
    type: route
    with:
      mode: MODE
      routes:
        threes: '.n % 3 == 0'
        fives: '.n % 5 == 0'
";

#[test]
fn route_first_sends_each_item_to_the_first_route_that_holds() {
    let yaml = NUMBERS.replace("MODE", "first")
        + "  - { name: t, type: write, inputs: [split.threes], with: { path: t.jsonl } }
  - { name: f, type: write, inputs: [split.fives], with: { path: f.jsonl } }
  - { name: rest, type: write, inputs: [split._unmatched], with: { path: rest.jsonl } }
";
    let (dir, stats) = run_yaml(&yaml, 0);
    let threes: Vec<i64> = (0..30).filter(|n| n % 3 == 0).collect();
    let fives: Vec<i64> = (0..30).filter(|n| n % 5 == 0 && n % 3 != 0).collect();
    let rest: Vec<i64> = (0..30).filter(|n| n % 5 != 0 && n % 3 != 0).collect();
    assert_eq!(ids(&dir, "t.jsonl"), threes);
    assert_eq!(ids(&dir, "f.jsonl"), fives);
    assert_eq!(ids(&dir, "rest.jsonl"), rest);
    let split = stage(&stats, "split");
    assert_eq!(
        split["outputs"],
        serde_json::json!({"threes": 10, "fives": 4, "_unmatched": 16})
    );
    assert_eq!(
        (split["items_in"].as_u64(), split["items_out"].as_u64()),
        (Some(30), Some(30))
    );
    assert_eq!(
        stage(&stats, "rest")["inputs"],
        serde_json::json!(["split._unmatched"])
    );
}

#[test]
fn route_all_copies_an_item_to_every_route_that_holds_and_unread_unmatched_is_filtered() {
    let yaml = NUMBERS.replace("MODE", "all")
        + "  - { name: t, type: write, inputs: [split.threes], with: { path: t.jsonl } }
  - { name: f, type: write, inputs: [split.fives], with: { path: f.jsonl } }
";
    let (dir, stats) = run_yaml(&yaml, 0);
    let threes: Vec<i64> = (0..30).filter(|n| n % 3 == 0).collect();
    let fives: Vec<i64> = (0..30).filter(|n| n % 5 == 0).collect();
    assert_eq!(ids(&dir, "t.jsonl"), threes);
    assert_eq!(ids(&dir, "f.jsonl"), fives);
    let split = stage(&stats, "split");
    // 0, 15 went to both; 16 matched nothing and nothing reads `_unmatched`.
    assert_eq!(
        split["outputs"],
        serde_json::json!({"threes": 10, "fives": 6, "_unmatched": 16})
    );
    assert_eq!(split["items_out"], 32);
    assert_eq!(stats["status"], "ok");
}

#[test]
fn one_port_fans_out_to_two_stages_and_an_expression_error_is_the_items() {
    let yaml = "name: fan
stages:
  - { name: numbers, type: generate, with: { count: 12, value: '{n: $i}' } }
  - name: split
    type: route
    on_error: bad
    with:
      routes:
        big: 'if .n == 7 then error(\"seven\") else .n >= 6 end'
  - { name: a, type: write, inputs: [split.big], with: { path: a.jsonl } }
  - { name: b, type: write, inputs: [split.big], with: { path: b.jsonl } }
  - { name: small, type: write, inputs: [split._unmatched], with: { path: small.jsonl } }
  - { name: bad, type: write, inputs: [], with: { path: bad.jsonl } }
";
    let (dir, stats) = run_yaml(yaml, 3);
    assert_eq!(ids(&dir, "a.jsonl"), [6, 8, 9, 10, 11]);
    assert_eq!(ids(&dir, "b.jsonl"), [6, 8, 9, 10, 11]);
    assert_eq!(ids(&dir, "small.jsonl"), [0, 1, 2, 3, 4, 5]);
    let bad = read_jsonl(&dir.path().join("bad.jsonl"));
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0]["item"], serde_json::json!({"n": 7}));
    assert!(
        bad[0]["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with(": seven"),
        "{bad:?}"
    );
    assert_eq!(stage(&stats, "split")["dead_lettered"], 1);
}

#[test]
fn ordered_keeps_input_order_on_each_port() {
    let yaml = "name: ordered
stages:
  - { name: numbers, type: generate, with: { count: 2000, value: '{n: $i}' } }
  - name: split
    type: route
    workers: 4
    ordered: true
    with:
      routes:
        even: '.n % 2 == 0'
  - { name: e, type: write, inputs: [split.even], with: { path: e.jsonl } }
  - { name: o, type: write, inputs: [split._unmatched], with: { path: o.jsonl } }
";
    let (dir, _) = run_yaml(yaml, 0);
    let in_order = |file: &str| -> Vec<i64> {
        read_jsonl(&dir.path().join(file))
            .iter()
            .map(|r| r["n"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(
        in_order("e.jsonl"),
        (0..2000).step_by(2).collect::<Vec<_>>()
    );
    assert_eq!(
        in_order("o.jsonl"),
        (1..2000).step_by(2).collect::<Vec<_>>()
    );
}

#[test]
fn the_cookbook_route_pipeline_splits_orders_into_three_files() {
    let dir = tempfile::tempdir().unwrap();
    let stats_file = dir.path().join("stats.json");
    let out = run(flow()
        .arg("run")
        .arg(pipeline("route.yaml"))
        .arg("--stats-json")
        .arg(&stats_file)
        .env("OUT", dir.path())
        .env("COLUMNS", "80"))
    .expect_code(0);
    let file_ids = |file: &str| -> Vec<i64> {
        read_jsonl(&dir.path().join(file))
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(file_ids("invalid.jsonl"), [2, 4]);
    assert_eq!(file_ids("big.jsonl"), [3]);
    assert_eq!(file_ids("orders.jsonl"), [1, 5]);
    // The report's compact form of the ports.
    assert!(
        out.stderr
            .contains("\ntriage → invalid 2 · big 1 · _unmatched 2\n"),
        "{}",
        out.stderr
    );
    let stats = stats(&stats_file);
    assert_eq!(
        stage(&stats, "triage")["outputs"],
        serde_json::json!({"invalid": 2, "big": 1, "_unmatched": 2})
    );
}

#[test]
fn the_graph_labels_edges_with_their_port() {
    let mermaid = run(flow().arg("graph").arg(pipeline("route.yaml"))).expect_code(0);
    for line in [
        "    orders --> triage\n",
        "    triage -- \"big\" --> big\n",
        "    triage -- \"invalid\" --> invalid\n",
        "    triage -- \"_unmatched\" --> rest\n",
    ] {
        assert!(
            mermaid.stdout.contains(line),
            "{line:?} in\n{}",
            mermaid.stdout
        );
    }
    let dot = run(flow()
        .arg("graph")
        .arg(pipeline("route.yaml"))
        .args(["--format", "dot"]))
    .expect_code(0);
    assert!(
        dot.stdout
            .contains("    \"triage\" -> \"big\" [label=\"big\"];\n"),
        "{}",
        dot.stdout
    );
}

/// `validate` on the cookbook pipeline with `from` replaced by `to`: its
/// problems, one per line.
fn problems(edits: &[(&str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = std::fs::read_to_string(pipeline("route.yaml")).unwrap();
    for (from, to) in edits {
        assert!(yaml.contains(from), "{from}");
        yaml = yaml.replace(from, to);
    }
    let file = write_pipeline(dir.path(), "p.yaml", &yaml);
    let out = run(flow().arg("validate").arg(&file)).expect_code(2);
    let prefix = format!("{}:", file.display());
    out.stderr
        .lines()
        .map(|l| l.strip_prefix(&prefix).unwrap_or(l).to_string())
        .collect()
}

#[test]
fn port_mistakes_are_errors_with_their_line_and_column() {
    assert_eq!(
        problems(&[("inputs: [triage.big]", "inputs: [triage.bgi]")]),
        ["26:14: stage \"big\": inputs: \"triage\" has no port \"bgi\" (did you mean \"big\"?)"]
    );
    assert_eq!(
        problems(&[("inputs: [triage.big]", "inputs: [triage.zzzzzz]")]),
        [
            "26:14: stage \"big\": inputs: \"triage\" has no port \"zzzzzz\"; its ports: triage.invalid, triage.big, triage._unmatched"
        ]
    );
    assert_eq!(
        problems(&[("inputs: [triage.big]", "inputs: [orders.big]")]),
        [
            "17:5: stage \"triage\": port \"big\" is read by no stage; read it (inputs: [triage.big]) or remove it",
            "26:14: stage \"big\": inputs: \"orders\" has no named ports; read its output as \"orders\"",
        ]
    );
    assert_eq!(
        problems(&[("inputs: [triage.big]", "inputs: [triage]")]),
        [
            "26:14: stage \"big\": inputs: \"triage\" sends its items to named ports only; read one of them: triage.invalid, triage.big, triage._unmatched"
        ]
    );
    assert_eq!(
        problems(&[("inputs: [triage.big]", "inputs: [triage.invalid]")]),
        [
            "17:5: stage \"triage\": port \"big\" is read by no stage; read it (inputs: [triage.big]) or remove it"
        ]
    );
    assert_eq!(
        problems(&[("invalid: '(.customer", "_invalid: '(.customer")]),
        [
            "22:19: stage \"triage\": with.routes._invalid: a port name is letters, digits, `_` and `-`, and does not start with `_` (`_unmatched` is the port of what no route took)",
            "30:14: stage \"invalid\": inputs: \"triage\" has no port \"invalid\" (did you mean \"_invalid\"?)",
        ]
    );
}
