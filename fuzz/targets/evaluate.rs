//! A structured request evaluated against a fixed compiled policy set: the walkthrough's step 4
//! (RequestAuthentication for `testing@secure.istio.io` and an ALLOW policy that requires that
//! principal and `groups` containing `group1`) plus a DENY policy with paths, path templates,
//! hosts, methods and `when` conditions. Evaluation must never panic.
//!
//! Properties:
//! * the ALLOW policy requires a verified token, so every request that is let through (200) has
//!   the demo principal, a verified payload whose `groups` contains `group1`, and a token that
//!   is within its validity at `now` (60 s skew);
//! * the verified-token cache changes nothing: the same request evaluated again with a key
//!   store that has a cache (shared by all runs, so entries made at one `now` are hit at
//!   another) gets the same status, details and principal.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::LazyLock;

use arbitrary::{Arbitrary, Unstructured};
use http::{HeaderMap, HeaderName, HeaderValue};
use meshguard_engine::{
    EvalOptions, HttpRequest, KeyStore, NoRemoteKeys, PathNormalization, VerifiedCache, evaluate,
};
use meshguard_jwt::Jwks;
use meshguard_model::{LoadOptions, Workload, load_str};
use meshguard_policy::CompiledWorkload;
use meshguard_policy::RemoteKeySource;
use serde_json::Value;

const REQUEST_AUTHENTICATION: &str =
    include_str!("../../examples/step4-require-claim/request-authentication.yaml");
const AUTHORIZATION_POLICY: &str =
    include_str!("../../examples/step4-require-claim/authorization-policy.yaml");
const DEMO: &str = include_str!("../../testdata/istio-demo/demo.jwt");
const GROUPS_SCOPE: &str = include_str!("../../testdata/istio-demo/groups-scope.jwt");

const DENY_POLICY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-fuzz
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/admin/{**}", "/api/{*}/secret", "/exact"]
        methods: ["GET", "POST"]
  - to:
    - operation:
        hosts: ["evil.example.com", "*.internal"]
        notPaths: ["/healthz"]
  - to:
    - operation:
        paths: ["/private*", "*.bak"]
    when:
    - key: request.headers[x-role]
      notValues: ["admin"]
  - when:
    - key: request.auth.claims[scope]
      values: ["scope2"]
    - key: request.headers[x-debug]
      values: ["*"]
"#;

/// Unix time used when the input does not pick one (the demo tokens expire in 2118).
const NOW: u64 = 1_795_890_870;
const PRINCIPAL: &str = "testing@secure.istio.io/testing@secure.istio.io";

static COMPILED: LazyLock<CompiledWorkload> = LazyLock::new(|| {
    let text = [REQUEST_AUTHENTICATION, AUTHORIZATION_POLICY, DENY_POLICY].join("\n---\n");
    let set = load_str(Path::new("fuzz.yaml"), &text, &LoadOptions::default())
        .expect("the fuzz policies load");
    let labels = BTreeMap::from([("app".to_string(), "httpbin".to_string())]);
    let cw = meshguard_policy::compile(&set, &Workload::new("foo", labels))
        .expect("the fuzz policies compile");
    assert_eq!(cw.providers.len(), 1);
    assert_eq!((cw.allow.len(), cw.deny.len()), (1, 1));
    cw
});

/// No remote keys (the policies have none), but a verified-token cache like the proxy's.
struct CachingKeys(VerifiedCache);

impl KeyStore for CachingKeys {
    fn remote(&self, _: &RemoteKeySource) -> Option<Jwks> {
        None
    }

    fn verified_cache(&self) -> Option<&VerifiedCache> {
        Some(&self.0)
    }
}

static CACHING_KEYS: LazyLock<CachingKeys> = LazyLock::new(|| CachingKeys(VerifiedCache::new(64)));

#[derive(Arbitrary, Debug)]
enum Method {
    Get,
    Post,
    Options,
    Delete,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Name {
    XRole,
    XDebug,
    Origin,
    AccessControlRequestMethod,
    Authorization,
    Cookie,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum TokenText {
    Demo,
    GroupsScope,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Place {
    /// `Authorization: Bearer <token>`.
    Header,
    /// `?access_token=<token>` appended to the path.
    Query,
}

#[derive(Arbitrary, Debug)]
enum Mode {
    None,
    Base,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

#[derive(Arbitrary, Debug)]
pub struct Input {
    method: Method,
    path: String,
    host: String,
    headers: Vec<(Name, Vec<u8>)>,
    token: Option<(TokenText, Place)>,
    mode: Mode,
    now: Option<u64>,
    source_ip: Option<[u8; 4]>,
}

/// Reads the bytes as libfuzzer-sys's `fuzz_target!` reads a typed input and runs [`run`];
/// false, without running it, when they are too short for the type's size hint or unreadable.
pub fn run_bytes(data: &[u8]) -> bool {
    if data.len() < Input::size_hint(0).0 {
        return false;
    }
    match Input::arbitrary_take_rest(Unstructured::new(data)) {
        Ok(input) => {
            run(input);
            true
        }
        Err(_) => false,
    }
}

pub fn run(input: Input) {
    let cw = &*COMPILED;
    let mut headers = HeaderMap::new();
    for (name, value) in input.headers.iter().take(8) {
        let name = match name {
            Name::XRole => HeaderName::from_static("x-role"),
            Name::XDebug => HeaderName::from_static("x-debug"),
            Name::Origin => http::header::ORIGIN,
            Name::AccessControlRequestMethod => http::header::ACCESS_CONTROL_REQUEST_METHOD,
            Name::Authorization => http::header::AUTHORIZATION,
            Name::Cookie => http::header::COOKIE,
            Name::Other(s) => match HeaderName::from_bytes(s.as_bytes()) {
                Ok(n) => n,
                Err(_) => continue,
            },
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    let mut path = input.path.clone();
    if let Some((text, place)) = &input.token {
        let token = match text {
            TokenText::Demo => DEMO.trim(),
            TokenText::GroupsScope => GROUPS_SCOPE.trim(),
            TokenText::Raw(s) => s.as_str(),
        };
        match place {
            Place::Header => {
                if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
                    headers.append(http::header::AUTHORIZATION, v);
                }
            }
            Place::Query => {
                path.push(if path.contains('?') { '&' } else { '?' });
                path.push_str("access_token=");
                path.push_str(token);
            }
        }
    }
    let method = match &input.method {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Options => "OPTIONS",
        Method::Delete => "DELETE",
        Method::Other(s) => s.as_str(),
    };
    let path_normalization = match input.mode {
        Mode::None => PathNormalization::None,
        Mode::Base => PathNormalization::Base,
        Mode::MergeSlashes => PathNormalization::MergeSlashes,
        Mode::DecodeAndMergeSlashes => PathNormalization::DecodeAndMergeSlashes,
    };
    let cached_headers = headers.clone();
    let opts = EvalOptions {
        path_normalization,
        now: input.now.unwrap_or(NOW),
        keys: &NoRemoteKeys,
        explain: input.now.is_some_and(|n| n % 2 == 0),
    };
    let source_ip = input.source_ip.map(|ip| IpAddr::V4(Ipv4Addr::from(ip)));
    let request = HttpRequest {
        method,
        path: &path,
        host: &input.host,
        scheme: "http",
        headers: &mut headers,
        source_ip,
        remote_ip: None,
        destination_ip: None,
        destination_port: Some(8080),
        sni: None,
        peer_identity: None,
    };
    let outcome = evaluate(cw, request, &opts);
    let mut cached_headers = cached_headers;
    let cached = evaluate(
        cw,
        HttpRequest {
            method,
            path: &path,
            host: &input.host,
            scheme: "http",
            headers: &mut cached_headers,
            source_ip,
            remote_ip: None,
            destination_ip: None,
            destination_port: Some(8080),
            sni: None,
            peer_identity: None,
        },
        &EvalOptions {
            keys: &*CACHING_KEYS,
            ..opts
        },
    );
    assert_eq!(
        (
            outcome.status(),
            outcome.denial.as_ref().map(|d| &d.reply.details)
        ),
        (
            cached.status(),
            cached.denial.as_ref().map(|d| &d.reply.details)
        ),
        "the token cache changed the decision: {input:?}"
    );
    assert_eq!(outcome.principal, cached.principal, "{input:?}");
    assert_eq!(headers, cached_headers, "{input:?}");
    let status = outcome.status();
    assert!(
        matches!(status, 200 | 400 | 401 | 403),
        "unexpected status {status}"
    );
    if status == 200 {
        assert_eq!(
            outcome.principal.as_deref(),
            Some(PRINCIPAL),
            "allowed without the required principal: {input:?}"
        );
        let payload = &outcome
            .payload
            .as_ref()
            .expect("a verified payload")
            .payload;
        let groups = payload.get("groups");
        let has_group1 = match groups {
            Some(Value::Array(list)) => list.iter().any(|g| g == "group1"),
            Some(Value::String(s)) => s == "group1",
            _ => false,
        };
        assert!(
            has_group1,
            "allowed without groups containing group1: {input:?}"
        );
        assert!(outcome.path.is_some());
        let now = opts.now;
        let claim = |name: &str| payload.get(name).and_then(Value::as_u64);
        if let Some(exp) = claim("exp").filter(|&e| e != 0) {
            assert!(
                now <= exp.saturating_add(60),
                "expired token allowed: {input:?}"
            );
        }
        if let Some(nbf) = claim("nbf") {
            assert!(
                now.saturating_add(60) >= nbf,
                "early token allowed: {input:?}"
            );
        }
    }
}
