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
        let decision = self
            .runtime
            .decide(
                RequestFacts {
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
                },
                headers,
            )
            .await;
        let outcome = &decision.outcome;
        let status = outcome.status();
        let elapsed = started.elapsed();
        let metrics = self.runtime.metrics();
        metrics
            .ext_authz_checks
            .get_or_create(&ResultLabels {
                result: if outcome.allowed() { "ok" } else { "denied" },
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
                path: outcome
                    .path
                    .as_deref()
                    .and_then(|p| p.split('?').next())
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
            };
            if let Ok(mut text) = serde_json::to_vec(&line) {
                text.push(b'\n');
                log.write(text);
            }
        }
        decision
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
    let checker = Arc::new(Checker {
        runtime: runtime.clone(),
        log,
        path_prefix: config.http_path_prefix.trim_end_matches('/').to_string(),
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
