//! Random scenarios from a seed: policies over every field and `when` key, and requests aimed
//! at each value and just beside it.
//!
//! [`scenario`] is the entry point; [`generate`] also returns which token kinds, token
//! locations and request variants each request carries, so that tests can count coverage.
//! Everything is drawn from one SplitMix64 stream seeded with the seed: a seed always gives the
//! same scenario. Only tokens depend on the clock: they are minted with times relative to `now`
//! (and are byte for byte the same for the same `now`: RSASSA-PKCS1-v1_5 is deterministic).
//!
//! A scenario holds:
//! * 0–2 RequestAuthentications with inline keys ([`DEMO_JWKS`]), each rule with some of
//!   `audiences`, `fromHeaders` (with and without a prefix), `fromParams`, `fromCookies`,
//!   `outputPayloadToHeader`, `outputClaimToHeaders` (dotted claims too),
//!   `forwardOriginalToken` and `spaceDelimitedClaims`; selectors that match the workload, do
//!   not, are empty or absent; in the workload's namespace, the root namespace or another one.
//! * 1–4 AuthorizationPolicies: ALLOW, DENY, AUDIT and (rarely) CUSTOM with the unknown
//!   provider `unknown-ext`; the `istio.io/dry-run` annotation; `rules` absent, `[]`, `[{}]` or
//!   1–3 rules with `from`, `to` and `when` over every field of `Source` and `Operation`, in
//!   both forms, and every condition key Istio accepts.
//! * 10–30 requests. Most are aimed at one rule: every positive field of it is satisfied, then
//!   one value is bent ([`Variant`]): case, trailing slash, `%2F`, `%5C`, `//`, `/./`, `..`,
//!   query, fragment, wildcard edges, repeated headers, ports on hosts, lowercase methods,
//!   addresses at and beside CIDR edges, `X-Forwarded-For` positions, claims in lists, missing
//!   or of the wrong type. Others probe tokens ([`TokenKind`] at a [`TokenLocation`]), or are
//!   free requests. Some go over h2c.
//!
//! Everything written is what Istio's validation accepts (a rejected resource tests nothing);
//! `tests/generate.rs` loads and compiles 500 seeds with meshguard. Requests keep to what both
//! proxies can be asked: sources in `127.0.0.0/8`, methods from Envoy's list (plus lowercase
//! ones, which both refuse), `destination.ip` ranges that hold both `127.0.0.1` and
//! `127.0.0.2` or neither.
//!
//! This module does not run anything and predicts no answer: the two proxies are each other's
//! oracle.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use meshguard_jwt::Algorithm;
use serde_json::{Map, Value, json};

use crate::scenario::{
    MeshOptions, PORT_PLACEHOLDER, PathNormalization, Protocol, Request, Scenario, WorkloadSpec,
};
use crate::tokens::{self, DEMO_ISSUER, DEMO_JWKS};

/// The scenario for `seed`: the same seed always gives the same policies and requests (tokens
/// are minted afresh, with times relative to now).
pub fn scenario(seed: u64) -> Scenario {
    generate(seed, tokens::now()).scenario
}

/// `count` scenarios from `first_seed` on.
pub fn scenarios(first_seed: u64, count: u64) -> Vec<Scenario> {
    let now = tokens::now();
    (0..count)
        .map(|i| generate(first_seed.wrapping_add(i), now).scenario)
        .collect()
}

/// A scenario and what its requests carry.
#[derive(Clone, Debug)]
pub struct Generated {
    pub scenario: Scenario,
    pub tokens: TokenUses,
    pub variants: VariantUses,
}

/// Every token sent: (request index, kind, location).
pub type TokenUses = Vec<(usize, TokenKind, TokenLocation)>;
/// Every variant a request was bent by: (request index, variant).
pub type VariantUses = Vec<(usize, Variant)>;

/// The scenario for `seed`, tokens minted as if the time were `now` (seconds since the epoch).
/// The same `(seed, now)` gives the same scenario, tokens included.
pub fn generate(seed: u64, now: i64) -> Generated {
    Gen::new(seed, now).run()
}

/// Enums with a list of every variant and a short description.
macro_rules! listed {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $v,)* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s,)* }
            }
        }
    };
}

listed! {
    /// What a token sent by a request is.
    pub enum TokenKind {
        /// Verifies (its claims may be aimed at a policy value).
        Valid => "valid",
        /// `exp` an hour ago, far beyond the 60 s skew.
        Expired => "expired",
        /// `nbf` in an hour.
        NotYetValid => "not yet valid",
        /// No `exp` at all (never expires).
        NoExpiry => "without exp",
        /// `aud` that no rule lists.
        WrongAudience => "wrong audience",
        /// `iss` that no rule has.
        WrongIssuer => "wrong issuer",
        /// No `sub`.
        MissingSub => "without sub",
        /// `sub` with a `/` in it.
        SlashSub => "sub with a slash",
        /// `groups` and `aud` as lists.
        ListClaims => "list claims",
        /// `scope`, `permission` and custom claims as space-separated strings.
        SpaceDelimitedScope => "space-delimited claims",
        /// Nested objects (`nested.key1`, `nested.inner.key2`).
        NestedClaims => "nested claims",
        /// RS384 or RS512 with the same key.
        OtherAlgorithm => "other algorithm",
        /// A `kid` that the keys do not have.
        UnknownKid => "unknown kid",
        /// One signature character changed.
        BadSignature => "bad signature",
        /// Not a well-formed token.
        Garbled => "garbled",
    }
}

listed! {
    /// Where a token was sent.
    pub enum TokenLocation {
        /// `Authorization: Bearer`, read by a rule.
        AuthorizationBearer => "authorization bearer",
        /// Another header with a non-empty prefix, read by a rule.
        PrefixedHeader => "prefixed header",
        /// A header read with an empty prefix.
        UnprefixedHeader => "unprefixed header",
        /// A query parameter read by a rule.
        QueryParam => "query parameter",
        /// A cookie read by a rule.
        Cookie => "cookie",
        /// A header, parameter or cookie that no rule reads.
        NotRead => "not read",
    }
}

listed! {
    /// How a request was bent away from (or onto) a value.
    pub enum Variant {
        PathExact => "path exact",
        PathCase => "path case",
        PathTrailingSlash => "path trailing slash",
        PathEncodedSlashUpper => "path %2F",
        PathEncodedSlashLower => "path %2f",
        PathEncodedBackslash => "path %5C",
        PathBackslash => "path backslash",
        PathDoubleSlash => "path //",
        PathDotSegment => "path /./",
        PathDotDot => "path ..",
        PathEncodedDotDot => "path %2e%2e",
        PathEncodedUnreserved => "path %-encoded letter",
        PathQuery => "path with query",
        PathFragment => "path with fragment",
        PathEdge => "path wildcard edge",
        PathSemicolon => "path ;param",
        PathNul => "path %00",
        HostExact => "host exact",
        HostCase => "host case",
        HostWithPort => "host with port",
        HostWithoutPort => "host without port",
        HostOtherPort => "host other port",
        HostTrailingDot => "host trailing dot",
        HostEdge => "host wildcard edge",
        HostAbsent => "no host",
        MethodExact => "method exact",
        MethodLowercase => "method lowercase",
        MethodOther => "method other",
        HeaderExact => "header exact",
        HeaderValueCase => "header value case",
        HeaderNameCase => "header name case",
        HeaderRepeatedBenignFirst => "header repeated, benign first",
        HeaderRepeatedMatchedFirst => "header repeated, matched first",
        HeaderRepeatedTwice => "header repeated twice",
        HeaderCommaJoined => "header comma-joined",
        HeaderAbsent => "header absent",
        HeaderEmpty => "header empty",
        HeaderEdge => "header wildcard edge",
        IpInside => "address inside",
        IpFirst => "address first",
        IpLast => "address last",
        IpBelow => "address below",
        IpAbove => "address above",
        XffSingle => "x-forwarded-for single",
        XffFirstOfTwo => "x-forwarded-for first of two",
        XffLastOfTwo => "x-forwarded-for last of two",
        XffMiddleOfThree => "x-forwarded-for middle of three",
        XffAbsent => "x-forwarded-for absent",
        PrincipalExact => "principal exact",
        PrincipalSubCase => "principal sub case",
        PrincipalMissingSub => "principal without sub",
        PrincipalSlashSub => "principal sub with slash",
        PrincipalOtherIssuer => "principal other issuer",
        PrincipalEdge => "principal wildcard edge",
        ClaimExact => "claim exact",
        ClaimInList => "claim in a list",
        ClaimCase => "claim case",
        ClaimMissing => "claim missing",
        ClaimNotString => "claim not a string",
        ClaimSpaceJoined => "claim space-joined",
        ClaimParentList => "claim under a list",
        ClaimEdge => "claim wildcard edge",
        TokenTwice => "two tokens",
        TokenAfterOtherCredential => "token after another credential",
        TokenLowercasePrefix => "token with lowercase prefix",
        CorsPreflight => "CORS preflight",
        SpoofedOutputHeader => "spoofed output header",
    }
}

// ---------------------------------------------------------------------------------------------
// Randomness

/// SplitMix64: small, fast, good enough, and the same everywhere.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    fn pick_s(&mut self, xs: &[&str]) -> String {
        (*self.pick(xs)).to_string()
    }

    fn weighted<T: Copy>(&mut self, xs: &[(u64, T)]) -> T {
        let total: u64 = xs.iter().map(|x| x.0).sum();
        let mut r = self.next_u64() % total.max(1);
        for &(w, t) in xs {
            if r < w {
                return t;
            }
            r -= w;
        }
        xs[xs.len() - 1].1
    }

    /// `lo..=hi` distinct items of `xs`, in their order in `xs`.
    fn subset<T: Clone>(&mut self, xs: &[T], lo: usize, hi: usize) -> Vec<T> {
        let n = self.range(lo.min(xs.len()), hi.min(xs.len()));
        let mut idx: Vec<usize> = (0..xs.len()).collect();
        for i in 0..n {
            let j = i + self.below(xs.len() - i);
            idx.swap(i, j);
        }
        let mut chosen = idx[..n].to_vec();
        chosen.sort_unstable();
        chosen.into_iter().map(|i| xs[i].clone()).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// YAML

/// A YAML node, built as JSON and written by the YAML library ([`to_yaml`]).
type Y = Value;

fn ys(v: impl Into<String>) -> Y {
    Value::String(v.into())
}

fn ylist(vs: &[String]) -> Y {
    Value::Array(vs.iter().map(|v| ys(v.as_str())).collect())
}

fn ymap(entries: Vec<(&str, Y)>) -> Y {
    yobj(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn yobj(entries: Vec<(String, Y)>) -> Y {
    Value::Object(entries.into_iter().collect())
}

/// The document as YAML, every string quoted, so that `${PORT}`, `*`, `true` or `8080` stay
/// strings whatever replaces the placeholder.
fn to_yaml(doc: &Y) -> String {
    let options = serde_saphyr::ser_options! { quote_all: true };
    serde_saphyr::to_string_with_options(doc, options)
        .unwrap_or_else(|e| format!("# cannot serialize: {e}\n"))
}

// ---------------------------------------------------------------------------------------------
// Value pools

/// Envoy's HTTP/1 method list as meshguard's intake holds it, without CONNECT (whose
/// request-target is an authority, not a path).
fn methods() -> impl Iterator<Item = &'static str> {
    meshguard_proxy::intake::METHODS
        .iter()
        .copied()
        .filter(|m| *m != "CONNECT")
}

const COMMON_METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"];

const POLICY_PATHS: [&str; 17] = [
    "/admin",
    "/admin*",
    "/admin/*",
    "/admin/",
    "*/admin",
    "*.txt",
    "/api/{*}/v1",
    "/files/{**}",
    "/store/{**}/cart",
    "/status/{*}",
    "/Admin",
    "*",
    "/public",
    "/api/v1/users",
    "/a%2Fb",
    "/api/*",
    "/headers",
];

const REQUEST_PATHS: [&str; 9] = [
    "/",
    "/get",
    "/headers",
    "/public",
    "/admin",
    "/api/x/v1",
    "/files/readme.txt",
    "/status/200",
    "/store/a/cart",
];

const POLICY_HOSTS: [&str; 11] = [
    "httpbin.foo",
    "httpbin.foo:*",
    "httpbin.foo:${PORT}",
    "*.foo",
    "HttpBin.Foo",
    "*",
    "httpbin.foo.svc.cluster.local",
    "secret.example.com",
    "api.*",
    "*:${PORT}",
    "httpbin.foo:8000",
];

const REQUEST_HOSTS: [&str; 4] = [
    "httpbin.foo:${PORT}",
    "httpbin.foo:${PORT}",
    "httpbin.foo",
    "httpbin.foo.svc.cluster.local:${PORT}",
];

const POLICY_METHODS: [&str; 12] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "PROPFIND", "P*", "*T", "*", "get",
];

const POLICY_PORTS: [&str; 5] = ["${PORT}", "${PORT}", "8080", "9999", "80"];

/// Sources are in `127.0.0.0/8`, so are these.
const SOURCE_CIDRS: [&str; 9] = [
    "127.0.0.1",
    "127.0.0.2",
    "127.0.0.0/24",
    "127.0.0.0/8",
    "127.1.0.0/16",
    "127.0.0.8/29",
    "127.10.20.30",
    "127.0.0.64/26",
    "127.0.0.1/32",
];

/// `X-Forwarded-For` can say anything.
const REMOTE_CIDRS: [&str; 6] = [
    "10.0.0.0/8",
    "203.0.113.0/24",
    "192.168.1.7",
    "198.51.100.0/25",
    "203.0.113.9",
    "127.0.0.0/24",
];

/// `destination.ip` is `127.0.0.1` for meshguard and `127.0.0.2` for Envoy: only ranges that
/// hold both, or neither.
const DESTINATION_CIDRS: [&str; 9] = [
    "127.0.0.0/8",
    "127.0.0.0/30",
    "127.0.0.0/24",
    "127.0.0.0/29",
    "127.0.0.3",
    "10.0.0.0/8",
    "127.0.1.0/24",
    "127.0.0.4/30",
    "192.168.0.1",
];

const PRINCIPALS: [&str; 5] = [
    "cluster.local/ns/foo/sa/sleep",
    "*/sa/sleep",
    "cluster.local/*",
    "*",
    "cluster.local/ns/bar/sa/httpbin",
];
const NAMESPACES: [&str; 6] = ["foo", "bar", "f*", "*o", "*", "istio-system"];
const SERVICE_ACCOUNTS: [&str; 3] = ["sleep", "foo/sleep", "bar/httpbin"];
const TRUST_DOMAINS: [&str; 5] = ["cluster.local", "*.local", "cluster.*", "*", "example.org"];
const SNIS: [&str; 4] = [
    "httpbin.foo.svc.cluster.local",
    "*.cluster.local",
    "*",
    "outbound_.8000_._.httpbin.foo.svc.cluster.local",
];
const DESTINATION_PORTS: [&str; 4] = ["${PORT}", "${PORT}", "8080", "15006"];
const AUDIENCES: [&str; 3] = ["aud-1", "https://api.example.com/", "httpbin.foo"];
const POLICY_AUDIENCES: [&str; 5] = [
    "aud-1",
    "https://api.example.com/",
    "api.example.com",
    "aud*",
    "*",
];
const PRESENTERS: [&str; 3] = ["client-1", "client*", "*"];
const HEADER_NAMES: [&str; 4] = ["x-a", "x-user", "X-Role", "authorization"];
const HEADER_VALUES: [&str; 6] = ["admin", "Admin", "v1", "pre*", "*-x", "*"];
const ISSUERS: [&str; 3] = [
    DEMO_ISSUER,
    "https://issuer.example.com",
    "issuer-2@example.com",
];
const WRONG_ISSUER: &str = "https://wrong.example.com";
const SUBS: [&str; 4] = ["alice", "bob", "team/alice", DEMO_ISSUER];

/// `request.auth.claims[...]` keys and values that tokens are aimed at.
fn claim_pool(i: usize) -> (Vec<&'static str>, Vec<&'static str>) {
    match i % 13 {
        0 => (vec!["groups"], vec!["group1", "admin", "g*", "*"]),
        1 => (vec!["scope"], vec!["read", "scope1", "read write"]),
        2 => (vec!["permission"], vec!["write", "read"]),
        3 => (vec!["custom_scope"], vec!["admin", "user"]),
        4 => (vec!["role"], vec!["admin", "Admin"]),
        5 => (vec!["iss"], vec![DEMO_ISSUER, "*"]),
        6 => (vec!["sub"], vec!["alice", "team/alice", "*"]),
        7 => (vec!["nested", "key1"], vec!["valueA", "value*"]),
        8 => (vec!["nested", "inner", "key2"], vec!["valueC"]),
        9 => (vec!["admin"], vec!["true"]),
        10 => (vec!["nested.key1"], vec!["valueA"]),
        11 => (vec!["nested", "scope"], vec!["read"]),
        _ => (vec!["roles"], vec!["a", "b*"]),
    }
}

// ---------------------------------------------------------------------------------------------
// The policies as generated

#[derive(Clone, Debug)]
enum Selector {
    Absent,
    Labels(BTreeMap<String, String>),
    /// `selector: {}`: matches every workload.
    Empty,
}

#[derive(Clone, Debug)]
enum Loc {
    Header { name: String, prefix: String },
    Param(String),
    Cookie(String),
}

impl Loc {
    fn describe(&self) -> String {
        match self {
            Loc::Header { name, prefix } if prefix.is_empty() => format!("header {name}"),
            Loc::Header { name, prefix } => format!("header {name} {prefix:?}"),
            Loc::Param(p) => format!("query {p}"),
            Loc::Cookie(c) => format!("cookie {c}"),
        }
    }

    fn class(&self) -> TokenLocation {
        match self {
            Loc::Header { name, prefix } if name.eq_ignore_ascii_case("authorization") => {
                if prefix.is_empty() {
                    TokenLocation::UnprefixedHeader
                } else {
                    TokenLocation::AuthorizationBearer
                }
            }
            Loc::Header { prefix, .. } if prefix.is_empty() => TokenLocation::UnprefixedHeader,
            Loc::Header { .. } => TokenLocation::PrefixedHeader,
            Loc::Param(_) => TokenLocation::QueryParam,
            Loc::Cookie(_) => TokenLocation::Cookie,
        }
    }

    /// A header whose prefix has an upper-case letter (`Bearer `, `Token `).
    fn has_cased_prefix(&self) -> bool {
        matches!(self, Loc::Header { prefix, .. } if prefix.chars().any(|c| c.is_ascii_uppercase()))
    }

    fn same_place(&self, other: &Loc) -> bool {
        match (self, other) {
            (Loc::Header { name: a, .. }, Loc::Header { name: b, .. }) => a.eq_ignore_ascii_case(b),
            (Loc::Param(a), Loc::Param(b)) | (Loc::Cookie(a), Loc::Cookie(b)) => a == b,
            _ => false,
        }
    }
}

#[derive(Clone, Debug)]
struct JwtRuleGen {
    issuer: String,
    audiences: Vec<String>,
    /// `(name, prefix)`; `None` leaves `prefix` out.
    from_headers: Vec<(String, Option<String>)>,
    from_params: Vec<String>,
    from_cookies: Vec<String>,
    output_payload: Option<String>,
    claim_headers: Vec<(String, String)>,
    forward: Option<bool>,
    space_delimited: Vec<String>,
}

impl JwtRuleGen {
    /// Where the rule reads tokens (the defaults when no location is given).
    fn locations(&self) -> Vec<Loc> {
        if self.from_headers.is_empty()
            && self.from_params.is_empty()
            && self.from_cookies.is_empty()
        {
            return vec![
                Loc::Header {
                    name: "authorization".into(),
                    prefix: "Bearer ".into(),
                },
                Loc::Param("access_token".into()),
            ];
        }
        let mut out: Vec<Loc> = self
            .from_headers
            .iter()
            .map(|(name, prefix)| Loc::Header {
                name: name.clone(),
                prefix: prefix.clone().unwrap_or_default(),
            })
            .collect();
        out.extend(self.from_params.iter().cloned().map(Loc::Param));
        out.extend(self.from_cookies.iter().cloned().map(Loc::Cookie));
        out
    }
}

#[derive(Clone, Debug)]
struct RaGen {
    name: String,
    namespace: String,
    api: &'static str,
    selector: Selector,
    rules: Vec<JwtRuleGen>,
}

/// What a value of a field is matched against, and so how a request is aimed at it.
#[derive(Clone, Debug)]
enum AimKind {
    Path,
    Host,
    Method,
    Port,
    Header(String),
    SourceIp,
    RemoteIp,
    DestinationIp,
    RequestPrincipal,
    Claim(Vec<String>),
    /// mTLS identities: plaintext requests never have one.
    Identity,
    Sni,
    Metadata,
}

impl AimKind {
    /// Whether a request can be bent towards or away from the value.
    fn aimable(&self) -> bool {
        !matches!(
            self,
            AimKind::Port
                | AimKind::DestinationIp
                | AimKind::Identity
                | AimKind::Sni
                | AimKind::Metadata
        )
    }
}

/// One field of a source or operation, or the `values` / `notValues` of a condition.
#[derive(Clone, Debug)]
struct FieldGen {
    /// The field (`notPaths`), or the condition's key.
    name: String,
    /// The YAML field: the same as `name`, or `values` / `notValues`.
    yaml: String,
    values: Vec<String>,
    negative: bool,
    kind: AimKind,
}

impl FieldGen {
    fn label(&self) -> String {
        match self.yaml.as_str() {
            "values" => self.name.clone(),
            "notValues" => format!("{} notValues", self.name),
            _ => self.yaml.clone(),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct RuleGen {
    from: Option<Vec<Vec<FieldGen>>>,
    to: Option<Vec<Vec<FieldGen>>>,
    when: Option<Vec<Vec<FieldGen>>>,
}

impl RuleGen {
    fn is_empty(&self) -> bool {
        self.from.is_none() && self.to.is_none() && self.when.is_none()
    }

    fn bendable(&self) -> bool {
        [&self.from, &self.to, &self.when]
            .into_iter()
            .flatten()
            .flatten()
            .flatten()
            .any(|f| f.kind.aimable())
    }
}

#[derive(Clone, Debug)]
enum Rules {
    Absent,
    Empty,
    List(Vec<RuleGen>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Allow,
    Deny,
    Audit,
    Custom,
}

impl Act {
    fn as_str(self) -> &'static str {
        match self {
            Act::Allow => "ALLOW",
            Act::Deny => "DENY",
            Act::Audit => "AUDIT",
            Act::Custom => "CUSTOM",
        }
    }
}

#[derive(Clone, Debug)]
struct ApGen {
    name: String,
    namespace: String,
    api: &'static str,
    dry_run: Option<String>,
    selector: Selector,
    action: Act,
    /// Whether `action` is written out (ALLOW is the default).
    write_action: bool,
    rules: Rules,
}

/// A reader of tokens: one location of one JWT rule.
#[derive(Clone, Debug)]
struct Reader {
    loc: Loc,
    issuer: String,
    audiences: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    Plain,
    Twice,
    AfterOtherCredential,
    LowercasePrefix,
    CorsPreflight,
    SpoofedOutputs,
}

/// A request being put together.
#[derive(Clone, Debug)]
struct Draft {
    aims: Vec<String>,
    method: String,
    path: String,
    query: Vec<String>,
    fragment: Option<String>,
    host: Option<String>,
    headers: Vec<(String, String)>,
    source_ip: Ipv4Addr,
    xff: Option<String>,
    /// Claims a token must carry (a `null` removes one).
    claims: Map<String, Value>,
    want_token: bool,
    token_kind: Option<TokenKind>,
    style: Style,
    /// A variant HTTP/2 cannot carry as such (fragment, backslash, lowercase method, ...).
    h1_only: bool,
    variants: Vec<Variant>,
}

impl Draft {
    fn set_header(&mut self, name: &str, value: String) {
        self.remove_header(name);
        self.headers.push((name.to_string(), value));
    }

    fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
}

#[derive(Clone, Copy, Debug)]
enum IpPick {
    Inside,
    First,
    Last,
    Below,
    Above,
}

impl IpPick {
    fn variant(self) -> Variant {
        match self {
            IpPick::Inside => Variant::IpInside,
            IpPick::First => Variant::IpFirst,
            IpPick::Last => Variant::IpLast,
            IpPick::Below => Variant::IpBelow,
            IpPick::Above => Variant::IpAbove,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The generator

struct Gen {
    rng: Rng,
    seed: u64,
    now: i64,
    workload: WorkloadSpec,
    mesh: MeshOptions,
    ras: Vec<RaGen>,
    aps: Vec<ApGen>,
    readers: Vec<Reader>,
    issuers: Vec<String>,
    output_headers: Vec<String>,
}

impl Gen {
    fn new(seed: u64, now: i64) -> Gen {
        Gen {
            rng: Rng(seed),
            seed,
            now,
            workload: WorkloadSpec::default(),
            mesh: MeshOptions::default(),
            ras: Vec::new(),
            aps: Vec::new(),
            readers: Vec::new(),
            issuers: Vec::new(),
            output_headers: Vec::new(),
        }
    }

    fn run(mut self) -> Generated {
        self.workload_and_mesh();
        let n_ra = self.rng.weighted(&[(14, 0), (58, 1), (28, 2)]);
        for i in 0..n_ra {
            let ra = self.request_authentication(i);
            self.ras.push(ra);
        }
        self.collect_readers();
        let n_ap = self.rng.weighted(&[(35, 1), (35, 2), (20, 3), (10, 4)]);
        for i in 0..n_ap {
            let ap = self.authorization_policy(i);
            self.aps.push(ap);
        }
        let docs: Vec<String> = (self.ras.iter().map(|ra| to_yaml(&ra_yaml(ra))))
            .chain(self.aps.iter().map(|ap| to_yaml(&ap_yaml(ap))))
            .collect();
        let policies = docs.join("---\n");
        let (requests, tokens, variants) = self.requests();
        Generated {
            scenario: Scenario {
                name: format!("generated seed {}", self.seed),
                seed: Some(self.seed),
                workload: self.workload.clone(),
                mesh: self.mesh.clone(),
                policies,
                requests,
            },
            tokens,
            variants,
        }
    }

    /// Where the RequestAuthentications read tokens, their issuers and output headers.
    fn collect_readers(&mut self) {
        for ra in &self.ras {
            for rule in &ra.rules {
                for loc in rule.locations() {
                    self.readers.push(Reader {
                        loc,
                        issuer: rule.issuer.clone(),
                        audiences: rule.audiences.clone(),
                    });
                }
                if !self.issuers.contains(&rule.issuer) {
                    self.issuers.push(rule.issuer.clone());
                }
                for h in rule
                    .output_payload
                    .iter()
                    .chain(rule.claim_headers.iter().map(|c| &c.0))
                {
                    if !self.output_headers.contains(h) {
                        self.output_headers.push(h.clone());
                    }
                }
            }
        }
    }

    /// 10–30 requests: aimed at a rule mostly, token probes and free requests otherwise.
    fn requests(&mut self) -> (Vec<Request>, TokenUses, VariantUses) {
        let mut requests = Vec::new();
        let mut tokens = Vec::new();
        let mut variants = Vec::new();
        let n = self.rng.range(10, 30);
        // Rules a request can be bent towards count four times as much as rules on mTLS
        // identities, ports or SNI only, which a plaintext request meets or misses as it is.
        let aimable: Vec<(u64, (usize, usize))> = self
            .aps
            .iter()
            .enumerate()
            .flat_map(|(i, ap)| match &ap.rules {
                Rules::List(rules) => rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| !r.is_empty())
                    .map(|(j, r)| (if r.bendable() { 4 } else { 1 }, (i, j)))
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        for index in 0..n {
            let mode = if aimable.is_empty() {
                self.rng.weighted(&[(55, 1), (45, 2)])
            } else {
                self.rng.weighted(&[(65, 0), (20, 1), (15, 2)])
            };
            let draft = match mode {
                0 => {
                    let (ap, rule) = self.rng.weighted(&aimable);
                    self.aimed(ap, rule)
                }
                1 => self.token_probe(),
                _ => self.free(),
            };
            let (request, toks, vars) = self.finish(draft);
            tokens.extend(toks.into_iter().map(|(k, l)| (index, k, l)));
            variants.extend(vars.into_iter().map(|v| (index, v)));
            requests.push(request);
        }
        (requests, tokens, variants)
    }

    fn workload_and_mesh(&mut self) {
        let namespace = if self.rng.chance(80) { "foo" } else { "bar" };
        let mut labels = BTreeMap::from([("app".to_string(), "httpbin".to_string())]);
        if self.rng.chance(40) {
            labels.insert("version".into(), "v1".into());
        }
        self.workload = WorkloadSpec {
            namespace: namespace.into(),
            labels,
        };
        self.mesh = MeshOptions {
            root_namespace: if self.rng.chance(85) {
                "istio-system".into()
            } else {
                "mesh-root".into()
            },
            path_normalization: *self.rng.pick(&PathNormalization::ALL),
            trusted_proxies: self.rng.weighted(&[(50, 0), (30, 1), (20, 2)]),
        };
    }

    /// The workload's namespace mostly, the root namespace sometimes, another one rarely.
    fn namespace(&mut self) -> String {
        match self.rng.weighted(&[(78, 0), (16, 1), (6, 2)]) {
            0 => self.workload.namespace.clone(),
            1 => self.mesh.root_namespace.clone(),
            _ => {
                if self.workload.namespace == "foo" {
                    "bar".into()
                } else {
                    "foo".into()
                }
            }
        }
    }

    fn selector(&mut self) -> Selector {
        match self.rng.weighted(&[(40, 0), (35, 1), (17, 2), (8, 3)]) {
            0 => Selector::Absent,
            1 => {
                // All of the workload's labels, or one of them.
                let labels: Vec<(String, String)> = self
                    .workload
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Selector::Labels(
                    self.rng
                        .subset(&labels, 1, labels.len())
                        .into_iter()
                        .collect(),
                )
            }
            2 => {
                let mut labels = self.workload.labels.clone();
                if self.rng.chance(50) {
                    labels.insert("app".into(), "other".into());
                } else {
                    labels.insert("version".into(), "v2".into());
                }
                Selector::Labels(labels)
            }
            _ => Selector::Empty,
        }
    }

    fn api(&mut self) -> &'static str {
        if self.rng.chance(80) {
            "security.istio.io/v1"
        } else {
            "security.istio.io/v1beta1"
        }
    }

    // -----------------------------------------------------------------------------------------
    // RequestAuthentication

    fn request_authentication(&mut self, i: usize) -> RaGen {
        let n_rules = if self.rng.chance(85) { 1 } else { 2 };
        let rules = (0..n_rules).map(|_| self.jwt_rule()).collect();
        RaGen {
            name: format!("jwt-{i}"),
            namespace: self.namespace(),
            api: self.api(),
            selector: self.selector(),
            rules,
        }
    }

    fn jwt_rule(&mut self) -> JwtRuleGen {
        let issuer = self.rng.weighted(&[(60, 0), (20, 1), (20, 2)]);
        let mut rule = JwtRuleGen {
            issuer: ISSUERS[issuer].to_string(),
            audiences: Vec::new(),
            from_headers: Vec::new(),
            from_params: Vec::new(),
            from_cookies: Vec::new(),
            output_payload: None,
            claim_headers: Vec::new(),
            forward: None,
            space_delimited: Vec::new(),
        };
        if self.rng.chance(30) {
            rule.audiences = self
                .rng
                .subset(&AUDIENCES, 1, 2)
                .into_iter()
                .map(String::from)
                .collect();
        }
        if self.rng.chance(50) {
            let headers = [
                ("authorization", Some("Bearer ")),
                ("x-jwt-assertion", None),
                ("x-jwt-assertion", Some("")),
                ("x-token", Some("Token ")),
                ("X-Auth-Token", Some("Bearer ")),
            ];
            let mut chosen: Vec<(String, Option<String>)> = Vec::new();
            for (name, prefix) in self.rng.subset(&headers, 0, 2) {
                if !chosen.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                    chosen.push((name.to_string(), prefix.map(String::from)));
                }
            }
            rule.from_headers = chosen;
            rule.from_params = self
                .rng
                .subset(&["token", "jwt", "access_token"], 0, 2)
                .into_iter()
                .map(String::from)
                .collect();
            rule.from_cookies = self
                .rng
                .subset(&["session", "jwt"], 0, 2)
                .into_iter()
                .map(String::from)
                .collect();
            if rule.from_headers.is_empty()
                && rule.from_params.is_empty()
                && rule.from_cookies.is_empty()
            {
                match self.rng.below(3) {
                    0 => rule.from_headers.push(("x-jwt-assertion".into(), None)),
                    1 => rule.from_params.push("token".into()),
                    _ => rule.from_cookies.push("session".into()),
                }
            }
        }
        if self.rng.chance(25) {
            rule.output_payload = Some("x-jwt-payload".into());
        }
        if self.rng.chance(30) {
            let pool = [
                ("x-jwt-sub", "sub"),
                ("x-jwt-iss", "iss"),
                ("x-jwt-key1", "nested.key1"),
                ("x-jwt-key2", "nested.inner.key2"),
                ("x-jwt-groups", "groups"),
                ("x-jwt-exp", "exp"),
                ("x-jwt-azp", "azp"),
            ];
            rule.claim_headers = self
                .rng
                .subset(&pool, 1, 2)
                .into_iter()
                .map(|(h, c)| (h.to_string(), c.to_string()))
                .collect();
        }
        if self.rng.chance(35) {
            rule.forward = Some(self.rng.chance(50));
        }
        if self.rng.chance(20) {
            rule.space_delimited = self
                .rng
                .subset(&["custom_scope", "roles", "nested.scope", "scope"], 1, 2)
                .into_iter()
                .map(String::from)
                .collect();
        }
        rule
    }

    // -----------------------------------------------------------------------------------------
    // AuthorizationPolicy

    fn authorization_policy(&mut self, i: usize) -> ApGen {
        let action = self.rng.weighted(&[
            (40, Act::Allow),
            (35, Act::Deny),
            (18, Act::Audit),
            (7, Act::Custom),
        ]);
        let dry_run = if matches!(action, Act::Allow | Act::Deny) && self.rng.chance(15) {
            Some(self.rng.pick_s(&["true", "true", "True", "1", "false"]))
        } else {
            None
        };
        let shape = match action {
            Act::Allow => self.rng.weighted(&[(5, 0), (5, 1), (8, 2), (82, 3)]),
            Act::Audit => self.rng.weighted(&[(5, 0), (5, 1), (10, 2), (80, 3)]),
            Act::Deny => self.rng.weighted(&[(3, 2), (97, 3)]),
            Act::Custom => self.rng.weighted(&[(15, 2), (85, 3)]),
        };
        let custom = action == Act::Custom;
        let rules = match shape {
            0 => Rules::Absent,
            1 => Rules::Empty,
            2 => Rules::List(vec![RuleGen::default()]),
            _ => {
                let n = self.rng.weighted(&[(55, 1), (30, 2), (15, 3)]);
                Rules::List((0..n).map(|_| self.rule(custom)).collect())
            }
        };
        ApGen {
            name: format!("{}-{i}", action.as_str().to_ascii_lowercase()),
            namespace: self.namespace(),
            api: self.api(),
            dry_run,
            selector: self.selector(),
            action,
            write_action: action != Act::Allow || self.rng.chance(70),
            rules,
        }
    }

    fn rule(&mut self, custom: bool) -> RuleGen {
        if self.rng.chance(4) {
            return RuleGen::default();
        }
        let mut rule = RuleGen::default();
        if self.rng.chance(45) {
            let n = if self.rng.chance(80) { 1 } else { 2 };
            rule.from = Some((0..n).map(|_| self.source(custom)).collect());
        }
        if self.rng.chance(75) {
            let n = if self.rng.chance(80) { 1 } else { 2 };
            rule.to = Some((0..n).map(|_| self.operation()).collect());
        }
        if self.rng.chance(45) {
            let n = if self.rng.chance(70) { 1 } else { 2 };
            rule.when = Some((0..n).map(|_| self.condition(custom)).collect());
        }
        if rule.is_empty() {
            rule.to = Some(vec![self.operation()]);
        }
        rule
    }

    /// One or two values from `make`, without repeats.
    fn values(&mut self, mut make: impl FnMut(&mut Gen) -> String) -> Vec<String> {
        let n = if self.rng.chance(70) { 1 } else { 2 };
        let mut out: Vec<String> = Vec::new();
        for _ in 0..n {
            let v = make(self);
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }

    fn pool_values(&mut self, pool: &[&str]) -> Vec<String> {
        let pool: Vec<String> = pool.iter().map(|s| s.to_string()).collect();
        self.values(|g| g.rng.pick(&pool).clone())
    }

    fn source(&mut self, custom: bool) -> Vec<FieldGen> {
        const FIELDS: [(u64, &str, &str); 7] = [
            (10, "principals", "notPrincipals"),
            (30, "requestPrincipals", "notRequestPrincipals"),
            (10, "namespaces", "notNamespaces"),
            (8, "serviceAccounts", "notServiceAccounts"),
            (8, "trustDomains", "notTrustDomains"),
            (20, "ipBlocks", "notIpBlocks"),
            (16, "remoteIpBlocks", "notRemoteIpBlocks"),
        ];
        let n = self.rng.range(1, 3);
        let mut out: Vec<FieldGen> = Vec::new();
        for _ in 0..n {
            let i = if custom {
                // CUSTOM only takes addresses in `from`.
                self.rng.pick(&[5usize, 6]).to_owned()
            } else {
                let weights: Vec<(u64, usize)> =
                    FIELDS.iter().enumerate().map(|(i, f)| (f.0, i)).collect();
                self.rng.weighted(&weights)
            };
            let (_, pos, neg) = FIELDS[i];
            let negative = self.rng.chance(35);
            let yaml = if negative { neg } else { pos };
            if out.iter().any(|f| f.yaml == yaml) {
                continue;
            }
            let has = |out: &[FieldGen], names: &[&str]| {
                out.iter()
                    .any(|f| names.iter().any(|n| f.yaml.eq_ignore_ascii_case(n)))
            };
            // serviceAccounts cannot be set with principals or namespaces.
            if pos == "serviceAccounts"
                && has(
                    &out,
                    &["principals", "notPrincipals", "namespaces", "notNamespaces"],
                )
            {
                continue;
            }
            if matches!(pos, "principals" | "namespaces")
                && has(&out, &["serviceAccounts", "notServiceAccounts"])
            {
                continue;
            }
            let (kind, values) = match pos {
                "principals" => (AimKind::Identity, self.pool_values(&PRINCIPALS)),
                "requestPrincipals" => (
                    AimKind::RequestPrincipal,
                    self.values(|g| g.request_principal()),
                ),
                "namespaces" => (AimKind::Identity, self.pool_values(&NAMESPACES)),
                "serviceAccounts" => (AimKind::Identity, self.pool_values(&SERVICE_ACCOUNTS)),
                "trustDomains" => (AimKind::Identity, self.pool_values(&TRUST_DOMAINS)),
                "ipBlocks" => (AimKind::SourceIp, self.pool_values(&SOURCE_CIDRS)),
                _ => (AimKind::RemoteIp, self.remote_values()),
            };
            out.push(FieldGen {
                name: yaml.into(),
                yaml: yaml.into(),
                values,
                negative,
                kind,
            });
        }
        out
    }

    fn remote_values(&mut self) -> Vec<String> {
        self.values(|g| {
            if g.rng.chance(35) {
                g.rng.pick_s(&SOURCE_CIDRS)
            } else {
                g.rng.pick_s(&REMOTE_CIDRS)
            }
        })
    }

    fn operation(&mut self) -> Vec<FieldGen> {
        const FIELDS: [(u64, &str, &str); 4] = [
            (20, "hosts", "notHosts"),
            (12, "ports", "notPorts"),
            (20, "methods", "notMethods"),
            (48, "paths", "notPaths"),
        ];
        let n = self.rng.range(1, 3);
        let mut out: Vec<FieldGen> = Vec::new();
        for _ in 0..n {
            let weights: Vec<(u64, usize)> =
                FIELDS.iter().enumerate().map(|(i, f)| (f.0, i)).collect();
            let (_, pos, neg) = FIELDS[self.rng.weighted(&weights)];
            let negative = self.rng.chance(30);
            let yaml = if negative { neg } else { pos };
            if out.iter().any(|f| f.yaml == yaml) {
                continue;
            }
            let (kind, values) = match pos {
                "hosts" => (AimKind::Host, self.pool_values(&POLICY_HOSTS)),
                "ports" => (AimKind::Port, self.pool_values(&POLICY_PORTS)),
                "methods" => (AimKind::Method, self.pool_values(&POLICY_METHODS)),
                _ => (AimKind::Path, self.pool_values(&POLICY_PATHS)),
            };
            out.push(FieldGen {
                name: yaml.into(),
                yaml: yaml.into(),
                values,
                negative,
                kind,
            });
        }
        out
    }

    fn condition(&mut self, custom: bool) -> Vec<FieldGen> {
        // (weight, key index); CUSTOM rules cannot use identities or `request.auth.*`.
        let all: [(u64, usize); 15] = [
            (20, 0),
            (6, 1),
            (7, 2),
            (3, 3),
            (3, 4),
            (3, 5),
            (3, 6),
            (8, 7),
            (5, 8),
            (4, 9),
            (12, 10),
            (4, 11),
            (4, 12),
            (3, 13),
            (2, 14),
        ];
        let allowed: Vec<(u64, usize)> = all
            .iter()
            .copied()
            .filter(|(_, k)| !custom || matches!(k, 0 | 1 | 2 | 11 | 12 | 13 | 14))
            .collect();
        let (key, kind, pool): (String, AimKind, Vec<String>) = match self.rng.weighted(&allowed) {
            0 => {
                let mut names: Vec<String> = HEADER_NAMES.iter().map(|s| s.to_string()).collect();
                names.extend(self.output_headers.iter().cloned());
                let name = self.rng.pick(&names).clone();
                let values: Vec<String> = if name.eq_ignore_ascii_case("authorization") {
                    vec!["Bearer *".into(), "*".into()]
                } else if self.output_headers.contains(&name) {
                    vec![
                        "alice".into(),
                        DEMO_ISSUER.into(),
                        "*".into(),
                        "valueA".into(),
                    ]
                } else {
                    HEADER_VALUES.iter().map(|s| s.to_string()).collect()
                };
                (
                    format!("request.headers[{name}]"),
                    AimKind::Header(name.to_ascii_lowercase()),
                    values,
                )
            }
            1 => (
                "source.ip".into(),
                AimKind::SourceIp,
                strings(&SOURCE_CIDRS),
            ),
            2 => {
                let mut pool = strings(&REMOTE_CIDRS);
                pool.extend(strings(&SOURCE_CIDRS));
                ("remote.ip".into(), AimKind::RemoteIp, pool)
            }
            3 => (
                "source.namespace".into(),
                AimKind::Identity,
                strings(&NAMESPACES),
            ),
            4 => (
                "source.principal".into(),
                AimKind::Identity,
                strings(&PRINCIPALS),
            ),
            5 => (
                "source.serviceAccount".into(),
                AimKind::Identity,
                strings(&SERVICE_ACCOUNTS),
            ),
            6 => (
                "source.trustDomain".into(),
                AimKind::Identity,
                strings(&TRUST_DOMAINS),
            ),
            7 => {
                let pool = (0..4).map(|_| self.request_principal()).collect();
                (
                    "request.auth.principal".into(),
                    AimKind::RequestPrincipal,
                    pool,
                )
            }
            8 => (
                "request.auth.audiences".into(),
                AimKind::Claim(vec!["aud".into()]),
                strings(&POLICY_AUDIENCES),
            ),
            9 => (
                "request.auth.presenter".into(),
                AimKind::Claim(vec!["azp".into()]),
                strings(&PRESENTERS),
            ),
            10 => {
                let (path, values) = claim_pool(self.rng.below(13));
                let key = path.iter().map(|p| format!("[{p}]")).collect::<String>();
                (
                    format!("request.auth.claims{key}"),
                    AimKind::Claim(path.iter().map(|p| p.to_string()).collect()),
                    strings(&values),
                )
            }
            11 => (
                "destination.ip".into(),
                AimKind::DestinationIp,
                strings(&DESTINATION_CIDRS),
            ),
            12 => (
                "destination.port".into(),
                AimKind::Port,
                strings(&DESTINATION_PORTS),
            ),
            13 => ("connection.sni".into(), AimKind::Sni, strings(&SNIS)),
            _ => (
                "experimental.envoy.filters.http.example[role]".into(),
                AimKind::Metadata,
                vec!["admin".into()],
            ),
        };
        let positive = self.rng.chance(70);
        let negative = !positive || self.rng.chance(35);
        let mut out = Vec::new();
        if positive {
            out.push(FieldGen {
                name: key.clone(),
                yaml: "values".into(),
                values: self.values(|g| g.rng.pick(&pool).clone()),
                negative: false,
                kind: kind.clone(),
            });
        }
        if negative {
            out.push(FieldGen {
                name: key,
                yaml: "notValues".into(),
                values: self.values(|g| g.rng.pick(&pool).clone()),
                negative: true,
                kind,
            });
        }
        out
    }

    /// An issuer tokens may carry: one of the scenario's rules' mostly.
    fn some_issuer(&mut self) -> String {
        if !self.issuers.is_empty() && self.rng.chance(85) {
            self.rng.pick(&self.issuers.clone()).clone()
        } else if self.rng.chance(80) {
            self.rng.pick_s(&ISSUERS)
        } else {
            WRONG_ISSUER.into()
        }
    }

    /// A `requestPrincipals` / `request.auth.principal` value in one of the forms Istio
    /// splits differently (docs/semantics.md, "JWT matching in authz").
    fn request_principal(&mut self) -> String {
        let iss = self.some_issuer();
        let sub = self.rng.pick_s(&SUBS);
        let half = iss.len() / 2;
        match self.rng.weighted(&[
            (20, 0),
            (12, 1),
            (10, 2),
            (10, 3),
            (6, 4),
            (6, 5),
            (6, 6),
            (5, 7),
            (4, 8),
            (5, 9),
        ]) {
            0 => format!("{iss}/{sub}"),
            1 => format!("{iss}/*"),
            2 => format!("*/{sub}"),
            3 => "*".into(),
            4 => format!("{iss}/{}*", &sub[..2]),
            5 => format!("*{}", &sub[sub.len() - 3..]),
            6 => format!("{}*", &iss[..half.max(1)]),
            7 => format!("*{}/{sub}", &iss[half..]),
            8 => iss,
            _ => format!("{iss}/team/alice"),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Requests

    fn base_draft(&mut self) -> Draft {
        let method = if self.rng.chance(85) {
            "GET".to_string()
        } else {
            self.rng.pick_s(&COMMON_METHODS)
        };
        let source_ip = if self.rng.chance(75) {
            Ipv4Addr::new(127, 0, 0, 1)
        } else {
            *self.rng.pick(&[
                Ipv4Addr::new(127, 0, 0, 5),
                Ipv4Addr::new(127, 0, 0, 9),
                Ipv4Addr::new(127, 1, 2, 3),
                Ipv4Addr::new(127, 0, 0, 70),
                Ipv4Addr::new(127, 10, 20, 30),
            ])
        };
        Draft {
            aims: Vec::new(),
            method,
            path: self.rng.pick_s(&REQUEST_PATHS),
            query: Vec::new(),
            fragment: None,
            host: Some(self.rng.pick_s(&REQUEST_HOSTS)),
            headers: Vec::new(),
            source_ip,
            xff: None,
            claims: Map::new(),
            want_token: false,
            token_kind: None,
            style: Style::Plain,
            h1_only: false,
            variants: Vec::new(),
        }
    }

    /// A request that meets every positive field of one rule, then (mostly) one value bent.
    fn aimed(&mut self, ap: usize, rule: usize) -> Draft {
        let name = self.aps[ap].name.clone();
        let rule_gen = match &self.aps[ap].rules {
            Rules::List(rules) => rules[rule].clone(),
            _ => RuleGen::default(),
        };
        let mut d = self.base_draft();
        let mut fields: Vec<FieldGen> = Vec::new();
        if let Some(from) = &rule_gen.from {
            fields.extend(self.rng.pick(from).iter().cloned());
        }
        if let Some(to) = &rule_gen.to {
            fields.extend(self.rng.pick(to).iter().cloned());
        }
        if let Some(when) = &rule_gen.when {
            for c in when {
                fields.extend(c.iter().cloned());
            }
        }
        for f in fields.iter().filter(|f| !f.negative) {
            let v = self.rng.pick(&f.values).clone();
            self.hit(&mut d, &f.kind, &v);
        }
        let bendable: Vec<FieldGen> = fields
            .iter()
            .filter(|f| f.kind.aimable())
            .cloned()
            .collect();
        if !bendable.is_empty() && self.rng.chance(85) {
            let f = self.rng.pick(&bendable).clone();
            let v = self.rng.pick(&f.values).clone();
            let what = self.bend(&mut d, &f.kind, &v);
            d.aims
                .push(format!("{name} rule {rule}: {} {v}: {what}", f.label()));
        } else {
            let labels: Vec<String> = fields.iter().map(FieldGen::label).collect();
            d.aims.push(format!(
                "{name} rule {rule}: meets {}",
                if labels.is_empty() {
                    "everything".into()
                } else {
                    labels.join(", ")
                }
            ));
        }
        d
    }

    /// A request about its token: a kind at a location, sometimes in a tricky way.
    fn token_probe(&mut self) -> Draft {
        let mut d = self.base_draft();
        let kind = *self.rng.pick(TokenKind::ALL);
        d.want_token = true;
        d.token_kind = Some(kind);
        let mut styles = vec![
            (64, Style::Plain),
            (8, Style::Twice),
            (8, Style::AfterOtherCredential),
            (6, Style::LowercasePrefix),
            (8, Style::CorsPreflight),
        ];
        if !self.output_headers.is_empty() {
            styles.push((12, Style::SpoofedOutputs));
        }
        d.style = self.rng.weighted(&styles);
        d.aims.push("token probe".into());
        d
    }

    /// A request from the pools, sometimes bent.
    fn free(&mut self) -> Draft {
        let mut d = self.base_draft();
        let mut what = vec![format!("free: {} {}", d.method, d.path)];
        if self.rng.chance(60) {
            let p = d.path.clone();
            what.push(self.bend_path(&mut d, &p));
        }
        if self.rng.chance(20) {
            let m = d.method.clone();
            what.push(self.bend_method(&mut d, &m));
        }
        if self.rng.chance(20) {
            let h = d.host.clone().unwrap_or_else(|| "httpbin.foo".into());
            what.push(self.bend_host(&mut d, &h));
        }
        d.aims.push(what.join(", "));
        d
    }

    /// Sets the attribute `kind` reads to something `v` matches.
    fn hit(&mut self, d: &mut Draft, kind: &AimKind, v: &str) {
        match kind {
            AimKind::Path => d.path = self.path_instance(v),
            AimKind::Host => d.host = Some(self.host_instance(v)),
            AimKind::Method => d.method = self.method_instance(v),
            AimKind::Header(name) => {
                let value = self.string_instance(v);
                d.set_header(name, value);
            }
            AimKind::SourceIp => {
                if let Some((ip, _)) = self.source_ip(v, IpPick::Inside) {
                    d.source_ip = ip;
                }
            }
            AimKind::RemoteIp => {
                let ip = self.ip(v, IpPick::Inside);
                d.xff = Some(self.xff_for(ip));
            }
            AimKind::RequestPrincipal => {
                let (iss, sub) = self.principal_instance(v);
                d.claims.insert("iss".into(), iss.into());
                d.claims
                    .insert("sub".into(), sub.map_or(Value::Null, Value::from));
                d.want_token = true;
            }
            AimKind::Claim(path) => {
                let value = self.string_instance(v);
                set_claim(&mut d.claims, path, Value::from(value));
                d.want_token = true;
            }
            AimKind::Port
            | AimKind::DestinationIp
            | AimKind::Identity
            | AimKind::Sni
            | AimKind::Metadata => {}
        }
    }

    /// Sets the attribute `kind` reads to `v`'s instance bent one way; says how.
    fn bend(&mut self, d: &mut Draft, kind: &AimKind, v: &str) -> String {
        match kind {
            AimKind::Path => self.bend_path(d, v),
            AimKind::Host => self.bend_host(d, v),
            AimKind::Method => self.bend_method(d, v),
            AimKind::Header(name) => self.bend_header(d, name, v),
            AimKind::SourceIp => self.bend_source_ip(d, v),
            AimKind::RemoteIp => self.bend_remote_ip(d, v),
            AimKind::RequestPrincipal => self.bend_principal(d, v),
            AimKind::Claim(path) => self.bend_claim(d, path, v),
            _ => "as is".into(),
        }
    }

    // ---- paths

    /// A path `v` matches (docs/semantics.md, "Field semantics and value matching").
    fn path_instance(&mut self, v: &str) -> String {
        if v == "*" {
            return self.rng.pick_s(&["/", "/anything", "/admin"]);
        }
        if v.contains("{*}") || v.contains("{**}") {
            let segments: Vec<String> = v
                .split('/')
                .map(|s| match s {
                    "{*}" => self.rng.pick_s(&["seg", "x1", "a.b"]),
                    "{**}" => self.rng.pick_s(&["", "a", "a/b"]),
                    other => other.to_string(),
                })
                .collect();
            return segments.join("/");
        }
        if let Some(prefix) = v.strip_suffix('*') {
            return format!("{prefix}{}", self.rng.pick_s(&["", "x", "/sub", "/a/b"]));
        }
        if let Some(suffix) = v.strip_prefix('*') {
            return if suffix.starts_with('/') {
                format!("{}{suffix}", self.rng.pick_s(&["", "/pre"]))
            } else {
                format!("{}{suffix}", self.rng.pick_s(&["/file", "/dir/name"]))
            };
        }
        v.to_string()
    }

    /// Just beside `v`: one character short of a prefix, an empty template segment, ...
    fn path_edge(&mut self, v: &str) -> String {
        if v == "*" {
            return "/".into();
        }
        if v.contains("{*}") || v.contains("{**}") {
            return match self.rng.below(2) {
                0 => v.replace("{*}", "").replace("/{**}", ""),
                _ => v.replace("{*}", "a/b").replace("{**}", ""),
            };
        }
        if let Some(prefix) = v.strip_suffix('*') {
            let mut p = prefix.to_string();
            if p.len() > 1 {
                p.pop();
            }
            return p;
        }
        if let Some(suffix) = v.strip_prefix('*') {
            return if let Some(rest) = suffix.strip_prefix('/') {
                format!("/pre{rest}")
            } else {
                format!("/file{}", &suffix[1.min(suffix.len())..])
            };
        }
        match self.rng.below(3) {
            0 => format!("{v}x"),
            1 => format!("{v}/sub"),
            _ => {
                let mut p = v.to_string();
                if p.len() > 1 {
                    p.pop();
                }
                p
            }
        }
    }

    fn bend_path(&mut self, d: &mut Draft, v: &str) -> String {
        use Variant::*;
        let variant = self.rng.weighted(&[
            (8, PathExact),
            (6, PathCase),
            (6, PathTrailingSlash),
            (5, PathEncodedSlashUpper),
            (5, PathEncodedSlashLower),
            (5, PathEncodedBackslash),
            (2, PathBackslash),
            (6, PathDoubleSlash),
            (5, PathDotSegment),
            (6, PathDotDot),
            (4, PathEncodedDotDot),
            (4, PathEncodedUnreserved),
            (5, PathQuery),
            (4, PathFragment),
            (8, PathEdge),
            (2, PathSemicolon),
            (1, PathNul),
        ]);
        let p = self.path_instance(v);
        let slashes: Vec<usize> = p.match_indices('/').map(|(i, _)| i).collect();
        let interior: Vec<usize> = slashes.iter().copied().filter(|&i| i > 0).collect();
        let replace_slash = |g: &mut Gen, with: &str| -> String {
            if interior.is_empty() {
                // Only the leading slash: put the encoded one right after it.
                format!("/{with}{}", &p[1.min(p.len())..])
            } else {
                let i = *g.rng.pick(&interior);
                format!("{}{with}{}", &p[..i], &p[i + 1..])
            }
        };
        let at_slash = |g: &mut Gen| -> usize {
            if slashes.is_empty() {
                0
            } else {
                *g.rng.pick(&slashes)
            }
        };
        d.path = match variant {
            PathExact => p.clone(),
            PathCase => flip_case(&p),
            PathTrailingSlash => {
                if p.len() > 1 && p.ends_with('/') {
                    p[..p.len() - 1].to_string()
                } else {
                    format!("{p}/")
                }
            }
            PathEncodedSlashUpper => replace_slash(self, "%2F"),
            PathEncodedSlashLower => replace_slash(self, "%2f"),
            PathEncodedBackslash => {
                let e = self.rng.pick_s(&["%5C", "%5c"]);
                replace_slash(self, &e)
            }
            PathBackslash => {
                d.h1_only = true;
                replace_slash(self, "\\")
            }
            PathDoubleSlash => {
                let i = at_slash(self);
                format!("{}/{}", &p[..i], &p[i..])
            }
            PathDotSegment => {
                let i = at_slash(self);
                format!("{}/.{}", &p[..i], &p[i..])
            }
            PathDotDot => {
                let i = at_slash(self);
                format!("{}/x/..{}", &p[..i], &p[i..])
            }
            PathEncodedDotDot => {
                let i = at_slash(self);
                let dots = self.rng.pick_s(&["%2e%2e", "%2E.", ".%2E"]);
                format!("{}/x/{dots}{}", &p[..i], &p[i..])
            }
            PathEncodedUnreserved => encode_one_letter(&p, self.rng.chance(50)),
            PathQuery => {
                d.query.push(self.rng.pick_s(&["a=1", "x=/admin", "q=%2F"]));
                p.clone()
            }
            PathFragment => {
                d.h1_only = true;
                d.fragment = Some(self.rng.pick_s(&["frag", "/../public", "x?y=1"]));
                p.clone()
            }
            PathEdge => self.path_edge(v),
            PathSemicolon => format!("{p};jsessionid=1"),
            _ => format!("{p}%00"),
        };
        if d.path.is_empty() || !d.path.starts_with('/') {
            d.path = format!("/{}", d.path);
        }
        d.variants.push(variant);
        variant.as_str().into()
    }

    // ---- hosts

    fn host_instance(&mut self, v: &str) -> String {
        if v == "*" {
            return "httpbin.foo:${PORT}".into();
        }
        if let Some(rest) = v.strip_prefix('*') {
            return if rest.starts_with('.') {
                format!("httpbin{rest}")
            } else {
                format!("httpbin.foo{rest}")
            };
        }
        if let Some(p) = v.strip_suffix('*') {
            return if p.ends_with(':') {
                format!("{p}{PORT_PLACEHOLDER}")
            } else {
                format!("{p}example.com")
            };
        }
        v.to_string()
    }

    fn bend_host(&mut self, d: &mut Draft, v: &str) -> String {
        use Variant::*;
        let variant = self.rng.weighted(&[
            (8, HostExact),
            (8, HostCase),
            (6, HostWithPort),
            (6, HostWithoutPort),
            (5, HostOtherPort),
            (3, HostTrailingDot),
            (6, HostEdge),
            (1, HostAbsent),
        ]);
        let h = self.host_instance(v);
        let (name, port) = match h.rsplit_once(':') {
            Some((n, p)) => (n.to_string(), Some(p.to_string())),
            None => (h.clone(), None),
        };
        let with_port =
            |p: &Option<String>| p.as_ref().map(|p| format!(":{p}")).unwrap_or_default();
        d.host = Some(match variant {
            HostExact => h.clone(),
            HostCase => {
                if self.rng.chance(50) {
                    h.to_ascii_uppercase()
                } else {
                    flip_case(&h)
                }
            }
            HostWithPort => match &port {
                Some(_) => h.clone(),
                None => format!("{name}:{}", self.rng.pick_s(&["${PORT}", "80"])),
            },
            HostWithoutPort => name.clone(),
            HostOtherPort => format!("{name}:{}", self.rng.pick_s(&["8080", "443", "80"])),
            HostTrailingDot => format!("{name}.{}", with_port(&port)),
            HostEdge => {
                if let Some(rest) = v.strip_prefix("*.") {
                    format!("{rest}{}", with_port(&port))
                } else if v.ends_with('*') {
                    format!(
                        "{}{}",
                        v.trim_end_matches('*').trim_end_matches('.'),
                        with_port(&port)
                    )
                } else {
                    format!("x{h}")
                }
            }
            _ => {
                d.h1_only = true;
                d.host = None;
                d.variants.push(variant);
                return variant.as_str().into();
            }
        });
        d.variants.push(variant);
        variant.as_str().into()
    }

    // ---- methods

    fn method_instance(&mut self, v: &str) -> String {
        if v == "*" {
            return "GET".into();
        }
        let matching: Vec<&str> = if let Some(p) = v.strip_suffix('*') {
            methods().filter(|m| m.starts_with(p)).collect()
        } else if let Some(s) = v.strip_prefix('*') {
            methods().filter(|m| m.ends_with(s)).collect()
        } else {
            return v.to_string();
        };
        if matching.is_empty() {
            "GET".into()
        } else {
            self.rng.pick_s(&matching)
        }
    }

    fn bend_method(&mut self, d: &mut Draft, v: &str) -> String {
        use Variant::*;
        let variant =
            self.rng
                .weighted(&[(5, MethodExact), (3, MethodLowercase), (5, MethodOther)]);
        let m = self.method_instance(v);
        d.method = match variant {
            MethodExact => m,
            MethodLowercase => m.to_ascii_lowercase(),
            _ => {
                let others: Vec<&str> = methods().filter(|o| *o != m).collect();
                self.rng.pick_s(&others)
            }
        };
        if !d.method.chars().all(|c| c.is_ascii_uppercase()) {
            d.h1_only = true;
        }
        d.variants.push(variant);
        variant.as_str().into()
    }

    // ---- headers

    /// A string `v` matches: itself, or something its `*` stands for.
    fn string_instance(&mut self, v: &str) -> String {
        if v == "*" {
            return self.rng.pick_s(&["anything", "x"]);
        }
        if let Some(p) = v.strip_suffix('*') {
            return format!("{p}{}", self.rng.pick_s(&["", "-x", "more"]));
        }
        if let Some(s) = v.strip_prefix('*') {
            return format!("{}{s}", self.rng.pick_s(&["", "a", "pre-"]));
        }
        v.to_string()
    }

    /// Just beside `v`.
    fn string_edge(v: &str) -> String {
        if v == "*" {
            return String::new();
        }
        if let Some(p) = v.strip_suffix('*') {
            let mut p = p.to_string();
            p.pop();
            return p;
        }
        if let Some(s) = v.strip_prefix('*') {
            return s.get(1..).unwrap_or_default().to_string();
        }
        format!("{v}x")
    }

    fn bend_header(&mut self, d: &mut Draft, name: &str, v: &str) -> String {
        use Variant::*;
        let variant = self.rng.weighted(&[
            (6, HeaderExact),
            (5, HeaderValueCase),
            (3, HeaderNameCase),
            (5, HeaderRepeatedBenignFirst),
            (4, HeaderRepeatedMatchedFirst),
            (3, HeaderRepeatedTwice),
            (4, HeaderCommaJoined),
            (4, HeaderAbsent),
            (3, HeaderEmpty),
            (5, HeaderEdge),
        ]);
        let x = self.string_instance(v);
        d.remove_header(name);
        let benign = "benign".to_string();
        match variant {
            HeaderExact => d.headers.push((name.into(), x)),
            HeaderValueCase => d.headers.push((name.into(), flip_case(&x))),
            HeaderNameCase => {
                d.h1_only = true;
                d.headers.push((name.to_ascii_uppercase(), x));
            }
            HeaderRepeatedBenignFirst => {
                d.headers.push((name.into(), benign));
                d.headers.push((name.into(), x));
            }
            HeaderRepeatedMatchedFirst => {
                d.headers.push((name.into(), x));
                d.headers.push((name.into(), benign));
            }
            HeaderRepeatedTwice => {
                d.headers.push((name.into(), x.clone()));
                d.headers.push((name.into(), x));
            }
            HeaderCommaJoined => {
                let joined = if self.rng.chance(50) {
                    format!("{benign}, {x}")
                } else {
                    format!("{x},{benign}")
                };
                d.headers.push((name.into(), joined));
            }
            HeaderAbsent => {}
            HeaderEmpty => d.headers.push((name.into(), String::new())),
            _ => d.headers.push((name.into(), Gen::string_edge(v))),
        }
        d.variants.push(variant);
        variant.as_str().into()
    }

    // ---- addresses

    fn ip(&mut self, v: &str, pick: IpPick) -> u32 {
        let (first, last) = cidr(v);
        match pick {
            IpPick::Inside => {
                let span = u64::from(last - first) + 1;
                first + (self.rng.next_u64() % span) as u32
            }
            IpPick::First => first,
            IpPick::Last => last,
            IpPick::Below => first.wrapping_sub(1),
            IpPick::Above => last.wrapping_add(1),
        }
    }

    /// A client address for `pick` of `v` that a client can bind: in `127.0.0.0/8`, not ending
    /// in `.0` or `.255`. Falls back to an address inside, then to none.
    fn source_ip(&mut self, v: &str, pick: IpPick) -> Option<(Ipv4Addr, IpPick)> {
        let (first, last) = cidr(v);
        let inside = |a: u32| a >= first && a <= last;
        let candidates = match pick {
            IpPick::First => vec![first, first.wrapping_add(1)],
            IpPick::Last => vec![last, last.wrapping_sub(1)],
            IpPick::Below => vec![first.wrapping_sub(1), first.wrapping_sub(2)],
            IpPick::Above => vec![last.wrapping_add(1), last.wrapping_add(2)],
            IpPick::Inside => Vec::new(),
        };
        let want_inside = !matches!(pick, IpPick::Below | IpPick::Above);
        for a in candidates {
            if bindable(a) && inside(a) == want_inside {
                return Some((Ipv4Addr::from(a), pick));
            }
        }
        for _ in 0..16 {
            let a = self.ip(v, IpPick::Inside);
            if bindable(a) {
                return Some((Ipv4Addr::from(a), IpPick::Inside));
            }
        }
        None
    }

    fn bend_source_ip(&mut self, d: &mut Draft, v: &str) -> String {
        let pick = *self.rng.pick(&[
            IpPick::Inside,
            IpPick::First,
            IpPick::Last,
            IpPick::Below,
            IpPick::Above,
        ]);
        match self.source_ip(v, pick) {
            Some((ip, got)) => {
                d.source_ip = ip;
                d.variants.push(got.variant());
                format!("{} {ip}", got.variant().as_str())
            }
            None => "no usable address".into(),
        }
    }

    /// An `X-Forwarded-For` that puts `ip` where `trusted_proxies` makes the proxies look.
    fn xff_for(&mut self, ip: u32) -> String {
        let ip = Ipv4Addr::from(ip);
        match self.mesh.trusted_proxies {
            0 => ip.to_string(),
            1 => format!("{ip}, 10.9.9.9"),
            _ => format!("{ip}, 10.9.9.8, 10.9.9.9"),
        }
    }

    fn bend_remote_ip(&mut self, d: &mut Draft, v: &str) -> String {
        use Variant::*;
        let pick = *self.rng.pick(&[
            IpPick::Inside,
            IpPick::First,
            IpPick::Last,
            IpPick::Below,
            IpPick::Above,
        ]);
        let ip = Ipv4Addr::from(self.ip(v, pick));
        let shape = self.rng.weighted(&[
            (5, XffSingle),
            (4, XffFirstOfTwo),
            (4, XffLastOfTwo),
            (3, XffMiddleOfThree),
            (3, XffAbsent),
        ]);
        d.xff = match shape {
            XffSingle => Some(ip.to_string()),
            XffFirstOfTwo => Some(format!("{ip}, 10.9.9.9")),
            XffLastOfTwo => Some(format!("10.9.9.9, {ip}")),
            XffMiddleOfThree => Some(format!("10.9.9.8, {ip}, 10.9.9.9")),
            _ => None,
        };
        if shape == XffAbsent {
            // The peer address is the remote address: aim the client address instead.
            match self.source_ip(v, pick) {
                Some((src, got)) => {
                    d.source_ip = src;
                    d.variants.push(got.variant());
                    d.variants.push(shape);
                    return format!("{}, {} {src}", shape.as_str(), got.variant().as_str());
                }
                None => {
                    d.variants.push(shape);
                    return format!("{}, peer outside", shape.as_str());
                }
            }
        }
        d.variants.push(pick.variant());
        d.variants.push(shape);
        format!("{} {}", shape.as_str(), pick.variant().as_str())
    }

    // ---- JWT

    /// The `(iss, sub)` a principal value matches (`None`: no `sub`).
    fn principal_instance(&mut self, v: &str) -> (String, Option<String>) {
        let default_iss = self.some_issuer();
        let any_sub = self.rng.pick_s(&["alice", "bob"]);
        if v == "*" {
            return (default_iss, Some(any_sub));
        }
        if let Some(rest) = v.strip_prefix('*') {
            return match v.rfind('/') {
                Some(i) => {
                    let iss = &v[..i];
                    let sub = v[i + 1..].to_string();
                    if iss == "*" {
                        (default_iss, Some(sub))
                    } else {
                        (format!("pre{}", &iss[1..]), Some(sub))
                    }
                }
                None => (default_iss, Some(format!("pre{rest}"))),
            };
        }
        if let Some(head) = v.strip_suffix('*') {
            return match v.rfind('/') {
                Some(i) => {
                    let iss = v[..i].to_string();
                    let sub = &v[i + 1..];
                    if sub == "*" {
                        (iss, Some(any_sub))
                    } else {
                        (iss, Some(format!("{}more", &sub[..sub.len() - 1])))
                    }
                }
                None => (format!("{head}more"), Some(any_sub)),
            };
        }
        match v.rfind('/') {
            Some(i) => (v[..i].to_string(), Some(v[i + 1..].to_string())),
            None => (v.to_string(), Some(String::new())),
        }
    }

    fn bend_principal(&mut self, d: &mut Draft, v: &str) -> String {
        use Variant::*;
        let variant = self.rng.weighted(&[
            (6, PrincipalExact),
            (4, PrincipalSubCase),
            (4, PrincipalMissingSub),
            (4, PrincipalSlashSub),
            (4, PrincipalOtherIssuer),
            (3, PrincipalEdge),
        ]);
        let (iss, sub) = self.principal_instance(v);
        let sub = sub.unwrap_or_else(|| "alice".into());
        let (iss, sub): (String, Value) = match variant {
            PrincipalExact => (iss, sub.into()),
            PrincipalSubCase => (iss, flip_case(&sub).into()),
            PrincipalMissingSub => {
                d.token_kind = Some(TokenKind::MissingSub);
                (iss, Value::Null)
            }
            PrincipalSlashSub => {
                d.token_kind = Some(TokenKind::SlashSub);
                (iss, format!("team/{sub}").into())
            }
            PrincipalOtherIssuer => {
                let others: Vec<String> = self
                    .issuers
                    .iter()
                    .filter(|i| **i != iss)
                    .cloned()
                    .collect();
                if others.is_empty() {
                    d.token_kind = Some(TokenKind::WrongIssuer);
                    (WRONG_ISSUER.into(), sub.into())
                } else {
                    (self.rng.pick(&others).clone(), sub.into())
                }
            }
            _ => {
                let mut s = sub.clone();
                s.pop();
                (iss, s.into())
            }
        };
        d.claims.insert("iss".into(), iss.into());
        d.claims.insert("sub".into(), sub);
        d.want_token = true;
        d.variants.push(variant);
        variant.as_str().into()
    }

    fn bend_claim(&mut self, d: &mut Draft, path: &[String], v: &str) -> String {
        use Variant::*;
        let variant = self.rng.weighted(&[
            (6, ClaimExact),
            (5, ClaimInList),
            (4, ClaimCase),
            (4, ClaimMissing),
            (3, ClaimNotString),
            (4, ClaimSpaceJoined),
            (3, ClaimParentList),
            (4, ClaimEdge),
        ]);
        let x = self.string_instance(v);
        let value = match variant {
            ClaimExact => Value::from(x),
            ClaimInList => json!(["other", x]),
            ClaimCase => Value::from(flip_case(&x)),
            ClaimMissing => Value::Null,
            ClaimNotString => match x.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => match x.parse::<i64>() {
                    Ok(n) => Value::from(n),
                    Err(_) => json!({ "value": x }),
                },
            },
            ClaimSpaceJoined => Value::from(format!("{x} other")),
            ClaimParentList => {
                if path.len() >= 2 {
                    let (last, parent) = path
                        .split_last()
                        .map_or(("", &path[..0]), |(l, p)| (l.as_str(), p));
                    set_claim(&mut d.claims, parent, json!([{ last: x }]));
                    d.want_token = true;
                    d.variants.push(variant);
                    return variant.as_str().into();
                }
                json!([x])
            }
            _ => {
                if path == ["aud"] {
                    // Audiences are compared sanitized by jwt_authn, verbatim by RBAC.
                    Value::from(match x.strip_prefix("https://") {
                        Some(rest) => rest.trim_end_matches('/').to_string(),
                        None => format!("https://{x}/"),
                    })
                } else {
                    Value::from(Gen::string_edge(v))
                }
            }
        };
        set_claim(&mut d.claims, path, value);
        d.want_token = true;
        d.variants.push(variant);
        variant.as_str().into()
    }

    // ---- tokens and the request itself

    fn pick_reader(&mut self, iss: Option<&str>) -> Option<Reader> {
        if self.readers.is_empty() {
            return None;
        }
        let matching: Vec<Reader> = self
            .readers
            .iter()
            .filter(|r| Some(r.issuer.as_str()) == iss)
            .cloned()
            .collect();
        if !matching.is_empty() && self.rng.chance(85) {
            return Some(self.rng.pick(&matching).clone());
        }
        Some(self.rng.pick(&self.readers.clone()).clone())
    }

    /// A location no rule of the scenario reads.
    fn unread_location(&mut self) -> Loc {
        let candidates = [
            Loc::Header {
                name: "authorization".into(),
                prefix: "Bearer ".into(),
            },
            Loc::Header {
                name: "x-unread-token".into(),
                prefix: String::new(),
            },
            Loc::Param("unread_token".into()),
            Loc::Cookie("unread".into()),
        ];
        let unread: Vec<Loc> = candidates
            .into_iter()
            .filter(|c| !self.readers.iter().any(|r| r.loc.same_place(c)))
            .collect();
        self.rng.pick(&unread).clone()
    }

    fn token(
        &mut self,
        kind: TokenKind,
        reader: Option<&Reader>,
        aimed: &Map<String, Value>,
    ) -> String {
        let now = self.now;
        let mut c = Map::new();
        c.insert(
            "iss".into(),
            reader
                .map_or(DEMO_ISSUER.to_string(), |r| r.issuer.clone())
                .into(),
        );
        c.insert(
            "sub".into(),
            self.rng.pick_s(&["alice", "bob", DEMO_ISSUER]).into(),
        );
        c.insert("iat".into(), now.into());
        c.insert("exp".into(), (now + 3600).into());
        if let Some(r) = reader
            && !r.audiences.is_empty()
        {
            let aud = self.rng.pick(&r.audiences).clone();
            let aud = if self.rng.chance(20) {
                // Sanitized on both sides: `https://api.example.com/` is `api.example.com`.
                aud.trim_start_matches("https://")
                    .trim_end_matches('/')
                    .to_string()
            } else {
                aud
            };
            c.insert(
                "aud".into(),
                if self.rng.chance(30) {
                    json!(["other-aud", aud])
                } else {
                    aud.into()
                },
            );
        }
        if self.rng.chance(30) {
            c.insert("groups".into(), json!(["group1", "admin"]));
        }
        if self.rng.chance(20) {
            c.insert("scope".into(), "read write".into());
        }
        if self.rng.chance(20) {
            c.insert(
                "nested".into(),
                json!({"key1": "valueA", "inner": {"key2": "valueC"}}),
            );
        }
        if self.rng.chance(20) {
            c.insert("azp".into(), "client-1".into());
        }
        for (k, v) in aimed {
            match (c.get_mut(k), v) {
                (Some(Value::Object(into)), Value::Object(from)) => merge_deep(into, from),
                _ => {
                    c.insert(k.clone(), v.clone());
                }
            }
        }
        let sub = c
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or("alice")
            .to_string();
        match kind {
            TokenKind::Expired => {
                c.insert("iat".into(), (now - 7200).into());
                c.insert("exp".into(), (now - 3600).into());
            }
            TokenKind::NotYetValid => {
                c.insert("nbf".into(), (now + 3600).into());
            }
            TokenKind::NoExpiry => {
                c.insert("exp".into(), Value::Null);
            }
            TokenKind::WrongAudience => {
                c.insert("aud".into(), "wrong-audience".into());
            }
            TokenKind::WrongIssuer => {
                c.insert("iss".into(), WRONG_ISSUER.into());
            }
            TokenKind::MissingSub => {
                c.insert("sub".into(), Value::Null);
            }
            TokenKind::SlashSub if !sub.contains('/') => {
                c.insert("sub".into(), format!("team/{sub}").into());
            }
            TokenKind::ListClaims => {
                c.insert("groups".into(), json!(["group1", "admin"]));
                let aud = c.get("aud").cloned();
                c.insert(
                    "aud".into(),
                    match aud {
                        Some(Value::String(a)) => json!([a, "other-aud"]),
                        Some(other) => other,
                        None => json!(["aud-1", "other-aud"]),
                    },
                );
            }
            TokenKind::SpaceDelimitedScope => {
                c.insert("scope".into(), "read write".into());
                c.insert("permission".into(), "read write".into());
                c.insert("custom_scope".into(), "admin user".into());
                c.insert("roles".into(), "a b".into());
            }
            TokenKind::NestedClaims => {
                c.insert(
                    "nested".into(),
                    json!({
                        "key1": ["valueA", "valueB"],
                        "key2": "valueC",
                        "scope": "read write",
                        "inner": {"key2": "valueC"}
                    }),
                );
            }
            _ => {}
        }
        // Every time claim is written (or removed) here, so the token depends only on `now`.
        for k in ["iss", "sub", "iat", "exp"] {
            c.entry(k).or_insert(Value::Null);
        }
        let mut header = Map::new();
        if kind == TokenKind::UnknownKid {
            header.insert("kid".into(), "unknown-kid".into());
        }
        let alg = if kind == TokenKind::OtherAlgorithm {
            *self.rng.pick(&[Algorithm::RS384, Algorithm::RS512])
        } else {
            Algorithm::RS256
        };
        let t = tokens::mint_with(alg, &c, &header);
        match kind {
            TokenKind::BadSignature => corrupt_signature(&t),
            TokenKind::Garbled => self.garble(&t),
            _ => t,
        }
    }

    fn garble(&mut self, t: &str) -> String {
        let mut parts = t.split('.');
        let header = parts.next().unwrap_or_default();
        let payload = parts.next().unwrap_or_default();
        let sig = parts.next().unwrap_or_default();
        match self.rng.below(6) {
            0 => "TokenInvalid".into(),
            1 => format!("{header}.{payload}"),
            2 => format!("{header}.{}.{sig}", b64url(b"not json")),
            3 => format!("{}.{payload}.", b64url(br#"{"alg":"none","typ":"JWT"}"#)),
            4 => format!("{}.{payload}.{sig}", b64url(b"{\"alg\":")),
            _ => t[..t.len() - 12].to_string(),
        }
    }

    fn place(&mut self, d: &mut Draft, loc: &Loc, token: &str, style: Style) {
        match loc {
            Loc::Header { name, prefix } => {
                let value = match style {
                    Style::AfterOtherCredential => format!("Basic Zm9vOmJhcg==, {prefix}{token}"),
                    Style::LowercasePrefix => format!("{}{token}", prefix.to_ascii_lowercase()),
                    _ => format!("{prefix}{token}"),
                };
                d.headers.push((name.clone(), value));
            }
            Loc::Param(p) => d.query.push(format!("{p}={token}")),
            Loc::Cookie(c) => {
                let value = if self.rng.chance(40) {
                    format!("theme=dark; {c}={token}")
                } else {
                    format!("{c}={token}")
                };
                d.headers.push(("cookie".into(), value));
            }
        }
    }

    fn finish(&mut self, mut d: Draft) -> (Request, Vec<(TokenKind, TokenLocation)>, Vec<Variant>) {
        let mut uses = Vec::new();
        let mut notes = Vec::new();
        // Without any rule, a token is only ever "not read": fewer of those.
        let with_token = d.want_token
            || self
                .rng
                .chance(if self.readers.is_empty() { 15 } else { 40 });
        if with_token {
            let kind = d.token_kind.unwrap_or_else(|| {
                if d.want_token && self.rng.chance(80) {
                    TokenKind::Valid
                } else {
                    *self.rng.pick(TokenKind::ALL)
                }
            });
            let iss = d
                .claims
                .get("iss")
                .and_then(Value::as_str)
                .map(String::from);
            // Styles that need a header with a prefix find one, or fall back to plain.
            let prefixed: Vec<Reader> = self
                .readers
                .iter()
                .filter(|r| r.loc.has_cased_prefix())
                .cloned()
                .collect();
            if matches!(
                d.style,
                Style::AfterOtherCredential | Style::LowercasePrefix
            ) && prefixed.is_empty()
            {
                d.style = Style::Plain;
            }
            let reader = match d.style {
                Style::AfterOtherCredential | Style::LowercasePrefix => {
                    Some(self.rng.pick(&prefixed).clone())
                }
                _ if self.readers.is_empty() || self.rng.chance(8) => None,
                _ => self.pick_reader(iss.as_deref()),
            };
            let (loc, class) = match &reader {
                Some(r) => (r.loc.clone(), r.loc.class()),
                None => (self.unread_location(), TokenLocation::NotRead),
            };
            let token = self.token(kind, reader.as_ref(), &d.claims);
            let style = d.style;
            self.place(&mut d, &loc, &token, style);
            uses.push((kind, class));
            notes.push(format!(
                "token {} in {}{}",
                kind.as_str(),
                loc.describe(),
                if class == TokenLocation::NotRead {
                    " (read by no rule)"
                } else {
                    ""
                }
            ));
            match d.style {
                Style::Twice => {
                    let kind2 = *self.rng.pick(TokenKind::ALL);
                    // Mostly another location; the same one sometimes (a repeated header).
                    let mut other = Vec::new();
                    for r in self.readers.clone() {
                        if !r.loc.same_place(&loc) || self.rng.chance(30) {
                            other.push(r);
                        }
                    }
                    let (loc2, class2, reader2) = if other.is_empty() {
                        (self.unread_location(), TokenLocation::NotRead, None)
                    } else {
                        let r = self.rng.pick(&other).clone();
                        (r.loc.clone(), r.loc.class(), Some(r))
                    };
                    let token2 = self.token(kind2, reader2.as_ref(), &d.claims);
                    self.place(&mut d, &loc2, &token2, Style::Plain);
                    uses.push((kind2, class2));
                    notes.push(format!("and {} in {}", kind2.as_str(), loc2.describe()));
                    d.variants.push(Variant::TokenTwice);
                }
                Style::AfterOtherCredential => {
                    notes.push("after another credential".into());
                    d.variants.push(Variant::TokenAfterOtherCredential);
                }
                Style::LowercasePrefix => {
                    notes.push("prefix in lowercase".into());
                    d.variants.push(Variant::TokenLowercasePrefix);
                }
                _ => {}
            }
        } else {
            notes.push("no token".into());
        }
        if d.style == Style::CorsPreflight {
            d.method = "OPTIONS".into();
            d.headers
                .push(("origin".into(), "https://web.example.com".into()));
            d.headers
                .push(("access-control-request-method".into(), "GET".into()));
            notes.push("CORS preflight".into());
            d.variants.push(Variant::CorsPreflight);
        }
        if !self.output_headers.is_empty()
            && (d.style == Style::SpoofedOutputs || self.rng.chance(8))
        {
            let h = self.rng.pick(&self.output_headers).clone();
            d.headers.push((h.clone(), "spoofed".into()));
            notes.push(format!("spoofed {h}"));
            d.variants.push(Variant::SpoofedOutputHeader);
        }
        // Methods outside Envoy's list (lowercase ones) are for HTTP/1 only.
        if !d.method.chars().all(|c| c.is_ascii_uppercase()) {
            d.h1_only = true;
        }
        if let Some(xff) = &d.xff {
            d.headers.push(("x-forwarded-for".into(), xff.clone()));
        }
        let protocol = if !d.h1_only && self.rng.chance(15) {
            Protocol::H2c
        } else {
            Protocol::Http1
        };
        if protocol == Protocol::H2c {
            for (name, _) in &mut d.headers {
                *name = name.to_ascii_lowercase();
            }
            notes.push("h2c".into());
        }
        let mut target = d.path.clone();
        if !d.query.is_empty() {
            target.push('?');
            target.push_str(&d.query.join("&"));
        }
        if let Some(f) = &d.fragment {
            target.push('#');
            target.push_str(f);
        }
        let mut name = d.aims.join("; ");
        for n in notes {
            name.push_str("; ");
            name.push_str(&n);
        }
        let request = Request {
            name,
            method: d.method,
            target,
            host: d.host,
            headers: d.headers,
            source_ip: d.source_ip,
            body: String::new(),
            protocol,
        };
        (request, uses, d.variants)
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

fn strings(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

fn metadata(name: &str, namespace: &str, dry_run: Option<&str>) -> Y {
    let mut m = vec![("name", ys(name)), ("namespace", ys(namespace))];
    if let Some(v) = dry_run {
        m.push(("annotations", ymap(vec![("istio.io/dry-run", ys(v))])));
    }
    ymap(m)
}

fn selector_yaml(s: &Selector) -> Option<Y> {
    match s {
        Selector::Absent => None,
        Selector::Empty => Some(yobj(Vec::new())),
        Selector::Labels(l) => Some(ymap(vec![(
            "matchLabels",
            yobj(l.iter().map(|(k, v)| (k.clone(), ys(v.as_str()))).collect()),
        )])),
    }
}

fn ra_yaml(ra: &RaGen) -> Y {
    let mut spec = Vec::new();
    if let Some(s) = selector_yaml(&ra.selector) {
        spec.push(("selector", s));
    }
    let rules = ra
        .rules
        .iter()
        .map(|r| {
            let mut m = vec![("issuer", ys(r.issuer.as_str())), ("jwks", ys(DEMO_JWKS))];
            if !r.audiences.is_empty() {
                m.push(("audiences", ylist(&r.audiences)));
            }
            if !r.from_headers.is_empty() {
                m.push((
                    "fromHeaders",
                    Y::Array(
                        r.from_headers
                            .iter()
                            .map(|(name, prefix)| {
                                let mut h = vec![("name", ys(name.as_str()))];
                                if let Some(p) = prefix {
                                    h.push(("prefix", ys(p.as_str())));
                                }
                                ymap(h)
                            })
                            .collect(),
                    ),
                ));
            }
            if !r.from_params.is_empty() {
                m.push(("fromParams", ylist(&r.from_params)));
            }
            if !r.from_cookies.is_empty() {
                m.push(("fromCookies", ylist(&r.from_cookies)));
            }
            if let Some(h) = &r.output_payload {
                m.push(("outputPayloadToHeader", ys(h.as_str())));
            }
            if !r.claim_headers.is_empty() {
                m.push((
                    "outputClaimToHeaders",
                    Y::Array(
                        r.claim_headers
                            .iter()
                            .map(|(h, c)| {
                                ymap(vec![("header", ys(h.as_str())), ("claim", ys(c.as_str()))])
                            })
                            .collect(),
                    ),
                ));
            }
            if let Some(f) = r.forward {
                m.push(("forwardOriginalToken", Y::Bool(f)));
            }
            if !r.space_delimited.is_empty() {
                m.push(("spaceDelimitedClaims", ylist(&r.space_delimited)));
            }
            ymap(m)
        })
        .collect();
    spec.push(("jwtRules", Y::Array(rules)));
    ymap(vec![
        ("apiVersion", ys(ra.api)),
        ("kind", ys("RequestAuthentication")),
        ("metadata", metadata(&ra.name, &ra.namespace, None)),
        ("spec", ymap(spec)),
    ])
}

fn fields_yaml(fields: &[FieldGen]) -> Y {
    yobj(
        fields
            .iter()
            .map(|f| (f.yaml.clone(), ylist(&f.values)))
            .collect(),
    )
}

fn rule_yaml(r: &RuleGen) -> Y {
    let mut m = Vec::new();
    if let Some(from) = &r.from {
        m.push((
            "from",
            Y::Array(
                from.iter()
                    .map(|s| ymap(vec![("source", fields_yaml(s))]))
                    .collect(),
            ),
        ));
    }
    if let Some(to) = &r.to {
        m.push((
            "to",
            Y::Array(
                to.iter()
                    .map(|o| ymap(vec![("operation", fields_yaml(o))]))
                    .collect(),
            ),
        ));
    }
    if let Some(when) = &r.when {
        m.push((
            "when",
            Y::Array(
                when.iter()
                    .map(|c| {
                        let mut e = vec![("key".to_string(), ys(c[0].name.as_str()))];
                        e.extend(c.iter().map(|f| (f.yaml.clone(), ylist(&f.values))));
                        yobj(e)
                    })
                    .collect(),
            ),
        ));
    }
    ymap(m)
}

fn ap_yaml(ap: &ApGen) -> Y {
    let mut spec = Vec::new();
    if let Some(s) = selector_yaml(&ap.selector) {
        spec.push(("selector", s));
    }
    if ap.write_action {
        spec.push(("action", ys(ap.action.as_str())));
    }
    if ap.action == Act::Custom {
        spec.push(("provider", ymap(vec![("name", ys("unknown-ext"))])));
    }
    match &ap.rules {
        Rules::Absent => {}
        Rules::Empty => spec.push(("rules", Y::Array(Vec::new()))),
        Rules::List(rules) => spec.push(("rules", Y::Array(rules.iter().map(rule_yaml).collect()))),
    }
    ymap(vec![
        ("apiVersion", ys(ap.api)),
        ("kind", ys("AuthorizationPolicy")),
        (
            "metadata",
            metadata(&ap.name, &ap.namespace, ap.dry_run.as_deref()),
        ),
        ("spec", ymap(spec)),
    ])
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// `(first, last)` of an IPv4 address or CIDR.
fn cidr(v: &str) -> (u32, u32) {
    let (ip, len) = match v.split_once('/') {
        Some((ip, l)) => (ip, l.parse::<u32>().unwrap_or(32).min(32)),
        None => (v, 32),
    };
    let ip = ip.parse::<Ipv4Addr>().map_or(0x7f00_0001, u32::from);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    (ip & mask, (ip & mask) | !mask)
}

/// Whether a client can bind `a` on loopback without surprises.
fn bindable(a: u32) -> bool {
    a >> 24 == 127 && (a & 0xff) != 0 && (a & 0xff) != 255
}

/// `s` with the case of its first letter flipped.
fn flip_case(s: &str) -> String {
    let mut done = false;
    s.chars()
        .map(|c| {
            if !done && c.is_ascii_alphabetic() {
                done = true;
                if c.is_ascii_lowercase() {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            } else {
                c
            }
        })
        .collect()
}

/// `p` with its first letter after the leading `/` percent-encoded (`/admin` → `/%61dmin`).
fn encode_one_letter(p: &str, lower_hex: bool) -> String {
    match p
        .char_indices()
        .skip(1)
        .find(|(_, c)| c.is_ascii_alphabetic())
    {
        Some((i, c)) => {
            let enc = if lower_hex {
                format!("%{:02x}", c as u32)
            } else {
                format!("%{:02X}", c as u32)
            };
            format!("{}{enc}{}", &p[..i], &p[i + 1..])
        }
        None => format!("{p}%7E"),
    }
}

/// Sets `path` in `claims`, making objects on the way (a `null` value removes the claim).
fn set_claim(claims: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = claims;
    for p in parents {
        let entry = at
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else {
            return;
        };
        at = next;
    }
    if value.is_null() && !parents.is_empty() {
        at.remove(last);
    } else {
        at.insert(last.clone(), value);
    }
}

fn merge_deep(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => merge_deep(a, b),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

/// A token whose signature has one character changed (in the middle, where every bit counts).
fn corrupt_signature(t: &str) -> String {
    let Some(dot) = t.rfind('.') else {
        return t.to_string();
    };
    let mut bytes = t.as_bytes().to_vec();
    let i = dot + 1 + (bytes.len() - dot - 1) / 2;
    if i < bytes.len() {
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    }
    String::from_utf8(bytes).unwrap_or_else(|_| t.to_string())
}

/// Unpadded base64url.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64url_matches_the_rfc_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64url(plain.as_bytes()), enc);
        }
    }

    #[test]
    fn cidr_edges() {
        assert_eq!(
            cidr("127.0.0.8/29"),
            (
                u32::from(Ipv4Addr::new(127, 0, 0, 8)),
                u32::from(Ipv4Addr::new(127, 0, 0, 15))
            )
        );
        assert_eq!(cidr("10.0.0.1").0, cidr("10.0.0.1").1);
        assert_eq!(cidr("0.0.0.0/0"), (0, u32::MAX));
    }

    #[test]
    fn yaml_quotes_every_string_and_reads_back() {
        let y = ymap(vec![
            ("a", ys("${PORT}")),
            (
                "b",
                Y::Array(vec![ymap(vec![
                    ("c", ylist(&["8080".into()])),
                    ("d", Y::Bool(true)),
                ])]),
            ),
            ("e", yobj(Vec::new())),
        ]);
        let text = to_yaml(&y);
        assert!(!text.contains("a: ${PORT}"), "{text}");
        let back: Value = serde_saphyr::from_str(&text.replace("${PORT}", "9090")).unwrap();
        assert_eq!(back["a"], "9090", "{text}");
        assert_eq!(back["b"][0]["c"][0], "8080", "{text}");
        assert_eq!(back["b"][0]["d"], true, "{text}");
        assert_eq!(back["e"], json!({}), "{text}");
    }

    #[test]
    fn principal_instances_follow_the_split_at_the_last_slash() {
        let mut g = Gen::new(1, 0);
        g.issuers = vec![DEMO_ISSUER.into()];
        assert_eq!(
            g.principal_instance("https://a.example/team/alice"),
            ("https://a.example/team".into(), Some("alice".into()))
        );
        assert_eq!(
            g.principal_instance("iss"),
            ("iss".into(), Some(String::new()))
        );
        assert_eq!(
            g.principal_instance("*.example.com/bob"),
            ("pre.example.com".into(), Some("bob".into()))
        );
        assert_eq!(g.principal_instance("iss/al*").1, Some("almore".into()));
    }

    #[test]
    fn path_edits_keep_a_leading_slash() {
        for seed in 0..200 {
            let g = generate(seed, 1_700_000_000);
            for r in &g.scenario.requests {
                assert!(r.target.starts_with('/'), "seed {seed}: {:?}", r.target);
            }
        }
    }
}
