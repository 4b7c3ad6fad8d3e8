//! Forwarding an allowed HTTP/1.1 upgrade (WebSocket) and splicing the two connections.
//!
//! Owns: telling an allowed request that asks for an upgrade ([`requested`]), sending it to the
//! upstream on a connection of its own ([`forward`]: an upgraded connection never goes back to
//! the pool), relaying the upstream's answer, and, on `101 Switching Protocols`, the tunnel
//! between the client's and the upstream's byte streams with its metrics (`meshguard_runtime::metrics::UpgradeMetrics`).
//! Does not decide which upgrades are accepted ([`crate::intake`] refuses every protocol but
//! `websocket` and removes `h2c`), nor whether the request is allowed (the engine decides first,
//! as for any request), nor the access-log line ([`crate::handler`] writes it when the upstream
//! answers: for a tunnel, at the `101`).
//!
//! The tunnel copies through two fixed buffers ([`tokio::io::copy_bidirectional`]): a client
//! that sends faster than the upstream reads is held back by TCP, never buffered. When one side
//! closes its sending half, the other side's sending half is closed and the opposite direction
//! goes on until it closes too (half-close passed on); when either side fails, both are closed.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::handler::{Shared, strip_hop_by_hop};
use crate::response::{Body, ReplyTo, UpstreamFailure, full, local_reply};
use crate::upstream::{SendError, Upstream, describe};

/// The only upgrade Istio configures (`upgrade_configs: [{upgrade_type: websocket}]`).
const WEBSOCKET: &str = "websocket";

/// An allowed request that asks for a WebSocket upgrade: the client connection's pending
/// upgrade, and the `Upgrade` and `Connection` values to forward.
#[derive(Debug)]
pub struct Requested {
    client: OnUpgrade,
    protocol: HeaderValue,
    /// The client's `Connection` lines joined with `,`, as Envoy forwards them with an
    /// upgrade (intake has left only connection options in them).
    connection: HeaderValue,
}

/// Whether the request asks for an upgrade meshguard forwards: HTTP/1.1, `Upgrade: websocket`
/// (intake has left `Upgrade` only on such requests, with `Connection: upgrade`). Takes the
/// client connection's pending upgrade out of the request; call it before the hop-by-hop
/// headers are removed.
pub fn requested(
    version: Version,
    headers: &HeaderMap,
    extensions: &mut http::Extensions,
) -> Option<Requested> {
    let protocol = websocket(version, headers)?.clone();
    let mut joined = Vec::new();
    for v in headers.get_all(header::CONNECTION) {
        if !joined.is_empty() {
            joined.push(b',');
        }
        joined.extend_from_slice(v.as_bytes());
    }
    let connection =
        HeaderValue::from_bytes(&joined).unwrap_or_else(|_| HeaderValue::from_static("upgrade"));
    let client = extensions.remove::<OnUpgrade>()?;
    Some(Requested {
        client,
        protocol,
        connection,
    })
}

/// The `Upgrade` value of an HTTP/1.1 WebSocket upgrade request.
fn websocket(version: Version, headers: &HeaderMap) -> Option<&HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    let protocol = headers.get(header::UPGRADE)?;
    protocol
        .as_bytes()
        .trim_ascii()
        .eq_ignore_ascii_case(WEBSOCKET.as_bytes())
        .then_some(protocol)
}

/// After a local reply to a WebSocket handshake (a denial, an upstream failure), the client's
/// connection is closed, as Envoy closes it: the client may already have sent bytes of the
/// protocol it asked for, which must not be read as a next request.
pub fn close_if_asked(version: Version, headers: &HeaderMap, resp: &mut Response<Body>) {
    if websocket(version, headers).is_some() {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// What [`forward`] answers, for the client and for the access log.
#[derive(Debug)]
pub struct Forwarded {
    pub response: Response<Body>,
    pub status: u16,
    pub details: Cow<'static, str>,
    /// The upstream answered (the upstream duration is measured); `false` for a local reply.
    pub answered: bool,
}

/// The details of an upgrade the upstream declined with a `2xx` other than `101`, as Envoy
/// logs it (Envoy logs any other answer as `via_upstream`).
pub const DECLINED: &str = "websocket_handshake_unsuccessful";

/// Sends `req` (hop-by-hop headers removed, forwarding headers set) with the client's `Upgrade`
/// and `Connection` on a new connection to the upstream the pool connects to. Connecting
/// and the response head together get `--upstream-timeout` from `sent`. A `101` is relayed
/// and the tunnel starts once hyper has written it to the client; any other answer is relayed
/// as a normal response with `Connection: close` (as Envoy answers it; the client may already
/// have sent bytes meant for the other protocol). Failures are answered as the pool's are.
pub async fn forward(
    mut req: Request<Incoming>,
    requested: Requested,
    shared: &Shared,
    sent: Instant,
    reply_to: ReplyTo,
) -> Forwarded {
    let headers = req.headers_mut();
    headers.insert(header::UPGRADE, requested.protocol);
    headers.insert(header::CONNECTION, requested.connection);
    let request_id = headers.get("x-request-id").cloned();
    let deadline = tokio::time::Instant::from_std(sent + shared.upstream_timeout);
    let (mut resp, conn) =
        match tokio::time::timeout_at(deadline, exchange(req, &shared.pool)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(failure)) => return failed(shared, failure, reply_to),
            Err(_) => return failed(shared, UpstreamFailure::Timeout, reply_to),
        };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The connection's task runs until the body is read, then closes it.
        conn.defuse();
        let status = resp.status().as_u16();
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        parts.version = Version::HTTP_11;
        return Forwarded {
            response: Response::from_parts(parts, Body::Direct(body)),
            status,
            details: Cow::Borrowed(if (200..300).contains(&status) {
                DECLINED
            } else {
                "via_upstream"
            }),
            answered: true,
        };
    }
    let upstream = hyper::upgrade::on(&mut resp);
    // The connection's task ends by handing its IO to `upstream`.
    conn.defuse();
    let (mut parts, _) = resp.into_parts();
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Some(p) = protocol {
        parts.headers.insert(header::UPGRADE, p);
    }
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.version = Version::HTTP_11;
    let metrics = shared.runtime.metrics().clone();
    tokio::spawn(tunnel(requested.client, upstream, metrics, request_id));
    Forwarded {
        response: Response::from_parts(parts, full(bytes::Bytes::new())),
        status: 101,
        details: Cow::Borrowed("via_upstream"),
        answered: true,
    }
}

/// Connects, sends the request and waits for the response head. The connection's task is
/// aborted when the returned guard is dropped undefused.
async fn exchange(
    req: Request<Incoming>,
    upstream: &Upstream<crate::custom::ClientBody>,
) -> Result<(Response<Incoming>, AbortOnDrop), UpstreamFailure> {
    // The upstream's own connector: TLS (offering only HTTP/1.1) for an `https://` upstream.
    let stream = upstream.connect_http1().await.map_err(|e| match e {
        SendError::Tls(e) => UpstreamFailure::Tls(e),
        SendError::Connect(e) => UpstreamFailure::Connect(e),
        other => UpstreamFailure::Protocol(format!("{other:?}")),
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| UpstreamFailure::Protocol(describe(&e)))?;
    let task = AbortOnDrop(Some(
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream upgrade connection ended with an error");
            }
        })
        .abort_handle(),
    ));
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| UpstreamFailure::Protocol(describe(&e)))?;
    Ok((resp, task))
}

/// Aborts a connection's task when dropped, unless defused: a request given up (timeout)
/// must not leave its connection open.
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl AbortOnDrop {
    fn defuse(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// The pool's answer to the same failure, counted and logged the same way.
fn failed(shared: &Shared, failure: UpstreamFailure, reply_to: ReplyTo) -> Forwarded {
    let reply = crate::handler::upstream_failed(shared, &failure);
    let mut response = local_reply(&reply, reply_to);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Forwarded {
        response,
        status: reply.status,
        details: Cow::Owned(reply.details),
        answered: false,
    }
}

/// Counts a tunnel as active for as long as it exists.
struct Active(Arc<meshguard_runtime::metrics::Metrics>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.upgrades.active.dec();
    }
}

/// Waits for both upgrades (the client's once hyper has written the `101`), then copies bytes
/// both ways until both directions have ended or one side fails.
async fn tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    metrics: Arc<meshguard_runtime::metrics::Metrics>,
    request_id: Option<HeaderValue>,
) {
    metrics.upgrades.total.inc();
    metrics.upgrades.active.inc();
    let _active = Active(metrics);
    let opened = Instant::now();
    let request_id = request_id
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (client, upstream) = match tokio::join!(client, upstream) {
        (Ok(c), Ok(u)) => (c, u),
        (c, u) => {
            tracing::debug!(request_id, client = ?c.err(), upstream = ?u.err(), "upgrade not completed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((to_upstream, to_client)) => {
            tracing::debug!(request_id, to_upstream, to_client, duration = ?opened.elapsed(), "tunnel closed");
        }
        Err(e) => {
            tracing::debug!(request_id, error = %e, duration = ?opened.elapsed(), "tunnel failed; both sides closed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: Version, upgrade: Option<&'static str>) -> http::request::Parts {
        let mut b = Request::get("/ws").version(version).header("host", "a");
        if let Some(u) = upgrade {
            b = b.header("upgrade", u).header("connection", "upgrade");
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn only_http11_websocket_upgrades_are_forwarded_as_upgrades() {
        let ws = |version, upgrade| {
            let p = parts(version, upgrade);
            websocket(p.version, &p.headers).is_some()
        };
        assert!(ws(Version::HTTP_11, Some("websocket")));
        assert!(ws(Version::HTTP_11, Some("WebSocket")));
        assert!(!ws(Version::HTTP_11, None));
        assert!(!ws(Version::HTTP_10, Some("websocket")));
        assert!(!ws(Version::HTTP_11, Some("h2c")));
        // Without hyper's pending upgrade (not an HTTP/1 server request) there is nothing to
        // upgrade.
        let mut p = parts(Version::HTTP_11, Some("websocket"));
        assert!(requested(p.version, &p.headers, &mut p.extensions).is_none());
    }
}
