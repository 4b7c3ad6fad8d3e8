//! Proxy settings: flags, the Istio `MeshConfig` file, and their defaults.
//!
//! Owns the settings that do not come from policies (addresses, limits, timeouts, mesh
//! settings) and reading a `MeshConfig`-shaped YAML file. Does not own the policies themselves
//! ([`meshguard_runtime::state`] loads those).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use meshguard_engine::PathNormalization;
use meshguard_model::Workload;

/// Bounds on what one client may cost.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request head (request line and headers) accepted; larger gets 431.
    pub max_header_bytes: usize,
    /// How long a client may take to send its request head.
    pub header_read_timeout: Duration,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Time to establish an upstream connection.
    pub upstream_connect_timeout: Duration,
    /// Time from the end of the request (its last body byte sent upstream) to the upstream's
    /// response head; also the longest wait for a free upstream connection.
    pub upstream_timeout: Duration,
    /// Upstream connections open at once (Envoy's circuit breaker `max_connections`).
    pub max_upstream_connections: usize,
    /// Requests that may wait for an upstream connection when every one is busy (Envoy's
    /// circuit breaker `max_pending_requests`); further ones get 503 at once. 0: none waits.
    pub max_pending_upstream_requests: usize,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 60 * 1024,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(15),
            max_upstream_connections: 1024,
            max_pending_upstream_requests: 1024,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Everything `meshguard proxy` runs with.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Where the policies come from: files, or a watched source (the Kubernetes API server).
    pub policies: meshguard_runtime::PolicySource,
    pub workload: Workload,
    pub listen: SocketAddr,
    /// `None`: the built-in echo upstream.
    pub upstream: Option<http::Uri>,
    /// How requests go to the upstream: the protocol, and for `https://` the TLS settings.
    pub upstream_protocol: UpstreamProtocol,
    pub upstream_tls: UpstreamTls,
    pub admin: SocketAddr,
    pub path_normalization: PathNormalization,
    /// `X-Forwarded-For` hops to trust when deciding `remote.ip`.
    pub trusted_proxies: usize,
    pub limits: Limits,
    /// Reload when a policy file changes (SIGHUP always reloads).
    pub watch: bool,
    /// One JSON line per request on stdout.
    pub access_log: bool,
    /// Verified tokens remembered (docs/decisions.md, decision 9); 0 disables the cache.
    pub token_cache: usize,
    /// Remote JWKS fetching: refresh, staleness, extra CA.
    pub jwks: meshguard_jwks::JwksSettings,
    /// Mutual TLS on the proxy listener (`--tls-dir`); `None`: plaintext only.
    pub tls: Option<crate::tls::TlsSettings>,
    /// The external authorizers CUSTOM policies name (the mesh config's ext_authz
    /// providers); `None`: a matching CUSTOM rule denies.
    pub ext_authz: Option<std::sync::Arc<dyn crate::custom::ExternalAuthorizers>>,
}

/// The protocol spoken to an `http://` upstream (docs/operations.md, "Upstream protocols").
/// An `https://` upstream's protocol is negotiated by ALPN instead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// The client's: HTTP/2 clients go out over h2c, HTTP/1.x clients over HTTP/1.1 (Envoy's
    /// `USE_DOWNSTREAM_PROTOCOL`, what Istio configures for ports without a protocol name).
    #[default]
    Auto,
    /// HTTP/1.1 for every request.
    Http1,
    /// HTTP/2 without TLS (prior knowledge) for every request.
    H2c,
}

impl UpstreamProtocol {
    /// The names `--upstream-protocol` takes, Istio's port-protocol names among them.
    pub fn parse(s: &str) -> Option<UpstreamProtocol> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Some(UpstreamProtocol::Auto),
            "http1" | "http" => Some(UpstreamProtocol::Http1),
            "h2c" | "http2" | "grpc" | "grpc-web" => Some(UpstreamProtocol::H2c),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Auto => "auto",
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2c => "h2c",
        }
    }
}

/// TLS toward an `https://` upstream.
#[derive(Clone, Debug, Default)]
pub struct UpstreamTls {
    /// A PEM bundle of CA certificates trusted in addition to the system's.
    pub ca_file: Option<PathBuf>,
    /// The server name sent (SNI) and verified; default: the URL's host.
    pub sni: Option<String>,
}
