//! The CUSTOM phase of a request: the engine said "ask provider X" (a CUSTOM rule of a
//! configured ext_authz provider matched, before JWT validation as in Istio); this phase asks
//! it through [`ExternalAuthorizers`] and turns the answer into the next step: go on (with the
//! authorizer's header changes applied to the request, which JWT validation, the other
//! policies and the upstream then see) or reply (the authorizer's denial, or `statusOnError`).
//!
//! Owns the seam between the proxy and the ext_authz clients (the trait and the plain types
//! that cross it), reading the part of a request body a provider wants to see
//! (`includeRequestBodyInCheck`, [`ClientBody`]: the bytes read go upstream first, then the
//! rest of the body), applying an allowed request's header and query changes, and the shape
//! of a denial's reply. Does not speak gRPC or HTTP to an authorizer (`meshguard-extauthz`'s client, plugged
//! in by the command line), does not decide which provider to ask (the engine does).

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};

use crate::response::{Body, LocalReply, ReplyTo, full, local_reply};
use crate::upstream::BodyFault;

/// What an authorizer is told about a request: what Envoy's ext_authz filter reads, at the
/// same point (after the connection manager's changes: path normalization, `x-request-id`,
/// `x-forwarded-client-cert`; `x-forwarded-proto` is [`CheckInput::forwarded_proto`]).
#[derive(Debug)]
pub struct CheckInput<'a> {
    pub method: &'a Method,
    /// The normalized path with its query (`:path` as Envoy's filters see it).
    pub path: &'a str,
    /// The authority (`:authority` / `Host`).
    pub host: &'a str,
    /// `http` or `https`: how the client reached the proxy.
    pub scheme: &'static str,
    pub version: http::Version,
    /// The request's headers as they are now (no pseudo-headers).
    pub headers: &'a HeaderMap,
    /// The `x-forwarded-proto` the upstream will receive (Envoy sets it before its filters).
    pub forwarded_proto: &'static str,
    /// The client (`source.address`).
    pub peer: SocketAddr,
    /// The address the client connected to (`destination.address`).
    pub local: SocketAddr,
    /// The client certificate's identity over mutual TLS (`source.principal`).
    pub peer_principal: Option<&'a str>,
    /// The serving certificate's identity over mutual TLS (`destination.principal`).
    pub local_principal: Option<&'a str>,
    /// The body read for a provider with `includeRequestBodyInCheck`; `None` for the others
    /// and for a request without a body.
    pub body: Option<CheckBody<'a>>,
}

/// A provider's `includeRequestBodyInCheck`, as the proxy reads the body for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimit {
    /// `maxRequestBytes`: at most this many bytes are sent.
    pub max: usize,
    /// `allowPartialMessage`: a longer body is sent cut; without it, it is refused (413).
    pub allow_partial: bool,
}

/// The part of the request body an authorizer is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckBody<'a> {
    /// The first bytes, at most [`BodyLimit::max`].
    pub data: &'a [u8],
    /// The bytes read so far (Envoy's `request.http.size`: its buffer, which may hold more
    /// than is sent).
    pub size: usize,
    /// More was read than is sent (Envoy's `x-envoy-auth-partial-body`).
    pub partial: bool,
}

/// The client's request body on its way upstream: as it streams (every request but those
/// whose body a provider wants to see: nothing is copied), or the bytes read for a provider
/// followed by the rest of the body as it streams. The upstream forwards either, one enum
/// match per frame.
#[derive(Debug)]
pub enum ClientBody {
    Streaming(Incoming),
    Read(Box<ReadBody>),
}

/// A body partly (or wholly) read for a provider.
#[derive(Debug, Default)]
pub struct ReadBody {
    /// Read and not yet forwarded.
    data: BytesMut,
    /// How much was read (`data` empties as it is forwarded).
    read: usize,
    /// Trailers met while reading (they end the body).
    trailers: Option<HeaderMap>,
    /// The rest of the body; `None` once it has ended.
    rest: Option<Incoming>,
}

/// Why a body could not be read for a provider.
#[derive(Debug)]
pub enum BodyReadError {
    /// Longer than `maxRequestBytes` without `allowPartialMessage`: Envoy's 413.
    TooLarge,
    /// The client's framing broke, or it stalled.
    Client(BodyFault),
}

impl ClientBody {
    /// Whether a provider with `includeRequestBodyInCheck` reads this request's body: one
    /// that has a body and is not an upgrade (Envoy's ext_authz buffers neither a request
    /// whose headers end the stream nor a WebSocket or HTTP/2 extended CONNECT).
    pub fn readable(&self, method: &Method, headers: &HeaderMap) -> bool {
        !hyper::body::Body::is_end_stream(self)
            && *method != Method::CONNECT
            && !headers.contains_key(header::UPGRADE)
    }

    /// Reads the body for a provider: until `limit.max` bytes are read (at least; a frame is
    /// kept whole) or it ends, with `allowPartialMessage`; without it until it ends, refused
    /// as soon as it is known to be longer (a `content-length` says so before any byte).
    /// Each wait for the client is bounded by `stall`. The memory held is bounded by
    /// `limit.max` plus one frame.
    pub async fn read_for_check(
        &mut self,
        limit: BodyLimit,
        stall: Duration,
    ) -> Result<(), BodyReadError> {
        if !limit.allow_partial && hyper::body::Body::size_hint(self).lower() > limit.max as u64 {
            return Err(BodyReadError::TooLarge);
        }
        if let ClientBody::Streaming(_) = self {
            let ClientBody::Streaming(incoming) =
                std::mem::replace(self, ClientBody::Read(Box::default()))
            else {
                return Ok(());
            };
            let ended = hyper::body::Body::is_end_stream(&incoming);
            *self = ClientBody::Read(Box::new(ReadBody {
                rest: (!ended).then_some(incoming),
                ..ReadBody::default()
            }));
        }
        let ClientBody::Read(r) = self else {
            return Ok(());
        };
        let enough = |read: usize| {
            if limit.allow_partial {
                read >= limit.max
            } else {
                read > limit.max
            }
        };
        while !enough(r.read) {
            let Some(rest) = r.rest.as_mut() else { break };
            match tokio::time::timeout(stall, rest.frame()).await {
                Err(_) => return Err(BodyReadError::Client(BodyFault::Stalled)),
                Ok(None) => r.rest = None,
                Ok(Some(Err(e))) => {
                    return Err(BodyReadError::Client(BodyFault::Invalid(e.to_string())));
                }
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        r.read += data.len();
                        r.data.extend_from_slice(&data);
                    }
                    Err(frame) => {
                        r.trailers = frame.into_trailers().ok();
                        r.rest = None;
                    }
                },
            }
            if r.rest
                .as_ref()
                .is_some_and(hyper::body::Body::is_end_stream)
            {
                r.rest = None;
            }
        }
        if !limit.allow_partial && r.read > limit.max {
            return Err(BodyReadError::TooLarge);
        }
        Ok(())
    }

    /// What a provider with `max` is sent of the body read ([`ClientBody::read_for_check`]).
    pub fn check_body(&self, max: usize) -> Option<CheckBody<'_>> {
        let ClientBody::Read(r) = self else {
            return None;
        };
        let data = r.data.get(..max.min(r.data.len())).unwrap_or_default();
        Some(CheckBody {
            data,
            size: r.read,
            partial: r.read > data.len(),
        })
    }

    /// The body of an upgrade request (never read for a provider), or the body back.
    pub fn into_streaming(self) -> Result<Incoming, ClientBody> {
        match self {
            ClientBody::Streaming(b) => Ok(b),
            other => Err(other),
        }
    }
}

impl hyper::body::Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = match self.get_mut() {
            ClientBody::Streaming(b) => return Pin::new(b).poll_frame(cx),
            ClientBody::Read(r) => r,
        };
        if !r.data.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(r.data.split().freeze()))));
        }
        if let Some(rest) = r.rest.as_mut() {
            match Pin::new(rest).poll_frame(cx) {
                Poll::Ready(None) => r.rest = None,
                other => return other,
            }
        }
        Poll::Ready(r.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Streaming(b) => b.is_end_stream(),
            ClientBody::Read(r) => {
                r.data.is_empty()
                    && r.trailers.is_none()
                    && r.rest.as_ref().is_none_or(hyper::body::Body::is_end_stream)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Streaming(b) => b.size_hint(),
            ClientBody::Read(r) => {
                let held = r.data.len() as u64;
                match &r.rest {
                    None => SizeHint::with_exact(held),
                    Some(rest) => {
                        let h = rest.size_hint();
                        let mut out = SizeHint::new();
                        out.set_lower(h.lower() + held);
                        if let Some(upper) = h.upper() {
                            out.set_upper(upper + held);
                        }
                        out
                    }
                }
            }
        }
    }
}

/// How a question to an authorizer ended, as Envoy counts it (`ext_authz.ok`, `.denied`,
/// `.error`, `.failure_mode_allowed`); the label of `meshguard_ext_authz_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckResult {
    Ok,
    Denied,
    /// No usable answer (connection refused, timeout, a 5xx or garbage), refused with
    /// `statusOnError`.
    Error,
    /// No usable answer, let through by `failOpen`.
    FailureModeAllowed,
}

impl CheckResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::Ok => "ok",
            CheckResult::Denied => "denied",
            CheckResult::Error => "error",
            CheckResult::FailureModeAllowed => "failure_mode_allowed",
        }
    }
}

/// How an allowing authorizer's header is applied (Envoy's `HeaderAppendAction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderAction {
    /// Add a value, keeping the others (`APPEND_IF_EXISTS_OR_ADD`).
    Append,
    /// Only when the request has no such header (`ADD_IF_ABSENT`).
    AddIfAbsent,
    /// Replace every value (`OVERWRITE_IF_EXISTS_OR_ADD`).
    Set,
    /// Replace every value, only when there is one (`OVERWRITE_IF_EXISTS`).
    OverwriteIfExists,
}

/// The changes an allowing authorizer asks for: on the request to the upstream, and on the
/// response to the client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowed {
    /// In the authorizer's order.
    pub headers: Vec<(HeaderName, HeaderValue, HeaderAction)>,
    pub remove: Vec<HeaderName>,
    /// Added to the client's response, whoever answers it (gRPC `response_headers_to_add`,
    /// HTTP `headersToDownstreamOnAllow`).
    pub response_headers: Vec<(HeaderName, HeaderValue, HeaderAction)>,
    /// Query parameters set (every value of the name replaced) and removed (gRPC
    /// `query_parameters_to_set`, `query_parameters_to_remove`).
    pub query_set: Vec<(String, String)>,
    pub query_remove: Vec<String>,
}

/// A refusal: what the client receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// `ext_authz_denied` (the authorizer said no) or `ext_authz_error` (no usable answer).
    pub details: &'static str,
}

/// The authorizer's verdict, failure handling (`failOpen`, `statusOnError`) applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow(Allowed),
    Deny(Denied),
}

/// An answer and how it was reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub result: CheckResult,
    pub verdict: Verdict,
}

/// The future of one check.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Checked> + Send + 'a>>;

/// The external authorizers of the mesh config's ext_authz providers.
pub trait ExternalAuthorizers: Debug + Send + Sync {
    /// The providers that can be asked (for the engine's "ask provider X").
    fn names(&self) -> Vec<Arc<str>>;
    /// Asks `provider` about a request. Never fails: an authorizer that cannot be asked gives
    /// the provider's failure verdict.
    fn check<'a>(&'a self, provider: &'a str, input: CheckInput<'a>) -> CheckFuture<'a>;
    /// The provider's `includeRequestBodyInCheck`: how much of the body it is sent.
    fn body_limit(&self, _provider: &str) -> Option<BodyLimit> {
        None
    }
}

/// Applies an allowing authorizer's changes to the request's headers, as Envoy's ext_authz
/// filter does before the next filters: the headers in order, then the removals.
/// Pseudo-headers and `host` cannot be removed (Envoy ignores those).
pub fn apply_allowed(headers: &mut HeaderMap, allowed: &Allowed) {
    apply_headers(headers, &allowed.headers);
    for name in &allowed.remove {
        if *name != header::HOST {
            headers.remove(name);
        }
    }
}

/// Adds an allowing authorizer's response headers to the client's response.
pub fn apply_response_headers(
    headers: &mut HeaderMap,
    allowed: &[(HeaderName, HeaderValue, HeaderAction)],
) {
    apply_headers(headers, allowed);
}

fn apply_headers(headers: &mut HeaderMap, changes: &[(HeaderName, HeaderValue, HeaderAction)]) {
    for (name, value, action) in changes {
        match action {
            HeaderAction::Append => {
                headers.append(name.clone(), value.clone());
            }
            HeaderAction::AddIfAbsent => {
                if !headers.contains_key(name) {
                    headers.insert(name.clone(), value.clone());
                }
            }
            HeaderAction::Set => {
                headers.insert(name.clone(), value.clone());
            }
            HeaderAction::OverwriteIfExists => {
                if headers.contains_key(name) {
                    headers.insert(name.clone(), value.clone());
                }
            }
        }
    }
}

/// `path` (with its query) after an allowing authorizer's query changes, as Envoy 1.40
/// rewrites it: the query is split at `&` and each parameter at its first `=` (nothing is
/// decoded), a set name loses all its values for the one given, removed names go, and the
/// query is written again sorted by name (bytes), `name=value` (`name=` for a parameter that
/// had no `=`), the values of one name in their order. `None` when nothing is to change.
pub fn apply_query(path: &str, allowed: &Allowed) -> Option<String> {
    if allowed.query_set.is_empty() && allowed.query_remove.is_empty() {
        return None;
    }
    let (base, query) = path.split_once('?').unwrap_or((path, ""));
    let mut params: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for p in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        params.entry(k).or_default().push(v);
    }
    for (k, v) in &allowed.query_set {
        params.insert(k, vec![v]);
    }
    for k in &allowed.query_remove {
        params.remove(k.as_str());
    }
    let mut out = base.to_string();
    let mut first = true;
    for (k, values) in &params {
        for v in values {
            out.push(if first { '?' } else { '&' });
            first = false;
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
    }
    Some(out)
}

/// The client's reply to a refusal: the authorizer's status, headers and body; a gRPC client
/// gets the gRPC status Envoy maps the HTTP status to, with the body as `grpc-message`.
pub fn denied_reply(denied: &Denied, to: ReplyTo) -> (Response<Body>, LocalReply) {
    let body = String::from_utf8_lossy(&denied.body).into_owned();
    let reply = LocalReply {
        status: denied.status,
        body,
        details: denied.details.to_string(),
        www_authenticate: None,
    };
    if to.grpc {
        let mut resp = local_reply(&reply, to);
        for (name, value) in &denied.headers {
            if !is_framing(name) && *name != header::CONTENT_TYPE {
                resp.headers_mut().insert(name.clone(), value.clone());
            }
        }
        return (resp, reply);
    }
    let mut resp = Response::new(if to.head {
        full(Bytes::new())
    } else {
        full(denied.body.clone())
    });
    *resp.status_mut() = StatusCode::from_u16(denied.status).unwrap_or(StatusCode::FORBIDDEN);
    let h = resp.headers_mut();
    for (name, value) in &denied.headers {
        if !is_framing(name) {
            h.insert(name.clone(), value.clone());
        }
    }
    if !denied.body.is_empty() && !h.contains_key(header::CONTENT_TYPE) {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    if to.head && !denied.body.is_empty() {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(denied.body.len()));
    }
    (resp, reply)
}

/// Headers of the authorizer's answer that describe its own message, not the reply.
fn is_framing(name: &HeaderName) -> bool {
    *name == header::CONTENT_LENGTH
        || *name == header::TRANSFER_ENCODING
        || *name == header::CONNECTION
        || name.as_str() == "keep-alive"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_changes_apply_in_order_then_removals_and_keep_host() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("a"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        h.insert("x-gone", HeaderValue::from_static("1"));
        h.insert("x-b", HeaderValue::from_static("1"));
        let n = HeaderName::from_static;
        let v = HeaderValue::from_static;
        apply_allowed(
            &mut h,
            &Allowed {
                headers: vec![
                    (n("x-a"), v("3"), HeaderAction::Set),
                    (n("x-b"), v("2"), HeaderAction::Append),
                    (n("x-b"), v("no"), HeaderAction::AddIfAbsent),
                    (n("x-c"), v("1"), HeaderAction::AddIfAbsent),
                    (n("x-d"), v("no"), HeaderAction::OverwriteIfExists),
                ],
                remove: vec![header::HOST, n("x-gone")],
                ..Allowed::default()
            },
        );
        assert_eq!(h.get_all("x-a").iter().collect::<Vec<_>>(), ["3"]);
        assert_eq!(h.get_all("x-b").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(h["x-c"], "1");
        assert!(!h.contains_key("x-d"));
        assert!(!h.contains_key("x-gone"));
        assert_eq!(h["host"], "a");
    }

    #[test]
    fn query_changes_are_applied_as_envoy_rewrites_the_query() {
        let allowed = Allowed {
            query_set: vec![("added".into(), "1".into()), ("x".into(), "2".into())],
            query_remove: vec!["y".into(), "gone".into()],
            ..Allowed::default()
        };
        // Measured with Envoy 1.40 (crates/cli/tests/ext_authz_client.rs compares them).
        assert_eq!(
            apply_query("/headers?x=1&y=2&z=3&x=4&b=%2F&a", &allowed).as_deref(),
            Some("/headers?a=&added=1&b=%2F&x=2&z=3")
        );
        assert_eq!(
            apply_query(
                "/headers?c=%41&d=a+b&e=x%20y&B=1&x&y=1&y=2&=z&f==",
                &allowed
            )
            .as_deref(),
            Some("/headers?=z&B=1&added=1&c=%41&d=a+b&e=x%20y&f==&x=2")
        );
        assert_eq!(
            apply_query("/headers", &allowed).as_deref(),
            Some("/headers?added=1&x=2")
        );
        assert_eq!(apply_query("/a?b", &Allowed::default()), None);
    }

    #[test]
    fn a_denial_keeps_the_authorizers_status_headers_and_body() {
        let d = Denied {
            status: 401,
            headers: vec![
                (header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic")),
                (header::CONTENT_LENGTH, HeaderValue::from_static("99")),
            ],
            body: Bytes::from_static(b"nope"),
            details: "ext_authz_denied",
        };
        let (resp, reply) = denied_reply(&d, ReplyTo::default());
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.headers()["www-authenticate"], "Basic");
        assert_eq!(resp.headers()["content-type"], "text/plain");
        assert!(!resp.headers().contains_key("content-length"));
        assert_eq!(reply.details, "ext_authz_denied");
        let (resp, _) = denied_reply(
            &d,
            ReplyTo {
                grpc: true,
                head: false,
            },
        );
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["grpc-status"], "16");
        assert_eq!(resp.headers()["grpc-message"], "nope");
    }
}
