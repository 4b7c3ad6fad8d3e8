//! Listeners and the process lifecycle: the proxy listener, the admin listener, the built-in
//! echo upstream, reloads, and graceful shutdown.
//!
//! Owns: binding (with clear errors), the accept loop with its connection limit, draining on
//! SIGTERM/SIGINT. Does not own serving one connection ([`crate::connection`]: HTTP/1.1 and
//! HTTP/2 prior knowledge on one port, header size and read-time limits), request handling
//! ([`crate::handler`]) or admin pages ([`crate::admin`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::config::ProxyConfig;
use crate::handler::{ConnInfo, RequestIds, Shared, handle};
use crate::metrics::Metrics;
use crate::state::PolicyState;

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
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Policies(e) => write!(f, "{e}"),
            StartError::Bind { what, addr, error } => {
                write!(f, "cannot listen on {addr} ({what}): {error}")
            }
            StartError::Io(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for StartError {}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| StartError::Bind { what, addr, error })
}

/// A running proxy, for callers (tests, the CLI) that need its addresses.
#[derive(Debug)]
pub struct Running {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub upstream: http::Uri,
    pub state: Arc<PolicyState>,
    pub metrics: Arc<Metrics>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
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
    let metrics = Arc::new(Metrics::default());
    let jwks = meshguard_jwks::JwksManager::new(config.jwks.clone(), metrics.jwks.clone())
        .map_err(|e| StartError::Io(format!("JWKS client: {e}")))?;
    let state = Arc::new(
        PolicyState::load(
            config.policies.clone(),
            config.workload.clone(),
            jwks,
            config.token_cache,
        )
        .map_err(StartError::Policies)?,
    );
    metrics.config_generation.set(1);

    let listener = bind("proxy listener", config.listen).await?;
    let admin_listener = bind("admin listener", config.admin).await?;
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
            )
            .await?;
            let addr = echo
                .local_addr()
                .map_err(|e| StartError::Io(e.to_string()))?;
            tokio::spawn(crate::echo::serve(echo, stopped(stop_rx.clone())));
            format!("http://{addr}")
                .parse()
                .map_err(|e| StartError::Io(format!("{e}")))?
        }
    };

    let Some(authority) = upstream.authority() else {
        return Err(StartError::Io(format!("upstream {upstream} has no host")));
    };
    let pool = crate::upstream::Upstream::new(authority, &config.limits);

    let shared = Arc::new(Shared {
        state: state.clone(),
        metrics: metrics.clone(),
        pool,
        upstream: upstream.clone(),
        path_normalization: config.path_normalization,
        trusted_proxies: config.trusted_proxies,
        upstream_timeout: config.limits.upstream_timeout,
        request_ids: RequestIds::default(),
        access_log: config.access_log,
    });

    tokio::spawn(crate::reload::run(
        state.clone(),
        metrics.clone(),
        config.watch,
        stopped(stop_rx.clone()),
    ));
    tokio::spawn(crate::admin::serve(
        admin_listener,
        state.clone(),
        metrics.clone(),
        stopped(stop_rx.clone()),
    ));
    let fetchers = state.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        fetchers.jwks().shutdown();
    });
    let done = tokio::spawn(accept_loop(listener, shared, config, stopped(stop_rx)));
    tracing::info!(%listen, %admin, %upstream, "meshguard proxy listening");
    Ok(Running {
        listen,
        admin,
        upstream,
        state,
        metrics,
        done,
    })
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()>,
) {
    let settings = Arc::new(crate::connection::Settings::new(&config.limits));
    // Every connection task holds a receiver: draining is done when all are gone.
    let (drain_tx, drain_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(config.limits.max_connections));
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
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(config.listen);
        let conn_info = ConnInfo::new(peer, local);
        let shared = shared.clone();
        let service = service_fn(move |req| handle(req, conn_info.clone(), shared.clone()));
        let settings = settings.clone();
        let drain = drain_rx.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::connection::serve(stream, service, settings, drain).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    drop(drain_rx);
    let _ = drain_tx.send(true);
    if tokio::time::timeout(config.limits.drain_timeout, drain_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?config.limits.drain_timeout, "drain timeout reached; closing remaining connections");
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
