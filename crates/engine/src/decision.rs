//! The one place where outcomes become responses, and where authorization actions combine.
//!
//! Owns: Istio's action order (CUSTOM, AUDIT, DENY, ALLOW), dry-run (shadow) results, and the
//! mapping from every denial reason to Envoy's status, body, `www-authenticate` and
//! `response_code_details`. Does not own how a single rule matches (`meshguard-policy`) or JWT
//! verification ([`crate::authn`]).

use std::sync::Arc;

use meshguard_jwt::Status;
use meshguard_model::Action;
use meshguard_policy::{CompiledPolicy, CompiledRule, CompiledWorkload, RequestAttributes};
use serde::Serialize;

use crate::normalize::NormalizeError;

/// Envoy's RBAC denial body.
pub const RBAC_DENIED_BODY: &str = "RBAC: access denied";

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// The path could not be normalized (400).
    BadPath(NormalizeError),
    /// JWT authentication failed (401, or 403 for a wrong audience).
    Jwt(Status),
    /// A DENY (or unconfigured CUSTOM) policy matched; the Envoy policy id.
    DenyPolicy(Arc<str>),
    /// ALLOW policies exist and none matched.
    NoAllowMatch,
    /// No policy set has been loaded yet (a watched source before its first complete list):
    /// nothing is forwarded, rather than everything allowed by an empty set.
    PoliciesNotLoaded,
}

/// The body and `response_code_details` of [`DenyReason::PoliciesNotLoaded`] (503).
pub const POLICIES_NOT_LOADED_BODY: &str = "no policies loaded yet";
pub const POLICIES_NOT_LOADED_DETAILS: &str = "policies_not_loaded";

/// A reply sent instead of forwarding, as the client sees it: the one shape of every local
/// answer (a denial here; a refusal at intake or an upstream failure in the proxy).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub body: String,
    /// Envoy's `response_code_details`.
    pub details: String,
    pub www_authenticate: Option<String>,
}

/// A refusal by the policies: the reply and why.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Denial {
    #[serde(flatten)]
    pub reply: LocalReply,
    #[serde(skip)]
    pub reason: DenyReason,
}

impl Denial {
    /// Maps a reason to the response; `realm` is `scheme://authority/path?query` for the
    /// `www-authenticate` header of JWT failures.
    pub fn new(reason: DenyReason, realm: &str) -> Denial {
        match &reason {
            // Envoy's connection manager answers a path it cannot normalize with an empty body.
            DenyReason::BadPath(e) => Denial {
                reply: LocalReply {
                    status: 400,
                    body: String::new(),
                    details: format!(
                        "path_normalization_failed{{{}}}",
                        e.to_string().replace(' ', "_")
                    ),
                    www_authenticate: None,
                },
                reason,
            },
            DenyReason::Jwt(s) => {
                let www = if *s == Status::JwtMissed {
                    format!("Bearer realm=\"{realm}\"")
                } else {
                    format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")
                };
                Denial {
                    reply: LocalReply {
                        status: s.http_status(),
                        body: s.message().into(),
                        details: s.details(),
                        www_authenticate: Some(www),
                    },
                    reason,
                }
            }
            DenyReason::DenyPolicy(id) => Denial {
                reply: LocalReply {
                    status: 403,
                    body: RBAC_DENIED_BODY.into(),
                    details: format!("rbac_access_denied_matched_policy[{id}]"),
                    www_authenticate: None,
                },
                reason,
            },
            DenyReason::NoAllowMatch => Denial {
                reply: LocalReply {
                    status: 403,
                    body: RBAC_DENIED_BODY.into(),
                    details: "rbac_access_denied_matched_policy[none]".into(),
                    www_authenticate: None,
                },
                reason,
            },
            // Envoy answers a request whose filter configuration has not arrived (ECDS) with
            // 500 and no body; 503 tells clients and load balancers to try again or elsewhere
            // (docs/differences.md).
            DenyReason::PoliciesNotLoaded => Denial {
                reply: LocalReply {
                    status: 503,
                    body: POLICIES_NOT_LOADED_BODY.into(),
                    details: POLICIES_NOT_LOADED_DETAILS.into(),
                    www_authenticate: None,
                },
                reason,
            },
        }
    }
}

/// The result of a dry-run policy set (Envoy's shadow engine).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DryRunResult {
    /// `ALLOW` or `DENY`.
    pub action: &'static str,
    /// `allowed` or `denied`, as in Envoy's `istio_dry_run_*_shadow_engine_result`.
    pub result: &'static str,
    /// The matched policy id, if any rule matched.
    pub policy: Option<Arc<str>>,
}

/// The authorization verdict and what was observed on the way.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AuthzReport {
    /// The id of the rule that decided (the DENY that matched, or the ALLOW that matched).
    pub matched_policy: Option<Arc<str>>,
    /// The action of that policy.
    pub matched_action: Option<&'static str>,
    /// AUDIT policy that matched (never changes the decision).
    pub audit: Option<Arc<str>>,
    pub dry_run: Vec<DryRunResult>,
    #[serde(skip)]
    pub denied: Option<DenyReason>,
}

/// The first (policy, rule) that matches, in Envoy's order.
fn first_match<'a>(
    mut policies: impl Iterator<Item = &'a CompiledPolicy>,
    req: &RequestAttributes<'_>,
) -> Option<(&'a CompiledPolicy, &'a CompiledRule)> {
    policies.find_map(|p| p.matching_rule(req).map(|r| (p, r)))
}

fn id_of(m: Option<(&CompiledPolicy, &CompiledRule)>) -> Option<Arc<str>> {
    m.map(|(_, r)| r.id.clone())
}

/// The external authorizers a front end can ask (the mesh config's ext_authz providers), and
/// how far CUSTOM has gone for this request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Custom<'a> {
    /// Providers that can be asked. A CUSTOM rule of any other provider denies, as istiod's
    /// stand-in for an unknown provider does.
    pub providers: &'a [Arc<str>],
    /// The provider last asked, which allowed: CUSTOM goes on with the providers after it
    /// (istiod puts one filter pair per provider in the chain, sorted by name).
    pub after: Option<&'a str>,
}

/// "Ask provider X": a CUSTOM rule of a configured provider matched. The engine does no I/O;
/// the front end asks the provider and, when it allows, evaluates again with
/// [`Custom::after`] naming it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AskProvider {
    pub provider: Arc<str>,
    /// The CUSTOM rule that matched (Istio's shadow RBAC's effective policy id, without its
    /// `istio-ext-authz-<provider>-` prefix).
    pub policy: Arc<str>,
}

/// What CUSTOM decided about a request.
#[derive(Debug)]
pub enum CustomStep {
    /// No CUSTOM rule matched (any more): JWT and the other actions come next.
    Continue,
    /// A rule of a provider that cannot be asked matched: denied (the report says which).
    Deny(AuthzReport),
    /// A rule of a configured provider matched: ask it.
    Ask(AskProvider, AuthzReport),
}

/// CUSTOM, which Istio runs before JWT validation: one shadow RBAC + ext_authz filter pair per
/// provider, in the order of the providers' names. The first provider (after
/// [`Custom::after`]) with a matching rule is asked when it is configured; otherwise the match
/// denies (docs/decisions.md, decision 5: istiod's stand-in for an unknown provider).
pub fn authorize_custom(
    cw: &CompiledWorkload,
    req: &RequestAttributes<'_>,
    custom: Custom<'_>,
) -> CustomStep {
    let mut names: Vec<&str> = cw
        .custom
        .iter()
        .map(|p| p.provider.as_deref().unwrap_or(""))
        .filter(|n| custom.after.is_none_or(|after| *n > after))
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let group = cw
            .custom
            .iter()
            .filter(|p| p.provider.as_deref().unwrap_or("") == name);
        let Some((p, rule)) = first_match(group, req) else {
            continue;
        };
        let report = AuthzReport {
            matched_policy: Some(rule.id.clone()),
            matched_action: Some(p.action.as_str()),
            denied: Some(DenyReason::DenyPolicy(rule.id.clone())),
            ..Default::default()
        };
        return match custom.providers.iter().find(|k| &***k == name) {
            Some(provider) => CustomStep::Ask(
                AskProvider {
                    provider: provider.clone(),
                    policy: rule.id.clone(),
                },
                report,
            ),
            None => CustomStep::Deny(report),
        };
    }
    CustomStep::Continue
}

/// Istio's order after JWT: AUDIT, DENY, then ALLOW (CUSTOM ran before JWT validation, see
/// [`authorize_custom`]). Dry-run policies are evaluated into shadow results only.
pub fn authorize(cw: &CompiledWorkload, req: &RequestAttributes<'_>) -> AuthzReport {
    let mut report = AuthzReport {
        audit: id_of(first_match(cw.audit.iter(), req)),
        ..Default::default()
    };
    for (action, set) in [("DENY", &cw.deny), ("ALLOW", &cw.allow)] {
        if set.iter().any(|p| p.dry_run) {
            let matched = id_of(first_match(set.iter().filter(|p| p.dry_run), req));
            let result = match (action, matched.is_some()) {
                ("DENY", true) | ("ALLOW", false) => "denied",
                _ => "allowed",
            };
            report.dry_run.push(DryRunResult {
                action,
                result,
                policy: matched,
            });
        }
    }
    if let Some((p, rule)) = first_match(cw.deny.iter().filter(|p| !p.dry_run), req) {
        report.matched_policy = Some(rule.id.clone());
        report.matched_action = Some(p.action.as_str());
        report.denied = Some(DenyReason::DenyPolicy(rule.id.clone()));
        return report;
    }
    let mut allow = cw.allow.iter().filter(|p| !p.dry_run).peekable();
    if allow.peek().is_none() {
        return report;
    }
    match first_match(allow, req) {
        Some((_, rule)) => {
            report.matched_policy = Some(rule.id.clone());
            report.matched_action = Some(Action::Allow.as_str());
        }
        None => report.denied = Some(DenyReason::NoAllowMatch),
    }
    report
}

/// One rule's verdict for `check --explain` and the proxy's debug log.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RuleExplanation {
    /// `namespace/name` of the policy.
    pub policy: String,
    pub action: &'static str,
    pub dry_run: bool,
    /// The Envoy rule id, or `(no rules)` for a policy without rules.
    pub rule: String,
    pub matched: bool,
    /// Why it did not match, naming the field, the request's value and the policy's values.
    pub why: Option<String>,
}

/// Every applicable rule in evaluation order (CUSTOM, AUDIT, DENY, ALLOW), matched or not and
/// why. Costs a walk over all rules, so it runs only when asked for.
pub fn explain(cw: &CompiledWorkload, req: &RequestAttributes<'_>) -> Vec<RuleExplanation> {
    let mut out = Vec::new();
    for p in cw.policies() {
        let policy = format!("{}/{}", p.namespace, p.name);
        if p.rules.is_empty() {
            out.push(RuleExplanation {
                policy,
                action: p.action.as_str(),
                dry_run: p.dry_run,
                rule: "(no rules)".into(),
                matched: false,
                why: Some("a policy without rules never matches".into()),
            });
            continue;
        }
        for r in &p.rules {
            let why = r.explain(req);
            out.push(RuleExplanation {
                policy: policy.clone(),
                action: p.action.as_str(),
                dry_run: p.dry_run,
                rule: r.id.to_string(),
                matched: why.is_none(),
                why,
            });
        }
    }
    out
}
