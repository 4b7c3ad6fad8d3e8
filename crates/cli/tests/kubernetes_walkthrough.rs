//! The walkthrough end to end against a real Kubernetes API server (`support::k8s`,
//! docs/kubernetes.md): the real `meshguard proxy --kubernetes` (its built-in echo upstream)
//! reads the `security.istio.io` resources that `kubectl apply -f` writes, as the ServiceAccount
//! of `deploy/kubernetes/` with that directory's RBAC (which proves the RBAC is enough), or as
//! `admin` where RBAC is not the point. The walkthrough's answers, policies for other workloads,
//! namespaces and the root namespace, an invalid object, `--pod`, `check` and
//! `validate --kubernetes`, an API server restart while traffic flows, PeerAuthentication
//! STRICT, and the apply-to-effect latency.
//!
//! Each test starts its own API server (a few seconds); without one (tests/k8s/build.sh not run)
//! they pass after a `SKIPPED` line, and fail under `MESHGUARD_REQUIRE_K8S=1`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;

use support::fs::{demo_token, groups_token, root, tmp};
use support::http::exchange;
use support::k8s::{ApiServer, text};
use support::proxy::{Proxy, Stdout, meshguard, proxy_command, spawn};

/// The walkthrough's workload.
const WL: [&str; 4] = ["--namespace", "foo", "--labels", "app=httpbin"];

/// Asserts success and returns stdout.
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

/// `kubectl apply -f` of files or directories of the repository, as `admin`.
fn apply(k8s: &ApiServer, files: &[&str]) -> String {
    let mut args = vec!["apply".to_string()];
    for f in files {
        args.push("-f".into());
        args.push(path(f));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(k8s.kubectl(&args))
}

/// `kubectl apply -f -` of `yaml`, as `admin`.
fn apply_yaml(k8s: &ApiServer, yaml: &str) -> String {
    ok(k8s.kubectl_stdin(&["apply", "-f", "-"], yaml))
}

fn policy(kind: &str, ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
    )
}

/// The namespaces of the walkthrough, the workload's ServiceAccount (httpbin.yaml) and the
/// namespace RBAC; a kubeconfig of that ServiceAccount.
fn deployed(k8s: &ApiServer, rbac: &[&str]) -> PathBuf {
    namespaces(k8s, &["foo", "istio-system", "bar"]);
    apply(k8s, &["deploy/kubernetes/httpbin.yaml"]);
    for f in rbac {
        apply(k8s, &[&format!("deploy/kubernetes/{f}")]);
    }
    k8s.service_account_kubeconfig("foo", "httpbin")
}

fn proxy_with(kubeconfig: &Path, extra: &[&str]) -> Proxy {
    spawn(
        proxy_command()
            .args(["--kubernetes", "--kubeconfig", kubeconfig.to_str().unwrap()])
            .args(extra),
        Stdout::Null,
    )
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// `GET path` on a new connection (raw HTTP/1.1: no client library between): status and
/// body; status 0 when the connection closes without an answer.
fn get(addr: &str, path: &str, headers: &str) -> (u16, String) {
    let r = exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: httpbin\r\nConnection: close\r\n{headers}\r\n"),
    );
    (r.status, r.body)
}

/// Polls `GET path` until it answers `status`; how long that took. Panics after `limit`.
#[track_caller]
fn until(addr: &str, path: &str, headers: &str, status: u16, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (got, body) = get(addr, path, headers);
        if got == status {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "GET {path} {headers:?}: still {got} ({body}), want {status}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until the proxy is ready (its first complete list).
#[track_caller]
fn ready(p: &Proxy) {
    until(
        p.admin_addr(),
        "/healthz/ready",
        "",
        200,
        Duration::from_secs(30),
    );
}

fn config_dump(p: &Proxy) -> Value {
    serde_json::from_str(&get(p.admin_addr(), "/config_dump", "").1).unwrap()
}

#[test]
fn the_walkthrough_with_kubectl_as_the_workloads_service_account() {
    let Some(k8s) = ApiServer::start("walkthrough") else {
        return;
    };
    let sa = deployed(&k8s, &["rbac-namespace.yaml"]);
    let p = proxy_with(&sa, &WL);
    ready(&p);
    let addr = p.addr();
    let (demo, groups, invalid) = (
        bearer(&demo_token()),
        bearer(&groups_token()),
        bearer("invalidtoken"),
    );
    let second = Duration::from_secs(1);

    // Step 1: no policy.
    assert_eq!(get(addr, "/headers", "").0, 200);

    // Step 2: the RequestAuthentication: an invalid token is refused, none is fine.
    let out = apply(&k8s, &["examples/step2-request-authentication"]);
    assert_eq!(
        out,
        "requestauthentication.security.istio.io/jwt-example created\n"
    );
    until(addr, "/headers", &invalid, 401, second);
    assert_eq!(
        get(addr, "/headers", &invalid),
        (
            401,
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
                .into()
        )
    );
    assert_eq!(get(addr, "/headers", "").0, 200);
    assert_eq!(get(addr, "/headers", &demo).0, 200);

    // Step 3: a token is required.
    apply(&k8s, &["examples/step3-require-jwt"]);
    until(addr, "/headers", "", 403, second);
    assert_eq!(
        get(addr, "/headers", ""),
        (403, "RBAC: access denied".into())
    );
    assert_eq!(get(addr, "/headers", &demo).0, 200);
    assert_eq!(get(addr, "/headers", &groups).0, 200);
    let line = p.wait_stderr("AuthorizationPolicy foo/require-jwt resourceVersion");
    assert!(line.contains(": created; policies generation"), "{line}");

    // Step 4: and the groups claim.
    apply(&k8s, &["examples/step4-require-claim"]);
    until(addr, "/headers", &demo, 403, second);
    assert_eq!(get(addr, "/headers", &groups).0, 200);
    assert_eq!(get(addr, "/headers", "").0, 403);

    // A policy for another namespace, then one for another workload: nothing changes (the
    // second's log line says it is in; the first is in a namespace meshguard does not read).
    apply_yaml(
        &k8s,
        &policy(
            "AuthorizationPolicy",
            "bar",
            "deny-all",
            "{action: DENY, rules: [{}]}",
        ),
    );
    apply_yaml(
        &k8s,
        &policy(
            "AuthorizationPolicy",
            "foo",
            "deny-other",
            "{selector: {matchLabels: {app: other}}, action: DENY, rules: [{}]}",
        ),
    );
    let line = p.wait_stderr("AuthorizationPolicy foo/deny-other resourceVersion");
    assert!(line.contains(": created; policies generation"), "{line}");
    assert_eq!(get(addr, "/headers", &groups).0, 200);
    assert_eq!(get(addr, "/headers", &demo).0, 403);

    // A policy in the root namespace applies to every workload.
    apply_yaml(
        &k8s,
        &policy(
            "AuthorizationPolicy",
            "istio-system",
            "deny-admin",
            "{action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}",
        ),
    );
    until(addr, "/admin", &groups, 403, second);
    assert_eq!(get(addr, "/headers", &groups).0, 200);

    // An object the API server stores but Istio refuses (its CEL rule is not on a 1.20
    // server, tests/k8s/istio-security-crds.yaml): refused, reported, the rest enforced.
    let sa_and_principals = "{rules: [{from: [{source: {serviceAccounts: [foo/sleep], principals: [cluster.local/ns/foo/sa/sleep]}}]}]}";
    apply_yaml(
        &k8s,
        &policy("AuthorizationPolicy", "foo", "bad", sa_and_principals),
    );
    let warn = p.wait_stderr("refused AuthorizationPolicy foo/bad");
    assert!(
        warn.contains("field spec.rules[0].from[0].source.serviceAccounts: cannot set serviceAccounts with namespaces or principals; no valid version of it is in effect"),
        "{warn}"
    );
    // A refused new version of a policy in effect: its last good version stays.
    apply_yaml(
        &k8s,
        &policy(
            "AuthorizationPolicy",
            "foo",
            "require-jwt",
            sa_and_principals,
        ),
    );
    let warn = p.wait_stderr("refused AuthorizationPolicy foo/require-jwt");
    assert!(warn.contains("stays in effect"), "{warn}");
    assert_eq!(get(addr, "/headers", &groups).0, 200);
    assert_eq!(get(addr, "/headers", &demo).0, 403);
    assert_eq!(get(addr, "/headers", "").0, 403);
    assert_eq!(
        p.metric("meshguard_policy_source_invalid_objects{kind=\"AuthorizationPolicy\",namespace=\"foo\"}"
        ),
        Some(2.0)
    );
    let dump = config_dump(&p);
    let objects = dump["source"]["objects"].as_array().unwrap();
    let bad = objects.iter().find(|o| o["name"] == "bad").unwrap();
    assert_eq!(bad["state"], "invalid", "{bad}");
    assert_eq!(bad["in_effect"], Value::Null, "{bad}");
    let rj = objects.iter().find(|o| o["name"] == "require-jwt").unwrap();
    assert_eq!(rj["state"], "invalid", "{rj}");
    assert!(rj["in_effect"].is_string(), "{rj}");
    assert_ne!(rj["in_effect"], rj["resource_version"], "{rj}");

    // Delete: every request passes again (the root namespace's DENY still applies to /admin).
    let out = ok(k8s.kubectl(&["delete", "-f", &path("examples/step4-require-claim")]));
    assert_eq!(
        out,
        "authorizationpolicy.security.istio.io \"require-jwt\" deleted\nrequestauthentication.security.istio.io \"jwt-example\" deleted\n"
    );
    until(addr, "/headers", "", 200, second);
    until(addr, "/headers", &invalid, 200, second);
    assert_eq!(get(addr, "/admin", "").0, 403);
    ok(k8s.kubectl(&[
        "delete",
        "authorizationpolicy",
        "deny-admin",
        "-n",
        "istio-system",
    ]));
    until(addr, "/admin", "", 200, second);
    assert!(!p.stderr_text().contains("eyJ"), "a token in the log");
}

#[test]
fn the_pod_gives_the_labels_with_the_pods_role_and_a_label_change_is_followed() {
    let Some(k8s) = ApiServer::start("walkthrough_pod") else {
        return;
    };
    let sa = deployed(&k8s, &["rbac-namespace.yaml", "rbac-pods.yaml"]);
    apply(&k8s, &["examples/step3-require-jwt"]);
    // A Pod object, as the Deployment's pod would be (nothing runs pods on this server).
    apply_yaml(
        &k8s,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: httpbin-0, namespace: foo, labels: {app: httpbin, version: v1}}\n\
         spec: {serviceAccountName: httpbin, containers: [{name: httpbin, image: registry.example.com/httpbin:test}]}\n",
    );
    let p = spawn(
        proxy_command()
            .args([
                "--kubernetes",
                "--kubeconfig",
                sa.to_str().unwrap(),
                "--pod",
            ])
            .env("POD_NAME", "httpbin-0")
            .env("POD_NAMESPACE", "foo"),
        Stdout::Null,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(p.admin_addr(), "/healthz/ready", "");
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready: {body}\n{}",
            p.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    p.wait_stderr("workload labels from the Pod: namespace foo, labels app=httpbin,version=v1");
    assert_eq!(get(p.addr(), "/headers", "").0, 403);
    ok(k8s.kubectl(&[
        "label",
        "pod",
        "httpbin-0",
        "-n",
        "foo",
        "app=other",
        "--overwrite",
    ]));
    until(p.addr(), "/headers", "", 200, Duration::from_secs(1));
    p.wait_stderr("workload labels from the Pod: namespace foo, labels app=other,version=v1");
}

#[test]
fn check_and_validate_against_the_cluster_give_their_exit_codes() {
    let Some(k8s) = ApiServer::start("walkthrough_check") else {
        return;
    };
    namespaces(&k8s, &["foo", "istio-system"]);
    apply(&k8s, &["examples/step3-require-jwt"]);
    let kc = k8s.admin_kubeconfig().to_str().unwrap().to_string();
    let run = |command: &str, args: &[&str]| {
        meshguard()
            .args([command, "--kubernetes", "--kubeconfig", &kc])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run("check", &WL);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stdout.starts_with("DENIED 403 Forbidden"), "{stdout}");
    assert!(
        stdout.contains(
            "applies:    RequestAuthentication foo/jwt-example, AuthorizationPolicy foo/require-jwt"
        ),
        "{stdout}"
    );
    let token = format!("@{}", path("testdata/istio-demo/demo.jwt"));
    let out = run(
        "check",
        &["-n", "foo", "-l", "app=httpbin", "--token", &token],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ALLOWED"));
    // --pod: a Pod that is not there is an error.
    let out = run("check", &["-n", "foo", "--pod", "httpbin-0"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: --pod: Pod foo/httpbin-0 not found on {}\n",
            k8s.url()
        )
    );

    let out = run("validate", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with(&format!(
            "valid: 0 error(s), 0 warning(s) in 2 resource(s) from the Kubernetes API server {}\n",
            k8s.url()
        )),
        "{}",
        text(&out)
    );
    apply_yaml(
        &k8s,
        &policy(
            "AuthorizationPolicy",
            "istio-system",
            "bad",
            "{rules: [{from: [{source: {serviceAccounts: [a], principals: [b]}}]}]}",
        ),
    );
    let out = run("validate", &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "error: AuthorizationPolicy istio-system/bad (resourceVersion "
        ) && stdout.contains(
            "): field spec.rules[0].from[0].source.serviceAccounts: cannot set serviceAccounts with namespaces or principals"
        ),
        "{stdout}"
    );
    // PeerAuthentications are validated as from files too.
    apply_yaml(
        &k8s,
        &policy(
            "PeerAuthentication",
            "istio-system",
            "bad-pa",
            "{portLevelMtls: {\"8080\": {mode: DISABLE}}}",
        ),
    );
    let out = run("validate", &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("error: PeerAuthentication istio-system/bad-pa (resourceVersion ")
            && stdout.contains("): field spec.portLevelMtls: mesh/namespace peer authentication cannot have port level mTLS (portLevelMtls requires selector)"),
        "{stdout}"
    );
    // One namespace: only its objects.
    let out = run("validate", &["--namespace", "foo"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // check refuses the invalid object with a note and decides with the rest.
    let out = run("check", &WL);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout
            .contains("note:       refused (not in effect): AuthorizationPolicy istio-system/bad"),
        "{stdout}"
    );
    // Without rights: an error naming the refusal, exit 1.
    let out = meshguard()
        .args(["validate", "--kubernetes", "--kubeconfig"])
        .arg(k8s.user_kubeconfig())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Forbidden (403)"),
        "{}",
        text(&out)
    );
}

/// The API server is killed and started again while requests flow: every answer during the
/// outage is the last good set's (never an empty set's, never a 503), and the watches resume.
#[test]
fn an_api_server_restart_while_traffic_flows_never_serves_an_empty_set() {
    let Some(mut k8s) = ApiServer::start("walkthrough_restart") else {
        return;
    };
    namespaces(&k8s, &["foo", "istio-system"]);
    apply(&k8s, &["examples/step3-require-jwt"]);
    let p = proxy_with(k8s.admin_kubeconfig(), &WL);
    ready(&p);
    let addr = p.addr().to_string();
    assert_eq!(get(&addr, "/headers", "").0, 403);

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, addr, demo) = (stop.clone(), addr.clone(), bearer(&demo_token()));
        std::thread::spawn(move || {
            let mut seen: Vec<(u16, u16)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                seen.push((
                    get(&addr, "/headers", "").0,
                    get(&addr, "/headers", &demo).0,
                ));
            }
            seen
        })
    };
    let synced = "meshguard_policy_source_synced{kind=\"AuthorizationPolicy\",namespace=\"foo\"}";
    assert_eq!(p.metric(synced), Some(1.0));
    k8s.stop_apiserver();
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.metric(synced) != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "the outage is not in the metrics"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let dump = config_dump(&p);
    let watch = dump["source"]["watches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["kind"] == "AuthorizationPolicy" && w["namespace"] == "foo")
        .unwrap()
        .clone();
    assert_eq!(watch["synced"], false, "{watch}");
    assert!(watch["last_error"]["message"].is_string(), "{watch}");
    assert_eq!(get(p.admin_addr(), "/healthz/ready", "").0, 200);
    let down = Instant::now();
    k8s.restart_apiserver();
    let deadline = Instant::now() + Duration::from_secs(60);
    while p.metric(synced) != Some(1.0) {
        assert!(Instant::now() < deadline, "the watches did not resume");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "synced again {:?} after the API server came back",
        down.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    let seen = traffic.join().unwrap();
    assert!(seen.len() >= 10, "only {} rounds of requests", seen.len());
    let wrong: Vec<&(u16, u16)> = seen.iter().filter(|s| **s != (403, 200)).collect();
    assert!(
        wrong.is_empty(),
        "{} of {} rounds answered otherwise: {wrong:?}",
        wrong.len(),
        seen.len()
    );
    // The watches are live again: a change takes effect.
    apply(&k8s, &["examples/step4-require-claim"]);
    until(
        &addr,
        "/headers",
        &bearer(&demo_token()),
        403,
        Duration::from_secs(5),
    );
}

/// A STRICT PeerAuthentication applied with kubectl: plaintext connections are reset, mutual
/// TLS is served; deleting it lets plaintext in again.
#[test]
fn a_strict_peer_authentication_from_the_api_server_resets_plaintext() {
    let Some(k8s) = ApiServer::start("walkthrough_strict") else {
        return;
    };
    namespaces(&k8s, &["foo", "istio-system"]);
    let dir = tmp("k8s-strict");
    let cert = |args: &[&str]| ok(meshguard().arg("cert").args(args).output().unwrap());
    let d = |p: &str| dir.join(p).to_str().unwrap().to_string();
    cert(&["ca", "--out", &d("ca")]);
    for (name, ns) in [("httpbin", "foo"), ("sleep", "bar")] {
        cert(&[
            "issue",
            "--ca",
            &d("ca"),
            "--namespace",
            ns,
            "--service-account",
            name,
            "--out",
            &d(name),
        ]);
    }
    let p = proxy_with(
        k8s.admin_kubeconfig(),
        &[&WL[..], &["--tls-dir", &d("httpbin")]].concat(),
    );
    ready(&p);
    let addr = p.addr().to_string();
    // PERMISSIVE by default: plaintext is served.
    assert_eq!(plain(&addr), "200");
    apply_yaml(
        &k8s,
        &policy(
            "PeerAuthentication",
            "foo",
            "default",
            "{mtls: {mode: STRICT}}",
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(1);
    while plain(&addr) != "reset" {
        assert!(Instant::now() < deadline, "plaintext still served");
    }
    let line = p.wait_stderr("PeerAuthentication foo/default resourceVersion");
    assert!(line.contains(": created; policies generation"), "{line}");
    // Mutual TLS with a mesh certificate is served.
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(dir.join("httpbin/root-cert.pem"))
        .arg("--cert")
        .arg(dir.join("sleep/cert-chain.pem"))
        .arg("--key")
        .arg(dir.join("sleep/key.pem"))
        .args(["-k", &format!("https://{addr}/headers")])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "{}",
        text(&out)
    );
    // A refused PeerAuthentication (port-level mTLS without a selector, which only Istio's CEL
    // rules refuse on the server) leaves STRICT in effect.
    apply_yaml(
        &k8s,
        &policy(
            "PeerAuthentication",
            "foo",
            "default",
            "{mtls: {mode: DISABLE}, portLevelMtls: {\"8080\": {mode: DISABLE}}}",
        ),
    );
    let warn = p.wait_stderr("refused PeerAuthentication foo/default");
    assert!(warn.contains("stays in effect"), "{warn}");
    assert_eq!(plain(&addr), "reset");
    ok(k8s.kubectl(&["delete", "peerauthentication", "default", "-n", "foo"]));
    let deadline = Instant::now() + Duration::from_secs(1);
    while plain(&addr) != "200" {
        assert!(Instant::now() < deadline, "plaintext still reset");
    }
}

/// A plaintext `GET /headers`: the status, `reset`, or `closed`.
fn plain(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"GET /headers HTTP/1.1\r\nHost: httpbin\r\nConnection: close\r\n\r\n");
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => "reset".into(),
        Err(e) => format!("closed: {e}"),
        Ok(_) if out.is_empty() => "closed".into(),
        Ok(_) => support::http::parse(&out).status.to_string(),
    }
}

/// Apply-to-effect latency against the real API server: from `kubectl apply` (or `delete`)
/// returning to the first request answered by the new set, polling; 40 changes. Prints the
/// distribution (docs/operations.md, "Apply to effect, measured").
#[test]
fn apply_to_effect_latency_with_kubectl() {
    let Some(k8s) = ApiServer::start("walkthrough_latency") else {
        return;
    };
    namespaces(&k8s, &["foo", "istio-system"]);
    let p = proxy_with(k8s.admin_kubeconfig(), &WL);
    ready(&p);
    let addr = p.addr();
    let deny = policy(
        "AuthorizationPolicy",
        "foo",
        "deny-all",
        "{action: DENY, rules: [{}]}",
    );
    let mut took = Vec::new();
    for _ in 0..20 {
        apply_yaml(&k8s, &deny);
        took.push(until(addr, "/get", "", 403, Duration::from_secs(5)));
        ok(k8s.kubectl(&["delete", "authorizationpolicy", "deny-all", "-n", "foo"]));
        took.push(until(addr, "/get", "", 200, Duration::from_secs(5)));
    }
    took.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "apply-to-effect with kubectl over {} changes: min {:.1} ms, median {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        took.len(),
        ms(&took[0]),
        ms(&took[took.len() / 2]),
        ms(&took[took.len() * 9 / 10]),
        ms(&took[took.len() * 99 / 100]),
        ms(&took[took.len() - 1])
    );
    assert!(took[took.len() - 1] < Duration::from_secs(1), "{took:?}");
}
