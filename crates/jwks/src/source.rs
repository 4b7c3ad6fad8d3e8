//! One remote source's keys and the task that keeps them fresh.
//!
//! Owns: the keys in use (swapped atomically, read lock-free on every request), the
//! staleness rule (keys are used until `max_staleness` after the fetch that brought them,
//! then `current()` fails closed), the refresh schedule (at once, then every
//! `refresh_interval`; after a failure, backoff until a success), and the coalesced,
//! rate-limited refetch for unknown `kid`s. Does not own: how a fetch is done (`fetch`),
//! which sources exist or when tasks stop (`manager`).
//!
//! All fetches of a source run in its one task, one at a time. Callers never fetch: they
//! ask the task (set `requested`, wake it) and wait on the count of completed fetches,
//! which is how any number of concurrent callers share one fetch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use meshguard_jwt::Jwks;
use tokio::sync::{Notify, watch};

use crate::backoff::{MIN_DELAY, backoff_delay, jitter};
use crate::fetch::{Fetched, Fetcher};
use crate::manager::{LastError, SkippedKeyStatus, SourceStatus};
use crate::{FetchLabels, JwksMetrics, JwksSettings, RemoteKeySource, UriLabels};

/// How often a sleeping task wakes to update the key-age gauge and notice staleness.
const TICK: Duration = Duration::from_secs(15);

/// The keys of one remote source, shared by every rule that uses it. Obtained from
/// [`crate::JwksManager::source`].
pub struct RemoteKeys {
    source: RemoteKeySource,
    label: String,
    settings: Arc<JwksSettings>,
    /// The largest timeout of the rules using this source, in milliseconds.
    timeout_ms: AtomicU64,
    keys: ArcSwapOption<Loaded>,
    generation: AtomicU64,
    /// Fetch attempts completed (success or failure).
    completed: watch::Sender<u64>,
    /// No task runs (shut down, or none could start): waiters stop waiting.
    closed: AtomicBool,
    wake: Notify,
    state: Mutex<State>,
}

/// Keys from one successful fetch.
struct Loaded {
    jwks: Jwks,
    canonical: String,
    at: Instant,
    at_unix: u64,
}

#[derive(Default)]
struct State {
    /// Fetch attempts started; the next one to start is `started + 1`.
    started: u64,
    /// A caller wants a fetch that starts after its request.
    requested: bool,
    /// The fetch number an unknown-kid refetch waits for.
    unknown_kid_target: Option<u64>,
    /// When the last unknown-kid refetch was asked for (the rate limit counts only these).
    last_unknown_kid: Option<Instant>,
    fetches: u64,
    failures: u64,
    consecutive_failures: u32,
    last_error: Option<LastError>,
    /// The JWKS URL last fetched successfully (for discovery: the one it named).
    jwks_uri: Option<String>,
    next_refresh_unix: Option<u64>,
    stale_logged: bool,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("source", &self.source)
            .field("generation", &self.generation())
            .field("first_fetch_done", &self.first_fetch_done())
            .finish_non_exhaustive()
    }
}

impl RemoteKeys {
    pub(crate) fn new(
        source: RemoteKeySource,
        settings: Arc<JwksSettings>,
        timeout: Duration,
    ) -> RemoteKeys {
        RemoteKeys {
            label: source.to_string(),
            source,
            settings,
            timeout_ms: AtomicU64::new(millis(timeout)),
            keys: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            completed: watch::Sender::new(0),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
            state: Mutex::new(State::default()),
        }
    }

    /// Where these keys come from.
    pub fn source(&self) -> &RemoteKeySource {
        &self.source
    }

    /// The keys in use; `None` if never fetched successfully or if the last success is older
    /// than `max_staleness` (fail closed).
    pub fn current(&self) -> Option<Jwks> {
        let loaded = self.keys.load();
        let loaded = loaded.as_ref()?;
        (loaded.at.elapsed() <= self.settings.max_staleness).then(|| loaded.jwks.clone())
    }

    /// Waits (at most `timeout`) until the first fetch attempt has finished, then returns
    /// [`RemoteKeys::current`].
    pub async fn wait_first_fetch(&self, timeout: Duration) -> Option<Jwks> {
        self.wait_completed(1, Some(timeout)).await;
        self.current()
    }

    /// A token named a `kid` these keys lack: triggers one refetch, unless an unknown-kid
    /// refetch was asked for less than `unknown_kid_min_interval` ago (periodic fetches do
    /// not count, so a rotation right after start-up is picked up on its first request).
    /// Concurrent callers share one fetch, which starts after the first caller's request.
    /// Waits for it at most `timeout`, then returns [`RemoteKeys::current`]. The refetch
    /// also restarts the periodic schedule.
    pub async fn refetch_for_unknown_kid(&self, timeout: Duration) -> Option<Jwks> {
        let target = {
            let mut state = self.lock();
            let completed = *self.completed.borrow();
            match state.unknown_kid_target {
                Some(target) if completed < target => target,
                _ => {
                    let min = self.settings.unknown_kid_min_interval;
                    if state.last_unknown_kid.is_some_and(|at| at.elapsed() < min) {
                        return self.current();
                    }
                    let target = state.started + 1;
                    state.unknown_kid_target = Some(target);
                    state.last_unknown_kid = Some(Instant::now());
                    state.requested = true;
                    self.wake.notify_one();
                    target
                }
            }
        };
        self.wait_completed(target, Some(timeout)).await;
        self.current()
    }

    /// Increases whenever a different key set is installed (so token caches can be
    /// flushed). It does not change when keys merely go stale: check
    /// [`RemoteKeys::current`] before trusting anything verified earlier.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// True once the first fetch attempt has finished (or the source was shut down).
    pub fn first_fetch_done(&self) -> bool {
        *self.completed.borrow() >= 1 || self.closed.load(Ordering::Acquire)
    }

    /// Raises the fetch timeout to `timeout` if it is larger (the largest rule timeout wins).
    pub(crate) fn raise_timeout(&self, timeout: Duration) {
        self.timeout_ms.fetch_max(millis(timeout), Ordering::AcqRel);
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Acquire))
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// No fetch will happen any more: release every waiter.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.completed.send_modify(|_| {});
    }

    /// Waits until `target` fetches have completed (or the source is closed), at most
    /// `timeout` if given.
    pub(crate) async fn wait_completed(&self, target: u64, timeout: Option<Duration>) {
        let mut rx = self.completed.subscribe();
        let done = rx.wait_for(|n| *n >= target || self.closed.load(Ordering::Acquire));
        match timeout {
            Some(t) => {
                let _ = tokio::time::timeout(t, done).await;
            }
            None => {
                let _ = done.await;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // State stays consistent field by field; a panic elsewhere must not wedge fetching.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The background task: fetch now, then on schedule or on request, until aborted.
    pub(crate) async fn run(self: Arc<Self>, fetcher: Arc<Fetcher>, metrics: JwksMetrics) {
        loop {
            let known_uri = {
                let mut state = self.lock();
                state.started += 1;
                state.requested = false;
                state.jwks_uri.clone()
            };
            let timeout = self.timeout();
            let outcome = match tokio::time::timeout(
                timeout,
                fetcher.fetch(&self.source, known_uri.as_deref()),
            )
            .await
            {
                Ok(outcome) => outcome,
                Err(_) => Err(format!(
                    "fetch timed out after {} (the rule timeout)",
                    fmt_duration(timeout)
                )),
            };
            let result = if outcome.is_ok() {
                "success"
            } else {
                "failure"
            };
            metrics
                .fetches
                .get_or_create(&FetchLabels {
                    uri: self.label.clone(),
                    result: result.to_owned(),
                })
                .inc();
            let delay = match outcome {
                Ok(fetched) => {
                    self.on_success(fetched);
                    self.settings.refresh_interval.max(MIN_DELAY)
                }
                Err(error) => self.on_failure(error),
            };
            {
                let mut state = self.lock();
                state.next_refresh_unix = Some(unix(SystemTime::now() + delay));
                self.completed.send_modify(|n| *n += 1);
            }
            self.update_gauge(&metrics);
            self.sleep_until(Instant::now() + delay, &metrics).await;
        }
    }

    fn on_success(&self, fetched: Fetched) {
        let Fetched {
            jwks,
            jwks_uri,
            canonical,
        } = fetched;
        let changed = self
            .keys
            .load()
            .as_ref()
            .is_none_or(|prev| prev.canonical != canonical);
        let kids: Vec<&str> = jwks.keys().iter().map(|k| k.kid().unwrap_or("")).collect();
        if changed {
            tracing::info!(uri = %self.label, jwks_uri, kids = ?kids, skipped = jwks.skipped().len(),
                "JWKS keys loaded");
            for s in jwks.skipped() {
                tracing::warn!(uri = %self.label, index = s.index, kid = ?s.kid, reason = %s.reason,
                    "JWKS key skipped");
            }
            if !jwks.had_private_material().is_empty() {
                tracing::warn!(uri = %self.label, keys = ?jwks.had_private_material(),
                    "JWKS publishes private key material (d/p/q or oct keys); it should not");
            }
        } else {
            tracing::debug!(uri = %self.label, "JWKS refreshed, keys unchanged");
        }
        let loaded = Loaded {
            jwks,
            canonical,
            at: Instant::now(),
            at_unix: unix(SystemTime::now()),
        };
        // Keys first, generation second: a reader that sees the new generation must find
        // the new keys, or it could cache a token verified by a removed key under it.
        self.keys.store(Some(Arc::new(loaded)));
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        let mut state = self.lock();
        state.fetches += 1;
        state.consecutive_failures = 0;
        state.jwks_uri = Some(jwks_uri);
        state.stale_logged = false;
    }

    /// Records a failure; returns the delay before the retry.
    fn on_failure(&self, error: String) -> Duration {
        let delay;
        {
            let mut state = self.lock();
            state.fetches += 1;
            state.failures += 1;
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            delay = backoff_delay(
                state.consecutive_failures,
                self.settings.backoff_initial,
                self.settings.backoff_max,
                jitter(),
            );
            state.last_error = Some(LastError {
                message: error.clone(),
                at_unix: unix(SystemTime::now()),
            });
        }
        let retry_in = fmt_duration(delay);
        match self.key_age() {
            Some(age) if age <= self.settings.max_staleness => tracing::warn!(
                uri = %self.label, error = %error, retry_in, key_age = %fmt_duration(age),
                "JWKS fetch failed; the last good keys stay in use"),
            Some(age) => {
                tracing::warn!(uri = %self.label, error = %error, retry_in, key_age = %fmt_duration(age),
                    "JWKS fetch failed and the last good keys are older than the maximum staleness: \
                     tokens for this source are rejected");
                self.lock().stale_logged = true;
            }
            None => tracing::warn!(uri = %self.label, error = %error, retry_in,
                "JWKS fetch failed; no keys yet: tokens for this source are rejected"),
        }
        delay
    }

    /// Sleeps until `due`, or until a caller asks for a fetch; wakes every [`TICK`] for the
    /// gauge and the staleness log.
    async fn sleep_until(&self, due: Instant, metrics: &JwksMetrics) {
        loop {
            if self.lock().requested {
                return;
            }
            let now = Instant::now();
            if now >= due {
                return;
            }
            let nap = (due - now).min(TICK);
            tokio::select! {
                _ = tokio::time::sleep(nap) => self.tick(metrics),
                _ = self.wake.notified() => {}
            }
        }
    }

    fn tick(&self, metrics: &JwksMetrics) {
        self.update_gauge(metrics);
        if let Some(age) = self.key_age()
            && age > self.settings.max_staleness
        {
            let mut state = self.lock();
            if !state.stale_logged {
                state.stale_logged = true;
                tracing::warn!(uri = %self.label, key_age = %fmt_duration(age),
                    "JWKS keys are older than the maximum staleness: tokens for this source are rejected");
            }
        }
    }

    fn key_age(&self) -> Option<Duration> {
        self.keys.load().as_ref().map(|l| l.at.elapsed())
    }

    pub(crate) fn update_gauge(&self, metrics: &JwksMetrics) {
        if let Some(age) = self.key_age() {
            let secs = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
            metrics
                .key_age_seconds
                .get_or_create(&UriLabels {
                    uri: self.label.clone(),
                })
                .set(secs);
        }
    }

    pub(crate) fn status(&self) -> SourceStatus {
        let loaded = self.keys.load_full();
        let state = self.lock();
        let (kind, source) = match &self.source {
            RemoteKeySource::JwksUri(uri) => ("jwks_uri", uri.clone()),
            RemoteKeySource::Discovery { issuer } => ("discovery", issuer.clone()),
        };
        let age = loaded.as_ref().map(|l| l.at.elapsed());
        let stale = age.is_some_and(|a| a > self.settings.max_staleness);
        SourceStatus {
            kind,
            source,
            uri: self.label.clone(),
            jwks_uri: state.jwks_uri.clone(),
            key_ids: loaded
                .as_ref()
                .map(|l| {
                    l.jwks
                        .keys()
                        .iter()
                        .map(|k| k.kid().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            skipped_keys: loaded
                .as_ref()
                .map(|l| {
                    l.jwks
                        .skipped()
                        .iter()
                        .map(|s| SkippedKeyStatus {
                            index: s.index,
                            kid: s.kid.clone(),
                            reason: s.reason.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            last_success_unix: loaded.as_ref().map(|l| l.at_unix),
            key_age_seconds: age.map(|a| a.as_secs()),
            last_error: state.last_error.clone(),
            next_refresh_unix: state.next_refresh_unix,
            stale,
            keys_in_use: loaded.is_some() && !stale,
            fetches: state.fetches,
            failures: state.failures,
            consecutive_failures: state.consecutive_failures,
            first_fetch_done: self.first_fetch_done(),
            generation: self.generation(),
            timeout_ms: self.timeout_ms.load(Ordering::Acquire),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `1.5s`, `300ms`, `5m0s`: short, for logs and errors.
pub(crate) fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        let ms = d.as_millis();
        if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            format!("{:.1}s", d.as_secs_f64())
        }
    } else {
        let s = d.as_secs();
        if s < 3600 {
            format!("{}m{}s", s / 60, s % 60)
        } else {
            format!("{}h{}m", s / 3600, (s % 3600) / 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format() {
        assert_eq!(fmt_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(fmt_duration(Duration::from_secs(5)), "5s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(fmt_duration(Duration::from_secs(90_000)), "25h0m");
    }

    #[tokio::test]
    async fn closed_source_releases_waiters() {
        let keys = RemoteKeys::new(
            RemoteKeySource::JwksUri("http://127.0.0.1:9/jwks".into()),
            Arc::new(JwksSettings::default()),
            Duration::from_secs(5),
        );
        assert!(!keys.first_fetch_done());
        keys.close();
        assert!(keys.first_fetch_done());
        let start = Instant::now();
        assert!(
            keys.wait_first_fetch(Duration::from_secs(10))
                .await
                .is_none()
        );
        assert!(
            keys.refetch_for_unknown_kid(Duration::from_secs(10))
                .await
                .is_none()
        );
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn timeout_largest_wins() {
        let keys = RemoteKeys::new(
            RemoteKeySource::JwksUri("http://127.0.0.1:9/jwks".into()),
            Arc::new(JwksSettings::default()),
            Duration::from_secs(2),
        );
        keys.raise_timeout(Duration::from_secs(1));
        assert_eq!(keys.timeout(), Duration::from_secs(2));
        keys.raise_timeout(Duration::from_secs(7));
        assert_eq!(keys.timeout(), Duration::from_secs(7));
    }
}
