//! `flow-bench-server`: a local HTTP server for benchmarks, answering every
//! GET after a fixed latency with a small page. Written in Rust so that it
//! costs the machine little next to the pipeline it serves (a Python server
//! would compete with flow for the same cores).
//!
//!     flow-bench-server [--latency-ms 10] [--threads 1] [--port 0]
//!
//! Prints its base URL (`http://127.0.0.1:PORT`) as the first line on
//! stdout once it accepts connections, then serves until killed.

use std::io::Write;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};

fn main() {
    let (mut latency_ms, mut threads, mut port) = (10, 1, 0);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let setting = match arg.as_str() {
            "--latency-ms" => &mut latency_ms,
            "--threads" => &mut threads,
            "--port" => &mut port,
            other => usage(&format!("unknown argument {other:?}")),
        };
        *setting = args
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| usage(&format!("{arg} needs a number")));
    }
    let latency = Duration::from_millis(latency_ms);
    let threads = threads.max(1) as usize;
    let port = u16::try_from(port).unwrap_or_else(|_| usage("--port is at most 65535"));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let app = Router::new()
            .route("/{*path}", axum::routing::get(page))
            .with_state(latency);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| usage(&format!("cannot listen on port {port}: {e}")));
        let addr = listener.local_addr().expect("a bound address");
        let mut stdout = std::io::stdout();
        writeln!(stdout, "http://{addr}")
            .and_then(|()| stdout.flush())
            .ok();
        axum::serve(listener, app).await.expect("serving");
    });
}

async fn page(State(latency): State<Duration>, Path(path): Path<String>) -> String {
    tokio::time::sleep(latency).await;
    format!("page {path}\n")
}

fn usage(problem: &str) -> ! {
    eprintln!("flow-bench-server: {problem}");
    eprintln!("usage: flow-bench-server [--latency-ms 10] [--threads 1] [--port 0]");
    std::process::exit(2);
}
