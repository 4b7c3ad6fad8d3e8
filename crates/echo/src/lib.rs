//! The built-in echo upstream: an httpbin work-alike served in-process.
//!
//! Without `--upstream`, the proxy forwards to this server, so that
//! `meshguard proxy --policies examples/...` is a complete demo on a fresh machine and tests can
//! see exactly what the upstream was sent. `meshguard echo` runs it on its own.
//!
//! # What it owns
//!
//! * [`handle`]: answers one request. Routes (on the path, query excluded):
//!   * `/headers` → `headers`, `method`, `path`;
//!   * `/get` → `args`, `headers`, `method`, `origin`, `path`, `url`;
//!   * `/ip` → `origin`, `headers`, `method`, `path`;
//!   * `/status/{code}` → that status (`100..=599`; anything else after `/status/` is a `400`
//!     with a short text body), with the `/anything` document as body, except for statuses that
//!     must not have one (1xx, 204, 304), which get an empty body;
//!   * `/anything`, `/anything/...` and **every other path** → `args`, `data`, `headers`, `json`,
//!     `method`, `origin`, `path`, `url`, like httpbin's `/anything`.
//!
//!   Any method is accepted on every route. Every JSON answer holds `method`, `path` (as
//!   received, query included) and a `headers` object with every header the upstream received:
//!   names are the lowercase names as received; the values of a header that was sent several
//!   times are joined with `","` in arrival order (httpbin style), so `a: 1` and `a: 2` show as
//!   `"a": "1,2"`. Values that are not UTF-8 are shown lossily. HTTP/2 pseudo-headers are not
//!   headers: `:authority` shows in `url`, not in `headers`.
//!
//!   `args` is the decoded query (`+` is a space, `%XX` escapes): a key given once maps to a
//!   string, a key given several times to an array of strings (`?a=1&a=2&b=x` →
//!   `{"a": ["1", "2"], "b": "x"}`). `data` is the request body as UTF-8 text (lossy), `json` the
//!   body parsed as JSON, or `null` when it is not JSON. `origin` is the peer's IP address (not
//!   `x-forwarded-for`). `url` is the absolute URL: the request target when it is absolute (HTTP/2
//!   and absolute-form), else `http://` + `host` header + path.
//!
//!   Responses are pretty-printed JSON with a trailing newline, `content-type: application/json`,
//!   `access-control-allow-origin: *` and `access-control-allow-credentials: true`. A `HEAD`
//!   request gets the same status and headers (its `content-length` is the length the body would
//!   have had) and no body. Request bodies are read up to [`MAX_BODY`] bytes; a larger body is
//!   answered `413` with a text body and is never buffered past the cap (up to another MiB of it
//!   is read and dropped so that HTTP/2 clients see the answer rather than a stream reset);
//!   a body that fails to arrive is `400`.
//! * [`serve`]: serves [`handle`] on a listener, HTTP/1.1 and HTTP/2 with prior knowledge on the
//!   same port, one tokio task per connection, with graceful shutdown bounded by
//!   [`SHUTDOWN_GRACE`].
//!
//! # What it does not do
//!
//! No TLS, no policy enforcement, no forwarding, no httpbin endpoints beyond the ones above (no
//! `form`/`files` parsing, no compression, no redirects, no delays, no weighted `/status/a,b`),
//! no `x-forwarded-for` interpretation. hyper cannot send a 1xx status as a final response:
//! [`handle`] returns the 1xx status (with no body), but [`serve`] answers `/status/1xx` with a
//! `501` and a text body saying so.
#![forbid(unsafe_code)]
// No panics on the request path, as in the proxy (docs/architecture.md, Panics).
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]
#![cfg_attr(not(test), deny(clippy::string_slice))]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The largest request body the echo server reads (1 MiB); beyond it the answer is `413`.
pub const MAX_BODY: usize = 1024 * 1024;

/// How much of an oversize body is still read (and dropped) before answering `413`, so that
/// the client sees the answer instead of a reset (see [`read_body`]).
const OVERSIZE_DRAIN: usize = 1024 * 1024;

/// How long [`serve`] lets in-flight connections finish after shutdown before aborting them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Back-off after an accept error that is not about one connection (e.g. out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Answers one request; `peer` is the client address (used for `origin`).
pub async fn handle<B>(req: Request<B>, peer: SocketAddr) -> Response<Full<Bytes>>
where
    B: Body + Send,
    B::Data: Send,
    B::Error: std::fmt::Display,
{
    let (parts, body) = req.into_parts();
    let head = parts.method == Method::HEAD;

    let body = match read_body(body, MAX_BODY, OVERSIZE_DRAIN).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return text_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body larger than {MAX_BODY} bytes\n"),
                head,
            );
        }
        Err(BodyError::Read(e)) => {
            tracing::debug!(error = %e, "echo: reading the request body failed");
            return text_response(
                StatusCode::BAD_REQUEST,
                "could not read the request body\n",
                head,
            );
        }
    };

    let route_path = parts.uri.path();
    let info = RequestInfo {
        method: parts.method.as_str(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.to_string(), |pq| pq.as_str().to_owned()),
        headers: &parts.headers,
        uri: &parts.uri,
        peer,
        body: &body,
    };

    let (status, doc) = match route_path {
        "/headers" => (StatusCode::OK, info.headers_doc()),
        "/get" => (StatusCode::OK, info.get_doc()),
        "/ip" => (StatusCode::OK, info.ip_doc()),
        _ => match route_path.strip_prefix("/status/") {
            Some(code) => match parse_status(code) {
                Some(status) => (status, info.anything_doc()),
                None => {
                    return text_response(
                        StatusCode::BAD_REQUEST,
                        "invalid status code: expected /status/{code} with a code in 100..=599\n",
                        head,
                    );
                }
            },
            None => (StatusCode::OK, info.anything_doc()),
        },
    };

    if must_not_have_body(status) {
        return respond(status, "application/json", Bytes::new(), false);
    }
    match serde_json::to_vec_pretty(&doc) {
        Ok(mut json) => {
            json.push(b'\n');
            respond(status, "application/json", Bytes::from(json), head)
        }
        Err(e) => {
            tracing::debug!(error = %e, "echo: serializing the answer failed");
            text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not serialize the answer\n",
                head,
            )
        }
    }
}

/// Serves the echo upstream on `listener` (HTTP/1.1 and HTTP/2 prior-knowledge on the same port,
/// via hyper_util::server::conn::auto::Builder with TokioExecutor) until `shutdown` resolves;
/// then stops accepting and lets in-flight connections finish (graceful, bounded by 5 s).
///
/// Each accepted connection is served on its own tokio task; connection errors are logged at
/// debug level and never end the server. Accept errors are logged and retried (after a short
/// back-off when they are not about a single connection), so today this only returns `Ok(())`;
/// the `io::Result` leaves room for listener errors that should end it.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The timer makes hyper's default HTTP/1 header read timeout (30 s) effective.
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);

    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, error = %e, "echo: could not set TCP_NODELAY");
                    }
                    connections.spawn(serve_connection(
                        Arc::clone(&builder),
                        stream,
                        peer,
                        stop_rx.clone(),
                    ));
                }
                Err(e) if is_connection_error(&e) => {
                    tracing::debug!(error = %e, "echo: accept failed for one connection");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "echo: accept failed; retrying");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "echo: connection task failed");
                }
            }
        }
    }

    drop(listener);
    // Receivers see the change even if some already ended; an error means none is left.
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            remaining = connections.len(),
            "echo: connections still open after the shutdown grace period; aborting them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Serves one connection until it ends; on shutdown, asks it to finish gracefully.
async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let service =
        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| async move {
            let head = req.method() == Method::HEAD;
            let response = handle(req, peer).await;
            Ok::<_, Infallible>(if response.status().is_informational() {
                // hyper cannot send a 1xx as the final answer (HTTP/1.1 turns it into a bare 500,
                // 101 into a dead upgrade, HTTP/2 into a stream error): say so instead.
                text_response(
                    StatusCode::NOT_IMPLEMENTED,
                    "a 1xx status cannot be sent as a final response\n",
                    head,
                )
            } else {
                response
            })
        });
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "echo: connection error");
            }
            return;
        }
        // An error means the server is gone: shut down as well.
        _ = stop.wait_for(|stopped| *stopped) => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "echo: connection error during shutdown");
    }
}

/// Accept errors that concern one connection only: retry at once.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::Interrupted
            | std::io::ErrorKind::WouldBlock
    )
}

/// Why a request body could not be read.
enum BodyError {
    /// Larger than the cap.
    TooLarge,
    /// The body stream failed; the text of its error.
    Read(String),
}

/// Reads `body` into memory up to `cap` bytes; a larger body is [`BodyError::TooLarge`].
///
/// Past the cap nothing more is kept, but up to `drain` more bytes are read and dropped so that
/// the request ends cleanly and the client sees the `413`: an HTTP/2 stream whose body is left
/// unread is reset, which clients such as curl report as an error instead of the answer. A body
/// larger still (or announced larger by its length) is cut off.
async fn read_body<B>(body: B, cap: usize, drain: usize) -> Result<Bytes, BodyError>
where
    B: Body + Send,
    B::Data: Send,
    B::Error: std::fmt::Display,
{
    use bytes::{Buf, BufMut};

    let limit = cap.saturating_add(drain);
    if body.size_hint().lower() > u64::try_from(limit).unwrap_or(u64::MAX) {
        return Err(BodyError::TooLarge);
    }
    let mut body = pin!(body);
    let mut buf = BytesMut::new();
    let mut seen: usize = 0;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(_) if seen > cap => return Err(BodyError::TooLarge),
            Err(e) => return Err(BodyError::Read(e.to_string())),
        };
        // Trailers are ignored.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.remaining());
        if seen > limit {
            return Err(BodyError::TooLarge);
        }
        if seen > cap {
            buf = BytesMut::new();
        } else {
            buf.put(data);
        }
    }
    if seen > cap {
        return Err(BodyError::TooLarge);
    }
    Ok(buf.freeze())
}

/// What the JSON documents are built from.
struct RequestInfo<'a> {
    method: &'a str,
    path: String,
    headers: &'a HeaderMap,
    uri: &'a http::Uri,
    peer: SocketAddr,
    body: &'a Bytes,
}

impl RequestInfo<'_> {
    /// `method`, `path`, `headers`: in every answer.
    fn base(&self) -> Map<String, Value> {
        let mut doc = Map::new();
        doc.insert("method".into(), Value::String(self.method.to_owned()));
        doc.insert("path".into(), Value::String(self.path.clone()));
        doc.insert("headers".into(), headers_json(self.headers));
        doc
    }

    fn origin(&self) -> Value {
        Value::String(self.peer.ip().to_string())
    }

    fn url(&self) -> Value {
        if self.uri.scheme().is_some() && self.uri.authority().is_some() {
            return Value::String(self.uri.to_string());
        }
        let host = self
            .headers
            .get(header::HOST)
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
        Value::String(match host {
            Some(host) => format!("http://{host}{}", self.path),
            None => self.path.clone(),
        })
    }

    fn args(&self) -> Value {
        query_args(self.uri.query().unwrap_or(""))
    }

    fn headers_doc(&self) -> Value {
        Value::Object(self.base())
    }

    fn ip_doc(&self) -> Value {
        let mut doc = self.base();
        doc.insert("origin".into(), self.origin());
        Value::Object(doc)
    }

    fn get_doc(&self) -> Value {
        let mut doc = self.base();
        doc.insert("args".into(), self.args());
        doc.insert("origin".into(), self.origin());
        doc.insert("url".into(), self.url());
        Value::Object(doc)
    }

    fn anything_doc(&self) -> Value {
        let mut doc = self.base();
        doc.insert("args".into(), self.args());
        doc.insert(
            "data".into(),
            Value::String(String::from_utf8_lossy(self.body).into_owned()),
        );
        doc.insert(
            "json".into(),
            serde_json::from_slice::<Value>(self.body).unwrap_or(Value::Null),
        );
        doc.insert("origin".into(), self.origin());
        doc.insert("url".into(), self.url());
        Value::Object(doc)
    }
}

/// Every header as received: lowercase names, repeated values joined with `","`.
fn headers_json(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for name in headers.keys() {
        let joined = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .collect::<Vec<_>>()
            .join(",");
        out.insert(name.as_str().to_owned(), Value::String(joined));
    }
    Value::Object(out)
}

/// The query as httpbin's `args`: a key seen once → string, several times → array of strings.
fn query_args(query: &str) -> Value {
    let mut args: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        args.entry(form_decode(key))
            .or_default()
            .push(form_decode(value));
    }
    Value::Object(
        args.into_iter()
            .map(|(key, mut values)| {
                let value = if values.len() == 1 {
                    Value::String(values.pop().unwrap_or_default())
                } else {
                    Value::Array(values.into_iter().map(Value::String).collect())
                };
                (key, value)
            })
            .collect(),
    )
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte (a `%` not
/// followed by two hex digits stays as is); the result is UTF-8, lossily.
fn form_decode(s: &str) -> String {
    let mut rest = s.as_bytes();
    let mut out = Vec::with_capacity(rest.len());
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match (b, tail) {
            (b'+', _) => out.push(b' '),
            (b'%', [h, l, after @ ..]) => match hex_value(*h).zip(hex_value(*l)) {
                Some((h, l)) => {
                    out.push(h << 4 | l);
                    rest = after;
                }
                None => out.push(b'%'),
            },
            (b, _) => out.push(b),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A status code for `/status/{code}`: ASCII digits only, `100..=599`.
fn parse_status(code: &str) -> Option<StatusCode> {
    if code.is_empty() || code.len() > 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u16 = code.parse().ok()?;
    if !(100..=599).contains(&n) {
        return None;
    }
    StatusCode::from_u16(n).ok()
}

/// 1xx, 204 and 304 answers never carry a body.
fn must_not_have_body(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

fn text_response(status: StatusCode, text: &str, head: bool) -> Response<Full<Bytes>> {
    respond(
        status,
        "text/plain; charset=utf-8",
        Bytes::copy_from_slice(text.as_bytes()),
        head,
    )
}

/// Builds the response; for `HEAD`, drops the body but keeps its `content-length`.
fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
    head: bool,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    if head {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    } else {
        *response.body_mut() = Full::new(body);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 7], 40000))
    }

    fn request(method: &str, uri: &str) -> http::request::Builder {
        Request::builder().method(method).uri(uri)
    }

    async fn call(req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Bytes) {
        let response = handle(req, peer()).await;
        let (parts, body) = response.into_parts();
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(never) => match never {},
        };
        (parts.status, parts.headers, body)
    }

    async fn call_json(req: Request<Full<Bytes>>) -> (StatusCode, Value) {
        let (status, headers, body) = call(req).await;
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert!(
            body.ends_with(b"}\n"),
            "pretty JSON with a trailing newline"
        );
        let json = serde_json::from_slice(&body).expect("JSON body");
        (status, json)
    }

    fn empty(builder: http::request::Builder) -> Request<Full<Bytes>> {
        builder.body(Full::new(Bytes::new())).expect("request")
    }

    fn keys(doc: &Value) -> Vec<&str> {
        let mut keys: Vec<&str> = doc
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        keys
    }

    #[tokio::test]
    async fn headers_endpoint() {
        let req = empty(
            request("GET", "/headers?x=1")
                .header("Host", "example.test")
                .header("X-Custom", "v"),
        );
        let (status, doc) = call_json(req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(keys(&doc), ["headers", "method", "path"]);
        assert_eq!(doc["method"], "GET");
        assert_eq!(doc["path"], "/headers?x=1");
        assert_eq!(doc["headers"]["host"], "example.test");
        assert_eq!(doc["headers"]["x-custom"], "v");
    }

    #[tokio::test]
    async fn get_endpoint_and_args() {
        let req = empty(request("GET", "/get?a=1&a=2&b=x").header("host", "h.test"));
        let (status, doc) = call_json(req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            keys(&doc),
            ["args", "headers", "method", "origin", "path", "url"]
        );
        assert_eq!(doc["args"], serde_json::json!({"a": ["1", "2"], "b": "x"}));
        assert_eq!(doc["origin"], "192.0.2.7");
        assert_eq!(doc["url"], "http://h.test/get?a=1&a=2&b=x");
        assert_eq!(doc["path"], "/get?a=1&a=2&b=x");
    }

    #[test]
    fn args_decoding() {
        assert_eq!(
            query_args("q=a+b%20c&empty=&flag&&%E2%82%AC=%zz%4"),
            serde_json::json!({"q": "a b c", "empty": "", "flag": "", "€": "%zz%4"})
        );
        assert_eq!(query_args(""), serde_json::json!({}));
        assert_eq!(form_decode("%ff"), "\u{fffd}");
    }

    #[tokio::test]
    async fn absolute_uri_is_the_url() {
        let req = empty(request("GET", "https://api.test:8443/get?k=v"));
        let (_, doc) = call_json(req).await;
        assert_eq!(doc["url"], "https://api.test:8443/get?k=v");
        assert_eq!(doc["path"], "/get?k=v");
    }

    #[tokio::test]
    async fn ip_endpoint() {
        let (status, doc) = call_json(empty(request("GET", "/ip"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(keys(&doc), ["headers", "method", "origin", "path"]);
        assert_eq!(doc["origin"], "192.0.2.7");
    }

    #[tokio::test]
    async fn anything_endpoint_with_json_body() {
        let req = request("POST", "/anything/deep/path?x=y")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(br#"{"k": [1, 2]}"#)))
            .expect("request");
        let (status, doc) = call_json(req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            keys(&doc),
            [
                "args", "data", "headers", "json", "method", "origin", "path", "url"
            ]
        );
        assert_eq!(doc["method"], "POST");
        assert_eq!(doc["path"], "/anything/deep/path?x=y");
        assert_eq!(doc["args"], serde_json::json!({"x": "y"}));
        assert_eq!(doc["data"], r#"{"k": [1, 2]}"#);
        assert_eq!(doc["json"], serde_json::json!({"k": [1, 2]}));
    }

    #[tokio::test]
    async fn non_json_and_non_utf8_bodies() {
        let req = request("PUT", "/anything")
            .body(Full::new(Bytes::from_static(b"hi \xff there")))
            .expect("request");
        let (_, doc) = call_json(req).await;
        assert_eq!(doc["data"], "hi \u{fffd} there");
        assert_eq!(doc["json"], Value::Null);
    }

    #[tokio::test]
    async fn unknown_paths_answer_like_anything() {
        for path in ["/", "/unknown/x", "/headers/", "/status", "/anything"] {
            let (status, doc) = call_json(empty(request("DELETE", path))).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(
                keys(&doc),
                [
                    "args", "data", "headers", "json", "method", "origin", "path", "url"
                ],
                "{path}"
            );
            assert_eq!(doc["method"], "DELETE");
            assert_eq!(doc["path"], path);
        }
    }

    #[tokio::test]
    async fn repeated_headers_are_joined_with_commas() {
        let req = empty(
            request("GET", "/headers")
                .header("x-multi", "1")
                .header("X-Multi", "2")
                .header("x-multi", "three, four"),
        );
        let (_, doc) = call_json(req).await;
        assert_eq!(doc["headers"]["x-multi"], "1,2,three, four");
    }

    #[tokio::test]
    async fn non_utf8_header_values_are_shown_lossily() {
        let value = HeaderValue::from_bytes(b"a\xe9b").expect("obs-text value");
        let req = empty(request("GET", "/headers").header("x-bin", value));
        let (_, doc) = call_json(req).await;
        assert_eq!(doc["headers"]["x-bin"], "a\u{fffd}b");
    }

    #[tokio::test]
    async fn status_codes() {
        for code in [200u16, 201, 401, 403, 418, 500, 503, 599] {
            let (status, doc) =
                call_json(empty(request("GET", &format!("/status/{code}?q=1")))).await;
            assert_eq!(status.as_u16(), code);
            assert_eq!(doc["path"], format!("/status/{code}?q=1"));
            assert_eq!(doc["args"]["q"], "1");
            assert!(doc["headers"].is_object());
        }
        for code in [100u16, 101, 204, 304] {
            let (status, headers, body) =
                call(empty(request("GET", &format!("/status/{code}")))).await;
            assert_eq!(status.as_u16(), code);
            assert!(body.is_empty(), "{code} has no body");
            assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        }
        for bad in [
            "99",
            "600",
            "1000",
            "abc",
            "",
            "-1",
            "+200",
            "200/x",
            "2000000000000",
        ] {
            let (status, headers, body) =
                call(empty(request("GET", &format!("/status/{bad}")))).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(
                headers[header::CONTENT_TYPE]
                    .to_str()
                    .is_ok_and(|ct| ct.starts_with("text/plain"))
            );
            assert!(!body.is_empty());
        }
    }

    #[tokio::test]
    async fn common_response_headers() {
        let (_, headers, _) = call(empty(request("GET", "/get"))).await;
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    }

    #[tokio::test]
    async fn head_has_headers_but_no_body() {
        let (_, _, get_body) = call(empty(request("GET", "/anything"))).await;
        let (status, headers, body) = call(empty(request("HEAD", "/anything"))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.is_empty());
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        // Same length as GET's body, except for the method name ("GET" vs "HEAD").
        assert_eq!(
            headers[header::CONTENT_LENGTH].to_str().ok(),
            Some((get_body.len() + 1).to_string().as_str())
        );
        let (status, _, body) = call(empty(request("HEAD", "/status/404"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn oversize_body_is_413() {
        let req = request("POST", "/anything")
            .body(Full::new(Bytes::from(vec![b'x'; MAX_BODY + 1])))
            .expect("request");
        let (status, headers, body) = call(req).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .is_ok_and(|ct| ct.starts_with("text/plain"))
        );
        assert!(!body.is_empty());

        // Exactly the cap is fine.
        let req = request("POST", "/anything")
            .body(Full::new(Bytes::from(vec![b'x'; MAX_BODY])))
            .expect("request");
        let (status, _) = call_json(req).await;
        assert_eq!(status, StatusCode::OK);
    }

    /// A streamed body without a size hint is cut off at the cap, not buffered to its end.
    #[tokio::test]
    async fn oversize_streamed_body_is_413() {
        let chunk = Bytes::from(vec![b'y'; 64 * 1024]);
        // Endless: buffering it all would never finish.
        let frames = std::iter::repeat_with(move || Ok(chunk.clone()));
        let req = request("POST", "/anything")
            .body(Frames(frames))
            .expect("request");
        let response = handle(req, peer()).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    /// Just past the cap, the rest of the body is still read (and dropped), so the request ends
    /// cleanly; far past it, reading stops.
    #[tokio::test]
    async fn oversize_body_is_drained_within_bounds() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        for (chunks, read_all) in [(24, true), (64, false)] {
            let polled = Arc::new(AtomicUsize::new(0));
            let counter = Arc::clone(&polled);
            let chunk = Bytes::from(vec![b'y'; 64 * 1024]);
            let frames = (0..chunks).map(move |_| {
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(chunk.clone())
            });
            let req = request("POST", "/anything")
                .body(Frames(frames))
                .expect("request");
            let response = handle(req, peer()).await;
            assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
            let polled = polled.load(Ordering::Relaxed);
            assert_eq!(polled == chunks, read_all, "{chunks} chunks, {polled} read");
        }
    }

    #[tokio::test]
    async fn body_errors_are_400() {
        let frames = [Ok(Bytes::from_static(b"abc")), Err("connection reset")];
        let req = request("POST", "/anything")
            .body(Frames(frames.into_iter()))
            .expect("request");
        let response = handle(req, peer()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }

    /// A body streamed from an iterator of chunks, with no size hint.
    struct Frames<I>(I);

    impl<I> Body for Frames<I>
    where
        I: Iterator<Item = Result<Bytes, &'static str>> + Unpin,
    {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.next().map(|r| r.map(hyper::body::Frame::data)))
        }
    }
}
