//! When to reload the policies: on SIGHUP, when a policy file or directory changes, and when
//! the workload's labels change (a followed downward-API labels file, [`follow_labels_file`]).
//!
//! Owns the triggers, their debouncing, which file changes count, and the log lines of each
//! load (start-up and reload); for a watched source, the metrics of each set it publishes
//! ([`publish_now`]) and passing SIGHUP on to it. Loading, publishing and keeping the last good snapshot belong to
//! [`crate::state::PolicyState::reload`]; what applies to the workload, and why a resource does
//! not, is `meshguard_model::summarize` (which `meshguard validate` uses too); which directory
//! entries the loader reads is `meshguard_model::loads_entry`.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meshguard_model::{EntryType, Kind, PolicySet, loads_entry, parse_labels_file};
use meshguard_policy::KeySource;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::metrics::{Metrics, ResultLabels};
use crate::source::PolicySource;
use crate::state::{PolicyState, ReloadOutcome, Snapshot};

/// Changes that arrive within this window are applied as one reload (editors write files in
/// several steps; ConfigMap updates swap a symlink and touch several entries).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// How serious a summary line is; [`log_summary`] picks the log level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
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
/// The summary of one load, written so that a proxy enforcing nothing (a wrong `--namespace`,
/// a label typo, a directory without policy files) says so instead of allowing everything
/// silently: what was loaded, each file skipped in a directory, what applies (or a warning with
/// the likely reason when nothing does; or, when RequestAuthentications apply but no
/// AuthorizationPolicy does, a warning that no token is required, with why each loaded
/// AuthorizationPolicy does not apply), and the JWT providers. `source`: where the policies
/// come from (the `--policies` paths, or a watched source).
fn summary_lines(snap: &Snapshot, source: &PolicySource) -> (String, Vec<(Level, String)>) {
    let paths = source.paths();
    let summary = &snap.summary;
    let ras = summary.loaded_count(Kind::RequestAuthentication);
    let aps = summary.loaded_count(Kind::AuthorizationPolicy);
    let mut loaded = format!(
        "{ras} RequestAuthentication, {aps} AuthorizationPolicy from {}",
        source.describe(snap.files.len())
    );
    if !snap.skipped.is_empty() {
        let _ = write!(
            loaded,
            "; {} document(s) of other kinds skipped",
            snap.skipped.len()
        );
    }
    let mut out = Vec::new();
    // As `meshguard validate` words them; a policy saved as `authz.yaml.txt` must be noticed.
    for f in snap.skipped_files.iter().take(LISTED) {
        out.push((Level::Warn, f.to_string()));
    }
    if snap.skipped_files.len() > LISTED {
        out.push((
            Level::Warn,
            format!(
                "and {} more skipped file(s) (see /config_dump)",
                snap.skipped_files.len() - LISTED
            ),
        ));
    }
    let who = summary.workload.describe();
    let applied: Vec<String> = summary
        .applied()
        .map(|r| format!("{} {}", r.kind.as_str(), r.key))
        .collect();
    if applied.is_empty() {
        out.push((
            Level::Warn,
            format!("no policy applies to {who}: every request is allowed, as Istio does"),
        ));
        let hints = if let PolicySource::Watched(w) = source {
            if summary.resources.is_empty() {
                vec![format!(
                    "{} holds no RequestAuthentication or AuthorizationPolicy in the namespaces read",
                    w.describe()
                )]
            } else {
                summary.why_nothing_applies()
            }
        } else if snap.files.is_empty() {
            let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            let mut hint = format!("no policy file was read from {}", paths.join(", "));
            if !snap.skipped_files.is_empty() {
                let skipped: Vec<String> = snap
                    .skipped_files
                    .iter()
                    .map(|f| f.path.display().to_string())
                    .collect();
                let _ = write!(hint, "; skipped: {}", listed(&skipped));
            }
            vec![hint]
        } else if summary.resources.is_empty() {
            // PeerAuthentications only: they set the transport, not who may call.
            let mtls = &snap.compiled.mtls;
            vec![if mtls.from.is_empty() {
                "the files hold no RequestAuthentication or AuthorizationPolicy".to_string()
            } else {
                format!(
                    "the files hold no RequestAuthentication or AuthorizationPolicy, only PeerAuthentication ({}: mutual TLS {}), which does not authorize requests",
                    mtls.from.join(", "),
                    mtls.mode.as_str()
                )
            }]
        } else {
            summary.why_nothing_applies()
        };
        out.extend(hints.into_iter().map(|h| (Level::Warn, h)));
    } else {
        out.push((
            Level::Info,
            format!(
                "{} of {} resource(s) apply to {who}: {}",
                applied.len(),
                summary.resources.len(),
                listed(&applied)
            ),
        ));
        if summary.no_authorization_policy_applies() {
            // RequestAuthentications apply but no AuthorizationPolicy does (a selector that
            // stopped matching after an edit, say): tokens are checked, yet none is required.
            // The same words as `meshguard validate`'s, from the model crate.
            out.push((Level::Warn, summary.no_authorization_policy_warning()));
            out.extend(
                summary
                    .why_no_authorization_policy_applies()
                    .into_iter()
                    .map(|line| (Level::Warn, line)),
            );
        }
    }
    let providers: Vec<String> = snap
        .compiled
        .providers
        .iter()
        .map(|p| match &p.keys {
            KeySource::Inline(jwks) => {
                format!("{} (inline JWKS, {} key(s))", p.issuer, jwks.keys().len())
            }
            KeySource::Remote(src) => format!("{} (keys from {src})", p.issuer),
        })
        .collect();
    out.push((
        Level::Info,
        if providers.is_empty() {
            "JWT providers: none".to_string()
        } else {
            format!("JWT providers: {}", listed(&providers))
        },
    ));
    (loaded, out)
}

/// Logs what the current snapshot holds: `headline: <what was loaded>` at INFO, then a WARN per
/// file skipped in a directory, what applies to the workload and the JWT providers, or a WARN
/// when nothing applies (every request is then allowed, as Istio does: the warning makes a
/// wrong `--namespace` or label visible).
pub fn log_summary(state: &PolicyState, headline: &str) {
    let snap = state.snapshot();
    if !snap.loaded {
        if let Err(why) = state.policies_ready() {
            tracing::info!(
                "policies not loaded yet ({why}); requests are refused with 503 until then"
            );
        }
        return;
    }
    let (loaded, lines) = summary_lines(&snap, state.source());
    tracing::info!("{headline}: {loaded}");
    for (level, line) in lines {
        match level {
            Level::Info => tracing::info!("{line}"),
            Level::Warn => tracing::warn!("{line}"),
        }
    }
}

/// The start-up lines (generation 1).
pub fn log_loaded(state: &PolicyState) {
    let generation = state.snapshot().generation;
    log_summary(state, &format!("policies loaded (generation {generation})"));
}

/// Reloads once and records the outcome in logs and metrics.
pub fn reload_now(state: &PolicyState, metrics: &Metrics, why: &str) {
    let was_failing = state.last_error().is_some();
    match state.reload() {
        ReloadOutcome::Applied { generation } => {
            metrics
                .reloads
                .get_or_create(&ResultLabels { result: "success" })
                .inc();
            metrics
                .config_generation
                .set(i64::try_from(generation).unwrap_or(i64::MAX));
            let recovered = if was_failing {
                "; recovered from the last failure"
            } else {
                ""
            };
            log_summary(
                state,
                &format!("policies reloaded (generation {generation}, {why}){recovered}"),
            );
        }
        ReloadOutcome::Failed(errors) => {
            metrics
                .reloads
                .get_or_create(&ResultLabels { result: "failure" })
                .inc();
            for e in &errors.0 {
                tracing::error!(trigger = why, error = %e, "policy reload failed; keeping the last good policies");
            }
        }
    }
}

/// Publishes a complete set from a watched source ([`PolicyState::publish`]) and counts the
/// outcome as a reload is counted (`meshguard_config_reloads_total`,
/// `meshguard_config_generation`). The source logs what changed.
pub fn publish_now(state: &PolicyState, metrics: &Metrics, set: PolicySet) -> ReloadOutcome {
    let outcome = state.publish(set);
    match &outcome {
        ReloadOutcome::Applied { generation } => {
            metrics
                .reloads
                .get_or_create(&ResultLabels { result: "success" })
                .inc();
            metrics
                .config_generation
                .set(i64::try_from(*generation).unwrap_or(i64::MAX));
        }
        ReloadOutcome::Failed(_) => {
            metrics
                .reloads
                .get_or_create(&ResultLabels { result: "failure" })
                .inc();
        }
    }
    outcome
}

/// The entry a Kubernetes ConfigMap mount swaps on each update: `..data` is a symlink to a
/// timestamped directory, and the visible files are symlinks through it, so an update changes
/// `..data` and nothing else.
const CONFIGMAP_DATA: &str = "..data";

/// Which changed paths are worth a reload. A watched file counts only itself (a log file or an
/// editor's backup beside it does not); a watched directory counts the entries the loader reads
/// or descends into, as the loader itself decides ([`loads_entry`]: the two cannot disagree).
/// Either way the `..data` swap of a ConfigMap mount counts. A superset of what the loader reads
/// is harmless (one reload too many); a subset would miss changes.
#[derive(Debug, Default)]
struct Interest {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Interest {
    /// `paths` as given; made absolute, as the watcher reports them.
    fn new(paths: &[PathBuf]) -> Interest {
        let mut i = Interest::default();
        for p in paths {
            let abs = absolute(p);
            if abs.is_dir() {
                i.dirs.push(abs);
            } else {
                i.files.push(abs);
            }
        }
        i
    }

    fn wants(&self, path: &Path, is_dir: bool) -> bool {
        if self.files.iter().any(|f| f == path) {
            return true;
        }
        if path.file_name() == Some(OsStr::new(CONFIGMAP_DATA)) {
            let parent = path.parent();
            if self.files.iter().any(|f| f.parent() == parent)
                || self.dirs.iter().any(|d| path.starts_with(d))
            {
                return true;
            }
        }
        // A file that is gone cannot be examined: it counts as the regular file it was (a
        // superset: a socket of the same name reloads once for nothing).
        let ty = if is_dir {
            EntryType::Directory
        } else {
            EntryType::File
        };
        self.dirs
            .iter()
            .any(|d| path.strip_prefix(d).is_ok_and(|rel| loads_entry(rel, ty)))
    }

    fn wants_event(&self, ev: &notify::Event) -> bool {
        use notify::EventKind;
        use notify::event::{CreateKind, RemoveKind};
        if ev.kind.is_access() {
            return false;
        }
        if ev.need_rescan() || ev.paths.is_empty() {
            return true; // the watcher lost track: reload rather than miss a change
        }
        let folder = matches!(
            ev.kind,
            EventKind::Create(CreateKind::Folder) | EventKind::Remove(RemoveKind::Folder)
        );
        // `is_dir` only matters for names with another extension (a stat per event is cheap,
        // but a log file beside a policy file changes on every request).
        ev.paths
            .iter()
            .any(|p| self.wants(p, folder) || (!folder && p.is_dir() && self.wants(p, true)))
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// What to watch for a path: a directory recursively; for a file, its directory without
/// recursion (a file replaced by rename, or a ConfigMap symlink swap, would otherwise drop out
/// of the watch, and the parent of a file may be a large tree). Absolute, so that events name
/// absolute paths ([`Interest`] compares them).
fn watch_targets(paths: &[PathBuf]) -> Vec<(PathBuf, RecursiveMode)> {
    let mut out: Vec<(PathBuf, RecursiveMode)> = paths
        .iter()
        .map(|p| absolute(p))
        .map(|p| {
            if p.is_dir() {
                (p.clone(), RecursiveMode::Recursive)
            } else {
                let dir = p
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("."), |d| d.to_path_buf());
                (dir, RecursiveMode::NonRecursive)
            }
        })
        .collect();
    // For a directory named both ways, keep the recursive watch (sorted first).
    out.sort_by_key(|(p, m)| (p.clone(), *m != RecursiveMode::Recursive));
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

/// Reloads on SIGHUP and, with `watch`, on file changes, until `shutdown`. The triggers are set
/// up when this is called, before the returned future first runs: once the proxy says it is
/// listening, a change (or a SIGHUP, whose default action would end the process) is never
/// missed.
pub fn run(
    state: Arc<PolicyState>,
    metrics: Arc<Metrics>,
    watch: bool,
    shutdown: impl Future<Output = ()>,
) -> impl Future<Output = ()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<&'static str>();
    let files = matches!(state.source(), PolicySource::Files(_));
    if files {
        // New labels select other resources: compile the files again for them. (A watched
        // source hears of the change itself and publishes again.)
        let mut workload = state.subscribe_workload();
        let tx = tx.clone();
        tokio::spawn(async move {
            while workload.changed().await.is_ok() {
                if tx.send("labels change").is_err() {
                    break;
                }
            }
        });
    }
    let watcher = if watch && files {
        let tx = tx.clone();
        let interest = Interest::new(state.paths());
        let mut watcher =
            match notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
                // A watcher error may mean lost events: reload rather than miss a change.
                if ev.is_err() || ev.is_ok_and(|e| interest.wants_event(&e)) {
                    let _ = tx.send("file change");
                }
            }) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch policy files; reload with SIGHUP");
                    None
                }
            };
        if let Some(w) = watcher.as_mut() {
            for (target, mode) in watch_targets(state.paths()) {
                if let Err(e) = w.watch(&target, mode) {
                    tracing::warn!(path = %target.display(), error = %e, "cannot watch; reload with SIGHUP");
                }
            }
        }
        watcher
    } else {
        None
    };
    #[cfg(unix)]
    {
        let tx = tx.clone();
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    if tx.send("SIGHUP").is_err() {
                        break;
                    }
                }
            });
        }
    }
    drop(tx);
    async move {
        let _watcher = watcher;
        tokio::pin!(shutdown);
        loop {
            let why = tokio::select! {
                w = rx.recv() => match w { Some(w) => w, None => break },
                () = &mut shutdown => break,
            };
            if let PolicySource::Watched(source) = state.source() {
                // Only SIGHUP reaches here: the source reads everything again, and publishes
                // if anything changed.
                tracing::info!(
                    "{why}: reading every object again from {}",
                    source.describe()
                );
                source.resync();
                continue;
            }
            // Collect the burst, then reload once, off the async threads (loading reads files).
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            let (s, m) = (state.clone(), metrics.clone());
            let _ = tokio::task::spawn_blocking(move || reload_now(&s, &m, why)).await;
        }
    }
}

/// Reads a downward-API labels file (`key="value"` lines, [`parse_labels_file`]); the error
/// names the file and what is wrong with it.
pub fn read_labels_file(path: &Path) -> Result<std::collections::BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("labels file {}: cannot read: {e}", path.display()))?;
    parse_labels_file(&text).map_err(|e| format!("labels file {}: {e}", path.display()))
}

/// Follows a downward-API labels file until `shutdown`: kubelet rewrites it when the Pod's
/// labels change (through the `..data` swap of the volume), and each change that reads well
/// becomes the workload's labels ([`PolicyState::set_labels`]; the policies are then compiled
/// again for them). A file that cannot be read or parsed keeps the labels in use, with a
/// warning. The watch is set up, and the file read once more, before the returned future
/// first runs, so that a change after the start-up read is not missed.
pub fn follow_labels_file(
    state: Arc<PolicyState>,
    path: PathBuf,
    shutdown: impl Future<Output = ()>,
) -> impl Future<Output = ()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let file = absolute(&path);
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let watched = file.clone();
    let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let relevant = match &ev {
            // A watcher error may mean lost events: read the file again.
            Err(_) => true,
            Ok(e) => {
                !e.kind.is_access()
                    && (e.need_rescan()
                        || e.paths.iter().any(|p| {
                            *p == watched
                                || (p.file_name() == Some(OsStr::new(CONFIGMAP_DATA))
                                    && p.parent() == watched.parent())
                        }))
            }
        };
        if relevant {
            let _ = tx.send(());
        }
    });
    let watcher = match watcher {
        Ok(mut w) => match w.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => Some(w),
            Err(e) => {
                tracing::warn!(path = %dir.display(), error = %e, "cannot watch the labels file's directory; label changes are not followed");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the labels file; label changes are not followed");
            None
        }
    };
    let apply = move |state: &PolicyState| match read_labels_file(&path) {
        Ok(labels) => {
            let before = state.workload();
            if state.set_labels(labels) {
                tracing::info!(
                    "workload labels changed ({}): {} -> {}",
                    path.display(),
                    before.describe(),
                    state.workload().describe()
                );
            }
        }
        Err(e) => tracing::warn!("{e}; keeping the labels in use"),
    };
    apply(&state);
    async move {
        let _watcher = watcher;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                w = rx.recv() => if w.is_none() { break },
                () = &mut shutdown => break,
            }
            // kubelet swaps several entries per update: read once the burst is over.
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            apply(&state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_watch_their_directory_and_directories_recurse() {
        let dir = std::env::temp_dir().join(format!("meshguard-watch-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.yaml"), "").unwrap();
        let got = watch_targets(&[dir.join("a.yaml"), dir.join("sub"), dir.clone()]);
        assert_eq!(
            got,
            vec![
                (dir.clone(), RecursiveMode::Recursive),
                (dir.join("sub"), RecursiveMode::Recursive)
            ]
        );
        let got = watch_targets(&[dir.join("a.yaml")]);
        assert_eq!(got, vec![(dir.clone(), RecursiveMode::NonRecursive)]);
        assert_eq!(
            watch_targets(&[PathBuf::from("x.yaml")])[0].0,
            std::env::current_dir().unwrap()
        );
    }

    #[test]
    fn a_watched_file_counts_only_itself_and_a_configmap_swap() {
        let dir = std::env::temp_dir().join(format!("meshguard-interest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let i = Interest::new(&[dir.join("p.yaml")]);
        assert!(i.wants(&dir.join("p.yaml"), false));
        for other in ["access.log", "q.yaml", "p.yaml~", ".p.yaml.swp", "p"] {
            assert!(!i.wants(&dir.join(other), false), "{other}");
        }
        assert!(i.wants(&dir.join("..data"), false));
        assert!(!i.wants(&dir.join("sub/..data"), false));
    }

    #[test]
    fn a_watched_directory_counts_what_the_loader_may_read() {
        let dir = std::env::temp_dir().join(format!("meshguard-interest-d-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let i = Interest::new(std::slice::from_ref(&dir));
        for yes in [
            "a.yaml",
            "a.yml",
            "a.json",
            "A.YAML",
            "policies",
            "sub/b.yaml",
            "..data",
        ] {
            assert!(i.wants(&dir.join(yes), false), "{yes}");
        }
        assert!(i.wants(&dir, true));
        assert!(i.wants(&dir.join("conf.d"), true), "a subdirectory");
        for no in [
            "access.log",
            "a.yaml~",
            ".a.yaml.swp",
            ".hidden/a.yaml",
            "..2026_12_05/a.yaml",
            "notes.txt",
        ] {
            assert!(!i.wants(&dir.join(no), false), "{no}");
        }
        assert!(!i.wants(Path::new("/elsewhere/a.yaml"), false));
    }

    #[test]
    fn a_watched_directory_counts_exactly_the_entries_the_loader_reads() {
        use meshguard_model::{LoadOptions, load_paths};
        let dir = std::env::temp_dir().join(format!("meshguard-interest-l-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // A directory whose name ends in `~` is descended into by the loader (the backup rule
        // is for files): a policy directory moved in under such a name must reload.
        for d in ["team~", "conf.d", ".git", "..2026_12_05", "sub/deeper"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let files = [
            "a.yaml",
            "B.YML",
            "c.json",
            "policies",
            "notes.txt",
            "a.yaml~",
            ".a.yaml.swp",
            "team~/x.yaml",
            "conf.d/y.yml",
            ".git/z.yaml",
            "..2026_12_05/policies",
            "sub/deeper/w.yaml",
            "sub/deeper/w.bak",
        ];
        for f in files {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let set = load_paths(std::slice::from_ref(&dir), &LoadOptions::default()).unwrap();
        let i = Interest::new(std::slice::from_ref(&dir));
        for f in files {
            let read = set.files.contains(&dir.join(f));
            assert_eq!(
                i.wants(&dir.join(f), false),
                read,
                "{f}: read by the loader: {read}"
            );
        }
        assert!(i.wants(&dir.join("team~"), true));
        assert!(i.wants(&dir.join("sub/deeper"), true));
        assert!(!i.wants(&dir.join(".git"), true));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
