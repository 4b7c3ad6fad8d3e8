//! The decision engine: one request in, Istio's answer out.
//!
//! [`evaluate`] runs the pipeline istiod builds for a sidecar, in order: path normalization,
//! CUSTOM (which says which external authorizer to ask, [`evaluate_with`]; asking is the
//! front end's), JWT authentication ([`authn`]), then authorization ([`decision`]). It is a pure function of
//! the compiled workload, the request and the clock: no I/O, no logging, no global state. It
//! mutates the request's headers exactly as Envoy's filters would (removing the token header,
//! adding payload and claim headers) so that the proxy can forward them and `check` can show
//! them. The response for a refusal is built in one place, [`decision::Denial::new`].
#![forbid(unsafe_code)]
// No panics on the request path: index with `get`, no unwrap/expect/panic!/unreachable!.
// An allowed site says why it cannot panic (docs/architecture.md, Panics). Tests may use
// them (clippy.toml; `string_slice` has no such option, hence the `cfg_attr`).
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]
#![cfg_attr(not(test), deny(clippy::string_slice))]

pub mod authn;
pub mod decision;
pub mod extract;
pub mod normalize;

use std::net::IpAddr;

use http::HeaderMap;
use meshguard_policy::{CompiledWorkload, RequestAttributes};
use serde::Serialize;

pub use authn::{
    HeaderOp, KeyStore, NoRemoteKeys, ProviderReport, SecondPass, Verified, VerifiedCache,
};
pub use decision::{
    AskProvider, AuthzReport, Custom, Denial, DenyReason, DryRunResult, LocalReply,
    POLICIES_NOT_LOADED_BODY, POLICIES_NOT_LOADED_DETAILS, RuleExplanation,
};
pub use normalize::{NormalizeError, PathNormalization};

/// One HTTP request as the engine needs it.
#[derive(Debug)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    /// The request-target as received: path, query and possibly a fragment.
    pub path: &'a str,
    /// `:authority` / `Host`.
    pub host: &'a str,
    /// `http` or `https`, for the `www-authenticate` realm.
    pub scheme: &'a str,
    /// The request headers; changed in place by JWT side effects.
    pub headers: &'a mut HeaderMap,
    pub source_ip: Option<IpAddr>,
    pub remote_ip: Option<IpAddr>,
    pub destination_ip: Option<IpAddr>,
    pub destination_port: Option<u16>,
    pub sni: Option<&'a str>,
    /// The mTLS peer's URI SANs (`spiffe://td/ns/x/sa/y`); `None` over plaintext.
    pub peer_identity: Option<meshguard_policy::PeerUris<'a>>,
}

/// Settings of the evaluation that do not come from the policies.
#[derive(Clone, Copy)]
pub struct EvalOptions<'a> {
    pub path_normalization: PathNormalization,
    /// Unix time in seconds.
    pub now: u64,
    /// Keys of providers with `jwksUri` or discovery.
    pub keys: &'a dyn KeyStore,
    /// Fill [`Outcome::explanation`] (every rule, matched or not, and why).
    pub explain: bool,
}

impl std::fmt::Debug for EvalOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalOptions")
            .field("path_normalization", &self.path_normalization)
            .field("now", &self.now)
            .field("explain", &self.explain)
            .finish_non_exhaustive()
    }
}

/// Everything the engine decided about one request.
#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    /// `None`: forward the request. `Some`: answer with this refusal.
    pub denial: Option<Denial>,
    /// The path to forward (normalized, query kept), when it could be normalized.
    pub path: Option<String>,
    /// `iss/sub` of the verified token, when both are strings.
    pub principal: Option<std::sync::Arc<str>>,
    /// The provider (`origins-<i>`) that accepted the token.
    pub accepted_by: Option<std::sync::Arc<str>>,
    /// `true` when JWT validation was skipped for a CORS preflight.
    pub cors_preflight: bool,
    pub jwt: Vec<ProviderReport>,
    pub header_ops: Vec<HeaderOp>,
    pub authz: AuthzReport,
    /// A CUSTOM rule of a configured provider matched: the front end must ask that provider
    /// before anything else happens to the request. [`Outcome::denial`] is then the CUSTOM
    /// rule's denial, so a front end that cannot ask refuses the request (fail closed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ext_authz: Option<AskProvider>,
    /// Remote key sources that lacked a token's `kid`: a caller that can refetch them may
    /// evaluate the request again (key rotation picked up on the first request).
    #[serde(skip)]
    pub unknown_kid: Vec<meshguard_policy::RemoteKeySource>,
    /// With [`EvalOptions::explain`]: every applicable rule and why it matched or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<Vec<RuleExplanation>>,
    /// The verified payload authorization saw (space-delimited claims split).
    #[serde(skip)]
    pub payload: Option<std::sync::Arc<authn::Verified>>,
}

impl Outcome {
    /// A request refused before evaluation, for `reason` (no policies loaded yet): its reply,
    /// and nothing observed.
    pub fn refused(reason: DenyReason) -> Outcome {
        Outcome {
            denial: Some(Denial::new(reason, "")),
            ..Outcome::default()
        }
    }

    pub fn allowed(&self) -> bool {
        self.denial.is_none()
    }

    /// The HTTP status the client sees from meshguard itself (200 when forwarded).
    pub fn status(&self) -> u16 {
        self.denial.as_ref().map_or(200, |d| d.reply.status)
    }
}

/// Envoy's CORS preflight test: `OPTIONS` with non-empty `Origin` and
/// `Access-Control-Request-Method`.
fn is_cors_preflight(method: &str, headers: &HeaderMap) -> bool {
    let non_empty = |h: http::header::HeaderName| headers.get(h).is_some_and(|v| !v.is_empty());
    method == "OPTIONS"
        && non_empty(http::header::ORIGIN)
        && non_empty(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The `www-authenticate` realm: `scheme://authority` + path with query, the path cut at 256
/// bytes (on a character boundary) as Envoy does.
fn realm(scheme: &str, host: &str, path: &str) -> String {
    // `get` is `None` inside a character: step back to the boundary (at most three bytes).
    let cut = (0..=path.len().min(256))
        .rev()
        .find_map(|end| path.get(..end))
        .unwrap_or_default();
    format!("{scheme}://{host}{cut}")
}

/// Evaluates one request with no external authorizer to ask: a matching CUSTOM rule denies.
/// See the crate documentation for the order of steps.
pub fn evaluate(cw: &CompiledWorkload, req: HttpRequest<'_>, opts: &EvalOptions<'_>) -> Outcome {
    evaluate_with(cw, req, opts, Custom::default())
}

/// Evaluates one request; CUSTOM rules of the `custom.providers` make the outcome say which
/// provider to ask ([`Outcome::ext_authz`]), and evaluation starts after `custom.after`.
pub fn evaluate_with(
    cw: &CompiledWorkload,
    req: HttpRequest<'_>,
    opts: &EvalOptions<'_>,
    custom: Custom<'_>,
) -> Outcome {
    let mut out = Outcome::default();
    let path = match normalize::normalize(req.path, opts.path_normalization) {
        Ok(p) => p,
        Err(e) => {
            out.denial = Some(Denial::new(DenyReason::BadPath(e), ""));
            return out;
        }
    };
    let (path_only, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path.as_str(), None),
    };
    let realm = || realm(req.scheme, req.host, &path);

    // CUSTOM runs before JWT validation, as Istio places its filters (docs/semantics.md,
    // "Request processing pipeline"): it sees the request as received, tokens and client
    // copies of output headers included. A match asks the provider (the front end does) or,
    // for a provider that cannot be asked, is denied whatever the token.
    if !cw.custom.is_empty() {
        let attrs = attributes(&req, path_only, None);
        let (ask, report) = match decision::authorize_custom(cw, &attrs, custom) {
            decision::CustomStep::Continue => (None, None),
            decision::CustomStep::Deny(report) => (None, Some(report)),
            decision::CustomStep::Ask(ask, report) => (Some(ask), Some(report)),
        };
        if let Some(report) = report {
            if opts.explain {
                out.explanation = Some(decision::explain(cw, &attrs));
            }
            out.denial = report.denied.clone().map(|r| Denial::new(r, &realm()));
            out.authz = report;
            out.ext_authz = ask;
            out.path = Some(path.clone());
            return out;
        }
    }

    authn::sanitize(&cw.providers, req.headers, &mut out.header_ops);
    out.cors_preflight = !cw.providers.is_empty() && is_cors_preflight(req.method, req.headers);
    if !out.cors_preflight {
        match authn::authenticate(
            &cw.providers,
            req.headers,
            query,
            opts.now,
            opts.keys,
            &mut out.jwt,
            &mut out.header_ops,
            &mut out.unknown_kid,
        ) {
            authn::AuthnResult::Rejected(status) => {
                out.denial = Some(Denial::new(DenyReason::Jwt(status), &realm()));
                out.path = Some(path.clone());
                return out;
            }
            authn::AuthnResult::Authenticated { verified, provider } => {
                out.accepted_by = cw.providers.get(provider).map(|p| p.name.clone());
                out.principal = verified.principal.clone();
                out.payload = Some(verified);
            }
            authn::AuthnResult::Anonymous | authn::AuthnResult::NotApplicable => {}
        }
    }

    let attrs = attributes(&req, path_only, out.payload.as_ref().map(|v| &v.payload));
    out.authz = decision::authorize(cw, &attrs);
    if opts.explain {
        out.explanation = Some(decision::explain(cw, &attrs));
    }
    if let Some(reason) = out.authz.denied.clone() {
        out.denial = Some(Denial::new(reason, &realm()));
    }
    out.path = Some(without_removed_params(path_only, query, &out.header_ops).unwrap_or(path));
    out
}

/// What the matchers read of `req`: its normalized `path` (without the query) and, once
/// authentication has run, the verified payload.
fn attributes<'a>(
    req: &'a HttpRequest<'_>,
    path: &'a str,
    jwt: Option<&'a serde_json::Map<String, serde_json::Value>>,
) -> RequestAttributes<'a> {
    RequestAttributes {
        method: req.method,
        path,
        host: req.host,
        headers: req.headers,
        source_ip: req.source_ip,
        remote_ip: req.remote_ip.or(req.source_ip),
        destination_ip: req.destination_ip,
        destination_port: req.destination_port,
        sni: req.sni,
        peer_identity: req.peer_identity,
        jwt,
    }
}

/// The path to forward when authentication removed token parameters from the query; `None`
/// when it removed none (the common case: no new string).
fn without_removed_params(
    path_only: &str,
    query: Option<&str>,
    ops: &[HeaderOp],
) -> Option<String> {
    if !ops
        .iter()
        .any(|o| matches!(o, HeaderOp::RemoveParam { .. }))
    {
        return None;
    }
    let mut query = query.map(str::to_string);
    let mut changed = false;
    for op in ops {
        if let (HeaderOp::RemoveParam { name }, Some(q)) = (op, &query) {
            query = extract::remove_query_param(q, name);
            changed = true;
        }
    }
    changed.then(|| match query {
        Some(q) => format!("{path_only}?{q}"),
        None => path_only.to_string(),
    })
}
