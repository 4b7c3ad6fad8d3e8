//! Value matching seen through the whole engine: a policy as written in YAML, a request as the
//! proxy hands it over (header values as raw bytes), and the answer a client would get.
//!
//! These cases cannot be written in the YAML conformance suites: their requests carry bytes
//! that are not UTF-8, or paths whose answer changed with Envoy's template character class.

use std::path::Path;

use http::{HeaderMap, HeaderName, HeaderValue};
use meshguard_engine::{EvalOptions, HttpRequest, NoRemoteKeys, PathNormalization, evaluate};
use meshguard_model::{LoadOptions, Workload, load_str};
use meshguard_policy::CompiledWorkload;

fn compile(yaml: &str) -> CompiledWorkload {
    let set = load_str(Path::new("inline.yaml"), yaml, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let workload = Workload::new("foo", [("app".to_string(), "web".to_string())].into());
    meshguard_policy::compile(&set, &workload).unwrap_or_else(|e| panic!("{e}"))
}

/// The status a client gets for `GET path` with `headers` (raw bytes, as received).
fn status(cw: &CompiledWorkload, path: &str, headers: &[(&str, &[u8])]) -> u16 {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    let out = evaluate(
        cw,
        HttpRequest {
            method: "GET",
            path,
            host: "web.foo",
            scheme: "http",
            headers: &mut map,
            source_ip: Some("10.1.2.3".parse().unwrap()),
            remote_ip: None,
            destination_ip: None,
            destination_port: Some(8080),
            sni: None,
            peer_identity: None,
        },
        &EvalOptions {
            path_normalization: PathNormalization::Base,
            now: 1_700_000_000,
            keys: &NoRemoteKeys,
            explain: false,
        },
    );
    if let Some(d) = &out.denial {
        assert_eq!(d.reply.status, 403, "{d:?}");
    }
    out.status()
}

fn deny(rule: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny, namespace: foo}}
spec:
  action: DENY
  rules:
  - {rule}
"
    )
}

fn allow(rule: &str) -> String {
    deny(rule).replace("DENY", "ALLOW")
}

#[test]
fn deny_on_a_segment_template_covers_equals_and_star() {
    let cw = compile(&deny(
        "to: [{operation: {paths: [\"/path/template/{*}\"]}}]",
    ));
    for path in [
        "/path/template/a",
        "/path/template/a=b",
        "/path/template/a*b",
        "/path/template/*",
        "/path/template/x=1?q=2",
    ] {
        assert_eq!(status(&cw, path, &[]), 403, "{path}");
    }
    for path in [
        "/path/template/",
        "/path/template/a/b",
        "/path/template/a%3Cb/",
    ] {
        assert_eq!(status(&cw, path, &[]), 200, "{path}");
    }
}

#[test]
fn deny_on_a_glob_template_covers_equals_and_star() {
    let cw = compile(&deny("to: [{operation: {paths: [\"/api/{**}/admin\"]}}]"));
    for path in ["/api/a=b/admin", "/api/*/x*y/admin", "/api//admin"] {
        assert_eq!(status(&cw, path, &[]), 403, "{path}");
    }
    assert_eq!(status(&cw, "/api/admin", &[]), 200);
}

#[test]
fn not_paths_templates_do_not_leak_equals_or_star() {
    // ALLOW everything except what the template names: `a=b` and `a*b` are named too.
    let cw = compile(&allow("to: [{operation: {notPaths: [\"/private/{*}\"]}}]"));
    assert_eq!(status(&cw, "/public", &[]), 200);
    for path in ["/private/a", "/private/a=b", "/private/a*b"] {
        assert_eq!(status(&cw, path, &[]), 403, "{path}");
    }
}

#[test]
fn header_prefix_matches_non_utf8_bytes() {
    let cw = compile(&deny(
        "when: [{key: \"request.headers[X-header]\", values: [\"header-prefix-*\"]}]",
    ));
    assert_eq!(
        status(&cw, "/", &[("x-header", b"header-prefix-x\xE9")]),
        403
    );
    assert_eq!(status(&cw, "/", &[("x-header", b"header-prefix-")]), 403);
    assert_eq!(status(&cw, "/", &[("x-header", b"other\xE9")]), 200);
    assert_eq!(
        status(&cw, "/", &[("x-header", b"\xE9header-prefix-")]),
        200
    );
    // One bad value among several is enough (each value is matched on its own).
    assert_eq!(
        status(
            &cw,
            "/",
            &[("x-header", b"ok"), ("x-header", b"header-prefix-\xFF\xFE")]
        ),
        403
    );
}

#[test]
fn header_exact_and_suffix_compare_bytes() {
    let cw = compile(&deny(
        "when: [{key: \"request.headers[x-role]\", values: [\"admin\u{e9}\", \"*-root\"]}]",
    ));
    // `adminé` in the policy is UTF-8 (`C3 A9`); the same bytes on the wire match ...
    assert_eq!(
        status(&cw, "/", &[("x-role", "admin\u{e9}".as_bytes())]),
        403
    );
    // ... Latin-1 `E9` is another byte string and does not.
    assert_eq!(status(&cw, "/", &[("x-role", b"admin\xE9")]), 200);
    assert_eq!(status(&cw, "/", &[("x-role", b"\xFF\xFE-root")]), 403);
    assert_eq!(status(&cw, "/", &[("x-role", b"\xFF\xFE-rooted")]), 200);
}

#[test]
fn header_not_values_catch_non_utf8_bytes() {
    // ALLOW unless the header starts with `internal-`: a non-UTF-8 tail must not hide it.
    let cw = compile(&allow(
        "when: [{key: \"request.headers[x-zone]\", notValues: [\"internal-*\"]}]",
    ));
    assert_eq!(status(&cw, "/", &[("x-zone", b"public")]), 200);
    assert_eq!(status(&cw, "/", &[("x-zone", b"internal-\xE9")]), 403);
    assert_eq!(status(&cw, "/", &[("x-zone", b"public\xE9")]), 200);
    // Presence sees non-UTF-8 values as present, as before.
    let cw = compile(&deny(
        "when: [{key: \"request.headers[x-bin]\", values: [\"*\"]}]",
    ));
    assert_eq!(status(&cw, "/", &[("x-bin", b"\xFF")]), 403);
    assert_eq!(status(&cw, "/", &[]), 200);
}

/// A peer identity handed to the engine (what an mTLS listener puts on the connection) is what
/// `source.principals` matches; without one (plaintext) the ALLOW does not match.
#[test]
fn the_peer_identity_is_what_principals_match() {
    let cw = compile(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: sleep-only, namespace: foo}
spec:
  rules:
  - from: [{source: {principals: [cluster.local/ns/foo/sa/sleep]}}]
",
    );
    let status_for = |peer: Option<&str>| {
        let mut headers = HeaderMap::new();
        evaluate(
            &cw,
            HttpRequest {
                method: "GET",
                path: "/",
                host: "web.foo",
                scheme: "https",
                headers: &mut headers,
                source_ip: Some("10.1.2.3".parse().unwrap()),
                remote_ip: None,
                destination_ip: None,
                destination_port: Some(8080),
                sni: None,
                peer_identity: peer.map(meshguard_policy::PeerUris::One),
            },
            &EvalOptions {
                path_normalization: PathNormalization::Base,
                now: 1_700_000_000,
                keys: &NoRemoteKeys,
                explain: false,
            },
        )
        .status()
    };
    assert_eq!(
        status_for(Some("spiffe://cluster.local/ns/foo/sa/sleep")),
        200
    );
    assert_eq!(
        status_for(Some("spiffe://cluster.local/ns/foo/sa/other")),
        403
    );
    assert_eq!(status_for(None), 403);
}
