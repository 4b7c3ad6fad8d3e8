//! `meshguard validate`: Istio's validation rules, plus warnings Istio does not give.
//!
//! Owns the findings (errors and warnings, each with file, document, resource, field and
//! value) for a loaded policy set. Errors are exactly what compilation refuses, so `validate`
//! and the proxy never disagree; warnings point at policies that load but will surprise. Does
//! not load files or print anything.

use std::collections::BTreeSet;

use meshguard_model::{
    Action, Attachment, AuthorizationPolicySpec, LoadError, ObjectRef, PolicySet, Resource, Source,
    Workload, attachment,
};
use serde::Serialize;

use crate::authz;
use crate::matchers::PrincipalMatch;
use crate::{KeySource, authn};

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem, located.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Empty (and left out of the JSON) for an object read from the Kubernetes API server.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub file: String,
    pub document: Option<usize>,
    pub resource: Option<String>,
    pub field: Option<String>,
    pub value: Option<String>,
    pub message: String,
    /// The object, for a resource read from the Kubernetes API server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectRef>,
}

impl Finding {
    pub fn from_error(e: &LoadError) -> Finding {
        Finding {
            severity: Severity::Error,
            file: e.file.display().to_string(),
            document: e.document,
            resource: e.resource.clone(),
            field: e.field.clone(),
            value: e.value.clone(),
            message: e.message.clone(),
            object: e.object.clone(),
        }
    }

    fn warning<S>(
        res: &Resource<S>,
        kind: &str,
        field: &str,
        value: Option<String>,
        message: String,
    ) -> Finding {
        let e = LoadError::at(
            &res.origin,
            Some(format!("{kind} {}", res.key())),
            Some(field.to_string()),
            value,
            message,
        );
        Finding {
            severity: Severity::Warning,
            ..Finding::from_error(&e)
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        // As a `LoadError` writes its location.
        match &self.object {
            Some(object) => {
                let named = self.resource.clone().unwrap_or_else(|| object.key());
                write!(
                    f,
                    "{sev}: {named} (resourceVersion {})",
                    object.resource_version
                )?;
            }
            None => {
                write!(f, "{sev}: {}", self.file)?;
                if let Some(d) = self.document {
                    write!(f, ": document {d}")?;
                }
                if let Some(r) = &self.resource {
                    write!(f, " ({r})")?;
                }
            }
        }
        if let Some(field) = &self.field {
            write!(f, ": field {field}")?;
        }
        if let Some(v) = &self.value {
            write!(f, " = {v}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The source fields that need an mTLS peer identity.
fn mtls_values(s: &Source) -> [(&'static str, &Vec<String>); 8] {
    [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
        ("trustDomains", &s.trust_domains),
        ("notTrustDomains", &s.not_trust_domains),
    ]
}

/// Validates a loaded set. `root` is Istio's root namespace; `workload`, when given, adds
/// warnings for selectors in its namespace that do not select it.
pub fn validate(set: &PolicySet, root: &str, workload: Option<&Workload>) -> Vec<Finding> {
    let mut out = Vec::new();

    // Issuers configured per namespace, for requestPrincipals checks.
    let mut issuers: Vec<(String, String)> = Vec::new();
    for ra in &set.request_authentications {
        common_checks(
            ra,
            "RequestAuthentication",
            ra.spec.selector.as_ref(),
            ra.spec.target_ref.is_some() || !ra.spec.target_refs.is_empty(),
            workload,
            &mut out,
        );
        match authn::compile_request_authentication(ra) {
            Err(e) => out.extend(e.iter().map(Finding::from_error)),
            Ok(providers) => {
                for (i, p) in providers.iter().enumerate() {
                    if let KeySource::Inline(jwks) = &p.keys {
                        for k in jwks.had_private_material() {
                            out.push(Finding::warning(
                                ra,
                                "RequestAuthentication",
                                &format!("spec.jwtRules[{i}].jwks"),
                                None,
                                format!("jwks key at index {k} contains private key material; only public keys are used for verification"),
                            ));
                        }
                        for s in jwks.skipped() {
                            out.push(Finding::warning(
                                ra,
                                "RequestAuthentication",
                                &format!("spec.jwtRules[{i}].jwks"),
                                s.kid.clone(),
                                format!(
                                    "key at index {} is not usable and is ignored: {}",
                                    s.index, s.reason
                                ),
                            ));
                        }
                    }
                }
            }
        }
        for rule in &ra.spec.jwt_rules {
            issuers.push((ra.namespace.clone(), rule.issuer.clone()));
        }
    }

    for ap in &set.authorization_policies {
        common_checks(
            ap,
            "AuthorizationPolicy",
            ap.spec.selector.as_ref(),
            ap.spec.target_ref.is_some() || !ap.spec.target_refs.is_empty(),
            workload,
            &mut out,
        );
        if let Err(e) = authz::compile_policy(ap) {
            out.extend(e.iter().map(Finding::from_error));
            continue;
        }
        policy_warnings(ap, root, &issuers, &mut out);
    }
    out.extend(
        crate::peer_authn::check(set)
            .iter()
            .map(Finding::from_error),
    );
    out.sort_by(|a, b| (&a.file, a.document, a.severity).cmp(&(&b.file, b.document, b.severity)));
    out
}

fn common_checks<S>(
    res: &Resource<S>,
    kind: &str,
    selector: Option<&meshguard_model::WorkloadSelector>,
    has_target_ref: bool,
    workload: Option<&Workload>,
    out: &mut Vec<Finding>,
) where
    S: meshguard_model::select::Attachable,
{
    let err = |field: &str, value: Option<String>, message: String| Finding {
        severity: Severity::Error,
        ..Finding::warning(res, kind, field, value, message)
    };
    for a in [
        "internal.istio.io/webhook-always-reject",
        "internal.istio.io/parent-namespace",
        "internal.istio.io/parents",
    ] {
        if res.annotations.contains_key(a) {
            out.push(err(
                &format!("metadata.annotations[{a}]"),
                None,
                format!("annotation {a} is reserved for Istio's internal use"),
            ));
        }
    }
    if selector.is_some() && has_target_ref {
        out.push(err(
            "spec.selector",
            None,
            "only one of targetRefs or workloadSelector can be set".into(),
        ));
    }
    if let Some(sel) = selector {
        if sel.match_labels.is_empty() {
            out.push(Finding::warning(res, kind, "spec.selector", None, "workload selector specified without labels: it selects every workload in the namespace".into()));
        }
        for (k, v) in &sel.match_labels {
            if k.is_empty() {
                out.push(err(
                    "spec.selector.matchLabels",
                    None,
                    "empty key is not supported in selector".into(),
                ));
            }
            if k.contains('*') || v.contains('*') {
                out.push(err(
                    &format!("spec.selector.matchLabels[{k}]"),
                    Some(format!("{v:?}")),
                    "wildcard is not supported in selector".into(),
                ));
            }
        }
    }
    if has_target_ref {
        out.push(Finding::warning(
            res,
            kind,
            "spec.targetRefs",
            None,
            "targetRef(s) attach to gateways and waypoints; a sidecar, and so meshguard, ignores this resource".into(),
        ));
    }
    if let Some(w) = workload
        && res.namespace == w.namespace
        && attachment(res, w) == Attachment::SelectorMismatch
    {
        let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push(Finding::warning(
            res,
            kind,
            "spec.selector.matchLabels",
            None,
            format!(
                "does not select the workload (namespace {}, labels {{{}}}): it will not apply",
                w.namespace,
                labels.join(",")
            ),
        ));
    }
}

fn policy_warnings(
    ap: &Resource<AuthorizationPolicySpec>,
    root: &str,
    issuers: &[(String, String)],
    out: &mut Vec<Finding>,
) {
    let spec = &ap.spec;
    let warn = |field: &str, value: Option<String>, message: String| {
        Finding::warning(ap, "AuthorizationPolicy", field, value, message)
    };
    let rules: Vec<_> = spec
        .rules
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().map(|r| (i, r)))
        .collect();
    if spec.action == Action::Allow && rules.is_empty() {
        out.push(warn(
            "spec.rules",
            None,
            "an ALLOW policy without rules allows nothing: every request to the workloads it selects is denied (use rules: [{}] to allow all)".into(),
        ));
    }
    let in_scope = |iss: &str| {
        issuers
            .iter()
            .any(|(ns, i)| (ns == &ap.namespace || ns == root) && (i == iss || i.is_empty()))
    };
    for (i, rule) in &rules {
        let mut only_http = true;
        for (j, from) in rule.from.iter().flatten().enumerate() {
            let Some(src) = from.as_ref().and_then(|f| f.source.as_ref()) else {
                continue;
            };
            let at = format!("spec.rules[{i}].from[{j}].source");
            for (name, values) in mtls_values(src) {
                if values.is_empty() {
                    continue;
                }
                only_http = false;
                let effect = if name.starts_with("not") {
                    "always true"
                } else {
                    "never matches"
                };
                out.push(warn(
                    &format!("{at}.{name}"),
                    None,
                    format!("{name} needs mTLS peer identities, which meshguard does not have yet: on plaintext it {effect}"),
                ));
            }
            if !src.ip_blocks.is_empty()
                || !src.not_ip_blocks.is_empty()
                || !src.remote_ip_blocks.is_empty()
                || !src.not_remote_ip_blocks.is_empty()
            {
                only_http = false;
            }
            for (name, values) in [
                ("requestPrincipals", &src.request_principals),
                ("notRequestPrincipals", &src.not_request_principals),
            ] {
                for (k, v) in values.iter().enumerate() {
                    principal_warnings(
                        v,
                        &format!("{at}.{name}[{k}]"),
                        &in_scope,
                        issuers,
                        &warn,
                        out,
                    );
                }
            }
        }
        for (j, to) in rule.to.iter().flatten().enumerate() {
            let Some(op) = to.as_ref().and_then(|t| t.operation.as_ref()) else {
                continue;
            };
            if !op.ports.is_empty() || !op.not_ports.is_empty() {
                only_http = false;
            }
            let hosts: BTreeSet<&str> = op.hosts.iter().map(String::as_str).collect();
            for (k, h) in op.hosts.iter().enumerate() {
                if h != "*"
                    && !h.contains(':')
                    && !h.ends_with('*')
                    && !hosts.contains(format!("{h}:*").as_str())
                {
                    out.push(warn(
                        &format!("spec.rules[{i}].to[{j}].operation.hosts[{k}]"),
                        Some(format!("{h:?}")),
                        format!("hosts match the Host header including any port: {h:?} does not match \"{h}:80\"; add \"{h}:*\" too"),
                    ));
                }
            }
        }
        for (j, c) in rule.when.iter().flatten().enumerate() {
            let Some(c) = c else { continue };
            let at = format!("spec.rules[{i}].when[{j}]");
            if c.key.starts_with("experimental.envoy.filters.") {
                out.push(warn(&format!("{at}.key"), Some(format!("{:?}", c.key)), "meshguard produces no Envoy dynamic metadata: values never match, notValues always do".into()));
            }
            if matches!(
                c.key.as_str(),
                "source.principal"
                    | "source.namespace"
                    | "source.serviceAccount"
                    | "source.trustDomain"
            ) {
                out.push(warn(&format!("{at}.key"), Some(format!("{:?}", c.key)), format!("{} needs mTLS peer identities, which meshguard does not have yet: values never match, notValues always do", c.key)));
            }
            if matches!(
                c.key.as_str(),
                "source.ip" | "remote.ip" | "destination.ip" | "destination.port"
            ) {
                only_http = false;
            }
            if c.key == "request.auth.principal" {
                for (k, v) in c.values.iter().chain(&c.not_values).enumerate() {
                    principal_warnings(
                        v,
                        &format!("{at}.values[{k}]"),
                        &in_scope,
                        issuers,
                        &warn,
                        out,
                    );
                }
            }
        }
        if spec.action == Action::Deny && only_http {
            out.push(warn(
                &format!("spec.rules[{i}]"),
                None,
                "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port (Istio's warning; meshguard serves HTTP only)".into(),
            ));
        }
    }
}

fn principal_warnings(
    v: &str,
    field: &str,
    in_scope: &dyn Fn(&str) -> bool,
    issuers: &[(String, String)],
    warn: &dyn Fn(&str, Option<String>, String) -> Finding,
    out: &mut Vec<Finding>,
) {
    let m = PrincipalMatch::parse(v);
    let Some(iss) = m.exact_issuer() else { return };
    if in_scope(iss) {
        return;
    }
    // `https://idp/team/alice` splits into issuer `https://idp/team` and subject `alice`; if a
    // configured issuer is a prefix, the subject itself contains `/` and can never match.
    let prefix = issuers.iter().find_map(|(_, i)| {
        let subject = v.strip_prefix(i.as_str())?.strip_prefix('/')?;
        (!i.is_empty() && !subject.is_empty()).then_some((i, subject))
    });
    match prefix {
        Some((i, subject)) => out.push(warn(
            field,
            Some(format!("{v:?}")),
            format!(
                "the subject {:?} contains '/': values split at the last '/', so this reads as issuer {iss:?}; it can never match. Use \"{i}/*\" or a when condition on request.auth.claims[sub]",
                subject
            ),
        )),
        None => out.push(warn(
            field,
            Some(format!("{v:?}")),
            format!("no RequestAuthentication in this namespace or the root namespace configures issuer {iss:?}: no token can carry this principal"),
        )),
    }
}
