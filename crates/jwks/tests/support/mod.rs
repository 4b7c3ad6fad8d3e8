//! Test helpers: a small HTTP(S) server on 127.0.0.1 whose answers a test changes while it
//! runs, and which counts the requests per path; key and certificate makers.
#![allow(dead_code)] // Not every test file uses every helper.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use meshguard_jwt::{KeyKind, SigningKey};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// What the server answers on one path.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Sleep this long before answering (in the server's task).
    pub delay: Duration,
    /// Send the body in chunks without a content-length.
    pub chunked: bool,
}

impl Reply {
    pub fn json(body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
            delay: Duration::ZERO,
            chunked: false,
        }
    }

    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: b"error page".to_vec(),
            delay: Duration::ZERO,
            chunked: false,
        }
    }

    pub fn redirect(status: u16, location: &str) -> Reply {
        Reply {
            status,
            headers: vec![("location".into(), location.into())],
            body: Vec::new(),
            delay: Duration::ZERO,
            chunked: false,
        }
    }

    pub fn delayed(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    pub fn chunked(mut self) -> Reply {
        self.chunked = true;
        self
    }
}

#[derive(Default)]
struct Routes {
    replies: HashMap<String, Reply>,
    hits: HashMap<String, usize>,
}

/// A test server. Stops when dropped; `stop` and `restart` simulate an outage on the same
/// port.
pub struct TestServer {
    addr: SocketAddr,
    host: String,
    scheme: &'static str,
    routes: Arc<Mutex<Routes>>,
    tls: Option<TlsAcceptor>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_on("127.0.0.1:0".parse().unwrap(), None).await
    }

    /// An https server; its URLs use `localhost`.
    pub async fn start_tls(acceptor: TlsAcceptor) -> TestServer {
        Self::start_on("127.0.0.1:0".parse().unwrap(), Some(acceptor)).await
    }

    /// A server on a given address (for "the server comes up later").
    pub async fn start_on(addr: SocketAddr, tls: Option<TlsAcceptor>) -> TestServer {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes = Arc::new(Mutex::new(Routes::default()));
        let task = tokio::spawn(accept_loop(listener, routes.clone(), tls.clone()));
        let (scheme, host) = match tls {
            Some(_) => ("https", format!("localhost:{}", addr.port())),
            None => ("http", addr.to_string()),
        };
        TestServer {
            addr,
            host,
            scheme,
            routes,
            tls,
            task: Mutex::new(Some(task)),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.host, path)
    }

    pub fn set(&self, path: &str, reply: Reply) {
        self.routes
            .lock()
            .unwrap()
            .replies
            .insert(path.to_owned(), reply);
    }

    pub fn hits(&self, path: &str) -> usize {
        self.routes
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Closes the listener and every open connection.
    pub fn stop(&self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }

    /// Listens again on the same port, with the same answers.
    pub async fn restart(&self) {
        self.stop();
        let listener = bind_retry(self.addr).await;
        let task = tokio::spawn(accept_loop(listener, self.routes.clone(), self.tls.clone()));
        *self.task.lock().unwrap() = Some(task);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds `addr`, retrying briefly: the aborted listener is closed asynchronously.
pub async fn bind_retry(addr: SocketAddr) -> TcpListener {
    let start = Instant::now();
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if start.elapsed() > Duration::from_secs(2) => panic!("bind {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// A free port on 127.0.0.1 with nothing listening (for "the server is down").
pub async fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

async fn accept_loop(listener: TcpListener, routes: Arc<Mutex<Routes>>, tls: Option<TlsAcceptor>) {
    // Connections live in this set, so aborting the loop also closes them (no keep-alive
    // connection outlives a `stop`).
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let routes = routes.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            let svc = service_fn(move |req| answer(routes.clone(), req));
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    }
                }
                None => {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
}

async fn answer(
    routes: Arc<Mutex<Routes>>,
    req: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let path = req.uri().path().to_owned();
    let reply = {
        let mut routes = routes.lock().unwrap();
        *routes.hits.entry(path.clone()).or_default() += 1;
        routes.replies.get(&path).cloned()
    };
    let reply = reply.unwrap_or_else(|| Reply::status(404));
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let body = if reply.chunked {
        let chunks = reply
            .body
            .chunks(1000)
            .map(Bytes::copy_from_slice)
            .collect::<VecDeque<_>>();
        Chunks(chunks).boxed()
    } else {
        Full::new(Bytes::from(reply.body)).boxed()
    };
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name, value);
    }
    Ok(response.body(body).unwrap())
}

/// A body of unknown length (sent chunked).
struct Chunks(VecDeque<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// A JWKS with one fresh EC P-256 key per `kid`.
pub fn jwks_json(kids: &[&str]) -> String {
    let keys: Vec<serde_json::Value> = kids
        .iter()
        .map(|kid| {
            SigningKey::generate(KeyKind::EcP256)
                .unwrap()
                .public_jwk(Some(kid))
        })
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

/// `kid`s of a key set.
pub fn kids(jwks: &meshguard_jwt::Jwks) -> Vec<String> {
    jwks.keys()
        .iter()
        .map(|k| k.kid().unwrap_or("").to_owned())
        .collect()
}

/// A CA made for the test, and a server certificate for `localhost` and 127.0.0.1 it signed.
pub fn tls_acceptor_and_ca_pem() -> (TlsAcceptor, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "meshguard-jwks test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    (TlsAcceptor::from(Arc::new(config)), ca.pem())
}

/// A file in the temp directory, removed on drop.
pub struct TempFile(PathBuf);

impl TempFile {
    pub fn new(name: &str, contents: &str) -> TempFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "meshguard-jwks-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Polls `cond` every 10 ms until it holds; panics after `limit`.
pub async fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
