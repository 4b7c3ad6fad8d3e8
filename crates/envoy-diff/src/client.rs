//! Sends one [`Request`] to a proxy and reads the answer, the same way for both proxies.
//!
//! HTTP/1.1 is written byte for byte on a TCP socket bound to the request's source address,
//! with `connection: close`, and read until the proxy closes: no client library normalizes the
//! target, merges headers or refuses a strange method. HTTP/2 goes through hyper's client with
//! prior knowledge. A connection closed or reset without an answer is an answer too
//! ([`Answer::NoResponse`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::scenario::{Protocol, Request};

/// How long one exchange may take before it is reported as [`Answer::NoResponse`].
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the client saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Response(Response),
    /// No parseable response: what happened instead (`closed`, `reset`, `timeout`, ...).
    NoResponse(String),
}

/// A response: status, header lines (names lowercased, in order) and the decoded body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// gRPC trailers (HTTP/2) or nothing.
    pub trailers: Vec<(String, String)>,
}

impl Response {
    /// The first value of `name` (lowercase), in the headers then in the trailers.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .chain(self.trailers.iter())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `req` to `proxy` and returns what came back.
pub async fn send(proxy: SocketAddr, req: &Request) -> Answer {
    let result = tokio::time::timeout(EXCHANGE_TIMEOUT, async {
        let stream = connect(proxy, req).await?;
        match req.protocol {
            Protocol::Http1 => http1(stream, req).await,
            Protocol::H2c => h2c(stream, req).await,
        }
    })
    .await;
    match result {
        Ok(Ok(r)) => Answer::Response(r),
        Ok(Err(e)) => Answer::NoResponse(e),
        Err(_) => Answer::NoResponse("timeout".into()),
    }
}

async fn connect(proxy: SocketAddr, req: &Request) -> Result<TcpStream, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(SocketAddr::new(IpAddr::V4(req.source_ip), 0))
        .map_err(|e| format!("bind {}: {e}", req.source_ip))?;
    socket
        .connect(proxy)
        .await
        .map_err(|e| format!("connect {proxy}: {e}"))
}

/// The request as HTTP/1.1 bytes.
pub fn http1_bytes(req: &Request) -> Vec<u8> {
    let mut out = format!("{} {} HTTP/1.1\r\n", req.method, req.target).into_bytes();
    if let Some(host) = &req.host {
        out.extend_from_slice(format!("host: {host}\r\n").as_bytes());
    }
    for (name, value) in &req.headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !req.body.is_empty() {
        out.extend_from_slice(format!("content-length: {}\r\n", req.body.len()).as_bytes());
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(req.body.as_bytes());
    out
}

async fn http1(mut stream: TcpStream, req: &Request) -> Result<Response, String> {
    stream
        .write_all(&http1_bytes(req))
        .await
        .map_err(|e| format!("write: {e}"))?;
    let head = req.method.eq_ignore_ascii_case("HEAD");
    let mut raw = Vec::new();
    // Read until the response is complete (Envoy keeps a connection it is closing open for
    // up to a second, waiting for the client to close first) or the proxy closes; a reset
    // after a complete response still counts as that response.
    let read_error = loop {
        let mut buf = [0u8; 16 * 1024];
        match stream.read(&mut buf).await {
            Ok(0) => break None,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if is_complete(&raw, head) {
                    break None;
                }
            }
            Err(e) => break Some(e),
        }
    };
    match parse_http1(&raw, head) {
        Some(r) => Ok(r),
        None => Err(match read_error {
            Some(e) if e.kind() == std::io::ErrorKind::ConnectionReset => "reset".into(),
            Some(e) => format!("read: {e}"),
            None if raw.is_empty() => "closed".into(),
            None => format!("unparseable response: {:?}", String::from_utf8_lossy(&raw)),
        }),
    }
}

/// Parses the final HTTP/1.x response (`Content-Length`, chunked, or up to the close),
/// after any interim `1xx` responses (`100 Continue`), which are skipped.
pub fn parse_http1(mut raw: &[u8], head_request: bool) -> Option<Response> {
    while raw.starts_with(b"HTTP/1.1 1") && !raw.starts_with(b"HTTP/1.1 101") {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        raw = &raw[end + 4..];
    }
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    let mut headers = Vec::new();
    for line in lines {
        let (n, v) = line.split_once(':')?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let rest = &raw[end + 4..];
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let body = if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().ok()?;
        rest.get(..len)?.to_vec()
    } else {
        rest.to_vec()
    };
    Some(Response {
        status,
        headers,
        body,
        trailers: Vec::new(),
    })
}

/// A whole final response is in `raw`: its head, and all of a body whose end is known from
/// `content-length` or the last chunk. A body delimited by the close is never complete.
fn is_complete(mut raw: &[u8], head_request: bool) -> bool {
    while raw.starts_with(b"HTTP/1.1 1") && !raw.starts_with(b"HTTP/1.1 101") {
        match raw.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(end) => raw = &raw[end + 4..],
            None => return false,
        }
    }
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if head_request || status == 204 || status == 304 {
        return true;
    }
    let field = |name: &str| {
        head.split("\r\n")
            .skip(1)
            .find_map(|l| l.split_once(':').filter(|(n, _)| n.trim() == name))
            .map(|(_, v)| v.trim().to_string())
    };
    if field("transfer-encoding").is_some_and(|v| v == "chunked") {
        return dechunk(body).is_some();
    }
    match field("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(len) => body.len() >= len,
        None => false,
    }
}

fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

async fn h2c(stream: TcpStream, req: &Request) -> Result<Response, String> {
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
    tokio::spawn(conn);
    let authority = req.host.clone().unwrap_or_default();
    let uri = if authority.is_empty() {
        req.target.clone()
    } else {
        format!("http://{authority}{}", req.target)
    };
    let mut builder = http::Request::builder()
        .method(req.method.as_str())
        .uri(uri);
    for (n, v) in &req.headers {
        builder = builder.header(n.as_str(), v.as_str());
    }
    let request = builder
        .body(Full::new(Bytes::from(req.body.clone())))
        .map_err(|e| format!("cannot build the HTTP/2 request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("h2: {e}"))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let collected = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("h2 body: {e}"))?;
    let trailers = collected
        .trailers()
        .map(|t| {
            t.iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Response {
        status,
        headers,
        body: collected.to_bytes().to_vec(),
        trailers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_chunked_and_close_delimited() {
        let r = parse_http1(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer x\r\ncontent-length: 14\r\n\r\nJwt is missingEXTRA", false).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (401, &b"Jwt is missing"[..]));
        assert_eq!(r.header("www-authenticate"), Some("Bearer x"));
        let r = parse_http1(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", false).unwrap();
        assert_eq!(r.body, b"abcde");
        let r = parse_http1(b"HTTP/1.1 200 OK\r\n\r\nall of it", false).unwrap();
        assert_eq!(r.body, b"all of it");
        let r = parse_http1(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nall of it",
            false,
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"all of it");
        assert!(parse_http1(b"garbage", false).is_none());
        assert!(is_complete(
            b"HTTP/1.1 401 X\r\ncontent-length: 3\r\n\r\nabc",
            false
        ));
        assert!(!is_complete(
            b"HTTP/1.1 401 X\r\ncontent-length: 3\r\n\r\nab",
            false
        ));
        assert!(is_complete(
            b"HTTP/1.1 200 X\r\ncontent-length: 3\r\n\r\n",
            true
        ));
        assert!(!is_complete(
            b"HTTP/1.1 200 X\r\n\r\nuntil the close",
            false
        ));
        assert!(is_complete(
            b"HTTP/1.1 100 C\r\n\r\nHTTP/1.1 204 N\r\n\r\n",
            false
        ));
    }

    #[test]
    fn http1_bytes_keep_the_target_and_header_order() {
        let req = Request::get("x", "/a/../b?q=%2F#f")
            .header("x-a", "1")
            .header("X-A", "2");
        let text = String::from_utf8(http1_bytes(&req)).unwrap();
        assert_eq!(
            text,
            "GET /a/../b?q=%2F#f HTTP/1.1\r\nhost: httpbin.foo:8000\r\nx-a: 1\r\nX-A: 2\r\nconnection: close\r\n\r\n"
        );
    }
}
