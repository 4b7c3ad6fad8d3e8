//! A real Kubernetes API server for one test: etcd and kube-apiserver v1.20.2 on free ports of
//! 127.0.0.1, in a scratch directory of their own, killed when the [`ApiServer`] is dropped.
//! The same set-up as `tests/k8s/start-apiserver.sh` (docs/kubernetes.md): static bearer tokens
//! for the user `admin` (group `system:masters`) and the user `meshguard` (no rights until a
//! binding gives it some), ServiceAccount tokens on request, RBAC authorization, a CA of its
//! own. API objects only: no scheduler, controller manager or kubelet, so pods never run.
//!
//! What it needs, and where it looks:
//! - `kube-apiserver`: `$MESHGUARD_K8S_DIR/bin/kube-apiserver`, by default
//!   `$HOME/.cache/meshguard-k8s/bin/kube-apiserver`, built by `tests/k8s/build.sh`;
//! - `etcd`, `curl` on `PATH`; `kubectl` on `PATH` or `$MESHGUARD_KUBECTL` (any version from
//!   1.20 on).
//!
//! When one is missing, [`ApiServer::start`] returns `None` after a `SKIPPED` line on the
//! process's stderr, or panics when `MESHGUARD_REQUIRE_K8S=1` (set by `.ci/run`, which runs
//! the build).
//!
//! Several tests may each run their own server at once: ports are drawn at random below the
//! kernel's range for outgoing connections and checked free, and a start that loses a port to
//! another process is tried again on new ones. A guard process kills etcd and the API server
//! when the test process dies without dropping them (a killed test run).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::fs::{root, tmp};

/// How long etcd and the API server get to answer `/readyz` with `ok`: measured 3.2 to 4 s
/// on a 2-core machine, up to 7 s with a second server starting beside it; far more when
/// several start at once beside a build.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts tried on fresh ports when etcd or the API server lost one of its ports.
const ATTEMPTS: usize = 3;

/// The three kinds meshguard reads, as `kubectl` names them.
pub const KINDS: [&str; 3] = [
    "authorizationpolicies.security.istio.io",
    "requestauthentications.security.istio.io",
    "peerauthentications.security.istio.io",
];

/// A running etcd + kube-apiserver; both are killed on drop.
pub struct ApiServer {
    dir: PathBuf,
    url: String,
    ca: PathBuf,
    admin_kubeconfig: PathBuf,
    user_kubeconfig: PathBuf,
    admin_token: String,
    kubectl: String,
    /// The API server, then etcd.
    processes: Vec<Child>,
    /// `sh` reading a pipe whose only writer is this process: at its end of file (this
    /// process gone) it kills `processes`.
    guard: Child,
    started_in: Duration,
    /// How the API server was started, to start it again ([`ApiServer::restart_apiserver`]).
    apiserver_program: PathBuf,
    apiserver_args: Vec<std::ffi::OsString>,
}

/// The programs the server and the tests run.
struct Tools {
    apiserver: PathBuf,
    kubectl: String,
}

impl ApiServer {
    /// A server with Istio's security CRDs installed and established
    /// (`tests/k8s/istio-security-crds.yaml`); `None` when a program is missing and
    /// `MESHGUARD_REQUIRE_K8S` is not `1`. `test` names the test in the `SKIPPED` line.
    pub fn start(test: &str) -> Option<ApiServer> {
        let server = ApiServer::start_without_crds(test)?;
        let out = server.install_crds();
        assert!(out.status.success(), "installing the CRDs: {}", text(&out));
        Some(server)
    }

    /// A server with nothing installed beyond what Kubernetes makes itself (namespaces
    /// `default`, `kube-system`, ..., the bootstrap RBAC roles).
    pub fn start_without_crds(test: &str) -> Option<ApiServer> {
        let tools = tools(test)?;
        let started = Instant::now();
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            match launch(&tools, test, started) {
                Ok(server) => {
                    eprintln!(
                        "k8s: {} ready in {} ms (dir {})",
                        server.url,
                        server.started_in.as_millis(),
                        server.dir.display()
                    );
                    return Some(server);
                }
                Err(Launch::PortTaken(log)) => failures.push(log),
                Err(Launch::Failed(why)) => panic!("{test}: the API server did not start: {why}"),
            }
        }
        panic!("{test}: the API server lost its ports {ATTEMPTS} times:\n{failures:#?}");
    }

    /// `kubectl apply -f tests/k8s/istio-security-crds.yaml`, then `kubectl wait` until the
    /// three CRDs are established (served); the output of both.
    pub fn install_crds(&self) -> Output {
        let crds = root().join("tests/k8s/istio-security-crds.yaml");
        let mut out = self.kubectl(&["apply", "-f", crds.to_str().unwrap()]);
        if out.status.success() {
            let mut args = vec!["wait", "--for=condition=established", "--timeout=60s"];
            let names: Vec<String> = KINDS.iter().map(|k| format!("crd/{k}")).collect();
            args.extend(names.iter().map(String::as_str));
            let wait = self.kubectl(&args);
            out.status = wait.status;
            out.stdout.extend_from_slice(&wait.stdout);
            out.stderr.extend_from_slice(&wait.stderr);
        }
        out
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The scratch directory: logs (`etcd.log`, `kube-apiserver.log`), certificates,
    /// kubeconfigs. Removed on drop unless the test is failing.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate the API server's serving certificate chains to (PEM).
    pub fn ca_file(&self) -> &Path {
        &self.ca
    }

    /// A kubeconfig for the user `admin` (group `system:masters`: every right).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// A kubeconfig for the user `meshguard`: authenticated, with no rights beyond what every
    /// authenticated user has (discovery) until a RoleBinding or ClusterRoleBinding names it
    /// (`subjects: [{kind: User, name: meshguard, apiGroup: rbac.authorization.k8s.io}]`).
    pub fn user_kubeconfig(&self) -> &Path {
        &self.user_kubeconfig
    }

    /// A kubeconfig for the ServiceAccount `namespace/name` (which must exist), with a token
    /// the API server issues for it (TokenRequest, valid one hour): the identity a pod running
    /// as that ServiceAccount has. Its user is `system:serviceaccount:NAMESPACE:NAME`.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let request = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":3600}}"#;
        let path = format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token");
        let out = self.kubectl_stdin(&["create", "--raw", &path, "-f", "-"], request);
        assert!(
            out.status.success(),
            "a token for {namespace}/{name}: {}",
            text(&out)
        );
        let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let token = reply["status"]["token"].as_str().unwrap();
        let kubeconfig = self.dir.join(format!("kubeconfig-sa-{namespace}-{name}"));
        write_kubeconfig(&kubeconfig, &self.url, &self.ca, name, token);
        kubeconfig
    }

    /// `kubectl ARGS` as `admin`.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_as(&self.admin_kubeconfig, args, None)
    }

    /// `kubectl ARGS` as `admin`, with `stdin` on its standard input (`-f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        self.kubectl_as(&self.admin_kubeconfig, args, Some(stdin))
    }

    /// `kubectl ARGS` with another kubeconfig ([`Self::user_kubeconfig`],
    /// [`Self::service_account_kubeconfig`]).
    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            // Discovery cache in the scratch directory, not in ~/.kube.
            .arg("--cache-dir")
            .arg(self.dir.join("kubectl-cache"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd.spawn().expect("kubectl");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Time from the start of the first attempt to `/readyz` answering `ok`.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The static bearer token of `admin`, for a client that takes a token rather than a
    /// kubeconfig.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Kills the API server (etcd keeps running, and the objects with it): an outage.
    pub fn stop_apiserver(&mut self) {
        let _ = self.processes[0].kill();
        let _ = self.processes[0].wait();
    }

    /// Starts the API server again, on the same port with the same arguments, after
    /// [`Self::stop_apiserver`]; returns once `/readyz` answers `ok`.
    pub fn restart_apiserver(&mut self) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("kube-apiserver.log"))
            .unwrap();
        let apiserver = Command::new(&self.apiserver_program)
            .args(&self.apiserver_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.processes[0] = apiserver;
        let _ = self.guard.kill();
        let _ = self.guard.wait();
        self.guard = guard(&self.processes);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(why) = self.exited() {
                panic!("restarting the API server: {why}\n{}", self.log_tails());
            }
            if self
                .get("/readyz")
                .is_some_and(|(code, body)| code == 200 && body.trim() == "ok")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the API server did not come back"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `sh` reading a pipe whose only writer is this process: at its end of file (this process
/// gone) it kills `processes`.
fn guard(processes: &[Child]) -> Child {
    Command::new("sh")
        .args([
            "-c",
            "while read -r _; do :; done; kill -KILL \"$@\" 2>/dev/null",
            "k8s-guard",
        ])
        .args(processes.iter().map(|p| p.id().to_string()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh")
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        // The guard first, so that it can never kill a process id reused after ours are gone.
        let _ = self.guard.kill();
        let _ = self.guard.wait();
        for p in &mut self.processes {
            let _ = p.kill();
            let _ = p.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// stdout and stderr of a command, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `$MESHGUARD_K8S_DIR`, else `$HOME/.cache/meshguard-k8s` (where `tests/k8s/build.sh`
/// builds).
pub fn k8s_dir() -> PathBuf {
    match std::env::var_os("MESHGUARD_K8S_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/meshguard-k8s")
        }
    }
}

fn runs(program: &Path, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The programs, or `None` after the `SKIPPED` line (a panic under `MESHGUARD_REQUIRE_K8S=1`).
fn tools(test: &str) -> Option<Tools> {
    let apiserver = k8s_dir().join("bin/kube-apiserver");
    let kubectl = std::env::var("MESHGUARD_KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let mut missing = Vec::new();
    if !runs(&apiserver, &["--version"]) {
        missing.push(format!(
            "{} (tests/k8s/build.sh builds it)",
            apiserver.display()
        ));
    }
    if !runs(Path::new("etcd"), &["--version"]) {
        missing.push("etcd (Debian etcd-server)".into());
    }
    if !runs(Path::new(&kubectl), &["version", "--client"]) {
        missing.push(format!("{kubectl} (Debian kubernetes-client)"));
    }
    if !runs(Path::new("curl"), &["--version"]) {
        missing.push("curl".into());
    }
    if missing.is_empty() {
        return Some(Tools { apiserver, kubectl });
    }
    let note = format!("SKIPPED {test}: missing {}", missing.join(", "));
    if std::env::var("MESHGUARD_REQUIRE_K8S").as_deref() == Ok("1") {
        panic!("{note}; MESHGUARD_REQUIRE_K8S=1 makes this a failure");
    }
    // Straight to the process's stderr: the harness shows `eprintln!` of failed tests only.
    let _ = writeln!(std::io::stderr(), "{note}");
    None
}

enum Launch {
    /// etcd or the API server exited because a port was taken in the meantime: try again.
    PortTaken(String),
    Failed(String),
}

fn launch(tools: &Tools, test: &str, started: Instant) -> Result<ApiServer, Launch> {
    let dir = tmp(&format!("k8s-{}", test.replace("::", "-")));
    let [etcd_port, peer_port, api_port] = free_ports();
    let pki = Pki::new();
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(dir.join("serving.crt"), &pki.serving_pem).unwrap();
    write_private(&dir.join("serving.key"), &pki.serving_key_pem);
    // The ServiceAccount token signing key (ECDSA P-256) and its public half, which checks
    // the tokens.
    write_private(&dir.join("sa.key"), &pki.sa_key_pem);
    std::fs::write(dir.join("sa.pub"), &pki.sa_public_pem).unwrap();
    let admin_token = random_hex(24);
    let user_token = random_hex(24);
    write_private(
        &dir.join("tokens.csv"),
        &format!(
            "{admin_token},admin,admin,\"system:masters\"\n{user_token},meshguard,meshguard\n"
        ),
    );

    // One file for stdout and stderr, shared (two opens would write over each other).
    let log = |name: &str| {
        let f = std::fs::File::create(dir.join(name)).unwrap();
        (f.try_clone().unwrap(), f)
    };
    let (etcd_out, etcd_err) = log("etcd.log");
    let (api_out, api_err) = log("kube-apiserver.log");
    let etcd = Command::new("etcd")
        .arg("--name=meshguard-test")
        .arg(format!("--data-dir={}", dir.join("etcd").display()))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
        .arg(format!(
            "--advertise-client-urls=http://127.0.0.1:{etcd_port}"
        ))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
        .arg(format!(
            "--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"
        ))
        .arg(format!(
            "--initial-cluster=meshguard-test=http://127.0.0.1:{peer_port}"
        ))
        .stdin(Stdio::null())
        .stdout(etcd_out)
        .stderr(etcd_err)
        .spawn()
        .map_err(|e| Launch::Failed(format!("etcd: {e}")))?;
    let d = |f: &str| dir.join(f).display().to_string();
    let mut apiserver = Command::new(&tools.apiserver);
    apiserver
        .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
        .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
        .arg(format!("--secure-port={api_port}"))
        .arg("--insecure-port=0")
        .arg(format!("--tls-cert-file={}", d("serving.crt")))
        .arg(format!("--tls-private-key-file={}", d("serving.key")))
        .arg(format!("--cert-dir={}", d("certs")))
        .arg(format!("--token-auth-file={}", d("tokens.csv")))
        .arg("--anonymous-auth=false")
        .arg("--authorization-mode=RBAC")
        .arg("--service-account-issuer=https://kubernetes.default.svc")
        .arg(format!("--service-account-key-file={}", d("sa.pub")))
        .arg(format!(
            "--service-account-signing-key-file={}",
            d("sa.key")
        ))
        .arg("--api-audiences=https://kubernetes.default.svc")
        .arg("--service-cluster-ip-range=10.0.0.0/24")
        .arg("--endpoint-reconciler-type=none")
        .arg("--disable-admission-plugins=ServiceAccount")
        .arg("--profiling=false")
        .stdin(Stdio::null())
        .stdout(api_out)
        .stderr(api_err);
    let apiserver_program = tools.apiserver.clone();
    let apiserver_args: Vec<std::ffi::OsString> =
        apiserver.get_args().map(ToOwned::to_owned).collect();
    let mut processes = vec![etcd];
    let apiserver = match apiserver.spawn() {
        Ok(p) => p,
        Err(e) => {
            kill_all(&mut processes);
            return Err(Launch::Failed(format!(
                "{}: {e}",
                tools.apiserver.display()
            )));
        }
    };
    processes.insert(0, apiserver);
    let guard = guard(&processes);

    let url = format!("https://127.0.0.1:{api_port}");
    let admin_kubeconfig = dir.join("kubeconfig");
    let user_kubeconfig = dir.join("kubeconfig-meshguard");
    write_kubeconfig(&admin_kubeconfig, &url, &ca, "admin", &admin_token);
    write_kubeconfig(&user_kubeconfig, &url, &ca, "meshguard", &user_token);
    let mut server = ApiServer {
        dir,
        url,
        ca,
        admin_kubeconfig,
        user_kubeconfig,
        admin_token,
        kubectl: tools.kubectl.clone(),
        processes,
        guard,
        started_in: Duration::ZERO,
        apiserver_program,
        apiserver_args,
    };

    // Ready: /readyz says `ok` (etcd reachable, every post-start hook done, the bootstrap
    // RBAC roles among them), then the `default` namespace exists.
    let deadline = started + READY_TIMEOUT;
    for path in ["/readyz", "/api/v1/namespaces/default"] {
        loop {
            if let Some(why) = server.exited() {
                let log = server.log_tails();
                let taken = log.contains("address already in use");
                // Dropping `server` kills what is left and keeps the directory only when the
                // test is failing: keep the logs in the message instead.
                drop(server);
                return Err(if taken {
                    Launch::PortTaken(log)
                } else {
                    Launch::Failed(format!("{why}\n{log}"))
                });
            }
            if server.get(path).is_some_and(|(code, body)| {
                code == 200 && (path != "/readyz" || body.trim() == "ok")
            }) {
                break;
            }
            if Instant::now() > deadline {
                let log = server.log_tails();
                return Err(Launch::Failed(format!(
                    "{path} not answering after {READY_TIMEOUT:?} ({test})\n{log}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    server.started_in = started.elapsed();
    Ok(server)
}

impl ApiServer {
    /// `Some(what)` once etcd or the API server has exited.
    fn exited(&mut self) -> Option<String> {
        for (p, name) in self.processes.iter_mut().zip(["kube-apiserver", "etcd"]) {
            if let Ok(Some(status)) = p.try_wait() {
                return Some(format!("{name} exited ({status})"));
            }
        }
        None
    }

    /// `GET path` as `admin` with curl: (status, body), or `None` when nothing answers yet.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}", "--cacert"])
            .arg(&self.ca)
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", self.admin_token))
            .arg(format!("{}{path}", self.url))
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let out = String::from_utf8_lossy(&out.stdout);
        let (body, code) = out.rsplit_once('\n')?;
        Some((code.trim().parse().ok()?, body.to_string()))
    }

    /// The last lines of both logs.
    fn log_tails(&self) -> String {
        let mut s = String::new();
        for name in ["etcd.log", "kube-apiserver.log"] {
            let log = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            s += &format!("--- {name} (last lines)\n");
            for l in &lines[lines.len().saturating_sub(15)..] {
                s += l;
                s.push('\n');
            }
        }
        s
    }
}

fn kill_all(processes: &mut [Child]) {
    for p in processes {
        let _ = p.kill();
        let _ = p.wait();
    }
}

/// Three distinct free ports on 127.0.0.1 below the kernel's range for the local ports of
/// outgoing connections (`ip_local_port_range`; a port there may be taken by any connection
/// between this check and the server's bind), never handed out twice by this process.
fn free_ports() -> [u16; 3] {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768)
        .max(11000);
    let mut given = GIVEN.lock().unwrap();
    let given = given.get_or_insert_with(HashSet::new);
    let mut ports = [0u16; 3];
    let mut n = 0;
    let mut random = random_bytes(256).into_iter();
    while n < 3 {
        let r = match (random.next(), random.next()) {
            (Some(a), Some(b)) => u16::from_be_bytes([a, b]),
            _ => {
                random = random_bytes(256).into_iter();
                continue;
            }
        };
        let port = 10000 + r % (low - 10000);
        if given.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        given.insert(port);
        ports[n] = port;
        n += 1;
    }
    ports
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0; n];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b
}

fn random_hex(n: usize) -> String {
    random_bytes(n).iter().map(|b| format!("{b:02x}")).collect()
}

/// A file only its owner can read (keys, tokens, kubeconfigs).
fn write_private(path: &Path, contents: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(contents.as_bytes()).unwrap();
}

fn write_kubeconfig(path: &Path, url: &str, ca: &Path, user: &str, token: &str) {
    write_private(
        path,
        &format!(
            "apiVersion: v1
kind: Config
clusters:
- name: meshguard-test
  cluster:
    server: {url}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: {user}
  context:
    cluster: meshguard-test
    user: {user}
    namespace: default
current-context: {user}
",
            ca = ca.display()
        ),
    );
}

/// The server's certificates and keys: a CA, a serving certificate it signed for 127.0.0.1 and
/// localhost (a leaf: webpki, which rustls clients use, refuses a CA certificate as a
/// server's), and the ServiceAccount token signing key.
struct Pki {
    ca_pem: String,
    serving_pem: String,
    serving_key_pem: String,
    sa_key_pem: String,
    sa_public_pem: String,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "meshguard-test-ca");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut serving =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving = serving.signed_by(&key, &issuer).unwrap();
        let sa = KeyPair::generate().unwrap();
        Pki {
            ca_pem: issuer.pem(),
            serving_pem: serving.pem(),
            serving_key_pem: key.serialize_pem(),
            sa_key_pem: sa.serialize_pem(),
            sa_public_pem: sa.public_key_pem(),
        }
    }
}
