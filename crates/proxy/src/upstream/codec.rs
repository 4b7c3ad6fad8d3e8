//! HTTP/1.1 framing toward the upstream, as pure functions over bytes: the request head
//! written, the response head parsed (with the length of the body that follows), and chunked
//! bodies decoded.
//!
//! Owns: how a request's body is framed (the rules hyper's client applies, so that requests
//! leave as they did before this codec), which response heads are refused (malformed,
//! too large, framed both by length and by chunking, a `101` on the pool's path), how long a
//! response body is (RFC 9112 §6.3), whether the connection may be reused, and the chunked
//! decoder with its limits. Does no I/O: [`super::h1`] reads and writes, and decides about
//! the connection.
//!
//! Parsing is `httparse`'s, the parser hyper uses, with its default (strict) settings.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode, Version};

/// Most header fields in a response head (hyper's default).
pub(super) const MAX_HEADERS: usize = 100;
/// Longest response head, and longest trailer section (hyper's client default buffer limit).
pub(super) const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;

/// How the request body is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Encoding {
    /// Exactly this many bytes (a `content-length` was sent).
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
}

/// The request head for `parts`, and how its body goes (`None`: no body is sent).
/// `has_body`: the body has something to give; `exact`: its length when known in advance.
///
/// As hyper's client frames requests: a `content-length` given is kept; a body of known
/// length gets one; a body of unknown length is chunked, except for `GET`, `HEAD` and
/// `CONNECT`, which are sent without one; a `transfer-encoding` given (not forwarded by the
/// handler, which removes it) is made to end in `chunked` and wins over a length.
pub(super) fn request_head(
    parts: &mut Parts,
    has_body: bool,
    exact: Option<u64>,
) -> Result<(Vec<u8>, Option<Encoding>), String> {
    let headers = &mut parts.headers;
    let encoding = if !has_body {
        headers.remove(header::TRANSFER_ENCODING);
        None
    } else if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
        if !is_chunked(headers.get_all(header::TRANSFER_ENCODING).iter()) {
            headers.append(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        Some(Encoding::Chunked)
    } else if headers.contains_key(header::CONTENT_LENGTH) {
        let n = content_length(headers)
            .map_err(|e| format!("the request's content-length is invalid: {e}"))?;
        Some(Encoding::Length(n))
    } else if let Some(n) = exact {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        Some(Encoding::Length(n))
    } else if matches!(parts.method, Method::GET | Method::HEAD | Method::CONNECT) {
        None
    } else {
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        Some(Encoding::Chunked)
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .as_bytes();
    let method = parts.method.as_str().as_bytes();
    let mut size = method.len() + target.len() + 13;
    for (name, value) in headers.iter() {
        size += name.as_str().len() + value.len() + 4;
    }
    let mut head = Vec::with_capacity(size + 2);
    head.extend_from_slice(method);
    head.push(b' ');
    head.extend_from_slice(target);
    head.extend_from_slice(b" HTTP/1.1\r\n");
    write_fields(&mut head, headers);
    head.extend_from_slice(b"\r\n");
    Ok((head, encoding.filter(|e| *e != Encoding::Length(0))))
}

/// `name: value` lines, CRLF-terminated.
fn write_fields(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// One chunk's framing around `len` bytes of data: the size line (the CRLF after the data
/// is [`CHUNK_END`]).
pub(super) fn chunk_size_line(len: usize) -> Bytes {
    Bytes::from(format!("{len:x}\r\n"))
}

/// What follows each chunk's data.
pub(super) const CHUNK_END: &[u8] = b"\r\n";

/// The trailer fields a request may send: those its `trailer` header names, less those that
/// must never be trailers (RFC 9110 §6.5.1; hyper's client list). hyper's client drops every
/// other trailer, and so does this pool: an upstream that merges trailers into the header
/// section must not receive, say, an `authorization` the policies never saw.
pub(super) fn allowed_trailers(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::TRAILER)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
        .filter(|name| {
            !matches!(
                *name,
                header::AUTHORIZATION
                    | header::CACHE_CONTROL
                    | header::CONTENT_ENCODING
                    | header::CONTENT_LENGTH
                    | header::CONTENT_RANGE
                    | header::CONTENT_TYPE
                    | header::HOST
                    | header::MAX_FORWARDS
                    | header::SET_COOKIE
                    | header::TRAILER
                    | header::TRANSFER_ENCODING
                    | header::TE
            )
        })
        .collect()
}

/// `trailers` less the fields not in `allowed`; `None` when nothing is left.
pub(super) fn allowed_only(trailers: HeaderMap, allowed: &[HeaderName]) -> Option<HeaderMap> {
    let mut kept = HeaderMap::new();
    let mut name = None;
    for (n, value) in trailers {
        if n.is_some() {
            name = n;
        }
        if let Some(n) = &name
            && allowed.contains(n)
        {
            kept.append(n.clone(), value);
        }
    }
    (!kept.is_empty()).then_some(kept)
}

/// The end of a chunked body: the last chunk, `trailers` when there are any, the empty line.
pub(super) fn last_chunk(trailers: Option<&HeaderMap>) -> Bytes {
    match trailers {
        None => Bytes::from_static(b"0\r\n\r\n"),
        Some(t) => {
            let mut out = b"0\r\n".to_vec();
            write_fields(&mut out, t);
            out.extend_from_slice(b"\r\n");
            out.into()
        }
    }
}

/// How the response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body (a `HEAD` request, `204`, `304`, or a length of 0).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub(super) struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
}

/// Takes a complete response head from the front of `buf` (skipping interim `1xx` heads);
/// `Ok(None)` while it is incomplete. `head_request`: the request was a `HEAD`.
pub(super) fn response_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<ResponseHead>, String> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut fields);
        let len = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                return Err(format!(
                    "the response head is longer than {MAX_HEAD_BYTES} bytes"
                ));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(format!("invalid response head: {e}")),
        };
        let code = parsed.code.unwrap_or(0);
        let version = if parsed.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let status = StatusCode::from_u16(code).map_err(|e| format!("status {code}: {e}"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err("101 Switching Protocols to a request that asked for no upgrade".into());
        }
        if status.is_informational() {
            // 100 Continue, 102, 103: interim answers, not forwarded (as hyper's client).
            let _ = buf.split_to(len);
            continue;
        }
        // Names and where each value lies, before the head leaves the buffer.
        let base = buf.as_ptr() as usize;
        let mut names = Vec::with_capacity(parsed.headers.len());
        for f in parsed.headers.iter() {
            let name = HeaderName::from_bytes(f.name.as_bytes())
                .map_err(|_| format!("invalid header name {:?}", f.name))?;
            let start = f.value.as_ptr() as usize - base;
            names.push((name, start, start + f.value.len()));
        }
        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(names.len());
        for (name, start, end) in names {
            let value = HeaderValue::from_maybe_shared(head.slice(start..end))
                .map_err(|_| format!("invalid value in header {name}"))?;
            headers.append(name, value);
        }
        let framing = framing(&headers, status, head_request)?;
        let keep_alive = framing != Framing::Close && keeps_alive(&headers, version);
        return Ok(Some(ResponseHead {
            status,
            version,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// RFC 9112 §6.3, for a response.
fn framing(headers: &HeaderMap, status: StatusCode, head_request: bool) -> Result<Framing, String> {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Empty);
    }
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    let length = headers.contains_key(header::CONTENT_LENGTH);
    if chunked && length {
        // A possible smuggling attempt (RFC 9112 §6.3): refused, as Envoy does without
        // `allow_chunked_length`; the connection is not reused.
        return Err("the response has both Content-Length and Transfer-Encoding".into());
    }
    if chunked {
        return Ok(
            if is_chunked(headers.get_all(header::TRANSFER_ENCODING).iter()) {
                Framing::Chunked
            } else {
                Framing::Close
            },
        );
    }
    if length {
        return match content_length(headers) {
            Ok(0) => Ok(Framing::Empty),
            Ok(n) => Ok(Framing::Length(n)),
            Err(e) => Err(format!("invalid content-length in the response: {e}")),
        };
    }
    Ok(Framing::Close)
}

/// Every `content-length` value (comma-separated lists included) is the same number.
fn content_length(headers: &HeaderMap) -> Result<u64, &'static str> {
    let mut found = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let digits = part.trim_ascii();
            if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
                return Err("not a number");
            }
            let n = digits
                .iter()
                .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if found.is_some_and(|f| f != n) {
                return Err("different lengths");
            }
            found = Some(n);
        }
    }
    found.ok_or("empty")
}

/// The last transfer coding is `chunked`.
fn is_chunked<'a>(values: impl DoubleEndedIterator<Item = &'a HeaderValue>) -> bool {
    values
        .last()
        .and_then(|v| v.as_bytes().rsplit(|&b| b == b',').next())
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// HTTP/1.1 keeps the connection unless `connection: close`; HTTP/1.0 only with
/// `connection: keep-alive`.
fn keeps_alive(headers: &HeaderMap, version: Version) -> bool {
    let has = |token: &[u8]| {
        headers.get_all(header::CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
        })
    };
    if has(b"close") {
        return false;
    }
    version == Version::HTTP_11 || has(b"keep-alive")
}

/// A chunked body's decoder.
#[derive(Debug)]
pub(super) enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then the empty line.
    Trailers,
    Done,
}

/// What [`Chunked::decode`] found.
#[derive(Debug)]
pub(super) enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body ended (after its trailers, when there were any).
    End,
    /// `buf` holds no more of the body: read more.
    More,
}

impl Chunked {
    /// Decodes from the front of `buf`, taking what it uses.
    pub(super) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, String> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err("chunk size line too long".into());
                        }
                        return Ok(Decoded::More);
                    };
                    if lf > MAX_CHUNK_LINE {
                        return Err("chunk size line too long".into());
                    }
                    let size = chunk_size(buf.get(..=lf).unwrap_or_default())?;
                    let _ = buf.split_to(lf + 1);
                    *self = if size == 0 {
                        Chunked::Trailers
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::More);
                    }
                    if !buf.starts_with(b"\r\n") {
                        return Err("chunk data not followed by CRLF".into());
                    }
                    let _ = buf.split_to(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        let _ = buf.split_to(2);
                        *self = Chunked::Done;
                        return Ok(Decoded::End);
                    }
                    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(buf, &mut fields) {
                        Ok(httparse::Status::Complete((len, fields))) => {
                            let mut trailers = HeaderMap::with_capacity(fields.len());
                            for f in fields.iter() {
                                let name = HeaderName::from_bytes(f.name.as_bytes())
                                    .map_err(|_| format!("invalid trailer name {:?}", f.name))?;
                                let value = HeaderValue::from_bytes(f.value)
                                    .map_err(|_| format!("invalid value in trailer {name}"))?;
                                trailers.append(name, value);
                            }
                            let _ = buf.split_to(len);
                            *self = Chunked::Done;
                            return Ok(if trailers.is_empty() {
                                Decoded::End
                            } else {
                                Decoded::Trailers(trailers)
                            });
                        }
                        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                            return Err("trailers too long".into());
                        }
                        Ok(httparse::Status::Partial) => return Ok(Decoded::More),
                        Err(e) => return Err(format!("invalid trailers: {e}")),
                    }
                }
                Chunked::Done => return Ok(Decoded::End),
            }
        }
    }
}

/// The size of a chunk-size line (`1a;name=value\r\n`): hex digits, then optional
/// extensions, which are ignored; the line ends with CRLF.
fn chunk_size(line: &[u8]) -> Result<u64, String> {
    let Some(line) = line.strip_suffix(b"\r\n") else {
        return Err("chunk size line not ended by CRLF".into());
    };
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err("chunk size is not a hexadecimal number".into());
    }
    if digits > 16 {
        return Err("chunk size too large".into());
    }
    let (hex, rest) = line.split_at(digits);
    let mut size = 0u64;
    for &d in hex {
        let v = (d as char).to_digit(16).unwrap_or(0);
        size = size << 4 | u64::from(v);
    }
    match rest.trim_ascii_start() {
        [] => {}
        [b';', ext @ ..] if !ext.iter().any(|&b| b != b'\t' && (b < 0x20 || b == 0x7f)) => {}
        _ => return Err("invalid chunk extension".into()),
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<ResponseHead>, String> {
        response_head(&mut BytesMut::from(text), false)
    }

    fn req(method: Method, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri("/p?q=1");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn request_framing_follows_hypers_rules() {
        let text = |h: &Vec<u8>| String::from_utf8(h.clone()).unwrap();
        // No body: no framing headers added.
        let (h, e) = request_head(&mut req(Method::GET, &[("host", "a")]), false, None).unwrap();
        assert_eq!(text(&h), "GET /p?q=1 HTTP/1.1\r\nhost: a\r\n\r\n");
        assert_eq!(e, None);
        // A known length is sent.
        let (h, e) = request_head(&mut req(Method::POST, &[]), true, Some(5)).unwrap();
        assert_eq!(
            text(&h),
            "POST /p?q=1 HTTP/1.1\r\ncontent-length: 5\r\n\r\n"
        );
        assert_eq!(e, Some(Encoding::Length(5)));
        // The client's length wins over the body's.
        let (_, e) = request_head(
            &mut req(Method::PUT, &[("content-length", "7")]),
            true,
            None,
        )
        .unwrap();
        assert_eq!(e, Some(Encoding::Length(7)));
        // Unknown length: chunked, except for GET, HEAD and CONNECT.
        let (h, e) = request_head(&mut req(Method::POST, &[]), true, None).unwrap();
        assert!(text(&h).contains("transfer-encoding: chunked\r\n"));
        assert_eq!(e, Some(Encoding::Chunked));
        let (h, e) = request_head(&mut req(Method::GET, &[]), true, None).unwrap();
        assert!(!text(&h).contains("transfer-encoding"));
        assert_eq!(e, None);
        // A transfer-encoding given ends in chunked and drops a length.
        let (h, e) = request_head(
            &mut req(
                Method::POST,
                &[("transfer-encoding", "gzip"), ("content-length", "3")],
            ),
            true,
            Some(3),
        )
        .unwrap();
        let t = text(&h);
        assert!(
            t.contains("transfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n"),
            "{t}"
        );
        assert!(!t.contains("content-length"), "{t}");
        assert_eq!(e, Some(Encoding::Chunked));
        // An invalid length is refused.
        assert!(
            request_head(
                &mut req(Method::POST, &[("content-length", "1, 2")]),
                true,
                None
            )
            .is_err()
        );
    }

    #[test]
    fn response_heads_and_their_framing() {
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx: y\r\n\r\nok")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.status, h.framing, h.keep_alive),
            (StatusCode::OK, Framing::Length(2), true)
        );
        assert_eq!(h.headers["x"], "y");
        // Interim answers are skipped; the rest stays in the buffer.
        let mut buf = BytesMut::from(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 1\r\n\r\nz",
        );
        let h = response_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::CREATED);
        assert_eq!(&buf[..], b"z");
        // Bodiless by status or method.
        for (text, head_request) in [
            (
                "HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n",
                false,
            ),
            ("HTTP/1.1 304 Not Modified\r\n\r\n", false),
            ("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true),
            ("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", false),
        ] {
            let h = response_head(&mut BytesMut::from(text), head_request)
                .unwrap()
                .unwrap();
            assert_eq!(h.framing, Framing::Empty, "{text}");
        }
        // Chunked only when chunked comes last; otherwise read to the close.
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head("HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        // Equal lengths in a list are one length; different ones are refused.
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\ncontent-length: 3\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(3));
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\r\n folded\r\n\r\n",
            "SMTP ready\r\n\r\n",
        ] {
            assert!(head(bad).is_err(), "{bad}");
        }
        // Incomplete, then too long.
        assert!(head("HTTP/1.1 200 OK\r\nx: y\r\n").unwrap().is_none());
        let long = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_BYTES));
        assert!(head(&long).is_err());
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        assert!(head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")).is_err());
    }

    #[test]
    fn keep_alive_by_version_and_connection_header() {
        let ka = |t: &str| head(t).unwrap().unwrap().keep_alive;
        assert!(ka("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"));
        assert!(!ka(
            "HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n"
        ));
        assert!(!ka("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n"));
        assert!(ka(
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n"
        ));
        assert_eq!(
            head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n")
                .unwrap()
                .unwrap()
                .version,
            Version::HTTP_10
        );
    }

    /// Decodes all of `input`, fed `step` bytes at a time.
    fn dechunk(input: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), String> {
        let mut d = Chunked::Size;
        let mut buf = BytesMut::new();
        let (mut body, mut trailers) = (Vec::new(), None);
        let mut fed = 0;
        loop {
            match d.decode(&mut buf)? {
                Decoded::Data(b) => body.extend_from_slice(&b),
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::End => return Ok((body, trailers)),
                Decoded::More => {
                    if fed == input.len() {
                        return Err("incomplete".into());
                    }
                    let n = step.min(input.len() - fed);
                    buf.extend_from_slice(&input[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_in_any_split() {
        let input = b"5\r\nhello\r\n1A;ext=\"v\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\ngrpc-status: 0\r\n\r\n";
        for step in [1, 2, 3, 7, input.len()] {
            let (body, trailers) = dechunk(input, step).unwrap();
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            assert_eq!(trailers.unwrap()["grpc-status"], "0");
        }
        let (body, trailers) = dechunk(b"2\r\nok\r\n0\r\n\r\n", 1).unwrap();
        assert_eq!((body.as_slice(), trailers), (&b"ok"[..], None));
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"5;a\x00b\r\nhello\r\n0\r\n\r\n",
            b"0\r\nbad trailer\r\n\r\n",
        ] {
            assert!(
                dechunk(bad, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("1;{}\r\n", "e".repeat(MAX_CHUNK_LINE));
        assert!(dechunk(long.as_bytes(), 64).is_err());
    }

    #[test]
    fn only_the_trailers_the_request_announced_and_may_send_go_out() {
        let mut h = HeaderMap::new();
        h.append(
            header::TRAILER,
            HeaderValue::from_static("x-sum, Authorization"),
        );
        h.append(header::TRAILER, HeaderValue::from_static("grpc-status"));
        let allowed = allowed_trailers(&h);
        assert_eq!(allowed, ["x-sum", "grpc-status"]);
        let mut t = HeaderMap::new();
        t.insert("x-sum", HeaderValue::from_static("7"));
        t.insert("authorization", HeaderValue::from_static("Bearer x"));
        t.insert("x-other", HeaderValue::from_static("1"));
        let kept = allowed_only(t.clone(), &allowed).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept["x-sum"], "7");
        // No `trailer` header: none.
        assert!(allowed_only(t, &allowed_trailers(&HeaderMap::new())).is_none());
    }

    #[test]
    fn request_chunks_and_trailers() {
        assert_eq!(&chunk_size_line(26)[..], b"1a\r\n");
        assert_eq!(&last_chunk(None)[..], b"0\r\n\r\n");
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        assert_eq!(&last_chunk(Some(&t))[..], b"0\r\ngrpc-status: 0\r\n\r\n");
    }
}
