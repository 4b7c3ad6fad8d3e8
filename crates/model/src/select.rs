//! Which resources apply to a workload, as Istio attaches them to a sidecar.
//!
//! Owns the attachment rule: the workload's namespace plus the root namespace, selector
//! labels a subset of the workload's labels, and `targetRef(s)` resources ignored (they attach
//! to gateways and waypoints, which meshguard does not emulate yet); and [`summarize`], the
//! account of what applies to a workload that `validate` and start-up messages print. Does not
//! own how the applicable resources combine; that is the compiler's job.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::load::PolicySet;
use crate::types::{Action, PolicyTargetReference, Resource, WorkloadSelector};

/// The Istio default for `meshConfig.rootNamespace`.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// Istio's default trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// The identity of the workload meshguard protects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub root_namespace: String,
    /// The mesh's trust domain, then its aliases: policies' principals are expanded to all of
    /// them (`crate::peer_authn` docs name the rule's home, the policy crate applies it).
    pub trust_domains: Vec<String>,
}

impl Workload {
    pub fn new(namespace: impl Into<String>, labels: BTreeMap<String, String>) -> Self {
        Workload {
            namespace: namespace.into(),
            labels,
            root_namespace: DEFAULT_ROOT_NAMESPACE.to_string(),
            trust_domains: vec![DEFAULT_TRUST_DOMAIN.to_string()],
        }
    }

    /// The mesh's trust domain followed by its aliases.
    pub fn with_trust_domains(mut self, trust_domains: Vec<String>) -> Self {
        if !trust_domains.is_empty() {
            self.trust_domains = trust_domains;
        }
        self
    }

    pub fn with_root_namespace(mut self, root: impl Into<String>) -> Self {
        self.root_namespace = root.into();
        self
    }

    /// The labels as `app=httpbin,version=v1` (sorted; empty when there are none).
    pub fn labels_text(&self) -> String {
        render_labels(&self.labels)
    }

    /// `namespace foo, labels app=httpbin,version=v1` (or `namespace foo, no labels`), as the
    /// proxy's summaries and `validate`'s warnings name the workload.
    pub fn describe(&self) -> String {
        if self.labels.is_empty() {
            format!("namespace {}, no labels", self.namespace)
        } else {
            format!(
                "namespace {}, labels {}",
                self.namespace,
                render_labels(&self.labels)
            )
        }
    }
}

/// Why a resource does or does not apply, for `check` and `/config_dump`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    Applies,
    OtherNamespace,
    SelectorMismatch,
    TargetRefIgnored,
}

/// The fields of a spec that decide attachment; implemented by both kinds.
pub trait Attachable {
    fn selector(&self) -> Option<&WorkloadSelector>;
    fn target_refs(&self) -> (Option<&PolicyTargetReference>, &[PolicyTargetReference]);
}

macro_rules! attachable {
    ($ty:ty) => {
        impl Attachable for $ty {
            fn selector(&self) -> Option<&WorkloadSelector> {
                self.selector.as_ref()
            }
            fn target_refs(&self) -> (Option<&PolicyTargetReference>, &[PolicyTargetReference]) {
                (self.target_ref.as_ref(), &self.target_refs)
            }
        }
    };
}
attachable!(crate::types::RequestAuthenticationSpec);
attachable!(crate::types::AuthorizationPolicySpec);

/// Decides whether `resource` applies to `workload` (Istio `ShouldAttachPolicy` for sidecars).
pub fn attachment<S: Attachable>(resource: &Resource<S>, workload: &Workload) -> Attachment {
    if resource.namespace != workload.namespace && resource.namespace != workload.root_namespace {
        return Attachment::OtherNamespace;
    }
    let (single, many) = resource.spec.target_refs();
    if single.is_some() || !many.is_empty() {
        return Attachment::TargetRefIgnored;
    }
    match resource.spec.selector() {
        None => Attachment::Applies,
        Some(sel) => {
            let subset = sel
                .match_labels
                .iter()
                .all(|(k, v)| workload.labels.get(k) == Some(v));
            if subset {
                Attachment::Applies
            } else {
                Attachment::SelectorMismatch
            }
        }
    }
}

/// Parses `k=v,k2=v2` (the `--labels` flag).
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("label {part:?} is not of the form key=value"))?;
        if k.is_empty() {
            return Err(format!("label {part:?} has an empty key"));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Parses the labels file the Kubernetes downward API writes for `fieldRef: metadata.labels`:
/// one `key="value"` line per label, sorted by key, the value quoted as Go's `%q` quotes it
/// (`\"`, `\\`, `\n`, `\t`, `\xNN`, `\uNNNN`, ...). Empty lines are ignored; anything else
/// is an error naming the line.
pub fn parse_labels_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let n = i + 1;
        let (key, quoted) = line
            .split_once('=')
            .ok_or_else(|| format!("line {n}: {line:?} is not of the form key=\"value\""))?;
        if key.is_empty() {
            return Err(format!("line {n}: {line:?} has an empty key"));
        }
        let value = unquote_go(quoted).map_err(|e| format!("line {n}: {line:?}: {e}"))?;
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

/// Undoes Go's `strconv.Quote`: a double-quoted string with Go's escapes.
fn unquote_go(s: &str) -> Result<String, String> {
    let inner = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or("the value is not a double-quoted string")?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Err("an unescaped '\"' inside the value".into()),
            '\\' => {}
            c => {
                out.push(c);
                continue;
            }
        }
        let escaped = chars.next().ok_or("the value ends in a lone '\\'")?;
        let hex = |chars: &mut std::str::Chars<'_>, n: usize| -> Result<u32, String> {
            let digits: String = chars.by_ref().take(n).collect();
            if digits.len() != n {
                return Err(format!("\\{escaped} needs {n} hex digits"));
            }
            u32::from_str_radix(&digits, 16).map_err(|_| format!("bad hex digits {digits:?}"))
        };
        match escaped {
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\u{b}'),
            '\\' => out.push('\\'),
            '"' => out.push('"'),
            // Go writes a byte that is not valid UTF-8 as \xNN; labels are UTF-8, so only
            // ASCII can come back from it.
            'x' => {
                let v = hex(&mut chars, 2)?;
                match char::from_u32(v).filter(char::is_ascii) {
                    Some(c) => out.push(c),
                    None => return Err(format!("\\x{v:02x} is not a UTF-8 character")),
                }
            }
            'u' | 'U' => {
                let v = hex(&mut chars, if escaped == 'u' { 4 } else { 8 })?;
                out.push(char::from_u32(v).ok_or_else(|| format!("U+{v:X} is not a character"))?);
            }
            other => return Err(format!("unknown escape \\{other}")),
        }
    }
    Ok(out)
}

/// The two kinds meshguard enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Kind {
    RequestAuthentication,
    AuthorizationPolicy,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
        }
    }
}

/// One loaded resource and whether it applies to the workload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResourceAttachment {
    pub kind: Kind,
    /// `namespace/name`.
    pub key: String,
    /// The action of an AuthorizationPolicy.
    pub action: Option<Action>,
    #[serde(serialize_with = "serialize_attachment")]
    pub attachment: Attachment,
    pub namespace: String,
    /// The selector's `matchLabels`, when the resource has a selector.
    pub selector: Option<BTreeMap<String, String>>,
}

fn serialize_attachment<S: serde::Serializer>(a: &Attachment, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(a.as_str())
}

impl Attachment {
    /// In words, for logs and warnings.
    pub fn as_str(&self) -> &'static str {
        match self {
            Attachment::Applies => "applies",
            Attachment::OtherNamespace => "in another namespace",
            Attachment::SelectorMismatch => "its selector does not select the workload",
            Attachment::TargetRefIgnored => "targetRef(s) are ignored by sidecars",
        }
    }
}

/// What a loaded policy set means for one workload: how many resources were loaded and which
/// of them apply, by kind (and by action for AuthorizationPolicies). Used by `validate` to warn
/// when nothing applies and by start-up summaries; a set that loads but applies nothing makes
/// a proxy that enforces nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkloadSummary {
    /// Every loaded resource, RequestAuthentications first, in load order.
    pub resources: Vec<ResourceAttachment>,
    /// The workload the resources were matched against.
    #[serde(skip)]
    pub workload: Workload,
}

/// Near misses named per explanation; the rest are counted.
const NEAR_MISSES_LISTED: usize = 10;

fn render_labels(labels: &BTreeMap<String, String>) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.join(",")
}

impl WorkloadSummary {
    /// Resources that apply.
    pub fn applied(&self) -> impl Iterator<Item = &ResourceAttachment> {
        self.resources
            .iter()
            .filter(|r| r.attachment == Attachment::Applies)
    }

    /// Loaded resources of `kind`.
    pub fn loaded_count(&self, kind: Kind) -> usize {
        self.resources.iter().filter(|r| r.kind == kind).count()
    }

    /// Applicable resources of `kind`.
    pub fn applied_count(&self, kind: Kind) -> usize {
        self.applied().filter(|r| r.kind == kind).count()
    }

    /// Applicable AuthorizationPolicies with `action`.
    pub fn applied_action_count(&self, action: Action) -> usize {
        self.applied().filter(|r| r.action == Some(action)).count()
    }

    /// True when resources were loaded but none applies: the workload gets no JWT checks and
    /// no authorization.
    pub fn nothing_applies(&self) -> bool {
        !self.resources.is_empty() && self.applied().next().is_none()
    }

    /// Why `r` does not apply to the workload, in words; `None` when it applies.
    pub fn why_not(&self, r: &ResourceAttachment) -> Option<String> {
        let w = &self.workload;
        Some(match r.attachment {
            Attachment::Applies => return None,
            Attachment::OtherNamespace => format!(
                "namespace {} is neither {} nor the root namespace {}",
                r.namespace, w.namespace, w.root_namespace
            ),
            Attachment::SelectorMismatch => format!(
                "its selector {} is not a subset of the workload's labels",
                render_labels(r.selector.as_ref().unwrap_or(&BTreeMap::new()))
            ),
            Attachment::TargetRefIgnored => {
                "it has a targetRef, which attaches to gateways and waypoints, not sidecars".into()
            }
        })
    }

    /// When [`Self::nothing_applies`], the likely reasons, one per line, bounded whatever the
    /// number of resources: first each near miss (a resource of the workload's or the root
    /// namespace whose selector or targetRef keeps it off the workload; the first ten, then a
    /// count), then the namespaces of the resources in other namespaces. Empty otherwise. The
    /// proxy's start-up and reload warning and `validate`'s warning both print these.
    pub fn why_nothing_applies(&self) -> Vec<String> {
        if !self.nothing_applies() {
            return Vec::new();
        }
        let near: Vec<&ResourceAttachment> = self
            .resources
            .iter()
            .filter(|r| r.attachment != Attachment::OtherNamespace)
            .collect();
        let mut out = self.near_misses(near.iter().copied(), "");
        let elsewhere = self.resources.len() - near.len();
        if elsewhere > 0 {
            let namespaces: std::collections::BTreeSet<&str> = self
                .resources
                .iter()
                .filter(|r| r.attachment == Attachment::OtherNamespace)
                .map(|r| r.namespace.as_str())
                .collect();
            let namespaces: Vec<&str> = namespaces.into_iter().collect();
            let which = if near.is_empty() {
                "the loaded resources are".to_string()
            } else {
                format!("the other {elsewhere} resource(s) are")
            };
            out.push(format!(
                "{which} in namespace(s) {}, neither {} nor the root namespace {}; --namespace names the workload's namespace",
                namespaces.join(", "),
                self.workload.namespace,
                self.workload.root_namespace
            ));
        }
        out
    }
}

impl WorkloadSummary {
    /// True when RequestAuthentications apply but no AuthorizationPolicy does: tokens are
    /// checked, yet none is required (a selector that stopped matching after an edit, say).
    pub fn no_authorization_policy_applies(&self) -> bool {
        self.applied_count(Kind::RequestAuthentication) > 0
            && self.applied_count(Kind::AuthorizationPolicy) == 0
    }

    /// When [`Self::no_authorization_policy_applies`], what that means for requests, in the
    /// words of the proxy's start-up and reload warning and of `validate`'s.
    pub fn no_authorization_policy_warning(&self) -> String {
        format!(
            "no AuthorizationPolicy applies to {}: requests without a token, and with any valid token, are allowed; a RequestAuthentication alone rejects only invalid tokens (401), as Istio does",
            self.workload.describe()
        )
    }

    /// Why each loaded AuthorizationPolicy does not apply, one per line: the first ten, then
    /// a count. Empty when one applies.
    pub fn why_no_authorization_policy_applies(&self) -> Vec<String> {
        if self.applied_count(Kind::AuthorizationPolicy) > 0 {
            return Vec::new();
        }
        self.near_misses(
            self.resources
                .iter()
                .filter(|r| r.kind == Kind::AuthorizationPolicy),
            "AuthorizationPolicy ",
        )
    }

    /// `Kind namespace/name does not apply: why` for each of `resources` that does not apply:
    /// the first [`NEAR_MISSES_LISTED`], then `and N more <what>that do not apply`.
    fn near_misses<'a>(
        &self,
        resources: impl Iterator<Item = &'a ResourceAttachment>,
        what: &str,
    ) -> Vec<String> {
        let mut out: Vec<String> = resources
            .filter_map(|r| {
                Some(format!(
                    "{} {} does not apply: {}",
                    r.kind.as_str(),
                    r.key,
                    self.why_not(r)?
                ))
            })
            .collect();
        let more = out.len().saturating_sub(NEAR_MISSES_LISTED);
        if more > 0 {
            out.truncate(NEAR_MISSES_LISTED);
            out.push(format!("and {more} more {what}that do not apply"));
        }
        out
    }
}

impl std::fmt::Display for WorkloadSummary {
    /// `2 resource(s) loaded (1 RequestAuthentication, 1 AuthorizationPolicy); 2 apply
    /// (1 RequestAuthentication, 1 AuthorizationPolicy: 1 ALLOW)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ra = Kind::RequestAuthentication;
        let ap = Kind::AuthorizationPolicy;
        write!(
            f,
            "{} resource(s) loaded ({} {}, {} {}); {} apply ({} {}, {} {}",
            self.resources.len(),
            self.loaded_count(ra),
            ra.as_str(),
            self.loaded_count(ap),
            ap.as_str(),
            self.applied().count(),
            self.applied_count(ra),
            ra.as_str(),
            self.applied_count(ap),
            ap.as_str(),
        )?;
        let actions: Vec<String> = [Action::Custom, Action::Audit, Action::Deny, Action::Allow]
            .into_iter()
            .filter_map(|a| {
                let n = self.applied_action_count(a);
                (n > 0).then(|| format!("{n} {}", a.as_str()))
            })
            .collect();
        if !actions.is_empty() {
            write!(f, ": {}", actions.join(", "))?;
        }
        f.write_str(")")
    }
}

/// Summarises which resources of `set` apply to `workload` (the rule of [`attachment`]).
pub fn summarize(set: &PolicySet, workload: &Workload) -> WorkloadSummary {
    fn entry<S: Attachable>(
        kind: Kind,
        r: &Resource<S>,
        action: Option<Action>,
        workload: &Workload,
    ) -> ResourceAttachment {
        ResourceAttachment {
            kind,
            key: r.key(),
            action,
            attachment: attachment(r, workload),
            namespace: r.namespace.clone(),
            selector: r.spec.selector().map(|s| s.match_labels.clone()),
        }
    }
    let ras = set
        .request_authentications
        .iter()
        .map(|ra| entry(Kind::RequestAuthentication, ra, None, workload));
    let aps = set.authorization_policies.iter().map(|ap| {
        entry(
            Kind::AuthorizationPolicy,
            ap,
            Some(ap.spec.action),
            workload,
        )
    });
    WorkloadSummary {
        resources: ras.chain(aps).collect(),
        workload: workload.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_downward_api_labels_file_as_kubelet_writes_it() {
        // kubelet's `fieldpath.FormatMap`: sorted `key="value"` lines, `%q` quoting, no final
        // newline.
        let text = "app=\"httpbin\"\npod-template-hash=\"5d8f7c9b4\"\nsecurity.istio.io/tlsMode=\"istio\"\nversion=\"v1\"";
        let labels = parse_labels_file(text).unwrap();
        assert_eq!(labels.len(), 4);
        assert_eq!(labels["app"], "httpbin");
        assert_eq!(labels["security.istio.io/tlsMode"], "istio");
        assert_eq!(parse_labels_file("").unwrap(), BTreeMap::new());
        assert_eq!(parse_labels_file("\n\n").unwrap(), BTreeMap::new());
        assert_eq!(parse_labels_file("a=\"\"\n").unwrap()["a"], "");
        // Go's escapes.
        let odd = parse_labels_file(r#"k="a\"b\\c\td\x41\u00e9\U0001F600""#).unwrap();
        assert_eq!(odd["k"], "a\"b\\c\tdAé😀");
        // A value with `=` in it splits at the first `=`.
        assert_eq!(parse_labels_file(r#"k="a=b""#).unwrap()["k"], "a=b");
    }

    #[test]
    fn a_labels_file_that_is_not_the_downward_api_format_names_the_line() {
        for (text, want) in [
            (
                "app=httpbin",
                "line 1: \"app=httpbin\": the value is not a double-quoted string",
            ),
            (
                "a=\"x\"\nnoequals",
                "line 2: \"noequals\" is not of the form key=\"value\"",
            ),
            ("=\"x\"", "line 1: \"=\\\"x\\\"\" has an empty key"),
            (r#"k="a"b""#, "an unescaped '\"' inside the value"),
            (r#"k="a\""#, "the value ends in a lone"),
            (r#"k="a"#, "the value is not a double-quoted string"),
            (r#"k="\q""#, "unknown escape \\q"),
            (r#"k="\x4""#, "\\x needs 2 hex digits"),
            (r#"k="\xff""#, "\\xff is not a UTF-8 character"),
        ] {
            let e = parse_labels_file(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
