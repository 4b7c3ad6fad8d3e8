//! Which resources apply to a workload, as Istio attaches them to a sidecar.
//!
//! Owns the attachment rule only: the workload's namespace plus the root namespace, selector
//! labels a subset of the workload's labels, and `targetRef(s)` resources ignored (they attach
//! to gateways and waypoints, which meshguard does not emulate yet). Does not own how the
//! applicable resources combine; that is the compiler's job.

use std::collections::BTreeMap;

use crate::types::{PolicyTargetReference, Resource, WorkloadSelector};

/// The Istio default for `meshConfig.rootNamespace`.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// The identity of the workload meshguard protects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub root_namespace: String,
}

impl Workload {
    pub fn new(namespace: impl Into<String>, labels: BTreeMap<String, String>) -> Self {
        Workload {
            namespace: namespace.into(),
            labels,
            root_namespace: DEFAULT_ROOT_NAMESPACE.to_string(),
        }
    }

    pub fn with_root_namespace(mut self, root: impl Into<String>) -> Self {
        self.root_namespace = root.into();
        self
    }
}

/// Why a resource does or does not apply, for `check` and `/config_dump`.
#[derive(Clone, Debug, PartialEq, Eq)]
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
