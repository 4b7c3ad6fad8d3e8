//! `AuthorizationPolicy` compiled into rules of matchers, and rule matching.
//!
//! Owns: turning each policy's rules into matchers once, Envoy's policy ids
//! (`ns[foo]-policy[name]-rule[0]`) and their order, and "does this rule match this request".
//! Does not own: the order of actions (CUSTOM, AUDIT, DENY, ALLOW), dry-run bookkeeping or the
//! response; those are the engine's single combining step.

use std::sync::Arc;

use meshguard_model::{
    Action, AuthorizationPolicySpec, Condition, LoadError, Operation, Resource, Source,
};

use crate::matchers::{
    ClaimMatch, HeaderMatch, HostMatch, IdentityMatch, IpMatch, MethodMatch, PathMatch, PortMatch,
    PrincipalMatch, RequestAttributes, StringMatch, parse_claim_path,
};

/// One attribute test inside a source, operation or condition.
#[derive(Clone, Debug)]
pub enum Matcher {
    Host(HostMatch),
    Method(MethodMatch),
    Path(PathMatch),
    Port(PortMatch),
    SourceIp(IpMatch),
    RemoteIp(IpMatch),
    DestinationIp(IpMatch),
    Header(HeaderMatch),
    Claim(ClaimMatch),
    Principal(PrincipalMatch),
    Identity(IdentityMatch),
    Sni(StringMatch),
    /// `experimental.envoy.filters.*`: Envoy dynamic metadata meshguard does not produce.
    Absent,
}

impl Matcher {
    /// The request attribute this matcher reads, as a user would want to see it.
    pub fn describe(&self, req: &RequestAttributes<'_>) -> String {
        let ip = |what: &str, ip: Option<std::net::IpAddr>| match ip {
            Some(ip) => format!("{what} {ip}"),
            None => format!("{what} (unknown)"),
        };
        match self {
            Matcher::Host(_) => format!("host {:?}", req.host),
            Matcher::Method(_) => format!("method {:?}", req.method),
            Matcher::Path(_) => format!("path {:?}", req.path),
            Matcher::Port(_) => match req.destination_port {
                Some(p) => format!("port {p}"),
                None => "port (unknown)".into(),
            },
            Matcher::SourceIp(_) => ip("source ip", req.source_ip),
            Matcher::RemoteIp(_) => ip("remote ip", req.remote_ip),
            Matcher::DestinationIp(_) => ip("destination ip", req.destination_ip),
            Matcher::Header(h) => {
                let values: Vec<String> = req
                    .headers
                    .get_all(&h.name)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                if values.is_empty() {
                    format!("header {} (absent)", h.name)
                } else {
                    format!("header {} {values:?}", h.name)
                }
            }
            Matcher::Claim(c) => match req.jwt {
                None => "no verified token".into(),
                Some(p) => match crate::matchers::claim_at(p, &c.path) {
                    Some(v) => format!("claim {} = {v}", c.path.join(".")),
                    None => format!("claim {} (absent)", c.path.join(".")),
                },
            },
            Matcher::Principal(_) => match req.jwt {
                None => "no verified token".into(),
                Some(p) => format!(
                    "principal {}/{}",
                    p.get("iss").and_then(|v| v.as_str()).unwrap_or(""),
                    p.get("sub").and_then(|v| v.as_str()).unwrap_or("")
                ),
            },
            Matcher::Identity(_) => match req.peer_identity {
                None => "no mTLS peer identity (plaintext)".into(),
                Some(id) => format!("peer {id}"),
            },
            Matcher::Sni(_) => match req.sni {
                None => "no TLS SNI".into(),
                Some(s) => format!("SNI {s:?}"),
            },
            Matcher::Absent => "an attribute meshguard does not produce".into(),
        }
    }

    /// [`Matcher::matches`], or, given the joined value of a repeated header (made once per
    /// field), the header read as Envoy stores it.
    fn matches_as(&self, req: &RequestAttributes<'_>, joined: Option<Option<&[u8]>>) -> bool {
        match (self, joined) {
            (Matcher::Header(m), Some(value)) => m.matches_joined_value(value),
            _ => self.matches(req),
        }
    }

    pub fn matches(&self, req: &RequestAttributes<'_>) -> bool {
        match self {
            Matcher::Host(m) => m.matches(req),
            Matcher::Method(m) => m.matches(req),
            Matcher::Path(m) => m.matches(req),
            Matcher::Port(m) => m.matches(req.destination_port),
            Matcher::SourceIp(m) => m.matches(req.source_ip),
            Matcher::RemoteIp(m) => m.matches(req.remote_ip),
            Matcher::DestinationIp(m) => m.matches(req.destination_ip),
            Matcher::Header(m) => m.matches(req),
            Matcher::Claim(m) => m.matches(req),
            Matcher::Principal(m) => m.matches(req),
            Matcher::Identity(m) => m.matches(req),
            Matcher::Sni(m) => req.sni.is_some_and(|s| !s.is_empty() && m.matches(s)),
            Matcher::Absent => false,
        }
    }
}

/// A field: `(values empty OR any value matches) AND NOT(any notValue matches)`.
#[derive(Clone, Debug)]
pub struct Field {
    /// The YAML name (`paths`, `request.headers[x-role]`), for explanations.
    pub name: String,
    /// The YAML name of the negative form (`notPaths`, `request.headers[x-role] notValues`).
    pub not_name: String,
    pub values: Vec<Matcher>,
    pub not_values: Vec<Matcher>,
    /// The values as written, for explanations (cold data, never read per request).
    pub values_src: Vec<String>,
    pub not_values_src: Vec<String>,
    /// Set on a `request.headers[...]` field whose header Envoy joins when repeated
    /// ([`crate::matchers::envoy_joins_repeated`]), by the action of its policy.
    pub joined: Option<Joined>,
}

/// How a field on a header that Envoy joins decides when the header is repeated. meshguard
/// matches each value on its own; Envoy matches the joined value. When the two readings
/// disagree, the stricter one for the policy's action wins, so meshguard never allows what
/// Istio denies, and never allows what a per-value reading denies (a second header line must
/// not hide a value from a DENY).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Joined {
    /// DENY, CUSTOM, AUDIT: the field matches if either reading matches.
    EitherMatches,
    /// ALLOW: the field matches only if both readings match.
    BothMatch,
}

impl Field {
    pub fn matches(&self, req: &RequestAttributes<'_>) -> bool {
        let per_value = self.matches_as(req, None);
        let Some(joined) = self.joined else {
            return per_value;
        };
        let Some(value) = self.joined_value(req) else {
            return per_value;
        };
        let as_joined = || self.matches_as(req, Some(value.as_deref()));
        match joined {
            Joined::EitherMatches => per_value || as_joined(),
            Joined::BothMatch => per_value && as_joined(),
        }
    }

    /// The field's header joined as Envoy stores it, made once for all its values; `None` when
    /// the header is not repeated (both readings are then the same).
    fn joined_value(&self, req: &RequestAttributes<'_>) -> Option<Option<Vec<u8>>> {
        let name = self
            .values
            .iter()
            .chain(&self.not_values)
            .find_map(|m| match m {
                Matcher::Header(h) => Some(&h.name),
                _ => None,
            })?;
        req.headers.get_all(name).iter().nth(1)?;
        Some(crate::matchers::joined_values(req.headers, name))
    }

    fn matches_as(&self, req: &RequestAttributes<'_>, joined: Option<Option<&[u8]>>) -> bool {
        (self.values.is_empty() || self.values.iter().any(|m| m.matches_as(req, joined)))
            && !self.not_values.iter().any(|m| m.matches_as(req, joined))
    }

    /// Why this field does not match, in words; `None` when it matches.
    pub fn explain(&self, req: &RequestAttributes<'_>) -> Option<String> {
        if self.matches(req) {
            return None;
        }
        let joined = self.joined.and_then(|_| self.joined_value(req));
        self.explain_as(req, None).or_else(|| {
            let value = joined.as_ref()?;
            self.explain_as(req, Some(value.as_deref())).map(|why| {
                format!("{why} (the repeated header read as one value joined with ',', as Envoy reads it)")
            })
        })
    }

    fn explain_as(
        &self,
        req: &RequestAttributes<'_>,
        joined: Option<Option<&[u8]>>,
    ) -> Option<String> {
        let attr = || {
            self.values
                .iter()
                .chain(&self.not_values)
                .next()
                .map_or_else(String::new, |m| m.describe(req))
        };
        if !self.values.is_empty() && !self.values.iter().any(|m| m.matches_as(req, joined)) {
            return Some(format!(
                "{}: {} matches none of {:?}",
                self.name,
                attr(),
                self.values_src
            ));
        }
        let hit = self
            .not_values
            .iter()
            .position(|m| m.matches_as(req, joined))?;
        Some(format!(
            "{}: {} matches {:?}",
            self.not_name,
            attr(),
            self.not_values_src.get(hit).map_or("", String::as_str)
        ))
    }
}

/// All set fields of one `source`, `operation` or `when` entry (ANDed).
#[derive(Clone, Debug, Default)]
pub struct Clause {
    pub fields: Vec<Field>,
}

impl Clause {
    pub fn matches(&self, req: &RequestAttributes<'_>) -> bool {
        self.fields.iter().all(|f| f.matches(req))
    }
}

/// A rule: any `to` AND any `from` AND every `when`. Empty lists mean "any".
#[derive(Clone, Debug)]
pub struct CompiledRule {
    /// Envoy's policy id: `ns[<ns>]-policy[<name>]-rule[<i>]`.
    pub id: Arc<str>,
    pub index: usize,
    pub from: Vec<Clause>,
    pub to: Vec<Clause>,
    pub when: Vec<Clause>,
}

impl CompiledRule {
    /// Why the rule does not match, in words; `None` when it matches.
    pub fn explain(&self, req: &RequestAttributes<'_>) -> Option<String> {
        let first_failure = |c: &Clause| c.fields.iter().find_map(|f| f.explain(req));
        let list = |what: &str, clauses: &[Clause]| -> Option<String> {
            if clauses.is_empty() || clauses.iter().any(|c| c.matches(req)) {
                return None;
            }
            let why: Vec<String> = clauses
                .iter()
                .enumerate()
                .filter_map(|(i, c)| first_failure(c).map(|w| format!("{what}[{i}] {w}")))
                .collect();
            Some(why.join("; "))
        };
        list("to", &self.to)
            .or_else(|| list("from", &self.from))
            .or_else(|| {
                self.when
                    .iter()
                    .enumerate()
                    .find_map(|(i, c)| first_failure(c).map(|w| format!("when[{i}] {w}")))
            })
    }

    pub fn matches(&self, req: &RequestAttributes<'_>) -> bool {
        (self.to.is_empty() || self.to.iter().any(|c| c.matches(req)))
            && (self.from.is_empty() || self.from.iter().any(|c| c.matches(req)))
            && self.when.iter().all(|c| c.matches(req))
    }
}

/// One `AuthorizationPolicy` that applies to the workload.
#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    pub namespace: String,
    pub name: String,
    pub action: Action,
    /// `istio.io/dry-run: true`: evaluated, reported, never enforced.
    pub dry_run: bool,
    /// The CUSTOM provider name.
    pub provider: Option<String>,
    /// Empty for `spec: {}`: the policy exists but never matches (ALLOW: deny everything).
    pub rules: Vec<CompiledRule>,
}

impl CompiledPolicy {
    /// The first rule that matches, in Envoy's order (rules sorted by policy id).
    pub fn matching_rule(&self, req: &RequestAttributes<'_>) -> Option<&CompiledRule> {
        self.rules.iter().find(|r| r.matches(req))
    }
}

/// Parses `istio.io/dry-run` like Go's `strconv.ParseBool`.
pub fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The Envoy policy id of rule `index` of a policy.
pub fn policy_id(namespace: &str, name: &str, index: usize) -> String {
    format!("ns[{namespace}]-policy[{name}]-rule[{index}]")
}

/// Compiles one policy. On failure, returns every error found (not only the first), each
/// naming the field and the value, so that one `validate` run shows all of them.
pub fn compile_policy(
    res: &Resource<AuthorizationPolicySpec>,
) -> Result<CompiledPolicy, Vec<LoadError>> {
    let err = |field: String, value: &str, message: String| {
        crate::located_error(res, "AuthorizationPolicy", field, value, message)
    };
    let mut errors = Vec::new();
    let spec = &res.spec;
    let dry_run = match res.annotations.get("istio.io/dry-run") {
        None => false,
        Some(v) => parse_go_bool(v).unwrap_or_else(|| {
            errors.push(err(
                "metadata.annotations[istio.io/dry-run]".into(),
                v,
                "invalid value; use true or false".into(),
            ));
            false
        }),
    };
    if dry_run && !matches!(spec.action, Action::Allow | Action::Deny) {
        errors.push(err(
            "metadata.annotations[istio.io/dry-run]".into(),
            "true",
            format!(
                "the annotation istio.io/dry-run currently only supports action ALLOW/DENY, found action {}",
                spec.action.as_str()
            ),
        ));
    }
    let provider = match (&spec.action, &spec.provider) {
        (Action::Custom, Some(p)) if !p.name.is_empty() => Some(p.name.clone()),
        (Action::Custom, _) => {
            errors.push(err(
                "spec.provider.name".into(),
                "",
                "`provider.name` must not be empty".into(),
            ));
            None
        }
        (other, Some(_)) => {
            errors.push(err(
                "spec.provider".into(),
                "",
                format!(
                    "`provider` must not be with non CUSTOM action, found {}",
                    other.as_str()
                ),
            ));
            None
        }
        (_, None) => None,
    };
    if spec.rules.is_none() && matches!(spec.action, Action::Deny | Action::Custom) {
        errors.push(err(
            "spec.rules".into(),
            "",
            format!(
                "{} action without `rules` is meaningless as it will never be triggered, add an empty rule `{{}}` if you want it be triggered for every request",
                spec.action.as_str()
            ),
        ));
    }
    let mut rules = Vec::new();
    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let at = format!("spec.rules[{i}]");
        let Some(rule) = rule else {
            errors.push(err(
                at,
                "null",
                format!("`rule` must not be nil, found at rule {i}"),
            ));
            continue;
        };
        let ns = &res.namespace;
        // Each part is compiled even when an earlier one failed, so every error is reported.
        let from = compile_entries(
            rule.from.as_ref(),
            &format!("{at}.from"),
            "source",
            |f| f.source.as_ref(),
            |s, at| compile_source(s, ns, at),
        );
        let to = compile_entries(
            rule.to.as_ref(),
            &format!("{at}.to"),
            "operation",
            |t| t.operation.as_ref(),
            compile_operation,
        );
        let when = compile_when(rule.when.as_deref().unwrap_or_default(), ns, &at);
        let (from, to, when) = match (from, to, when) {
            (Ok(from), Ok(to), Ok(when)) => (from, to, when),
            (from, to, when) => {
                for e in [from.err(), to.err(), when.err()].into_iter().flatten() {
                    errors.extend(e.into_iter().map(|(f, v, m)| err(f, &v, m)));
                }
                continue;
            }
        };
        let compiled = CompiledRule {
            id: policy_id(ns, &res.name, i).into(),
            index: i,
            from,
            to,
            when,
        };
        if spec.action == Action::Custom
            && let Err((f, m)) = check_custom_rule(&compiled)
        {
            errors.push(err(format!("{at}.{f}"), "", m));
        }
        rules.push(compiled);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Envoy keeps RBAC policies in a map ordered by id, so `rule[10]` is tried before `rule[2]`;
    // the matched id reported must be the one Envoy would report.
    rules.sort_by(|a, b| a.id.cmp(&b.id));
    mark_joined_headers(&mut rules, spec.action);
    Ok(CompiledPolicy {
        namespace: res.namespace.clone(),
        name: res.name.clone(),
        action: spec.action,
        dry_run,
        provider,
        rules,
    })
}

/// One error: (field path, offending value, message).
type FieldError = (String, String, String);
/// Every error of a part of a policy; never empty.
type FieldErrors = Vec<FieldError>;

/// Collects every item, or every error of every item.
fn collect_all<T>(
    items: impl Iterator<Item = Result<T, FieldErrors>>,
) -> Result<Vec<T>, FieldErrors> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for item in items {
        match item {
            Ok(t) => out.push(t),
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// A `from` or `to` list: absent means "any"; present but empty, a null entry, or an entry
/// without its `source`/`operation` are errors (Istio's validation).
fn compile_entries<E, X>(
    list: Option<&Vec<Option<E>>>,
    at: &str,
    inner: &str,
    get: impl Fn(&E) -> Option<&X>,
    compile: impl Fn(&X, &str) -> Result<Clause, FieldErrors>,
) -> Result<Vec<Clause>, FieldErrors> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    if list.is_empty() {
        let name = at.rsplit('.').next().unwrap_or(at);
        return Err(vec![(
            at.to_string(),
            "[]".into(),
            format!("`{name}` must not be empty"),
        )]);
    }
    collect_all(list.iter().enumerate().map(|(j, entry)| {
        let at = format!("{at}[{j}].{inner}");
        match entry.as_ref().and_then(&get) {
            Some(x) => compile(x, &at),
            None => {
                let name = format!("{}.{inner}", if inner == "source" { "from" } else { "to" });
                Err(vec![(
                    at,
                    "null".into(),
                    format!("`{name}` must not be nil"),
                )])
            }
        }
    }))
}

fn compile_when(
    when: &[Option<Condition>],
    policy_ns: &str,
    at: &str,
) -> Result<Vec<Clause>, FieldErrors> {
    collect_all(when.iter().enumerate().map(|(j, c)| {
        let at = format!("{at}.when[{j}]");
        match c {
            Some(c) => compile_condition(c, policy_ns, &at),
            None => Err(vec![(
                at,
                "null".into(),
                "`when` entry must not be nil".into(),
            )]),
        }
    }))
}

/// Turns one YAML value of a `when` key into a matcher.
type ValueParser = Box<dyn Fn(&str) -> Result<Matcher, String>>;

fn check_custom_rule(rule: &CompiledRule) -> Result<(), (String, String)> {
    for clause in rule.from.iter().chain(&rule.when) {
        for f in &clause.fields {
            let identity = f.values.iter().chain(&f.not_values).any(|m| {
                matches!(
                    m,
                    Matcher::Principal(_) | Matcher::Identity(_) | Matcher::Claim(_)
                )
            });
            if identity {
                return Err((
                    f.name.clone(),
                    format!("{} is currently not supported with CUSTOM action", f.name),
                ));
            }
        }
    }
    Ok(())
}

/// Builds a field from values and notValues with one parser; empty strings are rejected.
/// Every bad value is reported, not only the first.
fn field<F>(
    name: &str,
    not_name: &str,
    values: &[String],
    not_values: &[String],
    at: &str,
    parse: F,
) -> Result<Option<Field>, FieldErrors>
where
    F: Fn(&str) -> Result<Matcher, String>,
{
    if values.is_empty() && not_values.is_empty() {
        return Ok(None);
    }
    let compile = |list: &[String], fname: &str| -> Result<Vec<Matcher>, FieldErrors> {
        collect_all(list.iter().enumerate().map(|(i, v)| {
            let path = format!("{at}.{fname}[{i}]");
            if v.is_empty() {
                return Err(vec![(
                    path,
                    v.clone(),
                    format!("empty value not allowed, found in {fname}"),
                )]);
            }
            parse(v).map_err(|m| vec![(path, v.clone(), m)])
        }))
    };
    let (matchers, not_matchers) = match (compile(values, name), compile(not_values, not_name)) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => {
            return Err([a.err(), b.err()].into_iter().flatten().flatten().collect());
        }
    };
    Ok(Some(Field {
        name: name.to_string(),
        not_name: not_name.to_string(),
        values: matchers,
        not_values: not_matchers,
        values_src: values.to_vec(),
        not_values_src: not_values.to_vec(),
        joined: None,
    }))
}

/// Marks the `request.headers[...]` fields of a policy's rules whose header Envoy joins when
/// repeated, with the reading its action needs ([`Joined`]).
fn mark_joined_headers(rules: &mut [CompiledRule], action: Action) {
    let joined = match action {
        Action::Allow => Joined::BothMatch,
        Action::Deny | Action::Custom | Action::Audit => Joined::EitherMatches,
    };
    for rule in rules {
        for clause in rule
            .from
            .iter_mut()
            .chain(&mut rule.to)
            .chain(&mut rule.when)
        {
            for field in &mut clause.fields {
                let envoy_joins = field.values.iter().chain(&field.not_values).any(|m| {
                    matches!(m, Matcher::Header(h) if crate::matchers::envoy_joins_repeated(&h.name))
                });
                if envoy_joins {
                    field.joined = Some(joined);
                }
            }
        }
    }
}

/// Gathers the fields of a clause, every error of every field.
#[derive(Default)]
struct ClauseBuilder {
    fields: Vec<Field>,
    errors: FieldErrors,
    /// Whether any field was written at all (valid or not), for "must not be empty".
    any_set: bool,
}

impl ClauseBuilder {
    fn push(&mut self, f: Result<Option<Field>, FieldErrors>) {
        match f {
            Ok(Some(f)) => {
                self.any_set = true;
                self.fields.push(f);
            }
            Ok(None) => {}
            Err(e) => {
                self.any_set = true;
                self.errors.extend(e);
            }
        }
    }

    fn finish(self, at: &str, empty_message: &str) -> Result<Clause, FieldErrors> {
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        if !self.any_set {
            return Err(vec![(at.to_string(), "{}".into(), empty_message.into())]);
        }
        Ok(Clause {
            fields: self.fields,
        })
    }
}

fn compile_source(s: &Source, policy_ns: &str, at: &str) -> Result<Clause, FieldErrors> {
    let mut clause = ClauseBuilder::default();
    let any_sa = !s.service_accounts.is_empty() || !s.not_service_accounts.is_empty();
    let any_pn = !s.principals.is_empty()
        || !s.not_principals.is_empty()
        || !s.namespaces.is_empty()
        || !s.not_namespaces.is_empty();
    if any_sa && any_pn {
        clause.errors.push((
            format!("{at}.serviceAccounts"),
            String::new(),
            "cannot set serviceAccounts with namespaces or principals".into(),
        ));
    }
    clause.push(field(
        "principals",
        "notPrincipals",
        &s.principals,
        &s.not_principals,
        at,
        |v| {
            Ok(Matcher::Identity(IdentityMatch::Principal(
                StringMatch::parse(v, false),
            )))
        },
    ));
    clause.push(field(
        "requestPrincipals",
        "notRequestPrincipals",
        &s.request_principals,
        &s.not_request_principals,
        at,
        |v| Ok(Matcher::Principal(PrincipalMatch::parse(v))),
    ));
    clause.push(field(
        "namespaces",
        "notNamespaces",
        &s.namespaces,
        &s.not_namespaces,
        at,
        |v| {
            Ok(Matcher::Identity(IdentityMatch::Namespace(
                StringMatch::parse(v, false),
            )))
        },
    ));
    clause.push(field(
        "serviceAccounts",
        "notServiceAccounts",
        &s.service_accounts,
        &s.not_service_accounts,
        at,
        |v| service_account(v, policy_ns),
    ));
    clause.push(field(
        "trustDomains",
        "notTrustDomains",
        &s.trust_domains,
        &s.not_trust_domains,
        at,
        |v| {
            if v.contains('/') {
                return Err(format!("trust domain {v:?} must not contain '/'"));
            }
            Ok(Matcher::Identity(IdentityMatch::TrustDomain(
                StringMatch::parse(v, false),
            )))
        },
    ));
    clause.push(field(
        "ipBlocks",
        "notIpBlocks",
        &s.ip_blocks,
        &s.not_ip_blocks,
        at,
        |v| IpMatch::parse(v).map(Matcher::SourceIp),
    ));
    clause.push(field(
        "remoteIpBlocks",
        "notRemoteIpBlocks",
        &s.remote_ip_blocks,
        &s.not_remote_ip_blocks,
        at,
        |v| IpMatch::parse(v).map(Matcher::RemoteIp),
    ));
    clause.finish(at, "`from.source` must not be empty")
}

fn service_account(v: &str, policy_ns: &str) -> Result<Matcher, String> {
    if v.contains('*') {
        return Err(format!(
            "wildcard is not supported in serviceAccounts ({v})"
        ));
    }
    let (ns, sa) = match v.split_once('/') {
        Some((ns, sa)) if !ns.is_empty() && !sa.is_empty() && !sa.contains('/') => (ns, sa),
        Some(_) => {
            return Err(format!(
                "service account {v:?} must be \"namespace/name\" or \"name\""
            ));
        }
        None => (policy_ns, v),
    };
    Ok(Matcher::Identity(IdentityMatch::ServiceAccount {
        namespace: ns.to_string(),
        name: sa.to_string(),
    }))
}

fn compile_operation(o: &Operation, at: &str) -> Result<Clause, FieldErrors> {
    let mut clause = ClauseBuilder::default();
    let parts = [
        field("hosts", "notHosts", &o.hosts, &o.not_hosts, at, |v| {
            Ok(Matcher::Host(HostMatch::parse(v)))
        }),
        field("ports", "notPorts", &o.ports, &o.not_ports, at, |v| {
            PortMatch::parse(v).map(Matcher::Port)
        }),
        field(
            "methods",
            "notMethods",
            &o.methods,
            &o.not_methods,
            at,
            |v| Ok(Matcher::Method(MethodMatch(StringMatch::parse(v, false)))),
        ),
        field("paths", "notPaths", &o.paths, &o.not_paths, at, |v| {
            PathMatch::parse(v).map(Matcher::Path)
        }),
    ];
    for f in parts {
        clause.push(f);
    }
    clause.finish(at, "`to.operation` must not be empty")
}

/// Every `when` key Istio accepts, for did-you-mean hints.
pub const CONDITION_KEYS: [&str; 15] = [
    "request.headers[]",
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "source.trustDomain",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "request.auth.claims[]",
    "destination.ip",
    "destination.port",
    "connection.sni",
    "experimental.envoy.filters.",
];

fn compile_condition(c: &Condition, policy_ns: &str, at: &str) -> Result<Clause, FieldErrors> {
    compile_condition_key(c, policy_ns, at).map_err(|e| vec![e])?
}

/// The key of a `when` entry: its own error, or the clause built from every value (the
/// values' errors, all of them).
fn compile_condition_key(
    c: &Condition,
    policy_ns: &str,
    at: &str,
) -> Result<Result<Clause, FieldErrors>, FieldError> {
    let key = c.key.as_str();
    if key.is_empty() {
        return Err((
            format!("{at}.key"),
            String::new(),
            "`key` must not be empty".into(),
        ));
    }
    if c.values.is_empty() && c.not_values.is_empty() {
        return Err((
            format!("{at}.values"),
            String::new(),
            format!("at least one of `values` or `notValues` must be set for key {key}"),
        ));
    }
    let key_err = |m: String| (format!("{at}.key"), key.to_string(), m);
    let map_key = |prefix: &str| -> Result<Option<String>, FieldError> {
        let Some(rest) = key.strip_prefix(prefix) else {
            return Ok(None);
        };
        if rest.len() < 3 || !rest.starts_with('[') || !rest.ends_with(']') {
            // `request.auth.claims.role`: the name is there, only the brackets are missing.
            let hint = rest
                .strip_prefix('.')
                .filter(|n| !n.is_empty() && !n.contains(['[', ']']))
                .map(|n| format!("; did you mean {prefix}[{n}]?"))
                .unwrap_or_default();
            return Err(key_err(format!(
                "{key} must be of the form {prefix}[<name>]{hint}"
            )));
        }
        Ok(Some(rest.to_string()))
    };
    let parse: ValueParser = if let Some(b) = map_key("request.headers")? {
        // `map_key` checked the brackets.
        let name = b
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(&b);
        let name = http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|_| key_err(format!("{name:?} is not a valid header name")))?;
        Box::new(move |v| {
            Ok(Matcher::Header(HeaderMatch {
                name: name.clone(),
                value: StringMatch::parse(v, false),
            }))
        })
    } else if let Some(b) = map_key("request.auth.claims")? {
        let path = parse_claim_path(&b);
        Box::new(move |v| {
            Ok(Matcher::Claim(ClaimMatch {
                path: path.clone(),
                value: StringMatch::parse(v, false),
            }))
        })
    } else if key.starts_with("experimental.envoy.filters.") {
        Box::new(|_| Ok(Matcher::Absent))
    } else {
        match key {
            "source.ip" => Box::new(|v| IpMatch::parse(v).map(Matcher::SourceIp)),
            "remote.ip" => Box::new(|v| IpMatch::parse(v).map(Matcher::RemoteIp)),
            "destination.ip" => Box::new(|v| IpMatch::parse(v).map(Matcher::DestinationIp)),
            "destination.port" => Box::new(|v| PortMatch::parse(v).map(Matcher::Port)),
            "connection.sni" => Box::new(|v| Ok(Matcher::Sni(StringMatch::parse(v, false)))),
            "request.auth.principal" => {
                Box::new(|v| Ok(Matcher::Principal(PrincipalMatch::parse(v))))
            }
            "request.auth.audiences" => Box::new(|v| {
                Ok(Matcher::Claim(ClaimMatch {
                    path: vec!["aud".into()],
                    value: StringMatch::parse(v, false),
                }))
            }),
            "request.auth.presenter" => Box::new(|v| {
                Ok(Matcher::Claim(ClaimMatch {
                    path: vec!["azp".into()],
                    value: StringMatch::parse(v, false),
                }))
            }),
            "source.principal" => Box::new(|v| {
                Ok(Matcher::Identity(IdentityMatch::Principal(
                    StringMatch::parse(v, false),
                )))
            }),
            "source.namespace" => Box::new(|v| {
                Ok(Matcher::Identity(IdentityMatch::Namespace(
                    StringMatch::parse(v, false),
                )))
            }),
            "source.serviceAccount" => {
                let ns = policy_ns.to_string();
                Box::new(move |v| service_account(v, &ns))
            }
            "source.trustDomain" => Box::new(|v| {
                Ok(Matcher::Identity(IdentityMatch::TrustDomain(
                    StringMatch::parse(v, false),
                )))
            }),
            "destination.namespace" => {
                return Err(key_err(
                    "attribute destination.namespace is replaced by the metadata.namespace".into(),
                ));
            }
            k if k.starts_with("destination.labels") => {
                return Err(key_err(
                    "attribute destination.labels is replaced by the workload selector".into(),
                ));
            }
            "destination.name" | "destination.user" => {
                return Err(key_err(format!(
                    "deprecated attribute {key}: only supported in v1alpha1"
                )));
            }
            _ => {
                let hint = did_you_mean(key)
                    .map(|k| format!("; did you mean {k}?"))
                    .unwrap_or_default();
                return Err(key_err(format!("unknown attribute {key}{hint}")));
            }
        }
    };
    Ok(
        field("values", "notValues", &c.values, &c.not_values, at, parse).map(|f| Clause {
            fields: f
                .map(|mut f| {
                    f.name = key.to_string();
                    f.not_name = format!("{key} notValues");
                    f
                })
                .into_iter()
                .collect(),
        }),
    )
}

/// The keys written `prefix[name]`.
const MAP_KEYS: [&str; 2] = ["request.headers", "request.auth.claims"];

/// The accepted key closest to an unknown one, if it is close enough to be a typo, written out
/// in full: the name of a map key is kept (`request.header[x-user]` gives
/// `request.headers[x-user]`, `request.auth.claim.role` gives `request.auth.claims[role]`).
pub fn did_you_mean(key: &str) -> Option<String> {
    use meshguard_model::suggest::{closest, edit_distance};
    let near_map = |stem: &str| {
        MAP_KEYS
            .into_iter()
            .map(|m| (edit_distance(stem, m), m))
            .filter(|(d, _)| *d <= 2)
            .min_by_key(|(d, _)| *d)
            .map(|(_, m)| m)
    };
    // `stem[name]...` with a misspelled stem.
    if let Some(i) = key.find('[') {
        let (stem, rest) = key.split_at(i);
        if let Some(m) = near_map(stem) {
            return Some(format!("{m}{rest}"));
        }
    }
    // `stem.name`: a dot written for the brackets, maybe with a misspelled stem.
    for (i, _) in key.match_indices('.') {
        let (Some(stem), Some(name)) = (key.get(..i), key.get(i + 1..)) else {
            continue;
        };
        if !name.is_empty()
            && !name.contains(['[', ']'])
            && let Some(m) = near_map(stem)
        {
            return Some(format!("{m}[{name}]"));
        }
    }
    let stem = key.split('[').next().unwrap_or(key);
    let k = closest(
        stem,
        CONDITION_KEYS.iter().map(|k| k.trim_end_matches("[]")),
        3,
    )?;
    Some(
        match CONDITION_KEYS
            .iter()
            .find(|c| c.trim_end_matches("[]") == k)
        {
            Some(c) if c.ends_with("[]") => format!("{k}[<name>]"),
            _ => k.to_string(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn did_you_mean_keeps_the_name() {
        for (typo, hint) in [
            ("request.auth.claim.role", "request.auth.claims[role]"),
            ("request.auth.claim[groups]", "request.auth.claims[groups]"),
            ("request.auth.claim[a][b]", "request.auth.claims[a][b]"),
            ("request.header[x-user]", "request.headers[x-user]"),
            ("request.headers.x-user", "request.headers[x-user]"),
            ("requests.header.x-user", "request.headers[x-user]"),
            ("request.header", "request.headers[<name>]"),
            ("source.ips", "source.ip"),
            ("request.auth.principals", "request.auth.principal"),
            ("destination.prot", "destination.port"),
        ] {
            assert_eq!(did_you_mean(typo).as_deref(), Some(hint), "{typo}");
        }
        assert_eq!(did_you_mean("completely.different.thing"), None);
    }
}
