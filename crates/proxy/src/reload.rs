//! When to reload the policies: on SIGHUP, and when a policy file or directory changes.
//!
//! Owns the triggers, their debouncing, which file changes count, and the log lines of each
//! load (start-up and reload). Loading, publishing and keeping the last good snapshot belong to
//! [`crate::state::PolicyState::reload`]; the summary the lines print is
//! [`crate::state::LoadSummary`].

use std::ffi::OsStr;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::metrics::{Metrics, ResultLabels};
use crate::state::{PolicyState, ReloadOutcome, SummaryLevel};

/// Changes that arrive within this window are applied as one reload (editors write files in
/// several steps; ConfigMap updates swap a symlink and touch several entries).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Logs what the current snapshot holds: `headline: <what was loaded>` at INFO, then what
/// applies to the workload and the JWT providers, or a WARN when nothing applies (every request
/// is then allowed, as Istio does: the warning makes a wrong `--namespace` or label visible).
pub fn log_summary(state: &PolicyState, headline: &str) {
    let snap = state.snapshot();
    tracing::info!("{headline}: {}", snap.summary.loaded());
    for (level, line) in snap.summary.lines(state.workload(), state.paths()) {
        match level {
            SummaryLevel::Info => tracing::info!("{line}"),
            SummaryLevel::Warn => tracing::warn!("{line}"),
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

/// The entry a Kubernetes ConfigMap mount swaps on each update: `..data` is a symlink to a
/// timestamped directory, and the visible files are symlinks through it, so an update changes
/// `..data` and nothing else.
const CONFIGMAP_DATA: &str = "..data";

/// Which changed paths are worth a reload. A watched file counts only itself (a log file or an
/// editor's backup beside it does not); a watched directory counts the entries the loader may
/// read: not hidden, not `~` backups, named `*.yaml`, `*.yml`, `*.json` (any case) or without an
/// extension (a ConfigMap key), and subdirectories. Either way the `..data` swap of a ConfigMap
/// mount counts. A superset of what the loader reads is harmless (one reload too many); a
/// subset would miss changes.
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
        self.dirs.iter().any(|d| {
            path.strip_prefix(d)
                .is_ok_and(|rel| rel.as_os_str().is_empty() || loadable(rel, is_dir))
        })
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

/// Whether a path below a watched directory is one the loader may read (see [`Interest`]).
fn loadable(rel: &Path, is_dir: bool) -> bool {
    let mut names = rel.iter().map(|c| c.to_string_lossy());
    if names.any(|n| n.starts_with('.')) {
        return false;
    }
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    if name.ends_with('~') {
        return false;
    }
    if is_dir {
        return true;
    }
    match Path::new(name.as_ref()).extension() {
        None => true,
        Some(e) => ["yaml", "yml", "json"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x)),
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
    let watcher = if watch {
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
            // Collect the burst, then reload once, off the async threads (loading reads files).
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            let (s, m) = (state.clone(), metrics.clone());
            let _ = tokio::task::spawn_blocking(move || reload_now(&s, &m, why)).await;
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
}
