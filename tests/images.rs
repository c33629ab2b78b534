//! The image pipeline end to end: pipelines/images.yaml downloads
//! generated images from a local HTTP server started by the test, saves
//! grayscale thumbnails and dead-letters what fails; and the `files` sink's
//! refusal of names that would leave its directory, through the binary.

use std::collections::HashMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use flow_tests::{flow, pipeline, read_jsonl, run, stage, stats, write_pipeline};
use image::{ColorType, DynamicImage, ImageFormat, RgbImage, RgbaImage};

/// An image the server has, and the thumbnail the pipeline must make of it
/// (`thumbnail: 128`: fit within 128×128, keep the aspect, never enlarge).
struct Served {
    path: &'static str,
    size: (u32, u32),
    format: ImageFormat,
    alpha: bool,
    thumbnail: (u32, u32),
    saved_as: &'static str,
}

const IMAGES: [Served; 7] = [
    served("wide.png", (400, 200), (128, 64), "wide.png"),
    served("tall.png", (100, 300), (43, 128), "tall.png"),
    served("small.png", (50, 40), (50, 40), "small.png"),
    served("square.png", (1000, 1000), (128, 128), "square.png"),
    Served {
        alpha: true,
        ..served("alpha.png", (256, 64), (128, 32), "alpha.png")
    },
    // Answers 503 to its first request: the download's retry fetches it.
    served("flaky.png", (300, 150), (128, 64), "flaky.png"),
    Served {
        format: ImageFormat::Jpeg,
        ..served("photo.jpg", (640, 480), (128, 96), "photo.png")
    },
];

const fn served(
    path: &'static str,
    size: (u32, u32),
    thumbnail: (u32, u32),
    saved_as: &'static str,
) -> Served {
    Served {
        path,
        size,
        format: ImageFormat::Png,
        alpha: false,
        thumbnail,
        saved_as,
    }
}

/// A page that answers 200 with HTML: downloaded fine, but not an image.
const NOT_AN_IMAGE: &str = "not-an-image.png";
/// Answers 404: a permanent error, requested once.
const MISSING: &str = "missing.png";
const FLAKY: &str = "flaky.png";

/// What the server has and what it was asked for.
struct Site {
    files: HashMap<&'static str, (Vec<u8>, &'static str)>,
    hits: Mutex<Vec<(String, Instant)>>,
}

impl Site {
    fn hits_of(&self, path: &str) -> usize {
        let hits = self.hits.lock().unwrap();
        hits.iter().filter(|(p, _)| p == path).count()
    }
}

/// An HTTP server on 127.0.0.1 running on its own thread until dropped.
struct Server {
    addr: SocketAddr,
    site: Arc<Site>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start() -> Self {
        let mut files = HashMap::new();
        for img in &IMAGES {
            let mime = match img.format {
                ImageFormat::Jpeg => "image/jpeg",
                _ => "image/png",
            };
            files.insert(img.path, (encode(img), mime));
        }
        let page = b"<!DOCTYPE html><html><body>Image of the day</body></html>".to_vec();
        files.insert(NOT_AN_IMAGE, (page, "text/html"));
        let site = Arc::new(Site {
            files,
            hits: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/img/{name}", axum::routing::get(serve))
            .with_state(site.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, addr) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                ready.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        stopped.await.ok();
                    })
                    .await
                    .unwrap();
            });
        });
        Server {
            addr: addr.recv().unwrap(),
            site,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self, name: &str) -> String {
        format!("http://{}/img/{name}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}

async fn serve(State(site): State<Arc<Site>>, UrlPath(name): UrlPath<String>) -> Response {
    site.hits
        .lock()
        .unwrap()
        .push((name.clone(), Instant::now()));
    if name == FLAKY && site.hits_of(FLAKY) == 1 {
        return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
    }
    match site.files.get(name.as_str()) {
        Some((body, mime)) => ([(header::CONTENT_TYPE, *mime)], body.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "no such image").into_response(),
    }
}

/// A generated picture in the image's size and format.
fn encode(img: &Served) -> Vec<u8> {
    let (w, h) = img.size;
    let picture = if img.alpha {
        DynamicImage::ImageRgba8(RgbaImage::from_fn(w, h, |x, y| {
            image::Rgba([(x % 256) as u8, (y % 256) as u8, 200, (x % 128) as u8 + 100])
        }))
    } else {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
        }))
    };
    let mut bytes = Vec::new();
    picture
        .write_to(Cursor::new(&mut bytes), img.format)
        .unwrap();
    bytes
}

#[test]
fn image_pipeline_saves_a_grayscale_thumbnail_of_every_image_and_dead_letters_the_rest() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let mut urls: Vec<String> = IMAGES.iter().map(|i| server.url(i.path)).collect();
    urls.push(server.url(NOT_AN_IMAGE));
    urls.push(server.url(MISSING));
    let list = dir.path().join("urls.txt");
    std::fs::write(&list, urls.join("\n") + "\n").unwrap();
    let out = dir.path().join("out");
    let stats_file = dir.path().join("stats.json");

    let done = run(flow()
        .arg("run")
        .arg(pipeline("images.yaml"))
        .arg("--stats-json")
        .arg(&stats_file)
        .env("URLS", &list)
        .env("OUT", &out))
    .expect_code(3);

    // Every image became a one-channel PNG of the thumbnail's size.
    let thumbs = out.join("thumbnails");
    let mut expected: Vec<&str> = IMAGES.iter().map(|i| i.saved_as).collect();
    expected.sort();
    assert_eq!(
        listing(&thumbs),
        expected,
        "one file per image, nothing else"
    );
    for img in &IMAGES {
        let bytes = std::fs::read(thumbs.join(img.saved_as)).unwrap();
        assert_eq!(image::guess_format(&bytes).unwrap(), ImageFormat::Png);
        let thumb = image::load_from_memory(&bytes)
            .unwrap_or_else(|e| panic!("{}: not a valid image: {e}", img.saved_as));
        let (w, h) = (thumb.width(), thumb.height());
        assert_eq!((w, h), img.thumbnail, "{}", img.path);
        assert!(w <= 128 && h <= 128, "{}: {w}×{h}", img.path);
        let (sw, sh) = img.size;
        let aspect_error = (f64::from(w) / f64::from(h) - f64::from(sw) / f64::from(sh)).abs();
        assert!(
            aspect_error * f64::from(h.min(w)) <= 1.0,
            "{}: aspect kept",
            img.path
        );
        assert_eq!(thumb.color(), ColorType::L8, "{}: one channel", img.path);
    }

    // The 404 and the HTML page failed on their own, with their error.
    let mut failed = read_jsonl(&out.join("failed-images.jsonl"));
    failed.sort_by_key(|f| f["url"].as_str().unwrap().to_string());
    assert_eq!(failed.len(), 2, "{failed:?}\n{}", done.stderr);
    let (missing, not_image) = (&failed[0], &failed[1]);
    assert_eq!(missing["url"], server.url(MISSING));
    assert_eq!(missing["stage"], "download");
    assert_eq!(missing["attempts"], 1, "a 404 is not retried");
    assert!(
        missing["error"].as_str().unwrap().contains("404"),
        "{missing}"
    );
    assert_eq!(not_image["url"], server.url(NOT_AN_IMAGE));
    assert_eq!(not_image["stage"], "thumbnail");
    assert_eq!(not_image["attempts"], 1, "a non-image is not retried");
    let message = not_image["error"].as_str().unwrap();
    assert!(message.starts_with("not a PNG or JPEG image"), "{message}");
    assert!(message.contains("<!DOCTYPE html>"), "{message}");

    // Every URL was asked for once; the flaky one once more, after its 503.
    let site = &server.site;
    for img in &IMAGES {
        let want = if img.path == FLAKY { 2 } else { 1 };
        assert_eq!(site.hits_of(img.path), want, "{}", img.path);
    }
    assert_eq!(site.hits_of(MISSING), 1);
    assert_eq!(site.hits_of(NOT_AN_IMAGE), 1);

    // The downloads held the rate: 10 requests at 10/s span at least 0.9 s.
    let hits = site.hits.lock().unwrap();
    let first = hits.iter().map(|(_, at)| *at).min().unwrap();
    let last = hits.iter().map(|(_, at)| *at).max().unwrap();
    assert_eq!(hits.len(), 10);
    assert!(
        last - first >= Duration::from_millis(850),
        "10 requests in {:?}",
        last - first
    );
    drop(hits);

    // The counts add up, stage by stage.
    let stats = stats(&stats_file);
    let download = stage(&stats, "download");
    assert_eq!(download["workers"], 3);
    assert_eq!(download["items_in"], 9);
    assert_eq!(download["items_out"], 8);
    assert_eq!(download["retries"], 1);
    assert_eq!(download["dead_lettered"], 1);
    let thumbnail = stage(&stats, "thumbnail");
    assert_eq!(thumbnail["items_in"], 8);
    assert_eq!(thumbnail["items_out"], 7);
    assert_eq!(thumbnail["dead_lettered"], 1);
    let save = stage(&stats, "save");
    assert_eq!(save["items_in"], 7);
    assert_eq!(save["items_out"], 7);
    assert_eq!(save["errors"], 0);
    assert_eq!(stage(&stats, "failures")["items_in"], 2);
    // The stats table ends the run's output.
    assert!(done.stderr.contains("bottleneck"), "{}", done.stderr);
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn files_refuses_names_that_would_leave_its_dir_and_writes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let absolute = dir.path().join("absolute.txt");
    let yaml = format!(
        "stages:
  - name: items
    type: list
    with:
      items:
        - {{ name: ok.txt, body: fine }}
        - {{ name: sub/nested.txt, body: nested }}
        - {{ name: ../escape.txt, body: bad }}
        - {{ name: a/../../escape2.txt, body: bad }}
        - {{ name: '{}', body: bad }}
        - {{ name: '', body: bad }}
  - name: save
    type: files
    on_error: rejected
    with: {{ dir: out, name: .name }}
  - name: rejected
    type: write
    inputs: []
    with: {{ path: rejected.jsonl }}
",
        absolute.display()
    );
    let file = write_pipeline(dir.path(), "p.yaml", &yaml);
    let stats_file = dir.path().join("stats.json");
    run(flow()
        .arg("run")
        .arg(&file)
        .arg("--stats-json")
        .arg(&stats_file))
    .expect_code(3);

    let out = dir.path().join("out");
    assert_eq!(std::fs::read_to_string(out.join("ok.txt")).unwrap(), "fine");
    let nested = std::fs::read_to_string(out.join("sub/nested.txt")).unwrap();
    assert_eq!(nested, "nested");
    assert_eq!(listing(&out), ["ok.txt", "sub"]);
    for escaped in ["escape.txt", "escape2.txt", "absolute.txt"] {
        assert!(!dir.path().join(escaped).exists(), "{escaped} was written");
    }

    let letters = read_jsonl(&dir.path().join("rejected.jsonl"));
    let reasons: Vec<&str> = letters
        .iter()
        .map(|l| l["error"]["message"].as_str().unwrap())
        .collect();
    assert_eq!(letters.len(), 4, "{reasons:?}");
    assert!(reasons[0].contains("\"../escape.txt\" would leave `dir`"));
    assert!(reasons[1].contains("\"a/../../escape2.txt\" would leave `dir`"));
    assert!(reasons[2].contains("is absolute"), "{}", reasons[2]);
    assert!(
        reasons[3].contains("the file name is empty"),
        "{}",
        reasons[3]
    );
    for l in &letters {
        assert_eq!(l["error"]["stage"], "save");
        assert_eq!(l["error"]["attempts"], 1);
    }
    let stats = stats(&stats_file);
    let save = stage(&stats, "save");
    assert_eq!(save["items_in"], 6);
    assert_eq!(save["items_out"], 2);
    assert_eq!(save["dead_lettered"], 4);
}

#[test]
fn files_with_the_default_on_error_drops_an_escaping_item_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        dir.path(),
        "p.yaml",
        "stages:
  - {name: items, type: list, with: {items: [{id: 1, body: a}, {id: 2, body: b}]}}
  - name: save
    type: files
    with: {dir: out, name: 'if .id == 2 then \"../\\(.id).txt\" else \"\\(.id).txt\" end'}
",
    );
    let done = run(flow().arg("run").arg(&file)).expect_code(3);
    assert!(done.stderr.contains("would leave `dir`"), "{}", done.stderr);
    assert_eq!(listing(&dir.path().join("out")), ["1.txt"]);
    assert!(!dir.path().join("2.txt").exists());
}

#[test]
fn validating_a_files_pipeline_creates_no_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        dir.path(),
        "p.yaml",
        "stages:
  - {name: items, type: list, with: {items: [{id: 1, body: a}]}}
  - {name: save, type: files, with: {dir: made/at/run, name: '\"\\(.id).txt\"'}}
",
    );
    run(flow().arg("validate").arg(&file)).expect_code(0);
    assert!(!dir.path().join("made").exists());
    run(flow().arg("run").arg(&file)).expect_code(0);
    let written = std::fs::read_to_string(dir.path().join("made/at/run/1.txt")).unwrap();
    assert_eq!(written, "a");
}
