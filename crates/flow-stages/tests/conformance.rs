//! Every registered stage type passes the same checks: it is documented,
//! its example validates and runs, unknown options are rejected with the
//! key named, and its counts add up.

use flow_core::{BuildContext, StageKind, StageType};
use flow_stages as _;

fn types() -> Vec<&'static StageType> {
    flow_core::stage_types()
}

#[test]
fn every_built_in_type_is_registered() {
    let names: Vec<&str> = types().iter().map(|t| t.name).collect();
    for name in flow_stages::TYPES {
        assert!(names.contains(&name), "{name} is not registered: {names:?}");
    }
}

#[test]
fn every_type_documents_itself_and_each_option() {
    for t in types() {
        assert!(!t.summary.is_empty(), "{}: no summary", t.name);
        let schema = t.options_schema();
        let schema = schema.as_value();
        assert!(
            schema.get("description").is_some(),
            "{}: the options struct has no doc comment",
            t.name
        );
        let props = schema
            .get("properties")
            .and_then(|p| p.as_object())
            .cloned()
            .unwrap_or_default();
        for (key, prop) in props {
            let documented = prop.get("description").is_some();
            assert!(documented, "{}: option `{key}` has no doc comment", t.name);
        }
    }
}

#[test]
fn every_type_rejects_unknown_options_naming_the_key() {
    let ctx = BuildContext {
        stage: "s".into(),
        workers: 1,
        base_dir: ".".into(),
        timeout: None,
    };
    for t in types() {
        let with = serde_json::json!({ "surely_not_an_option": 1 });
        let err = match t.build(&with, &ctx) {
            Ok(_) => panic!("{}: accepted an unknown option", t.name),
            Err(e) => e,
        };
        assert!(
            err.message.contains("surely_not_an_option"),
            "{}: the error does not name the key: {err}",
            t.name
        );
    }
}

/// Wraps a type's example in the smallest pipeline that runs it, fed
/// records whose `url` is `url`.
fn pipeline_around(t: &StageType, url: &str) -> String {
    let example = t.example.trim_end();
    let indented: String = example.lines().map(|l| format!("  {l}\n")).collect();
    // Items shaped like the examples' inputs: records with the usual fields.
    let item = format!(r#"{{id: 1, value: 3, score: 70, title: "Hello, World", url: "{url}"}}"#);
    let source = format!(
        "  - name: conformance-source\n    type: list\n    with: {{ items: [{item}, {item}] }}\n"
    );
    let sink = "  - name: conformance-sink\n    type: drop\n";
    match t.kind {
        StageKind::Source => format!("stages:\n{indented}{sink}"),
        StageKind::Processor => format!("stages:\n{source}{indented}{sink}"),
        StageKind::Sink => format!("stages:\n{source}{indented}"),
    }
}

/// Types whose example validates but cannot run here.
///
/// `image` decodes image bytes, which neither a `list` of records nor the
/// test server's text pages provide (tests/images.rs runs it on real PNGs).
/// `redis_read` and `redis_write` need a Redis server: tests/redis.rs runs
/// their examples against one it starts.
const NOT_RUN: [&str; 3] = ["image", "redis_read", "redis_write"];

/// An HTTP server on loopback answering every path with a short text page,
/// so examples that fetch `.url` (`http`) run offline.
async fn page_server() -> std::net::SocketAddr {
    let app = axum::Router::new().fallback(|| async { "a page" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_validates_and_runs_with_counts_that_add_up() {
    let url = format!("http://{}/a", page_server().await);
    for t in types() {
        let dir = tempfile::tempdir().unwrap();
        // Examples may read `urls.txt` and write files: both stay in the temp dir.
        std::fs::write(dir.path().join("urls.txt"), format!("{url}\n")).unwrap();
        let file = dir.path().join("example.yaml");
        let yaml = pipeline_around(t, &url);
        let plan = flow_runner::load_str(&yaml, &file, |_| None)
            .unwrap_or_else(|e| panic!("{}: the example does not validate:\n{yaml}\n{e}", t.name));
        if NOT_RUN.contains(&t.name) {
            continue;
        }
        let report = flow_runner::run(plan, flow_runner::RunControl::new()).await;
        assert_eq!(
            report.status,
            flow_runner::Status::Ok,
            "{}: {:?}",
            t.name,
            report.failure
        );
        for s in &report.stages {
            let failed = s.errors + s.dropped + s.dead_lettered;
            assert_eq!(failed, 0, "{}: stage {} had failures", t.name, s.name);
            if s.kind == "sink" {
                assert_eq!(
                    s.items_in, s.items_out,
                    "{}: sink {} lost items",
                    t.name, s.name
                );
            }
            if s.kind != "source" {
                assert!(s.items_in > 0, "{}: stage {} saw nothing", t.name, s.name);
            }
        }
    }
}
