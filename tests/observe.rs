//! Watching a run from outside: `--metrics` (Prometheus text at /metrics),
//! `--dashboard` (the live page at /, fed by /api/report), loaded in
//! headless Chromium, and what happens when the address is taken or a
//! client stays connected.
//!
//! The browser tests need Debian's `chromium`. Without it they say loudly
//! that they were skipped and pass, unless `FLOW_REQUIRE_BROWSER=1` (as in
//! CI), which makes a missing browser a failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use flow_tests::{flow, run, write_pipeline};

/// A pipeline that runs for about `items` × 100 ms: `slow` sets the pace.
fn slow_pipeline(dir: &Path, items: u32) -> PathBuf {
    write_pipeline(
        dir,
        "slow.yaml",
        &format!(
            "name: observed
stages:
  - name: numbers
    type: generate
    with: {{ count: {items} }}
  - name: slow
    type: sleep
    queue: 8
    with: {{ duration: 100ms }}
  - name: out
    type: drop
"
        ),
    )
}

/// A `flow run` going in the background, with the addresses it serves.
struct Watched {
    child: Child,
    metrics: Option<SocketAddr>,
    dashboard: Option<SocketAddr>,
    stderr: Arc<Mutex<String>>,
}

impl Watched {
    /// Starts `flow run pipeline` with `args` and waits until it says
    /// where it serves.
    fn start(pipeline: &Path, args: &[&str]) -> Watched {
        Watched::start_with_env(pipeline, args, &[])
    }

    /// [`Watched::start`] with more environment variables.
    fn start_with_env(pipeline: &Path, args: &[&str], env: &[(&str, &str)]) -> Watched {
        let mut child = flow()
            .arg("run")
            .arg(pipeline)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("flow starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let lines = BufReader::new(child.stderr.take().expect("stderr is piped"));
        let all = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                all.lock().unwrap().push_str(&(line.clone() + "\n"));
                let _ = tx.send(line);
            }
        });
        let wants_metrics = args.contains(&"--metrics");
        let wants_dashboard = args.contains(&"--dashboard");
        let mut watched = Watched {
            child,
            metrics: None,
            dashboard: None,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while (wants_metrics && watched.metrics.is_none())
            || (wants_dashboard && watched.dashboard.is_none())
        {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                panic!(
                    "flow never said where it serves:\n{}",
                    watched.stderr.lock().unwrap()
                );
            };
            watched.metrics = watched.metrics.or(served_at(&line, "metrics at http://"));
            watched.dashboard = watched
                .dashboard
                .or(served_at(&line, "dashboard at http://"));
        }
        watched
    }

    /// Waits for the process to exit; panics after `limit`.
    fn exit_code_within(&mut self, limit: Duration) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("flow can be waited on") {
                return status.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < limit,
                "flow still running after {limit:?}:\n{}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The live report from /api/report.
    fn report(&self) -> serde_json::Value {
        let addr = self.dashboard.expect("the dashboard is served");
        let (status, body) = get(addr, "/api/report");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("/api/report is JSON")
    }

    /// Polls the live report until `ready` holds for it.
    fn report_when(&self, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let report = self.report();
            if ready(&report) {
                return report;
            }
            assert!(Instant::now() < deadline, "never ready: {report}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in a line such as `flow: metrics at http://127.0.0.1:9/metrics`.
fn served_at(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    rest[..rest.find('/')?].parse().ok()
}

/// A plain HTTP/1.1 GET: the status and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("headers end with a blank line");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, body.to_string())
}

/// The value of the series `name{labels}` in a Prometheus exposition.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map(|v| v.parse().expect("a sample value is a number"))
}

fn stage<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {report}"))
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn metrics_carry_per_stage_series_that_grow_during_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = slow_pipeline(dir.path(), 40);
    let mut flow = Watched::start(
        &pipeline,
        &[
            "--quiet",
            "--metrics",
            "127.0.0.1:0",
            "--dashboard",
            "127.0.0.1:0",
        ],
    );
    let addr = flow.metrics.unwrap();
    assert_eq!(
        Some(addr),
        flow.dashboard,
        "one address for both flags: one server"
    );
    let slow = r#"pipeline="observed",stage="slow",type="sleep""#;
    let scrape = || {
        let (status, text) = get(addr, "/metrics");
        assert_eq!(status, 200, "{text}");
        text
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let text = scrape();
        if sample(&text, "flow_stage_items_out_total", slow).unwrap_or(0.0) >= 2.0 {
            break text;
        }
        assert!(Instant::now() < deadline, "slow never got going:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    for name in [
        "flow_stage_items_in_total",
        "flow_stage_items_out_total",
        "flow_stage_errors_total",
        "flow_stage_retries_total",
        "flow_stage_dropped_total",
        "flow_stage_dead_lettered_total",
        "flow_stage_busy_ratio",
        "flow_stage_queue_depth",
        "flow_stage_queue_capacity",
        "flow_stage_latency_seconds_count",
    ] {
        assert!(
            sample(&first, name, slow).is_some(),
            "no {name}{{{slow}}}:\n{first}"
        );
    }
    assert!(first.contains("# TYPE flow_stage_items_in_total counter\n"));
    assert!(first.contains("# TYPE flow_stage_queue_depth gauge\n"));
    assert!(first.contains("# TYPE flow_stage_latency_seconds histogram\n"));
    assert_eq!(sample(&first, "flow_stage_queue_capacity", slow), Some(8.0));
    assert!(
        sample(
            &first,
            "flow_stage_items_out_total",
            r#"pipeline="observed",stage="numbers",type="generate""#
        )
        .is_some()
    );
    assert!(
        sample(
            &first,
            "flow_stage_latency_seconds_bucket",
            r#"pipeline="observed",stage="slow",type="sleep",le="+Inf""#
        )
        .is_some()
    );
    // Every sample line is `name{labels} value`, labels quoted, and
    // every series names its pipeline first.
    for line in first.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("a value");
        assert!(value.parse::<f64>().is_ok(), "{line}");
        assert!(series.ends_with("\"}") && series.contains("{"), "{line}");
        assert!(series.contains("{pipeline=\"observed\""), "{line}");
    }

    std::thread::sleep(Duration::from_millis(700));
    let second = scrape();
    for name in ["flow_stage_items_in_total", "flow_stage_items_out_total"] {
        let (a, b) = (
            sample(&first, name, slow).unwrap(),
            sample(&second, name, slow).unwrap(),
        );
        assert!(b > a, "{name} did not grow: {a} then {b}");
    }
    assert_eq!(flow.exit_code_within(Duration::from_secs(60)), 0);
}

#[test]
fn addresses_may_be_a_host_name_or_just_a_port_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = slow_pipeline(dir.path(), 5);
    // `:0` is loopback; `localhost` resolves to it: one address, one server.
    let mut flow = Watched::start(
        &pipeline,
        &["--quiet", "--metrics", ":0", "--dashboard", "localhost:0"],
    );
    let addr = flow.metrics.unwrap();
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_eq!(Some(addr), flow.dashboard, "one server for both");
    let (status, text) = get(addr, "/metrics");
    assert_eq!(status, 200, "{text}");
    assert_eq!(flow.exit_code_within(Duration::from_secs(60)), 0);
}

#[test]
fn api_report_is_the_live_report_with_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = slow_pipeline(dir.path(), 30);
    let mut flow = Watched::start(&pipeline, &["--quiet", "--dashboard", "127.0.0.1:0"]);
    let report = flow.report_when(|r| stage(r, "slow")["items_in"].as_u64() >= Some(1));
    assert_eq!(report["status"], "running");
    assert_eq!(report["pipeline"], "observed");
    let slow = stage(&report, "slow");
    assert_eq!(slow["type"], "sleep");
    assert_eq!(slow["inputs"], serde_json::json!(["numbers"]));
    assert_eq!(stage(&report, "out")["inputs"], serde_json::json!(["slow"]));
    assert_eq!(slow["queue"]["capacity"], 8);
    assert!(slow["queue"]["depth"].as_u64().is_some(), "{slow}");
    assert_eq!(stage(&report, "numbers")["total"], 30);
    let later =
        flow.report_when(|r| stage(r, "slow")["items_in"].as_u64() > slow["items_in"].as_u64());
    assert!(later["elapsed_s"].as_f64() > report["elapsed_s"].as_f64());
    // The page itself is the one built into the binary, nothing external.
    let (status, page) = get(flow.dashboard.unwrap(), "/");
    assert_eq!(status, 200);
    assert!(page.contains("/api/report"));
    for external in ["http://", "https://", "<link", " src="] {
        assert!(!page.contains(external), "the page refers to {external}");
    }
    // Metrics were not asked for: not served.
    assert_eq!(get(flow.dashboard.unwrap(), "/metrics").0, 404);
    assert_eq!(flow.exit_code_within(Duration::from_secs(60)), 0);
}

#[test]
fn an_address_in_use_exits_2_naming_the_flag_and_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = slow_pipeline(dir.path(), 3);
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for flag in ["--metrics", "--dashboard"] {
        let out = run(flow()
            .args(["run", "--quiet"])
            .arg(&pipeline)
            .args([flag, &addr]))
        .expect_code(2);
        assert!(
            out.stderr
                .contains(&format!("flow: cannot serve {flag} on {addr}: ")),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("in use"), "{}", out.stderr);
    }
}

#[test]
fn clients_still_connected_do_not_keep_flow_alive_after_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = slow_pipeline(dir.path(), 10);
    let (metrics, dashboard) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let mut flow = Watched::start(
        &pipeline,
        &["--quiet", "--metrics", &metrics, "--dashboard", &dashboard],
    );
    assert_ne!(flow.metrics, flow.dashboard, "two addresses: two servers");
    assert_eq!(get(flow.metrics.unwrap(), "/metrics").0, 200);
    assert_eq!(get(flow.metrics.unwrap(), "/").0, 404);
    // A kept-alive connection after a whole request, an idle one, and
    // one in the middle of a request.
    let dashboard = flow.dashboard.unwrap();
    let mut kept = TcpStream::connect(dashboard).unwrap();
    write!(
        kept,
        "GET /api/report HTTP/1.1\r\nHost: {dashboard}\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let _idle = TcpStream::connect(flow.dashboard.unwrap()).unwrap();
    let mut partial = TcpStream::connect(flow.metrics.unwrap()).unwrap();
    write!(partial, "GET /metrics HTTP/1.1\r\n").unwrap();
    flow.report_when(|r| stage(r, "out")["items_in"] == 10);
    // The run is over once `out` has its 10 items; flow may wait a moment
    // for an open page to fetch the final report (1.5 s), and no more.
    assert_eq!(flow.exit_code_within(Duration::from_secs(6)), 0);
}

/// Debian's Chromium, or why the browser tests cannot run.
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let required = std::env::var("FLOW_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "FLOW_REQUIRE_BROWSER=1 but chromium is not on PATH (apt-get install chromium)"
        );
        // Straight to stderr: the test harness would hide an eprintln!.
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!! SKIPPED: chromium is not installed: the dashboard was not \
             tested in a browser (apt-get install chromium; FLOW_REQUIRE_BROWSER=1 \
             makes this a failure) !!!!!!!!\n"
        );
    }
    found
}

/// The page as headless Chromium renders it after `virtual_ms` of virtual
/// time (timers run at once; fetches in flight pause the clock).
fn rendered_dom(chromium: &Path, url: &str, virtual_ms: u64) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={virtual_ms}"))
        .args(["--dump-dom", url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        let _ = stdout.read_to_string(&mut dom);
        dom
    });
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("chromium did not finish rendering {url} in 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

/// The `data-value` of `field` in the stages table's row for `stage`.
fn table_value(dom: &str, stage: &str, field: &str) -> Option<f64> {
    let row = &dom[dom.find(&format!("<tr data-stage=\"{stage}\""))?..];
    let row = &row[..row.find("</tr>")?];
    let marker = format!("data-field=\"{field}\" data-value=\"");
    let value = &row[row.find(&marker)? + marker.len()..];
    value[..value.find('"')?].parse().ok()
}

#[test]
fn dashboard_in_headless_chromium_shows_the_stages_and_counts_that_grow() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pipeline = slow_pipeline(dir.path(), 80);
    let mut flow = Watched::start(&pipeline, &["--quiet", "--dashboard", "127.0.0.1:0"]);
    let url = format!("http://{}/", flow.dashboard.unwrap());
    flow.report_when(|r| stage(r, "slow")["items_in"].as_u64() >= Some(1));

    let first = rendered_dom(&chromium, &url, 1200);
    std::thread::sleep(Duration::from_millis(800));
    let second = rendered_dom(&chromium, &url, 1200);
    for dom in [&first, &second] {
        assert!(dom.contains("class=\"pill running\""), "{dom}");
        assert!(dom.contains("<g class=\"node"), "no graph drawn: {dom}");
        for name in ["numbers", "slow", "out"] {
            // A node of the graph and a row of the table for every stage.
            assert!(
                dom.contains(&format!("data-stage=\"{name}\" transform=")),
                "no graph node {name}: {dom}"
            );
            assert!(
                table_value(dom, name, "workers") == Some(1.0),
                "no row {name}: {dom}"
            );
        }
        assert!(dom.contains("class=\"edge\""), "no edges drawn: {dom}");
    }
    let (a, b) = (
        table_value(&first, "slow", "items_in").unwrap(),
        table_value(&second, "slow", "items_in").unwrap(),
    );
    assert!(
        a >= 1.0 && b > a,
        "slow's items in did not grow: {a} then {b}"
    );
    // The live queue depth, within the queue's capacity.
    let depth = table_value(&second, "slow", "queue_depth").expect("slow has a queue");
    assert!((0.0..=8.0).contains(&depth), "{depth}");
    assert_eq!(flow.exit_code_within(Duration::from_secs(60)), 0);
}

#[test]
fn dashboard_in_headless_chromium_ends_on_the_final_stats() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pipeline = slow_pipeline(dir.path(), 20);
    let mut flow = Watched::start(&pipeline, &["--quiet", "--dashboard", "127.0.0.1:0"]);
    let url = format!("http://{}/", flow.dashboard.unwrap());
    flow.report_when(|r| stage(r, "slow")["items_in"].as_u64() >= Some(1));
    // Virtual time runs far ahead of the run: the page keeps polling until
    // it gets the final report, then stops.
    let dom = rendered_dom(&chromium, &url, 100_000_000);
    assert!(dom.contains("class=\"pill ok\""), "{dom}");
    assert!(dom.contains("Final stats"), "{dom}");
    assert!(dom.contains("bottleneck: slow"), "{dom}");
    assert_eq!(table_value(&dom, "out", "items_in"), Some(20.0), "{dom}");
    let polls: u64 = dom
        .split("data-polls=\"")
        .nth(1)
        .and_then(|s| s[..s.find('"')?].parse().ok())
        .expect("the page counts its polls");
    assert!(polls >= 2, "the page updated only {polls} times");
    assert_eq!(flow.exit_code_within(Duration::from_secs(30)), 0);
}

#[test]
fn dashboard_in_headless_chromium_passes_its_token_and_hides_sample_items() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Items 3 and 7 fail, with a card number in them.
    let pipeline = write_pipeline(
        dir.path(),
        "failing.yaml",
        "name: failing
stages:
  - name: numbers
    type: generate
    with: { count: 40, value: '{id: $i, card: \"4111-1111-1111-1111\"}' }
  - name: check
    type: filter
    with: { expr: 'if .id == 3 or .id == 7 then error(\"rejected\") else true end' }
  - name: slow
    type: sleep
    queue: 8
    with: { duration: 100ms }
  - name: out
    type: drop
",
    );
    let token = "observe-token-42";
    let mut flow = Watched::start_with_env(
        &pipeline,
        &["--quiet", "--dashboard", "127.0.0.1:0"],
        &[("FLOW_DASHBOARD_TOKEN", token)],
    );
    let addr = flow.dashboard.unwrap();
    // Without the token: refused, page and report alike.
    assert_eq!(get(addr, "/").0, 401);
    assert_eq!(get(addr, "/api/report").0, 401);
    // Once both errors are counted (the token in the query this time).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(addr, &format!("/api/report?token={token}"));
        assert_eq!(status, 200, "{body}");
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        let counted: u64 = report["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["count"].as_u64())
            .sum();
        if counted == 2 {
            assert!(!body.contains("4111"), "item data served: {body}");
            break;
        }
        assert!(Instant::now() < deadline, "never two errors: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("http://{addr}/?token={token}");
    let dom = rendered_dom(&chromium, &url, 1500);
    assert!(dom.contains("class=\"pill running\""), "{dom}");
    assert!(
        table_value(&dom, "slow", "workers") == Some(1.0),
        "no row for slow: {dom}"
    );
    // The error is listed, its sample item is not.
    assert!(dom.contains("rejected"), "{dom}");
    assert!(!dom.contains("4111"), "item data on the page: {dom}");
    assert!(dom.contains("--dashboard-items"), "{dom}");
    assert_eq!(flow.exit_code_within(Duration::from_secs(60)), 3);
}

/// A route whose ports feed a slow stage and a fast one: the run lasts
/// long enough to be watched after the route has seen every item.
fn routed_pipeline(dir: &Path) -> PathBuf {
    write_pipeline(
        dir,
        "routed.yaml",
        "name: routed
stages:
  - { name: numbers, type: generate, with: { count: 20 } }
  - name: split
    type: route
    with:
      routes:
        even: '. % 2 == 0'
  - { name: slow, type: sleep, inputs: [split.even], queue: 16, with: { duration: 100ms } }
  - { name: rest, type: drop, inputs: [split._unmatched] }
  - { name: out, type: drop, inputs: [slow] }
",
    )
}

#[test]
fn metrics_and_the_dashboard_show_each_port() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = routed_pipeline(dir.path());
    let mut flow = Watched::start(
        &pipeline,
        &[
            "--quiet",
            "--metrics",
            "127.0.0.1:0",
            "--dashboard",
            "127.0.0.1:0",
        ],
    );
    let report = flow.report_when(|r| stage(r, "split")["items_in"].as_u64() == Some(20));
    assert_eq!(
        stage(&report, "split")["outputs"],
        serde_json::json!({"even": 10, "_unmatched": 10})
    );
    let (status, text) = get(flow.metrics.unwrap(), "/metrics");
    assert_eq!(status, 200);
    let labels =
        |port: &str| format!("pipeline=\"routed\",stage=\"split\",type=\"route\",port=\"{port}\"");
    assert_eq!(
        sample(&text, "flow_stage_items_out_total", &labels("even")),
        Some(10.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "flow_stage_items_out_total", &labels("_unmatched")),
        Some(10.0)
    );
    // A stage without ports keeps one series, without the label.
    assert!(
        sample(
            &text,
            "flow_stage_items_out_total",
            "pipeline=\"routed\",stage=\"numbers\",type=\"generate\""
        )
        .is_some(),
        "{text}"
    );
    if let Some(chromium) = chromium() {
        let url = format!("http://{}/", flow.dashboard.unwrap());
        let dom = rendered_dom(&chromium, &url, 2_000);
        assert!(dom.contains("data-port=\"even\""), "{dom}");
        assert!(dom.contains(">even 10<"), "{dom}");
        assert!(dom.contains(">_unmatched 10<"), "{dom}");
    }
    assert_eq!(flow.exit_code_within(Duration::from_secs(60)), 0);
}
