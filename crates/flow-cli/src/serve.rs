//! `--metrics` (Prometheus text at `/metrics`) and `--dashboard` (a live
//! status page at `/`, fed by `/api/report`), served while the run lasts.
//!
//! Both read the run's live [`Report`] through its [`Monitor`] on every
//! request, so a scrape or a page refresh costs the run nothing between
//! requests. When both flags name the same address one server answers all
//! three paths. The page is one HTML file built into the binary: no CDN,
//! nothing else to fetch. When the run ends [`Server::stop`] gives an open
//! page a moment to fetch the final report, then closes every connection:
//! a client still connected does not keep the process alive.
//!
//! What it shows, and to whom:
//!
//! * **No item data by default.** Error messages and their counts are
//!   shown, the sample item of each is not (a placeholder says how to see
//!   it: `--dashboard-items`). Credentials (the user and password of a
//!   URL, tokens) are redacted from everything served.
//! * **Its own names only.** A request whose `Host` is not the address
//!   served (`localhost`, `127.0.0.1` or `[::1]` on a loopback address,
//!   any IP address on `0.0.0.0`), with its port, or a name given with
//!   `--dashboard-allow-host`, gets 421: a web page elsewhere cannot read
//!   the run through DNS rebinding.
//! * **A token beyond loopback.** On an address other machines can reach
//!   (`0.0.0.0`, `::`, a LAN address) every request needs a token, as
//!   `?token=` or `Authorization: Bearer`: `--dashboard-token` or
//!   `FLOW_DASHBOARD_TOKEN`, else one flow makes up and prints, once, in
//!   the URL on stderr. flow warns that the address is reachable.
//! * **Bounded connections.** At most [`MAX_CONNECTIONS`] at once; when
//!   all are taken, the one idle the longest is closed to make room, and
//!   a connection beyond them all busy is closed at once. A connection
//!   that sends no complete request for [`IDLE_TIMEOUT`] is closed;
//!   request heads are limited to [`MAX_REQUEST_HEAD`] bytes, and a
//!   request with a body is refused. Idle clients cannot use up flow's
//!   file descriptors, which the pipeline needs.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header, uri::Authority};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use flow_core::text::redact;
use flow_runner::stats::{LatencyBuckets, StageReport};
use flow_runner::{Monitor, Report, Status};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

/// The status page: `dashboard.html`, self-contained.
const DASHBOARD: &str = include_str!("dashboard.html");

/// Upper bounds of the latency histogram's buckets, from 100 µs to a
/// minute: a `map` takes microseconds, an `http` fetch seconds.
const LATENCY_BOUNDS_S: [f64; 16] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// How long the end of a run waits for an open page to fetch the final
/// report (the page polls twice a second).
const FINAL_FETCH_GRACE: Duration = Duration::from_millis(1500);

/// A page that polled within this long is taken to be still open.
const PAGE_OPEN_WITHIN: Duration = Duration::from_secs(3);

/// How long connections get to close before they are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// The most connections one address serves at once.
pub const MAX_CONNECTIONS: usize = 64;

/// A connection with no request in progress for this long is closed: one
/// that never completes its request head, or an idle keep-alive.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest request head (request line and headers) read, in bytes.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// After a failed `accept` (no file descriptor left, say), wait this long
/// before the next, rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The environment variable that may hold the token.
pub const TOKEN_ENV: &str = "FLOW_DASHBOARD_TOKEN";

/// What `/api/report` shows in place of a sample item, by default.
pub const SAMPLE_HIDDEN: &str = "(hidden: flow run --dashboard-items shows sample items)";

/// Who may see the served pages, and how much of the items they see.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// `--dashboard-token` (or [`TOKEN_ENV`]): required on every request.
    pub token: Option<String>,
    /// `--dashboard-items`: the report's sample items are shown.
    pub items: bool,
    /// `--dashboard-allow-host`: more names the `Host` header may give
    /// (`name` for any port, `name:port` for one).
    pub allowed_hosts: Vec<String>,
}

/// The servers started for a run; [`Server::stop`] ends them.
pub struct Server {
    state: Arc<Served>,
    running: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
}

/// What the handlers share.
struct Served {
    monitor: Monitor,
    /// When a page last fetched `/api/report`.
    last_fetch: Mutex<Option<Instant>>,
    /// Set once a page has fetched a report of the finished run.
    final_fetched: watch::Sender<bool>,
    /// Sample items are shown.
    items: bool,
}

/// Which paths one address serves.
#[derive(Clone, Copy)]
struct Paths {
    metrics: bool,
    dashboard: bool,
}

/// Binds the addresses asked for (one server when they are the same) and
/// serves them in the background. Fails, before anything is served, when
/// an address cannot be bound or the token is not usable.
pub async fn bind(
    metrics: Option<SocketAddr>,
    dashboard: Option<SocketAddr>,
    access: Access,
) -> Result<Bound, String> {
    let mut wanted: Vec<(SocketAddr, Paths)> = Vec::new();
    if let Some(addr) = metrics {
        wanted.push((
            addr,
            Paths {
                metrics: true,
                dashboard: false,
            },
        ));
    }
    if let Some(addr) = dashboard {
        match wanted.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, paths)) => paths.dashboard = true,
            None => wanted.push((
                addr,
                Paths {
                    metrics: false,
                    dashboard: true,
                },
            )),
        }
    }
    if wanted.is_empty() {
        // Nothing served: a token in the environment is not looked at.
        return Ok(Bound {
            listeners: Vec::new(),
            token: None,
            items: access.items,
            allowed_hosts: Vec::new().into(),
        });
    }
    let given = match access.token.clone() {
        Some(token) => Some(check_token(token)?),
        None => None,
    };
    let allowed_hosts = access
        .allowed_hosts
        .iter()
        .map(|h| AllowedHost::parse(h))
        .collect::<Result<Vec<_>, _>>()?;
    // Bind every address before serving any, so a failure serves nothing.
    let mut listeners = Vec::new();
    for (addr, paths) in wanted {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "; another program listens there: choose another port"
                }
                _ => "",
            };
            format!("cannot serve {} on {addr}: {e}{hint}", paths.flags())
        })?;
        listeners.push((listener, paths));
    }
    // Beyond loopback, a token is a must: made up when none was given.
    let reachable = listeners
        .iter()
        .any(|(l, _)| l.local_addr().is_ok_and(|a| !a.ip().is_loopback()));
    let token = match given {
        Some(token) => Some(Token {
            value: token.into(),
            made_up: false,
        }),
        None if reachable => Some(Token {
            value: make_token()?.into(),
            made_up: true,
        }),
        None => None,
    };
    Ok(Bound {
        listeners,
        token,
        items: access.items,
        allowed_hosts: allowed_hosts.into(),
    })
}

/// A token as given: something a URL and a header can carry as it is.
fn check_token(token: String) -> Result<String, String> {
    let usable = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !usable {
        return Err(format!(
            "--dashboard-token (or {TOKEN_ENV}): a token is letters, digits, `-`, `.`, `_` and `~`, at least one"
        ));
    }
    Ok(token)
}

/// A token nobody can guess: 128 bits from the system's random source.
fn make_token() -> Result<String, String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| {
            format!("cannot make a dashboard token: {e}; give one with --dashboard-token")
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The token every request must carry.
#[derive(Clone)]
struct Token {
    value: Arc<str>,
    /// flow made it up: it prints it, once.
    made_up: bool,
}

/// A `--dashboard-allow-host` entry.
#[derive(Clone, Debug, PartialEq)]
struct AllowedHost {
    host: String,
    port: Option<u16>,
}

impl AllowedHost {
    fn parse(text: &str) -> Result<Self, String> {
        let authority: Authority = text
            .trim()
            .parse()
            .ok()
            .filter(|a: &Authority| !a.as_str().contains('@') && !a.host().is_empty())
            .ok_or_else(|| {
                format!("--dashboard-allow-host {text:?}: write a host name, or name:port")
            })?;
        Ok(AllowedHost {
            host: normal_host(authority.host()),
            port: authority.port_u16(),
        })
    }
}

/// A host name as compared: lowercase, without a final dot.
fn normal_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The listening sockets, bound before the run starts so that an address
/// in use stops flow before it does any work.
pub struct Bound {
    listeners: Vec<(TcpListener, Paths)>,
    token: Option<Token>,
    items: bool,
    allowed_hosts: Arc<[AllowedHost]>,
}

impl Bound {
    /// Starts serving the run `monitor` reports on.
    pub fn serve(self, monitor: Monitor) -> Result<Server, String> {
        let state = Arc::new(Served {
            monitor,
            last_fetch: Mutex::new(None),
            final_fetched: watch::Sender::new(false),
            items: self.items,
        });
        let mut running = Vec::new();
        for (listener, paths) in self.listeners {
            let local = listener
                .local_addr()
                .map_err(|e| format!("cannot serve {}: {e}", paths.flags()))?;
            eprintln!("flow: {}", paths.announce(local, self.token.as_ref()));
            if let Some(warning) = reach_warning(paths, local) {
                eprintln!("flow: warning: {warning}");
            }
            let gate = Arc::new(Gate {
                local,
                token: self.token.as_ref().map(|t| t.value.clone()),
                allowed_hosts: self.allowed_hosts.clone(),
            });
            let (stop, stopped) = oneshot::channel::<()>();
            let app = router(paths, state.clone(), gate);
            let slots = Arc::new(Slots::new(MAX_CONNECTIONS));
            let task = tokio::spawn(accept_loop(listener, app, slots, stopped));
            running.push((stop, task));
        }
        Ok(Server { state, running })
    }
}

/// The warning for an address other machines may reach.
fn reach_warning(paths: Paths, local: SocketAddr) -> Option<String> {
    let ip = local.ip();
    if ip.is_loopback() {
        return None;
    }
    let reach = if ip.is_unspecified() {
        "every network interface of this machine"
    } else {
        "an address other machines may reach"
    };
    Some(format!(
        "{} at {local} is open on {reach}: anyone who can connect and has the token sees the run's progress and errors; bind 127.0.0.1 to keep it on this machine",
        paths.flags()
    ))
}

impl Server {
    /// Stops serving, once the run has ended: an open page gets a moment
    /// to fetch the final report, then connections still open are cut.
    pub async fn stop(self) {
        let page_open = self
            .state
            .last_fetch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < PAGE_OPEN_WITHIN);
        if page_open {
            let mut fetched = self.state.final_fetched.subscribe();
            let _ = tokio::time::timeout(FINAL_FETCH_GRACE, fetched.wait_for(|&done| done)).await;
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        let mut tasks = Vec::new();
        for (stop, task) in self.running {
            let _ = stop.send(());
            tasks.push(task);
        }
        // A connection that never finishes its request would hold a
        // graceful shutdown forever: past the deadline, stop waiting (the
        // task's connections end with it).
        for task in tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Paths {
    /// The flags that asked for this address, for error messages.
    fn flags(self) -> &'static str {
        match (self.metrics, self.dashboard) {
            (true, true) => "--metrics and --dashboard",
            (true, false) => "--metrics",
            _ => "--dashboard",
        }
    }

    /// The line that tells the user where to look; a token flow made up
    /// is in the URLs (the only time it is shown).
    fn announce(self, addr: SocketAddr, token: Option<&Token>) -> String {
        let query = match token {
            Some(t) if t.made_up => format!("?token={}", t.value),
            _ => String::new(),
        };
        let note = match token {
            Some(t) if !t.made_up => " (token required: ?token= or Authorization: Bearer)",
            _ => "",
        };
        match (self.metrics, self.dashboard) {
            (true, true) => format!(
                "dashboard at http://{addr}/{query}, metrics at http://{addr}/metrics{query}{note}"
            ),
            (true, false) => format!("metrics at http://{addr}/metrics{query}{note}"),
            _ => format!("dashboard at http://{addr}/{query}{note}"),
        }
    }
}

/// The checks every request passes before it reaches a page: its `Host`,
/// its token, no body.
struct Gate {
    local: SocketAddr,
    token: Option<Arc<str>>,
    allowed_hosts: Arc<[AllowedHost]>,
}

impl Gate {
    /// Whether `host` (a `Host` header, or the authority of an
    /// absolute-form request) names this server.
    fn host_allowed(&self, host: &str) -> bool {
        let Ok(authority) = host.parse::<Authority>() else {
            return false;
        };
        if authority.as_str().contains('@') {
            return false;
        }
        let name = normal_host(authority.host());
        let port = authority.port_u16();
        if self
            .allowed_hosts
            .iter()
            .any(|a| a.host == name && (a.port.is_none() || a.port == port))
        {
            return true;
        }
        if port.unwrap_or(80) != self.local.port() {
            return false;
        }
        let bound = self.local.ip();
        if name == "localhost" {
            return bound.is_loopback() || bound.is_unspecified();
        }
        let literal = name.trim_start_matches('[').trim_end_matches(']');
        match literal.parse::<IpAddr>() {
            // An IP address is never a rebinding: the page's origin is
            // then the address itself.
            Ok(ip) => {
                ip == bound || bound.is_unspecified() || (ip.is_loopback() && bound.is_loopback())
            }
            Err(_) => false,
        }
    }

    /// Whether the request carries the token, when one is needed.
    fn authorized(&self, request: &Request) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let bearer = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, value) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| value.trim())
            });
        let query = request
            .uri()
            .query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter_map(|p| p.strip_prefix("token="));
        bearer
            .into_iter()
            .chain(query)
            .any(|given| same_secret(given.as_bytes(), token.as_bytes()))
    }
}

/// Compares two secrets in time that depends only on their lengths.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A plain-text refusal.
fn refuse(status: StatusCode, why: &str) -> Response {
    let mut response = (status, format!("flow: {why}\n")).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"flow\""),
        );
    }
    response
}

/// Every request passes here first.
async fn gate(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let named = request.uri().authority().map(Authority::as_str);
    let hosts_ok = match (host, named) {
        (None, None) => false,
        (host, named) => host.into_iter().chain(named).all(|h| gate.host_allowed(h)),
    };
    if !hosts_ok {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            &format!(
                "this server answers to http://{}/ (or a name given with --dashboard-allow-host), not to the Host this request names",
                gate.local
            ),
        );
    }
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "requests here have no body");
    }
    if !gate.authorized(&request) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "a token is required: open the URL flow printed (with ?token=), or send Authorization: Bearer TOKEN",
        );
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn router(paths: Paths, state: Arc<Served>, gate_state: Arc<Gate>) -> Router {
    let mut app = Router::new();
    if paths.metrics {
        app = app.route("/metrics", get(metrics));
    }
    if paths.dashboard {
        app = app.route("/", get(page)).route("/api/report", get(report));
    }
    app.with_state(state)
        .layer(middleware::from_fn_with_state(gate_state, gate))
}

/// The page may run its own script and styles and fetch from this server,
/// nothing else.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

async fn page() -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        Html(DASHBOARD),
    )
}

/// The live report: the same JSON as `--stats-json`, with status
/// `running` until the run ends; sample items hidden unless
/// `--dashboard-items`, credentials redacted.
async fn report(State(state): State<Arc<Served>>) -> impl IntoResponse {
    *state.last_fetch.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    let report = state.monitor.report();
    if report.status != Status::Running {
        state.final_fetched.send_replace(true);
    }
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(shown(report, state.items)),
    )
}

/// The report as the server shows it: no credentials anywhere, and the
/// sample items only when `items`.
fn shown(mut report: Report, items: bool) -> Report {
    let clean = |text: &mut String| {
        if let std::borrow::Cow::Owned(redacted) = redact(text) {
            *text = redacted;
        }
    };
    if let Some(failure) = &mut report.failure {
        clean(failure);
    }
    for error in &mut report.errors {
        clean(&mut error.message);
        if items {
            clean(&mut error.sample);
        } else if !error.sample.is_empty() {
            error.sample = SAMPLE_HIDDEN.into();
        }
    }
    report
}

async fn metrics(State(state): State<Arc<Served>>) -> impl IntoResponse {
    let bounds = LATENCY_BOUNDS_S.map(Duration::from_secs_f64);
    let latency = state.monitor.latency_buckets(&bounds);
    let text = prometheus(&state.monitor.report(), &latency);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// The connections one address holds, at most `max`.
struct Slots {
    max: usize,
    inner: Mutex<SlotsInner>,
}

#[derive(Default)]
struct SlotsInner {
    next_id: u64,
    open: HashMap<u64, Conn>,
}

/// One open connection.
struct Conn {
    /// Requests in progress.
    busy: usize,
    /// When it was opened or last finished a request.
    since: Instant,
    /// Wakes the connection's task to close it.
    close: Arc<Notify>,
}

impl Slots {
    fn new(max: usize) -> Self {
        Slots {
            max,
            inner: Mutex::new(SlotsInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotsInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a new connection. When all are taken, the connection
    /// idle the longest is closed to make room; `None` when every one is
    /// in the middle of a request.
    fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut inner = self.lock();
        if inner.open.len() >= self.max {
            let idlest = inner
                .open
                .iter()
                .filter(|(_, c)| c.busy == 0)
                .min_by_key(|(_, c)| c.since)
                .map(|(&id, _)| id)?;
            if let Some(conn) = inner.open.remove(&idlest) {
                conn.close.notify_one();
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let close = Arc::new(Notify::new());
        inner.open.insert(
            id,
            Conn {
                busy: 0,
                since: Instant::now(),
                close: close.clone(),
            },
        );
        Some(Slot {
            slots: self.clone(),
            id,
            close,
        })
    }
}

/// A connection's place among the [`Slots`], given up when dropped.
struct Slot {
    slots: Arc<Slots>,
    id: u64,
    close: Arc<Notify>,
}

impl Slot {
    /// Marks a request in progress until the guard is dropped.
    fn busy(self: &Arc<Self>) -> Busy {
        if let Some(conn) = self.slots.lock().open.get_mut(&self.id) {
            conn.busy += 1;
        }
        Busy(self.clone())
    }

    /// How long the connection has been without a request in progress;
    /// `None` while one is.
    fn idle_for(&self) -> Option<Duration> {
        let inner = self.slots.lock();
        let conn = inner.open.get(&self.id)?;
        (conn.busy == 0).then(|| conn.since.elapsed())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().open.remove(&self.id);
    }
}

/// A request in progress on a connection.
struct Busy(Arc<Slot>);

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(conn) = self.0.slots.lock().open.get_mut(&self.0.id) {
            conn.busy = conn.busy.saturating_sub(1);
            conn.since = Instant::now();
        }
    }
}

/// Accepts connections until told to stop, then lets them finish their
/// requests (the caller cuts them after a grace period).
async fn accept_loop(
    listener: TcpListener,
    app: Router,
    slots: Arc<Slots>,
    mut stopped: oneshot::Receiver<()>,
) {
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match slots.admit() {
                    Some(slot) => {
                        connections.spawn(connection(stream, app.clone(), slot, stopping.clone()));
                    }
                    // Every slot busy: closed at once.
                    None => drop(stream),
                },
                Err(e) => {
                    tracing::debug!("the dashboard cannot accept a connection: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
}

/// Serves one connection (HTTP/1.1) until it closes, is idle for
/// [`IDLE_TIMEOUT`], is closed to make room, or the server stops.
async fn connection(
    stream: TcpStream,
    app: Router,
    slot: Slot,
    mut stopping: watch::Receiver<bool>,
) {
    let slot = Arc::new(slot);
    let tower = TowerToHyperService::new(app);
    let counted = slot.clone();
    let service = hyper::service::service_fn(move |request| {
        let busy = counted.busy();
        let response = hyper::service::Service::call(&tower, request);
        async move {
            let response: Result<Response, Infallible> = response.await;
            drop(busy);
            response
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(IDLE_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD);
    let served = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(served);
    let close = slot.close.clone();
    let mut closing = false;
    loop {
        let check_in = match slot.idle_for() {
            Some(idle) if idle >= IDLE_TIMEOUT => return,
            Some(idle) => IDLE_TIMEOUT - idle,
            None => IDLE_TIMEOUT,
        };
        tokio::select! {
            _ = served.as_mut() => return,
            _ = close.notified() => return,
            _ = stopping.changed(), if !closing => {
                served.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep(check_in) => {}
        }
    }
}

/// A per-stage series of `/metrics`, read off the stage's live report.
struct Series {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&StageReport) -> Option<f64>,
}

/// Items out: split by port for a stage with named ports.
const ITEMS_OUT: &str = "flow_stage_items_out_total";

const STAGE_SERIES: &[Series] = &[
    Series {
        name: "flow_stage_items_in_total",
        kind: "counter",
        help: "Items the stage took from its input (none for a source).",
        value: |s| Some(s.items_in as f64),
    },
    Series {
        name: "flow_stage_items_out_total",
        kind: "counter",
        help: "Items the stage emitted (per port, labelled port, for a stage with named ports).",
        value: |s| Some(s.items_out as f64),
    },
    Series {
        name: "flow_stage_errors_total",
        kind: "counter",
        help: "Failed attempts that ended an item.",
        value: |s| Some(s.errors as f64),
    },
    Series {
        name: "flow_stage_retries_total",
        kind: "counter",
        help: "Attempts retried after a retryable failure.",
        value: |s| Some(s.retries as f64),
    },
    Series {
        name: "flow_stage_dropped_total",
        kind: "counter",
        help: "Failed items discarded by on_error: drop.",
        value: |s| Some(s.dropped as f64),
    },
    Series {
        name: "flow_stage_dead_lettered_total",
        kind: "counter",
        help: "Failed items sent to the stage's on_error route.",
        value: |s| Some(s.dead_lettered as f64),
    },
    Series {
        name: "flow_stage_workers",
        kind: "gauge",
        help: "Workers of the stage.",
        value: |s| Some(s.workers as f64),
    },
    Series {
        name: "flow_stage_busy_ratio",
        kind: "gauge",
        help: "Share of the stage's worker time spent working since the run started.",
        value: |s| Some(s.busy_pct / 100.0),
    },
    Series {
        name: "flow_stage_queue_depth",
        kind: "gauge",
        help: "Items in the stage's input queue now.",
        value: |s| s.queue.map(|q| q.depth as f64),
    },
    Series {
        name: "flow_stage_queue_capacity",
        kind: "gauge",
        help: "Capacity of the stage's input queue, in items.",
        value: |s| s.queue.map(|q| q.capacity as f64),
    },
    Series {
        name: "flow_stage_queue_peak",
        kind: "gauge",
        help: "Most items the stage's input queue has held.",
        value: |s| s.queue.map(|q| q.peak as f64),
    },
    Series {
        name: "flow_stage_queue_full_ratio",
        kind: "gauge",
        help: "Share of the run the stage's input queue was full.",
        value: |s| s.queue.map(|q| q.full_pct / 100.0),
    },
    Series {
        name: "flow_stage_rate_limit_wait_seconds_total",
        kind: "counter",
        help: "Time the stage's workers waited on its rate limit.",
        value: |s| Some(s.wait_s.rate_limit),
    },
    Series {
        name: "flow_stage_backpressure_wait_seconds_total",
        kind: "counter",
        help: "Time the stage waited on full queues downstream.",
        value: |s| Some(s.wait_s.backpressure),
    },
    Series {
        name: "flow_stage_done",
        kind: "gauge",
        help: "1 once every worker of the stage has ended.",
        value: |s| Some(if s.done { 1.0 } else { 0.0 }),
    },
    Series {
        name: "flow_stage_items_expected",
        kind: "gauge",
        help: "Items a source will emit in all, where it knows.",
        value: |s| s.total.map(|t| t as f64),
    },
];

/// The report in the Prometheus text exposition format: one family per
/// measure, one series per stage labelled `pipeline`, `stage` and `type`
/// (every series carries the `pipeline` label, so several runs scraped
/// into one Prometheus stay apart).
fn prometheus(report: &Report, latency: &[LatencyBuckets]) -> String {
    let mut out = Exposition::default();
    let stages = &report.stages;
    let pipeline = escape(&report.pipeline);
    let labels: Vec<String> = stages
        .iter()
        .map(|s| {
            format!(
                "pipeline=\"{pipeline}\",stage=\"{}\",type=\"{}\"",
                escape(&s.name),
                escape(&s.type_name)
            )
        })
        .collect();
    for series in STAGE_SERIES {
        out.family(series.name, series.kind, series.help);
        for (s, l) in stages.iter().zip(&labels) {
            if series.name == ITEMS_OUT && !s.outputs.is_empty() {
                // A stage with named ports: a series per port, labelled
                // `port` (`""` for its main output), adding up to its
                // items out.
                let to_ports: u64 = s.outputs.iter().map(|(_, n)| n).sum();
                let main = s.items_out.saturating_sub(to_ports);
                let main = (main > 0).then(|| (String::new(), main));
                for (port, n) in s.outputs.iter().cloned().chain(main) {
                    out.sample(
                        series.name,
                        &format!("{l},port=\"{}\"", escape(&port)),
                        n as f64,
                    );
                }
                continue;
            }
            if let Some(v) = (series.value)(s) {
                out.sample(series.name, l, v);
            }
        }
    }

    let name = "flow_stage_latency_seconds";
    out.family(
        name,
        "histogram",
        "Time one item took in the stage (shared by the workers about once a second).",
    );
    for (l, h) in labels.iter().zip(latency) {
        for (bound, count) in LATENCY_BOUNDS_S.iter().zip(&h.cumulative) {
            out.sample(
                &format!("{name}_bucket"),
                &format!("{l},le=\"{bound}\""),
                *count as f64,
            );
        }
        out.sample(
            &format!("{name}_bucket"),
            &format!("{l},le=\"+Inf\""),
            h.count as f64,
        );
        out.sample(&format!("{name}_sum"), l, h.sum.as_secs_f64());
        out.sample(&format!("{name}_count"), l, h.count as f64);
    }

    let run = format!("pipeline=\"{}\"", escape(&report.pipeline));
    out.family(
        "flow_run_running",
        "gauge",
        "1 while the run goes, 0 once it has ended.",
    );
    let running = if report.status == Status::Running {
        1.0
    } else {
        0.0
    };
    out.sample("flow_run_running", &run, running);
    out.family(
        "flow_run_elapsed_seconds",
        "gauge",
        "Time since the run started.",
    );
    out.sample("flow_run_elapsed_seconds", &run, report.elapsed_s);
    out.family(
        "flow_run_items_per_second",
        "gauge",
        "Items the sources emitted per second of the run.",
    );
    out.sample("flow_run_items_per_second", &run, report.items_per_s);
    out.text
}

/// Text in the exposition format, built one line at a time.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        use std::fmt::Write;
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: f64) {
        use std::fmt::Write;
        let _ = writeln!(self.text, "{name}{{{labels}}} {}", number(value));
    }
}

/// A sample value as Prometheus reads it.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        v.to_string()
    }
}

/// A label value: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_count_each_item_under_every_bound_it_fits() {
        use flow_runner::stats::{Latency, StageCounters};
        let stage = StageCounters::new();
        let mut worker = Latency::new();
        worker.record_batch(Duration::from_millis(3), 1);
        worker.record_batch(Duration::from_millis(40), 2); // 20 ms each
        stage.merge_latency(worker);
        let bounds = [1, 5, 25, 100].map(Duration::from_millis);
        let h = stage.latency_buckets(&bounds);
        assert_eq!(h.cumulative, vec![0, 1, 3, 3]);
        assert_eq!(h.count, 3);
        let sum_ms = h.sum.as_secs_f64() * 1000.0;
        // Latencies are kept to 2 significant figures: within 1%.
        assert!((sum_ms - 43.0).abs() < 0.43, "{sum_ms}");
    }

    #[test]
    fn label_values_escape_quotes_backslashes_and_newlines() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    fn gate(local: &str, allowed: &[&str]) -> Gate {
        Gate {
            local: local.parse().unwrap(),
            token: None,
            allowed_hosts: allowed
                .iter()
                .map(|h| AllowedHost::parse(h).unwrap())
                .collect(),
        }
    }

    #[test]
    fn a_loopback_server_answers_to_its_own_names_with_its_port() {
        let g = gate("127.0.0.1:8080", &[]);
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST.:8080",
            "[::1]:8080",
            "127.0.0.2:8080",
        ] {
            assert!(g.host_allowed(host), "{host}");
        }
        for host in [
            "evil.example:8080",
            "evil.example",
            "127.0.0.1",
            "127.0.0.1:8081",
            "localhost",
            "192.168.1.5:8080",
            "user@127.0.0.1:8080",
            "",
            "127.0.0.1:8080/x",
        ] {
            assert!(!g.host_allowed(host), "{host}");
        }
        let g = gate("127.0.0.1:80", &[]);
        assert!(g.host_allowed("localhost"), "port 80 may be left out");
    }

    #[test]
    fn a_wildcard_server_answers_to_ip_addresses_and_allowed_names() {
        let g = gate("0.0.0.0:9000", &["flow.internal", "proxy.example:443"]);
        for host in [
            "10.1.2.3:9000",
            "[fe80::1]:9000",
            "localhost:9000",
            "flow.internal:9000",
            "Flow.Internal:1234",
            "proxy.example:443",
        ] {
            assert!(g.host_allowed(host), "{host}");
        }
        for host in [
            "evil.example:9000",
            "rebind.attacker.test:9000",
            "10.1.2.3:9001",
            "proxy.example:9000",
            "proxy.example",
        ] {
            assert!(!g.host_allowed(host), "{host}");
        }
        let g = gate("192.168.1.5:9000", &[]);
        assert!(g.host_allowed("192.168.1.5:9000"));
        assert!(!g.host_allowed("10.1.2.3:9000"));
        assert!(!g.host_allowed("localhost:9000"));
    }

    #[test]
    fn tokens_are_compared_whole_from_the_header_or_the_query() {
        let g = Gate {
            token: Some("abc123".into()),
            ..gate("0.0.0.0:9000", &[])
        };
        let request = |uri: &str, auth: Option<&str>| {
            let mut r = axum::http::Request::builder().uri(uri);
            if let Some(auth) = auth {
                r = r.header(header::AUTHORIZATION, auth);
            }
            r.body(axum::body::Body::empty()).unwrap()
        };
        assert!(g.authorized(&request("/?token=abc123", None)));
        assert!(g.authorized(&request("/api/report?a=1&token=abc123", None)));
        assert!(g.authorized(&request("/metrics", Some("Bearer abc123"))));
        assert!(g.authorized(&request("/metrics", Some("bearer  abc123 "))));
        assert!(!g.authorized(&request("/", None)));
        assert!(!g.authorized(&request("/?token=abc12", None)));
        assert!(!g.authorized(&request("/?token=abc1234", None)));
        assert!(!g.authorized(&request("/?xtoken=abc123", None)));
        assert!(!g.authorized(&request("/", Some("Basic abc123"))));
        assert!(same_secret(b"", b""));
        assert!(!same_secret(b"a", b"b"));
    }

    #[test]
    fn tokens_and_allowed_hosts_are_checked_before_serving() {
        assert!(check_token("s3cr3t-Token_1.x~".into()).is_ok());
        for bad in ["", "has space", "a/b", "é"] {
            assert!(check_token(bad.into()).is_err(), "{bad}");
        }
        assert_eq!(make_token().unwrap().len(), 32);
        assert_ne!(make_token().unwrap(), make_token().unwrap());
        assert!(AllowedHost::parse("a b").is_err());
        assert!(AllowedHost::parse("u@h").is_err());
        assert_eq!(
            AllowedHost::parse("Dash.Example.:8443").unwrap(),
            AllowedHost {
                host: "dash.example".into(),
                port: Some(8443)
            }
        );
    }

    #[test]
    fn the_served_report_hides_samples_and_credentials() {
        use flow_runner::stats::ErrorReport;
        let report = Report {
            pipeline: "p".into(),
            status: Status::Running,
            exit: None,
            items_failed: 0,
            failure: Some("GET https://u:hunter2@h/: 500".into()),
            elapsed_s: 1.0,
            items_per_s: 1.0,
            stages: Vec::new(),
            errors: vec![
                ErrorReport {
                    stage: "fetch".into(),
                    message: "GET https://u:hunter2@h/?token=t: 404".into(),
                    template: None,
                    examples: Vec::new(),
                    count: 3,
                    sample: r#"{"card":"4111 1111 1111 1111"}"#.into(),
                },
                ErrorReport {
                    stage: "fetch".into(),
                    message: "(other messages)".into(),
                    template: None,
                    examples: Vec::new(),
                    count: 1,
                    sample: String::new(),
                },
            ],
            errors_left_out: Default::default(),
            bottleneck: None,
            durable: None,
        };
        let hidden = shown(report.clone(), false);
        assert_eq!(hidden.failure.as_deref(), Some("GET https://***@h/: 500"));
        assert_eq!(
            hidden.errors[0].message,
            "GET https://***@h/?token=***: 404"
        );
        assert_eq!(hidden.errors[0].count, 3);
        assert_eq!(hidden.errors[0].sample, SAMPLE_HIDDEN);
        assert_eq!(hidden.errors[1].sample, "");
        let json = serde_json::to_string(&hidden).unwrap();
        assert!(
            !json.contains("4111") && !json.contains("hunter2"),
            "{json}"
        );
        let opted_in = shown(report, true);
        assert_eq!(
            opted_in.errors[0].sample,
            r#"{"card":"4111 1111 1111 1111"}"#
        );
    }

    #[test]
    fn a_full_server_makes_room_by_closing_the_longest_idle_connection() {
        let slots = Arc::new(Slots::new(3));
        let a = Arc::new(slots.admit().unwrap());
        let b = Arc::new(slots.admit().unwrap());
        let c = Arc::new(slots.admit().unwrap());
        // b is in the middle of a request; a went idle before c.
        let _busy = b.busy();
        let _ = c.busy();
        let d = slots.admit().expect("an idle connection makes room");
        assert_eq!(a.idle_for(), None, "a was closed");
        assert!(c.idle_for().is_some());
        let e = slots.admit().expect("c, idle, makes room");
        assert_eq!(c.idle_for(), None);
        // Now b is busy and d, e are idle: d goes next, then none is left.
        let _d_busy = Arc::new(d).busy();
        let _e_busy = Arc::new(e).busy();
        assert!(slots.admit().is_none(), "every connection is busy");
        assert_eq!(slots.lock().open.len(), 3);
    }

    #[test]
    fn sample_values_use_prometheus_spellings() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NAN), "NaN");
    }
}
