//! `meshguard ext-authz --kubernetes --workload-from-request` against a real Kubernetes API
//! server (`support::k8s`): one process decides every workload, each Check for the Pod its
//! destination address is (Pods created with `kubectl`, their `status.podIP` set through the
//! status subresource, as a kubelet would), else for the destination principal's namespace,
//! and denies a Check that names neither. Checks are sent over gRPC with Envoy's own messages
//! (`envoy.service.auth.v3.Authorization/Check`); the answers, the access-log line's
//! `workload`, the metric and the warning are asserted; relabelling a Pod and changing a policy
//! are followed by the next Checks.
//!
//! Each test starts its own API server; without one (tests/k8s/build.sh not run) they pass
//! after a `SKIPPED` line, and fail under `MESHGUARD_REQUIRE_K8S=1`.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use serde_json::Value;
use support::fs::{demo_token, groups_token, root};
use support::http::exchange;
use support::k8s::{ApiServer, text};
use support::proxy::meshguard;

#[track_caller]
fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn path(relative: &str) -> String {
    root().join(relative).to_str().unwrap().to_string()
}

fn namespaces(k8s: &ApiServer, names: &[&str]) {
    for ns in names {
        ok(k8s.kubectl(&["create", "namespace", ns]));
    }
}

fn apply_yaml(k8s: &ApiServer, yaml: &str) -> String {
    ok(k8s.kubectl_stdin(&["apply", "-f", "-"], yaml))
}

/// A Pod object with `labels` and, as its kubelet would report it, `Running` with `ip`.
fn pod(k8s: &ApiServer, ns: &str, name: &str, labels: &str, ip: &str) {
    apply_yaml(
        k8s,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}\n\
             spec: {{containers: [{{name: app, image: registry.example.com/app:test}}]}}\n"
        ),
    );
    let status =
        format!(r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}]}}}}"#);
    ok(k8s.kubectl(&[
        "patch",
        "pod",
        name,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]));
}

/// A running `meshguard ext-authz`: addresses from its start-up line, stdout (the access log)
/// and stderr collected; killed when dropped.
struct Server {
    child: Child,
    grpc: SocketAddr,
    admin: String,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect<R: std::io::Read + Send + 'static>(r: R, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            into.lock().unwrap().push(line);
        }
    });
}

impl Server {
    fn start(kubeconfig: &Path, extra: &[&str]) -> Server {
        let mut child = meshguard()
            .args(["ext-authz", "--kubernetes", "--workload-from-request"])
            .args(["--kubeconfig", kubeconfig.to_str().unwrap()])
            .args(["--grpc-listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let deadline = Instant::now() + Duration::from_secs(30);
        let words = loop {
            assert!(Instant::now() < deadline, "ext-authz did not start");
            let line = lines.next().map(Result::unwrap).unwrap_or_else(|| {
                panic!("ext-authz exited:\n{}", stderr.lock().unwrap().join("\n"))
            });
            stderr.lock().unwrap().push(line.clone());
            // meshguard: ext_authz gRPC on ADDR, admin on http://ADDR
            if line.starts_with("meshguard: ext_authz gRPC on ") {
                break line
                    .split([' ', ','])
                    .map(str::to_string)
                    .collect::<Vec<_>>();
            }
        };
        let stdout = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().unwrap(), stdout.clone());
        let rest = stderr.clone();
        std::thread::spawn(move || {
            for line in lines {
                let Ok(line) = line else { break };
                rest.lock().unwrap().push(line);
            }
        });
        Server {
            child,
            grpc: words[4].parse().unwrap(),
            admin: words
                .last()
                .unwrap()
                .trim_start_matches("http://")
                .to_string(),
            stdout,
            stderr,
        }
    }

    /// Waits for `/healthz/ready` (policies and Pods listed).
    fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = exchange(
                &self.admin,
                "GET /healthz/ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            );
            if r.status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not ready: {} {}\n{}",
                r.status,
                r.body,
                self.stderr.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn metrics(&self) -> String {
        exchange(
            &self.admin,
            "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .body
    }

    /// The access-log line of the Check with `x-request-id: id` (10 s at most).
    fn log_of(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["request_id"] == id);
            if let Some(v) = found {
                return v;
            }
            assert!(Instant::now() < deadline, "no access-log line for {id}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn config_dump(&self) -> Value {
        let r = exchange(
            &self.admin,
            "GET /config_dump HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str(&r.body).unwrap()
    }

    /// Waits (10 s at most) for a stderr line containing `needle`.
    #[track_caller]
    fn wait_stderr(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.stderr_has(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in\n{}",
                self.stderr.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stderr_has(&self, needle: &str) -> bool {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }
}

fn peer(ip: &str, port: u32, principal: &str) -> Option<Peer> {
    Some(Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        principal: principal.into(),
        ..Default::default()
    })
}

/// One Check as a sidecar's `ext_authz` sends it.
struct Check<'a> {
    method: &'a str,
    destination: &'a str,
    destination_principal: &'a str,
    token: Option<String>,
    id: &'a str,
}

impl<'a> Check<'a> {
    fn get(destination: &'a str, id: &'a str) -> Check<'a> {
        Check {
            method: "GET",
            destination,
            destination_principal: "",
            token: None,
            id,
        }
    }
}

/// The status Envoy would answer (200: allowed), and the denial's body.
fn check(grpc: SocketAddr, c: &Check<'_>) -> (i32, String) {
    let mut headers: std::collections::HashMap<String, String> = [
        ("x-request-id".to_string(), c.id.to_string()),
        ("user-agent".to_string(), "curl/8".to_string()),
    ]
    .into();
    if let Some(t) = &c.token {
        headers.insert("authorization".into(), format!("Bearer {t}"));
    }
    let req = CheckRequest {
        attributes: Some(AttributeContext {
            source: peer(
                "10.5.0.9",
                40000,
                "spiffe://cluster.local/ns/sleep/sa/sleep",
            ),
            destination: peer(c.destination, 8080, c.destination_principal),
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: c.method.into(),
                    path: "/headers".into(),
                    host: "httpbin.foo".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let resp = rt.block_on(async {
        let mut client = AuthorizationClient::connect(format!("http://{grpc}"))
            .await
            .unwrap();
        client.check(req).await.unwrap().into_inner()
    });
    match resp.http_response {
        Some(HttpResponse::OkResponse(_)) => (200, String::new()),
        Some(HttpResponse::DeniedResponse(d)) => (d.status.unwrap().code, d.body),
        other => panic!("{other:?}"),
    }
}

/// Sends `c` until it gets `status` (a change reaches meshguard through its watches); panics
/// after 30 s.
#[track_caller]
fn until(grpc: SocketAddr, c: &Check<'_>, status: i32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (got, body) = check(grpc, c);
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} to {}: still {got} ({body}), want {status}",
            c.method,
            c.destination
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The walkthrough's step 4 in foo (httpbin: a token with group1), a namespace-wide
/// GET-only policy in bar; Pods foo/httpbin-1 (app=httpbin), foo/sleep-1 (app=sleep) and
/// bar/web-1 (app=web).
fn cluster(k8s: &ApiServer) {
    namespaces(k8s, &["foo", "bar", "istio-system"]);
    ok(k8s.kubectl(&["apply", "-f", &path("examples/step4-require-claim")]));
    apply_yaml(
        k8s,
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: get-only, namespace: bar}\n\
         spec: {rules: [{to: [{operation: {methods: [GET]}}]}]}\n",
    );
    pod(k8s, "foo", "httpbin-1", "app: httpbin", "10.1.0.1");
    pod(k8s, "foo", "sleep-1", "app: sleep", "10.1.0.2");
    pod(k8s, "bar", "web-1", "app: web", "10.2.0.1");
}

#[test]
fn each_check_is_decided_for_the_pod_its_destination_is_or_the_principals_namespace() {
    let Some(k8s) = ApiServer::start("ext_authz_workloads") else {
        return;
    };
    cluster(&k8s);
    let s = Server::start(k8s.admin_kubeconfig(), &["--kubernetes-scope", "cluster"]);
    s.ready();
    let g = s.grpc;

    // httpbin's Pod: the walkthrough's step 4.
    let (status, body) = check(g, &Check::get("10.1.0.1", "httpbin-none"));
    assert_eq!((status, body.as_str()), (403, "RBAC: access denied"));
    let demo = Check {
        token: Some(demo_token()),
        ..Check::get("10.1.0.1", "httpbin-demo")
    };
    assert_eq!(check(g, &demo).0, 403);
    let groups = Check {
        token: Some(groups_token()),
        ..Check::get("10.1.0.1", "httpbin-groups")
    };
    assert_eq!(check(g, &groups).0, 200);
    let invalid = Check {
        token: Some("invalidtoken".into()),
        ..Check::get("10.1.0.1", "httpbin-invalid")
    };
    assert_eq!(check(g, &invalid).0, 401);
    let line = s.log_of("httpbin-groups");
    assert_eq!(
        line["workload"],
        serde_json::json!({"from": "pod-ip", "namespace": "foo", "labels": {"app": "httpbin"}, "pod": "foo/httpbin-1"}),
        "{line}"
    );
    assert_eq!(line["response_code"], 200);

    // sleep's Pod: no policy selects app=sleep.
    assert_eq!(check(g, &Check::get("10.1.0.2", "sleep-none")).0, 200);
    assert_eq!(
        s.log_of("sleep-none")["workload"]["labels"],
        serde_json::json!({"app": "sleep"})
    );

    // bar's Pod and bar's principal on an unknown IP: bar's namespace-wide policy.
    let post = |dest, principal, id| Check {
        method: "POST",
        destination_principal: principal,
        ..Check::get(dest, id)
    };
    assert_eq!(check(g, &Check::get("10.2.0.1", "web-get")).0, 200);
    assert_eq!(check(g, &post("10.2.0.1", "", "web-post")).0, 403);
    let bar = "spiffe://cluster.local/ns/bar/sa/web";
    let unknown_get = Check {
        destination_principal: bar,
        ..Check::get("10.9.9.9", "principal-get")
    };
    assert_eq!(check(g, &unknown_get).0, 200);
    let (status, body) = check(g, &post("10.9.9.9", bar, "principal-post"));
    assert_eq!((status, body.as_str()), (403, "RBAC: access denied"));
    let line = s.log_of("principal-post");
    assert_eq!(
        line["workload"],
        serde_json::json!({"from": "principal-namespace", "namespace": "bar", "labels": {}}),
        "{line}"
    );
    // Denied by bar's ALLOW policy matching nothing, as Envoy's rbac says it.
    assert_eq!(
        line["response_code_details"], "rbac_access_denied_matched_policy[none]",
        "{line}"
    );
    let line = s.log_of("principal-get");
    assert_eq!(line["policy"], "ns[bar]-policy[get-only]-rule[0]", "{line}");
    // A principal of foo on an unknown IP: foo without labels, which step 4 does not select.
    let foo_principal = Check {
        destination_principal: "spiffe://cluster.local/ns/foo/sa/httpbin",
        ..Check::get("10.9.9.8", "principal-foo")
    };
    assert_eq!(check(g, &foo_principal).0, 200);

    // Neither: denied, and said so.
    let (status, body) = check(g, &Check::get("10.9.9.9", "nobody"));
    assert_eq!(
        (status, body.as_str()),
        (403, "no workload for destination 10.9.9.9")
    );
    let line = s.log_of("nobody");
    assert_eq!(line["response_code"], 403);
    assert_eq!(line["response_code_details"], "meshguard_no_workload");
    assert_eq!(line["path"], "/headers");
    assert_eq!(
        line["workload"],
        serde_json::json!({"from": "none", "namespace": null, "labels": null,
            "why": "no Pod has this IP and the Check carries no destination principal"}),
        "{line}"
    );
    assert!(
        s.metrics()
            .contains("meshguard_ext_authz_checks_total{result=\"no_workload\"} 1"),
        "{}",
        s.metrics()
    );
    assert!(s.stderr_has(
        "no workload for destination 10.9.9.9: no Pod has this IP and the Check carries no destination principal; denied (403)"
    ));
    // A Pod IP whose principal names another namespace: the IP may have moved, no guess.
    let (status, _) = check(g, &post("10.1.0.2", bar, "mismatch"));
    assert_eq!(status, 403);
    assert_eq!(
        s.log_of("mismatch")["workload"]["why"],
        "the IP is Pod foo/sleep-1, but the destination principal is of namespace bar"
    );

    // /config_dump lists the workloads met, how, their Pods and what applies to them.
    let dump = s.config_dump();
    let generation = dump["generation"].clone();
    let w = &dump["workloads"];
    assert_eq!(
        (&w["size"], &w["capacity"]),
        (&5.into(), &1024.into()),
        "{w:#}"
    );
    let httpbin = cached(&dump, "foo", serde_json::json!({"app": "httpbin"}));
    assert_eq!(
        (&httpbin["found"], &httpbin["pods"], &httpbin["generation"]),
        (
            &serde_json::json!(["pod-ip"]),
            &serde_json::json!(["foo/httpbin-1"]),
            &generation
        ),
        "{httpbin:#}"
    );
    assert_eq!(
        httpbin["applied"],
        serde_json::json!([
            "RequestAuthentication foo/jwt-example",
            "AuthorizationPolicy foo/require-jwt"
        ]),
        "{httpbin:#}"
    );
    let sleep = cached(&dump, "foo", serde_json::json!({"app": "sleep"}));
    assert_eq!(sleep["applied"], serde_json::json!([]), "{sleep:#}");
    let bar = cached(&dump, "bar", serde_json::json!({}));
    assert_eq!(
        (&bar["found"], &bar["pods"], &bar["applied"]),
        (
            &serde_json::json!(["principal-namespace"]),
            &serde_json::json!([]),
            &serde_json::json!(["AuthorizationPolicy bar/get-only"])
        ),
        "{bar:#}"
    );
    assert_eq!(
        cached(&dump, "bar", serde_json::json!({"app": "web"}))["pods"],
        serde_json::json!(["bar/web-1"])
    );
    // The first complete list's line says how many Pods were listed.
    s.wait_stderr("from the Kubernetes API server");
    s.wait_stderr("; Pods listed with an IP of their own: 3; each Check is decided");

    // sleep's Pod relabelled app=httpbin: step 4 now selects it.
    ok(k8s.kubectl(&[
        "label",
        "pod",
        "sleep-1",
        "-n",
        "foo",
        "app=httpbin",
        "--overwrite",
    ]));
    until(g, &Check::get("10.1.0.2", "relabelled"), 403);
    let relabelled = Check {
        token: Some(groups_token()),
        ..Check::get("10.1.0.2", "relabelled-groups")
    };
    assert_eq!(check(g, &relabelled).0, 200);
    assert_eq!(
        s.log_of("relabelled-groups")["workload"]["labels"],
        serde_json::json!({"app": "httpbin"})
    );

    // /config_dump: sleep-1 under its new labels, with httpbin-1.
    let dump = s.config_dump();
    assert_eq!(
        cached(&dump, "foo", serde_json::json!({"app": "httpbin"}))["pods"],
        serde_json::json!(["foo/httpbin-1", "foo/sleep-1"]),
        "{dump:#}"
    );

    // The policy changes: group3 is required now, which the groups token lacks.
    let step4 = std::fs::read_to_string(
        root().join("examples/step4-require-claim/authorization-policy.yaml"),
    )
    .unwrap();
    apply_yaml(&k8s, &step4.replace("[\"group1\"]", "[\"group3\"]"));
    until(g, &groups, 403);
    // Every cached workload follows: sleep-1's too.
    assert_eq!(check(g, &relabelled).0, 403);
    // A new Pod is found once the watch has seen its IP.
    pod(&k8s, "bar", "web-2", "app: web", "10.2.0.2");
    until(g, &post("10.2.0.2", "", "web-2-post"), 403);
    assert_eq!(check(g, &Check::get("10.2.0.2", "web-2-get")).0, 200);
}

/// The cached workload of `/config_dump` with `namespace` and `labels`.
#[track_caller]
fn cached(dump: &Value, namespace: &str, labels: Value) -> Value {
    dump["workloads"]["cached"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["namespace"] == namespace && w["labels"] == labels)
        .unwrap_or_else(|| panic!("no {namespace} {labels} in {:#}", dump["workloads"]))
        .clone()
}

/// The deploy manifest's RBAC serves namespace foo: its Pods and policies, and nothing of bar.
#[test]
fn the_deploy_manifest_serves_one_namespace_with_its_roles() {
    let Some(k8s) = ApiServer::start("ext_authz_workloads_rbac") else {
        return;
    };
    cluster(&k8s);
    namespaces(&k8s, &["meshguard-system"]);
    ok(k8s.kubectl(&["apply", "-f", &path("deploy/kubernetes/ext-authz.yaml")]));
    let sa = k8s.service_account_kubeconfig("meshguard-system", "meshguard-ext-authz");
    let s = Server::start(&sa, &["--namespace", "foo"]);
    s.ready();
    let g = s.grpc;
    assert_eq!(check(g, &Check::get("10.1.0.1", "httpbin")).0, 403);
    assert_eq!(check(g, &Check::get("10.1.0.2", "sleep")).0, 200);
    // bar's Pods are not watched, bar's policies not read: never decided without them.
    let bar = Check {
        destination_principal: "spiffe://cluster.local/ns/bar/sa/web",
        ..Check::get("10.2.0.1", "bar")
    };
    let (status, body) = check(g, &bar);
    assert_eq!(
        (status, body.as_str()),
        (403, "no workload for destination 10.2.0.1")
    );
    assert_eq!(
        s.log_of("bar")["workload"]["why"],
        "namespace bar (from the destination principal) is not one whose policies are read"
    );
    // The starting lines say what is served.
    assert!(s.stderr_has("a workload per Check, in namespace foo"));
}

/// The cluster variant's ClusterRole is enough to serve every namespace.
#[test]
fn the_cluster_deploy_manifest_serves_every_namespace_with_its_cluster_role() {
    let Some(k8s) = ApiServer::start("ext_authz_workloads_cluster_rbac") else {
        return;
    };
    cluster(&k8s);
    namespaces(&k8s, &["meshguard-system"]);
    let out = ok(k8s.kubectl(&[
        "apply",
        "-f",
        &path("deploy/kubernetes/ext-authz-cluster.yaml"),
    ]));
    // As docs/ext-authz.md shows it.
    assert_eq!(
        out,
        "serviceaccount/meshguard-ext-authz created\n\
         service/meshguard-ext-authz created\n\
         deployment.apps/meshguard-ext-authz created\n\
         clusterrole.rbac.authorization.k8s.io/meshguard-ext-authz created\n\
         clusterrolebinding.rbac.authorization.k8s.io/meshguard-ext-authz created\n"
    );
    let sa = k8s.service_account_kubeconfig("meshguard-system", "meshguard-ext-authz");
    let s = Server::start(&sa, &["--kubernetes-scope", "cluster"]);
    s.ready();
    let g = s.grpc;
    assert_eq!(check(g, &Check::get("10.1.0.1", "httpbin")).0, 403);
    assert_eq!(check(g, &Check::get("10.1.0.2", "sleep")).0, 200);
    // bar's Pod and bar's policy, read with the ClusterRole.
    assert_eq!(check(g, &Check::get("10.2.0.1", "web-get")).0, 200);
    let post = Check {
        method: "POST",
        ..Check::get("10.2.0.1", "web-post")
    };
    let (status, body) = check(g, &post);
    assert_eq!((status, body.as_str()), (403, "RBAC: access denied"));
    assert_eq!(
        s.log_of("web-post")["workload"]["pod"],
        "bar/web-1",
        "{}",
        s.log_of("web-post")
    );
    assert!(s.stderr_has("a workload per Check, in every namespace"));
}

#[test]
fn the_workload_from_request_needs_kubernetes_and_the_grpc_variant() {
    let out = meshguard()
        .args(["ext-authz", "--workload-from-request", "--policies"])
        .arg(root().join("examples/step4-require-claim"))
        .args(["--grpc-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "--workload-from-request finds each Check's workload through a Pod watch: it needs --kubernetes"
        ),
        "{}",
        text(&out)
    );
    let out = meshguard()
        .args(["ext-authz", "--kubernetes", "--workload-from-request"])
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "{}",
        text(&out)
    );
}
