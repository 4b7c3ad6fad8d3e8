//! meshguard-jwks: remote JWKS for JWT providers (`jwksUri`, or OpenID discovery from the
//! issuer), fetched by meshguard itself, kept fresh, and kept through outages.
//!
//! Istio users' main complaints about remote keys are answered here: a fetch that fails at
//! start-up is retried with backoff instead of caching a fake key for 20 minutes; the last
//! good keys stay in use through an outage (up to [`JwksSettings::max_staleness`], then fail
//! closed); a token with an unknown `kid` triggers one rate-limited refetch, so key rotation
//! works on the first request; a private CA can be added; the JWTRule `timeout` bounds every
//! fetch. Fetches refuse link-local and cloud-metadata destinations (the SSRF class Istio fixed
//! in 2026) and require a JSON object with a `keys` array, as istiod does.
//!
//! Modules:
//! * `guard`: which destinations may be fetched (URL checks, the filtering DNS resolver).
//! * `fetch`: the HTTP(S) client, one fetch (discovery, redirects, size cap, validation).
//! * `backoff`: retry delays.
//! * `source`: one source's keys, state and background refresh task.
//! * `manager`: the set of sources, readiness, `/config_dump` status, metrics.
//!
//! Does not own: parsing or using keys (`meshguard-jwt`), deciding which rule uses which
//! source or what a request gets when keys are missing (policy and engine).
//!
//! Use: one [`JwksManager`] per proxy; when a config is compiled, [`JwksManager::source`]
//! for each remote rule (same source, same handle); readiness from
//! [`JwksManager::first_fetches_done`]; per request [`RemoteKeys::current`] (or
//! [`RemoteKeys::wait_first_fetch`] while the first fetch runs), and on a token whose `kid`
//! no key has, [`RemoteKeys::refetch_for_unknown_kid`] then verify once more.
//!
//! ```no_run
//! # async fn demo() -> Result<(), meshguard_jwks::JwksError> {
//! use std::time::Duration;
//! use meshguard_jwks::{JwksManager, JwksMetrics, JwksSettings, RemoteKeySource};
//!
//! let manager = JwksManager::new(JwksSettings::default(), JwksMetrics::default())?;
//! let source = RemoteKeySource::JwksUri("https://idp.example/keys".into());
//! let keys = manager.source(&source, Duration::from_secs(5));
//! manager.first_fetches_done().await;
//! match keys.current() {
//!     Some(jwks) => { /* verify with jwks; on an unknown kid: */
//!         let _fresh = keys.refetch_for_unknown_kid(Duration::from_secs(5)).await;
//!     }
//!     None => { /* 401 "Jwks remote fetch is failed" */ }
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
// No panics on the request path: index with `get`, no unwrap/expect/panic!/unreachable!.
// An allowed site says why it cannot panic (docs/architecture.md, Panics). Tests may use
// them (clippy.toml; `string_slice` has no such option, hence the `cfg_attr`).
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]
#![cfg_attr(not(test), deny(clippy::string_slice))]

mod backoff;
mod fetch;
mod guard;
mod manager;
mod source;

use std::path::PathBuf;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use backoff::backoff_delay;
pub use fetch::{parse_discovery, parse_jwks_body, resolve_location, trusted_roots};
pub use guard::{check_url, filter_resolved, refused_reason};
pub use manager::{JwksManager, LastError, SkippedKeyStatus, SourceStatus};
pub use meshguard_jwt::{RemoteKeySource, discovery_url};
pub use source::RemoteKeys;

/// The JWTRule timeout Istio uses when a rule sets none (also used for a zero timeout).
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Tunables. Default: refresh_interval 5 min, max_staleness 24 h, unknown_kid_min_interval
/// 30 s, max_body_bytes 1 MiB, max_redirects 3, backoff_initial 1 s, backoff_max 5 min,
/// extra_ca: None.
#[derive(Clone, Debug)]
pub struct JwksSettings {
    /// Time between successful fetches.
    pub refresh_interval: Duration,
    /// How long after the last successful fetch its keys are still used; then fail closed.
    pub max_staleness: Duration,
    /// Least time between two refetches caused by unknown `kid`s (per source).
    pub unknown_kid_min_interval: Duration,
    /// Largest response body read (discovery document or JWKS).
    pub max_body_bytes: usize,
    /// Redirects followed per document.
    pub max_redirects: usize,
    /// First retry delay after a failed fetch; doubles per consecutive failure.
    pub backoff_initial: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
    /// PEM bundle of CA certificates trusted in addition to the system roots.
    pub extra_ca: Option<PathBuf>,
}

impl Default for JwksSettings {
    fn default() -> Self {
        JwksSettings {
            refresh_interval: Duration::from_secs(5 * 60),
            max_staleness: Duration::from_secs(24 * 60 * 60),
            unknown_kid_min_interval: Duration::from_secs(30),
            max_body_bytes: 1024 * 1024,
            max_redirects: 3,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5 * 60),
            extra_ca: None,
        }
    }
}

/// Why a [`JwksManager`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The extra CA file is unreadable, holds no certificate, or a certificate is unusable.
    #[error("extra CA file {}: {reason}", path.display())]
    ExtraCa { path: PathBuf, reason: String },
    /// rustls refused the client configuration.
    #[error("TLS client configuration: {0}")]
    Tls(String),
}

/// Labels of [`JwksMetrics::fetches`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    /// [`RemoteKeySource`]'s display form: the `jwksUri` or the discovery document URL.
    pub uri: String,
    /// `success` or `failure`.
    pub result: String,
}

/// Labels of [`JwksMetrics::key_age_seconds`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UriLabels {
    /// As in [`FetchLabels::uri`].
    pub uri: String,
}

/// Metric families the manager updates; the proxy registers them in its registry
/// ([`JwksMetrics::register`] does it under meshguard's names).
#[derive(Clone, Debug, Default)]
pub struct JwksMetrics {
    /// Completed fetch attempts per source and result.
    pub fetches: Family<FetchLabels, Counter>,
    /// Seconds since the last successful fetch of each source (the age of the keys in use);
    /// absent until the first success. Updated after each fetch, periodically and on
    /// [`JwksManager::status`].
    pub key_age_seconds: Family<UriLabels, Gauge>,
}

impl JwksMetrics {
    /// Registers `meshguard_jwks_fetches` (counter, `_total`) and
    /// `meshguard_jwks_key_age_seconds` (gauge).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "meshguard_jwks_fetches",
            "Remote JWKS fetch attempts by source URI and result",
            self.fetches.clone(),
        );
        registry.register(
            "meshguard_jwks_key_age_seconds",
            "Seconds since the keys in use for a remote JWKS source were fetched",
            self.key_age_seconds.clone(),
        );
    }
}
