//! The translator's bootstraps in a real Envoy: every example and conformance policy set, and
//! a set using every field and condition key, must load (`envoy --mode validate`); and a few
//! started Envoys, in front of a small upstream, answer as Istio does (200 / 401 / 403 and
//! Envoy's body strings).
//!
//! Envoy is `$MESHGUARD_ENVOY`, else `envoy` on `PATH`. Without one the tests print a skip line
//! and pass, unless `MESHGUARD_REQUIRE_ENVOY=1`, which makes them fail.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use meshguard_envoy_diff::tokens;
use meshguard_envoy_diff::translate::{Endpoints, TranslateError, bootstrap};
use meshguard_envoy_diff::{MeshOptions, PathNormalization, WorkloadSpec};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Finding Envoy

/// `$MESHGUARD_ENVOY`, else the first `envoy` on `PATH`; `None` means skip (or fail when
/// `MESHGUARD_REQUIRE_ENVOY=1`).
fn envoy() -> Option<PathBuf> {
    let found = std::env::var_os("MESHGUARD_ENVOY")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .map(|d| d.join("envoy"))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        if std::env::var("MESHGUARD_REQUIRE_ENVOY").as_deref() == Ok("1") {
            panic!(
                "MESHGUARD_REQUIRE_ENVOY=1 but no Envoy: set MESHGUARD_ENVOY or put envoy on PATH"
            );
        }
        // Written to the process's stderr directly, not through the test harness's capture,
        // so that the skip is visible in a normal `cargo test` run.
        let _ = writeln!(
            std::io::stderr(),
            "SKIP translate_envoy: no Envoy (set MESHGUARD_ENVOY or put envoy on PATH)"
        );
    }
    found
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh directory for one Envoy's files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "meshguard-translate-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs

/// One policy set to translate.
struct Input {
    name: String,
    yaml: String,
    workload: WorkloadSpec,
    mesh: MeshOptions,
}

fn workload(ns: &str, labels: &[(&str, &str)]) -> WorkloadSpec {
    WorkloadSpec {
        namespace: ns.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// The YAML of a file, or of every `.yaml` file of a directory in name order.
fn read_policies(rel: &str) -> String {
    let path = repo_root().join(rel);
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
            .expect("read the directory")
            .map(|e| e.expect("a directory entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).expect("read a policy file"))
            .collect::<Vec<_>>()
            .join("\n---\n")
    } else {
        std::fs::read_to_string(&path).expect("read a policy file")
    }
}

fn path_normalization(s: &str) -> PathNormalization {
    PathNormalization::ALL
        .into_iter()
        .find(|p| p.as_str() == s)
        .unwrap_or_else(|| panic!("unknown pathNormalization {s}"))
}

/// Every suite of `tests/conformance/*.yaml`: its `policies` paths and `inline` YAML, workload
/// and path normalization.
fn conformance_inputs() -> Vec<Input> {
    let dir = repo_root().join("tests/conformance");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/conformance exists")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no conformance suites in {}",
        dir.display()
    );
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read a suite");
        let suites: Vec<Value> = serde_saphyr::from_multiple(&text).expect("a suite file parses");
        for suite in suites.into_iter().filter(|s| !s.is_null()) {
            let mut parts: Vec<String> = suite["policies"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| read_policies(p.as_str().expect("a policy path")))
                .collect();
            if let Some(inline) = suite["inline"].as_str() {
                parts.push(inline.to_string());
            }
            let w = &suite["workload"];
            let labels: Vec<(String, String)> = w["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let mut mesh = MeshOptions::default();
            if let Some(p) = suite["pathNormalization"].as_str() {
                mesh.path_normalization = path_normalization(p);
            }
            out.push(Input {
                name: format!(
                    "{}: {}",
                    file.file_name().unwrap_or_default().to_string_lossy(),
                    suite["suite"].as_str().unwrap_or("?")
                ),
                yaml: parts.join("\n---\n"),
                workload: WorkloadSpec {
                    namespace: w["namespace"].as_str().unwrap_or("foo").to_string(),
                    labels: labels.into_iter().collect(),
                },
                mesh,
            });
        }
    }
    out
}

fn example_inputs() -> Vec<Input> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo_root().join("examples"))
        .expect("examples/ exists")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.iter()
        .map(|d| {
            let rel = d
                .strip_prefix(repo_root())
                .unwrap_or(d)
                .to_string_lossy()
                .to_string();
            Input {
                name: rel.clone(),
                yaml: read_policies(&rel),
                workload: WorkloadSpec::default(),
                mesh: MeshOptions::default(),
            }
        })
        .collect()
}

fn jwks() -> String {
    tokens::DEMO_JWKS.trim().replace('\n', " ")
}

/// Every RequestAuthentication field, every AuthorizationPolicy field and `when` key, every
/// action, dry-run, CUSTOM, templates, `${PORT}`.
fn every_field_yaml() -> String {
    format!(
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: all-fields, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  jwtRules:
  - issuer: testing@secure.istio.io
    audiences: [aud1, "https://api.example.com"]
    jwks: '{jwks}'
    fromHeaders: [{{name: x-jwt-assertion}}, {{name: x-token, prefix: "Token "}}]
    fromParams: [jwt]
    fromCookies: [session]
    outputPayloadToHeader: x-jwt-payload
    forwardOriginalToken: true
    outputClaimToHeaders: [{{header: x-jwt-sub, claim: sub}}, {{header: x-nested, claim: nested.key}}]
    timeout: 3s
    spaceDelimitedClaims: [roles, scope]
    presence: REQUIRED
  - issuer: other.example.com
    jwks: '{jwks}'
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: mesh, namespace: istio-system}}
spec:
  jwtRules:
  - issuer: a.example.com
    jwks: '{jwks}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ops, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  rules:
  - to:
    - operation:
        hosts: [secret.com, "*.example.com", "api.*", "*"]
        notHosts: [bad.com]
        ports: ["${{PORT}}", "9090"]
        notPorts: ["22"]
        methods: [GET, "P*", "*T", "*"]
        notMethods: [DELETE]
        paths: [/exact, "/prefix/*", "*.txt", "*", "/tmpl/{{*}}/x/{{**}}", "/store/{{**}}/cart"]
        notPaths: [/not/this, "/a/{{*}}"]
  - from:
    - source:
        principals: ["cluster.local/ns/foo/sa/sleep", "*/sa/x", "cluster.local/*", "*"]
        notPrincipals: [bad]
        requestPrincipals: ["*", "*/bob", "*.example.com/bob", "*bob", "https://a.com/*", "iss/pre*", "foo*", "a/b"]
        notRequestPrincipals: [evil/x]
        namespaces: [foo, "b*r", "*"]
        notNamespaces: [bar]
        ipBlocks: [10.0.0.0/8, 127.0.0.1, "::1", "fd00::/8"]
        notIpBlocks: [10.9.9.9]
        remoteIpBlocks: [203.0.113.0/24]
        notRemoteIpBlocks: [198.51.100.7]
    - source:
        serviceAccounts: [foo/sleep, my.sa]
        notServiceAccounts: [bar/x]
        trustDomains: [cluster.local, "*.td", "*"]
        notTrustDomains: [other.td]
    when:
    - {{key: "request.headers[X-Role]", values: [admin, "adm*", "*min", "*"], notValues: [guest]}}
    - {{key: source.ip, values: [10.0.0.1], notValues: [10.0.0.2]}}
    - {{key: remote.ip, values: [1.2.3.0/24], notValues: [1.2.3.4]}}
    - {{key: source.namespace, values: [foo], notValues: [bar]}}
    - {{key: source.principal, values: ["cluster.local/ns/foo/sa/sleep"], notValues: ["*"]}}
    - {{key: source.serviceAccount, values: [sleep], notValues: [foo/other]}}
    - {{key: source.trustDomain, values: [cluster.local], notValues: ["x*"]}}
    - {{key: request.auth.principal, values: ["testing@secure.istio.io/testing@secure.istio.io"], notValues: ["*/evil"]}}
    - {{key: request.auth.audiences, values: ["api.*", aud1], notValues: [bad]}}
    - {{key: request.auth.presenter, values: [web], notValues: ["*"]}}
    - {{key: "request.auth.claims[groups]", values: [group1], notValues: [banned]}}
    - {{key: "request.auth.claims[nested][key]", values: ["*"]}}
    - {{key: "request.auth.claims[foo.com/name]", values: [x]}}
    - {{key: destination.ip, values: [127.0.0.0/8], notValues: [10.0.0.0/8]}}
    - {{key: destination.port, values: ["${{PORT}}"], notValues: ["1"]}}
    - {{key: connection.sni, values: ["*.svc", "a*", exact], notValues: ["*"]}}
    - {{key: "experimental.envoy.filters.http.foo[bar]", values: [x, "[y]"], notValues: [z]}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny, namespace: foo}}
spec:
  action: DENY
  rules: [{{to: [{{operation: {{paths: [/admin]}}}}]}}, {{}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry-deny
  namespace: foo
  annotations: {{istio.io/dry-run: "true"}}
spec:
  action: DENY
  rules: [{{to: [{{operation: {{paths: [/headers]}}}}]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: audit, namespace: foo}}
spec: {{action: AUDIT, rules: [{{}}]}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry-audit
  namespace: foo
  annotations: {{istio.io/dry-run: "1"}}
spec: {{action: AUDIT, rules: [{{}}]}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ext, namespace: foo}}
spec:
  action: CUSTOM
  provider: {{name: my-ext-authz}}
  rules: [{{to: [{{operation: {{paths: [/ext]}}}}]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ext2, namespace: foo}}
spec:
  action: CUSTOM
  provider: {{name: another}}
  rules: [{{to: [{{operation: {{paths: [/ext2]}}}}]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: nothing, namespace: istio-system}}
spec: {{}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: gateway-only, namespace: foo}}
spec:
  targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: gw}}]
  rules: [{{}}]
"#,
        jwks = jwks()
    )
}

fn all_inputs() -> Vec<Input> {
    let mut inputs = example_inputs();
    inputs.extend(conformance_inputs());
    for mode in PathNormalization::ALL {
        inputs.push(Input {
            name: format!("every field, {}", mode.as_str()),
            yaml: every_field_yaml(),
            workload: workload("foo", &[("app", "httpbin")]),
            mesh: MeshOptions {
                path_normalization: mode,
                trusted_proxies: 1,
                ..MeshOptions::default()
            },
        });
    }
    inputs
}

// ---------------------------------------------------------------------------------------------
// Loading bootstraps into Envoy

const VALIDATE_PORT: u16 = 18000;

fn validate_endpoints() -> Endpoints {
    Endpoints {
        listen: SocketAddr::from(([127, 0, 0, 2], VALIDATE_PORT)),
        upstream: SocketAddr::from(([127, 0, 0, 1], VALIDATE_PORT + 1)),
    }
}

/// `envoy --mode validate`: `Err` with Envoy's output when it refuses the configuration.
fn validate(envoy: &Path, config: &Value, dir: &Path) -> Result<(), String> {
    let file = dir.join("bootstrap.json");
    std::fs::write(&file, serde_json::to_vec_pretty(config).expect("serialize")).expect("write");
    let out = Command::new(envoy)
        .args([
            "--mode",
            "validate",
            "--log-level",
            "warning",
            "--disable-hot-restart",
        ])
        .arg("-c")
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .expect("run envoy --mode validate");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn every_example_conformance_and_field_set_loads_in_envoy() {
    let Some(envoy) = envoy() else { return };
    let dir = TempDir::new("validate");
    let inputs = all_inputs();
    assert!(
        inputs.len() > 10,
        "expected the examples and conformance suites"
    );
    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    for input in &inputs {
        let yaml = input.yaml.replace("${PORT}", &VALIDATE_PORT.to_string());
        let config = match bootstrap(&yaml, &input.workload, &input.mesh, &validate_endpoints()) {
            Ok(c) => c,
            Err(TranslateError::Unsupported(why)) if input.yaml.contains("jwksUri") => {
                // istiod would fetch these keys and inline them; scenarios carry them inline.
                skipped.push(format!("{}: {why}", input.name));
                continue;
            }
            Err(e) => {
                failures.push(format!("{}: {e}", input.name));
                continue;
            }
        };
        if let Err(e) = validate(&envoy, &config, &dir.0) {
            let kept = std::env::temp_dir().join(format!(
                "meshguard-translate-refused-{}.json",
                failures.len()
            ));
            let _ = std::fs::write(
                &kept,
                serde_json::to_vec_pretty(&config).unwrap_or_default(),
            );
            failures.push(format!(
                "{}: Envoy refused the bootstrap (kept in {}):\n{e}",
                input.name,
                kept.display()
            ));
        }
    }
    assert!(
        skipped.len() <= 1,
        "only the conformance suite on remote keys is expected to be skipped: {skipped:?}"
    );
    assert!(
        failures.is_empty(),
        "{} of {} inputs failed:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

#[test]
fn the_every_field_set_uses_every_filter() {
    // Not an Envoy test: checks that the set above really reaches every part of the
    // translation it is meant to cover, so that "Envoy loads it" means something.
    let config = bootstrap(
        &every_field_yaml().replace("${PORT}", "18000"),
        &workload("foo", &[("app", "httpbin")]),
        &MeshOptions::default(),
        &validate_endpoints(),
    )
    .expect("translates");
    let text = config.to_string();
    for needle in [
        "deny-due-to-bad-CUSTOM-action",
        "istio-ext-authz-another-",
        "envoy.filters.http.jwt_authn",
        "\"LOG\"",
        "shadow_rules",
        "uri_template",
        "requested_server_name",
        "destination_ip",
        "destination_port",
        "direct_remote_ip",
        "remote_ip",
        "authenticated",
        "present_match",
        "envoy.filters.http.foo",
        "claim_to_headers",
        "from_cookies",
        "origins-2",
        "requires_all",
    ] {
        assert!(text.contains(needle), "the bootstrap lacks {needle}");
    }
    assert!(
        !text.contains("gateway-only"),
        "targetRefs policies are not attached"
    );
}

// ---------------------------------------------------------------------------------------------
// A started Envoy

/// A tiny HTTP/1.1 upstream on `127.0.0.1:0`: answers every request 200 with the request head
/// it received as the body (prefixed with `upstream saw:`). The threads end with the test
/// process.
fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
    let addr = listener.local_addr().expect("upstream address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || serve_upstream(stream));
        }
    });
    addr
}

fn serve_upstream(stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = String::new();
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                content_length = value.trim().parse().unwrap_or(0);
            }
            let end = line == "\r\n";
            head.push_str(&line);
            if end {
                break;
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let answer = format!("upstream saw:\n{head}");
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// An Envoy process started with a translated bootstrap; killed on drop.
struct RunningEnvoy {
    child: Child,
    listen: SocketAddr,
    dir: TempDir,
}

impl Drop for RunningEnvoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RunningEnvoy {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("envoy.log")).unwrap_or_default()
    }
}

/// Translates `yaml` for the workload `foo`, `app=httpbin` and starts Envoy with it on
/// `127.0.0.1:0`, in front of a fresh [`upstream`]. Returns once the listener's port is known.
fn start(envoy: &Path, yaml: &str, mesh: MeshOptions) -> RunningEnvoy {
    let endpoints = Endpoints {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        upstream: upstream(),
    };
    let config = bootstrap(
        yaml,
        &workload("foo", &[("app", "httpbin")]),
        &mesh,
        &endpoints,
    )
    .expect("the policies translate");
    let dir = TempDir::new("run");
    let file = dir.0.join("bootstrap.json");
    std::fs::write(
        &file,
        serde_json::to_vec_pretty(&config).expect("serialize"),
    )
    .expect("write");
    let admin_path = dir.0.join("admin");
    let log = std::fs::File::create(dir.0.join("envoy.log")).expect("create the log");
    let child = Command::new(envoy)
        .arg("-c")
        .arg(&file)
        .arg("--admin-address-path")
        .arg(&admin_path)
        .args([
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--log-level",
            "warning",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start envoy");
    let mut running = RunningEnvoy {
        child,
        listen: endpoints.listen,
        dir,
    };
    let deadline = Instant::now() + WAIT;
    let admin: SocketAddr = loop {
        if let Ok(Some(status)) = running.child.try_wait() {
            panic!("envoy exited ({status}) while starting:\n{}", running.log());
        }
        if let Some(addr) = std::fs::read_to_string(&admin_path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break addr;
        }
        assert!(
            Instant::now() < deadline,
            "envoy did not start:\n{}",
            running.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    running.listen = loop {
        let listeners = get(admin, "/listeners?format=json").map(|r| r.body);
        let port = listeners
            .ok()
            .and_then(|b| serde_json::from_str::<Value>(&b).ok())
            .and_then(|v| {
                v["listener_statuses"][0]["local_address"]["socket_address"]["port_value"].as_u64()
            })
            .filter(|p| *p != 0);
        if let Some(port) = port {
            break SocketAddr::from(([127, 0, 0, 1], port as u16));
        }
        assert!(
            Instant::now() < deadline,
            "envoy's listener did not start:\n{}",
            running.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    running
}

/// A response as the client saw it.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one HTTP/1.1 request (with `connection: close`) and reads the answer to the end.
fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nhost: httpbin.foo:8000\r\nconnection: close\r\n");
    for (n, v) in headers {
        request.push_str(&format!("{n}: {v}\r\n"));
    }
    request.push_str("\r\n");
    // No half-close: Envoy treats it as the client going away. `connection: close` makes it
    // close after the answer.
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no response head in {text:?}")))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {text:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// The body of a chunked message (sizes in hex, each chunk followed by CRLF).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap_or(&after[size..]);
    }
    out
}

fn get(addr: SocketAddr, target: &str) -> std::io::Result<Response> {
    send(addr, "GET", target, &[])
}

/// Sends a request to a started Envoy; panics with Envoy's log when the exchange fails.
fn request(envoy: &RunningEnvoy, method: &str, target: &str, headers: &[(&str, &str)]) -> Response {
    send(envoy.listen, method, target, headers)
        .unwrap_or_else(|e| panic!("{method} {target}: {e}\nenvoy log:\n{}", envoy.log()))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

const RBAC_DENIED: &str = "RBAC: access denied";

fn assert_reached_upstream(r: &Response, what: &str) {
    assert_eq!(r.status, 200, "{what}: {r:?}");
    assert!(r.body.starts_with("upstream saw:"), "{what}: {r:?}");
}

fn assert_denied(r: &Response, status: u16, body: &str, what: &str) {
    assert_eq!((r.status, r.body.as_str()), (status, body), "{what}: {r:?}");
}

#[test]
fn walkthrough_step3_demo_token_200_invalid_401_none_403() {
    let Some(envoy) = envoy() else { return };
    let e = start(
        &envoy,
        &read_policies("examples/step3-require-jwt"),
        MeshOptions::default(),
    );

    let ok = request(
        &e,
        "GET",
        "/headers",
        &[("authorization", &bearer(tokens::demo()))],
    );
    assert_reached_upstream(&ok, "demo token");
    assert!(
        !ok.body.to_ascii_lowercase().contains("authorization:"),
        "the verified token's header is removed before the upstream: {}",
        ok.body
    );

    let invalid = request(
        &e,
        "GET",
        "/headers",
        &[("authorization", "Bearer invalidtoken")],
    );
    assert_denied(
        &invalid,
        401,
        "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
        "invalid token",
    );
    assert_eq!(
        invalid.header("www-authenticate"),
        Some(r#"Bearer realm="http://httpbin.foo:8000/headers", error="invalid_token""#)
    );

    let none = request(&e, "GET", "/headers", &[]);
    assert_denied(&none, 403, RBAC_DENIED, "no token");

    let wrong_issuer = tokens::mint_json(json!({"iss": "evil@example.com"}));
    let r = request(&e, "GET", "/", &[("authorization", &bearer(&wrong_issuer))]);
    assert_denied(
        &r,
        401,
        "Jwt issuer is not configured",
        "token from another issuer",
    );
}

#[test]
fn walkthrough_step4_claims_are_read_from_the_jwt_payload() {
    let Some(envoy) = envoy() else { return };
    let e = start(
        &envoy,
        &read_policies("examples/step4-require-claim"),
        MeshOptions::default(),
    );
    let r = request(
        &e,
        "GET",
        "/",
        &[("authorization", &bearer(tokens::groups()))],
    );
    assert_reached_upstream(&r, "groups token (groups: [group1, group2])");
    let r = request(
        &e,
        "GET",
        "/",
        &[("authorization", &bearer(tokens::demo()))],
    );
    assert_denied(&r, 403, RBAC_DENIED, "demo token has no groups claim");
}

#[test]
fn outputs_audiences_and_several_providers() {
    let Some(envoy) = envoy() else { return };
    let yaml = format!(
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: outputs, namespace: foo}}
spec:
  jwtRules:
  - issuer: testing@secure.istio.io
    audiences: [aud1]
    jwks: '{jwks}'
    fromHeaders: [{{name: x-jwt-assertion}}]
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders: [{{header: x-jwt-sub, claim: sub}}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: second, namespace: istio-system}}
spec:
  jwtRules:
  - issuer: second.example.com
    jwks: '{jwks}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: scope, namespace: foo}}
spec:
  action: DENY
  rules:
  - to: [{{operation: {{paths: [/write]}}}}]
    when: [{{key: "request.auth.claims[scope]", notValues: [write]}}]
"#,
        jwks = jwks()
    );
    let e = start(&envoy, &yaml, MeshOptions::default());

    let good = tokens::mint_json(json!({"aud": "aud1", "sub": "alice"}));
    let r = request(
        &e,
        "GET",
        "/",
        &[("x-jwt-assertion", &good), ("x-jwt-sub", "spoofed")],
    );
    assert_reached_upstream(&r, "token at the explicit header");
    let payload = good.split('.').nth(1).expect("a payload segment");
    assert!(r.body.contains("x-jwt-sub: alice\r\n"), "{}", r.body);
    assert!(
        !r.body.contains("spoofed"),
        "the client's copy is replaced: {}",
        r.body
    );
    assert!(
        r.body.contains(&format!("x-jwt-payload: {payload}\r\n")),
        "{}",
        r.body
    );

    let wrong_aud = tokens::mint_json(json!({"aud": "other"}));
    let r = request(&e, "GET", "/", &[("x-jwt-assertion", &wrong_aud)]);
    assert_denied(
        &r,
        403,
        "Audiences in Jwt are not allowed",
        "wrong audience",
    );

    // The second provider (root namespace) reads the default location.
    let second = tokens::mint_json(json!({"iss": "second.example.com"}));
    let r = request(&e, "GET", "/", &[("authorization", &bearer(&second))]);
    assert_reached_upstream(&r, "token of the second provider");

    // `scope` is split on spaces in the payload metadata (always, as istiod asks), so
    // "read write" contains "write".
    let read_write = tokens::mint_json(json!({"iss": "second.example.com", "scope": "read write"}));
    let r = request(
        &e,
        "GET",
        "/write",
        &[("authorization", &bearer(&read_write))],
    );
    assert_reached_upstream(&r, "scope 'read write' has write");
    let read = tokens::mint_json(json!({"iss": "second.example.com", "scope": "read"}));
    let r = request(&e, "GET", "/write", &[("authorization", &bearer(&read))]);
    assert_denied(&r, 403, RBAC_DENIED, "scope 'read' lacks write");
}

#[test]
fn dry_run_custom_templates_and_action_order() {
    let Some(envoy) = envoy() else { return };
    let yaml = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry-deny
  namespace: foo
  annotations: {istio.io/dry-run: "true"}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: [/headers]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: foo}
spec:
  action: CUSTOM
  provider: {name: my-ext-authz}
  rules: [{to: [{operation: {paths: [/ext]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: istio-system}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-some, namespace: foo}
spec:
  rules:
  - to: [{operation: {paths: ["/tmpl/{*}/x/{**}", /headers, /ext, "/admin*"]}}]
  - to: [{operation: {methods: [POST]}}]
    when: [{key: "request.headers[x-role]", values: [admin]}]
"#;
    let e = start(&envoy, yaml, MeshOptions::default());
    assert_reached_upstream(
        &request(&e, "GET", "/headers", &[]),
        "a dry-run DENY does not deny",
    );
    assert_denied(
        &request(&e, "GET", "/ext", &[]),
        403,
        RBAC_DENIED,
        "CUSTOM without a provider",
    );
    assert_denied(
        &request(&e, "GET", "/admin/x", &[]),
        403,
        RBAC_DENIED,
        "DENY before ALLOW",
    );
    assert_reached_upstream(
        &request(&e, "GET", "/tmpl/a/x/b/c", &[]),
        "template {*} / {**}",
    );
    assert_denied(
        &request(&e, "GET", "/tmpl//x/b", &[]),
        403,
        RBAC_DENIED,
        "{*} needs a segment",
    );
    assert_reached_upstream(
        &request(
            &e,
            "POST",
            "/other",
            &[("x-role", "admin"), ("content-length", "0")],
        ),
        "method and header",
    );
    assert_denied(
        &request(
            &e,
            "POST",
            "/other",
            &[("x-role", "user"), ("content-length", "0")],
        ),
        403,
        RBAC_DENIED,
        "header value differs",
    );
}

#[test]
fn path_normalization_modes_reach_the_policies() {
    let Some(envoy) = envoy() else { return };
    let yaml = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: foo}
spec: {action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}
"#;
    let base = start(&envoy, yaml, MeshOptions::default());
    assert_denied(
        &request(&base, "GET", "/public/../admin", &[]),
        403,
        RBAC_DENIED,
        "BASE: dot segments",
    );
    assert_reached_upstream(&request(&base, "GET", "//admin", &[]), "BASE keeps //");
    assert_denied(
        &request(&base, "GET", "/admin#frag", &[]),
        403,
        RBAC_DENIED,
        "fragment stripped",
    );

    let decode = start(
        &envoy,
        yaml,
        MeshOptions {
            path_normalization: PathNormalization::DecodeAndMergeSlashes,
            ..MeshOptions::default()
        },
    );
    assert_denied(
        &request(&decode, "GET", "//admin", &[]),
        403,
        RBAC_DENIED,
        "merged slashes",
    );
    assert_denied(
        &request(&decode, "GET", "/%2Fadmin", &[]),
        403,
        RBAC_DENIED,
        "decoded %2F",
    );

    let none = start(
        &envoy,
        yaml,
        MeshOptions {
            path_normalization: PathNormalization::None,
            ..MeshOptions::default()
        },
    );
    let r = request(&none, "GET", "/public/../admin", &[]);
    assert_reached_upstream(&r, "NONE leaves dot segments");
    assert!(
        r.body
            .starts_with("upstream saw:\nGET /public/../admin HTTP/1.1"),
        "{}",
        r.body
    );
}
