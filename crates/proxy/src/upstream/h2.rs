//! The HTTP/2 connections to the one upstream (h2c, or h2 chosen by ALPN): each carries many
//! requests at once.
//!
//! Owns: choosing a connection with room for one more stream (fewer in flight than the
//! upstream's `SETTINGS_MAX_CONCURRENT_STREAMS`), opening a new one when none has room (one
//! at a time, each holding one of the bound's slots shared with the HTTP/1.1 pool), waiting
//! for room when every slot is taken (the same overflow rule as the HTTP/1.1 pool), dropping
//! connections that closed or received a GOAWAY, sending again on another connection a request
//! the upstream did not process (never written, refused, or above a GOAWAY's last stream), and
//! the request's head in HTTP/2 form (`:authority` from `Host`). Does not own connecting
//! ([`super::Connector`]), the timers ([`super::timed`]) or the failure answers.
//!
//! Flow control, not buffering: hyper's adaptive window sizes each stream's receive window to
//! the measured bandwidth-delay product (up to 16 MiB, Envoy's stream window); a client that
//! reads slowly leaves the window closed, so the upstream stops sending and nothing piles up
//! here.
//!
//! Before an upstream's first SETTINGS frame arrives, a new connection is taken to allow 100
//! streams (RFC 9113's recommended minimum, hyper's default); requests beyond the real limit
//! in that first round trip wait inside the connection for a stream to end.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, Method, Request, Response, Uri, Version, header};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;

use super::{
    ALPN_H2, ALPN_HTTP1, BoxError, Connector, Exchanged, Pending, RequestBody, SendError, Waiting,
    describe,
};

/// Streams a new connection is taken to allow until the upstream's SETTINGS say otherwise.
const INITIAL_MAX_STREAMS: usize = 100;
/// Times a request the upstream did not process is sent again (each on another connection).
const MAX_ATTEMPTS: usize = 4;

/// The HTTP/2 connections, for requests with bodies of type `B`.
#[derive(Debug)]
pub(super) struct Http2<B = Incoming> {
    inner: Arc<Set<B>>,
}

#[derive(Debug)]
struct Set<B> {
    connector: Arc<Connector>,
    scheme: Scheme,
    /// `:authority` of requests without a `Host`.
    authority: Authority,
    conns: Mutex<Vec<Arc<Conn<B>>>>,
    /// One connection is opened at a time: requests that arrive meanwhile wait for it rather
    /// than open one each.
    connecting: tokio::sync::Mutex<()>,
    slots: Arc<Semaphore>,
    /// Requests waiting for room, shared with the HTTP/1.1 pool.
    pending: Arc<Pending>,
    /// Signalled when a stream ends, a connection opens or one closes.
    room: Arc<Notify>,
    /// For `https://`: what ALPN chose, shared with the router.
    alpn: Option<Arc<AtomicU8>>,
}

/// Reads the upstream's `SETTINGS_MAX_CONCURRENT_STREAMS` as it is now from hyper's
/// connection (hyper reads frames in a task of its own, so only asking gives the current
/// value); `None` once the connection is gone.
struct MaxStreams(Box<dyn Fn() -> Option<usize> + Send + Sync>);

impl std::fmt::Debug for MaxStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MaxStreams")
    }
}

#[derive(Debug)]
struct Conn<B> {
    sender: http2::SendRequest<Outgoing<B>>,
    in_flight: AtomicUsize,
    current_max_streams: MaxStreams,
    /// The last value read, for when the connection is gone.
    max_streams: AtomicUsize,
    /// A GOAWAY arrived: no new streams; closed once its streams have ended.
    draining: AtomicBool,
    task: AbortHandle,
}

impl<B> Conn<B> {
    fn usable(&self) -> bool {
        !self.draining.load(Ordering::Relaxed) && !self.sender.is_closed()
    }

    fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0 {
            self.task.abort();
        }
    }
}

/// One stream counted on its connection while it lives.
#[derive(Debug)]
struct InFlight<B> {
    conn: Arc<Conn<B>>,
    room: Arc<Notify>,
}

impl<B> Drop for InFlight<B> {
    fn drop(&mut self) {
        let left = self.conn.in_flight.fetch_sub(1, Ordering::AcqRel) - 1;
        if left == 0 && self.conn.draining.load(Ordering::Relaxed) {
            self.conn.task.abort();
        }
        self.room.notify_waiters();
    }
}

/// What the connection search found.
enum Found<B> {
    Stream(InFlight<B>),
    /// `https://` only: ALPN chose HTTP/1.1.
    Http1,
}

impl<B> Http2<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    pub(super) fn new(
        connector: Arc<Connector>,
        scheme: Scheme,
        authority: Authority,
        slots: Arc<Semaphore>,
        pending: Arc<Pending>,
        alpn: Option<Arc<AtomicU8>>,
    ) -> Http2<B> {
        Http2 {
            inner: Arc::new(Set {
                connector,
                scheme,
                authority,
                conns: Mutex::new(Vec::new()),
                connecting: tokio::sync::Mutex::new(()),
                slots,
                pending,
                room: Arc::new(Notify::new()),
                alpn,
            }),
        }
    }

    /// Connections in the set (open, not draining).
    pub(super) fn len(&self) -> usize {
        self.inner
            .conns
            .lock()
            .map_or(0, |c| c.iter().filter(|c| c.usable()).count())
    }

    /// Sends `req` on a connection with room; `timeout` bounds the wait for room. Gives the
    /// request back, unsent, when ALPN chose HTTP/1.1.
    pub(super) async fn exchange(
        &self,
        req: Request<RequestBody<B>>,
        timeout: Duration,
    ) -> Exchanged<RequestBody<B>, Response<StreamBody<B>>> {
        let set = &self.inner;
        let (parts, body) = req.into_parts();
        let head = match set.head(parts) {
            Ok(h) => h,
            Err(e) => return Ok(Err(e)),
        };
        let slot = Arc::new(Mutex::new(Slot {
            body: Some(body),
            replay: Some(Vec::new()),
            bytes: 0,
            complete: false,
        }));
        let mut replaying = None;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = String::new();
        for _ in 0..MAX_ATTEMPTS {
            let stream = match set.find(deadline).await {
                Ok(Found::Stream(s)) => s,
                Ok(Found::Http1) => {
                    let body = slot.lock().ok().and_then(|mut s| s.body.take());
                    return match body {
                        Some(body) => Err(head.rebuild(body)),
                        None => Ok(Err(SendError::Protocol("request body lost".into()))),
                    };
                }
                Err(e) => return Ok(Err(e)),
            };
            let req = head.request(Outgoing {
                slot: slot.clone(),
                body: None,
                replaying,
            });
            let mut sender = stream.conn.sender.clone();
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    return Ok(Ok(resp.map(|inner| StreamBody {
                        inner,
                        _stream: stream,
                    })));
                }
                Err(mut e) => {
                    let unsent = e.take_message().is_some();
                    let error = e.into_error();
                    last = describe(&error);
                    // Sent again only when the upstream cannot have processed it (never
                    // written, or refused: RFC 9113 §8.7) and its body can be sent again: not
                    // read yet, or read whole and kept (at most `REPLAY_LIMIT` bytes).
                    let (untouched, replayable) = slot.lock().map_or((false, false), |s| {
                        (s.body.is_some(), s.complete && s.replay.is_some())
                    });
                    let refusal = refusal(&error);
                    if !((untouched || replayable) && (unsent || refusal.is_some())) {
                        return Ok(Err(SendError::Protocol(last)));
                    }
                    replaying = (!untouched).then_some(0);
                    tracing::debug!(error = %last, "upstream did not process the request; sending it again");
                    // A connection that could not take the request, or that is going away,
                    // takes no more; one stream refused leaves its connection as it is.
                    if unsent || refusal == Some(Refusal::GoAway) {
                        stream.conn.drain();
                    }
                }
            }
        }
        Ok(Err(SendError::Protocol(last)))
    }
}

/// How the upstream refused a stream without processing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// `RST_STREAM` with `REFUSED_STREAM` (RFC 9113 §8.7): this stream only.
    Stream,
    /// A GOAWAY whose last stream id is below it (h2 fails those streams with the GOAWAY
    /// itself): the connection takes no new streams.
    GoAway,
}

fn refusal(e: &hyper::Error) -> Option<Refusal> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2e) = s.downcast_ref::<::h2::Error>() {
            if h2e.is_go_away() && h2e.is_remote() {
                return Some(Refusal::GoAway);
            }
            if h2e.reason() == Some(::h2::Reason::REFUSED_STREAM) {
                return Some(Refusal::Stream);
            }
            return None;
        }
        source = s.source();
    }
    None
}

/// A request's head, kept to send it again.
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Head {
    fn request<X>(&self, body: X) -> Request<X> {
        let mut r = Request::new(body);
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.version_mut() = Version::HTTP_2;
        *r.headers_mut() = self.headers.clone();
        r
    }

    /// The request for the HTTP/1.1 pool: origin-form, `Host` back.
    fn rebuild<X>(self, body: X) -> Request<X> {
        let mut r = Request::new(body);
        if let Some(a) = self.uri.authority()
            && let Ok(v) = http::HeaderValue::from_str(a.as_str())
        {
            let mut headers = self.headers;
            headers.insert(header::HOST, v);
            *r.headers_mut() = headers;
        } else {
            *r.headers_mut() = self.headers;
        }
        *r.method_mut() = self.method;
        *r.uri_mut() = self
            .uri
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
        r
    }
}

impl<B> Set<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// The head in HTTP/2 form: `:scheme` and `:authority` (from `Host`, which goes) in the URI.
    fn head(&self, parts: http::request::Parts) -> Result<Head, SendError> {
        let mut headers = parts.headers;
        let authority = match headers.remove(header::HOST) {
            Some(h) => Authority::try_from(h.as_bytes())
                .map_err(|e| SendError::Protocol(format!("Host is not an authority: {e}")))?,
            None => self.authority.clone(),
        };
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(authority);
        uri.path_and_query = parts.uri.path_and_query().cloned();
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        let uri = Uri::from_parts(uri).map_err(|e| SendError::Protocol(e.to_string()))?;
        Ok(Head {
            method: parts.method,
            uri,
            headers,
        })
    }

    /// A connection with room for one more stream, counted on it.
    fn pick(self: &Arc<Self>) -> Option<InFlight<B>> {
        let mut conns = self.conns.lock().ok()?;
        conns.retain(|c| {
            let keep = c.usable();
            if !keep && c.in_flight.load(Ordering::Acquire) == 0 {
                c.task.abort();
            }
            keep
        });
        let conn = conns.iter().find(|c| {
            let max = match (c.current_max_streams.0)() {
                Some(max) => {
                    c.max_streams.store(max, Ordering::Relaxed);
                    max
                }
                None => c.max_streams.load(Ordering::Relaxed),
            };
            c.in_flight.load(Ordering::Relaxed) < max.max(1)
        })?;
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(InFlight {
            conn: conn.clone(),
            room: self.room.clone(),
        })
    }

    /// A stream on a connection with room: an open one, else a new one, else the first to
    /// have room before `deadline`.
    async fn find(self: &Arc<Self>, deadline: tokio::time::Instant) -> Result<Found<B>, SendError> {
        let mut waiting: Option<Waiting<'_>> = None;
        loop {
            // Registered before looking, so that room made meanwhile is not missed.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if let Some(s) = self.pick() {
                return Ok(Found::Stream(s));
            }
            // One request at a time looks for a slot and connects; the others wait for the
            // connection it makes, without holding a slot meanwhile.
            let gate = self.connecting.lock().await;
            if let Some(s) = self.pick() {
                return Ok(Found::Stream(s));
            }
            if let Ok(slot) = self.slots.clone().try_acquire_owned() {
                return self.connect(slot).await;
            }
            drop(gate);
            if waiting.is_none() {
                waiting = Some(self.pending.join()?);
            }
            let slot = tokio::select! {
                () = room => continue,
                slot = self.slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return Err(SendError::Overflow),
                },
                () = tokio::time::sleep_until(deadline) => return Err(SendError::Timeout),
            };
            let _gate = self.connecting.lock().await;
            if let Some(s) = self.pick() {
                return Ok(Found::Stream(s));
            }
            return self.connect(slot).await;
        }
    }

    /// Opens a connection that holds `slot` until it closes, with one stream counted on it.
    async fn connect(self: &Arc<Self>, slot: OwnedSemaphorePermit) -> Result<Found<B>, SendError> {
        let (stream, h2) = self.connector.connect().await?;
        if let Some(alpn) = &self.alpn {
            if !h2 {
                alpn.store(ALPN_HTTP1, Ordering::Relaxed);
                return Ok(Found::Http1);
            }
            alpn.store(ALPN_H2, Ordering::Relaxed);
        }
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // Receive windows follow the measured bandwidth-delay product (see the module
            // docs), up to 16 MiB per stream.
            .adaptive_window(true)
            .initial_max_send_streams(INITIAL_MAX_STREAMS)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Protocol(describe(&e)))?;
        // The task holds the connection; the reader only a weak reference, so that aborting
        // the task closes the connection at once.
        let driven = Arc::new(Mutex::new(Box::pin(conn)));
        let weak = Arc::downgrade(&driven);
        let current_max_streams = MaxStreams(Box::new(move || {
            let conn = weak.upgrade()?;
            // Held by the task only while it polls hyper's dispatcher, which does not wait.
            let conn = conn.lock().ok()?;
            Some(conn.current_max_send_streams())
        }));
        let room = self.room.clone();
        let task = tokio::spawn(async move {
            let _slot = slot;
            let ended = std::future::poll_fn(|cx| match driven.lock() {
                Ok(mut conn) => conn.as_mut().poll(cx),
                Err(_) => Poll::Ready(Ok(())),
            })
            .await;
            if let Err(e) = ended {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
            }
            drop(_slot);
            room.notify_waiters();
        })
        .abort_handle();
        let conn = Arc::new(Conn {
            sender,
            in_flight: AtomicUsize::new(1),
            current_max_streams,
            max_streams: AtomicUsize::new(INITIAL_MAX_STREAMS),
            draining: AtomicBool::new(false),
            task,
        });
        if let Ok(mut conns) = self.conns.lock() {
            conns.push(conn.clone());
        }
        self.room.notify_waiters();
        Ok(Found::Stream(InFlight {
            conn,
            room: self.room.clone(),
        }))
    }
}

/// Request bodies are kept for sending again up to this size (a refused stream's request goes
/// to another connection whole); a larger body is not kept, and its request is not sent again
/// once its body was read. Envoy keeps a request for its retries up to its buffer limit.
const REPLAY_LIMIT: usize = 64 * 1024;

/// A request body shared by the attempts to send it: the body until hyper first polls it, and
/// what was read of it, for another attempt.
#[derive(Debug)]
pub(super) struct Slot<B> {
    body: Option<RequestBody<B>>,
    /// The frames read so far; `None` once they exceed [`REPLAY_LIMIT`].
    replay: Option<Vec<Kept>>,
    bytes: usize,
    /// The body was read to its end.
    complete: bool,
}

/// A frame kept for another attempt (a `Frame` cannot be cloned).
#[derive(Debug)]
enum Kept {
    Data(Bytes),
    Trailers(HeaderMap),
}

impl Kept {
    fn frame(&self) -> Frame<Bytes> {
        match self {
            Kept::Data(d) => Frame::data(d.clone()),
            Kept::Trailers(t) => Frame::trailers(t.clone()),
        }
    }
}

impl<B> Slot<B> {
    fn keep(&mut self, frame: &Frame<Bytes>) {
        let Some(replay) = &mut self.replay else {
            return;
        };
        let kept = if let Some(d) = frame.data_ref() {
            self.bytes += d.len();
            Kept::Data(d.clone())
        } else if let Some(t) = frame.trailers_ref() {
            Kept::Trailers(t.clone())
        } else {
            return;
        };
        if self.bytes > REPLAY_LIMIT {
            self.replay = None;
        } else {
            replay.push(kept);
        }
    }
}

/// The request body given to hyper: taken from a slot shared with the sender on its first
/// poll, so that a request whose body was never read can be sent again; or, on another
/// attempt, the frames kept of a body read whole.
#[derive(Debug)]
pub(super) struct Outgoing<B> {
    slot: Arc<Mutex<Slot<B>>>,
    body: Option<RequestBody<B>>,
    /// Sending the kept frames again: the next one's index.
    replaying: Option<usize>,
}

impl<B> Body for Outgoing<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(i) = this.replaying {
            this.replaying = Some(i + 1);
            let frame = this
                .slot
                .lock()
                .ok()
                .and_then(|s| s.replay.as_ref()?.get(i).map(Kept::frame));
            return Poll::Ready(frame.map(Ok));
        }
        if this.body.is_none() {
            this.body = this.slot.lock().ok().and_then(|mut s| s.body.take());
        }
        let Some(body) = &mut this.body else {
            return Poll::Ready(None);
        };
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                let frame = frame.map_data(|mut d| d.copy_to_bytes(d.remaining()));
                // hyper ends the stream without polling again once the body says it has ended.
                let ended = body.is_end_stream();
                if let Ok(mut s) = this.slot.lock() {
                    s.keep(&frame);
                    s.complete = ended;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => {
                if let Ok(mut s) = this.slot.lock() {
                    s.complete = true;
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if let Some(i) = self.replaying {
            return self
                .slot
                .lock()
                .map_or(true, |s| s.replay.as_ref().is_none_or(|r| i >= r.len()));
        }
        match &self.body {
            Some(b) => b.is_end_stream(),
            None => self
                .slot
                .lock()
                .map_or(true, |s| s.body.as_ref().is_none_or(Body::is_end_stream)),
        }
    }

    fn size_hint(&self) -> SizeHint {
        if self.replaying.is_some() {
            return self.slot.lock().map_or_else(
                |_| SizeHint::default(),
                |s| SizeHint::with_exact(s.bytes as u64),
            );
        }
        match &self.body {
            Some(b) => b.size_hint(),
            None => self.slot.lock().map_or_else(
                |_| SizeHint::with_exact(0),
                |s| {
                    s.body
                        .as_ref()
                        .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
                },
            ),
        }
    }
}

/// A response body from an HTTP/2 upstream; its stream counts on its connection until the
/// body ends or is dropped (then hyper resets the stream, the connection stays).
#[derive(Debug)]
pub(crate) struct StreamBody<B> {
    inner: Incoming,
    _stream: InFlight<B>,
}

impl<B> Body for StreamBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
