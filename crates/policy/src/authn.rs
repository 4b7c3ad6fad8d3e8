//! `JWTRule`s compiled into JWT providers: where to find tokens, which keys, what to output.
//!
//! Owns: the per-rule settings in the form the engine needs them (lowercased header names,
//! sorted token locations, parsed keys, claim paths, the space-delimited claim set Istio always
//! extends with `scope` and `permission`). Keys are parsed here, once, at load time. Does not
//! own: extracting tokens from a request, verifying them, or the requirement logic across
//! providers (the engine does that).

use std::sync::Arc;
use std::time::Duration;

pub use meshguard_jwt::RemoteKeySource;
use meshguard_jwt::{Jwks, Validation};
use meshguard_model::{JwtRule, LoadError, Presence, RequestAuthenticationSpec, Resource};

/// Where a provider's keys come from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// `jwks`: parsed at load time.
    Inline(Jwks),
    /// `jwksUri`, or OpenID discovery from `issuer` when neither is set. Fetched outside this
    /// crate (the engine asks a key store); without keys, tokens for this provider fail with
    /// `Jwks remote fetch is failed`.
    Remote(RemoteKeySource),
}

/// A header location: lowercased name and the prefix to search for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderLocation {
    pub name: http::HeaderName,
    pub prefix: String,
}

/// One compiled `JWTRule` (Envoy provider `origins-<i>`).
#[derive(Clone, Debug)]
pub struct JwtProvider {
    /// `origins-<i>`, i = position after sorting all applicable rules by issuer.
    pub name: Arc<str>,
    /// Unique per compilation: a verified-token cache keyed by it forgets everything a
    /// reload may have changed (keys, issuer, audiences, claim settings).
    pub cache_id: u64,
    /// `RequestAuthentication foo/jwt-example jwtRules[0]`, for messages.
    pub source: Arc<str>,
    pub issuer: Arc<str>,
    /// Issuer, audiences and skew as the verifier takes them, built once here so that a
    /// request does not rebuild (and reallocate) them.
    pub validation: Validation,
    pub keys: KeySource,
    /// Header locations in Envoy's extraction order (sorted by lowercase name + prefix).
    pub headers: Vec<HeaderLocation>,
    /// Query parameters, sorted.
    pub params: Vec<String>,
    /// Cookie names, sorted.
    pub cookies: Vec<String>,
    pub output_payload_to_header: Option<http::HeaderName>,
    pub output_claim_to_headers: Vec<(http::HeaderName, Vec<String>)>,
    pub forward_original_token: bool,
    /// Top-level claims whose string values are split on spaces for authorization.
    pub space_delimited_claims: Vec<String>,
    pub timeout: Duration,
    /// `presence: REQUIRED`: a request without a token is rejected with 401 (docs/decisions.md, decision 3).
    pub required: bool,
}

/// The JWKS fetch timeout when `timeout` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

fn header_name(v: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(v.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("header name {v} is not a valid header name"))
}

/// Compiles every rule of one RequestAuthentication (provider names are assigned later). On
/// failure, returns the errors of every rule (the first of each), not only of the first rule.
pub fn compile_request_authentication(
    res: &Resource<RequestAuthenticationSpec>,
) -> Result<Vec<JwtProvider>, Vec<LoadError>> {
    let mut errors = Vec::new();
    if res.annotations.contains_key("istio.io/dry-run") {
        errors.push(crate::located_error(
            res,
            "RequestAuthentication",
            "metadata.annotations[istio.io/dry-run]".into(),
            "",
            format!(
                "{} has unsupported annotation istio.io/dry-run, please remove the annotation",
                res.key()
            ),
        ));
    }
    let mut providers = Vec::new();
    for (i, rule) in res.spec.jwt_rules.iter().enumerate() {
        match compile_rule(
            rule,
            &format!("RequestAuthentication {} jwtRules[{i}]", res.key()),
        ) {
            Ok(p) => providers.push(p),
            Err((field, value, message)) => errors.push(crate::located_error(
                res,
                "RequestAuthentication",
                format!("spec.jwtRules[{i}]{field}"),
                &value,
                message,
            )),
        }
    }
    if errors.is_empty() {
        Ok(providers)
    } else {
        Err(errors)
    }
}

fn compile_rule(rule: &JwtRule, source: &str) -> Result<JwtProvider, (String, String, String)> {
    if rule.issuer.is_empty() && rule.jwks_uri.is_empty() {
        return Err((
            String::new(),
            String::new(),
            "issuer or jwksUri must be non-empty string".into(),
        ));
    }
    for (i, a) in rule.audiences.iter().enumerate() {
        if a.is_empty() {
            return Err((
                format!(".audiences[{i}]"),
                String::new(),
                "audience must be non-empty string".into(),
            ));
        }
    }
    if !rule.jwks.is_empty() && !rule.jwks_uri.is_empty() {
        return Err((
            ".jwks".into(),
            String::new(),
            "only one of jwks or jwksUri can be set".into(),
        ));
    }
    let keys = if !rule.jwks.is_empty() {
        let jwks = Jwks::parse(&rule.jwks).map_err(|s| {
            (
                ".jwks".to_string(),
                String::new(),
                format!("jwks parse error: {s}"),
            )
        })?;
        KeySource::Inline(jwks)
    } else if !rule.jwks_uri.is_empty() {
        let scheme = rule
            .jwks_uri
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("http" | "https")) {
            return Err((
                ".jwksUri".into(),
                rule.jwks_uri.clone(),
                "url must have scheme http:// or https://".into(),
            ));
        }
        KeySource::Remote(RemoteKeySource::JwksUri(rule.jwks_uri.clone()))
    } else {
        KeySource::Remote(RemoteKeySource::Discovery {
            issuer: rule.issuer.clone(),
        })
    };
    let mut headers = Vec::new();
    for (i, h) in rule.from_headers.iter().enumerate() {
        if h.name.is_empty() {
            return Err((
                format!(".fromHeaders[{i}].name"),
                String::new(),
                "location header name must be non-empty string".into(),
            ));
        }
        let name = header_name(&h.name)
            .map_err(|m| (format!(".fromHeaders[{i}].name"), h.name.clone(), m))?;
        headers.push(HeaderLocation {
            name,
            prefix: h.prefix.clone(),
        });
    }
    let mut params = rule.from_params.clone();
    let mut cookies = rule.from_cookies.clone();
    if let Some(i) = params.iter().position(String::is_empty) {
        return Err((
            format!(".fromParams[{i}]"),
            String::new(),
            "location query must be non-empty string".into(),
        ));
    }
    if let Some(i) = cookies.iter().position(String::is_empty) {
        return Err((
            format!(".fromCookies[{i}]"),
            String::new(),
            "cookie name must be non-empty string".into(),
        ));
    }
    if headers.is_empty() && params.is_empty() && cookies.is_empty() {
        headers.push(HeaderLocation {
            name: http::header::AUTHORIZATION,
            prefix: "Bearer ".into(),
        });
        params.push("access_token".into());
    }
    headers.sort_by(|a, b| (a.name.as_str(), &a.prefix).cmp(&(b.name.as_str(), &b.prefix)));
    params.sort();
    cookies.sort();
    let output_payload_to_header = if rule.output_payload_to_header.is_empty() {
        None
    } else {
        Some(header_name(&rule.output_payload_to_header).map_err(|m| {
            (
                ".outputPayloadToHeader".to_string(),
                rule.output_payload_to_header.clone(),
                m,
            )
        })?)
    };
    let mut output_claim_to_headers = Vec::new();
    for (i, c) in rule.output_claim_to_headers.iter().enumerate() {
        if c.header.is_empty() || c.claim.is_empty() {
            return Err((
                format!(".outputClaimToHeaders[{i}]"),
                String::new(),
                "outputClaimToHeaders header and claim value must be non-empty string".into(),
            ));
        }
        if !c
            .header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err((
                format!(".outputClaimToHeaders[{i}].header"),
                c.header.clone(),
                format!("header name {} is not a valid header name", c.header),
            ));
        }
        let name = header_name(&c.header).map_err(|m| {
            (
                format!(".outputClaimToHeaders[{i}].header"),
                c.header.clone(),
                m,
            )
        })?;
        output_claim_to_headers.push((name, c.claim.split('.').map(str::to_string).collect()));
    }
    let timeout = match &rule.timeout {
        None => DEFAULT_TIMEOUT,
        Some(t) => {
            let d = meshguard_model::parse_duration(t)
                .map_err(|m| (".timeout".to_string(), t.clone(), m))?;
            if d < Duration::from_millis(1) {
                return Err((
                    ".timeout".into(),
                    t.clone(),
                    "duration must be greater than 1ms".into(),
                ));
            }
            if d.subsec_nanos() % 1_000_000 != 0 {
                return Err((
                    ".timeout".into(),
                    t.clone(),
                    "only durations to ms precision are supported".into(),
                ));
            }
            d
        }
    };
    if let Some(i) = rule
        .space_delimited_claims
        .iter()
        .position(String::is_empty)
    {
        return Err((
            format!(".spaceDelimitedClaims[{i}]"),
            String::new(),
            "claim name must be non-empty string".into(),
        ));
    }
    let mut space_delimited_claims: Vec<String> = rule.space_delimited_claims.clone();
    space_delimited_claims.extend(["scope".to_string(), "permission".to_string()]);
    space_delimited_claims.sort();
    space_delimited_claims.dedup();
    Ok(JwtProvider {
        name: "".into(),
        cache_id: {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        },
        source: source.into(),
        issuer: rule.issuer.as_str().into(),
        validation: Validation {
            issuer: (!rule.issuer.is_empty()).then(|| rule.issuer.clone()),
            audiences: rule.audiences.clone(),
            ..Validation::default()
        },
        keys,
        headers,
        params,
        cookies,
        output_payload_to_header,
        output_claim_to_headers,
        forward_original_token: rule.forward_original_token,
        space_delimited_claims,
        timeout,
        required: rule.presence == Some(Presence::Required),
    })
}
