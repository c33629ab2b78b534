//! `pipelines/scraper.yaml` against a real HTTP server on loopback, started
//! by the test: fast pages, slow pages, pages that fail twice with 503
//! before they succeed, 404s and a 429 with `Retry-After`. The server
//! records every request, so the tests check what the pipeline did to it:
//! how many requests each page took and when they came.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use flow_tests::pages::{Request, Server};
use flow_tests::{flow, pipeline, read_jsonl, run, stage, stats};

/// The scraper's rate limit (`rate: 20/s` in pipelines/scraper.yaml).
const RATE_PER_S: f64 = 20.0;

/// Runs pipelines/scraper.yaml on `urls`, with its outputs in `dir`;
/// checks its exit code and returns its stats.
fn scrape(dir: &Path, urls: &[String], code: i32) -> serde_json::Value {
    let list = dir.join("urls.txt");
    std::fs::write(&list, urls.join("\n") + "\n").unwrap();
    let stats_file = dir.join("stats.json");
    run(flow()
        .arg("run")
        .arg(pipeline("scraper.yaml"))
        .arg("--stats-json")
        .arg(&stats_file)
        .env("URLS", &list)
        .env("OUT", dir)
        // Loopback only, whatever the machine's proxy settings.
        .env("NO_PROXY", "*")
        .env("no_proxy", "*"))
    .expect_code(code);
    stats(&stats_file)
}

fn paths(kind: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("/{kind}/{i}")).collect()
}

#[test]
fn scraper_saves_good_pages_retries_flaky_ones_and_dead_letters_404s_at_its_rate() {
    let server = Server::start();
    let (fast, slow, flaky, missing) = (
        paths("fast", 12),
        paths("slow", 4),
        paths("flaky", 3),
        paths("missing", 3),
    );
    let all: Vec<String> = [&fast, &slow, &flaky, &missing]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let urls: Vec<String> = all.iter().map(|p| server.url(p)).collect();
    let dir = tempfile::tempdir().unwrap();
    // Items were dead-lettered: the run says so with exit code 3.
    let stats = scrape(dir.path(), &urls, 3);

    // Every good page saved once, with its status and body.
    let pages = read_jsonl(&dir.path().join("pages.jsonl"));
    let mut saved: HashMap<String, &serde_json::Value> = HashMap::new();
    for p in &pages {
        assert_eq!(p["status"], 200, "{p}");
        let first = saved.insert(p["url"].as_str().unwrap().to_string(), p);
        assert!(first.is_none(), "saved twice: {p}");
    }
    let good = [(&fast, "page"), (&slow, "slow"), (&flaky, "flaky")];
    for (paths, word) in good {
        for (i, path) in paths.iter().enumerate() {
            let page = saved
                .get(&server.url(path))
                .unwrap_or_else(|| panic!("{path} not saved"));
            assert_eq!(page["body"], format!("{word} {i}"));
            assert!(page["headers"]["content-type"].is_string(), "{page}");
        }
    }
    assert_eq!(pages.len(), fast.len() + slow.len() + flaky.len());

    // Each 404 dead-lettered after exactly one request; flaky pages took
    // three (two 503s, then the page); the others one.
    let counts = server.counts();
    for path in &all {
        let expected = if flaky.contains(path) { 3 } else { 1 };
        assert_eq!(counts.get(path), Some(&expected), "requests for {path}");
    }
    let letters = read_jsonl(&dir.path().join("failed.jsonl"));
    assert_eq!(letters.len(), missing.len(), "{letters:?}");
    for letter in &letters {
        let url = letter["item"].as_str().unwrap();
        assert!(missing.iter().any(|p| server.url(p) == url), "{letter}");
        assert_eq!(letter["error"]["stage"], "fetch");
        assert_eq!(letter["error"]["attempts"], 1);
        assert_eq!(
            letter["error"]["message"],
            format!("GET {url}: 404 Not Found")
        );
    }

    // The stats: two retries per flaky page, one error per 404.
    let fetch = stage(&stats, "fetch");
    assert_eq!(fetch["items_in"], all.len());
    assert_eq!(fetch["items_out"], pages.len());
    assert_eq!(fetch["retries"], 2 * flaky.len());
    assert_eq!(fetch["errors"], missing.len());
    assert_eq!(fetch["dead_lettered"], missing.len());
    assert_eq!(stage(&stats, "pages")["items_in"], pages.len());

    assert_rate_respected(&server.requests());
}

/// No run of requests came faster than the rate allows. The bucket holds
/// one token and refills at [`RATE_PER_S`], so requests k to k + m (m + 1
/// of them) span at least m / rate. Only the lower bound is checked, with
/// room for the arrival times' scheduling jitter.
fn assert_rate_respected(requests: &[Request]) {
    let mut times: Vec<Instant> = requests.iter().map(|r| r.at).collect();
    times.sort();
    let jitter = 0.1;
    for m in 5..times.len() {
        for k in 0..times.len() - m {
            let span = times[k + m].duration_since(times[k]).as_secs_f64();
            let least = m as f64 / RATE_PER_S - jitter;
            assert!(
                span >= least,
                "requests {k}..={} came within {span:.3}s; at {RATE_PER_S}/s they take at least {:.3}s",
                k + m,
                m as f64 / RATE_PER_S
            );
        }
    }
}

#[test]
fn a_retry_after_on_a_429_replaces_the_backoff() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let stats = scrape(dir.path(), &[server.url("/busy/1")], 0);

    let pages = read_jsonl(&dir.path().join("pages.jsonl"));
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0]["body"], "busy 1");
    assert_eq!(stage(&stats, "fetch")["retries"], 1);

    // The scraper's backoff is 100ms; the server asked for 1s, and got it.
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let waited = requests[1].at.duration_since(requests[0].at);
    assert!(
        waited >= Duration::from_millis(950),
        "the retry came {waited:?} after the 429 with Retry-After: 1"
    );
}
