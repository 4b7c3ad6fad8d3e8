//! The HTTP/1.1 connection pool to the one upstream: keep-alive, most recently used
//! connection first, and a bound on the connections open at once.
//!
//! Owns: keeping idle connections, reusing them, retrying a request on a new connection when
//! a pooled one turned out to be closed before anything was written, the connection bound
//! with its queue of waiting requests (Envoy's circuit breakers `max_connections` and
//! `max_pending_requests`; the bound's slots and the queue ([`super::Pending`]) are shared with the
//! HTTP/2 set, [`super::h2`]),
//! and refusing responses whose framing contradicts itself. Does not own connecting (TCP,
//! TLS: [`super::Connector`]), the response timer and the request body's watch
//! ([`super::timed`]), the headers sent (the handler prepares them) or the answers sent for
//! failures ([`crate::response`]).
//!
//! Why not hyper-util's pooled client: with one fixed upstream its per-request work (a pool
//! keyed by scheme and authority, a checkout future racing a connect future, and a task
//! spawned per request to return the connection) was a third of meshguard's CPU per forwarded
//! request. This pool is a `Vec` behind a mutex held for a push or a pop; a connection goes
//! back when the response body has been read to its end.
//!
//! Every connection's task holds one of the bound's slots for as long as the connection is
//! open, so the bound counts connecting, busy and idle connections alike. A request given up
//! before its response ends (its client reset the stream, its timer fired) aborts that task:
//! the connection closes and its slot is free at once, however long the upstream would have
//! taken.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, header};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;

use super::{Connector, Pending, RequestBody, SendError, Waiting, describe};

/// Idle connections kept at most; more are closed when their response ends. Each idle
/// connection holds about 25 KB (hyper's buffers and state); 64 cover a sidecar's usual
/// concurrency toward its one local upstream without keeping a burst's worth.
const MAX_IDLE: usize = 64;
/// A connection idle for longer is not reused (upstreams commonly close after 60–75 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(55);

/// The pool of connections to the upstream, for requests with bodies of type `B` (the
/// proxy forwards hyper's [`Incoming`]).
#[derive(Debug)]
pub(super) struct Http1<B = Incoming> {
    inner: Arc<Pool<B>>,
}

#[derive(Debug)]
struct Pool<B> {
    connector: Arc<Connector>,
    /// Idle connections, the most recently used last.
    idle: Mutex<Vec<Idle<B>>>,
    /// One permit per open connection.
    slots: Arc<Semaphore>,
    max_connections: usize,
    /// Requests waiting for a connection, shared with the HTTP/2 set.
    pending: Arc<Pending>,
    /// Signalled when a connection goes back to the idle list.
    returned: Notify,
}

/// One open connection: the handle requests are sent with, and its task, aborted to close it.
#[derive(Debug)]
struct Conn<B> {
    sender: http1::SendRequest<RequestBody<B>>,
    task: AbortHandle,
}

#[derive(Debug)]
struct Idle<B> {
    conn: Conn<B>,
    since: Instant,
}

/// Closes a connection when dropped, unless defused: a request given up midway must not
/// leave its connection (and its slot) waiting for an answer nobody reads. (hyper closes it
/// too once its task notices the dropped response future; aborting frees the slot at once and
/// does not depend on that.)
struct CloseOnDrop<'a>(Option<&'a AbortHandle>);

impl CloseOnDrop<'_> {
    fn defuse(mut self) {
        self.0 = None;
    }
}

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(task) = self.0 {
            task.abort();
        }
    }
}

impl<B> Http1<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
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
            }),
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
            while let Some(mut conn) = pool.checkout(now) {
                // Not ready means the connection closed since it was pooled: try the next one.
                // (Usually it is ready, and the `ready` future is not even made.)
                if !conn.sender.is_ready() && conn.sender.ready().await.is_err() {
                    continue;
                }
                let guard = CloseOnDrop(Some(&conn.task));
                match conn.sender.try_send_request(req).await {
                    Ok(resp) => {
                        guard.defuse();
                        return pool.clone().wrap(resp, conn);
                    }
                    Err(mut e) => match e.take_message() {
                        // Nothing was written: the request is intact and can go elsewhere.
                        Some(r) => {
                            guard.defuse();
                            req = r;
                        }
                        None => return Err(SendError::Protocol(describe(&e.into_error()))),
                    },
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
            let mut conn = pool.connect(slot).await?;
            let guard = CloseOnDrop(Some(&conn.task));
            let resp = conn
                .sender
                .send_request(req)
                .await
                .map_err(|e| SendError::Protocol(describe(&e)))?;
            guard.defuse();
            return pool.clone().wrap(resp, conn);
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

impl<B> Pool<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// The most recently used idle connection that is open and not older than
    /// [`IDLE_TIMEOUT`] at `now`.
    fn checkout(&self, now: Instant) -> Option<Conn<B>> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(c) = idle.pop() {
            if !c.conn.sender.is_closed() && now.saturating_duration_since(c.since) < IDLE_TIMEOUT {
                return Some(c.conn);
            }
            c.conn.task.abort();
        }
        None
    }

    fn checkin(&self, conn: Conn<B>) {
        if conn.sender.is_closed() {
            conn.task.abort();
            return;
        }
        let Ok(mut idle) = self.idle.lock() else {
            conn.task.abort();
            return;
        };
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
            drop(idle);
            self.returned.notify_one();
        } else {
            conn.task.abort();
        }
    }

    /// Opens a connection that holds `slot` until it closes.
    async fn connect(&self, slot: OwnedSemaphorePermit) -> Result<Conn<B>, SendError> {
        let (stream, _) = self.connector.connect().await?;
        let (sender, conn) = http1::Builder::new()
            // Head and body in one buffer, one write(2) (see `connection::Settings`).
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Protocol(describe(&e)))?;
        let task = tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        })
        .abort_handle();
        Ok(Conn { sender, task })
    }

    fn wrap(
        self: Arc<Self>,
        resp: Response<Incoming>,
        conn: Conn<B>,
    ) -> Result<Response<PooledBody<B>>, SendError> {
        // A response framed both ways cannot be relayed with a length that matches its body
        // (RFC 9112 §6.3 calls it a possible smuggling attempt): refused, as Envoy does
        // without `allow_chunked_length`, and the connection is not reused.
        // One pass over the names, which compares them without hashing them (two lookups
        // hash each).
        let (mut chunked, mut length) = (false, false);
        for name in resp.headers().keys() {
            if name == header::TRANSFER_ENCODING {
                chunked = true;
            } else if name == header::CONTENT_LENGTH {
                length = true;
            }
        }
        if chunked && length {
            conn.task.abort();
            return Err(SendError::Protocol(
                "the response has both Content-Length and Transfer-Encoding".into(),
            ));
        }
        let (parts, inner) = resp.into_parts();
        let mut body = PooledBody {
            inner,
            release: Some((conn, self)),
        };
        if body.inner.is_end_stream() {
            body.release();
        }
        Ok(Response::from_parts(parts, body))
    }
}

/// The upstream's response body. When it has been read to its end, its connection goes back
/// to the pool; dropped before that, the connection is closed (HTTP/1.1 cannot skip the rest).
#[derive(Debug)]
pub struct PooledBody<B = Incoming> {
    inner: Incoming,
    release: Option<(Conn<B>, Arc<Pool<B>>)>,
}

impl<B> PooledBody<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn release(&mut self) {
        if let Some((conn, pool)) = self.release.take() {
            pool.checkin(conn);
        }
    }
}

impl<B> Drop for PooledBody<B> {
    fn drop(&mut self) {
        if let Some((conn, _)) = self.release.take() {
            conn.task.abort();
        }
    }
}

impl<B> Body for PooledBody<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => {
                if let Some((conn, _)) = self.release.take() {
                    conn.task.abort();
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt, Empty};
    use hyper::service::service_fn;
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
    async fn the_pool_keeps_at_most_max_idle_connections() {
        let (addr, accepted) = server().await;
        let up = Arc::new(client(addr));
        // More requests in flight at once than the pool keeps: each needs its own connection.
        let n = MAX_IDLE + 6;
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
        assert_eq!(accepted.load(Ordering::SeqCst), n);
        assert_eq!(up.idle_len(), MAX_IDLE);
        // The kept ones are reused.
        let resp = up.send(get("/again"), T).await.unwrap();
        assert_eq!(body_text(resp).await, "/again");
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
                    .iter()
                    .all(|c| c.conn.sender.is_closed())
            })
            .await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_request_a_closing_pooled_connection_did_not_take_goes_to_a_new_one() {
        let (addr, accepted) = server().await;
        let up = client(addr);
        // A pooled connection that looks open and ready, whose task ends as soon as a request
        // is queued on it, without writing it: what hyper does when it finds the upstream's
        // close (or a stray byte) on an idle connection just as a request is handed to it.
        let (io, _other_end) = tokio::io::duplex(1024);
        let (sender, conn) = http1::handshake::<_, RequestBody<Empty<Bytes>>>(TokioIo::new(io))
            .await
            .unwrap();
        let task = tokio::spawn(async move {
            // The first poll runs the connection until it waits for a request; the next one,
            // when a request has been queued, drops it unpolled.
            let mut conn = Some(Box::pin(conn));
            let mut first = true;
            std::future::poll_fn(move |cx| {
                if std::mem::take(&mut first) {
                    if let Some(c) = conn.as_mut() {
                        assert!(c.as_mut().poll(cx).is_pending());
                    }
                    return Poll::Pending;
                }
                conn = None;
                Poll::Ready(())
            })
            .await;
        })
        .abort_handle();
        eventually("ready", || sender.is_ready()).await;
        up.inner.idle.lock().unwrap().push(Idle {
            conn: Conn { sender, task },
            since: Instant::now(),
        });
        let resp = up.send(get("/retried"), T).await.unwrap();
        assert_eq!(body_text(resp).await, "/retried");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
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
