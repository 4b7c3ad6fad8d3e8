//! What every meshguard front end shares: the policy snapshot and its reloads, the remote
//! keys, the metrics, the admin pages, the access-log writer, and one async decision.
//!
//! A front end (the HTTP proxy in `meshguard-proxy`; an ext_authz server later) builds one
//! [`Runtime`] with [`Runtime::load`], starts its reloader with [`Runtime::spawn_reload`], and
//! asks [`Runtime::decide`] about each request. The runtime does not listen, parse HTTP,
//! build replies or forward: those are the front end's.
//!
//! Modules: [`source`] (where policies come from: files, or a watched source such as the
//! Kubernetes API server), [`state`] (the snapshot, swapped atomically, the workload, and
//! `/config_dump`), [`reload`] (file watching, SIGHUP, a followed labels file, the load and
//! reload log lines), [`metrics`] (every metric family and the two text formats), [`admin`]
//! (the admin pages), [`access_log`] (the writer thread), [`decide`] (the decision).
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

pub mod access_log;
pub mod admin;
pub mod decide;
pub mod metrics;
pub mod reload;
pub mod source;
pub mod state;

use std::future::Future;
use std::sync::Arc;

use meshguard_engine::PathNormalization;
use meshguard_model::{LoadErrors, Workload};

pub use decide::{Decision, RequestFacts};
/// The peer's URI SANs as [`RequestFacts::peer_identity`] holds them.
pub use meshguard_policy::PeerUris;
pub use metrics::Metrics;
pub use source::{PolicySource, WatchedSource};
pub use state::{PolicyState, Snapshot};

/// What a [`Runtime`] is built from.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Where the policies come from: files and directories, or a watched source.
    pub policies: PolicySource,
    /// The workload the policies are selected for.
    pub workload: Workload,
    /// How request paths are normalized before matching (Istio's `pathNormalization`).
    pub path_normalization: PathNormalization,
    /// Verified tokens remembered (docs/decisions.md, decision 9); 0 disables the cache.
    pub token_cache: usize,
    /// Remote JWKS fetching: refresh, staleness, extra CA.
    pub jwks: meshguard_jwks::JwksSettings,
}

/// Why a [`Runtime`] could not be built.
#[derive(Debug)]
pub enum RuntimeError {
    /// The JWKS client could not be set up (its extra CA file, TLS settings).
    Jwks(String),
    /// The policies did not load; nothing is served.
    Policies(LoadErrors),
}

/// The shared piece: policies, keys, metrics, and [`Runtime::decide`].
#[derive(Debug)]
pub struct Runtime {
    state: Arc<PolicyState>,
    metrics: Arc<Metrics>,
    path_normalization: PathNormalization,
    /// The external authorizers the front end can ask for CUSTOM policies (names of the mesh
    /// config's ext_authz providers); none by default, so CUSTOM matches deny.
    ext_authz_providers: Vec<Arc<str>>,
}

impl Runtime {
    /// Loads and compiles the policies of a file source (generation 1; a watched source has
    /// none until it publishes its first set) and starts the remote key fetchers.
    pub fn load(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let metrics = Arc::new(Metrics::default());
        let jwks = meshguard_jwks::JwksManager::new(config.jwks, metrics.jwks.clone())
            .map_err(|e| RuntimeError::Jwks(e.to_string()))?;
        let state = PolicyState::load(config.policies, config.workload, jwks, config.token_cache)
            .map_err(RuntimeError::Policies)?;
        let generation = state.snapshot().generation;
        metrics
            .config_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        Ok(Runtime {
            state: Arc::new(state),
            metrics,
            path_normalization: config.path_normalization,
            ext_authz_providers: Vec::new(),
        })
    }

    /// The external authorizers the front end asks for CUSTOM policies: a CUSTOM rule of one
    /// of them makes [`Runtime::decide`]'s outcome say "ask it" rather than deny.
    #[must_use]
    pub fn with_ext_authz_providers(mut self, names: Vec<Arc<str>>) -> Runtime {
        self.ext_authz_providers = names;
        self
    }

    /// Reloads on SIGHUP, on file changes when `watch`, and when the workload's labels change,
    /// until `shutdown` resolves (a file source); asks a watched source to read everything
    /// again on SIGHUP.
    pub fn spawn_reload(&self, watch: bool, shutdown: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(reload::run(
            self.state.clone(),
            self.metrics.clone(),
            watch,
            shutdown,
        ));
    }

    /// Stops the remote key fetchers (at shutdown).
    pub fn shutdown(&self) {
        self.state.jwks().shutdown();
    }

    pub fn state(&self) -> &Arc<PolicyState> {
        &self.state
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}
