//! When to reload the policies: on SIGHUP, and when a policy file or directory changes.
//!
//! Owns the triggers and their debouncing. Loading, publishing and keeping the last good
//! snapshot belong to [`crate::state::PolicyState::reload`].

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::metrics::{Metrics, ResultLabels};
use crate::state::{PolicyState, ReloadOutcome};

/// Changes that arrive within this window are applied as one reload (editors write files in
/// several steps; ConfigMap updates swap a symlink and touch several entries).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Reloads once and records the outcome in logs and metrics.
pub fn reload_now(state: &PolicyState, metrics: &Metrics, why: &str) {
    match state.reload() {
        ReloadOutcome::Applied { generation } => {
            metrics
                .reloads
                .get_or_create(&ResultLabels { result: "success" })
                .inc();
            metrics
                .config_generation
                .set(i64::try_from(generation).unwrap_or(i64::MAX));
            tracing::info!(generation, trigger = why, "policies reloaded");
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

/// What to watch for a path: a directory recursively; for a file, its directory without
/// recursion (a file replaced by rename, or a ConfigMap symlink swap, would otherwise drop out
/// of the watch, and the parent of a file may be a large tree).
fn watch_targets(paths: &[PathBuf]) -> Vec<(PathBuf, RecursiveMode)> {
    let mut out: Vec<(PathBuf, RecursiveMode)> = paths
        .iter()
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

/// Runs until `shutdown`: reloads on SIGHUP and, with `watch`, on file changes.
pub async fn run(
    state: Arc<PolicyState>,
    metrics: Arc<Metrics>,
    watch: bool,
    shutdown: impl Future<Output = ()>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<&'static str>();
    let _watcher = if watch {
        let tx = tx.clone();
        let mut watcher =
            match notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
                if ev.is_ok_and(|e| !e.kind.is_access()) {
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
            PathBuf::from(".")
        );
    }
}
