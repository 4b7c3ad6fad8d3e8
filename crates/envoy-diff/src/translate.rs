//! The Envoy configuration istiod would generate for a workload, from the same Istio YAML.
//!
//! (Being written.) Contract: [`bootstrap`] returns a complete Envoy bootstrap (JSON) with an
//! admin listener on `127.0.0.1:0`, one listener on `endpoints.listen` whose HTTP connection
//! manager carries Istio's settings and filters (`jwt_authn`, `rbac` in Istio's order), and one
//! cluster `inbound` to `endpoints.upstream` over HTTP/1.1.

use std::net::SocketAddr;

use crate::scenario::{MeshOptions, WorkloadSpec};

/// Where the Envoy under test listens and forwards.
#[derive(Clone, Copy, Debug)]
pub struct Endpoints {
    /// `127.0.0.2:P`.
    pub listen: SocketAddr,
    /// The recording upstream.
    pub upstream: SocketAddr,
}

/// Why a scenario cannot be translated (the YAML does not load, or uses something the
/// translator does not cover).
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error("the policies do not load: {0}")]
    Load(String),
    #[error("not translated: {0}")]
    Unsupported(String),
}

/// Envoy's bootstrap for `policies` (Kubernetes YAML, `${PORT}` already replaced) applied to
/// `workload` with `mesh`.
pub fn bootstrap(
    policies: &str,
    workload: &WorkloadSpec,
    mesh: &MeshOptions,
    endpoints: &Endpoints,
) -> Result<serde_json::Value, TranslateError> {
    let _ = (policies, workload, mesh, endpoints);
    Err(TranslateError::Unsupported(
        "the translator is not written yet".into(),
    ))
}
