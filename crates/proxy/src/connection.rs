//! Serving one accepted client connection: HTTP/1.1, or HTTP/2 with prior knowledge, on the
//! same port, and draining on shutdown.
//!
//! Owns: telling the two protocols apart (as `hyper_util`'s `auto` builder does: HTTP/2 when
//! the first 24 bytes are the HTTP/2 preface), the per-connection hyper settings, and keeping
//! idle HTTP/1 keep-alive connections cheap. hyper does all HTTP parsing and writing; this
//! module only decides when a hyper connection object exists.
//!
//! Why: a hyper HTTP/1 connection holds an 8 KiB write buffer, a read buffer of 8 to 16 KiB and
//! its dispatcher state for as long as it exists, also while the client sends nothing. So a
//! connection holds no hyper state until its first bytes arrive, and an HTTP/1 connection that
//! has been idle between requests for [`IDLE_RELEASE_AFTER`] is taken apart with
//! [`http1::Connection::into_parts`] and served by a new hyper connection when the client
//! sends again. That happens only at a point where hyper holds nothing that `into_parts` would
//! lose: no request in progress, the last request had no body (so hyper is not reading or
//! draining one), and no response bytes waiting to be written. Bytes hyper had read ahead
//! (pipelined requests) come back in `read_buf` and are served first by the next hyper
//! connection.
//!
//! HTTP/1 request heads are capped at `--max-header-bytes`: hyper stops reading a head still
//! incomplete at its read buffer limit (never below 8192 bytes), and [`tracked`] measures every
//! complete head as written with `name: value` and CRLF line ends and answers 431 itself,
//! before the request reaches the service (one read can hold a whole head over hyper's limit).
//!
//! HTTP/2 connections count streams the client resets before their response head, within a
//! second of opening them, as Envoy does since CVE-2023-44487 ("rapid reset" after accept):
//! once at least half of [`PREMATURE_RESET_TOTAL_STREAM_COUNT`] streams were reset early, or
//! at least half of all closed streams once that many have closed, the connection is closed at
//! once. hyper's own defence (`max_pending_accept_reset_streams`) covers resets before accept.
//!
//! Requests hyper answers itself (400 for a head it cannot parse, 431/414 for one too large)
//! and [`tracked`]'s 431 never reach the service, so they are counted here
//! (`meshguard_runtime::metrics::ProtocolErrors`), from the error the connection ends with.
//!
//! The header read timeout is kept here, not by hyper: it runs from the moment the connection
//! starts waiting for a request head (its opening, or the end of the last response) and
//! applies across hyper connections. One timer per connection serves both deadlines; hyper's
//! own header timer allocated, registered and removed a timer for every request, 3% of the
//! instructions of a forwarded request.
//!
//! An HTTP/2 connection gets the same timeout as an idle timeout: with no stream open for the
//! header read timeout, counted from the connection's opening or from the end of its last
//! stream, it is sent a GOAWAY (hyper's graceful shutdown) and closed [`GOAWAY_GRACE`] later
//! if the client has not gone away and has opened no stream since. A header block that is
//! never finished opens no stream, so it is covered too. Envoy's equivalent is its HTTP
//! `idle_timeout` (1 hour by default); it is this short here because every connection holds
//! one of `--max-connections`. The streams are counted by the service wrapper, and the
//! connection's one timer looks at the count only when it fires, so a stream costs two atomic
//! updates and a clock read, not a timer. No HTTP/2 PING keep-alive is configured (neither is
//! one in Envoy by default): a dead peer with no stream open is closed by the idle timeout,
//! and one with a stream open is noticed when that stream ends or its writes fail.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::{http1, http2};
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::client::ClientStream;
use crate::config::Limits;

/// How long an HTTP/1 connection must stay idle between requests before its hyper buffers are
/// released. Long enough that a busy connection keeps its buffers from one request to the next,
/// short next to any keep-alive timeout.
pub const IDLE_RELEASE_AFTER: Duration = Duration::from_millis(20);

/// hyper's smallest HTTP/1 read buffer; below it, head sizes are checked by [`tracked`].
const HYPER_MIN_BUF: usize = 8192;

/// Envoy's `overload.premature_reset_total_stream_count` default: the closed streams over
/// which the share of premature resets is judged.
pub const PREMATURE_RESET_TOTAL_STREAM_COUNT: u64 = 500;

/// Envoy's `overload.premature_reset_min_stream_lifetime_seconds` default: a stream that lived
/// longer than this many whole seconds is never a premature reset.
const PREMATURE_RESET_MIN_STREAM_LIFETIME_SECS: u64 = 1;

/// The HTTP/2 connection preface (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a client connection is served with: the bounds hyper's HTTP/1 and HTTP/2 servers put
/// on a service, written once for the functions of this module.
pub trait ClientService<B>:
    Service<
        Request<Incoming>,
        Response = Response<B>,
        Error: Into<BoxError>,
        Future: Send + 'static,
    > + Send
    + Unpin
    + 'static
{
}

impl<S, B> ClientService<B> for S where
    S: Service<
            Request<Incoming>,
            Response = Response<B>,
            Error: Into<BoxError>,
            Future: Send + 'static,
        > + Send
        + Unpin
        + 'static
{
}

/// The response body of a [`ClientService`].
pub trait ClientBody: Body<Data: Send, Error: Into<BoxError>> + Send + Unpin + 'static {}

impl<B> ClientBody for B where B: Body<Data: Send, Error: Into<BoxError>> + Send + Unpin + 'static {}

/// The hyper settings shared by every client connection.
#[derive(Debug)]
pub struct Settings {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    header_read_timeout: Duration,
    /// Largest request head; every complete head is checked by [`tracked`].
    max_header_bytes: usize,
    /// [`IDLE_RELEASE_AFTER`]; a field so that tests can shorten it.
    idle_release_after: Duration,
    /// Idle HTTP/1 connections taken apart so far (for tests: that the release happens).
    released: AtomicU64,
    /// Counts HTTP/2 connections closed for premature resets.
    pub premature_reset_closes: Counter,
    /// Counts HTTP/1 requests answered before the service.
    pub protocol_errors: meshguard_runtime::metrics::ProtocolErrors,
}

impl Settings {
    pub fn new(limits: &Limits) -> Settings {
        let mut http1 = http1::Builder::new();
        http1
            // Kept by `run_h1` (see the module docs); hyper's default would be 30 s.
            .header_read_timeout(None)
            // hyper refuses smaller buffers; `tracked` enforces smaller limits.
            .max_buf_size(limits.max_header_bytes.max(HYPER_MIN_BUF))
            .keep_alive(true)
            // A client may shut down its sending side and still get its answer (RFC 9112
            // §9.6 allows it). It also keeps hyper from reading mid-request to look for a
            // close, which cost an 8 KiB buffer allocation per request: a client that
            // disconnects while its request is upstream is noticed when its answer is
            // written, and the upstream wait stays bounded by the upstream timeout.
            .half_close(true)
            // One buffer, one write(2): responses are small, and callgrind counts 600 fewer
            // instructions per request than with the head and body queued for writev(2).
            .writev(false);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        Settings {
            http1,
            http2,
            header_read_timeout: limits.header_read_timeout,
            max_header_bytes: limits.max_header_bytes,
            idle_release_after: IDLE_RELEASE_AFTER,
            released: AtomicU64::new(0),
            premature_reset_closes: Counter::default(),
            protocol_errors: meshguard_runtime::metrics::ProtocolErrors::default(),
        }
    }
}

/// Serves one client connection until it closes, or until `drain` turns true and the
/// connection has finished what it was doing (as `hyper_util`'s graceful shutdown does: an idle
/// connection closes at once, a request in progress completes first).
pub async fn serve<S, B>(
    tcp: ClientStream,
    service: S,
    settings: Arc<Settings>,
    mut drain: watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    S: ClientService<B>,
    B: ClientBody,
{
    // The first request head (or the HTTP/2 preface) is due within the header read timeout
    // of the connection's opening: a client that connects and stays silent is let go.
    let deadline = Instant::now() + settings.header_read_timeout;
    let Some((io, is_h2)) = detect(tcp, &mut drain, deadline).await? else {
        return Ok(());
    };
    if is_h2 {
        // When the client connected: derived, not kept, as every connection's task is sized
        // for what it holds while `detect` waits.
        let opened = deadline - settings.header_read_timeout;
        // Boxed so that the task of an idle HTTP/1 connection is not sized for HTTP/2 state.
        Box::pin(serve_h2(io, service, &settings, drain, opened)).await
    } else {
        serve_h1(io, service, &settings, drain, deadline).await
    }
}

/// Reads until the bytes read are the whole HTTP/2 preface (HTTP/2), differ from it, or end
/// (HTTP/1), exactly as `hyper_util`'s `auto` builder does. `None` (close) when draining
/// starts or `deadline` passes first.
async fn detect(
    mut tcp: ClientStream,
    drain: &mut watch::Receiver<bool>,
    deadline: Instant,
) -> io::Result<Option<(ClientIo, bool)>> {
    let mut head = [0u8; 24];
    let mut filled = 0;
    let is_h2 = loop {
        // `filled` stays below the preface's length: the loop ends when it reaches it.
        let Some(free) = head.get_mut(filled..) else {
            break false;
        };
        let n = tokio::select! {
            r = tcp.read(free) => r?,
            () = drained(drain) => return Ok(None),
            () = tokio::time::sleep_until(deadline) => {
                tracing::debug!("nothing received within the header read timeout; closing");
                return Ok(None);
            }
        };
        filled += n;
        let matches = head
            .get(..filled)
            .is_some_and(|got| H2_PREFACE.starts_with(got));
        if n == 0 || !matches {
            break false;
        }
        if filled == H2_PREFACE.len() {
            break true;
        }
    };
    let got = head.get(..filled).unwrap_or(&head);
    let io = ClientIo::new(tcp, Bytes::copy_from_slice(got));
    Ok(Some((io, is_h2)))
}

/// Serves an HTTP/1 connection (module docs: releasing idle connections, the header read
/// timeout, head sizes).
///
/// Not an `async fn`: the wrapped service and the IO are set up before the returned future
/// exists, and the future uses them in place. An `async fn` keeps its arguments for its whole
/// life next to whatever it moves them into, and this future is part of every connection's
/// task, also while the connection idles.
fn serve_h1<S, B>(
    mut io: ClientIo,
    service: S,
    settings: &Settings,
    mut drain: watch::Receiver<bool>,
    first_deadline: Instant,
) -> impl Future<Output = Result<(), BoxError>> + Send
where
    S: ClientService<B>,
    B: ClientBody,
{
    let exchanges = Arc::new(Exchanges::default());
    // Every complete head is measured, whatever its size: hyper enforces its buffer limit
    // only on a head still incomplete, and one read can hold a whole head over it.
    let mut service = tracked(
        service,
        exchanges.clone(),
        settings.max_header_bytes,
        settings.protocol_errors.too_large.clone(),
    );
    io.exchanges = Some(exchanges.clone());
    let mut header_deadline = first_deadline;
    async move {
        loop {
            // With upgrades: an allowed WebSocket request takes the client's IO into a tunnel
            // (crate::upgrade).
            let conn = settings
                .http1
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            // Boxed: while the connection idles without hyper, the task holds none of its state.
            let (parts, deadline) = match Box::pin(run_h1(
                conn,
                &exchanges,
                &mut drain,
                settings,
                header_deadline,
            ))
            .await
            {
                H1::Closed(r) => {
                    if let Err(e) = &r {
                        settings.protocol_errors.count(e);
                    }
                    // Upgraded: the IO lives on in the tunnel. The connection keeps its slot
                    // of --max-connections (and draining waits) until the tunnel lets it go.
                    if Arc::strong_count(&exchanges) > 1 {
                        exchanges.io_released.notified().await;
                    }
                    return r.map_err(Into::into);
                }
                H1::Idle(parts, deadline) => (parts, deadline),
            };
            let http1::Parts {
                io: tokio_io,
                read_buf,
                service: parts_service,
                ..
            } = parts;
            service = parts_service;
            io = tokio_io.into_inner();
            settings.released.fetch_add(1, Ordering::Relaxed);
            header_deadline = deadline;
            if read_buf.is_empty() {
                // An empty `read_buf` can still hold hyper's whole read buffer: let it go first.
                drop(read_buf);
                if !wait_readable(&io.tcp, deadline, &mut drain).await? {
                    return Ok(());
                }
            } else {
                // Bytes hyper had read ahead (a pipelined request) come first.
                io.unread(read_buf);
                if *drain.borrow() {
                    return Ok(());
                }
            }
        }
    }
}

/// Waits, holding no buffer, until the client sends more (`true`), or until the header read
/// deadline passes or draining starts (`false`: close, as hyper does with an idle connection).
async fn wait_readable(
    tcp: &ClientStream,
    deadline: Instant,
    drain: &mut watch::Receiver<bool>,
) -> io::Result<bool> {
    tokio::select! {
        biased;
        () = drained(drain) => Ok(false),
        r = std::future::poll_fn(|cx| tcp.poll_read_ready(cx)) => r.map(|()| true),
        () = tokio::time::sleep_until(deadline) => Ok(false),
    }
}

/// Resolves when draining starts (or the accept loop is gone).
async fn drained(drain: &mut watch::Receiver<bool>) {
    let _ = drain.wait_for(|d| *d).await;
}

/// Serves an HTTP/2 connection (module docs: the idle timeout, premature resets, draining).
/// `opened`: when the client connected, where its first idle period starts.
async fn serve_h2<S, B>(
    io: ClientIo,
    service: S,
    settings: &Settings,
    mut drain: watch::Receiver<bool>,
    opened: Instant,
) -> Result<(), BoxError>
where
    S: ClientService<B>,
    B: ClientBody,
{
    let streams = Arc::new(Streams::new(opened));
    let service = stream_counted(service, streams.clone());
    let conn = settings.http2.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let drain_started = drained(&mut drain);
    tokio::pin!(drain_started);
    let abusive = streams.abusive.notified();
    tokio::pin!(abusive);
    // One timer: the idle deadline while serving, the end of the grace after a GOAWAY.
    let timer = tokio::time::sleep_until(opened + settings.header_read_timeout);
    tokio::pin!(timer);
    let mut going_away = false;
    let ended = std::future::poll_fn(|cx| {
        loop {
            if abusive.as_mut().poll(cx).is_ready() {
                return Poll::Ready(H2::Abusive);
            }
            if !going_away && drain_started.as_mut().poll(cx).is_ready() {
                conn.as_mut().graceful_shutdown();
                going_away = true;
                timer.as_mut().reset(Instant::now() + GOAWAY_GRACE);
            }
            if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                return Poll::Ready(H2::Closed(r));
            }
            ready!(timer.as_mut().poll(cx));
            let now = Instant::now();
            if going_away {
                if streams.open.load(Ordering::Acquire) == 0 {
                    return Poll::Ready(H2::GraceOver);
                }
                // A stream the client opened before it saw the GOAWAY: it may finish.
                timer.as_mut().reset(now + GOAWAY_GRACE);
                continue;
            }
            match streams.idle_deadline(settings.header_read_timeout) {
                Some(at) if at <= now => {
                    tracing::debug!("no HTTP/2 stream within the header read timeout; closing");
                    conn.as_mut().graceful_shutdown();
                    going_away = true;
                    timer.as_mut().reset(now + GOAWAY_GRACE);
                }
                Some(at) => timer.as_mut().reset(at),
                // Streams are open: look again one timeout later (the connection cannot be
                // idle for longer before then).
                None => timer.as_mut().reset(now + settings.header_read_timeout),
            }
            // Polls the connection again (it writes the GOAWAY) and the timer (registers it).
        }
    })
    .await;
    match ended {
        H2::Closed(r) => r.map_err(Into::into),
        H2::Abusive => abort(&streams, settings),
        H2::GraceOver => {
            // Dropping the connection closes the socket.
            tracing::debug!("the client did not go away after GOAWAY; closing the connection");
            Ok(())
        }
    }
}

/// How long an HTTP/2 client has, after the GOAWAY of an idle timeout or a drain, to go away
/// by itself before the connection is closed (when none of its streams is open then). hyper
/// sends the GOAWAY with a PING and closes only once the client answers it, which a silent
/// client never does. A client answers within a round trip; Envoy's `drain_timeout` for the
/// same sequence is 5 s, but every second here is a `--max-connections` slot held.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// Why [`serve_h2`]'s loop ended.
enum H2 {
    Closed(hyper::Result<()>),
    /// Too many premature resets.
    Abusive,
    /// A GOAWAY was sent [`GOAWAY_GRACE`] ago, and no stream is open.
    GraceOver,
}

/// Closes an HTTP/2 connection with too many premature resets: dropping it closes the socket
/// and its streams at once, as Envoy's abort does (a GOAWAY would wait for the open streams).
fn abort(streams: &Streams, settings: &Settings) -> Result<(), BoxError> {
    settings.premature_reset_closes.inc();
    tracing::debug!(
        closed = streams.closed.load(Ordering::Relaxed),
        premature = streams.premature.load(Ordering::Relaxed),
        "too many premature stream resets; closing the connection"
    );
    Ok(())
}

/// The streams of one HTTP/2 connection, for the idle timeout and the premature-reset rule
/// (module docs).
#[derive(Debug)]
struct Streams {
    /// When the client connected: the origin of `last_end`.
    opened: Instant,
    /// Streams handed to the service whose response body hyper still holds. Only the
    /// connection's task raises it (hyper calls the service there), so that task sees no
    /// stream appear between reading it and acting on it.
    open: AtomicUsize,
    /// When the latest stream ended, in nanoseconds after `opened` (0: none has).
    last_end: AtomicU64,
    /// Streams that have ended (answered, reset or dropped).
    closed: AtomicU64,
    /// Of those, streams the client reset before their response head, early in their life.
    premature: AtomicU64,
    /// Notified once the connection is to be closed.
    abusive: Notify,
}

impl Streams {
    fn new(opened: Instant) -> Streams {
        Streams {
            opened,
            open: AtomicUsize::new(0),
            last_end: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            premature: AtomicU64::new(0),
            abusive: Notify::new(),
        }
    }

    /// When the connection is to close for idleness: `timeout` after it opened or after its
    /// last stream ended. `None` while a stream is open.
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.open.load(Ordering::Acquire) != 0 {
            return None;
        }
        // Stored before the `open` decrement this load saw.
        let last_end = Duration::from_nanos(self.last_end.load(Ordering::Relaxed));
        Some(self.opened + last_end + timeout)
    }

    /// Envoy's `maybeDrainDueToPrematureResets`: below the stream count, close as soon as the
    /// premature resets alone reach half of it; from then on, when they are half of all.
    fn stream_closed(&self, premature: bool) {
        let closed = self.closed.fetch_add(1, Ordering::Relaxed) + 1;
        if !premature {
            // Can only lower the share.
            return;
        }
        let resets = self.premature.fetch_add(1, Ordering::Relaxed) + 1;
        if resets * 2 >= closed.max(PREMATURE_RESET_TOTAL_STREAM_COUNT) {
            self.abusive.notify_one();
        }
    }
}

/// One HTTP/2 stream, open from the service call until hyper is done with its response body.
#[derive(Debug)]
struct Stream {
    streams: Arc<Streams>,
    opened: Instant,
    /// Whether the service produced a response head (hyper then sends it).
    responded: bool,
}

impl Stream {
    fn open(streams: Arc<Streams>) -> Stream {
        streams.open.fetch_add(1, Ordering::Relaxed);
        Stream {
            streams,
            opened: Instant::now(),
            responded: false,
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let now = Instant::now();
        let s = &self.streams;
        let end = now.saturating_duration_since(s.opened).as_nanos();
        s.last_end
            .fetch_max(u64::try_from(end).unwrap_or(u64::MAX), Ordering::Relaxed);
        // Publishes `last_end` to the connection task that sees the stream gone.
        s.open.fetch_sub(1, Ordering::Release);
        // Dropped without a response head: hyper gave up the stream, because the client reset
        // it (or the connection went away, which ends the accounting anyway).
        let premature = !self.responded
            && now.saturating_duration_since(self.opened).as_secs()
                <= PREMATURE_RESET_MIN_STREAM_LIFETIME_SECS;
        s.stream_closed(premature);
    }
}

/// Wraps an HTTP/2 service so that every stream is counted in `streams`.
fn stream_counted<S, B>(
    inner: S,
    streams: Arc<Streams>,
) -> impl ClientService<TrackedBody<B, Stream>>
where
    S: ClientService<B>,
    B: ClientBody,
{
    service_fn(move |req: Request<Incoming>| {
        let stream = Stream::open(streams.clone());
        Guarded {
            call: Some(inner.call(req)),
            guard: Some(stream),
            responded: |s: &mut Stream| s.responded = true,
        }
    })
}

pin_project_lite::pin_project! {
    /// A service call whose response body will hold `guard`; `call: None` answers 431 at
    /// once. A future of its own, not an `async` block: a block that awaits a future it
    /// captured keeps the captured value and the awaited one side by side, which made every
    /// request's future twice the size of the handler's (9.4 KB instead of 4.7 KB, boxed by
    /// hyper for each connection with a request in flight).
    struct Guarded<F, G> {
        #[pin]
        call: Option<F>,
        guard: Option<G>,
        // Called on the guard when the service answered.
        responded: fn(&mut G),
    }
}

impl<F, B, E, G> std::future::Future for Guarded<F, G>
where
    F: std::future::Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B, G>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.call.as_pin_mut() {
            Some(call) => Some(ready!(call.poll(cx))?),
            None => None,
        };
        // Taken once: a finished future is not polled again.
        let Some(mut guard) = this.guard.take() else {
            return Poll::Pending;
        };
        Poll::Ready(Ok(match response {
            Some(response) => {
                (this.responded)(&mut guard);
                response.map(|body| TrackedBody {
                    body: Some(body),
                    _guard: guard,
                })
            }
            None => head_too_large(guard),
        }))
    }
}

enum H1<S> {
    /// The connection closed, broke, or sent no complete head before its deadline.
    Closed(hyper::Result<()>),
    /// Idle between requests for [`IDLE_RELEASE_AFTER`]; the deadline for the next head.
    Idle(http1::Parts<TokioIo<ClientIo>, S>, Instant),
}

/// Drives one hyper HTTP/1 connection until it closes, may be taken apart, or a request head
/// takes longer than the header read timeout (then it closes, as hyper does).
///
/// `first_deadline` bounds the first head this hyper connection reads; each later one has
/// the header read timeout from the end of the previous response.
async fn run_h1<S, B>(
    conn: http1::UpgradeableConnection<TokioIo<ClientIo>, S>,
    exchanges: &Exchanges,
    drain: &mut watch::Receiver<bool>,
    settings: &Settings,
    first_deadline: Instant,
) -> H1<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Unpin,
    S::Error: Into<BoxError>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    let mut conn = conn;
    let finished_before = exchanges.finished.load(Ordering::Relaxed);
    let mut draining = false;
    let drain_started = drained(drain);
    tokio::pin!(drain_started);
    // One timer for the wait in progress: the release, or the header deadline if sooner.
    let timer = tokio::time::sleep_until(first_deadline);
    tokio::pin!(timer);
    let mut wait = Some(Wait {
        after: finished_before,
        release: None,
        header: first_deadline,
    });
    let ended = std::future::poll_fn(|cx| {
        if !draining && drain_started.as_mut().poll(cx).is_ready() {
            Pin::new(&mut conn).graceful_shutdown();
            draining = true;
        }
        if let Poll::Ready(r) = Pin::new(&mut conn).poll(cx) {
            return Poll::Ready(Ended::Closed(r));
        }
        if exchanges.open.load(Ordering::Relaxed) != 0 {
            wait = None;
            return Poll::Pending;
        }
        // No request in progress: hyper waits for the next head (or drains the body of a
        // request answered without reading it all, which the deadline bounds too).
        let finished = exchanges.finished.load(Ordering::Relaxed);
        let w = match &mut wait {
            Some(w) if w.after == finished => w,
            _ => {
                let w = wait.insert(Wait {
                    after: finished,
                    release: None,
                    header: Instant::now() + settings.header_read_timeout,
                });
                timer.as_mut().reset(w.header);
                w
            }
        };
        // Taken apart only after an exchange, with nothing of hyper's to lose (module docs).
        let releasable = !draining
            && finished != finished_before
            && !exchanges.last_had_body.load(Ordering::Relaxed)
            && !exchanges.write_blocked.load(Ordering::Relaxed);
        if releasable && w.release.is_none() {
            let at = Instant::now() + settings.idle_release_after;
            w.release = Some(at);
            if at < w.header {
                timer.as_mut().reset(at);
            }
        }
        ready!(timer.as_mut().poll(cx));
        let now = Instant::now();
        if now >= w.header {
            return Poll::Ready(Ended::HeaderTimeout);
        }
        if releasable && w.release.is_some_and(|at| now >= at) {
            return Poll::Ready(Ended::Release(w.header));
        }
        // Fired for a release that is not possible now: wait for the header deadline, and
        // start the release over when it becomes possible.
        w.release = None;
        timer.as_mut().reset(w.header);
        let _ = timer.as_mut().poll(cx);
        Poll::Pending
    })
    .await;
    match ended {
        Ended::Release(header) => match conn.into_parts() {
            Some(parts) => H1::Idle(parts, header),
            None => H1::Closed(Ok(())),
        },
        Ended::Closed(r) => H1::Closed(r),
        Ended::HeaderTimeout => {
            tracing::debug!("no complete request head within the header read timeout; closing");
            H1::Closed(Ok(()))
        }
    }
}

/// Why [`run_h1`]'s loop ended.
enum Ended {
    Closed(hyper::Result<()>),
    HeaderTimeout,
    /// May be taken apart; the deadline for the next head.
    Release(Instant),
}

/// A wait for a request head on an HTTP/1 connection.
struct Wait {
    /// The value of [`Exchanges::finished`] when the wait began.
    after: usize,
    /// When the connection may be taken apart, once that is possible.
    release: Option<Instant>,
    /// When the wait ends the connection.
    header: Instant,
}

/// What the service wrapper and the IO tell the connection loop about one connection.
#[derive(Debug, Default)]
struct Exchanges {
    /// Whether the last write (or flush) on the socket could not complete: hyper then still
    /// holds response bytes. (`http1::Connection` gives no access to its IO while it runs.)
    write_blocked: AtomicBool,
    /// Requests handed to the service whose response body hyper still holds.
    open: AtomicUsize,
    /// Requests whose response body hyper has finished with (sent or dropped).
    finished: AtomicUsize,
    /// Whether the latest request had a body; hyper may still be reading or draining it.
    last_had_body: AtomicBool,
    /// Notified when the connection's IO is dropped (after an upgrade, by the tunnel).
    io_released: Notify,
}

/// Marks one request as open until the response body is dropped by hyper.
#[derive(Debug)]
pub struct Open(Arc<Exchanges>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// The size of a request head as written with `name: value` and CRLF line ends.
fn head_size(req: &Request<Incoming>) -> usize {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| {
            a.as_str().len() + uri.scheme_str().map_or(0, |s| s.len() + 3)
        });
    // "METHOD target HTTP/1.1\r\n", the fields, and the empty line.
    let fields: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
        .sum();
    req.method().as_str().len() + 1 + target + 1 + 8 + 2 + fields + 2
}

/// hyper's answer to a head over its buffer limit, for heads over a smaller limit: 431 with
/// no body, and the connection closed.
fn head_too_large<B, G>(guard: G) -> Response<TrackedBody<B, G>> {
    let mut r = Response::new(TrackedBody {
        body: None,
        _guard: guard,
    });
    *r.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    r.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    r
}

/// Wraps the service so that `exchanges` follows each request until hyper is done with it,
/// and heads over `head_limit` bytes get 431 without reaching the service, counted in
/// `too_large`.
fn tracked<S, B>(
    inner: S,
    exchanges: Arc<Exchanges>,
    head_limit: usize,
    too_large: Counter,
) -> impl ClientService<TrackedBody<B, Open>>
where
    S: ClientService<B>,
    B: ClientBody,
{
    service_fn(move |req: Request<Incoming>| {
        exchanges
            .last_had_body
            .store(!req.body().is_end_stream(), Ordering::Relaxed);
        exchanges.open.fetch_add(1, Ordering::Relaxed);
        let open = Open(exchanges.clone());
        let over = head_size(&req) > head_limit;
        let call = (!over).then(|| inner.call(req));
        if over {
            too_large.inc();
            tracing::debug!("request head over --max-header-bytes; 431");
        }
        Guarded {
            call,
            guard: Some(open),
            responded: |_: &mut Open| {},
        }
    })
}

/// A response body that holds `G` (which marks its request or stream open) until hyper drops
/// it. `None`: an empty body.
#[derive(Debug)]
pub struct TrackedBody<B, G> {
    body: Option<B>,
    _guard: G,
}

impl<B: Body + Unpin, G: Unpin> Body for TrackedBody<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match &mut self.get_mut().body {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// The client's stream, with bytes already read in front of it, and a record of whether
/// the last write could not complete.
struct ClientIo {
    tcp: ClientStream,
    unread: Bytes,
    /// Set for HTTP/1 connections, whose loop needs to know about blocked writes.
    exchanges: Option<Arc<Exchanges>>,
}

impl ClientIo {
    fn new(tcp: ClientStream, unread: Bytes) -> ClientIo {
        ClientIo {
            tcp,
            unread,
            exchanges: None,
        }
    }

    fn unread(&mut self, mut front: Bytes) {
        if !self.unread.is_empty() {
            let mut joined = Vec::with_capacity(front.len() + self.unread.len());
            joined.extend_from_slice(&front);
            joined.extend_from_slice(&self.unread);
            front = joined.into();
        }
        self.unread = front;
    }

    fn note_write<T>(&mut self, p: Poll<T>) -> Poll<T> {
        if let Some(e) = &self.exchanges {
            e.write_blocked.store(p.is_pending(), Ordering::Relaxed);
        }
        p
    }
}

impl Drop for ClientIo {
    fn drop(&mut self) {
        // A stored permit if nobody waits yet: the connection loop may look a moment later.
        if let Some(e) = &self.exchanges {
            e.io_released.notify_one();
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.unread.is_empty() {
            return Pin::new(&mut this.tcp).poll_read(cx, buf);
        }
        let chunk = this.unread.get(..buf.remaining()).unwrap_or(&this.unread);
        let n = chunk.len();
        buf.put_slice(chunk);
        this.unread.advance(n);
        if this.unread.is_empty() {
            // Let go of the buffer the bytes came from.
            this.unread = Bytes::new();
            // And read on in the same call what the socket already has: handed only the few
            // bytes protocol detection took, hyper would read again for the rest of the head
            // and grow its 8 KiB read buffer to 16 KiB for the connection's lifetime (heaptrack
            // under 1,000 busy connections: 16.4 MB). hyper then may take in a whole head over
            // its buffer limit in one read, so every complete head is measured too
            // ([`tracked`]). A broken connection ends here as it would have at the next read.
            if buf.remaining() > 0 {
                let before = buf.filled().len();
                match this.tcp.try_read(buf.initialize_unfilled()) {
                    Ok(got) => buf.set_filled(before + got),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.tcp).poll_write(cx, buf);
        this.note_write(p)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.note_write(p)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.tcp).poll_flush(cx);
        this.note_write(p)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.tcp).poll_shutdown(cx);
        this.note_write(p)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// Starts a server whose service answers with the request's method and path, after
    /// 100 ms for paths starting with `/delay`.
    async fn server(header_read_timeout: Duration) -> (std::net::SocketAddr, watch::Sender<bool>) {
        let (addr, tx, _) = server_with(Limits {
            header_read_timeout,
            ..Limits::default()
        })
        .await;
        (addr, tx)
    }

    async fn server_with(
        limits: Limits,
    ) -> (std::net::SocketAddr, watch::Sender<bool>, Arc<Settings>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut settings = Settings::new(&limits);
        settings.idle_release_after = Duration::from_millis(10);
        let settings = Arc::new(settings);
        let handle = settings.clone();
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let service = service_fn(|req: Request<Incoming>| async move {
                    if req.uri().path().starts_with("/delay") {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    let text = format!("{} {}", req.method(), req.uri().path());
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                });
                tokio::spawn(serve(
                    ClientStream::Plain(tcp),
                    service,
                    settings.clone(),
                    rx.clone(),
                ));
            }
        });
        (addr, tx, handle)
    }

    /// Waits (bounded) until the server has released idle connections `n` times in all.
    async fn released(settings: &Settings, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while settings.released.load(Ordering::Relaxed) < n {
            assert!(
                Instant::now() < deadline,
                "the idle connection was not released"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Writes raw bytes to the server.
    async fn send(tcp: &mut TcpStream, bytes: &[u8]) {
        tcp.write_all(bytes).await.unwrap();
    }

    /// One `GET` on a keep-alive connection, answered with the method and path.
    async fn get(tcp: &mut TcpStream, path: &str) {
        send(
            tcp,
            format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes(),
        )
        .await;
        read_responses(tcp, &[&format!("GET {path}")]).await;
    }

    /// Reads until `n` complete responses (each ending in its 2- to 12-byte body) have arrived.
    async fn read_responses(tcp: &mut TcpStream, bodies: &[&str]) -> String {
        let mut got = String::new();
        let mut buf = [0u8; 4096];
        while !bodies.iter().all(|b| got.contains(b)) {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early; got {got:?}");
            got.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        got
    }

    /// Everything the server sends until it closes the connection (5 s at most).
    async fn until_closed(tcp: &mut TcpStream) -> String {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8(got).unwrap()
    }

    #[tokio::test]
    async fn keep_alive_pipelining_and_bodies_survive_idle_release() {
        let (addr, _drain, settings) = server_with(Limits::default()).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        get(&mut tcp, "/one").await;
        // Idle until released: the next requests go to a new hyper connection.
        released(&settings, 1).await;
        send(
            &mut tcp,
            b"GET /two HTTP/1.1\r\nhost: x\r\n\r\nGET /three HTTP/1.1\r\nhost: x\r\n\r\n",
        )
        .await;
        let got = read_responses(&mut tcp, &["GET /two", "GET /three"]).await;
        assert!(got.find("GET /two") < got.find("GET /three"));
        // A request with a body that the service never reads, then one more request.
        released(&settings, 2).await;
        send(
            &mut tcp,
            b"POST /four HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello",
        )
        .await;
        read_responses(&mut tcp, &["POST /four"]).await;
        // Not released after a request with a body (hyper may still be reading it) ...
        get(&mut tcp, "/five").await;
        // ... but after the next one without.
        released(&settings, 3).await;
        get(&mut tcp, "/six").await;
        assert_eq!(settings.released.load(Ordering::Relaxed), 3);
    }

    /// A head over the limit that arrives whole in one read (hyper checks its buffer limit
    /// only while a head is incomplete) is refused too: with the default 60 KiB, heads of
    /// 61,565 to 65,065 bytes were forwarded.
    #[tokio::test]
    async fn a_whole_head_over_the_default_limit_in_one_read_gets_431() {
        let (addr, _drain, _) = server_with(Limits::default()).await;
        let head = format!(
            "GET /x HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
            "a".repeat(63_000)
        );
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        send(&mut tcp, head.as_bytes()).await;
        let got = until_closed(&mut tcp).await;
        assert!(
            got.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{got}"
        );
    }

    /// The bytes protocol detection read and what the socket already holds come back in one
    /// read: hyper then finds a whole head in its first read and keeps an 8 KiB read buffer.
    #[tokio::test]
    async fn first_read_returns_the_detected_bytes_and_what_followed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut tcp, _) = listener.accept().await.unwrap();
        let head = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
        client.write_all(head).await.unwrap();
        // What detection takes: the first bytes.
        let mut first = [0u8; 4];
        tcp.read_exact(&mut first).await.unwrap();
        // Until the socket holds the rest.
        let mut rest = [0u8; 64];
        tokio::time::timeout(Duration::from_secs(5), async {
            while tcp.peek(&mut rest).await.unwrap() < head.len() - first.len() {}
        })
        .await
        .unwrap();
        let mut io = ClientIo::new(ClientStream::Plain(tcp), Bytes::copy_from_slice(&first));
        let mut buf = vec![0u8; 8192];
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &head[..]);
    }

    /// The request's future holds the service's future once: hyper keeps it (boxed) for
    /// every connection with a request in flight, so a copy is paid per busy connection.
    #[test]
    fn a_guarded_call_holds_the_service_future_once() {
        let state = [0u8; 4096];
        let call = async move {
            tokio::task::yield_now().await;
            let _ = std::hint::black_box(&state);
            Ok::<_, std::convert::Infallible>(Response::new(()))
        };
        let inner = std::mem::size_of_val(&call);
        assert!(inner >= 4096);
        let guarded = Guarded {
            call: Some(call),
            guard: Some(()),
            responded: |_: &mut ()| {},
        };
        let size = std::mem::size_of_val(&guarded);
        assert!(size < inner + 64, "{size} bytes around a future of {inner}");
    }

    #[tokio::test]
    async fn heads_over_a_limit_below_hypers_buffer_get_431() {
        let (addr, _drain, _) = server_with(Limits {
            max_header_bytes: 2048,
            ..Limits::default()
        })
        .await;
        let head = |value_len: usize| {
            format!(
                "GET /x HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
                "a".repeat(value_len)
            )
        };
        // 17 + 9 + 9 + 2 bytes around the value: a head of 2048 bytes exactly is allowed.
        let fits = 2048 - 37;
        assert_eq!(head(fits).len(), 2048);
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        send(&mut tcp, head(fits).as_bytes()).await;
        read_responses(&mut tcp, &["GET /x"]).await;
        send(&mut tcp, head(fits + 1).as_bytes()).await;
        let got = until_closed(&mut tcp).await;
        assert!(
            got.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{got}"
        );
        assert!(got.contains("connection: close\r\n"), "{got}");
        assert!(!got.contains("GET /x"), "not served: {got}");
    }

    #[test]
    fn premature_resets_close_by_envoys_rule() {
        let closes_after = |pattern: &dyn Fn(u64) -> bool| {
            let r = Streams::new(Instant::now());
            for i in 1..=5000u64 {
                r.stream_closed(pattern(i));
                let notified = std::pin::pin!(r.abusive.notified());
                let mut cx = Context::from_waker(std::task::Waker::noop());
                if notified.poll(&mut cx).is_ready() {
                    return Some(i);
                }
            }
            None
        };
        // Every stream reset early: closed at 250, half of 500.
        assert_eq!(closes_after(&|_| true), Some(250));
        // One in two: at 500 streams, 250 of them reset.
        assert_eq!(closes_after(&|i| i % 2 == 0), Some(500));
        // Fewer than half: never.
        assert_eq!(closes_after(&|i| i % 3 == 0), None);
        // A good history first: closed when resets reach half of everything.
        assert_eq!(closes_after(&|i| i > 1000), Some(2000));
    }

    #[tokio::test]
    async fn header_read_timeout_runs_from_the_end_of_the_last_response() {
        let (addr, _drain) = server(Duration::from_millis(400)).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        get(&mut tcp, "/").await;
        let idle = Instant::now();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Half a head after the release: the remaining 200 ms still apply, not a new 400.
        send(&mut tcp, b"GET / HTTP/1.1\r\n").await;
        assert_closed_without_answer(&mut tcp, idle, Duration::from_millis(400)).await;
    }

    /// Asserts that the server closes `tcp` without sending anything, `after` (within 150
    /// ms) from `since`.
    async fn assert_closed_without_answer(tcp: &mut TcpStream, since: Instant, after: Duration) {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf))
            .await
            .expect("closed by the server")
            .unwrap();
        assert_eq!(n, 0, "closed without an answer");
        let waited = since.elapsed();
        assert!(waited >= after - Duration::from_millis(20), "{waited:?}");
        assert!(waited < after + Duration::from_millis(150), "{waited:?}");
    }

    #[tokio::test]
    async fn a_first_head_that_never_completes_is_cut_at_the_deadline() {
        let (addr, _drain) = server(Duration::from_millis(300)).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        send(&mut tcp, b"GET / HTTP/1.1\r\nhost: x\r\n").await;
        assert_closed_without_answer(&mut tcp, started, Duration::from_millis(300)).await;
    }

    #[tokio::test]
    async fn a_client_that_never_sends_is_let_go_at_the_deadline() {
        let (addr, _drain) = server(Duration::from_millis(300)).await;
        let started = Instant::now();
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        assert_closed_without_answer(&mut tcp, started, Duration::from_millis(300)).await;
    }

    #[tokio::test]
    async fn each_request_gets_the_whole_header_read_timeout() {
        // Requests 100 ms apart for longer than the timeout: each wait is short, so the
        // connection serves them all.
        let (addr, _drain) = server(Duration::from_millis(250)).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        for i in 0..6 {
            get(&mut tcp, &format!("/r{i}")).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A head that arrives in pieces, within the timeout, is served as well.
        send(&mut tcp, b"GET /slow HTTP/1.1\r\n").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        send(&mut tcp, b"host: x\r\n\r\n").await;
        read_responses(&mut tcp, &["GET /slow"]).await;
    }

    #[tokio::test]
    async fn a_client_that_shuts_down_its_sending_side_still_gets_its_answer() {
        let (addr, _drain) = server(Duration::from_secs(5)).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        // The answer takes 100 ms: the shutdown arrives while the request is in progress.
        send(&mut tcp, b"GET /delay HTTP/1.1\r\nhost: x\r\n\r\n").await;
        tcp.shutdown().await.unwrap();
        let got = until_closed(&mut tcp).await;
        assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
        assert!(got.ends_with("GET /delay"), "{got}");
    }

    #[tokio::test]
    async fn draining_closes_idle_connections() {
        let (addr, drain) = server(Duration::from_secs(5)).await;
        let mut released = TcpStream::connect(addr).await.unwrap();
        get(&mut released, "/").await;
        let mut bare = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drain.send(true).unwrap();
        let mut buf = [0u8; 16];
        for tcp in [&mut released, &mut bare] {
            let n = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(n, 0);
        }
    }

    #[tokio::test]
    async fn http2_prior_knowledge() {
        let (addr, _drain) = server(Duration::from_secs(5)).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        send(&mut tcp, H2_PREFACE).await;
        // An empty SETTINGS frame; the server answers with its own SETTINGS frame (type 4).
        send(&mut tcp, &[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
        let mut frame = [0u8; 9];
        tcp.read_exact(&mut frame).await.unwrap();
        assert_eq!(frame[3], 4);
    }
}
