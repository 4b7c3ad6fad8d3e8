//! Compiled value matchers and the request attributes they read.
//!
//! Owns: Istio's value forms (`*` presence, `*suffix`, `prefix*`, exact, path templates,
//! IP/CIDR, ports, JWT claim paths, request principals split at the last `/`) and how each
//! reads an attribute that may be absent (docs/semantics.md §3.8: positive matches false, negative true). Does not
//! own: which fields a rule has or how rules combine (see [`crate::authz`]).

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::path_template::PathTemplate;

/// What the authorization matchers see of one request. Built by the engine after path
/// normalization and JWT validation; borrowed, so building it copies nothing.
#[derive(Clone, Copy, Debug)]
pub struct RequestAttributes<'a> {
    pub method: &'a str,
    /// The normalized path without query or fragment.
    pub path: &'a str,
    /// `:authority` (HTTP/1 `Host`), port included when the client sent one.
    pub host: &'a str,
    pub headers: &'a HeaderMap,
    /// The direct peer (`source.ip`, `ipBlocks`).
    pub source_ip: Option<IpAddr>,
    /// The client address after `X-Forwarded-For` handling (`remote.ip`, `remoteIpBlocks`).
    pub remote_ip: Option<IpAddr>,
    pub destination_ip: Option<IpAddr>,
    /// The port meshguard listens on (`ports`, `destination.port`).
    pub destination_port: Option<u16>,
    pub sni: Option<&'a str>,
    /// The mTLS peer's URI SANs (`spiffe://td/ns/x/sa/y`); `None` over plaintext.
    pub peer_identity: Option<PeerUris<'a>>,
    /// The verified JWT payload (with space-delimited claims already split), if any.
    pub jwt: Option<&'a Map<String, Value>>,
}

/// The URI SANs of a verified peer certificate. Identity fields match when any of them does,
/// as Envoy's RBAC `authenticated.principal_name` (what istiod makes of `principals`,
/// `namespaces`, `source.*`) tries every URI SAN of the peer.
#[derive(Clone, Copy, Debug)]
pub enum PeerUris<'a> {
    /// One identity (`meshguard check --peer-principal`).
    One(&'a str),
    /// Every URI SAN of the certificate, in its order.
    Many(&'a [std::sync::Arc<str>]),
}

impl<'a> PeerUris<'a> {
    /// The first URI SAN (the one `x-forwarded-client-cert` and the access log show).
    pub fn first(&self) -> Option<&'a str> {
        self.iter().next()
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let (one, many): (Option<&'a str>, &'a [std::sync::Arc<str>]) = match *self {
            PeerUris::One(s) => (Some(s), &[]),
            PeerUris::Many(m) => (None, m),
        };
        one.into_iter().chain(many.iter().map(|s| &**s))
    }
}

impl std::fmt::Display for PeerUris<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.iter().collect::<Vec<_>>().join(", "))
    }
}

/// Istio's string forms (`authz/matcher` `StringMatcherWithPrefix`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringMatch {
    /// `*`: the attribute is present (for values read from the JWT: a non-empty string).
    Presence,
    Exact(String),
    Prefix(String),
    Suffix(String),
}

impl StringMatch {
    /// Parses an Istio value. `*` alone is presence; one leading `*` is a suffix match, one
    /// trailing `*` a prefix match; any other `*` is literal. With `ignore_case` the stored
    /// text is lowercased (hosts).
    pub fn parse(v: &str, ignore_case: bool) -> StringMatch {
        let v = if ignore_case {
            v.to_ascii_lowercase()
        } else {
            v.to_string()
        };
        if v == "*" {
            StringMatch::Presence
        } else if let Some(s) = v.strip_prefix('*') {
            StringMatch::Suffix(s.to_string())
        } else if let Some(p) = v.strip_suffix('*') {
            StringMatch::Prefix(p.to_string())
        } else {
            StringMatch::Exact(v)
        }
    }

    /// Matches a present value. `Presence` accepts anything, even empty (header semantics).
    pub fn matches(&self, s: &str) -> bool {
        self.matches_bytes(s.as_bytes())
    }

    /// Matches raw bytes, as Envoy compares header values: the policy's UTF-8 text against the
    /// bytes received, whether or not they are UTF-8 (`header-prefix-*` matches
    /// `header-prefix-x\xE9`). `Presence` accepts anything, even empty.
    pub fn matches_bytes(&self, s: &[u8]) -> bool {
        match self {
            StringMatch::Presence => true,
            StringMatch::Exact(e) => s == e.as_bytes(),
            StringMatch::Prefix(p) => s.starts_with(p.as_bytes()),
            StringMatch::Suffix(x) => s.ends_with(x.as_bytes()),
        }
    }

    /// Matches like Envoy's metadata string matcher, where `*` became the regex `.+`.
    fn matches_non_empty(&self, s: &str) -> bool {
        match self {
            StringMatch::Presence => !s.is_empty(),
            other => other.matches(s),
        }
    }

    fn matches_ignore_case(&self, s: &str) -> bool {
        match self {
            StringMatch::Presence => true,
            StringMatch::Exact(e) => s.eq_ignore_ascii_case(e),
            StringMatch::Prefix(p) => s
                .as_bytes()
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes())),
            StringMatch::Suffix(x) => s
                .len()
                .checked_sub(x.len())
                .and_then(|at| s.as_bytes().get(at..))
                .is_some_and(|tail| tail.eq_ignore_ascii_case(x.as_bytes())),
        }
    }
}

/// `hosts`: case-insensitive, port included (`example.com` does not match `example.com:80`).
#[derive(Clone, Debug)]
pub struct HostMatch(pub StringMatch);

impl HostMatch {
    pub fn parse(v: &str) -> Self {
        HostMatch(StringMatch::parse(v, true))
    }
    pub fn matches(&self, req: &RequestAttributes<'_>) -> bool {
        self.0.matches_ignore_case(req.host)
    }
}

/// `methods`: case-sensitive; `*` matches any method.
#[derive(Clone, Debug)]
pub struct MethodMatch(pub StringMatch);

impl MethodMatch {
    pub fn matches(&self, req: &RequestAttributes<'_>) -> bool {
        self.0.matches(req.method)
    }
}

/// `paths`: the normalized path without query; `*` is any non-empty path; templates supported.
#[derive(Clone, Debug)]
pub enum PathMatch {
    String(StringMatch),
    Template(PathTemplate),
}

impl PathMatch {
    pub fn parse(v: &str) -> Result<Self, String> {
        if PathTemplate::is_template(v) {
            PathTemplate::parse(v).map(PathMatch::Template)
        } else {
            Ok(PathMatch::String(StringMatch::parse(v, false)))
        }
    }
    pub fn matches(&self, req: &RequestAttributes<'_>) -> bool {
        match self {
            PathMatch::String(m) => m.matches_non_empty(req.path),
            PathMatch::Template(t) => t.matches(req.path),
        }
    }
}

/// `ports`, `destination.port`: the listener port, exact.
#[derive(Clone, Debug)]
pub struct PortMatch(pub u16);

impl PortMatch {
    pub fn parse(v: &str) -> Result<Self, String> {
        v.parse::<u16>()
            .map(PortMatch)
            .map_err(|_| format!("bad port ({v}): must be an integer between 0 and 65535"))
    }
    pub fn matches(&self, port: Option<u16>) -> bool {
        port == Some(self.0)
    }
}

/// `ipBlocks`, `remoteIpBlocks`, `source.ip`, `remote.ip`, `destination.ip`.
#[derive(Clone, Debug)]
pub struct IpMatch(pub IpNet);

impl IpMatch {
    pub fn parse(v: &str) -> Result<Self, String> {
        if let Some((addr, len)) = v.split_once('/') {
            // Say which half is wrong: `10.0.0.0/33` has a fine address and a bad length.
            let Ok(ip) = addr.parse::<IpAddr>() else {
                return Err(format!(
                    "bad CIDR range ({v}): {addr:?} is not an IP address"
                ));
            };
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let version = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            len.parse::<u8>()
                .ok()
                .filter(|l| {
                    // Digits only, no leading zero (as Go's netip.ParsePrefix).
                    *l <= max
                        && len.bytes().all(|b| b.is_ascii_digit())
                        && (len == "0" || !len.starts_with('0'))
                })
                .and_then(|l| IpNet::new(ip, l).ok())
                .map(|n| IpMatch(n.trunc()))
                .ok_or_else(|| {
                    format!(
                        "bad CIDR range ({v}): the prefix length {len:?} must be an integer from 0 to {max} for an {version} address"
                    )
                })
        } else {
            v.parse::<IpAddr>()
                .map(|ip| IpMatch(IpNet::from(ip)))
                .map_err(|_| format!("bad IP address ({v})"))
        }
    }
    pub fn matches(&self, ip: Option<IpAddr>) -> bool {
        ip.is_some_and(|ip| self.0.contains(&ip))
    }
}

/// `request.headers[name]`: each value of a repeated header is matched on its own
/// (CVE-2026-26308); `*` means present, even with an empty value. Values are compared as bytes.
#[derive(Clone, Debug)]
pub struct HeaderMatch {
    pub name: http::HeaderName,
    pub value: StringMatch,
}

impl HeaderMatch {
    pub fn matches(&self, req: &RequestAttributes<'_>) -> bool {
        req.headers
            .get_all(&self.name)
            .iter()
            // Header values are bytes; UTF-8 values compare with the policy's UTF-8 text,
            // anything else can only satisfy presence.
            // Header values are bytes and are compared as bytes, UTF-8 or not, as Envoy does:
            // a value that is not UTF-8 must not slip past a prefix, suffix or exact match.
            .any(|v| self.value.matches_bytes(v.as_bytes()))
    }
}

impl HeaderMatch {
    /// The header's values joined with `,` into one, as Envoy stores a repeated header it
    /// keeps inline ([`envoy_joins_repeated`]); `false` when absent.
    /// Matches the header's values joined as Envoy stores a repeated inline header
    /// ([`joined_values`], made once per field by the caller); `None` is an absent header.
    pub fn matches_joined_value(&self, joined: Option<&[u8]>) -> bool {
        joined.is_some_and(|j| self.value.matches_bytes(j))
    }
}

/// The values of `name` as Envoy stores a repeated inline header: joined with `,`, empty
/// lines left out (Envoy appends a value to an empty one without a separator). `None` when
/// the header is absent.
pub fn joined_values(headers: &http::HeaderMap, name: &http::HeaderName) -> Option<Vec<u8>> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let mut joined = Vec::new();
    for v in values.filter(|v| !v.is_empty()) {
        if !joined.is_empty() {
            joined.push(b',');
        }
        joined.extend_from_slice(v.as_bytes());
    }
    Some(joined)
}

/// The request headers Envoy 1.40 keeps "inline": a repeated one is stored as a single value,
/// the values joined with `,`, so its RBAC header matcher sees `a,b` where it sees `a` and `b`
/// for any other header. Measured with the differential tests (two lines of each header sent
/// through Envoy, one joined line received; `docs/differential-testing.md`), plus Envoy's
/// own list of inline request headers.
pub fn envoy_joins_repeated(name: &http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "accept"
            | "accept-encoding"
            | "access-control-request-headers"
            | "access-control-request-method"
            | "authorization"
            | "cache-control"
            | "content-encoding"
            | "content-type"
            | "expect"
            | "grpc-accept-encoding"
            | "grpc-timeout"
            | "if-match"
            | "if-none-match"
            | "origin"
            | "pragma"
            | "referer"
            | "user-agent"
            | "via"
            | "x-client-trace-id"
            | "x-forwarded-client-cert"
            | "x-forwarded-for"
            | "x-forwarded-host"
            | "x-forwarded-proto"
            | "x-request-id"
    )
}

/// `request.auth.claims[a][b]`, `request.auth.audiences`, `request.auth.presenter`: a string
/// claim matches, or a list with a string element that matches; numbers, booleans and objects
/// never match; every intermediate step must be an object.
#[derive(Clone, Debug)]
pub struct ClaimMatch {
    pub path: Vec<String>,
    pub value: StringMatch,
}

impl ClaimMatch {
    pub fn matches(&self, req: &RequestAttributes<'_>) -> bool {
        let Some(payload) = req.jwt else { return false };
        let Some(v) = claim_at(payload, &self.path) else {
            return false;
        };
        match v {
            Value::String(s) => self.value.matches_non_empty(s),
            Value::Array(items) => items
                .iter()
                .any(|i| i.as_str().is_some_and(|s| self.value.matches_non_empty(s))),
            _ => false,
        }
    }
}

/// Looks up a claim path; intermediates must be objects.
pub fn claim_at<'v>(payload: &'v Map<String, Value>, path: &[String]) -> Option<&'v Value> {
    let (first, rest) = path.split_first()?;
    let mut cur = payload.get(first)?;
    for key in rest {
        cur = cur.as_object()?.get(key)?;
    }
    Some(cur)
}

/// Splits a `request.auth.claims[...]` suffix as Istio does: `[a][b]` is `["a","b"]`; anything
/// that is not a clean run of `[..]` groups is one key with the outer brackets removed.
pub fn parse_claim_path(brackets: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = brackets;
    while let Some(r) = rest.strip_prefix('[') {
        match r.split_once(']') {
            Some((name, after)) if !name.contains('[') => {
                out.push(name.to_string());
                rest = after;
            }
            _ => break,
        }
    }
    if rest.is_empty() && !out.is_empty() {
        return out;
    }
    let inner = brackets.strip_prefix('[').unwrap_or(brackets);
    let inner = inner.strip_suffix(']').unwrap_or(inner);
    vec![inner.to_string()]
}

/// `requestPrincipals`, `request.auth.principal`: the value is split at the last `/` into an
/// issuer and a subject matcher, both read from the verified payload (docs/semantics.md §3.7).
#[derive(Clone, Debug)]
pub struct PrincipalMatch {
    pub iss: StringMatch,
    pub sub: StringMatch,
}

impl PrincipalMatch {
    pub fn parse(v: &str) -> Self {
        if v == "*" {
            return PrincipalMatch {
                iss: StringMatch::Presence,
                sub: StringMatch::Presence,
            };
        }
        let split = v.rsplit_once('/');
        if let Some(rest) = v.strip_prefix('*') {
            return match split {
                Some(("*", sub)) => PrincipalMatch {
                    iss: StringMatch::Presence,
                    sub: StringMatch::Exact(sub.to_string()),
                },
                Some((iss, sub)) => PrincipalMatch {
                    iss: StringMatch::Suffix(iss.strip_prefix('*').unwrap_or(iss).to_string()),
                    sub: StringMatch::Exact(sub.to_string()),
                },
                None => PrincipalMatch {
                    iss: StringMatch::Presence,
                    sub: StringMatch::Suffix(rest.to_string()),
                },
            };
        }
        if let Some(rest) = v.strip_suffix('*') {
            return match split {
                Some((iss, "*")) => PrincipalMatch {
                    iss: StringMatch::Exact(iss.to_string()),
                    sub: StringMatch::Presence,
                },
                Some((iss, sub)) => PrincipalMatch {
                    iss: StringMatch::Exact(iss.to_string()),
                    sub: StringMatch::Prefix(sub.strip_suffix('*').unwrap_or(sub).to_string()),
                },
                None => PrincipalMatch {
                    iss: StringMatch::Prefix(rest.to_string()),
                    sub: StringMatch::Presence,
                },
            };
        }
        match split {
            Some((iss, sub)) => PrincipalMatch {
                iss: StringMatch::Exact(iss.to_string()),
                sub: StringMatch::Exact(sub.to_string()),
            },
            None => PrincipalMatch {
                iss: StringMatch::Exact(v.to_string()),
                sub: StringMatch::Exact(String::new()),
            },
        }
    }

    pub fn matches(&self, req: &RequestAttributes<'_>) -> bool {
        let Some(payload) = req.jwt else { return false };
        let field = |name: &str, m: &StringMatch| match payload.get(name) {
            Some(Value::String(s)) => m.matches_non_empty(s),
            _ => false,
        };
        field("iss", &self.iss) && field("sub", &self.sub)
    }

    /// The `iss/sub` this matcher would accept verbatim, for "did you configure this issuer"
    /// checks: `None` when the issuer part is a pattern.
    pub fn exact_issuer(&self) -> Option<&str> {
        match &self.iss {
            StringMatch::Exact(s) => Some(s),
            _ => None,
        }
    }
}

/// The mTLS identity fields. Without a peer certificate they never match (docs/semantics.md §3.4), which is what
/// plaintext traffic gets; with one they read the SPIFFE id `spiffe://<td>/ns/<ns>/sa/<sa>`.
#[derive(Clone, Debug)]
pub enum IdentityMatch {
    /// `principals`, `source.principal`: matched against the id without `spiffe://`.
    Principal(StringMatch),
    /// `namespaces`, `source.namespace`.
    Namespace(StringMatch),
    /// `serviceAccounts`, `source.serviceAccount`: `ns/sa` (or `sa` in the policy's namespace).
    ServiceAccount { namespace: String, name: String },
    /// `trustDomains`, `source.trustDomain`.
    TrustDomain(StringMatch),
}

impl IdentityMatch {
    /// Whether any URI SAN of the peer matches; never over plaintext.
    pub fn matches(&self, req: &RequestAttributes<'_>) -> bool {
        req.peer_identity
            .is_some_and(|uris| uris.iter().any(|uri| self.matches_uri(uri)))
    }

    fn matches_uri(&self, uri: &str) -> bool {
        let Some(id) = uri.strip_prefix("spiffe://") else {
            return false;
        };
        let mut parts = id.split('/');
        let td = parts.next().unwrap_or("");
        let rest: Vec<&str> = parts.collect();
        let after = |key: &str| {
            rest.windows(2).find_map(|w| match w {
                [k, v] if *k == key => Some(*v),
                _ => None,
            })
        };
        let (ns, sa) = (after("ns"), after("sa"));
        match self {
            IdentityMatch::Principal(m) => m.matches_non_empty(id),
            // Istio's regex `.*/ns/<ns>/.*` over the whole ID: any `ns` segment followed by
            // the namespace and at least one more segment, not only the first.
            IdentityMatch::Namespace(m) => rest
                .windows(3)
                .any(|w| matches!(w, [k, v, _] if *k == "ns" && m.matches(v))),
            IdentityMatch::ServiceAccount { namespace, name } => {
                ns == Some(namespace.as_str()) && sa == Some(name.as_str())
            }
            IdentityMatch::TrustDomain(m) => m.matches_non_empty(td),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_forms() {
        assert_eq!(StringMatch::parse("*", false), StringMatch::Presence);
        assert_eq!(
            StringMatch::parse("*.com", false),
            StringMatch::Suffix(".com".into())
        );
        assert_eq!(
            StringMatch::parse("/api/*", false),
            StringMatch::Prefix("/api/".into())
        );
        assert_eq!(
            StringMatch::parse("a*b", false),
            StringMatch::Exact("a*b".into())
        );
        assert_eq!(
            StringMatch::parse("**", false),
            StringMatch::Suffix("*".into())
        );
        assert_eq!(
            StringMatch::parse("Example.COM", true),
            StringMatch::Exact("example.com".into())
        );
    }

    #[test]
    fn principal_split_at_last_slash() {
        let cases = [
            ("*", StringMatch::Presence, StringMatch::Presence),
            (
                "*/bob",
                StringMatch::Presence,
                StringMatch::Exact("bob".into()),
            ),
            (
                "*.example.com/bob",
                StringMatch::Suffix(".example.com".into()),
                StringMatch::Exact("bob".into()),
            ),
            (
                "*bob",
                StringMatch::Presence,
                StringMatch::Suffix("bob".into()),
            ),
            (
                "https://a.com/*",
                StringMatch::Exact("https://a.com".into()),
                StringMatch::Presence,
            ),
            (
                "iss/pre*",
                StringMatch::Exact("iss".into()),
                StringMatch::Prefix("pre".into()),
            ),
            (
                "foo*",
                StringMatch::Prefix("foo".into()),
                StringMatch::Presence,
            ),
            (
                "https://iss/a/b",
                StringMatch::Exact("https://iss/a".into()),
                StringMatch::Exact("b".into()),
            ),
            (
                "alice",
                StringMatch::Exact("alice".into()),
                StringMatch::Exact(String::new()),
            ),
        ];
        for (v, iss, sub) in cases {
            let m = PrincipalMatch::parse(v);
            assert_eq!((m.iss, m.sub), (iss, sub), "{v}");
        }
    }

    #[test]
    fn claim_paths() {
        assert_eq!(parse_claim_path("[groups]"), vec!["groups"]);
        assert_eq!(parse_claim_path("[nested][key1]"), vec!["nested", "key1"]);
        assert_eq!(parse_claim_path("[foo.com/name]"), vec!["foo.com/name"]);
        assert_eq!(parse_claim_path("[a[b]"), vec!["a[b"]);
    }

    /// Istio matches `namespaces` with the regex `.*/ns/<ns>/.*` over the whole ID: any `ns`
    /// segment followed by the namespace and one more segment.
    #[test]
    fn namespaces_match_any_ns_segment_as_istios_regex() {
        let headers = http::HeaderMap::new();
        let req = |id: &'static str| RequestAttributes {
            method: "GET",
            path: "/",
            host: "h",
            headers: &headers,
            source_ip: None,
            remote_ip: None,
            destination_ip: None,
            destination_port: None,
            sni: None,
            peer_identity: Some(PeerUris::One(id)),
            jwt: None,
        };
        let ns = |v: &str| IdentityMatch::Namespace(StringMatch::parse(v, false));
        assert!(ns("foo").matches(&req("spiffe://td/ns/foo/sa/x")));
        assert!(ns("bar").matches(&req("spiffe://td/ns/foo/sa/x/ns/bar/y")));
        // The namespace must be followed by another segment.
        assert!(!ns("foo").matches(&req("spiffe://td/ns/foo")));
        assert!(!ns("sa").matches(&req("spiffe://td/ns/foo/sa/x")));
    }

    #[test]
    fn identity_fields_match_any_uri_san() {
        let headers = http::HeaderMap::new();
        let sans: Vec<std::sync::Arc<str>> = vec![
            "spiffe://td/ns/baz/sa/legacy".into(),
            "spiffe://td/ns/bar/sa/sleep".into(),
        ];
        let req = RequestAttributes {
            method: "GET",
            path: "/",
            host: "h",
            headers: &headers,
            source_ip: None,
            remote_ip: None,
            destination_ip: None,
            destination_port: None,
            sni: None,
            peer_identity: Some(PeerUris::Many(&sans)),
            jwt: None,
        };
        let principal = |v: &str| IdentityMatch::Principal(StringMatch::parse(v, false));
        assert!(principal("td/ns/bar/sa/sleep").matches(&req));
        assert!(principal("td/ns/baz/sa/legacy").matches(&req));
        assert!(!principal("td/ns/qux/sa/sleep").matches(&req));
        assert!(IdentityMatch::Namespace(StringMatch::parse("bar", false)).matches(&req));
        let none = RequestAttributes {
            peer_identity: Some(PeerUris::Many(&[])),
            ..req
        };
        assert!(!principal("*").matches(&none));
        assert_eq!(
            PeerUris::Many(&sans).to_string(),
            "spiffe://td/ns/baz/sa/legacy, spiffe://td/ns/bar/sa/sleep"
        );
    }

    #[test]
    fn header_values_are_matched_one_by_one_and_as_bytes() {
        let mut headers = HeaderMap::new();
        headers.append("x-role", http::HeaderValue::from_static("user"));
        headers.append(
            "x-role",
            http::HeaderValue::from_bytes("adminé".as_bytes()).unwrap(),
        );
        headers.append(
            "x-bin",
            http::HeaderValue::from_bytes(&[0xff, 0xfe]).unwrap(),
        );
        let req = RequestAttributes {
            method: "GET",
            path: "/",
            host: "h",
            headers: &headers,
            source_ip: None,
            remote_ip: None,
            destination_ip: None,
            destination_port: None,
            sni: None,
            peer_identity: None,
            jwt: None,
        };
        let m = |name: &'static str, v: &str| HeaderMatch {
            name: http::HeaderName::from_static(name),
            value: StringMatch::parse(v, false),
        };
        assert!(m("x-role", "adminé").matches(&req));
        assert!(m("x-role", "user").matches(&req));
        assert!(!m("x-role", "user,adminé").matches(&req));
        assert!(m("x-bin", "*").matches(&req));
        assert!(!m("x-bin", "\u{fffd}*").matches(&req));
        assert!(!m("x-role", "admin\u{e9}x").matches(&req));
        assert!(!m("x-none", "*").matches(&req));
    }

    #[test]
    fn ip_forms() {
        let m = IpMatch::parse("10.0.0.0/8").unwrap();
        assert!(m.matches(Some("10.1.2.3".parse().unwrap())));
        assert!(!m.matches(Some("11.1.2.3".parse().unwrap())));
        assert!(!m.matches(None));
        assert!(
            IpMatch::parse("1.2.3.4")
                .unwrap()
                .matches(Some("1.2.3.4".parse().unwrap()))
        );
        assert!(IpMatch::parse("1.2.3.400").is_err());
        assert!(IpMatch::parse("1.2.3.4/40").is_err());
        assert_eq!(
            IpMatch::parse("10.0.0.0/33").unwrap_err(),
            "bad CIDR range (10.0.0.0/33): the prefix length \"33\" must be an integer from 0 to 32 for an IPv4 address"
        );
        assert!(
            IpMatch::parse("::1/129")
                .unwrap_err()
                .ends_with("must be an integer from 0 to 128 for an IPv6 address")
        );
        assert!(IpMatch::parse("::1/128").is_ok());
        assert!(IpMatch::parse("10.0.0.0/+8").is_err());
        assert!(IpMatch::parse("10.0.0.0/").is_err());
        assert!(IpMatch::parse("10.0.0.0/08").is_err());
        assert!(IpMatch::parse("10.0.0.0/0").is_ok());
        assert_eq!(
            IpMatch::parse("10.0.0.300/8").unwrap_err(),
            "bad CIDR range (10.0.0.300/8): \"10.0.0.300\" is not an IP address"
        );
        assert!(PortMatch::parse("70000").is_err());
    }
}
