//! The live policy snapshot and its reloads (docs/decisions.md, decision 8).
//!
//! Owns: compiling a policy set, from whichever source ([`crate::source`]), into a
//! [`Snapshot`] for the workload; publishing it atomically (a request loads the snapshot once
//! and never sees a half-applied change); keeping the last good snapshot when a set fails;
//! the workload, whose labels may change; readiness of the policies; and what
//! `/config_dump` shows. Does not own when files are reloaded (file watching and SIGHUP live
//! in [`crate::reload`]) or how a watched source reads its objects.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::time::Duration;

use arc_swap::ArcSwap;
use meshguard_engine::{KeyStore, VerifiedCache};
use meshguard_jwks::{JwksManager, RemoteKeys};
use meshguard_jwt::Jwks;
use meshguard_model::{
    LoadErrors, LoadFailure, LoadOptions, PolicySet, SkippedFile, Workload, WorkloadSummary,
    load_paths, summarize,
};
use meshguard_policy::{CompiledWorkload, KeySource, RemoteKeySource};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::source::PolicySource;

/// One loaded and compiled policy set.
#[derive(Debug)]
pub struct Snapshot {
    pub compiled: CompiledWorkload,
    /// Files read, for `/config_dump`.
    pub files: Vec<PathBuf>,
    /// Documents of other kinds that were skipped.
    pub skipped: Vec<String>,
    /// 1 for the start-up load, +1 per successful reload.
    pub generation: u64,
    /// Unix seconds.
    pub loaded_at: u64,
    /// The fetcher of each remote key source the providers use, with the rule timeout.
    pub remote: HashMap<RemoteKeySource, (Arc<RemoteKeys>, Duration)>,
    /// Verified tokens, shared by every snapshot (entries of older snapshots are never hit:
    /// each compilation gives its providers new cache ids). `None` when disabled.
    pub verified: Option<Arc<VerifiedCache>>,
    /// Files in the policy directories that were not read, and why.
    pub skipped_files: Vec<SkippedFile>,
    /// What applies to the workload: for the start-up and reload log lines and
    /// `/config_dump`.
    pub summary: WorkloadSummary,
    /// False only before a watched source's first set (generation 0, nothing compiled):
    /// every request is then refused with 503, never decided against an empty set.
    pub loaded: bool,
}

impl KeyStore for Snapshot {
    fn remote(&self, source: &RemoteKeySource) -> Option<Jwks> {
        self.remote.get(source).and_then(|(keys, _)| keys.current())
    }

    fn remote_generation(&self, source: &RemoteKeySource) -> u64 {
        self.remote
            .get(source)
            .map_or(0, |(keys, _)| keys.generation())
    }

    fn verified_cache(&self) -> Option<&VerifiedCache> {
        self.verified.as_deref()
    }
}

/// A failed reload, kept for `/config_dump` until the next success.
#[derive(Clone, Debug, Serialize)]
pub struct ReloadFailure {
    pub at: u64,
    pub errors: Vec<String>,
}

/// The shared, swappable policy state.
#[derive(Debug)]
pub struct PolicyState {
    source: PolicySource,
    /// The workload; its labels may change (a followed labels file or Pod). Receivers from
    /// [`PolicyState::subscribe_workload`] hear of each change.
    workload: watch::Sender<Workload>,
    jwks: JwksManager,
    verified: Option<Arc<VerifiedCache>>,
    current: ArcSwap<Snapshot>,
    last_error: Mutex<Option<ReloadFailure>>,
    /// The proxy listener's mutual TLS as `/config_dump` shows it (set by the proxy, which
    /// owns the certificates), `None` without `--tls-dir`.
    tls: Mutex<Option<Value>>,
    /// Sections a front end computes when `/config_dump` is asked for.
    sections: Mutex<Sections>,
}

/// A `/config_dump` section computed on each request (e.g. the workloads that
/// `meshguard ext-authz --workload-from-request` has compiled), by the front end that owns it.
pub type DumpSection = Arc<dyn Fn() -> Value + Send + Sync>;

#[derive(Default)]
struct Sections(Vec<(&'static str, DumpSection)>);

impl std::fmt::Debug for Sections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(n, _)| n))
            .finish()
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Compiles what a source produced into a snapshot: every error of the set at once (decoding
/// and compiling), nothing of it on any error.
fn build(
    loaded: Result<PolicySet, LoadFailure>,
    workload: &Workload,
    jwks: &JwksManager,
    verified: &Option<Arc<VerifiedCache>>,
    generation: u64,
) -> Result<Snapshot, LoadErrors> {
    let (set, compiled) = meshguard_policy::compile_loaded(loaded, workload)?;
    // One fetcher per distinct source, shared across reloads: the manager keeps them.
    let remote = compiled
        .remote_sources()
        .into_iter()
        .map(|(src, timeout)| (src.clone(), (jwks.source(src, timeout), timeout)))
        .collect();
    Ok(Snapshot {
        remote,
        verified: verified.clone(),
        summary: summarize(&set, workload),
        compiled,
        skipped: set.skipped.iter().map(ToString::to_string).collect(),
        skipped_files: set.skipped_files,
        files: set.files,
        generation,
        loaded_at: unix_now(),
        loaded: true,
    })
}

/// A snapshot of `set` compiled for `workload`, outside any [`PolicyState`]: for a front end
/// that decides for more than one workload (`meshguard ext-authz --workload-from-request`),
/// with fetchers and a token cache of its own (a state's reload stops the fetchers its own
/// workload does not use).
pub fn compile_snapshot(
    set: PolicySet,
    workload: &Workload,
    jwks: &JwksManager,
    verified: &Option<Arc<VerifiedCache>>,
    generation: u64,
) -> Result<Snapshot, LoadErrors> {
    build(Ok(set), workload, jwks, verified, generation)
}

/// The files of a file source, loaded.
fn load_files(paths: &[PathBuf], workload: &Workload) -> Result<PolicySet, LoadFailure> {
    let opts = LoadOptions {
        default_namespace: workload.namespace.clone(),
    };
    load_paths(paths, &opts)
}

/// The snapshot of a watched source before its first set: nothing compiled, nothing served.
fn not_loaded(workload: &Workload, verified: &Option<Arc<VerifiedCache>>) -> Snapshot {
    let empty = PolicySet::default();
    Snapshot {
        compiled: CompiledWorkload {
            workload: workload.clone(),
            providers: Vec::new(),
            custom: Vec::new(),
            audit: Vec::new(),
            deny: Vec::new(),
            allow: Vec::new(),
            // Requests are refused until the first set, whatever the connection.
            mtls: Default::default(),
        },
        files: Vec::new(),
        skipped: Vec::new(),
        generation: 0,
        loaded_at: unix_now(),
        remote: HashMap::new(),
        verified: verified.clone(),
        skipped_files: Vec::new(),
        summary: summarize(&empty, workload),
        loaded: false,
    }
}

/// The outcome of one reload attempt.
#[derive(Debug)]
pub enum ReloadOutcome {
    Applied { generation: u64 },
    Failed(LoadErrors),
}

impl PolicyState {
    /// The state for `source`. A file source is loaded now, and any error is fatal to
    /// start-up; a watched source starts with no set ([`Snapshot::loaded`] false) until its
    /// first [`PolicyState::publish`]. `token_cache`: how many verified tokens to remember
    /// (0 disables the cache).
    pub fn load(
        source: PolicySource,
        workload: Workload,
        jwks: JwksManager,
        token_cache: usize,
    ) -> Result<PolicyState, LoadErrors> {
        let verified = (token_cache > 0).then(|| Arc::new(VerifiedCache::new(token_cache)));
        let snap = match &source {
            PolicySource::Files(paths) => {
                build(load_files(paths, &workload), &workload, &jwks, &verified, 1)?
            }
            PolicySource::Watched(_) => not_loaded(&workload, &verified),
        };
        Ok(PolicyState {
            source,
            workload: watch::Sender::new(workload),
            jwks,
            verified,
            current: ArcSwap::from_pointee(snap),
            last_error: Mutex::new(None),
            tls: Mutex::new(None),
            sections: Mutex::default(),
        })
    }

    /// The snapshot to use for one request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Loads the files again (a file source; a watched source publishes instead, and this
    /// recompiles nothing for it). On success the new snapshot replaces the old one in one
    /// step; on failure the old one stays and the errors are kept for `/config_dump`.
    pub fn reload(&self) -> ReloadOutcome {
        match &self.source {
            PolicySource::Files(paths) => self.install(load_files(paths, &self.workload())),
            PolicySource::Watched(_) => ReloadOutcome::Applied {
                generation: self.current.load().generation,
            },
        }
    }

    /// Compiles a complete set from a watched source for the current workload and, when it
    /// compiles, swaps it in (the first one makes the policies ready); otherwise the last
    /// good snapshot stays and the errors are kept for `/config_dump`.
    pub fn publish(&self, set: PolicySet) -> ReloadOutcome {
        self.install(Ok(set))
    }

    fn install(&self, loaded: Result<PolicySet, LoadFailure>) -> ReloadOutcome {
        let next_gen = self.current.load().generation + 1;
        match build(
            loaded,
            &self.workload(),
            &self.jwks,
            &self.verified,
            next_gen,
        ) {
            Ok(snap) => {
                // Fetchers of sources no rule names any more stop; kept ones keep their keys.
                let used: Vec<RemoteKeySource> = snap.remote.keys().cloned().collect();
                self.current.store(Arc::new(snap));
                self.jwks.retain(|s| used.contains(s));
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                ReloadOutcome::Applied {
                    generation: next_gen,
                }
            }
            Err(errors) => {
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(ReloadFailure {
                    at: unix_now(),
                    errors: errors.0.iter().map(ToString::to_string).collect(),
                });
                ReloadOutcome::Failed(errors)
            }
        }
    }

    /// Replaces the workload's labels (a followed labels file or Pod changed). Returns
    /// whether they changed; if so, subscribers hear of it, and the next set (a file reload,
    /// a watched source's next publish) is compiled for the new labels.
    pub fn set_labels(&self, labels: BTreeMap<String, String>) -> bool {
        self.workload.send_if_modified(|w| {
            if w.labels == labels {
                return false;
            }
            w.labels = labels;
            true
        })
    }

    /// Hears of each change of the workload (its labels).
    pub fn subscribe_workload(&self) -> watch::Receiver<Workload> {
        self.workload.subscribe()
    }

    /// Whether the policies can be served: `Err` with what is missing while a watched source
    /// has not published its first set.
    pub fn policies_ready(&self) -> Result<(), String> {
        if self.snapshot().loaded {
            return Ok(());
        }
        let PolicySource::Watched(source) = &self.source else {
            return Ok(());
        };
        let pending = source.pending();
        let mut why = format!(
            "waiting for the first complete list from {}",
            source.describe()
        );
        if !pending.is_empty() {
            why.push_str(": ");
            why.push_str(&pending.join("; "));
        }
        Err(why)
    }

    pub fn source(&self) -> &PolicySource {
        &self.source
    }

    pub fn jwks(&self) -> &JwksManager {
        &self.jwks
    }

    /// The policy paths of a file source; empty for a watched one.
    pub fn paths(&self) -> &[PathBuf] {
        self.source.paths()
    }

    /// The workload now (its labels may have changed since the snapshot was compiled).
    pub fn workload(&self) -> Workload {
        self.workload.borrow().clone()
    }

    pub fn last_error(&self) -> Option<ReloadFailure> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets the `tls` section of `/config_dump`.
    pub fn set_tls_status(&self, status: Value) {
        *self.tls.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
    }

    /// Adds the section `name` to `/config_dump`, computed by `section` on each request.
    pub fn add_dump_section(&self, name: &'static str, section: DumpSection) {
        let mut sections = self.sections.lock().unwrap_or_else(|e| e.into_inner());
        sections.0.retain(|(n, _)| *n != name);
        sections.0.push((name, section));
    }

    /// The `/config_dump` document: what is loaded, what applies, the JWT providers and
    /// their keys (ids only, never key material), and the last reload error.
    pub fn dump(&self) -> Value {
        let snap = self.snapshot();
        let cw = &snap.compiled;
        let providers: Vec<Value> = cw
            .providers
            .iter()
            .map(|p| {
                let keys = match &p.keys {
                    KeySource::Inline(jwks) => json!({
                        "source": "inline",
                        "key_ids": jwks.keys().iter().map(|k| k.kid()).collect::<Vec<_>>(),
                        "skipped_keys": jwks.skipped().iter().map(|s| json!({"index": s.index, "kid": s.kid, "reason": s.reason})).collect::<Vec<_>>(),
                    }),
                    KeySource::Remote(src) => json!({"source": "remote", "uri": src.to_string()}),
                };
                json!({
                    "name": p.name,
                    "rule": p.source,
                    "issuer": p.issuer,
                    "audiences": p.validation.audiences,
                    "keys": keys,
                    "required": p.required,
                })
            })
            .collect();
        let policies: Vec<Value> = cw
            .policies()
            .map(|p| {
                json!({
                    "namespace": p.namespace,
                    "name": p.name,
                    "action": p.action.as_str(),
                    "dry_run": p.dry_run,
                    "rules": p.rules.iter().map(|r| &*r.id).collect::<Vec<_>>(),
                })
            })
            .collect();
        let source = match &self.source {
            PolicySource::Files(paths) => json!({"type": "files", "paths": paths}),
            PolicySource::Watched(w) => w.dump(),
        };
        let mut dump = json!({
            "workload": {
                "namespace": cw.workload.namespace,
                "labels": cw.workload.labels,
                "root_namespace": cw.workload.root_namespace,
            },
            "policies_loaded": snap.loaded,
            "generation": snap.generation,
            "loaded_at": snap.loaded_at,
            "source": source,
            "files": snap.files,
            "skipped": snap.skipped,
            "skipped_files": snap.skipped_files.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "applied": snap.summary.applied().map(|r| format!("{} {}", r.kind.as_str(), r.key)).collect::<Vec<_>>(),
            "jwt_providers": providers,
            "authorization_policies": policies,
            "jwks": self.jwks.status(),
            "last_reload_error": self.last_error(),
        });
        if let (Some(tls), Some(obj)) = (
            self.tls.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            dump.as_object_mut(),
        ) {
            obj.insert("tls".into(), tls);
        }
        let sections: Vec<(&'static str, DumpSection)> = self
            .sections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone();
        if let Some(obj) = dump.as_object_mut() {
            for (name, section) in sections {
                obj.insert(name.into(), section());
            }
        }
        dump
    }
}
