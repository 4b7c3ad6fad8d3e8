//! The one decision every front end asks for: [`Runtime::decide`].
//!
//! Owns the order around the engine's pure evaluation: load the policy snapshot once (and
//! refuse with 503 while no policy set is loaded yet), wait for
//! the first fetch of the remote keys the providers use (bounded by each rule's timeout),
//! evaluate, and when a token names a key the fetched set lacks (perhaps a rotation), refetch
//! (coalesced and rate-limited per source) and evaluate once more. Then it counts the outcome
//! (JWT and authorization metrics) and, with `RUST_LOG=meshguard::explain=debug`, logs the
//! same account `meshguard check --explain` gives. Does not read requests off the wire, build
//! replies, forward or write the access log: those belong to the front end (the HTTP proxy
//! today; an ext_authz server would call the same function).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::HeaderMap;
use meshguard_engine::{Custom, DenyReason, EvalOptions, HttpRequest, Outcome, evaluate_with};

use crate::Runtime;
use crate::metrics::{AuthzLabels, JwtLabels, Metrics};
use crate::state::Snapshot;

/// What a front end knows about one request besides its headers.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// The request-target as received: path, query and possibly a fragment.
    pub path: &'a str,
    /// The authority the upstream will receive.
    pub host: &'a str,
    /// `http` or `https`: how the client reached the front end.
    pub scheme: &'a str,
    /// The client's address (`source.ip`).
    pub peer: SocketAddr,
    /// The address the client connected to (`destination.ip`, `destination.port`).
    pub local: SocketAddr,
    /// `remote.ip`: the client as `X-Forwarded-For` and the trusted hops tell it.
    pub remote_ip: IpAddr,
    /// The TLS server name the client sent (`connection.sni`); `None` over plaintext.
    pub sni: Option<&'a str>,
    /// The identity the client's certificate proved (`source.principal`, `principals`);
    /// `None` over plaintext.
    pub peer_identity: Option<meshguard_policy::PeerUris<'a>>,
    /// Unix seconds, for token expiry.
    pub now: u64,
    /// The external authorizer last asked about this request, which allowed it: CUSTOM goes
    /// on after it (`None` for a request not yet decided).
    pub custom_after: Option<&'a str>,
    /// For the explanation log lines.
    pub request_id: &'a str,
}

/// The decision and the snapshot it was made with (whose generation the access log names).
#[derive(Debug)]
pub struct Decision {
    pub snapshot: Arc<Snapshot>,
    pub outcome: Outcome,
}

impl Runtime {
    /// Decides one request. `headers` change in place as the engine's JWT side effects say
    /// (token removed unless `forwardOriginalToken`, payload and claims to headers).
    ///
    /// The usual request waits for nothing: its future holds no state of the two waits,
    /// which are boxed (every request's future is kept, by hyper, for as long as the request
    /// is in flight).
    pub async fn decide(&self, facts: RequestFacts<'_>, headers: &mut HeaderMap) -> Decision {
        self.decide_in(self.state.snapshot(), facts, headers).await
    }

    /// [`Runtime::decide`] with another snapshot than the state's: one compiled for the
    /// workload a request names (`meshguard ext-authz --workload-from-request`,
    /// [`crate::state::compile_snapshot`]), with the same waits, metrics and explanation.
    pub async fn decide_in(
        &self,
        snapshot: Arc<Snapshot>,
        facts: RequestFacts<'_>,
        headers: &mut HeaderMap,
    ) -> Decision {
        if !snapshot.loaded {
            // A watched source has not delivered its first set: refuse (503) rather than
            // decide against an empty set, which would allow everything.
            let outcome = Outcome::refused(DenyReason::PoliciesNotLoaded);
            return Decision { snapshot, outcome };
        }
        if !snapshot
            .remote
            .values()
            .all(|(keys, _)| keys.first_fetch_done())
        {
            return Box::pin(self.decide_after_first_fetches(snapshot, facts, headers)).await;
        }
        let outcome = self.evaluate_once(&snapshot, &facts, headers);
        if outcome.denial.is_some() && !outcome.unknown_kid.is_empty() {
            return Box::pin(self.decide_after_refetch(snapshot, outcome, facts, headers)).await;
        }
        self.decided(snapshot, outcome, &facts)
    }

    /// Requests that arrive while a provider's first JWKS fetch is in flight wait for it,
    /// bounded by the rule's timeout (docs/jwks.md).
    async fn decide_after_first_fetches(
        &self,
        snapshot: Arc<Snapshot>,
        facts: RequestFacts<'_>,
        headers: &mut HeaderMap,
    ) -> Decision {
        for (keys, timeout) in snapshot.remote.values() {
            keys.wait_first_fetch(*timeout).await;
        }
        let outcome = self.evaluate_once(&snapshot, &facts, headers);
        if outcome.denial.is_some() && !outcome.unknown_kid.is_empty() {
            return self
                .decide_after_refetch(snapshot, outcome, facts, headers)
                .await;
        }
        self.decided(snapshot, outcome, &facts)
    }

    /// The token names a key the fetched set lacks: maybe a rotation. Refetch and decide
    /// again with the new keys.
    async fn decide_after_refetch(
        &self,
        snapshot: Arc<Snapshot>,
        mut outcome: Outcome,
        facts: RequestFacts<'_>,
        headers: &mut HeaderMap,
    ) -> Decision {
        let mut refetched = false;
        for src in &outcome.unknown_kid {
            if let Some((keys, timeout)) = snapshot.remote.get(src) {
                keys.refetch_for_unknown_kid(*timeout).await;
                refetched = true;
            }
        }
        if refetched {
            outcome = self.evaluate_once(&snapshot, &facts, headers);
        }
        self.decided(snapshot, outcome, &facts)
    }

    /// Counts and explains the outcome.
    fn decided(
        &self,
        snapshot: Arc<Snapshot>,
        outcome: Outcome,
        facts: &RequestFacts<'_>,
    ) -> Decision {
        record_outcome(&self.metrics, &outcome);
        explain(&outcome, facts.request_id);
        Decision { snapshot, outcome }
    }
}

impl Runtime {
    fn evaluate_once(
        &self,
        snapshot: &Snapshot,
        facts: &RequestFacts<'_>,
        headers: &mut HeaderMap,
    ) -> Outcome {
        evaluate_with(
            &snapshot.compiled,
            HttpRequest {
                method: facts.method,
                path: facts.path,
                host: facts.host,
                scheme: facts.scheme,
                headers,
                source_ip: Some(facts.peer.ip()),
                remote_ip: Some(facts.remote_ip),
                destination_ip: Some(facts.local.ip()),
                destination_port: Some(facts.local.port()),
                sni: facts.sni,
                peer_identity: facts.peer_identity,
            },
            &EvalOptions {
                path_normalization: self.path_normalization,
                now: facts.now,
                keys: snapshot,
                explain: tracing::enabled!(target: "meshguard::explain", tracing::Level::DEBUG),
            },
            Custom {
                providers: &self.ext_authz_providers,
                after: facts.custom_after,
            },
        )
    }
}

/// The JWT and authorization counters for one decision.
fn record_outcome(metrics: &Metrics, out: &Outcome) {
    static NONE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| "none".into());
    for r in &out.jwt {
        metrics.jwt.inc(JwtLabels {
            issuer: r.issuer.clone(),
            result: r.result,
            reason: r.status.unwrap_or(""),
        });
    }
    let a = &out.authz;
    // A provider is to be asked: the decision is made once it has answered.
    if out.ext_authz.is_none() && (a.matched_policy.is_some() || a.denied.is_some()) {
        metrics.authz.inc(AuthzLabels {
            policy: a.matched_policy.clone().unwrap_or_else(|| NONE.clone()),
            action: a.matched_action.unwrap_or("ALLOW"),
            result: if a.denied.is_some() {
                "denied"
            } else {
                "allowed"
            },
            dry_run: "false",
        });
    }
    for d in &a.dry_run {
        metrics.authz.inc(AuthzLabels {
            policy: d.policy.clone().unwrap_or_else(|| NONE.clone()),
            action: d.action,
            result: d.result,
            dry_run: "true",
        });
    }
}

/// `RUST_LOG=meshguard::explain=debug`: the account `check --explain` gives, per request.
fn explain(outcome: &Outcome, request_id: &str) {
    let Some(rules) = &outcome.explanation else {
        return;
    };
    for r in &outcome.jwt {
        tracing::debug!(target: "meshguard::explain", request_id, provider = %r.provider, rule = %r.rule, result = r.result, reason = r.message.unwrap_or(""), "jwt");
    }
    for r in rules {
        tracing::debug!(target: "meshguard::explain", request_id, policy = %r.policy, action = r.action, dry_run = r.dry_run, rule = %r.rule, matched = r.matched, why = r.why.as_deref().unwrap_or(""), "authorization rule");
    }
    if let Some(ask) = &outcome.ext_authz {
        tracing::debug!(target: "meshguard::explain", request_id, provider = %ask.provider, policy = %ask.policy, "CUSTOM: asking the provider");
        return;
    }
    tracing::debug!(target: "meshguard::explain", request_id, status = outcome.status(), details = outcome.denial.as_ref().map_or("via_upstream", |d| d.reply.details.as_str()), "decision");
}
