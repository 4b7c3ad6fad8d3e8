//! The HTTP/2 connections to the one upstream (h2c, or h2 chosen by ALPN): each carries many
//! requests at once, driven with the `h2` crate directly.
//!
//! Owns: choosing a connection with room for one more stream (fewer in flight than the
//! upstream's `SETTINGS_MAX_CONCURRENT_STREAMS`), opening a new one when none has room (one
//! at a time, each holding one of the bound's slots shared with the HTTP/1.1 pool), waiting
//! for room when every slot is taken (the same overflow rule as the HTTP/1.1 pool), dropping
//! connections that closed or received a GOAWAY, sending again on another connection a request
//! the upstream did not process, the request's head in HTTP/2 form (`:authority` from `Host`,
//! no connection-specific fields, `te` only as `trailers`), and moving each exchange's body
//! frames, trailers included, both ways. Does not own connecting ([`super::Connector`]), the
//! timers ([`super::timed`]) or the failure answers.
//!
//! Sent again, from facts about the request's own stream and never from an error's text:
//! - the stream was never opened (the connection had closed, or a GOAWAY had arrived, before
//!   it was), or
//! - the upstream refused it: `RST_STREAM` with `REFUSED_STREAM`, or a GOAWAY whose last
//!   stream id is below the stream's (RFC 9113 §6.8, §8.7; `h2` gives the GOAWAY itself as the
//!   error only to those streams).
//!
//! Any other failure after the stream opened (a reset, the connection closing, a GOAWAY that
//! covers the stream) may come after the upstream processed the request: it is answered as a
//! failure, never sent again. A request whose body was read is sent again only when every frame
//! read was kept (at most [`REPLAY_LIMIT`] bytes); then the kept frames go first and the rest of
//! the body follows. At most [`MAX_ATTEMPTS`] attempts.
//!
//! Flow control, not buffering: each stream's receive window is [`STREAM_WINDOW`], released
//! as the client takes the data, so a client that reads slowly leaves the window closed and
//! the upstream stops sending; the connection's window ([`CONNECTION_WINDOW`]) lets that many
//! bytes wait for slow readers before the connection's other streams wait too. A request body
//! is read from the client only when `h2` has room to send it (at most `MAX_SEND_BUFFER`
//! bytes queued per connection).
//!
//! Before an upstream's first SETTINGS frame arrives, a new connection is taken to allow 100
//! streams (RFC 9113's recommended minimum); a stream beyond the real limit in that first round
//! trip waits inside `h2` for a stream to end before it is opened.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ::h2::client::SendRequest;
use ::h2::{RecvStream, SendStream};
use bytes::{Buf, Bytes};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version, header};
use hyper::body::{Body, Frame, SizeHint};
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
/// Each stream's receive window: what an upstream may send ahead of a client that does not
/// read (Envoy's per-connection buffer limit, what Envoy holds for such a client).
const STREAM_WINDOW: u32 = 1024 * 1024;
/// The connection's receive window: 32 streams with slow readers fill it before the others
/// on the connection wait.
const CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;
/// Request body bytes queued per connection before the clients' bodies are read further.
const MAX_SEND_BUFFER: usize = 1024 * 1024;
/// The largest response head taken (what hyper took before).
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// The HTTP/2 connections, for requests with bodies of type `B`.
#[derive(Debug)]
pub(super) struct Http2<B> {
    inner: Arc<Set>,
    _body: std::marker::PhantomData<fn(B)>,
}

#[derive(Debug)]
struct Set {
    connector: Arc<Connector>,
    scheme: Scheme,
    /// `:authority` of requests without a `Host`.
    authority: Authority,
    conns: Mutex<Vec<Arc<Conn>>>,
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

#[derive(Debug)]
struct Conn {
    send: SendRequest<Bytes>,
    in_flight: AtomicUsize,
    /// No new streams: a stream could not be opened on it, or it was refused by a GOAWAY;
    /// closed once its streams have ended.
    draining: AtomicBool,
    /// The connection ended (set by its task).
    closed: Arc<AtomicBool>,
    task: AbortHandle,
}

impl Conn {
    /// Open, and able to open a stream: `h2` refuses new streams once a GOAWAY arrived.
    fn usable(&self) -> bool {
        if self.draining.load(Ordering::Relaxed) || self.closed.load(Ordering::Acquire) {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // A clone has no stream of its own waiting to open: this asks only whether the
        // connection takes new streams.
        !matches!(self.send.clone().poll_ready(&mut cx), Poll::Ready(Err(_)))
    }

    fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0 {
            self.task.abort();
        }
    }

    fn max_streams(&self) -> usize {
        self.send.current_max_send_streams()
    }
}

/// One stream counted on its connection while it lives.
#[derive(Debug)]
struct InFlight {
    conn: Arc<Conn>,
    room: Arc<Notify>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let left = self.conn.in_flight.fetch_sub(1, Ordering::AcqRel) - 1;
        if left == 0 && self.conn.draining.load(Ordering::Relaxed) {
            self.conn.task.abort();
        }
        self.room.notify_waiters();
    }
}

/// What the connection search found.
enum Found {
    Stream(InFlight),
    /// `https://` only: ALPN chose HTTP/1.1.
    Http1,
}

/// Why the upstream did not process a request (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NotProcessed {
    /// No stream was opened for it: the connection had closed or was going away.
    NeverOpened,
    /// `RST_STREAM` with `REFUSED_STREAM`: this stream only.
    Refused,
    /// A GOAWAY whose last stream id is below the stream's: the connection takes no new
    /// streams.
    AboveGoAway,
}

/// The end of one attempt.
enum Attempt<B> {
    Answered(Response<StreamBody<B>>),
    /// Not processed by the upstream: may go again (the error, for the log).
    NotProcessed(NotProcessed, String),
    Failed(SendError),
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
            _body: std::marker::PhantomData,
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
        let head = match set.head(parts, &body) {
            Ok(h) => h,
            Err(e) => return Ok(Err(e)),
        };
        let mut source = Source::new(body);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = String::new();
        for _ in 0..MAX_ATTEMPTS {
            let stream = match set.find(deadline).await {
                Ok(Found::Stream(s)) => s,
                Ok(Found::Http1) => {
                    return match source.untouched() {
                        Some(body) => Err(head.rebuild(body)),
                        None => Ok(Err(SendError::Protocol("request body lost".into()))),
                    };
                }
                Err(e) => return Ok(Err(e)),
            };
            match attempt(&head, &mut source, stream).await {
                Attempt::Answered(resp) => return Ok(Ok(resp)),
                Attempt::Failed(e) => return Ok(Err(e)),
                Attempt::NotProcessed(why, error) => {
                    if !source.replayable() {
                        return Ok(Err(SendError::Protocol(error)));
                    }
                    tracing::debug!(?why, %error, "upstream did not process the request; sending it again");
                    last = error;
                }
            }
        }
        Ok(Err(SendError::Protocol(last)))
    }
}

/// One attempt on `stream`'s connection: the stream opened, the body sent while the response
/// head is awaited, and the outcome decided from what happened to this stream.
async fn attempt<B>(head: &Head, source: &mut Source<B>, stream: InFlight) -> Attempt<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let conn = stream.conn.clone();
    // Waits while a stream of this handle is still to be opened (none: a fresh clone), and
    // fails once the connection takes no new streams.
    let opened = match conn.send.clone().ready().await {
        Ok(mut send) => send.send_request(head.request(), source.is_empty()),
        Err(e) => Err(e),
    };
    let (response, send) = match opened {
        Ok(o) => o,
        Err(e) => {
            conn.drain();
            return Attempt::NotProcessed(NotProcessed::NeverOpened, describe(&e));
        }
    };
    let mut pump = (!source.is_empty()).then(|| Pump { send, next: 0 });
    let mut response = response;
    let answered = std::future::poll_fn(|cx| {
        if let Some(p) = &mut pump {
            match p.poll(source, cx) {
                Poll::Ready(Ok(())) => pump = None,
                Poll::Ready(Err(Stop::Body(e))) => {
                    p.send.send_reset(::h2::Reason::CANCEL);
                    return Poll::Ready(Err(Unanswered::Body(e)));
                }
                // The stream ended for sending: its response (or its error) says why.
                Poll::Ready(Err(Stop::Stream)) => pump = None,
                Poll::Pending => {}
            }
        }
        Pin::new(&mut response).poll(cx).map_err(Unanswered::Stream)
    })
    .await;
    match answered {
        Ok(resp) => {
            let id = response.stream_id();
            // The body goes on after the head (an upstream may answer first), in a task of
            // its own that the response body ends when dropped.
            let pump = pump.map(|mut p| {
                let mut source = source.take();
                tokio::spawn(async move {
                    if let Err(Stop::Body(_)) =
                        std::future::poll_fn(|cx| p.poll(&mut source, cx)).await
                    {
                        p.send.send_reset(::h2::Reason::CANCEL);
                    }
                })
                .abort_handle()
            });
            tracing::trace!(stream = ?id, "upstream answered");
            let remaining = content_length(resp.headers());
            Attempt::Answered(resp.map(|recv| StreamBody::new(recv, remaining, pump, stream)))
        }
        Err(Unanswered::Body(e)) => Attempt::Failed(SendError::Protocol(describe(&*e))),
        Err(Unanswered::Stream(e)) => match not_processed(&e) {
            Some(why) => {
                if why == NotProcessed::AboveGoAway {
                    conn.drain();
                }
                Attempt::NotProcessed(why, describe(&e))
            }
            None => Attempt::Failed(SendError::Protocol(describe(&e))),
        },
    }
}

/// Whether a stream's own error proves the upstream did not process its request.
fn not_processed(e: &::h2::Error) -> Option<NotProcessed> {
    // `h2` fails a stream with the remote's GOAWAY only when the stream's id is above the
    // GOAWAY's last stream id; a stream the GOAWAY covers fails later with the connection's
    // end (a broken pipe, a reset), which is no proof.
    if e.is_go_away() && e.is_remote() {
        return Some(NotProcessed::AboveGoAway);
    }
    if e.is_reset() && e.is_remote() && e.reason() == Some(::h2::Reason::REFUSED_STREAM) {
        return Some(NotProcessed::Refused);
    }
    None
}

/// Why a body pump stopped.
enum Stop {
    /// The client's body failed (its fault, recorded by [`RequestBody`]).
    Body(BoxError),
    /// The stream no longer takes data (reset, or its connection ended).
    Stream,
}

/// Why an attempt got no response head.
enum Unanswered {
    /// The client's body failed.
    Body(BoxError),
    /// The stream failed.
    Stream(::h2::Error),
}

/// A request body for every attempt: the frames read so far, kept while they fit in
/// [`REPLAY_LIMIT`], and the rest of the client's body.
#[derive(Debug)]
struct Source<B> {
    /// `None` once read to its end.
    body: Option<RequestBody<B>>,
    /// Every frame read so far; `None` once they exceed [`REPLAY_LIMIT`].
    kept: Option<Vec<Kept>>,
    bytes: usize,
    /// A frame was read.
    touched: bool,
}

impl<B> Source<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    fn new(body: RequestBody<B>) -> Source<B> {
        Source {
            body: Some(body),
            kept: Some(Vec::new()),
            bytes: 0,
            touched: false,
        }
    }

    /// Nothing to send: the request's HEADERS end its stream.
    fn is_empty(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
            && self.kept.as_ref().is_some_and(Vec::is_empty)
    }

    /// Everything read so far can be sent again.
    fn replayable(&self) -> bool {
        self.kept.is_some()
    }

    /// The client's body, when none of it was read.
    fn untouched(&mut self) -> Option<RequestBody<B>> {
        if self.touched { None } else { self.body.take() }
    }

    /// This source, leaving an empty one (once no attempt follows).
    fn take(&mut self) -> Source<B> {
        std::mem::replace(
            self,
            Source {
                body: None,
                kept: None,
                bytes: 0,
                touched: true,
            },
        )
    }

    fn keep(&mut self, frame: &Frame<Bytes>) {
        let Some(kept) = &mut self.kept else {
            return;
        };
        let frame = if let Some(d) = frame.data_ref() {
            self.bytes += d.len();
            Kept::Data(d.clone())
        } else if let Some(t) = frame.trailers_ref() {
            Kept::Trailers(t.clone())
        } else {
            return;
        };
        if self.bytes > REPLAY_LIMIT {
            self.kept = None;
        } else {
            kept.push(frame);
        }
    }
}

/// Request bodies are kept for sending again up to this size (a refused stream's request goes
/// to another connection whole); a larger body is not kept, and its request is not sent again
/// once its body was read. Envoy keeps a request for its retries up to its buffer limit.
const REPLAY_LIMIT: usize = 64 * 1024;

/// A frame kept for another attempt (a `Frame` cannot be cloned).
#[derive(Debug)]
enum Kept {
    Data(Bytes),
    Trailers(HeaderMap),
}

/// Sends one attempt's body: the kept frames, then the client's, each read only once `h2`
/// has room for it.
struct Pump {
    send: SendStream<Bytes>,
    /// The next kept frame to send.
    next: usize,
}

impl Pump {
    fn poll<B>(&mut self, source: &mut Source<B>, cx: &mut Context<'_>) -> Poll<Result<(), Stop>>
    where
        B: Body + Unpin,
        B::Error: Into<BoxError>,
    {
        loop {
            // Room for at least one byte in h2's send buffer first (its capacity counts what
            // is queued there), then one frame; as hyper pipes a body.
            self.send.reserve_capacity(1);
            if self.send.capacity() == 0 {
                loop {
                    match std::task::ready!(self.send.poll_capacity(cx)) {
                        Some(Ok(0)) => {}
                        Some(Ok(_)) => break,
                        Some(Err(_)) | None => return Poll::Ready(Err(Stop::Stream)),
                    }
                }
            } else if self.send.poll_reset(cx).is_ready() {
                return Poll::Ready(Err(Stop::Stream));
            }
            let kept = source
                .kept
                .as_ref()
                .and_then(|k| k.get(self.next))
                .map(|k| match k {
                    Kept::Data(d) => Frame::data(d.clone()),
                    Kept::Trailers(t) => Frame::trailers(t.clone()),
                });
            let frame = if let Some(frame) = kept {
                self.next += 1;
                frame
            } else {
                let Some(body) = &mut source.body else {
                    // Only kept frames, all sent, none of them the last: end the stream.
                    return Poll::Ready(self.end());
                };
                match std::task::ready!(Pin::new(&mut *body).poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        let frame = frame.map_data(|mut d| d.copy_to_bytes(d.remaining()));
                        source.touched = true;
                        if body.is_end_stream() {
                            source.body = None;
                        }
                        source.keep(&frame);
                        self.next = source.kept.as_ref().map_or(0, Vec::len);
                        frame
                    }
                    Some(Err(e)) => return Poll::Ready(Err(Stop::Body(e))),
                    None => {
                        source.body = None;
                        return Poll::Ready(self.end());
                    }
                }
            };
            let last =
                source.body.is_none() && source.kept.as_ref().is_none_or(|k| self.next >= k.len());
            match frame.into_data() {
                Ok(data) => {
                    if self.send.send_data(data, last).is_err() {
                        return Poll::Ready(Err(Stop::Stream));
                    }
                    if last {
                        return Poll::Ready(Ok(()));
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        return Poll::Ready(
                            self.send.send_trailers(trailers).map_err(|_| Stop::Stream),
                        );
                    }
                }
            }
        }
    }

    fn end(&mut self) -> Result<(), Stop> {
        self.send
            .send_data(Bytes::new(), true)
            .map_err(|_| Stop::Stream)
    }
}

/// A request's head, kept to send it again.
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Head {
    fn request(&self) -> Request<()> {
        let mut r = Request::new(());
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
            && let Ok(v) = HeaderValue::from_str(a.as_str())
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

/// Fields HTTP/2 forbids (RFC 9113 §8.2.2), besides `Connection` and those it names.
const CONNECTION_SPECIFIC: [header::HeaderName; 4] = [
    header::HeaderName::from_static("keep-alive"),
    header::HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

impl Set {
    /// The head in HTTP/2 form: `:scheme` and `:authority` (from `Host`, which goes) in the URI,
    /// connection-specific fields removed, `content-length` for a body of known size.
    fn head<B: Body>(&self, parts: http::request::Parts, body: &B) -> Result<Head, SendError> {
        let mut headers = parts.headers;
        let authority = match headers.remove(header::HOST) {
            Some(h) => Authority::try_from(h.as_bytes())
                .map_err(|e| SendError::Protocol(format!("Host is not an authority: {e}")))?,
            None => self.authority.clone(),
        };
        if let Some(named) = headers.remove(header::CONNECTION)
            && let Ok(named) = named.to_str()
        {
            for name in named.split(',') {
                headers.remove(name.trim());
            }
        }
        for name in &CONNECTION_SPECIFIC {
            headers.remove(name);
        }
        if headers.get(header::TE).is_some_and(|te| te != "trailers") {
            headers.remove(header::TE);
        }
        if let Some(len) = body.size_hint().exact()
            && (len != 0 || !matches!(parts.method, Method::GET | Method::HEAD | Method::DELETE))
            && !headers.contains_key(header::CONTENT_LENGTH)
        {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
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
    fn pick(&self) -> Option<InFlight> {
        let mut conns = self.conns.lock().ok()?;
        conns.retain(|c| {
            let keep = c.usable();
            if !keep && c.in_flight.load(Ordering::Acquire) == 0 {
                c.task.abort();
            }
            keep
        });
        let conn = conns
            .iter()
            .find(|c| c.in_flight.load(Ordering::Relaxed) < c.max_streams().max(1))?;
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(InFlight {
            conn: conn.clone(),
            room: self.room.clone(),
        })
    }

    /// A stream on a connection with room: an open one, else a new one, else the first to
    /// have room before `deadline`.
    async fn find(&self, deadline: tokio::time::Instant) -> Result<Found, SendError> {
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
    async fn connect(&self, slot: OwnedSemaphorePermit) -> Result<Found, SendError> {
        let (stream, h2) = self.connector.connect().await?;
        if let Some(alpn) = &self.alpn {
            if !h2 {
                alpn.store(ALPN_HTTP1, Ordering::Relaxed);
                return Ok(Found::Http1);
            }
            alpn.store(ALPN_H2, Ordering::Relaxed);
        }
        let (send, connection) = ::h2::client::Builder::new()
            .initial_max_send_streams(INITIAL_MAX_STREAMS)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .max_header_list_size(MAX_HEADER_LIST)
            .enable_push(false)
            .handshake::<_, Bytes>(stream)
            .await
            .map_err(|e| SendError::Protocol(describe(&e)))?;
        let closed = Arc::new(AtomicBool::new(false));
        let ended = Ended {
            closed: closed.clone(),
            room: self.room.clone(),
            _slot: slot,
        };
        let task = tokio::spawn(async move {
            let _ended = ended;
            if let Err(e) = connection.await {
                tracing::debug!(error = %describe(&e), "upstream HTTP/2 connection ended with an error");
            }
        })
        .abort_handle();
        let conn = Arc::new(Conn {
            send,
            in_flight: AtomicUsize::new(1),
            draining: AtomicBool::new(false),
            closed,
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

/// Held by a connection's task: when the connection ends (or the task is aborted), marks it
/// closed, gives its slot back and wakes the requests waiting for room.
struct Ended {
    closed: Arc<AtomicBool>,
    room: Arc<Notify>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Ended {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
        self.room.notify_waiters();
    }
}

/// A response body from an HTTP/2 upstream: data (its window released as the client takes
/// it), then trailers. Its stream counts on its connection until the body ends or is dropped
/// (then `h2` resets the stream, the connection stays); dropping it also stops what is left
/// of the request body.
#[derive(Debug)]
pub(crate) struct StreamBody<B> {
    recv: RecvStream,
    /// Response bytes still to come, from `content-length`.
    remaining: Option<u64>,
    data_done: bool,
    pump: Option<AbortHandle>,
    _stream: InFlight,
    _body: std::marker::PhantomData<fn(B)>,
}

impl<B> StreamBody<B> {
    fn new(
        recv: RecvStream,
        remaining: Option<u64>,
        pump: Option<AbortHandle>,
        stream: InFlight,
    ) -> StreamBody<B> {
        StreamBody {
            recv,
            remaining,
            data_done: false,
            pump,
            _stream: stream,
            _body: std::marker::PhantomData,
        }
    }
}

impl<B> Drop for StreamBody<B> {
    fn drop(&mut self) {
        if let Some(p) = &self.pump {
            p.abort();
        }
    }
}

impl<B> Body for StreamBody<B> {
    type Data = Bytes;
    type Error = ::h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ::h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match std::task::ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // The client took these bytes: the upstream may send as many more.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(r) = &mut this.remaining {
                        *r = r.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match std::task::ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.recv.is_end_stream() {
            return SizeHint::with_exact(0);
        }
        self.remaining
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// The `content-length` of a response, when it has one.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
