//! Rotation of the inbound TLS files: `--tls-dir` is watched, and read again every
//! [`PERIOD`] in case an event was lost (network file systems, a watcher that failed), so that
//! new files apply to new handshakes without a restart, as istio-agent's rotations do.
//!
//! Owns the triggers, their debouncing, and what each attempt reports: the log line, the
//! rotation and expiry metrics, and the `tls` section of `/config_dump`. Does not own reading
//! and checking the files or keeping the last good ones ([`crate::tls::ServerTls::check`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use meshguard_runtime::metrics::{Metrics, ResultLabels};
use meshguard_runtime::state::PolicyState;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::tls::{Rotation, ServerTls};

/// Changes within this window are read as one (a writer replaces the three files one after
/// the other; Kubernetes swaps the `..data` symlink of a Secret volume in several steps).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// How often the files are read again without an event.
pub const PERIOD: Duration = Duration::from_secs(60);

/// Shows the material in use (metrics and `/config_dump`); called at start and after each
/// attempt.
fn publish(tls: &ServerTls, state: &PolicyState, metrics: &Metrics) {
    let m = tls.current();
    metrics
        .tls
        .serving(&m.serving.identity, m.serving.not_after);
    state.set_tls_status(tls.status());
}

/// Reads the files again and reports what happened.
fn check(tls: &ServerTls, state: &PolicyState, metrics: &Metrics, why: &str) {
    match tls.check() {
        Rotation::Unchanged => return,
        Rotation::Rotated(m) => {
            metrics
                .tls
                .rotations
                .get_or_create(&ResultLabels { result: "success" })
                .inc();
            tracing::info!(
                "{why}: TLS certificate rotated: serving {} (serial {}, valid until {}) to new connections",
                m.serving.identity,
                m.serving.serial,
                m.serving.not_after
            );
        }
        Rotation::Failed(error) => {
            metrics
                .tls
                .rotations
                .get_or_create(&ResultLabels { result: "failure" })
                .inc();
            tracing::warn!(
                "{why}: TLS files not used, still serving serial {}: {error}",
                tls.current().serving.serial
            );
        }
    }
    publish(tls, state, metrics);
}

/// Publishes the material in use, then follows `tls`'s directory until `shutdown`.
pub fn spawn(
    tls: Arc<ServerTls>,
    state: Arc<PolicyState>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    publish(&tls, &state, &metrics);
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let watcher = match notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
        // Any event in the directory (an error may mean lost events): read again; an
        // unchanged set is recognised and ignored.
        let _ = tx.send(());
    }) {
        Ok(mut w) => match w.watch(&tls.settings.dir, RecursiveMode::NonRecursive) {
            Ok(()) => Some(w),
            Err(e) => {
                tracing::warn!(path = %tls.settings.dir.display(), error = %e, "cannot watch the TLS files; reading them every {}s", PERIOD.as_secs());
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the TLS files; reading them every {}s", PERIOD.as_secs());
            None
        }
    };
    tokio::spawn(async move {
        let _watcher = watcher;
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + PERIOD, PERIOD);
        loop {
            let why = tokio::select! {
                Some(()) = rx.recv() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                    "TLS file change"
                }
                _ = tick.tick() => "periodic TLS check",
                () = &mut shutdown => break,
            };
            let (t, s, m) = (tls.clone(), state.clone(), metrics.clone());
            let _ = tokio::task::spawn_blocking(move || check(&t, &s, &m, why)).await;
        }
    });
}
