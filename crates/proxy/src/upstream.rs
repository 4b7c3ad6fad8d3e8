//! The connection pool to the one upstream: HTTP/1.1 over TCP, keep-alive, most recently used
//! connection first.
//!
//! Owns: connecting (with its timeout and `TCP_NODELAY`), keeping idle connections, reusing
//! them, and retrying a request on a new connection when a pooled one turned out to be closed
//! before anything was written. Does not own timeouts on the response (the handler bounds the
//! whole exchange) or the headers sent (the handler prepares them).
//!
//! Why not hyper-util's pooled client: with one fixed upstream its per-request work (a pool
//! keyed by scheme and authority, a checkout future racing a connect future, and a task
//! spawned per request to return the connection) was a third of meshguard's CPU per forwarded
//! request. This pool is a `Vec` behind a mutex held for a push or a pop; a connection goes
//! back when the response body has been read to its end.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Idle connections kept at most; more are closed when their response ends. Each idle
/// connection holds about 25 KB (hyper's buffers and state); 64 cover a sidecar's usual
/// concurrency toward its one local upstream without keeping a burst's worth.
const MAX_IDLE: usize = 64;
/// A connection idle for longer is not reused (upstreams commonly close after 60–75 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(55);

/// Why a request could not be sent or answered.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made (refused, unreachable, connect timeout).
    Connect(String),
    /// The connection broke or the response was not valid HTTP.
    Protocol(hyper::Error),
}

/// The pool of connections to the upstream, for requests with bodies of type `B` (the
/// proxy forwards hyper's [`Incoming`]).
#[derive(Debug)]
pub struct Upstream<B = Incoming> {
    inner: Arc<Pool<B>>,
}

#[derive(Debug)]
struct Pool<B> {
    /// `host:port` to connect to.
    addr: String,
    connect_timeout: Duration,
    /// Idle connections, the most recently used last.
    idle: Mutex<Vec<Idle<B>>>,
}

#[derive(Debug)]
struct Idle<B> {
    sender: http1::SendRequest<B>,
    since: Instant,
}

impl<B> Upstream<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A pool for `http://authority` (port 80 when the authority has none).
    pub fn new(authority: &http::uri::Authority, connect_timeout: Duration) -> Upstream<B> {
        let addr = match authority.port_u16() {
            Some(_) => authority.as_str().to_string(),
            None => format!("{}:80", authority.host()),
        };
        Upstream {
            inner: Arc::new(Pool {
                addr,
                connect_timeout,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) and returns the response head; the body
    /// streams, and the connection returns to the pool when the body has been read.
    pub async fn send(&self, mut req: Request<B>) -> Result<Response<PooledBody<B>>, SendError> {
        while let Some(mut sender) = self.inner.checkout() {
            // Not ready means the connection closed since it was pooled: try the next one.
            // (Usually it is ready, and the `ready` future is not even made.)
            if !sender.is_ready() && sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.inner.clone().wrap(resp, sender)),
                Err(mut e) => match e.take_message() {
                    // Nothing was written: the request is intact and can go elsewhere.
                    Some(r) => req = r,
                    None => return Err(SendError::Protocol(e.into_error())),
                },
            }
        }
        let mut sender = self.inner.connect().await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(SendError::Protocol)?;
        Ok(self.inner.clone().wrap(resp, sender))
    }

    /// Idle connections in the pool (for tests).
    pub fn idle_len(&self) -> usize {
        self.inner.idle.lock().map_or(0, |v| v.len())
    }
}

impl<B> Pool<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn checkout(&self) -> Option<http1::SendRequest<B>> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(c) = idle.pop() {
            if !c.sender.is_closed() && c.since.elapsed() < IDLE_TIMEOUT {
                return Some(c.sender);
            }
        }
        None
    }

    fn checkin(&self, sender: http1::SendRequest<B>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<http1::SendRequest<B>, SendError> {
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect(self.addr.as_str()),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SendError::Connect(format!("{}: {e}", self.addr))),
            Err(_) => {
                return Err(SendError::Connect(format!(
                    "{}: connect timeout after {:?}",
                    self.addr, self.connect_timeout
                )));
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            // Head and body in one buffer, one write(2) (see `connection::Settings`).
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Protocol)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn wrap(
        self: Arc<Self>,
        resp: Response<Incoming>,
        sender: http1::SendRequest<B>,
    ) -> Response<PooledBody<B>> {
        let (parts, inner) = resp.into_parts();
        let mut body = PooledBody {
            inner,
            release: Some((sender, self)),
        };
        if body.inner.is_end_stream() {
            body.release();
        }
        Response::from_parts(parts, body)
    }
}

/// The upstream's response body. When it has been read to its end, its connection goes back
/// to the pool; dropped before that, the connection is closed (HTTP/1.1 cannot skip the rest).
#[derive(Debug)]
pub struct PooledBody<B = Incoming> {
    inner: Incoming,
    release: Option<(http1::SendRequest<B>, Arc<Pool<B>>)>,
}

impl<B> PooledBody<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn release(&mut self) {
        if let Some((sender, pool)) = self.release.take() {
            pool.checkin(sender);
        }
    }
}

impl<B> hyper::body::Body for PooledBody<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
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
            Poll::Ready(Some(Err(_))) => self.release = None,
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

    type Client = Upstream<Empty<Bytes>>;

    fn client(addr: std::net::SocketAddr) -> Client {
        Upstream::new(&addr.to_string().parse().unwrap(), Duration::from_secs(2))
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
            let resp = up.send(get(&format!("/r{i}"))).await.unwrap();
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
                    let resp = up.send(get(&format!("/c{i}"))).await.unwrap();
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
                tokio::spawn(async move { body_text(up.send(get("/slow")).await.unwrap()).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), "/slow");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), n);
        assert_eq!(up.idle_len(), MAX_IDLE);
        // The kept ones are reused.
        let resp = up.send(get("/again")).await.unwrap();
        assert_eq!(body_text(resp).await, "/again");
        assert_eq!(accepted.load(Ordering::SeqCst), n);
    }

    #[tokio::test]
    async fn a_response_dropped_unread_closes_its_connection() {
        let (addr, accepted) = server().await;
        let up = client(addr);
        let resp = up.send(get("/big")).await.unwrap();
        assert_eq!(resp.status(), 200);
        drop(resp);
        assert_eq!(up.idle_len(), 0);
        let resp = up.send(get("/after")).await.unwrap();
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
            let resp = up.send(get("/")).await.unwrap();
            assert_eq!(body_text(resp).await, "ok");
            // Let the connection task see the close before the next request.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn refused_connections_are_connect_errors() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        match client(addr).send(get("/")).await {
            Err(SendError::Connect(msg)) => assert!(msg.contains(&addr.to_string()), "{msg}"),
            other => panic!("expected a connect error, got {other:?}"),
        }
    }
}
