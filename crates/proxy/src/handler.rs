//! One request through the proxy, in named phases: [`identify`] (intake: method, framing,
//! `Connection`, the authority; the request id; `remote.ip`), decide (the runtime's
//! [`Runtime::decide`], shared with every front end; when a CUSTOM rule names a configured
//! provider, [`check_input`] is what it is asked and the decision goes on after it), then [`reply`] with a local answer or
//! [`forward`] to the upstream, and the access log line ([`RequestLog`]) whichever way it
//! ended.
//!
//! Owns the order of the phases, refusing `CONNECT` after evaluation, and preparing the
//! forwarded request (hop-by-hop headers removed, forwarding headers set). Does not decide
//! (the engine does, through the runtime), does not build local replies (see
//! [`crate::response`]) and does not hold connections to the upstream ([`crate::upstream`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use meshguard_runtime::access_log::AccessLog as LogWriter;
use meshguard_runtime::metrics::ResultLabels;
use meshguard_runtime::state::unix_now;
use meshguard_runtime::{Decision, RequestFacts, Runtime};
use serde::Serialize;

use crate::client::ConnInfo;
use crate::custom::{
    BodyReadError, CheckBody, CheckInput, ClientBody, ExternalAuthorizers, Verdict,
};
use crate::intake::{self, Authority, Refusal, remote_ip};
use crate::response::{Body, LocalReply, ReplyTo, UpstreamFailure, local_reply, refusal_reply};
use crate::upstream::{SendError, Upstream};

/// What every request shares.
#[derive(Debug)]
pub struct Shared {
    /// Policies, keys, metrics and the decision: shared with every front end.
    pub runtime: Arc<Runtime>,
    pub pool: Upstream<ClientBody>,
    /// `scheme://authority` of the upstream.
    pub upstream: Uri,
    pub trusted_proxies: usize,
    pub upstream_timeout: std::time::Duration,
    pub request_ids: RequestIds,
    /// Where the one JSON access-log line per request goes; `None` with `--no-access-log`.
    pub log_writer: Option<LogWriter>,
    /// The external authorizers of CUSTOM policies (the mesh config's ext_authz providers).
    pub ext_authz: Option<Arc<dyn ExternalAuthorizers>>,
    /// The serving certificate's identity (mutual TLS), for an authorizer's
    /// `destination.principal`.
    pub local_principal: Option<Arc<str>>,
}

/// Generates `x-request-id` values: unique per process, unpredictable across processes.
#[derive(Debug)]
pub struct RequestIds {
    hasher: std::hash::RandomState,
    /// A second random key, for the id's other 64 bits.
    key: u64,
    counter: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        use std::hash::BuildHasher;
        RequestIds {
            hasher: std::hash::RandomState::new(),
            // Drawn from a second, independent `RandomState`.
            key: std::hash::RandomState::new().hash_one(0u64),
            counter: AtomicU64::new(0),
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The SplitMix64 finalizer: a bijection on `u64` that spreads every input bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl RequestIds {
    /// A UUID-shaped id (version 4 layout).
    #[expect(
        clippy::indexing_slicing,
        reason = "constant slots below 35 in a 36-byte array; nibbles index a 16-entry table"
    )]
    pub fn next(&self) -> HeaderValue {
        use std::hash::BuildHasher;
        // A keyed hash of a counter: not guessable outside the process. The other half is a
        // bijection of the counter under a second key, so ids never repeat within a process.
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let a = self.hasher.hash_one(n);
        let b = mix(n ^ self.key);
        // Version 4 and variant 10 bits set, then 32 hex digits in the 8-4-4-4-12 layout,
        // written a byte (two digits) at a time, without `fmt`.
        let a = (a & !(0xf << 12)) | (0x4 << 12);
        let b = (b & !(0xc << 60)) | (0x8 << 60);
        let mut out = [b'-'; 36];
        let digits = a.to_be_bytes().into_iter().chain(b.to_be_bytes());
        let slots = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
        for (byte, at) in digits.zip(slots) {
            out[at] = HEX[usize::from(byte >> 4)];
            out[at + 1] = HEX[usize::from(byte & 0xf)];
        }
        HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The static name to remove when `name` describes one connection and is never forwarded
/// (RFC 9110 §7.6.1). Told apart by length first: most names compare only that.
fn hop_by_hop(name: &HeaderName) -> Option<&'static HeaderName> {
    let s = name.as_str();
    let candidate: &'static HeaderName = match s.len() {
        2 => &header::TE,
        7 => &header::UPGRADE,
        10 if s.starts_with('c') => &header::CONNECTION,
        10 => &KEEP_ALIVE,
        16 => &PROXY_CONNECTION,
        17 => &header::TRANSFER_ENCODING,
        18 => &header::PROXY_AUTHENTICATE,
        19 => &header::PROXY_AUTHORIZATION,
        _ => return None,
    };
    (candidate.as_str() == s).then_some(candidate)
}

pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names, without allocating: most messages carry none of them, and
    // the usual one is a `connection: keep-alive` from the upstream. At most 8 distinct
    // names can match.
    let mut found: [Option<&'static HeaderName>; 8] = [None; 8];
    let mut n = 0;
    for name in headers.keys() {
        if let Some(h) = hop_by_hop(name)
            && let Some(slot) = found.get_mut(n)
        {
            *slot = Some(h);
            n += 1;
        }
    }
    if n == 0 {
        return;
    }
    // Headers named by `Connection` go too; its usual options are not header names.
    let mut named: Vec<HeaderName> = Vec::new();
    for v in headers.get_all(header::CONNECTION) {
        for option in v.to_str().unwrap_or("").split(',').map(str::trim) {
            if option.is_empty()
                || option.eq_ignore_ascii_case("close")
                || option.eq_ignore_ascii_case("keep-alive")
            {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(option.as_bytes()) {
                named.push(name);
            }
        }
    }
    for name in found.into_iter().flatten() {
        headers.remove(name);
    }
    for name in named {
        headers.remove(name);
    }
}

/// The access log line (one JSON object per request). Never holds a token.
#[derive(Debug, Serialize)]
struct AccessLogLine<'a> {
    start_time: u64,
    method: &'a str,
    authority: &'a str,
    /// The normalized path without the query (query strings can carry tokens).
    path: &'a str,
    protocol: &'a str,
    response_code: u16,
    response_code_details: &'a str,
    duration_ms: f64,
    upstream_duration_ms: Option<f64>,
    principal: Option<&'a str>,
    request_id: &'a str,
    downstream_remote_address: SocketAddr,
    /// The client certificate's first URI SAN over mutual TLS (Envoy's
    /// `%DOWNSTREAM_PEER_URI_SAN%`); `null` over plaintext.
    downstream_peer_uri_san: Option<&'a str>,
    policy: Option<&'a str>,
    /// The external authorizers asked (CUSTOM policies), in order, and their answers.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    ext_authz: &'a [AskedLog],
    config_generation: u64,
}

/// One external authorizer asked about a request: the access log's `ext_authz` entries.
#[derive(Debug, Serialize)]
struct AskedLog {
    provider: Arc<str>,
    result: &'static str,
}

fn protocol_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2",
        _ => "HTTP",
    }
}

/// The log phase: what the access log line and the request metrics need, gathered as the
/// request goes; [`RequestLog::finish`] writes them once the answer is known.
struct RequestLog<'a> {
    shared: &'a Shared,
    started: Instant,
    start_time: u64,
    peer: SocketAddr,
    peer_principal: Option<&'a str>,
    protocol: &'static str,
    request_id: HeaderValue,
    /// Known once the request is identified.
    authority: &'a str,
    /// Known once the request is decided.
    decision: Option<&'a Decision>,
    /// The external authorizers asked so far.
    asked: Vec<AskedLog>,
}

impl RequestLog<'_> {
    /// The log line of a request answered locally, now.
    fn local(&self, method: &Method, reply: &LocalReply) {
        self.finish(method, reply.status, &reply.details, Instant::now(), None);
    }

    /// `ended`: when the answer was known (one clock read serves both durations when the
    /// request was forwarded); `sent`: when it was handed to the upstream.
    fn finish(
        &self,
        method: &Method,
        status: u16,
        details: &str,
        ended: Instant,
        sent: Option<Instant>,
    ) {
        let elapsed = ended.saturating_duration_since(self.started);
        let upstream = sent.map(|s| ended.saturating_duration_since(s));
        if let Some(writer) = &self.shared.log_writer {
            let outcome = self.decision.map(|d| &d.outcome);
            let generation = match self.decision {
                Some(d) => d.snapshot.generation,
                None => self.shared.runtime.state().snapshot().generation,
            };
            let line = AccessLogLine {
                start_time: self.start_time,
                method: method.as_str(),
                authority: self.authority,
                path: outcome
                    .and_then(|o| o.path.as_deref())
                    .and_then(|p| p.split('?').next())
                    .unwrap_or(""),
                protocol: self.protocol,
                response_code: status,
                response_code_details: details,
                duration_ms: elapsed.as_secs_f64() * 1000.0,
                upstream_duration_ms: upstream.map(|d| d.as_secs_f64() * 1000.0),
                principal: outcome.and_then(|o| o.principal.as_deref()),
                request_id: self.request_id.to_str().unwrap_or(""),
                downstream_remote_address: self.peer,
                downstream_peer_uri_san: self.peer_principal,
                policy: outcome.and_then(|o| o.authz.matched_policy.as_deref()),
                ext_authz: &self.asked,
                config_generation: generation,
            };
            if let Ok(mut text) = serde_json::to_vec(&line) {
                // Whole lines to the writer thread, which never lets stdout hold up a request.
                text.push(b'\n');
                writer.write(text);
            }
        }
        self.shared
            .runtime
            .metrics()
            .record_response(status, elapsed, upstream);
    }
}

/// A request that passed intake: what the later phases need.
struct Identified {
    /// The authority the policies see and the upstream receives.
    host: Authority,
    /// `remote.ip`.
    remote: std::net::IpAddr,
    /// How local replies are shaped (gRPC, HEAD).
    reply_to: ReplyTo,
    /// The client asked for trailers (`te: trailers`): kept for the upstream.
    te_trailers: bool,
}

/// Serves one request.
pub async fn handle(
    req: Request<Incoming>,
    conn: ConnInfo,
    shared: Arc<Shared>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let started = Instant::now();
    let start_time = unix_now();
    let (mut parts, body) = req.into_parts();
    let mut body = ClientBody::Streaming(body);
    let (identified, request_id) = identify(&mut parts, &conn, &shared);
    let mut log = RequestLog {
        shared: &shared,
        started,
        start_time,
        peer: conn.peer,
        peer_principal: conn.peer_identity.as_deref().and_then(|p| p.principal()),
        protocol: protocol_name(parts.version),
        request_id,
        authority: "",
        decision: None,
        asked: Vec::new(),
    };
    let id = match identified {
        Ok(id) => id,
        Err((refusal, reply_to)) => {
            let reply = LocalReply::from(refusal);
            log.local(&parts.method, &reply);
            return Ok(refusal_reply(refusal, reply_to));
        }
    };
    let mut decision = decide(
        &shared.runtime,
        &mut parts,
        &id,
        &conn,
        &log.request_id,
        start_time,
        None,
    )
    .await;
    // CUSTOM: only when a CUSTOM rule of a configured provider matched; boxed, so that the
    // future every other request keeps in memory does not hold this phase's state.
    let mut response_headers = Vec::new();
    if decision.outcome.ext_authz.is_some() && shared.ext_authz.is_some() {
        let asked = ask_authorizers(
            decision, &mut parts, &mut body, &id, &conn, &shared, &mut log,
        );
        match Box::pin(asked).await {
            Custom::Continue(d, headers) => {
                decision = d;
                response_headers = headers;
            }
            Custom::Reply(d, replied) => {
                let (resp, reply) = *replied;
                decision = d;
                log.authority = id.host.as_str();
                log.decision = Some(&decision);
                log.local(&parts.method, &reply);
                return Ok(resp);
            }
        }
    }
    log.authority = id.host.as_str();
    log.decision = Some(&decision);
    let mut resp = match reply(&decision, &parts, &id, &log) {
        Some(resp) => resp,
        None => forward(&mut parts, body, &id, &decision, &conn, &shared, &log).await,
    };
    // An allowing authorizer's response headers go on whatever answers the request.
    crate::custom::apply_response_headers(resp.headers_mut(), &response_headers);
    Ok(resp)
}

/// How the CUSTOM phase ends: go on with the decision made after the last authorizer allowed
/// (and the response headers the authorizers add), or reply now (a denial, or a body that
/// could not be read for an authorizer), with the decision for the log.
enum Custom {
    Continue(
        Decision,
        Vec<(HeaderName, HeaderValue, crate::custom::HeaderAction)>,
    ),
    /// Boxed: rare, and the reply is larger than the headers.
    Reply(Decision, Box<(Response<Body>, LocalReply)>),
}

/// CUSTOM: each provider whose rules match is asked in turn; an allow applies its header
/// changes and the decision goes on after that provider (JWT, DENY, ALLOW see the changed
/// request, as Envoy's later filters do).
async fn ask_authorizers(
    mut decision: Decision,
    parts: &mut Parts,
    body: &mut ClientBody,
    id: &Identified,
    conn: &ConnInfo,
    shared: &Shared,
    log: &mut RequestLog<'_>,
) -> Custom {
    let mut response_headers = Vec::new();
    let Some(authorizers) = shared.ext_authz.as_deref() else {
        // No client: the outcome's denial stands (fail closed).
        return Custom::Continue(decision, response_headers);
    };
    while let Some(ask) = decision.outcome.ext_authz.clone() {
        // `includeRequestBodyInCheck`: the body is read first (bounded by the provider's
        // limit); the bytes read go upstream ahead of the rest.
        let limit = authorizers
            .body_limit(&ask.provider)
            .filter(|_| body.readable(&parts.method, &parts.headers));
        if let Some(limit) = limit
            && let Err(e) = body
                .read_for_check(limit, shared.pool.body_stall_timeout())
                .await
        {
            let reply = match e {
                BodyReadError::TooLarge => crate::response::payload_too_large(),
                BodyReadError::Client(fault) => LocalReply::from(&fault),
            };
            let mut resp = local_reply(&reply, id.reply_to);
            if parts.version < http::Version::HTTP_2 {
                // The rest of the body is not read: the connection cannot carry another
                // request (Envoy closes it too).
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return Custom::Reply(decision, Box::new((resp, reply)));
        }
        let input = check_input(
            parts,
            limit.and_then(|l| body.check_body(l.max)),
            &decision,
            id,
            conn,
            shared.local_principal.as_deref(),
        );
        // The client logs why a provider gave no usable answer.
        let checked = authorizers.check(&ask.provider, input).await;
        shared
            .runtime
            .metrics()
            .ext_authz_requests
            .get_or_create(&meshguard_runtime::metrics::ExtAuthzLabels {
                provider: ask.provider.clone(),
                result: checked.result.as_str(),
            })
            .inc();
        log.asked.push(AskedLog {
            provider: ask.provider.clone(),
            result: checked.result.as_str(),
        });
        match checked.verdict {
            Verdict::Allow(mut allowed) => {
                crate::custom::apply_allowed(&mut parts.headers, &allowed);
                // Query changes apply to the normalized path the later phases see.
                let path = decision.outcome.path.as_deref().unwrap_or("/");
                if let Some(changed) = crate::custom::apply_query(path, &allowed)
                    && let Ok(pq) = http::uri::PathAndQuery::try_from(changed)
                {
                    parts.uri = Uri::from(pq);
                }
                response_headers.append(&mut allowed.response_headers);
                drop(allowed);
                decision = decide(
                    &shared.runtime,
                    parts,
                    id,
                    conn,
                    &log.request_id,
                    log.start_time,
                    Some(&ask.provider),
                )
                .await;
            }
            Verdict::Deny(denied) => {
                let (mut resp, reply) = crate::custom::denied_reply(&denied, id.reply_to);
                crate::upgrade::close_if_asked(parts.version, &parts.headers, &mut resp);
                return Custom::Reply(decision, Box::new((resp, reply)));
            }
        }
    }
    Custom::Continue(decision, response_headers)
}

/// Identify: intake's checks, the request id (kept when the client sent one), and
/// `remote.ip`. A refusal comes back with the shape its reply takes.
fn identify(
    parts: &mut Parts,
    conn: &ConnInfo,
    shared: &Shared,
) -> (Result<Identified, (Refusal, ReplyTo)>, HeaderValue) {
    let mut fields = intake::Fields::scan(&parts.headers);
    // Over mutual TLS the client's x-forwarded-client-cert is kept and ours appended after
    // intake (Istio's APPEND_FORWARD); intake removes it otherwise.
    let peer = conn.peer_identity.as_deref();
    if peer.is_some() {
        fields.client_cert = false;
    }
    let reply_to = ReplyTo {
        grpc: fields.grpc,
        head: parts.method == Method::HEAD,
    };
    let te_trailers = fields.te_trailers;
    let admitted = intake::admit_scanned(parts, fields);
    if let Some(peer) = peer {
        intake::append_client_cert(&mut parts.headers, &peer.xfcc);
    }
    let request_id = match parts.headers.entry(&X_REQUEST_ID) {
        header::Entry::Occupied(mut e) => {
            if e.get().is_empty() {
                e.insert(shared.request_ids.next());
            }
            e.get().clone()
        }
        header::Entry::Vacant(e) => e.insert(shared.request_ids.next()).clone(),
    };
    let identified = admitted
        .map(|host| Identified {
            host,
            remote: remote_ip(&parts.headers, conn.peer.ip(), shared.trusted_proxies),
            reply_to,
            te_trailers,
        })
        .map_err(|refusal| (refusal, reply_to));
    (identified, request_id)
}

/// Ask: the CUSTOM phase's question to the provider the engine named, about the request as
/// Envoy's ext_authz filter sees it (normalized path, the request id, `x-forwarded-proto`).
fn check_input<'a>(
    parts: &'a Parts,
    body: Option<CheckBody<'a>>,
    decision: &'a Decision,
    id: &'a Identified,
    conn: &'a ConnInfo,
    local_principal: Option<&'a str>,
) -> CheckInput<'a> {
    let raw = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    CheckInput {
        method: &parts.method,
        path: decision.outcome.path.as_deref().unwrap_or(raw),
        host: id.host.as_str(),
        scheme: conn.scheme.as_str(),
        version: parts.version,
        headers: &parts.headers,
        forwarded_proto: conn.scheme.as_str(),
        peer: conn.peer,
        local: conn.local,
        peer_principal: conn.peer_identity.as_deref().and_then(|p| p.principal()),
        local_principal: local_principal.filter(|_| conn.peer_identity.is_some()),
        body,
    }
}

/// Decide: the runtime's one decision, on what intake admitted; `custom_after` names the
/// external authorizer that has just allowed the request.
async fn decide(
    runtime: &Runtime,
    parts: &mut Parts,
    id: &Identified,
    conn: &ConnInfo,
    request_id: &HeaderValue,
    now: u64,
    custom_after: Option<&str>,
) -> Decision {
    let facts = RequestFacts {
        method: parts.method.as_str(),
        path: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        host: id.host.as_str(),
        scheme: conn.scheme.as_str(),
        peer: conn.peer,
        local: conn.local,
        remote_ip: id.remote,
        sni: conn.sni.as_deref(),
        peer_identity: conn
            .peer_identity
            .as_ref()
            .map(|p| meshguard_policy::PeerUris::Many(&p.uri_sans)),
        now,
        custom_after,
        request_id: request_id.to_str().unwrap_or(""),
    };
    runtime.decide(facts, &mut parts.headers).await
}

/// Reply: the local answer when the request is not forwarded: denied by the policies, or an
/// allowed `CONNECT`, for which there is no route.
fn reply(
    decision: &Decision,
    parts: &Parts,
    id: &Identified,
    log: &RequestLog<'_>,
) -> Option<Response<Body>> {
    if let Some(denial) = &decision.outcome.denial {
        let reply = &denial.reply;
        log.local(&parts.method, reply);
        let mut resp = local_reply(reply, id.reply_to);
        // A refused WebSocket handshake closes the connection, as Envoy does.
        crate::upgrade::close_if_asked(parts.version, &parts.headers, &mut resp);
        return Some(resp);
    }
    if parts.method == Method::CONNECT {
        let refusal = Refusal::ConnectNotRouted;
        let reply = LocalReply::from(refusal);
        log.local(&parts.method, &reply);
        return Some(refusal_reply(refusal, id.reply_to));
    }
    None
}

/// Forward: the normalized path (origin-form), the original `Host`, hop-by-hop headers
/// removed and the forwarding headers set; then the upstream's answer, or the local reply for
/// its failure.
async fn forward(
    parts: &mut Parts,
    body: ClientBody,
    id: &Identified,
    decision: &Decision,
    conn: &ConnInfo,
    shared: &Shared,
    log: &RequestLog<'_>,
) -> Response<Body> {
    let raw_path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let path = decision.outcome.path.as_deref().unwrap_or("/");
    let uri = if path == raw_path {
        // Unchanged by normalization (the common case): reuse the request's bytes.
        match parts.uri.path_and_query() {
            Some(pq) => Uri::from(pq.clone()),
            None => Uri::from_static("/"),
        }
    } else {
        match http::uri::PathAndQuery::try_from(path) {
            Ok(pq) => Uri::from(pq),
            Err(_) => {
                let reply = LocalReply {
                    status: 400,
                    body: "Bad Request".into(),
                    details: "invalid_upstream_uri".into(),
                    www_authenticate: None,
                };
                log.local(&parts.method, &reply);
                return local_reply(&reply, id.reply_to);
            }
        }
    };
    // Before the hop-by-hop headers go: an allowed WebSocket upgrade keeps its own.
    let upgrade = crate::upgrade::requested(parts.version, &parts.headers, &mut parts.extensions);
    let mut headers = std::mem::take(&mut parts.headers);
    strip_hop_by_hop(&mut headers);
    if id.te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    intake::set_forwarding_headers(&mut headers, &id.host, &log.request_id, conn);
    if hyper::body::Body::is_end_stream(&body) {
        intake::set_empty_body_length(&mut headers, &parts.method);
    }
    let mut up = Request::new(body);
    // The client's protocol: `--upstream-protocol auto` goes out with the same one.
    *up.version_mut() = parts.version;
    *up.method_mut() = parts.method.clone();
    *up.uri_mut() = uri;
    *up.headers_mut() = headers;

    let sent = Instant::now();
    if let Some(upgrade) = upgrade {
        // An upgrade's body is never read for an authorizer (ClientBody::readable).
        let (head, body) = up.into_parts();
        match body.into_streaming() {
            Ok(body) => {
                // On a connection of its own, then a tunnel (crate::upgrade); logged at the
                // answer.
                let up = Request::from_parts(head, body);
                let f = crate::upgrade::forward(up, upgrade, shared, sent, id.reply_to).await;
                log.finish(
                    &parts.method,
                    f.status,
                    &f.details,
                    Instant::now(),
                    f.answered.then_some(sent),
                );
                return f.response;
            }
            Err(body) => up = Request::from_parts(head, body),
        }
    }
    let failure = match shared
        .pool
        .send_from(up, shared.upstream_timeout, sent)
        .await
    {
        Ok(resp) => {
            let ended = Instant::now();
            let (mut rparts, rbody) = resp.into_parts();
            strip_hop_by_hop(&mut rparts.headers);
            // Answered in the client's protocol, whatever the upstream's: an HTTP/1.0
            // upstream must not turn an HTTP/1.1 client's keep-alive connection into a
            // closing HTTP/1.0 one.
            rparts.version = parts.version;
            log.finish(
                &parts.method,
                rparts.status.as_u16(),
                "via_upstream",
                ended,
                Some(sent),
            );
            return Response::from_parts(rparts, Body::Upstream(rbody));
        }
        Err(SendError::ClientBody(fault)) => {
            // The client's fault: not an upstream failure, not counted as one.
            tracing::debug!(?fault, "the client's request body failed");
            let reply = LocalReply::from(&fault);
            log.local(&parts.method, &reply);
            let mut resp = local_reply(&reply, id.reply_to);
            if parts.version < http::Version::HTTP_2 {
                // The rest of the body cannot be told from a next request: close, and say so
                // (as Envoy does).
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return resp;
        }
        Err(SendError::Connect(e)) => UpstreamFailure::Connect(e),
        Err(SendError::Protocol(e)) => UpstreamFailure::Protocol(e),
        Err(SendError::Closed(e)) => UpstreamFailure::Closed(e),
        Err(SendError::Timeout) => UpstreamFailure::Timeout,
        Err(SendError::Overflow) => UpstreamFailure::Overflow,
        Err(SendError::Tls(e)) => UpstreamFailure::Tls(e),
        Err(SendError::Deadline) => UpstreamFailure::Deadline,
    };
    let reply = upstream_failed(shared, &failure);
    log.local(&parts.method, &reply);
    local_reply(&reply, id.reply_to)
}

/// An upstream failure, counted in `meshguard_upstream_errors_total` and logged: the reply the
/// client gets (for a forwarded request and for an upgrade alike).
pub(crate) fn upstream_failed(shared: &Shared, failure: &UpstreamFailure) -> LocalReply {
    shared
        .runtime
        .metrics()
        .upstream_errors
        .get_or_create(&ResultLabels {
            result: failure.metric_label(),
        })
        .inc();
    tracing::warn!(upstream = %shared.upstream, ?failure, "upstream failed");
    LocalReply::from(failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));

        // Options are case-insensitive, and every hop-by-hop header goes, with or without
        // `Connection`.
        let mut h = HeaderMap::new();
        h.append("connection", HeaderValue::from_static("Keep-Alive"));
        h.append(
            "connection",
            HeaderValue::from_static("X-Secret ,, upgrade"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("proxy-authenticate", HeaderValue::from_static("Basic"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        // Same lengths as hop-by-hop names, not hop-by-hop.
        h.insert("cache-ctrl", HeaderValue::from_static("1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let mut kept: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["cache-ctrl", "x-forwarded-proto", "x-kept"]);

        let mut h = HeaderMap::new();
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn request_ids_are_unique_and_uuid_shaped() {
        let ids = RequestIds::default();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        let a = a.to_str().unwrap();
        assert_eq!(a.len(), 36, "{a}");
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{a}");
        assert!(a.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit()), "{a}");
        assert_eq!(&a[14..15], "4", "version nibble: {a}");
        assert!(
            matches!(&a[19..20], "8" | "9" | "a" | "b"),
            "variant nibble: {a}"
        );
    }
}
