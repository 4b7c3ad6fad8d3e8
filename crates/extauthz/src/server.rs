//! The listeners of `meshguard ext-authz`: Envoy's `envoy.service.auth.v3.Authorization/Check`
//! over gRPC (h2c), the HTTP variant (Envoy's `http_service`), and the admin pages, each
//! served by the proxy's accept loop (its connection limit, header limits, timeouts and
//! draining).
//!
//! Owns one Check from the wire to its answer and its access-log line and counters. Does not
//! map attributes or outcomes ([`crate::check`]) or decide (the runtime).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use meshguard_engine::Outcome;
use meshguard_proxy::Limits;
use meshguard_proxy::client::ConnInfo;
use meshguard_proxy::server::{StartError, bind, serve_plain};
use meshguard_runtime::access_log::AccessLog;
use meshguard_runtime::metrics::{Metrics, ResultLabels};
use meshguard_runtime::state::{PolicyState, unix_now};
use meshguard_runtime::{Decision, RequestFacts, Runtime, RuntimeConfig, RuntimeError};
use serde::Serialize;
use tokio::sync::watch;

use crate::check::{Changes, CheckFacts, check_response, read_check};
use crate::workload::{Chosen, Directory, Found, NoWorkload, PerRequest};

/// Which workload a Check is decided for.
#[derive(Clone, Debug)]
pub enum WorkloadMode {
    /// The runtime's own workload (`--namespace/--labels`, `--pod`), for every Check.
    Fixed,
    /// Per Check, from its destination address or principal (`--workload-from-request`),
    /// through `directory`; `cache`: compiled workloads kept.
    PerRequest {
        directory: Arc<dyn Directory>,
        cache: usize,
    },
}

/// What `meshguard ext-authz` is started with.
#[derive(Clone, Debug)]
pub struct ExtAuthzConfig {
    pub runtime: RuntimeConfig,
    /// gRPC (h2c) listener for `Authorization/Check`.
    pub grpc_listen: SocketAddr,
    /// The HTTP variant's listener, if any.
    pub http_listen: Option<SocketAddr>,
    /// The provider's `pathPrefix` (Envoy's `path_prefix`), cut from HTTP check paths.
    pub http_path_prefix: String,
    pub admin: SocketAddr,
    pub limits: Limits,
    pub watch: bool,
    pub access_log: bool,
    pub workloads: WorkloadMode,
}

/// A running server, for callers that need its addresses.
#[derive(Debug)]
pub struct Running {
    pub grpc: SocketAddr,
    pub http: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub state: Arc<PolicyState>,
    pub metrics: Arc<Metrics>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits until every listener has drained.
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// What every Check shares.
#[derive(Debug)]
struct Checker {
    runtime: Arc<Runtime>,
    log: Option<AccessLog>,
    path_prefix: String,
    /// `--workload-from-request`: the workloads met; `None`: the runtime's one workload.
    per_request: Option<Arc<PerRequest>>,
    /// When "no workload" was last logged at WARN (unix seconds), to keep a flood to one line a
    /// second; the access log has every Check.
    no_workload_warned: std::sync::atomic::AtomicU64,
}

/// The workload of one Check, as the access log names it.
#[derive(Debug, Serialize)]
struct WorkloadLog<'a> {
    /// `fixed`, `pod-ip`, `principal-namespace`, or `none` (denied: no workload).
    from: &'static str,
    namespace: Option<&'a str>,
    labels: Option<&'a std::collections::BTreeMap<String, String>>,
    /// `namespace/name` of the Pod whose IP the destination is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<&'a str>,
    /// Why there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    why: Option<String>,
}

/// How the workload of one Check was settled.
enum Settled {
    Fixed,
    Chosen(Chosen),
    None(NoWorkload),
}

/// `response_code_details` and body start of a Check denied for want of a workload.
pub const NO_WORKLOAD_DETAILS: &str = "meshguard_no_workload";

/// The denial of a Check without a workload: 403, and a body that names the destination.
fn no_workload_outcome(destination: std::net::IpAddr) -> Outcome {
    Outcome {
        denial: Some(meshguard_engine::decision::Denial {
            reply: meshguard_engine::decision::LocalReply {
                status: 403,
                body: format!("no workload for destination {destination}"),
                details: NO_WORKLOAD_DETAILS.to_string(),
                www_authenticate: None,
            },
            reason: meshguard_engine::DenyReason::NoAllowMatch,
        }),
        ..Outcome::default()
    }
}

/// Which variant a Check came in by (the access log's `protocol`).
#[derive(Clone, Copy, Debug)]
enum Variant {
    Grpc,
    Http,
}

/// One access-log line per Check: the proxy's fields, for the request Envoy asked about.
/// Never holds a token.
#[derive(Debug, Serialize)]
struct CheckLogLine<'a> {
    start_time: u64,
    check: &'static str,
    method: &'a str,
    authority: &'a str,
    /// The normalized path without the query (query strings can carry tokens).
    path: &'a str,
    /// The client's protocol as Envoy reports it (`HTTP/1.1`, `HTTP/2`); `null` from the HTTP
    /// variant, which does not carry it.
    protocol: Option<&'a str>,
    response_code: u16,
    response_code_details: &'a str,
    duration_ms: f64,
    principal: Option<&'a str>,
    request_id: &'a str,
    downstream_remote_address: SocketAddr,
    downstream_peer_uri_san: Option<&'a str>,
    policy: Option<&'a str>,
    config_generation: u64,
    workload: WorkloadLog<'a>,
}

impl Checker {
    /// Decides one Check, then counts and logs it.
    async fn decide(
        &self,
        variant: Variant,
        facts: &CheckFacts,
        headers: &mut http::HeaderMap,
    ) -> Decision {
        let started = Instant::now();
        let start_time = unix_now();
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let request = RequestFacts {
            method: &facts.method,
            path: &facts.path,
            host: &facts.host,
            scheme: &facts.scheme,
            peer: facts.source,
            local: facts.destination,
            remote_ip: facts.source.ip(),
            sni: facts.sni.as_deref(),
            peer_identity: facts
                .principal
                .as_deref()
                .map(meshguard_runtime::PeerUris::One),
            now: start_time,
            custom_after: None,
            request_id: &request_id,
        };
        let (settled, decision) = match &self.per_request {
            None => (Settled::Fixed, self.runtime.decide(request, headers).await),
            Some(per_request) => {
                let main = self.runtime.state().snapshot();
                if main.loaded {
                    match per_request.choose(
                        facts.destination.ip(),
                        facts.destination_principal.as_deref(),
                        main.generation,
                    ) {
                        Ok(chosen) => {
                            explain_workload(&chosen, &request_id);
                            let snapshot = chosen.snapshot.clone();
                            let decision = self.runtime.decide_in(snapshot, request, headers).await;
                            (Settled::Chosen(chosen), decision)
                        }
                        Err(none) => {
                            self.warn_no_workload(facts.destination.ip(), &none);
                            let outcome = no_workload_outcome(facts.destination.ip());
                            let decision = Decision {
                                snapshot: main,
                                outcome,
                            };
                            (Settled::None(none), decision)
                        }
                    }
                } else {
                    // Not listed yet: the runtime refuses (503), as for a fixed workload.
                    (
                        Settled::Fixed,
                        self.runtime.decide_in(main, request, headers).await,
                    )
                }
            }
        };
        let outcome = &decision.outcome;
        let status = outcome.status();
        let elapsed = started.elapsed();
        let metrics = self.runtime.metrics();
        metrics
            .ext_authz_checks
            .get_or_create(&ResultLabels {
                result: match (&settled, outcome.allowed()) {
                    (Settled::None(_), _) => "no_workload",
                    (_, true) => "ok",
                    (_, false) => "denied",
                },
            })
            .inc();
        metrics.record_response(status, elapsed, None);
        if let Some(log) = &self.log {
            let line = CheckLogLine {
                start_time,
                check: match variant {
                    Variant::Grpc => "grpc",
                    Variant::Http => "http",
                },
                method: &facts.method,
                authority: &facts.host,
                path: match (&settled, outcome.path.as_deref()) {
                    // Not decided: the path as Envoy sent it (never its query).
                    (Settled::None(_), None) => facts.path.as_str(),
                    (_, p) => p.unwrap_or(""),
                }
                .split('?')
                .next()
                .unwrap_or(""),
                protocol: Some(facts.protocol.as_str()).filter(|p| !p.is_empty()),
                response_code: status,
                response_code_details: details(outcome),
                duration_ms: elapsed.as_secs_f64() * 1000.0,
                principal: outcome.principal.as_deref(),
                request_id: &request_id,
                downstream_remote_address: facts.source,
                downstream_peer_uri_san: facts.principal.as_deref(),
                policy: outcome.authz.matched_policy.as_deref(),
                config_generation: decision.snapshot.generation,
                workload: workload_log(&settled, &decision),
            };
            if let Ok(mut text) = serde_json::to_vec(&line) {
                text.push(b'\n');
                log.write(text);
            }
        }
        decision
    }
}

impl Checker {
    /// `no workload for destination 10.1.2.3: why`, at WARN at most once a second.
    fn warn_no_workload(&self, destination: std::net::IpAddr, why: &NoWorkload) {
        use std::sync::atomic::Ordering;
        let now = unix_now();
        let last = self.no_workload_warned.swap(now, Ordering::Relaxed);
        if last == now {
            tracing::debug!("no workload for destination {destination}: {why}; denied (403)");
        } else {
            tracing::warn!("no workload for destination {destination}: {why}; denied (403)");
        }
    }
}

/// `RUST_LOG=meshguard::explain=debug`: which workload decides, before the rules.
fn explain_workload(chosen: &Chosen, request_id: &str) {
    if tracing::enabled!(target: "meshguard::explain", tracing::Level::DEBUG) {
        let w = &chosen.snapshot.compiled.workload;
        tracing::debug!(target: "meshguard::explain", request_id, workload = %w.describe(), from = chosen.found.as_str(), pod = chosen.pod.as_deref().unwrap_or(""), "workload");
    }
}

/// The access log's `workload`.
fn workload_log<'a>(settled: &'a Settled, decision: &'a Decision) -> WorkloadLog<'a> {
    let w = &decision.snapshot.compiled.workload;
    let (from, pod, why) = match settled {
        Settled::Fixed => (Found::Fixed.as_str(), None, None),
        Settled::Chosen(c) => (c.found.as_str(), c.pod.as_deref(), None),
        Settled::None(none) => {
            return WorkloadLog {
                from: "none",
                namespace: None,
                labels: None,
                pod: None,
                why: Some(none.to_string()),
            };
        }
    };
    WorkloadLog {
        from,
        namespace: Some(&w.namespace),
        labels: Some(&w.labels),
        pod,
        why,
    }
}

/// The denial's `response_code_details`, or `allowed` (Envoy then forwards the request).
fn details(outcome: &Outcome) -> &str {
    outcome
        .denial
        .as_ref()
        .map_or("allowed", |d| d.reply.details.as_str())
}

/// The gRPC service: one Check, answered from the decision.
#[derive(Debug, Clone)]
struct Grpc(Arc<Checker>);

#[tonic::async_trait]
impl Authorization for Grpc {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let (facts, mut headers) = read_check(request.get_ref());
        let decision = self.0.decide(Variant::Grpc, &facts, &mut headers).await;
        Ok(tonic::Response::new(check_response(&decision.outcome)))
    }
}

/// Headers Envoy adds to every HTTP check request, which are not the client's.
const ENVOY_CHECK_HEADERS: [&str; 3] = [
    "content-length",
    "x-envoy-internal",
    "x-envoy-expected-rq-timeout-ms",
];

/// The HTTP variant: Envoy sends the client's method, `Host`, the provider's `pathPrefix`
/// followed by the client's path and query, and the headers the provider allows. 200 allows
/// (with the headers to set, and `x-envoy-auth-headers-to-remove`); any other status denies,
/// and Envoy passes it, its body and headers to the client.
async fn http_check(
    checker: Arc<Checker>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (mut parts, _body) = req.into_parts();
    let full_path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let path = match full_path.strip_prefix(checker.path_prefix.as_str()) {
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) if p.is_empty() || p.starts_with('?') => format!("/{p}"),
        _ => full_path.to_string(),
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    for h in ENVOY_CHECK_HEADERS {
        parts.headers.remove(h);
    }
    parts.headers.remove(header::HOST);
    let scheme = parts
        .headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|s| *s == "http" || *s == "https")
        .unwrap_or("http")
        .to_string();
    let facts = CheckFacts {
        method: parts.method.to_string(),
        path,
        host,
        scheme,
        protocol: String::new(),
        // The HTTP variant carries no addresses: the connection's are Envoy's.
        source: conn.peer,
        destination: conn.local,
        principal: None,
        destination_principal: None,
        sni: None,
    };
    let decision = checker
        .decide(Variant::Http, &facts, &mut parts.headers)
        .await;
    Ok(http_answer(&decision.outcome))
}

/// The HTTP variant's answer for an outcome.
fn http_answer(outcome: &Outcome) -> Response<Full<Bytes>> {
    match &outcome.denial {
        None => {
            let changes = Changes::of(&outcome.header_ops);
            let mut r = Response::new(Full::new(Bytes::new()));
            let h = r.headers_mut();
            for (name, value, _) in changes.set {
                h.append(name, value);
            }
            if !changes.remove.is_empty() {
                let names: Vec<&str> = changes.remove.iter().map(|n| n.as_str()).collect();
                if let Ok(v) = HeaderValue::from_str(&names.join(", ")) {
                    h.insert("x-envoy-auth-headers-to-remove", v);
                }
            }
            r
        }
        Some(d) => {
            let reply = &d.reply;
            let mut r = Response::new(Full::new(Bytes::from(reply.body.clone())));
            *r.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::FORBIDDEN);
            if !reply.body.is_empty() {
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            }
            if let Some(w) = reply
                .www_authenticate
                .as_deref()
                .and_then(|w| HeaderValue::from_str(w).ok())
            {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, w);
            }
            r
        }
    }
}

/// Starts the listeners and returns once they accept; they drain and stop when `shutdown`
/// resolves.
pub async fn start(
    config: ExtAuthzConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, StartError> {
    let runtime = Arc::new(Runtime::load(config.runtime.clone()).map_err(|e| match e {
        RuntimeError::Policies(errs) => StartError::Policies(errs),
        RuntimeError::Jwks(e) => StartError::Io(format!("JWKS client: {e}")),
    })?);
    let (state, metrics) = (runtime.state().clone(), runtime.metrics().clone());
    let grpc_listener = bind("ext_authz gRPC listener", config.grpc_listen)?;
    let http_listener = match config.http_listen {
        Some(a) => Some(bind("ext_authz HTTP listener", a)?),
        None => None,
    };
    let admin_listener = bind("admin listener", config.admin)?;
    let local =
        |l: &tokio::net::TcpListener| l.local_addr().map_err(|e| StartError::Io(e.to_string()));
    let grpc = local(&grpc_listener)?;
    let http = http_listener.as_ref().map(local).transpose()?;
    let admin = local(&admin_listener)?;

    let log = if config.access_log {
        Some(
            AccessLog::start(metrics.access_log_dropped.clone())
                .map_err(|e| StartError::Io(format!("access-log writer: {e}")))?,
        )
    } else {
        None
    };
    let per_request = match &config.workloads {
        WorkloadMode::Fixed => None,
        WorkloadMode::PerRequest { directory, cache } => {
            if config.http_listen.is_some() {
                return Err(StartError::Io(
                    "the HTTP variant carries no destination address: a workload per request needs the gRPC variant".into(),
                ));
            }
            // Fetchers and token cache of their own: the state's reloads keep only what its
            // own workload uses.
            let jwks =
                meshguard_jwks::JwksManager::new(config.runtime.jwks.clone(), metrics.jwks.clone())
                    .map_err(|e| StartError::Io(format!("JWKS client: {e}")))?;
            Some(Arc::new(PerRequest::new(
                directory.clone(),
                config.runtime.workload.clone(),
                jwks,
                config.runtime.token_cache,
                *cache,
            )))
        }
    };
    if let Some(p) = &per_request {
        let p = p.clone();
        state.add_dump_section("workloads", Arc::new(move || p.dump()));
    }
    let checker = Arc::new(Checker {
        runtime: runtime.clone(),
        log,
        path_prefix: config.http_path_prefix.trim_end_matches('/').to_string(),
        per_request: per_request.clone(),
        no_workload_warned: std::sync::atomic::AtomicU64::new(0),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    runtime.spawn_reload(config.watch, stopped(stop_rx.clone()));
    let fetchers = runtime.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        fetchers.shutdown();
        if let Some(p) = per_request {
            p.shutdown();
        }
    });

    let mut tasks = Vec::new();
    let admin_service = {
        let (state, metrics) = (state.clone(), metrics.clone());
        move |_: ConnInfo| meshguard_runtime::admin::service(state.clone(), metrics.clone())
    };
    tasks.push(tokio::spawn(serve_plain(
        "admin",
        admin_listener,
        admin_service,
        config.limits.clone(),
        stopped(stop_rx.clone()),
    )));
    let grpc_service = AuthorizationServer::new(Grpc(checker.clone()));
    let make_grpc = move |_: ConnInfo| {
        let svc = grpc_service.clone();
        service_fn(move |req: Request<Incoming>| {
            let mut svc = svc.clone();
            async move { tower_service::Service::call(&mut svc, req).await }
        })
    };
    tasks.push(tokio::spawn(serve_plain(
        "ext_authz gRPC",
        grpc_listener,
        make_grpc,
        config.limits.clone(),
        stopped(stop_rx.clone()),
    )));
    if let Some(listener) = http_listener {
        let checker = checker.clone();
        let make_http = move |conn: ConnInfo| {
            let checker = checker.clone();
            service_fn(move |req| http_check(checker.clone(), conn.clone(), req))
        };
        tasks.push(tokio::spawn(serve_plain(
            "ext_authz HTTP",
            listener,
            make_http,
            config.limits.clone(),
            stopped(stop_rx),
        )));
    }
    let done = tokio::spawn(async move {
        for t in tasks {
            let _ = t.await;
        }
    });
    Ok(Running {
        grpc,
        http,
        admin,
        state,
        metrics,
        done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
    use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address};
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request as AttrRequest,
    };
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;

    /// The policy: only `bar/sleep`'s identity, from 10.0.0.0/8, to port 8000.
    const POLICY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: peers, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/bar/sa/sleep"]
        ipBlocks: ["10.0.0.0/8"]
    to:
    - operation: {ports: ["8000"]}
"#;

    fn checker() -> Grpc {
        let dir = std::env::temp_dir().join(format!("meshguard-extauthz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ap.yaml"), POLICY).unwrap();
        let runtime = Runtime::load(RuntimeConfig {
            policies: meshguard_runtime::PolicySource::Files(vec![dir.clone()]),
            workload: meshguard_model::Workload::new(
                "foo",
                [("app".to_string(), "httpbin".to_string())].into(),
            ),
            path_normalization: Default::default(),
            token_cache: 0,
            jwks: Default::default(),
        })
        .unwrap();
        // Loaded and compiled: the files are not read again (nothing watches them here).
        let _ = std::fs::remove_dir_all(&dir);
        Grpc(Arc::new(Checker {
            runtime: Arc::new(runtime),
            log: None,
            path_prefix: String::new(),
            per_request: None,
            no_workload_warned: Default::default(),
        }))
    }

    fn peer(ip: &str, port: u32, principal: &str) -> Option<Peer> {
        Some(Peer {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: ip.into(),
                    port_specifier: Some(PortSpecifier::PortValue(port)),
                    ..Default::default()
                })),
            }),
            principal: principal.into(),
            ..Default::default()
        })
    }

    async fn status(g: &Grpc, source: (&str, &str), destination_port: u32) -> i32 {
        let req = CheckRequest {
            attributes: Some(AttributeContext {
                source: peer(source.0, 40000, source.1),
                destination: peer("10.1.2.3", destination_port, ""),
                request: Some(AttrRequest {
                    http: Some(HttpRequest {
                        method: "GET".into(),
                        path: "/".into(),
                        host: "httpbin.foo".into(),
                        scheme: "http".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let resp = g
            .check(tonic::Request::new(req))
            .await
            .unwrap()
            .into_inner();
        match resp.http_response {
            Some(HttpResponse::OkResponse(_)) => 200,
            Some(HttpResponse::DeniedResponse(d)) => d.status.unwrap().code,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn source_principal_addresses_and_destination_port_come_from_the_attributes() {
        let g = checker();
        let sleep = "spiffe://cluster.local/ns/bar/sa/sleep";
        assert_eq!(status(&g, ("10.0.0.7", sleep), 8000).await, 200);
        // Another identity, another source address, another port: denied.
        let other = "spiffe://cluster.local/ns/bar/sa/other";
        assert_eq!(status(&g, ("10.0.0.7", other), 8000).await, 403);
        assert_eq!(status(&g, ("192.168.0.7", sleep), 8000).await, 403);
        assert_eq!(status(&g, ("10.0.0.7", sleep), 9000).await, 403);
        // No client certificate (plaintext): no principal.
        assert_eq!(status(&g, ("10.0.0.7", ""), 8000).await, 403);
    }
}
