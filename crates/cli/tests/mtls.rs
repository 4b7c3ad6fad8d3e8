//! Mutual TLS on the inbound side, through the real binary: `meshguard cert` (a mesh CA and
//! SPIFFE workload certificates in Istio's layout) and `meshguard proxy --tls-dir`, checked
//! with real clients (curl, `openssl s_client`) on loopback.

use std::path::Path;
use std::process::Output;

mod support;

use support::fs::tmp;
use support::proxy::meshguard;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `meshguard cert ARGS`, which must succeed.
fn cert(args: &[&str]) -> String {
    let out = meshguard().arg("cert").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "meshguard cert {args:?}:\n{}",
        text(&out)
    );
    text(&out)
}

fn openssl(args: &[&str]) -> Output {
    std::process::Command::new("openssl")
        .args(args)
        .output()
        .unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A CA in `dir/ca` and a workload certificate for `ns`/`sa` in `dir/NAME`.
fn ca_and_workload(dir: &Path, td: &str, name: &str, ns: &str, sa: &str) {
    cert(&["ca", "--out", path(&dir.join("ca")), "--trust-domain", td]);
    issue(dir, "ca", name, ns, sa, &[]);
}

fn issue(dir: &Path, ca: &str, name: &str, ns: &str, sa: &str, extra: &[&str]) {
    let mut args = vec![
        "issue",
        "--ca",
        path(&dir.join(ca)).to_owned().leak(),
        "--namespace",
        ns,
        "--service-account",
        sa,
        "--out",
        path(&dir.join(name)).to_owned().leak(),
    ];
    args.extend_from_slice(extra);
    cert(&args);
}

#[test]
fn cert_ca_and_issue_write_istios_layout_with_the_spiffe_id() {
    let dir = tmp("mtls-cert");
    let out = cert(&["ca", "--out", path(&dir.join("ca"))]);
    assert!(
        out.contains("CA for trust domain cluster.local written to"),
        "{out}"
    );
    for f in [
        "ca-cert.pem",
        "ca-key.pem",
        "root-cert.pem",
        "cert-chain.pem",
    ] {
        assert!(dir.join("ca").join(f).is_file(), "{f}");
    }
    let out = cert(&[
        "issue",
        "--ca",
        path(&dir.join("ca")),
        "--namespace",
        "foo",
        "--service-account",
        "httpbin",
        "--out",
        path(&dir.join("httpbin")),
    ]);
    assert!(
        out.starts_with("spiffe://cluster.local/ns/foo/sa/httpbin written to"),
        "{out}"
    );
    let w = dir.join("httpbin");
    // The chain leads to the root, with the client and server EKUs.
    let v = openssl(&[
        "verify",
        "-purpose",
        "sslclient",
        "-CAfile",
        path(&w.join("root-cert.pem")),
        path(&w.join("cert-chain.pem")),
    ]);
    assert!(v.status.success(), "{}", text(&v));
    let x = text(&openssl(&[
        "x509",
        "-in",
        path(&w.join("cert-chain.pem")),
        "-noout",
        "-text",
    ]));
    assert!(
        x.contains("URI:spiffe://cluster.local/ns/foo/sa/httpbin"),
        "{x}"
    );
    assert!(
        x.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{x}"
    );
    // Istio's workload certificates have an empty subject.
    assert!(x.contains("Subject: \n") || x.contains("Subject:\n"), "{x}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for key in [dir.join("ca/ca-key.pem"), w.join("key.pem")] {
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }
}

#[test]
fn cert_issue_takes_the_cas_trust_domain_and_a_ttl() {
    let dir = tmp("mtls-cert-td");
    cert(&[
        "ca",
        "--out",
        path(&dir.join("ca")),
        "--trust-domain",
        "example.org",
    ]);
    issue(&dir, "ca", "w", "bar", "sleep", &["--ttl", "90m"]);
    let x = text(&openssl(&[
        "x509",
        "-in",
        path(&dir.join("w/cert-chain.pem")),
        "-noout",
        "-text",
    ]));
    assert!(
        x.contains("URI:spiffe://example.org/ns/bar/sa/sleep"),
        "{x}"
    );
    issue(
        &dir,
        "ca",
        "w2",
        "bar",
        "sleep",
        &["--trust-domain", "alias.td"],
    );
    let x = text(&openssl(&[
        "x509",
        "-in",
        path(&dir.join("w2/cert-chain.pem")),
        "-noout",
        "-ext",
        "subjectAltName",
    ]));
    assert!(x.contains("URI:spiffe://alias.td/ns/bar/sa/sleep"), "{x}");
    // 90 minutes: valid in 80, expired in 100.
    let check = |secs: &str| {
        openssl(&[
            "x509",
            "-in",
            path(&dir.join("w/cert-chain.pem")),
            "-noout",
            "-checkend",
            secs,
        ])
        .status
        .success()
    };
    assert!(check("4800"));
    assert!(!check("6000"));
}

#[test]
fn cert_errors_name_the_file_and_keep_existing_files() {
    let dir = tmp("mtls-cert-err");
    let missing = dir.join("nope");
    let out = meshguard()
        .args(["cert", "issue", "--ca", path(&missing), "--namespace", "a"])
        .args(["--service-account", "b", "--out", path(&dir.join("x"))])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains(&format!(
            "error: {}/ca-cert.pem: cannot read",
            missing.display()
        )),
        "{}",
        text(&out)
    );
    ca_and_workload(&dir, "cluster.local", "w", "a", "b");
    let before = std::fs::read(dir.join("w/key.pem")).unwrap();
    let out = meshguard()
        .args([
            "cert",
            "issue",
            "--ca",
            path(&dir.join("ca")),
            "--namespace",
            "a",
        ])
        .args(["--service-account", "b", "--out", path(&dir.join("w"))])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("already exists (pass --force to overwrite it)"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(dir.join("w/key.pem")).unwrap(), before);
    // A bad namespace would make a bad SPIFFE ID.
    let out = meshguard()
        .args([
            "cert",
            "issue",
            "--ca",
            path(&dir.join("ca")),
            "--namespace",
            "a/b",
        ])
        .args(["--service-account", "b", "--out", path(&dir.join("y"))])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("--namespace \"a/b\""), "{}", text(&out));
    // A key that is not the CA's.
    std::fs::copy(dir.join("w/key.pem"), dir.join("ca/ca-key.pem")).unwrap();
    let out = meshguard()
        .args([
            "cert",
            "issue",
            "--ca",
            path(&dir.join("ca")),
            "--namespace",
            "a",
        ])
        .args(["--service-account", "b", "--out", path(&dir.join("z"))])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("ca-key.pem does not belong to the certificate in"),
        "{}",
        text(&out)
    );
}

#[test]
fn cert_help_shows_an_example() {
    let out = meshguard().args(["cert", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = text(&out);
    assert!(
        help.contains(
            "meshguard cert issue --ca ca --namespace foo --service-account httpbin --out httpbin"
        ),
        "{help}"
    );
}

// ---------------------------------------------------------------------------------------------
// The listener: which connections are served, refused or fail their handshake.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use support::proxy::{Proxy, Stdout, spawn};

/// What a client saw.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// An HTTP response with this status.
    Status(u16),
    /// A TCP reset before any answer (Envoy's `no_filter_chain_match`).
    Reset,
    /// A TLS alert: the text after "alert " in openssl's message (`certificate required`,
    /// `certificate unknown`, `unknown ca`, ...).
    Alert(String),
    /// Closed without a response, reset or alert.
    Closed(String),
}

const GET: &str = "GET /headers HTTP/1.1\r\nHost: httpbin\r\nConnection: close\r\n\r\n";

/// A plaintext `GET /headers`.
fn plain(addr: &str) -> Seen {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The proxy may reset before or after the request is written.
    let _ = s.write_all(GET.as_bytes());
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Seen::Reset,
        Err(e) => Seen::Closed(e.to_string()),
        Ok(_) if out.is_empty() => Seen::Closed("eof".into()),
        Ok(_) => Seen::Status(support::http::parse(&out).status),
    }
}

/// The files of a client: `dir/NAME/{cert-chain,key}.pem`.
#[derive(Clone, Copy)]
struct Client<'a>(Option<&'a Path>);

/// `GET /headers` over TLS with `openssl s_client`, offering `alpn` and presenting `client`'s
/// certificate; returns what was seen and the response body.
fn tls(addr: &str, alpn: &str, client: Client<'_>, sni: Option<&str>) -> (Seen, String) {
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["s_client", "-connect", addr, "-quiet", "-ign_eof"]);
    if !alpn.is_empty() {
        cmd.args(["-alpn", alpn]);
    }
    if let Some(sni) = sni {
        cmd.args(["-servername", sni]);
    } else {
        cmd.arg("-noservername");
    }
    if let Client(Some(dir)) = client {
        cmd.arg("-cert")
            .arg(dir.join("cert-chain.pem"))
            .arg("-key")
            .arg(dir.join("key.pem"));
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(GET.as_bytes());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if stdout.starts_with("HTTP/") {
        let r = support::http::parse(&out.stdout);
        return (Seen::Status(r.status), r.body);
    }
    if let Some((_, rest)) = stderr.split_once(" alert ") {
        let what = rest.split(':').next().unwrap_or("").to_string();
        return (Seen::Alert(what), String::new());
    }
    if stderr.contains("errno=104") || stderr.contains("Connection reset") {
        return (Seen::Reset, String::new());
    }
    (Seen::Closed(stderr), String::new())
}

/// Istio's client sidecar's ALPN for HTTP/1.1.
const ISTIO_HTTP11: &str = "istio-http/1.1,istio,http/1.1";

/// A mesh for the tests: a CA (trust domain cluster.local), the server `httpbin` in `foo`,
/// clients `sleep` (bar), `other-td` (trust domain other.td, same CA), `alias-td`
/// (trust domain old.td, same CA), `foreign` (another CA), `expired` (this CA, expired).
struct Mesh {
    dir: PathBuf,
}

impl Mesh {
    fn new(name: &str) -> Mesh {
        let dir = tmp(name);
        ca_and_workload(&dir, "cluster.local", "httpbin", "foo", "httpbin");
        issue(&dir, "ca", "sleep", "bar", "sleep", &[]);
        issue(
            &dir,
            "ca",
            "other-td",
            "bar",
            "sleep",
            &["--trust-domain", "other.td"],
        );
        issue(
            &dir,
            "ca",
            "alias-td",
            "bar",
            "sleep",
            &["--trust-domain", "old.td"],
        );
        cert(&["ca", "--out", path(&dir.join("ca2"))]);
        issue(&dir, "ca2", "foreign", "bar", "sleep", &[]);
        support::certs::client(
            &dir.join("ca"),
            &dir.join("expired"),
            support::certs::Client {
                uris: &["spiffe://cluster.local/ns/bar/sa/sleep"],
                expired: true,
                ..Default::default()
            },
        );
        std::fs::create_dir_all(dir.join("policies")).unwrap();
        Mesh { dir }
    }

    fn client(&self, name: &str) -> Client<'static> {
        Client(Some(self.dir.join(name).leak()))
    }

    /// Writes the policies (replacing earlier ones).
    fn policies(&self, yaml: &str) {
        let p = self.dir.join("policies");
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("p.yaml"), yaml).unwrap();
    }

    /// `meshguard proxy` for workload foo/app=httpbin with `--tls-dir httpbin` and `extra`.
    fn proxy(&self, extra: &[&str]) -> Proxy {
        spawn(
            meshguard()
                .args(["proxy", "--admin", "127.0.0.1:0", "--no-access-log"])
                .args(["--namespace", "foo", "--labels", "app=httpbin"])
                .arg("--policies")
                .arg(self.dir.join("policies"))
                .arg("--tls-dir")
                .arg(self.dir.join("httpbin"))
                .args(if extra.contains(&"--listen") {
                    &[][..]
                } else {
                    &["--listen", "127.0.0.1:0"][..]
                })
                .args(extra),
            Stdout::Null,
        )
    }
}

fn pa(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n---\n"
    )
}

#[test]
fn strict_serves_mutual_tls_and_resets_everything_else() {
    let mesh = Mesh::new("mtls-strict");
    mesh.policies(&pa("foo", "default", "{mtls: {mode: STRICT}}"));
    let p = mesh.proxy(&[]);
    let addr = p.addr();
    // Plaintext: a reset, no HTTP answer.
    assert_eq!(plain(addr), Seen::Reset);
    // A good client certificate, with Istio's ALPN lists and with none.
    for alpn in [
        ISTIO_HTTP11,
        "istio-h2,istio,h2",
        "istio-peer-exchange,istio",
        "",
    ] {
        let (seen, body) = tls(addr, alpn, mesh.client("sleep"), None);
        if alpn.contains("h2") && !alpn.contains("peer-exchange") {
            // h2 negotiated: openssl's HTTP/1.1 request is not HTTP/2.
            continue;
        }
        assert_eq!(seen, Seen::Status(200), "ALPN {alpn:?}: {body}");
        assert!(body.contains("\"x-forwarded-proto\": \"https\""), "{body}");
    }
    // No certificate; a foreign trust domain; a foreign CA; expired.
    assert_eq!(
        tls(addr, ISTIO_HTTP11, Client(None), None).0,
        Seen::Alert("certificate required".into())
    );
    assert_eq!(
        tls(addr, ISTIO_HTTP11, mesh.client("other-td"), None).0,
        Seen::Alert("certificate unknown".into())
    );
    // Another CA with the same name as ours: its signature does not verify; `unknown ca`,
    // as Envoy answers.
    assert_eq!(
        tls(addr, ISTIO_HTTP11, mesh.client("foreign"), None).0,
        Seen::Alert("unknown ca".into())
    );
    assert!(matches!(
        tls(addr, ISTIO_HTTP11, mesh.client("expired"), None).0,
        Seen::Alert(a) if a == "certificate expired"
    ));
}

#[test]
fn curl_gets_http2_and_http1_over_mutual_tls() {
    let mesh = Mesh::new("mtls-curl");
    mesh.policies(&pa("foo", "default", "{mtls: {mode: STRICT}}"));
    let p = mesh.proxy(&[]);
    let url = format!("https://{}/headers", p.addr());
    let d = &mesh.dir;
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-k",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
            ])
            .args(["--cacert", path(&d.join("httpbin/root-cert.pem"))])
            .args(["--cert", path(&d.join("sleep/cert-chain.pem"))])
            .args(["--key", path(&d.join("sleep/key.pem"))])
            .args([flag, &url])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("200 {version}")
        );
    }
    // Without a certificate curl fails the handshake; plaintext is reset (curl exit 56).
    let out = std::process::Command::new("curl")
        .args(["-s", &format!("http://{}/headers", p.addr())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(56));
}

#[test]
fn permissive_serves_istio_tls_and_plaintext_on_one_port() {
    let mesh = Mesh::new("mtls-permissive");
    // No PeerAuthentication at all: PERMISSIVE.
    mesh.policies("");
    let p = mesh.proxy(&[]);
    let addr = p.addr();
    assert_eq!(plain(addr), Seen::Status(200));
    assert_eq!(
        tls(addr, ISTIO_HTTP11, mesh.client("sleep"), None).0,
        Seen::Status(200)
    );
    // TLS without an Istio ALPN has no chain on an HTTP port: reset.
    assert_eq!(
        tls(addr, "h2,http/1.1", mesh.client("sleep"), None).0,
        Seen::Reset
    );
    assert_eq!(tls(addr, "", mesh.client("sleep"), None).0, Seen::Reset);
    // The TLS chain still requires a client certificate in the trust domain.
    assert_eq!(
        tls(addr, ISTIO_HTTP11, Client(None), None).0,
        Seen::Alert("certificate required".into())
    );
}

#[test]
fn disable_serves_plaintext_only() {
    let mesh = Mesh::new("mtls-disable");
    mesh.policies(&pa("istio-system", "mesh", "{mtls: {mode: DISABLE}}"));
    let p = mesh.proxy(&[]);
    assert_eq!(plain(p.addr()), Seen::Status(200));
    assert_eq!(
        tls(p.addr(), ISTIO_HTTP11, mesh.client("sleep"), None).0,
        Seen::Reset
    );
}

#[test]
fn trust_domain_aliases_are_accepted() {
    let mesh = Mesh::new("mtls-alias");
    mesh.policies(&pa("foo", "default", "{mtls: {mode: STRICT}}"));
    let p = mesh.proxy(&["--trust-domain-aliases", "old.td"]);
    assert_eq!(
        tls(p.addr(), ISTIO_HTTP11, mesh.client("alias-td"), None).0,
        Seen::Status(200)
    );
    assert_eq!(
        tls(p.addr(), ISTIO_HTTP11, mesh.client("other-td"), None).0,
        Seen::Alert("certificate unknown".into())
    );
    // The same from MeshConfig.
    std::fs::write(
        mesh.dir.join("mesh.yaml"),
        "trustDomain: cluster.local\ntrustDomainAliases: [other.td]\n",
    )
    .unwrap();
    let p = mesh.proxy(&["--mesh-config", path(&mesh.dir.join("mesh.yaml"))]);
    assert_eq!(
        tls(p.addr(), ISTIO_HTTP11, mesh.client("other-td"), None).0,
        Seen::Status(200)
    );
    assert_eq!(
        tls(p.addr(), ISTIO_HTTP11, mesh.client("alias-td"), None).0,
        Seen::Alert("certificate unknown".into())
    );
}

/// A free loopback port (bound, then released) for port-level settings.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn mesh_namespace_workload_and_port_levels_compose_as_istio() {
    let mesh = Mesh::new("mtls-levels");
    let wl = |spec: &str| {
        pa(
            "foo",
            "wl",
            &format!("{{selector: {{matchLabels: {{app: httpbin}}}}, {spec}}}"),
        )
    };
    let port = free_port();
    // (policies, expected: plaintext served?, Istio TLS served?)
    let cases: Vec<(String, bool, bool)> = vec![
        (
            pa("istio-system", "mesh", "{mtls: {mode: STRICT}}"),
            false,
            true,
        ),
        // Namespace UNSET inherits the mesh's STRICT.
        (
            pa("istio-system", "mesh", "{mtls: {mode: STRICT}}")
                + &pa("foo", "ns", "{mtls: {mode: UNSET}}"),
            false,
            true,
        ),
        // Namespace overrides the mesh.
        (
            pa("istio-system", "mesh", "{mtls: {mode: STRICT}}")
                + &pa("foo", "ns", "{mtls: {mode: PERMISSIVE}}"),
            true,
            true,
        ),
        // Workload overrides the namespace; workload UNSET inherits.
        (
            pa("foo", "ns", "{mtls: {mode: STRICT}}") + &wl("mtls: {mode: DISABLE}"),
            true,
            false,
        ),
        (
            pa("foo", "ns", "{mtls: {mode: STRICT}}") + &wl("mtls: {mode: UNSET}"),
            false,
            true,
        ),
        // Port level: the listening port's own mode; UNSET inherits the workload's.
        (
            pa("foo", "ns", "{mtls: {mode: STRICT}}")
                + &wl(&format!("portLevelMtls: {{'{port}': {{mode: DISABLE}}}}")),
            true,
            false,
        ),
        (
            pa("foo", "ns", "{mtls: {mode: DISABLE}}")
                + &wl(&format!(
                    "mtls: {{mode: STRICT}}, portLevelMtls: {{'{port}': {{mode: UNSET}}}}"
                )),
            false,
            true,
        ),
        // Another port's setting does not apply.
        (
            pa("foo", "ns", "{mtls: {mode: STRICT}}")
                + &wl("portLevelMtls: {'1': {mode: DISABLE}}"),
            false,
            true,
        ),
        // A root-namespace policy with a selector is ignored.
        (
            pa(
                "istio-system",
                "r",
                "{selector: {matchLabels: {app: httpbin}}, mtls: {mode: STRICT}}",
            ),
            true,
            true,
        ),
    ];
    for (policies, plain_ok, tls_ok) in cases {
        mesh.policies(&policies);
        let p = mesh.proxy(&["--listen", &format!("127.0.0.1:{port}")]);
        let addr = p.addr();
        let want_plain = if plain_ok {
            Seen::Status(200)
        } else {
            Seen::Reset
        };
        let want_tls = if tls_ok {
            Seen::Status(200)
        } else {
            Seen::Reset
        };
        assert_eq!(plain(addr), want_plain, "{policies}");
        assert_eq!(
            tls(addr, ISTIO_HTTP11, mesh.client("sleep"), None).0,
            want_tls,
            "{policies}"
        );
        drop(p);
    }
}

#[test]
fn strict_without_tls_dir_is_a_start_up_error_naming_the_policy() {
    let dir = tmp("mtls-no-dir");
    std::fs::write(
        dir.join("p.yaml"),
        pa("foo", "lockdown", "{mtls: {mode: STRICT}}"),
    )
    .unwrap();
    let out = meshguard()
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--namespace",
            "foo",
        ])
        .arg("--policies")
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("error: PeerAuthentication foo/lockdown requires mutual TLS (STRICT) but no --tls-dir was given"),
        "{}",
        text(&out)
    );
}

#[test]
fn invalid_peer_authentication_is_refused_with_istios_message() {
    let dir = tmp("mtls-invalid");
    std::fs::write(
        dir.join("p.yaml"),
        pa("foo", "ports", "{portLevelMtls: {'8080': {mode: STRICT}}}"),
    )
    .unwrap();
    let out = meshguard().arg("validate").arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("(PeerAuthentication foo/ports): field spec.portLevelMtls: mesh/namespace peer authentication cannot have port level mTLS"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_reloaded_peer_authentication_applies_to_new_connections() {
    let mesh = Mesh::new("mtls-reload");
    mesh.policies(&pa("foo", "default", "{mtls: {mode: PERMISSIVE}}"));
    let p = mesh.proxy(&[]);
    assert_eq!(plain(p.addr()), Seen::Status(200));
    // A connection opened before the change keeps being served.
    let mut open = TcpStream::connect(p.addr()).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::fs::write(
        mesh.dir.join("policies/p.yaml"),
        pa("foo", "default", "{mtls: {mode: STRICT}}"),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while plain(p.addr()) != Seen::Reset {
        assert!(std::time::Instant::now() < deadline, "STRICT never applied");
        std::thread::sleep(Duration::from_millis(50));
    }
    open.write_all(GET.as_bytes()).unwrap();
    let mut out = Vec::new();
    open.read_to_end(&mut out).unwrap();
    assert_eq!(support::http::parse(&out).status, 200);
    assert_eq!(
        tls(p.addr(), ISTIO_HTTP11, mesh.client("sleep"), None).0,
        Seen::Status(200)
    );
}

// ---------------------------------------------------------------------------------------------
// Identity in policies.

fn allow_from(source: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: peers, namespace: foo}}\nspec:\n  action: ALLOW\n  rules:\n  - from:\n    - source: {source}\n---\n"
    )
}

#[test]
fn principals_and_namespaces_match_the_client_certificate() {
    let mesh = Mesh::new("mtls-principals");
    issue(&mesh.dir, "ca", "other-sa", "bar", "other", &[]);
    issue(&mesh.dir, "ca", "other-ns", "baz", "sleep", &[]);
    let strict = pa("foo", "default", "{mtls: {mode: STRICT}}");
    let cases = [
        (
            "{principals: [cluster.local/ns/bar/sa/sleep]}",
            [200, 403, 403],
        ),
        ("{namespaces: [bar]}", [200, 200, 403]),
        (
            "{notPrincipals: [cluster.local/ns/bar/sa/sleep]}",
            [403, 200, 200],
        ),
        ("{principals: ['*/sa/sleep']}", [200, 403, 200]),
    ];
    for (source, want) in cases {
        mesh.policies(&(strict.clone() + &allow_from(source)));
        let p = mesh.proxy(&[]);
        for (client, want) in ["sleep", "other-sa", "other-ns"].iter().zip(want) {
            let (seen, body) = tls(p.addr(), ISTIO_HTTP11, mesh.client(client), None);
            assert_eq!(seen, Seen::Status(want), "{source} {client}: {body}");
            if want == 403 {
                assert_eq!(body, "RBAC: access denied");
            }
        }
    }
}

/// Envoy's RBAC tries every URI SAN of the peer (`authenticated.principal_name`, what istiod
/// makes of `principals`, `namespaces` and `source.*`): so does meshguard, not only the first.
#[test]
fn identity_fields_match_any_uri_san_of_the_client_certificate() {
    let mesh = Mesh::new("mtls-any-san");
    support::certs::client(
        &mesh.dir.join("ca"),
        &mesh.dir.join("two-sans"),
        support::certs::Client {
            uris: &[
                "spiffe://cluster.local/ns/baz/sa/legacy",
                "spiffe://cluster.local/ns/bar/sa/sleep",
            ],
            ..Default::default()
        },
    );
    let strict = pa("foo", "default", "{mtls: {mode: STRICT}}");
    for (source, want) in [
        ("{principals: [cluster.local/ns/bar/sa/sleep]}", 200),
        ("{principals: [cluster.local/ns/baz/sa/legacy]}", 200),
        ("{namespaces: [bar]}", 200),
        ("{notNamespaces: [bar]}", 403),
        ("{principals: [cluster.local/ns/qux/sa/sleep]}", 403),
    ] {
        mesh.policies(&(strict.clone() + &allow_from(source)));
        let p = mesh.proxy(&[]);
        let (seen, body) = tls(p.addr(), ISTIO_HTTP11, mesh.client("two-sans"), None);
        assert_eq!(seen, Seen::Status(want), "{source}: {body}");
        if want == 200 {
            // The header names the first URI SAN, as Envoy's does.
            assert!(
                body.contains("URI=spiffe://cluster.local/ns/baz/sa/legacy\""),
                "{body}"
            );
        }
    }
}

/// The start-up line says what the listener serves by the port's mode, and the summary of a
/// set of PeerAuthentications only says that they authorize nothing.
#[test]
fn the_start_up_lines_say_what_is_served() {
    let mesh = Mesh::new("mtls-start-up-line");
    for (spec, scheme, what) in [
        (
            "{mtls: {mode: STRICT}}",
            "https",
            "(mutual TLS only: STRICT)",
        ),
        (
            "{mtls: {mode: PERMISSIVE}}",
            "https+http",
            "(mutual TLS and plaintext: PERMISSIVE)",
        ),
        (
            "{mtls: {mode: DISABLE}}",
            "http",
            "(plaintext only: DISABLE)",
        ),
    ] {
        mesh.policies(&pa("foo", "default", spec));
        let p = mesh.proxy(&[]);
        let line = p.wait_stderr("meshguard: proxy on ");
        assert!(
            line.starts_with(&format!(
                "meshguard: proxy on {scheme}://{} {what} -> http://127.0.0.1:",
                p.addr()
            )),
            "{line}"
        );
        let mode = spec.split("mode: ").nth(1).unwrap().trim_end_matches("}}");
        p.wait_stderr(&format!(
            "the files hold no RequestAuthentication or AuthorizationPolicy, only PeerAuthentication (foo/default: mutual TLS {mode}), which does not authorize requests"
        ));
    }
}

#[test]
fn plaintext_in_permissive_has_no_identity() {
    let mesh = Mesh::new("mtls-permissive-authz");
    mesh.policies(&allow_from("{namespaces: [bar]}"));
    let p = mesh.proxy(&[]);
    assert_eq!(plain(p.addr()), Seen::Status(403));
    assert_eq!(
        tls(p.addr(), ISTIO_HTTP11, mesh.client("sleep"), None).0,
        Seen::Status(200)
    );
    // notNamespaces lets plaintext in (ISTIO-SECURITY-2021-004), and denies bar over mTLS.
    mesh.policies(&allow_from("{notNamespaces: [bar]}"));
    let p = mesh.proxy(&[]);
    assert_eq!(plain(p.addr()), Seen::Status(200));
    assert_eq!(
        tls(p.addr(), ISTIO_HTTP11, mesh.client("sleep"), None).0,
        Seen::Status(403)
    );
}

#[test]
fn principals_are_expanded_to_trust_domain_aliases() {
    let mesh = Mesh::new("mtls-alias-principals");
    // Written with cluster.local, the pointer to the local trust domain.
    mesh.policies(
        &(pa("foo", "default", "{mtls: {mode: STRICT}}")
            + &allow_from("{principals: [cluster.local/ns/bar/sa/sleep]}")),
    );
    let p = mesh.proxy(&[
        "--trust-domain",
        "new.td",
        "--trust-domain-aliases",
        "old.td",
    ]);
    issue(
        &mesh.dir,
        "ca",
        "new-td",
        "bar",
        "sleep",
        &["--trust-domain", "new.td"],
    );
    issue(
        &mesh.dir,
        "ca",
        "new-td-other",
        "bar",
        "other",
        &["--trust-domain", "new.td"],
    );
    assert_eq!(
        tls(p.addr(), ISTIO_HTTP11, mesh.client("new-td"), None).0,
        Seen::Status(200)
    );
    assert_eq!(
        tls(p.addr(), ISTIO_HTTP11, mesh.client("alias-td"), None).0,
        Seen::Status(200)
    );
    assert_eq!(
        tls(p.addr(), ISTIO_HTTP11, mesh.client("new-td-other"), None).0,
        Seen::Status(403)
    );
}

#[test]
fn connection_sni_is_the_client_hellos_server_name() {
    let mesh = Mesh::new("mtls-sni");
    let sni = "outbound_.8000_._.httpbin.foo.svc.cluster.local";
    mesh.policies(&format!(
        "{}apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: sni, namespace: foo}}\nspec:\n  action: ALLOW\n  rules:\n  - when:\n    - key: connection.sni\n      values: [\"{sni}\"]\n",
        pa("foo", "default", "{mtls: {mode: STRICT}}")
    ));
    let p = mesh.proxy(&[]);
    assert_eq!(
        tls(p.addr(), ISTIO_HTTP11, mesh.client("sleep"), Some(sni)).0,
        Seen::Status(200)
    );
    assert_eq!(
        tls(p.addr(), ISTIO_HTTP11, mesh.client("sleep"), Some("other")).0,
        Seen::Status(403)
    );
    assert_eq!(
        tls(p.addr(), ISTIO_HTTP11, mesh.client("sleep"), None).0,
        Seen::Status(403)
    );
}

#[test]
fn jwt_and_mutual_tls_together_the_walkthroughs_step_4_behind_strict() {
    let mesh = Mesh::new("mtls-jwt");
    let root = support::fs::root();
    let mut policies = pa("foo", "default", "{mtls: {mode: STRICT}}");
    for f in ["step2-request-authentication", "step4-require-claim"] {
        for e in std::fs::read_dir(root.join("examples").join(f)).unwrap() {
            policies.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap());
            policies.push_str("\n---\n");
        }
    }
    // And only sleep may call (a DENY: ALLOW policies would be alternatives).
    policies.push_str(
        &allow_from("{notPrincipals: [cluster.local/ns/bar/sa/sleep]}").replace("ALLOW", "DENY"),
    );
    mesh.policies(&policies);
    let p = mesh.proxy(&[]);
    let d = &mesh.dir;
    let curl = |client: &str, token: Option<String>| {
        let mut c = std::process::Command::new("curl");
        c.args(["-s", "-k", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["--cert", path(&d.join(client).join("cert-chain.pem"))])
            .args(["--key", path(&d.join(client).join("key.pem"))]);
        if let Some(t) = token {
            c.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        c.arg(format!("https://{}/headers", p.addr()));
        String::from_utf8(c.output().unwrap().stdout).unwrap()
    };
    issue(d, "ca", "other-sa", "bar", "other", &[]);
    assert_eq!(curl("sleep", Some(support::fs::groups_token())), "200");
    assert_eq!(curl("sleep", Some(support::fs::demo_token())), "403");
    assert_eq!(curl("sleep", None), "403");
    assert_eq!(curl("sleep", Some("bad.token.here".into())), "401");
    assert_eq!(curl("other-sa", Some(support::fs::groups_token())), "403");
    // And plaintext never gets that far.
    assert_eq!(plain(p.addr()), Seen::Reset);
}

#[test]
fn the_access_log_shows_the_peer_principal() {
    let mesh = Mesh::new("mtls-log");
    mesh.policies("");
    let p = spawn(
        meshguard()
            .args(["proxy", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--namespace", "foo"])
            .arg("--policies")
            .arg(mesh.dir.join("policies"))
            .arg("--tls-dir")
            .arg(mesh.dir.join("httpbin")),
        Stdout::Collect,
    );
    assert_eq!(
        tls(p.addr(), ISTIO_HTTP11, mesh.client("sleep"), None).0,
        Seen::Status(200)
    );
    assert_eq!(plain(p.addr()), Seen::Status(200));
    let line = p.log_where(|l| l["downstream_peer_uri_san"].is_string());
    assert_eq!(
        line["downstream_peer_uri_san"],
        "spiffe://cluster.local/ns/bar/sa/sleep"
    );
    let line = p.log_where(|l| l["downstream_peer_uri_san"].is_null());
    assert_eq!(line["response_code"], 200);
}

#[test]
fn check_takes_the_peer_principal() {
    let dir = tmp("mtls-check");
    std::fs::write(dir.join("p.yaml"), allow_from("{namespaces: [bar]}")).unwrap();
    let run = |extra: &[&str]| {
        let out = meshguard()
            .args(["check", "--namespace", "foo", "--explain", "--policies"])
            .arg(&dir)
            .args(extra)
            .output()
            .unwrap();
        (out.status.code(), text(&out))
    };
    let (code, out) = run(&["--peer-principal", "spiffe://cluster.local/ns/bar/sa/sleep"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("peer:       spiffe://cluster.local/ns/bar/sa/sleep (mutual TLS)"),
        "{out}"
    );
    let (code, out) = run(&[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("(plaintext: no peer principal)"), "{out}");
    assert!(out.contains("no mTLS peer identity (plaintext)"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// x-forwarded-client-cert.

/// The header the upstream received, from the echo's JSON.
fn upstream_xfcc(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["headers"]["x-forwarded-client-cert"]
        .as_str()
        .map(str::to_string)
}

fn tls_with_header(addr: &str, client: Client<'_>, header: &str) -> (Seen, String) {
    let req =
        format!("GET /headers HTTP/1.1\r\nHost: httpbin\r\n{header}\r\nConnection: close\r\n\r\n");
    let Client(Some(dir)) = client else {
        unreachable!()
    };
    let mut child = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            addr,
            "-quiet",
            "-ign_eof",
            "-alpn",
            ISTIO_HTTP11,
        ])
        .arg("-cert")
        .arg(dir.join("cert-chain.pem"))
        .arg("-key")
        .arg(dir.join("key.pem"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(req.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let r = support::http::parse(&out.stdout);
    (Seen::Status(r.status), r.body)
}

/// Istio's sidecar: APPEND_FORWARD with By, Hash, Subject, URI; the client's entries are
/// kept before ours. The format is Envoy 1.40's as measured with the same certificates:
/// `By=spoofed;URI=spiffe://evil,By=<ours>;Hash=<sha256 of the client's DER>;Subject="";URI=<peer>`.
#[test]
fn xfcc_is_appended_over_mutual_tls_and_removed_from_plaintext() {
    let mesh = Mesh::new("mtls-xfcc");
    mesh.policies("");
    let p = mesh.proxy(&[]);
    let spoof = "x-forwarded-client-cert: By=spoofed;URI=spiffe://evil";
    let (seen, body) = tls_with_header(p.addr(), mesh.client("sleep"), spoof);
    assert_eq!(seen, Seen::Status(200));
    let der = openssl(&[
        "x509",
        "-in",
        path(&mesh.dir.join("sleep/cert-chain.pem")),
        "-outform",
        "der",
    ])
    .stdout;
    let hash = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map(|mut c| {
            c.stdin.take().unwrap().write_all(&der).unwrap();
            String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap()
        })
        .unwrap();
    let hash = hash.split(' ').next().unwrap();
    assert_eq!(
        upstream_xfcc(&body).unwrap(),
        format!(
            "By=spoofed;URI=spiffe://evil,By=spiffe://cluster.local/ns/foo/sa/httpbin;Hash={hash};Subject=\"\";URI=spiffe://cluster.local/ns/bar/sa/sleep"
        )
    );
    // Without a client header: ours alone.
    let (_, body) = tls_with_header(p.addr(), mesh.client("sleep"), "x-other: 1");
    assert!(
        upstream_xfcc(&body)
            .unwrap()
            .starts_with("By=spiffe://cluster.local/ns/foo/sa/httpbin;Hash=")
    );
    // Plaintext in PERMISSIVE: the client's header is removed.
    let raw = support::http::exchange(
        p.addr(),
        &format!("GET /headers HTTP/1.1\r\nHost: httpbin\r\n{spoof}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(raw.status, 200);
    assert_eq!(upstream_xfcc(&raw.body), None);
}
