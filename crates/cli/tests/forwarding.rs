//! What the upstream receives, where the differential tests against Envoy
//! (`docs/differential-testing.md`) found meshguard forwarding differently: each case here runs
//! without Envoy, through the real binary in front of its built-in echo upstream, so it is
//! checked on every machine.

mod support;

use support::fs::demo_token;
use support::http::{curl, exchange};
use support::proxy::{Proxy, Stdout, proxy_command, spawn};

/// The walkthrough's step 2 (tokens from `testing@secure.istio.io` verified, none required)
/// in front of the echo upstream.
fn step2() -> Proxy {
    spawn(
        proxy_command()
            .args(["--policies", "examples/step2-request-authentication"])
            .args(["--namespace", "foo", "--labels", "app=httpbin"]),
        Stdout::Null,
    )
}

#[test]
fn a_verified_token_in_the_query_is_removed_and_the_other_parameters_kept_as_sent() {
    let p = step2();
    let token = demo_token();
    let r = curl(&[&format!(
        "{}/anything?a=%2F&access_token={token}&b=c+d&f",
        p.base
    )]);
    assert_eq!(r.status, 200, "{}", r.body);
    // Envoy 1.40 removes the parameter too (and rewrites the others decoded).
    assert_eq!(r.json()["path"], "/anything?a=%2F&b=c+d&f");
    let r = curl(&[&format!("{}/anything?access_token={token}", p.base)]);
    assert_eq!(r.json()["path"], "/anything");
    // An invalid token is refused, not removed.
    let r = curl(&[&format!("{}/anything?access_token=x.y.z", p.base)]);
    assert_eq!(r.status, 401);
}

#[test]
fn a_client_sent_client_certificate_header_never_reaches_the_upstream() {
    let p = step2();
    let r = curl(&[
        "-H",
        "X-Forwarded-Client-Cert: By=spiffe://cluster.local/ns/foo/sa/httpbin;URI=spiffe://cluster.local/ns/foo/sa/admin",
        &format!("{}/headers", p.base),
    ]);
    assert_eq!(r.status, 200);
    assert!(
        r.json()["headers"].get("x-forwarded-client-cert").is_none(),
        "{}",
        r.body
    );
}

#[test]
fn te_trailers_is_forwarded_and_other_codings_are_not() {
    let p = step2();
    let get = |te: &str| {
        let r = exchange(
            p.addr(),
            &format!("GET /headers HTTP/1.1\r\nhost: a\r\nte: {te}\r\nconnection: close\r\n\r\n"),
        );
        assert_eq!(r.status, 200);
        r.json()["headers"]["te"].clone()
    };
    assert_eq!(get("trailers"), "trailers");
    assert_eq!(get("deflate;q=0.5, trailers"), "trailers");
    assert!(get("gzip").is_null());
}

#[test]
fn a_bodiless_post_reaches_the_upstream_with_a_zero_length() {
    let p = step2();
    for (method, expect) in [("POST", Some("0")), ("PATCH", Some("0")), ("GET", None)] {
        let r = exchange(
            p.addr(),
            &format!("{method} /anything HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n"),
        );
        assert_eq!(r.status, 200, "{method}");
        assert_eq!(
            r.json()["headers"]["content-length"].as_str(),
            expect,
            "{method}: {}",
            r.body
        );
    }
}

#[test]
fn a_denied_head_over_http2_is_headers_only() {
    let p = spawn(
        proxy_command()
            .args(["--policies", "examples/step3-require-jwt"])
            .args(["--namespace", "foo", "--labels", "app=httpbin"]),
        Stdout::Null,
    );
    // curl exits 0 only when the stream ends cleanly; it was a PROTOCOL_ERROR (exit 92).
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-I",
            "--http2-prior-knowledge",
            &format!("{}/headers", p.base),
        ])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("HTTP/2 403"), "{text}");
    assert!(text.contains("content-length: 19"), "{text}");
}
