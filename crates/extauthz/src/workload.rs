//! Which workload a Check is decided for (`meshguard ext-authz --workload-from-request`).
//!
//! One `meshguard ext-authz` can serve every workload of a namespace or of the cluster: the
//! Check's destination address (in a sidecar, the Pod's IP) names a Pod, and that Pod's
//! namespace and labels select the policies, exactly as `--namespace/--labels` would (the
//! same selection and compilation, `meshguard_runtime::state::compile_snapshot`). When no Pod
//! has the address, the destination principal (`spiffe://TD/ns/NS/sa/SA`, the sidecar's own
//! certificate) gives the namespace, without labels: namespace-wide and root-namespace
//! policies apply, selector policies cannot. Nothing else is guessed: without either the
//! Check is denied ([`NoWorkload`]).
//!
//! Owns the choice ([`PerRequest::choose`]) and the bounded cache of compiled snapshots, one
//! per distinct (namespace, labels), each valid for one policy generation: a new generation
//! (any change to the policies in effect) compiles a workload again on its next Check, and
//! new labels are another key; the remote key fetchers those snapshots use, stopped when no
//! cached workload names their source any more; and the cache's part of `/config_dump`
//! ([`PerRequest::dump`]). Does not own where Pods and policies come from (a
//! [`Directory`]: the Kubernetes source's Pod watch and store), deciding (the runtime), or
//! the answer and log line ([`crate::server`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use meshguard_engine::VerifiedCache;
use meshguard_jwks::JwksManager;
use meshguard_jwks::RemoteKeySource;
use meshguard_model::{PolicySet, Workload};
use meshguard_runtime::Snapshot;
use meshguard_runtime::state::compile_snapshot;
use serde::Serialize;
use serde_json::{Value, json};

/// How the workload of a Check was found (the access log's `workload.from`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Found {
    /// `--namespace/--labels` (or `--pod`): one workload for every Check.
    #[serde(rename = "fixed")]
    Fixed,
    /// The destination address is a Pod's IP.
    #[serde(rename = "pod-ip")]
    PodIp,
    /// No Pod has the destination address; the destination principal's namespace, no labels.
    #[serde(rename = "principal-namespace")]
    PrincipalNamespace,
}

impl Found {
    pub fn as_str(self) -> &'static str {
        match self {
            Found::Fixed => "fixed",
            Found::PodIp => "pod-ip",
            Found::PrincipalNamespace => "principal-namespace",
        }
    }
}

/// What a [`Directory`] knows of an IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodLookup {
    /// One Pod has it.
    One {
        namespace: String,
        name: String,
        labels: BTreeMap<String, String>,
    },
    /// No Pod has it (or the directory holds no Pods).
    None,
    /// Several Pods claim it; their `namespace/name`s.
    Many(Vec<String>),
}

/// Where per-request mode learns Pods and policies: the Kubernetes source.
pub trait Directory: Send + Sync + fmt::Debug {
    /// The Pod whose IP `ip` is.
    fn pod_by_ip(&self, ip: IpAddr) -> PodLookup;
    /// The policies in effect that can apply to `workload` (its namespace's and the root
    /// namespace's).
    fn policy_set_for(&self, workload: &Workload) -> PolicySet;
    /// Whether the policies of `namespace` are read at all (a source scoped to one namespace
    /// reads that one and the root namespace).
    fn serves(&self, namespace: &str) -> bool;
}

/// Why a Check has no workload: it is denied (403), never decided against a guess.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoWorkload {
    /// No Pod has the address and the Check carries no destination principal (plaintext).
    NoPodNoPrincipal,
    /// No Pod has the address and the destination principal is not `spiffe://TD/ns/NS/sa/SA`.
    PrincipalNotSpiffe(String),
    /// Several Pods claim the address.
    Ambiguous(Vec<String>),
    /// The Pod's namespace and the destination principal's disagree: the address may have
    /// moved to another Pod that the watch has not reported yet.
    PrincipalMismatch {
        pod: String,
        principal_namespace: String,
    },
    /// The workload's namespace is not one whose policies are read.
    NotServed { namespace: String, found: Found },
    /// The policies do not compile for the workload (and none did before).
    NotCompiled { workload: String, error: String },
}

impl fmt::Display for NoWorkload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoWorkload::NoPodNoPrincipal => {
                write!(
                    f,
                    "no Pod has this IP and the Check carries no destination principal"
                )
            }
            NoWorkload::PrincipalNotSpiffe(p) => write!(
                f,
                "no Pod has this IP and the destination principal {p:?} is not spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT"
            ),
            NoWorkload::Ambiguous(pods) => {
                write!(f, "several Pods have this IP: {}", pods.join(", "))
            }
            NoWorkload::PrincipalMismatch {
                pod,
                principal_namespace,
            } => write!(
                f,
                "the IP is Pod {pod}, but the destination principal is of namespace {principal_namespace}"
            ),
            NoWorkload::NotServed { namespace, found } => write!(
                f,
                "namespace {namespace} (from the {}) is not one whose policies are read",
                match found {
                    Found::PodIp => "Pod's IP",
                    Found::PrincipalNamespace | Found::Fixed => "destination principal",
                }
            ),
            NoWorkload::NotCompiled { workload, error } => {
                write!(f, "the policies do not compile for {workload}: {error}")
            }
        }
    }
}

impl NoWorkload {
    /// A word for metrics and `response_code_details`-like fields.
    pub fn code(&self) -> &'static str {
        match self {
            NoWorkload::NoPodNoPrincipal => "no_pod_no_principal",
            NoWorkload::PrincipalNotSpiffe(_) => "principal_not_spiffe",
            NoWorkload::Ambiguous(_) => "ambiguous_ip",
            NoWorkload::PrincipalMismatch { .. } => "principal_mismatch",
            NoWorkload::NotServed { .. } => "namespace_not_served",
            NoWorkload::NotCompiled { .. } => "not_compiled",
        }
    }
}

/// The namespace of a SPIFFE ID as Istio issues them: `spiffe://TD/ns/NS/sa/SA`.
pub fn spiffe_namespace(principal: &str) -> Option<&str> {
    let rest = principal.strip_prefix("spiffe://")?;
    let mut parts = rest.split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some(td), Some("ns"), Some(ns), Some("sa"), Some(sa), None)
            if !td.is_empty() && !ns.is_empty() && !sa.is_empty() =>
        {
            Some(ns)
        }
        _ => None,
    }
}

/// The workload chosen for a Check, and the snapshot compiled for it.
#[derive(Clone, Debug)]
pub struct Chosen {
    pub found: Found,
    /// `namespace/name`, when found by the Pod's IP.
    pub pod: Option<String>,
    pub snapshot: Arc<Snapshot>,
}

type Key = (String, BTreeMap<String, String>);

/// Pod names remembered per cached workload, for `/config_dump` (the most recent).
const PODS_SHOWN: usize = 16;

#[derive(Debug)]
struct Cached {
    snapshot: Arc<Snapshot>,
    /// The cache's clock when last used: the least recent goes first.
    used: u64,
    /// How Checks found this workload (the same namespace without labels can be a Pod's or
    /// a principal's).
    found: Vec<Found>,
    /// `namespace/name` of the Pods whose IPs named it, the most recent last.
    pods: VecDeque<String>,
}

impl Cached {
    fn seen(&mut self, found: Found, pod: Option<&str>) {
        if !self.found.contains(&found) {
            self.found.push(found);
        }
        if let Some(pod) = pod {
            if let Some(i) = self.pods.iter().position(|p| p == pod) {
                self.pods.remove(i);
            }
            self.pods.push_back(pod.to_string());
            if self.pods.len() > PODS_SHOWN {
                self.pods.pop_front();
            }
        }
    }
}

#[derive(Debug, Default)]
struct Cache {
    entries: HashMap<Key, Cached>,
    clock: u64,
}

/// Per-request workloads: the directory, and the compiled snapshots of the workloads met.
#[derive(Debug)]
pub struct PerRequest {
    directory: Arc<dyn Directory>,
    /// Root namespace and trust domains of every workload (the served workload's).
    template: Workload,
    /// The remote key fetchers of the cached workloads: one per source, shared by every
    /// workload that names it, stopped when no cached workload names it any more.
    jwks: JwksManager,
    verified: Option<Arc<VerifiedCache>>,
    capacity: usize,
    cache: Mutex<Cache>,
}

impl PerRequest {
    /// `template`: the root namespace and trust domains every workload gets; `capacity`: how
    /// many compiled workloads are kept (at least 1); `token_cache`: verified tokens
    /// remembered across workloads (0: none).
    pub fn new(
        directory: Arc<dyn Directory>,
        template: Workload,
        jwks: JwksManager,
        token_cache: usize,
        capacity: usize,
    ) -> PerRequest {
        PerRequest {
            directory,
            template,
            jwks,
            verified: (token_cache > 0).then(|| Arc::new(VerifiedCache::new(token_cache))),
            capacity: capacity.max(1),
            cache: Mutex::new(Cache::default()),
        }
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The workload for a Check to `destination` whose destination principal is `principal`
    /// (empty or `None` over plaintext), with its snapshot for policy `generation`.
    pub fn choose(
        &self,
        destination: IpAddr,
        principal: Option<&str>,
        generation: u64,
    ) -> Result<Chosen, NoWorkload> {
        let principal = principal.filter(|p| !p.is_empty());
        let (namespace, labels, found, pod) = match self.directory.pod_by_ip(destination) {
            PodLookup::One {
                namespace,
                name,
                labels,
            } => {
                let pod = format!("{namespace}/{name}");
                if let Some(ns) = principal.and_then(spiffe_namespace)
                    && ns != namespace
                {
                    return Err(NoWorkload::PrincipalMismatch {
                        pod,
                        principal_namespace: ns.to_string(),
                    });
                }
                (namespace, labels, Found::PodIp, Some(pod))
            }
            PodLookup::Many(pods) => return Err(NoWorkload::Ambiguous(pods)),
            PodLookup::None => {
                let Some(principal) = principal else {
                    return Err(NoWorkload::NoPodNoPrincipal);
                };
                let ns = spiffe_namespace(principal)
                    .ok_or_else(|| NoWorkload::PrincipalNotSpiffe(principal.to_string()))?;
                (
                    ns.to_string(),
                    BTreeMap::new(),
                    Found::PrincipalNamespace,
                    None,
                )
            }
        };
        if !self.directory.serves(&namespace) {
            return Err(NoWorkload::NotServed { namespace, found });
        }
        let snapshot = self.snapshot_for((namespace, labels), generation, found, pod.as_deref())?;
        Ok(Chosen {
            found,
            pod,
            snapshot,
        })
    }

    /// The snapshot of `key` for `generation`: cached, or compiled now.
    fn snapshot_for(
        &self,
        key: Key,
        generation: u64,
        found: Found,
        pod: Option<&str>,
    ) -> Result<Arc<Snapshot>, NoWorkload> {
        let stale = {
            let mut cache = self.cache();
            cache.clock += 1;
            let now = cache.clock;
            match cache.entries.get_mut(&key) {
                Some(c) if c.snapshot.generation == generation => {
                    c.used = now;
                    c.seen(found, pod);
                    return Ok(c.snapshot.clone());
                }
                Some(c) => Some(c.snapshot.clone()),
                None => None,
            }
        };
        let mut workload = self.template.clone();
        workload.namespace.clone_from(&key.0);
        workload.labels.clone_from(&key.1);
        let set = self.directory.policy_set_for(&workload);
        // Compiled outside the lock: other workloads' Checks go on meanwhile.
        let mut snapshot = match compile_snapshot(
            set,
            &workload,
            &self.jwks,
            &self.verified,
            generation,
        ) {
            Ok(s) => s,
            Err(errors) => {
                let error = errors
                    .0
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                tracing::error!(workload = %workload.describe(), %error, "the policies do not compile for this workload; keeping its last good policies");
                // As a reload keeps the last good snapshot.
                return stale.ok_or_else(|| NoWorkload::NotCompiled {
                    workload: workload.describe(),
                    error,
                });
            }
        };
        let mut cache = self.cache();
        let used = cache.clock;
        if let Some(c) = cache.entries.get_mut(&key)
            && c.snapshot.generation > generation
        {
            // Another Check compiled a later generation meanwhile: keep that one (this
            // Check, of the older generation, is decided with what it compiled).
            c.seen(found, pod);
            return Ok(Arc::new(snapshot));
        }
        // Fetchers are stopped under the cache lock only (`retain_fetchers`); one this
        // compilation asked for may have been stopped meanwhile (the last workload naming it
        // was evicted): ask again, which starts it anew.
        for (source, (keys, timeout)) in &mut snapshot.remote {
            let live = self.jwks.source(source, *timeout);
            if !Arc::ptr_eq(&live, keys) {
                *keys = live;
            }
        }
        let snapshot = Arc::new(snapshot);
        let mut dropped = false;
        if cache.entries.len() >= self.capacity && !cache.entries.contains_key(&key) {
            let oldest = cache
                .entries
                .iter()
                .min_by_key(|(_, c)| c.used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                cache.entries.remove(&k);
                dropped = true;
            }
        }
        let mut entry = Cached {
            snapshot: snapshot.clone(),
            used,
            found: Vec::new(),
            pods: VecDeque::new(),
        };
        if let Some(old) = cache.entries.remove(&key) {
            // A new generation of a cached workload: what was seen of it stays.
            entry.found = old.found;
            entry.pods = old.pods;
            dropped = true;
        }
        entry.seen(found, pod);
        cache.entries.insert(key, entry);
        if dropped {
            self.retain_fetchers(&cache);
        }
        Ok(snapshot)
    }

    /// Stops the fetchers of the key sources that no cached workload names any more (an
    /// evicted workload, or one compiled again without them). Called with the cache locked,
    /// so that a workload being inserted cannot lose a fetcher it was just given. Checks in
    /// flight with an evicted snapshot keep the keys it holds.
    fn retain_fetchers(&self, cache: &Cache) {
        let needed: HashSet<&RemoteKeySource> = cache
            .entries
            .values()
            .flat_map(|c| c.snapshot.remote.keys())
            .collect();
        let stopped = self.jwks.retain(|s| needed.contains(s));
        if stopped > 0 {
            tracing::debug!(
                stopped,
                "remote JWKS fetchers stopped: no cached workload uses them"
            );
        }
    }

    /// The `workloads` section of `/config_dump`: the cached workloads, the most recently
    /// used first, with how they were found, their Pods, the policy generation they were
    /// compiled for and what applies to them; the cache's size and bound; their key sources.
    pub fn dump(&self) -> Value {
        let cache = self.cache();
        let mut entries: Vec<(&Key, &Cached)> = cache.entries.iter().collect();
        entries.sort_by_key(|(_, c)| std::cmp::Reverse(c.used));
        let cached: Vec<Value> = entries
            .into_iter()
            .map(|((namespace, labels), c)| {
                let snap = &c.snapshot;
                json!({
                    "namespace": namespace,
                    "labels": labels,
                    "found": c.found,
                    "pods": c.pods,
                    "generation": snap.generation,
                    "compiled_at": snap.loaded_at,
                    "applied": snap.summary.applied().map(|r| format!("{} {}", r.kind.as_str(), r.key)).collect::<Vec<_>>(),
                    "jwks_uris": snap.remote.keys().map(ToString::to_string).collect::<Vec<_>>(),
                })
            })
            .collect();
        let size = cached.len();
        drop(cache);
        json!({
            "cached": cached,
            "size": size,
            "capacity": self.capacity,
            "jwks": self.jwks.status(),
        })
    }

    /// Workloads compiled and kept.
    pub fn cached(&self) -> usize {
        self.cache().entries.len()
    }

    /// Stops the remote key fetchers (at shutdown).
    pub fn shutdown(&self) {
        self.jwks.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_give_their_namespace_and_nothing_else_does() {
        assert_eq!(
            spiffe_namespace("spiffe://cluster.local/ns/bar/sa/sleep"),
            Some("bar")
        );
        for no in [
            "cluster.local/ns/bar/sa/sleep",
            "spiffe://cluster.local/ns/bar",
            "spiffe://cluster.local/ns//sa/x",
            "spiffe:///ns/bar/sa/x",
            "spiffe://td/ns/bar/sa/x/extra",
            "spiffe://td/namespace/bar/sa/x",
        ] {
            assert_eq!(spiffe_namespace(no), None, "{no}");
        }
    }

    const NS_WIDE: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-only, namespace: bar}
spec:
  rules: [{to: [{operation: {methods: ["GET"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules: [{to: [{operation: {methods: ["POST"]}}]}]
"#;

    #[derive(Debug)]
    struct Fake {
        set: Mutex<PolicySet>,
        pods: HashMap<IpAddr, PodLookup>,
        served: Option<&'static str>,
    }

    impl Directory for Fake {
        fn pod_by_ip(&self, ip: IpAddr) -> PodLookup {
            self.pods.get(&ip).cloned().unwrap_or(PodLookup::None)
        }
        fn policy_set_for(&self, w: &Workload) -> PolicySet {
            let mut set = self.set.lock().unwrap().clone();
            set.authorization_policies
                .retain(|p| p.namespace == w.namespace || p.namespace == w.root_namespace);
            set
        }
        fn serves(&self, ns: &str) -> bool {
            self.served.is_none_or(|s| s == ns)
        }
    }

    fn set(yaml: &str) -> PolicySet {
        meshguard_model::load::load_str(
            std::path::Path::new("test.yaml"),
            yaml,
            &Default::default(),
        )
        .unwrap()
    }

    fn per_request(served: Option<&'static str>, capacity: usize) -> (PerRequest, Arc<Fake>) {
        let pods = [
            (
                "10.0.0.1".parse().unwrap(),
                PodLookup::One {
                    namespace: "foo".into(),
                    name: "httpbin-1".into(),
                    labels: [("app".to_string(), "httpbin".to_string())].into(),
                },
            ),
            (
                "10.0.0.2".parse().unwrap(),
                PodLookup::One {
                    namespace: "foo".into(),
                    name: "other-1".into(),
                    labels: [("app".to_string(), "other".to_string())].into(),
                },
            ),
            (
                "10.0.0.3".parse().unwrap(),
                PodLookup::Many(vec!["foo/a".into(), "bar/b".into()]),
            ),
        ]
        .into_iter()
        .collect();
        let fake = Arc::new(Fake {
            set: Mutex::new(set(NS_WIDE)),
            pods,
            served,
        });
        let jwks = JwksManager::new(Default::default(), Default::default()).unwrap();
        let p = PerRequest::new(
            fake.clone(),
            Workload::new("foo", BTreeMap::new()),
            jwks,
            0,
            capacity,
        );
        (p, fake)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policies(c: &Chosen) -> Vec<String> {
        c.snapshot
            .compiled
            .policies()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect()
    }

    #[test]
    fn the_pod_ip_picks_the_workload_and_the_principal_its_namespace_otherwise() {
        let (p, _) = per_request(None, 8);
        let c = p.choose(ip("10.0.0.1"), None, 1).unwrap();
        assert_eq!(
            (c.found, c.pod.as_deref()),
            (Found::PodIp, Some("foo/httpbin-1"))
        );
        assert_eq!(policies(&c), ["foo/httpbin"]);
        assert_eq!(c.snapshot.compiled.workload.labels["app"], "httpbin");
        let c = p.choose(ip("10.0.0.2"), None, 1).unwrap();
        assert!(policies(&c).is_empty());
        let bar = "spiffe://cluster.local/ns/bar/sa/sleep";
        let c = p.choose(ip("10.9.9.9"), Some(bar), 1).unwrap();
        assert_eq!(
            (c.found, c.pod.as_deref()),
            (Found::PrincipalNamespace, None)
        );
        assert_eq!(policies(&c), ["bar/get-only"]);
        assert!(c.snapshot.compiled.workload.labels.is_empty());
        // The Pod wins over the principal, when they agree on the namespace.
        let foo = "spiffe://cluster.local/ns/foo/sa/httpbin";
        assert_eq!(
            p.choose(ip("10.0.0.1"), Some(foo), 1).unwrap().found,
            Found::PodIp
        );
    }

    #[test]
    fn no_pod_and_no_usable_principal_is_no_workload() {
        let (p, _) = per_request(None, 8);
        assert_eq!(
            p.choose(ip("10.9.9.9"), None, 1).unwrap_err(),
            NoWorkload::NoPodNoPrincipal
        );
        assert_eq!(
            p.choose(ip("10.9.9.9"), Some(""), 1).unwrap_err(),
            NoWorkload::NoPodNoPrincipal
        );
        assert_eq!(
            p.choose(ip("10.9.9.9"), Some("cluster.local/ns/bar/sa/x"), 1)
                .unwrap_err()
                .code(),
            "principal_not_spiffe"
        );
        assert_eq!(
            p.choose(ip("10.0.0.3"), None, 1).unwrap_err().code(),
            "ambiguous_ip"
        );
        let e = p
            .choose(ip("10.0.0.1"), Some("spiffe://td/ns/bar/sa/x"), 1)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the IP is Pod foo/httpbin-1, but the destination principal is of namespace bar"
        );
    }

    #[test]
    fn a_namespace_not_read_is_no_workload() {
        let (p, _) = per_request(Some("foo"), 8);
        assert!(p.choose(ip("10.0.0.1"), None, 1).is_ok());
        let e = p
            .choose(ip("10.9.9.9"), Some("spiffe://td/ns/bar/sa/x"), 1)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "namespace bar (from the destination principal) is not one whose policies are read"
        );
    }

    #[test]
    fn a_new_generation_compiles_again_and_the_cache_is_bounded() {
        let (p, fake) = per_request(None, 2);
        let first = p.choose(ip("10.0.0.1"), None, 1).unwrap();
        let again = p.choose(ip("10.0.0.1"), None, 1).unwrap();
        assert!(Arc::ptr_eq(&first.snapshot, &again.snapshot), "cached");
        // The policy changes: generation 2 sees it.
        fake.set.lock().unwrap().authorization_policies.clear();
        let after = p.choose(ip("10.0.0.1"), None, 2).unwrap();
        assert!(policies(&after).is_empty());
        p.choose(ip("10.0.0.2"), None, 2).unwrap();
        p.choose(ip("10.9.9.9"), Some("spiffe://td/ns/bar/sa/x"), 2)
            .unwrap();
        assert_eq!(p.cached(), 2);
        // The least recently used (10.0.0.1's workload) went.
        let back = p.choose(ip("10.0.0.1"), None, 2).unwrap();
        assert!(!Arc::ptr_eq(&after.snapshot, &back.snapshot));
    }

    const REMOTE_KEYS: &str = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: httpbin-jwt, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  jwtRules: [{issuer: "https://own.example", jwksUri: "http://127.0.0.1:9/own.json"}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: mesh-jwt, namespace: istio-system}
spec:
  jwtRules: [{issuer: "https://mesh.example", jwksUri: "http://127.0.0.1:9/mesh.json"}]
"#;

    /// The sources the per-request fetchers run for.
    fn fetching(p: &PerRequest) -> Vec<String> {
        p.jwks.status().into_iter().map(|s| s.source).collect()
    }

    fn handle(c: &Chosen, uri: &str) -> Arc<meshguard_jwks::RemoteKeys> {
        c.snapshot
            .remote
            .iter()
            .find(|(s, _)| s.to_string() == uri)
            .map(|(_, (keys, _))| keys.clone())
            .unwrap_or_else(|| panic!("{uri} not in {:?}", c.snapshot.remote.keys()))
    }

    const OWN: &str = "http://127.0.0.1:9/own.json";
    const MESH: &str = "http://127.0.0.1:9/mesh.json";

    #[tokio::test]
    async fn an_evicted_workloads_fetcher_stops_and_a_shared_one_stays() {
        let (p, fake) = per_request(None, 1);
        *fake.set.lock().unwrap() = set(REMOTE_KEYS);
        let httpbin = p.choose(ip("10.0.0.1"), None, 1).unwrap();
        assert_eq!(fetching(&p), [MESH, OWN]);
        // app=other evicts app=httpbin (capacity 1): only the mesh-wide source is needed.
        let other = p.choose(ip("10.0.0.2"), None, 1).unwrap();
        assert_eq!(p.cached(), 1);
        assert_eq!(fetching(&p), [MESH]);
        // The same fetcher, not a new one: its keys were never dropped.
        assert!(Arc::ptr_eq(&handle(&httpbin, MESH), &handle(&other, MESH)));
        // app=httpbin again: its source is fetched anew.
        let again = p.choose(ip("10.0.0.1"), None, 1).unwrap();
        assert_eq!(fetching(&p), [MESH, OWN]);
        assert!(!Arc::ptr_eq(&handle(&httpbin, OWN), &handle(&again, OWN)));
        assert!(Arc::ptr_eq(&handle(&httpbin, MESH), &handle(&again, MESH)));
        p.shutdown();
    }

    #[tokio::test]
    async fn a_fetcher_no_policy_names_any_more_stops_on_the_next_compilation() {
        let (p, fake) = per_request(None, 8);
        *fake.set.lock().unwrap() = set(REMOTE_KEYS);
        p.choose(ip("10.0.0.1"), None, 1).unwrap();
        p.choose(ip("10.0.0.2"), None, 1).unwrap();
        assert_eq!(fetching(&p), [MESH, OWN]);
        // httpbin's RequestAuthentication goes (generation 2): its workload is compiled
        // again on its next Check, and the source nothing names stops.
        fake.set
            .lock()
            .unwrap()
            .request_authentications
            .retain(|r| r.name != "httpbin-jwt");
        let c = p.choose(ip("10.0.0.1"), None, 2).unwrap();
        assert_eq!(c.snapshot.remote.len(), 1);
        assert_eq!(fetching(&p), [MESH]);
        assert_eq!(p.cached(), 2);
        p.shutdown();
    }
}
