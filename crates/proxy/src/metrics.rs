//! Prometheus metrics, served on the admin listener's `/metrics`.
//!
//! Owns the metric families and their labels. Does not decide what to count: the request
//! handler and the reloader call these.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwtLabels {
    pub issuer: String,
    /// `ok`, `missing` or `failed`.
    pub result: String,
    /// The status name for failures (`JwtExpired`), empty otherwise.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthzLabels {
    /// The policy id (`ns[foo]-policy[require-jwt]-rule[0]`), or `none`.
    pub policy: String,
    pub action: String,
    /// `allowed` or `denied`.
    pub result: String,
    pub dry_run: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// Every metric meshguard exports.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<CodeLabels, Counter>,
    pub jwt: Family<JwtLabels, Counter>,
    pub authz: Family<AuthzLabels, Counter>,
    pub reloads: Family<ResultLabels, Counter>,
    pub config_generation: Gauge,
    pub upstream_errors: Family<ResultLabels, Counter>,
    /// Updated by the JWKS fetchers.
    pub jwks: meshguard_jwks::JwksMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("meshguard");
        let requests = Family::<CodeLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by HTTP status",
            requests.clone(),
        );
        let jwt = Family::<JwtLabels, Counter>::default();
        registry.register(
            "jwt_results",
            "JWT provider results, by issuer, result and reason",
            jwt.clone(),
        );
        let authz = Family::<AuthzLabels, Counter>::default();
        registry.register(
            "authz_decisions",
            "Authorization decisions, by deciding policy, action, result and dry-run",
            authz.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Policy reloads, by result (success or failure)",
            reloads.clone(),
        );
        let config_generation = Gauge::default();
        registry.register(
            "config_generation",
            "Generation of the policy snapshot in use (1 at start, +1 per successful reload)",
            config_generation.clone(),
        );
        let upstream_errors = Family::<ResultLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Requests the upstream could not answer, by cause",
            upstream_errors.clone(),
        );
        let jwks = meshguard_jwks::JwksMetrics::default();
        registry.register(
            "jwks_fetches",
            "Remote JWKS fetches, by source URI and result",
            jwks.fetches.clone(),
        );
        registry.register(
            "jwks_key_age_seconds",
            "Age of the remote keys in use, by source URI (seconds since their fetch)",
            jwks.key_age_seconds.clone(),
        );
        Metrics {
            jwks,
            registry,
            requests,
            jwt,
            authz,
            reloads,
            config_generation,
            upstream_errors,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
