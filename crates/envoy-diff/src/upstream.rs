//! The recording upstream: answers every request with `200 upstream reached` and remembers
//! what it received (method, target, version, every header line, body), so the harness can
//! compare what meshguard and Envoy forwarded. It speaks HTTP/1.1 and h2c (prior knowledge),
//! as both proxies forward in the client's protocol.
//!
//! One [`Recorder`] serves one proxy; requests of a scenario are sent one at a time, so
//! [`Recorder::take`] after an answer returns exactly what that request caused upstream.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The body the upstream answers with.
pub const UPSTREAM_BODY: &str = "upstream reached\n";

/// One request as the upstream received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub method: String,
    /// The request-target as received (origin form: path and query).
    pub target: String,
    pub version: String,
    /// Header lines, names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    /// Every value of `name` (lowercase), in order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A running recording upstream; stops when dropped.
#[derive(Debug)]
pub struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl Recorder {
    /// Starts one on `127.0.0.5:0`: its own loopback address, so that the port the kernel
    /// picks can never be the port of a proxy under test (127.0.0.1 and 127.0.0.2).
    pub async fn start() -> std::io::Result<Recorder> {
        let listener = TcpListener::bind("127.0.0.5:0").await?;
        let addr = listener.local_addr()?;
        let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let sink = sink.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let sink = sink.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes().to_vec())
                                .unwrap_or_default();
                            let received = Received {
                                method: parts.method.to_string(),
                                target: parts
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.as_str().to_string())
                                    .unwrap_or_else(|| parts.uri.to_string()),
                                version: format!("{:?}", parts.version),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(n, v)| {
                                        (
                                            n.as_str().to_string(),
                                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                        )
                                    })
                                    .collect(),
                                body,
                            };
                            if let Ok(mut s) = sink.lock() {
                                s.push(received);
                            }
                            let response = hyper::Response::builder()
                                .status(200)
                                .header("content-type", "text/plain")
                                .body(Full::new(Bytes::from_static(UPSTREAM_BODY.as_bytes())))
                                .expect("a static response builds");
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Recorder { addr, seen, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What was received since the last call.
    pub fn take(&self) -> Vec<Received> {
        self.seen
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
