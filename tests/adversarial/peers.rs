//! Adversarial tests of what flow talks to and shows: silent and hostile HTTP servers, the dashboard and metrics server, and item data on its way to a terminal or a log.
//!
//! Everything runs through the real binary against servers on loopback,
//! started by the test on a runtime of its own. No assertion is about
//! time: a bound shows as "the run ended, with this error", and the test's
//! own timeouts only keep a broken flow from hanging the suite.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flow_tests::{Run, flow, read_jsonl, run, write_pipeline};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Servers for one test, on their own runtime, stopped when dropped.
struct Peers {
    runtime: tokio::runtime::Runtime,
}

/// What a raw server does after its canned bytes.
#[derive(Clone, Copy)]
enum Then {
    /// Keeps the connection open, silent.
    Hold,
    /// Sends one byte every 50 ms, forever.
    Trickle,
}

impl Peers {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        Peers { runtime }
    }

    fn listener(&self) -> tokio::net::TcpListener {
        self.runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap()
    }

    /// A server that answers every connection with `head` (after reading
    /// the request), then does `then`.
    fn raw(&self, head: &'static [u8], then: Then) -> SocketAddr {
        let listener = self.listener();
        let addr = listener.local_addr().unwrap();
        self.runtime.spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut request = [0u8; 8192];
                    let _ = socket.read(&mut request).await;
                    if socket.write_all(head).await.is_err() {
                        return;
                    }
                    match then {
                        Then::Hold => std::future::pending::<()>().await,
                        Then::Trickle => loop {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            if socket.write_all(b"x").await.is_err() {
                                return;
                            }
                        },
                    }
                });
            }
        });
        addr
    }

    /// A server whose chunked body never ends.
    fn endless(&self) -> SocketAddr {
        let listener = self.listener();
        let addr = listener.local_addr().unwrap();
        self.runtime.spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut request = [0u8; 8192];
                    let _ = socket.read(&mut request).await;
                    let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                    if socket.write_all(head).await.is_err() {
                        return;
                    }
                    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "y".repeat(64 * 1024));
                    while socket.write_all(chunk.as_bytes()).await.is_ok() {}
                });
            }
        });
        addr
    }

    fn app(&self, app: Router) -> SocketAddr {
        let listener = self.listener();
        let addr = listener.local_addr().unwrap();
        self.runtime
            .spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }
}

/// A port nobody listens on now.
fn closed_port() -> SocketAddr {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `flow run` with the proxy settings of the machine out of the way.
fn flow_run(pipeline: &Path) -> Command {
    let mut cmd = flow();
    cmd.arg("run")
        .arg(pipeline)
        .env("NO_PROXY", "*")
        .env("no_proxy", "*")
        .stdin(Stdio::null());
    cmd
}

/// A run, and the most memory (resident set, KiB) its process used.
struct Measured {
    run: Run,
    max_rss_kib: i64,
}

/// Runs `cmd` to the end; its peak RSS from `wait4`, for this process
/// alone.
fn run_measured(cmd: &mut Command) -> Measured {
    // Reaped by wait4 below, which std's wait cannot replace: it gives the
    // child's own peak RSS.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flow starts");
    let read = |mut from: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = from.read_to_end(&mut all);
            String::from_utf8_lossy(&all).into_owned()
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet waited for; the pointers are to
    // live locals.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Measured {
        run: Run {
            code,
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
        },
        max_rss_kib: usage.ru_maxrss,
    }
}

/// `fetch` (http, with `options`) on `urls`, good pages to pages.jsonl and
/// failed ones, with their errors, to failed.jsonl.
fn fetch_pipeline(dir: &Path, urls: &[String], stage: &str, options: &str) -> PathBuf {
    let items: Vec<String> = urls.iter().map(|u| format!("'{u}'")).collect();
    write_pipeline(
        dir,
        "fetch.yaml",
        &format!(
            "name: peers
stages:
  - name: urls
    type: list
    with: {{ items: [{}] }}
  - name: fetch
    type: http
    workers: 4
    on_error: failed
{stage}
    with: {{ {options} }}
  - name: pages
    type: write
    with: {{ path: pages.jsonl }}
  - name: failed
    type: write
    inputs: []
    with: {{ path: failed.jsonl }}
",
            items.join(", ")
        ),
    )
}

/// The dead letters of a run of [`fetch_pipeline`], by the URL they were
/// for.
fn dead_letters(dir: &Path) -> Vec<serde_json::Value> {
    let path = dir.join("failed.jsonl");
    if !path.exists() {
        return Vec::new();
    }
    read_jsonl(&path)
}

fn letter_for<'a>(letters: &'a [serde_json::Value], url: &str) -> &'a serde_json::Value {
    letters
        .iter()
        .find(|l| l["item"] == url)
        .unwrap_or_else(|| panic!("no dead letter for {url} in {letters:?}"))
}

#[test]
fn silent_stalled_trickling_and_unending_servers_fail_their_items_within_the_bound() {
    let peers = Peers::new();
    let silent = peers.raw(b"", Then::Hold);
    let stalled = peers.raw(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nhalf a body",
        Then::Hold,
    );
    let trickle = peers.raw(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n",
        Then::Trickle,
    );
    // No length and no end: the body lasts as long as the connection.
    let unending = peers.raw(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nstart",
        Then::Trickle,
    );
    let good = peers.app(Router::new().route("/", get(|| async { "fine" })));
    let urls: Vec<String> = [silent, stalled, trickle, unending]
        .iter()
        .map(|a| format!("http://{a}/x"))
        .collect();
    let all: Vec<String> = urls
        .iter()
        .cloned()
        .chain([format!("http://{good}/")])
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = fetch_pipeline(
        dir.path(),
        &all,
        "    retry: { attempts: 2, backoff: 10ms }",
        "request_timeout: 1s",
    );
    run(&mut flow_run(&pipeline)).expect_code(3);
    let letters = dead_letters(dir.path());
    assert_eq!(letters.len(), urls.len(), "{letters:?}");
    for url in &urls {
        let letter = letter_for(&letters, url);
        assert_eq!(
            letter["error"]["message"],
            format!("GET {url}: timed out after 1s (request_timeout)")
        );
        // Retryable: tried again, and timed out again.
        assert_eq!(letter["error"]["attempts"], 2, "{letter}");
    }
    let pages = read_jsonl(&dir.path().join("pages.jsonl"));
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0]["body"], "fine");
}

#[test]
fn without_request_timeout_the_stages_timeout_bounds_the_request() {
    let peers = Peers::new();
    let url = format!("http://{}/x", peers.raw(b"", Then::Hold));
    let dir = tempfile::tempdir().unwrap();
    let pipeline = fetch_pipeline(
        dir.path(),
        std::slice::from_ref(&url),
        "    timeout: 1s",
        "url: .",
    );
    run(&mut flow_run(&pipeline)).expect_code(3);
    let letters = dead_letters(dir.path());
    let message = letter_for(&letters, &url)["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    // The runner's bound or the stage's, whichever says it first: the
    // same second.
    assert!(message.contains("timed out after 1s"), "{message}");
}

#[test]
fn an_endless_body_fails_its_item_and_memory_stays_bounded() {
    let peers = Peers::new();
    let url = format!("http://{}/endless", peers.endless());
    let dir = tempfile::tempdir().unwrap();
    // The default max_body, 64MiB.
    let pipeline = fetch_pipeline(dir.path(), std::slice::from_ref(&url), "", "as: bytes");
    let measured = run_measured(&mut flow_run(&pipeline));
    let run = measured.run.expect_code(3);
    let letters = dead_letters(dir.path());
    let letter = letter_for(&letters, &url);
    assert_eq!(
        letter["error"]["message"],
        format!("GET {url}: 200 OK: the body is larger than max_body (64MiB); stopped reading it")
    );
    assert_eq!(letter["error"]["attempts"], 1, "permanent: {letter}");
    // 64 MiB of body at most, plus flow itself: far from unbounded.
    let mib = measured.max_rss_kib / 1024;
    assert!(mib < 256, "peak RSS {mib} MiB\n{}", run.stderr);
}

#[test]
fn a_huge_content_length_or_a_deep_json_body_fails_the_item_for_good() {
    let peers = Peers::new();
    // Claims a terabyte, sends four bytes, and waits: refused from the
    // header alone (a run waiting for the body would time out instead).
    let huge = peers.raw(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1099511627776\r\n\r\nxxxx",
        Then::Hold,
    );
    let deep = peers.app(Router::new().route(
        "/deep",
        get(|| async { "[".repeat(10_000) + &"]".repeat(10_000) }),
    ));
    let (huge, deep) = (format!("http://{huge}/big"), format!("http://{deep}/deep"));
    let dir = tempfile::tempdir().unwrap();
    let pipeline = fetch_pipeline(
        dir.path(),
        &[huge.clone(), deep.clone()],
        "    retry: { attempts: 3, backoff: 10ms }",
        "as: json, request_timeout: 60s",
    );
    run(&mut flow_run(&pipeline)).expect_code(3);
    let letters = dead_letters(dir.path());
    let letter = letter_for(&letters, &huge);
    assert_eq!(
        letter["error"]["message"],
        format!("GET {huge}: 200 OK: the body is 1099511627776 bytes, more than max_body (64MiB)")
    );
    assert_eq!(letter["error"]["attempts"], 1);
    let letter = letter_for(&letters, &deep);
    assert_eq!(
        letter["error"]["message"],
        format!(
            "GET {deep}: 200 OK: the body is not JSON: nested deeper than 256 levels (at byte 257)"
        )
    );
    assert_eq!(letter["error"]["attempts"], 1);
}

/// Every request a recording server saw: its path and its `x-api-key`.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A server that records each request and redirects `/go?to=URL` to URL.
fn recording_server(peers: &Peers) -> (SocketAddr, Seen) {
    async fn handle(State(seen): State<Seen>, uri: Uri, headers: HeaderMap) -> Response {
        let key = headers
            .get("x-api-key")
            .map(|v| v.to_str().unwrap().to_string());
        seen.lock().unwrap().push((uri.path().to_string(), key));
        match uri.query().and_then(|q| q.strip_prefix("to=")) {
            Some(to) if uri.path() == "/go" => {
                (StatusCode::FOUND, [("location", to.to_string())]).into_response()
            }
            _ => format!("landed on {}", uri.path()).into_response(),
        }
    }
    let seen = Seen::default();
    let app = Router::new().fallback(handle).with_state(seen.clone());
    (peers.app(app), seen)
}

#[test]
fn configured_headers_never_follow_a_redirect_to_another_origin() {
    let peers = Peers::new();
    let (first, seen_first) = recording_server(&peers);
    let (second, seen_second) = recording_server(&peers);
    // The same host, another port: another origin.
    let away = format!("http://{first}/go?to=http://{second}/landing");
    let home = format!("http://{first}/go?to=/home");
    let dir = tempfile::tempdir().unwrap();
    let pipeline = fetch_pipeline(
        dir.path(),
        &[away.clone(), home.clone()],
        "",
        "headers: { x-api-key: '${API_KEY}' }",
    );
    run(flow_run(&pipeline).env("API_KEY", "s3cret-key")).expect_code(0);
    let mut pages = read_jsonl(&dir.path().join("pages.jsonl"));
    pages.sort_by_key(|p| p["body"].to_string());
    assert_eq!(pages[0]["body"], "landed on /home");
    assert_eq!(pages[0]["url"], format!("http://{first}/home"));
    assert_eq!(pages[1]["body"], "landed on /landing");
    assert_eq!(pages[1]["url"], format!("http://{second}/landing"));
    let second_saw = seen_second.lock().unwrap().clone();
    assert_eq!(second_saw, vec![("/landing".to_string(), None)]);
    let first_saw = seen_first.lock().unwrap().clone();
    assert_eq!(first_saw.len(), 3, "{first_saw:?}");
    assert!(
        first_saw
            .iter()
            .all(|(_, key)| key.as_deref() == Some("s3cret-key")),
        "{first_saw:?}"
    );
}

#[test]
fn a_retry_after_of_31_years_is_capped_and_the_error_says_so() {
    let peers = Peers::new();
    let busy = peers.app(Router::new().route(
        "/busy",
        get(|| async {
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "977616000")],
            )
        }),
    ));
    let url = format!("http://{busy}/busy");
    let dir = tempfile::tempdir().unwrap();
    // The runner waits what the stage attached: max_retry_after here.
    let pipeline = fetch_pipeline(
        dir.path(),
        std::slice::from_ref(&url),
        "    retry: { attempts: 2 }",
        "max_retry_after: 100ms",
    );
    let out = run(flow_run(&pipeline).arg("-v")).expect_code(3);
    assert!(
        out.stderr.contains("retrying in 100ms"),
        "the wait the runner took:\n{}",
        out.stderr
    );
    let letters = dead_letters(dir.path());
    let letter = letter_for(&letters, &url);
    assert_eq!(
        letter["error"]["message"],
        format!("GET {url}: 429 Too Many Requests (Retry-After capped to 100ms, max_retry_after)")
    );
    assert_eq!(letter["error"]["attempts"], 2);

    // The default cap, 5 minutes, as reported; max_backoff keeps the test
    // from waiting it.
    let dir = tempfile::tempdir().unwrap();
    let pipeline = fetch_pipeline(
        dir.path(),
        std::slice::from_ref(&url),
        "    retry: { attempts: 2, backoff: 10ms, max_backoff: 50ms }",
        "url: .",
    );
    let out = run(flow_run(&pipeline).arg("-v")).expect_code(3);
    assert!(out.stderr.contains("retrying in 50ms"), "{}", out.stderr);
    let letters = dead_letters(dir.path());
    assert_eq!(
        letter_for(&letters, &url)["error"]["message"],
        format!("GET {url}: 429 Too Many Requests (Retry-After capped to 5m, max_retry_after)")
    );
}

#[test]
fn credentials_in_urls_reach_no_message_log_report_or_output() {
    let peers = Peers::new();
    let good = peers.app(Router::new().route("/", get(|| async { "fine" })));
    let refused = closed_port();
    let urls = [
        format!("http://user:hunter2@{good}/"),
        format!("http://user:hunter2@{refused}/x?token=tok3n"),
        format!("http://user:hunter2@{good}/missing"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let pipeline = fetch_pipeline(dir.path(), &urls, "", "url: .");
    // Dead letters are data and keep the item as it was; the rest not.
    let stats = dir.path().join("stats.json");
    let out = run(flow_run(&pipeline).args(["-v", "--stats-json"]).arg(&stats)).expect_code(3);
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
    assert!(!out.stderr.contains("tok3n"), "{}", out.stderr);
    let pages = read_jsonl(&dir.path().join("pages.jsonl"));
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0]["url"], format!("http://***@{good}/"));
    for letter in dead_letters(dir.path()) {
        let message = letter["error"]["message"].as_str().unwrap();
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.starts_with("GET http://***@"), "{message}");
    }
}

/// A `flow run` going in the background with its stdin open (the pipeline
/// reads it: the run lasts until the test closes it), and the addresses it
/// serves.
struct Watched {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Watched {
    fn start(mut cmd: Command) -> Watched {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("flow starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        let reader = BufReader::new(child.stderr.take().unwrap());
        let all = stderr.clone();
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                all.lock().unwrap().push_str(&(line.clone() + "\n"));
                let _ = tx.send(line);
            }
        });
        Watched {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
        }
    }

    /// The first stderr line containing `marker`.
    fn line_with(&self, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(marker) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "flow never printed {marker:?}:\n{}",
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    /// Where the dashboard is served (the address printed, and the token
    /// in its URL if any).
    fn dashboard(&self) -> (SocketAddr, Option<String>) {
        let line = self.line_with("dashboard at http://");
        let url = &line[line.find("http://").unwrap() + 7..];
        let (addr, rest) = url.split_once('/').unwrap();
        let token = rest
            .strip_prefix("?token=")
            .map(|t| t.split([' ', ',']).next().unwrap().to_string());
        (addr.parse().unwrap(), token)
    }

    fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Closes stdin (the run can end) and waits for the exit code.
    fn finish(&mut self) -> i32 {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "flow still running:\n{}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request to `addr` naming `host`, with extra header lines:
/// the status and the body.
fn request(addr: SocketAddr, path: &str, host: &str, extra: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a whole response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, body.to_string())
}

/// lines of stdin → a check that fails lines starting with `secret` →
/// nothing.
fn stdin_pipeline(dir: &Path) -> PathBuf {
    write_pipeline(
        dir,
        "watched.yaml",
        r#"name: watched
stages:
  - name: lines
    type: read
    with: { path: '-', format: lines }
  - name: check
    type: filter
    with: { expr: 'if startswith("secret") then error("rejected") else true end' }
  - name: out
    type: drop
"#,
    )
}

/// The errors of `stage` in the report's list of errors.
fn errors_of(report: &serde_json::Value, stage: &str) -> u64 {
    report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["stage"] == stage)
        .filter_map(|e| e["count"].as_u64())
        .sum()
}

/// Polls `/api/report` until the list of errors counts `errors` for
/// `stage`.
fn report_with_errors(
    addr: SocketAddr,
    extra: &str,
    stage: &str,
    errors: u64,
) -> (String, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = request(addr, "/api/report", &addr.to_string(), extra);
        assert_eq!(status, 200, "{body}");
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        if errors_of(&report, stage) >= errors {
            return (body, report);
        }
        assert!(Instant::now() < deadline, "never {errors} errors: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_dashboard_answers_only_to_its_own_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = flow_run(&stdin_pipeline(dir.path()));
    cmd.args([
        "--quiet",
        "--dashboard",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let mut flow = Watched::start(cmd);
    let (addr, token) = flow.dashboard();
    assert_eq!(token, None, "no token on loopback");
    let port = addr.port();
    for path in ["/", "/api/report", "/metrics"] {
        for host in [
            "evil.example".to_string(),
            format!("evil.example:{port}"),
            format!("localhost.evil.example:{port}"),
            format!("127.0.0.1:{}", port + 1),
        ] {
            let (status, body) = request(addr, path, &host, "");
            assert_eq!(status, 421, "{path} with Host {host}: {body}");
            assert!(!body.contains("\"stages\""), "{body}");
        }
        for host in [
            addr.to_string(),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ] {
            assert_eq!(request(addr, path, &host, "").0, 200, "{path} {host}");
        }
    }
    // A request with a body is refused.
    let (status, _) = request(
        addr,
        "/api/report",
        &addr.to_string(),
        "Content-Length: 5\r\n",
    );
    assert_eq!(status, 413);
    assert_eq!(flow.finish(), 0);
}

#[test]
fn api_report_serves_no_item_data_unless_asked() {
    let secret = "secret card 4111-1111-1111-1111 at https://u:hunter2@pay.example/";
    for items in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = flow_run(&stdin_pipeline(dir.path()));
        cmd.args(["--quiet", "--dashboard", "127.0.0.1:0"]);
        if items {
            cmd.arg("--dashboard-items");
        }
        let mut flow = Watched::start(cmd);
        let (addr, _) = flow.dashboard();
        flow.send(&format!("{secret}\nfine\n{secret}\n"));
        let (body, report) = report_with_errors(addr, "", "check", 2);
        let error = &report["errors"][0];
        assert_eq!(error["stage"], "check", "{body}");
        assert_eq!(error["count"], 2, "{body}");
        assert!(!body.contains("hunter2"), "credentials served: {body}");
        if items {
            let sample = error["sample"].as_str().unwrap();
            assert!(sample.contains("4111-1111"), "{body}");
            assert!(sample.contains("https://***@pay.example/"), "{body}");
        } else {
            assert!(!body.contains("4111"), "item data served: {body}");
            assert_eq!(
                error["sample"],
                "(hidden: flow run --dashboard-items shows sample items)"
            );
        }
        assert_eq!(flow.finish(), 3);
    }
}

#[test]
fn beyond_loopback_every_request_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = flow_run(&stdin_pipeline(dir.path()));
    cmd.args([
        "--quiet",
        "--dashboard",
        "0.0.0.0:0",
        "--metrics",
        "0.0.0.0:0",
    ]);
    let mut flow = Watched::start(cmd);
    let (bound, token) = flow.dashboard();
    let token = token.expect("flow made up a token and printed it in the URL");
    assert_eq!(token.len(), 32);
    assert!(bound.ip().is_unspecified());
    let warning = flow.line_with("warning");
    assert!(
        warning.contains("--metrics and --dashboard at 0.0.0.0:")
            && warning.contains("open on every network interface"),
        "{warning}"
    );
    // Reached over loopback (the only traffic a test sends).
    let addr: SocketAddr = format!("127.0.0.1:{}", bound.port()).parse().unwrap();
    let host = addr.to_string();
    for path in ["/", "/api/report", "/metrics"] {
        let (status, body) = request(addr, path, &host, "");
        assert_eq!(status, 401, "{path} without the token: {body}");
        assert!(!body.contains("\"stages\""), "{body}");
        // One character off (never the token itself, whatever it starts with).
        let first = if token.starts_with('0') { '1' } else { '0' };
        let wrong = request(
            addr,
            &format!("{path}?token={first}{}", &token[1..]),
            &host,
            "",
        );
        assert_eq!(wrong.0, 401, "{path} with a wrong token");
        let with_query = request(addr, &format!("{path}?token={token}"), &host, "");
        assert_eq!(with_query.0, 200, "{path}: {}", with_query.1);
        let bearer = format!("Authorization: Bearer {token}\r\n");
        assert_eq!(request(addr, path, &host, &bearer).0, 200, "{path}");
    }
    // The Host check holds even with the token.
    let (status, _) = request(addr, &format!("/?token={token}"), "evil.example", "");
    assert_eq!(status, 421);
    // The page hands its token to the report it polls.
    let (_, page) = request(addr, &format!("/?token={token}"), &host, "");
    assert!(page.contains("get(\"token\")"), "{page}");
    assert_eq!(flow.finish(), 0);
    let stderr = flow.stderr.lock().unwrap().clone();
    assert_eq!(
        stderr.lines().filter(|l| l.contains(&token)).count(),
        1,
        "the token is printed once:\n{stderr}"
    );
}

#[test]
fn a_token_given_in_the_environment_is_required_and_not_printed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = flow_run(&stdin_pipeline(dir.path()));
    cmd.args(["--quiet", "--dashboard", "127.0.0.1:0"])
        .env("FLOW_DASHBOARD_TOKEN", "given-token-123");
    let mut flow = Watched::start(cmd);
    let (addr, printed) = flow.dashboard();
    assert_eq!(printed, None);
    let host = addr.to_string();
    assert_eq!(request(addr, "/api/report", &host, "").0, 401);
    let bearer = "Authorization: Bearer given-token-123\r\n";
    assert_eq!(request(addr, "/api/report", &host, bearer).0, 200);
    assert_eq!(flow.finish(), 0);
    assert!(!flow.stderr.lock().unwrap().contains("given-token-123"));
}

#[test]
fn a_bad_token_is_refused_before_the_run_and_ignored_when_nothing_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        dir.path(),
        "tiny.yaml",
        "stages:\n  - {name: n, type: generate, with: {count: 2}}\n  - {name: out, type: drop}\n",
    );
    let out = run(flow_run(&pipeline)
        .args(["--quiet", "--dashboard", "127.0.0.1:0"])
        .env("FLOW_DASHBOARD_TOKEN", "has spaces"))
    .expect_code(2);
    assert!(
        out.stderr
            .contains("--dashboard-token (or FLOW_DASHBOARD_TOKEN): a token is"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("has spaces"), "{}", out.stderr);
    run(flow_run(&pipeline)
        .arg("--quiet")
        .env("FLOW_DASHBOARD_TOKEN", "has spaces"))
    .expect_code(0);
}

#[test]
fn a_thousand_idle_connections_starve_neither_the_pipeline_nor_the_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        dir.path(),
        "files.yaml",
        r#"name: files
stages:
  - name: lines
    type: read
    with: { path: '-', format: lines }
  - name: save
    type: files
    workers: 4
    with: { dir: out, name: '"\(.).txt"', field: body }
"#,
    );
    let mut cmd = flow_run(&pipeline);
    cmd.args(["--quiet", "--dashboard", "127.0.0.1:0"]);
    // Few file descriptors, as on many machines: 1,000 connections held
    // open would take them all.
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between
    // fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut flow = Watched::start(cmd);
    let (addr, _) = flow.dashboard();
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connects"))
        .collect();
    // Each line is a file to open and write while they are connected.
    let lines: String = (0..300).map(|i| format!("item{i}\n")).collect();
    flow.send(&lines);
    // A normal request is still answered.
    let (status, body) = request(addr, "/api/report", &addr.to_string(), "");
    assert_eq!(status, 200, "{body}");
    let code = flow.finish();
    let stderr = flow.stderr.lock().unwrap().clone();
    assert_eq!(code, 0, "{stderr}");
    let written = std::fs::read_dir(dir.path().join("out")).unwrap().count();
    assert_eq!(written, 300, "{stderr}");
    drop(idle);
}

#[test]
fn connections_that_say_nothing_or_too_much_are_closed_by_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = flow_run(&stdin_pipeline(dir.path()));
    cmd.args(["--quiet", "--dashboard", "127.0.0.1:0"]);
    let mut flow = Watched::start(cmd);
    let (addr, _) = flow.dashboard();
    let closed_by_server = |mut stream: TcpStream| {
        // The test's own bound: far beyond the server's idle timeout.
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut rest = Vec::new();
        match stream.read_to_end(&mut rest) {
            Ok(_) => {}
            // Closed with our bytes unread: a reset, closed all the same.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
        String::from_utf8_lossy(&rest).into_owned()
    };
    // Silent from the start.
    let silent = TcpStream::connect(addr).unwrap();
    // Half a request head, never finished.
    let mut partial = TcpStream::connect(addr).unwrap();
    write!(partial, "GET /api/report HTTP/1.1\r\nHost: {addr}\r\n").unwrap();
    // A whole request, then nothing: an idle keep-alive.
    let mut kept = TcpStream::connect(addr).unwrap();
    write!(kept, "GET /api/report HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    // A request head larger than the server reads.
    let mut huge = TcpStream::connect(addr).unwrap();
    let padding = "x".repeat(64 * 1024);
    let _ = write!(
        huge,
        "GET /api/report HTTP/1.1\r\nHost: {addr}\r\nX-Pad: {padding}\r\n\r\n"
    );
    assert_eq!(closed_by_server(silent), "");
    assert_eq!(closed_by_server(partial), "");
    assert!(closed_by_server(kept).starts_with("HTTP/1.1 200"));
    let answer = closed_by_server(huge);
    assert!(!answer.contains("\"stages\""), "{answer}");
    assert_eq!(flow.finish(), 0);
}

/// Items that try to take over the terminal, and one with a password.
fn hostile_pipeline(dir: &Path, sink: &str) -> PathBuf {
    let refused = closed_port();
    write_pipeline(
        dir,
        "hostile.yaml",
        &format!(
            r#"name: hostile
stages:
  - name: items
    type: list
    with:
      items:
        - "\e]0;pwned\a title"
        - "\e[2J\e[H cleared"
        - "ok\rFAKE ok"
        - "\x9b31m red"
        - "\u202Edesrever"
        - "http://user:hunter2@{refused}/x"
  - name: peek
    type: log
    with: {{ level: warn }}
  - name: check
    type: map
    with: {{ expr: 'if startswith("http") then . else error("bad item: " + .) end' }}
  - name: fetch
    type: http
    with: {{ request_timeout: 5s }}
  - name: out
{sink}
"#
        ),
    )
}

/// What must never reach stderr raw.
fn assert_no_raw_escapes(stderr: &str) {
    for raw in ['\x1b', '\x07', '\r', '\u{9b}', '\u{202e}'] {
        assert!(!stderr.contains(raw), "{raw:?} reached stderr:\n{stderr:?}");
    }
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn escape_sequences_in_items_never_reach_stderr_raw() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = hostile_pipeline(dir.path(), "    type: stdout\n    with: { format: lines }");
    let out = run(flow_run(&pipeline).arg("-v")).expect_code(3);
    assert_no_raw_escapes(&out.stderr);
    // The messages and samples are there, escaped.
    for shown in [
        "bad item: \\x1b]0;pwned\\x07 title",
        "bad item: ok\\rFAKE ok",
        "bad item: \\u{9b}31m red",
        "bad item: \\u{202e}desrever",
        "cannot connect",
        "http://***@127.0.0.1:",
    ] {
        assert!(
            out.stderr.contains(shown),
            "no {shown:?} in:\n{}",
            out.stderr
        );
    }
    assert!(
        out.stderr.contains("\nstage  "),
        "the report: {}",
        out.stderr
    );
    assert!(out.stderr.contains("e.g. "), "samples: {}", out.stderr);
    // The stdout sink is data: nothing reached it but the one item that
    // got through, untouched... and none did here.
    assert_eq!(out.stdout, "");

    // JSON logs: every line parses, nothing raw.
    let out = run(flow_run(&pipeline).args(["-v", "--log-format", "json"])).expect_code(3);
    assert_no_raw_escapes(&out.stderr);
    let logged: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(
        logged
            .iter()
            .any(|l| l["message"].as_str().unwrap().contains("\u{9b}31m red")),
        "the JSON value keeps the text: {logged:?}"
    );
}

#[test]
fn the_stdout_sink_is_data_and_stays_raw() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        dir.path(),
        "raw.yaml",
        r#"stages:
  - name: items
    type: list
    with: { items: ["\e]0;title\a"] }
  - name: print
    type: stdout
    with: { format: lines }
"#,
    );
    let out = run(&mut flow_run(&pipeline)).expect_code(0);
    assert_eq!(out.stdout, "\x1b]0;title\x07\n");
    assert_no_raw_escapes(&out.stderr);
}

#[test]
fn escape_sequences_in_items_never_reach_a_terminal_raw() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = hostile_pipeline(dir.path(), "    type: drop");
    let flow = flow();
    let command = format!(
        "'{}' run '{}' -v",
        flow.get_program().to_string_lossy(),
        pipeline.display()
    );
    let out: Run = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("TERM", "xterm-256color")
        .env("NO_PROXY", "*")
        .output()
        .expect("`script` (util-linux) runs")
        .into();
    let screen = out.stdout;
    // The terminal has flow's own escapes (colours, redraws), never the
    // items'.
    for raw in [
        "\x1b]0;pwned",
        "\x1b[2J\x1b[H cleared",
        "\rFAKE",
        "\u{9b}",
        "\u{202e}",
    ] {
        assert!(
            !screen.contains(raw),
            "{raw:?} reached the terminal:\n{screen:?}"
        );
    }
    assert!(!screen.contains("hunter2"), "{screen}");
    assert!(screen.contains("\\x1b]0;pwned"), "{screen}");
}
