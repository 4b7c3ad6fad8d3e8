//! One request through the proxy: admit, evaluate, then answer locally or forward.
//!
//! Owns the order of the phases: intake ([`crate::intake`]: method, framing, `Connection`, the
//! authority), the engine's input (path, peer, `remote.ip`), loading the policy snapshot once,
//! counting the outcome, the access log line, refusing `CONNECT` after evaluation, and
//! forwarding with hop-by-hop headers removed and the forwarding headers set. Does not decide
//! (the engine does) and does not build local replies (see [`crate::response`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use meshguard_engine::{EvalOptions, HttpRequest, Outcome, PathNormalization, evaluate};
use serde::Serialize;

use crate::intake::{self, Refusal, remote_ip};
use crate::metrics::{AuthzLabels, JwtLabels, Metrics, ResultLabels};
use crate::response::{Body, LocalReply, ReplyTo, UpstreamFailure, local_reply, refusal_reply};
use crate::state::{PolicyState, Snapshot, unix_now};
use crate::upstream::{SendError, Upstream};

/// What every request shares.
#[derive(Debug)]
pub struct Shared {
    pub state: Arc<PolicyState>,
    pub metrics: Arc<Metrics>,
    pub pool: Upstream,
    /// `scheme://authority` of the upstream.
    pub upstream: Uri,
    pub path_normalization: PathNormalization,
    pub trusted_proxies: usize,
    pub upstream_timeout: std::time::Duration,
    pub request_ids: RequestIds,
    /// Where the one JSON access-log line per request goes; `None` with `--no-access-log`.
    pub log_writer: Option<crate::access_log::AccessLog>,
}

/// The two ends of the client's connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The peer's address as a header value, made once per connection for `x-forwarded-for`.
    pub peer_ip: HeaderValue,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, local: SocketAddr) -> ConnInfo {
        let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ConnInfo {
            peer,
            local,
            peer_ip,
        }
    }
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

fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
struct AccessLog<'a> {
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
    policy: Option<&'a str>,
    config_generation: u64,
}

/// Writes one access log line to stdout.
fn write_access_log(writer: &crate::access_log::AccessLog, line: &AccessLog<'_>) {
    if let Ok(mut text) = serde_json::to_vec(line) {
        // Whole lines to the writer thread, which never lets stdout hold up a request.
        text.push(b'\n');
        writer.write(text);
    }
}

fn protocol_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2",
        _ => "HTTP",
    }
}

fn record_outcome(metrics: &Metrics, out: &Outcome) {
    static NONE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| "none".into());
    for r in &out.jwt {
        metrics.jwt.inc(JwtLabels {
            issuer: r.issuer.clone(),
            result: r.result,
            reason: r.status.unwrap_or(""),
        });
    }
    let a = &out.authz;
    if a.matched_policy.is_some() || a.denied.is_some() {
        metrics.authz.inc(AuthzLabels {
            policy: a.matched_policy.clone().unwrap_or_else(|| NONE.clone()),
            action: a.matched_action.unwrap_or("ALLOW"),
            result: if a.denied.is_some() {
                "denied"
            } else {
                "allowed"
            },
            dry_run: "false",
        });
    }
    for d in &a.dry_run {
        metrics.authz.inc(AuthzLabels {
            policy: d.policy.clone().unwrap_or_else(|| NONE.clone()),
            action: d.action,
            result: d.result,
            dry_run: "true",
        });
    }
}

#[allow(clippy::too_many_arguments)] // the request's parts, borrowed separately
fn evaluate_once(
    snapshot: &Snapshot,
    headers: &mut HeaderMap,
    method: &str,
    path: &str,
    host: &str,
    conn: &ConnInfo,
    remote: IpAddr,
    shared: &Shared,
    now: u64,
) -> Outcome {
    evaluate(
        &snapshot.compiled,
        HttpRequest {
            method,
            path,
            host,
            scheme: "http",
            headers,
            source_ip: Some(conn.peer.ip()),
            remote_ip: Some(remote),
            destination_ip: Some(conn.local.ip()),
            destination_port: Some(conn.local.port()),
            sni: None,
        },
        &EvalOptions {
            path_normalization: shared.path_normalization,
            now,
            keys: snapshot,
            explain: tracing::enabled!(target: "meshguard::explain", tracing::Level::DEBUG),
        },
    )
}

/// Serves one request.
pub async fn handle(
    req: Request<Incoming>,
    conn: ConnInfo,
    shared: Arc<Shared>,
) -> Result<Response<Body>, std::convert::Infallible> {
    // For the access log and the request-duration histogram.
    let started = Instant::now();
    let start_time = unix_now();
    let snapshot = shared.state.snapshot();
    let (mut parts, body) = req.into_parts();

    let fields = intake::Fields::scan(&parts.headers);
    let grpc = fields.grpc;
    let reply_to = ReplyTo {
        grpc,
        head: parts.method == Method::HEAD,
    };
    let te_trailers = fields.te_trailers;
    let admitted = intake::admit_scanned(&mut parts, fields);
    let request_id = match parts.headers.entry(&X_REQUEST_ID) {
        header::Entry::Occupied(mut e) => {
            if e.get().is_empty() {
                e.insert(shared.request_ids.next());
            }
            e.get().clone()
        }
        header::Entry::Vacant(e) => e.insert(shared.request_ids.next()).clone(),
    };
    let host = match admitted {
        Ok(authority) => authority,
        Err(refusal) => {
            let reply = LocalReply::from(refusal);
            let elapsed = started.elapsed();
            if let Some(writer) = &shared.log_writer {
                write_access_log(
                    writer,
                    &AccessLog {
                        start_time,
                        method: parts.method.as_str(),
                        authority: "",
                        path: "",
                        protocol: protocol_name(parts.version),
                        response_code: reply.status,
                        response_code_details: &reply.details,
                        duration_ms: elapsed.as_secs_f64() * 1000.0,
                        upstream_duration_ms: None,
                        principal: None,
                        request_id: request_id.to_str().unwrap_or(""),
                        downstream_remote_address: conn.peer,
                        policy: None,
                        config_generation: snapshot.generation,
                    },
                );
            }
            shared.metrics.record_response(reply.status, elapsed, None);
            return Ok(refusal_reply(refusal, reply_to));
        }
    };
    let remote = remote_ip(&parts.headers, conn.peer.ip(), shared.trusted_proxies);
    let raw_path = parts.uri.path_and_query().map_or("/", |p| p.as_str());

    // Requests that arrive while a provider's first JWKS fetch is in flight wait for it,
    // bounded by the rule's timeout (docs/jwks.md).
    for (keys, timeout) in snapshot.remote.values() {
        keys.wait_first_fetch(*timeout).await;
    }
    let mut outcome = evaluate_once(
        &snapshot,
        &mut parts.headers,
        parts.method.as_str(),
        raw_path,
        host.as_str(),
        &conn,
        remote,
        &shared,
        start_time,
    );
    if outcome.denial.is_some() && !outcome.unknown_kid.is_empty() {
        // The token names a key the fetched set lacks: maybe a rotation. Refetch (coalesced,
        // rate-limited per source) and decide again with the new keys.
        let mut refetched = false;
        for src in &outcome.unknown_kid {
            if let Some((keys, timeout)) = snapshot.remote.get(src) {
                keys.refetch_for_unknown_kid(*timeout).await;
                refetched = true;
            }
        }
        if refetched {
            outcome = evaluate_once(
                &snapshot,
                &mut parts.headers,
                parts.method.as_str(),
                raw_path,
                host.as_str(),
                &conn,
                remote,
                &shared,
                start_time,
            );
        }
    }
    record_outcome(&shared.metrics, &outcome);
    let request_id_str = request_id.to_str().unwrap_or("");
    if let Some(rules) = &outcome.explanation {
        // RUST_LOG=meshguard::explain=debug: the same account `check --explain` gives.
        for r in &outcome.jwt {
            tracing::debug!(target: "meshguard::explain", request_id = request_id_str, provider = %r.provider, rule = %r.rule, result = r.result, reason = r.message.unwrap_or(""), "jwt");
        }
        for r in rules {
            tracing::debug!(target: "meshguard::explain", request_id = request_id_str, policy = %r.policy, action = r.action, dry_run = r.dry_run, rule = %r.rule, matched = r.matched, why = r.why.as_deref().unwrap_or(""), "authorization rule");
        }
        tracing::debug!(target: "meshguard::explain", request_id = request_id_str, status = outcome.status(), details = outcome.denial.as_ref().map_or("via_upstream", |d| d.details.as_str()), "decision");
    }

    // `ended`: when the answer was known (one clock read for both durations when forwarded).
    let log = |status: u16, details: &str, ended: Instant, sent: Option<Instant>| {
        let elapsed = ended.saturating_duration_since(started);
        let upstream = sent.map(|s| ended.saturating_duration_since(s));
        if let Some(writer) = &shared.log_writer {
            let line = AccessLog {
                start_time,
                method: parts.method.as_str(),
                authority: host.as_str(),
                path: outcome
                    .path
                    .as_deref()
                    .and_then(|p| p.split('?').next())
                    .unwrap_or(""),
                protocol: protocol_name(parts.version),
                response_code: status,
                response_code_details: details,
                duration_ms: elapsed.as_secs_f64() * 1000.0,
                upstream_duration_ms: upstream.map(|d| d.as_secs_f64() * 1000.0),
                principal: outcome.principal.as_deref(),
                request_id: request_id_str,
                downstream_remote_address: conn.peer,
                policy: outcome.authz.matched_policy.as_deref(),
                config_generation: snapshot.generation,
            };
            write_access_log(writer, &line);
        }
        shared.metrics.record_response(status, elapsed, upstream);
    };

    if let Some(denial) = &outcome.denial {
        let reply = LocalReply::from(denial);
        log(reply.status, &reply.details, Instant::now(), None);
        return Ok(local_reply(&reply, reply_to));
    }
    if parts.method == Method::CONNECT {
        // Allowed by the policies, but never forwarded: there is no route for tunnels.
        let reply = LocalReply::from(Refusal::ConnectNotRouted);
        log(reply.status, &reply.details, Instant::now(), None);
        return Ok(refusal_reply(Refusal::ConnectNotRouted, reply_to));
    }

    // Forward: the normalized path (origin-form), the original Host, forwarding headers set.
    let path = outcome.path.as_deref().unwrap_or("/");
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
                log(400, &reply.details, Instant::now(), None);
                return Ok(local_reply(&reply, reply_to));
            }
        }
    };
    let mut headers = std::mem::take(&mut parts.headers);
    strip_hop_by_hop(&mut headers);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    intake::set_forwarding_headers(&mut headers, &host, &request_id, &conn);
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
            log(rparts.status.as_u16(), "via_upstream", ended, Some(sent));
            return Ok(Response::from_parts(rparts, Body::Upstream(rbody)));
        }
        Err(SendError::ClientBody(fault)) => {
            // The client's fault: not an upstream failure, not counted as one.
            tracing::debug!(?fault, "the client's request body failed");
            let reply = LocalReply::from(&fault);
            log(reply.status, &reply.details, Instant::now(), None);
            let mut resp = local_reply(&reply, reply_to);
            if parts.version < http::Version::HTTP_2 {
                // The rest of the body cannot be told from a next request: close, and say so
                // (as Envoy does).
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return Ok(resp);
        }
        Err(SendError::Connect(e)) => UpstreamFailure::Connect(e),
        Err(SendError::Protocol(e)) => UpstreamFailure::Protocol(e),
        Err(SendError::Timeout) => UpstreamFailure::Timeout,
        Err(SendError::Overflow) => UpstreamFailure::Overflow,
        Err(SendError::Tls(e)) => UpstreamFailure::Tls(e),
        Err(SendError::Deadline) => UpstreamFailure::Deadline,
    };
    shared
        .metrics
        .upstream_errors
        .get_or_create(&ResultLabels {
            result: failure.metric_label(),
        })
        .inc();
    tracing::warn!(upstream = %shared.upstream, ?failure, "upstream failed");
    let reply = LocalReply::from(&failure);
    log(reply.status, &reply.details, Instant::now(), None);
    Ok(local_reply(&reply, reply_to))
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
