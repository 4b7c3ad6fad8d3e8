//! Istio's `PeerAuthentication` (`security.istio.io` v1 and v1beta1): the resource, its
//! validation, and the mutual-TLS mode it gives a workload's port.
//!
//! Owns: the spec as written in YAML, Istio's validation rules for it, and composing the
//! policies that apply to a workload into one mode per port, as istiod does
//! (`ComposePeerAuthentication`). Does not own serving TLS (the proxy's inbound listener reads
//! the composed [`EffectiveMtls`]) or loading files ([`crate::load`] collects the resources).
//!
//! Composition:
//! * three scopes: the mesh (a policy in the root namespace without a selector), the
//!   workload's namespace (without a selector), the workload (its namespace, with a selector
//!   that is a subset of its labels). A policy with a selector in the root namespace is
//!   ignored, as istiod ignores it.
//! * within a scope the oldest policy wins (`metadata.creationTimestamp`; ties and policies
//!   without one by namespace, then name), not a merge.
//! * starting from PERMISSIVE, each of mesh, namespace, workload overrides the mode when its
//!   `mtls.mode` is set (UNSET or no `mtls` inherits).
//! * `portLevelMtls` counts only on the workload policy, keyed by the port the workload
//!   listens on; an UNSET port inherits the workload's resolved mode.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::select::Workload;
use crate::types::{Resource, WorkloadSelector};

/// `PeerAuthentication.MutualTLS.Mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MtlsMode {
    /// Inherit from the enclosing scope; PERMISSIVE at the top.
    #[default]
    Unset,
    /// Plaintext only.
    Disable,
    /// Mutual TLS and plaintext on the same port.
    Permissive,
    /// Mutual TLS only.
    Strict,
}

impl MtlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Unset => "UNSET",
            MtlsMode::Disable => "DISABLE",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Strict => "STRICT",
        }
    }
}

impl fmt::Display for MtlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `PeerAuthentication.MutualTLS`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MutualTls {
    #[serde(default)]
    pub mode: MtlsMode,
}

/// `security.istio.io/v1.PeerAuthentication` spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerAuthenticationSpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub mtls: Option<MutualTls>,
    /// Keyed by the workload's (container) port, as a string in YAML.
    #[serde(default)]
    pub port_level_mtls: Option<BTreeMap<String, MutualTls>>,
    /// `metadata.creationTimestamp` (RFC 3339), which decides between policies of one scope.
    #[serde(skip)]
    pub created: Option<String>,
}

pub type PeerAuthentication = Resource<PeerAuthenticationSpec>;

impl PeerAuthenticationSpec {
    fn mode(&self) -> MtlsMode {
        self.mtls.as_ref().map_or(MtlsMode::Unset, |m| m.mode)
    }

    /// A selector with no labels counts as none, as in istiod.
    fn has_selector(&self) -> bool {
        self.selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty())
    }
}

/// Istio's validation (`ValidatePeerAuthentication`): `(field, message)` for each problem.
pub fn validate(pa: &PeerAuthentication) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    if let Some(ports) = &pa.spec.port_level_mtls {
        if !pa.spec.has_selector() {
            errs.push((
                "spec.portLevelMtls".to_string(),
                "mesh/namespace peer authentication cannot have port level mTLS (portLevelMtls requires selector)"
                    .to_string(),
            ));
        }
        if ports.is_empty() {
            errs.push((
                "spec.portLevelMtls".to_string(),
                "port level mTLS, if defined, must have at least one element".to_string(),
            ));
        }
        for port in ports.keys() {
            if !matches!(port.parse::<u32>(), Ok(1..=65535)) {
                errs.push((
                    format!("spec.portLevelMtls.{port}"),
                    "port must be in the range 1..65535".to_string(),
                ));
            }
        }
    }
    errs
}

/// The scope a policy has for a workload, or why it does not apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaScope {
    Mesh,
    Namespace,
    Workload,
    /// Another namespace, or a selector that does not match.
    NotApplicable,
    /// In the root namespace with a selector: istiod ignores it.
    RootWithSelector,
}

/// The scope of `pa` for `workload`.
pub fn scope(pa: &PeerAuthentication, workload: &Workload) -> PaScope {
    let in_root = pa.namespace == workload.root_namespace;
    let in_ns = pa.namespace == workload.namespace;
    let selector = pa.spec.selector.as_ref().filter(|_| pa.spec.has_selector());
    match selector {
        None if in_root => PaScope::Mesh,
        None if in_ns => PaScope::Namespace,
        None => PaScope::NotApplicable,
        Some(_) if in_root && !in_ns => PaScope::RootWithSelector,
        Some(sel) if in_ns => {
            let subset = sel
                .match_labels
                .iter()
                .all(|(k, v)| workload.labels.get(k) == Some(v));
            if subset {
                PaScope::Workload
            } else {
                PaScope::NotApplicable
            }
        }
        Some(_) => PaScope::NotApplicable,
    }
}

/// The modes a workload gets: one for every port, some ports their own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EffectiveMtls {
    /// Never UNSET.
    pub mode: MtlsMode,
    /// Ports with their own mode (never UNSET).
    pub ports: BTreeMap<u16, MtlsMode>,
    /// The policies that decided, `namespace/name` by scope (for `/config_dump`).
    pub from: Vec<String>,
    /// The policy that set `mode` (`None`: no policy did, PERMISSIVE by default).
    pub mode_from: Option<String>,
    /// The workload policy that set `ports`.
    pub ports_from: Option<String>,
}

impl EffectiveMtls {
    /// The policy that makes some port STRICT, if any.
    pub fn strict_from(&self) -> Option<&str> {
        if self.mode == MtlsMode::Strict {
            return self.mode_from.as_deref();
        }
        if self.ports.values().any(|m| *m == MtlsMode::Strict) {
            return self.ports_from.as_deref();
        }
        None
    }

    /// Whether any port is STRICT.
    pub fn any_strict(&self) -> bool {
        self.mode == MtlsMode::Strict || self.ports.values().any(|m| *m == MtlsMode::Strict)
    }

    /// The mode of connections to `port` (`GetMutualTLSModeForPort`).
    pub fn for_port(&self, port: u16) -> MtlsMode {
        self.ports.get(&port).copied().unwrap_or(self.mode)
    }
}

/// Composes the policies that apply to `workload` (module docs).
pub fn compose(policies: &[PeerAuthentication], workload: &Workload) -> EffectiveMtls {
    let oldest = |want: PaScope| {
        policies
            .iter()
            .filter(|p| scope(p, workload) == want)
            .min_by(|a, b| {
                // A policy without a timestamp sorts after those with one.
                let ka = (
                    a.spec.created.is_none(),
                    &a.spec.created,
                    &a.namespace,
                    &a.name,
                );
                let kb = (
                    b.spec.created.is_none(),
                    &b.spec.created,
                    &b.namespace,
                    &b.name,
                );
                ka.cmp(&kb)
            })
    };
    let mut out = EffectiveMtls {
        mode: MtlsMode::Permissive,
        ..EffectiveMtls::default()
    };
    for want in [PaScope::Mesh, PaScope::Namespace, PaScope::Workload] {
        let Some(p) = oldest(want) else { continue };
        out.from.push(p.key());
        if p.spec.mode() != MtlsMode::Unset {
            out.mode = p.spec.mode();
            out.mode_from = Some(p.key());
        }
        if want == PaScope::Workload
            && let Some(ports) = &p.spec.port_level_mtls
        {
            out.ports_from = Some(p.key());
            for (port, m) in ports {
                let Ok(port) = port.parse::<u16>() else {
                    continue;
                };
                if port == 0 {
                    continue;
                }
                out.ports.insert(port, m.mode);
            }
        }
    }
    // An UNSET port inherits the workload's resolved mode.
    let mode = out.mode;
    for m in out.ports.values_mut() {
        if *m == MtlsMode::Unset {
            *m = mode;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Origin;

    fn pa(ns: &str, name: &str, yaml_spec: &str, created: Option<&str>) -> PeerAuthentication {
        let mut spec: PeerAuthenticationSpec = serde_saphyr::from_str(yaml_spec).unwrap();
        spec.created = created.map(str::to_string);
        Resource {
            api_version: "security.istio.io/v1".into(),
            name: name.into(),
            namespace: ns.into(),
            annotations: Default::default(),
            origin: Origin {
                file: "t.yaml".into(),
                document: 1,
                object: None,
            },
            spec,
        }
    }

    fn workload() -> Workload {
        Workload::new("foo", [("app".to_string(), "httpbin".to_string())].into())
    }

    fn m(s: &str) -> MtlsMode {
        match s {
            "UNSET" => MtlsMode::Unset,
            "DISABLE" => MtlsMode::Disable,
            "PERMISSIVE" => MtlsMode::Permissive,
            "STRICT" => MtlsMode::Strict,
            _ => unreachable!(),
        }
    }

    const MODES: [&str; 4] = ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"];

    /// Every mesh x namespace x workload x port combination, with "none" (no policy) at the
    /// first three levels too, against the rule: the innermost set mode wins, PERMISSIVE at
    /// the top, the port's own mode over the workload's.
    #[test]
    fn the_innermost_set_mode_wins_at_every_level() {
        let levels: Vec<Option<&str>> = std::iter::once(None)
            .chain(MODES.iter().map(|s| Some(*s)))
            .collect();
        for mesh in &levels {
            for ns in &levels {
                for wl in &levels {
                    for port in &levels {
                        let mut ps = Vec::new();
                        if let Some(mm) = mesh {
                            ps.push(pa(
                                "istio-system",
                                "mesh",
                                &format!("mtls: {{mode: {mm}}}"),
                                None,
                            ));
                        }
                        if let Some(nm) = ns {
                            ps.push(pa("foo", "ns", &format!("mtls: {{mode: {nm}}}"), None));
                        }
                        let wl_policy = match (wl, port) {
                            (None, None) => None,
                            (w, p) => {
                                let mut s = "selector: {matchLabels: {app: httpbin}}\n".to_string();
                                if let Some(w) = w {
                                    s.push_str(&format!("mtls: {{mode: {w}}}\n"));
                                }
                                if let Some(p) = p {
                                    s.push_str(&format!(
                                        "portLevelMtls: {{'8080': {{mode: {p}}}}}\n"
                                    ));
                                }
                                Some(s)
                            }
                        };
                        if let Some(s) = wl_policy {
                            ps.push(pa("foo", "wl", &s, None));
                        }
                        let mut want = MtlsMode::Permissive;
                        for level in [mesh, ns, wl] {
                            if let Some(l) = level
                                && *l != "UNSET"
                            {
                                want = m(l);
                            }
                        }
                        let got = compose(&ps, &workload());
                        assert_eq!(got.mode, want, "{mesh:?} {ns:?} {wl:?} {port:?}");
                        let want_port = match port {
                            Some(p) if *p != "UNSET" => m(p),
                            _ => want,
                        };
                        assert_eq!(
                            got.for_port(8080),
                            want_port,
                            "{mesh:?} {ns:?} {wl:?} {port:?}"
                        );
                        assert_eq!(got.for_port(9090), want);
                    }
                }
            }
        }
    }

    #[test]
    fn the_oldest_policy_of_a_scope_wins() {
        let ps = [
            pa(
                "foo",
                "b-new",
                "mtls: {mode: DISABLE}",
                Some("2024-02-01T00:00:00Z"),
            ),
            pa(
                "foo",
                "a-old",
                "mtls: {mode: STRICT}",
                Some("2024-01-01T00:00:00Z"),
            ),
        ];
        let got = compose(&ps, &workload());
        assert_eq!(got.mode, MtlsMode::Strict);
        assert_eq!(got.from, vec!["foo/a-old".to_string()]);
        // Without timestamps, by name.
        let ps = [
            pa("foo", "b", "mtls: {mode: DISABLE}", None),
            pa("foo", "a", "mtls: {mode: STRICT}", None),
        ];
        assert_eq!(compose(&ps, &workload()).mode, MtlsMode::Strict);
    }

    #[test]
    fn a_root_namespace_policy_with_a_selector_is_ignored() {
        let p = pa(
            "istio-system",
            "r",
            "selector: {matchLabels: {app: httpbin}}\nmtls: {mode: STRICT}",
            None,
        );
        assert_eq!(scope(&p, &workload()), PaScope::RootWithSelector);
        assert_eq!(compose(&[p], &workload()).mode, MtlsMode::Permissive);
    }

    #[test]
    fn port_level_mtls_counts_only_on_workload_policies() {
        // Invalid (validation rejects it), and ignored by composition anyway.
        let p = pa("foo", "ns", "portLevelMtls: {'8080': {mode: STRICT}}", None);
        assert_eq!(
            compose(std::slice::from_ref(&p), &workload()).for_port(8080),
            MtlsMode::Permissive
        );
        let errs = validate(&p);
        assert!(
            errs.iter()
                .any(|(f, m)| f == "spec.portLevelMtls" && m.contains("requires selector")),
            "{errs:?}"
        );
        let p = pa(
            "foo",
            "wl",
            "selector: {matchLabels: {app: httpbin}}\nportLevelMtls: {'0': {mode: STRICT}, '70000': {mode: STRICT}}",
            None,
        );
        let errs = validate(&p);
        assert_eq!(errs.len(), 2, "{errs:?}");
        let p = pa(
            "foo",
            "wl",
            "selector: {matchLabels: {app: httpbin}}\nportLevelMtls: {}",
            None,
        );
        assert!(
            validate(&p)
                .iter()
                .any(|(_, m)| m.contains("at least one element"))
        );
    }

    #[test]
    fn a_selector_that_does_not_match_does_not_apply() {
        let p = pa(
            "foo",
            "wl",
            "selector: {matchLabels: {app: other}}\nmtls: {mode: STRICT}",
            None,
        );
        assert_eq!(compose(&[p], &workload()).mode, MtlsMode::Permissive);
        let p = pa("bar", "ns", "mtls: {mode: STRICT}", None);
        assert_eq!(compose(&[p], &workload()).mode, MtlsMode::Permissive);
    }
}
