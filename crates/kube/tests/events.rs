//! Watcher event sequences into the policy-set builder: the set each sequence makes, what is
//! refused and what stays in effect. No API server: the events are written here as the
//! watcher would deliver them.

use kube::api::DynamicObject;
use kube::runtime::watcher::Event;
use meshguard_kube::kinds::{Scope, SecurityKind, WatchId, WatchKind, security_watches};
use meshguard_kube::store::{Applied, PodChange, Store, What, in_revision};
use meshguard_model::peer_authn::MtlsMode;
use serde_json::{Value, json};

fn object(v: Value) -> DynamicObject {
    serde_json::from_value(v).unwrap()
}

/// An AuthorizationPolicy `ns/name` at `rv` with `spec`.
fn ap(ns: &str, name: &str, rv: &str, spec: Value) -> DynamicObject {
    object(json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv, "generation": 1,
                     "uid": format!("uid-{name}"), "creationTimestamp": "2026-12-05T10:00:00Z"},
        "spec": spec,
    }))
}

fn deny_all() -> Value {
    json!({"action": "DENY", "rules": [{}]})
}

fn allow_get() -> Value {
    json!({"rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]})
}

fn ra(ns: &str, name: &str, rv: &str) -> DynamicObject {
    object(json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv},
        "spec": {"jwtRules": [{"issuer": "testing@secure.istio.io",
                               "jwksUri": "https://example.com/jwks.json"}]},
    }))
}

fn watch(kind: SecurityKind, ns: &str) -> WatchId {
    WatchId {
        kind: WatchKind::Security(kind),
        namespace: Some(ns.to_string()),
    }
}

const AP: SecurityKind = SecurityKind::AuthorizationPolicy;
const RA: SecurityKind = SecurityKind::RequestAuthentication;

/// The names in effect, as `ns/name@rv`, AuthorizationPolicies then RequestAuthentications.
fn in_effect(store: &Store) -> Vec<String> {
    let set = store.policy_set();
    let name = |o: &meshguard_model::Origin| {
        let o = o.object.as_ref().unwrap();
        format!("{}/{}@{}", o.namespace, o.name, o.resource_version)
    };
    set.authorization_policies
        .iter()
        .map(|r| name(&r.origin))
        .chain(set.request_authentications.iter().map(|r| name(&r.origin)))
        .collect()
}

fn list(store: &mut Store, w: &WatchId, objects: Vec<DynamicObject>) -> Vec<Applied> {
    let mut out = vec![store.apply(w, Event::Init)];
    for o in objects {
        out.push(store.apply(w, Event::InitApply(o)));
    }
    out.push(store.apply(w, Event::InitDone));
    out
}

fn whats(applied: &Applied) -> Vec<(String, What)> {
    applied
        .changes
        .iter()
        .map(|c| (c.object.key(), c.what.clone()))
        .collect()
}

#[test]
fn the_initial_list_makes_one_set_swapped_in_at_init_done_once_every_watch_has_listed() {
    let watches = security_watches(Scope::Namespaces, "foo", "istio-system");
    assert_eq!(watches.len(), 6, "3 kinds in 2 namespaces");
    let mut store = Store::new(&watches, None);
    assert!(!store.ready());
    let w = watch(AP, "foo");
    store.apply(&w, Event::Init);
    store.apply(&w, Event::InitApply(ap("foo", "a", "10", deny_all())));
    // Nothing is in effect, nor about to be published, before the list completes.
    assert!(in_effect(&store).is_empty());
    assert!(!store.take_dirty());
    let done = store.apply(&w, Event::InitDone);
    assert!(done.listed);
    assert_eq!(whats(&done), vec![("foo/a".to_string(), What::Created)]);
    assert!(store.take_dirty());
    assert_eq!(in_effect(&store), vec!["foo/a@10"]);
    // The other watches have not listed: not ready, and readiness says which.
    assert!(!store.ready());
    let pending = store.pending();
    assert_eq!(
        pending,
        [
            "RequestAuthentication in foo: not listed yet",
            "RequestAuthentication in istio-system: not listed yet",
            "AuthorizationPolicy in istio-system: not listed yet",
            "PeerAuthentication in foo: not listed yet",
            "PeerAuthentication in istio-system: not listed yet"
        ],
    );
    let pa_watch = |w: &&WatchId| w.kind == WatchKind::Security(SecurityKind::PeerAuthentication);
    for w in watches.iter().filter(|w| !pa_watch(w)).filter(|x| **x != w) {
        let objects = if *w == watch(RA, "istio-system") {
            vec![ra("istio-system", "mesh-jwt", "11")]
        } else {
            vec![]
        };
        list(&mut store, w, objects);
    }
    // The PeerAuthentication watches hold the first set back too: a set published without
    // them could serve plaintext where a STRICT policy says no. One fails (its CRD not
    // installed): still not ready, and readiness says why.
    assert!(
        !store.ready(),
        "ready before the PeerAuthentications are listed"
    );
    store.error(
        &watch(SecurityKind::PeerAuthentication, "foo"),
        "list failed: 404".into(),
    );
    assert_eq!(
        store.pending(),
        [
            "PeerAuthentication in foo: not listed yet: list failed: 404",
            "PeerAuthentication in istio-system: not listed yet"
        ]
    );
    for w in watches.iter().filter(pa_watch) {
        list(&mut store, w, vec![]);
    }
    assert!(store.ready());
    assert!(store.pending().is_empty());
    assert_eq!(
        in_effect(&store),
        vec!["foo/a@10", "istio-system/mesh-jwt@11"]
    );
}

#[test]
fn apply_and_delete_change_one_object_and_say_what_changed() {
    let w = watch(AP, "foo");
    let mut store = Store::new(std::slice::from_ref(&w), None);
    list(&mut store, &w, vec![ap("foo", "a", "10", deny_all())]);
    assert!(store.take_dirty());
    // A new object.
    let r = store.apply(&w, Event::Apply(ap("foo", "b", "12", allow_get())));
    assert_eq!(whats(&r), vec![("foo/b".to_string(), What::Created)]);
    assert!(store.take_dirty());
    // A new version that enforces the same (a label, the resourceVersion): no new set.
    let r = store.apply(&w, Event::Apply(ap("foo", "b", "13", allow_get())));
    assert_eq!(whats(&r), vec![("foo/b".to_string(), What::Unchanged)]);
    assert!(!store.take_dirty());
    // A new spec.
    let r = store.apply(&w, Event::Apply(ap("foo", "b", "14", deny_all())));
    assert_eq!(
        whats(&r),
        vec![("foo/b".to_string(), What::Updated { from: "13".into() })]
    );
    assert!(store.take_dirty());
    assert_eq!(in_effect(&store), vec!["foo/a@10", "foo/b@14"]);
    let line = r.changes[0].to_string();
    assert_eq!(
        line,
        "AuthorizationPolicy foo/b resourceVersion 14 (metadata.generation 1): updated (was resourceVersion 13)"
    );
    // Deleted.
    let r = store.apply(&w, Event::Delete(ap("foo", "a", "15", deny_all())));
    assert_eq!(whats(&r), vec![("foo/a".to_string(), What::Deleted)]);
    assert!(store.take_dirty());
    assert_eq!(in_effect(&store), vec!["foo/b@14"]);
    // Deleting what is not there changes nothing.
    let r = store.apply(&w, Event::Delete(ap("foo", "zzz", "16", deny_all())));
    assert!(r.changes.is_empty());
    assert!(!store.take_dirty());
}

#[test]
fn a_re_list_drops_the_objects_it_no_longer_lists() {
    let w = watch(AP, "foo");
    let mut store = Store::new(std::slice::from_ref(&w), None);
    list(
        &mut store,
        &w,
        vec![
            ap("foo", "a", "10", deny_all()),
            ap("foo", "b", "11", allow_get()),
        ],
    );
    store.take_dirty();
    // The watch fell out of the window (410 Gone) while `b` was deleted: the re-list lacks it.
    store.apply(&w, Event::Init);
    store.apply(&w, Event::InitApply(ap("foo", "a", "10", deny_all())));
    // Until the re-list completes, the old set stays whole.
    assert_eq!(in_effect(&store), vec!["foo/a@10", "foo/b@11"]);
    let done = store.apply(&w, Event::InitDone);
    assert_eq!(whats(&done), vec![("foo/b".to_string(), What::Deleted)]);
    assert!(store.take_dirty());
    assert_eq!(in_effect(&store), vec!["foo/a@10"]);
    // A re-list that changes nothing publishes nothing.
    list(&mut store, &w, vec![ap("foo", "a", "10", deny_all())]);
    assert!(!store.take_dirty());
}

#[test]
fn a_malformed_object_in_the_middle_of_a_list_is_refused_alone_and_its_last_good_version_stays() {
    let w = watch(AP, "foo");
    let mut store = Store::new(std::slice::from_ref(&w), None);
    list(
        &mut store,
        &w,
        vec![
            ap("foo", "a", "10", deny_all()),
            ap("foo", "c", "12", allow_get()),
        ],
    );
    store.take_dirty();
    // A re-list in which `a` has a bad version, a never-valid `b` sits between the others,
    // and `c` is fine.
    let applied = list(
        &mut store,
        &w,
        vec![
            ap("foo", "a", "20", json!({"action": "ALOW"})),
            ap(
                "foo",
                "b",
                "21",
                json!({"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.300"]}}]}]}),
            ),
            ap("foo", "c", "12", allow_get()),
        ],
    );
    let refused: Vec<_> = applied.iter().flat_map(whats).collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    let What::Refused { errors, kept } = &refused[0].1 else {
        panic!("{refused:?}")
    };
    assert_eq!(kept.as_deref(), Some("10"));
    assert_eq!(
        errors[0].to_string(),
        "AuthorizationPolicy foo/a (resourceVersion 20): field spec.action = \"ALOW\": unknown variant `ALOW`, expected one of `ALLOW`, `DENY`, `AUDIT`, `CUSTOM`; did you mean `ALLOW`?"
    );
    let What::Refused { errors, kept } = &refused[1].1 else {
        panic!("{refused:?}")
    };
    assert_eq!(*kept, None);
    assert_eq!(
        errors[0].to_string(),
        "AuthorizationPolicy foo/b (resourceVersion 21): field spec.rules[0].from[0].source.ipBlocks[0] = \"10.0.0.300\": bad IP address (10.0.0.300)"
    );
    assert_eq!(
        applied.last().unwrap().changes,
        vec![],
        "nothing in effect changed"
    );
    assert_eq!(in_effect(&store), vec!["foo/a@10", "foo/c@12"]);
    let stats = store.watch_stats();
    assert_eq!((stats[0].1, stats[0].2), (3, 2), "3 objects, 2 invalid");
    let dump = store.dump();
    let a = &dump["objects"][0];
    assert_eq!(a["name"], "a");
    assert_eq!(a["resource_version"], "20");
    assert_eq!(a["in_effect"], "10");
    assert_eq!(a["state"], "invalid");
    assert!(
        a["errors"][0]
            .as_str()
            .unwrap()
            .contains("field spec.action")
    );
    // The bad version fixed: in effect again.
    let r = store.apply(
        &w,
        Event::Apply(ap(
            "foo",
            "a",
            "22",
            json!({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}),
        )),
    );
    assert_eq!(
        whats(&r),
        vec![("foo/a".to_string(), What::Updated { from: "10".into() })]
    );
    assert_eq!(in_effect(&store), vec!["foo/a@22", "foo/c@12"]);
    // A bad Apply keeps the good one, and changes no set.
    store.take_dirty();
    let r = store.apply(
        &w,
        Event::Apply(ap("foo", "c", "23", json!({"rules": "all"}))),
    );
    assert!(matches!(&r.changes[0].what, What::Refused { kept: Some(k), .. } if k == "12"));
    assert!(!store.take_dirty());
    assert_eq!(in_effect(&store), vec!["foo/a@22", "foo/c@12"]);
    assert_eq!(
        r.changes[0].to_string(),
        "AuthorizationPolicy foo/c resourceVersion 23 (metadata.generation 1): refused (1 problem(s)); resourceVersion 12 stays in effect"
    );
}

fn labelled(mut o: DynamicObject, rev: &str) -> DynamicObject {
    o.metadata.labels = Some([("istio.io/rev".to_string(), rev.to_string())].into());
    o
}

#[test]
fn revisions_as_istiod_reads_them() {
    let labels = |rev: Option<&str>| {
        rev.map(|r| [("istio.io/rev".to_string(), r.to_string())].into())
            .unwrap_or_default()
    };
    // istiod's LabelsInRevision.
    assert!(in_revision(&labels(None), None));
    assert!(in_revision(&labels(None), Some("canary")));
    assert!(in_revision(&labels(Some("canary")), None));
    assert!(in_revision(&labels(Some("canary")), Some("canary")));
    assert!(!in_revision(&labels(Some("stable")), Some("canary")));

    let w = watch(AP, "foo");
    let mut store = Store::new(std::slice::from_ref(&w), Some("canary".into()));
    let applied = list(
        &mut store,
        &w,
        vec![
            ap("foo", "plain", "1", deny_all()),
            labelled(ap("foo", "mine", "2", deny_all()), "canary"),
            labelled(ap("foo", "theirs", "3", deny_all()), "stable"),
        ],
    );
    assert_eq!(in_effect(&store), vec!["foo/mine@2", "foo/plain@1"]);
    let ignored: Vec<_> = applied
        .iter()
        .flat_map(whats)
        .filter(|(k, _)| k == "foo/theirs")
        .collect();
    assert_eq!(
        ignored,
        vec![(
            "foo/theirs".to_string(),
            What::OtherRevision {
                revision: "stable".into(),
                dropped: false
            }
        )]
    );
    // A policy moved to another revision leaves the set.
    store.take_dirty();
    let r = store.apply(
        &w,
        Event::Apply(labelled(ap("foo", "plain", "4", deny_all()), "stable")),
    );
    assert_eq!(
        whats(&r),
        vec![(
            "foo/plain".to_string(),
            What::OtherRevision {
                revision: "stable".into(),
                dropped: true
            }
        )]
    );
    assert!(store.take_dirty());
    assert_eq!(in_effect(&store), vec!["foo/mine@2"]);
    assert_eq!(store.dump()["objects"][1]["state"], "other_revision");

    // Without --revision, everything is processed.
    let mut store = Store::new(std::slice::from_ref(&w), None);
    list(
        &mut store,
        &w,
        vec![labelled(ap("foo", "theirs", "3", deny_all()), "stable")],
    );
    assert_eq!(in_effect(&store), vec!["foo/theirs@3"]);
}

#[test]
fn an_object_applied_as_v1beta1_is_read_whatever_version_serves_it() {
    let w = watch(AP, "foo");
    let mut store = Store::new(std::slice::from_ref(&w), None);
    // The API server serves a v1beta1-applied object as v1 on the v1 watch: only
    // kubectl's record of what was applied says v1beta1.
    let mut served_as_v1 = ap("foo", "applied-beta", "5", deny_all());
    served_as_v1.metadata.annotations = Some(
        [(
            "kubectl.kubernetes.io/last-applied-configuration".to_string(),
            r#"{"apiVersion":"security.istio.io/v1beta1","kind":"AuthorizationPolicy","metadata":{"name":"applied-beta","namespace":"foo"},"spec":{"action":"DENY","rules":[{}]}}"#.to_string(),
        )]
        .into(),
    );
    // Served as v1beta1, and a list item without its type at all.
    let mut as_beta = ap("foo", "beta", "6", deny_all());
    as_beta.types.as_mut().unwrap().api_version = "security.istio.io/v1beta1".into();
    let mut untyped = ap("foo", "untyped", "7", deny_all());
    untyped.types = None;
    let applied = list(&mut store, &w, vec![served_as_v1, as_beta, untyped]);
    assert!(
        applied.iter().all(|a| a
            .changes
            .iter()
            .all(|c| !matches!(c.what, What::Refused { .. }))),
        "{applied:?}"
    );
    assert_eq!(
        in_effect(&store),
        vec!["foo/applied-beta@5", "foo/beta@6", "foo/untyped@7"]
    );
}

fn pa(ns: &str, name: &str, rv: &str, spec: Value) -> DynamicObject {
    object(json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv,
                     "creationTimestamp": "2026-12-05T10:00:00Z"},
        "spec": spec,
    }))
}

/// The PeerAuthentications in effect, as `ns/name@rv MODE`.
fn peer_authns(store: &Store) -> Vec<String> {
    store
        .policy_set()
        .peer_authentications
        .iter()
        .map(|r| {
            let o = r.origin.object.as_ref().unwrap();
            let mode = r.spec.mtls.as_ref().map_or("-", |m| m.mode.as_str());
            format!("{}/{}@{} {mode}", o.namespace, o.name, o.resource_version)
        })
        .collect()
}

#[test]
fn peer_authentications_go_into_the_set_as_from_files_and_an_invalid_one_keeps_its_last_good_version()
 {
    let w = watch(SecurityKind::PeerAuthentication, "foo");
    let mut store = Store::new(std::slice::from_ref(&w), None);
    list(
        &mut store,
        &w,
        vec![pa(
            "foo",
            "default",
            "9",
            json!({"mtls": {"mode": "STRICT"}}),
        )],
    );
    assert!(store.take_dirty());
    assert_eq!(peer_authns(&store), ["foo/default@9 STRICT"]);
    let held = &store.policy_set().peer_authentications[0];
    // The creation time decides between policies of one scope, as from a file.
    assert_eq!(held.spec.created.as_deref(), Some("2026-12-05T10:00:00Z"));
    let dump = store.dump();
    assert_eq!(dump["objects"][0]["mtls_mode"], "STRICT");
    assert_eq!(dump["objects"][0]["state"], "in_effect");

    // What the file loader refuses, this refuses: port-level mTLS without a selector (only
    // Istio's CEL rules refuse it on the server), an unknown mode, an unknown field. The
    // version in effect stays.
    for (rv, spec, field) in [
        (
            "10",
            json!({"mtls": {"mode": "DISABLE"}, "portLevelMtls": {"8080": {"mode": "DISABLE"}}}),
            "spec.portLevelMtls",
        ),
        (
            "11",
            json!({"mtls": {"mode": "STRICTER"}}),
            "spec.mtls.mode",
        ),
        (
            "12",
            json!({"mtls": {"mode": "DISABLE"}, "extra": 1}),
            "spec",
        ),
    ] {
        let applied = store.apply(&w, Event::Apply(pa("foo", "default", rv, spec)));
        match &applied.changes[0].what {
            What::Refused { errors, kept } => {
                assert_eq!(kept.as_deref(), Some("9"));
                assert!(
                    errors[0].to_string().contains(&format!("field {field}")),
                    "{}",
                    errors[0]
                );
                assert!(
                    errors[0].to_string().starts_with(&format!(
                        "PeerAuthentication foo/default (resourceVersion {rv})"
                    )),
                    "{}",
                    errors[0]
                );
            }
            other => panic!("{rv}: {other:?}"),
        }
        assert!(!store.take_dirty());
        assert_eq!(peer_authns(&store), ["foo/default@9 STRICT"]);
    }
    let dump = store.dump();
    assert_eq!(dump["objects"][0]["state"], "invalid");
    assert_eq!(dump["objects"][0]["in_effect"], "9");
    assert_eq!(store.watch_stats()[0].2, 1, "counted invalid");

    // A valid change replaces it; a delete removes it.
    let applied = store.apply(
        &w,
        Event::Apply(pa(
            "foo",
            "default",
            "13",
            json!({"mtls": {"mode": "PERMISSIVE"}}),
        )),
    );
    assert_eq!(
        whats(&applied),
        [(
            "foo/default".to_string(),
            What::Updated { from: "9".into() }
        )]
    );
    assert!(store.take_dirty());
    assert_eq!(peer_authns(&store), ["foo/default@13 PERMISSIVE"]);
    store.apply(
        &w,
        Event::Delete(pa(
            "foo",
            "default",
            "14",
            json!({"mtls": {"mode": "PERMISSIVE"}}),
        )),
    );
    assert!(store.take_dirty());
    assert!(peer_authns(&store).is_empty());
}

#[test]
fn the_workloads_set_has_the_peer_authentications_of_its_namespace_and_the_root() {
    let w = WatchId {
        kind: WatchKind::Security(SecurityKind::PeerAuthentication),
        namespace: None,
    };
    let mut store = Store::new(std::slice::from_ref(&w), None);
    list(
        &mut store,
        &w,
        vec![
            pa("foo", "default", "1", json!({"mtls": {"mode": "STRICT"}})),
            pa("bar", "default", "2", json!({"mtls": {"mode": "DISABLE"}})),
            pa(
                "istio-system",
                "default",
                "3",
                json!({"mtls": {"mode": "PERMISSIVE"}}),
            ),
        ],
    );
    let workload = meshguard_model::Workload::new(
        "foo",
        std::collections::BTreeMap::from([("app".to_string(), "httpbin".to_string())]),
    );
    let set = store.policy_set_for(&workload);
    let names: Vec<String> = set
        .peer_authentications
        .iter()
        .map(|r| format!("{}/{}", r.namespace, r.name))
        .collect();
    assert_eq!(names, ["foo/default", "istio-system/default"]);
    let compiled = meshguard_policy::compile(&set, &workload).unwrap();
    assert_eq!(compiled.mtls.mode, MtlsMode::Strict);
    assert_eq!(compiled.mtls.mode_from.as_deref(), Some("foo/default"));
}

#[test]
fn the_pod_watch_gives_the_workload_its_labels_and_follows_them() {
    let pod_watch = WatchId {
        kind: WatchKind::Pod("httpbin-1".into()),
        namespace: Some("foo".into()),
    };
    let w = watch(AP, "foo");
    let mut store = Store::new(&[w.clone(), pod_watch.clone()], None);
    list(&mut store, &w, vec![]);
    assert!(!store.ready(), "the Pod's labels are not known yet");
    let pod = |rv: &str, app: &str| {
        object(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "httpbin-1", "namespace": "foo", "resourceVersion": rv,
                         "labels": {"app": app, "version": "v1"}},
            "spec": {"containers": []},
        }))
    };
    // Listed without the Pod: not ready, and readiness says why.
    let applied = list(&mut store, &pod_watch, vec![]);
    assert_eq!(applied.last().unwrap().pod, Some(PodChange::NotFound));
    assert!(!store.ready());
    assert_eq!(store.pending(), vec!["Pod foo/httpbin-1: not found"]);
    let applied = list(&mut store, &pod_watch, vec![pod("1", "httpbin")]);
    assert!(
        matches!(&applied.last().unwrap().pod, Some(PodChange::Labels(l)) if l["app"] == "httpbin")
    );
    assert!(store.ready());
    let r = store.apply(&pod_watch, Event::Apply(pod("2", "httpbin-v2")));
    assert!(matches!(&r.pod, Some(PodChange::Labels(l)) if l["app"] == "httpbin-v2"));
    assert_eq!(store.pod_labels().unwrap()["app"], "httpbin-v2");
}

#[test]
fn a_cluster_wide_watch_holds_every_namespace_and_publishes_the_workloads_and_the_roots() {
    let watches = security_watches(Scope::Cluster, "foo", "istio-system");
    assert_eq!(watches.len(), 3, "3 kinds, every namespace");
    assert!(watches.iter().all(|w| w.namespace.is_none()));
    assert_eq!(
        watches[1].to_string(),
        "AuthorizationPolicy in every namespace"
    );
    let w = watches[1].clone();
    let mut store = Store::new(std::slice::from_ref(&w), None);
    list(
        &mut store,
        &w,
        vec![
            ap("foo", "mine", "1", deny_all()),
            ap("istio-system", "mesh", "2", deny_all()),
            ap("bar", "theirs", "3", deny_all()),
        ],
    );
    assert_eq!(store.policy_set().authorization_policies.len(), 3);
    let workload = meshguard_model::Workload::new("foo", Default::default());
    let names: Vec<String> = store
        .policy_set_for(&workload)
        .authorization_policies
        .iter()
        .map(|r| r.key())
        .collect();
    assert_eq!(names, ["foo/mine", "istio-system/mesh"]);
    let dump = store.dump();
    assert_eq!(dump["watches"][0]["namespace"], "*");
}

#[test]
fn a_watch_failing_the_same_way_again_is_news_once() {
    let w = watch(AP, "istio-system");
    let mut store = Store::new(std::slice::from_ref(&w), None);
    assert!(store.error(&w, "list failed: Forbidden (403)".into()));
    assert!(
        !store.error(&w, "list failed: Forbidden (403)".into()),
        "the same again"
    );
    assert!(
        store.error(&w, "list failed: connection refused".into()),
        "another"
    );
    // Listed: the next failure is news again.
    list(&mut store, &w, vec![]);
    assert!(store.error(&w, "list failed: connection refused".into()));
    assert_eq!(store.watch_stats()[0].5, 4, "every failure counted");
}
