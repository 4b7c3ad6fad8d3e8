//! The set of remote sources of one proxy.
//!
//! Owns: one [`RemoteKeys`] and one background task per distinct [`RemoteKeySource`] (every rule
//! naming the same source shares them), the shared HTTP client, readiness, the status shown
//! in `/config_dump`, and stopping the tasks. Does not own: fetching (`fetch`), scheduling
//! (`source`), or mapping rules to sources (policy).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::runtime::Handle;
use tokio::task::AbortHandle;

use crate::fetch::Fetcher;
use crate::source::RemoteKeys;
use crate::{
    DEFAULT_FETCH_TIMEOUT, JwksError, JwksMetrics, JwksSettings, RemoteKeySource, UriLabels,
};

/// Remote key sources and their refresh tasks. Clones share the same manager. Tasks stop on
/// [`JwksManager::shutdown`] or when the last clone is dropped; handles already given out keep
/// their last keys (until they go stale).
#[derive(Clone)]
pub struct JwksManager {
    shared: Arc<Shared>,
}

struct Shared {
    settings: Arc<JwksSettings>,
    metrics: JwksMetrics,
    fetcher: Arc<Fetcher>,
    /// The runtime `new` ran on, for `source` calls made outside any runtime.
    runtime: Option<Handle>,
    sources: Mutex<BTreeMap<RemoteKeySource, Entry>>,
    closed: AtomicBool,
}

struct Entry {
    keys: Arc<RemoteKeys>,
    task: Option<AbortHandle>,
}

/// Status of one source, for `/config_dump`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SourceStatus {
    /// `jwks_uri` or `discovery`.
    pub kind: &'static str,
    /// The configured `jwksUri`, or the issuer for discovery.
    pub source: String,
    /// The first URL fetched (the `jwksUri` or the discovery document); the metrics' `uri`.
    pub uri: String,
    /// The JWKS URL of the last success (for discovery: the one the document named).
    pub jwks_uri: Option<String>,
    /// `kid` of each usable key of the last success (`null` for a key without one).
    pub key_ids: Vec<Option<String>>,
    /// Keys of the last success that were not usable, and why.
    pub skipped_keys: Vec<SkippedKeyStatus>,
    pub last_success_unix: Option<u64>,
    pub key_age_seconds: Option<u64>,
    /// The most recent failure (kept after later successes; compare the times).
    pub last_error: Option<LastError>,
    pub next_refresh_unix: Option<u64>,
    /// The last success is older than the maximum staleness: its keys are no longer used.
    pub stale: bool,
    /// Requests are verified with keys from this source (fetched and not stale).
    pub keys_in_use: bool,
    /// Fetch attempts finished, and how many failed.
    pub fetches: u64,
    pub failures: u64,
    pub consecutive_failures: u32,
    pub first_fetch_done: bool,
    /// See [`RemoteKeys::generation`].
    pub generation: u64,
    /// The fetch timeout in use (the largest rule timeout of this source).
    pub timeout_ms: u64,
}

/// A fetch failure as shown in [`SourceStatus`].
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LastError {
    pub message: String,
    pub at_unix: u64,
}

/// A key that was skipped, as shown in [`SourceStatus`].
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SkippedKeyStatus {
    pub index: usize,
    pub kid: Option<String>,
    pub reason: String,
}

impl std::fmt::Debug for JwksManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksManager")
            .field("settings", &self.shared.settings)
            .field("sources", &self.lock().keys().collect::<Vec<_>>())
            .field("closed", &self.shared.closed.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl JwksManager {
    /// Builds the HTTP(S) client: rustls with the system roots plus `settings.extra_ca`. Fails
    /// when the extra CA file is unreadable or holds no usable certificate (the error names
    /// the file). Needs no runtime; tasks start with the first [`JwksManager::source`] call.
    pub fn new(settings: JwksSettings, metrics: JwksMetrics) -> Result<JwksManager, JwksError> {
        let fetcher = Fetcher::new(&settings)?;
        Ok(JwksManager {
            shared: Arc::new(Shared {
                settings: Arc::new(settings),
                metrics,
                fetcher: Arc::new(fetcher),
                runtime: Handle::try_current().ok(),
                sources: Mutex::new(BTreeMap::new()),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The settings this manager was built with.
    pub fn settings(&self) -> &JwksSettings {
        &self.shared.settings
    }

    /// Returns the shared handle for `source`, creating it the first time and starting its
    /// background task on the current tokio runtime (or the one `new` ran on): first fetch at
    /// once, then periodic refresh. `timeout` is the JWTRule timeout for each fetch; if
    /// several rules share a source the largest wins; zero means the 5 s default.
    pub fn source(&self, source: &RemoteKeySource, timeout: Duration) -> Arc<RemoteKeys> {
        let timeout = if timeout.is_zero() {
            DEFAULT_FETCH_TIMEOUT
        } else {
            timeout
        };
        let mut sources = self.lock();
        if let Some(entry) = sources.get(source) {
            entry.keys.raise_timeout(timeout);
            return entry.keys.clone();
        }
        let keys = Arc::new(RemoteKeys::new(
            source.clone(),
            self.shared.settings.clone(),
            timeout,
        ));
        let task = if self.shared.closed.load(Ordering::Acquire) {
            keys.close();
            None
        } else {
            match Handle::try_current()
                .ok()
                .or_else(|| self.shared.runtime.clone())
            {
                Some(runtime) => {
                    let run = keys
                        .clone()
                        .run(self.shared.fetcher.clone(), self.shared.metrics.clone());
                    Some(runtime.spawn(run).abort_handle())
                }
                None => {
                    tracing::error!(uri = %source,
                        "no tokio runtime: this remote JWKS is never fetched and its tokens are rejected");
                    keys.close();
                    None
                }
            }
        };
        sources.insert(
            source.clone(),
            Entry {
                keys: keys.clone(),
                task,
            },
        );
        keys
    }

    /// Resolves when every source has finished its first fetch attempt (success or failure),
    /// including sources added while waiting.
    pub async fn first_fetches_done(&self) {
        loop {
            let all: Vec<Arc<RemoteKeys>> = self.lock().values().map(|e| e.keys.clone()).collect();
            for keys in &all {
                keys.wait_completed(1, None).await;
            }
            if self.ready() {
                return;
            }
        }
    }

    /// True when every source has finished its first fetch attempt (readiness).
    pub fn ready(&self) -> bool {
        self.lock().values().all(|e| e.keys.first_fetch_done())
    }

    /// Per source, in source order, for `/config_dump`. Also updates the key-age gauge.
    pub fn status(&self) -> Vec<SourceStatus> {
        let all: Vec<Arc<RemoteKeys>> = self.lock().values().map(|e| e.keys.clone()).collect();
        all.iter()
            .map(|keys| {
                keys.update_gauge(&self.shared.metrics);
                keys.status()
            })
            .collect()
    }

    /// Stops and forgets the sources `keep` rejects (after a reload removed their last
    /// rule); returns how many. Handles already given out keep their last keys.
    pub fn retain(&self, keep: impl Fn(&RemoteKeySource) -> bool) -> usize {
        // `keep` runs without the lock held, so it may call back into the manager.
        let names: Vec<RemoteKeySource> = self.lock().keys().cloned().collect();
        let gone: Vec<RemoteKeySource> = names.into_iter().filter(|s| !keep(s)).collect();
        let removed: Vec<(Arc<RemoteKeys>, Option<AbortHandle>)> = {
            let mut sources = self.lock();
            gone.iter()
                .filter_map(|s| sources.remove(s))
                .map(|e| (e.keys, e.task))
                .collect()
        };
        for (keys, task) in &removed {
            if let Some(task) = task {
                task.abort();
            }
            keys.close();
            self.shared.metrics.key_age_seconds.remove(&UriLabels {
                uri: keys.label().to_owned(),
            });
        }
        removed.len()
    }

    /// Stops every background task. Final: sources asked for later are never fetched.
    pub fn shutdown(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.stop_all();
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<RemoteKeySource, Entry>> {
        self.shared.lock()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<RemoteKeySource, Entry>> {
        self.sources.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stop_all(&self) {
        for entry in self.lock().values_mut() {
            if let Some(task) = entry.task.take() {
                task.abort();
            }
            entry.keys.close();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop_all();
    }
}
