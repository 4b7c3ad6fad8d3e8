//! `meshguard proxy` and `meshguard echo`: flags into a [`ProxyConfig`], then run until
//! SIGTERM/SIGINT.
//!
//! Owns the flags, how they override the MeshConfig file, where the policies and the
//! workload's labels come from (files, or the Kubernetes API server; `--labels-file`), and
//! start-up error reporting. The proxy itself lives in `meshguard-proxy`, the Kubernetes
//! source in `meshguard-kube`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use meshguard_engine::PathNormalization;
use meshguard_model::MeshConfig;
use meshguard_model::{Workload, parse_duration};
use meshguard_proxy::{Limits, ProxyConfig, UpstreamProtocol, UpstreamTls};
use meshguard_runtime::PolicySource;

use crate::CliError;
use crate::kubernetes::{self, SourceArgs};

#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples:
  # The walkthrough's step 3 in front of the built-in echo upstream (httpbin work-alike)
  meshguard proxy --policies examples/step3-require-jwt --namespace foo --labels app=httpbin
  curl -i localhost:8080/headers                                            # 403
  curl -i -H \"Authorization: Bearer $(cat testdata/istio-demo/demo.jwt)\" localhost:8080/headers   # 200

  # In front of a real service, policies reloaded when the directory changes
  meshguard proxy --policies /etc/meshguard/ --namespace shop --labels app=cart \\
      --listen 0.0.0.0:15006 --upstream http://127.0.0.1:8000

  # A gRPC server behind it (h2c for HTTP/1.1 clients too; HTTP/2 clients get h2c anyway)
  meshguard proxy -p /etc/meshguard/ -n shop -l app=cart --upstream http://127.0.0.1:50051 \\
      --upstream-protocol grpc

  # An https upstream, its certificate issued by a private CA for another name
  meshguard proxy -p /etc/meshguard/ -n shop -l app=cart --upstream https://127.0.0.1:8443 \\
      --upstream-ca-file /etc/meshguard/ca.pem --upstream-sni cart.shop.internal

  # Policies from the Kubernetes API server, as istiod reads them: `kubectl apply` takes
  # effect at once. A sidecar with POD_NAME and POD_NAMESPACE from the downward API, the
  # workload's labels read from its Pod (and followed):
  meshguard proxy --kubernetes --pod --listen :15006 --upstream http://127.0.0.1:8000
  # Or labels from the downward API's labels file, no access to pods needed:
  meshguard proxy --kubernetes --labels-file /etc/podinfo/labels --upstream http://127.0.0.1:8000
  # Outside the cluster, with a kubeconfig:
  meshguard proxy --kubernetes --kubeconfig ~/.kube/config -n foo -l app=httpbin

Addresses (--listen, --admin): IP:PORT, HOST:PORT, :PORT (every interface, 0.0.0.0) or PORT
(127.0.0.1).
Start-up and each reload log what was loaded and what applies to this workload, with a WARN line
for each file skipped in a directory; when nothing applies a WARN line says so (every request is
then allowed, as Istio does), with the same reasons as `meshguard validate`.
Admin listener: /healthz/ready, /metrics and /stats/prometheus (Prometheus text, or OpenMetrics
when asked for), /config_dump (JSON); the same connection limit and timeouts as the proxy.
Reload: on file change and on SIGHUP; a broken set of files keeps the last good policies.
With --kubernetes: every change is applied as it is watched; until every watch has listed,
/healthz/ready answers 503 and requests get 503 `no policies loaded yet`; an invalid object is
refused (logged, counted, in /config_dump) and its last good version stays; SIGHUP lists
everything again (docs/operations.md, Kubernetes source).
Access log: one JSON line per request on stdout, written off the request path (lines stdout does
not take in time are dropped and counted); diagnostics go to stderr (RUST_LOG=debug for more).")]
pub struct ProxyArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The workload's labels from the downward API's labels file (`key="value"` lines, as
    /// kubelet writes `fieldRef: metadata.labels`), followed as they change.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["labels", "pod"])]
    pub labels_file: Option<PathBuf>,
    /// Address to accept traffic on (HTTP/1.1 and HTTP/2 prior knowledge): IP:PORT,
    /// HOST:PORT, :PORT (every interface) or PORT (127.0.0.1).
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = listen_addr, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Where allowed requests go: `http://HOST:PORT` or `https://HOST:PORT`. Default: the
    /// built-in echo upstream. An `https://` upstream's certificate is verified against the
    /// system's CA certificates and --upstream-ca-file, for the name --upstream-sni (default:
    /// the URL's host); h2 or HTTP/1.1 is chosen by ALPN (both are offered, the upstream
    /// picks: an HTTP/1.1 client's request may go out over h2).
    #[arg(long, value_name = "URL")]
    pub upstream: Option<http::Uri>,
    /// The protocol spoken to an `http://` upstream: `auto` (the client's: HTTP/2 clients over
    /// h2c, HTTP/1.x clients over HTTP/1.1, as Istio does for a port without a protocol name),
    /// `http1` (HTTP/1.1 for all) or `h2c` (HTTP/2 without TLS for all; gRPC needs HTTP/2).
    /// Istio's port-protocol names are accepted too: `http` is http1; `http2`, `grpc` and
    /// `grpc-web` are h2c. Not for `https://` upstreams (ALPN decides) [default: auto].
    #[arg(long, value_name = "PROTOCOL", value_parser = upstream_protocol)]
    pub upstream_protocol: Option<ProtocolArg>,
    /// A PEM bundle of CA certificates trusted for an `https://` upstream, in addition to the
    /// system's.
    #[arg(long, value_name = "FILE")]
    pub upstream_ca_file: Option<PathBuf>,
    /// The server name sent to an `https://` upstream (TLS SNI) and verified in its
    /// certificate [default: the host of --upstream].
    #[arg(long, value_name = "NAME")]
    pub upstream_sni: Option<String>,
    /// Admin listener (/healthz/ready, /metrics, /config_dump); the same forms as --listen.
    #[arg(long, default_value = "127.0.0.1:15000", value_parser = listen_addr, value_name = "ADDR")]
    pub admin: SocketAddr,
    /// An Istio MeshConfig YAML (rootNamespace, pathNormalization,
    /// defaultConfig.gatewayTopology.numTrustedProxies, trustDomain, and extensionProviders:
    /// the envoyExtAuthzGrpc and envoyExtAuthzHttp providers CUSTOM policies are sent to);
    /// flags override it.
    #[arg(long, value_name = "FILE")]
    pub mesh_config: Option<PathBuf>,
    /// Istio's root namespace, whose policies apply to every workload [default: istio-system].
    #[arg(long, value_name = "NS")]
    pub root_namespace: Option<String>,
    /// NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES [default: BASE].
    #[arg(long, value_name = "MODE")]
    pub path_normalization: Option<PathNormalization>,
    /// X-Forwarded-For hops to trust for `remote.ip` [default: 0, the peer address].
    #[arg(long, value_name = "N")]
    pub trusted_proxies: Option<usize>,
    /// Largest request head in bytes; larger requests get 431. Any value is honoured, also
    /// below 8192 (heads are then measured as written with `name: value` and CRLF line ends).
    #[arg(long, default_value_t = Limits::default().max_header_bytes, value_name = "BYTES")]
    pub max_header_bytes: usize,
    /// Time a client has to send a whole request head, from connecting or from the end of its
    /// previous response; a connection silent that long is closed (e.g. 10s). An HTTP/2
    /// connection with no stream open for this long gets a GOAWAY and is closed. Also the
    /// longest pause inside a request body: a client that sends nothing for this long mid-body
    /// gets 408 `stream timeout`.
    #[arg(long, default_value = "10s", value_parser = duration, value_name = "DURATION")]
    pub header_read_timeout: Duration,
    /// Connections served at once, on each listener (proxy and admin); more wait in the listen
    /// backlog (1024).
    #[arg(long, default_value_t = Limits::default().max_connections, value_name = "N")]
    pub max_connections: usize,
    /// Time to connect to the upstream.
    #[arg(long, default_value = "5s", value_parser = duration, value_name = "DURATION")]
    pub upstream_connect_timeout: Duration,
    /// Time for the upstream to send its response head, counted from the end of the request
    /// (a slow upload does not use it up); 504 after.
    #[arg(long, default_value = "15s", value_parser = duration, value_name = "DURATION")]
    pub upstream_timeout: Duration,
    /// Upstream connections open at once, idle ones included (Envoy's circuit breaker
    /// max_connections). When all are busy, requests wait for one (see
    /// --max-pending-upstream-requests).
    #[arg(long, default_value_t = Limits::default().max_upstream_connections, value_name = "N",
          value_parser = at_least_one)]
    pub max_upstream_connections: usize,
    /// Requests that may wait for an upstream connection when all are busy (Envoy's circuit
    /// breaker max_pending_requests), for at most --upstream-timeout (then 504); more get 503
    /// `reset reason: overflow` at once, counted in
    /// meshguard_upstream_errors_total{result="overflow"}. 0: none waits.
    #[arg(long, default_value_t = Limits::default().max_pending_upstream_requests, value_name = "N")]
    pub max_pending_upstream_requests: usize,
    /// Time in-flight requests get to finish on SIGTERM/SIGINT.
    #[arg(long, default_value = "10s", value_parser = duration, value_name = "DURATION")]
    pub drain_timeout: Duration,
    /// How often remote JWKS (jwksUri, OpenID discovery) are fetched again.
    #[arg(long, default_value = "5m", value_parser = duration, value_name = "DURATION")]
    pub jwks_refresh_interval: Duration,
    /// How long the last good remote keys stay in use while fetches fail; then tokens fail
    /// closed with 401 `Jwks remote fetch is failed`.
    #[arg(long, default_value = "24h", value_parser = duration, value_name = "DURATION")]
    pub jwks_max_staleness: Duration,
    /// A PEM bundle of CA certificates trusted for https JWKS, in addition to the system's.
    #[arg(long, value_name = "FILE")]
    pub jwks_ca_file: Option<PathBuf>,
    /// Verified tokens to remember, so a repeated token skips signature verification (its
    /// time is checked on every request); 0 disables the cache.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub token_cache_size: usize,
    /// Do not reload when policy files change (SIGHUP still reloads). The Kubernetes source
    /// always watches.
    #[arg(long)]
    pub no_watch: bool,
    /// Do not write access-log lines.
    #[arg(long)]
    pub no_access_log: bool,
    /// Serve mutual TLS on the proxy listener with the files of DIR: cert-chain.pem, key.pem
    /// and root-cert.pem (istio-agent's layout; `meshguard cert issue` writes it). Clients
    /// must present a certificate of that root with a SPIFFE ID in the trust domain.
    /// PeerAuthentication decides per port: STRICT (TLS only), PERMISSIVE (the default: TLS
    /// from Istio clients and plaintext), DISABLE (plaintext only).
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// The mesh's trust domain [default: MeshConfig trustDomain, else cluster.local].
    #[arg(long, value_name = "TD")]
    pub trust_domain: Option<String>,
    /// Other trust domains whose peers are accepted and which policies' principals are
    /// expanded to [default: MeshConfig trustDomainAliases].
    #[arg(long, value_name = "TD,TD", value_delimiter = ',')]
    pub trust_domain_aliases: Option<Vec<String>>,
    /// Threads serving traffic [default: the CPUs this process may run on]. With 1, everything
    /// runs on one thread with no cross-thread handoffs, the cheapest setup for a sidecar
    /// limited to one core.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,
}

#[derive(Debug, Args)]
#[command(after_long_help = "\
Addresses: IP:PORT, HOST:PORT, :PORT (every interface, 0.0.0.0) or PORT (127.0.0.1).")]
pub struct EchoArgs {
    /// Address to serve the echo upstream on: IP:PORT, HOST:PORT, :PORT (every interface) or
    /// PORT (127.0.0.1).
    #[arg(long, default_value = "127.0.0.1:8000", value_parser = listen_addr, value_name = "ADDR")]
    pub listen: SocketAddr,
}

pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

/// A listen address as people write it. `IP:PORT` and `[IPv6]:PORT` as they are;
/// `localhost:PORT` is 127.0.0.1 (no lookup, so never ::1 on one host and 127.0.0.1 on
/// another); another `HOST:PORT` is looked up, first address; `:PORT` is every IPv4 interface
/// (0.0.0.0), as in Go's `net.Listen` (for IPv6 write `[::]:PORT`); a bare `PORT` keeps the
/// default's loopback address, 127.0.0.1 (exposing a port must be written out).
pub(crate) fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    const FORMS: &str = "expected PORT, :PORT, HOST:PORT or IP:PORT, e.g. 8080 (= 127.0.0.1:8080), \
        :8080 (= 0.0.0.0:8080, every interface), localhost:8080, 0.0.0.0:8080 or [::1]:8080";
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("{p:?} is not a port (0-65535); {FORMS}"))
    };
    if !s.contains(':') {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port(s)?)));
    }
    let Some((host, p)) = s.rsplit_once(':') else {
        return Err(FORMS.to_string());
    };
    let p = port(p)?;
    if host.is_empty() {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, p)));
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, p)));
    }
    if host.contains(':') || host.starts_with('[') {
        return Err(format!("{host:?} is not an IP address; {FORMS}"));
    }
    (host, p)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}; {FORMS}"))?
        .next()
        .ok_or_else(|| format!("{host:?} has no address; {FORMS}"))
}

/// `--upstream-protocol` as written (for errors) and what it means.
#[derive(Clone, Debug)]
pub struct ProtocolArg {
    written: String,
    protocol: UpstreamProtocol,
}

fn upstream_protocol(s: &str) -> Result<ProtocolArg, String> {
    let protocol = UpstreamProtocol::parse(s).ok_or_else(|| {
        format!(
            "expected auto, http1 or h2c (or Istio's port-protocol names: http = http1; \
             http2, grpc, grpc-web = h2c), got {s:?}"
        )
    })?;
    Ok(ProtocolArg {
        written: s.to_string(),
        protocol,
    })
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a whole number of at least 1, got {s:?}")),
    }
}

impl ProxyArgs {
    fn mesh(&self) -> Result<MeshConfig, CliError> {
        match &self.mesh_config {
            Some(p) => MeshConfig::load(p).map_err(CliError::Usage),
            None => Ok(MeshConfig::default()),
        }
    }

    /// The root namespace: --root-namespace, the MeshConfig's, or istio-system.
    fn root(&self, mesh: &MeshConfig) -> String {
        self.root_namespace
            .clone()
            .or(mesh.root_namespace.clone())
            .unwrap_or_else(|| meshguard_model::DEFAULT_ROOT_NAMESPACE.to_string())
    }

    /// The workload's labels at start-up: --labels, or the --labels-file (empty with --pod
    /// until the Pod is read).
    fn labels(&self) -> Result<BTreeMap<String, String>, CliError> {
        match &self.labels_file {
            Some(f) => kubernetes::labels_file(f),
            None => self.source.labels(),
        }
    }

    fn into_config(
        self,
        policies: PolicySource,
        workload: Workload,
        mesh: &MeshConfig,
    ) -> Result<ProxyConfig, CliError> {
        let path_normalization = match self.path_normalization {
            Some(p) => p,
            None => mesh
                .path_normalization()
                .map_err(CliError::Usage)?
                .unwrap_or_default(),
        };
        let https = match &self.upstream {
            Some(u) => {
                let https = match u.scheme_str() {
                    Some("http") => false,
                    Some("https") => true,
                    _ => {
                        return Err(CliError::Usage(format!(
                            "--upstream {u}: expected http://HOST:PORT or https://HOST:PORT"
                        )));
                    }
                };
                if u.authority().is_none_or(|a| a.host().is_empty()) {
                    return Err(CliError::Usage(format!(
                        "--upstream {u}: no host; expected http://HOST:PORT or https://HOST:PORT"
                    )));
                }
                if u.path_and_query().is_some_and(|p| p.as_str() != "/") {
                    return Err(CliError::Usage(format!(
                        "--upstream {u}: a path is not supported; requests keep their own \
                         (expected http://HOST:PORT or https://HOST:PORT)"
                    )));
                }
                https
            }
            None => false,
        };
        if https && let Some(p) = &self.upstream_protocol {
            return Err(CliError::Usage(format!(
                "--upstream-protocol {}: only for http:// upstreams; an https:// upstream's \
                 protocol (h2 or HTTP/1.1) is chosen by ALPN",
                p.written
            )));
        }
        if !https {
            for (flag, set) in [
                ("--upstream-ca-file", self.upstream_ca_file.is_some()),
                ("--upstream-sni", self.upstream_sni.is_some()),
            ] {
                if set {
                    return Err(CliError::Usage(format!(
                        "{flag}: only for https:// upstreams (--upstream https://HOST:PORT)"
                    )));
                }
            }
        }
        let trust_domain = self
            .trust_domain
            .clone()
            .or(mesh.trust_domain.clone())
            .unwrap_or_else(|| meshguard_proxy::tls::DEFAULT_TRUST_DOMAIN.to_string());
        let aliases = self
            .trust_domain_aliases
            .clone()
            .unwrap_or_else(|| mesh.trust_domain_aliases.clone());
        let mut trust_domains = vec![trust_domain.clone()];
        trust_domains.extend(aliases.iter().filter(|a| **a != trust_domain).cloned());
        Ok(ProxyConfig {
            policies,
            workload: workload.with_trust_domains(trust_domains),
            listen: self.listen,
            upstream: self.upstream,
            upstream_protocol: self
                .upstream_protocol
                .map_or_else(UpstreamProtocol::default, |p| p.protocol),
            upstream_tls: UpstreamTls {
                ca_file: self.upstream_ca_file,
                sni: self.upstream_sni,
            },
            admin: self.admin,
            path_normalization,
            trusted_proxies: self.trusted_proxies.or(mesh.trusted_proxies()).unwrap_or(0),
            limits: Limits {
                max_header_bytes: self.max_header_bytes,
                header_read_timeout: self.header_read_timeout,
                max_connections: self.max_connections.max(1),
                upstream_connect_timeout: self.upstream_connect_timeout,
                upstream_timeout: self.upstream_timeout,
                max_upstream_connections: self.max_upstream_connections,
                max_pending_upstream_requests: self.max_pending_upstream_requests,
                drain_timeout: self.drain_timeout,
            },
            watch: !self.no_watch,
            access_log: !self.no_access_log,
            token_cache: self.token_cache_size,
            ext_authz: None,
            tls: self.tls_dir.map(|dir| meshguard_proxy::tls::TlsSettings {
                dir,
                trust_domain,
                trust_domain_aliases: aliases,
            }),
            jwks: meshguard_jwks::JwksSettings {
                refresh_interval: self.jwks_refresh_interval,
                max_staleness: self.jwks_max_staleness,
                extra_ca: self.jwks_ca_file,
                ..Default::default()
            },
        })
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    proxy_runtime(None)
}

/// The tokio runtime: a single-threaded one for one worker (the scheduler then needs no
/// atomics or cross-thread wake-ups), a work-stealing one otherwise. `None`: one worker per
/// CPU the process may run on (so `taskset -c 0` gives one).
pub(crate) fn proxy_runtime(workers: Option<u16>) -> Result<tokio::runtime::Runtime, CliError> {
    let workers = workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        usize::from,
    );
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| CliError::Internal(format!("cannot start the runtime: {e}")))
}

/// Runs `meshguard proxy` until SIGTERM/SIGINT; exit code 0 after a clean drain.
pub fn run(args: ProxyArgs) -> Result<i32, CliError> {
    args.source.kube.check()?;
    let workers = args.workers;
    let mesh = args.mesh()?;
    let providers = match &args.mesh_config {
        Some(file) => mesh.ext_authz_providers(file).map_err(CliError::Usage)?,
        None => Vec::new(),
    };
    let root = args.root(&mesh);
    let labels = args.labels()?;
    let labels_file = args.labels_file.clone();
    proxy_runtime(workers)?.block_on(async move {
        let (policies, workload, watch) =
            kubernetes::policy_source(&args.source, labels, root).await?;
        let mut config = args.into_config(policies, workload, &mesh)?;
        if !providers.is_empty() {
            // Inside the runtime: the gRPC channels start their connection tasks on it.
            let authorizers = meshguard_extauthz::client::Authorizers::new(providers)
                .map_err(|e| CliError::Usage(format!("--mesh-config: {e}")))?;
            config.ext_authz = Some(std::sync::Arc::new(authorizers));
        }
        let running = meshguard_proxy::start(config, meshguard_proxy::shutdown_signal())
            .await
            .map_err(|e| match e {
                meshguard_proxy::StartError::Policies(errs) => CliError::Policies(errs),
                other => CliError::Usage(other.to_string()),
            })?;
        if let Some(file) = labels_file {
            let follow = meshguard_runtime::reload::follow_labels_file(
                running.state.clone(),
                file,
                std::future::pending(),
            );
            tokio::spawn(follow);
        }
        if let Some(start) = watch {
            start(running.state.clone(), running.metrics.clone());
        }
        meshguard_runtime::reload::log_loaded(&running.state);
        eprintln!(
            "meshguard: proxy on {} -> {}, admin on http://{}",
            running.describe_listener(),
            running.upstream,
            running.admin
        );
        running.wait().await;
        eprintln!("meshguard: stopped");
        Ok(0)
    })
}

/// Runs `meshguard echo` until SIGTERM/SIGINT.
pub fn run_echo(args: EchoArgs) -> Result<i32, CliError> {
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| {
                CliError::Usage(format!(
                    "cannot listen on {} (echo upstream): {e}",
                    args.listen
                ))
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| CliError::Internal(e.to_string()))?;
        eprintln!("meshguard: echo upstream on http://{addr}");
        meshguard_echo::serve(listener, meshguard_proxy::shutdown_signal())
            .await
            .map_err(|e| CliError::Internal(e.to_string()))?;
        Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_in_the_forms_people_write() {
        for (input, want) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("0.0.0.0:0", "0.0.0.0:0"),
            ("[::1]:8080", "[::1]:8080"),
            ("localhost:8080", "127.0.0.1:8080"),
            ("LOCALHOST:1", "127.0.0.1:1"),
            (":8080", "0.0.0.0:8080"),
            ("8080", "127.0.0.1:8080"),
        ] {
            assert_eq!(listen_addr(input).unwrap().to_string(), want, "{input}");
        }
        for bad in [
            "",
            "http://127.0.0.1:8080",
            "localhost",
            "8o80",
            ":99999",
            "::1:80",
            "[::1]",
        ] {
            let e = listen_addr(bad).unwrap_err();
            assert!(e.contains("e.g. 8080 (= 127.0.0.1:8080)"), "{bad}: {e}");
        }
    }
}
