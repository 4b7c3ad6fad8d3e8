//! Hostile-client probes through the real proxy that the other end-to-end files do not make:
//! value matching on bytes as they arrive on the wire (path templates with `=` and `*`, header
//! values that are not UTF-8, `notValues`), and `Connection` nominating the framing headers.
//!
//! Requests are written raw over TCP, where a client library would refuse or fix them. Each
//! test checks the status the client gets and what a recording upstream received.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

mod support;

use support::fs::{groups_token, root, tmp};
use support::proxy::{Proxy, Stdout, proxy_command, spawn};
use support::upstream::Recorder;

/// Starts the proxy for workload `foo`/`app=httpbin` on the policies in `dir`.
fn start(dir: &Path, upstream: &Recorder) -> Proxy {
    spawn(
        proxy_command()
            .args(["--namespace", "foo", "--labels", "app=httpbin"])
            .arg("--policies")
            .arg(dir)
            .args(["--upstream", &format!("http://{}", upstream.addr)])
            .arg("--no-access-log"),
        Stdout::Null,
    )
}

/// Sends raw bytes and returns the status of every response read until the proxy closes the
/// connection or stays silent for a while (each response is `content-length` framed).
fn statuses(addr: &str, request: &[u8]) -> Vec<u16> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut out = Vec::new();
    loop {
        // Parse every complete response in the buffer.
        while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if buf.len() < i + 4 + len {
                break;
            }
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            out.push(status);
            buf.drain(..i + 4 + len);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return out,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn get(addr: &str, target: &str, extra: &[u8]) -> Vec<u16> {
    let mut req =
        format!("GET {target} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n").into_bytes();
    req.extend_from_slice(extra);
    req.extend_from_slice(b"\r\n");
    statuses(addr, &req)
}

const MATCHING: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/path/template/{*}"]}}]
  - to: [{operation: {paths: ["/hdr/*"]}}]
    when: [{key: "request.headers[x-h]", values: ["header-prefix-*"]}]
  - to: [{operation: {paths: ["/nv/*"]}}]
    when: [{key: "request.headers[x-n]", notValues: ["good"]}]
"#;

/// A DENY on a path template catches segments with `=` and `*` (Envoy 1.40's character class),
/// and header rules compare the bytes received, so a value that is not UTF-8 neither slips past
/// a DENY on a prefix nor satisfies `notValues` as if it were the listed value.
#[test]
fn deny_rules_match_template_segments_and_header_bytes_as_received() {
    let up = Recorder::start();
    let dir = tmp("matching");
    std::fs::write(dir.join("deny.yaml"), MATCHING).unwrap();
    let p = start(&dir, &up);

    for target in [
        "/path/template/a=b",
        "/path/template/a*b",
        "/path/template/plain",
    ] {
        assert_eq!(get(p.addr(), target, b""), [403], "{target}");
    }
    // `{*}` is one segment: two are not matched.
    assert_eq!(get(p.addr(), "/path/template/a/b", b""), [200]);

    for value in [
        &b"header-prefix-x\xe9"[..],
        b"header-prefix-\xff",
        b"header-prefix-x",
    ] {
        let mut h = b"X-H: ".to_vec();
        h.extend_from_slice(value);
        h.extend_from_slice(b"\r\n");
        assert_eq!(
            get(p.addr(), "/hdr/x", &h),
            [403],
            "{}",
            value.escape_ascii()
        );
    }
    assert_eq!(get(p.addr(), "/hdr/ok", b"X-H: other-\xe9\r\n"), [200]);

    assert_eq!(get(p.addr(), "/nv/good", b"X-N: good\r\n"), [200]);
    for value in [&b"good\xe9"[..], b"\xe9", b"bad"] {
        let mut h = b"X-N: ".to_vec();
        h.extend_from_slice(value);
        h.extend_from_slice(b"\r\n");
        assert_eq!(
            get(p.addr(), "/nv/x", &h),
            [403],
            "{}",
            value.escape_ascii()
        );
    }

    assert_eq!(get(p.addr(), "/marker-matching", b""), [200]);
    let heads = up.heads_until("GET /marker-matching ");
    let forwarded: Vec<&str> = heads.iter().filter_map(|h| h.split(' ').nth(1)).collect();
    assert_eq!(
        forwarded,
        [
            "/path/template/a/b",
            "/hdr/ok",
            "/nv/good",
            "/marker-matching"
        ]
    );
}

/// `Connection` naming `content-length` or `transfer-encoding` removes the header from what the
/// policies see, but not the framing: the body is read as it was framed, the upstream gets it
/// framed the same way, and a request hidden after it is answered on its own (here 403, for
/// lack of a token) and never forwarded.
#[test]
fn nominating_the_framing_headers_does_not_change_the_framing() {
    let up = Recorder::start();
    let dir = tmp("framing");
    for f in ["authorization-policy.yaml", "request-authentication.yaml"] {
        std::fs::copy(
            root().join("examples/step4-require-claim").join(f),
            dir.join(f),
        )
        .unwrap();
    }
    let p = start(&dir, &up);
    let auth = format!("Authorization: Bearer {}\r\n", groups_token());
    let hidden = "GET /SMUGGLED HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n";

    let cl = format!(
        "POST /cl HTTP/1.1\r\nHost: app\r\nConnection: content-length\r\nContent-Length: 3\r\n{auth}\r\nabc{hidden}"
    );
    assert_eq!(statuses(p.addr(), cl.as_bytes()), [200, 403]);
    let te = format!(
        "POST /te HTTP/1.1\r\nHost: app\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n{auth}\r\n3\r\nabc\r\n0\r\n\r\n{hidden}"
    );
    assert_eq!(statuses(p.addr(), te.as_bytes()), [200, 403]);

    let marker =
        format!("GET /marker-framing HTTP/1.1\r\nHost: app\r\nConnection: close\r\n{auth}\r\n");
    assert_eq!(statuses(p.addr(), marker.as_bytes()), [200]);
    let heads = up.heads_until("GET /marker-framing ");
    assert!(!heads.iter().any(|h| h.contains("SMUGGLED")), "{heads:?}");
    let cl_head = heads.iter().find(|h| h.starts_with("POST /cl ")).unwrap();
    assert!(cl_head.contains("content-length: 3\r\n"), "{cl_head}");
    let te_head = heads.iter().find(|h| h.starts_with("POST /te ")).unwrap();
    assert!(
        te_head.contains("transfer-encoding: chunked\r\n"),
        "{te_head}"
    );
}
