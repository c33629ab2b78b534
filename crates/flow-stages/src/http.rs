//! `http`: one HTTP request per item, the response as the output item.
//!
//! The stage only makes the request and says what a failure means: 429,
//! 408, 5xx, timeouts and connection errors are retryable (with the
//! server's `Retry-After` attached), other 4xx are permanent. Retries,
//! timeouts, rate limits and concurrency are the runner's (`retry`,
//! `timeout`, `rate`, `workers`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use flow_core::value::{self, as_str, object};
use flow_core::{
    BuildContext, ConfigError, Expr, Output, Processor, Stage, StageError, StageKind, StageOptions,
    StageType, Value, async_trait,
};
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Method, StatusCode, Url};
use schemars::JsonSchema;
use serde::Deserialize;

/// Makes one HTTP request per item and emits the response as
/// `{url, status, headers, body}`: `url` as requested (redirects are
/// followed), `status` a number, `headers` an object of lowercase names
/// (repeated headers joined with ", "), `body` as `as` says.
///
/// A 429, a 408, a 5xx, a timeout or a connection error is retryable: with
/// `retry:` on the stage the runner tries again, and waits as long as the
/// response's `Retry-After` asks (seconds or an HTTP date, capped by
/// `max_backoff`) instead of its backoff. Any other 4xx is permanent and
/// never retried. Other statuses (2xx, 3xx not followed) are emitted.
///
/// All the stage's workers share one connection pool. Set `workers` for
/// concurrency, `rate` (and `rate_key: 'split("/")[2]'` for one bucket per
/// host) to be polite, `timeout` to bound each attempt.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpOptions {
    /// A jq expression giving the URL to request, e.g. `.url` or
    /// `"https://example.org/item/\(.id)"`. Default `.` (the item is the
    /// URL).
    #[serde(default = "dot")]
    pub url: String,
    /// The HTTP method (`GET`, `POST`, `PUT`, …; any case).
    #[serde(default = "get")]
    pub method: String,
    /// Request headers, name → value, sent with every request (values may
    /// use `${VAR}` from the environment, e.g. a token). Unless set here,
    /// `user-agent` is `flow/<version>`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A jq expression giving the request body: a string is sent as it is,
    /// any other value as JSON (with `content-type: application/json`
    /// unless `headers` sets one). No output: no body. Absent: no body.
    pub body: Option<String>,
    /// How to read the response body into `body`.
    #[serde(default, rename = "as")]
    pub read_as: BodyAs,
}

/// How the `http` stage reads a response body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BodyAs {
    /// A string, decoded with the response's charset (UTF-8 by default).
    #[default]
    Text,
    /// Parsed JSON; a body that is not JSON fails the item (permanent).
    Json,
    /// Binary bytes (an image, an archive), kept as they are.
    Bytes,
}

fn dot() -> String {
    ".".into()
}

fn get() -> String {
    "GET".into()
}

/// What every worker of one stage shares: the compiled options and the
/// client, whose connection pool is the stage's.
struct Request {
    client: Client,
    method: Method,
    url: Expr,
    headers: HeaderMap,
    body: Option<Expr>,
    read_as: BodyAs,
    /// `headers` sets a content type: a JSON body keeps it.
    has_content_type: bool,
}

/// A request body and whether it is JSON that flow encoded.
struct Body {
    bytes: Vec<u8>,
    json: bool,
}

struct Http(Arc<Request>);

#[async_trait]
impl Processor for Http {
    async fn process(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError> {
        let r = &*self.0;
        let url = r.url_of(input)?;
        let body = r.body_of(input)?;
        let what = format!("{} {url}", r.method);
        let parsed = Url::parse(&url)
            .map_err(|e| StageError::permanent(format!("{what}: invalid URL: {e}")))?;
        let mut request = r
            .client
            .request(r.method.clone(), parsed)
            .headers(r.headers.clone());
        if let Some(body) = body {
            if body.json && !r.has_content_type {
                request = request.header(header::CONTENT_TYPE, "application/json");
            }
            request = request.body(body.bytes);
        }
        let response = request.send().await.map_err(|e| request_error(&what, e))?;
        let status = response.status();
        if let Some(error) = status_error(&what, status, response.headers()) {
            return Err(error);
        }
        let headers = headers_object(response.headers());
        let body = match r.read_as {
            BodyAs::Text => {
                value::string(response.text().await.map_err(|e| request_error(&what, e))?)
            }
            BodyAs::Bytes => value::bytes(
                response
                    .bytes()
                    .await
                    .map_err(|e| request_error(&what, e))?,
            ),
            BodyAs::Json => {
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| request_error(&what, e))?;
                value::parse_json(&bytes).map_err(|e| {
                    StageError::permanent(format!("{what}: {status}: the body is not JSON: {e}"))
                })?
            }
        };
        out.emit(object([
            ("url", value::string(url)),
            ("status", value::int(i64::from(status.as_u16()))),
            ("headers", headers),
            ("body", body),
        ]));
        Ok(())
    }
}

impl Request {
    fn url_of(&self, input: &Value) -> Result<String, StageError> {
        match self.url.first(input.clone())? {
            Some(v) => match as_str(&v) {
                Some(url) => Ok(url.to_string()),
                None => Err(StageError::permanent(format!(
                    "url `{}` gave {}, not a string",
                    self.url.code(),
                    value::to_json(&v)
                ))),
            },
            None => Err(StageError::permanent(format!(
                "url `{}` gave no URL",
                self.url.code()
            ))),
        }
    }

    /// The request body: a string as it is, binary as it is, anything
    /// else as JSON text.
    fn body_of(&self, input: &Value) -> Result<Option<Body>, StageError> {
        let Some(expr) = &self.body else {
            return Ok(None);
        };
        Ok(expr.first(input.clone())?.map(|v| match v {
            Value::TStr(b) | Value::BStr(b) => Body {
                bytes: b.to_vec(),
                json: false,
            },
            other => Body {
                bytes: value::to_json(&other).into_bytes(),
                json: true,
            },
        }))
    }
}

/// The error for a response whose status fails the item, if it does.
fn status_error(what: &str, status: StatusCode, headers: &HeaderMap) -> Option<StageError> {
    let message = format!("{what}: {status}");
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        let error = StageError::retryable(message);
        let wait = headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, SystemTime::now()));
        Some(match wait {
            Some(wait) => error.with_retry_after(wait),
            None => error,
        })
    } else if status.is_client_error() {
        Some(StageError::permanent(message))
    } else {
        None
    }
}

/// A `Retry-After` value as a wait from `now`: delay-seconds or an HTTP
/// date (a date in the past is no wait). `None` when it is neither.
fn retry_after(text: &str, now: SystemTime) -> Option<Duration> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A failed request as a stage error: a request that could not be built or
/// whose redirects went wrong is permanent; a timeout, a refused or broken
/// connection, a body cut short are retryable.
fn request_error(what: &str, e: reqwest::Error) -> StageError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_redirect() {
        "bad redirect"
    } else if e.is_builder() {
        "invalid request"
    } else if e.is_body() || e.is_decode() {
        "reading the body failed"
    } else {
        "request failed"
    };
    let permanent = e.is_builder() || e.is_redirect();
    let message = format!("{what}: {kind}: {}", root_cause(&e.without_url()));
    if permanent {
        StageError::permanent(message)
    } else {
        StageError::retryable(message)
    }
}

/// The innermost cause of an error (`Connection refused (os error 111)`):
/// the outer layers only repeat that a request failed.
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Response headers as an object; names are lowercase already.
fn headers_object(headers: &HeaderMap) -> Value {
    object(headers.keys().map(|name| {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        (name.as_str(), value::string(values.join(", ")))
    }))
}

impl StageOptions for HttpOptions {
    fn build(self, _ctx: &BuildContext) -> Result<Stage, ConfigError> {
        let url = Expr::compile(&self.url).map_err(|e| ConfigError::expr("url", e))?;
        let body = match &self.body {
            Some(code) => Some(Expr::compile(code).map_err(|e| ConfigError::expr("body", e))?),
            None => None,
        };
        let method = Method::from_bytes(self.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| ConfigError::new("method", format!("invalid method {:?}", self.method)))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let key = format!("headers.{name}");
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ConfigError::new(&key, "invalid header name"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| ConfigError::new(&key, format!("invalid header value {value:?}")))?;
            headers.append(name, value);
        }
        let has_content_type = headers.contains_key(header::CONTENT_TYPE);
        let client = Client::builder()
            .user_agent(concat!("flow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::new("", format!("cannot make an HTTP client: {e}")))?;
        let request = Arc::new(Request {
            client,
            method,
            url,
            headers,
            body,
            read_as: self.read_as,
            has_content_type,
        });
        Ok(Stage::processor(move |_| Ok(Http(request.clone()))))
    }
}

flow_core::inventory::submit! {
    StageType::new::<HttpOptions>(
        "http",
        StageKind::Processor,
        "Makes an HTTP request per item and emits the response.",
        "- name: fetch\n  type: http\n  workers: 8\n  rate: 20/s\n  retry: { attempts: 3, backoff: 200ms, max_backoff: 5s }\n  timeout: 10s\n  with: { url: .url, headers: { accept: text/html }, as: text }\n",
    )
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::Router;
    use axum::body::Bytes;
    use axum::http::{HeaderMap as ServerHeaders, Method as ServerMethod, StatusCode as Code};
    use axum::response::{AppendHeaders, IntoResponse};
    use axum::routing::{any, get};
    use flow_core::Worker;
    use serde_json::json;

    use super::*;

    /// Serves the test pages on a loopback port of the test's runtime.
    async fn server() -> SocketAddr {
        let app = Router::new()
            .route(
                "/text",
                get(|| async { (AppendHeaders([("x-multi", "a"), ("x-multi", "b")]), "hello") }),
            )
            .route(
                "/json",
                get(|| async { ([("content-type", "application/json")], r#"{"a":[1,2]}"#) }),
            )
            .route("/bytes", get(|| async { vec![0u8, 159, 146, 150] }))
            .route("/echo", any(echo))
            .route(
                "/busy",
                get(|| async { (Code::TOO_MANY_REQUESTS, [("retry-after", "7")]) }),
            )
            .route("/down", get(|| async { Code::SERVICE_UNAVAILABLE }))
            .route("/missing", get(|| async { Code::NOT_FOUND }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    /// Answers with what it received.
    async fn echo(method: ServerMethod, headers: ServerHeaders, body: Bytes) -> impl IntoResponse {
        let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
        axum::Json(json!({
            "method": method.as_str(),
            "content_type": header("content-type"),
            "token": header("x-token"),
            "user_agent": header("user-agent"),
            "body": String::from_utf8(body.to_vec()).unwrap(),
        }))
    }

    fn ctx() -> BuildContext {
        BuildContext {
            stage: "fetch".into(),
            workers: 1,
            base_dir: ".".into(),
            timeout: None,
        }
    }

    fn build(with: serde_json::Value) -> Result<Stage, ConfigError> {
        let options: HttpOptions = serde_json::from_value(with).unwrap();
        options.build(&ctx())
    }

    fn worker(with: serde_json::Value) -> Box<dyn Processor> {
        let Ok(Stage::Workers(factory)) = build(with) else {
            panic!("http builds a worker stage")
        };
        match factory(0) {
            Ok(Worker::Processor(p)) => p,
            _ => panic!("http workers are processors"),
        }
    }

    /// Runs one item through a worker: its single output as JSON, or the
    /// error.
    async fn fetch(with: serde_json::Value, input: Value) -> Result<serde_json::Value, StageError> {
        let mut out = Output::new();
        worker(with).process(&input, &mut out).await?;
        let items = out.items_mut();
        assert_eq!(items.len(), 1, "one output per request");
        Ok(serde_json::from_str(&value::to_json(&items[0].value)).unwrap())
    }

    fn url(addr: SocketAddr, path: &str) -> Value {
        value::string(format!("http://{addr}{path}"))
    }

    #[tokio::test]
    async fn a_page_is_emitted_as_url_status_lowercase_headers_and_text() {
        let addr = server().await;
        let page = fetch(json!({}), url(addr, "/text")).await.unwrap();
        assert_eq!(page["url"], format!("http://{addr}/text"));
        assert_eq!(page["status"], 200);
        assert_eq!(page["body"], "hello");
        assert_eq!(page["headers"]["x-multi"], "a, b");
        assert_eq!(page["headers"]["content-type"], "text/plain; charset=utf-8");
    }

    #[tokio::test]
    async fn as_json_parses_the_body_and_as_bytes_keeps_it_binary() {
        let addr = server().await;
        let page = fetch(json!({"as": "json"}), url(addr, "/json"))
            .await
            .unwrap();
        assert_eq!(page["body"], json!({"a": [1, 2]}));

        let mut out = Output::new();
        worker(json!({"as": "bytes"}))
            .process(&url(addr, "/bytes"), &mut out)
            .await
            .unwrap();
        let body = value::get(&out.items_mut()[0].value, "body").unwrap();
        assert_eq!(body, &value::bytes(vec![0u8, 159, 146, 150]));
    }

    #[tokio::test]
    async fn a_body_that_is_not_json_fails_the_item_for_good() {
        let addr = server().await;
        let e = fetch(json!({"as": "json"}), url(addr, "/text"))
            .await
            .unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.message().contains("the body is not JSON"), "{e}");
    }

    #[tokio::test]
    async fn method_headers_and_a_json_body_are_sent() {
        let addr = server().await;
        let with = json!({
            "url": ".u",
            "method": "post",
            "headers": {"X-Token": "secret"},
            "body": "{id, tags}",
        });
        let input = object([
            ("u", url(addr, "/echo")),
            ("id", value::int(7)),
            ("tags", value::from_serde(&json!(["a"])).unwrap()),
        ]);
        let page = fetch(with, input).await.unwrap();
        let seen: serde_json::Value = serde_json::from_str(page["body"].as_str().unwrap()).unwrap();
        assert_eq!(seen["method"], "POST");
        assert_eq!(seen["token"], "secret");
        assert_eq!(seen["content_type"], "application/json");
        assert_eq!(seen["body"], r#"{"id":7,"tags":["a"]}"#);
        assert!(seen["user_agent"].as_str().unwrap().starts_with("flow/"));
    }

    #[tokio::test]
    async fn a_string_body_is_sent_as_it_is_with_the_configured_content_type() {
        let addr = server().await;
        let with = json!({
            "url": ".u",
            "method": "PUT",
            "headers": {"content-type": "text/csv", "user-agent": "mine"},
            "body": ".csv",
        });
        let input = object([
            ("u", url(addr, "/echo")),
            ("csv", value::string("a,b\n1,2\n")),
        ]);
        let page = fetch(with, input).await.unwrap();
        let seen: serde_json::Value = serde_json::from_str(page["body"].as_str().unwrap()).unwrap();
        assert_eq!(seen["method"], "PUT");
        assert_eq!(seen["content_type"], "text/csv");
        assert_eq!(seen["user_agent"], "mine");
        assert_eq!(seen["body"], "a,b\n1,2\n");
    }

    #[tokio::test]
    async fn too_many_requests_is_retryable_and_carries_its_retry_after() {
        let addr = server().await;
        let e = fetch(json!({}), url(addr, "/busy")).await.unwrap_err();
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(
            e.message(),
            format!("GET http://{addr}/busy: 429 Too Many Requests")
        );
    }

    #[tokio::test]
    async fn server_errors_are_retryable_and_other_client_errors_permanent() {
        let addr = server().await;
        let e = fetch(json!({}), url(addr, "/down")).await.unwrap_err();
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), None);
        assert_eq!(
            e.message(),
            format!("GET http://{addr}/down: 503 Service Unavailable")
        );

        let e = fetch(json!({}), url(addr, "/missing")).await.unwrap_err();
        assert!(!e.is_retryable());
        assert_eq!(
            e.message(),
            format!("GET http://{addr}/missing: 404 Not Found")
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_retryable() {
        // A port that was free a moment ago: nothing listens on it.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = fetch(json!({}), url(addr, "/x")).await.unwrap_err();
        assert!(e.is_retryable());
        let prefix = format!("GET http://{addr}/x: cannot connect: ");
        assert!(e.message().starts_with(&prefix), "{e}");
        assert!(e.message().contains("refused"), "{e}");
    }

    #[tokio::test]
    async fn a_url_that_is_not_a_string_or_not_a_url_fails_the_item_for_good() {
        let e = fetch(json!({"url": ".id"}), object([("id", value::int(3))]))
            .await
            .unwrap_err();
        assert!(!e.is_retryable());
        assert_eq!(e.message(), "url `.id` gave 3, not a string");

        let e = fetch(json!({}), value::string("not a url"))
            .await
            .unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.message().starts_with("GET not a url: invalid URL"), "{e}");
    }

    #[test]
    fn statuses_sort_into_retryable_permanent_and_fine() {
        let none = HeaderMap::new();
        let error = |code: u16| status_error("GET u", StatusCode::from_u16(code).unwrap(), &none);
        for code in [408, 429, 500, 502, 503, 504] {
            let e = error(code).expect("fails the item");
            assert!(e.is_retryable(), "{code}");
        }
        for code in [400, 401, 403, 404, 410, 422] {
            let e = error(code).expect("fails the item");
            assert!(!e.is_retryable(), "{code}");
        }
        for code in [200, 201, 204, 304] {
            assert!(error(code).is_none(), "{code}");
        }
        let mut later = HeaderMap::new();
        let at = SystemTime::now() + Duration::from_secs(3600);
        later.insert(
            header::RETRY_AFTER,
            httpdate::fmt_http_date(at).parse().unwrap(),
        );
        let e = status_error("GET u", StatusCode::SERVICE_UNAVAILABLE, &later).unwrap();
        let wait = e.retry_after().expect("a date is a wait");
        assert!(wait > Duration::from_secs(3500) && wait <= Duration::from_secs(3600));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(30)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-1", now), None);
    }

    #[test]
    fn defaults_are_get_the_item_as_url_and_text() {
        let options: HttpOptions = serde_json::from_value(json!({})).unwrap();
        assert_eq!(options.url, ".");
        assert_eq!(options.method, "GET");
        assert_eq!(options.read_as, BodyAs::Text);
        assert!(options.body.is_none() && options.headers.is_empty());
    }

    #[test]
    fn bad_options_name_their_key() {
        let key = |with| build(with).err().expect("rejected").key;
        assert_eq!(key(json!({"url": ".["})), "url");
        assert_eq!(key(json!({"body": "{"})), "body");
        assert_eq!(key(json!({"method": "GE T"})), "method");
        assert_eq!(
            key(json!({"headers": {"bad name": "x"}})),
            "headers.bad name"
        );
        assert_eq!(
            key(json!({"headers": {"x-a": "line\nbreak"}})),
            "headers.x-a"
        );
        let e = serde_json::from_value::<HttpOptions>(json!({"as": "xml"})).unwrap_err();
        assert!(e.to_string().contains("unknown variant `xml`"), "{e}");
    }
}
