//! JWT authentication of one request: Envoy `jwt_authn` as istiod configures it.
//!
//! Owns: verifying each provider's tokens (in Envoy's reverse extraction order), the
//! requirement logic across providers (docs/semantics.md §2.3: one provider `requires_any{p, allow_missing}`,
//! several providers "any Ok, or all missing"), the folded failure status, `presence:
//! REQUIRED`, and the side effects of success (payload and claim headers, removing the token's
//! header, the payload handed to authorization with space-delimited claims split). Does not own
//! the response: it returns a [`Status`] and the decision module turns it into one.

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use meshguard_jwt::{Jwks, Status, Token, Validity};
use meshguard_policy::{JwtProvider, KeySource, RemoteKeySource};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::extract::{Location, extract};

/// What happened at one provider, for reports and metrics. The names are shared with the
/// compiled provider, so a report costs no string copies.
#[derive(Clone, Debug, Serialize)]
pub struct ProviderReport {
    /// `origins-<i>`.
    pub provider: Arc<str>,
    /// `RequestAuthentication foo/jwt-example jwtRules[0]`.
    pub rule: Arc<str>,
    pub issuer: Arc<str>,
    /// `ok`, `missing` or `failed`; `skipped` when an earlier provider already accepted.
    pub result: &'static str,
    /// The status name (`JwtExpired`) when failed.
    pub status: Option<&'static str>,
    /// Envoy's message (`Jwt is expired`) when failed.
    pub message: Option<&'static str>,
    /// Where the token(s) came from.
    pub locations: Vec<Location>,
    /// With several providers and none accepting, Envoy's `requires_all` branch runs each one
    /// again on the request as the first pass left it (docs/semantics.md, "Requirement
    /// logic"): `ok`, `missing` or `failed` there, with the status when failed. `None` when
    /// the branch did not run this provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub second_pass: Option<SecondPass>,
}

/// One provider's verdict in the `requires_all` branch.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SecondPass {
    pub result: &'static str,
    pub status: Option<&'static str>,
}

/// The outcome of authentication.
#[derive(Debug)]
pub enum AuthnResult {
    /// No providers, or a CORS preflight.
    NotApplicable,
    /// Accepted without a token (anonymous).
    Anonymous,
    /// Accepted: the last verified token, whose payload authorization sees.
    Authenticated {
        verified: Arc<Verified>,
        provider: usize,
    },
    /// Rejected with this status.
    Rejected(Status),
}

/// A header change made by authentication, reported so users can see it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum HeaderOp {
    Remove {
        #[serde(serialize_with = "header_name")]
        name: HeaderName,
    },
    Add {
        #[serde(serialize_with = "header_name")]
        name: HeaderName,
        #[serde(serialize_with = "header_value")]
        value: HeaderValue,
    },
    /// A verified token's query parameter, removed from the forwarded path (its header
    /// counterpart is `Remove`), unless `forwardOriginalToken`.
    #[serde(rename = "remove_param")]
    RemoveParam { name: String },
}

fn header_name<S: serde::Serializer>(n: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(n.as_str())
}

fn header_value<S: serde::Serializer>(v: &HeaderValue, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(v.as_bytes()))
}

/// Per provider: Ok with its verified tokens, missing, or failed.
enum ProviderState {
    /// Where each verified token came from (all that matters once it is verified).
    Ok(Vec<(Location, Arc<Verified>)>),
    Missing,
    Failed(Status),
}

impl ProviderState {
    /// The status Envoy's requirement logic sees (`JwtMissed` for missing, `None` for Ok).
    fn status(&self) -> Option<Status> {
        match self {
            ProviderState::Ok(_) => None,
            ProviderState::Missing => Some(Status::JwtMissed),
            ProviderState::Failed(s) => Some(*s),
        }
    }
}

/// Remote keys, as fetched by someone else (the proxy's JWKS manager, `check`'s one fetch),
/// and the verified-token cache that belongs with them.
pub trait KeyStore {
    /// The keys in use for `source`; `None` when they were never fetched or are too stale.
    fn remote(&self, source: &RemoteKeySource) -> Option<Jwks>;

    /// Changes whenever the keys of `source` change, so cached verifications are not reused.
    fn remote_generation(&self, _source: &RemoteKeySource) -> u64 {
        0
    }

    /// The cache of verified tokens, if the caller keeps one (docs/decisions.md, decision 9).
    fn verified_cache(&self) -> Option<&VerifiedCache> {
        None
    }
}

/// A token that passed every check for one provider: what a request needs from it, worked
/// out once and kept so that a repeated token costs a lookup. The token itself is not kept.
#[derive(Debug)]
pub struct Verified {
    /// `nbf` and `exp`, checked again on every use.
    pub validity: Validity,
    /// The payload authorization sees (space-delimited claims already split).
    pub payload: Map<String, Value>,
    /// `iss/sub` when the token has both as strings.
    pub principal: Option<Arc<str>>,
    /// The provider's `outputPayloadToHeader` value (the payload segment as sent).
    pub payload_header: Option<HeaderValue>,
    /// The provider's `outputClaimToHeaders`, in order, for claims the token has.
    pub claim_headers: Vec<(HeaderName, HeaderValue)>,
}

impl Verified {
    fn new(p: &JwtProvider, token: &Token) -> Verified {
        let principal = match (&token.claims().iss, &token.claims().sub) {
            (Some(iss), Some(sub)) => Some(format!("{iss}/{sub}").into()),
            _ => None,
        };
        let payload_header = p
            .output_payload_to_header
            .as_ref()
            .and_then(|_| HeaderValue::from_str(token.payload_b64()).ok());
        let claim_headers = p
            .output_claim_to_headers
            .iter()
            .filter_map(|(h, path)| {
                let text = claim_header_value(&token.claims().payload, path)?;
                Some((h.clone(), HeaderValue::from_str(&text).ok()?))
            })
            .collect();
        Verified {
            validity: token.validity(),
            payload: normalized_payload(p, token),
            principal,
            payload_header,
            claim_headers,
        }
    }
}

/// Cache key: the provider's compilation, its keys' generation and the whole token (or the
/// whole header value it came in, see [`sole_header`]). Every input of the verdict except
/// the clock is in it; the clock is checked again on each hit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    provider: u64,
    keys: u64,
    /// `text` is the whole header value rather than the token.
    whole_header: bool,
    text: Box<[u8]>,
}

/// The borrowed form of [`CacheKey`], so a lookup does not copy the token. Hashes as
/// [`CacheKey`] does (same fields, slices on both sides).
#[derive(Hash)]
struct CacheKeyRef<'a> {
    provider: u64,
    keys: u64,
    whole_header: bool,
    text: &'a [u8],
}

impl quick_cache::Equivalent<CacheKey> for CacheKeyRef<'_> {
    fn equivalent(&self, key: &CacheKey) -> bool {
        self.provider == key.provider
            && self.keys == key.keys
            && self.whole_header == key.whole_header
            && self.text == &*key.text
    }
}

/// The header value a provider's only token comes from, when it can come from nowhere else in
/// this request: the provider reads one header (and no cookie), the request has exactly one
/// such header, and no query string that a `fromParams` entry could read. Extraction is then a
/// function of this value alone, so a value that once gave a verified token gives the same
/// token again, and the cache can answer without extracting it (the common case:
/// `Authorization: Bearer ...` repeated).
fn sole_header<'h>(
    p: &'h JwtProvider,
    headers: &'h HeaderMap,
    query: Option<&str>,
) -> Option<(&'h HeaderName, &'h HeaderValue)> {
    let [loc] = p.headers.as_slice() else {
        return None;
    };
    if !p.cookies.is_empty() || (!p.params.is_empty() && query.is_some()) {
        return None;
    }
    let mut values = headers.get_all(&loc.name).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => Some((&loc.name, v)),
        _ => None,
    }
}

/// A bounded cache of verified tokens. Only successes are cached (failures are cheap to
/// repeat and caching them would let a client fill the cache); entries are re-checked
/// against the clock on every hit, so an expired token is never accepted from the cache.
pub struct VerifiedCache {
    inner: quick_cache::sync::Cache<CacheKey, Arc<Verified>>,
}

impl std::fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedCache")
            .field("len", &self.inner.len())
            .finish()
    }
}

impl VerifiedCache {
    /// A cache holding at most `capacity` tokens.
    pub fn new(capacity: usize) -> VerifiedCache {
        VerifiedCache {
            inner: quick_cache::sync::Cache::new(capacity.max(1)),
        }
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

/// A key store with no remote keys: every remote provider answers `Jwks remote fetch is failed`.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRemoteKeys;

impl KeyStore for NoRemoteKeys {
    fn remote(&self, _: &RemoteKeySource) -> Option<Jwks> {
        None
    }
}

/// One provider's verdict, and, when it failed, the tokens it had verified before the failing
/// one: Envoy applies a token's side effects as soon as it verifies (`handleGoodJwt`), so they
/// stand even when a later token of the same provider fails.
fn verify_provider(
    p: &JwtProvider,
    headers: &HeaderMap,
    query: Option<&str>,
    now: u64,
    keys: &dyn KeyStore,
    unknown_kid: &mut Vec<RemoteKeySource>,
) -> (ProviderState, Vec<(Location, Arc<Verified>)>) {
    let mut verified_before = Vec::new();
    let state = verify_provider_tokens(
        p,
        headers,
        query,
        now,
        keys,
        unknown_kid,
        &mut verified_before,
    );
    (state, verified_before)
}

fn verify_provider_tokens(
    p: &JwtProvider,
    headers: &HeaderMap,
    query: Option<&str>,
    now: u64,
    keys: &dyn KeyStore,
    unknown_kid: &mut Vec<RemoteKeySource>,
    verified_before: &mut Vec<(Location, Arc<Verified>)>,
) -> ProviderState {
    let cache = keys.verified_cache();
    let keys_gen = || match &p.keys {
        KeySource::Remote(src) => keys.remote_generation(src),
        KeySource::Inline(_) => 0,
    };
    let sole = cache.and_then(|_| sole_header(p, headers, query));
    if let (Some(c), Some((name, value))) = (cache, sole) {
        let lookup = CacheKeyRef {
            provider: p.cache_id,
            keys: keys_gen(),
            whole_header: true,
            text: value.as_bytes(),
        };
        if let Some(hit) = c.inner.get(&lookup) {
            // Issuer, audiences and signature cannot have changed for this key; time can.
            return match hit.validity.check(now, p.validation.skew_secs) {
                Ok(()) => ProviderState::Ok(vec![(Location::Header(name.clone()), hit)]),
                Err(s) => ProviderState::Failed(s),
            };
        }
    }
    let extracted = match extract(p, headers, query) {
        Ok(e) => e,
        Err(_) => return ProviderState::Failed(Status::JwtMultipleTokens),
    };
    if extracted.is_empty() {
        return ProviderState::Missing;
    }
    // Without remote keys the signature step fails as a failed fetch, after the issuer, time
    // and audience checks, which is where Envoy reports it.
    static NO_KEYS: std::sync::LazyLock<Jwks> = std::sync::LazyLock::new(Jwks::empty);
    let fetched;
    let (jwks, remote) = match &p.keys {
        KeySource::Inline(j) => (j, None),
        KeySource::Remote(src) => match keys.remote(src) {
            Some(j) => {
                fetched = j;
                (&fetched, Some(src))
            }
            None => (&*NO_KEYS, Some(src)),
        },
    };
    let keys_gen = keys_gen();
    // The whole header value keys the cache when it alone carried the token.
    let header_key = match (sole, extracted.as_slice()) {
        (Some((_, value)), [_]) => Some(value.as_bytes()),
        _ => None,
    };
    let mut tokens = Vec::with_capacity(extracted.len());
    // Envoy pops tokens from the back of the extraction list; the first failure wins.
    for e in extracted.into_iter().rev() {
        let lookup = CacheKeyRef {
            provider: p.cache_id,
            keys: keys_gen,
            whole_header: false,
            text: e.token.as_bytes(),
        };
        if let Some(hit) = cache.and_then(|c| c.inner.get(&lookup)) {
            match hit.validity.check(now, p.validation.skew_secs) {
                Ok(()) => {
                    tokens.push((e.location, hit));
                    continue;
                }
                Err(s) => {
                    *verified_before = tokens;
                    return ProviderState::Failed(s);
                }
            }
        }
        match meshguard_jwt::verify(&e.token, &p.validation, jwks, now) {
            Ok(t) => {
                let verified = Arc::new(Verified::new(p, &t));
                if let Some(c) = cache {
                    let (whole_header, text) = match header_key {
                        Some(h) => (true, h),
                        None => (false, e.token.as_bytes()),
                    };
                    c.inner.insert(
                        CacheKey {
                            provider: p.cache_id,
                            keys: keys_gen,
                            whole_header,
                            text: text.into(),
                        },
                        verified.clone(),
                    );
                }
                tokens.push((e.location, verified));
            }
            Err(Status::JwksNoValidKeys) if remote.is_some() => {
                *verified_before = tokens;
                return ProviderState::Failed(Status::JwksFetchFail);
            }
            Err(s) => {
                // A kid the remote set lacks may be a key rotated in since the last fetch: tell
                // the caller, who may refetch and evaluate again.
                if let (Status::JwksKidAlgMismatch, Some(src)) = (s, remote)
                    && !unknown_kid.contains(src)
                {
                    unknown_kid.push(src.clone());
                }
                *verified_before = tokens;
                return ProviderState::Failed(s);
            }
        }
    }
    ProviderState::Ok(tokens)
}

/// Removes client-sent copies of every provider's output headers. Clients must not be able to
/// pose as the verifier: Envoy removes them only for the providers it runs; meshguard removes
/// them for all providers on every request, CORS preflights included.
pub fn sanitize(providers: &[JwtProvider], headers: &mut HeaderMap, ops: &mut Vec<HeaderOp>) {
    for p in providers {
        let outputs = p
            .output_payload_to_header
            .iter()
            .chain(p.output_claim_to_headers.iter().map(|(h, _)| h));
        for h in outputs {
            if headers.remove(h).is_some() {
                ops.push(HeaderOp::Remove { name: h.clone() });
            }
        }
    }
}

/// Authenticates a request against `providers`, mutating `headers` as Envoy would on success.
/// `ops` receives every header change, in order.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
pub fn authenticate(
    providers: &[JwtProvider],
    headers: &mut HeaderMap,
    query: Option<&str>,
    now: u64,
    keys: &dyn KeyStore,
    reports: &mut Vec<ProviderReport>,
    ops: &mut Vec<HeaderOp>,
    unknown_kid: &mut Vec<RemoteKeySource>,
) -> AuthnResult {
    if providers.is_empty() {
        return AuthnResult::NotApplicable;
    }
    let mut run = Run {
        headers,
        query: query.map(Cow::Borrowed),
        now,
        keys,
        ops,
        unknown_kid,
        changed: false,
        last: None,
    };
    // Pass 1, `requires_any` over the providers: the first that accepts wins.
    let mut states: Vec<ProviderState> = Vec::with_capacity(providers.len());
    let mut accepted = None;
    for (i, p) in providers.iter().enumerate() {
        let st = run.provider(i, p);
        let ok = matches!(st, ProviderState::Ok(_));
        states.push(st);
        if ok {
            accepted = Some((i, p));
            break;
        }
    }
    for (i, p) in providers.iter().enumerate() {
        let (result, status, locations) = match states.get(i) {
            None => ("skipped", None, Vec::new()),
            Some(ProviderState::Ok(tokens)) => {
                ("ok", None, tokens.iter().map(|(l, _)| l.clone()).collect())
            }
            Some(ProviderState::Missing) => ("missing", None, Vec::new()),
            Some(ProviderState::Failed(s)) => ("failed", Some(*s), Vec::new()),
        };
        reports.push(ProviderReport {
            provider: p.name.clone(),
            rule: p.source.clone(),
            issuer: p.issuer.clone(),
            result,
            status: status.map(Status::name),
            message: status.map(Status::message),
            locations,
            second_pass: None,
        });
    }
    if let Some((i, provider)) = accepted {
        // The accepting provider's state was the last one pushed.
        let tokens = match states.pop() {
            Some(ProviderState::Ok(tokens)) => tokens,
            _ => Vec::new(),
        };
        // An accepting provider has at least one verified token.
        let Some(verified) = run.apply(i, provider, tokens) else {
            return AuthnResult::Anonymous;
        };
        return AuthnResult::Authenticated {
            verified,
            provider: i,
        };
    }
    if states.iter().all(|s| matches!(s, ProviderState::Missing)) {
        if providers.iter().any(|p| p.required) {
            return AuthnResult::Rejected(Status::JwtMissed);
        }
        return AuthnResult::Anonymous;
    }
    let [only] = states.as_slice() else {
        let first_report = reports.len().saturating_sub(providers.len());
        let (result, second) = run.requires_all(providers, &states);
        for (report, pass) in reports.iter_mut().skip(first_report).zip(second) {
            report.second_pass = Some(pass);
        }
        return result;
    };
    AuthnResult::Rejected(only.status().unwrap_or(Status::JwtMissed))
}

/// One authentication: the request as the providers see it while they run. Envoy applies a
/// verified token's side effects at once (`handleGoodJwt`): the headers it adds, and the
/// removal of the token from where it was found (its header, its query parameter), stand for
/// every provider that runs later, even when the provider that verified it fails on another
/// token.
struct Run<'r, 'q> {
    headers: &'r mut HeaderMap,
    /// The query as later providers see it.
    query: Option<Cow<'q, str>>,
    now: u64,
    keys: &'r dyn KeyStore,
    ops: &'r mut Vec<HeaderOp>,
    unknown_kid: &'r mut Vec<RemoteKeySource>,
    /// Some token's side effects were applied: the request is no longer as received.
    changed: bool,
    /// The last token verified, by any provider, with that provider's index: the payload
    /// authorization sees when the `requires_all` branch accepts (Envoy keeps every verified
    /// token's payload in the request's metadata, the last one winning).
    last: Option<(usize, Arc<Verified>)>,
}

impl Run<'_, '_> {
    /// Runs one provider as Envoy's provider verifier does: its output headers are removed
    /// first (`sanitizeHeaders`), then its tokens are verified in order until one fails. The
    /// tokens verified before a failure have had their side effects applied.
    fn provider(&mut self, index: usize, p: &JwtProvider) -> ProviderState {
        if self.changed {
            // Only side effects can have added them since the first `sanitize`.
            sanitize(std::slice::from_ref(p), self.headers, self.ops);
        }
        let (st, verified_before) = verify_provider(
            p,
            self.headers,
            self.query.as_deref(),
            self.now,
            self.keys,
            self.unknown_kid,
        );
        if !verified_before.is_empty() {
            self.apply(index, p, verified_before);
        }
        st
    }

    /// A provider's verified tokens' side effects, the query kept in step; the last of them
    /// becomes [`Run::last`] and is returned.
    fn apply(
        &mut self,
        index: usize,
        p: &JwtProvider,
        tokens: Vec<(Location, Arc<Verified>)>,
    ) -> Option<Arc<Verified>> {
        let first_op = self.ops.len();
        let last = apply_success(p, tokens, self.headers, self.ops)?;
        self.changed = true;
        for op in self.ops.get(first_op..).unwrap_or_default() {
            if let (HeaderOp::RemoveParam { name }, Some(q)) = (op, &self.query) {
                self.query = crate::extract::remove_query_param(q, name).map(Cow::Owned);
            }
        }
        self.last = Some((index, last.clone()));
        Some(last)
    }

    /// Istio's second branch with several providers, `requires_all` of `requires_any {provider,
    /// allow_missing}` (docs/semantics.md, "Requirement logic"): every provider runs again on
    /// the request as pass 1 left it; one that finds no token passes; the first that fails ends
    /// the branch. When all pass the request is accepted with the payload of the last token
    /// verified in either pass, if any; otherwise Envoy's status fold over pass 1 and this
    /// branch decides.
    fn requires_all(
        &mut self,
        providers: &[JwtProvider],
        states: &[ProviderState],
    ) -> (AuthnResult, Vec<SecondPass>) {
        let mut branch = None;
        let mut passes = Vec::with_capacity(providers.len());
        let mut record = |st: &ProviderState| {
            passes.push(match st {
                ProviderState::Ok(_) => SecondPass {
                    result: "ok",
                    status: None,
                },
                ProviderState::Missing => SecondPass {
                    result: "missing",
                    status: None,
                },
                ProviderState::Failed(s) => SecondPass {
                    result: "failed",
                    status: Some(s.name()),
                },
            })
        };
        if self.changed {
            for (i, p) in providers.iter().enumerate() {
                let st = self.provider(i, p);
                record(&st);
                match st {
                    ProviderState::Ok(tokens) => {
                        self.apply(i, p, tokens);
                    }
                    ProviderState::Missing => {}
                    ProviderState::Failed(s) => {
                        branch = Some(s);
                        break;
                    }
                }
            }
        } else {
            // Pass 1 left the request as received: every provider would answer as it did, so
            // the branch ends at pass 1's first failure, without verifying anything again.
            for st in states {
                record(st);
                if let ProviderState::Failed(s) = st {
                    branch = Some(*s);
                    break;
                }
            }
        }
        let result = match (branch, self.last.clone()) {
            (None, Some((provider, verified))) => AuthnResult::Authenticated { verified, provider },
            // Every provider found no token the second time round: anonymous, which a
            // `presence: REQUIRED` rule refuses, as when no token was sent at all.
            (None, None) if providers.iter().any(|p| p.required) => {
                AuthnResult::Rejected(Status::JwtMissed)
            }
            (None, None) => AuthnResult::Anonymous,
            (Some(s), _) => AuthnResult::Rejected(fold_status(states, s)),
        };
        (result, passes)
    }
}

/// Envoy's reported status when no provider accepted (docs/semantics.md, "Requirement
/// logic"): over the providers' pass-1 statuses and then the `requires_all` branch's, the last
/// "real" error wins, else `JwtUnknownIssuer`, else `JwtMissed`.
fn fold_status(states: &[ProviderState], branch: Status) -> Status {
    let mut folded = Status::JwtMissed;
    for s in states
        .iter()
        .filter_map(ProviderState::status)
        .chain(std::iter::once(branch))
    {
        if !matches!(s, Status::JwtMissed | Status::JwtUnknownIssuer) || folded == Status::JwtMissed
        {
            folded = s;
        }
    }
    folded
}

/// The success side effects of docs/semantics.md §2.8, for every token of the accepting provider. Returns the
/// payload authorization sees: the last token verified, with space-delimited claims split.
fn apply_success(
    p: &JwtProvider,
    tokens: Vec<(Location, Arc<Verified>)>,
    headers: &mut HeaderMap,
    ops: &mut Vec<HeaderOp>,
) -> Option<Arc<Verified>> {
    let mut last = None;
    for (location, verified) in tokens {
        if let (Some(h), Some(v)) = (&p.output_payload_to_header, &verified.payload_header) {
            ops.push(HeaderOp::Add {
                name: h.clone(),
                value: v.clone(),
            });
            headers.append(h.clone(), v.clone());
        }
        for (h, v) in &verified.claim_headers {
            ops.push(HeaderOp::Add {
                name: h.clone(),
                value: v.clone(),
            });
            // Appended, as Envoy adds a copy per verified token (client copies were removed
            // by `sanitize` first): two tokens of one provider give two values.
            headers.append(h.clone(), v.clone());
        }
        if !p.forward_original_token {
            match &location {
                Location::Header(h) => {
                    if headers.remove(h).is_some() {
                        ops.push(HeaderOp::Remove { name: h.clone() });
                    }
                }
                // Envoy 1.40 removes a verified token's parameter from the path too (older
                // Envoy left it); cookies stay, as in Envoy.
                Location::Param(name) => ops.push(HeaderOp::RemoveParam { name: name.clone() }),
                Location::Cookie(_) => {}
            }
        }
        last = Some(verified);
    }
    last
}

/// The payload authorization sees: the token's payload with the provider's space-delimited
/// claims (always `scope` and `permission`) split into lists, as Envoy's metadata holds it.
fn normalized_payload(p: &JwtProvider, token: &Token) -> Map<String, Value> {
    let mut payload = token.claims().payload.clone();
    for claim in &p.space_delimited_claims {
        if let Some(Value::String(s)) = payload.get(claim) {
            let parts: Vec<Value> = s
                .split(' ')
                .filter(|x| !x.is_empty())
                .map(|x| Value::String(x.to_string()))
                .collect();
            payload.insert(claim.clone(), Value::Array(parts));
        }
    }
    payload
}

/// Envoy's claim-to-header text: strings as they are, whole non-negative numbers as integers,
/// other numbers like C++ `std::to_string(double)`, booleans as words, objects and lists as
/// base64url of their JSON (current Envoy). Missing or empty string: no header.
fn claim_header_value(payload: &Map<String, Value>, path: &[String]) -> Option<String> {
    let v = meshguard_policy::matchers::claim_at(payload, path)?;
    match v {
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(match n.as_u64() {
            Some(u) => u.to_string(),
            None => format!("{:.6}", n.as_f64().unwrap_or(0.0)),
        }),
        Value::Array(_) | Value::Object(_) => {
            use base64::Engine as _;
            Some(base64::engine::general_purpose::STANDARD.encode(v.to_string()))
        }
        Value::Null => None,
    }
}
