//! `action: CUSTOM` in meshguard's own proxy: the mesh config's ext_authz providers
//! (`envoyExtAuthzGrpc`, `envoyExtAuthzHttp`) are asked, as Envoy's `ext_authz` filter asks
//! them, about the requests a CUSTOM rule matches, before JWT validation, DENY and ALLOW.
//!
//! The authorizer is a real one on loopback: `support/ext_authz_server.py` (grpcio and the
//! Envoy stubs of PyPI `xds-protos`, and Python's HTTP server), which records every question.
//! The last tests send the same request through Envoy 1.40, configured as istiod configures a
//! sidecar for a CUSTOM policy, to the same recording authorizer, and compare the questions,
//! over plaintext and over Istio mutual TLS (istiod's STRICT inbound chain).
//!
//! Needs a Python that can import `grpc` and `envoy.service.auth.v3` (`MESHGUARD_PYTHON`;
//! `MESHGUARD_REQUIRE_PYTHON=1` makes its absence a failure) and, for the comparison, `envoy`
//! on `PATH` (`MESHGUARD_REQUIRE_ENVOY=1` makes its absence a failure).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshguard_envoy_diff::envoy::{self, Envoy};
use meshguard_envoy_diff::run::TempDir;
use meshguard_envoy_diff::translate::{self, Endpoints};
use meshguard_envoy_diff::{MeshOptions, WorkloadSpec};
use serde_json::{Value, json};
use support::fs::{groups_token, root};
use support::http::{Response, exchange};
use support::proxy::{Proxy, Stdout, proxy_command, spawn};
use support::python::python_with;
use support::upstream::Recorder;

/// The recording authorizer: its two ports and the questions it received.
struct Authorizer {
    child: Child,
    grpc: u16,
    http: u16,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Drop for Authorizer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Authorizer {
    fn start(test: &str) -> Option<Authorizer> {
        let python = python_with(test, "grpc, envoy.service.auth.v3.external_auth_pb2_grpc")?;
        let mut child = Command::new(python)
            .arg(root().join("crates/cli/tests/support/ext_authz_server.py"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut port = |kind: &str| -> u16 {
            let line = lines.next().unwrap().unwrap();
            line.strip_prefix(kind)
                .unwrap_or_else(|| panic!("{line}"))
                .trim()
                .parse()
                .unwrap()
        };
        let (grpc, http) = (port("grpc"), port("http"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                into.lock().unwrap().push(serde_json::from_str(&l).unwrap());
            }
        });
        Some(Authorizer {
            child,
            grpc,
            http,
            seen,
        })
    }

    /// The questions received so far, once there are `n` (10 s at most).
    fn questions(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.seen.lock().unwrap().clone();
            if seen.len() >= n || Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CUSTOM policy for `provider` on `paths`.
fn custom(name: &str, provider: &str, paths: &[&str]) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  action: CUSTOM
  provider: {{name: {provider}}}
  rules: [{{to: [{{operation: {{paths: {paths:?}}}}}]}}]
"
    )
}

/// `meshguard proxy` for namespace foo, app=httpbin, with the policy files of `dir`, the
/// mesh config `mesh` and the upstream `upstream`; its access log collected.
fn proxy(dir: &std::path::Path, mesh: &str, upstream: &str) -> Proxy {
    proxy_with(dir, mesh, upstream, &[])
}

/// [`proxy`] with `extra` arguments.
fn proxy_with(dir: &std::path::Path, mesh: &str, upstream: &str, extra: &[&str]) -> Proxy {
    std::fs::write(dir.join("mesh.yaml"), mesh).unwrap();
    spawn(
        proxy_command()
            .arg("--policies")
            .arg(dir.join("policies"))
            .arg("--mesh-config")
            .arg(dir.join("mesh.yaml"))
            .args(["--namespace", "foo", "--labels", "app=httpbin"])
            .args(["--upstream", &format!("http://{upstream}")])
            .args(extra),
        Stdout::Collect,
    )
}

fn get(p: &Proxy, path: &str, extra: &str) -> Response {
    exchange(
        p.base.trim_start_matches("http://"),
        &format!(
            "GET {path} HTTP/1.1\r\nhost: httpbin.foo:8000\r\n{extra}connection: close\r\n\r\n"
        ),
    )
}

/// The access-log lines once there are `n`.
fn log_lines(p: &Proxy, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<Value> = p
            .stdout_lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The walkthrough's step 4 (a token with `groups: group1` required) plus a CUSTOM policy
/// sending `/headers` to the gRPC provider: CUSTOM asks first, before JWT validation, then
/// ALLOW decides; the authorizer's denial, with its status, headers and body, reaches the
/// client, and its header changes reach the upstream.
#[test]
fn grpc_provider_is_asked_before_jwt_then_deny_and_allow() {
    let Some(authz) = Authorizer::start("grpc_provider_is_asked_before_jwt_then_deny_and_allow")
    else {
        return;
    };
    let dir = support::fs::tmp("ext-authz-client-grpc");
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    for f in ["request-authentication.yaml", "authorization-policy.yaml"] {
        std::fs::copy(
            root().join("examples/step4-require-claim").join(f),
            policies.join(f),
        )
        .unwrap();
    }
    std::fs::write(
        policies.join("ext-authz.yaml"),
        custom("ext-authz", "sample-ext-authz-grpc", &["/headers"]),
    )
    .unwrap();
    let upstream = Recorder::start();
    let p = proxy(
        &dir,
        &format!(
            "extensionProviders:\n- name: sample-ext-authz-grpc\n  envoyExtAuthzGrpc: {{service: 127.0.0.1, port: {}}}\n",
            authz.grpc
        ),
        &upstream.addr,
    );
    let groups = groups_token();

    // Not allowed by the authorizer: its answer, whatever the token (even an invalid one:
    // JWT validation comes after CUSTOM).
    for auth in ["", "authorization: Bearer invalidtoken\r\n"] {
        let r = get(&p, "/headers", auth);
        assert_eq!(r.status, 401, "{r:?}");
        assert_eq!(
            r.body,
            "denied by ext_authz for not found header `x-ext-authz: allow` in the request"
        );
        assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"test\""));
        assert_eq!(r.header("x-ext-authz-check-result"), Some("denied"));
        assert_eq!(r.header("content-type"), Some("text/plain"));
    }
    // Allowed by the authorizer, but step 4's ALLOW wants a token with the claim.
    let r = get(&p, "/headers", "x-ext-authz: allow\r\n");
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.body, "RBAC: access denied");
    // Both: forwarded, with the authorizer's header changes.
    let r = get(
        &p,
        "/headers",
        &format!(
            "x-ext-authz: allow\r\nx-remove-me: secret\r\nx-ext-authz-check-result: forged\r\nauthorization: Bearer {groups}\r\n"
        ),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let head = upstream
        .heads_until("x-authz-added")
        .last()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        head.contains("x-ext-authz-check-result: allowed\r\n"),
        "{head}"
    );
    assert!(!head.contains("forged"), "{head}");
    assert!(head.contains("x-authz-added: yes\r\n"), "{head}");
    assert!(!head.contains("x-remove-me"), "{head}");
    assert_eq!(authz.questions(4).len(), 4);
    // A path no CUSTOM rule matches: the authorizer is not asked (ALLOW refuses it).
    let r = get(&p, "/ip", "x-ext-authz: allow\r\n");
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(authz.count(), 4);

    let log = log_lines(&p, 5);
    assert_eq!(log[0]["response_code_details"], "ext_authz_denied");
    assert_eq!(
        log[0]["ext_authz"],
        json!([{"provider": "sample-ext-authz-grpc", "result": "denied"}])
    );
    assert_eq!(
        log[2]["response_code_details"],
        "rbac_access_denied_matched_policy[none]"
    );
    assert_eq!(
        log[3]["ext_authz"],
        json!([{"provider": "sample-ext-authz-grpc", "result": "ok"}])
    );
    assert!(log[4].get("ext_authz").is_none(), "{}", log[4]);
    let m = p.metrics();
    for want in [
        "meshguard_ext_authz_requests_total{provider=\"sample-ext-authz-grpc\",result=\"denied\"} 2",
        "meshguard_ext_authz_requests_total{provider=\"sample-ext-authz-grpc\",result=\"ok\"} 2",
    ] {
        assert!(m.contains(want), "{want} not in\n{m}");
    }
}

/// An authorizer that cannot answer (nothing listening, too slow, failing): `statusOnError`
/// (403 by default) with an empty body and Envoy's `ext_authz_error`, or, with `failOpen`,
/// the request goes on.
#[test]
fn failures_follow_status_on_error_and_fail_open() {
    let Some(authz) = Authorizer::start("failures_follow_status_on_error_and_fail_open") else {
        return;
    };
    let dir = support::fs::tmp("ext-authz-client-failures");
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let mut yaml = String::new();
    for (name, provider) in [
        ("down", "down"),
        ("down-503", "down-503"),
        ("down-open", "down-open"),
        ("slow", "slow"),
        ("broken", "broken"),
    ] {
        yaml.push_str(&custom(name, provider, &[&format!("/{name}")]));
        yaml.push_str("---\n");
    }
    std::fs::write(policies.join("custom.yaml"), yaml).unwrap();
    let down = closed_port();
    let mesh = format!(
        "extensionProviders:
- {{name: down, envoyExtAuthzGrpc: {{service: 127.0.0.1, port: {down}}}}}
- {{name: down-503, envoyExtAuthzGrpc: {{service: 127.0.0.1, port: {down}, statusOnError: \"503\"}}}}
- {{name: down-open, envoyExtAuthzHttp: {{service: 127.0.0.1, port: {down}, failOpen: true}}}}
- {{name: slow, envoyExtAuthzGrpc: {{service: 127.0.0.1, port: {grpc}, timeout: 0.5s}}}}
- {{name: broken, envoyExtAuthzGrpc: {{service: 127.0.0.1, port: {grpc}}}}}
",
        grpc = authz.grpc
    );
    let upstream = Recorder::start();
    let p = proxy(&dir, &mesh, &upstream.addr);

    let r = get(&p, "/down", "");
    assert_eq!((r.status, r.body.as_str()), (403, ""), "{r:?}");
    assert_eq!(r.header("content-type"), None);
    let r = get(&p, "/down-503", "");
    assert_eq!((r.status, r.body.as_str()), (503, ""), "{r:?}");
    let r = get(&p, "/down-open", "x-marker: open\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    upstream.heads_until("x-marker: open");
    let started = Instant::now();
    let r = get(&p, "/slow", "x-ext-authz: sleep\r\n");
    assert_eq!((r.status, r.body.as_str()), (403, ""), "{r:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(2500),
        "the 0.5 s timeout took {took:?}"
    );
    let r = get(&p, "/broken", "x-ext-authz: error\r\n");
    assert_eq!((r.status, r.body.as_str()), (403, ""), "{r:?}");

    let log = log_lines(&p, 5);
    let details: Vec<&str> = log
        .iter()
        .map(|l| l["response_code_details"].as_str().unwrap())
        .collect();
    assert_eq!(
        details,
        [
            "ext_authz_error",
            "ext_authz_error",
            "via_upstream",
            "ext_authz_error",
            "ext_authz_error"
        ]
    );
    let m = p.metrics();
    for want in [
        "meshguard_ext_authz_requests_total{provider=\"down\",result=\"error\"} 1",
        "meshguard_ext_authz_requests_total{provider=\"down-503\",result=\"error\"} 1",
        "meshguard_ext_authz_requests_total{provider=\"down-open\",result=\"failure_mode_allowed\"} 1",
        "meshguard_ext_authz_requests_total{provider=\"slow\",result=\"error\"} 1",
        "meshguard_ext_authz_requests_total{provider=\"broken\",result=\"error\"} 1",
    ] {
        assert!(m.contains(want), "{want} not in\n{m}");
    }
}

/// The HTTP variant: the client's method, `pathPrefix` + the path with its query, the original
/// `Host`, only the allowed headers (plus `authorization` and the additional ones),
/// `content-length: 0`; on allow only `headersToUpstreamOnAllow` reach the upstream, on deny
/// the authorizer's status, body and `headersToDownstreamOnDeny`.
#[test]
fn http_provider_path_prefix_and_header_lists() {
    let Some(authz) = Authorizer::start("http_provider_path_prefix_and_header_lists") else {
        return;
    };
    let dir = support::fs::tmp("ext-authz-client-http");
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("custom.yaml"),
        custom("ext-authz", "sample-ext-authz-http", &["/anything/*"]),
    )
    .unwrap();
    let mesh = format!(
        "extensionProviders:
- name: sample-ext-authz-http
  envoyExtAuthzHttp:
    service: localhost
    port: {}
    pathPrefix: /check
    includeRequestHeadersInCheck: [x-ext-authz, \"x-b3-*\"]
    includeAdditionalHeadersInCheck: {{x-ext-authz-additional-header-override: added}}
    headersToUpstreamOnAllow: [x-user]
    headersToDownstreamOnDeny: [x-ext-authz-check-result]
",
        authz.http
    );
    let upstream = Recorder::start();
    let p = proxy(&dir, &mesh, &upstream.addr);
    let r = exchange(
        p.base.trim_start_matches("http://"),
        "POST /anything/x?q=1 HTTP/1.1\r\nhost: httpbin.foo:8000\r\nx-ext-authz: allow\r\nx-b3-traceid: abc\r\ncookie: secret=1\r\nauthorization: Basic YTpi\r\nx-remove-me: 1\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let q = &authz.questions(1)[0];
    assert_eq!(q["kind"], "http");
    assert_eq!(q["method"], "POST");
    assert_eq!(q["path"], "/check/anything/x?q=1");
    let mut names: Vec<&str> = q["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "authorization",
            "content-length",
            "host",
            "x-b3-traceid",
            "x-envoy-expected-rq-timeout-ms",
            "x-envoy-internal",
            "x-ext-authz",
            "x-ext-authz-additional-header-override",
        ],
        "{q}"
    );
    let header = |n: &str| {
        q["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == n)
            .map(|h| h[1].as_str().unwrap().to_string())
    };
    assert_eq!(header("host").as_deref(), Some("httpbin.foo:8000"));
    assert_eq!(header("content-length").as_deref(), Some("0"));
    assert_eq!(q["body"], "");
    let head = upstream
        .heads_until("x-user")
        .last()
        .unwrap()
        .to_ascii_lowercase();
    assert!(head.contains("x-user: alice\r\n"), "{head}");
    assert!(!head.contains("x-ext-authz-check-result"), "{head}");
    assert!(!head.contains("x-remove-me"), "{head}");

    let r = get(&p, "/anything/y", "");
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.body,
        "denied by ext_authz for not found header `x-ext-authz: allow` in the request"
    );
    assert_eq!(r.header("x-ext-authz-check-result"), Some("denied"));
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"test\""));
    // Not asked for paths no CUSTOM rule matches.
    let r = get(&p, "/status/200", "");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(authz.count(), 2);
}

fn free_port(ip: &str) -> SocketAddr {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
}

/// The bootstrap istiod would give the sidecar for `policies` with the provider `provider`
/// at `authz`: the native translation's CUSTOM filter (istiod's stand-in for a provider it
/// cannot use: a DENY RBAC named `...-deny-due-to-bad-CUSTOM-action`) turned into what istiod
/// writes for a usable one: the same rules as `shadow_rules` (stat prefix `istio_ext_authz_`)
/// and, right after it, the `ext_authz` filter enabled by the shadow engine's effective policy
/// id (`filter_enabled_metadata`, prefix `istio-ext-authz-<provider>`), before `jwt_authn`.
fn istio_bootstrap(
    policies: &str,
    provider: &str,
    grpc: bool,
    options: Options,
    listen: SocketAddr,
    upstream: SocketAddr,
    authz: SocketAddr,
) -> Value {
    let mut b = translate::bootstrap(
        policies,
        &WorkloadSpec::default(),
        &MeshOptions::default(),
        &Endpoints { listen, upstream },
    )
    .unwrap();
    // A sidecar's inbound connection manager (the harness models a gateway's).
    let hcm = b
        .pointer_mut("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config")
        .unwrap()
        .as_object_mut()
        .unwrap();
    hcm.insert("use_remote_address".into(), json!(false));
    hcm.remove("xff_num_trusted_hops");
    let cluster = format!("outbound|{}||authz.local", authz.port());
    let filters = b
        .pointer_mut(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        )
        .unwrap()
        .as_array_mut()
        .unwrap();
    let at = filters
        .iter()
        .position(|f| {
            f["typed_config"]["rules"]["policies"]
                .as_object()
                .is_some_and(|p| {
                    p.keys()
                        .all(|k| k.ends_with("-deny-due-to-bad-CUSTOM-action"))
                })
        })
        .expect("the CUSTOM filter");
    let rules = filters[at]["typed_config"]["rules"]["policies"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.trim_end_matches("-deny-due-to-bad-CUSTOM-action")
                    .to_string(),
                v.clone(),
            )
        })
        .collect::<serde_json::Map<_, _>>();
    filters[at] = json!({
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "shadow_rules": {"action": "DENY", "policies": rules},
            "shadow_rules_stat_prefix": "istio_ext_authz_",
        },
    });
    let mut ext_authz = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "transport_api_version": "V3",
        "filter_enabled_metadata": {
            "filter": "envoy.filters.http.rbac",
            "path": [{"key": "istio_ext_authz_shadow_effective_policy_id"}],
            "value": {"string_match": {"prefix": format!("istio-ext-authz-{provider}")}},
        },
    });
    if let Some((max, partial, pack)) = options.body {
        ext_authz["with_request_body"] = json!({
            "max_request_bytes": max,
            "allow_partial_message": partial,
            "pack_as_bytes": pack,
        });
    }
    if let Some(status) = options.status_on_error {
        ext_authz["status_on_error"] = json!({"code": status});
    }
    if grpc {
        ext_authz["grpc_service"] = json!({
            "envoy_grpc": {"cluster_name": cluster, "authority": "authz.local"},
            "timeout": "600s",
        });
    } else {
        ext_authz["http_service"] = json!({
            "path_prefix": "/check",
            "server_uri": {"uri": "http://authz.local", "cluster": cluster, "timeout": "600s"},
            "authorization_request": {"headers_to_add": [{"key": "x-ext-authz-additional-header-override", "value": "added"}]},
            "authorization_response": {
                "allowed_upstream_headers": {"patterns": [{"exact": "x-user", "ignore_case": true}]},
                "allowed_client_headers": {"patterns": [{"exact": "x-ext-authz-check-result", "ignore_case": true}]},
            },
        });
        if options.downstream_on_allow {
            ext_authz["http_service"]["authorization_response"]["allowed_client_headers_on_success"] =
                json!({"patterns": [{"exact": "x-resp-added", "ignore_case": true}]});
        }
        ext_authz["allowed_headers"] = json!({"patterns": [
            {"exact": "x-ext-authz", "ignore_case": true},
            {"prefix": "x-b3-", "ignore_case": true},
            {"exact": "x-forwarded-client-cert", "ignore_case": true},
        ]});
    }
    filters.insert(
        at + 1,
        json!({"name": "envoy.filters.http.ext_authz", "typed_config": ext_authz}),
    );
    let mut c = json!({
        "name": cluster,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": cluster, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": authz.ip().to_string(), "port_value": authz.port()}}}}]}]},
    });
    if grpc {
        c["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        });
    }
    b["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap()
        .push(c);
    b
}

/// istiod's STRICT inbound chain on the bootstrap's one listener: `tls_inspector`, the chain
/// matched on `transport_protocol: tls`, with the workload certificate of `tls`
/// (`cert-chain.pem`, `key.pem`), a client certificate required, of `root-cert.pem`, with a
/// SPIFFE ID of the trust domain (the connection manager already appends
/// `x-forwarded-client-cert`, `APPEND_FORWARD`).
fn strict_mtls(b: &mut Value, tls: &Path) {
    let listener = b.pointer_mut("/static_resources/listeners/0").unwrap();
    listener["listener_filters"] = json!([{
        "name": "envoy.filters.listener.tls_inspector",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"},
    }]);
    let chain = &mut listener["filter_chains"][0];
    chain["filter_chain_match"] = json!({"transport_protocol": "tls"});
    chain["transport_socket"] = translate::istio_inbound_tls(tls);
}

/// The server name an Istio client sidecar sends for `httpbin.foo:8000`.
const ISTIO_SNI: &str = "outbound_.8000_._.httpbin.foo.svc.cluster.local";

/// A mesh CA in `dir/ca` and, from `meshguard cert issue`, the workload's certificate
/// (`dir/httpbin`: foo/httpbin) and a client's (`dir/sleep`: bar/sleep).
fn mtls_certs(dir: &Path) {
    let cert = |args: &[&str]| {
        let out = support::proxy::meshguard()
            .arg("cert")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "meshguard cert {args:?}: {out:?}");
    };
    let at = |name: &str| dir.join(name).display().to_string();
    cert(&["ca", "--out", &at("ca")]);
    for (ns, sa) in [("foo", "httpbin"), ("bar", "sleep")] {
        cert(&[
            "issue",
            "--ca",
            &at("ca"),
            "--namespace",
            ns,
            "--service-account",
            sa,
            "--out",
            &at(sa),
        ]);
    }
}

/// An Istio client sidecar's TLS: `sleep`'s certificate, Istio's ALPN (any server
/// certificate is accepted: what is compared is what the server makes of the client).
fn mtls_client(certs: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject as _;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let dir = certs.join("sleep");
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(dir.join("cert-chain.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("key.pem")).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(support::certs::AnyServer(provider)))
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = ["istio-http/1.1", "istio", "http/1.1"]
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    Arc::new(config)
}

/// [`exchange`] over TLS with `config` and [`ISTIO_SNI`]: the raw request, then the response
/// read until the server closes the connection (the compared requests say `connection:
/// close`).
fn tls_exchange(addr: &str, config: &Arc<rustls::ClientConfig>, raw: &str) -> Response {
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn =
        rustls::ClientConnection::new(config.clone(), ISTIO_SNI.try_into().unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = Vec::new();
    // A close without close_notify is an error after the bytes read, which are kept.
    let _ = s.read_to_end(&mut out);
    if out.is_empty() {
        return Response {
            status: 0,
            headers: Vec::new(),
            body: String::new(),
        };
    }
    support::http::parse(&out)
}

/// A recorded `CheckRequest` with what must differ between two proxies replaced: the time
/// and Envoy's stream id (per request), the client's port (per connection), the listener's
/// port (each proxy has its own), `x-request-id` (each proxy makes its own).
fn normalized(mut check: Value) -> Value {
    let a = check.pointer_mut("/attributes").unwrap();
    a["request"]["time"] = json!("<time>");
    a["request"]["http"]["id"] = json!("<stream id>");
    a["source"]["address"]["socketAddress"]["portValue"] = json!("<port>");
    a["destination"]["address"]["socketAddress"]["portValue"] = json!("<port>");
    let headers = a["request"]["http"]["headers"].as_object_mut().unwrap();
    if headers.contains_key("x-request-id") {
        headers.insert("x-request-id".into(), json!("<request id>"));
    }
    check
}

/// The requests of the comparisons: a plain GET with a query, repeated headers (joined as
/// Envoy joins them), a token, a POST with a body; all matched by the CUSTOM rule.
const COMPARED: &[&str] = &[
    "GET /headers?x=1&y=%2F HTTP/1.1\r\nhost: httpbin.foo:8000\r\nx-ext-authz: allow\r\nuser-agent: test\r\nx-multi: a\r\nx-multi: b\r\naccept: text/plain\r\naccept: text/html\r\ncookie: a=1\r\ncookie: b=2\r\nconnection: close\r\n\r\n",
    "GET /headers/./a/../b HTTP/1.1\r\nhost: httpbin.foo:8000\r\nauthorization: Bearer invalidtoken\r\nx-b3-traceid: 0123\r\nconnection: close\r\n\r\n",
    "POST /headers HTTP/1.1\r\nhost: httpbin.foo:8000\r\nx-ext-authz: allow\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
];

/// What the provider of a comparison has beside the settings every comparison uses.
#[derive(Clone, Copy, Debug, Default)]
struct Options {
    /// `includeRequestBodyInCheck`: `maxRequestBytes`, `allowPartialMessage`, `packAsBytes`.
    body: Option<(u32, bool, bool)>,
    /// HTTP: `headersToDownstreamOnAllow: [x-resp-added]`.
    downstream_on_allow: bool,
    status_on_error: Option<u16>,
    /// Over Istio mutual TLS ([`mtls_certs`]): meshguard with `--tls-dir` and a STRICT
    /// PeerAuthentication, Envoy with istiod's STRICT inbound chain ([`strict_mtls`]); the
    /// client presents `sleep`'s certificate ([`mtls_client`]).
    mtls: bool,
}

/// The mesh config of the compared provider, as the bootstrap of [`istio_bootstrap`] says.
fn compared_mesh(provider: &str, grpc: bool, port: u16, options: Options) -> String {
    let mut extra = String::new();
    if let Some((max, partial, pack)) = options.body {
        extra.push_str(&format!(
            "    includeRequestBodyInCheck: {{maxRequestBytes: {max}, allowPartialMessage: {partial}, packAsBytes: {pack}}}\n"
        ));
    }
    if let Some(status) = options.status_on_error {
        extra.push_str(&format!("    statusOnError: \"{status}\"\n"));
    }
    if grpc {
        return format!(
            "extensionProviders:\n- name: {provider}\n  envoyExtAuthzGrpc:\n    service: 127.0.0.1\n    port: {port}\n{extra}"
        );
    }
    if options.downstream_on_allow {
        extra.push_str("    headersToDownstreamOnAllow: [x-resp-added]\n");
    }
    format!(
        "extensionProviders:
- name: {provider}
  envoyExtAuthzHttp:
    service: 127.0.0.1
    port: {port}
    pathPrefix: /check
    includeRequestHeadersInCheck: [x-ext-authz, \"x-b3-*\", x-forwarded-client-cert]
    includeAdditionalHeadersInCheck: {{x-ext-authz-additional-header-override: added}}
    headersToUpstreamOnAllow: [x-user]
    headersToDownstreamOnDeny: [x-ext-authz-check-result]
{extra}"
    )
}

/// One request sent through Envoy and through meshguard: the questions the authorizer got
/// (`None`: not asked), the answers the client got, and what the upstream received
/// (`None`: nothing).
#[derive(Debug)]
struct Both {
    envoy_q: Option<Value>,
    ours_q: Option<Value>,
    envoy_r: Response,
    ours_r: Response,
    envoy_up: Option<Forwarded>,
    ours_up: Option<Forwarded>,
}

/// Sends each of `requests` (raw HTTP/1.1, and whether the authorizer is asked about it)
/// through Envoy and through meshguard, with the gRPC or the HTTP provider and `options`, to
/// the same recording authorizer; Envoy and meshguard each have their own recording upstream.
fn compare(
    test: &str,
    grpc: bool,
    options: Options,
    requests: &[(&str, bool)],
) -> Option<Vec<Both>> {
    let binary = envoy::find_or_skip(test)?;
    let authz = Authorizer::start(test)?;
    let provider = if grpc {
        "sample-ext-authz-grpc"
    } else {
        "sample-ext-authz-http"
    };
    let policy = custom("ext-authz", provider, &["/headers", "/headers/*"]);
    let (envoy_upstream, ours_upstream) = (BodyRecorder::start(), BodyRecorder::start());
    let port = if grpc { authz.grpc } else { authz.http };
    let authz_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = support::fs::tmp(&format!("ext-authz-client-{test}"));
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    let certs = dir.join("certs");
    if options.mtls {
        mtls_certs(&certs);
    }
    let envoy_listen = free_port("127.0.0.1");
    let mut bootstrap = istio_bootstrap(
        &policy,
        provider,
        grpc,
        options,
        envoy_listen,
        envoy_upstream.addr.parse().unwrap(),
        authz_addr,
    );
    if options.mtls {
        strict_mtls(&mut bootstrap, &certs.join("httpbin"));
    }
    let envoy_dir = TempDir::new().unwrap();
    let envoy = Envoy::start(&binary, &bootstrap, &envoy_dir, envoy_listen).unwrap();

    std::fs::write(dir.join("policies/custom.yaml"), &policy).unwrap();
    let tls_dir = certs.join("httpbin").display().to_string();
    let mut extra: Vec<&str> = Vec::new();
    if options.mtls {
        std::fs::write(
            dir.join("policies/strict.yaml"),
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: foo}\nspec: {mtls: {mode: STRICT}}\n",
        )
        .unwrap();
        extra.extend(["--tls-dir", &tls_dir]);
    }
    let p = proxy_with(
        &dir,
        &compared_mesh(provider, grpc, port, options),
        &ours_upstream.addr,
        &extra,
    );
    let client = options.mtls.then(|| mtls_client(&certs));
    let send = |addr: &str, raw: &str| match &client {
        Some(config) => tls_exchange(addr, config, raw),
        None => exchange(addr, raw),
    };
    let mut out = Vec::new();
    let mut asked = 0;
    // The question about the request just answered, if it was asked (the authorizer records
    // a question before it answers; one not asked shows at the next asked one's count).
    let mut question = |was_asked: bool, who: &str| {
        if !was_asked {
            return None;
        }
        asked += 1;
        let q = authz.questions(asked);
        assert_eq!(q.len(), asked, "{who} did not ask: {}", envoy.log());
        q.last().cloned()
    };
    for (raw, was_asked) in requests {
        let envoy_seen = envoy_upstream.count();
        let envoy_r = send(&envoy_listen.to_string(), raw);
        let envoy_q = question(*was_asked, "Envoy");
        let ours_seen = ours_upstream.count();
        let ours_r = send(p.socket().to_string().as_str(), raw);
        let ours_q = question(*was_asked, "meshguard");
        out.push(Both {
            envoy_q,
            ours_q,
            envoy_r,
            ours_r,
            envoy_up: envoy_upstream.after(envoy_seen),
            ours_up: ours_upstream.after(ours_seen),
        });
    }
    assert_eq!(
        authz.questions(asked).len(),
        asked,
        "an unexpected question"
    );
    Some(out)
}

/// A request as an upstream received it: the head's header fields (lower-case names, in
/// order) and the body, de-chunked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Forwarded {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Forwarded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.1 upstream that records each request whole (head and body) and answers
/// `200 ok`, closing the connection.
struct BodyRecorder {
    addr: String,
    seen: Arc<Mutex<Vec<Forwarded>>>,
}

impl BodyRecorder {
    fn start() -> BodyRecorder {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        let (addr, _) = support::upstream::serve_with(move |mut s| {
            if let Some(f) = read_request(&mut s) {
                into.lock().unwrap().push(f);
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            }
        });
        BodyRecorder { addr, seen }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The request received after the first `n`, if any (recorded before it is answered).
    fn after(&self, n: usize) -> Option<Forwarded> {
        let seen = self.seen.lock().unwrap();
        assert!(seen.len() <= n + 1, "more than one request forwarded");
        seen.get(n).cloned()
    }
}

/// Reads one HTTP/1.1 request (`content-length` or chunked body).
fn read_request(s: &mut std::net::TcpStream) -> Option<Forwarded> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut more = |buf: &mut Vec<u8>| match s.read(&mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    };
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if !more(&mut buf) {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut rest = buf[head_end..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        while !rest.ends_with(b"0\r\n\r\n") {
            if !more(&mut rest) {
                break;
            }
        }
        let mut body = Vec::new();
        let mut at = 0;
        while let Some(eol) = rest[at..].windows(2).position(|w| w == b"\r\n") {
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[at..at + eol]).unwrap().trim(), 16)
                    .unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&rest[at + eol + 2..at + eol + 2 + size]);
            at += eol + 2 + size + 2;
        }
        body
    } else {
        let len = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse::<usize>().unwrap());
        while rest.len() < len {
            if !more(&mut rest) {
                break;
            }
        }
        rest
    };
    Some(Forwarded {
        request_line,
        headers,
        body,
    })
}

/// What a client sees of an answer, for comparing: status, body, the headers a denial is made
/// of.
fn seen(r: &Response) -> (u16, String, Vec<(String, String)>) {
    let mut h: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .filter(|(n, _)| {
            matches!(
                n.as_str(),
                "content-type"
                    | "content-length"
                    | "www-authenticate"
                    | "x-ext-authz-check-result"
                    | "x-resp-added"
                    | "set-cookie"
            )
        })
        .collect();
    h.sort();
    (r.status, r.body.clone(), h)
}

/// The `CheckRequest` meshguard sends is the one Envoy 1.40 sends for the same request, field
/// by field (after [`normalized`]), and the client gets the same answer.
#[test]
fn grpc_check_request_is_the_one_envoy_sends() {
    let requests: Vec<(&str, bool)> = COMPARED.iter().map(|r| (*r, true)).collect();
    let Some(all) = compare(
        "grpc_check_request_is_the_one_envoy_sends",
        true,
        Options::default(),
        &requests,
    ) else {
        return;
    };
    for b in all {
        assert_eq!(
            normalized(b.ours_q.unwrap()["check"].clone()),
            normalized(b.envoy_q.unwrap()["check"].clone()),
            "meshguard's CheckRequest (left) and Envoy's (right)"
        );
        assert_eq!(seen(&b.ours_r), seen(&b.envoy_r), "the client's answer");
    }
}

/// The HTTP variant: the request meshguard sends to the authorizer has Envoy's method, path,
/// and headers (values compared, but for `x-request-id`-like per-proxy values).
#[test]
fn http_check_request_is_the_one_envoy_sends() {
    let requests: Vec<(&str, bool)> = COMPARED.iter().map(|r| (*r, true)).collect();
    let Some(all) = compare(
        "http_check_request_is_the_one_envoy_sends",
        false,
        Options::default(),
        &requests,
    ) else {
        return;
    };
    for b in all {
        let view = |q: &Value| {
            let mut h: Vec<(String, String)> = q["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    (
                        h[0].as_str().unwrap().to_string(),
                        h[1].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            h.sort();
            (q["method"].clone(), q["path"].clone(), h, q["body"].clone())
        };
        assert_eq!(
            view(&b.ours_q.unwrap()),
            view(&b.envoy_q.unwrap()),
            "meshguard's check request (left) and Envoy's (right)"
        );
        assert_eq!(seen(&b.ours_r), seen(&b.envoy_r), "the client's answer");
    }
}

/// Over Istio mutual TLS, gRPC and HTTP: the question is Envoy's, field by field (gRPC:
/// `source.principal` the client's SPIFFE ID, `destination.principal` the serving
/// certificate's, neither `source.certificate` nor `tls_session`, as istiod sets neither
/// `include_peer_certificate` nor `include_tls_session`; `scheme` and `x-forwarded-proto`
/// `https`; the header map's `x-forwarded-client-cert`, a client's own value kept before the
/// proxy's, `APPEND_FORWARD`), and the client's answer and the upstream's request line are
/// Envoy's.
#[test]
fn check_request_over_mutual_tls_is_the_one_envoy_sends() {
    let mut requests: Vec<String> = COMPARED.iter().map(|r| r.to_string()).collect();
    requests.push(
        "GET /headers HTTP/1.1\r\nhost: httpbin.foo:8000\r\nx-ext-authz: allow\r\nx-forwarded-client-cert: By=spiffe://evil;URI=spiffe://cluster.local/ns/foo/sa/admin\r\nx-forwarded-proto: http\r\nconnection: close\r\n\r\n"
            .to_string(),
    );
    for grpc in [true, false] {
        let asked: Vec<(&str, bool)> = requests.iter().map(|r| (r.as_str(), true)).collect();
        let Some(mut all) = compare(
            "check_request_over_mutual_tls_is_the_one_envoy_sends",
            grpc,
            Options {
                mtls: true,
                ..Options::default()
            },
            &asked,
        ) else {
            return;
        };
        if grpc {
            // The one deliberate difference (docs/differences.md, Authorization): Envoy keeps
            // the client's `x-forwarded-proto: http` and derives `:scheme` from it; meshguard
            // says how the client connected.
            let http = all[3]
                .envoy_q
                .as_mut()
                .unwrap()
                .pointer_mut("/check/attributes/request/http")
                .unwrap();
            for field in ["/scheme", "/headers/:scheme", "/headers/x-forwarded-proto"] {
                let v = http.pointer_mut(field).unwrap();
                assert_eq!(*v, "http", "Envoy's {field}");
                *v = json!("https");
            }
        }
        assert_same(grpc, &all, &requests);
        assert_eq!(all[0].ours_r.status, 200, "{:?}", all[0].ours_r);
        if !grpc {
            // `includeRequestHeadersInCheck` names it: the proxy's value, after the client's.
            let q = all[3].ours_q.as_ref().unwrap();
            let xfcc: Vec<&str> = q["headers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|h| h[0] == "x-forwarded-client-cert")
                .map(|h| h[1].as_str().unwrap())
                .collect();
            assert_eq!(xfcc.len(), 1, "{q}");
            assert!(
                xfcc[0].starts_with("By=spiffe://evil;URI=spiffe://cluster.local/ns/foo/sa/admin,By=spiffe://cluster.local/ns/foo/sa/httpbin;"),
                "{q}"
            );
            continue;
        }
        for b in &all {
            let a = &b.ours_q.as_ref().unwrap()["check"]["attributes"];
            assert_eq!(
                a["source"]["principal"],
                "spiffe://cluster.local/ns/bar/sa/sleep"
            );
            assert_eq!(
                a["destination"]["principal"],
                "spiffe://cluster.local/ns/foo/sa/httpbin"
            );
            assert!(a["source"].get("certificate").is_none(), "{a}");
            assert!(a.get("tlsSession").is_none(), "{a}");
            let http = &a["request"]["http"];
            assert_eq!(http["scheme"], "https");
            assert_eq!(http["headers"]["x-forwarded-proto"], "https");
        }
        let xfcc = |i: usize| {
            all[i].ours_q.as_ref().unwrap()["check"]["attributes"]["request"]["http"]["headers"]
                ["x-forwarded-client-cert"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let own = xfcc(0);
        assert!(
            own.starts_with("By=spiffe://cluster.local/ns/foo/sa/httpbin;Hash=")
                && own.ends_with(";Subject=\"\";URI=spiffe://cluster.local/ns/bar/sa/sleep"),
            "{own}"
        );
        assert_eq!(
            xfcc(3),
            format!("By=spiffe://evil;URI=spiffe://cluster.local/ns/foo/sa/admin,{own}")
        );
    }
}

/// A GET of `path` that the authorizer answers by `verdict`, with a client's own copy of the
/// partial-body marker (never passed on to the authorizer).
fn get_with(verdict: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nhost: httpbin.foo:8000\r\nx-ext-authz: {verdict}\r\nx-envoy-auth-partial-body: forged\r\nconnection: close\r\n\r\n"
    )
}

/// The question (gRPC: the normalized `CheckRequest`; HTTP: method, path, sorted headers and
/// body), the client's answer and the request line the upstream got are Envoy's.
fn assert_same(grpc: bool, all: &[Both], requests: &[String]) {
    let http_view = |q: &Value| {
        let mut h: Vec<(String, String)> = q["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h[0].as_str().unwrap().to_string(),
                    h[1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        h.sort();
        json!([q["method"], q["path"], h, q["body"]])
    };
    for (b, raw) in all.iter().zip(requests) {
        match (&b.ours_q, &b.envoy_q) {
            (Some(ours), Some(envoy)) if grpc => assert_eq!(
                normalized(ours["check"].clone()),
                normalized(envoy["check"].clone()),
                "{raw:?}: meshguard's CheckRequest (left) and Envoy's (right)"
            ),
            (Some(ours), Some(envoy)) => assert_eq!(
                http_view(ours),
                http_view(envoy),
                "{raw:?}: meshguard's check request (left) and Envoy's (right)"
            ),
            (None, None) => {}
            other => panic!("{raw:?}: asked by one of them only: {other:?}"),
        }
        assert_eq!(
            seen(&b.ours_r),
            seen(&b.envoy_r),
            "{raw:?}: the client's answer"
        );
        let line = |f: &Option<Forwarded>| f.as_ref().map(|f| f.request_line.clone());
        assert_eq!(
            line(&b.ours_up),
            line(&b.envoy_up),
            "{raw:?}: the upstream's request"
        );
    }
}

/// gRPC `ok_response`: `response_headers_to_add` reach the client, `query_parameters_to_set`
/// and `query_parameters_to_remove` rewrite the upstream's query as Envoy 1.40 does (parsed
/// without decoding, written again sorted by name); a client's `x-envoy-auth-partial-body`
/// is not passed on to the authorizer.
#[test]
fn grpc_ok_response_query_and_response_headers_are_envoys() {
    let requests = [
        get_with("allow-more", "/headers?x=1&y=2&z=3&x=4&b=%2F&a"),
        get_with("allow-more", "/headers"),
        get_with("allow-more", "/headers?gone"),
        get_with(
            "allow-more",
            "/headers?c=%41&d=a+b&e=x%20y&B=1&x&y=1&y=2&=z&f==",
        ),
        get_with("allow", "/headers?q=1"),
    ];
    let asked: Vec<(&str, bool)> = requests.iter().map(|r| (r.as_str(), true)).collect();
    let Some(all) = compare(
        "grpc_ok_response_query_and_response_headers_are_envoys",
        true,
        Options::default(),
        &asked,
    ) else {
        return;
    };
    assert_same(true, &all, &requests);
    let ours = |i: usize| all[i].ours_up.as_ref().unwrap().request_line.clone();
    assert_eq!(ours(0), "GET /headers?a=&added=1&b=%2F&x=2&z=3 HTTP/1.1");
    assert_eq!(ours(1), "GET /headers?added=1&x=2 HTTP/1.1");
    assert_eq!(ours(4), "GET /headers?q=1 HTTP/1.1");
    assert_eq!(all[0].ours_r.header("x-resp-added"), Some("yes"));
    assert_eq!(all[4].ours_r.header("x-resp-added"), None);
}

/// HTTP `headersToDownstreamOnAllow`: the listed headers of the authorizer's 200 reach the
/// client (`x-resp-added`), the others (`set-cookie`) do not.
#[test]
fn http_headers_to_downstream_on_allow_are_envoys() {
    let requests = [
        get_with("allow-more", "/headers?x=1"),
        get_with("allow", "/headers"),
    ];
    let asked: Vec<(&str, bool)> = requests.iter().map(|r| (r.as_str(), true)).collect();
    let Some(all) = compare(
        "http_headers_to_downstream_on_allow_are_envoys",
        false,
        Options {
            downstream_on_allow: true,
            ..Options::default()
        },
        &asked,
    ) else {
        return;
    };
    assert_same(false, &all, &requests);
    assert_eq!(all[0].ours_r.header("x-resp-added"), Some("yes"));
    assert_eq!(all[0].ours_r.header("set-cookie"), None);
}

/// Answers that are not an allow or a denial, with `statusOnError: "502"`: a gRPC
/// `error_response` is the client's answer (its status, headers and body; `statusOnError`
/// when it has no status); a `CheckResponse` with a status but no `http_response` is a 403
/// denial; a message that is not a `CheckResponse`, a failed RPC, an HTTP 5xx and bytes that
/// are not HTTP are `statusOnError` with an empty body. All as Envoy 1.40 answers.
#[test]
fn authorizer_errors_are_answered_as_envoy_does() {
    for grpc in [true, false] {
        let requests: Vec<String> = [
            "error-response",
            "error-response-bare",
            "status-only",
            "garbage",
            "error",
        ]
        .iter()
        .map(|v| get_with(v, "/headers"))
        .collect();
        let asked: Vec<(&str, bool)> = requests.iter().map(|r| (r.as_str(), true)).collect();
        let Some(all) = compare(
            "authorizer_errors_are_answered_as_envoy_does",
            grpc,
            Options {
                status_on_error: Some(502),
                ..Options::default()
            },
            &asked,
        ) else {
            return;
        };
        assert_same(grpc, &all, &requests);
        let status: Vec<u16> = all.iter().map(|b| b.ours_r.status).collect();
        if grpc {
            assert_eq!(status, [503, 502, 403, 502, 502]);
            assert_eq!(all[0].ours_r.body, "authorizer failed");
            assert_eq!(
                all[0].ours_r.header("x-ext-authz-check-result"),
                Some("error")
            );
        } else {
            // The HTTP authorizer's 503 is an error, its status-only answer a denial.
            assert_eq!(status, [502, 401, 401, 502, 502]);
        }
    }
}

/// A POST to `/headers` that the authorizer answers by `verdict`, with `framing` (its
/// `content-length` or `transfer-encoding` line) and `body` as sent.
fn post(verdict: &str, framing: &str, body: &str) -> String {
    format!(
        "POST /headers HTTP/1.1\r\nhost: httpbin.foo:8000\r\nx-ext-authz: {verdict}\r\n{framing}\r\nconnection: close\r\n\r\n{body}"
    )
}

/// The bodies of the body comparisons: (request, the body the upstream must get, whether
/// it is over 8 bytes).
fn body_requests() -> Vec<(String, &'static str, bool)> {
    vec![
        (post("allow", "content-length: 5", "hello"), "hello", false),
        (
            post("allow", "content-length: 8", "01234567"),
            "01234567",
            false,
        ),
        (
            post("allow", "content-length: 20", "0123456789abcdefghij"),
            "0123456789abcdefghij",
            true,
        ),
        (
            post(
                "allow",
                "transfer-encoding: chunked",
                "5\r\nhello\r\nf\r\n0123456789abcde\r\n0\r\n\r\n",
            ),
            "hello0123456789abcde",
            true,
        ),
        (post("allow", "content-length: 0", ""), "", false),
        (get_with("allow", "/headers"), "", false),
        (
            post("nope", "content-length: 20", "0123456789abcdefghij"),
            "",
            true,
        ),
    ]
}

/// `includeRequestBodyInCheck` with `maxRequestBytes: 8`, gRPC and HTTP, against Envoy 1.40:
/// with `allowPartialMessage` the authorizer gets the first 8 bytes (gRPC `body`, or
/// `raw_body` with `packAsBytes`; `size` the bytes read; `x-envoy-auth-partial-body`
/// true when cut; HTTP: the bytes as the check's body, its `content-length` theirs), and the
/// upstream gets the whole body, the same bytes once, framed as the client framed it; without
/// `allowPartialMessage` a longer body is refused with 413 `Payload Too Large` before the
/// authorizer is asked. A request without a body is sent without one.
#[test]
fn request_body_in_check_is_envoys() {
    for (grpc, partial, pack) in [
        (true, true, false),
        (true, false, true),
        (false, true, false),
        (false, false, false),
    ] {
        let cases = body_requests();
        let requests: Vec<String> = cases.iter().map(|c| c.0.clone()).collect();
        let asked: Vec<(&str, bool)> = cases
            .iter()
            .map(|(r, _, over)| (r.as_str(), partial || !over))
            .collect();
        let Some(all) = compare(
            "request_body_in_check_is_envoys",
            grpc,
            Options {
                body: Some((8, partial, pack)),
                ..Options::default()
            },
            &asked,
        ) else {
            return;
        };
        assert_same(grpc, &all, &requests);
        for (b, (raw, upstream_body, over)) in all.iter().zip(&cases) {
            let ctx = format!("grpc {grpc}, partial {partial}: {raw:?}");
            let framing = |f: &Forwarded| {
                (
                    f.header("content-length").map(str::to_string),
                    f.header("transfer-encoding").map(str::to_string),
                )
            };
            match (&b.ours_up, &b.envoy_up) {
                (Some(ours), Some(envoy)) => {
                    assert_eq!(ours.body, upstream_body.as_bytes(), "{ctx}");
                    assert_eq!(ours.body, envoy.body, "{ctx}");
                    assert_eq!(framing(ours), framing(envoy), "{ctx}");
                }
                (None, None) => {}
                other => panic!("{ctx}: forwarded by one of them only: {other:?}"),
            }
            if *over && !partial {
                assert_eq!(
                    (b.ours_r.status, b.ours_r.body.as_str()),
                    (413, "Payload Too Large"),
                    "{ctx}"
                );
                assert!(b.ours_q.is_none(), "{ctx}");
            }
        }
        // What the authorizer got of the 20-byte body, cut at 8.
        if partial {
            let q = all[2].ours_q.as_ref().unwrap();
            if grpc {
                let http = &q["check"]["attributes"]["request"]["http"];
                assert_eq!(http["body"], "01234567");
                assert_eq!(http["size"], "20");
                assert_eq!(http["headers"]["x-envoy-auth-partial-body"], "true");
            } else {
                assert_eq!(q["body"], "01234567");
            }
        } else if grpc {
            // packAsBytes: base64 of "hello".
            let http = &all[0].ours_q.as_ref().unwrap()["check"]["attributes"]["request"]["http"];
            assert_eq!(http["rawBody"], "aGVsbG8=");
        }
    }
}

/// `check --mesh-config` says which provider would be asked (exit 3), where without the mesh
/// config the CUSTOM rule denies (exit 2); `validate --mesh-config` reports a CUSTOM policy
/// naming a provider the mesh config does not define, and a mesh config error names the file,
/// provider, field and value.
#[test]
fn check_and_validate_read_the_mesh_configs_providers() {
    let dir = support::fs::tmp("ext-authz-client-check");
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(
        dir.join("policies/ext.yaml"),
        format!(
            "{}---\n{}",
            custom("ext-authz", "sample-ext-authz-grpc", &["/headers"]),
            custom("typo", "sample-ext-authz-grcp", &["/ip"])
        ),
    )
    .unwrap();
    let mesh = dir.join("mesh.yaml");
    std::fs::write(
        &mesh,
        "extensionProviders:\n- name: sample-ext-authz-grpc\n  envoyExtAuthzGrpc: {service: ext-authz.foo.svc.cluster.local, port: 9000}\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = support::proxy::meshguard().args(args).output().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let policies = dir.join("policies").display().to_string();
    let mesh_arg = mesh.display().to_string();
    let check = [
        "check",
        "-p",
        &policies,
        "-n",
        "foo",
        "-l",
        "app=httpbin",
        "--path",
        "/headers",
    ];
    let (code, out, _) = run(&[&check[..], &["--mesh-config", &mesh_arg]].concat());
    assert_eq!(code, 3, "{out}");
    assert!(
        out.starts_with(
            "CUSTOM: provider sample-ext-authz-grpc would be asked (rule ns[foo]-policy[ext-authz]-rule[0])"
        ),
        "{out}"
    );
    let (code, out, _) = run(&check);
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("DENIED 403 Forbidden"), "{out}");

    let (code, out, _) = run(&["validate", &policies, "--mesh-config", &mesh_arg]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("(AuthorizationPolicy foo/typo): field spec.provider.name = sample-ext-authz-grcp: no ext_authz provider \"sample-ext-authz-grcp\""),
        "{out}"
    );
    std::fs::write(
        &mesh,
        "extensionProviders:\n- name: sample-ext-authz-grpc\n  envoyExtAuthzGrpc: {service: ext-authz, port: 0}\n",
    )
    .unwrap();
    let (code, _, err) = run(&["validate", &policies, "--mesh-config", &mesh_arg]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("mesh.yaml: extensionProviders[0] (\"sample-ext-authz-grpc\"): envoyExtAuthzGrpc.port: port must be in the range [1, 65535], found: 0"),
        "{err}"
    );
}
