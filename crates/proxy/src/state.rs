//! The live policy snapshot and its reloads (docs/decisions.md, decision 8).
//!
//! Owns: loading and compiling the policy files into a [`Snapshot`], publishing it atomically
//! (a request loads the snapshot once and never sees a half-applied change), keeping the last
//! good snapshot when a reload fails, and what `/config_dump` shows. Does not own when reloads
//! happen (file watching and SIGHUP live in [`crate::reload`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use arc_swap::ArcSwap;
use meshguard_engine::{KeyStore, VerifiedCache};
use meshguard_jwks::{JwksManager, RemoteKeys, RemoteSource};
use meshguard_jwt::Jwks;
use meshguard_model::select::Attachable;
use meshguard_model::{
    Attachment, LoadErrors, LoadOptions, PolicySet, Resource, Workload, attachment, load_paths,
};
use meshguard_policy::{CompiledWorkload, KeySource, RemoteKeySource};
use serde::Serialize;
use serde_json::{Value, json};

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
    /// What was read and what applies, for the start-up and reload log lines.
    pub summary: LoadSummary,
}

/// What one load read and what of it applies to the workload: the start-up and reload log
/// lines, written so that a proxy enforcing nothing (a wrong `--namespace`, a label typo, a
/// directory without policy files) says so instead of allowing everything silently.
#[derive(Clone, Debug, Default)]
pub struct LoadSummary {
    pub files: usize,
    pub request_authentications: usize,
    pub authorization_policies: usize,
    /// Documents of other kinds, skipped.
    pub skipped_documents: usize,
    /// `Kind namespace/name` of every resource that applies.
    pub applied: Vec<String>,
    /// Resources in the workload's or the root namespace that do not apply, and why: the
    /// near misses worth naming when nothing applies.
    pub not_applied: Vec<String>,
    /// Namespaces of all loaded resources.
    pub namespaces: BTreeSet<String>,
    /// Each JWT provider's issuer and where its keys come from.
    pub providers: Vec<String>,
}

/// How serious a summary line is; the caller picks the log level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SummaryLevel {
    Info,
    Warn,
}

/// Names listed per summary line; the rest are counted (`/config_dump` lists them all).
const LISTED: usize = 10;

fn listed(items: &[String]) -> String {
    let mut s = items
        .iter()
        .take(LISTED)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > LISTED {
        let _ = write!(s, " and {} more (see /config_dump)", items.len() - LISTED);
    }
    s
}

/// `namespace foo, labels app=httpbin` (or `no labels`).
pub fn describe_workload(w: &Workload) -> String {
    if w.labels.is_empty() {
        format!("namespace {}, no labels", w.namespace)
    } else {
        let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("namespace {}, labels {}", w.namespace, labels.join(","))
    }
}

/// Why a resource in the workload's (or the root) namespace does not apply.
fn not_applied<S: Attachable>(kind: &str, r: &Resource<S>, workload: &Workload) -> Option<String> {
    let why = match attachment(r, workload) {
        Attachment::Applies | Attachment::OtherNamespace => return None,
        Attachment::SelectorMismatch => {
            let sel: Vec<String> = r
                .spec
                .selector()
                .map(|s| {
                    s.match_labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "its selector {} is not a subset of the workload's labels",
                sel.join(",")
            )
        }
        Attachment::TargetRefIgnored => {
            "it has a targetRef, which attaches to gateways and waypoints, not sidecars".into()
        }
    };
    Some(format!("{kind} {} does not apply: {why}", r.key()))
}

impl LoadSummary {
    fn new(set: &PolicySet, compiled: &CompiledWorkload) -> LoadSummary {
        let w = &compiled.workload;
        let mut not = Vec::new();
        for r in &set.request_authentications {
            not.extend(not_applied("RequestAuthentication", r, w));
        }
        for r in &set.authorization_policies {
            not.extend(not_applied("AuthorizationPolicy", r, w));
        }
        let namespaces = set
            .request_authentications
            .iter()
            .map(|r| r.namespace.clone())
            .chain(
                set.authorization_policies
                    .iter()
                    .map(|r| r.namespace.clone()),
            )
            .collect();
        let providers = compiled
            .providers
            .iter()
            .map(|p| match &p.keys {
                KeySource::Inline(jwks) => {
                    format!("{} (inline JWKS, {} key(s))", p.issuer, jwks.keys().len())
                }
                KeySource::Remote(src) => format!("{} (keys from {src})", p.issuer),
            })
            .collect();
        LoadSummary {
            files: set.files.len(),
            request_authentications: set.request_authentications.len(),
            authorization_policies: set.authorization_policies.len(),
            skipped_documents: set.skipped.len(),
            applied: compiled.applied.clone(),
            not_applied: not,
            namespaces,
            providers,
        }
    }

    /// `1 RequestAuthentication, 1 AuthorizationPolicy from 2 file(s)`.
    pub fn loaded(&self) -> String {
        let mut s = format!(
            "{} RequestAuthentication, {} AuthorizationPolicy from {} file(s)",
            self.request_authentications, self.authorization_policies, self.files
        );
        if self.skipped_documents > 0 {
            let _ = write!(
                s,
                "; {} document(s) of other kinds skipped",
                self.skipped_documents
            );
        }
        s
    }

    /// The lines after the headline: what applies, the JWT providers, and when nothing
    /// applies, a warning with the likely reason. `paths`: the `--policies` paths.
    pub fn lines(&self, workload: &Workload, paths: &[PathBuf]) -> Vec<(SummaryLevel, String)> {
        let who = describe_workload(workload);
        let total = self.request_authentications + self.authorization_policies;
        let mut out = Vec::new();
        if self.applied.is_empty() {
            out.push((
                SummaryLevel::Warn,
                format!("no policy applies to {who}: every request is allowed, as Istio does"),
            ));
            let mut hints = Vec::new();
            if self.files == 0 {
                let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                hints.push(format!("no policy file was read from {}", paths.join(", ")));
            } else if total == 0 {
                hints.push(
                    "the files hold no RequestAuthentication or AuthorizationPolicy".to_string(),
                );
            } else if !self.not_applied.is_empty() {
                hints.extend(self.not_applied.iter().take(LISTED).cloned());
                if self.not_applied.len() > LISTED {
                    hints.push(format!(
                        "and {} more that do not apply",
                        self.not_applied.len() - LISTED
                    ));
                }
            } else {
                let ns: Vec<&str> = self.namespaces.iter().map(String::as_str).collect();
                hints.push(format!(
                    "the loaded resources are in namespace(s) {}, neither {} nor the root namespace {}; --namespace names the workload's namespace",
                    ns.join(", "),
                    workload.namespace,
                    workload.root_namespace
                ));
            }
            out.extend(hints.into_iter().map(|h| (SummaryLevel::Warn, h)));
        } else {
            out.push((
                SummaryLevel::Info,
                format!(
                    "{} of {total} resource(s) apply to {who}: {}",
                    self.applied.len(),
                    listed(&self.applied)
                ),
            ));
        }
        out.push((
            SummaryLevel::Info,
            if self.providers.is_empty() {
                "JWT providers: none".to_string()
            } else {
                format!("JWT providers: {}", listed(&self.providers))
            },
        ));
        out
    }
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

/// The fetcher's name for a policy's remote key source.
pub fn jwks_source(src: &RemoteKeySource) -> RemoteSource {
    match src {
        RemoteKeySource::JwksUri(u) => RemoteSource::JwksUri(u.clone()),
        RemoteKeySource::Discovery { issuer } => RemoteSource::Discovery {
            issuer: issuer.clone(),
        },
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
    paths: Vec<PathBuf>,
    workload: Workload,
    jwks: JwksManager,
    verified: Option<Arc<VerifiedCache>>,
    current: ArcSwap<Snapshot>,
    last_error: Mutex<Option<ReloadFailure>>,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn load(
    paths: &[PathBuf],
    workload: &Workload,
    jwks: &JwksManager,
    verified: &Option<Arc<VerifiedCache>>,
    generation: u64,
) -> Result<Snapshot, LoadErrors> {
    let opts = LoadOptions {
        default_namespace: workload.namespace.clone(),
    };
    let set = load_paths(paths, &opts)?;
    let compiled = meshguard_policy::compile(&set, workload)?;
    // One fetcher per distinct source, shared across reloads: the manager keeps them.
    let remote = compiled
        .remote_sources()
        .into_iter()
        .map(|(src, timeout)| {
            (
                src.clone(),
                (jwks.source(&jwks_source(src), timeout), timeout),
            )
        })
        .collect();
    Ok(Snapshot {
        remote,
        verified: verified.clone(),
        summary: LoadSummary::new(&set, &compiled),
        compiled,
        skipped: set.skipped.iter().map(ToString::to_string).collect(),
        files: set.files,
        generation,
        loaded_at: unix_now(),
    })
}

/// The outcome of one reload attempt.
#[derive(Debug)]
pub enum ReloadOutcome {
    Applied { generation: u64 },
    Failed(LoadErrors),
}

impl PolicyState {
    /// Loads the policies for the first time; any error is fatal to start-up.
    /// `token_cache`: how many verified tokens to remember (0 disables the cache).
    pub fn load(
        paths: Vec<PathBuf>,
        workload: Workload,
        jwks: JwksManager,
        token_cache: usize,
    ) -> Result<PolicyState, LoadErrors> {
        let verified = (token_cache > 0).then(|| Arc::new(VerifiedCache::new(token_cache)));
        let snap = load(&paths, &workload, &jwks, &verified, 1)?;
        Ok(PolicyState {
            paths,
            workload,
            jwks,
            verified,
            current: ArcSwap::from_pointee(snap),
            last_error: Mutex::new(None),
        })
    }

    /// The snapshot to use for one request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Loads the files again. On success the new snapshot replaces the old one in one step;
    /// on failure the old one stays and the errors are kept for `/config_dump`.
    pub fn reload(&self) -> ReloadOutcome {
        let next_gen = self.current.load().generation + 1;
        match load(
            &self.paths,
            &self.workload,
            &self.jwks,
            &self.verified,
            next_gen,
        ) {
            Ok(snap) => {
                // Fetchers of sources no rule names any more stop; kept ones keep their keys.
                let used: Vec<RemoteSource> = snap.remote.keys().map(jwks_source).collect();
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

    pub fn jwks(&self) -> &JwksManager {
        &self.jwks
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    pub fn workload(&self) -> &Workload {
        &self.workload
    }

    pub fn last_error(&self) -> Option<ReloadFailure> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
        json!({
            "workload": {
                "namespace": cw.workload.namespace,
                "labels": cw.workload.labels,
                "root_namespace": cw.workload.root_namespace,
            },
            "generation": snap.generation,
            "loaded_at": snap.loaded_at,
            "files": snap.files,
            "skipped": snap.skipped,
            "applied": cw.applied,
            "jwt_providers": providers,
            "authorization_policies": policies,
            "jwks": self.jwks.status(),
            "last_reload_error": self.last_error(),
        })
    }
}
