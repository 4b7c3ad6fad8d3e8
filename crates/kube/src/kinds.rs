//! The kinds meshguard reads from the API server and the watches it runs.
//!
//! Owns the `security.istio.io` kinds (their `v1` API resources: objects applied as `v1beta1`
//! are served as `v1` too), the Pod kind for `--pod`, which namespaces are read, and the names
//! of watches in messages and metrics. Does not own reading them (`crate::watch`) or what an
//! object means (`crate::store`).

use std::fmt;

use kube::core::{ApiResource, GroupVersionKind};

/// The `security.istio.io` kinds meshguard watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecurityKind {
    RequestAuthentication,
    AuthorizationPolicy,
    PeerAuthentication,
}

impl SecurityKind {
    pub const ALL: [SecurityKind; 3] = [
        SecurityKind::RequestAuthentication,
        SecurityKind::AuthorizationPolicy,
        SecurityKind::PeerAuthentication,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SecurityKind::RequestAuthentication => "RequestAuthentication",
            SecurityKind::AuthorizationPolicy => "AuthorizationPolicy",
            SecurityKind::PeerAuthentication => "PeerAuthentication",
        }
    }

    /// The resource name in URLs and RBAC rules.
    pub fn plural(self) -> &'static str {
        match self {
            SecurityKind::RequestAuthentication => "requestauthentications",
            SecurityKind::AuthorizationPolicy => "authorizationpolicies",
            SecurityKind::PeerAuthentication => "peerauthentications",
        }
    }

    /// The `v1` resource: the CRDs' storage version, which serves every object whatever
    /// version it was applied with.
    pub fn api_resource(self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(meshguard_model::load::SECURITY_GROUP, "v1", self.as_str()),
            self.plural(),
        )
    }
}

/// The Pod kind, for `--pod` (its labels are the workload's) and the Pods by IP.
pub fn pod_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Pod"), "pods")
}

/// What a watch reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WatchKind {
    Security(SecurityKind),
    /// The workload's own Pod (`--pod`), by name.
    Pod(String),
    /// Every Pod of the namespace (or of every namespace), by IP: the workloads of
    /// `ext-authz --workload-from-request` ([`crate::pods`]).
    Pods,
}

/// One watch: a kind in a namespace, or in every namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchId {
    pub kind: WatchKind,
    /// `None`: cluster-wide.
    pub namespace: Option<String>,
}

impl WatchId {
    /// The kind as metrics label it.
    pub fn kind_label(&self) -> &'static str {
        match &self.kind {
            WatchKind::Security(k) => k.as_str(),
            WatchKind::Pod(_) | WatchKind::Pods => "Pod",
        }
    }

    /// The namespace as metrics label it: `*` for a cluster-wide watch.
    pub fn namespace_label(&self) -> String {
        self.namespace.clone().unwrap_or_else(|| "*".to_string())
    }
}

impl fmt::Display for WatchId {
    /// `AuthorizationPolicy in foo`, `AuthorizationPolicy in every namespace`, `Pod foo/httpbin-1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, &self.namespace) {
            (WatchKind::Pod(name), Some(ns)) => write!(f, "Pod {ns}/{name}"),
            (WatchKind::Pod(name), None) => write!(f, "Pod {name}"),
            (WatchKind::Pods, Some(ns)) => write!(f, "Pods in {ns}"),
            (WatchKind::Pods, None) => write!(f, "Pods in every namespace"),
            (WatchKind::Security(k), Some(ns)) => write!(f, "{} in {ns}", k.as_str()),
            (WatchKind::Security(k), None) => write!(f, "{} in every namespace", k.as_str()),
        }
    }
}

/// Which namespaces are read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// The workload's namespace and the root namespace, one watch per kind in each (a Role in
    /// each namespace is enough).
    #[default]
    Namespaces,
    /// Every namespace, one watch per kind (a ClusterRole is needed). Only the workload's and
    /// the root namespace's objects apply to it; the rest are kept and validated.
    Cluster,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Namespaces => "namespaces",
            Scope::Cluster => "cluster",
        }
    }
}

/// The watches for the `security.istio.io` kinds: 3 per namespace read (the workload's and
/// the root namespace, once if they are the same), or 3 cluster-wide.
pub fn security_watches(scope: Scope, namespace: &str, root: &str) -> Vec<WatchId> {
    let namespaces: Vec<Option<String>> = match scope {
        Scope::Cluster => vec![None],
        Scope::Namespaces if namespace == root => vec![Some(namespace.to_string())],
        Scope::Namespaces => vec![Some(namespace.to_string()), Some(root.to_string())],
    };
    let mut out = Vec::new();
    for ns in namespaces {
        for kind in SecurityKind::ALL {
            out.push(WatchId {
                kind: WatchKind::Security(kind),
                namespace: ns.clone(),
            });
        }
    }
    out
}
