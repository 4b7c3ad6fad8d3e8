//! meshguard's proxy as an ext_authz client: the external authorizers of CUSTOM policies
//! (the mesh config's `envoyExtAuthzGrpc` and `envoyExtAuthzHttp` providers), asked as Envoy's
//! `ext_authz` filter asks them.
//!
//! Owns building the question Envoy would send for the same request (the gRPC `CheckRequest`
//! with its attributes and header map, or the HTTP variant's request), the connections to the
//! providers (gRPC: one multiplexed HTTP/2 connection per provider, tonic's `Channel`,
//! reconnecting and with a bounded queue; HTTP: HTTP/1.1 keep-alive connections), the
//! provider's timeout, and reading the answer into a [`Checked`] with `failOpen` and
//! `statusOnError` applied. Does not decide which provider to ask (the engine) or apply the
//! answer to the request (the proxy's CUSTOM phase, `meshguard_proxy::custom`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::{
    CheckRequest, CheckResponse, HeaderAppendAction, HeaderValueOption, HttpResponse,
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, Metadata, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, DeniedHttpResponse};
use envoy_types::pb::google::protobuf::Timestamp;
use http::header::{self, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use meshguard_model::mesh::any_matches;
use meshguard_model::{ExtAuthzHttp, ExtAuthzKind, ExtAuthzProvider};
use meshguard_proxy::custom::{
    Allowed, BodyLimit, CheckFuture, CheckInput, CheckResult, Checked, Denied, ExternalAuthorizers,
    HeaderAction, Verdict,
};
use tonic::transport::{Channel, Endpoint};

/// The `response_code_details` of a refusal by the authorizer, and of one for its failure
/// (Envoy's).
pub const DENIED_DETAILS: &str = "ext_authz_denied";
pub const ERROR_DETAILS: &str = "ext_authz_error";

/// The header that tells an authorizer whether the body it got is cut (Envoy's); a client's
/// own copy is never passed on to it.
const PARTIAL_BODY: &str = "x-envoy-auth-partial-body";

/// A denial body larger than this is cut (the authorizer's answer is read whole).
const MAX_ANSWER_BODY: usize = 64 * 1024;

/// Requests waiting for a provider's gRPC connection at most; more fail at once (as errors).
const GRPC_QUEUE: usize = 1024;

/// The external authorizers of the mesh config, ready to be asked.
#[derive(Debug)]
pub struct Authorizers {
    providers: Vec<Provider>,
    /// Envoy's `request.http.id` is the stream's id: unique per request, not `x-request-id`.
    stream_ids: StreamIds,
}

#[derive(Debug)]
struct Provider {
    name: Arc<str>,
    config: ExtAuthzProvider,
    transport: Transport,
}

#[derive(Debug)]
enum Transport {
    Grpc(AuthorizationClient<Channel>),
    Http(Box<HttpTransport>),
}

#[derive(Debug)]
struct HttpTransport {
    client: HttpClient<HttpConnector, Full<Bytes>>,
    /// `http://host:port`.
    base: String,
    settings: ExtAuthzHttp,
}

#[derive(Debug)]
struct StreamIds {
    hasher: std::hash::RandomState,
    counter: AtomicU64,
}

impl StreamIds {
    fn next(&self) -> u64 {
        use std::hash::BuildHasher;
        self.hasher
            .hash_one(self.counter.fetch_add(1, Ordering::Relaxed))
    }
}

/// `host:port` for a URI: an IPv6 address in brackets.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl Authorizers {
    /// Connects lazily to each provider (the first request opens the connection; a lost one
    /// is opened again). Must run inside a tokio runtime.
    pub fn new(providers: Vec<ExtAuthzProvider>) -> Result<Authorizers, String> {
        let mut out = Vec::new();
        for p in providers {
            let base = format!("http://{}", authority(&p.service, p.port));
            let transport = match &p.kind {
                ExtAuthzKind::Grpc => {
                    // `:authority` is the service's host name, as istiod configures Envoy's
                    // gRPC client (`authority: <hostname>`).
                    let origin: http::Uri = format!("http://{}", p.service)
                        .parse()
                        .or_else(|_| base.parse())
                        .map_err(|e| format!("provider {}: {e}", p.name))?;
                    let endpoint = Endpoint::from_shared(base.clone())
                        .map_err(|e| format!("provider {}: service {}: {e}", p.name, base))?
                        .origin(origin)
                        .connect_timeout(p.timeout.min(Duration::from_secs(10)))
                        .tcp_nodelay(true)
                        .buffer_size(GRPC_QUEUE);
                    Transport::Grpc(AuthorizationClient::new(endpoint.connect_lazy()))
                }
                ExtAuthzKind::Http(settings) => {
                    let mut connector = HttpConnector::new();
                    connector.set_nodelay(true);
                    connector.set_connect_timeout(Some(p.timeout.min(Duration::from_secs(10))));
                    let client = HttpClient::builder(hyper_util::rt::TokioExecutor::new())
                        .pool_idle_timeout(Duration::from_secs(60))
                        .build(connector);
                    Transport::Http(Box::new(HttpTransport {
                        client,
                        base,
                        settings: settings.clone(),
                    }))
                }
            };
            out.push(Provider {
                name: p.name.as_str().into(),
                config: p,
                transport,
            });
        }
        Ok(Authorizers {
            providers: out,
            stream_ids: StreamIds {
                hasher: std::hash::RandomState::new(),
                counter: AtomicU64::new(0),
            },
        })
    }
}

impl ExternalAuthorizers for Authorizers {
    fn names(&self) -> Vec<Arc<str>> {
        self.providers.iter().map(|p| p.name.clone()).collect()
    }

    fn body_limit(&self, provider: &str) -> Option<BodyLimit> {
        let p = self.providers.iter().find(|p| &*p.name == provider)?;
        p.config.body.map(|b| BodyLimit {
            max: usize::try_from(b.max_request_bytes).unwrap_or(usize::MAX),
            allow_partial: b.allow_partial_message,
        })
    }

    fn check<'a>(&'a self, provider: &'a str, input: CheckInput<'a>) -> CheckFuture<'a> {
        Box::pin(async move {
            let Some(p) = self.providers.iter().find(|p| &*p.name == provider) else {
                // The engine asks only for known providers; fail closed all the same.
                return failure(
                    &ExtAuthzProvider {
                        name: provider.to_string(),
                        service: String::new(),
                        port: 0,
                        timeout: Duration::ZERO,
                        fail_open: false,
                        status_on_error: 403,
                        kind: ExtAuthzKind::Grpc,
                        body: None,
                    },
                    AskError::UnknownProvider,
                );
            };
            let answer = match &p.transport {
                Transport::Grpc(client) => {
                    let pack = p.config.body.is_some_and(|b| b.pack_as_bytes);
                    let request = check_request(&input, self.stream_ids.next(), pack);
                    tokio::time::timeout(
                        p.config.timeout,
                        ask_grpc(client.clone(), request, p.config.timeout),
                    )
                    .await
                    .unwrap_or(Err(AskError::Timeout))
                }
                Transport::Http(h) => tokio::time::timeout(
                    p.config.timeout,
                    ask_http(&h.client, &h.base, &h.settings, &input, p.config.timeout),
                )
                .await
                .unwrap_or(Err(AskError::Timeout)),
            };
            match answer {
                Ok(verdict) => Checked {
                    result: match verdict {
                        Verdict::Allow(_) => CheckResult::Ok,
                        Verdict::Deny(_) => CheckResult::Denied,
                    },
                    verdict,
                },
                Err(e) => {
                    tracing::warn!(provider, error = %e, "external authorizer gave no usable answer");
                    failure(&p.config, e)
                }
            }
        })
    }
}

/// Why an authorizer gave no usable answer.
#[derive(Debug)]
enum AskError {
    /// Not a provider of the mesh config (the engine asks only for those).
    UnknownProvider,
    Timeout,
    /// The RPC failed (connection, gRPC status other than OK, an undecodable message).
    Grpc(tonic::Status),
    /// The HTTP exchange failed.
    Http(String),
    /// A 5xx from the HTTP authorizer.
    ServerError(u16),
    /// `error_response`: the authorizer's own word that it failed, with the reply it wants
    /// (status 0 when it set none).
    ErrorResponse(Denied),
}

impl std::fmt::Display for AskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AskError::UnknownProvider => f.write_str("no such provider"),
            AskError::Timeout => f.write_str("timed out"),
            AskError::Grpc(s) => write!(f, "gRPC {:?}: {}", s.code(), s.message()),
            AskError::Http(e) => write!(f, "HTTP: {e}"),
            AskError::ServerError(s) => write!(f, "answered {s}"),
            AskError::ErrorResponse(d) => {
                write!(f, "answered with an error_response (status {})", d.status)
            }
        }
    }
}

/// No usable answer: `failOpen` lets the request go on, otherwise `statusOnError` with an
/// empty body (Envoy's `ext_authz_error`); a gRPC `error_response` is answered with its own
/// status, headers and body (`statusOnError` when it has no status), as Envoy 1.40 does.
fn failure(p: &ExtAuthzProvider, error: AskError) -> Checked {
    if p.fail_open {
        return Checked {
            result: CheckResult::FailureModeAllowed,
            verdict: Verdict::Allow(Allowed::default()),
        };
    }
    let denied = match error {
        AskError::ErrorResponse(mut d) => {
            if d.status == 0 {
                d.status = p.status_on_error;
            }
            d
        }
        _ => Denied {
            status: p.status_on_error,
            headers: Vec::new(),
            body: Bytes::new(),
            details: ERROR_DETAILS,
        },
    };
    Checked {
        result: CheckResult::Error,
        verdict: Verdict::Deny(denied),
    }
}

fn socket_address(a: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: a.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                a.port(),
            ))),
            ..Default::default()
        })),
    }
}

fn protocol_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// Headers that describe the client's connection, not the request: Envoy's codec drops them
/// before any filter (`te` only when it says more than `trailers`).
fn hop_by_hop(name: &HeaderName, headers: &http::HeaderMap) -> bool {
    match name.as_str() {
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" => true,
        "te" => headers
            .get_all(header::TE)
            .iter()
            .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers")),
        _ => false,
    }
}

/// The headers the client's `Connection` names (dropped with it).
fn connection_named(headers: &http::HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .filter_map(|o| HeaderName::from_bytes(o.trim().as_bytes()).ok())
        .collect()
}

/// The header map Envoy sends: lower-case names, the pseudo-headers of its own map
/// (`:authority`, `:path`, `:method`, `:scheme`), repeated headers joined with `,`.
pub fn header_map(input: &CheckInput<'_>) -> HashMap<String, String> {
    let mut map: HashMap<String, String> = HashMap::with_capacity(input.headers.keys_len() + 5);
    map.insert(":authority".into(), input.host.to_string());
    map.insert(":path".into(), input.path.to_string());
    map.insert(":method".into(), input.method.as_str().to_string());
    map.insert(":scheme".into(), input.scheme.to_string());
    let named = connection_named(input.headers);
    for name in input.headers.keys() {
        if *name == header::HOST
            || hop_by_hop(name, input.headers)
            || named.contains(name)
            || name.as_str() == PARTIAL_BODY
        {
            // Envoy keeps the authority as `:authority` only, its codec drops what describes
            // the client's connection, and the partial-body marker is only ever its own.
            continue;
        }
        let mut joined = String::new();
        for (i, v) in input.headers.get_all(name).iter().enumerate() {
            if i > 0 {
                joined.push(',');
            }
            joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
        }
        map.insert(name.as_str().to_string(), joined);
    }
    map.insert(
        "x-forwarded-proto".into(),
        input.forwarded_proto.to_string(),
    );
    if let Some(body) = &input.body {
        map.insert(PARTIAL_BODY.into(), body.partial.to_string());
    }
    map
}

/// The `CheckRequest` Envoy's ext_authz filter sends for the request; a body read for the
/// provider goes in `raw_body` with `pack` (`packAsBytes`), else in `body` (a string: bytes
/// that are not UTF-8 are replaced by U+FFFD).
pub fn check_request(input: &CheckInput<'_>, stream_id: u64, pack: bool) -> CheckRequest {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let peer = |address: SocketAddr, principal: Option<&str>| Peer {
        address: Some(socket_address(address)),
        principal: principal.unwrap_or_default().to_string(),
        ..Default::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(input.peer, input.peer_principal)),
            destination: Some(peer(input.local, input.local_principal)),
            request: Some(Request {
                time: Some(Timestamp {
                    seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
                    nanos: i32::try_from(now.subsec_nanos()).unwrap_or(0),
                }),
                http: Some(HttpRequest {
                    id: stream_id.to_string(),
                    method: input.method.as_str().to_string(),
                    headers: header_map(input),
                    path: input.path.to_string(),
                    host: input.host.to_string(),
                    scheme: input.scheme.to_string(),
                    protocol: protocol_name(input.version).to_string(),
                    size: input
                        .body
                        .map_or(0, |b| i64::try_from(b.size).unwrap_or(i64::MAX)),
                    body: match input.body {
                        Some(b) if !pack => String::from_utf8_lossy(b.data).into_owned(),
                        _ => String::new(),
                    },
                    raw_body: match input.body {
                        Some(b) if pack => b.data.to_vec(),
                        _ => Vec::new(),
                    },
                    ..Default::default()
                }),
            }),
            metadata_context: Some(Metadata::default()),
            route_metadata_context: Some(Metadata::default()),
            ..Default::default()
        }),
    }
}

async fn ask_grpc(
    mut client: AuthorizationClient<Channel>,
    request: CheckRequest,
    timeout: Duration,
) -> Result<Verdict, AskError> {
    let mut request = tonic::Request::new(request);
    // `grpc-timeout`, as Envoy's gRPC client sends the filter's timeout.
    request.set_timeout(timeout);
    let response = client
        .check(request)
        .await
        .map_err(AskError::Grpc)?
        .into_inner();
    grpc_verdict(response)
}

fn header_pair(key: &str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    Some((
        HeaderName::from_bytes(key.as_bytes()).ok()?,
        HeaderValue::from_str(value).ok()?,
    ))
}

/// How Envoy applies one of an OK response's headers: the deprecated `append` when set
/// (true appends, false overwrites), else `append_action` (whose default appends a line).
fn header_action(h: &HeaderValueOption) -> HeaderAction {
    #[expect(deprecated, reason = "Envoy still honours the deprecated field first")]
    let append = h.append.as_ref().map(|b| b.value);
    match append {
        Some(true) => HeaderAction::Append,
        Some(false) => HeaderAction::Set,
        None => match HeaderAppendAction::try_from(h.append_action) {
            Ok(HeaderAppendAction::AppendIfExistsOrAdd) => HeaderAction::Append,
            Ok(HeaderAppendAction::AddIfAbsent) => HeaderAction::AddIfAbsent,
            Ok(HeaderAppendAction::OverwriteIfExists) => HeaderAction::OverwriteIfExists,
            // An unknown action overwrites, as Envoy does.
            Ok(HeaderAppendAction::OverwriteIfExistsOrAdd) | Err(_) => HeaderAction::Set,
        },
    }
}

/// The headers of a `HeaderValueOption` list with how each applies.
fn header_options(list: &[HeaderValueOption]) -> Vec<(HeaderName, HeaderValue, HeaderAction)> {
    list.iter()
        .filter_map(|h| {
            let hv = h.header.as_ref()?;
            let (name, value) = header_pair(&hv.key, &hv.value)?;
            Some((name, value, header_action(h)))
        })
        .collect()
}

/// A denial's (or an `error_response`'s) status (0 when unset or not an HTTP status),
/// headers and body.
fn denied_parts(d: DeniedHttpResponse, details: &'static str) -> Denied {
    Denied {
        status: d
            .status
            .as_ref()
            .and_then(|s| u16::try_from(s.code).ok())
            .filter(|c| (200..=599).contains(c))
            .unwrap_or(0),
        headers: d
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .filter_map(|hv| header_pair(&hv.key, &hv.value))
            .collect(),
        body: Bytes::from(d.body),
        details,
    }
}

/// A `CheckResponse` as Envoy reads it: `status.code` 0 allows (with `ok_response`'s header,
/// response header and query changes); otherwise `error_response` is an error and anything
/// else denies (with `denied_response`'s status, default 403, headers and body).
fn grpc_verdict(response: CheckResponse) -> Result<Verdict, AskError> {
    let ok = response.status.as_ref().is_none_or(|s| s.code == 0);
    if ok {
        let mut allowed = Allowed::default();
        if let Some(HttpResponse::OkResponse(okr)) = response.http_response {
            allowed.headers = header_options(&okr.headers);
            allowed.response_headers = header_options(&okr.response_headers_to_add);
            allowed.query_set = okr
                .query_parameters_to_set
                .iter()
                .map(|q| (q.key.clone(), q.value.clone()))
                .collect();
            allowed.query_remove = okr.query_parameters_to_remove.clone();
            for name in okr.headers_to_remove {
                if name.starts_with(':') {
                    continue;
                }
                if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                    allowed.remove.push(n);
                }
            }
        }
        return Ok(Verdict::Allow(allowed));
    }
    let denied = match response.http_response {
        Some(HttpResponse::ErrorResponse(e)) => {
            return Err(AskError::ErrorResponse(denied_parts(e, ERROR_DETAILS)));
        }
        Some(HttpResponse::DeniedResponse(d)) => d,
        _ => DeniedHttpResponse::default(),
    };
    let mut denied = denied_parts(denied, DENIED_DETAILS);
    if denied.status == 0 {
        denied.status = 403;
    }
    Ok(Verdict::Deny(denied))
}

/// Headers always sent to an HTTP authorizer besides the allowed ones (Envoy's list).
fn always_sent(name: &HeaderName) -> bool {
    *name == header::AUTHORIZATION || *name == header::CONTENT_LENGTH
}

/// The HTTP variant: the client's method, `pathPrefix` + the path with its query, the
/// original `Host`, the allowed headers, `includeAdditionalHeadersInCheck`, and the body read
/// for the provider (with `x-envoy-auth-partial-body`) or none.
async fn ask_http(
    client: &HttpClient<HttpConnector, Full<Bytes>>,
    base: &str,
    settings: &ExtAuthzHttp,
    input: &CheckInput<'_>,
    timeout: Duration,
) -> Result<Verdict, AskError> {
    let uri: http::Uri = format!("{base}{}{}", settings.path_prefix, input.path)
        .parse()
        .map_err(|e| AskError::Http(format!("{e}")))?;
    let body = input
        .body
        .map_or_else(Bytes::new, |b| Bytes::copy_from_slice(b.data));
    let length = body.len();
    let mut req = http::Request::new(Full::new(body));
    *req.method_mut() = input.method.clone();
    *req.uri_mut() = uri;
    let h = req.headers_mut();
    for name in input.headers.keys() {
        if *name == header::HOST || *name == header::CONTENT_LENGTH || name.as_str() == PARTIAL_BODY
        {
            continue;
        }
        if always_sent(name) || any_matches(&settings.request_headers, name.as_str()) {
            for v in input.headers.get_all(name) {
                h.append(name.clone(), v.clone());
            }
        }
    }
    if any_matches(&settings.request_headers, "x-forwarded-proto") {
        h.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static(input.forwarded_proto),
        );
    }
    for (k, v) in &settings.additional_headers {
        if let Some((name, value)) = header_pair(k, v) {
            h.insert(name, value);
        }
    }
    if let Ok(host) = HeaderValue::from_str(input.host) {
        h.insert(header::HOST, host);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Some(b) = &input.body {
        h.insert(
            HeaderName::from_static(PARTIAL_BODY),
            HeaderValue::from_static(if b.partial { "true" } else { "false" }),
        );
    }
    // Envoy's own requests are marked internal.
    h.insert(
        HeaderName::from_static("x-envoy-internal"),
        HeaderValue::from_static("true"),
    );
    h.insert(
        HeaderName::from_static("x-envoy-expected-rq-timeout-ms"),
        HeaderValue::from(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
    );
    let resp = client
        .request(req)
        .await
        .map_err(|e| AskError::Http(e.to_string()))?;
    let (parts, body) = resp.into_parts();
    let status = parts.status.as_u16();
    if parts.status.is_server_error() {
        return Err(AskError::ServerError(status));
    }
    if status == 200 {
        let mut allowed = Allowed::default();
        for (name, value) in &parts.headers {
            if any_matches(&settings.upstream_on_allow, name.as_str()) {
                allowed
                    .headers
                    .push((name.clone(), value.clone(), HeaderAction::Set));
            }
            if any_matches(&settings.downstream_on_allow, name.as_str()) {
                allowed
                    .response_headers
                    .push((name.clone(), value.clone(), HeaderAction::Append));
            }
        }
        for v in parts.headers.get_all("x-envoy-auth-headers-to-remove") {
            for n in v.to_str().unwrap_or("").split(',').map(str::trim) {
                if let Ok(n) = HeaderName::from_bytes(n.as_bytes()) {
                    allowed.remove.push(n);
                }
            }
        }
        return Ok(Verdict::Allow(allowed));
    }
    let body = Limited::new(body, MAX_ANSWER_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| AskError::Http(e.to_string()))?;
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| {
            settings.downstream_on_deny.is_empty()
                || any_matches(&settings.downstream_on_deny, name.as_str())
                || [header::WWW_AUTHENTICATE, header::LOCATION].contains(name)
        })
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "server"))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    Ok(Verdict::Deny(Denied {
        status,
        headers,
        body,
        details: DENIED_DETAILS,
    }))
}
