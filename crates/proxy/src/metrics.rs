//! Prometheus metrics, served on the admin listener's `/metrics`.
//!
//! Owns the metric families and their labels. Does not decide what to count: the request
//! handler and the reloader call these.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: u16,
}

// Label values are shared with the compiled policies (`Arc<str>`) or static, so counting a
// request copies no strings.

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwtLabels {
    pub issuer: Arc<str>,
    /// `ok`, `missing` or `failed`.
    pub result: &'static str,
    /// The status name for failures (`JwtExpired`), empty otherwise.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthzLabels {
    /// The policy id (`ns[foo]-policy[require-jwt]-rule[0]`), or `none`.
    pub policy: Arc<str>,
    pub action: &'static str,
    /// `allowed` or `denied`.
    pub result: &'static str,
    pub dry_run: &'static str,
}

/// Label sets that can be recognised cheaply: by the address of their shared strings.
pub trait SameAs {
    fn same_as(&self, other: &Self) -> bool;
}

impl SameAs for JwtLabels {
    fn same_as(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.issuer, &o.issuer) && self.result == o.result && self.reason == o.reason
    }
}

impl SameAs for AuthzLabels {
    fn same_as(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.policy, &o.policy)
            && self.action == o.action
            && self.result == o.result
            && self.dry_run == o.dry_run
    }
}

/// A family's counters for the label sets used most recently. Requests mostly repeat a few
/// label sets; recognising them by pointer skips the family's hashing and lock. Bounded: when
/// full it starts over (reloads make new strings, so old entries would never match again).
#[derive(Debug)]
pub struct Recent<L> {
    family: Family<L, Counter>,
    recent: std::sync::Mutex<Vec<(L, Counter)>>,
}

const RECENT_MAX: usize = 32;

impl<L> Recent<L>
where
    L: SameAs
        + Clone
        + std::hash::Hash
        + Eq
        + EncodeLabelSet
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    fn new(family: Family<L, Counter>) -> Recent<L> {
        Recent {
            family,
            recent: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Adds one to the counter of `labels`.
    pub fn inc(&self, labels: L) {
        let Ok(mut recent) = self.recent.lock() else {
            self.family.get_or_create(&labels).inc();
            return;
        };
        if let Some((_, c)) = recent.iter().find(|(l, _)| l.same_as(&labels)) {
            c.inc();
            return;
        }
        let counter = self.family.get_or_create_owned(&labels);
        counter.inc();
        if recent.len() >= RECENT_MAX {
            recent.clear();
        }
        recent.push((labels, counter));
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// Every metric meshguard exports.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<CodeLabels, Counter>,
    /// Handles into `requests` for the statuses most answers have.
    common_codes: [(u16, Counter); 3],
    pub jwt: Recent<JwtLabels>,
    pub authz: Recent<AuthzLabels>,
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
        // Created up front, so they show in /metrics from the start with 0.
        let common_codes =
            [200, 401, 403].map(|code| (code, requests.get_or_create_owned(&CodeLabels { code })));
        Metrics {
            common_codes,
            jwks,
            registry,
            requests,
            jwt: Recent::new(jwt),
            authz: Recent::new(authz),
            reloads,
            config_generation,
            upstream_errors,
        }
    }
}

impl Metrics {
    /// Counts one response by status. The counters of common statuses are looked up once, so
    /// the request path neither hashes nor locks for them.
    pub fn count_response(&self, status: u16) {
        match self.common_codes.iter().find(|(c, _)| *c == status) {
            Some((_, counter)) => {
                counter.inc();
            }
            None => {
                self.requests
                    .get_or_create(&CodeLabels { code: status })
                    .inc();
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(m: &Metrics, prefix: &str) -> Vec<String> {
        m.encode()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn recent_label_sets_count_into_the_right_series() {
        let m = Metrics::default();
        let issuer: Arc<str> = "https://issuer.example".into();
        let labels = |issuer: &Arc<str>, reason| JwtLabels {
            issuer: issuer.clone(),
            result: "failed",
            reason,
        };
        m.jwt.inc(labels(&issuer, "JwtExpired"));
        m.jwt.inc(labels(&issuer, "JwtExpired"));
        // The same text in another allocation (a reload compiles new strings): same series.
        let reloaded: Arc<str> = "https://issuer.example".into();
        m.jwt.inc(labels(&reloaded, "JwtExpired"));
        m.jwt.inc(labels(&issuer, "JwtBadFormat"));
        // More distinct label sets than the cache holds: it starts over, counts stay right.
        for i in 0..(RECENT_MAX + 5) {
            m.jwt.inc(labels(&format!("iss-{i}").into(), ""));
        }
        m.jwt.inc(labels(&issuer, "JwtExpired"));
        let mut got = line(
            &m,
            "meshguard_jwt_results_total{issuer=\"https://issuer.example\"",
        );
        got.sort();
        assert_eq!(
            got,
            [
                "meshguard_jwt_results_total{issuer=\"https://issuer.example\",result=\"failed\",reason=\"JwtBadFormat\"} 1",
                "meshguard_jwt_results_total{issuer=\"https://issuer.example\",result=\"failed\",reason=\"JwtExpired\"} 4",
            ]
        );
        assert_eq!(
            line(&m, "meshguard_jwt_results_total{issuer=\"iss-").len(),
            RECENT_MAX + 5
        );
    }
}
