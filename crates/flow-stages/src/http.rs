//! `http`: one HTTP request per item, the response as the output item.
//!
//! The stage makes the request, bounds it, and says what a failure means:
//! 429, 408, 5xx, timeouts and connection errors are retryable (with the
//! server's `Retry-After` attached, capped), other 4xx are permanent.
//! Retries, rate limits and concurrency are the runner's (`retry`, `rate`,
//! `workers`).
//!
//! Every request has a finite bound (the stage's `timeout:`, else
//! `request_timeout`, 30 s), every body a size limit (`max_body`, 64 MiB)
//! checked while it streams in, and redirects are followed here rather
//! than by the client, so the configured `headers` (tokens, API keys) go
//! only to the origin the item named. No error message or emitted `url`
//! carries the user and password of a URL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use flow_core::json::{self, Utf8};
use flow_core::text::{for_display, redact_userinfo};
use flow_core::value::{self, as_str, object};
use flow_core::{
    BuildContext, ConfigError, Expr, Output, Processor, Stage, StageError, StageKind, StageOptions,
    StageType, Value, async_trait,
};
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Method, Response, StatusCode, Url, redirect};
use schemars::JsonSchema;
use serde::Deserialize;

/// The bound on one request when neither `request_timeout` nor the
/// stage's `timeout:` is set.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The bound on opening a connection (never more than the request's).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response body read, unless `max_body` says otherwise.
pub const DEFAULT_MAX_BODY: &str = "64MiB";
/// How many redirects one request follows, unless `max_redirects` says
/// otherwise.
pub const DEFAULT_MAX_REDIRECTS: u32 = 10;
/// The longest `Retry-After` passed on to the runner, unless
/// `max_retry_after` says otherwise.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Makes one HTTP request per item and emits the response as
/// `{url, status, headers, body}`: `url` the URL fetched (after redirects,
/// the last one; a user and password in it shown as `***`), `status` a
/// number, `headers` an object of lowercase names (repeated headers joined
/// with ", "), `body` as `as` says.
///
/// A 429, a 408, a 5xx, a timeout or a connection error is retryable: with
/// `retry:` on the stage the runner tries again, and waits as long as the
/// response's `Retry-After` asks (seconds or an HTTP date; at most
/// `max_retry_after`, and the runner's `max_backoff`) instead of its
/// backoff. Any other 4xx is permanent and never retried. Other statuses
/// (2xx, a 3xx not followed) are emitted. A body larger than `max_body`,
/// JSON that does not parse (or nests deeper than 256 levels) and text
/// that does not decode fail the item for good.
///
/// Every request is bounded: connecting by `connect_timeout`, the whole of
/// it (redirects and body included) by `request_timeout`, which defaults
/// to the stage's `timeout:` and else to 30 s. A server that never
/// answers, or stalls in the middle of a body, fails the item (retryable)
/// when the bound is reached.
///
/// Redirects (301, 302, 303, 307, 308) are followed up to `max_redirects`
/// times, as browsers do: 303, and 301 or 302 after a POST, continue as a
/// GET without the body; 307 and 308 keep the method and body. `headers`
/// go only to the origin (scheme, host and port) of the URL the item
/// named; a redirect elsewhere gets flow's own headers only. A redirect
/// from https to http, or to a scheme other than http and https, fails
/// the item.
///
/// All the stage's workers share one connection pool. Set `workers` for
/// concurrency and `rate` (and `rate_key: 'split("/")[2]'` for one bucket
/// per host) to be polite.
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
    /// Request headers, name → value, sent with every request to the
    /// origin the item's URL names, and never to another origin a redirect
    /// leads to (values may use `${VAR}` from the environment, e.g. a
    /// token). Unless set here, `user-agent` is `flow/<version>`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A jq expression giving the request body: a string is sent as it is,
    /// any other value as JSON (with `content-type: application/json`
    /// unless `headers` sets one). No output: no body. Absent: no body.
    pub body: Option<String>,
    /// How to read the response body into `body`.
    #[serde(default, rename = "as")]
    pub read_as: BodyAs,
    /// The longest one request may take, from connecting to the last byte
    /// of the body, redirects included (`30s`, `2m`); past it the item
    /// fails, retryable. Default: the stage's `timeout:` when it has one,
    /// else `30s`.
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    #[schemars(with = "String")]
    pub request_timeout: Option<std::time::Duration>,
    /// The longest opening a connection may take (default `10s`, and never
    /// more than the request's bound).
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    #[schemars(with = "String")]
    pub connect_timeout: Option<std::time::Duration>,
    /// The largest response body read (`64MiB` by default; `1048576`,
    /// `512KB`, `1GiB`). A larger body fails the item for good: a
    /// `Content-Length` over the limit before any of it is read, a body
    /// without one as soon as it passes the limit, so memory stays bounded.
    #[serde(default = "default_max_body")]
    pub max_body: String,
    /// How many redirects one request follows (default 10); one more fails
    /// the item. `0`: redirects are not followed, and the 3xx response is
    /// emitted.
    #[serde(default = "default_max_redirects")]
    pub max_redirects: u32,
    /// The longest wait a `Retry-After` may ask for (default `5m`): a
    /// longer one is cut to it, and the error says so.
    #[serde(default, deserialize_with = "flow_core::optional_duration")]
    #[schemars(with = "String")]
    pub max_retry_after: Option<std::time::Duration>,
    /// A body with `as: text` or `as: json` that is not valid text in its
    /// charset (UTF-8 unless `content-type` names another): `error` fails
    /// the item for good (the default), `replace` puts U+FFFD in place of
    /// the bad bytes.
    #[serde(default)]
    pub invalid_utf8: InvalidUtf8,
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

/// What to do with text that does not decode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InvalidUtf8 {
    /// Fail the item, for good, saying where the bad bytes are.
    #[default]
    Error,
    /// Replace the bad bytes with U+FFFD.
    Replace,
}

fn dot() -> String {
    ".".into()
}

fn get() -> String {
    "GET".into()
}

fn default_max_body() -> String {
    DEFAULT_MAX_BODY.into()
}

fn default_max_redirects() -> u32 {
    DEFAULT_MAX_REDIRECTS
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
    /// The bound on one request, redirects and body included, and where
    /// it comes from (for the error).
    bound: Duration,
    bound_from: &'static str,
    max_body: u64,
    /// `max_body` as written, for errors.
    max_body_text: String,
    max_redirects: u32,
    max_retry_after: Duration,
    utf8: InvalidUtf8,
}

/// A request body and whether it is JSON that flow encoded.
#[derive(Clone)]
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
        // Messages name the URL without its credentials or control
        // characters.
        let what = format!("{} {}", r.method, for_display(&url));
        let parsed =
            Url::parse(&url).map_err(|e| permanent(format!("{what}: invalid URL: {e}")))?;
        match tokio::time::timeout(r.bound, r.fetch(&url, parsed, body, &what)).await {
            Ok(page) => {
                out.emit(page?);
                Ok(())
            }
            Err(_) => Err(retryable(format!(
                "{what}: timed out after {} ({})",
                humantime::format_duration(r.bound),
                r.bound_from
            ))),
        }
    }
}

impl Request {
    fn url_of(&self, input: &Value) -> Result<String, StageError> {
        match self.url.first(input.clone())? {
            Some(v) => match as_str(&v) {
                Some(url) => Ok(url.to_string()),
                None => Err(permanent(format!(
                    "url `{}` gave {}, not a string",
                    self.url.code(),
                    shorten(&value::to_json(&v))
                ))),
            },
            None => Err(permanent(format!("url `{}` gave no URL", self.url.code()))),
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

    /// Requests `start` (the item's `url` text, parsed), following
    /// redirects, and reads the response into the output item.
    async fn fetch(
        &self,
        requested: &str,
        start: Url,
        mut body: Option<Body>,
        what: &str,
    ) -> Result<Value, StageError> {
        let origin = start.origin();
        let (mut url, mut method, mut hops) = (start, self.method.clone(), 0u32);
        let response = loop {
            // Where the request is now, for messages after a redirect.
            let at = match hops {
                0 => what.to_string(),
                _ => format!("{what} (redirected to {})", for_display(url.as_str())),
            };
            let same_origin = url.origin() == origin;
            let mut request = self.client.request(method.clone(), url.clone());
            if same_origin {
                let mut headers = self.headers.clone();
                if body.is_none() && self.body.is_some() {
                    // The body was dropped by a redirect: so is its type.
                    headers.remove(header::CONTENT_TYPE);
                }
                request = request.headers(headers);
            }
            if let Some(body) = &body {
                if body.json && !(same_origin && self.has_content_type) {
                    request = request.header(header::CONTENT_TYPE, "application/json");
                }
                request = request.body(body.bytes.clone());
            }
            let response = request.send().await.map_err(|e| request_error(&at, e))?;
            let status = response.status();
            let location = response.headers().get(header::LOCATION);
            let Some(location) = location.filter(|_| is_followed(status)) else {
                break (response, at);
            };
            if self.max_redirects == 0 {
                break (response, at);
            }
            if hops >= self.max_redirects {
                return Err(permanent(format!(
                    "{at}: {status}: more than {} redirects (max_redirects)",
                    self.max_redirects
                )));
            }
            let (next, next_method, keep_body) = follow(&url, status, location, &method)
                .map_err(|why| permanent(format!("{at}: {status}: {why}")))?;
            if !keep_body {
                body = None;
            }
            (url, method, hops) = (next, next_method, hops + 1);
        };
        let (mut response, at) = response;
        let status = response.status();
        if let Some(error) = status_error(&at, status, response.headers(), self.max_retry_after) {
            return Err(error);
        }
        let headers = headers_object(response.headers());
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = self
            .read_body(&mut response, &format!("{at}: {status}"))
            .await?;
        let body = match self.read_as {
            BodyAs::Bytes => value::bytes(bytes),
            BodyAs::Text => value::string(
                decode_text(bytes, content_type.as_deref(), self.utf8)
                    .map_err(|why| permanent(format!("{at}: {status}: {why}")))?,
            ),
            BodyAs::Json => {
                let utf8 = match self.utf8 {
                    InvalidUtf8::Error => Utf8::Strict,
                    InvalidUtf8::Replace => Utf8::Lossy,
                };
                json::parse(&bytes, utf8)
                    .map_err(|e| permanent(format!("{at}: {status}: the body is not JSON: {e}")))?
            }
        };
        // Not redirected: the URL as the item gave it, so results join
        // back to their input.
        let fetched = match hops {
            0 => redact_userinfo(requested).into_owned(),
            _ => redact_userinfo(url.as_str()).into_owned(),
        };
        Ok(object([
            ("url", value::string(fetched)),
            ("status", value::int(i64::from(status.as_u16()))),
            ("headers", headers),
            ("body", body),
        ]))
    }

    /// Streams the body in, failing (for good) as soon as it is larger
    /// than `max_body`: a `Content-Length` over the limit before any of it
    /// is read.
    async fn read_body(&self, response: &mut Response, what: &str) -> Result<Vec<u8>, StageError> {
        let limit = self.max_body;
        if let Some(length) = response.content_length().filter(|&n| n > limit) {
            return Err(permanent(format!(
                "{what}: the body is {length} bytes, more than max_body ({})",
                self.max_body_text
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| request_error(what, e))? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(permanent(format!(
                    "{what}: the body is larger than max_body ({}); stopped reading it",
                    self.max_body_text
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// The statuses whose `Location` is followed (not 300 Multiple Choices or
/// 304 Not Modified).
fn is_followed(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Where a redirect leads from `from`, with which method, and whether the
/// body goes along, as browsers do: 303 (and 301 or 302 after a POST)
/// continue as a GET without the body (a HEAD stays a HEAD); 307 and 308
/// keep both. A redirect from https to http, or to another scheme than
/// those two, is refused.
fn follow(
    from: &Url,
    status: StatusCode,
    location: &HeaderValue,
    method: &Method,
) -> Result<(Url, Method, bool), String> {
    let location = location
        .to_str()
        .map_err(|_| "the redirect's Location is not text".to_string())?;
    let next = from.join(location).map_err(|e| {
        format!(
            "the redirect's Location {:?} is not a URL: {e}",
            shorten(&for_display(location))
        )
    })?;
    let shown = for_display(next.as_str()).into_owned();
    match next.scheme() {
        "http" if from.scheme() == "https" => {
            return Err(format!("refused a redirect from https to http ({shown})"));
        }
        "http" | "https" => {}
        other => {
            return Err(format!(
                "refused a redirect to a {} URL ({shown})",
                shorten(&for_display(other))
            ));
        }
    }
    Ok(match status.as_u16() {
        303 if *method == Method::HEAD => (next, Method::HEAD, false),
        303 => (next, Method::GET, false),
        301 | 302 if *method == Method::POST => (next, Method::GET, false),
        _ => (next, method.clone(), true),
    })
}

/// The error for a response whose status fails the item, if it does. A
/// `Retry-After` longer than `max_wait` is cut to it, and the message
/// says so.
fn status_error(
    what: &str,
    status: StatusCode,
    headers: &HeaderMap,
    max_wait: Duration,
) -> Option<StageError> {
    let message = format!("{what}: {status}");
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        let wait = headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, SystemTime::now()));
        Some(match wait {
            Some(wait) if wait > max_wait => retryable(format!(
                "{message} (Retry-After capped to {}, max_retry_after)",
                humantime::format_duration(max_wait)
            ))
            .with_retry_after(max_wait),
            Some(wait) => retryable(message).with_retry_after(wait),
            None => retryable(message),
        })
    } else if status.is_client_error() {
        Some(permanent(message))
    } else {
        None
    }
}

/// A `Retry-After` value as a wait from `now`: delay-seconds or an HTTP
/// date (a date in the past is no wait); more seconds than a number holds
/// is the longest wait there is. `None` when it is neither.
fn retry_after(text: &str, now: SystemTime) -> Option<Duration> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Some(text.parse().map_or(Duration::MAX, Duration::from_secs));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A failed request as a stage error: a request that could not be built
/// is permanent; a timeout, a refused or broken connection, a body cut
/// short are retryable.
fn request_error(what: &str, e: reqwest::Error) -> StageError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_builder() {
        "invalid request"
    } else if e.is_body() || e.is_decode() {
        "reading the body failed"
    } else {
        "request failed"
    };
    let builder = e.is_builder();
    let message = format!("{what}: {kind}: {}", root_cause(&e.without_url()));
    if builder {
        permanent(message)
    } else {
        retryable(message)
    }
}

/// A permanent error whose message is fit to show: no credentials, no
/// control characters (a server's or an item's text may be in it).
fn permanent(message: String) -> StageError {
    StageError::permanent(for_display(&message))
}

/// [`permanent`], retryable.
fn retryable(message: String) -> StageError {
    StageError::retryable(for_display(&message))
}

/// At most 200 characters of `text`, for quoting a value in a message.
fn shorten(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
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

/// The `charset` parameter of a `Content-Type` value.
fn charset(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// A body as text in its charset (a byte order mark wins over the
/// header; UTF-8 when neither says, or the charset is unknown).
fn decode_text(
    bytes: Vec<u8>,
    content_type: Option<&str>,
    policy: InvalidUtf8,
) -> Result<String, String> {
    use encoding_rs::{Encoding, UTF_8};
    let declared = content_type
        .and_then(charset)
        .and_then(|label| Encoding::for_label(label.as_bytes()))
        .unwrap_or(UTF_8);
    let (encoding, bom) = Encoding::for_bom(&bytes).unwrap_or((declared, 0));
    if encoding == UTF_8 {
        let text = match bom {
            0 => bytes,
            n => bytes[n..].to_vec(),
        };
        return match String::from_utf8(text) {
            Ok(text) => Ok(text),
            Err(e) if policy == InvalidUtf8::Replace => {
                Ok(String::from_utf8_lossy(e.as_bytes()).into_owned())
            }
            Err(e) => Err(format!(
                "the body is not valid UTF-8 (at byte {}); invalid_utf8: replace accepts it",
                bom + e.utf8_error().valid_up_to() + 1
            )),
        };
    }
    let text = &bytes[bom..];
    match policy {
        InvalidUtf8::Replace => Ok(encoding.decode_without_bom_handling(text).0.into_owned()),
        InvalidUtf8::Error => encoding
            .decode_without_bom_handling_and_without_replacement(text)
            .map(|t| t.into_owned())
            .ok_or_else(|| {
                format!(
                    "the body is not valid {} text; invalid_utf8: replace accepts it",
                    encoding.name()
                )
            }),
    }
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

/// Parses a size: `1048576`, `512KB`, `64MiB`, `1.5GB`.
fn parse_size(text: &str) -> Result<u64, String> {
    flow_core::parse_size(text)
}

impl StageOptions for HttpOptions {
    fn build(self, ctx: &BuildContext) -> Result<Stage, ConfigError> {
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
            // The value is not quoted back: it may be a secret.
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                ConfigError::new(
                    &key,
                    "invalid header value (a control character or a line break)",
                )
            })?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        let max_body = parse_size(&self.max_body).map_err(|e| ConfigError::new("max_body", e))?;
        let (bound, bound_from) = match (self.request_timeout, ctx.timeout) {
            (Some(t), _) => (t, "request_timeout"),
            (None, Some(t)) => (t, "the stage's timeout"),
            (None, None) => (DEFAULT_REQUEST_TIMEOUT, "request_timeout's default"),
        };
        if bound.is_zero() {
            return Err(ConfigError::new("request_timeout", "must be more than 0s"));
        }
        let connect = self
            .connect_timeout
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT)
            .min(bound);
        if connect.is_zero() {
            return Err(ConfigError::new("connect_timeout", "must be more than 0s"));
        }
        let has_content_type = headers.contains_key(header::CONTENT_TYPE);
        let client = Client::builder()
            .user_agent(concat!("flow/", env!("CARGO_PKG_VERSION")))
            // Redirects are followed by `fetch`, which keeps `headers` to
            // the item's origin.
            .redirect(redirect::Policy::none())
            .connect_timeout(connect)
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
            bound,
            bound_from,
            max_body,
            max_body_text: self.max_body.trim().to_string(),
            max_redirects: self.max_redirects,
            max_retry_after: self.max_retry_after.unwrap_or(DEFAULT_MAX_RETRY_AFTER),
            utf8: self.invalid_utf8,
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
    use std::sync::Mutex;

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap as ServerHeaders, Method as ServerMethod, StatusCode as Code};
    use axum::response::{AppendHeaders, IntoResponse};
    use axum::routing::{any, get};
    use flow_core::Worker;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

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
            .route(
                "/busy-for-years",
                get(|| async { (Code::SERVICE_UNAVAILABLE, [("retry-after", "977616000")]) }),
            )
            .route("/down", get(|| async { Code::SERVICE_UNAVAILABLE }))
            .route("/missing", get(|| async { Code::NOT_FOUND }))
            .route(
                "/deep",
                get(|| async { "[".repeat(10_000) + &"]".repeat(10_000) }),
            )
            .route(
                "/latin1",
                get(|| async {
                    (
                        [("content-type", "text/plain; charset=ISO-8859-1")],
                        vec![b'c', b'a', b'f', 0xe9],
                    )
                }),
            )
            .route(
                "/not-utf8",
                get(|| async {
                    (
                        [("content-type", "text/plain")],
                        vec![b'o', b'k', 0xff, b'!'],
                    )
                }),
            )
            .route("/bom", get(|| async { vec![0xef, 0xbb, 0xbf, b'h', b'i'] }))
            .route("/big", get(|| async { "x".repeat(4096) }));
        serve(app).await
    }

    async fn serve(app: Router) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
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
            "api_key": header("x-api-key"),
            "authorization": header("authorization"),
            "user_agent": header("user-agent"),
            "body": String::from_utf8(body.to_vec()).unwrap(),
        }))
    }

    /// A raw TCP server that answers every connection with `script`: the
    /// bytes to send, then (if `hold`) keeps the connection open without
    /// a word more.
    async fn raw_server(script: &'static [u8], hold: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    let _ = socket.write_all(script).await;
                    if hold {
                        std::future::pending::<()>().await;
                    }
                });
            }
        });
        addr
    }

    /// A server that sends a chunked body forever.
    async fn endless_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                    if socket.write_all(head).await.is_err() {
                        return;
                    }
                    let chunk = format!("{:x}\r\n{}\r\n", 1024, "y".repeat(1024));
                    while socket.write_all(chunk.as_bytes()).await.is_ok() {}
                });
            }
        });
        addr
    }

    fn ctx() -> BuildContext {
        BuildContext {
            stage: "fetch".into(),
            workers: 1,
            base_dir: ".".into(),
            timeout: None,
        }
    }

    fn build_in(with: serde_json::Value, ctx: &BuildContext) -> Result<Stage, ConfigError> {
        let options: HttpOptions = serde_json::from_value(with).unwrap();
        options.build(ctx)
    }

    fn build(with: serde_json::Value) -> Result<Stage, ConfigError> {
        build_in(with, &ctx())
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

    fn worker_in(with: serde_json::Value, ctx: &BuildContext) -> Box<dyn Processor> {
        let Ok(Stage::Workers(factory)) = build_in(with, ctx) else {
            panic!("http builds a worker stage")
        };
        match factory(0) {
            Ok(Worker::Processor(p)) => p,
            _ => panic!("http workers are processors"),
        }
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
    async fn json_nested_ten_thousand_deep_fails_the_item_for_good() {
        let addr = server().await;
        let e = fetch(json!({"as": "json"}), url(addr, "/deep"))
            .await
            .unwrap_err();
        assert!(!e.is_retryable());
        assert_eq!(
            e.message(),
            format!(
                "GET http://{addr}/deep: 200 OK: the body is not JSON: nested deeper than 256 levels (at byte 257)"
            )
        );
    }

    #[tokio::test]
    async fn text_is_decoded_in_its_charset_and_bad_bytes_fail_unless_replaced() {
        let addr = server().await;
        let page = fetch(json!({}), url(addr, "/latin1")).await.unwrap();
        assert_eq!(page["body"], "café");
        let page = fetch(json!({}), url(addr, "/bom")).await.unwrap();
        assert_eq!(page["body"], "hi", "the byte order mark is not text");

        let e = fetch(json!({}), url(addr, "/not-utf8")).await.unwrap_err();
        assert!(!e.is_retryable());
        assert_eq!(
            e.message(),
            format!(
                "GET http://{addr}/not-utf8: 200 OK: the body is not valid UTF-8 (at byte 3); invalid_utf8: replace accepts it"
            )
        );
        let page = fetch(json!({"invalid_utf8": "replace"}), url(addr, "/not-utf8"))
            .await
            .unwrap();
        assert_eq!(page["body"], "ok\u{fffd}!");
        // Bytes are bytes: nothing to decode.
        assert!(
            fetch(json!({"as": "bytes"}), url(addr, "/not-utf8"))
                .await
                .is_ok()
        );
    }

    #[test]
    fn charsets_are_read_from_the_content_type() {
        assert_eq!(charset("text/html; charset=ISO-8859-1"), Some("ISO-8859-1"));
        assert_eq!(charset("text/html;CHARSET=\"utf-8\""), Some("utf-8"));
        assert_eq!(charset("text/html"), None);
        let shift_jis = decode_text(
            vec![0x82, 0xa0],
            Some("text/plain; charset=shift_jis"),
            InvalidUtf8::Error,
        );
        assert_eq!(shift_jis.unwrap(), "あ");
        let bad = decode_text(
            vec![0x82],
            Some("text/plain; charset=shift_jis"),
            InvalidUtf8::Error,
        );
        assert_eq!(
            bad.unwrap_err(),
            "the body is not valid Shift_JIS text; invalid_utf8: replace accepts it"
        );
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
    async fn a_retry_after_of_31_years_is_cut_to_max_retry_after() {
        let addr = server().await;
        let e = fetch(json!({}), url(addr, "/busy-for-years"))
            .await
            .unwrap_err();
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(DEFAULT_MAX_RETRY_AFTER));
        assert_eq!(
            e.message(),
            format!(
                "GET http://{addr}/busy-for-years: 503 Service Unavailable (Retry-After capped to 5m, max_retry_after)"
            )
        );
        let e = fetch(
            json!({"max_retry_after": "2s"}),
            url(addr, "/busy-for-years"),
        )
        .await
        .unwrap_err();
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        // A wait within the cap is passed on as it is.
        let e = fetch(json!({"max_retry_after": "10s"}), url(addr, "/busy"))
            .await
            .unwrap_err();
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
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

        // An item's escape sequences do not reach the message raw.
        let e = fetch(json!({}), value::string("\x1b]0;pwned\x07\r"))
            .await
            .unwrap_err();
        assert!(
            e.message()
                .starts_with("GET \\x1b]0;pwned\\x07\\r: invalid URL"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_server_that_never_answers_fails_the_item_within_the_bound() {
        // Accepts, reads the request, and says nothing.
        let addr = raw_server(b"", true).await;
        let e = fetch(json!({"request_timeout": "300ms"}), url(addr, "/silent"))
            .await
            .unwrap_err();
        assert!(e.is_retryable());
        assert_eq!(
            e.message(),
            format!("GET http://{addr}/silent: timed out after 300ms (request_timeout)")
        );
    }

    #[tokio::test]
    async fn the_stages_timeout_bounds_requests_when_request_timeout_is_not_set() {
        let addr = raw_server(b"", true).await;
        let ctx = BuildContext {
            timeout: Some(Duration::from_millis(250)),
            ..ctx()
        };
        let mut out = Output::new();
        let e = worker_in(json!({}), &ctx)
            .process(&url(addr, "/silent"), &mut out)
            .await
            .unwrap_err();
        assert!(e.is_retryable());
        assert_eq!(
            e.message(),
            format!("GET http://{addr}/silent: timed out after 250ms (the stage's timeout)")
        );
    }

    #[tokio::test]
    async fn a_body_that_stalls_or_trickles_fails_the_item_within_the_bound() {
        // Headers and half the body, then nothing; the connection stays.
        let stalled = raw_server(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf", true).await;
        // No length, no end: a body that never closes.
        let open = raw_server(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nsome",
            true,
        )
        .await;
        for (addr, read_as) in [(stalled, "text"), (open, "bytes"), (open, "json")] {
            let e = fetch(
                json!({"request_timeout": "300ms", "as": read_as}),
                url(addr, "/stall"),
            )
            .await
            .unwrap_err();
            assert!(e.is_retryable(), "{e}");
            assert!(
                e.message()
                    .ends_with("timed out after 300ms (request_timeout)"),
                "{e}"
            );
        }
    }

    #[tokio::test]
    async fn a_content_length_over_max_body_fails_before_the_body_is_read() {
        // Claims 10 GiB, and sends a few bytes, then waits: the error comes
        // from the header alone.
        let addr = raw_server(
            b"HTTP/1.1 200 OK\r\ncontent-length: 10737418240\r\n\r\nxxxx",
            true,
        )
        .await;
        let e = fetch(json!({}), url(addr, "/huge")).await.unwrap_err();
        assert!(!e.is_retryable());
        assert_eq!(
            e.message(),
            format!(
                "GET http://{addr}/huge: 200 OK: the body is 10737418240 bytes, more than max_body (64MiB)"
            )
        );
    }

    #[tokio::test]
    async fn an_endless_body_fails_once_it_passes_max_body() {
        let addr = endless_server().await;
        for read_as in ["text", "bytes", "json"] {
            let e = fetch(
                json!({"max_body": "256KiB", "as": read_as}),
                url(addr, "/endless"),
            )
            .await
            .unwrap_err();
            assert!(!e.is_retryable());
            assert_eq!(
                e.message(),
                format!(
                    "GET http://{addr}/endless: 200 OK: the body is larger than max_body (256KiB); stopped reading it"
                )
            );
        }
        // A body within the limit is read whole.
        let addr = server().await;
        let page = fetch(json!({"max_body": "4KiB"}), url(addr, "/big"))
            .await
            .unwrap();
        assert_eq!(page["body"].as_str().unwrap().len(), 4096);
        let e = fetch(json!({"max_body": "4095"}), url(addr, "/big"))
            .await
            .unwrap_err();
        assert!(e.message().ends_with("more than max_body (4095)"), "{e}");
    }

    /// What a server saw: the path and the headers of each request.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<SeenRequest>>>);

    /// Method, path, `x-api-key` and body of a request.
    type SeenRequest = (String, String, Option<String>, Option<String>);

    /// A server that records each request (method, path, `x-api-key`,
    /// body) and redirects `/go/STATUS?to=URL` with STATUS to URL.
    async fn recording_server() -> (SocketAddr, Seen) {
        async fn handle(
            State(seen): State<Seen>,
            method: ServerMethod,
            uri: axum::http::Uri,
            headers: ServerHeaders,
            body: Bytes,
        ) -> axum::response::Response {
            let key = headers
                .get("x-api-key")
                .map(|v| v.to_str().unwrap().to_string());
            let body = (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned());
            seen.0
                .lock()
                .unwrap()
                .push((method.to_string(), uri.path().to_string(), key, body));
            let path = uri.path();
            if let Some(status) = path.strip_prefix("/go/") {
                let to = uri
                    .query()
                    .unwrap()
                    .strip_prefix("to=")
                    .unwrap()
                    .to_string();
                let status = Code::from_u16(status.parse().unwrap()).unwrap();
                return (status, [("location", to)]).into_response();
            }
            if path == "/loop" {
                return (Code::FOUND, [("location", "/loop")]).into_response();
            }
            format!("{method} {path}").into_response()
        }
        let seen = Seen::default();
        let app = Router::new().fallback(handle).with_state(seen.clone());
        (serve(app).await, seen)
    }

    #[tokio::test]
    async fn headers_go_only_to_the_origin_the_item_named() {
        let (first, seen_first) = recording_server().await;
        let (second, seen_second) = recording_server().await;
        let with = json!({"headers": {"x-api-key": "s3cret"}});
        // Same origin: the key goes along to the redirect's target.
        let page = fetch(
            with.clone(),
            url(first, &format!("/go/302?to=http://{first}/here")),
        )
        .await
        .unwrap();
        assert_eq!(page["url"], format!("http://{first}/here"));
        assert_eq!(page["body"], "GET /here");
        // Another port is another origin: the key stays behind.
        let page = fetch(
            with.clone(),
            url(first, &format!("/go/301?to=http://{second}/there")),
        )
        .await
        .unwrap();
        assert_eq!(page["url"], format!("http://{second}/there"));
        assert_eq!(page["status"], 200);
        let keys = |seen: &Seen| -> Vec<Option<String>> {
            seen.0.lock().unwrap().iter().map(|r| r.2.clone()).collect()
        };
        assert_eq!(keys(&seen_first), vec![Some("s3cret".to_string()); 3]);
        assert_eq!(keys(&seen_second), vec![None]);
        // And back to the first origin: it gets the key again.
        let page = fetch(
            with,
            url(
                first,
                &format!("/go/307?to=http://{second}/go/308?to=http://{first}/back"),
            ),
        )
        .await
        .unwrap();
        assert_eq!(page["body"], "GET /back");
        assert_eq!(keys(&seen_second), vec![None, None]);
        assert_eq!(
            seen_first.0.lock().unwrap().last().unwrap().2.as_deref(),
            Some("s3cret")
        );
    }

    #[tokio::test]
    async fn redirects_change_the_method_as_browsers_do() {
        let (addr, seen) = recording_server().await;
        let post = json!({"method": "POST", "body": "\"payload\""});
        for (status, method, body) in [
            (301, "GET", None),
            (302, "GET", None),
            (303, "GET", None),
            (307, "POST", Some("payload")),
            (308, "POST", Some("payload")),
        ] {
            let input = url(addr, &format!("/go/{status}?to=/landed"));
            let page = fetch(post.clone(), input).await.unwrap();
            assert_eq!(page["body"], format!("{method} /landed"), "{status}");
            let last = seen.0.lock().unwrap().last().cloned().unwrap();
            assert_eq!(last.3.as_deref(), body, "{status}");
        }
    }

    #[tokio::test]
    async fn too_many_redirects_fail_the_item_and_zero_emits_the_redirect() {
        let (addr, _) = recording_server().await;
        let e = fetch(json!({}), url(addr, "/loop")).await.unwrap_err();
        assert!(!e.is_retryable());
        assert_eq!(
            e.message(),
            format!(
                "GET http://{addr}/loop (redirected to http://{addr}/loop): 302 Found: more than 10 redirects (max_redirects)"
            )
        );
        let page = fetch(json!({"max_redirects": 0}), url(addr, "/loop"))
            .await
            .unwrap();
        assert_eq!(page["status"], 302);
        assert_eq!(page["headers"]["location"], "/loop");
    }

    #[test]
    fn redirects_from_https_to_http_or_other_schemes_are_refused() {
        let from = Url::parse("https://a.example/x").unwrap();
        let to = |location: &str, status: u16, method: Method| {
            follow(
                &from,
                StatusCode::from_u16(status).unwrap(),
                &HeaderValue::from_str(location).unwrap(),
                &method,
            )
        };
        assert_eq!(
            to("http://a.example/y", 302, Method::GET).unwrap_err(),
            "refused a redirect from https to http (http://a.example/y)"
        );
        assert_eq!(
            to("file:///etc/passwd", 302, Method::GET).unwrap_err(),
            "refused a redirect to a file URL (file:///etc/passwd)"
        );
        let (next, method, body) = to("/y?q=1", 303, Method::PUT).unwrap();
        assert_eq!(
            (next.as_str(), method, body),
            ("https://a.example/y?q=1", Method::GET, false)
        );
        let (_, method, body) = to("https://b.example/", 303, Method::HEAD).unwrap();
        assert_eq!((method, body), (Method::HEAD, false));
        let (_, method, body) = to("//b.example/", 302, Method::PUT).unwrap();
        assert_eq!((method, body), (Method::PUT, true));
        let e = to("http://[::1", 302, Method::GET).unwrap_err();
        assert!(e.starts_with("the redirect's Location"), "{e}");
    }

    #[tokio::test]
    async fn credentials_in_urls_never_reach_a_message_or_the_emitted_url() {
        let addr = server().await;
        let page = fetch(
            json!({}),
            value::string(format!("http://user:hunter2@{addr}/text")),
        )
        .await
        .unwrap();
        assert_eq!(page["url"], format!("http://***@{addr}/text"));
        let e = fetch(
            json!({}),
            value::string(format!("http://user:hunter2@{addr}/missing?token=t0k")),
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.message(),
            format!("GET http://***@{addr}/missing?token=***: 404 Not Found")
        );
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = fetch(
            json!({}),
            value::string(format!("http://user:hunter2@{closed}/x")),
        )
        .await
        .unwrap_err();
        assert!(!e.message().contains("hunter2"), "{e}");
        assert!(
            e.message()
                .starts_with(&format!("GET http://***@{closed}/x: cannot connect")),
            "{e}"
        );
    }

    #[test]
    fn statuses_sort_into_retryable_permanent_and_fine() {
        let none = HeaderMap::new();
        let max = DEFAULT_MAX_RETRY_AFTER;
        let error =
            |code: u16| status_error("GET u", StatusCode::from_u16(code).unwrap(), &none, max);
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
        let at = SystemTime::now() + Duration::from_secs(240);
        later.insert(
            header::RETRY_AFTER,
            httpdate::fmt_http_date(at).parse().unwrap(),
        );
        let e = status_error("GET u", StatusCode::SERVICE_UNAVAILABLE, &later, max).unwrap();
        let wait = e.retry_after().expect("a date is a wait");
        assert!(wait > Duration::from_secs(200) && wait <= Duration::from_secs(240));
        // A date decades away, and more seconds than a u64 holds: capped.
        for far in [
            httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(31 * 365 * 86_400)),
            "99999999999999999999999".to_string(),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::RETRY_AFTER, far.parse().unwrap());
            let e = status_error("GET u", StatusCode::TOO_MANY_REQUESTS, &headers, max).unwrap();
            assert_eq!(e.retry_after(), Some(max), "{far}");
        }
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
        assert_eq!(retry_after("", now), None);
    }

    #[test]
    fn defaults_are_get_the_item_as_url_and_text_within_bounds() {
        let options: HttpOptions = serde_json::from_value(json!({})).unwrap();
        assert_eq!(options.url, ".");
        assert_eq!(options.method, "GET");
        assert_eq!(options.read_as, BodyAs::Text);
        assert!(options.body.is_none() && options.headers.is_empty());
        assert_eq!(options.max_body, "64MiB");
        assert_eq!(parse_size(&options.max_body), Ok(64 << 20));
        assert_eq!(options.max_redirects, 10);
        assert_eq!(options.invalid_utf8, InvalidUtf8::Error);
        assert!(options.request_timeout.is_none() && options.max_retry_after.is_none());
    }

    #[test]
    fn sizes_read_like_queue_bytes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("512KB"), Ok(512_000));
        assert_eq!(parse_size("1.5 GiB"), Ok(3 << 29));
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
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
        assert_eq!(key(json!({"max_body": "big"})), "max_body");
        assert_eq!(key(json!({"request_timeout": "0s"})), "request_timeout");
        assert_eq!(key(json!({"connect_timeout": "0s"})), "connect_timeout");
        let e = serde_json::from_value::<HttpOptions>(json!({"as": "xml"})).unwrap_err();
        assert!(e.to_string().contains("unknown variant `xml`"), "{e}");
        let e = serde_json::from_value::<HttpOptions>(json!({"invalid_utf8": "skip"})).unwrap_err();
        assert!(e.to_string().contains("unknown variant `skip`"), "{e}");
    }

    #[test]
    fn a_bad_header_value_is_not_quoted_back() {
        let e = build(json!({"headers": {"x-a": "s3cret\n"}}))
            .err()
            .unwrap();
        assert!(!e.message.contains("s3cret"), "{e}");
    }
}
