//! The watches and the loop that turns their events into published policy sets.
//!
//! Owns: one task per watch (kube-runtime's watcher with its default backoff; a watch that
//! fails after its list is started over with a full list, after a backoff of its own, so that
//! "synced" always means a list completed; every watch is started over every 30 to 60 minutes,
//! and on SIGHUP), and the loop that takes their events in batches into the
//! [`crate::store::Store`], publishes a set when what is in effect changed (the first once
//! every watch has listed), follows the workload's labels, logs each change, and keeps the
//! source's metrics. Does not own what an event means (the store) or compiling (the runtime).

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use meshguard_model::Workload;
use meshguard_runtime::metrics::WatchLabels;
use meshguard_runtime::state::ReloadOutcome;
use meshguard_runtime::{Metrics, PolicyState, WatchedSource, reload};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::kinds::{Scope, WatchId, WatchKind, pod_resource, security_watches};
use crate::pods::PodIndex;
use crate::store::{Change, PodChange, Store, What};

/// How the Kubernetes source reads.
#[derive(Clone, Debug)]
pub struct Options {
    /// The namespaces read (the workload's and the root namespace), or every namespace.
    pub scope: Scope,
    /// `--revision`: only objects without `istio.io/rev`, or with this one, are processed.
    pub revision: Option<String>,
    /// `--pod`: the workload's Pod, in the workload's namespace, whose labels are the
    /// workload's (followed as they change).
    pub pod: Option<String>,
    /// `ext-authz --workload-from-request`: watch every Pod of the scope (the workload's
    /// namespace, or every namespace) and index them by IP ([`KubeSource::pods`]). The first
    /// set waits for their first list too.
    pub pods: bool,
    /// Every watch is started over with a full list at a random time in this range, a safety
    /// net against events lost in ways the API server does not report.
    pub rewatch: (Duration, Duration),
    /// The first and the longest wait before a failed watch is started over.
    pub restart_backoff: (Duration, Duration),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            scope: Scope::Namespaces,
            revision: None,
            pod: None,
            pods: false,
            rewatch: (Duration::from_secs(30 * 60), Duration::from_secs(60 * 60)),
            restart_backoff: (Duration::from_secs(1), Duration::from_secs(30)),
        }
    }
}

/// The Kubernetes policy source: its watches and what they hold. Tell the runtime about it
/// with `PolicySource::Watched`, then [`KubeSource::run`] it.
pub struct KubeSource {
    client: kube::Client,
    server: String,
    options: Options,
    watches: Vec<WatchId>,
    namespaces: Vec<String>,
    store: Mutex<Store>,
    /// The store's Pods by IP, reachable without the store's lock.
    pods: Arc<PodIndex>,
    resync: watch::Sender<u64>,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("server", &self.server)
            .field("options", &self.options)
            .field("watches", &self.watches)
            .finish_non_exhaustive()
    }
}

/// The watches of `options` for `workload`: 3 kinds in the workload's namespace and the root
/// namespace (or cluster-wide), the Pod with `--pod`, and the Pods of the workload's namespace
/// (or every namespace) with [`Options::pods`].
pub fn watches_for(workload: &Workload, options: &Options) -> Vec<WatchId> {
    let mut watches =
        security_watches(options.scope, &workload.namespace, &workload.root_namespace);
    if let Some(pod) = &options.pod {
        watches.push(WatchId {
            kind: WatchKind::Pod(pod.clone()),
            namespace: Some(workload.namespace.clone()),
        });
    }
    if options.pods {
        watches.push(WatchId {
            kind: WatchKind::Pods,
            namespace: match options.scope {
                Scope::Namespaces => Some(workload.namespace.clone()),
                Scope::Cluster => None,
            },
        });
    }
    watches
}

impl KubeSource {
    /// A source reading with `client` from `server` (for messages) for `workload`.
    pub fn new(
        client: kube::Client,
        server: impl Into<String>,
        workload: &Workload,
        options: Options,
    ) -> Arc<KubeSource> {
        let watches = watches_for(workload, &options);
        let mut namespaces = vec![workload.namespace.clone()];
        if workload.root_namespace != workload.namespace {
            namespaces.push(workload.root_namespace.clone());
        }
        let store = Store::new(&watches, options.revision.clone());
        Arc::new(KubeSource {
            client,
            server: server.into(),
            pods: store.pod_index(),
            store: Mutex::new(store),
            options,
            watches,
            namespaces,
            resync: watch::Sender::new(0),
        })
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The Pods by IP ([`Options::pods`]; empty without it).
    pub fn pods(&self) -> Arc<PodIndex> {
        self.pods.clone()
    }

    /// The set in effect for `workload` now: the valid objects of its namespace and of the
    /// root namespace (those the source reads). `ext-authz --workload-from-request` compiles
    /// it for each workload it meets; the published sets are compiled for the source's own
    /// workload.
    pub fn policy_set_for(&self, workload: &Workload) -> meshguard_model::PolicySet {
        self.store().policy_set_for(workload)
    }

    /// Watches until `shutdown`, publishing each set to `state`. The first set is published
    /// once every watch has completed its first list (and, with `--pod`, the Pod's labels are
    /// known); until then the runtime refuses every request.
    pub fn run(
        self: Arc<Self>,
        state: Arc<PolicyState>,
        metrics: Arc<Metrics>,
        shutdown: impl Future<Output = ()>,
    ) -> impl Future<Output = ()> {
        let (tx, rx) = mpsc::channel(1024);
        let mut tasks = JoinSet::new();
        for w in &self.watches {
            tasks.spawn(watch_task(
                self.api(w),
                w.clone(),
                self.config(w),
                tx.clone(),
                self.resync.subscribe(),
                self.options.clone(),
            ));
        }
        drop(tx);
        let workload = state.subscribe_workload();
        async move {
            let mut looping = Loop {
                source: self,
                state,
                metrics,
                published: false,
            };
            looping.run(rx, workload, shutdown).await;
            // Dropping the set stops the watch tasks.
            drop(tasks);
        }
    }

    fn api(&self, w: &WatchId) -> Api<DynamicObject> {
        let ar = match &w.kind {
            WatchKind::Security(k) => k.api_resource(),
            WatchKind::Pod(_) | WatchKind::Pods => pod_resource(),
        };
        match &w.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    fn config(&self, w: &WatchId) -> watcher::Config {
        let config = watcher::Config::default();
        match &w.kind {
            WatchKind::Pod(name) => config.fields(&format!("metadata.name={name}")),
            // Finished Pods leave the watch (as deletions): their IPs name no workload.
            WatchKind::Pods => config.fields("status.phase!=Succeeded,status.phase!=Failed"),
            WatchKind::Security(_) => config,
        }
    }
}

impl WatchedSource for KubeSource {
    fn describe(&self) -> String {
        format!("the Kubernetes API server {}", self.server)
    }

    fn pending(&self) -> Vec<String> {
        self.store().pending()
    }

    fn dump(&self) -> serde_json::Value {
        let mut out = json!({
            "type": "kubernetes",
            "server": self.server,
            "scope": self.options.scope.as_str(),
            "namespaces": match self.options.scope {
                Scope::Namespaces => json!(self.namespaces),
                Scope::Cluster => json!("*"),
            },
            "revision": self.options.revision,
            "pod": self.options.pod,
            "pods_by_ip": self.options.pods.then(|| self.pods.len()),
        });
        let store = self.store().dump();
        if let (Some(out), serde_json::Value::Object(store)) = (out.as_object_mut(), store) {
            out.extend(store);
        }
        out
    }

    fn resync(&self) {
        self.resync.send_modify(|n| *n += 1);
    }
}

/// A watch's message to the loop: an event, or an error in words.
type Message = (WatchId, Result<Event<DynamicObject>, String>);

/// Why a watch task starts its watcher over.
enum Restart {
    /// The watch failed after its list: list again, after a backoff.
    Failed,
    /// The periodic full re-list, or SIGHUP.
    Fresh,
}

/// A random duration in `[lo, hi]` (std's per-process random hash keys as the source).
fn random_between(lo: Duration, hi: Duration) -> Duration {
    let span = hi.saturating_sub(lo).as_millis().max(1);
    let r = u128::from(RandomState::new().hash_one(std::time::Instant::now()));
    lo + Duration::from_millis(u64::try_from(r % span).unwrap_or(0))
}

/// Whether a watcher error came after the list (starting the watch, or during it). The
/// watcher would resume such a watch quietly from its last version; this source starts it over
/// with a list instead, so that the watch is known to be current again (client-go's reflector
/// also lists again after a watch fails). A list failure, or `410 Gone`, makes the watcher
/// list again by itself.
fn failed_after_list(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchStartFailed(_) | watcher::Error::WatchFailed(_) => true,
        watcher::Error::WatchError(status) => status.code != 410,
        watcher::Error::InitialListFailed(_) | watcher::Error::NoResourceVersion => false,
    }
}

/// A watcher error of `id` in words: what failed and the API server's answer (never a
/// credential: the client's errors carry none).
fn describe_error(id: &WatchId, e: &watcher::Error) -> String {
    let client = |what: &str, e: &kube::Error| match e {
        // A kind the API server does not serve: no CRD (its answer is a bare `404 page not
        // found`).
        kube::Error::Api(s) if s.code == 404 => match &id.kind {
            WatchKind::Security(k) => format!(
                "{what} failed: 404: the API server does not serve {}.security.istio.io/v1; is its CustomResourceDefinition installed?",
                k.plural()
            ),
            WatchKind::Pod(_) | WatchKind::Pods => format!("{what} failed: 404 Not Found"),
        },
        kube::Error::Api(s) => format!("{what} failed: {} ({}): {}", s.reason, s.code, s.message),
        other => format!("{what} failed: {other}"),
    };
    match e {
        watcher::Error::InitialListFailed(e) => client("list", e),
        watcher::Error::WatchStartFailed(e) => client("watch", e),
        watcher::Error::WatchFailed(e) => client("watch", e),
        watcher::Error::WatchError(s) => {
            format!("watch error: {} ({}): {}", s.reason, s.code, s.message)
        }
        watcher::Error::NoResourceVersion => "no resourceVersion in the list".to_string(),
    }
}

async fn watch_task(
    api: Api<DynamicObject>,
    id: WatchId,
    config: watcher::Config,
    tx: mpsc::Sender<Message>,
    mut resync: watch::Receiver<u64>,
    options: Options,
) {
    let (first, longest) = options.restart_backoff;
    let mut wait: Option<Duration> = None;
    loop {
        if let Some(d) = wait {
            tokio::select! {
                () = tokio::time::sleep(d) => {}
                r = resync.changed() => if r.is_err() { return },
            }
        }
        let mut stream = watcher::watcher(api.clone(), config.clone())
            .default_backoff()
            .boxed();
        let rewatch = tokio::time::sleep(random_between(options.rewatch.0, options.rewatch.1));
        tokio::pin!(rewatch);
        let restart = loop {
            tokio::select! {
                item = stream.next() => match item {
                    Some(Ok(event)) => {
                        let listed = matches!(event, Event::InitDone);
                        if tx.send((id.clone(), Ok(event))).await.is_err() {
                            return;
                        }
                        if listed {
                            wait = None;
                        }
                    }
                    Some(Err(e)) => {
                        let restart = failed_after_list(&e);
                        let message = describe_error(&id, &e);
                        if tx.send((id.clone(), Err(message))).await.is_err() {
                            return;
                        }
                        if restart {
                            break Restart::Failed;
                        }
                    }
                    // A watcher stream does not end; should it, start over.
                    None => break Restart::Failed,
                },
                () = &mut rewatch => break Restart::Fresh,
                r = resync.changed() => {
                    if r.is_err() {
                        return;
                    }
                    break Restart::Fresh;
                }
            }
        };
        wait = match restart {
            Restart::Fresh => None,
            Restart::Failed => Some(wait.map_or(first, |w| (w * 2).min(longest))),
        };
    }
}

/// The loop that takes the watches' messages in.
struct Loop {
    source: Arc<KubeSource>,
    state: Arc<PolicyState>,
    metrics: Arc<Metrics>,
    /// A first set was published.
    published: bool,
}

impl Loop {
    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Message>,
        mut workload: watch::Receiver<Workload>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                m = rx.recv() => {
                    let Some(first) = m else { break };
                    // Whatever else has arrived is taken in with it: one set for a burst
                    // (a `kubectl apply -f dir/`, a re-list).
                    let mut batch = vec![first];
                    while batch.len() < 4096 {
                        match rx.try_recv() {
                            Ok(m) => batch.push(m),
                            Err(_) => break,
                        }
                    }
                    self.take_in(batch, &mut workload);
                }
                r = workload.changed() => {
                    if r.is_err() {
                        break;
                    }
                    workload.borrow_and_update();
                    self.publish(&[], true);
                }
                () = &mut shutdown => break,
            }
        }
    }

    fn labels(&self, w: &WatchId) -> WatchLabels {
        WatchLabels {
            kind: w.kind_label(),
            namespace: w.namespace_label(),
        }
    }

    fn take_in(&mut self, batch: Vec<Message>, workload: &mut watch::Receiver<Workload>) {
        let mut changes: Vec<Change> = Vec::new();
        let mut new_labels = None;
        {
            let mut store = self.source.store();
            for (id, item) in batch {
                match item {
                    Ok(event) => {
                        if !matches!(event, Event::Init) {
                            store.healthy(&id);
                        }
                        let applied = store.apply(&id, event);
                        changes.extend(applied.changes);
                        if applied.listed {
                            let stats = store.watch_stats();
                            if let Some((_, objects, invalid, ..)) =
                                stats.iter().find(|s| s.0 == id)
                            {
                                tracing::info!(
                                    "listed {id}: {objects} object(s), {invalid} invalid"
                                );
                            }
                        }
                        match applied.pod {
                            Some(PodChange::Labels(labels)) => new_labels = Some(labels),
                            Some(PodChange::NotFound) => tracing::warn!(
                                "{id} not found; requests are refused until it is (its labels select the policies)"
                            ),
                            Some(PodChange::Deleted) => {
                                tracing::warn!("{id} was deleted; keeping its last labels")
                            }
                            None => {}
                        }
                    }
                    Err(message) => {
                        let news = store.error(&id, message.clone());
                        self.metrics
                            .source
                            .errors
                            .get_or_create(&self.labels(&id))
                            .inc();
                        if !news {
                            // The same failure again, retried: counted, warned about once.
                            tracing::debug!("{id}: {message}; retrying");
                        } else if self.published {
                            tracing::warn!(
                                "{id}: {message}; retrying, the last good policies stay in effect"
                            );
                        } else {
                            tracing::warn!(
                                "{id}: {message}; retrying, requests are refused (503) until every watch has listed"
                            );
                        }
                    }
                }
            }
            for (id, objects, invalid, synced, last_sync, _) in store.watch_stats() {
                let l = self.labels(&id);
                let m = &self.metrics.source;
                m.synced.get_or_create(&l).set(i64::from(synced));
                m.objects
                    .get_or_create(&l)
                    .set(i64::try_from(objects).unwrap_or(i64::MAX));
                m.invalid_objects
                    .get_or_create(&l)
                    .set(i64::try_from(invalid).unwrap_or(i64::MAX));
                if let Some(t) = last_sync {
                    m.last_sync
                        .get_or_create(&l)
                        .set(i64::try_from(t).unwrap_or(i64::MAX));
                }
            }
        }
        // Refusals are worth a line each, per problem, as soon as they are seen.
        for c in &changes {
            if let What::Refused { errors, kept } = &c.what {
                let kept = match kept {
                    Some(rv) => format!("resourceVersion {rv} stays in effect"),
                    None => "no valid version of it is in effect".to_string(),
                };
                for e in errors {
                    tracing::warn!("refused {e}; {kept}");
                }
            }
        }
        let mut relabelled = false;
        if let Some(labels) = new_labels {
            let before = self.state.workload();
            if self.state.set_labels(labels) {
                relabelled = true;
                tracing::info!(
                    "workload labels from the Pod: {} (were {})",
                    self.state.workload().describe(),
                    before.labels_text()
                );
                // Published below for the new labels; the change needs no second set.
                workload.borrow_and_update();
            }
        }
        self.publish(&changes, relabelled);
    }

    /// Publishes the set in effect when it changed (or the workload's labels did), once the
    /// store is ready; logs what changed with the generation it made.
    fn publish(&mut self, changes: &[Change], relabelled: bool) {
        let set = {
            let mut store = self.source.store();
            let dirty = store.take_dirty();
            if !store.ready() {
                return;
            }
            if self.published && !dirty && !relabelled {
                // Nothing in effect changed: log the metadata-only and other-revision
                // changes, publish nothing.
                for c in changes {
                    if matches!(c.what, What::Unchanged | What::OtherRevision { .. }) {
                        tracing::info!("{c}");
                    }
                }
                return;
            }
            store.policy_set_for(&self.state.workload())
        };
        let first = !self.published;
        match reload::publish_now(&self.state, &self.metrics, set) {
            ReloadOutcome::Applied { generation } => {
                self.published = true;
                if first && self.source.options.pods {
                    // A workload per Check: what applies to the source's own workload (the
                    // namespace, no labels) is not what any Check gets.
                    let all = self.source.store().policy_set();
                    tracing::info!(
                        "policies loaded (generation {generation}, first complete list): {} RequestAuthentication, {} AuthorizationPolicy from {}; Pods listed with an IP of their own: {}; each Check is decided for the workload it is addressed to",
                        all.request_authentications.len(),
                        all.authorization_policies.len(),
                        self.source.describe(),
                        self.source.pods().len()
                    );
                    return;
                }
                if first {
                    reload::log_summary(
                        &self.state,
                        &format!("policies loaded (generation {generation}, first complete list)"),
                    );
                    return;
                }
                for c in changes {
                    if !matches!(c.what, What::Refused { .. }) {
                        tracing::info!("{c}; policies generation {generation}");
                    }
                }
                if changes.is_empty() {
                    tracing::info!(
                        "policies compiled again for {} (generation {generation})",
                        self.state.workload().describe()
                    );
                }
            }
            ReloadOutcome::Failed(errors) => {
                for e in &errors.0 {
                    tracing::error!(error = %e, "the policy set from {} does not compile; keeping the last good policies", self.source.describe());
                }
            }
        }
    }
}
