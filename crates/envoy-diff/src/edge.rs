//! Hand-picked requests at the edges of request intake, where a proxy and its policies can
//! disagree about what a request is: the authority (absolute-form targets, HTTP/2
//! `:authority` against `host`, case, ports, trailing dots), the path (dot segments, encoded
//! slashes and letters, `;`, query and fragment, NUL), the method, hop-by-hop headers and
//! `x-forwarded-for`. One policy set (a DENY on a path, a method and a host, an ALLOW for a
//! public prefix or a verified principal) is run under each path normalization mode.

use crate::scenario::{MeshOptions, PathNormalization, Protocol, Request, Scenario, WorkloadSpec};
use crate::tokens;

const POLICIES: &str = r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: '${JWKS}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules:
  - to: [{operation: {paths: ["/public/*"]}}]
  - from: [{source: {requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin", "/admin/*"]}}]
  - to: [{operation: {methods: ["DELETE"]}}]
  - to: [{operation: {hosts: ["internal.example", "internal.example:*"]}}]
  - when: [{key: "request.headers[x-role]", values: ["admin"]}]
"#;

fn requests() -> Vec<Request> {
    let token = tokens::demo();
    let mut out = Vec::new();
    let mut add = |r: Request| out.push(r);
    // Paths: each aimed at the DENY on /admin with an allowed token, so only the path decides.
    for target in [
        "/admin",
        "/admin/",
        "/admin/x",
        "/ADMIN",
        "/Admin/x",
        "/admin?x=1",
        "/admin#frag",
        "/admin/#frag",
        "/%61dmin",
        "/%41dmin",
        "/admin%2fx",
        "/admin%2Fx",
        "/admin%5cx",
        "//admin",
        "///admin/x",
        "/./admin",
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin/x",
        "/public/..%2fadmin",
        "/public/..%5cadmin",
        "/public\\..\\admin",
        "/admin;x",
        "/admin/.",
        "/admin/..",
        "/x/../../admin",
        "/admin%00",
        "/admin%2500",
        "/a%20dmin",
        "/admin%7Ex",
        "/%c0%ae%c0%ae/admin",
        "/public/x?next=/admin",
        "/public/",
        "/public",
    ] {
        add(Request::get(format!("path {target} with a token"), target).bearer(token));
    }
    // Paths without a token: the ALLOW's public prefix against the DENY.
    for target in [
        "/public/x",
        "/public/../admin",
        "/public//x",
        "/public/%2e/x",
        "/publicx",
    ] {
        add(Request::get(
            format!("path {target} without a token"),
            target,
        ));
    }
    // Authorities, each with an allowed token, aimed at the DENY on internal.example.
    for (name, host) in [
        ("exact", "internal.example"),
        ("with a port", "internal.example:8000"),
        ("upper case", "INTERNAL.example"),
        ("trailing dot", "internal.example."),
        ("trailing dot and port", "internal.example.:80"),
        ("other host", "public.example"),
        ("empty", ""),
        ("suffix lookalike", "internal.example.evil"),
    ] {
        let mut r = Request::get(format!("host {name}"), "/x").bearer(token);
        r.host = Some(host.into());
        add(r);
    }
    let mut r = Request::get(
        "absolute-form target naming the denied host",
        "http://internal.example/x",
    )
    .bearer(token);
    r.host = Some("public.example".into());
    add(r);
    let mut r = Request::get(
        "absolute-form target naming another host",
        "http://public.example/x",
    )
    .bearer(token);
    r.host = Some("internal.example".into());
    add(r);
    let mut r = Request::get(
        "absolute-form target with userinfo",
        "http://u@internal.example/x",
    )
    .bearer(token);
    r.host = Some("public.example".into());
    add(r);
    let mut r = Request::get("no host header", "/x").bearer(token);
    r.host = None;
    add(r);
    let mut r = Request::get("HTTP/2 authority is the denied host", "/x").bearer(token);
    r.protocol = Protocol::H2c;
    r.host = Some("internal.example".into());
    add(r);
    let mut r = Request::get("HTTP/2 authority and a host header that differ", "/x")
        .bearer(token)
        .header("host", "internal.example");
    r.protocol = Protocol::H2c;
    r.host = Some("public.example".into());
    add(r);
    let mut r = Request::get("two host headers", "/x")
        .bearer(token)
        .header("host", "internal.example");
    r.host = Some("public.example".into());
    add(r);
    let mut r = Request::get("HTTP/2 without an authority", "/x").bearer(token);
    r.protocol = Protocol::H2c;
    r.host = None;
    add(r);
    for target in [
        "/admin",
        "/public/../admin",
        "//admin",
        "/%61dmin",
        "/admin%2fx",
    ] {
        let mut r =
            Request::get(format!("HTTP/2 path {target} with a token"), target).bearer(token);
        r.protocol = Protocol::H2c;
        add(r);
    }
    let mut r = Request::get("asterisk-form OPTIONS", "*");
    r.method = "OPTIONS".into();
    add(r);
    add(Request::get("asterisk-form GET", "*"));
    let mut r = Request::get("CONNECT with a token", "internal.example:443").bearer(token);
    r.method = "CONNECT".into();
    r.host = Some("internal.example:443".into());
    add(r);
    let mut r = Request::get("HTTP/2 HEAD denied", "/admin").bearer(token);
    r.method = "HEAD".into();
    r.protocol = Protocol::H2c;
    add(r);
    let mut r = Request::get("HTTP/2 HEAD allowed", "/public/x");
    r.method = "HEAD".into();
    r.protocol = Protocol::H2c;
    add(r);
    add(Request::get("client x-forwarded-client-cert", "/public/x").header(
        "x-forwarded-client-cert",
        "By=spiffe://cluster.local/ns/foo/sa/httpbin;URI=spiffe://cluster.local/ns/foo/sa/admin",
    ));
    add(Request::get("proxy-authorization", "/public/x")
        .header("proxy-authorization", "Basic YTpi"));
    // Upgrades, as Istio configures them (`websocket` only): a WebSocket handshake is decided
    // as any request; another protocol is refused before the policies; `h2c` is removed. (The
    // recording upstream never answers 101: tunnels are checked in crates/cli/tests/websocket.rs.)
    for (name, target, upgrade, token) in [
        ("websocket allowed", "/public/x", "websocket", None),
        ("websocket in another case", "/public/x", "WebSocket", None),
        (
            "websocket with a bad token",
            "/x",
            "websocket",
            Some("invalid"),
        ),
        ("websocket denied", "/admin", "websocket", Some(token)),
        ("another protocol", "/public/x", "foo", None),
        (
            "another protocol with a bad token",
            "/x",
            "foo",
            Some("invalid"),
        ),
        ("a list", "/public/x", "websocket, foo", None),
        ("h2c", "/public/x", "h2c", None),
    ] {
        let mut r = Request::get(format!("upgrade {name}"), target).header("upgrade", upgrade);
        r = if upgrade == "h2c" {
            r.header("connection", "Upgrade, HTTP2-Settings")
                .header("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA")
        } else {
            r.header("connection", "Upgrade")
        };
        if let Some(t) = token {
            r = r.bearer(t);
        }
        add(r);
    }
    add(
        Request::get("upgrade without the connection option", "/public/x").header("upgrade", "foo"),
    );
    let mut r = Request::get("HTTP/2 cookie crumbs", "/public/x")
        .header("cookie", "a=1")
        .header("cookie", "b=2");
    r.protocol = Protocol::H2c;
    add(r);
    for name in [
        "authorization",
        "user-agent",
        "accept",
        "cookie",
        "x-custom",
    ] {
        add(Request::get(format!("{name} twice"), "/public/x")
            .header(name, "a")
            .header(name, "b"));
    }
    // gRPC: local replies are trailers-only gRPC answers (grpc-status 16 for a bad token, 7
    // for a denial), over HTTP/2 and HTTP/1.1 alike.
    for (name, target, token) in [
        ("allowed", "/pkg.Svc/Public", Some(token)),
        ("bad token", "/pkg.Svc/Get", Some("invalid")),
        ("denied", "/admin", Some(token)),
        ("no token", "/pkg.Svc/Get", None),
    ] {
        for protocol in [Protocol::H2c, Protocol::Http1] {
            let mut r = Request::get(format!("gRPC {name} over {protocol:?}"), target)
                .header("content-type", "application/grpc")
                .header("te", "trailers");
            if let Some(t) = token {
                r = r.bearer(t);
            }
            r.method = "POST".into();
            r.protocol = protocol;
            add(r);
        }
    }
    // Methods.
    for method in [
        "DELETE", "delete", "Delete", "PATCH", "OPTIONS", "PROPFIND", "FOO",
    ] {
        let mut r = Request::get(format!("method {method}"), "/x").bearer(token);
        r.method = method.into();
        add(r.clone());
        r.name = format!("HTTP/2 method {method}");
        r.protocol = Protocol::H2c;
        add(r);
    }
    let mut r = Request::get("POST without a body over HTTP/2", "/public/x");
    r.method = "POST".into();
    r.protocol = Protocol::H2c;
    add(r);
    add(
        Request::get("expect 100-continue without a body", "/public/x")
            .header("expect", "100-continue"),
    );
    // Repeated and hop-by-hop headers aimed at the DENY on x-role.
    add(Request::get("x-role admin", "/x")
        .bearer(token)
        .header("x-role", "admin"));
    add(Request::get("x-role user then admin", "/x")
        .bearer(token)
        .header("x-role", "user")
        .header("x-role", "admin"));
    add(Request::get("x-role joined", "/x")
        .bearer(token)
        .header("x-role", "user,admin"));
    add(Request::get("x-role named by Connection", "/x")
        .bearer(token)
        .header("x-role", "admin")
        .header("connection", "x-role"));
    add(Request::get("x-role upper-case value", "/x")
        .bearer(token)
        .header("x-role", "ADMIN"));
    add(
        Request::get("x-forwarded-for sent by the client", "/public/x")
            .header("x-forwarded-for", "203.0.113.9"),
    );
    add(
        Request::get("x-forwarded-proto sent by the client", "/public/x")
            .header("x-forwarded-proto", "https"),
    );
    add(Request::get("client x-request-id", "/public/x").header("x-request-id", "abc-123"));
    add(Request::get("transfer-encoding gzip", "/public/x").header("transfer-encoding", "gzip"));
    let mut r = Request::get("a body", "/public/x");
    r.method = "POST".into();
    r.body = "hello".into();
    add(r);
    // Tokens at the edges of the default locations.
    add(Request::get("lower-case bearer prefix", "/x")
        .header("authorization", format!("bearer {token}")));
    add(Request::get(
        "token in access_token",
        format!("/x?access_token={token}"),
    ));
    add(Request::get(
        "token in access_token and a bad header",
        format!("/x?access_token={token}"),
    )
    .bearer("invalid"));
    // A verified token in the query is removed from the forwarded path (Envoy 1.40).
    for (name, target) in [
        ("alone", format!("/x?access_token={token}")),
        ("between others", format!("/x?a=1&access_token={token}&b=2")),
        (
            "with encoded others",
            format!("/x?a=%2F&b=c+d&e=%7e&f&g=&access_token={token}"),
        ),
        ("with a trailing &", format!("/x?access_token={token}&")),
        ("with an encoded name", format!("/x?access%5Ftoken={token}")),
        (
            "with an encoded space elsewhere",
            format!("/x?access_token={token}&z=%20"),
        ),
        (
            "with empty pieces",
            format!("/x?&&access_token={token}&x=%41%zz"),
        ),
        (
            "and a fragment",
            format!("/x?a=1;b=2&access_token={token}#frag"),
        ),
    ] {
        add(Request::get(format!("query token {name}"), target));
    }
    add(Request::get("CORS preflight with a bad token", "/x")
        .bearer("invalid")
        .header("origin", "https://a.example")
        .header("access-control-request-method", "GET"));
    out
}

/// The edge requests under each path normalization mode.
pub fn scenarios() -> Vec<Scenario> {
    let policies = POLICIES.replace("${JWKS}", tokens::DEMO_JWKS.trim());
    PathNormalization::ALL
        .iter()
        .map(|&mode| Scenario {
            name: format!("edges, {}", mode.as_str()),
            seed: None,
            workload: WorkloadSpec::default(),
            mesh: MeshOptions {
                path_normalization: mode,
                ..MeshOptions::default()
            },
            policies: policies.clone(),
            requests: requests(),
        })
        .collect()
}
