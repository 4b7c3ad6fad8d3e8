//! Authorization bypass regressions, one test per bulletin (docs/semantics.md §3.13), and abuse
//! limits, through the real proxy. Requests are sent raw over TCP where a client library would
//! "fix" them (fragments, odd header names, absolute-form targets).

use std::net::TcpStream;
use std::time::Duration;

mod support;

use support::fs::tmp;
use support::http::exchange;
use support::proxy::{Proxy, Stdout, meshguard, spawn};

/// Starts the proxy for namespace `foo` on `policies`, without an access log; on
/// `127.0.0.1:0` unless `extra` names a `--listen`.
fn start(policies: &str, extra: &[&str]) -> Proxy {
    let dir = tmp("bypass");
    std::fs::write(dir.join("p.yaml"), policies).unwrap();
    spawn(
        meshguard()
            .args([
                "proxy",
                "--admin",
                "127.0.0.1:0",
                "--no-access-log",
                "--namespace",
                "foo",
                "--policies",
            ])
            .arg(&dir)
            .args(if extra.contains(&"--listen") {
                &[][..]
            } else {
                &["--listen", "127.0.0.1:0"][..]
            })
            .args(extra),
        Stdout::Null,
    )
}

/// Sends raw bytes, returns the status code (0 if the connection closed without one).
fn raw(addr: &str, request: &str) -> u16 {
    exchange(addr, request).status
}

fn get(addr: &str, target: &str, extra_headers: &str) -> u16 {
    raw(
        addr,
        &format!(
            "GET {target} HTTP/1.1\r\nHost: app.example\r\n{extra_headers}Connection: close\r\n\r\n"
        ),
    )
}

const DENY_ADMIN: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-admin, namespace: foo}\nspec:\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/admin\", \"/admin/*\"]}}]}]\n";

#[test]
fn cve_2019_9901_and_fragments_and_queries_under_base() {
    let p = start(DENY_ADMIN, &[]);
    let a = p.addr();
    assert_eq!(get(a, "/admin", ""), 403);
    assert_eq!(
        get(a, "/public/../admin", ""),
        403,
        "dot segments (CVE-2019-9901)"
    );
    assert_eq!(
        get(a, "/public/%2e%2E/admin", ""),
        403,
        "encoded dot segments"
    );
    assert_eq!(get(a, "/./admin/x", ""), 403);
    assert_eq!(
        get(a, "/admin?x=1", ""),
        403,
        "query never matched (ISTIO-SECURITY-2020-001)"
    );
    assert_eq!(get(a, "/admin?", ""), 403);
    assert_eq!(
        get(a, "/admin#frag", ""),
        403,
        "fragment stripped (CVE-2021-39156)"
    );
    assert_eq!(get(a, "/%61dmin", ""), 403, "unreserved %-decoding");
    assert_eq!(get(a, "/public\\..\\admin", ""), 403, "backslashes");
    assert_eq!(get(a, "/admin%00", ""), 400, "%00 refused");
    assert_eq!(get(a, "/public", ""), 200);
    // BASE keeps `//` and `%2F`, as Istio does by default: these are different paths.
    assert_eq!(get(a, "//admin", ""), 200);
    assert_eq!(get(a, "/%2Fadmin", ""), 200);
}

#[test]
fn cve_2021_31920_slashes_under_merge_and_decode_modes() {
    let p = start(DENY_ADMIN, &["--path-normalization", "MERGE_SLASHES"]);
    assert_eq!(get(p.addr(), "//admin", ""), 403);
    // Dot segments first, then merging, as Envoy: `/app//../admin` is `/app/admin`.
    assert_eq!(get(p.addr(), "/app//../admin", ""), 200);
    assert_eq!(
        get(p.addr(), "/%2Fadmin", ""),
        200,
        "MERGE_SLASHES does not decode %2F"
    );
    let p = start(
        DENY_ADMIN,
        &["--path-normalization", "DECODE_AND_MERGE_SLASHES"],
    );
    assert_eq!(get(p.addr(), "/%2Fadmin", ""), 403);
    assert_eq!(get(p.addr(), "/%5Cadmin", ""), 403);
    assert_eq!(get(p.addr(), "/public%2F..%2Fadmin", ""), 403);
    let p = start(DENY_ADMIN, &["--path-normalization", "NONE"]);
    assert_eq!(
        get(p.addr(), "/admin#x", ""),
        403,
        "the fragment is stripped even with NONE"
    );
    assert_eq!(get(p.addr(), "/admin%00", ""), 400);
}

#[test]
fn cve_2021_39155_hosts_are_case_insensitive_and_ports_are_literal() {
    let policy = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-secret, namespace: foo}\nspec:\n  action: DENY\n  rules: [{to: [{operation: {hosts: [secret.com, \"secret.com:*\"]}}]}]\n";
    let p = start(policy, &[]);
    let req = |host: &str| {
        raw(
            p.addr(),
            &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    };
    assert_eq!(req("secret.com"), 403);
    assert_eq!(req("SECRET.com"), 403, "case (CVE-2021-39155)");
    assert_eq!(req("secret.com:8080"), 403, "host:port via the :* variant");
    assert_eq!(req("other.com"), 200);
    // Absolute-form targets: the host in the URI is what policies see, as in Envoy.
    assert_eq!(
        raw(
            p.addr(),
            "GET http://secret.com/ HTTP/1.1\r\nHost: other.com\r\nConnection: close\r\n\r\n"
        ),
        403
    );
}

#[test]
fn cve_2026_26308_and_cve_2020_25017_repeated_headers() {
    let policy = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-admin-role, namespace: foo}\nspec:\n  action: DENY\n  rules: [{when: [{key: \"request.headers[x-role]\", values: [admin]}]}]\n";
    let p = start(policy, &[]);
    assert_eq!(get(p.addr(), "/", "x-role: admin\r\n"), 403);
    assert_eq!(
        get(p.addr(), "/", "x-role: user\r\nx-role: admin\r\n"),
        403,
        "second value (CVE-2020-25017)"
    );
    assert_eq!(
        get(p.addr(), "/", "x-role: admin\r\nx-role: user\r\n"),
        403,
        "first value"
    );
    assert_eq!(
        get(p.addr(), "/", "X-ROLE: admin\r\n"),
        403,
        "header names are case-insensitive"
    );
    assert_eq!(get(p.addr(), "/", "x-role: user\r\n"), 200);
}

#[test]
fn odd_requests_are_refused_not_waved_through() {
    let p = start(DENY_ADMIN, &[]);
    let a = p.addr();
    // Header names with whitespace or odd bytes, obsolete line folding, NUL: 400 from the codec.
    assert_eq!(get(a, "/admin", "x-role : admin\r\n"), 400);
    assert_eq!(
        raw(
            a,
            "GET /admin HTTP/1.1\r\nHost: x\r\nx-a: 1\r\n folded\r\nConnection: close\r\n\r\n"
        ),
        400
    );
    assert_eq!(
        raw(
            a,
            "GET /admin HTTP/1.1\r\nHost: x\r\nx-\u{1}a: 1\r\nConnection: close\r\n\r\n"
        ),
        400
    );
    // `OPTIONS *` and lower-case methods.
    assert_eq!(
        raw(
            a,
            "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ),
        400
    );
    assert_ne!(
        raw(
            a,
            "get /admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ),
        200
    );
    // A CORS preflight skips JWT, never authorization.
    assert_eq!(
        get(
            a,
            "/admin",
            "Origin: https://evil.example\r\nAccess-Control-Request-Method: GET\r\n"
        ),
        403
    );
    assert_eq!(
        raw(
            a,
            "OPTIONS /admin HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: GET\r\nConnection: close\r\n\r\n"
        ),
        403
    );
}

#[test]
fn istio_security_2021_002_ports_are_the_listener_port() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let policy = format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: deny-admin-port, namespace: foo}}\nspec:\n  action: DENY\n  rules: [{{to: [{{operation: {{paths: [/admin], ports: [\"{port}\"]}}}}]}}]\n"
    );
    let p = start(&policy, &["--listen", &format!("127.0.0.1:{port}")]);
    assert_eq!(p.addr().rsplit(':').next().unwrap(), port);
    assert_eq!(get(p.addr(), "/admin", ""), 403);
}

#[test]
fn thousands_of_idle_connections_and_oversized_input_stay_bounded() {
    let p = start(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: ra, namespace: foo}\nspec:\n  jwtRules: [{issuer: testing@secure.istio.io, jwks: '{\"keys\":[]}'}]\n",
        &["--header-read-timeout", "30s"],
    );
    let before = support::proxy::rss_kib(p.child.id());
    let mut idle = Vec::new();
    for _ in 0..3000 {
        idle.push(TcpStream::connect(p.addr()).unwrap());
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = support::proxy::rss_kib(p.child.id());
    // Still serving while 3,000 connections sit idle.
    assert_eq!(get(p.addr(), "/", ""), 200);
    // A 20 KiB token is refused as too large, a 100 KiB header with 431.
    let token = format!("eyJhbGciOiJSUzI1NiJ9.{}.sig", "A".repeat(20 * 1024));
    let status = get(p.addr(), "/", &format!("Authorization: Bearer {token}\r\n"));
    assert_eq!(status, 401);
    assert_eq!(
        get(
            p.addr(),
            "/",
            &format!("x-big: {}\r\n", "a".repeat(100 * 1024))
        ),
        431
    );
    drop(idle);
    if before > 0 {
        // Idle HTTP/1 connections cost a few KiB each; far below this bound.
        assert!(
            during - before < 64 * 1024,
            "3,000 idle connections grew RSS by {} KiB",
            during - before
        );
        println!("RSS {before} KiB idle, {during} KiB with 3,000 open connections");
    }
}
