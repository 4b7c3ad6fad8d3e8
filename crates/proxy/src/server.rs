//! Listeners and the process lifecycle: the proxy listener, the admin listener, the built-in
//! echo upstream, reloads, and graceful shutdown.
//!
//! Owns: binding (with clear errors and a listen backlog of [`LISTEN_BACKLOG`]), the one
//! accept loop every listener runs (the proxy's and the admin's: each its own connection
//! limit of `--max-connections`, the same header limits and timeouts), draining on
//! SIGTERM/SIGINT, and starting the access-log writer. Does not own serving one connection
//! ([`crate::connection`]: HTTP/1.1 and HTTP/2 prior knowledge on one port, header size and
//! read-time limits, HTTP/2 reset accounting), request handling ([`crate::handler`]) or admin
//! pages ([`meshguard_runtime::admin`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Semaphore, watch};

use crate::client::{ClientStream, ConnInfo};
use crate::config::{Limits, ProxyConfig};
use crate::connection::{ClientBody, ClientService, Settings};
use crate::handler::{RequestIds, Shared, handle};
use meshguard_runtime::metrics::Metrics;
use meshguard_runtime::state::PolicyState;
use meshguard_runtime::{Runtime, RuntimeConfig, RuntimeError};

/// Why the proxy could not start.
#[derive(Debug)]
pub enum StartError {
    Policies(meshguard_model::LoadErrors),
    Bind {
        what: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
    Io(String),
    /// A PeerAuthentication makes a port STRICT and no `--tls-dir` was given, or the TLS
    /// files cannot be used.
    Tls(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Policies(e) => write!(f, "{e}"),
            StartError::Bind { what, addr, error } => {
                write!(f, "cannot listen on {addr} ({what}): {error}")
            }
            StartError::Io(m) | StartError::Tls(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Connections the kernel queues for a listener until they are accepted (`listen(2)`'s
/// backlog; the kernel caps it at `net.core.somaxconn`). Envoy's default `tcp_backlog_size`:
/// bursts of new connections, and clients waiting while `--max-connections` are served, queue
/// here instead of having their SYNs dropped and retried seconds later.
pub const LISTEN_BACKLOG: u32 = 1024;

pub fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // As `TcpListener::bind` does: a restarted proxy can bind while old connections of
        // its predecessor are in TIME_WAIT.
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|error| StartError::Bind { what, addr, error })
}

/// A running proxy, for callers (tests, the CLI) that need its addresses.
#[derive(Debug)]
pub struct Running {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub upstream: http::Uri,
    pub state: Arc<PolicyState>,
    pub metrics: Arc<Metrics>,
    /// Whether the proxy listener has TLS material (`--tls-dir`).
    pub tls: bool,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The proxy listener as the start-up line names it: `http://ADDR` without `--tls-dir`;
    /// with it, what the PeerAuthentication mode of the listening port serves now:
    /// `https://ADDR (mutual TLS only: STRICT)`, `https+http://ADDR (mutual TLS and
    /// plaintext: PERMISSIVE)` or `http://ADDR (plaintext only: DISABLE)`.
    pub fn describe_listener(&self) -> String {
        use meshguard_model::peer_authn::MtlsMode;
        let addr = self.listen;
        if !self.tls {
            return format!("http://{addr}");
        }
        match self.state.snapshot().compiled.mtls.for_port(addr.port()) {
            MtlsMode::Strict => format!("https://{addr} (mutual TLS only: STRICT)"),
            MtlsMode::Disable => format!("http://{addr} (plaintext only: DISABLE)"),
            _ => format!("https+http://{addr} (mutual TLS and plaintext: PERMISSIVE)"),
        }
    }

    /// Waits until the proxy has shut down.
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Starts the proxy and returns once it is listening. It stops when `shutdown` resolves:
/// it stops accepting, lets in-flight requests finish (bounded by the drain timeout), then
/// the returned [`Running::wait`] completes.
pub async fn start(
    config: ProxyConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, StartError> {
    let runtime = Arc::new(
        Runtime::load(RuntimeConfig {
            policies: config.policies.clone(),
            workload: config.workload.clone(),
            path_normalization: config.path_normalization,
            token_cache: config.token_cache,
            jwks: config.jwks.clone(),
        })
        .map_err(|e| match e {
            RuntimeError::Policies(errs) => StartError::Policies(errs),
            RuntimeError::Jwks(e) => StartError::Io(format!("JWKS client: {e}")),
        })?
        .with_ext_authz_providers(
            config
                .ext_authz
                .as_ref()
                .map(|a| a.names())
                .unwrap_or_default(),
        ),
    );
    let (state, metrics) = (runtime.state().clone(), runtime.metrics().clone());
    let tls = match &config.tls {
        Some(t) => Some(Arc::new(
            crate::tls::ServerTls::load(t.clone())
                .map_err(|e| StartError::Tls(format!("--tls-dir: {e}")))?,
        )),
        None => {
            let mtls = &state.snapshot().compiled.mtls;
            if mtls.any_strict() {
                return Err(StartError::Tls(format!(
                    "PeerAuthentication {} requires mutual TLS (STRICT) but no --tls-dir was given",
                    mtls.strict_from().unwrap_or("?")
                )));
            }
            None
        }
    };

    let listener = bind("proxy listener", config.listen)?;
    let admin_listener = bind("admin listener", config.admin)?;
    let listen = listener
        .local_addr()
        .map_err(|e| StartError::Io(e.to_string()))?;
    let admin = admin_listener
        .local_addr()
        .map_err(|e| StartError::Io(e.to_string()))?;

    // One shutdown signal fans out to every task.
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let upstream = match &config.upstream {
        Some(u) => u.clone(),
        None => {
            // The built-in echo upstream runs in-process on a loopback port of its own, so that
            // forwarding takes the same path as with a real upstream.
            let echo = bind(
                "built-in echo upstream",
                SocketAddr::from(([127, 0, 0, 1], 0)),
            )?;
            let addr = echo
                .local_addr()
                .map_err(|e| StartError::Io(e.to_string()))?;
            tokio::spawn(meshguard_echo::serve(echo, stopped(stop_rx.clone())));
            format!("http://{addr}")
                .parse()
                .map_err(|e| StartError::Io(format!("{e}")))?
        }
    };

    // The built-in echo upstream reports the headers it received: over HTTP/1.1 the client's
    // `Host` is among them, whatever the client's protocol (as httpbin shows it).
    let protocol = match (&config.upstream, config.upstream_protocol) {
        (None, crate::config::UpstreamProtocol::Auto) => crate::config::UpstreamProtocol::Http1,
        (_, p) => p,
    };
    let pool =
        crate::upstream::Upstream::new(&upstream, protocol, &config.upstream_tls, &config.limits)
            .map_err(|e| StartError::Io(e.to_string()))?;

    let shared = Arc::new(Shared {
        runtime: runtime.clone(),
        pool,
        upstream: upstream.clone(),
        trusted_proxies: config.trusted_proxies,
        upstream_timeout: config.limits.upstream_timeout,
        request_ids: RequestIds::default(),
        log_writer: if config.access_log {
            let writer =
                meshguard_runtime::access_log::AccessLog::start(metrics.access_log_dropped.clone())
                    .map_err(|e| StartError::Io(format!("access-log writer: {e}")))?;
            Some(writer)
        } else {
            None
        },
        ext_authz: config.ext_authz.clone(),
        local_principal: tls
            .as_ref()
            .map(|t| t.current().serving.identity.clone())
            .filter(|i| !i.is_empty())
            .map(Arc::from),
    });

    runtime.spawn_reload(config.watch, stopped(stop_rx.clone()));
    if let Some(tls) = &tls {
        crate::tls_rotation::spawn(
            tls.clone(),
            state.clone(),
            metrics.clone(),
            stopped(stop_rx.clone()),
        );
    }
    let mut settings = Settings::new(&config.limits);
    settings.premature_reset_closes = metrics.premature_reset_closes.clone();
    settings.protocol_errors = metrics.protocol_errors.clone();
    let settings = Arc::new(settings);
    let admin_service = {
        let (state, metrics) = (state.clone(), metrics.clone());
        move |_: ConnInfo| meshguard_runtime::admin::service(state.clone(), metrics.clone())
    };
    let admin_done = tokio::spawn(accept_loop(
        "admin",
        admin_listener,
        None,
        admin_service,
        settings.clone(),
        config.limits.clone(),
        stopped(stop_rx.clone()),
    ));
    let fetchers = runtime.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        fetchers.shutdown();
    });
    let proxy_service = move |conn_info: ConnInfo| {
        let shared = shared.clone();
        service_fn(move |req| handle(req, conn_info.clone(), shared.clone()))
    };
    let has_tls = tls.is_some();
    let inbound = Inbound {
        tls,
        state: state.clone(),
        metrics: metrics.clone(),
    };
    let proxy_done = tokio::spawn(accept_loop(
        "proxy",
        listener,
        Some(Arc::new(inbound)),
        proxy_service,
        settings,
        config.limits.clone(),
        stopped(stop_rx),
    ));
    let done = tokio::spawn(async move {
        let _ = proxy_done.await;
        let _ = admin_done.await;
    });
    // DEBUG: the CLI prints the start-up banner with these addresses.
    tracing::debug!(%listen, %admin, %upstream, "meshguard proxy listening");
    Ok(Running {
        listen,
        admin,
        upstream,
        state,
        metrics,
        tls: has_tls,
        done,
    })
}

/// The proxy listener's mutual TLS: its material (with `--tls-dir`) and the policies, whose
/// PeerAuthentications give each port its mode (read per connection, so reloads apply to
/// new connections).
#[derive(Debug)]
struct Inbound {
    tls: Option<Arc<crate::tls::ServerTls>>,
    state: Arc<PolicyState>,
    metrics: Arc<Metrics>,
}

impl Inbound {
    /// The stream and facts of a new connection, or `None` when it was refused or its
    /// handshake failed.
    async fn accept(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        deadline: tokio::time::Instant,
    ) -> Option<(ClientStream, ConnInfo)> {
        use crate::inbound::{Accepted, accept};
        use crate::tls::HandshakeResult;
        use meshguard_model::peer_authn::MtlsMode;
        let mode = self.state.snapshot().compiled.mtls.for_port(local.port());
        let result = match &self.tls {
            // Without TLS material only plaintext can be served; a STRICT port (after a
            // reload) refuses it, failing closed.
            None if mode == MtlsMode::Strict => {
                crate::inbound::reset(stream);
                HandshakeResult::PlaintextRefused
            }
            None => return Some((ClientStream::Plain(stream), ConnInfo::plain(peer, local))),
            // Boxed: a handshake's state (rustls's connection, the acceptor) is kilobytes, and
            // would otherwise size every connection's task, plaintext ones included.
            Some(tls) => match Box::pin(accept(stream, peer, local, tls, mode, deadline)).await {
                Accepted::Serve(s, info) => {
                    if info.scheme == crate::client::Scheme::Https {
                        self.metrics.tls.handshake(HandshakeResult::Ok.as_str());
                    }
                    return Some((s, info));
                }
                Accepted::Silent => return None,
                Accepted::Closed(r) => r,
            },
        };
        self.metrics.tls.handshake(result.as_str());
        tracing::debug!(%peer, result = result.as_str(), mode = %mode, "connection not served");
        None
    }
}

/// The accept loop for another front end's plaintext listener (`meshguard ext-authz`): the
/// same connection limit, header limits, timeouts and draining as the proxy's listeners.
pub async fn serve_plain<M, S, B>(
    what: &'static str,
    listener: TcpListener,
    make: M,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) where
    M: Fn(ConnInfo) -> S + Clone + Send + 'static,
    S: ClientService<B>,
    B: ClientBody,
{
    let settings = Arc::new(Settings::new(&limits));
    accept_loop(what, listener, None, make, settings, limits, shutdown).await;
}

/// Accepts connections on `listener` and serves each with the service `make` builds for it,
/// until `shutdown`; then drains. At most `limits.max_connections` are served at once. The
/// proxy listener passes its `inbound` (mutual TLS and the PeerAuthentication mode).
async fn accept_loop<M, S, B>(
    what: &'static str,
    listener: TcpListener,
    inbound: Option<Arc<Inbound>>,
    make: M,
    settings: Arc<Settings>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) where
    M: Fn(ConnInfo) -> S + Clone + Send + 'static,
    S: ClientService<B>,
    B: ClientBody,
{
    // Every connection task holds a receiver: draining is done when all are gone.
    let (drain_tx, drain_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        // Take a connection slot before accepting: over the limit, clients wait in the backlog.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(listener = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let settings = settings.clone();
        let drain = drain_rx.clone();
        let inbound = inbound.clone();
        let make = make.clone();
        let header_read_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let (stream, info) = match inbound {
                None => (ClientStream::Plain(stream), ConnInfo::plain(peer, local)),
                Some(inbound) => {
                    let deadline = tokio::time::Instant::now() + header_read_timeout;
                    match inbound.accept(stream, peer, local, deadline).await {
                        Some(x) => x,
                        None => return drop(permit),
                    }
                }
            };
            let service = make(info);
            if let Err(e) = crate::connection::serve(stream, service, settings, drain).await {
                tracing::debug!(listener = what, %peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(
        listener = what,
        "shutting down: draining in-flight requests"
    );
    drop(drain_rx);
    let _ = drain_tx.send(true);
    if tokio::time::timeout(limits.drain_timeout, drain_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(listener = what, timeout = ?limits.drain_timeout, "drain timeout reached; closing remaining connections");
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
