//! The Pods of the namespaces read, by IP: what `meshguard ext-authz --workload-from-request`
//! looks a Check's destination address up in, to learn the workload (namespace and labels)
//! whose policies decide it.
//!
//! Owns the Pod watch's event semantics (a re-list swapped in whole at `InitDone`, as the
//! store does for policies), which Pods count (those with an IP of their own that are not
//! finished: not `hostNetwork`, whose IP is the node's and shared; not `Succeeded` or
//! `Failed`, whose IP the node may already have given to another Pod), and the lookup by IP.
//! Readers ([`PodIndex::by_ip`]) never wait for the watch loop beyond one map access: the
//! index has a lock of its own, apart from the store's. Does no I/O: `crate::watch` feeds it
//! through the store.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use kube::api::DynamicObject;
use kube::runtime::watcher::Event;

/// One Pod as the index holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRecord {
    pub namespace: String,
    pub name: String,
    /// `metadata.labels`: what `selector.matchLabels` is matched against.
    pub labels: BTreeMap<String, String>,
    /// `status.podIP` and `status.podIPs` (dual stack: one per family).
    pub ips: Vec<IpAddr>,
}

impl PodRecord {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The record of a Pod object, or `None` when the Pod cannot be told by its IP: no IP yet
    /// (Pending), `hostNetwork` (the node's IP, shared by every such Pod of the node), or
    /// finished (`Succeeded`, `Failed`: its IP may belong to a new Pod already).
    pub fn of(obj: &DynamicObject) -> Option<PodRecord> {
        let spec = obj.data.get("spec");
        if spec
            .and_then(|s| s.get("hostNetwork"))
            .and_then(serde_json::Value::as_bool)
            == Some(true)
        {
            return None;
        }
        let status = obj.data.get("status")?;
        if matches!(
            status.get("phase").and_then(serde_json::Value::as_str),
            Some("Succeeded" | "Failed")
        ) {
            return None;
        }
        let mut ips: Vec<IpAddr> = Vec::new();
        let mut add = |v: Option<&serde_json::Value>| {
            if let Some(ip) = v
                .and_then(serde_json::Value::as_str)
                .and_then(|s| s.parse::<IpAddr>().ok())
                && !ips.contains(&ip)
            {
                ips.push(ip);
            }
        };
        add(status.get("podIP"));
        if let Some(list) = status.get("podIPs").and_then(serde_json::Value::as_array) {
            for entry in list {
                add(entry.get("ip"));
            }
        }
        if ips.is_empty() {
            return None;
        }
        Some(PodRecord {
            namespace: obj.metadata.namespace.clone().unwrap_or_default(),
            name: obj.metadata.name.clone().unwrap_or_default(),
            labels: obj.metadata.labels.clone().unwrap_or_default(),
            ips,
        })
    }
}

/// What an IP is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodMatch {
    /// One Pod has it.
    One(PodRecord),
    /// No Pod the index holds has it.
    None,
    /// Several Pods claim it (a stale entry, or Pods on different networks): which workload
    /// it is cannot be told. Their `namespace/name`s.
    Many(Vec<String>),
}

type Key = (String, String);

#[derive(Debug, Default)]
struct Pods {
    by_key: HashMap<Key, PodRecord>,
    by_ip: HashMap<IpAddr, Vec<Key>>,
    /// During a (re-)list: the Pods listed so far, swapped in at `InitDone`.
    relisting: Option<HashMap<Key, PodRecord>>,
}

impl Pods {
    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.by_key.remove(key) {
            for ip in &old.ips {
                if let Some(keys) = self.by_ip.get_mut(ip) {
                    keys.retain(|k| k != key);
                    if keys.is_empty() {
                        self.by_ip.remove(ip);
                    }
                }
            }
        }
    }

    fn insert(&mut self, key: Key, record: PodRecord) {
        self.remove(&key);
        for ip in &record.ips {
            self.by_ip.entry(*ip).or_default().push(key.clone());
        }
        self.by_key.insert(key, record);
    }
}

/// The Pods by IP, shared between the watch loop (writer) and the Checks (readers).
#[derive(Debug, Default)]
pub struct PodIndex {
    pods: RwLock<Pods>,
}

fn key_of(obj: &DynamicObject) -> Key {
    (
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

impl PodIndex {
    pub fn new() -> Arc<PodIndex> {
        Arc::new(PodIndex::default())
    }

    fn read(&self) -> RwLockReadGuard<'_, Pods> {
        self.pods.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Pods> {
        self.pods.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The Pod whose IP `ip` is.
    pub fn by_ip(&self, ip: IpAddr) -> PodMatch {
        let pods = self.read();
        let Some(keys) = pods.by_ip.get(&ip) else {
            return PodMatch::None;
        };
        match keys.as_slice() {
            [] => PodMatch::None,
            [one] => pods
                .by_key
                .get(one)
                .map_or(PodMatch::None, |r| PodMatch::One(r.clone())),
            many => PodMatch::Many(many.iter().map(|(ns, n)| format!("{ns}/{n}")).collect()),
        }
    }

    /// Pods held (those with an IP of their own).
    pub fn len(&self) -> usize {
        self.read().by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes in one event of the Pod watch; true when it completed a list.
    pub fn apply(&self, event: Event<DynamicObject>) -> bool {
        let mut pods = self.write();
        match event {
            Event::Init => pods.relisting = Some(HashMap::new()),
            Event::InitApply(obj) => {
                if let Some(record) = PodRecord::of(&obj) {
                    pods.relisting
                        .get_or_insert_with(HashMap::new)
                        .insert(key_of(&obj), record);
                }
            }
            Event::InitDone => {
                let listed = pods.relisting.take().unwrap_or_default();
                let mut fresh = Pods::default();
                for (key, record) in listed {
                    fresh.insert(key, record);
                }
                *pods = fresh;
                return true;
            }
            Event::Apply(obj) => {
                let key = key_of(&obj);
                match PodRecord::of(&obj) {
                    Some(record) => pods.insert(key, record),
                    // No IP any more (finished): it no longer names the workload.
                    None => pods.remove(&key),
                }
            }
            Event::Delete(obj) => pods.remove(&key_of(&obj)),
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(
        ns: &str,
        name: &str,
        labels: &[(&str, &str)],
        status: serde_json::Value,
    ) -> DynamicObject {
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_string(),
                    serde_json::Value::String((*v).to_string()),
                )
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"containers": []},
            "status": status,
        }))
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn running(ip: &str) -> serde_json::Value {
        serde_json::json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]})
    }

    #[test]
    fn pods_are_found_by_each_of_their_ips_and_follow_label_changes() {
        let index = PodIndex::default();
        index.apply(Event::Init);
        index.apply(Event::InitApply(pod(
            "foo",
            "httpbin-1",
            &[("app", "httpbin")],
            serde_json::json!({"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]}),
        )));
        // Listed but not swapped in yet: a list is taken whole.
        assert_eq!(index.by_ip(ip("10.0.0.1")), PodMatch::None);
        assert!(index.apply(Event::InitDone));
        let PodMatch::One(r) = index.by_ip(ip("fd00::1")) else {
            panic!()
        };
        assert_eq!(
            (r.key(), r.labels["app"].as_str()),
            ("foo/httpbin-1".into(), "httpbin")
        );
        index.apply(Event::Apply(pod(
            "foo",
            "httpbin-1",
            &[("app", "other")],
            running("10.0.0.1"),
        )));
        let PodMatch::One(r) = index.by_ip(ip("10.0.0.1")) else {
            panic!()
        };
        assert_eq!(r.labels["app"], "other");
        // The second IP went with the update.
        assert_eq!(index.by_ip(ip("fd00::1")), PodMatch::None);
    }

    #[test]
    fn pods_without_an_ip_of_their_own_are_not_held() {
        let index = PodIndex::default();
        index.apply(Event::Init);
        index.apply(Event::InitApply(pod(
            "foo",
            "pending",
            &[],
            serde_json::json!({"phase": "Pending"}),
        )));
        index.apply(Event::InitApply(pod(
            "foo",
            "done",
            &[],
            serde_json::json!({"phase": "Succeeded", "podIP": "10.0.0.2"}),
        )));
        let mut host = pod("foo", "host", &[], running("192.168.1.1"));
        host.data["spec"]["hostNetwork"] = serde_json::Value::Bool(true);
        index.apply(Event::InitApply(host));
        index.apply(Event::InitDone);
        assert!(index.is_empty());
        assert_eq!(index.by_ip(ip("10.0.0.2")), PodMatch::None);
        assert_eq!(index.by_ip(ip("192.168.1.1")), PodMatch::None);
        // A Pod that finishes leaves the index.
        index.apply(Event::Apply(pod("foo", "a", &[], running("10.0.0.3"))));
        assert_eq!(index.len(), 1);
        index.apply(Event::Apply(pod(
            "foo",
            "a",
            &[],
            serde_json::json!({"phase": "Failed", "podIP": "10.0.0.3"}),
        )));
        assert_eq!(index.by_ip(ip("10.0.0.3")), PodMatch::None);
    }

    #[test]
    fn an_ip_two_pods_claim_names_both_and_a_relist_drops_the_missing() {
        let index = PodIndex::default();
        index.apply(Event::Apply(pod("foo", "a", &[], running("10.0.0.4"))));
        index.apply(Event::Apply(pod("bar", "b", &[], running("10.0.0.4"))));
        let PodMatch::Many(mut names) = index.by_ip(ip("10.0.0.4")) else {
            panic!()
        };
        names.sort();
        assert_eq!(names, ["bar/b", "foo/a"]);
        index.apply(Event::Delete(pod("bar", "b", &[], running("10.0.0.4"))));
        assert!(matches!(index.by_ip(ip("10.0.0.4")), PodMatch::One(_)));
        // A re-list without `foo/a`: gone.
        index.apply(Event::Init);
        index.apply(Event::InitDone);
        assert_eq!(index.by_ip(ip("10.0.0.4")), PodMatch::None);
    }
}
