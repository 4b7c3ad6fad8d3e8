//! The Envoy configuration istiod would generate for a workload, from the same Istio YAML.
//!
//! [`bootstrap`] returns a complete Envoy v3 bootstrap (JSON): an admin listener on
//! `127.0.0.3:0`, one static listener on [`Endpoints::listen`] whose HTTP connection manager
//! carries the settings istiod puts on a sidecar's inbound HTTP chain, and one cluster
//! `inbound|<port>||` to [`Endpoints::upstream`] in the client's protocol (HTTP/2 clients over
//! h2c, HTTP/1.x over HTTP/1.1: `USE_DOWNSTREAM_PROTOCOL`, what istiod configures for a port
//! without a protocol name).
//!
//! # What this module owns
//!
//! Turning resources into Envoy configuration **the way istiod does, written again from
//! istiod's source**, not from meshguard's: the harness compares meshguard with Envoy, so it
//! must not share the logic it is testing. It uses `meshguard_model::load_str` to parse the YAML
//! into plain data and nothing else from meshguard (no `select`, no `summarize`, no
//! `meshguard-policy`). What was read, in istiod:
//!
//! * attachment: `ShouldAttachPolicy` / `isSelected` and the namespace lists of
//!   `getConfigsForWorkload` (RequestAuthentication) and `ListAuthorizationPolicies`;
//! * jwt_authn: `newPolicyApplier` (rules concatenated, sorted by issuer) and
//!   `convertToEnvoyJwtConfig` (providers, requirement shape, `buildSpaceDelimitedClaims`);
//! * rbac: the authorization builder's `build` (action order, dry-run, never-matching policy,
//!   rule names, CUSTOM without a usable provider) and the authorization model's `New` /
//!   `Generate` with every generator (value forms, error handling per action);
//! * the connection manager: `buildHTTPConnectionManager` and `buildSidecarInboundHTTPOpts`
//!   (path normalization, client-certificate details, server name, request id, websocket
//!   upgrades, 100-continue), `BuildDefaultHTTPInboundRoute` (the inbound route), and the
//!   bootstrap's runtime flags (`extractRuntimeFlags`).
//!
//! # `request.auth.*` and `istio_authn`
//!
//! Envoy upstream has no `istio_authn` filter, so this matters. A current istiod (1.2x) reads
//! JWT facts **only from `envoy.filters.http.jwt_authn` dynamic metadata, key `payload`**: the
//! authorization model's `MetadataStringMatcherForJWTClaim` / `MetadataListValueMatcherForJWTClaims`
//! (`pilot/pkg/security/authz/model/util.go`) build every `request.auth.*` and
//! `requestPrincipals` matcher with `filter: envoy.filters.http.jwt_authn`, path
//! `[payload, <claim>...]` (`filters.EnvoyJwtFilterName`, `filters.EnvoyJwtFilterPayload`),
//! and `pilot/pkg/security/authz/matcher/metadata.go` takes the filter name as a parameter;
//! `istio_authn` appears there only in unit tests. `request.auth.principal` is matched as
//! `payload.iss` AND `payload.sub` (the `requestPrincipalGenerator`), not as a joined
//! principal string. So nothing needs emulating: Envoy's own jwt_authn with
//! `payload_in_metadata: payload` produces exactly what the RBAC matchers read.
//!
//! # Settings chosen, and why
//!
//! * `use_remote_address: true` with `xff_num_trusted_hops` = the mesh's trusted proxies: the
//!   gateway model, as meshguard computes `remote.ip`. A sidecar's inbound chain sets
//!   `use_remote_address: false` (Envoy then believes the rightmost `X-Forwarded-For`
//!   address); meshguard does not, on purpose (`docs/differences.md`, `remote.ip` row).
//! * What else istiod sets on that chain and a client or the upstream can see: `server:
//!   istio-envoy` on every answer (`server_name`, `OVERWRITE`), `100 Continue` proxied,
//!   websocket upgrades, no stream idle timeout, a UUID `x-request-id`, the inbound route
//!   without timeout and with the `reset-before-request` retry policy, and the runtime flags of
//!   istiod's bootstrap that change answers (fragments stripped, not refused; long regexes
//!   accepted). istiod sets no `strip_*_host_port`, no `strip_trailing_host_dot`, no header
//!   limits and no underscore policy on sidecars: Envoy's defaults apply.
//! * No tracing (it depends on the mesh's telemetry providers and a collector), no access log,
//!   no metadata-exchange or stats filters (`istio.metadata_exchange`, `istio.stats`: not in
//!   upstream Envoy; they carry peer metadata between sidecars and feed telemetry, and take
//!   no part in authentication or authorization).
//!
//! # Not translated ([`TranslateError::Unsupported`])
//!
//! * `jwksUri`, or neither `jwks` nor `jwksUri` (OpenID discovery): istiod would fetch the keys
//!   and inline them; scenarios carry their keys inline.
//! * `null` entries in `from`, `to` or `when` (istiod's model cannot represent them; validation
//!   rejects them).
//!
//! CUSTOM policies: the harness has no ext_authz server and the mesh declares no extension
//! provider, so they are translated as istiod translates a CUSTOM policy whose provider is
//! unknown: one DENY RBAC filter per provider, before jwt_authn, whose policies are the CUSTOM
//! rules named `istio-ext-authz-<provider>-ns[..]-policy[..]-rule[i]-deny-due-to-bad-CUSTOM-action`.
//!
//! `presence: REQUIRED` is accepted and ignored, as istiod does (meshguard honours it: a
//! deliberate difference, `docs/differences.md`). The trust domain is `cluster.local` with no
//! aliases, for which istiod's trust-domain rewriting of `principals` changes nothing.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use meshguard_model::{
    Action, AuthorizationPolicySpec, Condition, JwtRule, LoadOptions, Operation,
    RequestAuthenticationSpec, Resource, Rule, Source, WorkloadSelector,
};
use serde_json::{Value, json};

use crate::scenario::{MeshOptions, PathNormalization, WorkloadSpec};

/// Where the Envoy under test listens and forwards.
#[derive(Clone, Copy, Debug)]
pub struct Endpoints {
    /// `127.0.0.2:P`.
    pub listen: SocketAddr,
    /// The recording upstream.
    pub upstream: SocketAddr,
}

/// Why a scenario cannot be translated (the YAML does not load, or uses something the
/// translator does not cover).
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error("the policies do not load: {0}")]
    Load(String),
    #[error("not translated: {0}")]
    Unsupported(String),
}

/// The dynamic metadata namespace jwt_authn writes and the RBAC matchers read.
const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";
/// The key under [`JWT_FILTER`] holding the verified payload (`payload_in_metadata`).
const JWT_PAYLOAD: &str = "payload";
const RBAC_FILTER: &str = "envoy.filters.http.rbac";
const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";
/// istiod's prefix for CUSTOM policy names and suffix when the provider cannot be used.
const EXT_AUTHZ_PREFIX: &str = "istio-ext-authz";
const BAD_CUSTOM_SUFFIX: &str = "-deny-due-to-bad-CUSTOM-action";

/// Envoy's bootstrap for `policies` (Kubernetes YAML, `${PORT}` already replaced) applied to
/// `workload` with `mesh`.
pub fn bootstrap(
    policies: &str,
    workload: &WorkloadSpec,
    mesh: &MeshOptions,
    endpoints: &Endpoints,
) -> Result<serde_json::Value, TranslateError> {
    let set = meshguard_model::load_str(
        Path::new("scenario.yaml"),
        policies,
        // Resources without a namespace land in the workload's, as `kubectl apply -n` would.
        &LoadOptions {
            default_namespace: workload.namespace.clone(),
        },
    )
    .map_err(|e| TranslateError::Load(e.to_string()))?;

    let request_authentications = attached(&set.request_authentications, workload, mesh, |s| {
        (s.selector.as_ref(), has_target_refs_ra(s))
    });
    let authorization_policies = attached(&set.authorization_policies, workload, mesh, |s| {
        (s.selector.as_ref(), has_target_refs_ap(s))
    });

    let filters = http_filters(&request_authentications, &authorization_policies)?;
    Ok(envelope(filters, workload, mesh, endpoints))
}

/// The HTTP filter chain istiod builds for an inbound sidecar chain, in its order: CUSTOM,
/// jwt_authn, AUDIT, DENY, ALLOW, then the passive filters and the router
/// (`buildHTTPConnectionManager`).
fn http_filters(
    request_authentications: &[&Resource<RequestAuthenticationSpec>],
    authorization_policies: &[&Resource<AuthorizationPolicySpec>],
) -> Result<Vec<Value>, TranslateError> {
    let by_action = |action: Action| -> Vec<&Resource<AuthorizationPolicySpec>> {
        authorization_policies
            .iter()
            .copied()
            .filter(|p| p.spec.action == action)
            .collect()
    };
    let mut filters = Vec::new();
    filters.extend(custom_filters(&by_action(Action::Custom))?);
    if let Some(jwt) = jwt_authn_filter(request_authentications)? {
        filters.push(jwt);
    }
    for (action, envoy_action) in [
        (Action::Audit, EnvoyAction::Log),
        (Action::Deny, EnvoyAction::Deny),
        (Action::Allow, EnvoyAction::Allow),
    ] {
        let policies = by_action(action);
        if !policies.is_empty() {
            filters.push(rbac_filter(&policies, envoy_action)?);
        }
    }
    filters.extend(passive_filters());
    Ok(filters)
}

// ---------------------------------------------------------------------------------------------
// Attachment

fn has_target_refs_ra(s: &RequestAuthenticationSpec) -> bool {
    s.target_ref.is_some() || !s.target_refs.is_empty()
}

fn has_target_refs_ap(s: &AuthorizationPolicySpec) -> bool {
    s.target_ref.is_some() || !s.target_refs.is_empty()
}

/// The resources istiod attaches to a sidecar: those of the workload's namespace, then those of
/// the root namespace (each namespace once), without `targetRef(s)` (those attach to gateways
/// and waypoints only), whose selector is absent or a subset of the workload's labels.
fn attached<'a, S>(
    resources: &'a [Resource<S>],
    workload: &WorkloadSpec,
    mesh: &MeshOptions,
    fields: impl Fn(&S) -> (Option<&WorkloadSelector>, bool),
) -> Vec<&'a Resource<S>> {
    let mut namespaces = vec![workload.namespace.as_str()];
    if mesh.root_namespace != workload.namespace {
        namespaces.push(mesh.root_namespace.as_str());
    }
    let mut out = Vec::new();
    for ns in namespaces {
        for r in resources.iter().filter(|r| r.namespace == ns) {
            let (selector, has_target_refs) = fields(&r.spec);
            if has_target_refs {
                continue;
            }
            let selected = selector.is_none_or(|s| {
                s.match_labels
                    .iter()
                    .all(|(k, v)| workload.labels.get(k) == Some(v))
            });
            if selected {
                out.push(r);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// jwt_authn

/// istiod's `convertToEnvoyJwtConfig`: `None` when no attached RequestAuthentication has a
/// rule (then istiod installs no jwt_authn filter at all).
fn jwt_authn_filter(
    request_authentications: &[&Resource<RequestAuthenticationSpec>],
) -> Result<Option<Value>, TranslateError> {
    let mut rules: Vec<&JwtRule> = request_authentications
        .iter()
        .flat_map(|r| r.spec.jwt_rules.iter())
        .collect();
    if rules.is_empty() {
        return Ok(None);
    }
    // istiod sorts the concatenated rules by issuer (no de-duplication); a stable sort keeps
    // rules of the same issuer in attachment order.
    rules.sort_by(|a, b| a.issuer.cmp(&b.issuer));

    let mut providers = serde_json::Map::new();
    for (i, rule) in rules.iter().enumerate() {
        providers.insert(provider_name(i), jwt_provider(rule)?);
    }
    let requires = jwt_requirement(rules.len());
    Ok(Some(json!({
        "name": JWT_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": providers,
            "rules": [{"match": {"prefix": "/"}, "requires": requires}],
            "bypass_cors_preflight": true,
        },
    })))
}

/// What istiod inlines when it cannot fetch a `jwksUri` (see [`jwt_provider`]).
const PUBLIC_ONLY_JWKS: &str = r#"{"keys": [{"kty": "RSA", "n": "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ", "e": "AQAB"}]}"#;

fn provider_name(i: usize) -> String {
    format!("origins-{i}")
}

/// One `JwtProvider` as istiod fills it. Token locations are passed through as given: when
/// none is given istiod sets none, and Envoy's defaults apply (`Authorization: Bearer ` and
/// the `access_token` query parameter). `timeout` only bounds istiod's own fetch, and
/// `presence` is not read by istiod: both are ignored here too. `clear_route_cache` is false
/// on sidecars (left unset).
fn jwt_provider(rule: &JwtRule) -> Result<Value, TranslateError> {
    if rule.jwks.is_empty() && !rule.jwks_uri.is_empty() {
        // istiod fetches `jwksUri` itself and inlines the keys. The harness has no network:
        // istiod's fetch would fail the same way, and then it inlines a fixed public key whose
        // private half nobody holds (`PublicOnlyJwks`: RSA, no `kid`, no `alg`), so every
        // token of this issuer fails with `Jwt verification fails`. The same shape here, with
        // the public half of the RFC 7515 A.2 key, which signs none of the harness's tokens.
        return jwt_provider(&JwtRule {
            jwks: PUBLIC_ONLY_JWKS.to_string(),
            ..rule.clone()
        });
    }
    if rule.jwks.is_empty() {
        let what = if rule.jwks_uri.is_empty() {
            format!(
                "issuer {:?} has neither jwks nor jwksUri (istiod would use OpenID discovery)",
                rule.issuer
            )
        } else {
            format!(
                "issuer {:?} uses jwksUri {:?}: istiod would fetch and inline it; give the keys inline",
                rule.issuer, rule.jwks_uri
            )
        };
        return Err(TranslateError::Unsupported(what));
    }
    let mut p = serde_json::Map::new();
    p.insert("issuer".into(), json!(rule.issuer));
    if !rule.audiences.is_empty() {
        p.insert("audiences".into(), json!(rule.audiences));
    }
    // istiod's JWKS resolver inlines `jwks` verbatim (and ignores `jwksUri` when both are set).
    p.insert("local_jwks".into(), json!({"inline_string": rule.jwks}));
    if !rule.from_headers.is_empty() {
        let headers: Vec<Value> = rule
            .from_headers
            .iter()
            .map(|h| {
                let mut header = json!({"name": h.name});
                if !h.prefix.is_empty() {
                    header["value_prefix"] = json!(h.prefix);
                }
                header
            })
            .collect();
        p.insert("from_headers".into(), json!(headers));
    }
    if !rule.from_params.is_empty() {
        p.insert("from_params".into(), json!(rule.from_params));
    }
    if !rule.from_cookies.is_empty() {
        p.insert("from_cookies".into(), json!(rule.from_cookies));
    }
    if rule.forward_original_token {
        p.insert("forward".into(), json!(true));
    }
    if !rule.output_payload_to_header.is_empty() {
        p.insert(
            "forward_payload_header".into(),
            json!(rule.output_payload_to_header),
        );
    }
    if !rule.output_claim_to_headers.is_empty() {
        let claims: Vec<Value> = rule
            .output_claim_to_headers
            .iter()
            .map(|c| json!({"header_name": c.header, "claim_name": c.claim}))
            .collect();
        p.insert("claim_to_headers".into(), json!(claims));
    }
    p.insert("payload_in_metadata".into(), json!(JWT_PAYLOAD));
    p.insert(
        "normalize_payload_in_metadata".into(),
        json!({"space_delimited_claims": space_delimited_claims(&rule.space_delimited_claims)}),
    );
    Ok(Value::Object(p))
}

/// istiod's `buildSpaceDelimitedClaims`: the user's claims plus `permission` and `scope`,
/// de-duplicated and sorted.
fn space_delimited_claims(user: &[String]) -> Vec<String> {
    let mut all: Vec<String> = user.to_vec();
    all.extend(["permission".to_string(), "scope".to_string()]);
    all.sort();
    all.dedup();
    all
}

/// The requirement istiod emits for `n` providers: with one,
/// `requires_any [origins-0, allow_missing]`; with several,
/// `requires_any [origins-0, …, origins-(n-1), requires_all [requires_any [origins-i,
/// allow_missing] for each i]]` (the outer OR lets providers share a token location).
fn jwt_requirement(n: usize) -> Value {
    let provider_or_missing = |i: usize| {
        json!({"requires_any": {"requirements": [
            {"provider_name": provider_name(i)},
            {"allow_missing": {}},
        ]}})
    };
    if n == 1 {
        return provider_or_missing(0);
    }
    let mut any: Vec<Value> = (0..n)
        .map(|i| json!({"provider_name": provider_name(i)}))
        .collect();
    let all: Vec<Value> = (0..n).map(provider_or_missing).collect();
    any.push(json!({"requires_all": {"requirements": all}}));
    json!({"requires_any": {"requirements": any}})
}

// ---------------------------------------------------------------------------------------------
// rbac: the filters

/// The Envoy RBAC action an Istio action is built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EnvoyAction {
    Allow,
    Deny,
    /// AUDIT.
    Log,
}

impl EnvoyAction {
    fn as_str(self) -> &'static str {
        match self {
            EnvoyAction::Allow => "ALLOW",
            EnvoyAction::Deny => "DENY",
            EnvoyAction::Log => "LOG",
        }
    }
}

/// Envoy RBAC policies by name (Envoy keeps them in a map too).
type Policies = BTreeMap<String, Value>;

/// Go's `strconv.ParseBool` on the dry-run annotation; a value it refuses means "enforced".
fn is_dry_run(policy: &Resource<AuthorizationPolicySpec>) -> bool {
    matches!(
        policy
            .annotations
            .get(DRY_RUN_ANNOTATION)
            .map(String::as_str),
        Some("1" | "t" | "T" | "TRUE" | "true" | "True")
    )
}

/// `ns[<ns>]-policy[<name>]-rule[<i>]`, with istiod's CUSTOM prefix when `provider` is given.
fn policy_name(
    policy: &Resource<AuthorizationPolicySpec>,
    rule: usize,
    provider: Option<&str>,
) -> String {
    let prefix = match provider {
        None => String::new(),
        Some("") => format!("{EXT_AUTHZ_PREFIX}-"),
        Some(p) => format!("{EXT_AUTHZ_PREFIX}-{p}-"),
    };
    format!(
        "{prefix}ns[{}]-policy[{}]-rule[{rule}]",
        policy.namespace, policy.name
    )
}

/// istiod's `rbacPolicyMatchNever`: what a policy without rules becomes.
fn match_never() -> Value {
    json!({
        "permissions": [{"not_rule": {"any": true}}],
        "principals": [{"not_id": {"any": true}}],
    })
}

/// Adds the Envoy policies of one AuthorizationPolicy to `into` (the authorization builder's
/// `build` loop): a `null` rule or a rule that does not generate is skipped, a policy without
/// rules becomes one never-matching policy `rule[0]`.
fn add_policies(
    into: &mut Policies,
    policy: &Resource<AuthorizationPolicySpec>,
    action: EnvoyAction,
    provider: Option<&str>,
) -> Result<(), TranslateError> {
    let rules = policy.spec.rules.as_deref().unwrap_or_default();
    for (i, rule) in rules.iter().enumerate() {
        let Some(rule) = rule else { continue };
        let Some(model) = RuleModel::new(&policy.namespace, rule)? else {
            continue;
        };
        if let Ok(generated) = model.generate(action) {
            into.insert(policy_name(policy, i, provider), generated);
        }
    }
    if rules.is_empty() {
        into.insert(policy_name(policy, 0, provider), match_never());
    }
    Ok(())
}

/// One RBAC filter for the policies of one action: enforced policies in `rules`, dry-run
/// policies in `shadow_rules`; either is absent when no policy goes there.
fn rbac_filter(
    policies: &[&Resource<AuthorizationPolicySpec>],
    action: EnvoyAction,
) -> Result<Value, TranslateError> {
    let mut enforced: Option<Policies> = None;
    let mut shadow: Option<Policies> = None;
    for policy in policies {
        let target = if is_dry_run(policy) {
            &mut shadow
        } else {
            &mut enforced
        };
        add_policies(
            target.get_or_insert_with(Policies::new),
            policy,
            action,
            None,
        )?;
    }
    let mut config =
        json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"});
    if let Some(rules) = enforced {
        config["rules"] = json!({"action": action.as_str(), "policies": rules});
    }
    // istiod's `shadowRuleStatPrefix` reads the action of the shadow rules; without shadow
    // rules it reads the zero value, ALLOW, so the allow prefix is set even then.
    let shadow_action = shadow.as_ref().map(|_| action);
    let stat_prefix = match shadow_action {
        None | Some(EnvoyAction::Allow) => "istio_dry_run_allow_",
        Some(EnvoyAction::Deny) => "istio_dry_run_deny_",
        Some(EnvoyAction::Log) => "",
    };
    if let Some(rules) = shadow {
        config["shadow_rules"] = json!({"action": action.as_str(), "policies": rules});
    }
    if !stat_prefix.is_empty() {
        config["shadow_rules_stat_prefix"] = json!(stat_prefix);
    }
    Ok(json!({"name": RBAC_FILTER, "typed_config": config}))
}

/// CUSTOM policies as istiod builds them when the provider cannot be used (no such extension
/// provider in the mesh): per provider, in name order, one RBAC filter that DENIES what the
/// enforced CUSTOM rules match. Dry-run CUSTOM policies are dropped in that case.
fn custom_filters(
    policies: &[&Resource<AuthorizationPolicySpec>],
) -> Result<Vec<Value>, TranslateError> {
    let mut by_provider: BTreeMap<String, Policies> = BTreeMap::new();
    for policy in policies {
        let provider = policy
            .spec
            .provider
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let rules = by_provider.entry(provider.clone()).or_default();
        if !is_dry_run(policy) {
            add_policies(rules, policy, EnvoyAction::Deny, Some(&provider))?;
        }
    }
    let filters = by_provider
        .into_values()
        .map(|rules| {
            let renamed: Policies = rules
                .into_iter()
                .map(|(name, p)| (format!("{name}{BAD_CUSTOM_SUFFIX}"), p))
                .collect();
            json!({
                "name": RBAC_FILTER,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                    "rules": {"action": "DENY", "policies": renamed},
                },
            })
        })
        .collect();
    Ok(filters)
}

// ---------------------------------------------------------------------------------------------
// rbac: one rule (istiod's authorization model)

/// Which side of an Envoy RBAC policy a matcher belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Permission,
    Principal,
}

impl Side {
    fn and(self, items: Vec<Value>) -> Value {
        match self {
            Side::Permission => json!({"and_rules": {"rules": items}}),
            Side::Principal => json!({"and_ids": {"ids": items}}),
        }
    }
    fn or(self, items: Vec<Value>) -> Value {
        match self {
            Side::Permission => json!({"or_rules": {"rules": items}}),
            Side::Principal => json!({"or_ids": {"ids": items}}),
        }
    }
    fn not(self, item: Value) -> Value {
        match self {
            Side::Permission => json!({"not_rule": item}),
            Side::Principal => json!({"not_id": item}),
        }
    }
    fn any(self) -> Value {
        json!({"any": true})
    }
}

/// istiod's generators, one per field or condition key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Generator {
    DestIp,
    DestPort,
    ConnSni,
    EnvoyFilter,
    SrcIp,
    RemoteIp,
    SrcNamespace,
    SrcServiceAccount,
    SrcTrustDomain,
    SrcPrincipal,
    RequestPrincipal,
    RequestAudiences,
    RequestPresenter,
    RequestHeader,
    RequestClaims,
    Host,
    Path,
    Method,
}

impl Generator {
    /// The `when` key's generator (the model's `New` switch, in its order); `None` for an
    /// unknown key, which makes istiod skip the whole rule whatever the action.
    fn for_key(key: &str) -> Option<Generator> {
        Some(match key {
            "destination.ip" => Generator::DestIp,
            "destination.port" => Generator::DestPort,
            "connection.sni" => Generator::ConnSni,
            k if k.starts_with("experimental.envoy.filters.") => Generator::EnvoyFilter,
            "source.ip" => Generator::SrcIp,
            "remote.ip" => Generator::RemoteIp,
            "source.namespace" => Generator::SrcNamespace,
            "source.trustDomain" => Generator::SrcTrustDomain,
            "source.serviceAccount" => Generator::SrcServiceAccount,
            "source.principal" => Generator::SrcPrincipal,
            "request.auth.principal" => Generator::RequestPrincipal,
            "request.auth.audiences" => Generator::RequestAudiences,
            "request.auth.presenter" => Generator::RequestPresenter,
            k if k.starts_with("request.headers") => Generator::RequestHeader,
            k if k.starts_with("request.auth.claims") => Generator::RequestClaims,
            _ => return None,
        })
    }

    fn side(self) -> Side {
        match self {
            Generator::DestIp
            | Generator::DestPort
            | Generator::ConnSni
            | Generator::EnvoyFilter
            | Generator::Host
            | Generator::Path
            | Generator::Method => Side::Permission,
            _ => Side::Principal,
        }
    }

    /// Extended generators see all values at once (one matcher for the list).
    fn is_extended(self) -> bool {
        matches!(
            self,
            Generator::EnvoyFilter
                | Generator::RequestPrincipal
                | Generator::RequestAudiences
                | Generator::RequestPresenter
                | Generator::RequestClaims
        )
    }

    /// The matcher for one value (non-extended generators).
    fn one(self, key: &str, value: &str, policy_namespace: &str) -> Result<Value, String> {
        Ok(match self {
            Generator::DestIp => json!({"destination_ip": cidr_range(value)?}),
            Generator::DestPort => json!({"destination_port": port(value)?}),
            Generator::ConnSni => json!({"requested_server_name": string_matcher(value)}),
            Generator::SrcIp => json!({"direct_remote_ip": cidr_range(value)?}),
            Generator::RemoteIp => json!({"remote_ip": cidr_range(value)?}),
            Generator::SrcNamespace => {
                let ns = value
                    .split('*')
                    .map(quote_meta)
                    .collect::<Vec<_>>()
                    .join(".*");
                authenticated(regex(&format!(".*/ns/{ns}/.*")))
            }
            Generator::SrcServiceAccount => {
                authenticated(regex(&service_account_regex(policy_namespace, value)))
            }
            Generator::SrcTrustDomain => authenticated(trust_domain_matcher(value)),
            Generator::SrcPrincipal => {
                authenticated(string_matcher_with_prefix(value, "spiffe://"))
            }
            Generator::RequestHeader => {
                let name = name_in_brackets(key.strip_prefix("request.headers").unwrap_or(key))?;
                json!({"header": header_matcher(&name, value, false)})
            }
            Generator::Host => json!({"header": header_matcher(":authority", value, true)}),
            Generator::Method => json!({"header": header_matcher(":method", value, false)}),
            Generator::Path => {
                if value.contains("{*}") || value.contains("{**}") {
                    path_template(value)
                } else {
                    json!({"url_path": {"path": string_matcher(value)}})
                }
            }
            Generator::EnvoyFilter
            | Generator::RequestPrincipal
            | Generator::RequestAudiences
            | Generator::RequestPresenter
            | Generator::RequestClaims => return Err("unimplemented".into()),
        })
    }

    /// The matcher for all values at once (extended generators).
    fn all(self, key: &str, values: &[String]) -> Result<Value, String> {
        Ok(match self {
            Generator::RequestPrincipal => request_principals(values),
            Generator::RequestAudiences => {
                json!({"metadata": jwt_claim_list_matcher(&["aud".into()], values)})
            }
            Generator::RequestPresenter => {
                json!({"metadata": jwt_claim_list_matcher(&["azp".into()], values)})
            }
            Generator::RequestClaims => {
                let claims = names_in_nested_brackets(
                    key.strip_prefix("request.auth.claims").unwrap_or(key),
                )?;
                json!({"metadata": jwt_claim_list_matcher(&claims, values)})
            }
            Generator::EnvoyFilter => envoy_filter_metadata(key, values)?,
            _ => return Err("unimplemented".into()),
        })
    }
}

/// One field or condition with its values (istiod's `rule`).
#[derive(Clone, Debug)]
struct Item {
    key: String,
    values: Vec<String>,
    not_values: Vec<String>,
    generator: Generator,
}

impl Item {
    fn new(
        generator: Generator,
        key: &str,
        values: &[String],
        not_values: &[String],
    ) -> Option<Item> {
        (!values.is_empty() || !not_values.is_empty()).then(|| Item {
            key: key.to_string(),
            values: values.to_vec(),
            not_values: not_values.to_vec(),
            generator,
        })
    }

    /// `values` → one matcher (OR of the values), `notValues` → NOT(OR). A value that does not
    /// translate fails the rule for ALLOW (narrower) and is dropped for DENY and AUDIT (wider:
    /// a field left without values constrains nothing), as istiod's `checkError` does.
    fn generate(&self, action: EnvoyAction, policy_namespace: &str) -> Result<Vec<Value>, String> {
        let side = self.generator.side();
        let tolerate = |e: String| {
            if action == EnvoyAction::Allow {
                Err(e)
            } else {
                Ok(())
            }
        };
        let mut out = Vec::new();
        for (values, negate) in [(&self.values, false), (&self.not_values, true)] {
            if values.is_empty() {
                continue;
            }
            let matcher = if self.generator.is_extended() {
                match self.generator.all(&self.key, values) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tolerate(e)?;
                        None
                    }
                }
            } else {
                let mut or = Vec::new();
                for v in values {
                    match self.generator.one(&self.key, v, policy_namespace) {
                        Ok(m) => or.push(m),
                        Err(e) => tolerate(e)?,
                    }
                }
                (!or.is_empty()).then(|| side.or(or))
            };
            if let Some(m) = matcher {
                out.push(if negate { side.not(m) } else { m });
            }
        }
        Ok(out)
    }
}

/// One rule as istiod's model holds it: one AND-list of principal items per `from` entry and
/// one of permission items per `to` entry, each with the `when` conditions of its side
/// appended.
#[derive(Debug)]
struct RuleModel {
    policy_namespace: String,
    permissions: Vec<Vec<Item>>,
    principals: Vec<Vec<Item>>,
}

impl RuleModel {
    /// `Ok(None)` when istiod's `New` refuses the rule (an unknown `when` key): the rule is
    /// skipped whatever the action.
    fn new(policy_namespace: &str, rule: &Rule) -> Result<Option<RuleModel>, TranslateError> {
        let null = |what: &str| {
            TranslateError::Unsupported(format!("a null entry in a rule's {what} list"))
        };
        let mut base_permission = Vec::new();
        let mut base_principal = Vec::new();
        for when in rule.when.iter().flatten() {
            let Condition {
                key,
                values,
                not_values,
            } = when.as_ref().ok_or_else(|| null("when"))?;
            let Some(generator) = Generator::for_key(key) else {
                return Ok(None);
            };
            let into = match generator.side() {
                Side::Permission => &mut base_permission,
                Side::Principal => &mut base_principal,
            };
            into.extend(Item::new(generator, key, values, not_values));
        }

        let mut principals = Vec::new();
        for from in rule.from.iter().flatten() {
            let from = from.as_ref().ok_or_else(|| null("from"))?;
            let mut front = Vec::new();
            if let Some(s) = &from.source {
                front = source_items(s);
            }
            front.extend(base_principal.iter().cloned());
            principals.push(front);
        }
        if principals.is_empty() {
            principals.push(base_principal);
        }

        let mut permissions = Vec::new();
        for to in rule.to.iter().flatten() {
            let to = to.as_ref().ok_or_else(|| null("to"))?;
            let mut front = Vec::new();
            if let Some(o) = &to.operation {
                front = operation_items(o);
            }
            front.extend(base_permission.iter().cloned());
            permissions.push(front);
        }
        if permissions.is_empty() {
            permissions.push(base_permission);
        }
        Ok(Some(RuleModel {
            policy_namespace: policy_namespace.to_string(),
            permissions,
            principals,
        }))
    }

    /// The Envoy policy: `permissions` = one AND per `to` entry (ORed by Envoy),
    /// `principals` = one AND per `from` entry; an empty AND is `any`.
    fn generate(&self, action: EnvoyAction) -> Result<Value, String> {
        let list = |lists: &[Vec<Item>], side: Side| -> Result<Vec<Value>, String> {
            lists
                .iter()
                .map(|items| {
                    let mut and = Vec::new();
                    for item in items {
                        and.extend(item.generate(action, &self.policy_namespace)?);
                    }
                    if and.is_empty() {
                        and.push(side.any());
                    }
                    Ok(side.and(and))
                })
                .collect()
        };
        Ok(json!({
            "permissions": list(&self.permissions, Side::Permission)?,
            "principals": list(&self.principals, Side::Principal)?,
        }))
    }
}

/// A `source`'s items in the order istiod's `insertFront` calls leave them: principals,
/// requestPrincipals, serviceAccounts, trustDomains, namespaces, remoteIpBlocks, ipBlocks.
fn source_items(s: &Source) -> Vec<Item> {
    [
        Item::new(
            Generator::SrcPrincipal,
            "source.principal",
            &s.principals,
            &s.not_principals,
        ),
        Item::new(
            Generator::RequestPrincipal,
            "request.auth.principal",
            &s.request_principals,
            &s.not_request_principals,
        ),
        Item::new(
            Generator::SrcServiceAccount,
            "source.serviceAccount",
            &s.service_accounts,
            &s.not_service_accounts,
        ),
        Item::new(
            Generator::SrcTrustDomain,
            "source.trustDomain",
            &s.trust_domains,
            &s.not_trust_domains,
        ),
        Item::new(
            Generator::SrcNamespace,
            "source.namespace",
            &s.namespaces,
            &s.not_namespaces,
        ),
        Item::new(
            Generator::RemoteIp,
            "remote.ip",
            &s.remote_ip_blocks,
            &s.not_remote_ip_blocks,
        ),
        Item::new(
            Generator::SrcIp,
            "source.ip",
            &s.ip_blocks,
            &s.not_ip_blocks,
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// An `operation`'s items in istiod's order: hosts, methods, paths, ports.
fn operation_items(o: &Operation) -> Vec<Item> {
    [
        Item::new(Generator::Host, ":authority", &o.hosts, &o.not_hosts),
        Item::new(Generator::Method, ":method", &o.methods, &o.not_methods),
        Item::new(Generator::Path, "path-matcher", &o.paths, &o.not_paths),
        Item::new(
            Generator::DestPort,
            "destination.port",
            &o.ports,
            &o.not_ports,
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

// ---------------------------------------------------------------------------------------------
// rbac: matchers (istiod's matcher package)

fn regex(r: &str) -> Value {
    json!({"safe_regex": {"regex": r}})
}

fn exact(s: &str, ignore_case: bool) -> Value {
    with_case(json!({"exact": s}), ignore_case)
}

fn prefix(s: &str, ignore_case: bool) -> Value {
    with_case(json!({"prefix": s}), ignore_case)
}

fn suffix(s: &str, ignore_case: bool) -> Value {
    with_case(json!({"suffix": s}), ignore_case)
}

fn with_case(mut m: Value, ignore_case: bool) -> Value {
    if ignore_case {
        m["ignore_case"] = json!(true);
    }
    m
}

/// `StringMatcher`: `*` → regex `.+`, `*x` → suffix, `x*` → prefix, else exact.
fn string_matcher(v: &str) -> Value {
    string_matcher_with_prefix(v, "")
}

/// `StringMatcherWithPrefix`: as [`string_matcher`] with `pre` put in front of the value; a
/// suffix form then needs a regex (`pre.*<quoted rest>`). `*` ignores `pre`.
fn string_matcher_with_prefix(v: &str, pre: &str) -> Value {
    if v == "*" {
        regex(".+")
    } else if let Some(rest) = v.strip_prefix('*') {
        if pre.is_empty() {
            suffix(rest, false)
        } else {
            regex(&format!("{pre}.*{}", quote_meta(rest)))
        }
    } else if let Some(rest) = v.strip_suffix('*') {
        prefix(&format!("{pre}{rest}"), false)
    } else {
        exact(&format!("{pre}{v}"), false)
    }
}

/// `HeaderMatcher` / `HostMatcher` (the latter with `ignore_case`): `*` is a presence match.
fn header_matcher(name: &str, v: &str, ignore_case: bool) -> Value {
    if v == "*" {
        json!({"name": name, "present_match": true})
    } else if let Some(rest) = v.strip_prefix('*') {
        json!({"name": name, "string_match": suffix(rest, ignore_case)})
    } else if let Some(rest) = v.strip_suffix('*') {
        json!({"name": name, "string_match": prefix(rest, ignore_case)})
    } else {
        json!({"name": name, "string_match": exact(v, ignore_case)})
    }
}

/// `PathTemplateMatcher`: `{*}` → `*`, `{**}` → `**`, as an Envoy `uri_template` matcher.
fn path_template(v: &str) -> Value {
    // `{**}` first: replacing `{*}` first cannot touch it, but keep the longer token safe.
    let template = v.replace("{**}", "**").replace("{*}", "*");
    json!({"uri_template": {
        "name": "uri-template",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig",
            "path_template": template,
        },
    }})
}

/// Go's `regexp.QuoteMeta`.
fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The principal's identity matcher on a sidecar: the peer certificate's principal. It never
/// matches a plaintext connection (so only the `not*` forms are true there).
fn authenticated(name: Value) -> Value {
    json!({"authenticated": {"principal_name": name}})
}

/// istiod's `serviceAccountRegex`: `ns/sa`, or `sa` in the policy's namespace.
fn service_account_regex(default_namespace: &str, value: &str) -> String {
    let (ns, sa) = value.split_once('/').unwrap_or((default_namespace, value));
    format!(
        "spiffe://.+/ns/{}/(.+/|)sa/{}(/.+)?",
        quote_meta(ns),
        quote_meta(sa)
    )
}

/// istiod's trust-domain generator.
fn trust_domain_matcher(value: &str) -> Value {
    if value == "*" {
        prefix("spiffe://", false)
    } else if !value.contains('*') {
        prefix(&format!("spiffe://{value}/"), false)
    } else {
        let (a, b) = value.split_once('*').unwrap_or((value, ""));
        regex(&format!(
            "spiffe://{}[^/]*{}/.*",
            quote_meta(a),
            quote_meta(b)
        ))
    }
}

/// Go's `netip.ParsePrefix` / `ParseAddr` as istiod's `AddrStrToCidrRange` uses them: an
/// address alone is a /32 or /128; the prefix length is decimal without a leading zero.
fn cidr_range(addr: &str) -> Result<Value, String> {
    if addr.is_empty() {
        return Err("empty address".into());
    }
    let (ip, bits) = match addr.split_once('/') {
        Some((ip, bits)) => (ip, Some(bits)),
        None => (addr, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| format!("invalid address {addr}"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        None => max,
        Some(b) => {
            let decimal = !b.is_empty()
                && b.bytes().all(|c| c.is_ascii_digit())
                && !(b.len() > 1 && b.starts_with('0'));
            match b.parse::<u32>() {
                Ok(n) if decimal && n <= max => n,
                _ => return Err(format!("invalid prefix length in {addr}")),
            }
        }
    };
    Ok(json!({"address_prefix": ip.to_string(), "prefix_len": bits}))
}

/// istiod's `convertToPort`: Go `ParseUint(v, 10, 32)` (digits only, leading zeros allowed)
/// and at most 65535.
fn port(v: &str) -> Result<u32, String> {
    if v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!("invalid port {v}"));
    }
    match v.parse::<u64>() {
        Ok(p) if p <= 65535 => Ok(p as u32),
        _ => Err(format!("invalid port {v}")),
    }
}

/// `[name]` → `name` (istiod's `extractNameInBrackets`).
fn name_in_brackets(s: &str) -> Result<String, String> {
    match s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        Some(name) => Ok(name.to_string()),
        None => Err(format!("expecting format [<NAME>], but found {s}")),
    }
}

/// `[a][b]` → `[a, b]`; anything that is not a clean sequence of `[..]` groups falls back to
/// one name with one outer pair of brackets removed (istiod's `extractNameInNestedBrackets`).
fn names_in_nested_brackets(s: &str) -> Result<Vec<String>, String> {
    let bytes = s.as_bytes();
    let end_bracket = |begin: usize| -> Option<usize> {
        if begin >= bytes.len() || bytes[begin] != b'[' {
            return None;
        }
        for (i, &c) in bytes.iter().enumerate().skip(begin + 1) {
            match c {
                b'[' => return None,
                b']' => return Some(i),
                _ => {}
            }
        }
        None
    };
    let mut claims = Vec::new();
    let mut begin = 0;
    while begin < bytes.len() {
        let Some(end) = end_bracket(begin) else {
            return Ok(vec![name_in_brackets(s)?]);
        };
        claims.push(s[begin + 1..end].to_string());
        begin = end + 1;
    }
    Ok(claims)
}

/// `StringOrMatcher`: one `string_match` per value, in an `or_match` when there are several.
fn string_or_matcher(values: &[String]) -> Value {
    let mut matchers: Vec<Value> = values
        .iter()
        .map(|v| json!({"string_match": string_matcher(v)}))
        .collect();
    if matchers.len() == 1 {
        return matchers.remove(0);
    }
    json!({"or_match": {"value_matchers": matchers}})
}

/// `MetadataListValueMatcherForJWTClaims` (extended form): the claim at
/// `payload.<claims...>` is a string matching one of `values`, or a list with such an element.
fn jwt_claim_list_matcher(claims: &[String], values: &[String]) -> Value {
    let value = string_or_matcher(values);
    let path: Vec<Value> = std::iter::once(JWT_PAYLOAD.to_string())
        .chain(claims.iter().cloned())
        .map(|k| json!({"key": k}))
        .collect();
    json!({
        "filter": JWT_FILTER,
        "path": path,
        "value": {"or_match": {"value_matchers": [
            {"list_match": {"one_of": value}},
            value,
        ]}},
    })
}

/// `MetadataStringMatcherForJWTClaim`: the string claim `payload.<claim>`.
fn jwt_claim_string_matcher(claim: &str, m: Value) -> Value {
    json!({"metadata": {
        "filter": JWT_FILTER,
        "path": [{"key": JWT_PAYLOAD}, {"key": claim}],
        "value": {"string_match": m},
    }})
}

/// The `requestPrincipalGenerator`: each value split at its last `/` into an `iss` and a `sub`
/// matcher (see `docs/semantics.md`, "JWT matching in authz"), the two ANDed, the values ORed.
fn request_principals(values: &[String]) -> Value {
    let side = Side::Principal;
    let mut or: Vec<Value> = values
        .iter()
        .map(|v| {
            let (iss, sub) = request_principal_matchers(v);
            side.and(vec![
                jwt_claim_string_matcher("iss", iss),
                jwt_claim_string_matcher("sub", sub),
            ])
        })
        .collect();
    if or.len() == 1 {
        or.remove(0)
    } else {
        side.or(or)
    }
}

/// The (`iss`, `sub`) string matchers for one `requestPrincipals` value.
fn request_principal_matchers(value: &str) -> (Value, Value) {
    let any = || regex(".+");
    let (iss, sub, found) = match value.rfind('/') {
        Some(i) => (&value[..i], &value[i + 1..], true),
        None => (value, "", false),
    };
    if value == "*" {
        (any(), any())
    } else if let Some(without_star) = value.strip_prefix('*') {
        if found {
            // `iss` starts with the same `*`.
            let iss_m = match iss.strip_prefix('*') {
                Some("") => any(),
                Some(rest) => suffix(rest, false),
                None => any(),
            };
            (iss_m, exact(sub, false))
        } else {
            (any(), suffix(without_star, false))
        }
    } else if let Some(without_star) = value.strip_suffix('*') {
        if found {
            // `sub` ends with the same `*`.
            let sub_m = match sub.strip_suffix('*') {
                Some("") | None => any(),
                Some(rest) => prefix(rest, false),
            };
            (exact(iss, false), sub_m)
        } else {
            (prefix(without_star, false), any())
        }
    } else {
        (exact(iss, false), exact(sub, false))
    }
}

/// `experimental.envoy.filters.<filter>[<key>]`: the dynamic metadata of `envoy.filters.<filter>`
/// at `<key>`; a value `[v]` is "a list containing v", any other a string match.
fn envoy_filter_metadata(key: &str, values: &[String]) -> Result<Value, String> {
    let trimmed = key.strip_prefix("experimental.").unwrap_or(key);
    let trimmed = trimmed.strip_suffix(']').unwrap_or(trimmed);
    let Some((filter, meta_key)) = trimmed.split_once('[') else {
        return Err(format!("invalid key: {key}"));
    };
    let matchers: Vec<Value> = values
        .iter()
        .map(
            |v| match v.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
                Some(_) => {
                    let inner = v.trim_matches(|c| c == '[' || c == ']');
                    json!({"list_match": {"one_of": {"string_match": string_matcher(inner)}}})
                }
                None => json!({"string_match": string_matcher(v)}),
            },
        )
        .collect();
    let value = if matchers.len() == 1 {
        matchers.into_iter().next().unwrap_or_default()
    } else {
        json!({"or_match": {"value_matchers": matchers}})
    };
    Ok(json!({"metadata": {
        "filter": filter,
        "path": [{"key": meta_key}],
        "value": value,
    }}))
}

// ---------------------------------------------------------------------------------------------
// The rest of the bootstrap

/// The filters istiod puts after authorization on an inbound chain. They change nothing
/// without per-route configuration, and are kept so the chain is the one istiod builds.
fn passive_filters() -> Vec<Value> {
    vec![
        json!({"name": "envoy.filters.http.grpc_stats", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
            "emit_filter_state": true,
            "stats_for_all_methods": false,
        }}),
        json!({"name": "envoy.filters.http.fault", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        }}),
        json!({"name": "envoy.filters.http.cors", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors",
        }}),
        json!({"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
        }}),
    ]
}

/// `normalize_path`, `merge_slashes`, `path_with_escaped_slashes_action` as
/// `buildHTTPConnectionManager` sets them for `meshConfig.pathNormalization`.
fn path_normalization(mode: PathNormalization) -> (bool, bool, &'static str) {
    match mode {
        PathNormalization::None => (false, false, "KEEP_UNCHANGED"),
        PathNormalization::Base => (true, false, "KEEP_UNCHANGED"),
        PathNormalization::MergeSlashes => (true, true, "KEEP_UNCHANGED"),
        PathNormalization::DecodeAndMergeSlashes => (true, true, "UNESCAPE_AND_FORWARD"),
    }
}

fn socket_address(a: SocketAddr) -> Value {
    json!({"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}})
}

/// The bootstrap around the filter chain.
fn envelope(
    http_filters: Vec<Value>,
    workload: &WorkloadSpec,
    mesh: &MeshOptions,
    endpoints: &Endpoints,
) -> Value {
    let port = endpoints.listen.port();
    let cluster = format!("inbound|{port}||");
    let (normalize_path, merge_slashes, escaped_slashes) =
        path_normalization(mesh.path_normalization);
    let hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": format!("inbound_0.0.0.0_{port}"),
        "codec_type": "AUTO",
        "route_config": {
            "name": cluster,
            "validate_clusters": false,
            "virtual_hosts": [{
                "name": format!("inbound|http|{port}"),
                "domains": ["*"],
                "routes": [{
                    "name": "default",
                    "match": {"prefix": "/"},
                    // `BuildDefaultHTTPInboundRoute`: no timeout, `grpc-timeout` honoured
                    // without a cap, and the default inbound retry policy.
                    "route": {
                        "cluster": cluster,
                        "timeout": "0s",
                        "max_stream_duration": {
                            "max_stream_duration": "0s",
                            "grpc_timeout_header_max": "0s",
                        },
                        "retry_policy": {"retry_on": "reset-before-request", "num_retries": 2},
                    },
                }],
            }],
        },
        "http_filters": http_filters,
        "normalize_path": normalize_path,
        "merge_slashes": merge_slashes,
        "path_with_escaped_slashes_action": escaped_slashes,
        // The gateway model of `remote.ip`, as meshguard computes it; a sidecar's inbound
        // chain leaves `use_remote_address` false and Envoy then believes the rightmost
        // X-Forwarded-For address. A deliberate difference, see docs/differences.md.
        "use_remote_address": true,
        "xff_num_trusted_hops": mesh.trusted_proxies,
        // `buildSidecarInboundHTTPOpts` with default proxy headers: a client certificate's
        // details appended to X-Forwarded-Client-Cert, and a client-sent XFCC removed on
        // plaintext connections.
        "forward_client_cert_details": "APPEND_FORWARD",
        "set_current_client_cert_details": {"subject": true, "uri": true, "dns": true},
        "server_name": "istio-envoy",
        "server_header_transformation": "OVERWRITE",
        "proxy_100_continue": true,
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "stream_idle_timeout": "0s",
        "request_id_extension": {"typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig",
            "use_request_id_for_trace_sampling": true,
        }},
    });
    json!({
        "node": {
            "id": format!("sidecar~{}~workload.{ns}~{ns}.svc.cluster.local", endpoints.listen.ip(), ns = workload.namespace),
            "cluster": format!("workload.{}", workload.namespace),
        },
        // Its own loopback address: an admin port picked by the kernel can never be the port
        // of a proxy under test (those are on 127.0.0.1 and 127.0.0.2).
        "admin": {"address": socket_address(SocketAddr::from(([127, 0, 0, 3], 0)))},
        "layered_runtime": {"layers": [
            {"name": "global config", "static_layer": {
                // istiod's bootstrap: a fragment is stripped from the path instead of the
                // request being refused with 400.
                "envoy.reloadable_features.http_reject_path_with_fragment": false,
                // istiod's bootstrap: regexes up to this program size are accepted (Envoy's
                // default refuses configurations with regexes over 100), so long generated
                // regexes load as they do in a mesh.
                "re2.max_program_size.error_level": "32768",
            }},
            {"name": "admin", "admin_layer": {}},
        ]},
        // istiod's bootstrap: no practical bound on downstream connections (its default,
        // 2^31-1), set explicitly as Envoy otherwise warns that there is none.
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                "max_active_downstream_connections": 2_147_483_647,
            },
        }]},
        "static_resources": {
            "listeners": [{
                "name": format!("inbound_{port}"),
                "address": socket_address(endpoints.listen),
                "traffic_direction": "INBOUND",
                // Not istiod's: with SO_REUSEPORT (Envoy's default) a second Envoy could bind
                // the same address and share its connections; without it, it fails to start.
                "enable_reuse_port": false,
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm,
                }]}],
            }],
            "clusters": [{
                "name": cluster,
                "type": "STATIC",
                // MeshConfig's default `connectTimeout`.
                "connect_timeout": "10s",
                // istiod's inbound cluster for a port without a protocol name: the client's
                // protocol goes on upstream.
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "use_downstream_protocol_config": {
                            "http_protocol_options": {},
                            "http2_protocol_options": {},
                        },
                    },
                },
                "load_assignment": {
                    "cluster_name": cluster,
                    "endpoints": [{"lb_endpoints": [{"endpoint": {
                        "address": socket_address(endpoints.upstream),
                    }}]}],
                },
            }],
        },
    })
}

/// istiod's STRICT inbound transport socket for an HTTP port: the workload certificate of
/// `tls` (`cert-chain.pem`, `key.pem`, as `meshguard cert issue` writes them), a client
/// certificate required, chained to `root-cert.pem`, with a SPIFFE ID of `cluster.local`;
/// ALPN `h2`, `http/1.1`; istiod's TLS versions and ciphers. Shared by the mutual-TLS
/// comparisons with Envoy.
pub fn istio_inbound_tls(tls: &Path) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": true,
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3",
                    "cipher_suites": ["ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-GCM-SHA256"]},
                "tls_certificates": [{
                    "certificate_chain": {"filename": tls.join("cert-chain.pem")},
                    "private_key": {"filename": tls.join("key.pem")},
                }],
                "validation_context": {
                    "trusted_ca": {"filename": tls.join("root-cert.pem")},
                    "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"prefix": "spiffe://cluster.local/"}}],
                },
            },
        },
    })
}

/// Envoy with meshguard as its external authorizer: `bootstrap`'s `jwt_authn` and `rbac`
/// filters replaced by one `ext_authz` filter asking `meshguard ext-authz` at `authz`, over
/// gRPC (`grpc_service`, an h2c cluster) or HTTP (`http_service` as istiod writes an
/// `envoyExtAuthzHttp` provider with `pathPrefix: /check`, `includeRequestHeadersInCheck:
/// [authorization, x-forwarded-proto]` and `headersToUpstreamOnAllow: [x-jwt-*]`). Used by the
/// ext_authz tests and by `bench/run`'s `envoy-extauthz` row.
pub fn delegate_to_ext_authz(bootstrap: &mut Value, authz: SocketAddr, grpc: bool) {
    if let Some(filters) = bootstrap
        .pointer_mut(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        )
        .and_then(Value::as_array_mut)
    {
        filters.retain(|f| f["name"] != JWT_FILTER && f["name"] != RBAC_FILTER);
        let mut config = json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
        });
        if grpc {
            config["grpc_service"] =
                json!({"envoy_grpc": {"cluster_name": "meshguard-ext-authz"}, "timeout": "2s"});
        } else {
            config["http_service"] = json!({
                "path_prefix": "/check",
                "server_uri": {"uri": "http://meshguard-ext-authz", "cluster": "meshguard-ext-authz", "timeout": "2s"},
                "authorization_response": {"allowed_upstream_headers": {"patterns": [{"prefix": "x-jwt-", "ignore_case": true}]}},
            });
            config["allowed_headers"] = json!({"patterns": [
                {"exact": "authorization", "ignore_case": true},
                {"exact": "x-forwarded-proto", "ignore_case": true},
            ]});
        }
        filters.insert(
            0,
            json!({"name": "envoy.filters.http.ext_authz", "typed_config": config}),
        );
    }
    let mut cluster = json!({
        "name": "meshguard-ext-authz",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "meshguard-ext-authz", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": authz.ip().to_string(), "port_value": authz.port()}}}}]}]},
    });
    if grpc {
        cluster["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        });
    }
    if let Some(clusters) = bootstrap
        .pointer_mut("/static_resources/clusters")
        .and_then(Value::as_array_mut)
    {
        clusters.push(cluster);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints() -> Endpoints {
        Endpoints {
            listen: "127.0.0.2:18000".parse().unwrap(),
            upstream: "127.0.0.1:18001".parse().unwrap(),
        }
    }

    fn translate(yaml: &str) -> Value {
        bootstrap(
            yaml,
            &WorkloadSpec::default(),
            &MeshOptions::default(),
            &endpoints(),
        )
        .unwrap()
    }

    fn hcm(b: &Value) -> &Value {
        &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    }

    fn filter_names(b: &Value) -> Vec<String> {
        hcm(b)["http_filters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn filters(b: &Value) -> Vec<Value> {
        hcm(b)["http_filters"].as_array().unwrap().clone()
    }

    const JWKS: &str = r#"{"keys":[]}"#;

    fn ra(name: &str, ns: &str, issuers: &[&str]) -> String {
        let rules: String = issuers
            .iter()
            .map(|i| format!("  - issuer: \"{i}\"\n    jwks: '{JWKS}'\n"))
            .collect();
        format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  jwtRules:\n{rules}---\n"
        )
    }

    #[test]
    fn no_policies_leaves_only_the_passive_filters_and_router() {
        let b = translate("");
        assert_eq!(
            filter_names(&b),
            [
                "envoy.filters.http.grpc_stats",
                "envoy.filters.http.fault",
                "envoy.filters.http.cors",
                "envoy.filters.http.router"
            ]
        );
        let h = hcm(&b);
        assert_eq!(h["normalize_path"], json!(true));
        assert_eq!(h["merge_slashes"], json!(false));
        assert_eq!(h["use_remote_address"], json!(true));
        assert_eq!(h["forward_client_cert_details"], json!("APPEND_FORWARD"));
        let route = &h["route_config"]["virtual_hosts"][0]["routes"][0];
        assert_eq!(route["route"]["cluster"], json!("inbound|18000||"));
        assert_eq!(route["route"]["timeout"], json!("0s"));
        assert_eq!(
            b["static_resources"]["clusters"][0]["name"],
            json!("inbound|18000||")
        );
    }

    #[test]
    fn path_normalization_modes_are_istiods() {
        let cases = [
            (PathNormalization::None, false, false, "KEEP_UNCHANGED"),
            (PathNormalization::Base, true, false, "KEEP_UNCHANGED"),
            (
                PathNormalization::MergeSlashes,
                true,
                true,
                "KEEP_UNCHANGED",
            ),
            (
                PathNormalization::DecodeAndMergeSlashes,
                true,
                true,
                "UNESCAPE_AND_FORWARD",
            ),
        ];
        for (mode, normalize, merge, escaped) in cases {
            let mesh = MeshOptions {
                path_normalization: mode,
                trusted_proxies: 2,
                ..MeshOptions::default()
            };
            let b = bootstrap("", &WorkloadSpec::default(), &mesh, &endpoints()).unwrap();
            let h = hcm(&b);
            assert_eq!(h["normalize_path"], json!(normalize), "{mode:?}");
            assert_eq!(h["merge_slashes"], json!(merge), "{mode:?}");
            assert_eq!(
                h["path_with_escaped_slashes_action"],
                json!(escaped),
                "{mode:?}"
            );
            assert_eq!(h["xff_num_trusted_hops"], json!(2));
        }
    }

    #[test]
    fn providers_are_sorted_by_issuer_stably_across_resources() {
        // The workload namespace comes before the root namespace; within equal issuers the
        // attachment order is kept.
        let yaml = format!(
            "{}{}",
            ra("root", "istio-system", &["b", "a"]),
            ra("local", "foo", &["c", "b"])
        );
        let b = translate(&yaml);
        let jwt = &filters(&b)[0];
        assert_eq!(jwt["name"], json!(JWT_FILTER));
        let providers = jwt["typed_config"]["providers"].as_object().unwrap();
        let issuers: Vec<&str> = (0..4)
            .map(|i| {
                providers[&format!("origins-{i}")]["issuer"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(issuers, ["a", "b", "b", "c"]);
        let p = &providers["origins-0"];
        assert_eq!(p["payload_in_metadata"], json!("payload"));
        assert_eq!(
            p["normalize_payload_in_metadata"]["space_delimited_claims"],
            json!(["permission", "scope"])
        );
        assert!(p.get("from_headers").is_none(), "Envoy's defaults apply");
        assert_eq!(jwt["typed_config"]["bypass_cors_preflight"], json!(true));
    }

    #[test]
    fn one_provider_is_requires_any_of_it_or_missing() {
        let b = translate(&ra("a", "foo", &["x"]));
        assert_eq!(
            filters(&b)[0]["typed_config"]["rules"],
            json!([{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
                {"provider_name": "origins-0"}, {"allow_missing": {}}
            ]}}}])
        );
    }

    #[test]
    fn several_providers_add_a_requires_all_of_each_or_missing() {
        assert_eq!(
            jwt_requirement(2),
            json!({"requires_any": {"requirements": [
                {"provider_name": "origins-0"},
                {"provider_name": "origins-1"},
                {"requires_all": {"requirements": [
                    {"requires_any": {"requirements": [{"provider_name": "origins-0"}, {"allow_missing": {}}]}},
                    {"requires_any": {"requirements": [{"provider_name": "origins-1"}, {"allow_missing": {}}]}},
                ]}},
            ]}})
        );
    }

    #[test]
    fn jwt_rule_fields_map_to_the_provider() {
        let yaml = format!(
            r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: a, namespace: foo}}
spec:
  jwtRules:
  - issuer: iss
    jwks: '{JWKS}'
    audiences: [aud1, aud2]
    fromHeaders: [{{name: x-token, prefix: "Token "}}, {{name: x-raw}}]
    fromParams: [jwt]
    fromCookies: [session]
    forwardOriginalToken: true
    outputPayloadToHeader: x-payload
    outputClaimToHeaders: [{{header: x-sub, claim: sub}}]
    spaceDelimitedClaims: [scope, roles]
    presence: REQUIRED
"#
        );
        let b = translate(&yaml);
        let p = &filters(&b)[0]["typed_config"]["providers"]["origins-0"];
        assert_eq!(
            *p,
            json!({
                "issuer": "iss",
                "audiences": ["aud1", "aud2"],
                "local_jwks": {"inline_string": JWKS},
                "from_headers": [{"name": "x-token", "value_prefix": "Token "}, {"name": "x-raw"}],
                "from_params": ["jwt"],
                "from_cookies": ["session"],
                "forward": true,
                "forward_payload_header": "x-payload",
                "claim_to_headers": [{"header_name": "x-sub", "claim_name": "sub"}],
                "payload_in_metadata": "payload",
                "normalize_payload_in_metadata": {"space_delimited_claims": ["permission", "roles", "scope"]},
            })
        );
    }

    #[test]
    fn jwks_uri_becomes_istiods_public_only_key() {
        let yaml = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: a, namespace: foo}\nspec:\n  jwtRules:\n  - {issuer: x, jwksUri: 'https://example.com/jwks'}\n";
        let b = bootstrap(
            yaml,
            &WorkloadSpec::default(),
            &MeshOptions::default(),
            &endpoints(),
        )
        .unwrap();
        let text = b.to_string();
        assert!(text.contains("local_jwks"), "{text}");
        assert!(!text.contains("example.com/jwks"), "{text}");
        let keys: serde_json::Value = serde_json::from_str(PUBLIC_ONLY_JWKS).unwrap();
        assert_eq!(keys["keys"][0]["kty"], "RSA");
        assert!(keys["keys"][0].get("kid").is_none());
    }

    #[test]
    fn attachment_follows_namespace_selector_and_target_refs() {
        let ap = |name: &str, ns: &str, extra: &str| {
            format!(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  action: DENY\n  rules: [{{}}]\n{extra}---\n"
            )
        };
        let yaml = [
            ap("here", "foo", ""),
            ap("mesh", "istio-system", ""),
            ap("other", "bar", ""),
            ap(
                "selected",
                "foo",
                "  selector: {matchLabels: {app: httpbin}}\n",
            ),
            ap(
                "unselected",
                "foo",
                "  selector: {matchLabels: {app: other}}\n",
            ),
            ap(
                "targeted",
                "foo",
                "  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]\n",
            ),
            ap(
                "root-selected",
                "istio-system",
                "  selector: {matchLabels: {app: httpbin}}\n",
            ),
        ]
        .concat();
        let b = translate(&yaml);
        let deny = &filters(&b)[0];
        let names: Vec<&String> = deny["typed_config"]["rules"]["policies"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(
            names,
            [
                "ns[foo]-policy[here]-rule[0]",
                "ns[foo]-policy[selected]-rule[0]",
                "ns[istio-system]-policy[mesh]-rule[0]",
                "ns[istio-system]-policy[root-selected]-rule[0]",
            ]
        );
    }

    #[test]
    fn filter_order_is_custom_jwt_audit_deny_allow() {
        let policy = |name: &str, action: &str, extra: &str| {
            format!(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: foo}}\nspec:\n  action: {action}\n  rules: [{{}}]\n{extra}---\n"
            )
        };
        let yaml = [
            policy("allow", "ALLOW", ""),
            policy("deny", "DENY", ""),
            policy("audit", "AUDIT", ""),
            policy("ext-b", "CUSTOM", "  provider: {name: b}\n"),
            policy("ext-a", "CUSTOM", "  provider: {name: a}\n"),
            ra("r", "foo", &["x"]),
        ]
        .concat();
        let b = translate(&yaml);
        let f = filters(&b);
        let summary: Vec<(String, String)> = f
            .iter()
            .take(6)
            .map(|f| {
                let rules = &f["typed_config"]["rules"];
                let first = rules["policies"]
                    .as_object()
                    .map(|p| p.keys().next().cloned().unwrap_or_default())
                    .unwrap_or_default();
                (
                    rules["action"]
                        .as_str()
                        .unwrap_or(f["name"].as_str().unwrap())
                        .to_string(),
                    first,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "DENY".to_string(),
                    "istio-ext-authz-a-ns[foo]-policy[ext-a]-rule[0]-deny-due-to-bad-CUSTOM-action"
                        .to_string()
                ),
                (
                    "DENY".to_string(),
                    "istio-ext-authz-b-ns[foo]-policy[ext-b]-rule[0]-deny-due-to-bad-CUSTOM-action"
                        .to_string()
                ),
                (JWT_FILTER.to_string(), String::new()),
                (
                    "LOG".to_string(),
                    "ns[foo]-policy[audit]-rule[0]".to_string()
                ),
                (
                    "DENY".to_string(),
                    "ns[foo]-policy[deny]-rule[0]".to_string()
                ),
                (
                    "ALLOW".to_string(),
                    "ns[foo]-policy[allow]-rule[0]".to_string()
                ),
            ]
        );
        assert_eq!(
            f.last().unwrap()["name"],
            json!("envoy.filters.http.router")
        );
    }

    #[test]
    fn dry_run_goes_to_shadow_rules_with_istios_stat_prefix() {
        let policy = |name: &str, action: &str, dry: &str| {
            format!(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: foo\n  annotations: {{istio.io/dry-run: \"{dry}\"}}\nspec:\n  action: {action}\n  rules: [{{}}]\n---\n"
            )
        };
        let yaml = [
            policy("d1", "DENY", "True"),
            policy("d2", "DENY", "0"),
            policy("d3", "DENY", "yes"), // not a Go bool: enforced
            policy("a1", "ALLOW", "t"),
        ]
        .concat();
        let b = translate(&yaml);
        let f = filters(&b);
        let deny = &f[0]["typed_config"];
        assert_eq!(
            deny["rules"]["policies"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["ns[foo]-policy[d2]-rule[0]", "ns[foo]-policy[d3]-rule[0]"]
        );
        assert_eq!(
            deny["shadow_rules"]["policies"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["ns[foo]-policy[d1]-rule[0]"]
        );
        assert_eq!(
            deny["shadow_rules_stat_prefix"],
            json!("istio_dry_run_deny_")
        );
        let allow = &f[1]["typed_config"];
        assert!(
            allow.get("rules").is_none(),
            "only dry-run ALLOW: nothing enforced"
        );
        assert_eq!(allow["shadow_rules"]["action"], json!("ALLOW"));
        assert_eq!(
            allow["shadow_rules_stat_prefix"],
            json!("istio_dry_run_allow_")
        );
    }

    #[test]
    fn custom_dry_run_is_dropped_and_null_rules_are_skipped() {
        let yaml = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: dry\n  namespace: foo\n  annotations: {istio.io/dry-run: \"true\"}\nspec: {action: CUSTOM, provider: {name: p}, rules: [{}]}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: nulls, namespace: foo}\nspec: {action: DENY, rules: [~, {}]}\n";
        let b = translate(yaml);
        let f = filters(&b);
        // The provider still gets its filter, with nothing to deny.
        assert_eq!(
            f[0]["typed_config"]["rules"],
            json!({"action": "DENY", "policies": {}})
        );
        assert_eq!(
            f[1]["typed_config"]["rules"]["policies"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["ns[foo]-policy[nulls]-rule[1]"]
        );
    }

    #[test]
    fn rules_absent_empty_and_match_all() {
        let yaml = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: none, namespace: foo}\nspec: {}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: empty, namespace: foo}\nspec: {rules: []}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: all, namespace: foo}\nspec: {rules: [{}]}\n";
        let b = translate(yaml);
        let policies = &filters(&b)[0]["typed_config"]["rules"]["policies"];
        assert_eq!(policies["ns[foo]-policy[none]-rule[0]"], match_never());
        assert_eq!(policies["ns[foo]-policy[empty]-rule[0]"], match_never());
        assert_eq!(
            policies["ns[foo]-policy[all]-rule[0]"],
            json!({"permissions": [{"and_rules": {"rules": [{"any": true}]}}],
                   "principals": [{"and_ids": {"ids": [{"any": true}]}}]})
        );
    }

    #[test]
    fn request_principal_split_table() {
        let any = regex(".+");
        let cases = [
            ("*", any.clone(), any.clone()),
            ("*/bob", any.clone(), exact("bob", false)),
            (
                "*.example.com/bob",
                suffix(".example.com", false),
                exact("bob", false),
            ),
            ("*bob", any.clone(), suffix("bob", false)),
            (
                "https://a.com/*",
                exact("https://a.com", false),
                any.clone(),
            ),
            ("iss/pre*", exact("iss", false), prefix("pre", false)),
            ("foo*", prefix("foo", false), any.clone()),
            (
                "https://iss/a/b",
                exact("https://iss/a", false),
                exact("b", false),
            ),
            ("alice", exact("alice", false), exact("", false)),
        ];
        for (value, iss, sub) in cases {
            assert_eq!(request_principal_matchers(value), (iss, sub), "{value}");
        }
        // One value is one AND of iss and sub on the jwt_authn payload; several are ORed.
        let one = request_principals(&["a/b".into()]);
        assert_eq!(
            one,
            json!({"and_ids": {"ids": [
                {"metadata": {"filter": JWT_FILTER, "path": [{"key": "payload"}, {"key": "iss"}], "value": {"string_match": {"exact": "a"}}}},
                {"metadata": {"filter": JWT_FILTER, "path": [{"key": "payload"}, {"key": "sub"}], "value": {"string_match": {"exact": "b"}}}},
            ]}})
        );
        assert!(request_principals(&["a/b".into(), "c/d".into()])["or_ids"]["ids"].is_array());
    }

    #[test]
    fn path_templates_become_uri_template_matchers() {
        assert_eq!(
            Generator::Path.one("", "/foo/{*}/bar/{**}", "foo").unwrap(),
            json!({"uri_template": {"name": "uri-template", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig",
                "path_template": "/foo/*/bar/**",
            }}})
        );
        assert_eq!(
            Generator::Path.one("", "/allow*", "foo").unwrap(),
            json!({"url_path": {"path": {"prefix": "/allow"}}})
        );
        assert_eq!(
            Generator::Path.one("", "*", "foo").unwrap(),
            json!({"url_path": {"path": {"safe_regex": {"regex": ".+"}}}})
        );
    }

    #[test]
    fn value_forms_of_every_generator() {
        let g = |generator: Generator, key: &str, v: &str| generator.one(key, v, "foo").unwrap();
        assert_eq!(
            g(Generator::Host, "", "*.Example.com"),
            json!({"header": {"name": ":authority", "string_match": {"suffix": ".Example.com", "ignore_case": true}}})
        );
        assert_eq!(
            g(Generator::Method, "", "*"),
            json!({"header": {"name": ":method", "present_match": true}})
        );
        assert_eq!(
            g(Generator::RequestHeader, "request.headers[X-Role]", "adm*"),
            json!({"header": {"name": "X-Role", "string_match": {"prefix": "adm"}}})
        );
        assert_eq!(
            g(Generator::DestPort, "", "008"),
            json!({"destination_port": 8})
        );
        assert!(Generator::DestPort.one("", "+8", "foo").is_err());
        assert!(Generator::DestPort.one("", "65536", "foo").is_err());
        assert_eq!(
            g(Generator::SrcIp, "", "10.0.0.0/8"),
            json!({"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}})
        );
        assert_eq!(
            g(Generator::RemoteIp, "", "::1"),
            json!({"remote_ip": {"address_prefix": "::1", "prefix_len": 128}})
        );
        assert!(Generator::SrcIp.one("", "10.0.0.0/08", "foo").is_err());
        assert!(Generator::SrcIp.one("", "10.0.0.0/33", "foo").is_err());
        assert_eq!(
            g(Generator::DestIp, "", "127.0.0.1"),
            json!({"destination_ip": {"address_prefix": "127.0.0.1", "prefix_len": 32}})
        );
        assert_eq!(
            g(Generator::ConnSni, "", "*.svc"),
            json!({"requested_server_name": {"suffix": ".svc"}})
        );
        assert_eq!(
            g(Generator::SrcPrincipal, "", "*/ns/foo/sa/a.b"),
            authenticated(regex(r"spiffe://.*/ns/foo/sa/a\.b"))
        );
        assert_eq!(
            g(Generator::SrcPrincipal, "", "cluster.local/ns/foo/sa/x"),
            authenticated(exact("spiffe://cluster.local/ns/foo/sa/x", false))
        );
        assert_eq!(
            g(Generator::SrcNamespace, "", "fo*o.x"),
            authenticated(regex(r".*/ns/fo.*o\.x/.*"))
        );
        assert_eq!(
            g(Generator::SrcServiceAccount, "", "my.sa"),
            authenticated(regex(r"spiffe://.+/ns/foo/(.+/|)sa/my\.sa(/.+)?"))
        );
        assert_eq!(
            g(Generator::SrcTrustDomain, "", "td.io"),
            authenticated(prefix("spiffe://td.io/", false))
        );
        assert_eq!(
            g(Generator::SrcTrustDomain, "", "*.io"),
            authenticated(regex(r"spiffe://[^/]*\.io/.*"))
        );
    }

    #[test]
    fn claims_are_extended_metadata_matchers() {
        let m = Generator::RequestClaims
            .all(
                "request.auth.claims[nested][key]",
                &["a".into(), "b*".into()],
            )
            .unwrap();
        let v = json!({"or_match": {"value_matchers": [
            {"string_match": {"exact": "a"}}, {"string_match": {"prefix": "b"}}
        ]}});
        assert_eq!(
            m,
            json!({"metadata": {
                "filter": JWT_FILTER,
                "path": [{"key": "payload"}, {"key": "nested"}, {"key": "key"}],
                "value": {"or_match": {"value_matchers": [{"list_match": {"one_of": v}}, v]}},
            }})
        );
        assert_eq!(
            names_in_nested_brackets("[foo.com/name]").unwrap(),
            ["foo.com/name"]
        );
        assert_eq!(names_in_nested_brackets("[a]b]").unwrap(), ["a]b"]);
        let aud = Generator::RequestAudiences.all("", &["x".into()]).unwrap();
        assert_eq!(
            aud["metadata"]["path"],
            json!([{"key": "payload"}, {"key": "aud"}])
        );
        assert_eq!(
            Generator::EnvoyFilter
                .all("experimental.envoy.filters.http.foo[bar]", &["[x]".into()])
                .unwrap(),
            json!({"metadata": {"filter": "envoy.filters.http.foo", "path": [{"key": "bar"}],
                "value": {"list_match": {"one_of": {"string_match": {"exact": "x"}}}}}})
        );
    }

    #[test]
    fn when_is_anded_into_every_from_and_to_and_not_values_negate() {
        let yaml = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: foo}
spec:
  rules:
  - from: [{source: {ipBlocks: [10.0.0.1]}}, {source: {notIpBlocks: [10.0.0.2, 10.0.0.3]}}]
    to: [{operation: {paths: [/a]}}, {operation: {methods: [GET]}}]
    when:
    - {key: destination.port, values: ["80"]}
    - {key: "request.headers[x]", notValues: ["y"]}
"#;
        let b = translate(yaml);
        let p = &filters(&b)[0]["typed_config"]["rules"]["policies"]["ns[foo]-policy[p]-rule[0]"];
        let port = json!({"or_rules": {"rules": [{"destination_port": 80}]}});
        assert_eq!(
            p["permissions"],
            json!([
                {"and_rules": {"rules": [{"or_rules": {"rules": [{"url_path": {"path": {"exact": "/a"}}}]}}, port]}},
                {"and_rules": {"rules": [{"or_rules": {"rules": [{"header": {"name": ":method", "string_match": {"exact": "GET"}}}]}}, port]}},
            ])
        );
        let header = json!({"not_id": {"or_ids": {"ids": [{"header": {"name": "x", "string_match": {"exact": "y"}}}]}}});
        let ip = |a: &str| json!({"direct_remote_ip": {"address_prefix": a, "prefix_len": 32}});
        assert_eq!(
            p["principals"],
            json!([
                {"and_ids": {"ids": [{"or_ids": {"ids": [ip("10.0.0.1")]}}, header]}},
                {"and_ids": {"ids": [{"not_id": {"or_ids": {"ids": [ip("10.0.0.2"), ip("10.0.0.3")]}}}, header]}},
            ])
        );
    }

    #[test]
    fn bad_values_narrow_allow_and_widen_deny() {
        let policy = |action: &str| {
            format!(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: foo}}\nspec:\n  action: {action}\n  rules:\n  - to: [{{operation: {{ports: [\"x\"], paths: [/a]}}}}]\n"
            )
        };
        // ALLOW: the rule is skipped, the policy is left without Envoy policies (deny all).
        let b = translate(&policy("ALLOW"));
        assert_eq!(
            filters(&b)[0]["typed_config"]["rules"]["policies"],
            json!({})
        );
        // DENY: the bad port is dropped, the rule denies /a on any port.
        let b = translate(&policy("DENY"));
        assert_eq!(
            filters(&b)[0]["typed_config"]["rules"]["policies"]["ns[foo]-policy[p]-rule[0]"]["permissions"],
            json!([{"and_rules": {"rules": [{"or_rules": {"rules": [{"url_path": {"path": {"exact": "/a"}}}]}}]}}])
        );
    }

    #[test]
    fn unknown_when_keys_skip_the_rule_for_every_action() {
        let yaml = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\nspec:\n  action: DENY\n  rules:\n  - when: [{key: destination.name, values: [x]}]\n  - to: [{operation: {paths: [/b]}}]\n";
        let b = translate(yaml);
        let policies = filters(&b)[0]["typed_config"]["rules"]["policies"].clone();
        assert_eq!(
            policies.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["ns[foo]-policy[p]-rule[1]"]
        );
    }

    #[test]
    fn quote_meta_is_gos() {
        assert_eq!(
            quote_meta(r"a.b*c+d?e(f)g|h[i]j{k}l^m$n\o"),
            r"a\.b\*c\+d\?e\(f\)g\|h\[i\]j\{k\}l\^m\$n\\o"
        );
    }
}
