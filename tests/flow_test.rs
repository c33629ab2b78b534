//! `flow test`: a pipeline's unit tests, run offline by the real runner,
//! end to end through the binary: the output, the exit codes, mocks,
//! retries on a clock that does not wait, ports, dead letters, order, and
//! broken test files.

use std::path::Path;
use std::time::{Duration, Instant};

use flow_tests::{flow, repo_root, run, write_pipeline};

/// `flow test ARGS…` in `dir`.
fn flow_test(dir: &Path, args: &[&str]) -> flow_tests::Run {
    run(flow().current_dir(dir).arg("test").args(args))
}

const ORDERS: &str = r#"name: orders
stages:
  - name: orders
    type: read
    with: { path: orders.jsonl, format: jsonl }
  - name: keep
    type: filter
    with: { expr: '.amount > 100' }
  - name: save
    type: write
    with: { path: out/kept.jsonl }
"#;

#[test]
fn passing_and_failing_tests_print_like_cargo_test_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{ORDERS}{}",
        r#"tests:
  - name: big orders are kept
    input: { stage: orders, items: [{ amount: 150 }, { amount: 50 }] }
    expect:
      - stage: save
        items: [{ amount: 150 }]
      - stage: keep
        all: '.amount > 100'
  - name: small orders are kept too
    input: { stage: orders, items: [{ amount: 150 }, { amount: 50 }] }
    expect:
      - stage: save
        items: [{ amount: 150 }, { amount: 50 }]
"#
    );
    write_pipeline(dir.path(), "orders.yaml", &yaml);
    let out = flow_test(dir.path(), &["orders.yaml"]).expect_code(1);
    let validated = run(flow()
        .current_dir(dir.path())
        .args(["validate", "orders.yaml"]))
    .expect_code(0);
    assert_eq!(
        validated.stdout,
        "orders.yaml: ok: 3 stages (orders, keep, save), 2 tests\n"
    );
    assert_eq!(
        out.stdout,
        r#"test orders.yaml::big orders are kept ... ok
test orders.yaml::small orders are kept too ... FAILED

failures:

---- orders.yaml::small orders are kept too ----
expect stage "save": the items differ (in any order): 2 expected, 1 came
    - expected {"amount":50}

1 passed, 1 failed
"#
    );
    // The sinks were captured, not written; the source file was never read.
    assert!(!dir.path().join("out").exists());
}

#[test]
fn a_wrong_expectation_names_the_stage_the_expected_item_and_the_one_that_came_instead() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{ORDERS}{}",
        r#"tests:
  - name: wrong amount
    input: { stage: orders, items: [{ id: 1, amount: 150 }] }
    expect:
      - stage: keep
        items: [{ id: 1, amount: 105 }]
"#
    );
    write_pipeline(dir.path(), "orders.yaml", &yaml);
    let out = flow_test(dir.path(), &["orders.yaml"]).expect_code(1);
    assert!(
        out.stdout.contains(
            r#"---- orders.yaml::wrong amount ----
expect stage "keep": the items differ (in any order): 1 expected, 1 came
    - expected {"id":1,"amount":105}
    + came     {"id":1,"amount":150}
"#
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.ends_with("\n0 passed, 1 failed\n"),
        "{}",
        out.stdout
    );
}

const SCRAPER: &str = r#"name: scraper
stages:
  - name: urls
    type: read
    with: { path: urls.txt, format: lines }
  - name: fetch
    type: http
    workers: 4
    rate: 1/min
    retry: { attempts: 3, backoff: 10s }
    timeout: 30s
    on_error: failed
    with: { url: ., as: text }
  - name: pages
    type: write
    with: { path: out/pages.jsonl }
  - name: failed
    type: write
    inputs: []
    with: { path: out/failed.jsonl }
"#;

#[test]
fn a_mocked_http_stage_answering_503_then_200_is_retried_on_a_clock_that_does_not_wait() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{SCRAPER}{}",
        r#"tests:
  - name: a 503 is retried
    input: { stage: urls, items: ['https://example.com/a', 'https://example.com/b'] }
    mocks:
      fetch:
        - { error: 'HTTP 503 Service Unavailable' }
        - '{url: ., status: 200}'
        - '{url: ., status: 200}'
    expect:
      - stage: pages
        items: [{ url: 'https://example.com/a', status: 200 }, { url: 'https://example.com/b', status: 200 }]
      - stage: fetch.error
        none: true
  - name: three 503s are dead-lettered
    input: { stage: urls, items: ['https://example.com/a'] }
    mocks:
      fetch: { error: 'HTTP 503 Service Unavailable' }
    expect:
      - stage: failed
        items:
          - { item: 'https://example.com/a', error: { stage: fetch, message: 'HTTP 503 Service Unavailable', attempts: 3 } }
      - stage: pages
        count: 0
  - name: a 404 is not retried
    input: { stage: urls, items: ['https://example.com/gone'] }
    mocks:
      fetch: { error: 'HTTP 404 Not Found', permanent: true }
    expect:
      - stage: fetch.error
        all: '.error.attempts == 1 and .error.message == "HTTP 404 Not Found"'
"#
    );
    write_pipeline(dir.path(), "scraper.yaml", &yaml);
    // Two retries of 10s and 20s, and a rate of one request a minute: over
    // a minute on a real clock.
    // The binary is built (once) before the clock starts.
    let mut cmd = flow();
    cmd.current_dir(dir.path()).args(["test", "scraper.yaml"]);
    let started = Instant::now();
    let out = run(&mut cmd).expect_code(0);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        out.stdout,
        "test scraper.yaml::a 503 is retried ... ok\n\
         test scraper.yaml::three 503s are dead-lettered ... ok\n\
         test scraper.yaml::a 404 is not retried ... ok\n\
         \n3 passed, 0 failed\n"
    );
}

#[test]
fn a_retry_that_gives_up_before_the_200_fails_the_test() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}{}",
        SCRAPER.replace("attempts: 3", "attempts: 2"),
        r#"tests:
  - name: two 503s then a 200
    input: { stage: urls, items: ['https://example.com/a'] }
    mocks:
      fetch:
        - { error: 'HTTP 503 Service Unavailable' }
        - { error: 'HTTP 503 Service Unavailable' }
        - '{url: ., status: 200}'
    expect:
      - stage: pages
        count: 1
"#
    );
    write_pipeline(dir.path(), "scraper.yaml", &yaml);
    let out = flow_test(dir.path(), &["scraper.yaml"]).expect_code(1);
    assert!(
        out.stdout
            .contains("expect stage \"pages\": expected 1 item, 0 came\n\n0 passed, 1 failed\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn the_error_port_holds_failed_items_with_their_message_whatever_on_error_says() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"name: checks
stages:
  - name: orders
    type: list
    with: { items: [] }
  - name: check
    type: map
    with: { expr: 'if .qty > 0 then . else error("bad quantity") end' }
  - name: save
    type: drop
tests:
  - name: dropped items are seen on the error port
    input: { stage: check, items: [{ qty: 1 }, { qty: 0 }] }
    expect:
      - stage: check.error
        count: 1
        all: '.item == {qty: 0} and (.error.message | endswith("bad quantity"))'
      - stage: save
        items: [{ qty: 1 }]
"#;
    write_pipeline(dir.path(), "checks.yaml", yaml);
    let out = flow_test(dir.path(), &["checks.yaml"]).expect_code(0);
    // The drop the test meant is not logged as a warning.
    assert_eq!(out.stderr, "");
}

#[test]
fn a_mocked_sink_may_fail_and_a_mock_list_used_up_fails_the_item() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"name: mocks
stages:
  - name: orders
    type: list
    with: { items: [] }
  - name: enrich
    type: map
    with: { expr: '.' }
  - name: save
    type: files
    retry: { attempts: 2 }
    with: { dir: out, name: '"\(.id).json"' }
tests:
  - name: a full disk once
    input: { stage: orders, items: [{ id: 1 }] }
    mocks:
      save: [{ error: 'No space left on device' }, '.']
    expect:
      - stage: save
        items: [{ id: 1 }]
      - stage: save.error
        none: true
  - name: one answer for two calls
    input: { stage: orders, items: [{ id: 1 }, { id: 2 }] }
    mocks:
      enrich: ['.ok = true']
    expect:
      - stage: enrich.error
        items: [{ item: { id: 2 }, error: { stage: enrich, message: 'mock called 2 times; its list has 1 entry', attempts: 1 } }]
      - stage: save
        items: [{ id: 1, ok: true }]
  - name: endless outputs are bounded
    input: { stage: orders, items: [{ id: 1 }] }
    mocks:
      enrich: 'range(1e12)'
    expect:
      - stage: enrich.error
        all: '.error.message | startswith("mock: more than")'
"#;
    write_pipeline(dir.path(), "mocks.yaml", yaml);
    flow_test(dir.path(), &["mocks.yaml"]).expect_code(0);
    assert!(!dir.path().join("out").exists());
}

#[test]
fn ordered_expectations_fail_on_another_order_and_unordered_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"name: lifo
stages:
  - name: pages
    type: list
    with: { items: [] }
  - name: visit
    type: sleep
    order: lifo
    with: { duration: 1s }
  - name: done
    type: drop
tests:
  - name: in any order
    input: { stage: pages, items: [1, 2, 3] }
    expect:
      - stage: done
        items: [1, 2, 3]
  - name: newest first
    input: { stage: pages, items: [1, 2, 3] }
    expect:
      - stage: done
        items: [3, 2, 1]
        ordered: true
  - name: oldest first
    input: { stage: pages, items: [1, 2, 3] }
    expect:
      - stage: done
        items: [1, 2, 3]
        ordered: true
"#;
    write_pipeline(dir.path(), "lifo.yaml", yaml);
    let out = flow_test(dir.path(), &["lifo.yaml"]).expect_code(1);
    assert_eq!(
        out.stdout,
        r#"test lifo.yaml::in any order ... ok
test lifo.yaml::newest first ... ok
test lifo.yaml::oldest first ... FAILED

failures:

---- lifo.yaml::oldest first ----
expect stage "done": the items differ (in order): 3 expected, 3 came
    item 1: expected 1
            came     3
    item 3: expected 3
            came     1

2 passed, 1 failed
"#
    );
}

#[test]
fn a_test_may_feed_a_stage_in_the_middle_and_expect_on_a_port() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"name: route
stages:
  - name: orders
    type: read
    with: { path: orders.jsonl, format: jsonl }
  - name: tag
    type: map
    with: { expr: '.tagged = true' }
  - name: triage
    type: route
    with:
      routes:
        big: '.amount >= 100'
  - name: big
    type: write
    inputs: [triage.big]
    with: { path: out/big.jsonl }
tests:
  - name: fed past the tagging
    input:
      - { stage: triage, items: [{ amount: 100 }, { amount: 5 }] }
      - { stage: tag, items: [{ amount: 200 }] }
    expect:
      - stage: triage.big
        items: [{ amount: 100 }, { amount: 200, tagged: true }]
      - stage: triage._unmatched
        items: [{ amount: 5 }]
      - stage: tag
        count: 1
      - stage: orders
        none: true
"#;
    write_pipeline(dir.path(), "route.yaml", yaml);
    flow_test(dir.path(), &["route.yaml"]).expect_code(0);
}

#[test]
fn conditions_and_counts_fail_when_they_should() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{ORDERS}{}",
        r#"tests:
  - name: all of nothing
    expect:
      - stage: save
        all: '.amount > 100'
  - name: none that are small
    input: { stage: orders, items: [{ amount: 150 }] }
    expect:
      - stage: save
        any: '.amount < 100'
      - stage: keep
        none: true
"#
    );
    write_pipeline(dir.path(), "orders.yaml", &yaml);
    let out = flow_test(dir.path(), &["orders.yaml"]).expect_code(1);
    assert!(
        out.stdout.contains(
            "---- orders.yaml::all of nothing ----\n\
             expect stage \"save\": expected items that all satisfy `.amount > 100`, none came\n"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "---- orders.yaml::none that are small ----\n\
             expect stage \"save\": no item satisfies `.amount < 100` (1 came)\n      {\"amount\":150}\n\
             expect stage \"keep\": expected no items, 1 came\n      {\"amount\":150}\n"
        ),
        "{}",
        out.stdout
    );
}

#[test]
fn a_broken_test_is_a_file_line_column_error_from_test_and_validate() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{ORDERS}{}",
        r#"tests:
  - name: typos
    input: { stage: order, items: [1] }
    mocks:
      kep: '.'
      orders: '.'
    expect:
      - stage: keep.big
        count: 1
      - stage: save
"#
    );
    write_pipeline(dir.path(), "orders.yaml", &yaml);
    let expected = r#"orders.yaml:14:21: test "typos": input: unknown stage "order" (did you mean "orders"?)
orders.yaml:16:7: test "typos": mocks: unknown stage "kep" (did you mean "keep"?)
orders.yaml:17:7: test "typos": mocks: "orders" is a source; give it items with `input: {stage: orders, items: [...]}` instead
orders.yaml:19:16: test "typos": expect: "keep" has no port "big"; its outputs: keep, keep.error
orders.yaml:21:9: test "typos": expect "save": say what must come out: items, count, all, any or none
"#;
    let out = flow_test(dir.path(), &["orders.yaml"]).expect_code(2);
    assert_eq!(out.stderr, expected);
    assert_eq!(out.stdout, "");
    let out = run(flow()
        .current_dir(dir.path())
        .args(["validate", "orders.yaml"]))
    .expect_code(2);
    assert_eq!(out.stderr, expected);

    // An unknown key inside a test.
    let yaml = format!(
        "{ORDERS}{}",
        "tests:\n  - name: t\n    expect:\n      - stage: save\n        count: 1\n        colour: red\n"
    );
    write_pipeline(dir.path(), "orders.yaml", &yaml);
    let out = flow_test(dir.path(), &["orders.yaml"]).expect_code(2);
    assert_eq!(
        out.stderr,
        "orders.yaml:17:9: test \"t\": expect[0]: unknown key \"colour\"; expected one of: stage, items, ordered, count, all, any, none\n"
    );

    // Expressions that do not compile, shown as the stages' are.
    let yaml = format!(
        "{ORDERS}{}",
        "tests:\n  - name: t\n    mocks: { keep: hello }\n    expect: [{ stage: save, all: '.a |' }]\n"
    );
    write_pipeline(dir.path(), "orders.yaml", &yaml);
    let out = flow_test(dir.path(), &["orders.yaml"]).expect_code(2);
    assert_eq!(
        out.stderr,
        r#"orders.yaml:14:20: test "t": mocks.keep: this option takes a jq expression, and this text is not valid jq (undefined filter hello); for the literal string, write '"hello"'; for the field "hello" of the input, write .hello
    hello
    ^
orders.yaml:15:34: test "t": expect.all: invalid jq expression: expected term, found the end
    .a |
        ^
"#
    );
}

#[test]
fn a_test_file_names_its_pipeline_and_filter_picks_tests() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), "orders.yaml", ORDERS);
    write_pipeline(
        dir.path(),
        "orders.test.yaml",
        r#"pipeline: orders.yaml
tests:
  - name: big
    input: { stage: orders, items: [{ amount: 150 }] }
    expect: [{ stage: save, count: 1 }]
  - name: small
    input: { stage: orders, items: [{ amount: 50 }] }
    expect: [{ stage: save, count: 0 }]
"#,
    );
    let out = flow_test(dir.path(), &["."]).expect_code(0);
    assert_eq!(
        out.stdout,
        "test orders.test.yaml::big ... ok\ntest orders.test.yaml::small ... ok\n\n2 passed, 0 failed\n"
    );
    let out = flow_test(dir.path(), &["orders.test.yaml", "--filter", "sma"]).expect_code(0);
    assert_eq!(
        out.stdout,
        "test orders.test.yaml::small ... ok\n\n1 passed, 0 failed, 1 filtered out\n"
    );
    let out = run(flow()
        .current_dir(dir.path())
        .args(["validate", "orders.test.yaml"]))
    .expect_code(0);
    assert_eq!(out.stdout, "orders.test.yaml: ok: 2 tests of orders.yaml\n");

    // A stage the pipeline does not have, in the test file.
    write_pipeline(
        dir.path(),
        "orders.test.yaml",
        "pipeline: orders.yaml\ntests:\n  - name: t\n    expect: [{ stage: saved, count: 1 }]\n",
    );
    let out = flow_test(dir.path(), &["orders.test.yaml"]).expect_code(2);
    assert_eq!(
        out.stderr,
        "orders.test.yaml:4:23: test \"t\": expect: unknown stage \"saved\" (did you mean \"save\"?)\n"
    );
}

#[test]
fn every_pipeline_in_pipelines_passes_its_own_tests() {
    let root = repo_root();
    // `flow test DIR` takes the files directly in DIR, as `validate` does.
    for dir in ["pipelines", "pipelines/distributed-scraper"] {
        let out = run(flow().arg("test").arg(root.join(dir))).expect_code(0);
        assert!(
            out.stdout.ends_with(" passed, 0 failed\n"),
            "{}",
            out.stdout
        );
        // Every pipeline has tests: in the file, or in NAME.test.yaml
        // ("data-pipeline.test.yaml", "scraper.test.yaml").
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let Some(stem) = name.strip_suffix(".yaml") else {
                continue;
            };
            if stem.ends_with(".test") {
                continue;
            }
            let tested = out.stdout.contains(&format!("test {name}::"))
                || out.stdout.contains(&format!("test {stem}.test.yaml::"));
            assert!(tested, "{dir}/{name} has no tests:\n{}", out.stdout);
        }
    }
}

#[test]
fn the_schema_describes_tests() {
    let out = run(flow().arg("schema")).expect_code(0);
    let schema: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(schema["properties"]["tests"].is_object(), "{schema}");
    let expect = &schema["definitions"]["expect"]["properties"];
    for key in ["stage", "items", "ordered", "count", "all", "any", "none"] {
        assert!(expect[key].is_object(), "expect.{key} in {expect}");
    }
}

#[test]
fn the_readme_shows_what_flow_test_prints_for_the_scraper() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let command = "    $ flow test pipelines/scraper.test.yaml\n";
    let shown = readme
        .split_once(command)
        .expect("the README runs the scraper's tests")
        .1
        .split("\n\n")
        .take(2)
        .collect::<Vec<_>>()
        .join("\n\n");
    let shown: String = shown
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l).to_string() + "\n")
        .collect();
    let out = run(flow()
        .current_dir(&root)
        .args(["test", "pipelines/scraper.test.yaml"]))
    .expect_code(0);
    assert_eq!(out.stdout, shown);
}
