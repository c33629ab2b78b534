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

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use flow_runner::stats::{LatencyBuckets, StageReport};
use flow_runner::{Monitor, Report, Status};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

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
}

/// Which paths one address serves.
#[derive(Clone, Copy)]
struct Paths {
    metrics: bool,
    dashboard: bool,
}

/// Binds the addresses asked for (one server when they are the same) and
/// serves them in the background. Fails, before anything is served, when
/// an address cannot be bound.
pub async fn bind(
    metrics: Option<SocketAddr>,
    dashboard: Option<SocketAddr>,
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
    Ok(Bound(listeners))
}

/// The listening sockets, bound before the run starts so that an address
/// in use stops flow before it does any work.
pub struct Bound(Vec<(TcpListener, Paths)>);

impl Bound {
    /// Starts serving the run `monitor` reports on.
    pub fn serve(self, monitor: Monitor) -> Result<Server, String> {
        let listeners = self.0;
        let state = Arc::new(Served {
            monitor,
            last_fetch: Mutex::new(None),
            final_fetched: watch::Sender::new(false),
        });
        let mut running = Vec::new();
        for (listener, paths) in listeners {
            let local = listener
                .local_addr()
                .map_err(|e| format!("cannot serve {}: {e}", paths.flags()))?;
            eprintln!("flow: {}", paths.announce(local));
            let (stop, stopped) = oneshot::channel::<()>();
            let app = router(paths, state.clone());
            let task = tokio::spawn(async move {
                let serving = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = stopped.await;
                });
                if let Err(e) = serving.await {
                    tracing::warn!("the metrics or dashboard server stopped: {e}");
                }
            });
            running.push((stop, task));
        }
        Ok(Server { state, running })
    }
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
        // graceful shutdown forever: past the deadline, stop waiting. (The
        // runtime, dropped when the run ends, takes such connections along.)
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

    /// The line that tells the user where to look.
    fn announce(self, addr: SocketAddr) -> String {
        match (self.metrics, self.dashboard) {
            (true, true) => {
                format!("dashboard at http://{addr}/, metrics at http://{addr}/metrics")
            }
            (true, false) => format!("metrics at http://{addr}/metrics"),
            _ => format!("dashboard at http://{addr}/"),
        }
    }
}

fn router(paths: Paths, state: Arc<Served>) -> Router {
    let mut app = Router::new();
    if paths.metrics {
        app = app.route("/metrics", get(metrics));
    }
    if paths.dashboard {
        app = app.route("/", get(page)).route("/api/report", get(report));
    }
    app.with_state(state)
}

async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(DASHBOARD))
}

/// The live report: the same JSON as `--stats-json`, with status
/// `running` until the run ends.
async fn report(State(state): State<Arc<Served>>) -> impl IntoResponse {
    *state.last_fetch.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    let report = state.monitor.report();
    if report.status != Status::Running {
        state.final_fetched.send_replace(true);
    }
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(report))
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

/// A per-stage series of `/metrics`, read off the stage's live report.
struct Series {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&StageReport) -> Option<f64>,
}

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
        help: "Items the stage emitted.",
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
/// measure, one series per stage labelled `stage` and `type`.
fn prometheus(report: &Report, latency: &[LatencyBuckets]) -> String {
    let mut out = Exposition::default();
    let stages = &report.stages;
    let labels: Vec<String> = stages
        .iter()
        .map(|s| {
            format!(
                "stage=\"{}\",type=\"{}\"",
                escape(&s.name),
                escape(&s.type_name)
            )
        })
        .collect();
    for series in STAGE_SERIES {
        out.family(series.name, series.kind, series.help);
        for (s, l) in stages.iter().zip(&labels) {
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
        assert!((sum_ms - 43.0).abs() < 0.1, "{sum_ms}");
    }

    #[test]
    fn label_values_escape_quotes_backslashes_and_newlines() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn sample_values_use_prometheus_spellings() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NAN), "NaN");
    }
}
