//! A test HTTP server on loopback, for the pipelines that fetch pages
//! (`tests/scraper.rs`, the distributed scraper in `tests/redis.rs`): it
//! answers by the path, and records every request, so a test checks what
//! a pipeline did to it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// How long a slow page takes to answer.
pub const SLOW: Duration = Duration::from_millis(300);

/// A test HTTP server on 127.0.0.1, on its own runtime, stopped when
/// dropped. Pages, by the first segment of their path:
/// * `/fast/ID`: `page ID` at once;
/// * `/slow/ID`: `slow ID` after [`SLOW`];
/// * `/flaky/ID`: 503 on the first two requests, then `flaky ID`;
/// * `/busy/ID`: 429 with `Retry-After: 1` on the first request, then
///   `busy ID`;
/// * anything else: 404.
pub struct Server {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Request>>>,
    _runtime: tokio::runtime::Runtime,
}

/// A request the server saw.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub at: Instant,
}

#[derive(Clone, Default)]
struct Pages {
    log: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let pages = Pages::default();
        let log = pages.log.clone();
        let app = Router::new()
            .route("/{kind}/{id}", get(page))
            .with_state(pages);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server {
            addr,
            log,
            _runtime: runtime,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    /// How many requests each path had.
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for r in self.requests() {
            *counts.entry(r.path).or_default() += 1;
        }
        counts
    }
}

async fn page(
    State(pages): State<Pages>,
    UrlPath((kind, id)): UrlPath<(String, String)>,
) -> Response {
    let path = format!("/{kind}/{id}");
    // The how-many-th request for this path, counting this one.
    let nth = {
        let mut log = pages.log.lock().unwrap();
        log.push(Request {
            path: path.clone(),
            at: Instant::now(),
        });
        log.iter().filter(|r| r.path == path).count()
    };
    match kind.as_str() {
        "fast" => format!("page {id}").into_response(),
        "slow" => {
            tokio::time::sleep(SLOW).await;
            format!("slow {id}").into_response()
        }
        "flaky" if nth <= 2 => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        "flaky" => format!("flaky {id}").into_response(),
        "busy" if nth == 1 => {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response()
        }
        "busy" => format!("busy {id}").into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
