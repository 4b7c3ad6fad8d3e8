//! The policy-set builder: what the watches have read, object by object, and the one
//! `PolicySet` it makes.
//!
//! Owns the watcher's event semantics: `Init` starts a fresh list, `InitApply` adds to it,
//! `InitDone` swaps it in whole (an object missing from a re-list is gone), `Apply` and
//! `Delete` change one object. Each object is decoded on its own with the model's strict types
//! and compiled alone, so that one malformed object never fails the others: it is refused,
//! and its last good version (if there was one) stays in effect. Objects labelled
//! `istio.io/rev` for another revision are not processed (istiod's `LabelsInRevision`). Also
//! owns readiness (every watch listed once, the Pod's labels known) and the source's part of
//! `/config_dump`. Does no I/O: `crate::watch` feeds it events, publishes its sets and logs
//! its changes.

use std::collections::BTreeMap;
use std::fmt;

use kube::api::DynamicObject;
use kube::runtime::watcher::Event;
use meshguard_model::peer_authn::PeerAuthentication;
use meshguard_model::{
    AuthorizationPolicySpec, LoadError, ObjectRef, PolicySet, RequestAuthenticationSpec, Resource,
    Workload, load_object,
};
use serde_json::{Value, json};

use crate::kinds::{SecurityKind, WatchId, WatchKind};
use crate::pods::PodIndex;

/// The label istiod reads to tell which revision processes an object.
pub const REVISION_LABEL: &str = "istio.io/rev";

/// istiod's `LabelsInRevision`: an object without `istio.io/rev` is processed by every
/// revision; with it, only by the revision it names; a meshguard without `--revision`
/// processes everything.
pub fn in_revision(labels: &BTreeMap<String, String>, revision: Option<&str>) -> bool {
    match (labels.get(REVISION_LABEL), revision) {
        (None, _) | (_, None) => true,
        (Some(label), Some(rev)) => label == rev,
    }
}

/// One object's version that is in effect.
#[derive(Clone, Debug, PartialEq)]
pub enum Held {
    RequestAuthentication(Resource<RequestAuthenticationSpec>),
    AuthorizationPolicy(Resource<AuthorizationPolicySpec>),
    PeerAuthentication(PeerAuthentication),
}

impl Held {
    /// The version this is.
    pub fn resource_version(&self) -> &str {
        let origin = match self {
            Held::RequestAuthentication(r) => &r.origin,
            Held::AuthorizationPolicy(r) => &r.origin,
            Held::PeerAuthentication(r) => &r.origin,
        };
        origin
            .object
            .as_ref()
            .map_or("", |o| o.resource_version.as_str())
    }

    /// Whether two versions enforce the same thing: the same spec and annotations (an
    /// annotation such as `istio.io/dry-run` changes what a policy does); the version, the
    /// labels and the rest of `metadata` do not count.
    fn same_effect(&self, other: &Held) -> bool {
        match (self, other) {
            (Held::RequestAuthentication(a), Held::RequestAuthentication(b)) => {
                a.spec == b.spec && a.annotations == b.annotations
            }
            (Held::AuthorizationPolicy(a), Held::AuthorizationPolicy(b)) => {
                a.spec == b.spec && a.annotations == b.annotations
            }
            (Held::PeerAuthentication(a), Held::PeerAuthentication(b)) => {
                a.spec == b.spec && a.annotations == b.annotations
            }
            _ => false,
        }
    }
}

/// Why an object's latest version is not the one in effect.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// It does not decode or compile; every problem, each naming the field.
    Invalid(Vec<LoadError>),
    /// Its `istio.io/rev` label names another revision: not processed at all.
    OtherRevision(String),
}

/// One object as the store knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub kind: SecurityKind,
    /// The latest version read.
    pub latest: ObjectRef,
    /// `metadata.generation` of the latest version.
    pub generation: Option<i64>,
    /// The version in effect: the latest when it is valid, else the last valid one seen.
    pub good: Option<Held>,
    /// Why the latest version is not in effect, when it is not.
    pub refused: Option<Refusal>,
}

/// What happened to one object, for the log line that says so.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub kind: SecurityKind,
    /// The version read (for a deletion, the last one known).
    pub object: ObjectRef,
    pub generation: Option<i64>,
    pub what: What,
}

#[derive(Clone, Debug, PartialEq)]
pub enum What {
    /// A new object, now in effect.
    Created,
    /// A new version in effect; `from` the version it replaces.
    Updated { from: String },
    /// A new version that enforces the same as the one in effect (metadata only).
    Unchanged,
    /// Gone (deleted, or missing from a re-list).
    Deleted,
    /// Refused as invalid; `kept` is the version that stays in effect, if any.
    Refused {
        errors: Vec<LoadError>,
        kept: Option<String>,
    },
    /// Labelled for another revision: not processed; `dropped` when a version of it was in
    /// effect until now.
    OtherRevision { revision: String, dropped: bool },
}

impl What {
    /// Whether the set in effect changes.
    pub fn changes_set(&self) -> bool {
        match self {
            What::Created | What::Updated { .. } | What::Deleted => true,
            What::OtherRevision { dropped, .. } => *dropped,
            What::Unchanged | What::Refused { .. } => false,
        }
    }
}

impl fmt::Display for Change {
    /// `AuthorizationPolicy foo/require-jwt resourceVersion 1234 (generation 2): updated
    /// (was resourceVersion 1200)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} resourceVersion {}",
            self.kind.as_str(),
            self.object.key(),
            self.object.resource_version
        )?;
        if let Some(g) = self.generation {
            write!(f, " (metadata.generation {g})")?;
        }
        match &self.what {
            What::Created => write!(f, ": created"),
            What::Updated { from } => write!(f, ": updated (was resourceVersion {from})"),
            What::Unchanged => write!(f, ": metadata only, nothing enforced changed"),
            What::Deleted => write!(f, ": deleted"),
            What::Refused { errors, kept } => {
                write!(f, ": refused ({} problem(s)); ", errors.len())?;
                match kept {
                    Some(rv) => write!(f, "resourceVersion {rv} stays in effect"),
                    None => write!(f, "no valid version of it is in effect"),
                }
            }
            What::OtherRevision { revision, dropped } => {
                write!(
                    f,
                    ": ignored: {REVISION_LABEL}={revision} is another revision"
                )?;
                if *dropped {
                    write!(f, "; the version in effect until now is dropped")?;
                }
                Ok(())
            }
        }
    }
}

/// One watch's objects and health.
#[derive(Debug, Default)]
struct WatchState {
    objects: BTreeMap<(String, String), Entry>,
    /// During a (re-)list: the objects listed so far, swapped in at `InitDone`.
    relisting: Option<BTreeMap<(String, String), Entry>>,
    /// Completed a list at least once.
    listed: bool,
    /// Completed its last list, and had no error since.
    synced: bool,
    /// Unix time of the last complete list.
    last_sync: Option<u64>,
    errors: u64,
    last_error: Option<(u64, String)>,
    /// The error the watch has been failing with since it was last healthy, if any.
    failing: Option<String>,
    /// The Pod watch: its labels, once listed (`None` inside: the Pod was not found).
    pod: Option<Option<BTreeMap<String, String>>>,
    pod_relisting: Option<Option<BTreeMap<String, String>>>,
}

impl WatchState {
    fn invalid(&self) -> usize {
        self.objects
            .values()
            .filter(|e| matches!(e.refused, Some(Refusal::Invalid(_))))
            .count()
    }
}

/// What one Pod event means for the workload's labels.
#[derive(Clone, Debug, PartialEq)]
pub enum PodChange {
    /// The labels read (first list, or a change).
    Labels(BTreeMap<String, String>),
    /// The list completed without the Pod.
    NotFound,
    /// The Pod was deleted; its last labels stay.
    Deleted,
}

/// Everything the watches have read.
#[derive(Debug)]
pub struct Store {
    watches: BTreeMap<WatchId, WatchState>,
    revision: Option<String>,
    /// The set in effect changed since [`Store::take_dirty`].
    dirty: bool,
    /// The Pods by IP, for a [`WatchKind::Pods`] watch (empty without one).
    pods: std::sync::Arc<PodIndex>,
}

/// The result of one event.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    /// Objects changed, refused or ignored.
    pub changes: Vec<Change>,
    /// The Pod's labels, for the Pod watch.
    pub pod: Option<PodChange>,
    /// The event completed a list (`InitDone`).
    pub listed: bool,
}

fn key_of(obj: &DynamicObject) -> (String, String) {
    (
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

/// The object's `namespace/name` and `resourceVersion`.
pub fn object_ref(obj: &DynamicObject) -> ObjectRef {
    let (namespace, name) = key_of(obj);
    ObjectRef {
        namespace,
        name,
        resource_version: obj.metadata.resource_version.clone().unwrap_or_default(),
    }
}

/// A workload that no resource selects: compiling for it still compiles (and so checks)
/// every resource, applicable or not.
fn nobody() -> Workload {
    Workload::new(String::new(), BTreeMap::new())
}

/// The object as JSON, as the model loads a document: with its `apiVersion` and `kind`, which
/// list items may come without (the list says what they are).
pub fn object_value(kind: SecurityKind, obj: &DynamicObject) -> Value {
    let mut value = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        let ar = kind.api_resource();
        map.entry("apiVersion")
            .or_insert_with(|| Value::String(ar.api_version.clone()));
        map.entry("kind")
            .or_insert_with(|| Value::String(ar.kind.clone()));
    }
    value
}

/// Decodes one object of `kind` as the file loader decodes a document, and compiles it
/// alone: the version to hold, or every problem.
pub fn decode(kind: SecurityKind, obj: &DynamicObject) -> Result<Held, Vec<LoadError>> {
    let object = object_ref(obj);
    let value = object_value(kind, obj);
    let origin = meshguard_model::Origin::object(object.clone());
    let named = Some(format!("{} {}", kind.as_str(), object.key()));
    let mut set = load_object(value, object).map_err(|f| f.errors.0)?;
    // Istio's validation, as compiling applies it to every resource of a set.
    meshguard_policy::compile(&set, &nobody()).map_err(|e| e.0)?;
    let held = match kind {
        SecurityKind::RequestAuthentication => set
            .request_authentications
            .pop()
            .map(Held::RequestAuthentication),
        SecurityKind::AuthorizationPolicy => set
            .authorization_policies
            .pop()
            .map(Held::AuthorizationPolicy),
        SecurityKind::PeerAuthentication => {
            set.peer_authentications.pop().map(Held::PeerAuthentication)
        }
    };
    held.ok_or_else(|| {
        vec![LoadError::at(
            &origin,
            named,
            Some("kind".into()),
            None,
            format!("served as a {} but not one", kind.as_str()),
        )]
    })
}

impl Store {
    /// A store for `watches`; `revision` is `--revision`.
    pub fn new(watches: &[WatchId], revision: Option<String>) -> Store {
        Store {
            watches: watches
                .iter()
                .map(|w| (w.clone(), WatchState::default()))
                .collect(),
            revision,
            dirty: false,
            pods: PodIndex::new(),
        }
    }

    /// The Pods by IP that a [`WatchKind::Pods`] watch fills.
    pub fn pod_index(&self) -> std::sync::Arc<PodIndex> {
        self.pods.clone()
    }

    /// Takes in one event of `watch`.
    pub fn apply(&mut self, watch: &WatchId, event: Event<DynamicObject>) -> Applied {
        let revision = self.revision.clone();
        let Some(state) = self.watches.get_mut(watch) else {
            return Applied::default();
        };
        if let WatchKind::Pod(_) = watch.kind {
            return apply_pod(state, event);
        }
        if let WatchKind::Pods = watch.kind {
            // Pods change no policy: the set in effect stays, nothing is published.
            let listed = self.pods.apply(event);
            if listed {
                state.listed = true;
                state.synced = true;
                state.failing = None;
                state.last_sync = Some(meshguard_runtime::state::unix_now());
            }
            return Applied {
                listed,
                ..Applied::default()
            };
        }
        let WatchKind::Security(kind) = watch.kind else {
            return Applied::default();
        };
        let mut out = Applied::default();
        match event {
            Event::Init => state.relisting = Some(BTreeMap::new()),
            Event::InitApply(obj) => {
                let key = key_of(&obj);
                let relisting = state.relisting.get_or_insert_with(BTreeMap::new);
                let previous = relisting.get(&key).or_else(|| state.objects.get(&key));
                let (entry, change) = process(kind, &obj, previous, revision.as_deref());
                // Only refusals are worth a line while listing; the rest is the diff at
                // `InitDone`.
                if matches!(
                    change.what,
                    What::Refused { .. } | What::OtherRevision { .. }
                ) {
                    out.changes.push(change);
                }
                relisting.insert(key, entry);
            }
            Event::InitDone => {
                let new = state.relisting.take().unwrap_or_default();
                let first = !state.listed;
                for change in diff(&state.objects, &new) {
                    self.dirty = true;
                    out.changes.push(change);
                }
                state.objects = new;
                state.listed = true;
                state.synced = true;
                state.failing = None;
                state.last_sync = Some(meshguard_runtime::state::unix_now());
                // The first list makes the first set, even an empty one.
                self.dirty |= first;
                out.listed = true;
            }
            Event::Apply(obj) => {
                let key = key_of(&obj);
                let (entry, change) =
                    process(kind, &obj, state.objects.get(&key), revision.as_deref());
                self.dirty |= change.what.changes_set();
                out.changes.push(change);
                state.objects.insert(key, entry);
            }
            Event::Delete(obj) => {
                let key = key_of(&obj);
                if let Some(gone) = state.objects.remove(&key) {
                    let mut object = object_ref(&obj);
                    if object.resource_version.is_empty() {
                        object.resource_version = gone.latest.resource_version.clone();
                    }
                    if gone.good.is_some() {
                        self.dirty = true;
                    }
                    out.changes.push(Change {
                        kind,
                        object,
                        generation: gone.generation,
                        what: What::Deleted,
                    });
                }
            }
        }
        out
    }

    /// Records an error of `watch`: it is no longer synced until its next complete list or
    /// event. The objects read stay. Returns whether the error is news: not the one the watch
    /// has been failing with since it was last healthy (a retry that fails the same way is
    /// not worth another warning).
    pub fn error(&mut self, watch: &WatchId, message: String) -> bool {
        let Some(state) = self.watches.get_mut(watch) else {
            return false;
        };
        state.synced = false;
        state.errors += 1;
        let news = state.failing.as_deref() != Some(message.as_str());
        state.failing = Some(message.clone());
        state.last_error = Some((meshguard_runtime::state::unix_now(), message));
        news
    }

    /// Marks `watch` synced again after an error: an event arrived.
    pub fn healthy(&mut self, watch: &WatchId) {
        if let Some(state) = self.watches.get_mut(watch)
            && state.listed
            && state.relisting.is_none()
        {
            state.synced = true;
            state.failing = None;
        }
    }

    /// Whether the set in effect changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Whether every watch has completed a list and the Pod (with `--pod`) was found: the
    /// first set may be published. PeerAuthentication watches count like the others: a set
    /// published before they have listed could serve plaintext where a STRICT policy says no.
    pub fn ready(&self) -> bool {
        self.watches.iter().all(|(id, s)| match &id.kind {
            WatchKind::Security(_) | WatchKind::Pods => s.listed,
            WatchKind::Pod(_) => s.listed && matches!(s.pod, Some(Some(_))),
        })
    }

    /// What readiness still waits for, one item per watch, with its last error.
    pub fn pending(&self) -> Vec<String> {
        self.watches
            .iter()
            .filter_map(|(id, s)| {
                let why = if !s.listed {
                    match &s.last_error {
                        Some((_, e)) => format!("{id}: not listed yet: {e}"),
                        None => format!("{id}: not listed yet"),
                    }
                } else if matches!(id.kind, WatchKind::Pod(_)) && !matches!(s.pod, Some(Some(_))) {
                    format!("{id}: not found")
                } else {
                    return None;
                };
                Some(why)
            })
            .collect()
    }

    /// The workload's labels from the Pod watch, once read.
    pub fn pod_labels(&self) -> Option<&BTreeMap<String, String>> {
        self.watches
            .values()
            .find_map(|s| s.pod.as_ref().and_then(Option::as_ref))
    }

    /// The set in effect: every object's version in effect.
    pub fn policy_set(&self) -> PolicySet {
        self.policy_set_where(|_| true)
    }

    /// The set in effect for `workload`: the objects of its namespace and of the root
    /// namespace, the only ones that can apply to it (a cluster-wide watch holds every
    /// namespace's; each was checked when it was read, so they need not be compiled again).
    pub fn policy_set_for(&self, workload: &Workload) -> PolicySet {
        self.policy_set_where(|ns| ns == workload.namespace || ns == workload.root_namespace)
    }

    fn policy_set_where(&self, keep: impl Fn(&str) -> bool) -> PolicySet {
        let mut set = PolicySet::default();
        for state in self.watches.values() {
            for entry in state.objects.values().filter(|e| keep(&e.latest.namespace)) {
                match &entry.good {
                    Some(Held::RequestAuthentication(r)) => {
                        set.request_authentications.push(r.clone())
                    }
                    Some(Held::AuthorizationPolicy(r)) => {
                        set.authorization_policies.push(r.clone())
                    }
                    Some(Held::PeerAuthentication(r)) => set.peer_authentications.push(r.clone()),
                    None => {}
                }
            }
        }
        set
    }

    /// Per watch: (watch, objects held, invalid ones, synced, last complete list, errors).
    pub fn watch_stats(&self) -> Vec<(WatchId, usize, usize, bool, Option<u64>, u64)> {
        self.watches
            .iter()
            .map(|(id, s)| {
                let objects = match &id.kind {
                    WatchKind::Pod(_) => usize::from(matches!(s.pod, Some(Some(_)))),
                    WatchKind::Pods => self.pods.len(),
                    WatchKind::Security(_) => s.objects.len(),
                };
                (
                    id.clone(),
                    objects,
                    s.invalid(),
                    s.synced,
                    s.last_sync,
                    s.errors,
                )
            })
            .collect()
    }

    /// Every object held.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.watches.values().flat_map(|s| s.objects.values())
    }

    /// The store's part of `/config_dump`: each watch's health, every object (its latest
    /// version, the version in effect, and why they differ; a PeerAuthentication's mode).
    pub fn dump(&self) -> Value {
        let watches: Vec<Value> = self
            .watches
            .iter()
            .map(|(id, s)| {
                json!({
                    "kind": id.kind_label(),
                    "namespace": id.namespace_label(),
                    "listed": s.listed,
                    "synced": s.synced,
                    "last_sync": s.last_sync,
                    "objects": match &id.kind {
                        WatchKind::Pod(_) => usize::from(matches!(s.pod, Some(Some(_)))),
                        WatchKind::Pods => self.pods.len(),
                        WatchKind::Security(_) => s.objects.len(),
                    },
                    "invalid": s.invalid(),
                    "errors": s.errors,
                    "last_error": s.last_error.as_ref().map(|(at, message)| json!({"at": at, "message": message})),
                })
            })
            .collect();
        let objects: Vec<Value> = self
            .entries()
            .map(|e| {
                let (state, errors, revision) = match &e.refused {
                    None => ("in_effect", Vec::new(), None),
                    Some(Refusal::Invalid(errors)) => (
                        "invalid",
                        errors.iter().map(ToString::to_string).collect(),
                        None,
                    ),
                    Some(Refusal::OtherRevision(rev)) => {
                        ("other_revision", Vec::new(), Some(rev.clone()))
                    }
                };
                let mut v = serde_json::Map::new();
                v.insert("kind".into(), json!(e.kind.as_str()));
                v.insert("namespace".into(), json!(e.latest.namespace));
                v.insert("name".into(), json!(e.latest.name));
                v.insert("resource_version".into(), json!(e.latest.resource_version));
                v.insert(
                    "in_effect".into(),
                    json!(e.good.as_ref().map(Held::resource_version)),
                );
                v.insert("state".into(), json!(state));
                if !errors.is_empty() {
                    v.insert("errors".into(), json!(errors));
                }
                if let Some(rev) = revision {
                    v.insert("revision".into(), json!(rev));
                }
                if let Some(Held::PeerAuthentication(p)) = &e.good {
                    let mode = p.spec.mtls.as_ref().map(|m| m.mode.as_str());
                    v.insert("mtls_mode".into(), json!(mode));
                }
                Value::Object(v)
            })
            .collect();
        json!({"watches": watches, "objects": objects})
    }
}

/// The entry an object's new version makes (`previous`: the entry it replaces), and what
/// changed.
fn process(
    kind: SecurityKind,
    obj: &DynamicObject,
    previous: Option<&Entry>,
    revision: Option<&str>,
) -> (Entry, Change) {
    let latest = object_ref(obj);
    let generation = obj.metadata.generation;
    let labels = obj.metadata.labels.clone().unwrap_or_default();
    let previous_good = previous.and_then(|p| p.good.as_ref());
    let change = |what| Change {
        kind,
        object: latest.clone(),
        generation,
        what,
    };
    if !in_revision(&labels, revision) {
        let rev = labels.get(REVISION_LABEL).cloned().unwrap_or_default();
        let entry = Entry {
            kind,
            latest: latest.clone(),
            generation,
            good: None,
            refused: Some(Refusal::OtherRevision(rev.clone())),
        };
        let what = What::OtherRevision {
            revision: rev,
            dropped: previous_good.is_some(),
        };
        return (entry, change(what));
    }
    match decode(kind, obj) {
        Ok(held) => {
            let what = match previous_good {
                None => What::Created,
                Some(old) if old.same_effect(&held) => What::Unchanged,
                Some(old) => What::Updated {
                    from: old.resource_version().to_string(),
                },
            };
            let entry = Entry {
                kind,
                latest: latest.clone(),
                generation,
                good: Some(held),
                refused: None,
            };
            (entry, change(what))
        }
        Err(errors) => {
            let entry = Entry {
                kind,
                latest: latest.clone(),
                generation,
                good: previous_good.cloned(),
                refused: Some(Refusal::Invalid(errors.clone())),
            };
            let what = What::Refused {
                errors,
                kept: previous_good.map(|g| g.resource_version().to_string()),
            };
            (entry, change(what))
        }
    }
}

/// What a completed list changed in effect: objects gone, new, or with another version in
/// effect.
fn diff(
    old: &BTreeMap<(String, String), Entry>,
    new: &BTreeMap<(String, String), Entry>,
) -> Vec<Change> {
    let mut out = Vec::new();
    for (_, gone) in old.iter().filter(|(k, _)| !new.contains_key(*k)) {
        if gone.good.is_some() {
            out.push(Change {
                kind: gone.kind,
                object: gone.latest.clone(),
                generation: gone.generation,
                what: What::Deleted,
            });
        }
    }
    for (key, entry) in new {
        let before = old.get(key).and_then(|e| e.good.as_ref());
        let what = match (before, &entry.good) {
            (None, Some(_)) => What::Created,
            (Some(_), None) => What::Deleted,
            (Some(a), Some(b)) if !a.same_effect(b) => What::Updated {
                from: a.resource_version().to_string(),
            },
            _ => continue,
        };
        out.push(Change {
            kind: entry.kind,
            object: entry.latest.clone(),
            generation: entry.generation,
            what,
        });
    }
    out
}

fn pod_labels(obj: &DynamicObject) -> BTreeMap<String, String> {
    obj.metadata.labels.clone().unwrap_or_default()
}

fn apply_pod(state: &mut WatchState, event: Event<DynamicObject>) -> Applied {
    let mut out = Applied::default();
    match event {
        Event::Init => state.pod_relisting = Some(None),
        Event::InitApply(pod) => state.pod_relisting = Some(Some(pod_labels(&pod))),
        Event::InitDone => {
            let seen = state.pod_relisting.take().unwrap_or(None);
            out.pod = Some(match &seen {
                Some(labels) => PodChange::Labels(labels.clone()),
                None => PodChange::NotFound,
            });
            // A re-list that misses the Pod keeps the labels known (the Pod is going away,
            // and this process with it).
            if seen.is_some() || state.pod.is_none() {
                state.pod = Some(seen);
            }
            state.listed = true;
            state.synced = true;
            state.failing = None;
            state.last_sync = Some(meshguard_runtime::state::unix_now());
            out.listed = true;
        }
        Event::Apply(pod) => {
            let labels = pod_labels(&pod);
            state.pod = Some(Some(labels.clone()));
            out.pod = Some(PodChange::Labels(labels));
        }
        Event::Delete(_) => out.pod = Some(PodChange::Deleted),
    }
    out
}
