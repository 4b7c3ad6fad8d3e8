//! Where the policies come from: the one seam between a policy source and the runtime.
//!
//! Every source produces the same thing, a `meshguard_model::PolicySet`, which
//! [`crate::state::PolicyState`] compiles for the workload and swaps in whole. Files are loaded
//! by the runtime itself (at start-up, on change and on SIGHUP, [`crate::reload`]). A watched
//! source (the Kubernetes API server, in `meshguard-kube`) pushes each complete set through
//! [`crate::state::PolicyState::publish`]; until its first one nothing is forwarded and
//! readiness fails. This module owns that distinction and what a watched source must tell
//! the runtime; it does not own loading, watching or compiling.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the policies come from.
#[derive(Clone, Debug)]
pub enum PolicySource {
    /// Files and directories of Kubernetes YAML (`--policies`): loaded before the listeners
    /// open (any error is fatal then), again when they change and on SIGHUP.
    Files(Vec<PathBuf>),
    /// A source that watches something and publishes complete sets
    /// ([`crate::state::PolicyState::publish`]). Until the first, every request is refused
    /// with 503 and `/healthz/ready` answers 503.
    Watched(Arc<dyn WatchedSource>),
}

impl PolicySource {
    /// The paths of a file source; empty for a watched one.
    pub fn paths(&self) -> &[PathBuf] {
        match self {
            PolicySource::Files(paths) => paths,
            PolicySource::Watched(_) => &[],
        }
    }

    /// `3 file(s)`, or the watched source's own name: where a set came from, for log lines.
    pub fn describe(&self, files: usize) -> String {
        match self {
            PolicySource::Files(_) => format!("{files} file(s)"),
            PolicySource::Watched(w) => w.describe(),
        }
    }
}

/// What a watched source tells the runtime: its name, whether it has delivered everything
/// (readiness), its part of `/config_dump`, and a way to ask it to start over (SIGHUP).
pub trait WatchedSource: fmt::Debug + Send + Sync {
    /// The source in log lines: `the Kubernetes API server https://10.96.0.1:443`.
    fn describe(&self) -> String;
    /// What the source still waits for before its first complete set, one item each
    /// (`AuthorizationPolicy in istio-system: forbidden`); empty once it has everything.
    fn pending(&self) -> Vec<String>;
    /// The source's part of `/config_dump` (under `source`).
    fn dump(&self) -> serde_json::Value;
    /// Asked on SIGHUP: read everything again (the set changes only if what is read does).
    fn resync(&self);
}
