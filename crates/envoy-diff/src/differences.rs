//! The differences meshguard makes on purpose, as the harness recognises them.
//!
//! Each [`KnownDifference`] is one row of `docs/differences.md` (its `doc` names the row) with
//! a predicate that says whether it explains *all* the mismatches of one request. A request
//! whose mismatches no entry explains fails the run. Predicates are deliberately narrow: they
//! look at what meshguard answered (its own status string) and at the request or policy feature
//! that causes the difference, so that a new difference never hides behind an old one.

use meshguard_model::{PolicySet, Presence};

use crate::client::{Answer, Response};
use crate::compare::{Field, Mismatch, Observation};
use crate::scenario::{Protocol, Request};

/// Everything a predicate may look at.
#[derive(Debug)]
pub struct Case<'a> {
    pub policies: &'a PolicySet,
    pub request: &'a Request,
    pub meshguard: &'a Observation,
    pub envoy: &'a Observation,
    pub mismatches: &'a [Mismatch],
}

impl Case<'_> {
    fn meshguard_response(&self) -> Option<&Response> {
        match &self.meshguard.answer {
            Answer::Response(r) => Some(r),
            Answer::NoResponse(_) => None,
        }
    }

    /// meshguard answered `status` with exactly `body` (no body at all to a `HEAD`), and did
    /// not forward.
    fn meshguard_refused(&self, status: u16, body: &str) -> bool {
        let head = self.request.method.eq_ignore_ascii_case("HEAD");
        self.meshguard_response().is_some_and(|r| {
            r.status == status && (r.body == body.as_bytes() || (head && r.body.is_empty()))
        }) && self.meshguard.upstream.is_empty()
    }

    /// Only these fields differ.
    fn only(&self, fields: &[fn(&Field) -> bool]) -> bool {
        self.mismatches
            .iter()
            .all(|m| fields.iter().any(|f| f(&m.field)))
    }

    fn header_count(&self, name: &str) -> usize {
        self.request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }
}

/// One deliberate difference.
#[derive(Debug)]
pub struct KnownDifference {
    /// A short stable name, used in counts.
    pub id: &'static str,
    /// The row of `docs/differences.md` that documents it.
    pub doc: &'static str,
    pub applies: fn(&Case<'_>) -> bool,
}

/// The strings of meshguard's stricter token checks (`docs/differences.md`, JWT).
const STRICTER_TOKEN_BODIES: [&str; 6] = [
    "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
    "Jwt header is an invalid Base64url encoded",
    "Jwt payload is an invalid Base64url encoded",
    "Jwt signature is an invalid Base64url encoded",
    "Jwt header is an invalid JSON",
    "Jwt payload is an invalid JSON",
];

/// Every deliberate difference the harness knows.
pub static KNOWN: &[KnownDifference] = &[
    KnownDifference {
        id: "presence-required",
        doc: "JWT: `presence: REQUIRED`",
        applies: |c| {
            let required = c.policies.request_authentications.iter().any(|ra| {
                ra.spec
                    .jwt_rules
                    .iter()
                    .any(|r| r.presence == Some(Presence::Required))
            });
            required && c.meshguard_refused(401, "Jwt is missing")
        },
    },
    KnownDifference {
        id: "multiple-tokens",
        doc: "JWT: two `Authorization` headers, or two tokens joined in one value",
        applies: |c| c.meshguard_refused(401, "Found multiple Jwt tokens"),
    },
    KnownDifference {
        id: "stricter-token-parsing",
        doc: "JWT: empty segments, padding, duplicate JSON member names",
        applies: |c| {
            STRICTER_TOKEN_BODIES
                .iter()
                .any(|b| c.meshguard_refused(401, b))
                && !matches!(&c.envoy.answer, Answer::Response(e) if e.status == 401
                    && STRICTER_TOKEN_BODIES.iter().any(|b| e.body == b.as_bytes()))
        },
    },
    KnownDifference {
        id: "duplicate-host",
        doc: "Requests: two `Host` headers",
        applies: |c| {
            let hosts = c.header_count("host") + usize::from(c.request.host.is_some());
            hosts >= 2 && c.meshguard_refused(400, "Bad Request")
        },
    },
    KnownDifference {
        id: "h2-method-list",
        doc: "Requests: HTTP/2 `:method` outside Envoy's HTTP/1 method list",
        applies: |c| c.request.protocol == Protocol::H2c && c.meshguard_refused(400, "Bad Request"),
    },
    KnownDifference {
        id: "output-headers-sanitized",
        doc: "JWT: client-sent copies of `outputPayloadToHeader` / `outputClaimToHeaders` headers",
        applies: |c| {
            let outputs: Vec<String> = c
                .policies
                .request_authentications
                .iter()
                .flat_map(|ra| ra.spec.jwt_rules.iter())
                .flat_map(|r| {
                    std::iter::once(r.output_payload_to_header.to_ascii_lowercase()).chain(
                        r.output_claim_to_headers
                            .iter()
                            .map(|h| h.header.to_ascii_lowercase()),
                    )
                })
                .filter(|h| !h.is_empty())
                .collect();
            !c.mismatches.is_empty()
                && c.only(&[|f| matches!(f, Field::UpstreamHeader(_))])
                && c.mismatches.iter().all(|m| {
                    matches!(&m.field, Field::UpstreamHeader(h) if outputs.contains(h))
                        && m.meshguard == "(absent)"
                })
        },
    },
    KnownDifference {
        id: "nul-without-normalization",
        doc: "Requests: `%00` in the path with `pathNormalization: NONE`",
        applies: |c| {
            let target = c.request.target.to_ascii_lowercase();
            let path = target.split('?').next().unwrap_or("");
            path.contains("%00") && c.meshguard_refused(400, "")
        },
    },
    KnownDifference {
        id: "transfer-coding-not-chunked-last",
        doc: "Requests: a `Transfer-Encoding` whose last coding is not `chunked`",
        applies: |c| {
            let last_is_chunked = c
                .request
                .headers
                .iter()
                .rfind(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
                .and_then(|(_, v)| v.rsplit(',').next())
                .map(|v| v.trim().eq_ignore_ascii_case("chunked"));
            last_is_chunked == Some(false)
                && c.meshguard_refused(400, "")
                && matches!(&c.envoy.answer, Answer::Response(e) if e.status == 501)
        },
    },
    KnownDifference {
        id: "client-request-id-kept",
        doc: "Requests: a client's `x-request-id`",
        applies: |c| {
            let sent = c
                .request
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("x-request-id"))
                .map(|(_, v)| format!("{v:?}"));
            sent.is_some()
                && c.mismatches.iter().all(|m| {
                    m.field == Field::UpstreamHeader("x-request-id".into())
                        && Some(&m.meshguard) == sent.as_ref()
                })
        },
    },
    KnownDifference {
        id: "declined-upgrade-body",
        doc: "WebSocket and upgrades: a `2xx` other than `101` in answer to a WebSocket handshake",
        applies: |c| {
            let websocket = c.request.headers.iter().any(|(n, v)| {
                n.eq_ignore_ascii_case("upgrade") && v.trim().eq_ignore_ascii_case("websocket")
            });
            let (Answer::Response(m), Answer::Response(e)) = (&c.meshguard.answer, &c.envoy.answer)
            else {
                return false;
            };
            websocket
                && m.status == e.status
                && (200..300).contains(&m.status)
                && e.body.is_empty()
                && !c.meshguard.upstream.is_empty()
                && c.only(&[
                    |f| *f == Field::Body,
                    |f| *f == Field::ResponseHeader("content-type"),
                ])
        },
    },
    KnownDifference {
        id: "h2-missing-authority",
        doc: "Requests: HTTP/2 without `:authority` or `host`",
        applies: |c| {
            c.request.protocol == Protocol::H2c
                && c.request.host.is_none()
                && c.header_count("host") == 0
                && c.meshguard_refused(400, "")
                && matches!(c.envoy.answer, Answer::NoResponse(_))
        },
    },
    KnownDifference {
        id: "asterisk-form",
        doc: "Authorization: `OPTIONS *` / `GET *` (asterisk-form)",
        applies: |c| c.request.target == "*" && c.meshguard_refused(400, ""),
    },
    KnownDifference {
        id: "query-token-removal",
        doc: "JWT: a verified token's query parameter is removed, the other parameters are kept as sent",
        applies: |c| {
            let Some(mg) = c.meshguard.upstream.first() else {
                return false;
            };
            let sent_query = c.request.target.split_once('?').map(|(_, q)| q);
            let mg_query = mg.target.split_once('?').map(|(_, q)| q);
            // meshguard removed something from the query.
            if sent_query.is_none() || sent_query.map(strip_fragment) == mg_query {
                return false;
            }
            match c.envoy.upstream.first() {
                // Envoy decoded the remaining parameters and wrote them again: the same
                // parameters, spelled differently.
                Some(e) => {
                    c.only(&[|f| *f == Field::UpstreamTarget])
                        && mg.target.split('?').next() == e.target.split('?').next()
                        && query_pairs(mg_query)
                            == query_pairs(e.target.split_once('?').map(|(_, q)| q))
                }
                // A decoded character that a URL cannot hold raw (a space from `%20`): Envoy
                // then refuses its own rewritten path with 400.
                None => {
                    matches!(&c.envoy.answer, Answer::Response(e) if e.status == 400 && e.body.is_empty())
                        && mg_query.is_some_and(|q| {
                            query_pairs(Some(q)).iter().any(|(k, v)| {
                                k.bytes().chain(v.bytes()).any(|b| {
                                    b <= b' ' || b >= 0x7f || br#""<>`{}|\^#"#.contains(&b)
                                })
                            })
                        })
                }
            }
        },
    },
    KnownDifference {
        id: "joined-header-stricter",
        doc: "Authorization: a repeated header that Envoy joins into one value",
        applies: |c| {
            // Envoy forwarded the header as one joined line: the proof that it matched the
            // joined value, where meshguard also matched each value and denied.
            let joined_by_envoy = |name: &str| {
                c.envoy.upstream.first().is_some_and(|u| {
                    let v = u.values(name);
                    v.len() == 1 && v[0].contains(',')
                })
            };
            let conditioned = |name: &str| {
                let key = format!("request.headers[{name}]");
                c.policies.authorization_policies.iter().any(|p| {
                    p.spec.rules.iter().flatten().flatten().any(|r| {
                        r.when
                            .iter()
                            .flatten()
                            .flatten()
                            .any(|w| w.key.eq_ignore_ascii_case(&key))
                    })
                })
            };
            let repeated: Vec<String> = c
                .request
                .headers
                .iter()
                .map(|(n, _)| n.to_ascii_lowercase())
                .filter(|n| c.header_count(n) >= 2)
                .collect();
            repeated
                .iter()
                .any(|n| joined_by_envoy(n) && conditioned(n))
                && c.meshguard_refused(403, "RBAC: access denied")
        },
    },
    KnownDifference {
        id: "proxy-credentials-not-forwarded",
        doc: "Requests: `Proxy-Authorization`",
        applies: |c| {
            !c.mismatches.is_empty()
                && c.mismatches.iter().all(|m| {
                    m.field == Field::UpstreamHeader("proxy-authorization".into())
                        && m.meshguard == "(absent)"
                })
        },
    },
    KnownDifference {
        id: "remote-keys-unreachable",
        doc: "Remote keys (meshguard fetches `jwksUri` itself)",
        applies: |c| {
            let remote = c.policies.request_authentications.iter().any(|ra| {
                ra.spec
                    .jwt_rules
                    .iter()
                    .any(|r| r.jwks.is_empty() && !r.jwks_uri.is_empty())
            });
            remote && c.meshguard_refused(401, "Jwks remote fetch is failed")
        },
    },
];

fn strip_fragment(q: &str) -> &str {
    q.split('#').next().unwrap_or(q)
}

/// A query as decoded name/value pairs, `name` and `name=` alike, empty pieces left out.
fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.map(strip_fragment)
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && *p != "=")
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// `%XX` and `+` decoded; invalid escapes kept.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The deliberate difference that explains every mismatch of `case`, if one does.
pub fn explain(case: &Case<'_>) -> Option<&'static KnownDifference> {
    if case.mismatches.is_empty() {
        return None;
    }
    KNOWN.iter().find(|d| (d.applies)(case))
}
