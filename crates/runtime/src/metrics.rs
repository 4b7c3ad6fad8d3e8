//! Prometheus metrics, served on the admin listener's `/metrics` and `/stats/prometheus`.
//!
//! Owns the metric families, their labels, the two text formats they are written in
//! (Prometheus text 0.0.4 and OpenMetrics 1.0.0), and the request-duration histograms. Does
//! not decide what to count: the request handler, the connection loop, the access-log writer
//! and the reloader call these.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
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

/// One question to an external authorizer (a CUSTOM policy's provider) and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExtAuthzLabels {
    /// The provider's name in the mesh config.
    pub provider: Arc<str>,
    /// `ok`, `denied`, `error` (refused with `statusOnError`) or `failure_mode_allowed`
    /// (an error let through by `failOpen`): Envoy's `ext_authz.*` counters.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// One watch of a watched policy source: the kind of object and the namespace read (`*` for a
/// cluster-wide watch).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    pub kind: &'static str,
    pub namespace: String,
}

/// The health of a watched policy source (the Kubernetes API server), per watch. Families
/// stay empty with a file source.
#[derive(Clone, Debug, Default)]
pub struct SourceMetrics {
    /// 1 while the watch's last list completed and no error came since; 0 while listing or
    /// after an error (the last good set keeps applying meanwhile).
    pub synced: Family<WatchLabels, Gauge>,
    /// Unix time of the watch's last complete list.
    pub last_sync: Family<WatchLabels, Gauge>,
    /// Errors of the watch (a failed list or watch, a dropped connection).
    pub errors: Family<WatchLabels, Counter>,
    /// Objects the watch holds, the invalid ones included.
    pub objects: Family<WatchLabels, Gauge>,
    /// Objects whose latest version was refused as invalid (their last good version, if
    /// any, keeps applying).
    pub invalid_objects: Family<WatchLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    /// The status class: `1xx` to `5xx`. A handful of values, so the series stay few.
    pub code_class: &'static str,
}

/// The status classes, in the order of [`class_index`].
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index into [`CLASSES`] of a status (anything outside 100..=599 counts as `5xx`).
fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// Upper bounds of the duration buckets, in seconds: Istio's
/// `istio_request_duration_milliseconds` buckets (0.5 ms to 1 h), so dashboards built for
/// those read these alike.
pub const DURATION_BUCKETS: [f64; 19] = [
    0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 600.0, 1800.0, 3600.0,
];

/// [`DURATION_BUCKETS`] in nanoseconds (each is a whole number of them; a test checks that
/// they are the same), so that an observation is placed with integer compares and no float
/// conversion. A duration of exactly a bound counts in that bound's bucket, as with seconds.
const DURATION_BOUNDS_NANOS: [u64; DURATION_BUCKETS.len()] = [
    500_000,
    1_000_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
    300_000_000_000,
    600_000_000_000,
    1_800_000_000_000,
    3_600_000_000_000,
];

/// A duration histogram with [`DURATION_BUCKETS`], updated with three relaxed atomic adds
/// and no lock (`prometheus_client`'s histogram takes a mutex on every observation).
#[derive(Clone, Debug, Default)]
pub struct DurationHistogram(Arc<HistogramCells>);

#[derive(Debug, Default)]
pub struct HistogramCells {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl DurationHistogram {
    pub fn observe(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = DURATION_BOUNDS_NANOS.partition_point(|&b| b < nanos);
        let cells = &self.0;
        // `i` is at most `DURATION_BUCKETS.len()`, the `+Inf` bucket.
        if let Some(bucket) = cells.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        cells.count.fetch_add(1, Ordering::Relaxed);
        cells.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let cells = &self.0;
        let mut buckets = [(0.0, 0); DURATION_BUCKETS.len() + 1];
        let bounds = DURATION_BUCKETS.iter().copied().chain([f64::INFINITY]);
        for ((slot, bound), cell) in buckets.iter_mut().zip(bounds).zip(&cells.buckets) {
            *slot = (bound, cell.load(Ordering::Relaxed));
        }
        // The count is the buckets' total, so that a scrape racing an observation still reads
        // a consistent `_count` and `+Inf` bucket.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = cells.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A histogram family by status class, with a handle per class looked up once: a series
/// appears with the first response of its class, and later observations neither hash nor lock.
#[derive(Debug)]
struct ByClass {
    family: Family<ClassLabels, DurationHistogram>,
    handles: [std::sync::OnceLock<DurationHistogram>; 5],
}

impl ByClass {
    fn new(family: Family<ClassLabels, DurationHistogram>) -> ByClass {
        ByClass {
            family,
            handles: Default::default(),
        }
    }

    fn observe(&self, status: u16, d: Duration) {
        let class = class_index(status);
        // Both arrays have an entry per class; once `class_index` is inlined the check is gone.
        let (Some(handle), Some(&code_class)) = (self.handles.get(class), CLASSES.get(class))
        else {
            return;
        };
        handle
            .get_or_init(|| self.family.get_or_create_owned(&ClassLabels { code_class }))
            .observe(d);
    }
}

/// Which text format `/metrics` is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (what a scraper gets unless it asks for OpenMetrics).
    Prometheus,
    /// OpenMetrics 1.0.0.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it lists
    /// `application/openmetrics-text` with a q-value above 0 and at least that of any text
    /// format it also lists (Prometheus sends both, OpenMetrics preferred); else 0.0.4.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let mut openmetrics: f32 = 0.0;
        let mut text: f32 = 0.0;
        for range in accept.unwrap_or("").split(',') {
            let mut params = range.split(';');
            let media = params.next().unwrap_or("").trim();
            let q = params
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if media.eq_ignore_ascii_case("application/openmetrics-text") {
                openmetrics = openmetrics.max(q);
            } else if media.eq_ignore_ascii_case("text/plain") {
                text = text.max(q);
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Every metric meshguard exports.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    requests: Family<CodeLabels, Counter>,
    /// Handles into `requests` for the statuses most answers have.
    common_codes: [(u16, Counter); 3],
    pub jwt: Recent<JwtLabels>,
    pub authz: Recent<AuthzLabels>,
    pub reloads: Family<ResultLabels, Counter>,
    pub config_generation: Gauge,
    pub upstream_errors: Family<ResultLabels, Counter>,
    /// Updated by the JWKS fetchers.
    pub jwks: meshguard_jwks::JwksMetrics,
    /// Time from the request head to the response head, by status class.
    request_duration: ByClass,
    /// Time from forwarding to the upstream's response head, by the upstream's status class.
    upstream_duration: ByClass,
    /// Access-log lines dropped because the writer could not keep up (or stdout failed).
    pub access_log_dropped: Counter,
    /// HTTP/2 connections closed for resetting too many of their streams early.
    pub premature_reset_closes: Counter,
    /// HTTP/1 requests refused before the handler (`reason`: `too_large`, `malformed`).
    pub protocol_errors: ProtocolErrors,
    /// Upgraded (WebSocket) connections.
    pub upgrades: UpgradeMetrics,
    /// A watched policy source's watches.
    pub source: SourceMetrics,
    /// `meshguard ext-authz`: Check answers by `result` (`ok`, `denied`).
    pub ext_authz_checks: Family<ResultLabels, Counter>,
    /// `meshguard proxy`: questions to the external authorizers of CUSTOM policies.
    pub ext_authz_requests: Family<ExtAuthzLabels, Counter>,
    /// The proxy listener's mutual TLS.
    pub tls: TlsMetrics,
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
        let request_duration_family = Family::<ClassLabels, DurationHistogram>::default();
        registry.register(
            "request_duration_seconds",
            "Time from receiving a request head to sending the response head, by status class",
            request_duration_family.clone(),
        );
        let upstream_duration_family = Family::<ClassLabels, DurationHistogram>::default();
        registry.register(
            "upstream_request_duration_seconds",
            "Time from forwarding a request to receiving the upstream's response head, by status class",
            upstream_duration_family.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access-log lines dropped because stdout did not take them fast enough",
            access_log_dropped.clone(),
        );
        let premature_reset_closes = Counter::default();
        registry.register(
            "downstream_premature_reset_closes",
            "HTTP/2 client connections closed because most of their streams were reset early",
            premature_reset_closes.clone(),
        );
        let protocol_error_family = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "downstream_protocol_errors",
            "HTTP/1 requests refused before evaluation because the request head could not be parsed or was too large (answered by the HTTP parser: neither counted in meshguard_requests_total nor logged)",
            protocol_error_family.clone(),
        );
        // Created up front: both series show from the start with 0. One statement each: the
        // guard `get_or_create` returns holds the family's lock until the statement ends.
        let too_large = protocol_error_family.get_or_create_owned(&ReasonLabels {
            reason: "too_large",
        });
        let malformed = protocol_error_family.get_or_create_owned(&ReasonLabels {
            reason: "malformed",
        });
        let protocol_errors = ProtocolErrors {
            too_large,
            malformed,
        };
        let upgrades = UpgradeMetrics::default();
        registry.register(
            "downstream_upgrades_active",
            "Upgraded (WebSocket) client connections open now, from the upstream's 101 until both sides have closed",
            upgrades.active.clone(),
        );
        registry.register(
            "downstream_upgrades",
            "Upgraded (WebSocket) client connections opened",
            upgrades.total.clone(),
        );
        let source = SourceMetrics::default();
        registry.register(
            "policy_source_synced",
            "1 when the watch of a policy source (kind, namespace) completed its last list and has had no error since, 0 otherwise",
            source.synced.clone(),
        );
        registry.register(
            "policy_source_last_sync_timestamp_seconds",
            "Unix time of the last complete list of each watch of a policy source",
            source.last_sync.clone(),
        );
        registry.register(
            "policy_source_errors",
            "Errors of each watch of a policy source (failed lists and watches, dropped connections)",
            source.errors.clone(),
        );
        registry.register(
            "policy_source_objects",
            "Objects each watch of a policy source holds, invalid ones included",
            source.objects.clone(),
        );
        registry.register(
            "policy_source_invalid_objects",
            "Objects of each watch of a policy source whose latest version was refused as invalid",
            source.invalid_objects.clone(),
        );
        let ext_authz_checks = Family::<ResultLabels, Counter>::default();
        registry.register(
            "ext_authz_checks",
            "ext_authz Check requests answered (meshguard ext-authz), by result: ok, denied, no_workload (--workload-from-request: no workload for the destination)",
            ext_authz_checks.clone(),
        );
        let ext_authz_requests = Family::<ExtAuthzLabels, Counter>::default();
        registry.register(
            "ext_authz_requests",
            "Requests the proxy sent to an external authorizer (a CUSTOM policy's provider), by provider and result: ok, denied, error, failure_mode_allowed",
            ext_authz_requests.clone(),
        );
        let tls = TlsMetrics::default();
        registry.register(
            "tls_handshakes",
            "Connections to the proxy listener that asked for TLS or were refused for their transport, by result (ok, no_cert, untrusted, wrong_trust_domain, plaintext_refused, failed)",
            tls.handshakes.clone(),
        );
        registry.register(
            "tls_certificate_rotations",
            "Changes of the --tls-dir files read after start-up, by result (success: serving them; failure: the last good files stay)",
            tls.rotations.clone(),
        );
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "Unix time at which the serving certificate (by its URI SAN) expires",
            tls.expiry.clone(),
        );
        let request_duration = ByClass::new(request_duration_family);
        let upstream_duration = ByClass::new(upstream_duration_family);
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
            request_duration,
            upstream_duration,
            access_log_dropped,
            premature_reset_closes,
            protocol_errors,
            upgrades,
            source,
            ext_authz_checks,
            ext_authz_requests,
            tls,
        }
    }
}

impl Metrics {
    /// Counts one response by status. The counters of common statuses are looked up once, so
    /// the request path neither hashes nor locks for them.
    fn count_response(&self, status: u16) {
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

    /// Counts one response by status and records how long it took: `total` from the request
    /// head, `upstream` from forwarding (for responses the upstream gave).
    pub fn record_response(&self, status: u16, total: Duration, upstream: Option<Duration>) {
        self.count_response(status);
        self.request_duration.observe(status, total);
        if let Some(d) = upstream {
            self.upstream_duration.observe(status, d);
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        self.encode_as(Format::OpenMetrics)
    }

    /// The exposition in `format`.
    pub fn encode_as(&self, format: Format) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
        };
        out
    }
}

/// HTTP/1 requests refused before they reach the service, so neither logged nor counted as
/// requests: hyper's own answers to a head it cannot parse (400 for a bad request line or
/// field, 431 for a head over its buffer, 414 for a request target over its limit), and
/// the proxy's own 431 for heads over its limit. Counted when the connection ends with hyper's parse error, which costs
/// the request path nothing. HTTP/2 has no such hook: `h2` resets a malformed stream (or
/// answers 431 to an oversized header list) itself, without telling the server.
#[derive(Clone, Debug, Default)]
pub struct ProtocolErrors {
    /// 431 or 414: the head (or its request target) is too large.
    pub too_large: Counter,
    /// 400: the head is not valid HTTP/1.
    pub malformed: Counter,
}

impl ProtocolErrors {
    pub fn count(&self, e: &hyper::Error) {
        if e.is_parse_too_large() {
            self.too_large.inc();
        } else if e.is_parse() {
            self.malformed.inc();
        }
    }
}

/// The serving certificate of a metric: its URI SAN (the workload's SPIFFE ID).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    pub identity: String,
}

/// The proxy listener's mutual TLS, registered by [`Metrics`]; the proxy's inbound side and
/// its `--tls-dir` watcher update them. Empty without `--tls-dir`.
///
/// The expiry is a timestamp, not the time left: a gauge of the time left would be correct
/// only at the moment it was set, where `meshguard_tls_certificate_expiry_timestamp_seconds
/// - time()` is right at every scrape, and the timestamp is what Prometheus' naming
/// conventions and exporters of certificates (cert-manager's
/// `certmanager_certificate_expiration_timestamp_seconds`) use.
#[derive(Clone, Debug, Default)]
pub struct TlsMetrics {
    /// Handshakes by [`result`](ResultLabels): `ok`, `no_cert`, `untrusted`,
    /// `wrong_trust_domain`, `plaintext_refused`, `failed`.
    pub handshakes: Family<ResultLabels, Counter>,
    /// Rotations: `success` or `failure`.
    pub rotations: Family<ResultLabels, Counter>,
    /// `notAfter` of the serving certificate; one series, for the certificate in use.
    pub expiry: Family<CertLabels, Gauge>,
}

impl TlsMetrics {
    /// Counts one handshake (or refused connection) by result.
    pub fn handshake(&self, result: &'static str) {
        self.handshakes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Shows `identity`'s certificate, expiring at `not_after`, as the one in use.
    pub fn serving(&self, identity: &str, not_after: i64) {
        self.expiry.clear();
        self.expiry
            .get_or_create(&CertLabels {
                identity: identity.to_string(),
            })
            .set(not_after);
    }
}

/// The upgraded connections, registered by [`Metrics`]; the proxy's tunnels update them.
#[derive(Debug, Default)]
pub struct UpgradeMetrics {
    /// Tunnels open now (Envoy's `downstream_cx_upgrades_active`).
    pub active: Gauge,
    /// Tunnels opened since the start (Envoy's `downstream_cx_upgrades_total`).
    pub total: Counter,
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
    fn duration_buckets_in_nanos_are_the_same_bounds() {
        for (secs, nanos) in DURATION_BUCKETS.iter().zip(DURATION_BOUNDS_NANOS) {
            assert_eq!(Duration::from_secs_f64(*secs), Duration::from_nanos(nanos));
        }
        // A duration of exactly a bound counts in that bound's bucket; a nanosecond more in
        // the next.
        let h = DurationHistogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_nanos(500_001));
        h.observe(Duration::from_secs(3600));
        h.observe(Duration::from_secs(3601));
        let counts: Vec<u64> =
            h.0.buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect();
        let mut expected = [0; DURATION_BUCKETS.len() + 1];
        expected[0] = 1;
        expected[1] = 1;
        expected[DURATION_BUCKETS.len() - 1] = 1;
        expected[DURATION_BUCKETS.len()] = 1;
        assert_eq!(counts, expected);
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

    #[test]
    fn durations_land_in_istio_buckets_by_status_class() {
        let m = Metrics::default();
        m.record_response(
            200,
            Duration::from_micros(300),
            Some(Duration::from_micros(200)),
        );
        m.record_response(
            204,
            Duration::from_millis(30),
            Some(Duration::from_millis(20)),
        );
        m.record_response(403, Duration::from_millis(2), None);
        let text = m.encode_as(Format::Prometheus);
        let has = |l: &str| assert!(text.lines().any(|x| x == l), "{l} missing from\n{text}");
        has("# TYPE meshguard_request_duration_seconds histogram");
        has("meshguard_request_duration_seconds_count{code_class=\"2xx\"} 2");
        has("meshguard_request_duration_seconds_bucket{code_class=\"2xx\",le=\"0.0005\"} 1");
        has("meshguard_request_duration_seconds_bucket{code_class=\"2xx\",le=\"0.025\"} 1");
        has("meshguard_request_duration_seconds_bucket{code_class=\"2xx\",le=\"0.05\"} 2");
        has("meshguard_request_duration_seconds_bucket{code_class=\"2xx\",le=\"+Inf\"} 2");
        has("meshguard_request_duration_seconds_sum{code_class=\"2xx\"} 0.0303");
        has("meshguard_request_duration_seconds_count{code_class=\"4xx\"} 1");
        has("meshguard_upstream_request_duration_seconds_count{code_class=\"2xx\"} 2");
        // Series appear with their first observation.
        assert!(!text.contains("code_class=\"1xx\""), "{text}");
        assert!(
            !text.contains("meshguard_upstream_request_duration_seconds_count{code_class=\"4xx\"}"),
            "{text}"
        );
        has("meshguard_requests_total{code=\"200\"} 1");
    }

    #[test]
    fn counters_are_typed_as_each_format_wants() {
        let m = Metrics::default();
        let text = m.encode_as(Format::Prometheus);
        assert!(
            text.contains("# TYPE meshguard_requests_total counter\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
        let om = m.encode_as(Format::OpenMetrics);
        assert!(om.contains("# TYPE meshguard_requests counter\n"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
    }

    #[test]
    fn accept_header_picks_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for (accept, want) in [
            (None, Format::Prometheus),
            (Some("*/*"), Format::Prometheus),
            (Some("text/plain"), Format::Prometheus),
            (Some(prometheus), Format::OpenMetrics),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            (
                Some("Application/OpenMetrics-Text; version=1.0.0"),
                Format::OpenMetrics,
            ),
            (Some("application/openmetrics-text;q=0"), Format::Prometheus),
            (
                Some("application/openmetrics-text;q=0.2, text/plain"),
                Format::Prometheus,
            ),
        ] {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
    }
}
