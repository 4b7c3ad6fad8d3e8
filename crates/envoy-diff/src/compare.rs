//! What counts as "the same answer": the fields compared between meshguard's and Envoy's
//! observation of one request, and the few that are not compared (with the reason).
//!
//! Compared: whether an HTTP response came back at all; the status; the body; the response
//! headers `www-authenticate`, `grpc-status`, `grpc-message` and `content-type`; whether the
//! upstream was reached; and, when it was, the method, the request-target (the path after
//! normalization, the query), the protocol (HTTP/1.1 or HTTP/2), the body and every header
//! line it received, by name and values.
//!
//! Not compared, because each proxy makes its own and no policy can see them:
//! * the value of a generated `x-request-id` (its presence is compared; a client's own
//!   `x-request-id` must arrive unchanged, so it is compared when the client sent one);
//! * `x-envoy-*` headers, Envoy's private protocol with its own upstreams (Envoy adds
//!   `x-envoy-internal` for loopback clients, `x-envoy-expected-rq-timeout-ms`, ...);
//! * response headers other than the four above (`date`, `server`, `content-length`).
//!
//! Header lines are compared by name with their non-empty values joined by `,`: Envoy forwards a
//! repeated header it keeps inline (`authorization`, `user-agent`, `accept`, ...) as one line
//! `a,b`, meshguard as the two lines it received; the two are the same field (RFC 9110 §5.3).
//! What Envoy's joining does to *matching* shows in the statuses, which are compared.
//!
//! One value is read rather than compared as is: for a loopback peer, Envoy appends the
//! machine's own address to `x-forwarded-for` instead of the peer's (Envoy's
//! `ConnectionManagerUtility::mutateRequestHeaders`; the policies still see the peer). Every
//! client of the harness is a loopback peer, so the last element of Envoy's `x-forwarded-for`
//! is read as the client's source address.

use std::collections::BTreeMap;
use std::fmt;

use crate::client::{Answer, Response};
use crate::scenario::Request;
use crate::upstream::Received;

/// Response headers compared between the two proxies.
pub const COMPARED_RESPONSE_HEADERS: [&str; 4] = [
    "www-authenticate",
    "grpc-status",
    "grpc-message",
    "content-type",
];

/// What one proxy did with one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub answer: Answer,
    /// What the upstream received because of this request (usually zero or one request).
    pub upstream: Vec<Received>,
}

/// One field that differs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    /// A response on one side, none (close, reset, timeout) on the other.
    Answered,
    Status,
    Body,
    ResponseHeader(&'static str),
    /// How many requests reached the upstream.
    UpstreamReached,
    UpstreamMethod,
    UpstreamTarget,
    /// The protocol the request reached the upstream with.
    UpstreamVersion,
    UpstreamBody,
    UpstreamHeader(String),
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Answered => f.write_str("answered"),
            Field::Status => f.write_str("status"),
            Field::Body => f.write_str("body"),
            Field::ResponseHeader(h) => write!(f, "response header {h}"),
            Field::UpstreamReached => f.write_str("upstream reached"),
            Field::UpstreamMethod => f.write_str("upstream method"),
            Field::UpstreamTarget => f.write_str("upstream target"),
            Field::UpstreamVersion => f.write_str("upstream version"),
            Field::UpstreamBody => f.write_str("upstream body"),
            Field::UpstreamHeader(h) => write!(f, "upstream header {h}"),
        }
    }
}

/// A field and the two values, rendered for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub field: Field,
    pub meshguard: String,
    pub envoy: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: meshguard {} | envoy {}",
            self.field,
            elide(&self.meshguard),
            elide(&self.envoy)
        )
    }
}

/// `text` cut to a readable length (tokens are long): the start, then how much was left out.
pub fn elide(text: &str) -> String {
    const KEEP: usize = 72;
    if text.len() <= KEEP + 16 {
        return text.to_string();
    }
    let mut cut = KEEP;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…({} bytes)", &text[..cut], text.len())
}

/// Every field where the two observations of `req` differ; empty when they agree.
pub fn compare(req: &Request, meshguard: &Observation, envoy: &Observation) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut push = |field: Field, m: String, e: String| {
        if m != e {
            out.push(Mismatch {
                field,
                meshguard: m,
                envoy: e,
            });
        }
    };
    match (&meshguard.answer, &envoy.answer) {
        (Answer::Response(m), Answer::Response(e)) => {
            push(Field::Status, m.status.to_string(), e.status.to_string());
            push(Field::Body, body_text(&m.body), body_text(&e.body));
            for h in COMPARED_RESPONSE_HEADERS {
                push(
                    Field::ResponseHeader(h),
                    header_text(m, h),
                    header_text(e, h),
                );
            }
        }
        (m, e) => {
            if std::mem::discriminant(m) != std::mem::discriminant(e) {
                push(Field::Answered, answer_kind(m), answer_kind(e));
            }
        }
    }
    push(
        Field::UpstreamReached,
        meshguard.upstream.len().to_string(),
        envoy.upstream.len().to_string(),
    );
    if let (Some(m), Some(e)) = (meshguard.upstream.first(), envoy.upstream.first()) {
        push(Field::UpstreamMethod, m.method.clone(), e.method.clone());
        push(Field::UpstreamTarget, m.target.clone(), e.target.clone());
        push(Field::UpstreamVersion, m.version.clone(), e.version.clone());
        push(Field::UpstreamBody, body_text(&m.body), body_text(&e.body));
        let client_sent_id = req
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("x-request-id"));
        let mh = upstream_headers(m, client_sent_id);
        let mut eh = upstream_headers(e, client_sent_id);
        if let Some(last) = eh.get_mut("x-forwarded-for").and_then(|v| v.last_mut()) {
            *last = with_last_xff_element(last, &req.source_ip.to_string());
        }
        let names: std::collections::BTreeSet<&String> = mh.keys().chain(eh.keys()).collect();
        for name in names {
            push(
                Field::UpstreamHeader(name.clone()),
                values_text(mh.get(name)),
                values_text(eh.get(name)),
            );
        }
    }
    out
}

fn answer_kind(a: &Answer) -> String {
    match a {
        Answer::Response(r) => format!("a response ({})", r.status),
        Answer::NoResponse(why) => format!("no response ({why})"),
    }
}

fn header_text(r: &Response, name: &str) -> String {
    let values: Vec<&str> = r
        .headers
        .iter()
        .chain(r.trailers.iter())
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect();
    if values.is_empty() {
        "(absent)".into()
    } else {
        format!("{values:?}")
    }
}

/// The upstream's headers by name, with the uncompared ones left out or reduced to presence.
fn upstream_headers(r: &Received, client_sent_id: bool) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &r.headers {
        if name.starts_with("x-envoy-") {
            continue;
        }
        let value = if name == "x-request-id" && !client_sent_id {
            "(generated)".to_string()
        } else {
            value.clone()
        };
        map.entry(name.clone()).or_default().push(value);
    }
    map
}

/// `value` with its last comma-separated element replaced by `peer`.
fn with_last_xff_element(value: &str, peer: &str) -> String {
    match value.rfind(',') {
        Some(i) => {
            let space = if value[i + 1..].starts_with(' ') {
                " "
            } else {
                ""
            };
            format!("{},{space}{peer}", &value[..i])
        }
        None => peer.to_string(),
    }
}

/// The values of one header joined with `,`, empty ones left out: Envoy drops an empty line
/// when it joins a repeated inline header (RFC 9110 §5.6.1: empty list elements do not count).
fn values_text(v: Option<&Vec<String>>) -> String {
    match v {
        None => "(absent)".into(),
        Some(v) => {
            let kept: Vec<&str> = v
                .iter()
                .map(String::as_str)
                .filter(|s| !s.is_empty())
                .collect();
            format!("{:?}", kept.join(","))
        }
    }
}

fn body_text(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}
