//! The HTTP/1.1 connection pool to the one upstream, and the exchanges on its connections:
//! keep-alive, most recently used connection first, and a bound on the connections open at
//! once.
//!
//! Owns: keeping idle connections, reusing them, sending a request on a new connection when a
//! pooled one turned out to be closed before anything was written, the connection bound with
//! its queue of waiting requests (Envoy's circuit breakers `max_connections` and
//! `max_pending_requests`; the bound's slots and the queue ([`super::Pending`]) are shared with
//! the HTTP/2 set, [`super::h2`]), and moving the bytes of each exchange: the request head and
//! body out, the response head and body in. Does not own the framing rules (pure, in
//! [`super::codec`]), connecting (TCP, TLS: [`super::Connector`]), the response timer and the
//! request body's watch ([`super::timed`]), the headers sent (the handler prepares them) or
//! the answers sent for failures ([`crate::response`]).
//!
//! Why not hyper's client connection: it holds an 8 KiB write buffer, a read buffer of 8 KiB
//! (allocated even on an idle connection, which hyper reads to notice a close) and a task of
//! its own for as long as the connection is open: about 20 KB per connection, and a proxy under
//! 1,000 busy client connections keeps about 1,000 upstream connections (BENCHMARKS.md,
//! "Memory under load"). Here a connection is its socket and its slot. An exchange runs inside
//! the request's own future (no task, no channel), allocates its read buffer only once the
//! socket has bytes to read, and gives it back with the response: an idle connection holds no
//! buffer. So every connection within the bound can be kept idle (no reconnecting after each
//! burst), and a connection is checked for a close by the upstream when it is taken, with one
//! non-blocking read.
//!
//! A connection goes back to the pool when its response body has been read to its end, the
//! request was sent whole, both sides allow keep-alive and no byte beyond the response
//! arrived. A request or response given up midway (its client reset the stream, its timer
//! fired) drops the connection: it closes and its slot is free at once.
//!
//! While a response streams, the rest of its request body is sent whenever the response body
//! is polled (an upstream may answer before it has read the whole request, and may need it to
//! go on answering). When the response ends first, the rest is not sent and the connection is
//! closed, not reused.

use std::future::poll_fn;
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::codec::{self, Chunked, Decoded, Encoding, Framing};
use super::tls::Stream;
use super::{BoxError, Connector, Pending, RequestBody, SendError, Waiting};

/// A connection idle for longer is not reused (upstreams commonly close after 60–75 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(55);
/// How often idle connections are looked at, to close those the upstream closed or that
/// passed [`IDLE_TIMEOUT`] (each holds a socket and a slot of the bound until then).
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Bytes read at once (what hyper's read buffer starts with).
const READ_SIZE: usize = 8192;

/// The pool of connections to the upstream, for requests with bodies of type `B` (the
/// proxy forwards hyper's [`Incoming`]).
#[derive(Debug)]
pub(super) struct Http1<B = Incoming> {
    inner: Arc<Pool>,
    _body: PhantomData<fn(B)>,
}

#[derive(Debug)]
struct Pool {
    connector: Arc<Connector>,
    /// Idle connections, the most recently used last.
    idle: Mutex<Vec<Idle>>,
    /// One permit per open connection.
    slots: Arc<Semaphore>,
    max_connections: usize,
    /// Requests waiting for a connection, shared with the HTTP/2 set.
    pending: Arc<Pending>,
    /// Signalled when a connection goes back to the idle list.
    returned: Notify,
    /// The sweeper of idle connections has been started.
    sweeping: std::sync::atomic::AtomicBool,
}

/// One open connection: its socket and its slot of the bound, both let go when it is dropped.
#[derive(Debug)]
struct Conn {
    io: Stream,
    _slot: OwnedSemaphorePermit,
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
}

impl Conn {
    /// Still open, with nothing unread: the upstream neither closed it nor sent bytes no
    /// request asked for. One read that does not wait.
    fn usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut buf),
            Poll::Pending
        )
    }
}

/// Why an exchange failed.
enum Failed<B> {
    /// Nothing of the request was written (a pooled connection found closed): it can go to
    /// another connection.
    Unsent(Box<Request<RequestBody<B>>>),
    Error(SendError),
}

impl<B> From<SendError> for Failed<B> {
    fn from(e: SendError) -> Self {
        Failed::Error(e)
    }
}

impl<B> Http1<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// How this pool connects (plaintext, or TLS offering only HTTP/1.1 by ALPN): also how an
    /// upgrade's connection of its own is made.
    pub(super) fn connector(&self) -> &Connector {
        &self.inner.connector
    }

    /// A pool that makes its connections with `connector`, each holding one of `slots`.
    pub(super) fn new(
        connector: Arc<Connector>,
        slots: Arc<Semaphore>,
        max_connections: usize,
        pending: Arc<Pending>,
    ) -> Http1<B> {
        Http1 {
            inner: Arc::new(Pool {
                connector,
                idle: Mutex::new(Vec::new()),
                slots,
                max_connections,
                pending,
                returned: Notify::new(),
                sweeping: std::sync::atomic::AtomicBool::new(false),
            }),
            _body: PhantomData,
        }
    }

    /// `now`: the time the request was handed over (for the idle connections' age).
    pub(super) async fn exchange(
        &self,
        mut req: Request<RequestBody<B>>,
        timeout: Duration,
        mut now: Instant,
    ) -> Result<Response<PooledBody<B>>, SendError> {
        let pool = &self.inner;
        let mut waiting: Option<(Waiting<'_>, tokio::time::Instant)> = None;
        loop {
            while let Some(conn) = pool.checkout(now) {
                match send(pool, conn, req, true).await {
                    Ok(resp) => return Ok(resp),
                    // Nothing was written: the request is intact and can go elsewhere.
                    Err(Failed::Unsent(r)) => req = *r,
                    Err(Failed::Error(e)) => return Err(e),
                }
            }
            let slot = match pool.slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    // Every slot is taken: wait for a connection to come back or to close, as
                    // one of a bounded number of waiting requests.
                    let deadline = match &waiting {
                        Some((_, d)) => *d,
                        None => {
                            let place = pool.pending.join()?;
                            let d = tokio::time::Instant::now() + timeout;
                            waiting = Some((place, d));
                            d
                        }
                    };
                    tokio::select! {
                        () = pool.returned.notified() => {
                            now = Instant::now();
                            continue;
                        }
                        slot = pool.slots.clone().acquire_owned() => match slot {
                            Ok(slot) => slot,
                            Err(_) => return Err(SendError::Overflow),
                        },
                        () = tokio::time::sleep_until(deadline) => return Err(SendError::Timeout),
                    }
                }
            };
            drop(waiting);
            let conn = pool.connect(slot).await?;
            return match send(pool, conn, req, false).await {
                Ok(resp) => Ok(resp),
                Err(Failed::Unsent(_)) => Err(SendError::Closed(
                    "the connection closed before the request was written".into(),
                )),
                Err(Failed::Error(e)) => Err(e),
            };
        }
    }

    /// Idle connections in the pool (for tests).
    #[cfg(test)]
    pub fn idle_len(&self) -> usize {
        self.inner.idle.lock().map_or(0, |v| v.len())
    }

    /// Connections open now: connecting, busy or idle (for tests).
    pub fn open_connections(&self) -> usize {
        self.inner.max_connections - self.inner.slots.available_permits()
    }
}

/// Sends `req` on `conn` and reads the response head. `reused`: `conn` came from the idle
/// list (a failure before any byte was written gives the request back).
async fn send<B>(
    pool: &Arc<Pool>,
    mut conn: Conn,
    req: Request<RequestBody<B>>,
    reused: bool,
) -> Result<Response<PooledBody<B>>, Failed<B>>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = req.into_parts();
    let has_body = !body.is_end_stream();
    let (head, encoding) = codec::request_head(&mut parts, has_body, body.size_hint().exact())
        .map_err(SendError::Protocol)?;
    let trailers = match encoding {
        Some(Encoding::Chunked) => codec::allowed_trailers(&parts.headers),
        _ => Vec::new(),
    };
    let mut written = 0;
    while let Some(rest) = head.get(written..).filter(|r| !r.is_empty()) {
        match conn.io.write(rest).await {
            Ok(0) => {
                return Err(SendError::Closed("the upstream connection closed".into()).into());
            }
            Ok(n) => written += n,
            Err(_) if written == 0 && reused => {
                return Err(Failed::Unsent(Box::new(Request::from_parts(parts, body))));
            }
            Err(e) => return Err(SendError::Closed(e.to_string()).into()),
        }
    }
    drop(head);
    let head_request = parts.method == Method::HEAD;
    // Not kept while the response is awaited.
    drop(parts);
    let mut wire = Wire {
        conn,
        sending: encoding.map(|encoding| Sending {
            body,
            encoding,
            trailers,
            out: None,
            flush: true,
        }),
        write_failed: None,
        buf: BytesMut::new(),
    };
    if wire.sending.is_none() {
        wire.conn
            .io
            .flush()
            .await
            .map_err(|e| SendError::Protocol(e.to_string()))?;
    }
    let head = poll_fn(|cx| wire.poll_head(cx, head_request)).await?;
    let framing = head.framing;
    let mut response = Response::new(());
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    let mut body = PooledBody {
        wire: Some(Box::new(wire)),
        decoder: match framing {
            Framing::Empty => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(Chunked::Size),
            Framing::Close => Decoder::Close,
        },
        keep_alive: head.keep_alive,
        pool: pool.clone(),
        _body: PhantomData,
    };
    if framing == Framing::Empty {
        body.finish();
    }
    Ok(response.map(|()| body))
}

/// The request body still to send, and how.
struct Sending<B> {
    body: RequestBody<B>,
    encoding: Encoding,
    /// The trailer fields that may go out ([`codec::allowed_trailers`]).
    trailers: Vec<http::HeaderName>,
    /// Bytes taken from the body and not yet written.
    out: Option<Bytes>,
    /// Written bytes wait for a flush (TLS keeps them until then).
    flush: bool,
}

/// Why sending the request body stopped.
enum SendFailure {
    /// The client's body failed (its framing, connection or pace): the exchange fails, and
    /// [`super::settled`] puts it down to the client.
    Body(String),
    /// The upstream connection would not take more: the response may still come.
    Upstream(String),
}

/// One exchange's connection while it runs: the request body still to send and the bytes
/// read and not yet used.
struct Wire<B> {
    conn: Conn,
    sending: Option<Sending<B>>,
    /// Why the request could not be sent whole.
    write_failed: Option<String>,
    /// Allocated when the socket has bytes to read; empty again between exchanges.
    buf: BytesMut,
}

impl<B> Wire<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    /// Sends what the request body gives until it ends or has nothing ready.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SendFailure>> {
        let Some(s) = &mut self.sending else {
            return Poll::Ready(Ok(()));
        };
        let io = &mut self.conn.io;
        loop {
            if let Some(out) = &mut s.out {
                while !out.is_empty() {
                    match ready!(Pin::new(&mut *io).poll_write(cx, out)) {
                        Ok(0) => {
                            return Poll::Ready(Err(SendFailure::Upstream("write zero".into())));
                        }
                        Ok(n) => out.advance(n),
                        Err(e) => return Poll::Ready(Err(SendFailure::Upstream(e.to_string()))),
                    }
                }
                s.out = None;
            }
            if s.flush {
                if let Err(e) = ready!(Pin::new(&mut *io).poll_flush(cx)) {
                    return Poll::Ready(Err(SendFailure::Upstream(e.to_string())));
                }
                s.flush = false;
            }
            if s.encoding == Encoding::Length(0) {
                // Sent whole (what the body may still give beyond its length is not sent).
                self.sending = None;
                return Poll::Ready(Ok(()));
            }
            let frame = match ready!(Pin::new(&mut s.body).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return Poll::Ready(Err(SendFailure::Body(e.to_string()))),
                None => {
                    return match s.encoding {
                        Encoding::Chunked => {
                            s.out = Some(codec::last_chunk(None));
                            s.encoding = Encoding::Length(0);
                            s.flush = true;
                            continue;
                        }
                        _ => Poll::Ready(Err(SendFailure::Body(
                            "the request body ended before its content-length".into(),
                        ))),
                    };
                }
            };
            s.flush = true;
            match frame.into_data() {
                Ok(mut data) => {
                    let data = data.copy_to_bytes(data.remaining());
                    if data.is_empty() {
                        continue;
                    }
                    s.out = Some(match s.encoding {
                        Encoding::Length(left) => {
                            let len = data.len() as u64;
                            if len > left {
                                return Poll::Ready(Err(SendFailure::Body(
                                    "the request body is longer than its content-length".into(),
                                )));
                            }
                            s.encoding = Encoding::Length(left - len);
                            data
                        }
                        Encoding::Chunked => {
                            let mut chunk = BytesMut::with_capacity(data.len() + 20);
                            chunk.extend_from_slice(&codec::chunk_size_line(data.len()));
                            chunk.extend_from_slice(&data);
                            chunk.extend_from_slice(codec::CHUNK_END);
                            chunk.freeze()
                        }
                    });
                }
                Err(frame) => {
                    // Trailers go out with a chunked body only, and only those the request
                    // announced (as hyper's client sends them).
                    if let (Ok(trailers), Encoding::Chunked) = (frame.into_trailers(), s.encoding) {
                        let kept = codec::allowed_only(trailers, &s.trailers);
                        s.out = Some(codec::last_chunk(kept.as_ref()));
                        s.encoding = Encoding::Length(0);
                    }
                }
            }
        }
    }

    /// Goes on sending the request body, if it is not sent yet. `Err`: the client's body
    /// failed.
    fn keep_sending(&mut self, cx: &mut Context<'_>) -> Result<(), String> {
        if self.sending.is_none() {
            return Ok(());
        }
        match self.poll_send(cx) {
            Poll::Pending | Poll::Ready(Ok(())) => Ok(()),
            Poll::Ready(Err(SendFailure::Body(e))) => Err(e),
            Poll::Ready(Err(SendFailure::Upstream(e))) => {
                self.sending = None;
                self.write_failed = Some(e);
                Ok(())
            }
        }
    }

    /// Reads more of the response into `buf`; `Ok(0)`: the upstream closed the connection.
    /// The buffer is allocated only when there is something to read.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        match &mut self.conn.io {
            Stream::Plain(tcp) => loop {
                ready!(tcp.poll_read_ready(cx))?;
                if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
                    self.buf.reserve(READ_SIZE);
                }
                match tcp.try_read_buf(&mut self.buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    r => return Poll::Ready(r),
                }
            },
            Stream::Tls(tls) => {
                if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
                    self.buf.reserve(READ_SIZE);
                }
                tokio_util::io::poll_read_buf(Pin::new(tls), cx, &mut self.buf)
            }
        }
    }

    /// Sends the request body meanwhile, and reads until a whole response head has come.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        head_request: bool,
    ) -> Poll<Result<codec::ResponseHead, SendError>> {
        loop {
            self.keep_sending(cx).map_err(SendError::Protocol)?;
            if !self.buf.is_empty()
                && let Some(head) = codec::response_head(&mut self.buf, head_request)
                    .map_err(SendError::Protocol)?
            {
                return Poll::Ready(Ok(head));
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => {
                    let why = match &self.write_failed {
                        Some(e) => format!(
                            "the upstream closed the connection before the response head (the request could not be sent whole: {e})"
                        ),
                        None => {
                            "the upstream closed the connection before the response head".into()
                        }
                    };
                    return Poll::Ready(Err(SendError::Closed(why)));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(SendError::Closed(e.to_string()))),
            }
        }
    }
}

impl Pool {
    /// The most recently used idle connection that is open and not older than
    /// [`IDLE_TIMEOUT`] at `now`.
    fn checkout(&self, now: Instant) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(mut c) = idle.pop() {
            if now.saturating_duration_since(c.since) < IDLE_TIMEOUT && c.conn.usable() {
                return Some(c.conn);
            }
        }
        None
    }

    fn checkin(self: &Arc<Self>, conn: Conn) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        idle.push(Idle {
            conn,
            since: Instant::now(),
        });
        drop(idle);
        self.returned.notify_one();
        if !self
            .sweeping
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
    }

    /// Opens a connection that holds `slot` until it closes.
    async fn connect(&self, slot: OwnedSemaphorePermit) -> Result<Conn, SendError> {
        let (io, _) = self.connector.connect().await?;
        Ok(Conn { io, _slot: slot })
    }
}

/// Every [`SWEEP_EVERY`], closes the idle connections the upstream closed or that are too old,
/// for as long as the pool exists.
async fn sweep(pool: Weak<Pool>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let now = Instant::now();
        let closed: Vec<Idle> = {
            let Ok(mut idle) = pool.idle.lock() else {
                return;
            };
            let mut closed = Vec::new();
            let kept = std::mem::take(&mut *idle)
                .into_iter()
                .filter_map(|mut c| {
                    if now.saturating_duration_since(c.since) < IDLE_TIMEOUT && c.conn.usable() {
                        Some(c)
                    } else {
                        closed.push(c);
                        None
                    }
                })
                .collect();
            *idle = kept;
            closed
        };
        // Closed outside the lock.
        drop(closed);
    }
}

/// How the rest of the response body is read.
#[derive(Debug)]
enum Decoder {
    Length(u64),
    Chunked(Chunked),
    /// Until the upstream closes the connection.
    Close,
    Done,
}

/// The upstream's response body. When it has been read to its end, its connection goes back
/// to the pool; dropped before that, the connection is closed (HTTP/1.1 cannot skip the rest).
pub struct PooledBody<B = Incoming> {
    /// `None` once the body has ended.
    wire: Option<Box<Wire<B>>>,
    decoder: Decoder,
    keep_alive: bool,
    pool: Arc<Pool>,
    _body: PhantomData<fn(B)>,
}

impl<B> std::fmt::Debug for PooledBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("decoder", &self.decoder)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

/// A response body that could not be read to its end.
#[derive(Debug)]
pub struct BodyError(String);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BodyError {}

impl<B> PooledBody<B> {
    /// The body has ended: the connection goes back to the pool if it can carry another
    /// request, and is closed otherwise.
    fn finish(&mut self) {
        self.decoder = Decoder::Done;
        let Some(wire) = self.wire.take() else { return };
        let Wire {
            conn,
            sending,
            write_failed,
            buf,
        } = *wire;
        if self.keep_alive && sending.is_none() && write_failed.is_none() && buf.is_empty() {
            self.pool.checkin(conn);
        }
    }

    fn fail(&mut self, why: String) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.wire = None;
        self.decoder = Decoder::Done;
        Poll::Ready(Some(Err(BodyError(why))))
    }
}

impl<B> Body for PooledBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let Some(wire) = this.wire.as_mut() else {
            return Poll::Ready(None);
        };
        if let Err(e) = wire.keep_sending(cx) {
            return this.fail(e);
        }
        loop {
            let Some(wire) = this.wire.as_mut() else {
                return Poll::Ready(None);
            };
            let frame = match &mut this.decoder {
                Decoder::Done => None,
                Decoder::Length(left) if !wire.buf.is_empty() => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(wire.buf.len());
                    *left -= n as u64;
                    let data = wire.buf.split_to(n).freeze();
                    if *left == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoder::Close if !wire.buf.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(wire.buf.split().freeze()))));
                }
                Decoder::Chunked(chunked) => match chunked.decode(&mut wire.buf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Trailers(t)) => Some(Frame::trailers(t)),
                    Ok(Decoded::End) => None,
                    Ok(Decoded::More) => match ready!(wire.poll_fill(cx)) {
                        Ok(0) => {
                            return this.fail("the upstream closed the connection in the middle of a chunked body".into());
                        }
                        Ok(_) => continue,
                        Err(e) => return this.fail(e.to_string()),
                    },
                    Err(e) => return this.fail(e),
                },
                Decoder::Length(_) | Decoder::Close => match ready!(wire.poll_fill(cx)) {
                    Ok(0) if matches!(this.decoder, Decoder::Close) => None,
                    Ok(0) => {
                        return this.fail(
                            "the upstream closed the connection before the body's content-length"
                                .into(),
                        );
                    }
                    Ok(_) => continue,
                    Err(e) => return this.fail(e.to_string()),
                },
            };
            this.finish();
            return Poll::Ready(frame.map(Ok));
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.decoder, Decoder::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Done => SizeHint::with_exact(0),
            Decoder::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use std::collections::VecDeque;

    use http::HeaderMap;
    use http_body_util::{BodyExt, Empty};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    type Client = Http1<Empty<Bytes>>;

    impl Client {
        /// A request through the pool under the response timer, as [`super::super::Upstream`]
        /// sends it.
        async fn send(
            &self,
            req: Request<Empty<Bytes>>,
            timeout: Duration,
        ) -> Result<Response<PooledBody<Empty<Bytes>>>, SendError> {
            let sent = Instant::now();
            let exchange = |r| async move { Ok(self.exchange(r, timeout, sent).await) };
            match super::super::timed(req, timeout, sent, T, exchange).await {
                Ok(r) => r,
                Err(_) => panic!("the pool does not give requests back"),
            }
        }
    }

    /// The response timeout of the tests' requests.
    const T: Duration = Duration::from_secs(5);

    fn client(addr: std::net::SocketAddr) -> Client {
        bounded_client(addr, 1024)
    }

    fn bounded_client(addr: std::net::SocketAddr, max_connections: usize) -> Client {
        let connector = Arc::new(Connector {
            addr: addr.to_string(),
            timeout: Duration::from_secs(2),
            tls: None,
        });
        Http1::new(
            connector,
            Arc::new(Semaphore::new(max_connections)),
            max_connections,
            Arc::new(Pending::new(max_connections)),
        )
    }

    fn get(path: &str) -> Request<Empty<Bytes>> {
        Request::builder()
            .uri(path)
            .header("host", "upstream.test")
            .body(Empty::new())
            .unwrap()
    }

    /// A local server that hands each accepted connection to `conn`; counts the connections.
    async fn counting_server<F, Fut>(conn: F) -> (std::net::SocketAddr, Arc<AtomicUsize>)
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(conn(stream));
            }
        });
        (addr, accepted)
    }

    /// A hyper server answering `/big` with 1 MiB and everything else with its path, `/slow`
    /// after 200 ms.
    async fn server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        counting_server(|stream| async move {
            let svc = service_fn(|req: Request<Incoming>| async move {
                if req.uri().path() == "/slow" {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let body = if req.uri().path() == "/big" {
                    Bytes::from(vec![b'x'; 1 << 20])
                } else {
                    Bytes::from(req.uri().path().to_string())
                };
                Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(body)))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        })
        .await
    }

    async fn body_text(resp: Response<PooledBody<Empty<Bytes>>>) -> String {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let (addr, accepted) = server().await;
        let up = client(addr);
        for i in 0..5 {
            let resp = up.send(get(&format!("/r{i}")), T).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(body_text(resp).await, format!("/r{i}"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(up.idle_len(), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_open_more_connections_and_keep_them() {
        let (addr, accepted) = server().await;
        let up = Arc::new(client(addr));
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let up = up.clone();
                tokio::spawn(async move {
                    let resp = up.send(get(&format!("/c{i}")), T).await.unwrap();
                    (resp.status(), body_text(resp).await)
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), (http::StatusCode::OK, format!("/c{i}")));
        }
        let opened = accepted.load(Ordering::SeqCst);
        assert!((1..=4).contains(&opened), "{opened}");
        assert_eq!(up.idle_len(), opened);
    }

    #[tokio::test]
    async fn every_connection_within_the_bound_is_kept_for_the_next_burst() {
        let (addr, accepted) = server().await;
        let up = Arc::new(client(addr));
        // A burst: each request in flight at once needs its own connection.
        let n = 70;
        for _ in 0..2 {
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    let up = up.clone();
                    tokio::spawn(
                        async move { body_text(up.send(get("/slow"), T).await.unwrap()).await },
                    )
                })
                .collect();
            for t in tasks {
                assert_eq!(t.await.unwrap(), "/slow");
            }
            assert_eq!(up.idle_len(), n);
        }
        // The second burst reused the first one's connections.
        assert_eq!(accepted.load(Ordering::SeqCst), n);
    }

    #[tokio::test]
    async fn a_response_dropped_unread_closes_its_connection() {
        let (addr, accepted) = server().await;
        let up = client(addr);
        let resp = up.send(get("/big"), T).await.unwrap();
        assert_eq!(resp.status(), 200);
        drop(resp);
        assert_eq!(up.idle_len(), 0);
        let resp = up.send(get("/after"), T).await.unwrap();
        assert_eq!(body_text(resp).await, "/after");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_reused() {
        // A raw server that answers one request per connection with keep-alive, then closes
        // the socket, as an upstream's idle timeout does.
        let (addr, accepted) = counting_server(|mut s| async move {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
            // Dropped here: the connection closes right after the response.
        })
        .await;
        let up = client(addr);
        for _ in 0..3 {
            let resp = up.send(get("/"), T).await.unwrap();
            assert_eq!(body_text(resp).await, "ok");
            eventually("close seen", || {
                up.inner
                    .idle
                    .lock()
                    .unwrap()
                    .iter_mut()
                    .all(|c| !c.conn.usable())
            })
            .await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    /// A request body of the frames given, then pending forever when `open` (a client that
    /// has not finished sending).
    struct Frames {
        frames: VecDeque<Frame<Bytes>>,
        open: bool,
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.frames.pop_front() {
                Some(f) => Poll::Ready(Some(Ok(f))),
                None if self.open => Poll::Pending,
                None => Poll::Ready(None),
            }
        }

        fn is_end_stream(&self) -> bool {
            self.frames.is_empty() && !self.open
        }
    }

    fn frames_client(addr: std::net::SocketAddr) -> Http1<Frames> {
        let connector = Arc::new(Connector {
            addr: addr.to_string(),
            timeout: Duration::from_secs(2),
            tls: None,
        });
        Http1::new(
            connector,
            Arc::new(Semaphore::new(8)),
            8,
            Arc::new(Pending::new(8)),
        )
    }

    fn post(frames: Vec<Frame<Bytes>>, open: bool) -> Request<RequestBody<Frames>> {
        let req = Request::builder()
            .method("POST")
            .uri("/up")
            .header("host", "upstream.test")
            .body(Frames {
                frames: frames.into(),
                open,
            })
            .unwrap();
        super::super::watched(req, T).0
    }

    /// Reads from `s` until `end` has been seen; what was read.
    async fn read_until(s: &mut tokio::net::TcpStream, end: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(end.len()).any(|w| w == end) {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_goes_chunked_with_its_trailers() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = Arc::new(Mutex::new(Some(tx)));
        let (addr, _) = counting_server(move |mut s| {
            let tx = tx.clone();
            async move {
                let got = read_until(&mut s, b"0\r\nx-sum: 7\r\n\r\n").await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await;
                if let Some(tx) = tx.lock().unwrap().take() {
                    let _ = tx.send(got);
                }
            }
        })
        .await;
        let up = frames_client(addr);
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", "7".parse().unwrap());
        // Not announced: dropped. Announced but never a trailer: dropped.
        trailers.insert("x-other", "1".parse().unwrap());
        trailers.insert("authorization", "Bearer x".parse().unwrap());
        let mut req = post(
            vec![
                Frame::data(Bytes::from_static(b"hello")),
                Frame::data(Bytes::from(vec![b'z'; 26])),
                Frame::trailers(trailers),
            ],
            false,
        );
        req.headers_mut()
            .insert("trailer", "x-sum, authorization".parse().unwrap());
        let resp = up.exchange(req, T, Instant::now()).await.unwrap();
        assert_eq!(resp.status(), 200);
        let got = String::from_utf8(rx.await.unwrap()).unwrap();
        let expected = format!(
            "POST /up HTTP/1.1\r\nhost: upstream.test\r\ntrailer: x-sum, authorization\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n1a\r\n{}\r\n0\r\nx-sum: 7\r\n\r\n",
            "z".repeat(26)
        );
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn an_answer_before_the_whole_request_body_is_relayed_and_the_connection_closed() {
        let (addr, accepted) = counting_server(|mut s| async move {
            // Answers as soon as it has the head and the first chunk, as an upstream that
            // refuses an upload does.
            let _ = read_until(&mut s, b"hello\r\n").await;
            let _ = s
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\r\nbig!")
                .await;
            let mut buf = [0u8; 1024];
            while s.read(&mut buf).await.unwrap_or(0) > 0 {}
        })
        .await;
        let up = frames_client(addr);
        // The client never finishes its body.
        let req = post(vec![Frame::data(Bytes::from_static(b"hello"))], true);
        let resp = up.exchange(req, T, Instant::now()).await.unwrap();
        assert_eq!(resp.status(), 413);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"big!");
        // Not reused: the upstream still expects the rest of the body on it.
        assert_eq!(up.idle_len(), 0);
        assert_eq!(up.open_connections(), 0);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_read_to_the_close_ends_there_and_its_connection_is_not_reused() {
        let (addr, accepted) = counting_server(|mut s| async move {
            let _ = read_until(&mut s, b"\r\n\r\n").await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the close").await;
        })
        .await;
        let up = client(addr);
        for _ in 0..2 {
            let resp = up.send(get("/"), T).await.unwrap();
            assert_eq!(body_text(resp).await, "until the close");
            assert_eq!(up.idle_len(), 0);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_chunked_response_streams_with_its_trailers_and_keeps_its_connection() {
        let (addr, accepted) = counting_server(|mut s| async move {
            loop {
                let _ = read_until(&mut s, b"\r\n\r\n").await;
                // In pieces, as a streaming upstream writes it.
                for piece in [
                    &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nab"[..],
                    b"c\r\n2\r\nde\r\n0\r\ngrpc-status: 0\r\n",
                    b"\r\n",
                ] {
                    s.write_all(piece).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
        .await;
        let up = client(addr);
        for _ in 0..2 {
            let resp = up.send(get("/"), T).await.unwrap();
            let collected = resp.into_body().collect().await.unwrap();
            assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
            assert_eq!(&collected.to_bytes()[..], b"abcde");
            assert_eq!(up.idle_len(), 1);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_response_cut_short_is_an_error_of_the_body() {
        let (addr, _) = counting_server(|mut s| async move {
            let _ = read_until(&mut s, b"\r\n\r\n").await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort")
                .await;
        })
        .await;
        let up = client(addr);
        let resp = up.send(get("/"), T).await.unwrap();
        let err = resp.into_body().collect().await.unwrap_err();
        assert!(err.to_string().contains("content-length"), "{err}");
        assert_eq!(up.open_connections(), 0);
    }

    /// Waits, up to five seconds, until `done` holds.
    async fn eventually(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A server that never answers `/hang`, answers anything else with its path, and counts
    /// the connections it saw closed.
    async fn hanging_server() -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let closed = Arc::new(AtomicUsize::new(0));
        let seen = closed.clone();
        let (addr, accepted) = counting_server(move |mut s| {
            let closed = seen.clone();
            async move {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    if buf[..n].starts_with(b"GET /hang ") {
                        while s.read(&mut buf).await.unwrap_or(0) > 0 {}
                        break;
                    }
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n/ok")
                        .await;
                }
                closed.fetch_add(1, Ordering::SeqCst);
            }
        })
        .await;
        (addr, accepted, closed)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_given_up_closes_its_connection_and_frees_its_slot() {
        let (addr, accepted, closed) = hanging_server().await;
        let up = Arc::new(bounded_client(addr, 1));
        let pending = {
            let up = up.clone();
            tokio::spawn(async move { up.send(get("/hang"), Duration::from_secs(60)).await })
        };
        eventually("connected", || accepted.load(Ordering::SeqCst) == 1).await;
        assert_eq!(up.open_connections(), 1);
        // The client goes away (an HTTP/2 stream reset drops the request's future).
        pending.abort();
        eventually("slot freed", || up.open_connections() == 0).await;
        eventually("connection closed", || closed.load(Ordering::SeqCst) == 1).await;
        let resp = up.send(get("/ok"), T).await.unwrap();
        assert_eq!(body_text(resp).await, "/ok");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_request_takes_the_connection_that_comes_back() {
        let (addr, accepted) = server().await;
        let up = Arc::new(bounded_client(addr, 1));
        let first = up.send(get("/slow"), T).await.unwrap();
        // The one connection is busy until `first` is read: the second request waits.
        let second = {
            let up = up.clone();
            tokio::spawn(async move { body_text(up.send(get("/next"), T).await.unwrap()).await })
        };
        eventually("waiting", || up.inner.pending.len() == 1).await;
        // A third finds the connection busy and one request waiting: refused.
        assert!(matches!(
            up.send(get("/third"), T).await,
            Err(SendError::Overflow)
        ));
        assert_eq!(body_text(first).await, "/slow");
        assert_eq!(second.await.unwrap(), "/next");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(up.inner.pending.len(), 0);
    }

    #[tokio::test]
    async fn a_wait_for_a_connection_ends_at_the_timeout() {
        let (addr, _, _) = hanging_server().await;
        let up = Arc::new(bounded_client(addr, 1));
        let held = {
            let up = up.clone();
            tokio::spawn(async move { up.send(get("/hang"), Duration::from_secs(60)).await })
        };
        eventually("connected", || up.open_connections() == 1).await;
        let t = Instant::now();
        let r = up.send(get("/ok"), Duration::from_millis(200)).await;
        assert!(matches!(r, Err(SendError::Timeout)), "{r:?}");
        assert!(t.elapsed() >= Duration::from_millis(200));
        held.abort();
    }

    #[tokio::test]
    async fn a_response_framed_by_both_length_and_chunking_is_refused() {
        let (addr, accepted) = counting_server(|mut s| async move {
            let mut buf = [0u8; 4096];
            while s.read(&mut buf).await.unwrap_or(0) > 0 {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
                    .await;
            }
        })
        .await;
        let up = client(addr);
        for _ in 0..2 {
            let r = up.send(get("/"), T).await;
            assert!(
                matches!(&r, Err(SendError::Protocol(e)) if e.contains("both")),
                "{r:?}"
            );
        }
        // Never reused.
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn refused_connections_are_connect_errors() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        match client(addr).send(get("/"), T).await {
            Err(SendError::Connect(msg)) => assert!(msg.contains(&addr.to_string()), "{msg}"),
            other => panic!("expected a connect error, got {other:?}"),
        }
    }
}
