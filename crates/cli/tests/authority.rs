//! Request intake through the real proxy: the authority, the method, `CONNECT`, `Connection`
//! nominations, `Transfer-Encoding` and `X-Forwarded-For`. Each test checks what the client gets,
//! what the access log says, and what a recording upstream received (raw bytes), because the
//! rule is that the request the policies see is the request the upstream gets.
//!
//! HTTP/1 requests are written raw over TCP, where a client library would fix them. HTTP/2
//! requests are built frame by frame by a small Python program (the `hyperframe` and `hpack`
//! packages), so that invalid requests can be sent; which Python, and what happens without
//! the packages, is `support/python.rs`.

use std::process::Command;

mod support;

use support::fs::{groups_token, root, tmp};
use support::http::exchange;
use support::proxy::{Proxy, Stdout, proxy_command, spawn};
use support::python;
use support::upstream::Recorder;

/// The policies of the hostile-client probes: the step 4 token rule, an ALLOW for `/public/*`,
/// and DENY rules on a path, a method and a host.
const POLICIES: &str = r#"apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules:
  - to: [{operation: {paths: ["/public/*"]}}]
  - from: [{source: {requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]}}]
    when: [{key: "request.auth.claims[groups]", values: ["group1"]}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin", "/admin/*"]}}]
  - to: [{operation: {methods: ["DELETE"]}}]
  - to: [{operation: {hosts: ["internal.example", "internal.example:*"]}}]
"#;

/// Starts the proxy for workload `foo`/`app=httpbin` in front of `upstream`, on `policies`
/// and the step 4 RequestAuthentication, with the access log collected.
fn start(policies: &str, upstream: &Recorder, extra: &[&str]) -> Proxy {
    let dir = tmp("authority-policies");
    std::fs::write(dir.join("authz.yaml"), policies).unwrap();
    std::fs::copy(
        root().join("examples/step4-require-claim/request-authentication.yaml"),
        dir.join("request-authentication.yaml"),
    )
    .unwrap();
    spawn(
        proxy_command()
            .args(["--namespace", "foo", "--labels", "app=httpbin"])
            .arg("--policies")
            .arg(&dir)
            .args(["--upstream", &format!("http://{}", upstream.addr)])
            .args(extra),
        Stdout::Collect,
    )
}

/// The access log line (as JSON) of the request with this request id.
fn log_for(p: &Proxy, request_id: &str) -> serde_json::Value {
    p.log_where(|l| l["request_id"] == request_id)
}

/// A request with the allowed token, a request id to find its log line, and `extra` header
/// lines (each ending in CRLF).
fn request(method_and_target: &str, id: &str, extra: &str) -> String {
    format!(
        "{method_and_target} HTTP/1.1\r\nAuthorization: Bearer {}\r\nX-Request-Id: {id}\r\n{extra}\r\n",
        groups_token()
    )
}

/// An allowed request whose arrival upstream marks that everything sent before it has been
/// forwarded (or not).
fn marker(p: &Proxy, up: &Recorder, name: &str) -> Vec<String> {
    let r = exchange(
        p.addr(),
        &request(&format!("GET /{name}"), name, "Host: app\r\n"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    up.heads_until(&format!("GET /{name} "))
}

fn host_lines(head: &str) -> Vec<&str> {
    head.lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("host:"))
        .collect()
}

#[test]
fn absolute_form_authority_is_what_policies_see_and_the_upstream_gets() {
    let up = Recorder::start();
    let p = start(POLICIES, &up, &[]);
    // Was a bypass: the policy matched `a`, the upstream got `Host: internal.example`. As in
    // Envoy (and RFC 9112 §3.2.2), the target's authority replaces Host.
    let r = exchange(
        p.addr(),
        &request("GET http://a/x", "abs-1", "Host: internal.example\r\n"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let heads = up.heads_until("GET /x ");
    let head = heads.iter().find(|h| h.starts_with("GET /x ")).unwrap();
    assert_eq!(host_lines(head), ["host: a"], "{head}");
    assert_eq!(log_for(&p, "abs-1")["authority"], "a");

    // The other way round is denied, and so is the target with `userinfo@` (Envoy forwards
    // host and port only, so that is what the policies see).
    for (target, id) in [
        ("http://internal.example/y", "abs-2"),
        ("http://a@internal.example/y", "abs-3"),
        ("http://internal.example:8080/y", "abs-4"),
    ] {
        let r = exchange(
            p.addr(),
            &request(&format!("GET {target}"), id, "Host: a\r\n"),
        );
        assert_eq!(r.status, 403, "{target}: {r:?}");
        assert_eq!(r.body, "RBAC: access denied");
    }
    let heads = marker(&p, &up, "after-abs");
    assert!(!heads.iter().any(|h| h.starts_with("GET /y")), "{heads:?}");
}

#[test]
fn two_host_headers_and_a_missing_host_are_refused() {
    let up = Recorder::start();
    let p = start(POLICIES, &up, &[]);
    // Was a bypass: the policy matched the first Host, the upstream got both.
    let r = exchange(
        p.addr(),
        &request(
            "GET /two",
            "host-2",
            "Host: a\r\nHost: internal.example\r\n",
        ),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.body, "Bad Request");
    assert_eq!(r.header("connection"), Some("close"));
    let line = log_for(&p, "host-2");
    assert_eq!(line["response_code"], 400);
    assert_eq!(line["response_code_details"], "duplicate_host_header");

    // Envoy's connection manager: 400, an empty body, `missing_host_header`. HTTP/1.0 too
    // (Envoy requires an authority in every request).
    for (version, id) in [("HTTP/1.1", "host-0"), ("HTTP/1.0", "host-0-10")] {
        let r = exchange(
            p.addr(),
            &format!(
                "GET /none {version}\r\nAuthorization: Bearer {}\r\nX-Request-Id: {id}\r\n\r\n",
                groups_token()
            ),
        );
        assert_eq!(r.status, 400, "{version}: {r:?}");
        assert_eq!(r.body, "", "{version}");
        assert_eq!(r.header("content-type"), None);
        assert_eq!(
            log_for(&p, id)["response_code_details"],
            "missing_host_header"
        );
    }
    // A Host that no authority can be (Envoy: `http.invalid_authority`).
    let r = exchange(p.addr(), &request("GET /bad", "host-bad", "Host: a b\r\n"));
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(
        log_for(&p, "host-bad")["response_code_details"],
        "http.invalid_authority"
    );
    // An empty Host is an authority (RFC 9112 §3.2); Envoy forwards it too.
    let r = exchange(p.addr(), &request("GET /empty", "host-empty", "Host:\r\n"));
    assert_eq!(r.status, 200, "{r:?}");

    let heads = marker(&p, &up, "after-host");
    assert!(
        !heads
            .iter()
            .any(|h| h.starts_with("GET /two") || h.starts_with("GET /none")),
        "{heads:?}"
    );
}

#[test]
fn methods_outside_envoys_list_are_refused() {
    let up = Recorder::start();
    let p = start(POLICIES, &up, &[]);
    // Envoy's HTTP/1 codec answers these 400 `Bad Request` (`http1.codec_error`) before any
    // filter: a lowercase `delete` must not slip past the DENY on `DELETE` to a backend that
    // compares methods without case.
    for (i, method) in ["delete", "Delete", "get", "POS", "FOO", "M-SEARCH"]
        .into_iter()
        .enumerate()
    {
        let id = format!("method-{i}");
        let r = exchange(
            p.addr(),
            &request(&format!("{method} /m{i}"), &id, "Host: app\r\n"),
        );
        assert_eq!(r.status, 400, "{method}: {r:?}");
        assert_eq!(r.body, "Bad Request", "{method}");
        assert_eq!(r.header("connection"), Some("close"), "{method}");
        let line = log_for(&p, &id);
        assert_eq!(line["response_code_details"], "http1.codec_error");
        assert_eq!(line["method"], method);
    }
    assert_eq!(
        exchange(p.addr(), &request("DELETE /d", "method-d", "Host: app\r\n")).status,
        403
    );
    // Methods on Envoy's list pass, as in Envoy (MSEARCH is spelled without the hyphen there).
    for method in ["PROPFIND", "MSEARCH", "PATCH"] {
        let r = exchange(
            p.addr(),
            &request(
                &format!("{method} /ok"),
                method,
                "Host: app\r\nContent-Length: 0\r\n",
            ),
        );
        assert_eq!(r.status, 200, "{method}: {r:?}");
    }
    let heads = marker(&p, &up, "after-methods");
    assert!(!heads.iter().any(|h| h.contains(" /m")), "{heads:?}");
    assert!(!heads.iter().any(|h| h.starts_with("DELETE")), "{heads:?}");
}

#[test]
fn connect_is_evaluated_then_never_forwarded() {
    let up = Recorder::start();
    let p = start(POLICIES, &up, &[]);
    let before = count_404(&p.metrics());
    // Allowed by the policies: Istio's inbound route has no CONNECT matcher, so Envoy answers
    // 404 with an empty body (`route_not_found`). It was forwarded as `CONNECT /`, the client
    // got nothing and the log said 200.
    let target = up.addr.clone();
    let r = exchange(
        p.addr(),
        &request(
            &format!("CONNECT {target}"),
            "connect-1",
            &format!("Host: {target}\r\n"),
        ),
    );
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.body, "");
    assert_eq!(r.header("connection"), Some("close"));
    let line = log_for(&p, "connect-1");
    assert_eq!(line["response_code"], 404);
    assert_eq!(line["response_code_details"], "route_not_found");
    assert_eq!(line["method"], "CONNECT");
    assert_eq!(line["authority"], target.as_str());
    assert_eq!(count_404(&p.metrics()), before + 1);

    // A policy denial comes first: 403.
    let r = exchange(
        p.addr(),
        &request(
            "CONNECT internal.example:443",
            "connect-2",
            "Host: internal.example:443\r\n",
        ),
    );
    assert_eq!(r.status, 403, "{r:?}");
    let r = exchange(
        p.addr(),
        "CONNECT app:443 HTTP/1.1\r\nHost: app:443\r\nX-Request-Id: connect-3\r\n\r\n",
    );
    assert_eq!(r.status, 403, "no token: {r:?}");
    // A CONNECT target that is not host:port: Envoy's codec says `http1.invalid_url`.
    let r = exchange(
        p.addr(),
        &request("CONNECT /x", "connect-4", "Host: app\r\n"),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(
        log_for(&p, "connect-4")["response_code_details"],
        "http1.invalid_url"
    );

    let heads = marker(&p, &up, "after-connect");
    assert!(!heads.iter().any(|h| h.starts_with("CONNECT")), "{heads:?}");
}

fn count_404(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with("meshguard_requests_total{code=\"404\"}"))
        .map_or(0, |l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

#[test]
fn connection_nominations_cannot_remove_the_forwarding_headers() {
    let up = Recorder::start();
    let p = start(POLICIES, &up, &[]);
    // `x-request-id` nominated: removed with the client's value, as in Envoy; the upstream
    // gets the id of the access log line.
    let r = exchange(
        p.addr(),
        &request(
            "GET /rid",
            "client-id",
            "Host: app\r\nConnection: x-request-id\r\n",
        ),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let heads = up.heads_until("GET /rid ");
    let head = heads.iter().find(|h| h.starts_with("GET /rid ")).unwrap();
    let upstream_id = head
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("no x-request-id upstream: {head}"));
    assert_ne!(upstream_id, "client-id");
    assert_eq!(log_for(&p, upstream_id)["path"], "/rid");

    // Nominating a forwarding header would hide where the request came from: Envoy's codec
    // refuses it (400, `http1.connection_header_rejected`).
    for (i, name) in ["x-forwarded-for", "X-Forwarded-Proto", "x-forwarded-host"]
        .into_iter()
        .enumerate()
    {
        let id = format!("conn-{i}");
        let r = exchange(
            p.addr(),
            &request(
                "GET /conn",
                &id,
                &format!("Host: app\r\nConnection: {name}\r\nX-Forwarded-For: 6.6.6.6\r\n"),
            ),
        );
        assert_eq!(r.status, 400, "{name}: {r:?}");
        assert_eq!(r.body, "Bad Request");
        assert_eq!(
            log_for(&p, &id)["response_code_details"],
            "http1.connection_header_rejected"
        );
    }
    // Any other forwarded request carries them all, set after hop-by-hop removal.
    let r = exchange(
        p.addr(),
        &request(
            "GET /fwd",
            "fwd-1",
            "Host: app\r\nConnection: x-other\r\nX-Other: 1\r\n",
        ),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let heads = up.heads_until("GET /fwd ");
    let head = heads.iter().find(|h| h.starts_with("GET /fwd ")).unwrap();
    assert!(head.contains("\r\nx-request-id: fwd-1\r\n"), "{head}");
    assert!(
        head.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nx-forwarded-proto: http\r\n"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("x-other"), "{head}");
    assert!(
        !heads.iter().any(|h| h.starts_with("GET /conn")),
        "{heads:?}"
    );
}

#[test]
fn a_nominated_header_is_gone_before_the_policies_see_it() {
    // Envoy's HTTP/1 codec removes nominated headers before any filter: a rule cannot be
    // satisfied by a header that the upstream never receives.
    let policy = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: internal-only, namespace: foo}
spec:
  action: ALLOW
  rules: [{when: [{key: "request.headers[x-internal]", values: ["yes"]}]}]
"#;
    let up = Recorder::start();
    let p = start(policy, &up, &[]);
    let r = exchange(
        p.addr(),
        "GET /n HTTP/1.1\r\nHost: app\r\nX-Internal: yes\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = exchange(
        p.addr(),
        "GET /n HTTP/1.1\r\nHost: app\r\nX-Internal: yes\r\nConnection: close, x-internal\r\n\r\n",
    );
    assert_eq!(r.status, 403, "{r:?}");
}

#[test]
fn transfer_codings_other_than_chunked_get_501() {
    let up = Recorder::start();
    let p = start(POLICIES, &up, &[]);
    // Envoy: 501 `Not Implemented` (`http1.invalid_transfer_encoding`). The gzip coding was
    // silently dropped on the way upstream.
    for (i, te) in ["gzip, chunked", "identity, chunked", "chunked, chunked"]
        .into_iter()
        .enumerate()
    {
        let id = format!("te-{i}");
        let r = exchange(
            p.addr(),
            &request(
                "POST /te",
                &id,
                &format!("Host: app\r\nTransfer-Encoding: {te}\r\n\r\n4\r\nGZIP\r\n0\r\n"),
            ),
        );
        assert_eq!(r.status, 501, "{te}: {r:?}");
        assert_eq!(r.body, "Not Implemented");
        assert_eq!(r.header("connection"), Some("close"));
        assert_eq!(
            log_for(&p, &id)["response_code_details"],
            "http1.invalid_transfer_encoding"
        );
    }
    let r = exchange(
        p.addr(),
        &request(
            "POST /chunked",
            "te-ok",
            "Host: app\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nGZIP\r\n0\r\n",
        ),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let heads = marker(&p, &up, "after-te");
    assert!(
        !heads.iter().any(|h| h.starts_with("POST /te")),
        "{heads:?}"
    );
}

#[test]
fn x_forwarded_for_element_that_is_not_an_address_falls_back_to_the_peer() {
    let policy = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: office, namespace: foo}
spec:
  action: ALLOW
  rules: [{from: [{source: {remoteIpBlocks: ["1.2.3.4/32"]}}]}]
"#;
    let up = Recorder::start();
    let p = start(policy, &up, &["--trusted-proxies", "1"]);
    let get = |xff: &str| {
        exchange(
            p.addr(),
            &format!("GET /x HTTP/1.1\r\nHost: app\r\nX-Forwarded-For: {xff}\r\nConnection: close\r\n\r\n"),
        )
        .status
    };
    assert_eq!(get("1.2.3.4"), 200);
    assert_eq!(get("9.9.9.9, 1.2.3.4"), 200);
    // Envoy's getLastAddressFromXFF takes the last element as it is, empty or not: no address,
    // so `remote.ip` is the peer (127.0.0.1). meshguard used to skip the empty element.
    assert_eq!(get("1.2.3.4 ,"), 403);
    assert_eq!(get("1.2.3.4, "), 403);
}

// ---------------------------------------------------------------------------------------------
// HTTP/2, frame by frame.

/// Sends one HEADERS frame (END_STREAM) with these fields on a prior-knowledge HTTP/2
/// connection and prints the answer as JSON: `{"status": 200, "body": "..."}`, or
/// `{"reset": code}` / `{"goaway": code}`.
const H2_CLIENT: &str = r#"
import json, socket, sys
from hyperframe.frame import (Frame, SettingsFrame, HeadersFrame, DataFrame, RstStreamFrame,
                              GoAwayFrame)
from hpack import Encoder, Decoder
port, fields = int(sys.argv[1]), json.loads(sys.argv[2])
s = socket.create_connection(('127.0.0.1', port)); s.settimeout(10)
f = HeadersFrame(1); f.flags = {'END_STREAM', 'END_HEADERS'}
f.data = Encoder().encode([tuple(x) for x in fields])
s.sendall(b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' + SettingsFrame(0).serialize() + f.serialize())
buf, dec, out, body = b'', Decoder(), {}, b''
while True:
    while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], 'big'):
        d = s.recv(65536)
        if not d:
            print(json.dumps(out or {'closed': True})); sys.exit(0)
        buf += d
    fr, n = Frame.parse_frame_header(memoryview(buf[:9]))
    fr.parse_body(memoryview(buf[9:9 + n])); buf = buf[9 + n:]
    if fr.stream_id == 1 and isinstance(fr, HeadersFrame):
        out['status'] = int(dict(dec.decode(fr.data))[':status'])
    elif fr.stream_id == 1 and isinstance(fr, DataFrame):
        body += fr.data
    elif fr.stream_id == 1 and isinstance(fr, RstStreamFrame):
        out['reset'] = fr.error_code; break
    elif isinstance(fr, GoAwayFrame):
        out['goaway'] = fr.error_code; break
    if fr.stream_id == 1 and 'END_STREAM' in fr.flags:
        break
out['body'] = body.decode('latin-1')
print(json.dumps(out))
"#;

fn h2(python: &str, addr: &str, fields: &[(&str, &str)]) -> serde_json::Value {
    let port = addr.rsplit(':').next().unwrap();
    let out = Command::new(python)
        .args([
            "-c",
            H2_CLIENT,
            port,
            &serde_json::to_string(fields).unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn http2_authority_host_and_method() {
    let Some(py) = python::python_with("http2_authority_host_and_method", "hyperframe, hpack")
    else {
        return;
    };
    let up = Recorder::start();
    // The recorder speaks HTTP/1.1 only: HTTP/2 clients' requests go out as HTTP/1.1.
    let p = start(POLICIES, &up, &["--upstream-protocol", "http1"]);
    let bearer = format!("Bearer {}", groups_token());
    let req = |method: &'static str, path: &'static str, more: &[(&'static str, &str)]| {
        // Pseudo-headers first (RFC 9113 §8.3), so `more` lists them before any field.
        let mut f: Vec<(&str, &str)> =
            vec![(":method", method), (":scheme", "http"), (":path", path)];
        f.extend_from_slice(more);
        f.push(("authorization", bearer.as_str()));
        h2(
            &py,
            p.addr(),
            &f.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
        )
    };

    // Was a bypass: the policy matched `:authority`, the upstream got the `host` field. As in
    // Envoy, `:authority` wins and a `host` field next to it is dropped.
    let r = req(
        "GET",
        "/h2-a",
        &[(":authority", "a"), ("host", "internal.example")],
    );
    assert_eq!(r["status"], 200, "{r}");
    let heads = up.heads_until("GET /h2-a ");
    let head = heads.iter().find(|h| h.starts_with("GET /h2-a ")).unwrap();
    assert_eq!(host_lines(head), ["host: a"], "{head}");

    let r = req(
        "GET",
        "/h2-deny",
        &[(":authority", "internal.example"), ("host", "a")],
    );
    assert_eq!(r["status"], 403, "{r}");
    // Without `:authority`, a `host` field is the authority (as in Envoy).
    let r = req("GET", "/h2-deny", &[("host", "internal.example")]);
    assert_eq!(r["status"], 403, "{r}");
    // No authority at all: Envoy resets the stream; meshguard answers 400 as for HTTP/1.
    let r = req("GET", "/h2-none", &[]);
    assert_eq!(r["status"], 400, "{r}");
    assert_eq!(r["body"], "");
    // Two `host` fields: refused as in HTTP/1 (Envoy resets the stream).
    let r = req(
        "GET",
        "/h2-two",
        &[
            (":authority", "a"),
            ("host", "a"),
            ("host", "internal.example"),
        ],
    );
    assert_eq!(r["status"], 400, "{r}");
    // Methods: the HTTP/1 list applies (stricter than Envoy, which forwards any token over
    // HTTP/2).
    let r = req("delete", "/h2-m", &[(":authority", "a")]);
    assert_eq!(r["status"], 400, "{r}");
    assert_eq!(r["body"], "Bad Request");
    assert_eq!(
        p.log_where(|l| l["method"] == "delete")["response_code_details"],
        "invalid_method"
    );
    let r = req("DELETE", "/h2-m", &[(":authority", "a")]);
    assert_eq!(r["status"], 403, "{r}");

    // CONNECT over HTTP/2: 404 as well.
    let r = h2(
        &py,
        p.addr(),
        &[
            (":method", "CONNECT"),
            (":authority", "a:443"),
            ("authorization", bearer.as_str()),
        ],
    );
    assert_eq!(r["status"], 404, "{r}");

    let heads = marker(&p, &up, "after-h2");
    assert!(
        !heads.iter().any(|h| h.contains("/h2-deny")
            || h.contains("/h2-none")
            || h.contains("/h2-two")
            || h.contains("/h2-m")
            || h.starts_with("CONNECT")),
        "{heads:?}"
    );
}

#[test]
fn absolute_form_schemes_other_than_http_and_https_are_refused() {
    let up = Recorder::start();
    let p = start(POLICIES, &up, &[]);
    // Was forwarded as `GET /s…` with the allowed token. Envoy's HTTP/1 codec answers 400
    // `Bad Request` (`http1.invalid_scheme`) before any filter.
    for (i, target) in ["ftp://a/s0", "ws://a/s1", "foo://a/s2", "ftp://a"]
        .into_iter()
        .enumerate()
    {
        let id = format!("scheme-{i}");
        let r = exchange(p.addr(), &request(&format!("GET {target}"), &id, ""));
        assert_eq!(r.status, 400, "{target}: {r:?}");
        assert_eq!(r.body, "Bad Request", "{target}");
        assert_eq!(r.header("connection"), Some("close"), "{target}");
        assert_eq!(
            log_for(&p, &id)["response_code_details"],
            "http1.invalid_scheme",
            "{target}"
        );
    }
    // As in Envoy: `http` and `https` in any case, also `https` on this plaintext listener.
    for (i, target) in ["https://a/ok0", "HTTP://a/ok1", "hTTpS://a/ok2"]
        .into_iter()
        .enumerate()
    {
        let r = exchange(
            p.addr(),
            &request(&format!("GET {target}"), &format!("ok-{i}"), ""),
        );
        assert_eq!(r.status, 200, "{target}: {r:?}");
    }
    let heads = marker(&p, &up, "after-schemes");
    assert!(!heads.iter().any(|h| h.starts_with("GET /s")), "{heads:?}");
    assert!(!heads.iter().any(|h| h.starts_with("GET / ")), "{heads:?}");
    for i in 0..3 {
        assert!(
            heads.iter().any(|h| h.starts_with(&format!("GET /ok{i} "))),
            "{heads:?}"
        );
    }
}
