//! Forwarding to the one upstream: which protocol a request goes out with, the timers that
//! bound it, and the body that carries the answer back.
//!
//! Owns: choosing per request between the HTTP/1.1 pool ([`h1`]) and the HTTP/2 connection
//! set ([`h2`]) (`--upstream-protocol`: the client's protocol for `auto`, ALPN for `https://`),
//! connecting (TCP, then TLS for `https://`, [`tls`]), the one bound on open connections both
//! share, the response timer (from the end of the request), the bound on pauses inside a
//! request body, telling a broken request body (the client's fault) from a broken upstream,
//! and the `grpc-timeout` deadline (Istio's inbound route takes the header as the stream's
//! deadline). Does not own the headers sent (the handler prepares them) or the answers sent
//! for failures ([`crate::response`]).
//!
//! The HTTP/1.1 path is the hot one (a sidecar's usual upstream): it costs one enum match per
//! request and per body frame over the pool's own work.

mod codec;
mod h1;
mod h2;
mod tls;

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};

use crate::config::{Limits, UpstreamProtocol, UpstreamTls};

use h1::PooledBody;
use tls::Stream;

/// Why a request got no response from the upstream.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made (refused, unreachable, connect timeout).
    Connect(String),
    /// The TLS handshake with an `https://` upstream failed (its certificate did not verify,
    /// no protocol in common, ...).
    Tls(String),
    /// Every connection was busy and as many requests were already waiting for one.
    Overflow,
    /// No response head within the timeout after the request was sent whole, or no
    /// connection came free within it.
    Timeout,
    /// The request's `grpc-timeout` passed before the response head.
    Deadline,
    /// The response was not valid HTTP (or the HTTP/2 connection failed).
    Protocol(String),
    /// The upstream closed or reset the HTTP/1.1 connection before the response head
    /// (Envoy's `connection termination`).
    Closed(String),
    /// The client's request body broke while it was being forwarded: the client's fault, not
    /// the upstream's.
    ClientBody(BodyFault),
}

/// How a client's request body failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyFault {
    /// Invalid framing (a bad chunk size, a bare LF, more data than a chunk's size, ...) or
    /// the client went away before the end.
    Invalid(String),
    /// The client sent nothing for the body stall timeout while the body was unfinished.
    Stalled,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error with its causes, for logs.
pub(crate) fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

static GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// What an `https://` upstream's ALPN chose, learned from the first connection.
const ALPN_UNKNOWN: u8 = 0;
const ALPN_HTTP1: u8 = 1;
const ALPN_H2: u8 = 2;

/// How each request picks its protocol.
#[derive(Debug)]
enum Route {
    Http1,
    H2,
    /// The client's protocol.
    Downstream,
    /// `https://`: what ALPN chose ([`ALPN_UNKNOWN`] goes to the HTTP/2 set, which offers
    /// both and reports an HTTP/1.1 answer).
    Alpn(Arc<AtomicU8>),
}

/// The requests waiting for an upstream connection, HTTP/1.1 and HTTP/2 together, and their
/// bound (`--max-pending-upstream-requests`, Envoy's circuit breaker `max_pending_requests`).
#[derive(Debug)]
pub(super) struct Pending {
    waiting: AtomicUsize,
    max: usize,
}

impl Pending {
    pub(super) fn new(max: usize) -> Pending {
        Pending {
            waiting: AtomicUsize::new(0),
            max,
        }
    }

    /// A place in the queue, held until dropped; `Overflow` when the queue is full.
    pub(super) fn join(&self) -> Result<Waiting<'_>, SendError> {
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(SendError::Overflow);
        }
        Ok(Waiting(&self.waiting))
    }

    /// Requests waiting now (for tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

/// One waiting request, counted for as long as it lives.
#[derive(Debug)]
pub(super) struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How new connections are made: TCP, then TLS for `https://`.
#[derive(Debug)]
pub(crate) struct Connector {
    /// `host:port` to connect to.
    addr: String,
    timeout: Duration,
    tls: Option<tls::Handshake>,
}

impl Connector {
    /// A new connection; with TLS, whether ALPN chose h2.
    pub(crate) async fn connect(&self) -> Result<(Stream, bool), SendError> {
        let tcp = match tokio::time::timeout(self.timeout, TcpStream::connect(self.addr.as_str()))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SendError::Connect(format!("{}: {e}", self.addr))),
            Err(_) => {
                return Err(SendError::Connect(format!(
                    "{}: connect timeout after {:?}",
                    self.addr, self.timeout
                )));
            }
        };
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok((Stream::Plain(tcp), false)),
            // Boxed: a handshake's state (rustls's connection) is kilobytes, and would
            // otherwise make every request's future that large, connecting or not.
            Some(handshake) => Box::pin(handshake.connect(tcp, self.timeout)).await,
        }
    }
}

/// The upstream, for requests with bodies of type `B` (the proxy forwards hyper's
/// [`Incoming`]).
#[derive(Debug)]
pub struct Upstream<B = Incoming> {
    h1: h1::Http1<B>,
    h2: Option<h2::Http2<B>>,
    route: Route,
    /// Longest pause allowed inside a request body.
    body_stall_timeout: Duration,
}

/// An upstream that cannot be set up (a CA file that cannot be read, an invalid SNI).
#[derive(Debug)]
pub struct SetupError(pub String);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<B> Upstream<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// The upstream at `url` (`http://` or `https://`; port 80 or 443 when the URL has none),
    /// spoken to with `protocol` (ignored for `https://`, whose protocol ALPN chooses), with
    /// the limits' connect timeout and connection bound; a request body may pause for at most
    /// the header read timeout (a client gets as long between body bytes as for its whole head).
    pub fn new(
        url: &http::Uri,
        protocol: UpstreamProtocol,
        tls: &UpstreamTls,
        limits: &Limits,
    ) -> Result<Upstream<B>, SetupError> {
        let authority = url
            .authority()
            .ok_or_else(|| SetupError(format!("upstream {url} has no host")))?;
        let https = url.scheme_str() == Some("https");
        let addr = match authority.port_u16() {
            Some(_) => authority.as_str().to_string(),
            None => format!("{}:{}", authority.host(), if https { 443 } else { 80 }),
        };
        let max_connections = limits
            .max_upstream_connections
            .clamp(1, Semaphore::MAX_PERMITS);
        let slots = Arc::new(Semaphore::new(max_connections));
        let pending = Arc::new(Pending::new(limits.max_pending_upstream_requests));
        let connector = |alpn: tls::Alpn| -> Result<Arc<Connector>, SetupError> {
            let tls = if https {
                Some(tls::Handshake::new(authority.host(), tls, alpn).map_err(SetupError)?)
            } else {
                None
            };
            Ok(Arc::new(Connector {
                addr: addr.clone(),
                timeout: limits.upstream_connect_timeout,
                tls,
            }))
        };
        let h1 = h1::Http1::new(
            connector(tls::Alpn::Http1)?,
            slots.clone(),
            max_connections,
            pending.clone(),
        );
        let (route, alpn) = match (https, protocol) {
            (true, _) => {
                let learned = Arc::new(AtomicU8::new(ALPN_UNKNOWN));
                (Route::Alpn(learned.clone()), Some(learned))
            }
            (false, UpstreamProtocol::Http1) => (Route::Http1, None),
            (false, UpstreamProtocol::H2c) => (Route::H2, None),
            (false, UpstreamProtocol::Auto) => (Route::Downstream, None),
        };
        let h2 = match route {
            Route::Http1 => None,
            _ => Some(h2::Http2::new(
                connector(tls::Alpn::Both)?,
                if https {
                    http::uri::Scheme::HTTPS
                } else {
                    http::uri::Scheme::HTTP
                },
                authority.clone(),
                slots,
                pending,
                alpn,
            )),
        };
        Ok(Upstream {
            h1,
            h2,
            route,
            body_stall_timeout: limits.header_read_timeout,
        })
    }

    /// A new HTTP/1.1 connection of its own, outside the pools and their bound (an upgrade's:
    /// it never comes back), over TLS for an `https://` upstream.
    pub(crate) async fn connect_http1(&self) -> Result<tls::Stream, SendError> {
        self.h1
            .connector()
            .connect()
            .await
            .map(|(stream, _)| stream)
    }

    /// Sends `req` (origin-form URI, `Host` set, its version the client's) and returns the
    /// response head; the body streams.
    ///
    /// `timeout` bounds the wait for the response head from the moment the request body has
    /// been sent whole (at once for a request without a body), as Envoy's route timeout runs
    /// from the end of the downstream request; it also bounds the wait for a free connection.
    /// A `grpc-timeout` header bounds the whole exchange, response body included, from `sent`.
    pub async fn send_from(
        &self,
        mut req: Request<B>,
        timeout: Duration,
        sent: Instant,
    ) -> Result<Response<ResponseBody<B>>, SendError> {
        let deadline = req
            .headers()
            .get(&GRPC_TIMEOUT)
            .and_then(grpc_timeout)
            .map(|d| tokio::time::Instant::from_std(sent) + d);
        let use_h2 = self.h2.is_some()
            && match &self.route {
                Route::Http1 => false,
                Route::H2 => true,
                Route::Downstream => req.version() == Version::HTTP_2,
                Route::Alpn(learned) => learned.load(Ordering::Relaxed) != ALPN_HTTP1,
            };
        if deadline.is_some() || use_h2 {
            // Boxed: the HTTP/2 exchange's state is large, and the hot path below must not
            // carry (and move) it.
            return Box::pin(self.send_other(req, timeout, sent, use_h2, deadline)).await;
        }
        // The hot path (HTTP/1.1, no deadline), written out here rather than in a function of
        // its own: each async layer keeps its own copy of the request in its future, which the
        // server moves on every request.
        *req.version_mut() = Version::HTTP_11;
        let (req, progress) = watched(req, self.body_stall_timeout);
        let exchange = self.h1.exchange(req, timeout, sent);
        let result = tokio::select! {
            biased;
            r = exchange => r,
            () = response_timer(progress.as_deref(), timeout, sent) => Err(SendError::Timeout),
        };
        settled(result, progress).map(|resp| resp.map(|b| ResponseBody::new(Kind::H1(b))))
    }

    /// HTTP/2, or a `grpc-timeout` deadline over either protocol.
    async fn send_other(
        &self,
        mut req: Request<B>,
        timeout: Duration,
        sent: Instant,
        use_h2: bool,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Response<ResponseBody<B>>, SendError> {
        let stall = self.body_stall_timeout;
        let exchange = async move {
            if use_h2 && let Some(h2) = &self.h2 {
                match timed(req, timeout, sent, stall, |r| h2.exchange(r, timeout)).await {
                    Ok(Ok(resp)) => return Ok(resp.map(|b| ResponseBody::new(Kind::H2(b)))),
                    Ok(Err(e)) => return Err(e),
                    // ALPN chose HTTP/1.1: the request was not sent, the pool takes it.
                    Err(r) => req = r,
                }
            }
            *req.version_mut() = Version::HTTP_11;
            let h1 = |r| async move { Ok(self.h1.exchange(r, timeout, sent).await) };
            match timed(req, timeout, sent, stall, h1).await {
                Ok(r) => r.map(|resp| resp.map(|b| ResponseBody::new(Kind::H1(b)))),
                // The pool never gives a request back.
                Err(_) => Err(SendError::Protocol("request not sent".into())),
            }
        };
        let Some(deadline) = deadline else {
            return exchange.await;
        };
        tokio::select! {
            biased;
            r = exchange => r.map(|resp| resp.map(|mut b| {
                b.deadline = Some(Box::pin(tokio::time::sleep_until(deadline)));
                b
            })),
            () = tokio::time::sleep_until(deadline) => Err(SendError::Deadline),
        }
    }

    /// [`Upstream::send_from`] from now.
    pub async fn send(
        &self,
        req: Request<B>,
        timeout: Duration,
    ) -> Result<Response<ResponseBody<B>>, SendError> {
        self.send_from(req, timeout, Instant::now()).await
    }

    /// The longest pause allowed inside a request body.
    pub fn body_stall_timeout(&self) -> Duration {
        self.body_stall_timeout
    }

    /// Connections open now, HTTP/1.1 and HTTP/2: connecting, busy or idle (for tests).
    pub fn open_connections(&self) -> usize {
        self.h1.open_connections()
    }

    /// HTTP/2 connections in the set (for tests).
    pub fn h2_connections(&self) -> usize {
        self.h2.as_ref().map_or(0, h2::Http2::len)
    }
}

/// What an exchange on one protocol gave: the response or a failure, or, from the HTTP/2
/// set of an `https://` upstream whose ALPN chose HTTP/1.1, the request back unsent.
type Exchanged<B, R> = Result<Result<R, SendError>, Request<B>>;

/// `req` with its body watched (its end, failure and pauses), and the watch; `None` for a
/// request without a body (most), which needs none.
fn watched<B: Body>(
    req: Request<B>,
    stall_timeout: Duration,
) -> (Request<RequestBody<B>>, Option<Arc<Progress>>) {
    let (parts, body) = req.into_parts();
    let progress = (!body.is_end_stream()).then(|| Arc::new(Progress::default()));
    let body = RequestBody {
        inner: body,
        progress: progress.clone(),
        stall: None,
        stall_timeout,
    };
    (Request::from_parts(parts, body), progress)
}

/// The response timer: `timeout` from the end of the request body (from `sent` for a
/// request without one).
async fn response_timer(progress: Option<&Progress>, timeout: Duration, sent: Instant) {
    match progress {
        Some(p) => {
            p.ended.notified().await;
            tokio::time::sleep(timeout).await;
        }
        None => tokio::time::sleep_until((sent + timeout).into()).await,
    }
}

/// An exchange's result, with a failure hyper reports as the connection's put down to the
/// client's body when the body failed first.
fn settled<R>(
    result: Result<R, SendError>,
    progress: Option<Arc<Progress>>,
) -> Result<R, SendError> {
    let fault = progress.and_then(|p| p.fault.lock().ok()?.take());
    match (result, fault) {
        (Err(SendError::Protocol(_) | SendError::Closed(_)), Some(fault)) => {
            Err(SendError::ClientBody(fault))
        }
        (other, _) => other,
    }
}

/// Runs `exchange` on `req` with its body watched, under the response timer (the HTTP/2 set,
/// and the HTTP/1.1 pool after a deadline or an ALPN answer).
async fn timed<B, R, F, Fut>(
    req: Request<B>,
    timeout: Duration,
    sent: Instant,
    stall_timeout: Duration,
    exchange: F,
) -> Exchanged<B, R>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
    F: FnOnce(Request<RequestBody<B>>) -> Fut,
    Fut: std::future::Future<Output = Exchanged<RequestBody<B>, R>>,
{
    let (req, progress) = watched(req, stall_timeout);
    let exchange = exchange(req);
    let result = tokio::select! {
        biased;
        r = exchange => r,
        () = response_timer(progress.as_deref(), timeout, sent) => Ok(Err(SendError::Timeout)),
    };
    match result {
        Ok(r) => Ok(settled(r, progress)),
        Err(back) => Err(back.map(|b| b.inner)),
    }
}

/// The value of a `grpc-timeout` header: 1 to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`,
/// `n`). Anything else is no deadline, as Envoy reads it.
pub fn grpc_timeout(v: &HeaderValue) -> Option<Duration> {
    let b = v.as_bytes();
    let (unit, digits) = b.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// How far the client's request body has been sent: its end starts the response timer.
#[derive(Debug, Default)]
struct Progress {
    ended: Notify,
    /// Why the body failed, when the client's framing, connection or pace did.
    fault: Mutex<Option<BodyFault>>,
}

/// The client's body stalled (see [`BodyFault::Stalled`]).
#[derive(Debug)]
struct Stalled;

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client paused its request body for too long")
    }
}

impl std::error::Error for Stalled {}

/// The request body as sent upstream: the client's body, watched for its end, its failure and
/// its pauses. Frames pass as they are, trailers included.
#[derive(Debug)]
pub struct RequestBody<B> {
    inner: B,
    /// `None` for a request that had no body.
    progress: Option<Arc<Progress>>,
    /// Armed when the client has nothing to give while it is asked for more: the stall
    /// clock counts only the client's silence, not time the upstream took to read.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    stall_timeout: Duration,
}

impl<B> RequestBody<B> {
    fn fail(&self, fault: BodyFault) {
        if let Some(p) = &self.progress
            && let Ok(mut f) = p.fault.lock()
        {
            f.get_or_insert(fault);
        }
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                if this.progress.is_none() {
                    return Poll::Pending;
                }
                let timeout = this.stall_timeout;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if stall.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.fail(BodyFault::Stalled);
                Poll::Ready(Some(Err(Box::new(Stalled))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.stall = None;
                if let Some(p) = &this.progress
                    && this.inner.is_end_stream()
                {
                    p.ended.notify_one();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                if let Some(p) = &this.progress {
                    p.ended.notify_one();
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                let e: BoxError = e.into();
                this.fail(BodyFault::Invalid(e.to_string()));
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Debug)]
enum Kind<B> {
    H1(PooledBody<B>),
    H2(h2::StreamBody<B>),
}

/// The upstream's response body, as the client gets it: data and trailers as they come. With
/// a `grpc-timeout`, the body ends with an error when the deadline passes (the client's stream
/// is reset, as Envoy resets it).
#[derive(Debug)]
pub struct ResponseBody<B = Incoming> {
    kind: Kind<B>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> ResponseBody<B> {
    fn new(kind: Kind<B>) -> ResponseBody<B> {
        ResponseBody {
            kind,
            deadline: None,
        }
    }
}

/// The `grpc-timeout` deadline passed while the response streamed.
#[derive(Debug)]
pub struct DeadlinePassed;

impl std::fmt::Display for DeadlinePassed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("downstream duration timeout")
    }
}

impl std::error::Error for DeadlinePassed {}

impl<B> Body for ResponseBody<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(d) = &mut this.deadline
            && d.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Some(Err(Box::new(DeadlinePassed))));
        }
        match &mut this.kind {
            Kind::H1(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
            Kind::H2(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::H1(b) => b.is_end_stream(),
            Kind::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::H1(b) => b.size_hint(),
            Kind::H2(b) => b.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use http_body_util::{BodyExt, Empty, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    use super::*;

    /// An h2c server allowing `max_streams` streams per connection, answering after 300 ms;
    /// counts connections and the most streams in flight at once.
    async fn h2_server(
        max_streams: u32,
    ) -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (c, m) = (conns.clone(), most.clone());
        let now = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                let (m, now) = (m.clone(), now.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                        let (m, now) = (m.clone(), now.clone());
                        async move {
                            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                            m.fetch_max(n, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            now.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from("ok"),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(max_streams)
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        (addr, conns, most)
    }

    fn h2c_client(addr: std::net::SocketAddr, max_connections: usize) -> Upstream<Empty<Bytes>> {
        let limits = Limits {
            max_upstream_connections: max_connections,
            ..Limits::default()
        };
        let url = format!("http://{addr}").parse().unwrap();
        Upstream::new(
            &url,
            UpstreamProtocol::H2c,
            &UpstreamTls::default(),
            &limits,
        )
        .unwrap()
    }

    fn get() -> Request<Empty<Bytes>> {
        Request::builder()
            .uri("/")
            .header("host", "upstream.test")
            .body(Empty::new())
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn h2_requests_share_connections_up_to_the_upstreams_stream_limit_and_the_bound() {
        let (addr, conns, most) = h2_server(2).await;
        let up = Arc::new(h2c_client(addr, 2));
        // The upstream's SETTINGS are known after a first request.
        let r = up.send(get(), Duration::from_secs(5)).await.unwrap();
        assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "ok");
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let up = up.clone();
                tokio::spawn(async move {
                    let r = up.send(get(), Duration::from_secs(5)).await?;
                    let body = r
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| SendError::Protocol(e.to_string()))?;
                    Ok::<_, SendError>(body.to_bytes())
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), "ok");
        }
        // Two connections (the bound), two streams on each at most: the other two requests
        // waited for a stream, and every one was answered (a stream the upstream refused,
        // REFUSED_STREAM, went again).
        assert_eq!(conns.load(Ordering::SeqCst), 2);
        assert!(most.load(Ordering::SeqCst) <= 4, "{most:?}");
        assert_eq!(up.h2_connections(), 2);
        assert!(up.open_connections() <= 2);
    }

    #[test]
    fn grpc_timeouts_as_envoy_reads_them() {
        let t = |s: &'static str| grpc_timeout(&HeaderValue::from_static(s));
        assert_eq!(t("500m"), Some(Duration::from_millis(500)));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("3M"), Some(Duration::from_secs(180)));
        assert_eq!(t("10u"), Some(Duration::from_micros(10)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "123456789m", "5s", "-1S", "1.5S", " 5S", "5"] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }
}
