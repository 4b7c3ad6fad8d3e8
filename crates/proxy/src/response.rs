//! The one place where meshguard's own answers are built: denials, requests refused at intake,
//! and upstream failures, as plain text or, for gRPC clients, as a trailers-only gRPC status.
//!
//! Owns the status, body, `content-type`, `www-authenticate`, gRPC status codes and the
//! `response_code_details` of every local reply. Does not decide whether to reply locally.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Frame, SizeHint};
pub use meshguard_engine::LocalReply;

use crate::intake::Refusal;
use crate::upstream::{BodyFault, ResponseBody};

/// The response body type of the proxy: a local reply or the upstream's streamed body (data
/// and trailers as they come). An enum rather than a boxed trait object: no allocation and no
/// dynamic call per response.
#[derive(Debug)]
pub enum Body {
    Local(Full<Bytes>),
    Upstream(ResponseBody<crate::custom::ClientBody>),
    /// The body of an answer on a connection of its own: an upgrade the upstream declined
    /// ([`crate::upgrade`]).
    Direct(hyper::body::Incoming),
}

/// A whole body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Body::Local(Full::new(bytes.into()))
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Body::Local(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
            Body::Upstream(b) => Pin::new(b).poll_frame(cx),
            Body::Direct(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Local(b) => b.is_end_stream(),
            Body::Upstream(b) => b.is_end_stream(),
            Body::Direct(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Local(b) => b.size_hint(),
            Body::Upstream(b) => b.size_hint(),
            Body::Direct(b) => b.size_hint(),
        }
    }
}

/// Why the upstream could not answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// The connection could not be made (refused, unreachable, connect timeout).
    Connect(String),
    /// No response head within the upstream timeout.
    Timeout,
    /// The connection broke or the response was not valid HTTP.
    Protocol(String),
    /// The upstream closed or reset the connection before the response head.
    Closed(String),
    /// Every upstream connection allowed was busy and as many requests were waiting already.
    Overflow,
    /// The TLS handshake with an `https://` upstream failed (certificate not verified, no
    /// protocol in common, ...).
    Tls(String),
    /// The request's `grpc-timeout` passed before the upstream's response head.
    Deadline,
}

impl UpstreamFailure {
    /// The `result` label of `meshguard_upstream_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            UpstreamFailure::Connect(_) => "connect",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Protocol(_) => "protocol",
            UpstreamFailure::Closed(_) => "closed",
            UpstreamFailure::Overflow => "overflow",
            UpstreamFailure::Tls(_) => "tls",
            UpstreamFailure::Deadline => "deadline",
        }
    }
}

/// Envoy's reply when a request's `grpc-timeout` (its stream's deadline) passes first.
const DURATION_TIMEOUT_BODY: &str = "downstream duration timeout";
const DURATION_TIMEOUT_DETAILS: &str = "max_duration_timeout";

impl From<&UpstreamFailure> for LocalReply {
    /// Envoy's texts for the same failures.
    fn from(f: &UpstreamFailure) -> Self {
        match f {
            UpstreamFailure::Connect(_) => LocalReply {
                status: 503,
                body: "upstream connect error or disconnect/reset before headers. reset reason: connection failure".into(),
                details: "upstream_reset_before_response_started{connection_failure}".into(),
                www_authenticate: None,
            },
            UpstreamFailure::Timeout => LocalReply {
                status: 504,
                body: "upstream request timeout".into(),
                details: "upstream_response_timeout".into(),
                www_authenticate: None,
            },
            UpstreamFailure::Protocol(_) => LocalReply {
                status: 502,
                body: "upstream connect error or disconnect/reset before headers. reset reason: protocol error".into(),
                details: "upstream_reset_before_response_started{protocol_error}".into(),
                www_authenticate: None,
            },
            // Envoy 1.40 for an HTTP/1.1 upstream that closes or resets the connection after
            // the request, before answering (response flag UC).
            UpstreamFailure::Closed(_) => LocalReply {
                status: 503,
                body: "upstream connect error or disconnect/reset before headers. reset reason: connection termination".into(),
                details: "upstream_reset_before_response_started{connection_termination}".into(),
                www_authenticate: None,
            },
            UpstreamFailure::Overflow => LocalReply {
                status: 503,
                body: "upstream connect error or disconnect/reset before headers. reset reason: overflow".into(),
                details: "upstream_reset_before_response_started{overflow}".into(),
                www_authenticate: None,
            },
            // Envoy's body leaves the TLS failure out; its details carry BoringSSL's error
            // queue, meshguard's carry rustls's reason in the same frame
            // (docs/differences.md).
            UpstreamFailure::Tls(reason) => LocalReply {
                status: 503,
                body: "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure".into(),
                details: format!(
                    "upstream_reset_before_response_started{{remote_connection_failure|TLS_error:|{}:TLS_error_end}}",
                    reason.replace(' ', "_")
                ),
                www_authenticate: None,
            },
            UpstreamFailure::Deadline => LocalReply {
                status: 504,
                body: DURATION_TIMEOUT_BODY.into(),
                details: DURATION_TIMEOUT_DETAILS.into(),
                www_authenticate: None,
            },
        }
    }
}

/// A request body longer than an ext_authz provider's `maxRequestBytes` without
/// `allowPartialMessage`: Envoy's connection manager refusing to buffer more.
pub fn payload_too_large() -> LocalReply {
    LocalReply {
        status: 413,
        body: "Payload Too Large".into(),
        details: "request_payload_too_large".into(),
        www_authenticate: None,
    }
}

impl From<&BodyFault> for LocalReply {
    /// Envoy's answers when the client's request body fails before the upstream answered.
    fn from(f: &BodyFault) -> Self {
        match f {
            // Envoy's HTTP/1 codec rejecting the body.
            BodyFault::Invalid(_) => LocalReply {
                status: 400,
                body: "Bad Request".into(),
                details: "http1.codec_error".into(),
                www_authenticate: None,
            },
            // Envoy's `stream_idle_timeout`.
            BodyFault::Stalled => LocalReply {
                status: 408,
                body: "stream timeout".into(),
                details: "stream_idle_timeout".into(),
                www_authenticate: None,
            },
        }
    }
}

impl From<Refusal> for LocalReply {
    /// Envoy's status, body and details where Envoy refuses the same request; meshguard's own
    /// details where it is stricter (docs/differences.md).
    fn from(r: Refusal) -> Self {
        let (status, body, details) = match r {
            // Envoy's connection manager: an empty body.
            Refusal::MissingHost => (400, "", "missing_host_header"),
            // Envoy joins the values into one authority; meshguard refuses (RFC 9112 §3.2).
            Refusal::DuplicateHost => (400, "Bad Request", "duplicate_host_header"),
            Refusal::InvalidAuthority => (400, "Bad Request", "http.invalid_authority"),
            // Envoy's HTTP/1 codec; over HTTP/2 Envoy forwards any method token.
            Refusal::UnknownMethod(http::Version::HTTP_2) => (400, "Bad Request", "invalid_method"),
            Refusal::UnknownMethod(_) => (400, "Bad Request", "http1.codec_error"),
            Refusal::InvalidScheme => (400, "Bad Request", "http1.invalid_scheme"),
            Refusal::TransferEncoding => {
                (501, "Not Implemented", "http1.invalid_transfer_encoding")
            }
            Refusal::ConnectionHeader => (400, "Bad Request", "http1.connection_header_rejected"),
            Refusal::ConnectTarget => (400, "Bad Request", "http1.invalid_url"),
            // Istio's inbound route has no CONNECT matcher: Envoy finds no route.
            Refusal::ConnectNotRouted => (404, "", "route_not_found"),
            // Envoy's connection manager, for an upgrade type it is not configured for.
            Refusal::UpgradeFailed => (403, "", "upgrade_failed"),
        };
        LocalReply {
            status,
            body: body.into(),
            details: details.into(),
            www_authenticate: None,
        }
    }
}

/// The reply to a request refused at intake. As Envoy does after these errors, the connection
/// is closed once the reply is written: the request's body is not read, and a client that
/// sent one malformed request is not trusted with the framing of the next (hyper drops the
/// header over HTTP/2, where it has no meaning).
pub fn refusal_reply(r: Refusal, to: ReplyTo) -> Response<Body> {
    let mut resp = local_reply(&LocalReply::from(r), to);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// A request is gRPC when its content-type is `application/grpc` or `application/grpc+...`.
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    is_grpc_content_type(headers.get(header::CONTENT_TYPE))
}

/// [`is_grpc`] for the (first) `Content-Type` value, when the caller has it at hand.
pub fn is_grpc_content_type(content_type: Option<&http::HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct == "application/grpc"
                || ct.starts_with("application/grpc+")
                || ct.starts_with("application/grpc;")
        })
}

/// gRPC code of a local reply, as Envoy maps them: by the HTTP status, except a passed
/// `grpc-timeout`, which is `DEADLINE_EXCEEDED`.
fn grpc_status_of(reply: &LocalReply) -> u8 {
    if reply.details == DURATION_TIMEOUT_DETAILS {
        4
    } else {
        grpc_status(reply.status)
    }
}

/// gRPC code for an HTTP status, as Envoy maps local replies.
fn grpc_status(status: u16) -> u8 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

/// Builds the response for a local reply. gRPC clients get HTTP 200 with no body and the
/// status in `grpc-status`/`grpc-message` (trailers-only), as Envoy does.
pub fn local_reply(reply: &LocalReply, to: ReplyTo) -> Response<Body> {
    let mut resp = if to.grpc {
        let mut r = Response::new(full(Bytes::new()));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(
            "grpc-status",
            HeaderValue::from(u16::from(grpc_status_of(reply))),
        );
        if let Ok(v) = HeaderValue::from_str(&percent_encode_grpc(&reply.body)) {
            h.insert("grpc-message", v);
        }
        r
    } else {
        let mut r = Response::new(full(reply.body.clone()));
        *r.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::FORBIDDEN);
        // No body, no content type (as Envoy's empty local replies).
        if !reply.body.is_empty() {
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        r
    };
    if let Some(w) = reply
        .www_authenticate
        .as_deref()
        .and_then(|w| HeaderValue::from_str(w).ok())
    {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, w);
    }
    if to.head {
        resp = for_head(resp);
    }
    resp
}

/// What a local reply answers, for its framing: a gRPC request gets a trailers-only gRPC
/// answer, a `HEAD` request the headers without the body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyTo {
    pub grpc: bool,
    pub head: bool,
}

/// The answer to a `HEAD` request: a local reply keeps its headers, `content-length`
/// included (as Envoy answers), and loses its body. hyper leaves the body out of HTTP/1.1
/// answers itself, but over HTTP/2 it would send it as DATA frames, which the client must
/// treat as a protocol error. (An upstream's answer to `HEAD` has no body to remove.)
fn for_head(mut resp: Response<Body>) -> Response<Body> {
    if let Body::Local(local) = resp.body() {
        let len = hyper::body::Body::size_hint(local).exact().unwrap_or(0);
        if len > 0 {
            resp.headers_mut()
                .entry(header::CONTENT_LENGTH)
                .or_insert_with(|| HeaderValue::from(len));
            *resp.body_mut() = full(Bytes::new());
        }
    }
    resp
}

/// gRPC's percent-encoding of `grpc-message` (spaces are allowed as they are).
fn percent_encode_grpc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_answers_keep_the_length_and_lose_the_body() {
        let r = LocalReply {
            status: 403,
            body: "RBAC: access denied".into(),
            details: "rbac_access_denied_matched_policy[none]".into(),
            www_authenticate: None,
        };
        let resp = local_reply(
            &r,
            ReplyTo {
                grpc: false,
                head: true,
            },
        );
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.headers()["content-length"], "19");
        assert_eq!(resp.headers()["content-type"], "text/plain");
        assert_eq!(hyper::body::Body::size_hint(resp.body()).exact(), Some(0));
    }

    #[test]
    fn grpc_replies_are_trailers_only() {
        let r = LocalReply {
            status: 401,
            body: "Jwt is expired".into(),
            details: String::new(),
            www_authenticate: Some("Bearer realm=\"x\"".into()),
        };
        let resp = local_reply(
            &r,
            ReplyTo {
                grpc: true,
                head: false,
            },
        );
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["grpc-status"], "16");
        assert_eq!(resp.headers()["grpc-message"], "Jwt is expired");
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        let plain = local_reply(&r, ReplyTo::default());
        assert_eq!(plain.status(), 401);
        assert_eq!(plain.headers()["content-type"], "text/plain");
        assert_eq!(plain.headers()["www-authenticate"], "Bearer realm=\"x\"");
        assert_eq!(grpc_status(403), 7);
        let mut h = http::HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&h));
    }
}
